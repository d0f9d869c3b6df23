"""Argument checks at the public boundary (`M2` and every public op), in one place.

Two kinds of check:

- structural: types, shapes, dtypes, devices, Python values (alpha, sizes, option strings). They read
  metadata only and are always on;
- value checks: labels in [0, C), pixels of the Bernoulli likelihood finite and in [0, 1], class
  vectors and latents finite. They read the data, which on a GPU means one device synchronization
  per call. They are on by default and can be switched off globally:

      ssvae_fast.set_validation(False)            # for good (ignore the returned handle)
      with ssvae_fast.set_validation(False): ...  # for a block
      SSVAE_FAST_VALIDATION=0                     # the default of a new process

  Value checks never run while torch.compile traces, under a torch_dispatch mode (fake tensors) or
  during CUDA graph capture, where data-dependent checks are impossible; the ops called by `M2.loss`
  skip them too (`suspended()`), since the model has already checked what it passes them.

A failed check raises TypeError (wrong type or dtype) or ValueError (wrong shape, device or value) with the
message "<where>: <argument> must be <what was expected>, got <what was given>".
"""

from __future__ import annotations

import contextlib
import math
import numbers
import os
import threading
import warnings
from typing import Optional, Sequence

import torch
from torch import Tensor

from ._launch import Settings

ENV = "SSVAE_FAST_VALIDATION"
_OFF, _ON = ("0", "false", "no", "off"), ("1", "true", "yes", "on", "")


def _initial() -> bool:
    value = os.environ.get(ENV, "1").strip().lower()
    if value in _OFF:
        return False
    if value not in _ON:
        warnings.warn(f"{ENV}={value!r} is not one of 0/1/true/false/on/off; value checks stay on", stacklevel=2)
    return True


def _check_flag(value) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"set_validation: enabled must be True or False, got {value!r}")
    return value


_settings = Settings({"enabled": _initial()}, {"enabled": _check_flag})
_local = threading.local()


def set_validation(enabled: bool):
    """Switch the value checks (labels, pixel ranges, finiteness: the ones that read tensor data and
    synchronize a GPU) on or off for every model and op. Returns a handle: ignoring it keeps the setting;
    `with set_validation(False): ...` restores the previous one at the end of the block. Structural checks
    (types, shapes, dtypes, devices) are always on. The default comes from SSVAE_FAST_VALIDATION (0: off)."""
    return _settings.set("enabled", enabled)


def validation_enabled() -> bool:
    """The global switch of `set_validation` (True by default)."""
    return _settings.get("enabled")


def tracing() -> bool:
    """True where data-dependent checks cannot run: torch.compile / torch.export tracing, a
    torch_dispatch mode (fake tensors, make_fx proxies), or CUDA graph capture."""
    if torch.compiler.is_compiling() or torch._C._len_torch_dispatch_stack() > 0:
        return True
    return torch.cuda.is_available() and torch.cuda.is_current_stream_capturing()


def checking() -> bool:
    """Whether value checks run here and now: switched on, not suspended, not tracing."""
    return _settings.get("enabled") and not getattr(_local, "suspended", 0) and not tracing()


@contextlib.contextmanager
def suspended():
    """Value checks off within the block on this thread (the caller has checked the values already)."""
    _local.suspended = getattr(_local, "suspended", 0) + 1
    try:
        yield
    finally:
        _local.suspended -= 1


# ------------------------------------------------------------------------------------------------------
# Messages.
# ------------------------------------------------------------------------------------------------------
def fail(where: Optional[str], name: str, expected: str, got: str, error=ValueError):
    """Raise `error` with "<where>: <name> must be <expected>, got <got>"."""
    prefix = f"{where}: " if where else ""
    raise error(f"{prefix}{name} must be {expected}, got {got}")


def describe(value) -> str:
    """A short description of what was given: a tensor's shape, dtype and device, else the type and value."""
    if isinstance(value, Tensor):
        return f"a {tuple(value.shape)} {str(value.dtype).replace('torch.', '')} tensor on {value.device}"
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 40 else text[:37] + '...'}"


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


# ------------------------------------------------------------------------------------------------------
# Structural checks (always on).
# ------------------------------------------------------------------------------------------------------
def tensor(where, name: str, value) -> Tensor:
    """`value` must be a torch.Tensor (TypeError)."""
    if not isinstance(value, Tensor):
        fail(where, name, "a torch.Tensor", describe(value), TypeError)
    return value


def positive_int(where, name: str, value, minimum: int = 1) -> int:
    """An int (not a bool) >= minimum: TypeError for other types, ValueError below the minimum."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        fail(where, name, f"an int >= {minimum}", describe(value), TypeError)
    if value < minimum:
        fail(where, name, f"an int >= {minimum}", repr(int(value)))
    return int(value)


def sizes(where, name: str, value, allow_empty: bool, what: str = "") -> tuple:
    """A sequence of positive ints (hidden layer sizes); non-empty unless allow_empty."""
    expected = "a sequence of positive ints" + ("" if allow_empty else f" with at least one entry{what}")
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        fail(where, name, expected, describe(value), TypeError)
    if any(isinstance(v, bool) or not isinstance(v, numbers.Integral) for v in value):
        fail(where, name, expected, repr(tuple(value)), TypeError)
    if any(v < 1 for v in value) or (not allow_empty and len(value) == 0):
        fail(where, name, expected, repr(tuple(value)))
    return tuple(int(v) for v in value)


def choice(where, name: str, value, choices: tuple) -> str:
    """A string among `choices` (TypeError for a non-string)."""
    if not isinstance(value, str):
        fail(where, name, f"one of {choices}", describe(value), TypeError)
    if value not in choices:
        fail(where, name, f"one of {choices}", repr(value))
    return value


def model_inputs(where, x, x_dim: int, weight: Tensor, values) -> Tensor:
    """x checked as a model's (B, x_dim) inputs: a floating tensor on `weight`'s device in its dtype, and
    (when value checks are on) passing `values` (e.g. `unit_interval`)."""
    tensor(where, "x", x)
    if x.dim() != 2 or x.shape[1] != x_dim:
        fail(where, "x", f"a (B, {x_dim}) tensor (D = x_dim = {x_dim})", describe(x))
    floating(where, "x", x)
    on_device(where, "x", x, weight.device)
    same_dtype(where, "x", x, weight.dtype, "the model's parameters")
    check_values(where, (values, "x", x))
    return x


def alpha(where, value, name: str = "alpha") -> float:
    """A loss weight (alpha, the classification weight, by default): a real number (or a one-element tensor),
    finite and >= 0. Needs no device synchronization for a Python number, so it is always checked."""
    if isinstance(value, Tensor):
        if value.numel() != 1 or value.dtype == torch.bool or value.is_complex():
            fail(where, name, "a finite number >= 0", describe(value), TypeError)
        value = float(value)
    elif isinstance(value, bool) or not isinstance(value, numbers.Real):
        fail(where, name, "a finite number >= 0", describe(value), TypeError)
    value = float(value)
    if not math.isfinite(value) or value < 0:
        fail(where, name, "a finite number >= 0", repr(value))
    return value


def floating(where, name: str, t: Tensor) -> Tensor:
    if not t.is_floating_point():
        fail(where, name, "a floating-point tensor", describe(t), TypeError)
    return t


def labels_dtype(where, name: str, t: Tensor) -> Tensor:
    if t.dtype != torch.int64:
        fail(where, name, "an int64 tensor of class indices", describe(t), TypeError)
    return t


def on_device(where, name: str, t: Tensor, device: torch.device, owner: str = "the model") -> Tensor:
    if t.device != device:
        fail(where, name, f"on {device} (where {owner} is)", f"a tensor on {t.device}")
    return t


def autocasting(device: torch.device) -> bool:
    """Whether torch.autocast is on for `device`'s type (then mixed float dtypes are expected)."""
    return torch.is_autocast_enabled(device.type) if device.type in ("cpu", "cuda") else False


def same_dtype(where, name: str, t: Tensor, dtype: torch.dtype, owner: str) -> Tensor:
    """t's dtype must be `dtype` (that of `owner`) unless torch.autocast is on for t's device."""
    if t.dtype != dtype and not autocasting(t.device):
        fail(where, name, f"a {dtype_name(dtype)} tensor (the dtype of {owner})", describe(t), TypeError)
    return t


# ------------------------------------------------------------------------------------------------------
# Value checks (behind the switch): each is a (test, explain) pair; `run_value_checks` evaluates every
# test on the device, reads the results with one synchronization, and explains the first failure.
# ------------------------------------------------------------------------------------------------------
def _range_of(t: Tensor) -> tuple:
    lo, hi = torch.aminmax(t.detach())
    return lo, hi


def unit_interval(name: str, x: Tensor):
    """x (float) finite and in [0, 1], as the Bernoulli likelihood needs."""

    def test():
        lo, hi = _range_of(x)
        return (lo >= 0) & (hi <= 1)  # NaN propagates through aminmax and fails both

    def explain(where):
        fail(where, name, "finite and in [0, 1] (the Bernoulli likelihood's pixel values)", _summary(x))

    return test, explain


def finite(name: str, t: Tensor, what: str = "finite"):
    def test():
        lo, hi = _range_of(t)
        return torch.isfinite(lo) & torch.isfinite(hi)

    def explain(where):
        fail(where, name, what, _summary(t))

    return test, explain


def class_indices(name: str, y: Tensor, n_classes: int):
    """int64 y in [0, n_classes)."""

    def test():
        lo, hi = _range_of(y)
        return (lo >= 0) & (hi < n_classes)

    def explain(where):
        lo, hi = _range_of(y)
        fail(where, name, f"class indices in [0, {n_classes})", f"values from {int(lo)} to {int(hi)}")

    return test, explain


def _summary(t: Tensor) -> str:
    """What is wrong with a float tensor's values, for messages: NaN and inf counts, else the range."""
    t = t.detach()
    nan, inf = int(torch.isnan(t).sum()), int(torch.isinf(t).sum())
    parts = []
    if nan:
        parts.append(f"{nan} NaN value{'s' if nan > 1 else ''}")
    if inf:
        parts.append(f"{inf} infinite value{'s' if inf > 1 else ''}")
    good = t[torch.isfinite(t)]
    if good.numel():
        lo, hi = torch.aminmax(good)
        parts.append(f"finite values from {float(lo):.6g} to {float(hi):.6g}")
    return ", ".join(parts)


def run_value_checks(where: Optional[str], checks: Sequence[tuple]) -> None:
    """Evaluate the value checks (pairs from `unit_interval`, `finite`, `class_indices`; tensors with no
    elements are skipped) with one device synchronization; raise the first failure's ValueError."""
    active = [(test, explain) for (test, explain), t in checks if t.numel()]
    if not active:
        return
    results = torch.stack([test() for test, _ in active]).tolist()
    for ok, (_, explain) in zip(results, active):
        if not ok:
            explain(where)


def value_checks(checks: Sequence[tuple]) -> list:
    """(check, tensor) pairs for `run_value_checks` from (check factory, name, tensor, *extra) rows with the
    tensor None-skipped."""
    out = []
    for make, name, t, *extra in checks:
        if t is not None:
            out.append((make(name, t, *extra), t))
    return out


def check_values(where: Optional[str], *rows) -> None:
    """`run_value_checks` on rows (factory, name, tensor, *extra) when value checks are on here."""
    if checking():
        run_value_checks(where, value_checks(rows))


# ------------------------------------------------------------------------------------------------------
# Memory.
# ------------------------------------------------------------------------------------------------------
def is_out_of_memory(exc: BaseException) -> bool:
    """torch.OutOfMemoryError (a device allocation), MemoryError, or the CPU allocator's RuntimeError."""
    if isinstance(exc, (MemoryError, torch.OutOfMemoryError)):
        return True
    return isinstance(exc, RuntimeError) and "can't allocate memory" in str(exc)


def out_of_memory(exc: BaseException, message: str) -> BaseException:
    """An exception of the out-of-memory kind of `exc` (MemoryError or torch.OutOfMemoryError) saying
    `message` and what the allocator said."""
    detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    kind = MemoryError if isinstance(exc, MemoryError) else torch.OutOfMemoryError
    return kind(f"{message} (the allocator said: {detail})")


__all__ = ["set_validation", "validation_enabled", "checking", "suspended", "tracing"]

