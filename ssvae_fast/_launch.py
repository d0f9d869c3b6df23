"""What every kernel launcher needs, written once: data pointers, dtype names, streams, ceil division,
the compute dtype, and module settings that can be set for good or for a `with` block.

The compiled kernels (csrc/) take raw pointers, sizes, strides and a stream from Python; Triton kernels
take tensors. Nothing here imports a kernel module.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import torch
from torch import Tensor

# Names the compiled kernels take for their `dtype` argument.
DTYPE_NAMES = {
    torch.float32: "float32",
    torch.float64: "float64",
    torch.bfloat16: "bfloat16",
    torch.float16: "float16",
}


def dtype_name(t: Tensor) -> str:
    """t's dtype as the compiled kernels name it ("float32", "float64", "bfloat16", "float16")."""
    return DTYPE_NAMES[t.dtype]


def ptr(t: Optional[Tensor]) -> int:
    """Data pointer for the compiled kernels; 0 for None or an empty tensor (the kernels then skip it)."""
    return 0 if t is None or t.numel() == 0 else t.data_ptr()


def stream(t: Tensor) -> int:
    """torch's current CUDA stream on t's device, as the integer the CUDA extension takes."""
    return torch.cuda.current_stream(t.device).cuda_stream


def cdiv(a: int, b: int) -> int:
    """ceil(a / b) for non-negative ints."""
    return -(-a // b)


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype kernels accumulate in: float64 for float64 inputs, float32 for every other float."""
    return torch.float64 if dtype == torch.float64 else torch.float32


class Settings:
    """Named module settings read at every launch (so they also apply inside torch.compile'd graphs).

    `set(key, value)` returns a handle: ignoring it keeps the new value; `with` restores the previous one.
    `check` (optional, per key) validates a value and returns it normalized, or raises ValueError.
    """

    def __init__(self, values: dict, checks: Optional[dict[str, Callable[[Any], Any]]] = None):
        self._values = dict(values)
        self._checks = dict(checks or {})

    def get(self, key: str):
        return self._values[key]

    def set(self, key: str, value) -> "_Restore":
        check = self._checks.get(key)
        if check is not None:
            value = check(value)
        previous = self._values[key]
        self._values[key] = value
        return _Restore(self._values, key, previous)


class _Restore:
    """Returned by `Settings.set`: ignoring it keeps the new value; `with` restores the previous one."""

    def __init__(self, values: dict, key: str, previous):
        self._values, self._key, self._previous = values, key, previous

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._values[self._key] = self._previous


def one_of(name: str, choices: tuple) -> Callable[[Any], Any]:
    """A `Settings` check: the value must be one of `choices` (ValueError naming `name` otherwise)."""

    def check(value):
        if value not in choices:
            raise ValueError(f"{name} must be one of {choices}, got {value!r}")
        return value

    return check
