"""Bernoulli log-likelihood of per-class logits against an x shared by the C class rows of each example.

    ll[b, c] = sum_d x[b, d] * l[b, c, d] - softplus(l[b, c, d])        logits (B, C, D), x (B, D) -> (B, C)

This is M2's log p(x | y=c, z) for every enumerated class c (docs/design.md section 1). Faces:

    bernoulli_loglik_torch(logits, x)  plain torch (the oracle's formula, imported from ssvae_fast.functional)
    bernoulli_loglik_cpu(logits, x)    C++/OpenMP kernel of ssvae_fast._C      (op ssvae_fast::bernoulli_loglik_cpu)
    bernoulli_loglik_cuda(logits, x)   CUDA kernel of ssvae_fast._C_cuda       (op ssvae_fast::bernoulli_loglik_cuda)

What the kernels save: the torch formula broadcasts x against (B, C, D), allocates two (B, C, D)
temporaries and makes three passes; the kernels read each logit once and x_b once per (b, c) row (CPU)
or per block (CUDA), and write only the (B, C) result. The backward writes grad_logits and grad_x
without any (B, C, D) temporary besides grad_logits itself.

Numerics (both kernels): softplus(l) = max(l, 0) + log1p(exp(-|l|)) with IEEE expf/log1pf, exact for
every finite l (no threshold, unlike F.softplus); reductions over d and over c accumulate in double, so a
float32 result is at least as accurate as torch's own float32 formula. Deterministic: no atomics.

Each kernel is a `torch.library.custom_op` with a fake (meta) implementation and an autograd formula that
calls a second custom op for the backward kernel, so torch.compile and CUDA graphs pass through them.
Gradients flow to logits and x. Second derivatives are not implemented.

VJP (g = dLoss/dll, shape (B, C)):
    grad_logits[b, c, d] = g[b, c] * (x[b, d] - sigmoid(l[b, c, d]))
    grad_x[b, d]         = sum_c g[b, c] * l[b, c, d]
"""

from typing import Tuple

import torch
from torch import Tensor

from .. import _ext
from ..functional import bernoulli_loglik as _bernoulli_loglik_formula

_DTYPE_NAMES = {torch.float32: "float32", torch.float64: "float64"}

__all__ = ["bernoulli_loglik_torch", "bernoulli_loglik_cpu", "bernoulli_loglik_cuda"]


def bernoulli_loglik_torch(logits: Tensor, x: Tensor) -> Tensor:
    """Plain-torch ll = sum_d x_d * l_d - softplus(l_d), any device and float dtype.

    logits: (B, C, D) per-class decoder logits, or (B, D); x: (B, D), shared by the C rows of example b.
    Returns (B, C), or (B,) for (B, D) logits. Accumulates in the input dtype (torch's `sum`).
    """
    if logits.dim() == 3 and x.dim() == 2:
        x = x.unsqueeze(1)
    return _bernoulli_loglik_formula(logits, x)


# ------------------------------------------------------------------------------------------------------
# Launchers: check, allocate, launch.
# ------------------------------------------------------------------------------------------------------
def _check_inputs(fn: str, logits: Tensor, x: Tensor, device_type: str) -> None:
    """ValueError with a clear message unless logits (B, C, D) or (B, D) and x (B, D) fit the kernels."""
    if not isinstance(logits, Tensor) or not isinstance(x, Tensor):
        raise ValueError(f"{fn}: logits and x must be tensors, got {type(logits).__name__} and {type(x).__name__}")
    if logits.dim() not in (2, 3):
        raise ValueError(f"{fn}: logits must be (B, C, D) or (B, D), got shape {tuple(logits.shape)}")
    if x.dim() != 2:
        raise ValueError(f"{fn}: x must be (B, D), got shape {tuple(x.shape)}")
    if logits.shape[0] != x.shape[0] or logits.shape[-1] != x.shape[-1]:
        raise ValueError(
            f"{fn}: logits {tuple(logits.shape)} and x {tuple(x.shape)} disagree; expected logits (B, C, D) or "
            "(B, D) and x (B, D) with the same B and D"
        )
    if logits.dtype not in _DTYPE_NAMES:
        raise ValueError(f"{fn}: logits must be float32 or float64, got {logits.dtype}")
    if x.dtype != logits.dtype:
        raise ValueError(
            f"{fn}: x ({x.dtype}) must have the dtype of logits ({logits.dtype}); convert it with x.to(logits.dtype)"
        )
    if logits.device.type != device_type or x.device != logits.device:
        raise ValueError(
            f"{fn}: expects logits and x on one {device_type} device, got logits on {logits.device} and x on "
            f"{x.device}" + ("; use bernoulli_loglik_cuda for CUDA tensors" if device_type == "cpu" else "")
        )


def _sizes(logits: Tensor) -> Tuple[int, int, int]:
    B, C, D = logits.shape
    return B, C, D


# ---- CPU -------------------------------------------------------------------------------------------
@torch.library.custom_op("ssvae_fast::bernoulli_loglik_cpu", mutates_args=(), device_types="cpu")
def _bernoulli_loglik_cpu_op(logits: Tensor, x: Tensor) -> Tensor:
    ext = _ext.require_ext()
    logits, x = logits.contiguous(), x.contiguous()
    B, C, D = _sizes(logits)
    out = logits.new_empty((B, C))
    ext.bernoulli_loglik_forward(
        logits.data_ptr(), x.data_ptr(), out.data_ptr(), B, C, D, _DTYPE_NAMES[logits.dtype]
    )
    return out


@_bernoulli_loglik_cpu_op.register_fake
def _(logits: Tensor, x: Tensor) -> Tensor:
    return logits.new_empty(logits.shape[:2])


@torch.library.custom_op("ssvae_fast::bernoulli_loglik_cpu_backward", mutates_args=(), device_types="cpu")
def _bernoulli_loglik_cpu_backward_op(
    logits: Tensor, x: Tensor, grad_out: Tensor, compute_grad_x: bool
) -> Tuple[Tensor, Tensor]:
    """(grad_logits (B, C, D), grad_x (B, D), or an empty tensor when compute_grad_x is False)."""
    ext = _ext.require_ext()
    logits, x, grad_out = logits.contiguous(), x.contiguous(), grad_out.contiguous()
    B, C, D = _sizes(logits)
    grad_logits = torch.empty_like(logits)
    grad_x = torch.empty_like(x) if compute_grad_x else x.new_empty(0)
    ext.bernoulli_loglik_backward(
        logits.data_ptr(),
        x.data_ptr(),
        grad_out.data_ptr(),
        grad_logits.data_ptr(),
        grad_x.data_ptr() if compute_grad_x else 0,
        B,
        C,
        D,
        _DTYPE_NAMES[logits.dtype],
    )
    return grad_logits, grad_x


@_bernoulli_loglik_cpu_backward_op.register_fake
def _(logits: Tensor, x: Tensor, grad_out: Tensor, compute_grad_x: bool) -> Tuple[Tensor, Tensor]:
    return torch.empty_like(logits), (torch.empty_like(x) if compute_grad_x else x.new_empty(0))


# ---- CUDA ------------------------------------------------------------------------------------------
def _cuda_stream(t: Tensor) -> int:
    return torch.cuda.current_stream(t.device).cuda_stream


@torch.library.custom_op("ssvae_fast::bernoulli_loglik_cuda", mutates_args=(), device_types="cuda")
def _bernoulli_loglik_cuda_op(logits: Tensor, x: Tensor) -> Tensor:
    ext = _ext.require_cuda_ext()
    logits, x = logits.contiguous(), x.contiguous()
    B, C, D = _sizes(logits)
    out = logits.new_empty((B, C))
    with torch.cuda.device(logits.device):
        ext.bernoulli_loglik_forward(
            logits.data_ptr(), x.data_ptr(), out.data_ptr(), B, C, D, _DTYPE_NAMES[logits.dtype],
            _cuda_stream(logits),
        )
    return out


@_bernoulli_loglik_cuda_op.register_fake
def _(logits: Tensor, x: Tensor) -> Tensor:
    return logits.new_empty(logits.shape[:2])


@torch.library.custom_op("ssvae_fast::bernoulli_loglik_cuda_backward", mutates_args=(), device_types="cuda")
def _bernoulli_loglik_cuda_backward_op(
    logits: Tensor, x: Tensor, grad_out: Tensor, compute_grad_x: bool
) -> Tuple[Tensor, Tensor]:
    """(grad_logits (B, C, D), grad_x (B, D), or an empty tensor when compute_grad_x is False)."""
    ext = _ext.require_cuda_ext()
    logits, x, grad_out = logits.contiguous(), x.contiguous(), grad_out.contiguous()
    B, C, D = _sizes(logits)
    grad_logits = torch.empty_like(logits)
    grad_x = torch.empty_like(x) if compute_grad_x else x.new_empty(0)
    with torch.cuda.device(logits.device):
        ext.bernoulli_loglik_backward(
            logits.data_ptr(),
            x.data_ptr(),
            grad_out.data_ptr(),
            grad_logits.data_ptr(),
            grad_x.data_ptr() if compute_grad_x else 0,
            B,
            C,
            D,
            _DTYPE_NAMES[logits.dtype],
            _cuda_stream(logits),
        )
    return grad_logits, grad_x


@_bernoulli_loglik_cuda_backward_op.register_fake
def _(logits: Tensor, x: Tensor, grad_out: Tensor, compute_grad_x: bool) -> Tuple[Tensor, Tensor]:
    return torch.empty_like(logits), (torch.empty_like(x) if compute_grad_x else x.new_empty(0))


# ---- autograd (shared by both devices) ---------------------------------------------------------------
def _setup_context(ctx, inputs, output) -> None:
    logits, x = inputs
    ctx.save_for_backward(logits, x)


def _make_backward(backward_op):
    def backward(ctx, grad_out: Tensor):
        logits, x = ctx.saved_tensors
        compute_grad_x = bool(ctx.needs_input_grad[1])
        grad_logits, grad_x = backward_op(logits, x, grad_out, compute_grad_x)
        return grad_logits, (grad_x if compute_grad_x else None)

    return backward


_bernoulli_loglik_cpu_op.register_autograd(
    _make_backward(_bernoulli_loglik_cpu_backward_op), setup_context=_setup_context
)
_bernoulli_loglik_cuda_op.register_autograd(
    _make_backward(_bernoulli_loglik_cuda_backward_op), setup_context=_setup_context
)


# ------------------------------------------------------------------------------------------------------
# Public entry points.
# ------------------------------------------------------------------------------------------------------
def bernoulli_loglik_cpu(logits: Tensor, x: Tensor) -> Tensor:
    """ll = sum_d x_d * l_d - softplus(l_d) by the C++/OpenMP kernel (ssvae_fast._C).

    logits: (B, C, D) or (B, D), CPU, float32 or float64; x: (B, D), same device and dtype, in [0, 1]
    (any real values work). Returns (B, C), or (B,) for (B, D) logits. Accumulates in double; exact
    softplus; deterministic. Differentiable in logits and x. Non-contiguous inputs are copied.

    Raises ValueError on bad shapes, dtypes or devices, RuntimeError when the extension is not built.
    """
    _check_inputs("bernoulli_loglik_cpu", logits, x, "cpu")
    _ext.require_ext()
    if logits.dim() == 2:
        return _bernoulli_loglik_cpu_op(logits.unsqueeze(1), x).squeeze(1)
    return _bernoulli_loglik_cpu_op(logits, x)


def bernoulli_loglik_cuda(logits: Tensor, x: Tensor) -> Tensor:
    """ll = sum_d x_d * l_d - softplus(l_d) by the CUDA kernel (ssvae_fast._C_cuda), on the current stream.

    logits: (B, C, D) or (B, D), CUDA, float32 or float64; x: (B, D), same device and dtype. Returns (B, C),
    or (B,) for (B, D) logits. One block per (b, c) row; accumulates in double; exact softplus;
    deterministic. Differentiable in logits and x.

    Raises ValueError on bad shapes, dtypes or devices, RuntimeError when the CUDA extension or a GPU is
    missing.
    """
    _ext.require_cuda_ext()
    _check_inputs("bernoulli_loglik_cuda", logits, x, "cuda")
    if logits.dim() == 2:
        return _bernoulli_loglik_cuda_op(logits.unsqueeze(1), x).squeeze(1)
    return _bernoulli_loglik_cuda_op(logits, x)
