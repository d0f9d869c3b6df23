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

import triton
import triton.language as tl

from . import interpreting, to_compute


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
