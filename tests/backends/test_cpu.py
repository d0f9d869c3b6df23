"""What only the `cpu` backend has (C++/OpenMP kernels of ssvae_fast._C, GEMMs by torch); everything it
shares with the other backends is tested in tests/ops and tests/test_backends.py.

- its kernels' reductions are bitwise independent of the thread count, in float32 and bfloat16;
- the Bernoulli op without autograd goes through chunks of CHUNK_ROWS rows, and keeps s in chunks of
  STORE_CHUNK_ROWS rows when set; eager autograd's backward uses s up in place, and a second backward
  through the same graph (retain_graph) recomputes it;
- bfloat16 through the custom ops: torch.library.opcheck (the fakes say what the kernels return: the
  reductions in float32);
- class indices are range-checked on the host (the GPU backends do not synchronize for that), float16 is
  refused by every op and by the models (explicitly or under torch.autocast) with what to use instead, and
  the extension checks its own arguments.
"""

from __future__ import annotations

import re

import pytest
import torch

from ssvae_fast import M1, M2, _ext, backends, set_validation
from ssvae_fast.ops import (bernoulli_loglik_linear, class_conditional_activation, elbo_reduction,
                            gaussian_loglik_linear, gaussian_reparam_kl)
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


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_kernels_independent_of_thread_count(dtype):
    """The kernels' reductions use a partition fixed by the sizes: 1 and 2 threads agree bitwise (bfloat16
    storage: the same partitions, the per-row gradient g in float32)."""
    ext = _ext.require_ext()
    name = {torch.float32: "float32", torch.bfloat16: "bfloat16"}[dtype]
    g = torch.Generator().manual_seed(39)
    N, n_l, H, C = 300, 37, 129, 10  # labelled rows first, then every class: both row forms
    grad_out, a = torch.randn(n_l + (N - n_l) * C, H, generator=g), torch.randn(N, H, generator=g)
    wy_t, classes = torch.randn(C, H, generator=g), torch.randint(0, C, (n_l,), generator=g)
    M, D = 700, 97
    s, gl, h = torch.randn(M, D, generator=g), torch.randn(M, generator=g), torch.randn(M, H, generator=g)
    grad_out, a, wy_t, s, h = (t.to(dtype) for t in (grad_out, a, wy_t, s, h))
    results = []
    previous = torch.get_num_threads()
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            grad_a, grad_wy = torch.empty(N, H, dtype=dtype), torch.empty(H, C, dtype=dtype)
            ext.class_conditional_backward(grad_out.data_ptr(), a.data_ptr(), wy_t.data_ptr(), 0, classes.data_ptr(),
                                           grad_a.data_ptr(), grad_wy.data_ptr(), N, n_l, H, C, "softplus", name)
            db, g_h = torch.empty(D, dtype=dtype), torch.empty(M, H, dtype=dtype)
            ext.bernoulli_linear_backward_rows(s.data_ptr(), gl.data_ptr(), h.data_ptr(), 0, g_h.data_ptr(),
                                               db.data_ptr(), M, D, H, name)
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
    for dtype in (torch.float32, torch.float64, torch.bfloat16):
        args = [t.to(dtype) for t in (h64, w64, b64, x64)]
        with torch.no_grad():
            fast = _ops().bernoulli_loglik_linear(*args)
            ll, s = forward(args[0].view(N * C, H), *args[1:], 0, C, False, "ieee")
        # The custom op's ll is in the compute dtype (float32 for bfloat16), the op's in the inputs' dtype.
        assert ll.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
        assert s.numel() == 0 and torch.equal(ll.view(N, C).to(dtype), fast)
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
    with pytest.raises(ValueError, match=re.escape("unsupported dtype 'float16'; expected 'float32', 'float64' or "
                                                   "'bfloat16'")):
        t = torch.zeros(64)
        ext.class_conditional_forward(t.data_ptr(), t.data_ptr(), 0, t.data_ptr(), 2, 0, 4, 3, "relu", "float16")


FLOAT16_ADVICE = ("the cpu backend has no float16 kernels: use bfloat16 (e.g. torch.autocast('cpu', "
                  "dtype=torch.bfloat16)) or float32, or backend 'torch'")


def _float16_calls():
    """(name, call) of every op of the cpu backend on float16 inputs."""
    ops = _ops()
    h = lambda *s: torch.rand(*s, dtype=torch.float16)  # noqa: E731
    classes = torch.tensor([0, 1])
    return [
        ("class_conditional_activation", lambda: ops.class_conditional_activation(h(2, 4), h(4, 3), classes, "relu")),
        ("gaussian_reparam_kl", lambda: ops.gaussian_reparam_kl(h(2, 4), h(2, 2))),
        ("bernoulli_loglik_linear", lambda: ops.bernoulli_loglik_linear(h(2, 3, 4), h(5, 4), h(5), h(2, 5))),
        ("gaussian_loglik_linear", lambda: ops.gaussian_loglik_linear(h(2, 3, 4), h(5, 4), h(5), h(5), h(2, 5))),
        ("elbo_reduction", lambda: ops.elbo_reduction(h(3, 2), classes[:1], h(1), h(1), h(2, 2), h(2, 2), 1.0)),
    ]


def test_float16_is_refused_with_what_to_use():
    """float16 (the cpu backend has no float16 kernels): every op, an explicit float16 model and a model
    under torch.autocast("cpu", dtype=torch.float16) raise TypeError naming the op, the dtypes it takes and
    what to use instead."""
    for name, call in _float16_calls():
        with pytest.raises(TypeError, match=re.escape(f"{name}_cpu: float inputs must share one dtype among "
                                                      "(torch.bfloat16, torch.float32, torch.float64), got ")) as info:
            call()
        assert str(info.value).endswith(FLOAT16_ADVICE), str(info.value)
    x = torch.rand(4, 10)
    model = M2(10, 3, 2, hidden=(5,), backend="cpu")
    with pytest.raises(TypeError, match=re.escape(FLOAT16_ADVICE)):
        model.half().loss(x[:2].half(), torch.tensor([0, 1]), x[2:].half(), alpha=1.0)
    with pytest.raises(TypeError, match=re.escape(FLOAT16_ADVICE)):
        with torch.autocast("cpu", dtype=torch.float16):
            model.float().loss(x[:2], torch.tensor([0, 1]), x[2:], alpha=1.0)
    with pytest.raises(TypeError, match=re.escape(FLOAT16_ADVICE)):
        with torch.autocast("cpu", dtype=torch.float16):
            M1(10, 2, hidden=(5,), backend="cpu").loss(x)


def _bfloat16_opcheck_cases():
    """(op module, forward custom op arguments) in bfloat16 at small odd shapes (rows past the kernels' serial
    threshold for the output-layer ops)."""
    g = torch.Generator().manual_seed(44)
    r = lambda *s: torch.randn(*s, generator=g).to(torch.bfloat16).requires_grad_(True)  # noqa: E731
    N, n_l, C, H, D = 40, 4, 10, 19, 97
    M = n_l + (N - n_l) * C
    x = (torch.rand(N, D, generator=g) < 0.4).to(torch.bfloat16)
    classes = torch.randint(0, C, (N,), generator=g)
    return [
        (class_conditional_activation, (r(N, H), r(H, C), classes[:n_l], "softplus")),
        (class_conditional_activation, (r(N, H), r(H, C), None, "relu")),
        (gaussian_reparam_kl, (r(M, 2 * 5), r(M, 5))),
        (bernoulli_loglik_linear, (r(M, H), r(D, H), r(D), x, n_l, C, True, "ieee")),
        (gaussian_loglik_linear, (r(M, H), r(D, H), r(D), r(D), x.clone().requires_grad_(True), n_l, C, True, "ieee")),
        (elbo_reduction, (r(N, C), classes[:n_l], r(n_l), r(n_l), r(N - n_l, C), r(N - n_l, C), 0.7)),
    ]


@pytest.mark.parametrize("case", range(6))
def test_bfloat16_custom_ops_pass_opcheck(case):
    """torch.library.opcheck of the forward custom ops on bfloat16 inputs: the fakes give the kernels' output
    dtypes (the reductions in float32, the rest in bfloat16), the autograd registration holds."""
    module, args = _bfloat16_opcheck_cases()[case]
    torch.library.opcheck(module.IMPLEMENTATIONS["cpu"].op, args)
