"""`class_conditional_activation` on a CUDA GPU (csrc/cuda/class_conditional_activation.cu, with the VJP):
one launch for both kinds of rows, forward and backward; dw_y reduced without atomics (per-row-block
partial sums, summed in a fixed order by a second kernel). Computes in fp32 (fp64 for fp64 inputs)."""

# No `from __future__ import annotations`: the custom ops' schemas come from these annotations.
from typing import Optional, Tuple

import torch
from torch import Tensor

from .._launch import cdiv, compute_dtype, dtype_name, ptr, stream
from ..rows import class_conditional_output_shape
from . import extension, require_cuda


def _layout(a: Tensor, w_y: Tensor, classes: Optional[Tensor]) -> dict:
    """Sizes and strides both kernels take."""
    N, H = a.shape
    return dict(
        N=N, n_l=0 if classes is None else classes.shape[0], H=H, C=w_y.shape[1],
        stride_an=a.stride(0), stride_ah=a.stride(1), stride_wh=w_y.stride(0), stride_wc=w_y.stride(1),
        stride_cls=0 if classes is None else classes.stride(0), dtype=dtype_name(a), stream=stream(a),
    )


def forward(a: Tensor, w_y: Tensor, classes: Optional[Tensor], activation: str) -> Tensor:
    """(N, C, H) for classes None; (n_l + (N - n_l) * C, H), labelled rows first, for classes (n_l,)."""
    require_cuda("class_conditional_activation_cuda", a, w_y, classes)
    out = a.new_empty(class_conditional_output_shape(a, w_y, classes))
    if out.numel() == 0:
        return out
    with torch.cuda.device(a.device):
        extension().class_conditional_forward(
            a_ptr=a.data_ptr(), w_y_ptr=w_y.data_ptr(), classes_ptr=ptr(classes), out_ptr=out.data_ptr(),
            activation=activation, **_layout(a, w_y, classes),
        )
    return out


def backward(
    grad: Tensor, a: Optional[Tensor], w_y: Tensor, out: Optional[Tensor], classes: Optional[Tensor],
    activation: str, N: int, need_a: bool, need_w_y: bool,
) -> Tuple[Tensor, Tensor]:
    """(da (N, H), dw_y (H, C)), contiguous, each empty when not needed, from grad in the forward's output
    layout; act' is recomputed from a (this backend does not declare GRAD_FROM_OUTPUT, so a is saved)."""
    require_cuda("class_conditional_activation_cuda_backward", grad, a, w_y, classes)
    H, C = w_y.shape
    da = a.new_empty((N, H))
    dw_y = a.new_empty((H, C))
    if da.numel() > 0 or dw_y.numel() > 0:
        ext = extension()
        grad = grad.contiguous()
        # Per-row-block partial sums of dw_y, summed in a fixed order by a second kernel (zeros when N == 0).
        dw_partial = a.new_empty((cdiv(N, ext.CLASS_CONDITIONAL_BACKWARD_ROWS), C, H), dtype=compute_dtype(a.dtype))
        with torch.cuda.device(a.device):
            ext.class_conditional_backward(
                grad_ptr=grad.data_ptr(), a_ptr=a.data_ptr(), w_y_ptr=w_y.data_ptr(), classes_ptr=ptr(classes),
                da_ptr=da.data_ptr(), dw_partial_ptr=dw_partial.data_ptr(), dw_y_ptr=dw_y.data_ptr(),
                activation=activation, **_layout(a, w_y, classes),
            )
    return da if need_a else a.new_empty((0,)), dw_y if need_w_y else a.new_empty((0,))
