"""Class-conditional first layer: out = act(a[n] + w_y[:, c]) without repeated inputs or one-hot vectors.

    broadcast (classes None): out (N, C, H),  out[n, c] = act(a[n] + w_y[:, c])   every class per row
    indexed   (classes (N,)): out (N, H),     out[n]    = act(a[n] + w_y[:, classes[n]])

a = W_v v + b (N, H) is computed once per row by the caller; w_y (H, C) are the class columns of the
layer's weight (any strides: the caller passes a column slice of the weight, read in place).

What is fused: the broadcast add (or the class gather) and the activation, forward; the activation's
derivative, the reduction of da over the C classes, and per-row-block partial sums of dw_y, backward.
Memory traffic (encoder, N = 100 examples, C = 10, H = 500, fp32; arithmetic, not measured): plain
torch materializes the (N, C, H) pre-activation (2 MB) and keeps it for backward, reads it again for
softplus, and its backward writes the (N, C, H) gradient of the pre-activation before reducing it over C
and N. Here the forward reads a (0.2 MB) once and writes only the output (2 MB); nothing but the inputs
is kept for backward (the pre-activation is recomputed: one add); the backward reads the output gradient
once and writes da (0.2 MB) and (N / BLOCK_N) x C x H fp32 partials (0.04 MB at BLOCK_N = 64).

Tiling: one program per (BLOCK_N rows) x (BLOCK_H hidden units); the broadcast form loops over the C
classes inside the program (a is loaded once, each w_y column once per tile). dw_y is reduced without
atomics: program (i, j) writes dw_part[i, c, j-tile] and the launcher sums dw_part over i (fixed order,
deterministic). Offsets are int64 (N * C * H passes 2**31 at realistic sizes).

Numerics: compute in fp32 (fp64 for fp64 inputs); softplus(p) = max(p, 0) + log1p(exp(-|p|)),
softplus'(p) = sigmoid(p), relu'(p) = [p > 0] (torch's convention at 0).
"""

import triton
import triton.language as tl

from . import interpreting, softplus_and_sigmoid, to_compute

SOFTPLUS, RELU = 0, 1
ACTIVATIONS = {"softplus": SOFTPLUS, "relu": RELU}


def block_sizes(n_rows: int, hidden: int) -> tuple[int, int]:
    """(BLOCK_N, BLOCK_H). Fixed per shape (the number of row blocks sizes the dw_y partials, allocated
    before launch). Small under the interpreter so that tiny test shapes span several tiles."""
    if interpreting():
        return 8, 16
    return 64, min(128, max(16, triton.next_power_of_2(hidden)))


@triton.jit
def _activate(pre, ACTIVATION: tl.constexpr):
    if ACTIVATION == 0:
        out, _ = softplus_and_sigmoid(pre)
    else:
        out = tl.maximum(pre, 0.0)
    return out


@triton.jit
def _activation_vjp(pre, grad, ACTIVATION: tl.constexpr):
    """grad * act'(pre)."""
    if ACTIVATION == 0:
        _, sigmoid = softplus_and_sigmoid(pre)
        out = grad * sigmoid
    else:
        out = tl.where(pre > 0.0, grad, 0.0)
    return out


@triton.jit
def _class_conditional_fwd_kernel(
    a_ptr,  # (N, H) input part W_v v + b
    w_ptr,  # (H, C) class columns, any strides
    classes_ptr,  # (N,) int64 class of each row (indexed form only)
    out_ptr,  # out, contiguous: (N, C, H) broadcast form, (N, H) indexed form
    N,  # rows of a
    H,  # hidden units
    n_classes,  # C
    stride_an,  # elements between rows of a
    stride_ah,  # elements between hidden units of a
    stride_wh,  # elements between rows (hidden units) of w_y
    stride_wc,  # elements between columns (classes) of w_y
    stride_cls,  # elements between entries of classes
    BROADCAST: tl.constexpr,  # True: every class for every row; False: classes[n] for row n
    ACTIVATION: tl.constexpr,  # 0 softplus, 1 relu
    IS_FP64: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_H: tl.constexpr,
):
    pid_n = tl.program_id(0)
    pid_h = tl.program_id(1)
    rows64 = (pid_n * BLOCK_N + tl.arange(0, BLOCK_N)).to(tl.int64)
    cols64 = (pid_h * BLOCK_H + tl.arange(0, BLOCK_H)).to(tl.int64)
    row_mask = rows64 < N
    col_mask = cols64 < H
    mask = row_mask[:, None] & col_mask[None, :]
    a = tl.load(a_ptr + rows64[:, None] * stride_an + cols64[None, :] * stride_ah, mask=mask, other=0.0)
    a = to_compute(a, IS_FP64)
    if BROADCAST:
        # Pointers advance by one class per iteration (pointer increments: no int32 products).
        out_ptrs = out_ptr + rows64[:, None] * n_classes * H + cols64[None, :]  # out[n, c, h]
        w_ptrs = w_ptr + cols64 * stride_wh  # w_y[h, c]
        for _ in range(0, n_classes):
            w = tl.load(w_ptrs, mask=col_mask, other=0.0)
            out = _activate(a + to_compute(w, IS_FP64)[None, :], ACTIVATION)
            tl.store(out_ptrs, out.to(out_ptr.dtype.element_ty), mask=mask)
            out_ptrs += H
            w_ptrs += stride_wc
    else:
        cls = tl.load(classes_ptr + rows64 * stride_cls, mask=row_mask, other=0)
        w = tl.load(w_ptr + cols64[None, :] * stride_wh + cls[:, None] * stride_wc, mask=mask, other=0.0)
        out = _activate(a + to_compute(w, IS_FP64), ACTIVATION)
        tl.store(out_ptr + rows64[:, None] * H + cols64[None, :], out.to(out_ptr.dtype.element_ty), mask=mask)


# Backward (VJP). With pre[n, c, h] = a[n, h] + w_y[h, c] (recomputed, not stored) and
# t[n, c, h] = grad_out[n, c, h] * act'(pre[n, c, h]):
#   broadcast form:  da[n, h]      = sum_c t[n, c, h]                (reduced inside the program)
#                    dw_y[h, c]    = sum_n t[n, c, h]
#   indexed form:    da[n, h]      = t[n, h]                         (t with c = classes[n])
#                    dw_y[h, c]    = sum_{n : classes[n] == c} t[n, h]
# dw_y is reduced in two passes: program (i, j) writes dw_part[i, c, h] = sum over its BLOCK_N rows,
# and the launcher sums dw_part over i (fixed order: deterministic, no atomics) and transposes.
@triton.jit
def _class_conditional_bwd_kernel(
    grad_ptr,  # upstream gradient: (N, C, H) broadcast form, (N, H) indexed form; any strides
    a_ptr,  # (N, H) input part
    w_ptr,  # (H, C) class columns
    classes_ptr,  # (N,) int64 (indexed form only)
    da_ptr,  # (N, H) out, contiguous
    dw_part_ptr,  # (cdiv(N, BLOCK_N), C, H) out, contiguous: per-row-block partial sums of dw_y^T
    N,  # rows
    H,  # hidden units
    n_classes,  # C
    stride_gn,  # elements between rows of grad
    stride_gc,  # elements between classes of grad (broadcast form)
    stride_gh,  # elements between hidden units of grad
    stride_an,  # elements between rows of a
    stride_ah,  # elements between hidden units of a
    stride_wh,  # elements between rows of w_y
    stride_wc,  # elements between columns of w_y
    stride_cls,  # elements between entries of classes
    BROADCAST: tl.constexpr,
    ACTIVATION: tl.constexpr,
    IS_FP64: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_H: tl.constexpr,
):
    pid_n = tl.program_id(0)
    pid_h = tl.program_id(1)
    rows64 = (pid_n * BLOCK_N + tl.arange(0, BLOCK_N)).to(tl.int64)
    cols64 = (pid_h * BLOCK_H + tl.arange(0, BLOCK_H)).to(tl.int64)
    row_mask = rows64 < N
    col_mask = cols64 < H
    mask = row_mask[:, None] & col_mask[None, :]
    a = tl.load(a_ptr + rows64[:, None] * stride_an + cols64[None, :] * stride_ah, mask=mask, other=0.0)
    a = to_compute(a, IS_FP64)
    # Pointers advance by one class per iteration (pointer increments: no int32 products).
    part_ptrs = dw_part_ptr + pid_n.to(tl.int64) * n_classes * H + cols64  # dw_part[pid_n, c, h]
    grad_ptrs = grad_ptr + rows64[:, None] * stride_gn + cols64[None, :] * stride_gh  # grad[n, c, h]
    if BROADCAST:
        w_ptrs = w_ptr + cols64 * stride_wh  # w_y[h, c]
        da = tl.zeros((BLOCK_N, BLOCK_H), dtype=a.dtype)
        for _ in range(0, n_classes):
            w = tl.load(w_ptrs, mask=col_mask, other=0.0)
            grad = tl.load(grad_ptrs, mask=mask, other=0.0)
            t = _activation_vjp(a + to_compute(w, IS_FP64)[None, :], to_compute(grad, IS_FP64), ACTIVATION)
            da += t  # masked lanes: grad = 0, so t = 0
            tl.store(part_ptrs, tl.sum(t, axis=0), mask=col_mask)
            w_ptrs += stride_wc
            grad_ptrs += stride_gc
            part_ptrs += H
    else:
        cls = tl.load(classes_ptr + rows64 * stride_cls, mask=row_mask, other=-1)
        w = tl.load(w_ptr + cols64[None, :] * stride_wh + cls[:, None] * stride_wc, mask=mask, other=0.0)
        grad = tl.load(grad_ptrs, mask=mask, other=0.0)
        da = _activation_vjp(a + to_compute(w, IS_FP64), to_compute(grad, IS_FP64), ACTIVATION)
        for c in range(0, n_classes):
            t_c = tl.where(cls[:, None] == c, da, 0.0)
            tl.store(part_ptrs, tl.sum(t_c, axis=0), mask=col_mask)
            part_ptrs += H
    tl.store(da_ptr + rows64[:, None] * H + cols64[None, :], da.to(da_ptr.dtype.element_ty), mask=mask)
