"""`gaussian_loglik_linear` (ssvae_fast/ops/gaussian_loglik_linear.py) on every backend.

The torch face against `torch.distributions.Normal` on rows gathered by enumeration (float64, values and
gradients); every compiled backend against the torch face (ll and the gradients of h, weight, bias,
logvar and x, docs/design.md section 4's rule) in the every-class form with strided inputs and in the
labelled-prefix form, extreme log-variances, gradcheck in float64, half precision (bfloat16 on the cpu
backend, bfloat16 and float16 on the GPU backends), the cpu backend under torch.autocast against the torch
face under the same autocast, the fakes and torch.library.opcheck of the custom ops, and the input checks.
Shapes are per backend: tiny for Triton's interpreter.
"""

from __future__ import annotations

import math

import pytest
import torch

from ssvae_fast.ops import gaussian_loglik_linear as module
from ssvae_fast.ops.gaussian_loglik_linear import gaussian_loglik_linear_torch as torch_face
from tests.op_checks import (COMPILED, RECOMPUTE_BACKENDS, check_op_against_torch, check_op_under_autocast,
                             check_opcheck, device_of, gemm_precision, half_gemm_params, labelled_prefix_rows, leaf,
                             on_backends, per_backend, rand, recompute_logits, registered,
                             strided_output_layer_inputs)

pytestmark = pytest.mark.usefixtures("exact_gemm")


def _op(backend):
    return getattr(module, f"{module.OP}_{backend}")


def _logvar(D, seed):
    return rand(D, seed=seed, scale=0.5) - 0.5


@pytest.mark.parametrize("N,n_l,C", [(5, 0, 3), (5, 5, 3), (5, 2, 3), (6, 5, 17), (3, 1, 1), (4, 2, 0)])
def test_torch_face_equals_normal_log_prob(N, n_l, C):
    """The torch face (the spec of every backend's) is Normal(mu, exp(logvar / 2)).log_prob(x) summed over
    D, on rows gathered by enumeration: values and the gradients of every input, float64."""
    g = torch.Generator().manual_seed(N * 100 + n_l * 10 + C)
    H, D = 7, 9
    classes = torch.randint(0, max(C, 1), (n_l,), generator=g)
    examples, _ = labelled_prefix_rows(N, n_l, C, classes)
    h = torch.randn(examples.numel(), H, generator=g, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(D, H, generator=g, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(D, generator=g, dtype=torch.float64, requires_grad=True)
    logvar = torch.randn(D, generator=g, dtype=torch.float64).mul(0.5).requires_grad_(True)
    x = torch.randn(N, D, generator=g, dtype=torch.float64, requires_grad=True)
    ll = torch_face(h, weight, bias, logvar, x, n_l)
    mu = h @ weight.t() + bias
    naive = torch.distributions.Normal(mu, torch.exp(0.5 * logvar)).log_prob(x[examples]).sum(-1)
    torch.testing.assert_close(ll, naive, rtol=1e-12, atol=1e-12)
    upstream = torch.randn(ll.shape, generator=g, dtype=torch.float64)
    leaves = (h, weight, bias, logvar, x)
    torch.testing.assert_close(torch.autograd.grad((ll * upstream).sum(), leaves, allow_unused=True, materialize_grads=True),
                               torch.autograd.grad((naive * upstream).sum(), leaves, allow_unused=True,
                                                   materialize_grads=True), rtol=1e-11, atol=1e-11)


def test_torch_face_every_class_form():
    """(N, C, H) gives the (N, C) view of the rows form with n_l = 0, and log 2 pi per dimension."""
    h, weight, logvar, x = rand(2, 3, 4, seed=1), rand(5, 4, seed=2), torch.zeros(5, dtype=torch.float64), rand(2, 5, seed=3)
    rows = torch_face(h.reshape(6, 4), weight, None, logvar, x, 0)
    assert torch.equal(torch_face(h, weight, None, logvar, x), rows.view(2, 3))
    mu = torch.einsum("nch,dh->ncd", h, weight)
    expected = -0.5 * ((x[:, None] - mu).square().sum(-1) + 5 * math.log(2 * math.pi))
    torch.testing.assert_close(rows.view(2, 3), expected, rtol=1e-13, atol=1e-13)


# N, C, H, D: D = 50 is M1+M2's feature width.
SHAPES = {
    "cpu": [(1, 1, 1, 1), (7, 10, 13, 37), (3, 17, 19, 50), (60, 10, 21, 43)],
    "triton": [(5, 7, 40, 50), (1, 1, 19, 37), (3, 17, 19, 37)],
    "cuda": [(5, 7, 40, 150), (1, 1, 19, 37), (3, 17, 19, 37), (13, 10, 70, 785), (7, 2, 64, 64)],
}


@pytest.mark.parametrize("x_grad", [True, False])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("backend,N,C,H,D", per_backend(SHAPES))
def test_matches_torch(backend, N, C, H, D, bias, x_grad):
    device = device_of(backend)
    h64, w64, b64 = rand(C, N, H, seed=13), rand(H, D, seed=14, scale=0.3), rand(D, seed=15)
    v64, x64 = _logvar(D, 17), rand(N, 2 * D, seed=16)

    def make(dtype):
        inputs = strided_output_layer_inputs(h64, w64, b64, x64, dtype, device, bias=bias, x_grad=x_grad)
        return {**inputs, "logvar": leaf(v64, dtype, device)}

    check_op_against_torch(_op(backend), torch_face, make, device=device)


# N, n_l, C, H, D: n_l = 0, n_l = N, N - n_l = 1, C = 1, C = 17, and C = 0 (no enumerated row).
PREFIX_SHAPES = {
    "cpu": [(1, 1, 3, 5, 7), (5, 0, 3, 9, 11), (9, 4, 17, 13, 21), (64, 7, 10, 33, 50), (5, 3, 0, 19, 37)],
    "triton": [(13, 5, 3, 19, 37), (11, 0, 3, 19, 37), (10, 10, 4, 19, 37), (12, 9, 1, 19, 37), (5, 2, 17, 19, 37),
               (5, 3, 0, 19, 37)],
    "cuda": [(5, 0, 7, 40, 150), (9, 9, 3, 19, 37), (13, 12, 10, 70, 785), (20, 7, 17, 33, 100), (70, 30, 1, 19, 37),
             (80, 64, 3, 24, 65), (100, 30, 10, 50, 50), (5, 3, 0, 19, 37)],
}


@pytest.mark.parametrize("bias,x_grad", [(True, True), (False, False)])
@pytest.mark.parametrize("backend,N,n_l,C,H,D", per_backend(PREFIX_SHAPES))
def test_labelled_prefix(backend, N, n_l, C, H, D, bias, x_grad):
    device = device_of(backend)
    seed = N + n_l + C
    M = n_l + (N - n_l) * C
    h64 = rand(M, H, seed=seed).sigmoid() * 2.0
    w64, b64 = rand(D, H, seed=seed + 1, scale=0.5), rand(D, seed=seed + 2, scale=0.3)
    v64, x64 = _logvar(D, seed + 3), rand(N, D, seed=seed + 4)

    def make(dtype):
        return {"h": leaf(h64, dtype, device), "weight": leaf(w64, dtype, device),
                "bias": leaf(b64, dtype, device) if bias else None, "logvar": leaf(v64, dtype, device),
                "x": leaf(x64, dtype, device, requires_grad=x_grad), "n_labelled": n_l}

    assert _op(backend)(**make(torch.float64)).shape == (M,)
    check_op_against_torch(_op(backend), torch_face, make, device=device)


def _half_inputs(form: str, device):
    """make(dtype) for the 16-bit tests: every class of 13 examples, or 40 labelled rows and 20 examples of 10
    classes; D = 50 (M1+M2's features); ll and the gradients of h, weight, bias, logvar and x."""
    N, n_l, C, H, D = (13, 0, 10, 70, 50) if form == "every class" else (60, 40, 10, 70, 50)
    M = n_l + (N - n_l) * C
    h64, w64, b64 = rand(M, H, seed=60).sigmoid() * 2.0, rand(D, H, seed=61, scale=0.3), rand(D, seed=62, scale=0.3)
    v64, x64 = _logvar(D, 63), rand(N, D, seed=64)

    def make(dt):
        h = leaf(h64, dt, device)
        return {"h": h.view(N, C, H) if form == "every class" else h, "weight": leaf(w64, dt, device),
                "bias": leaf(b64, dt, device), "logvar": leaf(v64, dt, device), "x": leaf(x64, dt, device),
                **({} if form == "every class" else {"n_labelled": n_l})}

    return make


# Half precision needs a half-precision tl.dot, which Triton's interpreter lacks: GPU only there.
@pytest.mark.parametrize("form", ["every class", "labelled prefix"])
@pytest.mark.parametrize("backend,precision,dtype", half_gemm_params())
def test_half_precision_matches_torch(backend, precision, dtype, form):
    device = device_of(backend)
    with gemm_precision(backend, precision):
        check_op_against_torch(_op(backend), torch_face, _half_inputs(form, device), device=device, dtypes=(dtype,))


@pytest.mark.parametrize("recompute", [False, True])
@pytest.mark.parametrize("half", [(), ("h",)])
@pytest.mark.parametrize("form", ["every class", "labelled prefix"])
@pytest.mark.parametrize("backend", on_backends("cpu"))
def test_autocast_matches_torch(backend, form, half, recompute):
    """Under torch.autocast(bfloat16), which casts every input (logvar too) to bf16 as for a linear layer: ll in
    float32 and the gradients in their inputs' dtypes, as the torch face's, and the tolerance rule against the
    torch face under the same autocast; s kept or recomputed."""
    device = device_of(backend)
    with recompute_logits(backend, recompute):
        check_op_under_autocast(_op(backend), torch_face, _half_inputs(form, device), half, device=device)


@pytest.mark.parametrize("backend", on_backends(*COMPILED))
def test_extreme_logvar(backend):
    """Log-variances from -30 to 80 and means of +-100: finite and equal to the torch face."""
    device = device_of(backend)
    N, C, H, D = 3, 2, 5, 12
    h64, w64, b64 = rand(N, C, H, seed=40), rand(D, H, seed=41, scale=30.0), rand(D, seed=42, scale=100.0)
    v64, x64 = torch.linspace(-30, 80, D, dtype=torch.float64), rand(N, D, seed=43, scale=100.0)

    def make(dtype):
        return {"h": leaf(h64, dtype, device), "weight": leaf(w64, dtype, device), "bias": leaf(b64, dtype, device),
                "logvar": leaf(v64, dtype, device), "x": leaf(x64, dtype, device)}

    check_op_against_torch(_op(backend), torch_face, make, device=device)


GRADCHECK_FORMS = {
    "every class": ((2, 3, 4), (6, 4), (6,), (2, 6), 0),
    "every class, no bias": ((2, 3, 4), (6, 4), None, (2, 6), 0),
    **{f"rows, n_l = {n_l}": ((n_l + (3 - n_l) * 3, 4), (6, 4), (6,), (3, 6), n_l) for n_l in range(4)},
}


@pytest.mark.parametrize("form", GRADCHECK_FORMS)
@pytest.mark.parametrize("backend", on_backends("torch", *COMPILED))
def test_gradcheck_float64(backend, form):
    device, op = device_of(backend), _op(backend)
    g = torch.Generator().manual_seed(38)
    *shapes, n_l = GRADCHECK_FORMS[form]
    h, weight, bias, x = (None if s is None else torch.randn(*s, generator=g, dtype=torch.float64).to(device)
                          .requires_grad_(True) for s in shapes)
    logvar = (0.3 * torch.randn(shapes[1][0], generator=g, dtype=torch.float64)).to(device).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda h, w, b, v, x: op(h, w, b, v, x, n_l), (h, weight, bias, logvar, x))


@pytest.mark.parametrize("backend", ["torch", *COMPILED])
def test_input_errors(backend):
    """Shapes first, on any device; then the values (non-finite x or logvar) when checks are on."""
    op = _op(backend)
    v = torch.zeros(5)
    with pytest.raises(ValueError, match="x must be"):
        op(torch.rand(2, 3, 4), torch.rand(5, 4), None, v, torch.rand(3, 5))
    with pytest.raises(ValueError, match="logvar must be"):
        op(torch.rand(2, 3, 4), torch.rand(5, 4), None, torch.zeros(4), torch.rand(2, 5))
    with pytest.raises(ValueError, match="n_labelled must be in"):
        op(torch.zeros(4, 4), torch.zeros(5, 4), None, v, torch.zeros(3, 5), 4)
    with pytest.raises(TypeError, match="logvar"):
        op(torch.zeros(2, 3, 4), torch.zeros(5, 4), None, [0.0] * 5, torch.zeros(2, 5))
    with pytest.raises(ValueError, match="finite"):
        op(torch.zeros(2, 3, 4), torch.zeros(5, 4), None, v, torch.full((2, 5), float("nan")))
    with pytest.raises(ValueError, match="finite"):
        op(torch.zeros(2, 3, 4), torch.zeros(5, 4), None, torch.full((5,), float("inf")), torch.zeros(2, 5))


# (N, n_l, C): n_l = 0, n_l = N, C = 1, and C = 0 (no enumerated row).
@pytest.mark.parametrize("N,n_l,C", [(5, 0, 3), (5, 5, 3), (6, 2, 1), (7, 3, 17), (4, 2, 0)])
@pytest.mark.parametrize("backend", COMPILED)
def test_fake_shapes(backend, N, n_l, C):
    """The custom ops' fakes give the layout's shapes, forward and backward: meta tensors, no kernel runs."""
    fused = registered(module, backend)
    meta = lambda *shape: torch.empty(*shape, device="meta", requires_grad=True)  # noqa: E731
    H, D, M = 6, 9, n_l + (N - n_l) * C
    h, weight, bias, logvar, x = meta(M, H), meta(D, H), meta(D), meta(D), meta(N, D)
    for store_s in (True, False):
        ll, s = fused.op(h, weight, bias, logvar, x, n_l, C, store_s, "ieee")
        assert ll.shape == (M,) and s.shape == ((M, D) if store_s else (0,))
    ll.sum().backward()
    assert h.grad.shape == (M, H) and weight.grad.shape == (D, H) and bias.grad.shape == (D,)
    assert logvar.grad.shape == (D,) and x.grad.shape == (N, D)
    grads = fused.backward_op(ll, h, weight, None, logvar, x, s, n_l, C, "ieee", False, True, True, False, False)
    assert [tuple(g.shape) for g in grads] == [(0,), (D, H), (0,), (0,), (0,)]


@pytest.mark.parametrize("backend", on_backends(*COMPILED))
def test_torch_library_opcheck(backend):
    def cases(r, grad, device):
        return ([(grad(6, 4), grad(6, 4), grad(6), grad(6), grad(2, 6), 0, 3, True, "ieee"),
                 (grad(4, 4), grad(6, 4), None, grad(6), r(2, 6), 1, 3, True, "ieee")],
                [(r(6), r(6, 4), r(6, 4), r(6), r(6), r(2, 6), r(6, 6), 0, 3, "ieee", True, True, True, True, True),
                 (r(4), r(4, 4), r(6, 4), None, r(6), r(2, 6), r(0), 1, 3, "ieee", True, True, False, True, True)])

    check_opcheck(module, backend, cases)


@pytest.mark.parametrize("backend", on_backends(*COMPILED))
def test_backward_op_without_stored_s_recomputes(backend):
    """The backward op given no s recomputes it: the gradients it gives with the stored s."""
    device, fused = device_of(backend), module.IMPLEMENTATIONS[backend]
    h, w, b, v, x = (leaf(t, torch.float64, device, requires_grad=False)
                     for t in (rand(2 + 2 * 3, 40, seed=12), rand(37, 40, seed=13, scale=0.3), rand(37, seed=14),
                               _logvar(37, 17), rand(4, 37, seed=15)))
    g = rand(2 + 2 * 3, seed=16).to(device)
    _, s = fused.op(h, w, b, v, x, 2, 3, True, "ieee")
    assert s.shape == (8, 37)
    needs = (True,) * 5
    stored = fused.backward_op(g, h, w, b, v, x, s, 2, 3, "ieee", *needs)
    recomputed = fused.backward_op(g, h, w, b, v, x, h.new_empty((0,)), 2, 3, "ieee", *needs)
    for a_, b_ in zip(stored, recomputed):
        torch.testing.assert_close(a_, b_, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("backend", on_backends(*RECOMPUTE_BACKENDS))
def test_recompute_setting_matches_torch(backend):
    """Under the backend's recompute setting the forward keeps nothing of size (rows, D); the backward
    recomputes s: the same results."""
    device = device_of(backend)
    h64, w64, b64 = rand(9, 19, seed=50), rand(37, 19, seed=51, scale=0.3), rand(37, seed=52)
    v64, x64 = _logvar(37, 53), rand(5, 37, seed=54)

    def make(dtype):
        return {"h": leaf(h64, dtype, device), "weight": leaf(w64, dtype, device), "bias": leaf(b64, dtype, device),
                "logvar": leaf(v64, dtype, device), "x": leaf(x64, dtype, device), "n_labelled": 3}

    kernels = module.IMPLEMENTATIONS.module(backend)
    with recompute_logits(backend):
        assert not kernels.keeps_s()
        check_op_against_torch(_op(backend), torch_face, make, device=device)
