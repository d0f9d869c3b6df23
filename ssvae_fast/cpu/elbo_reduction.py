"""`elbo_reduction` on the CPU (csrc/cpu/elbo_reduction.cpp): per-example losses and their backward, one
pass each, everything in double and rounded once; the losses (and the gradient they receive) in the
compute dtype, float32 for bfloat16 inputs."""

# No `from __future__ import annotations`: the custom ops' schemas come from these annotations.
from typing import Tuple

from torch import Tensor

from .. import _ext
from .._launch import compute_dtype, dtype_name, ptr
from . import REDUCTIONS_IN_COMPUTE_DTYPE  # noqa: F401  (the losses)


def forward(
    logits_y: Tensor, y_l: Tensor, ll_l: Tensor, kl_l: Tensor, ll_u: Tensor, kl_u: Tensor, alpha: float
) -> Tensor:
    ext = _ext.require_ext()
    logits_y, y_l = logits_y.contiguous(), y_l.contiguous()
    ll_l, kl_l, ll_u, kl_u = (t.contiguous() for t in (ll_l, kl_l, ll_u, kl_u))
    n, C = logits_y.shape
    n_l = y_l.shape[0]
    loss = logits_y.new_empty((n,), dtype=compute_dtype(logits_y.dtype))
    ext.elbo_reduction_forward(
        ptr(logits_y), ptr(y_l), ptr(ll_l), ptr(kl_l), ptr(ll_u), ptr(kl_u), ptr(loss),
        n_l, n - n_l, C, alpha, dtype_name(logits_y),
    )
    return loss


def backward(
    grad: Tensor, logits_y: Tensor, y_l: Tensor, ll_u: Tensor, kl_u: Tensor, alpha: float
) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """(d logits_y, d ll_l, d kl_l, d ll_u, d kl_u), contiguous."""
    ext = _ext.require_ext()
    grad = grad.to(compute_dtype(logits_y.dtype)).contiguous()
    logits_y, y_l = logits_y.contiguous(), y_l.contiguous()
    ll_u, kl_u = ll_u.contiguous(), kl_u.contiguous()
    n, C = logits_y.shape
    n_l = y_l.shape[0]
    n_u = n - n_l
    dlogits = logits_y.new_empty((n, C))
    dll_l, dkl_l = logits_y.new_empty((n_l,)), logits_y.new_empty((n_l,))
    dll_u, dkl_u = logits_y.new_empty((n_u, C)), logits_y.new_empty((n_u, C))
    ext.elbo_reduction_backward(
        ptr(grad), ptr(logits_y), ptr(y_l), ptr(ll_u), ptr(kl_u),
        ptr(dlogits), ptr(dll_l), ptr(dkl_l), ptr(dll_u), ptr(dkl_u),
        n_l, n_u, C, alpha, dtype_name(logits_y),
    )
    return dlogits, dll_l, dkl_l, dll_u, dkl_u
