"""What every fused op shares: the custom-op pair with its autograd formula (`FusedOp`), the table of
implementations by backend (`Implementations`), each backend's input rules (`check_tensors`), the
autocast casting rule (`cast_for_backend`) and the dtype of the ops' reductions (`reduction_dtype`,
`reduction_result`).

A fused op is two `torch.library.custom_op`s, `ssvae_fast::<op>_<backend>` (forward) and
`ssvae_fast::<op>_<backend>_backward`, each with a fake (meta) implementation, and an autograd formula for
the forward op that calls the backward op. `torch.compile`, `torch.export`, fake tensors and every other
tracer see exactly those ops (no graph breaks; CUDA graphs capture them).

Eager calls take a shorter road to the same two implementations: a `torch.autograd.Function` whose
forward runs the forward implementation and whose backward runs the same formula with the backward
implementation, both called as plain Python functions. The results are the same tensors bit for bit
(tests/test_glue.py); what is skipped is the dispatcher's round trip (schema parsing, default filling,
redispatch, the tracing guards), 20 to 30 us per call on a warm CPU and 100 to 150 us right after a
large GEMM has flushed the caches (2-core Xeon, torch 2.13; M2's training step calls 18 such ops).

The formula is the op's, one for every backend: `setup_context(ctx, inputs, output)` and
`vjp(ctx, backward, *grads)`, which receives the saved context, the backward implementation to call (the
custom op, or in eager mode the plain function) and the output gradients, and returns one gradient (or
None) per forward input, as `register_autograd` expects. In eager mode the plain backward carries the
attribute `in_place`: the backend's variant that may overwrite saved tensors it is the last user of, or
None.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from functools import partial
from typing import Callable, Optional, Sequence, Union

import torch
from torch import Tensor

from .. import validation
from .._launch import compute_dtype
from ..functional import ACTIVATIONS


def tracing() -> bool:
    """True under torch.compile / torch.export or any torch_dispatch mode (fake tensors, make_fx proxies,
    FLOP counters): then the ops must be the registered custom ops, not plain Python."""
    return torch.compiler.is_compiling() or torch._C._len_torch_dispatch_stack() > 0


class FusedOp:
    """A forward/backward pair of custom ops with their autograd formula; call it like the forward op."""

    def __init__(
        self,
        name: str,
        forward: Callable,
        forward_fake: Callable,
        backward: Callable,
        backward_fake: Callable,
        setup_context: Callable,
        vjp: Callable,
        device_types: Optional[Union[str, Sequence[str]]] = None,
        backward_in_place: Optional[Callable] = None,
    ):
        self.name = name
        self.forward_impl, self.backward_impl = forward, backward
        self.op = torch.library.custom_op(f"ssvae_fast::{name}", forward, mutates_args=(), device_types=device_types)
        self.op.register_fake(forward_fake)
        self.backward_op = torch.library.custom_op(
            f"ssvae_fast::{name}_backward", backward, mutates_args=(), device_types=device_types
        )
        self.backward_op.register_fake(backward_fake)
        backward_op = self.backward_op
        self.op.register_autograd(lambda ctx, *grads: vjp(ctx, backward_op, *grads), setup_context=setup_context)

        def eager_backward_impl(*args):
            return backward(*args)

        eager_backward_impl.in_place = backward_in_place

        def eager_forward(ctx, *args):
            output = forward(*args)
            setup_context(ctx, args, output)
            return output

        def eager_backward(ctx, *grads):
            return vjp(ctx, eager_backward_impl, *grads)

        self._eager = type(
            f"{name}_eager",
            (torch.autograd.Function,),
            {"forward": staticmethod(eager_forward), "backward": staticmethod(eager_backward)},
        )

    def __call__(self, *args):
        if tracing():
            return self.op(*args)
        if torch.is_grad_enabled() and any(isinstance(a, Tensor) and a.requires_grad for a in args):
            return self._eager.apply(*args)
        return self.forward_impl(*args)

    def __repr__(self) -> str:
        return f"FusedOp(ssvae_fast::{self.name})"


class Implementations:
    """An op's table of implementations by backend, registered as `FusedOp`s on first use.

    Backend `b`'s kernels for op `op` are the module `ssvae_fast.<b>.<op>`; it defines `forward` and
    `backward` with the op's custom-op signatures, and may define `backward_in_place` (see the module
    docstring). The formula's `setup_context(ctx, inputs, output, kernels)` and the forward fake
    `forward_fake(*inputs, kernels=kernels)` receive that module, for the choices a backend declares there
    (what to save for its backward, the dtype of its reductions: `reduction_dtype`). The module is imported
    only when the backend is first asked for (Triton's imports triton).
    """

    def __init__(self, op: str, backends: Sequence[str], forward_fake, backward_fake, setup_context, vjp):
        self.op = op
        self.backends = tuple(backends)
        self._formula = (forward_fake, backward_fake, setup_context, vjp)
        self._modules: dict = {}
        self._registered: dict[str, FusedOp] = {}

    def module(self, backend: str):
        """The module of `backend`'s kernels for this op (imported on first use)."""
        module = self._modules.get(backend)
        if module is None:
            if backend not in self.backends:
                raise ValueError(f"{self.op} has no {backend!r} implementation; it has {self.backends}")
            module = self._modules[backend] = importlib.import_module(f"ssvae_fast.{backend}.{self.op}")
        return module

    def __getitem__(self, backend: str) -> FusedOp:
        fused = self._registered.get(backend)
        if fused is None:
            module = self.module(backend)
            forward_fake, backward_fake, setup_context, vjp = self._formula
            fused = self._registered[backend] = FusedOp(
                f"{self.op}_{backend}", module.forward, partial(forward_fake, kernels=module), module.backward,
                backward_fake,
                partial(setup_context, kernels=module), vjp, device_types=_DEVICE_TYPES[backend],
                backward_in_place=getattr(module, "backward_in_place", None),
            )
        return fused


# ------------------------------------------------------------------------------------------------------
# What each backend accepts, checked at every public op's boundary.
# ------------------------------------------------------------------------------------------------------
_DEVICE_TYPES = {"cpu": "cpu", "cuda": None, "triton": None}
_FLOATS_CPU = (torch.bfloat16, torch.float32, torch.float64)
_FLOATS_GPU = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


@dataclass(frozen=True)
class _Rule:
    devices: Callable[[], Optional[tuple]]  # device types; None: any
    dtypes: tuple
    where: str  # what the backend runs on, for messages
    advice: tuple = ()  # (dtype, what to do instead) for dtypes the backend does not take, for messages


_RULES = {
    "torch": _Rule(lambda: None, _FLOATS_GPU, "any device"),
    "cpu": _Rule(
        lambda: ("cpu",), _FLOATS_CPU, "CPU tensors (use backend 'cuda' or 'triton' for CUDA tensors)",
        ((torch.float16, "the cpu backend has no float16 kernels: use bfloat16 (e.g. torch.autocast('cpu', "
                         "dtype=torch.bfloat16)) or float32, or backend 'torch'"),),
    ),
    "cuda": _Rule(lambda: ("cuda",), _FLOATS_GPU, "CUDA tensors (use backend 'torch' or 'cpu' on the CPU)"),
    "triton": _Rule(
        lambda: ("cuda", "cpu") if _interpreting() else ("cuda",), _FLOATS_GPU,
        "CUDA tensors (CPU tensors only under TRITON_INTERPRET=1)",
    ),
}


def check_types(op: str, floats: dict, ints: Optional[dict] = None) -> None:
    """Every non-None entry of `floats` and `ints` is a tensor: TypeError naming the first that is not
    (checked before the shapes, which need tensors)."""
    for name, t in {**floats, **(ints or {})}.items():
        if t is not None and not isinstance(t, Tensor):
            validation.fail(op, name, "a torch.Tensor", validation.describe(t), TypeError)


def check_tensors(op: str, backend: str, floats: dict, ints: Optional[dict] = None) -> None:
    """Tensors on one device of a type `backend` runs on; one float dtype it supports for `floats` (for
    `torch`, any float dtypes while torch.autocast is on, as torch's own ops take them), int64 for `ints`
    (None entries skipped). TypeError (not a tensor, dtypes) or ValueError (devices) naming the offending
    arguments otherwise; `op` names the op in the message."""
    rule = _RULES[backend]
    floats = {k: v for k, v in floats.items() if v is not None}
    ints = {k: v for k, v in (ints or {}).items() if v is not None}
    everything = {**floats, **ints}
    check_types(op, everything)
    devices = {t.device for t in everything.values()}
    if len(devices) > 1:
        listed = ", ".join(f"{k} on {t.device}" for k, t in everything.items())
        raise ValueError(f"{op}: all tensors must be on one device, got {listed}")
    for name, t in everything.items():
        allowed = rule.devices()
        if allowed is not None and t.device.type not in allowed:
            raise ValueError(f"{op}: the {backend} backend runs on {rule.where}, got {name} on {t.device}")
    dtypes = {t.dtype for t in floats.values()}
    mixed_ok = backend == "torch" and validation.autocasting(next(iter(devices)))
    if not dtypes <= set(rule.dtypes) or (len(dtypes) > 1 and not mixed_ok):
        listed = ", ".join(f"{k} {t.dtype}" for k, t in floats.items())
        advice = "".join(f"; {text}" for dtype, text in rule.advice if dtype in dtypes)
        raise TypeError(f"{op}: float inputs must share one dtype among {rule.dtypes}, got {listed}{advice}")
    for name, t in ints.items():
        if t.dtype != torch.int64:
            raise TypeError(f"{op}: {name} must be int64 class indices, got {t.dtype}")


def bind_backend(op: Callable, backend: str) -> Callable:
    """`op(..., backend=backend)` as a function named `<op>_<backend>` (the per-backend names of the ops)."""

    def face(*args, **kwargs):
        return op(*args, backend=backend, **kwargs)

    face.__name__ = face.__qualname__ = f"{op.__name__}_{backend}"
    face.__doc__ = op.__doc__
    return face


def check_activation(op: str, activation: str) -> None:
    if activation not in ACTIVATIONS:
        raise ValueError(f"{op}: unknown activation {activation!r}; choose one of {ACTIVATIONS}")


# ------------------------------------------------------------------------------------------------------
# Autocast: the one casting rule of the fused ops.
# ------------------------------------------------------------------------------------------------------
def autocast_inputs(tensors: tuple, matmul: bool, device_type: str = "cuda") -> tuple:
    """`tensors` as an op takes them under `torch.autocast(device_type)`; unchanged outside autocast.
    matmul: cast every float32/16-bit tensor to the autocast dtype (float64 is never autocast), as for a
    linear layer; otherwise promote mixed float dtypes to the widest (a bf16 activation meeting a float32
    weight column runs in float32). Non-float entries and None pass through; the casts are differentiable."""
    floats = [t for t in tensors if isinstance(t, Tensor) and t.is_floating_point()]
    if not floats or not torch.is_autocast_enabled(device_type):
        return tensors
    if matmul:
        target = torch.get_autocast_dtype(device_type)
        eligible = lambda t: t.dtype != torch.float64  # noqa: E731
    else:
        target = floats[0].dtype
        for t in floats[1:]:
            target = torch.promote_types(target, t.dtype)
        eligible = lambda t: True  # noqa: E731
    return tuple(
        t.to(target) if isinstance(t, Tensor) and t.is_floating_point() and eligible(t) else t for t in tensors
    )


# The backends whose public ops cast under autocast, as torch's own ops would: every compiled backend, on
# its device (torch.autocast("cpu") for the cpu backend). The `torch` faces are torch ops: autocast acts on
# them directly.
_AUTOCAST_BACKENDS = ("cpu", "cuda", "triton")


def cast_for_backend(backend: str, tensors: tuple, matmul: bool) -> tuple:
    """`autocast_inputs` for the device of the first tensor, on the backends that follow autocast."""
    if backend not in _AUTOCAST_BACKENDS:
        return tensors
    device_type = next(t.device.type for t in tensors if isinstance(t, Tensor))
    return autocast_inputs(tensors, matmul, device_type)


# ------------------------------------------------------------------------------------------------------
# The dtype of the ops' reductions: the per-row log-likelihoods, KLs and losses.
# ------------------------------------------------------------------------------------------------------
def reduction_dtype(kernels, dtype: torch.dtype) -> torch.dtype:
    """The dtype in which a backend's kernel module `kernels` returns an op's reductions for float inputs of
    `dtype` (what the forward fakes declare): the compute dtype (float32 for 16-bit inputs) where the module
    sets REDUCTIONS_IN_COMPUTE_DTYPE (the cpu kernels: a reduction that feeds no GEMM is never rounded to 16
    bits), else `dtype`."""
    return compute_dtype(dtype) if getattr(kernels, "REDUCTIONS_IN_COMPUTE_DTYPE", False) else dtype


def reduction_result(t: Tensor, dtype: torch.dtype) -> Tensor:
    """A reduction `t` of inputs of `dtype` as the public op returns it: as is under torch.autocast on t's
    device (a float32 reduction of 16-bit inputs stays float32, as torch's own reductions and the `torch`
    faces' do there), else in `dtype`."""
    return t if t.dtype == dtype or validation.autocasting(t.device) else t.to(dtype)
