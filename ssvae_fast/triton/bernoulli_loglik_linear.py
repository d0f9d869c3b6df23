"""Fused decoder output layer + Bernoulli log-likelihood: the (M, D) logits never reach memory.

    l[m, :] = W h[m] + b                                   h (M, H) rows, W (D, H), b (D,)
    ll[m]   = sum_d x[e(m), d] * l[m, d] - softplus(l[m, d])  x (N, D), e(m) the example of row m

Row layout (the 2-D form of `bernoulli_loglik_linear`): n_l labelled examples first, one row each, then
C rows per remaining example, M = n_l + (N - n_l) C:

    e(m) = m                          m < n_l
    e(m) = n_l + (m - n_l) // C       m >= n_l

(the 3-D form h (N, C, H) is its rows with n_l = 0: e(m) = m // C). The launcher passes max(C, 1): C is
0 only when there are no enumerated rows (M = n_l), and the kernels never divide by 0.

What is fused: the GEMM h @ W^T, the bias, the Bernoulli terms and their row sum, and (default
variant) the backward's per-logit factor s = x - sigmoid(l), all in the GEMM's epilogue.

Memory traffic in (M, D)-sized tensors (MNIST M2: M = 100 examples x 10 classes = 1000 rows, D = 784,
H = 500, fp32: one (M, D) tensor is 3.1 MB; counted from the code, not yet measured on a GPU):
    plain torch (`bernoulli_loglik_linear_torch`): forward writes the logits, reads them for softplus,
        writes softplus, reads it for the sum (4 x 3.1 MB) and keeps the logits for backward; backward
        reads the logits, writes grad_logits, reads grad_logits for dh, dW and db (5 x 3.1 MB): ~28 MB.
    fused, default: forward writes s = x - sigmoid(l) (3.1 MB, kept for backward; h, W and x are read
        once per tile); backward reads s in three cuBLAS GEMM/GEMVs (dh, dW, db): ~12.5 MB, and no
        elementwise pass over (M, D) anywhere.
    fused, recompute (`set_bernoulli_recompute(True)`): forward writes no (M, D) tensor; the backward
        kernel recomputes l and writes dl = g * s (3.1 MB, freed after the GEMMs): same traffic as the
        default plus one more GEMM, but nothing of size (M, D) held between forward and backward.

Tiling: one program per (BLOCK_M rows) x (BLOCK_D = 64 output pixels) tile; it loops over H in
BLOCK_K chunks with `tl.dot` (fp32 or fp64 accumulation), then in the epilogue adds b, gathers
x[e(m)] (the C rows of an unlabelled example share it: L1/L2 hits), computes the terms and writes one
partial row sum per (tile, row) to ll_part[pid_d, m]. The launcher sums the D / 64 partials in a fixed
order (deterministic; no atomics). Offsets are int64: M * D passes 2**31 at M = 2.7M rows of MNIST.

Numerics: softplus(l) = max(l, 0) + log1p(exp(-|l|)), sigmoid from the same exp(-|l|): finite for any
finite l (|l| = 1e4 included). fp32 `tl.dot` uses the module setting `input_precision` ("tf32" by default
on a GPU, "ieee" under the interpreter and in the equivalence tests; see ssvae_fast/triton/__init__.py);
fp64 inputs always use "ieee"; bf16/fp16 inputs accumulate in fp32.
"""

# No `from __future__ import annotations`: the custom ops' schemas come from the launchers' annotations.
import os
from typing import Optional, Tuple

import torch
import triton
import triton.language as tl

from .._launch import compute_dtype
from ..rows import bernoulli_linear_dx, bernoulli_linear_vjp_from_s
from . import (
    device_guard, get_bernoulli_recompute, get_input_precision, interpreting, is_fp64, set_input_precision,
    softplus_and_sigmoid, to_compute,
)

# Width of a D tile. Fixed (not autotuned) because the number of partial row sums, cdiv(D, BLOCK_D),
# sizes a buffer the launcher allocates before the autotuner picks a config. Small under the
# interpreter so that the tests' D = 37 spans two tiles.
BLOCK_D = 32 if interpreting() else 64


def gemm_configs():
    """Autotune configs of both kernels (BLOCK_M rows x BLOCK_D pixels x BLOCK_K hidden per step).

    One small config under the interpreter (no benchmarking there; two K steps at H = 19). On a GPU the
    autotuner picks per (M, D, H, dtypes) on first use; results are bitwise reproducible within a
    process, but the tile shape (hence the summation order) may differ between processes: set
    SSVAE_FAST_TRITON_AUTOTUNE=0 (before import) to pin the first config for cross-process
    reproducibility.

    Registers (`python benchmarks/triton_registers.py --kernels bernoulli`: ptxas for sm_90a, MNIST
    sizes, triton 3.6): the first config needs 193 registers and spills nothing in the default forward
    (STORE_S) at TF32, and spills 8 bytes a thread at bf16; a 128-row tile on 4 warps (128, 32, 4, 4)
    spills 524 bytes a thread there, so it is not the pinned config (the autotuner still times it)."""
    if interpreting():
        return [triton.Config({"BLOCK_M": 32, "BLOCK_K": 16}, num_warps=4, num_stages=1)]
    configs = [
        triton.Config({"BLOCK_M": block_m, "BLOCK_K": block_k}, num_warps=warps, num_stages=stages)
        for block_m, block_k, warps, stages in (
            (128, 32, 8, 3),  # first: the pinned config (SSVAE_FAST_TRITON_AUTOTUNE=0)
            (128, 64, 8, 3),
            (64, 32, 4, 4),
            (64, 64, 4, 3),
            (32, 64, 4, 4),  # small M (few examples); fp64 (smaller tiles)
            (128, 32, 4, 4),
        )
    ]
    return configs[:1] if os.environ.get("SSVAE_FAST_TRITON_AUTOTUNE") == "0" else configs


@triton.jit
def _logits_tile(
    h_ptr,  # (M, H) decoder hidden rows
    w_ptr,  # (D, H) output weight
    b_ptr,  # (D,) output bias (read only when HAS_BIAS)
    rows64,  # (BLOCK_M,) int64 row indices m of the tile
    row_mask,  # (BLOCK_M,) rows64 < M
    cols64,  # (BLOCK_D,) int64 pixel indices d of the tile
    col_mask,  # (BLOCK_D,) cols64 < D
    H,  # hidden size (the reduction length)
    stride_hm,  # elements between rows of h
    stride_hk,  # elements between hidden units of h
    stride_wd,  # elements between rows (pixels) of W
    stride_wk,  # elements between columns (hidden units) of W
    stride_b,  # elements between entries of b
    HAS_BIAS: tl.constexpr,
    IS_FP64: tl.constexpr,
    INPUT_PRECISION: tl.constexpr,  # "ieee" | "tf32" | "tf32x3" for fp32 inputs
    BLOCK_M: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    """l = h[rows] @ W[cols]^T + b[cols], a (BLOCK_M, BLOCK_D) tile in the compute dtype."""
    ks = tl.arange(0, BLOCK_K)
    h_ptrs = h_ptr + rows64[:, None] * stride_hm + ks[None, :] * stride_hk  # (BLOCK_M, BLOCK_K)
    w_ptrs = w_ptr + cols64[None, :] * stride_wd + ks[:, None] * stride_wk  # (BLOCK_K, BLOCK_D): W^T tile
    if IS_FP64:
        acc = tl.zeros((BLOCK_M, BLOCK_D), dtype=tl.float64)
    else:
        acc = tl.zeros((BLOCK_M, BLOCK_D), dtype=tl.float32)
    for k0 in range(0, H, BLOCK_K):
        k_mask = (k0 + ks) < H
        h_tile = tl.load(h_ptrs, mask=row_mask[:, None] & k_mask[None, :], other=0.0)
        w_tile = tl.load(w_ptrs, mask=k_mask[:, None] & col_mask[None, :], other=0.0)
        # out_dtype given: triton 3.6's tl.dot defaults it to float32, which a float64 accumulator refuses.
        acc = tl.dot(h_tile, w_tile, acc, input_precision=INPUT_PRECISION, out_dtype=acc.dtype)
        h_ptrs += BLOCK_K * stride_hk
        w_ptrs += BLOCK_K * stride_wk
    if HAS_BIAS:
        bias = tl.load(b_ptr + cols64 * stride_b, mask=col_mask, other=0.0)
        acc += to_compute(bias, IS_FP64)[None, :]
    return acc


@triton.jit
def _example_of_rows(rows64, n_l, n_classes):
    """e(m): m for the n_l labelled rows, n_l + (m - n_l) // C for the enumerated rows after them."""
    return tl.where(rows64 < n_l, rows64, n_l + tl.maximum(rows64 - n_l, 0) // n_classes)


@triton.jit
def _logits_and_x_tile(
    h_ptr, w_ptr, b_ptr, x_ptr, pid_m, pid_d, M, D, H, n_l, n_classes,
    stride_hm, stride_hk, stride_wd, stride_wk, stride_b, stride_xn, stride_xd,
    HAS_BIAS: tl.constexpr, IS_FP64: tl.constexpr, INPUT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_K: tl.constexpr,
):
    """The (BLOCK_M, BLOCK_D) tile (pid_m, pid_d) both kernels start from: its row indices, column indices,
    row mask and tile mask, the logits, and x of each row's example, in the compute dtype."""
    rows64 = (pid_m * BLOCK_M + tl.arange(0, BLOCK_M)).to(tl.int64)
    cols64 = (pid_d * BLOCK_D + tl.arange(0, BLOCK_D)).to(tl.int64)
    row_mask = rows64 < M
    col_mask = cols64 < D
    mask = row_mask[:, None] & col_mask[None, :]
    logits = _logits_tile(
        h_ptr, w_ptr, b_ptr, rows64, row_mask, cols64, col_mask, H,
        stride_hm, stride_hk, stride_wd, stride_wk, stride_b,
        HAS_BIAS, IS_FP64, INPUT_PRECISION, BLOCK_M, BLOCK_D, BLOCK_K,
    )
    examples = _example_of_rows(rows64, n_l, n_classes)
    x = tl.load(x_ptr + examples[:, None] * stride_xn + cols64[None, :] * stride_xd, mask=mask, other=0.0)
    return rows64, cols64, row_mask, mask, logits, to_compute(x, IS_FP64)


@triton.autotune(configs=gemm_configs(), key=["M", "D", "H"])
@triton.jit
def _bernoulli_loglik_linear_fwd_kernel(
    h_ptr,  # (M, H) decoder hidden rows, M = n_l + (N - n_l) C, labelled rows first
    w_ptr,  # (D, H) output weight
    b_ptr,  # (D,) output bias (unused when HAS_BIAS is False)
    x_ptr,  # (N, D) targets, row e(m) scored by row m (shared by the C rows of an unlabelled example)
    s_ptr,  # (M, D) out, contiguous rows: s = x - sigmoid(l) (written only when STORE_S)
    ll_part_ptr,  # (cdiv(D, BLOCK_D), M) out, contiguous: partial sums over one D tile
    M,  # rows of h
    D,  # pixels
    H,  # hidden units
    n_l,  # labelled rows (one per example) before the enumerated ones
    n_classes,  # C >= 1: rows per unlabelled example
    stride_hm,  # elements between rows of h
    stride_hk,  # elements between hidden units of h
    stride_wd,  # elements between rows of W
    stride_wk,  # elements between columns of W
    stride_b,  # elements between entries of b
    stride_xn,  # elements between rows (examples) of x
    stride_xd,  # elements between pixels of x
    stride_sm,  # elements between rows of s
    HAS_BIAS: tl.constexpr,
    STORE_S: tl.constexpr,  # write s for the backward (default variant)
    IS_FP64: tl.constexpr,  # compute in fp64 (fp64 inputs) instead of fp32
    INPUT_PRECISION: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    pid_d = tl.program_id(1)
    rows64, cols64, row_mask, mask, logits, x = _logits_and_x_tile(
        h_ptr, w_ptr, b_ptr, x_ptr, tl.program_id(0), pid_d, M, D, H, n_l, n_classes,
        stride_hm, stride_hk, stride_wd, stride_wk, stride_b, stride_xn, stride_xd,
        HAS_BIAS, IS_FP64, INPUT_PRECISION, BLOCK_M, BLOCK_D, BLOCK_K,
    )
    softplus, sigmoid = softplus_and_sigmoid(logits)
    terms = tl.where(mask, x * logits - softplus, 0.0)
    tl.store(ll_part_ptr + pid_d.to(tl.int64) * M + rows64, tl.sum(terms, axis=1), mask=row_mask)
    if STORE_S:
        s = x - sigmoid
        tl.store(s_ptr + rows64[:, None] * stride_sm + cols64[None, :], s.to(s_ptr.dtype.element_ty), mask=mask)


# Backward (VJP). With g[m] = dLoss/dll[m] (g = grad_ll as (M,)) and s[m, d] = x[e(m), d] -
# sigmoid(l[m, d]):
#     dll[m]/dl[m, d] = x[e(m), d] - sigmoid(l[m, d]) = s[m, d]   ->   dl[m, d] = g[m] * s[m, d]
#     dh[m, :] = sum_d dl[m, d] W[d, :]          = g[m] * (s @ W)[m, :]       (row scaling commutes)
#     dW       = sum_m dl[m, :]^T h[m, :]        = s^T @ (g[:, None] * h)
#     db       = sum_m dl[m, :]                  = s^T @ g
#     dx[n, :] = sum_{m : e(m) = n} g[m] * l[m, :]  (since dll[m]/dx[n, d] = l[m, d])
#              = W @ (sum_{e(m) = n} g[m] h[m]) + b * sum_{e(m) = n} g[m]     (no logits needed)
# Default variant: s comes from the forward and the four lines above are torch GEMMs/sums (cuBLAS,
# deterministic; the (M, D) factor is scaled through the (M, H) side, never elementwise over (M, D)).
# Recompute variant: `_bernoulli_loglik_linear_bwd_kernel` recomputes l tile by tile and writes
# dl = g * (x - sigmoid(l)); then dh = dl @ W, dW = dl^T @ h, db = dl summed over rows.
@triton.autotune(configs=gemm_configs(), key=["M", "D", "H"])
@triton.jit
def _bernoulli_loglik_linear_bwd_kernel(
    h_ptr,  # (M, H) decoder hidden rows
    w_ptr,  # (D, H) output weight
    b_ptr,  # (D,) output bias (unused when HAS_BIAS is False)
    x_ptr,  # (N, D) targets
    g_ptr,  # (M,) upstream gradient dLoss/dll
    dl_ptr,  # (M, D) out, contiguous rows: dl = g * (x - sigmoid(l))
    M,  # rows of h
    D,  # pixels
    H,  # hidden units
    n_l,  # labelled rows (one per example) before the enumerated ones
    n_classes,  # C >= 1: rows per unlabelled example
    stride_hm,  # elements between rows of h
    stride_hk,  # elements between hidden units of h
    stride_wd,  # elements between rows of W
    stride_wk,  # elements between columns of W
    stride_b,  # elements between entries of b
    stride_xn,  # elements between rows of x
    stride_xd,  # elements between pixels of x
    stride_g,  # elements between entries of g (0 for an expanded gradient)
    stride_dlm,  # elements between rows of dl
    HAS_BIAS: tl.constexpr,
    IS_FP64: tl.constexpr,
    INPUT_PRECISION: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    pid_d = tl.program_id(1)
    rows64, cols64, row_mask, mask, logits, x = _logits_and_x_tile(
        h_ptr, w_ptr, b_ptr, x_ptr, tl.program_id(0), pid_d, M, D, H, n_l, n_classes,
        stride_hm, stride_hk, stride_wd, stride_wk, stride_b, stride_xn, stride_xd,
        HAS_BIAS, IS_FP64, INPUT_PRECISION, BLOCK_M, BLOCK_D, BLOCK_K,
    )
    g = to_compute(tl.load(g_ptr + rows64 * stride_g, mask=row_mask, other=0.0), IS_FP64)
    _, sigmoid = softplus_and_sigmoid(logits)
    dl = g[:, None] * (x - sigmoid)
    tl.store(dl_ptr + rows64[:, None] * stride_dlm + cols64[None, :], dl.to(dl_ptr.dtype.element_ty), mask=mask)


# ------------------------------------------------------------------------------------------------------
# Launchers: the op's `forward` and `backward` (signatures: ssvae_fast/ops/bernoulli_loglik_linear.py).
# ------------------------------------------------------------------------------------------------------
def keeps_s() -> bool:
    """Whether the forward keeps s for the backward (False under `set_bernoulli_recompute(True)`)."""
    return not get_bernoulli_recompute()


def resolve_precision(precision: Optional[str]) -> str:
    """fp32 `tl.dot`'s input_precision: `precision`, or the module setting (`set_input_precision`) when None."""
    if precision is None:
        return get_input_precision()
    with set_input_precision(precision):  # validates it
        return precision


def _grid(meta):
    return (triton.cdiv(meta["M"], meta["BLOCK_M"]), triton.cdiv(meta["D"], meta["BLOCK_D"]))


def forward(
    h: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], x: torch.Tensor, n_labelled: int,
    n_classes: int, store_s: bool, precision: str,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """(ll (M,), s (M, D) = x - sigmoid(l) when store_s, else an empty tensor) for h (M, H) rows:
    n_labelled rows first (row i scores x[i]), then n_classes rows per remaining example."""
    M, H = h.shape
    D = weight.shape[0]
    s = h.new_empty((M, D) if store_s else (0,))
    ll_part = h.new_empty((triton.cdiv(D, BLOCK_D), M), dtype=compute_dtype(h.dtype))
    if M > 0 and D > 0:
        with device_guard(h):
            _bernoulli_loglik_linear_fwd_kernel[_grid](
                h, weight, weight if bias is None else bias, x, s if store_s else ll_part, ll_part,
                M, D, H, n_labelled, max(n_classes, 1),  # C = 0 only without enumerated rows: never divide by 0
                h.stride(0), h.stride(1), weight.stride(0), weight.stride(1),
                0 if bias is None else bias.stride(0), x.stride(0), x.stride(1), D,
                HAS_BIAS=bias is not None, STORE_S=store_s, IS_FP64=is_fp64(h),
                INPUT_PRECISION="ieee" if is_fp64(h) else precision, BLOCK_D=BLOCK_D,
            )
    # Second pass of the row sums over D tiles: fixed order, deterministic (0 when D == 0).
    ll = ll_part.sum(0).to(h.dtype)
    return ll, s


def backward(
    grad_ll: torch.Tensor, h: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], x: torch.Tensor,
    s: torch.Tensor, n_labelled: int, n_classes: int, precision: str, need_h: bool, need_weight: bool,
    need_bias: bool, need_x: bool,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(dh (M, H), dW (D, H), db (D,), dx (N, D)), each empty when not needed (db also without bias); see
    the VJP above. s = x - sigmoid(l) from the forward, or 1-D (not stored): then the backward kernel
    recomputes the logits tile by tile and writes dl = g * (x - sigmoid(l)), followed by plain GEMMs."""
    M, H = h.shape
    D = weight.shape[0]
    g = grad_ll.reshape(M)
    if s.dim() == 2:
        grads = bernoulli_linear_vjp_from_s(s, g, h, weight, bias, n_labelled, n_classes, x.shape[0])
    else:
        dl = h.new_empty((M, D))
        if M > 0 and D > 0:
            with device_guard(h):
                _bernoulli_loglik_linear_bwd_kernel[_grid](
                    h, weight, weight if bias is None else bias, x, g, dl,
                    M, D, H, n_labelled, max(n_classes, 1),
                    h.stride(0), h.stride(1), weight.stride(0), weight.stride(1),
                    0 if bias is None else bias.stride(0), x.stride(0), x.stride(1), g.stride(0), D,
                    HAS_BIAS=bias is not None, IS_FP64=is_fp64(h),
                    INPUT_PRECISION="ieee" if is_fp64(h) else precision, BLOCK_D=BLOCK_D,
                )
        dbias = dl.sum(0) if bias is not None else h.new_empty((0,))
        dx = bernoulli_linear_dx(g, h, weight, bias, n_labelled, n_classes, x.shape[0])
        grads = (dl @ weight, dl.t() @ h, dbias, dx)
    needs = (need_h, need_weight, need_bias and bias is not None, need_x)
    return tuple(grad if need else h.new_empty((0,)) for grad, need in zip(grads, needs))
