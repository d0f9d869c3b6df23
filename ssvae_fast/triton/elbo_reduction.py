"""M2's classifier-weighted ELBO reduction and its VJP, one kernel each (docs/design.md section 2, item 5).

    log_q = log_softmax(logits_y)  (n_l + n_u, C), labelled rows first;  L = -ll + kl + log C
    labelled row r:    loss[r] = kl_l[r] - ll_l[r] + log C - alpha * log_q[r, y_l[r]]
    unlabelled row r:  loss[r] = sum_c q[r, c] * (kl_u[u, c] - ll_u[u, c] + log C + log_q[r, c]),  u = r - n_l

What is fused: the log-softmax, the softmax, the entropy, the q-weighted class sum, the labelled
terms, the concatenation of both kinds of rows, forward; every input's gradient in one pass, backward.
Memory traffic (n = 1000 rows, C = 10; arithmetic, not measured): plain torch makes ~12 small kernels
(log_softmax, gather, exp, two subtractions, add, mul, sum, cat, ...) each with a round trip of (n, C);
here the forward reads logits_y, ll_u, kl_u once and writes n losses, the backward reads them plus the
upstream gradient once and writes the five gradients. Nothing beyond the inputs is saved.

Tiling: one program per BLOCK_ROWS rows, all C classes of a row in one BLOCK_C = next_pow2(C) vector.
Row r < n_l is labelled, else unlabelled; both kinds share the same program (masked loads). Compute in
fp32 (fp64 for fp64 inputs). alpha and log C arrive as fp32 (hi, lo) pairs so that fp64 runs see them to
~2**-48 (Triton passes Python floats as fp32).
"""

# No `from __future__ import annotations`: the custom ops' schemas come from the launchers' annotations.
import math
from typing import Tuple

import torch
import triton
import triton.language as tl

from . import device_guard, fp32_pair, fp32_pair_sum, interpreting, is_fp64, to_compute

MAX_CLASSES = 16384  # one row's classes live in one block


def block_sizes(n_classes: int) -> tuple[int, int]:
    """(BLOCK_ROWS, BLOCK_C); ~2048 elements a program on a GPU, 4 rows under the interpreter."""
    block_c = max(2, triton.next_power_of_2(n_classes))
    if interpreting():
        return 4, block_c
    return max(1, min(64, 2048 // block_c)), block_c


@triton.jit
def _log_softmax_rows(
    logits_ptr, rows64, row_mask, cols64, col_mask, stride_lr, stride_lc, IS_FP64: tl.constexpr
):
    """(log_q, q), each (BLOCK_ROWS, BLOCK_C), both 0 at columns >= C (finite everywhere, so q * f needs
    no NaN masking); rows past n see zero logits (finite)."""
    mask = row_mask[:, None] & col_mask[None, :]
    logits = tl.load(logits_ptr + rows64[:, None] * stride_lr + cols64[None, :] * stride_lc, mask=mask, other=0.0)
    logits = tl.where(col_mask[None, :], to_compute(logits, IS_FP64), float("-inf"))
    shifted = logits - tl.max(logits, axis=1)[:, None]
    e = tl.exp(shifted)
    total = tl.sum(e, axis=1)[:, None]
    return tl.where(col_mask[None, :], shifted - tl.log(total), 0.0), e / total


@triton.jit
def _elbo_reduction_fwd_kernel(
    logits_ptr,  # (n, C) classifier logits, n = n_l + n_u, labelled rows first
    y_ptr,  # (n_l,) int64 labels
    ll_l_ptr,  # (n_l,) log p(x | y, z) of labelled rows
    kl_l_ptr,  # (n_l,) KL of labelled rows
    ll_u_ptr,  # (n_u, C) log p(x | c, z) of unlabelled rows
    kl_u_ptr,  # (n_u, C) KL of unlabelled rows
    loss_ptr,  # (n,) out: per-example losses
    n_rows,  # n = n_l + n_u
    n_l,  # labelled rows
    C,  # classes
    alpha_hi,  # alpha = alpha_hi + alpha_lo (fp32 pair)
    alpha_lo,
    log_c_hi,  # log C = log_c_hi + log_c_lo (fp32 pair)
    log_c_lo,
    stride_lr,  # elements between rows of logits
    stride_lc,  # elements between classes of logits
    stride_y,  # elements between labels
    stride_lll,  # elements between entries of ll_l
    stride_kll,  # elements between entries of kl_l
    stride_llu_r,  # elements between rows of ll_u
    stride_llu_c,  # elements between classes of ll_u
    stride_klu_r,  # elements between rows of kl_u
    stride_klu_c,  # elements between classes of kl_u
    IS_FP64: tl.constexpr,
    BLOCK_ROWS: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    rows64 = (tl.program_id(0) * BLOCK_ROWS + tl.arange(0, BLOCK_ROWS)).to(tl.int64)
    cols64 = tl.arange(0, BLOCK_C).to(tl.int64)
    row_mask = rows64 < n_rows
    col_mask = cols64 < C
    labelled = row_mask & (rows64 < n_l)
    unlabelled = row_mask & (rows64 >= n_l)
    log_q, q = _log_softmax_rows(logits_ptr, rows64, row_mask, cols64, col_mask, stride_lr, stride_lc, IS_FP64)

    # labelled rows: L[y] - alpha * log q(y | x)
    y = tl.load(y_ptr + rows64 * stride_y, mask=labelled, other=0)
    log_q_y = tl.sum(tl.where(cols64[None, :] == y[:, None], log_q, 0.0), axis=1)
    ll_l = to_compute(tl.load(ll_l_ptr + rows64 * stride_lll, mask=labelled, other=0.0), IS_FP64)
    kl_l = to_compute(tl.load(kl_l_ptr + rows64 * stride_kll, mask=labelled, other=0.0), IS_FP64)
    alpha = fp32_pair_sum(alpha_hi, alpha_lo, ll_l)  # (BLOCK_ROWS,) in the compute dtype
    log_c = fp32_pair_sum(log_c_hi, log_c_lo, ll_l)
    loss_l = kl_l - ll_l + log_c - alpha * log_q_y

    # unlabelled rows: sum_c q_c (L_c + log q_c)
    u64 = tl.maximum(rows64 - n_l, 0)
    mask_u = unlabelled[:, None] & col_mask[None, :]
    ll_u = tl.load(ll_u_ptr + u64[:, None] * stride_llu_r + cols64[None, :] * stride_llu_c, mask=mask_u, other=0.0)
    kl_u = tl.load(kl_u_ptr + u64[:, None] * stride_klu_r + cols64[None, :] * stride_klu_c, mask=mask_u, other=0.0)
    f = to_compute(kl_u, IS_FP64) - to_compute(ll_u, IS_FP64) + log_c[:, None] + log_q
    loss_u = tl.sum(q * f, axis=1)  # q = 0 at columns >= C

    loss = tl.where(labelled, loss_l, loss_u)
    tl.store(loss_ptr + rows64, loss.to(loss_ptr.dtype.element_ty), mask=row_mask)


# Backward (VJP), g = dLoss/dloss (n,):
#   labelled row r (y = y_l[r]):  loss = kl - ll + log C - alpha * log_q[y]
#       d ll_l[r] = -g[r],   d kl_l[r] = g[r]
#       d logits[r, j] = -alpha * g[r] * ([j == y] - q[r, j])         (d log_q[y] / d logits_j = [j == y] - q_j)
#   unlabelled row r (u = r - n_l), f_c = kl_u[u, c] - ll_u[u, c] + log C + log_q[r, c], loss = sum_c q_c f_c:
#       d ll_u[u, c] = -g[r] * q_c,   d kl_u[u, c] = g[r] * q_c
#       d logits[r, j] = g[r] * (sum_c (dq_c/dlogits_j) f_c + sum_c q_c dlog_q_c/dlogits_j)
#                      = g[r] * (q_j f_j - q_j sum_c q_c f_c + (q_j - q_j sum_c q_c))
#                      = g[r] * q_j * (f_j - loss[r])                  (the entropy part vanishes)
# The losses are recomputed (a row's reduction, no stored forward state).
@triton.jit
def _elbo_reduction_bwd_kernel(
    grad_ptr,  # (n,) dLoss/dloss, any stride (0 for an expanded gradient)
    logits_ptr,  # (n, C) classifier logits
    y_ptr,  # (n_l,) int64 labels
    ll_u_ptr,  # (n_u, C)
    kl_u_ptr,  # (n_u, C)
    dlogits_ptr,  # (n, C) out, contiguous
    dll_l_ptr,  # (n_l,) out
    dkl_l_ptr,  # (n_l,) out
    dll_u_ptr,  # (n_u, C) out, contiguous
    dkl_u_ptr,  # (n_u, C) out, contiguous
    n_rows,  # n = n_l + n_u
    n_l,  # labelled rows
    C,  # classes
    alpha_hi,  # alpha = alpha_hi + alpha_lo
    alpha_lo,
    log_c_hi,  # log C = log_c_hi + log_c_lo
    log_c_lo,
    stride_g,  # elements between entries of grad
    stride_lr,  # elements between rows of logits
    stride_lc,  # elements between classes of logits
    stride_y,  # elements between labels
    stride_llu_r,  # elements between rows of ll_u
    stride_llu_c,  # elements between classes of ll_u
    stride_klu_r,  # elements between rows of kl_u
    stride_klu_c,  # elements between classes of kl_u
    IS_FP64: tl.constexpr,
    BLOCK_ROWS: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    rows64 = (tl.program_id(0) * BLOCK_ROWS + tl.arange(0, BLOCK_ROWS)).to(tl.int64)
    cols64 = tl.arange(0, BLOCK_C).to(tl.int64)
    row_mask = rows64 < n_rows
    col_mask = cols64 < C
    labelled = row_mask & (rows64 < n_l)
    unlabelled = row_mask & (rows64 >= n_l)
    g = to_compute(tl.load(grad_ptr + rows64 * stride_g, mask=row_mask, other=0.0), IS_FP64)
    alpha = fp32_pair_sum(alpha_hi, alpha_lo, g)  # (BLOCK_ROWS,) in the compute dtype
    log_c = fp32_pair_sum(log_c_hi, log_c_lo, g)

    log_q, q = _log_softmax_rows(logits_ptr, rows64, row_mask, cols64, col_mask, stride_lr, stride_lc, IS_FP64)

    # labelled rows
    y = tl.load(y_ptr + rows64 * stride_y, mask=labelled, other=0)
    one_hot = tl.where(cols64[None, :] == y[:, None], 1.0, 0.0)
    dlogits_l = (-alpha * g)[:, None] * (one_hot - q)
    tl.store(dll_l_ptr + rows64, (-g).to(dll_l_ptr.dtype.element_ty), mask=labelled)
    tl.store(dkl_l_ptr + rows64, g.to(dkl_l_ptr.dtype.element_ty), mask=labelled)

    # unlabelled rows
    u64 = tl.maximum(rows64 - n_l, 0)
    mask_u = unlabelled[:, None] & col_mask[None, :]
    ll_u = tl.load(ll_u_ptr + u64[:, None] * stride_llu_r + cols64[None, :] * stride_llu_c, mask=mask_u, other=0.0)
    kl_u = tl.load(kl_u_ptr + u64[:, None] * stride_klu_r + cols64[None, :] * stride_klu_c, mask=mask_u, other=0.0)
    f = to_compute(kl_u, IS_FP64) - to_compute(ll_u, IS_FP64) + log_c[:, None] + log_q
    loss_u = tl.sum(q * f, axis=1)  # q = 0 at columns >= C
    g_q = g[:, None] * q
    dlogits_u = tl.where(col_mask[None, :], g_q * (f - loss_u[:, None]), 0.0)
    out_u = u64[:, None] * C + cols64[None, :]
    tl.store(dll_u_ptr + out_u, (-g_q).to(dll_u_ptr.dtype.element_ty), mask=mask_u)
    tl.store(dkl_u_ptr + out_u, g_q.to(dkl_u_ptr.dtype.element_ty), mask=mask_u)

    dlogits = tl.where(labelled[:, None], dlogits_l, dlogits_u)
    mask = row_mask[:, None] & col_mask[None, :]
    tl.store(dlogits_ptr + rows64[:, None] * C + cols64[None, :], dlogits.to(dlogits_ptr.dtype.element_ty), mask=mask)


# ------------------------------------------------------------------------------------------------------
# Launchers: the op's `forward` and `backward` (signatures: ssvae_fast/ops/elbo_reduction.py).
# ------------------------------------------------------------------------------------------------------
def _scalars(n: int, n_l: int, C: int, alpha: float) -> tuple:
    """n, n_l, C, then alpha and log C as fp32 (hi, lo) pairs, as both kernels take them."""
    return (n, n_l, C, *fp32_pair(alpha), *fp32_pair(math.log(C)))


def forward(
    logits_y: torch.Tensor, y_l: torch.Tensor, ll_l: torch.Tensor, kl_l: torch.Tensor, ll_u: torch.Tensor,
    kl_u: torch.Tensor, alpha: float,
) -> torch.Tensor:
    n, C = logits_y.shape
    loss = logits_y.new_empty((n,))
    if n == 0:
        return loss
    block_rows, block_c = block_sizes(C)
    with device_guard(logits_y):
        _elbo_reduction_fwd_kernel[(triton.cdiv(n, block_rows),)](
            logits_y, y_l, ll_l, kl_l, ll_u, kl_u, loss, *_scalars(n, y_l.shape[0], C, alpha),
            logits_y.stride(0), logits_y.stride(1), y_l.stride(0), ll_l.stride(0), kl_l.stride(0),
            ll_u.stride(0), ll_u.stride(1), kl_u.stride(0), kl_u.stride(1),
            IS_FP64=is_fp64(logits_y), BLOCK_ROWS=block_rows, BLOCK_C=block_c,
        )
    return loss


def backward(
    grad: torch.Tensor, logits_y: torch.Tensor, y_l: torch.Tensor, ll_u: torch.Tensor, kl_u: torch.Tensor,
    alpha: float,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(d logits_y, d ll_l, d kl_l, d ll_u, d kl_u), contiguous."""
    n, C = logits_y.shape
    n_l = y_l.shape[0]
    dlogits = logits_y.new_empty((n, C))
    dll_l, dkl_l = logits_y.new_empty((n_l,)), logits_y.new_empty((n_l,))
    dll_u, dkl_u = logits_y.new_empty(ll_u.shape), logits_y.new_empty(kl_u.shape)
    if n > 0:
        block_rows, block_c = block_sizes(C)
        with device_guard(logits_y):
            _elbo_reduction_bwd_kernel[(triton.cdiv(n, block_rows),)](
                grad, logits_y, y_l, ll_u, kl_u, dlogits, dll_l, dkl_l, dll_u, dkl_u, *_scalars(n, n_l, C, alpha),
                grad.stride(0), logits_y.stride(0), logits_y.stride(1), y_l.stride(0),
                ll_u.stride(0), ll_u.stride(1), kl_u.stride(0), kl_u.stride(1),
                IS_FP64=is_fp64(logits_y), BLOCK_ROWS=block_rows, BLOCK_C=block_c,
            )
    return dlogits, dll_l, dkl_l, dll_u, dkl_u
