"""Determinism: two runs of loss + backward give bit-identical losses and gradients.

- under `torch.use_deterministic_algorithms(True)`, on every backend that runs here (GPU parts where a GPU is
  present: tests/conftest.py sets CUBLAS_WORKSPACE_CONFIG, which deterministic cuBLAS needs), whole and
  chunked, with explicit and with drawn noise; the flag is restored afterwards;
- without the flag, the paths README says are deterministic by default: every backend on the CPU (the
  compiled kernels' own reductions are checked in tests/test_backends.py::test_is_deterministic).
"""

from __future__ import annotations

import contextlib

import pytest
import torch

from tests.equivalence import run
from tests.factories import make_batch, make_model
from tests.op_checks import device_of, on_backends

ALL = ("reference", "torch", "cpu", "triton", "cuda")


@contextlib.contextmanager
def deterministic_algorithms():
    previous = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous, warn_only=warn_only)


def _sizes(backend):
    # Triton's interpreter is slow: small sizes; the others past the cpu kernels' serial thresholds.
    return (23, 4, 3, 9, 3, 4) if backend == "triton" else (97, 10, 8, 90, 6, 34)


def _two_runs(backend, chunk_size=None):
    D, C, Z, H, n_l, n_u = _sizes(backend)
    device = device_of(backend)
    model = make_model(D, C, Z, H, device=device)
    batch = make_batch(model, n_l, n_u, device=device, seed=11)
    if chunk_size is not None:
        original = model.loss
        model.loss = lambda *a, **k: original(*a, chunk_size=chunk_size, **k)
    return run(model, backend, batch), run(model, backend, batch)


def _assert_bitwise(first: dict, second: dict):
    for key in first:
        assert torch.equal(first[key], second[key]), key


@pytest.mark.parametrize("chunk_size", [None, 7])
@pytest.mark.parametrize("backend", on_backends(*ALL))
def test_bitwise_under_deterministic_algorithms(backend, chunk_size):
    with deterministic_algorithms():
        first, second = _two_runs(backend, chunk_size)
    assert torch.are_deterministic_algorithms_enabled() is False
    _assert_bitwise(first, second)


@pytest.mark.parametrize("backend", on_backends(*ALL))
def test_drawn_noise_bitwise_under_deterministic_algorithms(backend):
    """Noise drawn from a seeded generator: the same draw, the same loss and gradients."""
    D, C, Z, H, n_l, n_u = _sizes(backend)
    device = device_of(backend)
    model = make_model(D, C, Z, H, device=device)
    model.backend = backend
    batch = make_batch(model, n_l, n_u, device=device, seed=12)
    results = []
    with deterministic_algorithms():
        for _ in range(2):
            model.zero_grad(set_to_none=True)
            generator = torch.Generator(device=device).manual_seed(5)
            loss = model.loss(batch.x_l, batch.y_l, batch.x_u, alpha=1.0, generator=generator)
            loss.backward()
            results.append([loss.detach()] + [p.grad.clone() for p in model.parameters()])
    for a, b in zip(*results):
        assert torch.equal(a, b)


@pytest.mark.parametrize("backend", on_backends("reference", "torch", "cpu"))
def test_bitwise_by_default_on_the_cpu(backend):
    assert not torch.are_deterministic_algorithms_enabled()
    _assert_bitwise(*_two_runs(backend))
