"""The `triton` backend's four ops: launchers (check, allocate, launch) and `torch.library.custom_op`s.

Each op has the signature and semantics of its plain-torch face in this package
(`class_conditional_activation_torch`, `gaussian_reparam_kl_torch`, `bernoulli_loglik_linear_torch`,
`elbo_reduction_torch`); the kernels are in `ssvae_fast/triton/<op>.py`. Every forward kernel is a custom
op `ssvae_fast::<op>_triton` with a fake (meta) implementation and an autograd formula that calls a
second custom op `ssvae_fast::<op>_triton_backward`, so `torch.compile` traces through them without
graph breaks, and CUDA graphs capture them (no host synchronization in any launcher; autotuning of the
Bernoulli kernels happens on the first call for a shape, so warm up before capturing). `ops.glue.FusedOp`
registers each pair; eager calls reach the same implementations without the dispatcher's round trip.

Devices and dtypes: CUDA tensors (CPU tensors only under TRITON_INTERPRET=1); float16, bfloat16, float32,
float64, one dtype for all float inputs of an op; class indices int64. Under `torch.autocast` the public
functions cast first, as torch would (`ops.glue.autocast_inputs`): the Bernoulli op (a GEMM) takes its
float32/16-bit inputs in the autocast dtype, the elementwise ops promote mixed inputs to the widest
dtype; outside autocast, mixed dtypes are an error. Every reduction accumulates in fp32 (fp64 for fp64
inputs). Outputs have the input dtype. No float atomics: results are bitwise reproducible run to run on
the same device. Gradients flow to every float input; second derivatives
are not implemented. Empty inputs (N = 0 rows) return empty outputs and zero gradients.
"""

# No `from __future__ import annotations`: torch.library.custom_op infers each op's schema from real
# annotations (string annotations are only understood by recent torch versions).
import contextlib
import math
import struct
from typing import Optional, Tuple

import torch
import triton
from torch import Tensor

from .. import triton as _settings
from ..triton import bernoulli_loglik_linear as _bll
from ..triton import class_conditional as _cc
from ..triton import elbo as _elbo
from ..triton import gaussian as _gauss
from .bernoulli_loglik_linear import (
    bernoulli_linear_dx,
    bernoulli_linear_vjp_from_s,
    check_bernoulli_linear_inputs,
)
from .class_conditional import check_class_conditional_inputs, class_conditional_output_shape
from .elbo import check_elbo_inputs
from .gaussian import check_gaussian_inputs
from .glue import (
    autocast_inputs, bernoulli_fused_op, class_conditional_fused_op, elbo_fused_op, gaussian_fused_op
)

__all__ = [
    "class_conditional_activation_triton",
    "gaussian_reparam_kl_triton",
    "bernoulli_loglik_linear_triton",
    "elbo_reduction_triton",
]

_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


# ------------------------------------------------------------------------------------------------------
# Checks shared by the launchers.
# ------------------------------------------------------------------------------------------------------
def _check_tensors(op: str, floats: dict, ints: Optional[dict] = None) -> None:
    """One device (CUDA, or CPU under the interpreter) and one float dtype for `floats`, int64 `ints`;
    ValueError/TypeError with the offending names otherwise. None entries are skipped."""
    floats = {k: v for k, v in floats.items() if v is not None}
    ints = {k: v for k, v in (ints or {}).items() if v is not None}
    everything = {**floats, **ints}
    devices = {t.device for t in everything.values()}
    if len(devices) != 1:
        listed = ", ".join(f"{k} on {t.device}" for k, t in everything.items())
        raise ValueError(f"{op}: all tensors must be on one device, got {listed}")
    device = devices.pop()
    if device.type != "cuda" and not (device.type == "cpu" and _settings.interpreting()):
        raise ValueError(
            f"{op}: the triton backend runs on CUDA tensors (CPU tensors only under TRITON_INTERPRET=1), "
            f"got tensors on {device}"
        )
    dtypes = {t.dtype for t in floats.values()}
    if len(dtypes) != 1 or next(iter(dtypes)) not in _FLOAT_DTYPES:
        listed = ", ".join(f"{k} {t.dtype}" for k, t in floats.items())
        raise TypeError(f"{op}: float inputs must share one dtype among {_FLOAT_DTYPES}, got {listed}")
    for name, t in ints.items():
        if t.dtype != torch.int64:
            raise TypeError(f"{op}: {name} must be int64 class indices, got {t.dtype}")


def _is_fp64(t: Tensor) -> bool:
    return t.dtype == torch.float64


def _compute_dtype(t: Tensor) -> torch.dtype:
    return torch.float64 if t.dtype == torch.float64 else torch.float32


def _fp32_pair(value: float) -> Tuple[float, float]:
    """(hi, lo) with hi = fp32(value) and lo = fp32(value - hi): value to ~2**-48 relative in fp64 kernels."""
    hi = struct.unpack("f", struct.pack("f", value))[0]
    return hi, struct.unpack("f", struct.pack("f", value - hi))[0]


def _device_guard(t: Tensor):
    """Launch on t's GPU (Triton launches on the current device's current stream)."""
    return torch.cuda.device(t.device) if t.device.type == "cuda" else contextlib.nullcontext()


# ======================================================================================================
# 1. Class-conditional first layer: act(a + w_y[:, c]).
# ======================================================================================================
def _class_conditional_forward(a: Tensor, w_y: Tensor, classes: Optional[Tensor], activation: str) -> Tensor:
    """(N, C, H) for classes None; (n_l + (N - n_l) * C, H) rows, labelled first, for classes (n_l,).
    One launch: the every-class form is the prefix form with n_l = 0 (same memory layout)."""
    N, H = a.shape
    C = w_y.shape[1]
    n_l = 0 if classes is None else classes.shape[0]
    out = a.new_empty(class_conditional_output_shape(a, w_y, classes))
    if out.numel() == 0:
        return out
    block_n, block_h = _cc.block_sizes(N, H)
    n_lab_blocks = triton.cdiv(n_l, block_n)
    grid = (n_lab_blocks + triton.cdiv(N - n_l, block_n), triton.cdiv(H, block_h))
    with _device_guard(a):
        _cc._class_conditional_fwd_kernel[grid](
            a, w_y, a if classes is None else classes, out,
            N, n_l, H, C, n_lab_blocks,
            a.stride(0), a.stride(1), w_y.stride(0), w_y.stride(1), 0 if classes is None else classes.stride(0),
            HAS_LABELLED=n_l > 0, ACTIVATION=_cc.ACTIVATIONS[activation], IS_FP64=_is_fp64(a),
            BLOCK_N=block_n, BLOCK_H=block_h, num_warps=_cc.NUM_WARPS,
        )
    return out


def _class_conditional_backward_impl(
    grad: Tensor, a: Tensor, w_y: Tensor, classes: Optional[Tensor], activation: str
) -> Tuple[Tensor, Tensor]:
    """(da (N, H), dw_y (H, C)), both contiguous. grad: shaped like the forward's output, any strides."""
    N, H = a.shape
    C = w_y.shape[1]
    n_l = 0 if classes is None else classes.shape[0]
    da = torch.empty_like(a, memory_format=torch.contiguous_format)
    block_n, block_h = _cc.block_sizes(N, H)
    n_lab_blocks = triton.cdiv(n_l, block_n)
    n_blocks = n_lab_blocks + triton.cdiv(N - n_l, block_n)
    dw_part = a.new_empty((n_blocks, C, H), dtype=_compute_dtype(a))
    if N > 0 and H > 0:
        if classes is None:  # (N, C, H)
            stride_gl, (stride_gn, stride_gc, stride_gh) = 0, grad.stride()
        else:  # (n_l + (N - n_l) C, H) rows: unlabelled example j's class c at row n_l + j C + c
            stride_gl, stride_gh = grad.stride()
            stride_gn, stride_gc = C * stride_gl, stride_gl
        with _device_guard(a):
            _cc._class_conditional_bwd_kernel[(n_blocks, triton.cdiv(H, block_h))](
                grad, a, w_y, a if classes is None else classes, da, dw_part,
                N, n_l, H, C, n_lab_blocks,
                n_l * stride_gl, stride_gl, stride_gn, stride_gc, stride_gh,
                a.stride(0), a.stride(1), w_y.stride(0), w_y.stride(1), 0 if classes is None else classes.stride(0),
                HAS_LABELLED=n_l > 0, ACTIVATION=_cc.ACTIVATIONS[activation], IS_FP64=_is_fp64(a),
                BLOCK_N=block_n, BLOCK_H=block_h, num_warps=_cc.NUM_WARPS,
            )
    # Second pass of the dw_y reduction: a fixed-order sum over example blocks (zeros when N == 0).
    dw_y = dw_part.sum(0).t().contiguous().to(a.dtype)
    return da, dw_y


_class_conditional_op = class_conditional_fused_op(
    "triton", _class_conditional_forward, _class_conditional_backward_impl
)


def class_conditional_activation_triton(
    a: Tensor, w_y: Tensor, classes: Optional[Tensor], activation: str
) -> Tensor:
    """Hidden activations of a first layer acting on [v, onehot(class)], by the Triton kernels.

    a: (N, H) = W_v v + b; w_y: (H, C) class columns (any strides: a column slice of the weight is read in
    place). classes None -> (N, C, H), out[n, c] = act(a[n] + w_y[:, c]). classes (n_l,) int64, n_l <= N:
    the first n_l rows are labelled (one class each), the rest take every class -> (n_l + (N - n_l) * C, H),
    out[i] = act(a[i] + w_y[:, classes[i]]) for i < n_l, out[n_l + j * C + c] = act(a[n_l + j] + w_y[:, c])
    (n_l = N: one class per row). One kernel launch for both kinds of rows, forward and backward.
    activation: "softplus" or "relu". Computes in fp32 (fp64 for fp64 inputs); differentiable in a and w_y
    (dw_y reduced without atomics: deterministic).
    """
    check_class_conditional_inputs(a, w_y, classes)
    if activation not in _cc.ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; choose one of {tuple(_cc.ACTIVATIONS)}")
    a, w_y = autocast_inputs((a, w_y), matmul=False, device_type=a.device.type)
    _check_tensors("class_conditional_activation_triton", {"a": a, "w_y": w_y}, {"classes": classes})
    return _class_conditional_op(a, w_y, classes, activation)


# ======================================================================================================
# 2. Gaussian head epilogue: [mu, logvar], eps -> z, kl.
# ======================================================================================================
def _gaussian_forward(head: Tensor, eps: Tensor) -> Tuple[Tensor, Tensor]:
    R, Z = eps.shape
    z = head.new_empty((R, Z))
    kl = head.new_empty((R,))
    if R == 0:
        return z, kl
    if Z == 0:
        return z, kl.zero_()
    block_r, block_z = _gauss.block_sizes(Z)
    with _device_guard(head):
        _gauss._gaussian_reparam_kl_fwd_kernel[(triton.cdiv(R, block_r),)](
            head, eps, z, kl, R, Z,
            head.stride(0), head.stride(1), eps.stride(0), eps.stride(1),
            IS_FP64=_is_fp64(head), BLOCK_R=block_r, BLOCK_Z=block_z,
        )
    return z, kl


def _gaussian_backward_impl(head: Tensor, eps: Tensor, grad_z: Tensor, grad_kl: Tensor) -> Tuple[Tensor, Tensor]:
    """(d head (R, 2Z), d eps (R, Z)), contiguous."""
    R, Z = eps.shape
    dhead = head.new_empty((R, 2 * Z))
    deps = head.new_empty((R, Z))
    if R == 0 or Z == 0:
        return dhead, deps
    block_r, block_z = _gauss.block_sizes(Z)
    with _device_guard(head):
        _gauss._gaussian_reparam_kl_bwd_kernel[(triton.cdiv(R, block_r),)](
            head, eps, grad_z, grad_kl, dhead, deps, R, Z,
            head.stride(0), head.stride(1), eps.stride(0), eps.stride(1),
            grad_z.stride(0), grad_z.stride(1), grad_kl.stride(0),
            IS_FP64=_is_fp64(head), BLOCK_R=block_r, BLOCK_Z=block_z,
        )
    return dhead, deps


_gaussian_op = gaussian_fused_op("triton", _gaussian_forward, _gaussian_backward_impl)


def gaussian_reparam_kl_triton(head: Tensor, eps: Tensor) -> Tuple[Tensor, Tensor]:
    """head: (R, 2Z) = [mu, logvar]; eps: (R, Z) -> z = mu + exp(logvar / 2) * eps (R, Z) and
    kl = 0.5 * sum_k (mu^2 + exp(logvar) - 1 - logvar) (R,), by one Triton kernel (and one for the
    backward, to head and eps). KL accumulates in fp32 (fp64 for fp64 inputs). Any strides."""
    check_gaussian_inputs(head, eps)
    head, eps = autocast_inputs((head, eps), matmul=False, device_type=head.device.type)
    _check_tensors("gaussian_reparam_kl_triton", {"head": head, "eps": eps})
    return _gaussian_op(head, eps)


# ======================================================================================================
# 3. Decoder output layer + Bernoulli log-likelihood.
# ======================================================================================================
def _bernoulli_forward(
    h: Tensor, weight: Tensor, bias: Optional[Tensor], x: Tensor, n_labelled: int, n_classes: int, store_s: bool
) -> Tuple[Tensor, Tensor]:
    """(ll (M,), s (M, D) = x - sigmoid(l) when store_s, else an empty tensor) for h (M, H) rows in the
    2-D layout: n_labelled rows first (row i scores x[i]), then n_classes rows per remaining example."""
    M, H = h.shape
    D = weight.shape[0]
    s = h.new_empty((M, D) if store_s else (0,))
    n_slots = triton.cdiv(D, _bll.BLOCK_D)
    ll_part = h.new_empty((n_slots, M), dtype=_compute_dtype(h))
    if M > 0 and D > 0:
        precision = "ieee" if h.dtype == torch.float64 else _settings.get_input_precision()
        grid = lambda meta: (triton.cdiv(M, meta["BLOCK_M"]), triton.cdiv(D, meta["BLOCK_D"]))  # noqa: E731
        with _device_guard(h):
            _bll._bernoulli_loglik_linear_fwd_kernel[grid](
                h, weight, weight if bias is None else bias, x, s if store_s else ll_part, ll_part,
                M, D, H, n_labelled, max(n_classes, 1),  # C = 0 only without enumerated rows: never divide by 0
                h.stride(0), h.stride(1), weight.stride(0), weight.stride(1),
                0 if bias is None else bias.stride(0), x.stride(0), x.stride(1), D,
                HAS_BIAS=bias is not None, STORE_S=store_s, IS_FP64=_is_fp64(h), INPUT_PRECISION=precision,
                BLOCK_D=_bll.BLOCK_D,
            )
    # Second pass of the row sums over D tiles: fixed order, deterministic (0 when D == 0).
    ll = ll_part.sum(0).to(h.dtype)
    return ll, s


def _bernoulli_backward_impl(
    grad_ll: Tensor, h: Tensor, weight: Tensor, bias: Optional[Tensor], x: Tensor, s: Tensor,
    n_labelled: int, n_classes: int, recompute: bool,
) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """(dh (M, H), dW (D, H), db (D,) or empty without bias, dx (N, D)); see the VJP in
    ssvae_fast/triton/bernoulli_loglik_linear.py. recompute: s is empty and the kernel recomputes l."""
    M, H = h.shape
    D = weight.shape[0]
    g = grad_ll.reshape(M)
    if recompute:
        # dl = g * (x - sigmoid(l)), recomputed tile by tile; then plain GEMMs.
        dl = h.new_empty((M, D))
        if M > 0 and D > 0:
            precision = "ieee" if h.dtype == torch.float64 else _settings.get_input_precision()
            grid = lambda meta: (triton.cdiv(M, meta["BLOCK_M"]), triton.cdiv(D, meta["BLOCK_D"]))  # noqa: E731
            with _device_guard(h):
                _bll._bernoulli_loglik_linear_bwd_kernel[grid](
                    h, weight, weight if bias is None else bias, x, g, dl,
                    M, D, H, n_labelled, max(n_classes, 1),
                    h.stride(0), h.stride(1), weight.stride(0), weight.stride(1),
                    0 if bias is None else bias.stride(0), x.stride(0), x.stride(1), g.stride(0), D,
                    HAS_BIAS=bias is not None, IS_FP64=_is_fp64(h), INPUT_PRECISION=precision,
                    BLOCK_D=_bll.BLOCK_D,
                )
        dh = dl @ weight
        dweight = dl.t() @ h
        dbias = dl.sum(0) if bias is not None else h.new_empty((0,))
        return dh, dweight, dbias, bernoulli_linear_dx(g, h, weight, bias, n_labelled, n_classes, x.shape[0])
    # s = x - sigmoid(l) from the forward.
    return bernoulli_linear_vjp_from_s(s, g, h, weight, bias, n_labelled, n_classes, x.shape[0])


_bernoulli_op = bernoulli_fused_op(
    "triton", _bernoulli_forward, _bernoulli_backward_impl, lambda inputs: (not inputs[6],)  # recompute: s was not stored
)


def bernoulli_loglik_linear_triton(
    h: Tensor, weight: Tensor, bias: Optional[Tensor], x: Tensor, n_labelled: int = 0
) -> Tensor:
    """ll = sum_d x_d l_d - softplus(l_d) for every row of h, l = W h + b, the logits never written to memory.

    3-D form: h (N, C, H), x (N, D) shared by the C rows of example n -> ll (N, C) (n_labelled must be 0).
    2-D form: h (M, H) rows, M = n_l + (N - n_l) * C with n_l = n_labelled: row i < n_l scores x[i], row
    n_l + j * C + c scores x[n_l + j] (the layout of `class_conditional_activation` given n_l classes)
    -> ll (M,). weight: (D, H); bias: (D,) or None; any strides. The kernels work on rows: the 3-D form is
    its rows with n_l = 0 (h reshaped: a view when the strides allow it).
    Returns ll in h's dtype. Accumulates in fp32 (fp64 for fp64 inputs); fp32 products use the
    `input_precision` setting (TF32 by default on a GPU; `ssvae_fast.triton.set_input_precision`).
    Differentiable in h, weight, bias and x; deterministic (no atomics). When a gradient is needed the
    forward keeps s = x - sigmoid(l), (M, D), for the backward unless
    `ssvae_fast.triton.set_bernoulli_recompute(True)` (then the backward recomputes the logits).
    """
    n_classes = check_bernoulli_linear_inputs(h, weight, bias, x, n_labelled)
    h, weight, bias, x = autocast_inputs((h, weight, bias, x), matmul=True, device_type=h.device.type)
    _check_tensors("bernoulli_loglik_linear_triton", {"h": h, "weight": weight, "bias": bias, "x": x})
    needs_grad = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (h, weight, bias, x)
    )
    store_s = needs_grad and not _settings.get_bernoulli_recompute()
    if h.dim() == 3:
        N = h.shape[0]
        rows = h.reshape(N * n_classes, h.shape[2])
        ll, _ = _bernoulli_op(rows, weight, bias, x, 0, n_classes, store_s)
        return ll.view(N, n_classes)
    ll, _ = _bernoulli_op(h, weight, bias, x, n_labelled, n_classes, store_s)
    return ll


# ======================================================================================================
# 4. ELBO reduction.
# ======================================================================================================
def _elbo_forward(
    logits_y: Tensor, y_l: Tensor, ll_l: Tensor, kl_l: Tensor, ll_u: Tensor, kl_u: Tensor, alpha: float
) -> Tensor:
    n, C = logits_y.shape
    n_l = y_l.shape[0]
    loss = logits_y.new_empty((n,))
    if n == 0:
        return loss
    block_rows, block_c = _elbo.block_sizes(C)
    alpha_hi, alpha_lo = _fp32_pair(alpha)
    log_c_hi, log_c_lo = _fp32_pair(math.log(C))
    with _device_guard(logits_y):
        _elbo._elbo_reduction_fwd_kernel[(triton.cdiv(n, block_rows),)](
            logits_y, y_l, ll_l, kl_l, ll_u, kl_u, loss,
            n, n_l, C, alpha_hi, alpha_lo, log_c_hi, log_c_lo,
            logits_y.stride(0), logits_y.stride(1), y_l.stride(0), ll_l.stride(0), kl_l.stride(0),
            ll_u.stride(0), ll_u.stride(1), kl_u.stride(0), kl_u.stride(1),
            IS_FP64=_is_fp64(logits_y), BLOCK_ROWS=block_rows, BLOCK_C=block_c,
        )
    return loss


def _elbo_backward(
    grad: Tensor, logits_y: Tensor, y_l: Tensor, ll_u: Tensor, kl_u: Tensor, alpha: float
) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """(d logits_y, d ll_l, d kl_l, d ll_u, d kl_u), contiguous."""
    n, C = logits_y.shape
    n_l = y_l.shape[0]
    dlogits = logits_y.new_empty((n, C))
    dll_l = logits_y.new_empty((n_l,))
    dkl_l = logits_y.new_empty((n_l,))
    dll_u = logits_y.new_empty(ll_u.shape)
    dkl_u = logits_y.new_empty(kl_u.shape)
    if n == 0:
        return dlogits, dll_l, dkl_l, dll_u, dkl_u
    block_rows, block_c = _elbo.block_sizes(C)
    alpha_hi, alpha_lo = _fp32_pair(alpha)
    log_c_hi, log_c_lo = _fp32_pair(math.log(C))
    with _device_guard(logits_y):
        _elbo._elbo_reduction_bwd_kernel[(triton.cdiv(n, block_rows),)](
            grad, logits_y, y_l, ll_u, kl_u, dlogits, dll_l, dkl_l, dll_u, dkl_u,
            n, n_l, C, alpha_hi, alpha_lo, log_c_hi, log_c_lo,
            grad.stride(0), logits_y.stride(0), logits_y.stride(1), y_l.stride(0),
            ll_u.stride(0), ll_u.stride(1), kl_u.stride(0), kl_u.stride(1),
            IS_FP64=_is_fp64(logits_y), BLOCK_ROWS=block_rows, BLOCK_C=block_c,
        )
    return dlogits, dll_l, dkl_l, dll_u, dkl_u


_elbo_op = elbo_fused_op("triton", _elbo_forward, _elbo_backward)


def elbo_reduction_triton(logits_y, y_l, ll_l, kl_l, ll_u, kl_u, alpha: float) -> Tensor:
    """Per-example M2 losses (n_l + n_u,), labelled first, by one Triton kernel (and one for the backward).

    logits_y: (n_l + n_u, C), labelled rows first; y_l: (n_l,) int64 in [0, C) (not checked on device:
    no host sync); ll_l, kl_l: (n_l,); ll_u, kl_u: (n_u, C); alpha: weight of -log q(y|x).
    labelled: kl - ll + log C - alpha * log q(y|x); unlabelled: sum_c q_c (kl_c - ll_c + log C + log q_c).
    Log-softmax in fp32 (fp64 for fp64 inputs). Differentiable in logits_y, ll_*, kl_*.
    """
    check_elbo_inputs(logits_y, y_l, ll_l, kl_l, ll_u, kl_u)
    logits_y, ll_l, kl_l, ll_u, kl_u = autocast_inputs(
        (logits_y, ll_l, kl_l, ll_u, kl_u), matmul=False, device_type=logits_y.device.type
    )
    _check_tensors(
        "elbo_reduction_triton",
        {"logits_y": logits_y, "ll_l": ll_l, "kl_l": kl_l, "ll_u": ll_u, "kl_u": kl_u},
        {"y_l": y_l},
    )
    if logits_y.shape[1] > _elbo.MAX_CLASSES:
        raise ValueError(f"elbo_reduction_triton supports at most {_elbo.MAX_CLASSES} classes, got {logits_y.shape[1]}")
    return _elbo_op(logits_y, y_l, ll_l, kl_l, ll_u, kl_u, float(alpha))
