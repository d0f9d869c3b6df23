"""Class-conditional first layer: out = act(a[n] + w_y[:, c]) without repeated inputs or one-hot vectors.

    every class (classes None):            out (N, C, H)             out[n, c] = act(a[n] + w_y[:, c])
    labelled prefix (classes (n_l,), n_l <= N): out (n_l + (N - n_l) C, H), rows in this order:
        out[i]               = act(a[i] + w_y[:, classes[i]])      i < n_l       (labelled: one class)
        out[n_l + j C + c]   = act(a[n_l + j] + w_y[:, c])         j < N - n_l   (unlabelled: every class)

The every-class form has the memory layout of the prefix form with n_l = 0 ((N, C, H) contiguous is
(N C, H) rows), so one kernel computes both; n_l = N is one class per row.

a = W_v v + b (N, H) is computed once per example by the caller; w_y (H, C) are the class columns of the
layer's weight (any strides: the caller passes a column slice of the weight, read in place).

What is fused: the broadcast add (or the class gather) and the activation, forward; the activation's
derivative, the reduction of da over an unlabelled example's C rows, and per-block partial sums of dw_y,
backward. Memory traffic (encoder, N = 100 examples, C = 10, H = 500, fp32; arithmetic, not measured):
plain torch materializes the (N, C, H) pre-activation (2 MB) and keeps it for backward, reads it again
for softplus, and its backward writes the (N, C, H) gradient of the pre-activation before reducing it
over C and N. Here the forward reads a (0.2 MB) once and writes only the output (2 MB); nothing but the
inputs is kept for backward (the pre-activation is recomputed: one add); the backward reads the output
gradient once and writes da (0.2 MB) and (blocks) x C x H fp32 partials (0.04 MB at BLOCK_N = 64).

Tiling: one program per (BLOCK_N examples) x (BLOCK_H hidden units), one launch for both kinds of
examples. The example blocks are split at n_l: the first cdiv(n_l, BLOCK_N) blocks hold labelled examples
only (program: gather each row's class column), the others unlabelled examples only (program: loop over
the C classes; a is loaded once, each w_y column once per tile), so every program takes one branch and
an unlabelled example's C rows are all in one program: da needs no cross-program reduction. dw_y is
reduced without atomics: program (i, j) writes dw_part[i, c, j-tile] and the launcher sums dw_part over i
(fixed order, deterministic). Offsets are int64 (N * C * H passes 2**31 at realistic sizes).

Numerics: compute in fp32 (fp64 for fp64 inputs); softplus(p) = max(p, 0) + log1p(exp(-|p|)),
softplus'(p) = sigmoid(p), relu'(p) = [p > 0] (torch's convention at 0).
"""

# No `from __future__ import annotations`: the custom ops' schemas come from the launchers' annotations.
from typing import Optional, Tuple

import torch
import triton
import triton.language as tl

from .._launch import compute_dtype
from ..rows import class_conditional_output_shape
from . import device_guard, interpreting, is_fp64, softplus_and_sigmoid, to_compute

SOFTPLUS, RELU = 0, 1
ACTIVATIONS = {"softplus": SOFTPLUS, "relu": RELU}


# Warps per program. At MNIST sizes (H = 500, C = 10) a 64 x 128 tile on 4 warps (64 elements a thread)
# ran into the 255-register limit of sm_90 and spilled hundreds of bytes a thread (up to 1.7 KB in the
# backward); 64 x 64 on 8 warps (16 a thread) needs at most 192 registers and spills nothing at fp32,
# bf16 or fp16: `python benchmarks/triton_registers.py --kernels class_conditional_activation`.
NUM_WARPS = 8


def block_sizes(n_rows: int, hidden: int) -> tuple[int, int]:
    """(BLOCK_N examples, BLOCK_H). Fixed per shape (the number of example blocks sizes the dw_y partials,
    allocated before launch). Small under the interpreter so that tiny test shapes span several tiles."""
    if interpreting():
        return 8, 16
    return 64, min(64, max(16, triton.next_power_of_2(hidden)))


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


# Each kernel's two kinds of program are separate jit functions called from the two branches of one
# runtime `if`: no value flows out of either branch (compiled Triton wants names bound in both branches
# to have one type and shape; the two paths' tiles differ).
@triton.jit
def _fwd_labelled(
    a_ptr, w_ptr, classes_ptr, out_ptr, pid_n, cols64, col_mask, n_l, H,
    stride_an, stride_ah, stride_wh, stride_wc, stride_cls,
    ACTIVATION: tl.constexpr, IS_FP64: tl.constexpr, BLOCK_N: tl.constexpr,
):
    """Labelled examples i of block pid_n: one output row each, row i, class classes[i]."""
    rows64 = (pid_n * BLOCK_N + tl.arange(0, BLOCK_N)).to(tl.int64)
    row_mask = rows64 < n_l
    mask = row_mask[:, None] & col_mask[None, :]
    a = tl.load(a_ptr + rows64[:, None] * stride_an + cols64[None, :] * stride_ah, mask=mask, other=0.0)
    cls = tl.load(classes_ptr + rows64 * stride_cls, mask=row_mask, other=0)
    w = tl.load(w_ptr + cols64[None, :] * stride_wh + cls[:, None] * stride_wc, mask=mask, other=0.0)
    out = _activate(to_compute(a, IS_FP64) + to_compute(w, IS_FP64), ACTIVATION)
    tl.store(out_ptr + rows64[:, None] * H + cols64[None, :], out.to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _fwd_unlabelled(
    a_ptr, w_ptr, out_ptr, block, cols64, col_mask, N, n_l, H, n_classes,
    stride_an, stride_ah, stride_wh, stride_wc,
    ACTIVATION: tl.constexpr, IS_FP64: tl.constexpr, BLOCK_N: tl.constexpr,
):
    """Unlabelled examples n_l + j of block `block` (counted from the first unlabelled block): C output
    rows each, rows n_l + j C + c."""
    js64 = (block * BLOCK_N + tl.arange(0, BLOCK_N)).to(tl.int64)
    row_mask = js64 < N - n_l
    mask = row_mask[:, None] & col_mask[None, :]
    a = tl.load(a_ptr + (n_l + js64)[:, None] * stride_an + cols64[None, :] * stride_ah, mask=mask, other=0.0)
    a = to_compute(a, IS_FP64)
    # Pointers advance by one class per iteration (pointer increments: no int32 products).
    out_ptrs = out_ptr + (n_l + js64 * n_classes)[:, None] * H + cols64[None, :]  # out[n_l + j C + c, h]
    w_ptrs = w_ptr + cols64 * stride_wh  # w_y[h, c]
    for _ in range(0, n_classes):
        w = tl.load(w_ptrs, mask=col_mask, other=0.0)
        out = _activate(a + to_compute(w, IS_FP64)[None, :], ACTIVATION)
        tl.store(out_ptrs, out.to(out_ptr.dtype.element_ty), mask=mask)
        out_ptrs += H
        w_ptrs += stride_wc


@triton.jit
def _program_tile(H, BLOCK_H: tl.constexpr):
    """This program's example block (axis 0) and hidden-unit columns (axis 1, int64) with their mask."""
    cols64 = (tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H)).to(tl.int64)
    return tl.program_id(0), cols64, cols64 < H


@triton.jit
def _class_conditional_fwd_kernel(
    a_ptr,  # (N, H) input part W_v v + b
    w_ptr,  # (H, C) class columns, any strides
    classes_ptr,  # (n_l,) int64 classes of the labelled examples (read only when n_l > 0)
    out_ptr,  # (n_l + (N - n_l) C, H) out, contiguous rows ((N, C, H) when n_l = 0)
    N,  # examples (rows of a)
    n_l,  # labelled examples, the first n_l rows of a
    H,  # hidden units
    n_classes,  # C
    n_lab_blocks,  # cdiv(n_l, BLOCK_N): program rows below it hold labelled examples
    stride_an,  # elements between rows of a
    stride_ah,  # elements between hidden units of a
    stride_wh,  # elements between rows (hidden units) of w_y
    stride_wc,  # elements between columns (classes) of w_y
    stride_cls,  # elements between entries of classes
    HAS_LABELLED: tl.constexpr,  # n_l > 0 (False: classes_ptr is a placeholder, that path is not compiled)
    ACTIVATION: tl.constexpr,  # 0 softplus, 1 relu
    IS_FP64: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_H: tl.constexpr,
):
    pid_n, cols64, col_mask = _program_tile(H, BLOCK_H)
    if pid_n < n_lab_blocks:
        if HAS_LABELLED:  # static: never compiled with a placeholder classes pointer
            _fwd_labelled(
                a_ptr, w_ptr, classes_ptr, out_ptr, pid_n, cols64, col_mask, n_l, H,
                stride_an, stride_ah, stride_wh, stride_wc, stride_cls, ACTIVATION, IS_FP64, BLOCK_N,
            )
    else:
        _fwd_unlabelled(
            a_ptr, w_ptr, out_ptr, pid_n - n_lab_blocks, cols64, col_mask, N, n_l, H, n_classes,
            stride_an, stride_ah, stride_wh, stride_wc, ACTIVATION, IS_FP64, BLOCK_N,
        )


# Backward (VJP). With pre = a[n] + w_y[:, c] for each output row (recomputed, not stored) and
# t = grad_out * act'(pre) for that row:
#   labelled example i (row i, c = classes[i]):   da[i] = t[i],                      dw_y[:, c] += t[i]
#   unlabelled example n = n_l + j (rows n_l + j C + c):
#                                                 da[n] = sum_c t[n_l + j C + c],    dw_y[:, c] += t[n_l + j C + c]
# An unlabelled example's C rows are all in one program: da is reduced there. dw_y is reduced in two
# passes: program (i, j) writes dw_part[i, c, h] = sum over its BLOCK_N examples, and the launcher sums
# dw_part over i (fixed order: deterministic, no atomics) and transposes.
# The upstream gradient is addressed as
#   labelled row i:        grad_ptr + i * stride_gl + h * stride_gh
#   unlabelled row (j, c): grad_ptr + g_u_offset + j * stride_gn + c * stride_gc + h * stride_gh
# which covers the (R, H) rows of the prefix form (g_u_offset = n_l stride_gl, stride_gn = C stride_gl,
# stride_gc = stride_gl) and the (N, C, H) every-class form (n_l = 0), with any strides.
@triton.jit
def _bwd_labelled(
    grad_ptr, a_ptr, w_ptr, classes_ptr, da_ptr, part_ptrs, pid_n, cols64, col_mask, n_l, H, n_classes,
    stride_gl, stride_gh, stride_an, stride_ah, stride_wh, stride_wc, stride_cls,
    ACTIVATION: tl.constexpr, IS_FP64: tl.constexpr, BLOCK_N: tl.constexpr,
):
    rows64 = (pid_n * BLOCK_N + tl.arange(0, BLOCK_N)).to(tl.int64)
    row_mask = rows64 < n_l
    mask = row_mask[:, None] & col_mask[None, :]
    a = tl.load(a_ptr + rows64[:, None] * stride_an + cols64[None, :] * stride_ah, mask=mask, other=0.0)
    cls = tl.load(classes_ptr + rows64 * stride_cls, mask=row_mask, other=-1)
    w = tl.load(w_ptr + cols64[None, :] * stride_wh + cls[:, None] * stride_wc, mask=mask, other=0.0)
    grad = tl.load(grad_ptr + rows64[:, None] * stride_gl + cols64[None, :] * stride_gh, mask=mask, other=0.0)
    da = _activation_vjp(to_compute(a, IS_FP64) + to_compute(w, IS_FP64), to_compute(grad, IS_FP64), ACTIVATION)
    for c in range(0, n_classes):
        t_c = tl.where(cls[:, None] == c, da, 0.0)  # masked rows: cls = -1, grad = 0
        tl.store(part_ptrs, tl.sum(t_c, axis=0), mask=col_mask)
        part_ptrs += H
    tl.store(da_ptr + rows64[:, None] * H + cols64[None, :], da.to(da_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _bwd_unlabelled(
    grad_ptr, a_ptr, w_ptr, da_ptr, part_ptrs, block, cols64, col_mask, N, n_l, H, n_classes,
    g_u_offset, stride_gn, stride_gc, stride_gh, stride_an, stride_ah, stride_wh, stride_wc,
    ACTIVATION: tl.constexpr, IS_FP64: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_H: tl.constexpr,
):
    js64 = (block * BLOCK_N + tl.arange(0, BLOCK_N)).to(tl.int64)
    row_mask = js64 < N - n_l
    mask = row_mask[:, None] & col_mask[None, :]
    a_rows = n_l + js64
    a = tl.load(a_ptr + a_rows[:, None] * stride_an + cols64[None, :] * stride_ah, mask=mask, other=0.0)
    a = to_compute(a, IS_FP64)
    # Pointers advance by one class per iteration (pointer increments: no int32 products).
    grad_ptrs = grad_ptr + g_u_offset + js64[:, None] * stride_gn + cols64[None, :] * stride_gh
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
    tl.store(da_ptr + a_rows[:, None] * H + cols64[None, :], da.to(da_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _class_conditional_bwd_kernel(
    grad_ptr,  # upstream gradient, shaped like out; any strides (see above)
    a_ptr,  # (N, H) input part
    w_ptr,  # (H, C) class columns
    classes_ptr,  # (n_l,) int64 (read only when n_l > 0)
    da_ptr,  # (N, H) out, contiguous
    dw_part_ptr,  # (n_blocks, C, H) out, contiguous: per-example-block partial sums of dw_y^T
    N,  # examples
    n_l,  # labelled examples
    H,  # hidden units
    n_classes,  # C
    n_lab_blocks,  # cdiv(n_l, BLOCK_N)
    g_u_offset,  # elements from grad_ptr to the first unlabelled row
    stride_gl,  # elements between labelled rows of grad
    stride_gn,  # elements between unlabelled examples of grad
    stride_gc,  # elements between the class rows of one unlabelled example
    stride_gh,  # elements between hidden units of grad
    stride_an,  # elements between rows of a
    stride_ah,  # elements between hidden units of a
    stride_wh,  # elements between rows of w_y
    stride_wc,  # elements between columns of w_y
    stride_cls,  # elements between entries of classes
    HAS_LABELLED: tl.constexpr,  # n_l > 0
    ACTIVATION: tl.constexpr,
    IS_FP64: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_H: tl.constexpr,
):
    pid_n, cols64, col_mask = _program_tile(H, BLOCK_H)
    part_ptrs = dw_part_ptr + pid_n.to(tl.int64) * n_classes * H + cols64  # dw_part[pid_n, c, h]
    if pid_n < n_lab_blocks:
        if HAS_LABELLED:  # static: never compiled with a placeholder classes pointer
            _bwd_labelled(
                grad_ptr, a_ptr, w_ptr, classes_ptr, da_ptr, part_ptrs, pid_n, cols64, col_mask, n_l, H, n_classes,
                stride_gl, stride_gh, stride_an, stride_ah, stride_wh, stride_wc, stride_cls,
                ACTIVATION, IS_FP64, BLOCK_N,
            )
    else:
        _bwd_unlabelled(
            grad_ptr, a_ptr, w_ptr, da_ptr, part_ptrs, pid_n - n_lab_blocks, cols64, col_mask, N, n_l, H,
            n_classes, g_u_offset, stride_gn, stride_gc, stride_gh, stride_an, stride_ah, stride_wh, stride_wc,
            ACTIVATION, IS_FP64, BLOCK_N, BLOCK_H,
        )


# ------------------------------------------------------------------------------------------------------
# Launchers: the op's `forward` and `backward` (signatures: ssvae_fast/ops/class_conditional_activation.py).
# ------------------------------------------------------------------------------------------------------
def _blocks(N: int, H: int, n_l: int) -> tuple[int, int, int, int]:
    """(BLOCK_N, BLOCK_H, labelled example blocks, all example blocks)."""
    block_n, block_h = block_sizes(N, H)
    n_lab_blocks = triton.cdiv(n_l, block_n)
    return block_n, block_h, n_lab_blocks, n_lab_blocks + triton.cdiv(N - n_l, block_n)


def forward(a: torch.Tensor, w_y: torch.Tensor, classes: Optional[torch.Tensor], activation: str) -> torch.Tensor:
    """(N, C, H) for classes None; (n_l + (N - n_l) * C, H) rows, labelled first, for classes (n_l,).
    One launch: the every-class form is the prefix form with n_l = 0 (same memory layout)."""
    N, H = a.shape
    C = w_y.shape[1]
    n_l = 0 if classes is None else classes.shape[0]
    out = a.new_empty(class_conditional_output_shape(a, w_y, classes))
    if out.numel() == 0:
        return out
    block_n, block_h, n_lab_blocks, n_blocks = _blocks(N, H, n_l)
    with device_guard(a):
        _class_conditional_fwd_kernel[(n_blocks, triton.cdiv(H, block_h))](
            a, w_y, a if classes is None else classes, out,
            N, n_l, H, C, n_lab_blocks,
            a.stride(0), a.stride(1), w_y.stride(0), w_y.stride(1), 0 if classes is None else classes.stride(0),
            HAS_LABELLED=n_l > 0, ACTIVATION=ACTIVATIONS[activation], IS_FP64=is_fp64(a),
            BLOCK_N=block_n, BLOCK_H=block_h, num_warps=NUM_WARPS,
        )
    return out


def backward(
    grad: torch.Tensor, a: Optional[torch.Tensor], w_y: torch.Tensor, out: Optional[torch.Tensor],
    classes: Optional[torch.Tensor], activation: str, N: int, need_a: bool, need_w_y: bool,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """(da (N, H), dw_y (H, C)), contiguous, each empty when not needed; grad shaped like the forward's
    output, any strides. act' is recomputed from a (saved: this backend does not declare GRAD_FROM_OUTPUT)."""
    H = a.shape[1]
    C = w_y.shape[1]
    n_l = 0 if classes is None else classes.shape[0]
    da = torch.empty_like(a, memory_format=torch.contiguous_format)
    block_n, block_h, n_lab_blocks, n_blocks = _blocks(N, H, n_l)
    dw_part = a.new_empty((n_blocks, C, H), dtype=compute_dtype(a.dtype))
    if N > 0 and H > 0:
        if classes is None:  # (N, C, H)
            stride_gl, (stride_gn, stride_gc, stride_gh) = 0, grad.stride()
        else:  # (n_l + (N - n_l) C, H) rows: unlabelled example j's class c at row n_l + j C + c
            stride_gl, stride_gh = grad.stride()
            stride_gn, stride_gc = C * stride_gl, stride_gl
        with device_guard(a):
            _class_conditional_bwd_kernel[(n_blocks, triton.cdiv(H, block_h))](
                grad, a, w_y, a if classes is None else classes, da, dw_part,
                N, n_l, H, C, n_lab_blocks,
                n_l * stride_gl, stride_gl, stride_gn, stride_gc, stride_gh,
                a.stride(0), a.stride(1), w_y.stride(0), w_y.stride(1), 0 if classes is None else classes.stride(0),
                HAS_LABELLED=n_l > 0, ACTIVATION=ACTIVATIONS[activation], IS_FP64=is_fp64(a),
                BLOCK_N=block_n, BLOCK_H=block_h, num_warps=NUM_WARPS,
            )
    # Second pass of the dw_y reduction: a fixed-order sum over example blocks (zeros when N == 0).
    dw_y = dw_part.sum(0).t().contiguous().to(a.dtype)
    return da if need_a else a.new_empty((0,)), dw_y if need_w_y else a.new_empty((0,))
