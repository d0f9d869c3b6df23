"""`gaussian_reparam_kl` on the CPU: z and KL in one pass; the backward to head and eps in one pass
(csrc/cpu/gaussian_reparam_kl.cpp). KL accumulates in double and comes back in the compute dtype (float32
for bfloat16 inputs, whose z and gradients are bfloat16)."""

# No `from __future__ import annotations`: the custom ops' schemas come from these annotations.
from typing import Optional, Tuple

from torch import Tensor

from .. import _ext
from .._launch import compute_dtype, dtype_name, ptr
from . import REDUCTIONS_IN_COMPUTE_DTYPE  # noqa: F401  (kl)


def forward(head: Tensor, eps: Tensor) -> Tuple[Tensor, Tensor]:
    ext = _ext.require_ext()
    head, eps = head.contiguous(), eps.contiguous()
    R, Z = eps.shape
    z = head.new_empty((R, Z))
    kl = head.new_empty((R,), dtype=compute_dtype(head.dtype))
    ext.gaussian_reparam_kl_forward(ptr(head), ptr(eps), ptr(z), ptr(kl), R, Z, dtype_name(head))
    return z, kl


def backward(
    head: Tensor, eps: Tensor, grad_z: Optional[Tensor], grad_kl: Optional[Tensor], need_head: bool, need_eps: bool
) -> Tuple[Tensor, Tensor]:
    """(d head (R, 2Z) or empty, d eps (R, Z) or empty); a None grad_* counts as zero. grad_z is read in
    head's dtype, grad_kl in the compute dtype."""
    ext = _ext.require_ext()
    head, eps = head.contiguous(), eps.contiguous()
    R, Z = eps.shape
    dhead = head.new_empty((R, 2 * Z) if need_head else (0,))
    deps = head.new_empty((R, Z) if need_eps else (0,))
    grad_z = grad_z.to(head.dtype).contiguous() if grad_z is not None else None
    grad_kl = grad_kl.to(compute_dtype(head.dtype)).contiguous() if grad_kl is not None else None
    ext.gaussian_reparam_kl_backward(
        ptr(head), ptr(eps), ptr(grad_z), ptr(grad_kl), ptr(dhead), ptr(deps), R, Z, dtype_name(head)
    )
    return dhead, deps
