"""What only the `cpu` backend has (C++/OpenMP kernels of ssvae_fast._C, GEMMs by torch); everything it
shares with the other backends is tested in tests/ops and tests/test_backends.py.

- its kernels' reductions are bitwise independent of the thread count;
- the Bernoulli op without autograd goes through chunks of CHUNK_ROWS rows, and keeps s in chunks of
  STORE_CHUNK_ROWS rows when set; eager autograd's backward uses s up in place, and a second backward
  through the same graph (retain_graph) recomputes it;
- class indices are range-checked on the host (the GPU backends do not synchronize for that), 16-bit
  floats are refused, and the extension checks its own arguments.
"""

from __future__ import annotations

import pytest
import torch

from ssvae_fast import _ext, backends, set_validation
from ssvae_fast.ops import bernoulli_loglik_linear
from ssvae_fast.ops.bernoulli_loglik_linear import bernoulli_loglik_linear_torch
from tests.op_checks import check_op_against_torch, leaf, rand
from tests.tolerance import assert_close_to_reference

pytestmark = pytest.mark.skipif(backends.unavailable_reason("cpu") is not None,
                                reason=f"{backends.unavailable_reason('cpu')}")


def _ops():
    return backends.get_ops("cpu")


def _kernels():
    import ssvae_fast.cpu.bernoulli_loglik_linear as kernels

    return kernels


def test_kernels_independent_of_thread_count():
    """The kernels' reductions use a partition fixed by the sizes: 1 and 2 threads agree bitwise."""
    ext = _ext.require_ext()
    g = torch.Generator().manual_seed(39)
    N, n_l, H, C = 300, 37, 129, 10  # labelled rows first, then every class: both row forms
    grad_out, a = torch.randn(n_l + (N - n_l) * C, H, generator=g), torch.randn(N, H, generator=g)
    wy_t, classes = torch.randn(C, H, generator=g), torch.randint(0, C, (n_l,), generator=g)
    M, D = 700, 97
    s, gl, h = torch.randn(M, D, generator=g), torch.randn(M, generator=g), torch.randn(M, H, generator=g)
    results = []
    previous = torch.get_num_threads()
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            grad_a, grad_wy = torch.empty(N, H), torch.empty(H, C)
            ext.class_conditional_backward(grad_out.data_ptr(), a.data_ptr(), wy_t.data_ptr(), 0, classes.data_ptr(),
                                           grad_a.data_ptr(), grad_wy.data_ptr(), N, n_l, H, C, "softplus", "float32")
            db, g_h = torch.empty(D), torch.empty(M, H)
            ext.bernoulli_linear_backward_rows(s.data_ptr(), gl.data_ptr(), h.data_ptr(), 0, g_h.data_ptr(),
                                               db.data_ptr(), M, D, H, "float32")
            results.append((grad_a, grad_wy, db, g_h))
    finally:
        torch.set_num_threads(previous)
    for first, second in zip(*results):
        assert torch.equal(first, second)


def test_bernoulli_without_autograd_uses_chunks():
    """No gradient needed: the logits go through chunks of CHUNK_ROWS rows (600 rows here: two chunks,
    the second partial) and nothing of size (N*C, D) is kept."""
    N, C, H, D = 60, 10, 21, 43
    h64, w64, b64 = rand(N, C, H, seed=17), rand(D, H, seed=18), rand(D, seed=19)
    x64 = rand(N, D, seed=20, uniform=True)
    assert N * C > _kernels().CHUNK_ROWS
    forward = bernoulli_loglik_linear.IMPLEMENTATIONS["cpu"].op
    for dtype in (torch.float32, torch.float64):
        args = [t.to(dtype) for t in (h64, w64, b64, x64)]
        with torch.no_grad():
            fast = _ops().bernoulli_loglik_linear(*args)
            ll, s = forward(args[0].view(N * C, H), *args[1:], 0, C, False, "ieee")
        assert s.numel() == 0 and torch.equal(ll.view(N, C), fast)
        ref = bernoulli_loglik_linear_torch(*args)
        ref64 = bernoulli_loglik_linear_torch(h64, w64, b64, x64)
        assert_close_to_reference(fast, ref, ref64, name=f"no-grad {dtype}")


def test_bernoulli_keeps_s_in_chunks(monkeypatch):
    """STORE_CHUNK_ROWS set: s is written by one GEMM + epilogue per chunk of rows (100 of the 2 + 8 x 17
    rows here, the last chunk partial); same results under the tolerance rule."""
    monkeypatch.setattr(_kernels(), "STORE_CHUNK_ROWS", 100)
    N, n_l, C, H, D = 10, 2, 17, 13, 21
    h64, w64, b64 = rand(n_l + (N - n_l) * C, H, seed=30), rand(D, H, seed=31, scale=0.3), rand(D, seed=32)
    x64 = rand(N, D, seed=33, uniform=True)

    def make(dtype):
        return {"h": leaf(h64, dtype, "cpu"), "weight": leaf(w64, dtype, "cpu"), "bias": leaf(b64, dtype, "cpu"),
                "x": leaf(x64, dtype, "cpu"), "n_labelled": n_l}

    check_op_against_torch(_ops().bernoulli_loglik_linear, bernoulli_loglik_linear_torch, make, device="cpu")


def test_bernoulli_backward_twice_with_retain_graph():
    """Eager autograd's backward turns the kept s into dl in place; a second backward through the same
    graph (retain_graph) recomputes s and gives the same gradients, bit for bit."""
    N, n_l, C, H, D = 9, 3, 4, 13, 21
    g = torch.Generator().manual_seed(41)
    h = torch.randn(n_l + (N - n_l) * C, H, generator=g).requires_grad_(True)
    weight = (torch.randn(D, H, generator=g) * 0.3).requires_grad_(True)
    bias = torch.randn(D, generator=g).requires_grad_(True)
    x = (torch.rand(N, D, generator=g) < 0.3).float()
    ll = _ops().bernoulli_loglik_linear(h, weight, bias, x, n_l)
    upstream = torch.randn(ll.shape, generator=g)
    first = torch.autograd.grad(ll, (h, weight, bias), upstream, retain_graph=True)
    second = torch.autograd.grad(ll, (h, weight, bias), upstream)
    for a, b in zip(first, second):
        assert torch.equal(a, b)
    expected = torch.autograd.grad(bernoulli_loglik_linear_torch(h, weight, bias, x, n_l), (h, weight, bias), upstream)
    for a, b in zip(first, expected):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_host_side_checks():
    """Class indices out of range, checked by the kernels themselves even with the value checks switched off
    (the GPU backends would give NaN instead: no host sync), 16-bit floats, and the extension's own argument
    checks."""
    ops = _ops()
    with set_validation(False):
        with pytest.raises(ValueError, match="class index"):
            ops.class_conditional_activation(torch.rand(2, 4), torch.rand(4, 3), torch.tensor([0, 3]), "relu")
        with pytest.raises(ValueError, match="class index"):
            ops.elbo_reduction(torch.rand(2, 3), torch.tensor([-1]), torch.rand(1), torch.rand(1), torch.rand(1, 3),
                               torch.rand(1, 3), 1.0)
    with pytest.raises(TypeError, match="one dtype"):
        ops.gaussian_reparam_kl(torch.rand(2, 4, dtype=torch.float16), torch.rand(2, 2, dtype=torch.float16))
    ext = _ext.require_ext()
    with pytest.raises(ValueError, match="exceed N"):
        t = torch.zeros(64)
        ext.class_conditional_forward(t.data_ptr(), t.data_ptr(), 0, t.data_ptr(), 2, 3, 4, 3, "relu", "float32")
