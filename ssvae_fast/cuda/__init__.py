"""The `cuda` backend's kernel launchers: CUDA kernels of the compiled extension `ssvae_fast._C_cuda`
(csrc/cuda/<op>.cu). One module per fused op, each defining the op's `forward` and `backward` with the
custom-op signatures of `ssvae_fast/ops/<op>.py`, which holds the op's other faces.

The launchers never synchronize with the host, launch on torch's current stream and take their
workspaces from torch's caching allocator, so CUDA graphs capture them. Inputs are passed with their
strides (no copies), except that a 3-D h must be viewable as (N*C, H) and the output gradients of the
class-conditional op are made contiguous. Every reduction accumulates in float32 (float64 for float64
inputs); outputs have the input dtype. No float atomics: results are bitwise reproducible run to run on
the same GPU. Class indices are not range-checked on the device (no host sync): an out-of-range class
gives NaN, never an out-of-bounds read.

Precision of the Bernoulli GEMM (the only matrix product inside a kernel), `set_precision`:

    "tf32" (default)  tensor cores through nvcuda::wmma: float32 inputs rounded to TF32 (10-bit mantissa),
                      bfloat16/float16 inputs as they are; fp32 accumulation. The speed setting.
    "ieee"            FMA tiles on the CUDA cores: exact float products (the equivalence tests use it).

float64 always uses exact float64 FMAs. The environment variable SSVAE_FAST_CUDA_PRECISION sets the
default. The backward GEMMs of that op run in torch (cuBLAS) and follow torch's own matmul settings
(`torch.backends.cuda.matmul.allow_tf32`, False by default).
"""

import os

from .. import _ext
from .._launch import Settings, one_of

__all__ = ["PRECISIONS", "get_precision", "set_precision", "extension"]

PRECISIONS = ("ieee", "tf32")
_check_precision = one_of("precision", PRECISIONS)
_settings = Settings(
    {"precision": one_of("SSVAE_FAST_CUDA_PRECISION", PRECISIONS)(os.environ.get("SSVAE_FAST_CUDA_PRECISION", "tf32"))},
    {"precision": _check_precision},
)


def get_precision() -> str:
    """The precision of the Bernoulli kernel's float32/16-bit GEMM: "tf32" (default) or "ieee"."""
    return _settings.get("precision")


def set_precision(precision: str):
    """Set the Bernoulli GEMM precision ("ieee" or "tf32"), read at every call (also inside torch.compile'd
    graphs, which guard on it). Usable as a context manager: `with set_precision("ieee"): ...`."""
    return _settings.set("precision", precision)


def check_precision(precision: str) -> str:
    return _check_precision(precision)


def extension():
    """ssvae_fast._C_cuda with this backend's kernels; RuntimeError saying how to get it otherwise."""
    ext = _ext.require_cuda_ext()
    if not hasattr(ext, "bernoulli_loglik_linear_forward"):
        raise RuntimeError(
            "ssvae_fast._C_cuda was built before the cuda backend's kernels existed; rebuild it where nvcc is "
            "on PATH: `SSVAE_FAST_CUDA=1 pip install -e .` (or `python setup.py build_ext --inplace`)"
        )
    return ext


def require_cuda(op: str, *tensors) -> None:
    """Guard of every implementation (reachable directly through torch.ops.ssvae_fast.*)."""
    for t in tensors:
        if t is not None and t.device.type != "cuda":
            raise ValueError(f"{op}: the cuda backend's kernels need CUDA tensors, got a tensor on {t.device}")
