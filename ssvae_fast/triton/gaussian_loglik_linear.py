"""Fused decoder output layer + Gaussian log-likelihood with a learned per-dimension log-variance v: the
(M, D) means never reach memory.

    mu[m, :] = W h[m] + b                                  h (M, H) rows, W (D, H), b (D,)
    ll[m]    = -0.5 (sum_d p_d (x[e(m), d] - mu[m, d])^2 + sum_d v_d + D log 2 pi),   p = exp(-v)

Row layout e(m), tiling, autotuning and the fixed-order sum of the per-tile partial row sums are those of
the Bernoulli kernel (ssvae_fast/triton/bernoulli_loglik_linear.py), whose tile helper this kernel calls:
one program per (BLOCK_M rows) x (BLOCK_D dimensions) tile, `tl.dot` over H, then the epilogue.

What is fused: the GEMM h @ W^T, the bias, the residuals r = x[e(m)] - mu, the weighted squares p r^2
and their row sum over the tile, and (when a gradient is needed) the backward's only (M, D) input
s = p r, written in h's dtype. The launcher computes p = exp(-v) (D,) and the row-independent constant
sum_d v_d + D log 2 pi in torch (a tensor: no host sync) and adds the constant after summing the
partials. The backward is torch GEMMs on s (`rows.gaussian_linear_vjp_from_s`); without a stored s the
forward kernel recomputes it first.

Numerics: accumulation in fp32 (fp64 for fp64 inputs; bf16/fp16 inputs in fp32), ll in h's dtype. p r^2
is computed as s r: finite wherever exp(-v) and the squares are (as in the torch face). fp32 `tl.dot`
uses `input_precision` as the Bernoulli kernels do; fp64 inputs always use "ieee".
"""

# No `from __future__ import annotations`: the custom ops' schemas come from the launchers' annotations.
import math
from typing import Optional, Tuple

import torch
import triton
import triton.language as tl

from .._launch import compute_dtype
from ..rows import gaussian_linear_vjp_from_s
from . import device_guard, is_fp64, to_compute
from .bernoulli_loglik_linear import (  # noqa: F401  (keeps_s: the Bernoulli op's recompute setting serves both)
    BLOCK_D, _grid, _logits_and_x_tile, gemm_configs, keeps_s, resolve_precision)

__all__ = ["forward", "backward", "resolve_precision"]

LOG_2PI = math.log(2.0 * math.pi)


@triton.autotune(configs=gemm_configs(), key=["M", "D", "H"])
@triton.jit
def _gaussian_loglik_linear_fwd_kernel(
    h_ptr, w_ptr, b_ptr, x_ptr,  # h (M, H), W (D, H), b (D,), x (N, D): as in the Bernoulli forward kernel
    p_ptr,  # (D,) contiguous precisions exp(-logvar), in the compute dtype
    s_ptr,  # (M, D) out, contiguous rows: s = p (x - mu) (written only when STORE_S)
    ll_part_ptr,  # (cdiv(D, BLOCK_D), M) out, contiguous: sum of p (x - mu)^2 over one D tile
    M, D, H, n_l, n_classes,  # rows, dimensions, hidden units, labelled rows, C >= 1
    stride_hm, stride_hk, stride_wd, stride_wk, stride_b, stride_xn, stride_xd, stride_sm,
    HAS_BIAS: tl.constexpr, STORE_S: tl.constexpr, IS_FP64: tl.constexpr, INPUT_PRECISION: tl.constexpr,
    BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr,
):
    pid_d = tl.program_id(1)
    rows64, cols64, row_mask, mask, mu, x = _logits_and_x_tile(
        h_ptr, w_ptr, b_ptr, x_ptr, tl.program_id(0), pid_d, M, D, H, n_l, n_classes,
        stride_hm, stride_hk, stride_wd, stride_wk, stride_b, stride_xn, stride_xd,
        HAS_BIAS, IS_FP64, INPUT_PRECISION, BLOCK_M, BLOCK_D, BLOCK_K,
    )
    p = to_compute(tl.load(p_ptr + cols64, mask=cols64 < D, other=0.0), IS_FP64)
    r = x - mu
    s = p[None, :] * r
    terms = tl.where(mask, s * r, 0.0)
    tl.store(ll_part_ptr + pid_d.to(tl.int64) * M + rows64, tl.sum(terms, axis=1), mask=row_mask)
    if STORE_S:
        tl.store(s_ptr + rows64[:, None] * stride_sm + cols64[None, :], s.to(s_ptr.dtype.element_ty), mask=mask)


# ------------------------------------------------------------------------------------------------------
# Launchers: the op's `forward` and `backward` (signatures: ssvae_fast/ops/gaussian_loglik_linear.py).
# ------------------------------------------------------------------------------------------------------
def forward(
    h: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], logvar: torch.Tensor, x: torch.Tensor,
    n_labelled: int, n_classes: int, store_s: bool, precision: str,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """(ll (M,), s (M, D) = exp(-logvar) (x - mu) when store_s, else an empty tensor) for h (M, H) rows:
    n_labelled rows first (row i scores x[i]), then n_classes rows per remaining example."""
    M, H = h.shape
    D = weight.shape[0]
    acc = compute_dtype(h.dtype)
    v = logvar.to(acc)
    s = h.new_empty((M, D) if store_s else (0,))
    ll_part = h.new_empty((triton.cdiv(D, BLOCK_D), M), dtype=acc)
    if M > 0 and D > 0:
        precisions = torch.exp(-v).contiguous()
        with device_guard(h):
            _gaussian_loglik_linear_fwd_kernel[_grid](
                h, weight, weight if bias is None else bias, x, precisions, s if store_s else ll_part, ll_part,
                M, D, H, n_labelled, max(n_classes, 1),  # C = 0 only without enumerated rows: never divide by 0
                h.stride(0), h.stride(1), weight.stride(0), weight.stride(1),
                0 if bias is None else bias.stride(0), x.stride(0), x.stride(1), D,
                HAS_BIAS=bias is not None, STORE_S=store_s, IS_FP64=is_fp64(h),
                INPUT_PRECISION="ieee" if is_fp64(h) else precision, BLOCK_D=BLOCK_D,
            )
    # Second pass of the row sums over D tiles (fixed order, deterministic; 0 when D == 0), then the
    # row-independent terms.
    ll = -0.5 * (ll_part.sum(0) + (v.sum() + D * LOG_2PI))
    return ll.to(h.dtype), s


def backward(
    grad_ll: torch.Tensor, h: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], logvar: torch.Tensor,
    x: torch.Tensor, s: torch.Tensor, n_labelled: int, n_classes: int, precision: str, need_h: bool,
    need_weight: bool, need_bias: bool, need_logvar: bool, need_x: bool,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(dh (M, H), dW (D, H), db (D,), dlogvar (D,), dx (N, D)), each a distinct empty tensor when not
    needed (db also without bias): torch GEMMs on s = exp(-logvar) (x - mu) from the forward, recomputed
    by the forward kernel when s is not (M, D)."""
    M = h.shape[0]
    D = weight.shape[0]
    if s.shape != (M, D):
        _, s = forward(h, weight, bias, logvar, x, n_labelled, n_classes, True, precision)
    needs = (need_h, need_weight, need_bias, need_logvar, need_x)
    return gaussian_linear_vjp_from_s(s, grad_ll, h, weight, bias, logvar, n_labelled, n_classes, x.shape[0],
                                      needs=needs)
