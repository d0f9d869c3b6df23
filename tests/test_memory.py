"""Bounded memory: `M2.loss(..., chunk_size=N)` and the out-of-memory message.

- chunked = unchunked up to float summation order, on every backend: in float64 losses and gradients agree
  to 1e-12 relative (to the largest value of each tensor); in float32 both satisfy the tolerance rule
  against the float64 reference (tests/tolerance.py); every reduction, chunk boundaries inside and at the
  labelled/unlabelled split, chunks larger than the batch, no-grad;
- what a chunked loss keeps for the backward is its inputs, not the activations of the whole batch;
- a batch the allocator refuses fails with torch.OutOfMemoryError (MemoryError for Python's) naming
  chunk_size, whether the device or the CPU allocator refuses it.
"""

from __future__ import annotations

import pytest
import torch

from ssvae_fast import M2, objective, set_validation
from tests.equivalence import run
from tests.factories import cast_model, make_batch, make_model
from tests.op_checks import device_of, on_backends
from tests.tolerance import assert_close_to_reference

ALL = ("reference", "torch", "cpu", "triton", "cuda")


def _run_chunked(model, backend, batch, chunk_size, reduction="none"):
    """`tests.equivalence.run` with chunk_size passed through."""
    original = model.loss

    def loss(*args, **kwargs):
        return original(*args, chunk_size=chunk_size, **kwargs)

    model.loss = loss
    try:
        return run(model, backend, batch)
    finally:
        del model.loss


def _assert_same(got: dict, want: dict, rtol: float):
    for key in want:
        scale = max(1.0, float(want[key].abs().max())) if want[key].numel() else 1.0
        err = float((got[key] - want[key]).abs().max()) if want[key].numel() else 0.0
        assert err <= rtol * scale, f"{key}: {err:.3e} > {rtol * scale:.3e}"


@pytest.mark.parametrize("backend", on_backends(*ALL))
def test_chunked_equals_unchunked(backend):
    device = device_of(backend)
    n_l, n_u = 5, 7
    model64 = make_model(13, 3, 4, 11, dtype=torch.float64, device=device)
    batch64 = make_batch(model64, n_l, n_u, dtype=torch.float64, device=device, seed=3)
    whole64 = run(model64, backend, batch64)
    ref64 = run(model64, "reference", batch64)
    model32, batch32 = cast_model(model64, torch.float32), batch64.to(dtype=torch.float32)
    ref32 = run(model32, "reference", batch32)
    sizes = (1, 4, n_l, n_l + 1, n_l + n_u - 1, n_l + n_u, 100) if backend != "triton" else (1, n_l + 1)
    for chunk_size in sizes:
        _assert_same(_run_chunked(model64, backend, batch64, chunk_size), whole64, rtol=1e-12)
        chunked32 = _run_chunked(model32, backend, batch32, chunk_size)
        for key in ref64:
            assert_close_to_reference(chunked32[key], ref32[key], ref64[key], name=f"chunk {chunk_size} {key}")


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_chunked_reductions_and_no_grad(reduction):
    model = make_model(13, 3, 4, 11, dtype=torch.float64)
    model.backend = "torch"
    b = make_batch(model, 3, 4, dtype=torch.float64, seed=4)
    args = (b.x_l, b.y_l, b.x_u)
    kwargs = dict(alpha=0.5, eps_l=b.eps_l, eps_u=b.eps_u, reduction=reduction)
    whole = model.loss(*args, **kwargs)
    chunked = model.loss(*args, chunk_size=2, **kwargs)
    torch.testing.assert_close(chunked, whole, rtol=1e-12, atol=1e-12)
    with torch.no_grad():
        torch.testing.assert_close(model.loss(*args, chunk_size=3, **kwargs), whole.detach(), rtol=1e-12, atol=1e-12)
    only_unlabelled = model.loss(None, None, b.x_u, alpha=0.5, eps_u=b.eps_u, reduction=reduction, chunk_size=3)
    torch.testing.assert_close(only_unlabelled, model.loss(None, None, b.x_u, alpha=0.5, eps_u=b.eps_u,
                                                           reduction=reduction), rtol=1e-12, atol=1e-12)


def _saved_bytes(fn) -> int:
    """Bytes of the tensors autograd saves for the backward while `fn` runs (outside checkpointed regions)."""
    total = [0]

    def pack(t):
        total[0] += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return total[0]


@pytest.mark.parametrize("backend", on_backends("torch", "cpu"))
def test_chunked_loss_keeps_inputs_not_activations(backend):
    """Unchunked, the backward keeps (rows, H) and (rows, D) activations for the whole batch; chunked, it
    keeps nothing but the chunks' inputs (each chunk's activations are recomputed in its backward)."""
    torch.manual_seed(0)
    model = M2(200, 10, 8, hidden=(64,), backend=backend)
    b = make_batch(model, 8, 120, seed=5)

    def loss(chunk_size):
        return lambda: model.loss(b.x_l, b.y_l, b.x_u, alpha=1.0, eps_l=b.eps_l, eps_u=b.eps_u,
                                  chunk_size=chunk_size).backward()

    whole, chunked = _saved_bytes(loss(None)), _saved_bytes(loss(16))
    rows = 8 + 120 * 10
    inputs = sum(t.numel() * t.element_size() for t in b.args())
    assert whole > rows * 200 * 4 + inputs  # at least one (rows, D) float32 tensor besides the inputs
    assert chunked <= inputs, (chunked, inputs)


@pytest.mark.parametrize("error", [
    torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB"),
    RuntimeError("[enforce fail at alloc_cpu.cpp:127] DefaultCPUAllocator: can't allocate memory: you tried to "
                 "allocate 2000000000000 bytes."),
    MemoryError(),
])
def test_out_of_memory_names_chunk_size(monkeypatch, error):
    def refuse(*args, **kwargs):
        raise error

    monkeypatch.setattr(objective, "per_example_losses", refuse)
    model = M2(12, 3, 2, hidden=(8,), backend="torch")
    x = torch.rand(6, 12)
    expected = MemoryError if isinstance(error, MemoryError) else torch.OutOfMemoryError
    with pytest.raises(expected, match=r"M2.loss: out of memory for a batch of 0 labelled \+ 6 unlabelled examples"
                                       r".*pass chunk_size=N to M2.loss") as info:
        model.loss(None, None, x, alpha=1.0)
    assert info.value.__cause__ is error
    with pytest.raises(expected, match="pass a smaller chunk_size than 4"):
        model.loss(None, None, x, alpha=1.0, chunk_size=4)
    monkeypatch.setattr(objective, "per_example_losses", lambda *a: (_ for _ in ()).throw(RuntimeError("other")))
    with pytest.raises(RuntimeError, match="^other$"):  # any other error passes through untouched
        model.loss(None, None, x, alpha=1.0)


def _overcommit_heuristic() -> bool:
    try:
        with open("/proc/sys/vm/overcommit_memory") as f:
            return f.read().strip() in ("0", "2")
    except OSError:
        return False


@pytest.mark.skipif(not _overcommit_heuristic(), reason="needs Linux with heuristic or strict memory overcommit, "
                                                        "where an impossible allocation fails at once")
def test_a_batch_too_large_for_the_cpu_fails_naming_chunk_size():
    """A real refusal: a billion unlabelled examples (views of one image, so the inputs cost nothing) need a
    terabyte-sized activation, which the CPU allocator refuses at once."""
    model = M2(784, 10, 50, hidden=(500,), backend="torch")
    n = 10**9
    x_u = torch.rand(1, 784).expand(n, 784)
    eps_u = torch.randn(1, 1, 50).expand(n, 10, 50)
    with set_validation(False):  # (checking a billion images would only take long)
        with pytest.raises(torch.OutOfMemoryError, match="chunk_size"):
            model.loss(None, None, x_u, alpha=1.0, eps_u=eps_u)
