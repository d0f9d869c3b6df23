"""Shared pytest setup.

Triton kernels run on a CUDA GPU, or on the CPU in Triton's interpreter, which must be switched on
before anything imports triton: without a GPU, TRITON_INTERPRET=1 is set here when the environment does
not set it; set to anything else without a GPU, the session stops at once (the triton tests would
otherwise skip silently). With a GPU the environment's value is honoured.

SSVAE_FAST_REQUIRE_BACKENDS=cpu,triton (a comma-separated list; CI sets it, see .ci/run) stops the session
before any test runs when one of the named backends cannot run here, with the reason: a missing compiled
extension or Triton must fail a run that expects them, not skip hundreds of tests and end green.

CUBLAS_WORKSPACE_CONFIG is set (unless set already) so that cuBLAS can be deterministic on a GPU under
torch.use_deterministic_algorithms(True) (tests/test_determinism.py); it must be set before cuBLAS starts.

The fixture `exact_gemm` runs the GPU backends' Bernoulli GEMM with exact float32 products, for the tests
that hold float32 results to the tolerance rule (tests/tolerance.py).
"""

import contextlib
import os

import pytest
import torch

_SETUP_ERRORS = []
if not torch.cuda.is_available():
    _interpret = os.environ.get("TRITON_INTERPRET")
    if _interpret is None:
        os.environ["TRITON_INTERPRET"] = "1"
    elif _interpret != "1":
        _SETUP_ERRORS.append(
            f"TRITON_INTERPRET={_interpret!r} on a machine without a CUDA GPU: the triton backend can then run "
            "nowhere and its tests would be skipped; unset it (the tests set TRITON_INTERPRET=1 themselves) or "
            "set TRITON_INTERPRET=1"
        )
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

from ssvae_fast import backends  # noqa: E402  (after TRITON_INTERPRET is set)

REQUIRE_ENV = "SSVAE_FAST_REQUIRE_BACKENDS"


def required_backends_errors() -> list:
    """Why each backend named in SSVAE_FAST_REQUIRE_BACKENDS cannot run here (empty when all can)."""
    names = [n.strip() for n in os.environ.get(REQUIRE_ENV, "").split(",") if n.strip()]
    errors = []
    for name in names:
        if name not in backends.BACKENDS:
            errors.append(f"{REQUIRE_ENV} names {name!r}, which is not a backend; backends: {backends.BACKENDS}")
            continue
        reason = backends.unavailable_reason(name)
        if reason is None and name == "cuda" and not torch.cuda.is_available():
            reason = "no CUDA GPU"
        if reason is not None:
            errors.append(f"{REQUIRE_ENV} requires backend {name!r}, which is not available here: {reason}")
    return errors


def pytest_configure(config):
    errors = _SETUP_ERRORS + required_backends_errors()
    if errors:
        raise pytest.UsageError("\n".join(errors))


@pytest.fixture
def exact_gemm():
    """Exact float32 products in the GPU backends' Bernoulli GEMM ("ieee"; TF32, their default on a GPU, is
    tested on its own), for the tests that compare float32 results with the tolerance rule."""
    import ssvae_fast.cuda

    with contextlib.ExitStack() as stack:
        stack.enter_context(ssvae_fast.cuda.set_precision("ieee"))
        if backends.unavailable_reason("triton") is None:
            import ssvae_fast.triton

            stack.enter_context(ssvae_fast.triton.set_input_precision("ieee"))
        yield
