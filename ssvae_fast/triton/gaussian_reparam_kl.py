"""Gaussian head epilogue: head = [mu, logvar], eps -> z = mu + exp(logvar / 2) * eps and
KL(N(mu, exp(logvar)) || N(0, I)) = 0.5 * sum_k [mu_k^2 + exp(logvar_k) - 1 - logvar_k].

What is fused: the split of the head, exp, the reparameterization and the KL terms and their row sum,
forward; all four partial derivatives, backward. Memory traffic (R = 1000 rows, Z = 50, fp32;
arithmetic, not measured): plain torch makes ~8 elementwise passes over (R, Z) (exp, mul, add, square,
exp, three subtractions/adds, sum), each reading and writing 0.2 MB, and saves several intermediates;
here the forward reads head and eps once (0.6 MB) and writes z and kl (0.2 MB); the backward reads
head, eps and the two gradients once and writes d head and d eps. Nothing beyond the inputs is saved.

Tiling: one program per BLOCK_R rows, looping over Z in BLOCK_Z chunks (the KL row sum accumulates in
fp32, fp64 for fp64 inputs, across chunks). Offsets are int64.
"""

# No `from __future__ import annotations`: the custom ops' schemas come from the launchers' annotations.
from typing import Optional, Tuple

import torch
import triton
import triton.language as tl

from . import device_guard, interpreting, is_fp64, to_compute


def block_sizes(z_dim: int) -> tuple[int, int]:
    """(BLOCK_R, BLOCK_Z); under the interpreter small enough that z_dim = 5 takes two Z chunks."""
    if interpreting():
        return 8, 4
    return 32, min(64, max(16, triton.next_power_of_2(z_dim)))


@triton.jit
def _gaussian_reparam_kl_fwd_kernel(
    head_ptr,  # (R, 2Z) encoder head [mu, logvar]
    eps_ptr,  # (R, Z) standard normal noise
    z_ptr,  # (R, Z) out, contiguous
    kl_ptr,  # (R,) out
    R,  # rows
    Z,  # latent size
    stride_hr,  # elements between rows of head
    stride_hz,  # elements between columns of head
    stride_er,  # elements between rows of eps
    stride_ez,  # elements between columns of eps
    IS_FP64: tl.constexpr,
    BLOCK_R: tl.constexpr,
    BLOCK_Z: tl.constexpr,
):
    rows64 = (tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)).to(tl.int64)
    row_mask = rows64 < R
    ks = tl.arange(0, BLOCK_Z)
    if IS_FP64:
        kl = tl.zeros((BLOCK_R,), dtype=tl.float64)
    else:
        kl = tl.zeros((BLOCK_R,), dtype=tl.float32)
    for k0 in range(0, Z, BLOCK_Z):
        cols64 = (k0 + ks).to(tl.int64)
        mask = row_mask[:, None] & (cols64 < Z)[None, :]
        mu_ptrs = head_ptr + rows64[:, None] * stride_hr + cols64[None, :] * stride_hz
        mu = to_compute(tl.load(mu_ptrs, mask=mask, other=0.0), IS_FP64)
        logvar = to_compute(tl.load(mu_ptrs + Z * stride_hz, mask=mask, other=0.0), IS_FP64)
        eps = tl.load(eps_ptr + rows64[:, None] * stride_er + cols64[None, :] * stride_ez, mask=mask, other=0.0)
        z = mu + tl.exp(0.5 * logvar) * to_compute(eps, IS_FP64)
        tl.store(z_ptr + rows64[:, None] * Z + cols64[None, :], z.to(z_ptr.dtype.element_ty), mask=mask)
        kl += tl.sum(tl.where(mask, mu * mu + tl.exp(logvar) - 1.0 - logvar, 0.0), axis=1)
    tl.store(kl_ptr + rows64, (0.5 * kl).to(kl_ptr.dtype.element_ty), mask=row_mask)


# Backward (VJP). With std = exp(logvar / 2), gz = dLoss/dz (R, Z), gkl = dLoss/dkl (R,):
#   z = mu + std * eps,  kl = 0.5 * sum_k (mu^2 + exp(logvar) - 1 - logvar)
#   d mu     = gz + gkl * mu
#   d logvar = gz * eps * 0.5 * std + gkl * 0.5 * (exp(logvar) - 1)
#   d eps    = gz * std
# written as d head = [d mu, d logvar] (R, 2Z) and d eps (R, Z). Elementwise: no reduction, no atomics.
@triton.jit
def _gaussian_reparam_kl_bwd_kernel(
    head_ptr,  # (R, 2Z) [mu, logvar]
    eps_ptr,  # (R, Z) noise
    gz_ptr,  # (R, Z) dLoss/dz, any strides (0 for an expanded gradient)
    gkl_ptr,  # (R,) dLoss/dkl
    dhead_ptr,  # (R, 2Z) out, contiguous
    deps_ptr,  # (R, Z) out, contiguous
    R,  # rows
    Z,  # latent size
    stride_hr,  # elements between rows of head
    stride_hz,  # elements between columns of head
    stride_er,  # elements between rows of eps
    stride_ez,  # elements between columns of eps
    stride_gzr,  # elements between rows of gz
    stride_gzz,  # elements between columns of gz
    stride_gkl,  # elements between entries of gkl
    IS_FP64: tl.constexpr,
    BLOCK_R: tl.constexpr,
    BLOCK_Z: tl.constexpr,
):
    rows64 = (tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)).to(tl.int64)
    row_mask = rows64 < R
    ks = tl.arange(0, BLOCK_Z)
    gkl = to_compute(tl.load(gkl_ptr + rows64 * stride_gkl, mask=row_mask, other=0.0), IS_FP64)[:, None]
    for k0 in range(0, Z, BLOCK_Z):
        cols64 = (k0 + ks).to(tl.int64)
        mask = row_mask[:, None] & (cols64 < Z)[None, :]
        mu_ptrs = head_ptr + rows64[:, None] * stride_hr + cols64[None, :] * stride_hz
        mu = to_compute(tl.load(mu_ptrs, mask=mask, other=0.0), IS_FP64)
        logvar = to_compute(tl.load(mu_ptrs + Z * stride_hz, mask=mask, other=0.0), IS_FP64)
        eps = tl.load(eps_ptr + rows64[:, None] * stride_er + cols64[None, :] * stride_ez, mask=mask, other=0.0)
        eps = to_compute(eps, IS_FP64)
        gz = tl.load(gz_ptr + rows64[:, None] * stride_gzr + cols64[None, :] * stride_gzz, mask=mask, other=0.0)
        gz = to_compute(gz, IS_FP64)
        std = tl.exp(0.5 * logvar)
        d_mu = gz + gkl * mu
        d_logvar = 0.5 * (gz * eps * std + gkl * (tl.exp(logvar) - 1.0))
        d_eps = gz * std
        dmu_ptrs = dhead_ptr + rows64[:, None] * (2 * Z) + cols64[None, :]
        tl.store(dmu_ptrs, d_mu.to(dhead_ptr.dtype.element_ty), mask=mask)
        tl.store(dmu_ptrs + Z, d_logvar.to(dhead_ptr.dtype.element_ty), mask=mask)
        tl.store(deps_ptr + rows64[:, None] * Z + cols64[None, :], d_eps.to(deps_ptr.dtype.element_ty), mask=mask)


# ------------------------------------------------------------------------------------------------------
# Launchers: the op's `forward` and `backward` (signatures: ssvae_fast/ops/gaussian_reparam_kl.py).
# ------------------------------------------------------------------------------------------------------
def forward(head: torch.Tensor, eps: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    R, Z = eps.shape
    z = head.new_empty((R, Z))
    kl = head.new_empty((R,))
    if R == 0:
        return z, kl
    if Z == 0:
        return z, kl.zero_()
    block_r, block_z = block_sizes(Z)
    with device_guard(head):
        _gaussian_reparam_kl_fwd_kernel[(triton.cdiv(R, block_r),)](
            head, eps, z, kl, R, Z,
            head.stride(0), head.stride(1), eps.stride(0), eps.stride(1),
            IS_FP64=is_fp64(head), BLOCK_R=block_r, BLOCK_Z=block_z,
        )
    return z, kl


def backward(
    head: torch.Tensor, eps: torch.Tensor, grad_z: Optional[torch.Tensor], grad_kl: Optional[torch.Tensor],
    need_head: bool, need_eps: bool,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """(d head (R, 2Z), d eps (R, Z)), contiguous, each empty when not needed; None gradients count as 0."""
    R, Z = eps.shape
    dhead = head.new_empty((R, 2 * Z))
    deps = head.new_empty((R, Z))
    if R > 0 and Z > 0:
        grad_z = head.new_zeros((R, Z)) if grad_z is None else grad_z
        grad_kl = head.new_zeros((R,)) if grad_kl is None else grad_kl
        block_r, block_z = block_sizes(Z)
        with device_guard(head):
            _gaussian_reparam_kl_bwd_kernel[(triton.cdiv(R, block_r),)](
                head, eps, grad_z, grad_kl, dhead, deps, R, Z,
                head.stride(0), head.stride(1), eps.stride(0), eps.stride(1),
                grad_z.stride(0), grad_z.stride(1), grad_kl.stride(0),
                IS_FP64=is_fp64(head), BLOCK_R=block_r, BLOCK_Z=block_z,
            )
    return dhead if need_head else head.new_empty((0,)), deps if need_eps else head.new_empty((0,))
