"""`bernoulli_loglik_linear` on the CPU (csrc/cpu/bernoulli_loglik_linear.cpp): the logits GEMM by torch
(no bias), written straight into the (M, D) buffer s that the kernel turns in place into
s = x - sigmoid(l) while it reduces each row to ll (M,), the bias added on the fly; s is all the backward
needs. Without autograd: chunks through one reused buffer, so only a chunk of logits ever exists.
Backward: dl = g s and db = s^T g in one kernel pass (eager autograd: in place over s, which it uses
once), then dW = dl^T h and dh = dl W (GEMMs); dx = (sum_rows g h) W^T + b sum_rows g only when x needs
it. Row sums in double; exact softplus. bfloat16 inputs: bfloat16 GEMMs (torch's), s and dl in bfloat16
(the GEMMs' inputs), ll and the gradient it receives in float32, db summed in double."""

# No `from __future__ import annotations`: the custom ops' schemas come from these annotations.
from typing import Optional, Tuple

import torch
from torch import Tensor

from .. import _ext
from .._launch import Settings, compute_dtype, dtype_name, ptr
from ..rows import bernoulli_linear_dx
from . import REDUCTIONS_IN_COMPUTE_DTYPE  # noqa: F401  (ll)

# Rows of logits per GEMM + epilogue chunk when no gradient is needed (with autograd the logits are
# written into s, all rows at once; see `forward`): 512 rows x 784 floats = 1.6 MB, in L2 between the GEMM
# and the kernel.
CHUNK_ROWS = 512
# Rows per GEMM + epilogue chunk when s is kept for the backward; None: all rows in one GEMM (fastest
# measured, see `forward`; a knob for benchmarks/profile_cpu_step.py --ops).
STORE_CHUNK_ROWS: Optional[int] = None

_settings = Settings({"recompute": False})


def recompute_bernoulli_logits(enabled: bool = True):
    """Within a `with` block (or from now on, if the result is ignored), the op keeps nothing of size
    (M, D) for the backward, which recomputes the logits (one more (M, H) x (H, D) GEMM; slower, for
    memory-bound uses)."""
    return _settings.set("recompute", bool(enabled))


def keeps_s() -> bool:
    """Whether the forward keeps s for the backward (False under `recompute_bernoulli_logits`)."""
    return not _settings.get("recompute")


def resolve_precision(precision: Optional[str]) -> str:
    """The CPU's GEMMs are torch's products in the inputs' dtype (bfloat16 ones accumulate in float32):
    "ieee" is the only precision."""
    if precision not in (None, "ieee"):
        raise ValueError(f"the cpu backend's precision is 'ieee', got {precision!r}")
    return "ieee"


def _logits_and_s(h: Tensor, weight: Tensor, bias: Optional[Tensor], x: Tensor, n_l: int, C: int, store_s: bool):
    """(ll (M,) in the compute dtype, s (M, D) or empty) for contiguous inputs: the logits GEMM (torch,
    without the bias) and the epilogue kernel, which adds the bias and reduces each row while producing
    s = x - sigmoid(l) in place.

    store_s: one GEMM over all M rows writes h W^T straight into s, which the kernel overwrites with
    x - sigmoid(l): no buffer besides s, which the backward needs anyway. Otherwise (no autograd) chunks of
    CHUNK_ROWS rows through one reused buffer, so only a chunk of logits ever exists.
    Measured at MNIST sizes (M = 2300, D = 784, H = 500, float32; `benchmarks/profile_cpu_step.py --ops`,
    2 threads, medians): GEMM alone 5.9 ms; GEMM + epilogue over all rows at once 6.8 ms, in chunks of
    512 / 256 / 128 / 64 rows 7.2 / 7.3 / 7.6 / 8.4 ms (each chunk's GEMM repacks W, and on a loaded
    machine each chunk adds two OpenMP barriers, each of which can cost a 4 ms scheduler tick). The L3
    cache (260 MB here) holds the 7.3 MB of logits between the GEMM and the kernel anyway. Folding the
    bias into the kernel saves addmm's copy of the broadcast bias into its output (~1.4 ms, one thread).
    """
    ext = _ext.require_ext()
    M, H = h.shape
    D = weight.shape[0]
    N = x.shape[0]
    ll = h.new_empty((M,), dtype=compute_dtype(h.dtype))
    s = h.new_empty((M, D) if store_s else (0,))
    if M == 0:
        return ll, s
    if D == 0:
        return ll.zero_(), s
    weight_t = weight.t()
    if store_s:
        chunk = M if STORE_CHUNK_ROWS is None else min(M, STORE_CHUNK_ROWS)
    else:
        chunk = min(M, CHUNK_ROWS)
    buf = s if store_s else h.new_empty((chunk, D))
    dtype = dtype_name(h)
    item = ll.element_size()
    for r0 in range(0, M, chunk):
        r1 = min(M, r0 + chunk)
        logits = buf[r0:r1] if store_s else buf[: r1 - r0]
        torch.mm(h[r0:r1], weight_t, out=logits)  # the kernel adds the bias
        ext.bernoulli_linear_epilogue(
            logits.data_ptr(), ptr(bias), x.data_ptr(), ll.data_ptr() + r0 * item,
            logits.data_ptr() if store_s else 0, r0, r1 - r0, N, n_l, C, D, dtype,
        )
    return ll, s


def forward(
    h: Tensor, weight: Tensor, bias: Optional[Tensor], x: Tensor, n_labelled: int, n_classes: int, store_s: bool,
    precision: str,
) -> Tuple[Tensor, Tensor]:
    """(ll (M,) in the compute dtype, s = x - sigmoid(l) (M, D) when store_s, else an empty tensor); h (M, H)
    rows."""
    bias = bias.contiguous() if bias is not None else None
    return _logits_and_s(h.contiguous(), weight.contiguous(), bias, x.contiguous(), n_labelled, n_classes, store_s)


def backward(
    grad_ll: Tensor, h: Tensor, weight: Tensor, bias: Optional[Tensor], x: Tensor, s: Tensor, n_labelled: int,
    n_classes: int, precision: str, need_h: bool, need_weight: bool, need_bias: bool, need_x: bool,
) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """(dh (M, H), dW (D, H), db (D,), dx (N, D)), each an empty tensor when not needed.

    s: x - sigmoid(l) (M, D) from the forward (read, never written), or empty: then recomputed here.
    The backward custom op; eager autograd uses s up instead (`backward_in_place`) with the same
    arithmetic, so the two give the same bits."""
    return _backward(grad_ll, h, weight, bias, x, s, n_labelled, n_classes, need_h, need_weight, need_bias,
                     need_x, s_is_spare=False)


def backward_in_place(grad_ll, h, weight, bias, x, s, n_labelled, n_classes, precision, need_h, need_weight,
                      need_bias, need_x):
    """`backward` that may overwrite s (eager autograd's single use of it)."""
    return _backward(grad_ll, h, weight, bias, x, s, n_labelled, n_classes, need_h, need_weight, need_bias,
                     need_x, s_is_spare=True)


def _backward(grad_ll, h, weight, bias, x, s, n_l, C, need_h, need_weight, need_bias, need_x, s_is_spare: bool):
    """dl = g * s (M, D) by one kernel pass that also sums db = sum_rows dl; then dW = dl^T h and
    dh = dl W, plain GEMMs. dl overwrites s when s is spare (recomputed here, or used up by eager
    autograd), else gets its own buffer. At MNIST sizes (benchmarks/profile_cpu_step.py, 2 threads) this
    is ~0.5 ms per step faster than never forming dl (a g * h pass before dW = s^T (g h), and dh = s W
    scaled by g in place after it: two (M, H) passes instead of one (M, D) pass), in the same memory
    when s is spare."""
    ext = _ext.require_ext()
    M, H = h.shape
    D = weight.shape[0]
    h_rows = h.contiguous()
    weight = weight.contiguous()
    acc = compute_dtype(h.dtype)
    g = grad_ll.to(acc).contiguous()  # ll's gradient, in ll's dtype
    # Outputs not needed are distinct empty tensors (custom ops may not return aliases).
    dh, dweight, dbias, dx = (h.new_empty((0,)) for _ in range(4))
    if need_h or need_weight or need_bias:
        if s.numel() != M * D:
            bias_c = bias.contiguous() if bias is not None else None
            _, s = _logits_and_s(h_rows, weight, bias_c, x.contiguous(), n_l, C, True)
            s_is_spare = True
        if need_bias:
            dbias = h.new_empty((D,))
        dtype = dtype_name(h)
        if s_is_spare:  # in place: s[r] *= g[r], each row's db term read first
            dl = s
            ext.bernoulli_linear_backward_rows(ptr(s), ptr(g), 0, ptr(dl), 0, ptr(dbias), M, D, D, dtype)
        else:  # dl[r] = g[r] * s[r] into its own buffer: the same products
            dl = h.new_empty((M, D))
            ext.bernoulli_linear_backward_rows(ptr(s), ptr(g), ptr(s), 0, ptr(dl), ptr(dbias), M, D, D, dtype)
        if need_weight:
            dweight = torch.mm(dl.t(), h_rows)
        if need_h:
            dh = torch.mm(dl, weight)
    if need_x:  # dx[n] = W (sum of g h over example n's rows) + b (sum of g over them), in the compute dtype
        h_acc, weight_acc, bias_acc = (None if t is None else t.to(acc) for t in (h_rows, weight, bias))
        dx = bernoulli_linear_dx(g, h_acc, weight_acc, bias_acc, n_l, C, x.shape[0]).to(x.dtype)
    return dh, dweight, dbias, dx
