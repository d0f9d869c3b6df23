"""`gaussian_loglik_linear` on a CUDA GPU (csrc/cuda/bernoulli_loglik_linear.cu, the Bernoulli op's tile
kernels with a Gaussian epilogue): the means never reach device memory; the kernel reduces each row to
-0.5 sum_d p_d (x_d - mu_d)^2 with the precisions p = exp(-logvar) (computed here, in the compute dtype)
and, when a gradient is needed, writes s = p (x - mu), (M, D) in the input dtype, for the backward, whose
GEMMs run in torch (cuBLAS) on s (`rows.gaussian_linear_vjp_from_s`). The row-independent rest,
-0.5 (sum logvar + D log 2 pi), is added here as a tensor op (no host sync). Rows map to examples inside
the kernel (labelled rows first, then C per example)."""

# No `from __future__ import annotations`: the custom ops' schemas come from these annotations.
import math
from typing import Optional, Tuple

import torch
from torch import Tensor

from .._launch import cdiv, compute_dtype, ptr
from ..rows import gaussian_linear_vjp_from_s
from . import check_precision, extension, get_precision, require_cuda
from .bernoulli_loglik_linear import linear_loglik_arguments

LOG_2PI = math.log(2.0 * math.pi)


def keeps_s() -> bool:
    return True


def resolve_precision(precision: Optional[str]) -> str:
    """The means GEMM's precision (the Bernoulli op's setting): `precision`, or the module setting
    (`set_precision`) when None."""
    return get_precision() if precision is None else check_precision(precision)


def _extension():
    """ssvae_fast._C_cuda with the Gaussian launcher; RuntimeError saying how to rebuild it otherwise."""
    ext = extension()
    if not hasattr(ext, "gaussian_loglik_linear_forward"):
        raise RuntimeError(
            "ssvae_fast._C_cuda was built before gaussian_loglik_linear's kernels existed; rebuild it where nvcc "
            "is on PATH: `SSVAE_FAST_CUDA=1 pip install -e .` (or `python setup.py build_ext --inplace`)"
        )
    return ext


def _launch(
    h: Tensor, weight: Tensor, bias: Optional[Tensor], logvar: Tensor, x: Tensor, s: Optional[Tensor], ll: Tensor,
    n_labelled: int, n_classes: int, precision: str,
) -> None:
    """ll (M,) and, when s is given, s (M, D), both contiguous and preallocated; h (M, H) rows, M > 0."""
    M, D = h.shape[0], weight.shape[0]
    ext = _extension()
    acc = compute_dtype(h.dtype)
    v = logvar.to(acc)
    precisions = torch.exp(-v).contiguous()  # read by the kernel in the compute dtype
    ll_partial = h.new_empty((cdiv(D, ext.GAUSSIAN_BLOCK_D), M), dtype=acc)
    with torch.cuda.device(h.device):
        ext.gaussian_loglik_linear_forward(
            precision_vec_ptr=ptr(precisions),
            **linear_loglik_arguments(h, weight, bias, x, s, ll_partial, ll, n_labelled, n_classes, precision))
    # The kernel's -0.5 sum_d p r^2 plus the row-independent -0.5 (sum_d v_d + D log 2 pi), a 0-d tensor in
    # the compute dtype (no host sync). 16-bit ll: added in float32, then rounded to the input dtype.
    offset = (v.sum() + D * LOG_2PI).mul_(-0.5)
    if ll.dtype == acc:
        ll.add_(offset)
    else:
        ll.copy_(ll.to(acc).add_(offset))


def forward(
    h: Tensor, weight: Tensor, bias: Optional[Tensor], logvar: Tensor, x: Tensor, n_labelled: int, n_classes: int,
    store_s: bool, precision: str,
) -> Tuple[Tensor, Tensor]:
    """h (M, H) rows -> (ll (M,), s (M, D) = exp(-logvar) (x - mu) when store_s, else an empty 1-D tensor)."""
    require_cuda("gaussian_loglik_linear_cuda", h, weight, bias, logvar, x)
    M = h.shape[0]
    D = weight.shape[0]
    ll = h.new_empty((M,))
    s = h.new_empty((M, D) if store_s else (0,))
    if M > 0:
        _launch(h, weight, bias, logvar, x, s if store_s else None, ll, n_labelled, n_classes, precision)
    return ll, s


def backward(
    grad_ll: Tensor, h: Tensor, weight: Tensor, bias: Optional[Tensor], logvar: Tensor, x: Tensor, s: Tensor,
    n_labelled: int, n_classes: int, precision: str, need_h: bool, need_weight: bool, need_bias: bool,
    need_logvar: bool, need_x: bool,
) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """(dh (M, H), dW (D, H), db (D,), dlogvar (D,), dx (N, D)), each a distinct empty tensor when not needed
    (db also without bias): cuBLAS GEMMs on s. An s that is not (M, D) (not stored by the forward) is
    recomputed by the forward kernel first."""
    require_cuda("gaussian_loglik_linear_cuda_backward", grad_ll, h, weight, bias, logvar, x, s)
    M = h.shape[0]
    N, D = x.shape
    if s.shape != (M, D):
        s = h.new_empty((M, D))
        if M > 0:
            _launch(h, weight, bias, logvar, x, s, h.new_empty((M,)), n_labelled, n_classes, precision)
    # n_examples = N: with C = 0 the examples past the labelled ones have no rows (their dx is 0).
    needs = (need_h, need_weight, need_bias and bias is not None, need_logvar, need_x)
    return gaussian_linear_vjp_from_s(s, grad_ll.reshape(M), h, weight, bias, logvar, n_labelled, n_classes,
                                      n_examples=N, needs=needs)
