"""`class_conditional_activation` on the CPU (csrc/cpu/class_conditional_activation.cpp): labelled rows one
class each, the others every class, in one pass; the backward's grad_a and grad_w_y in one pass, act'
recomputed from the output for the row form (the next layer's saved input anyway), or from a for the
(N, C, H) form. grad_w_y is reduced over rows in double. bfloat16 in, computed in float32, bfloat16 out
(the next GEMM's input)."""

# No `from __future__ import annotations`: the custom ops' schemas come from these annotations.
from typing import Optional, Tuple

from torch import Tensor

from .. import _ext
from ..rows import class_conditional_output_shape
from .._launch import dtype_name, ptr

GRAD_FROM_OUTPUT = True  # the row form's backward reads act' from the output (see the op's formula)


def forward(a: Tensor, w_y: Tensor, classes: Optional[Tensor], activation: str) -> Tensor:
    ext = _ext.require_ext()
    a = a.contiguous()
    wy_t = w_y.t().contiguous()  # (C, H): a class column is a contiguous row
    N, H = a.shape
    C = w_y.shape[1]
    out = a.new_empty(class_conditional_output_shape(a, w_y, classes))
    n_l = 0 if classes is None else classes.shape[0]
    if classes is not None:
        classes = classes.contiguous()
    ext.class_conditional_forward(ptr(a), ptr(wy_t), ptr(classes), ptr(out), N, n_l, H, C, activation, dtype_name(a))
    return out


def backward(
    grad_out: Tensor,
    a: Optional[Tensor],
    w_y: Tensor,
    out: Optional[Tensor],
    classes: Optional[Tensor],
    activation: str,
    N: int,
    need_a: bool,
    need_w_y: bool,
) -> Tuple[Tensor, Tensor]:
    """(grad_a (N, H) or empty, grad_w_y (H, C) or empty). act' from `out` when given, else from a + w_y."""
    ext = _ext.require_ext()
    grad_out = grad_out.contiguous()
    H, C = w_y.shape
    n_l = 0 if classes is None else classes.shape[0]
    grad_a = grad_out.new_empty((N, H)) if need_a else grad_out.new_empty((0,))
    grad_w_y = grad_out.new_empty((H, C)) if need_w_y else grad_out.new_empty((0,))
    if not (need_a or need_w_y):
        return grad_a, grad_w_y
    if N == 0 or H == 0:
        return grad_a, grad_w_y.zero_()
    wy_t = w_y.t().contiguous() if out is None else None
    a = a.contiguous() if out is None else None
    out = out.contiguous() if out is not None else None
    if classes is not None:
        classes = classes.contiguous()
    ext.class_conditional_backward(
        ptr(grad_out), ptr(a), ptr(wy_t), ptr(out), ptr(classes), ptr(grad_a),
        grad_w_y.data_ptr() if need_w_y else 0,  # H * C may be 0 with N > 0: the kernel writes nothing
        N, n_l, H, C, activation, dtype_name(grad_out),
    )
    return grad_a, grad_w_y
