"""Shared pytest setup.

Triton kernels run on a CUDA GPU, or on the CPU in Triton's interpreter, which must be switched on
before anything imports triton: without a GPU, TRITON_INTERPRET=1 is set here (unless the environment
already says otherwise), so the same tests run real kernels on a GPU and the interpreter on a CPU.

The fixture `exact_gemm` runs the GPU backends' Bernoulli GEMM with exact float32 products, for the tests
that hold float32 results to the tolerance rule (tests/tolerance.py).
"""

import contextlib
import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

from ssvae_fast import backends  # noqa: E402  (after TRITON_INTERPRET is set)


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
