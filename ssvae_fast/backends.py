"""Backend registry: which implementations of M2's fused ops exist, and which this machine can run.

| name        | device | ops                                                     |
| ----------- | ------ | ------------------------------------------------------- |
| `reference` | any    | the naive objective (`ssvae_fast.reference`), the oracle |
| `torch`     | any    | docs/design.md section 2's rewrites in plain torch ops        |
| `triton`    | CUDA   | Triton kernels (CPU only under TRITON_INTERPRET=1)       |
| `cuda`      | CUDA   | C++/CUDA kernels of the compiled extension               |
| `cpu`       | CPU    | C++/OpenMP kernels of the compiled extension             |
| `auto`      |        | the fastest measured backend for the tensors' device     |
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from typing import Callable, Optional

import torch

BACKENDS = ("reference", "torch", "triton", "cuda", "cpu")


class BackendUnavailableError(RuntimeError):
    """The requested backend cannot run on this machine (the message says how to get it)."""


@dataclass(frozen=True)
class BackendOps:
    """The ops `ssvae_fast.objective.per_example_losses` is assembled from (ssvae_fast/ops/<op>.py): one
    log-likelihood op per likelihood."""

    name: str
    class_conditional_activation: Callable
    gaussian_reparam_kl: Callable
    bernoulli_loglik_linear: Callable
    gaussian_loglik_linear: Callable
    elbo_reduction: Callable


def _make_ops(name: str) -> BackendOps:
    """Backend `name`'s ops: each op module's entry point with the backend bound."""
    from .ops import (bernoulli_loglik_linear, class_conditional_activation, elbo_reduction, gaussian_loglik_linear,
                      gaussian_reparam_kl)

    modules = (class_conditional_activation, gaussian_reparam_kl, bernoulli_loglik_linear, gaussian_loglik_linear,
               elbo_reduction)
    if name != "torch":
        for module in modules:  # import the kernels and register the custom ops now, not inside a trace
            module.IMPLEMENTATIONS[name]
    return BackendOps(name, **{module.OP: getattr(module, f"{module.OP}_{name}") for module in modules})


# The kernel package each compiled backend needs importable (triton's imports triton).
_KERNEL_PACKAGES = {"cpu": "ssvae_fast.cpu", "cuda": "ssvae_fast.cuda", "triton": "ssvae_fast.triton"}


def _triton_status() -> Optional[str]:
    """None when Triton kernels can run here, else the reason they cannot."""
    try:
        import triton  # noqa: F401
    except ImportError:
        return "Triton is not installed (pip install triton; it needs a CUDA GPU)"
    if os.environ.get("TRITON_INTERPRET") == "1":
        return None
    if not torch.cuda.is_available():
        return "Triton needs a CUDA GPU (or TRITON_INTERPRET=1 set before import, for tests on tiny shapes)"
    try:
        importlib.import_module("ssvae_fast.triton")
    except ImportError as exc:  # pragma: no cover - only when the kernels are missing
        return f"the Triton kernels failed to import: {exc}"
    return None


def unavailable_reason(name: str) -> Optional[str]:
    """None when backend `name` can run on this machine, else a sentence saying why not and how to fix it."""
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; choose one of {BACKENDS + ('auto',)}")
    if name in ("reference", "torch"):
        return None
    from . import _ext

    if name == "cpu":
        if not _ext.HAS_EXT:
            return (
                "the compiled extension ssvae_fast._C is missing "
                f"({_ext.EXT_IMPORT_ERROR}); reinstall with a C++ compiler and CMake: pip install -e ."
            )
        return _module_missing("cpu")
    if name == "cuda":
        if not torch.cuda.is_available():
            return "the cuda backend needs a CUDA GPU and a CUDA build of torch"
        if not _ext.HAS_CUDA_EXT:
            return (
                "the CUDA extension ssvae_fast._C_cuda is missing; reinstall where nvcc is on PATH: "
                "SSVAE_FAST_CUDA=1 pip install -e ."
            )
        return _module_missing("cuda")
    return _triton_status()


def _module_missing(name: str) -> Optional[str]:
    module = _KERNEL_PACKAGES[name]
    try:
        importlib.import_module(module)
    except ImportError as exc:
        return f"the {name} backend's ops failed to import: {exc}"
    return None


def available_backends(device: Optional[torch.device | str] = None) -> list[str]:
    """Backends this machine can run (for `device`'s type when given: "cpu" or "cuda")."""
    names = [n for n in BACKENDS if unavailable_reason(n) is None]
    if device is None:
        return names
    kind = torch.device(device).type
    if kind == "cpu":
        interpret = os.environ.get("TRITON_INTERPRET") == "1"
        return [n for n in names if n != "cuda" and (n != "triton" or interpret)]
    return [n for n in names if n != "cpu"]


# The order `auto` tries, fastest measured first (see benchmarks/ and README's table). On CUDA the
# Triton and CUDA kernels have not yet been measured (nor run) on a GPU: until a GPU run puts them here,
# `auto` takes the plain-torch rewrites there, and the kernels are an explicit choice.
AUTO_ORDER = {"cuda": ("torch",), "cpu": ("cpu", "torch")}


_RESOLVED: dict[tuple[str, str, bool], str] = {}


def resolve(name: str, device: torch.device) -> str:
    """The concrete backend for `name` on `device`: "auto" picks; an unavailable one raises.

    Cached per (name, device type), so the traced path of `torch.compile(model.loss)` is a dict lookup.
    """
    key = (name, device.type, os.environ.get("TRITON_INTERPRET") == "1")
    found = _RESOLVED.get(key)
    if found is None:
        found = _RESOLVED[key] = _resolve(name, device)
    return found


def _resolve(name: str, device: torch.device) -> str:
    if name == "auto":
        for candidate in AUTO_ORDER.get(device.type, ("torch",)):
            if candidate == "triton" and os.environ.get("TRITON_INTERPRET") == "1":
                continue  # the interpreter is for tests, never an automatic choice
            if unavailable_reason(candidate) is None:
                return candidate
        return "torch"
    reason = unavailable_reason(name)
    if reason is not None:
        raise BackendUnavailableError(f"backend {name!r} is not available: {reason}")
    if name == "cpu" and device.type != "cpu":
        raise BackendUnavailableError("backend 'cpu' runs on CPU tensors; use 'cuda' or 'triton' on a GPU")
    if name == "cuda" and device.type != "cuda":
        raise BackendUnavailableError("backend 'cuda' runs on CUDA tensors; use 'cpu' or 'torch' on the CPU")
    if name == "triton" and device.type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
        raise BackendUnavailableError("backend 'triton' runs on CUDA tensors (or under TRITON_INTERPRET=1)")
    return name


_OPS_CACHE: dict[str, BackendOps] = {}


def get_ops(name: str) -> BackendOps:
    """The fused ops of backend `name` (not "reference", which has none)."""
    if name not in _OPS_CACHE:
        if name not in ("torch",) + tuple(_KERNEL_PACKAGES):
            raise ValueError(f"backend {name!r} has no fused ops")
        if name == "cpu":
            from . import _ext

            _ext.require_ext()
        _OPS_CACHE[name] = _make_ops(name)
    return _OPS_CACHE[name]
