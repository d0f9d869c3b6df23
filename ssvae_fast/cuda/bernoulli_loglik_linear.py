"""`bernoulli_loglik_linear` on a CUDA GPU (csrc/cuda/bernoulli_loglik_linear.cu): the logits never reach
device memory; when a gradient is needed the forward's epilogue writes s = x - sigmoid(l), (M, D) in the
input dtype, for the backward (docs/design.md section 2, item 3: "produce dl in forward"), whose GEMMs run
in torch (cuBLAS) on s. Rows map to examples inside the kernel (labelled rows first, then C per example)."""

# No `from __future__ import annotations`: the custom ops' schemas come from these annotations.
from typing import Optional, Tuple

import torch
from torch import Tensor

from .._launch import cdiv, compute_dtype, dtype_name, ptr, stream
from ..rows import bernoulli_linear_vjp_from_s
from . import check_precision, extension, get_precision, require_cuda


def keeps_s() -> bool:
    return True


def resolve_precision(precision: Optional[str]) -> str:
    """The Bernoulli GEMM's precision: `precision`, or the module setting (`set_precision`) when None."""
    return get_precision() if precision is None else check_precision(precision)


def _launch(
    h: Tensor, weight: Tensor, bias: Optional[Tensor], x: Tensor, s: Optional[Tensor], ll: Tensor,
    n_labelled: int, n_classes: int, precision: str,
) -> None:
    """ll (M,) and, when s is given, s (M, D), both contiguous and preallocated; h (M, H) rows, M > 0."""
    M, D = h.shape[0], weight.shape[0]
    ext = extension()
    ll_partial = h.new_empty((cdiv(D, ext.BERNOULLI_BLOCK_D), M), dtype=compute_dtype(h.dtype))
    with torch.cuda.device(h.device):
        ext.bernoulli_loglik_linear_forward(
            **linear_loglik_arguments(h, weight, bias, x, s, ll_partial, ll, n_labelled, n_classes, precision))


def linear_loglik_arguments(h, weight, bias, x, s, ll_partial, ll, n_labelled: int, n_classes: int,
                            precision: str) -> dict:
    """The keyword arguments the tile kernels' launchers share (csrc/cuda/bernoulli_loglik_linear.cu: the
    Bernoulli and the Gaussian launcher take these, the Gaussian one also its precision vector)."""
    M, H = h.shape
    return dict(
        h_ptr=h.data_ptr(), weight_ptr=weight.data_ptr(), bias_ptr=ptr(bias), x_ptr=x.data_ptr(),
        s_ptr=ptr(s), ll_partial_ptr=ll_partial.data_ptr(), ll_ptr=ll.data_ptr(),
        # C = 0 only when M == n_labelled (no enumerated row): the kernel never divides by it then, and
        # takes max(C, 1) so that its C >= 1 invariant holds for every M > 0.
        M=M, D=weight.shape[0], H=H, C=max(n_classes, 1), n_l=n_labelled,
        stride_hm=h.stride(0), stride_hk=h.stride(1),
        stride_wd=weight.stride(0), stride_wk=weight.stride(1),
        stride_b=0 if bias is None else bias.stride(0),
        stride_xn=x.stride(0), stride_xd=x.stride(1),
        precision="ieee" if h.dtype == torch.float64 else precision,
        dtype=dtype_name(h), stream=stream(h),
    )


def forward(
    h: Tensor, weight: Tensor, bias: Optional[Tensor], x: Tensor, n_labelled: int, n_classes: int, store_s: bool,
    precision: str,
) -> Tuple[Tensor, Tensor]:
    """h (M, H) rows -> (ll (M,), s (M, D) = x - sigmoid(l) when store_s, else an empty 1-D tensor)."""
    require_cuda("bernoulli_loglik_linear_cuda", h, weight, bias, x)
    M = h.shape[0]
    D = weight.shape[0]
    ll = h.new_empty((M,))
    s = h.new_empty((M, D) if store_s else (0,))
    if M > 0:
        _launch(h, weight, bias, x, s if store_s else None, ll, n_labelled, n_classes, precision)
    return ll, s


def backward(
    grad_ll: Tensor, h: Tensor, weight: Tensor, bias: Optional[Tensor], x: Tensor, s: Tensor, n_labelled: int,
    n_classes: int, precision: str, need_h: bool, need_weight: bool, need_bias: bool, need_x: bool,
) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """(dh (M, H), dW (D, H), db (D,), dx (N, D)), each empty when not needed (db also without bias): the
    VJP of csrc/cuda/bernoulli_loglik_linear.cu as cuBLAS GEMMs on s. A 1-D s (not stored by the forward)
    is recomputed by the forward kernel first."""
    require_cuda("bernoulli_loglik_linear_cuda_backward", grad_ll, h, weight, bias, x, s)
    M = h.shape[0]
    N, D = x.shape
    if s.dim() != 2:
        s = h.new_empty((M, D))
        if M > 0:
            _launch(h, weight, bias, x, s, h.new_empty((M,)), n_labelled, n_classes, precision)
    # n_examples = N: with C = 0 the examples past the labelled ones have no rows (their dx is 0).
    grads = bernoulli_linear_vjp_from_s(s, grad_ll.reshape(M), h, weight, bias, n_labelled, n_classes, n_examples=N)
    needs = (need_h, need_weight, need_bias and bias is not None, need_x)
    return tuple(grad if need else h.new_empty((0,)) for grad, need in zip(grads, needs))
