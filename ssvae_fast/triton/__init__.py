"""Triton kernels of the `triton` backend (docs/design.md section 2), one file per fused op.

    bernoulli_loglik_linear.py       decoder output layer + Bernoulli log-likelihood (the logits never hit memory)
    gaussian_loglik_linear.py        decoder output layer + Gaussian log-likelihood (same tiles, another epilogue)
    class_conditional_activation.py  act(a + W_y[:, c]) for every class, or labelled rows (one class) then every class
    gaussian_reparam_kl.py           z = mu + exp(logvar / 2) * eps and KL(q || N(0, I))
    elbo_reduction.py                log-softmax, entropy, q-weighted class sum, labelled terms and their VJP

Each file holds an op's kernels and their launchers: `forward` and `backward` with the custom-op
signatures of `ssvae_fast/ops/<op>.py`, which holds the op's other faces.

Runs on CUDA GPUs; on the CPU only under `TRITON_INTERPRET=1` (set before triton is imported), for tests
on tiny shapes. This package imports triton: import it only where `backends.unavailable_reason("triton")`
is None.

Settings (module level, read at every launch, so they also apply inside torch.compile'd graphs):

    set_input_precision("ieee" | "tf32" | "tf32x3")
        precision of fp32 `tl.dot` (the Bernoulli and Gaussian kernels' GEMM). Default "tf32" on a GPU (10-bit
        mantissa products, fp32 accumulation: the speed setting), "ieee" under the interpreter; the
        environment variable SSVAE_FAST_TRITON_INPUT_PRECISION overrides the default. The equivalence
        tests use "ieee". float64 inputs always use "ieee"; bf16/fp16 inputs ignore it.
    set_bernoulli_recompute(False | True)
        False (default): the Bernoulli forward stores s = x - sigmoid(l) (rows x D) in the input dtype,
        and the backward is GEMMs on s. True: nothing is stored; the backward kernel recomputes the
        logits (flash-style: less memory between forward and backward, one more GEMM). The environment
        variable SSVAE_FAST_TRITON_BERNOULLI_RECOMPUTE=1 sets the default. Both are deterministic.
    SSVAE_FAST_TRITON_AUTOTUNE=0 (environment, before import)
        pins the Bernoulli GEMM to one tile config instead of autotuning it, so results are bitwise
        equal across processes too (within a process they always are: no atomics anywhere).

Autotuning runs on the first call for each (M, D, H, dtype): warm up before capturing a CUDA graph.
"""

import contextlib
import os
import struct

import torch
import triton
import triton.language as tl

from .._launch import Settings, one_of

__all__ = [
    "interpreting",
    "set_input_precision",
    "get_input_precision",
    "set_bernoulli_recompute",
    "get_bernoulli_recompute",
]

_INPUT_PRECISIONS = ("ieee", "tf32", "tf32x3")


def interpreting() -> bool:
    """True when Triton runs kernels in its CPU interpreter (TRITON_INTERPRET=1)."""
    return os.environ.get("TRITON_INTERPRET") == "1"


def _default_input_precision() -> str:
    value = os.environ.get("SSVAE_FAST_TRITON_INPUT_PRECISION")
    if value is None:
        return "ieee" if interpreting() else "tf32"
    return one_of("SSVAE_FAST_TRITON_INPUT_PRECISION", _INPUT_PRECISIONS)(value)


_settings = Settings(
    {
        "input_precision": _default_input_precision(),
        "bernoulli_recompute": os.environ.get("SSVAE_FAST_TRITON_BERNOULLI_RECOMPUTE") == "1",
    },
    {"input_precision": one_of("input_precision", _INPUT_PRECISIONS), "bernoulli_recompute": bool},
)


def get_input_precision() -> str:
    """The `input_precision` of fp32 `tl.dot` in the Bernoulli kernels ("tf32" by default on a GPU)."""
    return _settings.get("input_precision")


def set_input_precision(precision: str):
    """Set the fp32 `tl.dot` precision ("ieee", "tf32" or "tf32x3"). Usable as a context manager that
    restores the previous value: `with set_input_precision("ieee"): ...`."""
    return _settings.set("input_precision", precision)


def get_bernoulli_recompute() -> bool:
    """True when the Bernoulli backward recomputes the logits instead of reading s from the forward."""
    return _settings.get("bernoulli_recompute")


def set_bernoulli_recompute(recompute: bool):
    """Choose the Bernoulli backward variant (see the module docstring); a context manager like
    `set_input_precision`."""
    return _settings.set("bernoulli_recompute", recompute)


# ------------------------------------------------------------------------------------------------------
# Host helpers shared by the launchers.
# ------------------------------------------------------------------------------------------------------
def is_fp64(t: torch.Tensor) -> bool:
    return t.dtype == torch.float64


def fp32_pair(value: float) -> tuple[float, float]:
    """(hi, lo) with hi = fp32(value) and lo = fp32(value - hi): value to ~2**-48 relative in fp64 kernels."""
    hi = struct.unpack("f", struct.pack("f", value))[0]
    return hi, struct.unpack("f", struct.pack("f", value - hi))[0]


def device_guard(t: torch.Tensor):
    """Launch on t's GPU (Triton launches on the current device's current stream)."""
    return torch.cuda.device(t.device) if t.device.type == "cuda" else contextlib.nullcontext()


def _interpreter_scalar_index_compat():
    """Let the interpreter of triton <= 3.6 run kernels whose loop bounds are runtime ints under numpy >= 2.4.

    That interpreter holds a scalar argument as a shape-(1,) array and turns it into a Python int (for
    `range(0, H, BLOCK_K)`) with int(array), which numpy 2.4 refuses ("only 0-dimensional arrays can be
    converted to Python scalars"); later triton releases read the one element instead. This wraps the
    interpreter's per-launch patching so that `tensor.__index__` reads the one element on every version;
    its patch scope restores attributes last-in first-out, so the wrapper's change is undone first.
    A no-op when the interpreter's internals are not the ones expected."""
    try:
        from triton.runtime import interpreter
    except ImportError:
        return
    patch_lang = getattr(interpreter, "_patch_lang", None)
    if patch_lang is None or getattr(patch_lang, "_ssvae_fast_compat", False):
        return

    def index(self):
        return int(self.handle.data.reshape(-1)[0])

    def patched(fn):
        scope = patch_lang(fn)
        if hasattr(scope, "set_attr"):
            scope.set_attr(tl.core.tensor, "__index__", index)
        return scope

    patched._ssvae_fast_compat = True
    interpreter._patch_lang = patched


if interpreting():
    _interpreter_scalar_index_compat()


# ------------------------------------------------------------------------------------------------------
# Device helpers shared by the kernel files.
# ------------------------------------------------------------------------------------------------------
@triton.jit
def to_compute(v, IS_FP64: tl.constexpr):
    """v in the compute dtype: float64 for float64 inputs, float32 for every other float dtype."""
    if IS_FP64:
        out = v.to(tl.float64)
    else:
        out = v.to(tl.float32)
    return out


@triton.jit
def fp32_pair_sum(hi, lo, like):
    """hi + lo (two fp32 scalar arguments) in like's dtype and shape: a float64 kernel sees a Python float
    passed as (fp32(v), fp32(v - fp32(v))) to ~2**-48 relative (Triton passes Python floats as fp32)."""
    return (tl.zeros_like(like) + hi) + lo


@triton.jit
def softplus_and_sigmoid(v):
    """(softplus(v), sigmoid(v)) for every finite v, stably and without libdevice.

    softplus(v) = max(v, 0) + log1p(e) and sigmoid(v) = 1 / (1 + e) (v >= 0) or e / (1 + e) (v < 0),
    with e = exp(-|v|) in (0, 1]: exp never overflows. log1p(e) = log(u) * e / (u - 1), u = 1 + e
    (Goldberg's trick: exact to a few ulps where log(1 + e) would lose e's low bits; e when u == 1).
    """
    e = tl.exp(-tl.abs(v))
    u = 1.0 + e
    u_minus_one = u - 1.0
    log1p_e = tl.where(u_minus_one == 0.0, e, tl.log(u) * (e / tl.where(u_minus_one == 0.0, 1.0, u_minus_one)))
    softplus = tl.maximum(v, 0.0) + log1p_e
    inv = 1.0 / u
    sigmoid = tl.where(v >= 0.0, inv, e * inv)
    return softplus, sigmoid
