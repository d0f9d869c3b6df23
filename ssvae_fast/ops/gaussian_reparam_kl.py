"""Gaussian head epilogue: [mu, logvar], eps -> z = mu + exp(logvar / 2) * eps and KL(q || N(0, I)).

    head (R, 2Z) = [mu, logvar], eps (R, Z)
    z[r]  = mu[r] + exp(logvar[r] / 2) * eps[r]                         (R, Z)
    kl[r] = 0.5 * sum_k [mu[r, k]^2 + exp(logvar[r, k]) - 1 - logvar[r, k]]   (R,)

VJP (g_z = dLoss/dz, g_kl = dLoss/dkl, sigma = exp(logvar / 2)):

    d mu     = g_z + g_kl * mu
    d logvar = g_z * eps * sigma / 2 + g_kl * (exp(logvar) - 1) / 2
    d eps    = g_z * sigma

Faces, top to bottom: the plain-torch op (the `torch` backend), the input checks, the custom ops' fakes,
the autograd formula every compiled backend shares, the table of implementations by backend, and the
public entry point `gaussian_reparam_kl(head, eps, backend=...)`.
"""

# No `from __future__ import annotations`: torch.library.custom_op infers each op's schema from the
# implementations' real annotations.
from typing import Tuple

import torch
from torch import Tensor

from .._launch import compute_dtype
from ..functional import gaussian_kl
from .glue import (Implementations, bind_backend, cast_for_backend, check_tensors, check_types, reduction_dtype,
                   reduction_result)

OP = "gaussian_reparam_kl"


# 1. The plain-torch face.
def gaussian_reparam_kl_torch(head: Tensor, eps: Tensor) -> Tuple[Tensor, Tensor]:
    """head: (R, 2Z) = [mu, logvar]; eps: (R, Z) -> z (R, Z), kl (R,)."""
    check_inputs(head, eps)
    check_tensors(f"{OP}_torch", "torch", {"head": head, "eps": eps})
    z_dim = eps.shape[1]
    mu, logvar = head[:, :z_dim], head[:, z_dim:]
    z = mu + torch.exp(0.5 * logvar) * eps
    # The KL sums in float32 for 16-bit inputs; its result in head's dtype, or float32 under torch.autocast.
    acc = compute_dtype(head.dtype)
    kl = gaussian_kl(mu.to(acc), logvar.to(acc))
    return z, reduction_result(kl, head.dtype)


# 2. Input checks (shapes; each backend's devices and dtypes are checked by `glue.check_tensors`).
def check_inputs(head: Tensor, eps: Tensor) -> None:
    check_types(OP, {"head": head, "eps": eps})
    if head.dim() != 2 or head.shape[1] % 2 != 0:
        raise ValueError(f"{OP}: head must be (R, 2 * z_dim), got shape {tuple(head.shape)}")
    if eps.shape != (head.shape[0], head.shape[1] // 2):
        raise ValueError(
            f"{OP}: eps must be (R, z_dim) = {(head.shape[0], head.shape[1] // 2)}, got {tuple(eps.shape)}"
        )


# 3. The custom ops' schemas (from the implementations' annotations) and fakes:
#    forward(head, eps) -> (z (R, Z), kl (R,) in `glue.reduction_dtype`)
#    backward(head, eps, grad_z?, grad_kl?, need_head, need_eps) -> (d head (R, 2Z) or (0,), d eps (R, Z) or (0,))
#    A None output gradient counts as zero.
def _forward_fake(head, eps, kernels):
    return head.new_empty(eps.shape), head.new_empty((eps.shape[0],), dtype=reduction_dtype(kernels, head.dtype))


def _backward_fake(head, eps, grad_z, grad_kl, need_head, need_eps):
    R, Z = eps.shape
    return head.new_empty((R, 2 * Z) if need_head else (0,)), head.new_empty((R, Z) if need_eps else (0,))


# 4. The autograd formula.
def _setup_context(ctx, inputs, output, kernels) -> None:
    ctx.save_for_backward(*inputs)
    ctx.set_materialize_grads(False)


def _vjp(ctx, backward, grad_z, grad_kl):
    head, eps = ctx.saved_tensors
    need_head, need_eps = ctx.needs_input_grad
    if (grad_z is None and grad_kl is None) or not (need_head or need_eps):
        return None, None
    dhead, deps = backward(head, eps, grad_z, grad_kl, need_head, need_eps)
    return (dhead if need_head else None, deps if need_eps else None)


# 5. Implementations by backend: `torch` is the face above; each other backend's kernels are in
#    ssvae_fast/<backend>/<OP>.py.
IMPLEMENTATIONS = Implementations(OP, ("cpu", "cuda", "triton"), _forward_fake, _backward_fake, _setup_context, _vjp)


def gaussian_reparam_kl(head: Tensor, eps: Tensor, *, backend: str = "torch") -> Tuple[Tensor, Tensor]:
    """head: (R, 2Z) = [mu, logvar]; eps: (R, Z) -> z = mu + exp(logvar / 2) * eps (R, Z) and
    kl = 0.5 * sum_k (mu^2 + exp(logvar) - 1 - logvar) (R,), by `backend`'s kernels: one pass forward, one
    backward (to head and eps). KL accumulates in double on the CPU, in fp32 (fp64 for fp64 inputs) on a
    GPU. z in the inputs' dtype; kl too, except under torch.autocast, where the cpu backend's kl of 16-bit
    inputs is float32 (as the torch face's; the GPU backends round it to the inputs' dtype). Any strides."""
    if backend == "torch":
        return gaussian_reparam_kl_torch(head, eps)
    check_inputs(head, eps)
    head, eps = cast_for_backend(backend, (head, eps), matmul=False)
    check_tensors(f"{OP}_{backend}", backend, {"head": head, "eps": eps})
    z, kl = IMPLEMENTATIONS[backend](head, eps)
    return z, reduction_result(kl, head.dtype)


gaussian_reparam_kl_cpu, gaussian_reparam_kl_cuda, gaussian_reparam_kl_triton = (
    bind_backend(gaussian_reparam_kl, name) for name in IMPLEMENTATIONS.backends
)
