"""Loads the compiled extension modules; never raises at import.

    HAS_EXT            ssvae_fast._C (C++/OpenMP CPU kernels) imported
    HAS_CUDA_EXT       ssvae_fast._C_cuda (CUDA kernels) imported AND torch sees a CUDA GPU
    _C, _C_cuda        the modules, or None when missing
    EXT_IMPORT_ERROR   why _C failed to import (str), or None
    CUDA_EXT_IMPORT_ERROR  why _C_cuda is unusable (str), or None
    require_ext(), require_cuda_ext()  return the module or raise RuntimeError saying how to get it

Both modules are built by `pip install -e .` (setup.py + CMakeLists.txt): _C needs a C++17 compiler and
CMake, _C_cuda also nvcc. They take raw data pointers and sizes, so they do not depend on the torch
build: the one installed is used as is.
"""

import importlib
from types import ModuleType
from typing import Optional

import torch

_BUILD_HINT = (
    "build it with a C++17 compiler and CMake >= 3.18 from the source tree: `pip install -e .` "
    "(setup.py's docstring lists the switches)"
)
_CUDA_BUILD_HINT = (
    "build it where nvcc (the CUDA toolkit) is on PATH or CUDA_HOME is set: "
    "`SSVAE_FAST_CUDA=1 pip install -e .` (SSVAE_FAST_CUDA=1 makes a missing nvcc an error instead of "
    "silently skipping the CUDA module; SSVAE_FAST_CUDA_ARCH picks the GPU architectures, default 90)"
)


def _import(name: str):
    """(module, None) or (None, "ExceptionType: message"); any failure (missing .so, bad ABI, missing
    shared library) is caught so that `import ssvae_fast` works everywhere."""
    try:
        return importlib.import_module(name), None
    except Exception as exc:  # noqa: BLE001 - ImportError, OSError (missing libgomp), ...
        return None, f"{type(exc).__name__}: {exc}"


_C: Optional[ModuleType]
_C_cuda: Optional[ModuleType]
_C, EXT_IMPORT_ERROR = _import("ssvae_fast._C")
_C_cuda, CUDA_EXT_IMPORT_ERROR = _import("ssvae_fast._C_cuda")

HAS_EXT: bool = _C is not None
if _C_cuda is not None and not torch.cuda.is_available():
    CUDA_EXT_IMPORT_ERROR = "ssvae_fast._C_cuda is built, but torch sees no CUDA GPU (torch.cuda.is_available() is False)"
HAS_CUDA_EXT: bool = _C_cuda is not None and torch.cuda.is_available()


def require_ext() -> ModuleType:
    """The CPU extension module ssvae_fast._C; RuntimeError saying how to build it when missing."""
    if _C is None:
        raise RuntimeError(
            f"the compiled CPU extension ssvae_fast._C is not available ({EXT_IMPORT_ERROR}); {_BUILD_HINT}. "
            "The `reference` and `torch` backends work without it."
        )
    return _C


def require_cuda_ext() -> ModuleType:
    """The CUDA extension module ssvae_fast._C_cuda, usable on this machine; RuntimeError otherwise."""
    if _C_cuda is None:
        raise RuntimeError(
            f"the compiled CUDA extension ssvae_fast._C_cuda is not available ({CUDA_EXT_IMPORT_ERROR}); "
            f"{_CUDA_BUILD_HINT}."
        )
    if not torch.cuda.is_available():
        raise RuntimeError(
            "the CUDA extension ssvae_fast._C_cuda is built, but torch sees no CUDA GPU "
            "(torch.cuda.is_available() is False: a CPU-only torch build, or no GPU/driver on this machine)"
        )
    return _C_cuda


__all__ = [
    "HAS_EXT",
    "HAS_CUDA_EXT",
    "EXT_IMPORT_ERROR",
    "CUDA_EXT_IMPORT_ERROR",
    "require_ext",
    "require_cuda_ext",
]
