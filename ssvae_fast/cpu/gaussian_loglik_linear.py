"""`gaussian_loglik_linear` on the CPU (csrc/cpu/gaussian_loglik_linear.cpp): the means GEMM by torch (no
bias), written straight into the (M, D) buffer s that the kernel turns in place into s = p (x - mu),
p = exp(-logvar), while it reduces each row to ll (M,), the bias added on the fly. Without autograd: chunks
through one reused buffer. Backward: dl = g s with the column sums of g s (db) and g s^2 (the
log-variance's gradient) in one kernel pass (in place over s when eager autograd uses it up), then
dW = dl^T h and dh = dl W (GEMMs) and dx = -(sum of dl over each example's rows). bfloat16 inputs: bfloat16
GEMMs, s and dl in bfloat16, the precisions, ll and the sums in float32."""

# No `from __future__ import annotations`: the custom ops' schemas come from these annotations.
import math
from typing import Optional, Tuple

import torch
from torch import Tensor

from .. import _ext
from .._launch import compute_dtype, dtype_name, ptr
from ..rows import per_example_sum
from . import REDUCTIONS_IN_COMPUTE_DTYPE  # noqa: F401  (ll)
# The same GEMM precision, and the Bernoulli op's recompute setting (`keeps_s`) serves both ops.
from .bernoulli_loglik_linear import CHUNK_ROWS, keeps_s, resolve_precision  # noqa: F401


def _means_and_s(h: Tensor, weight: Tensor, bias: Optional[Tensor], logvar: Tensor, x: Tensor, n_l: int, C: int,
                 store_s: bool):
    """(ll (M,) in the compute dtype, s (M, D) or empty) for contiguous inputs."""
    ext = _ext.require_ext()
    M = h.shape[0]
    D, N = weight.shape[0], x.shape[0]
    acc = compute_dtype(h.dtype)
    ll = h.new_empty((M,), dtype=acc)
    s = h.new_empty((M, D) if store_s else (0,))
    offset = -0.5 * (float(logvar.double().sum()) + D * math.log(2.0 * math.pi))
    if M == 0:
        return ll, s
    if D == 0:
        return ll.fill_(offset), s
    precision = torch.exp(-logvar.to(acc)).contiguous()  # read by the kernel in the compute dtype
    chunk = M if store_s else min(M, CHUNK_ROWS)
    buf = s if store_s else h.new_empty((chunk, D))
    weight_t, item, dtype = weight.t(), ll.element_size(), dtype_name(h)
    for r0 in range(0, M, chunk):
        r1 = min(M, r0 + chunk)
        means = buf[r0:r1] if store_s else buf[: r1 - r0]
        torch.mm(h[r0:r1], weight_t, out=means)  # the kernel adds the bias
        ext.gaussian_linear_epilogue(
            means.data_ptr(), ptr(bias), precision.data_ptr(), x.data_ptr(), ll.data_ptr() + r0 * item,
            means.data_ptr() if store_s else 0, offset, r0, r1 - r0, N, n_l, C, D, dtype,
        )
    return ll, s


def forward(
    h: Tensor, weight: Tensor, bias: Optional[Tensor], logvar: Tensor, x: Tensor, n_labelled: int, n_classes: int,
    store_s: bool, precision: str,
) -> Tuple[Tensor, Tensor]:
    """(ll (M,) in the compute dtype, s = exp(-logvar) (x - mu) (M, D) when store_s, else an empty tensor);
    h (M, H) rows."""
    bias = bias.contiguous() if bias is not None else None
    return _means_and_s(h.contiguous(), weight.contiguous(), bias, logvar.contiguous(), x.contiguous(), n_labelled,
                        n_classes, store_s)


def backward(
    grad_ll: Tensor, h: Tensor, weight: Tensor, bias: Optional[Tensor], logvar: Tensor, x: Tensor, s: Tensor,
    n_labelled: int, n_classes: int, precision: str, need_h: bool, need_weight: bool, need_bias: bool,
    need_logvar: bool, need_x: bool,
) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """(dh (M, H), dW (D, H), db (D,), dlogvar (D,), dx (N, D)), each empty when not needed. s: from the
    forward (read, never written), or empty: then recomputed here."""
    return _backward(grad_ll, h, weight, bias, logvar, x, s, n_labelled, n_classes,
                     (need_h, need_weight, need_bias, need_logvar, need_x), s_is_spare=False)


def backward_in_place(grad_ll, h, weight, bias, logvar, x, s, n_labelled, n_classes, precision, need_h, need_weight,
                      need_bias, need_logvar, need_x):
    """`backward` that may overwrite s (eager autograd's single use of it): the same arithmetic."""
    return _backward(grad_ll, h, weight, bias, logvar, x, s, n_labelled, n_classes,
                     (need_h, need_weight, need_bias, need_logvar, need_x), s_is_spare=True)


def _backward(grad_ll, h, weight, bias, logvar, x, s, n_l, C, needs, s_is_spare: bool):
    ext = _ext.require_ext()
    need_h, need_weight, need_bias, need_logvar, need_x = needs
    M, D = h.shape[0], weight.shape[0]
    acc = compute_dtype(h.dtype)
    h_rows, weight, g = h.contiguous(), weight.contiguous(), grad_ll.to(acc).contiguous()  # g in ll's dtype
    dh, dweight, dbias, dlogvar, dx = (h.new_empty((0,)) for _ in range(5))  # distinct: no aliases
    if not any(needs):
        return dh, dweight, dbias, dlogvar, dx
    if s.numel() != M * D:
        bias_c = bias.contiguous() if bias is not None else None
        _, s = _means_and_s(h_rows, weight, bias_c, logvar.contiguous(), x.contiguous(), n_l, C, True)
        s_is_spare = True
    dl = s if s_is_spare else h.new_empty((M, D))
    if need_bias:
        dbias = h.new_empty((D,))
    q = h.new_empty((D,), dtype=acc) if need_logvar else dlogvar
    ext.gaussian_linear_backward_rows(ptr(s), ptr(g), ptr(dl), ptr(dbias), ptr(q), M, D, dtype_name(h))
    if need_logvar:
        dlogvar = (0.5 * torch.exp(logvar.to(acc)) * q - 0.5 * g.sum()).to(logvar.dtype)
    if need_weight:
        dweight = torch.mm(dl.t(), h_rows)
    if need_h:
        dh = torch.mm(dl, weight)
    if need_x:
        dx = per_example_sum(dl, n_l, C, x.shape[0]).neg_()
    return dh, dweight, dbias, dlogvar, dx
