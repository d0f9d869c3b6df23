"""`bernoulli_loglik_linear` (ssvae_fast/ops/bernoulli_loglik_linear.py) on every backend.

Against the plain-torch face (ll and the gradients of h, weight, bias and x, docs/design.md section 4's
rule): the every-class (N, C, H) form with strided h, column-major weight and strided x, the labelled-prefix
rows form (n_l labelled rows, then C per remaining example; also with no enumerated row), the recompute
settings (cpu, triton), a backward op given no s, extreme logits, zero-width H and D, gradcheck in float64,
half precision (bfloat16 on the cpu backend, bfloat16 and float16 on the GPU backends), the cpu backend
under torch.autocast against the torch face under the same autocast; the fakes and torch.library.opcheck of
the custom ops; the shape,
dtype and precision checks; int64 offsets (GPU only). The torch face itself against rows gathered by
enumeration. Shapes are per backend: tiny for Triton's interpreter, several tiles on cuda.
"""

from __future__ import annotations

import pytest
import torch

from ssvae_fast import backends
from ssvae_fast.ops import bernoulli_loglik_linear as module
from ssvae_fast.ops.bernoulli_loglik_linear import bernoulli_loglik_linear_torch as torch_face
from tests.op_checks import (COMPILED, EXTREME, GPU_BACKENDS, HAS_CUDA, RECOMPUTE_BACKENDS, backend_param,
                             check_bernoulli_labelled_prefix, check_op_against_torch, check_op_under_autocast,
                             check_opcheck, device_of, gemm_precision, gpu_precision_params, half_gemm_params,
                             labelled_prefix_rows, leaf, on_backends, op_of, outputs_and_grads, per_backend, rand,
                             recompute_logits, registered, strided_output_layer_inputs)

pytestmark = pytest.mark.usefixtures("exact_gemm")

# (backend, recompute): every backend's default, and the recompute setting where a backend has one.
RECOMPUTE_CASES = [(b, False) for b in COMPILED] + [(b, True) for b in RECOMPUTE_BACKENDS]


def _op(backend):
    return op_of(backend, module.OP)


# N, C, H, D. cuda: (13, 10, 70, 785) has 130 rows = 3 row tiles and 13 D tiles (the last one 17 wide),
# H = 70 not a multiple of either K step; (7, 2, 64, 64) exact tile multiples.
SHAPES = {
    "cpu": [(1, 1, 1, 1), (7, 10, 13, 37), (3, 17, 19, 785), (60, 10, 21, 43)],
    "triton": [(5, 7, 40, 150), (1, 1, 19, 37), (3, 17, 19, 37)],
    "cuda": [(5, 7, 40, 150), (1, 1, 19, 37), (3, 17, 19, 37), (13, 10, 70, 785), (7, 2, 64, 64)],
}


@pytest.mark.parametrize("x_grad", [True, False])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("backend,N,C,H,D", per_backend(SHAPES))
def test_matches_torch(backend, N, C, H, D, bias, x_grad):
    device = device_of(backend)
    h64, w64, b64 = rand(C, N, H, seed=13), rand(H, D, seed=14, scale=0.3), rand(D, seed=15)
    x64 = rand(N, 2 * D, seed=16, uniform=True)

    def make(dtype):
        return strided_output_layer_inputs(h64, w64, b64, x64, dtype, device, bias=bias, x_grad=x_grad)

    check_op_against_torch(_op(backend), torch_face, make, device=device)


# N, n_l, C, H, D: n_l = 0, n_l = N, N - n_l = 1, C = 1, C = 17. Triton: the interpreter's tiles (32 rows x
# 32 pixels x 16 hidden) are crossed by the labelled and unlabelled blocks. cuda: M = 9 to 730 rows (up to 12
# row tiles of 64), the prefix ending inside a row tile (37, 7, 30) and exactly on a tile edge (n_l = 64);
# D = 37 to 785 (partial last D tiles; 13 D tiles for 785); H = 19 to 70 (partial K steps of both kernels).
PREFIX_SHAPES = {
    "cpu": [(1, 1, 3, 5, 7), (5, 0, 3, 9, 11), (9, 4, 17, 13, 21), (64, 7, 10, 33, 97)],
    "triton": [(13, 5, 3, 19, 37), (11, 0, 3, 19, 37), (10, 10, 4, 19, 37), (9, 8, 5, 19, 37), (12, 9, 1, 19, 37),
               (5, 2, 17, 19, 37), (3, 2, 17, 19, 37)],
    "cuda": [(5, 0, 7, 40, 150), (9, 9, 3, 19, 37), (13, 12, 10, 70, 785), (20, 7, 17, 33, 100), (70, 30, 1, 19, 37),
             (40, 37, 10, 70, 150), (80, 64, 3, 24, 65), (100, 30, 10, 50, 200)],
}


@pytest.mark.parametrize("bias,x_grad", [(True, True), (False, False), (True, False), (False, True)])
@pytest.mark.parametrize("backend,N,n_l,C,H,D", per_backend(PREFIX_SHAPES))
def test_labelled_prefix(backend, N, n_l, C, H, D, bias, x_grad):
    check_bernoulli_labelled_prefix(backends.get_ops(backend), device_of(backend), N=N, n_l=n_l, C=C, H=H, D=D,
                                    bias=bias, x_grad=x_grad, seed=N + n_l)


@pytest.mark.parametrize("N,n_l,C", [(13, 5, 3), (9, 8, 5), (3, 2, 17), (10, 10, 4)])
@pytest.mark.parametrize("backend", on_backends(*RECOMPUTE_BACKENDS))
def test_labelled_prefix_recompute(backend, N, n_l, C):
    """Nothing of size (rows, D) kept: the backward recomputes the logits; same results."""
    with recompute_logits(backend):
        check_bernoulli_labelled_prefix(backends.get_ops(backend), device_of(backend), N=N, n_l=n_l, C=C, H=19, D=37,
                                        x_grad=True, seed=110 + N + n_l)


@pytest.mark.parametrize("backend", on_backends(*RECOMPUTE_BACKENDS))
def test_recompute_matches_torch(backend):
    device = device_of(backend)
    h64, w64, b64 = rand(4, 3, 40, seed=12), rand(150, 40, seed=13, scale=0.3), rand(150, seed=14)
    x64 = rand(4, 150, seed=15, uniform=True)

    def make(dtype):
        return {"h": leaf(h64, dtype, device), "weight": leaf(w64, dtype, device), "bias": leaf(b64, dtype, device),
                "x": leaf(x64, dtype, device)}

    with recompute_logits(backend):
        check_op_against_torch(_op(backend), torch_face, make, device=device)


@pytest.mark.parametrize("backend,recompute", [backend_param(b, r) for b, r in RECOMPUTE_CASES])
def test_labelled_prefix_without_enumerated_rows(backend, recompute):
    """M = n_l rows for N > n_l examples (C = 0: the unlabelled examples have no rows): no division by 0 in
    the kernels; ll has n_l entries and the unlabelled examples' x gradient is 0."""
    device = device_of(backend)
    N, n_l, H, D = 5, 3, 19, 37
    h64, w64, b64 = rand(n_l, H, seed=120), rand(D, H, seed=121), rand(D, seed=122)
    x64 = rand(N, D, seed=123, uniform=True)

    def make(dtype):
        return {"h": leaf(h64, dtype, device), "weight": leaf(w64, dtype, device), "bias": leaf(b64, dtype, device),
                "x": leaf(x64, dtype, device), "n_labelled": n_l}

    with recompute_logits(backend, recompute):
        got = outputs_and_grads(_op(backend), make(torch.float64))
        check_op_against_torch(_op(backend), torch_face, make, device=device)
    assert got["out0"].shape == (n_l,)
    assert torch.all(got["grad x"][n_l:] == 0)


@pytest.mark.parametrize("backend", on_backends(*COMPILED))
def test_backward_op_without_stored_s_recomputes(backend):
    """The backward op given no s (a forward run without grad, as under some tracing paths) recomputes it
    and gives the gradients it gives with the stored s (rows: 2 labelled, then 2 x 3), bit for bit where the
    backend recomputes s itself (Triton's recompute kernel instead sums in another order)."""
    device, fused = device_of(backend), module.IMPLEMENTATIONS[backend]
    h, w, b, x = (leaf(t, torch.float64, device, requires_grad=False)
                  for t in (rand(2 + 2 * 3, 40, seed=12), rand(150, 40, seed=13, scale=0.3), rand(150, seed=14),
                            rand(4, 150, seed=15, uniform=True)))
    g = rand(2 + 2 * 3, seed=16).to(device)
    _, s = fused.op(h, w, b, x, 2, 3, True, "ieee")
    assert s.shape == (8, 150)
    needs = (True, True, True, True)
    stored = fused.backward_op(g, h, w, b, x, s, 2, 3, "ieee", *needs)
    recomputed = fused.backward_op(g, h, w, b, x, h.new_empty((0,)), 2, 3, "ieee", *needs)
    for a_, b_ in zip(stored, recomputed):
        if backend == "triton":
            torch.testing.assert_close(a_, b_, rtol=1e-12, atol=1e-12)
        else:
            assert torch.equal(a_, b_)


@pytest.mark.parametrize("backend", on_backends(*COMPILED))
def test_extreme_logits(backend):
    # h[n, c, 0] = 1 and W[:, 0] = EXTREME make l[n, c, :] = EXTREME + small, |l| up to 1e4.
    device = device_of(backend)
    D, H, N, C = EXTREME.numel(), 3, 2, 3
    h64 = torch.zeros(N, C, H, dtype=torch.float64)
    h64[..., 0] = 1.0
    h64[..., 1] = rand(N, C, seed=21, scale=0.1)
    w64 = torch.zeros(D, H, dtype=torch.float64)
    w64[:, 0] = EXTREME
    w64[:, 1] = rand(D, seed=22)
    b64 = rand(D, seed=23, scale=0.1)
    x64 = rand(N, D, seed=24, uniform=True)

    def make(dtype):
        return {"h": leaf(h64, dtype, device), "weight": leaf(w64, dtype, device), "bias": leaf(b64, dtype, device),
                "x": leaf(x64, dtype, device)}

    check_op_against_torch(_op(backend), torch_face, make, device=device)


@pytest.mark.parametrize("backend,N,n_l,C,H,D", per_backend({"cpu": [(20, 7, 17, 33, 100)],
                                                            "triton": [(9, 4, 5, 19, 37)],
                                                            "cuda": [(20, 7, 17, 33, 100)]}))
def test_labelled_prefix_strided_inputs(backend, N, n_l, C, H, D):
    """2-D h with strided rows and columns, column-major W and x with stride 2 along D."""
    device = device_of(backend)
    M = n_l + (N - n_l) * C
    h64, w64, b64 = rand(H, M, seed=80), rand(H, D, seed=81, scale=0.3), rand(D, seed=82)
    x64 = rand(N, 2 * D, seed=83, uniform=True)

    def make(dtype):
        return {"h": leaf(h64, dtype, device).t().detach().requires_grad_(True),  # (M, H), strides (1, M)
                "weight": leaf(w64, dtype, device).t().detach().requires_grad_(True),
                "bias": leaf(b64, dtype, device),
                "x": leaf(x64, dtype, device)[:, ::2].detach().requires_grad_(True),
                "n_labelled": n_l}

    check_op_against_torch(_op(backend), torch_face, make, device=device)


@pytest.mark.parametrize("backend", on_backends("torch", *COMPILED))
def test_zero_width_sizes(backend):
    """Zero-width dimensions that are not rows: H = 0 (the logits are the bias), D = 0 (ll = 0)."""
    op, f64 = _op(backend), dict(dtype=torch.float64, device=device_of(backend))
    h, weight = torch.rand(2, 3, 0, **f64), torch.rand(5, 0, **f64)
    bias, x = torch.rand(5, **f64), torch.rand(2, 5, **f64)
    torch.testing.assert_close(op(h, weight, bias, x), torch_face(h, weight, bias, x))
    h, weight, x = torch.rand(2, 3, 4, **f64), torch.rand(0, 4, **f64), torch.rand(2, 0, **f64)
    assert torch.equal(op(h, weight, None, x), torch.zeros(2, 3, **f64))


# h, weight, bias, x shapes and n_labelled of each gradcheck: the every-class form with and without bias,
# and the rows form for n_l = 0 to N = 3 (then 3 rows per remaining example).
GRADCHECK_FORMS = {
    "every class": ((2, 3, 4), (6, 4), (6,), (2, 6), 0),
    "every class, no bias": ((2, 3, 4), (6, 4), None, (2, 6), 0),
    **{f"rows, n_l = {n_l}": ((n_l + (3 - n_l) * 3, 4), (6, 4), (6,), (3, 6), n_l) for n_l in range(4)},
}


@pytest.mark.parametrize("form", GRADCHECK_FORMS)
@pytest.mark.parametrize("backend,recompute", [backend_param("torch", False)]
                         + [backend_param(b, r) for b, r in RECOMPUTE_CASES])
def test_gradcheck_float64(backend, recompute, form):
    device, op = device_of(backend), _op(backend)
    g = torch.Generator().manual_seed(38)
    *shapes, n_l = GRADCHECK_FORMS[form]
    h, weight, bias = (None if s is None else torch.randn(*s, generator=g, dtype=torch.float64).to(device)
                       .requires_grad_(True) for s in shapes[:3])
    x = torch.rand(*shapes[3], generator=g, dtype=torch.float64).to(device).requires_grad_(True)
    with recompute_logits(backend, recompute):
        assert torch.autograd.gradcheck(lambda h, w, b, x: op(h, w, b, x, n_l), (h, weight, bias, x))


@pytest.mark.parametrize("backend", ["torch", *COMPILED])
def test_shape_errors(backend):
    """Shapes are checked first, on any device (before the backend's device and dtype rules)."""
    op = getattr(module, f"{module.OP}_{backend}")
    with pytest.raises(ValueError, match="x must be"):
        op(torch.rand(2, 3, 4), torch.rand(5, 4), None, torch.rand(3, 5))
    with pytest.raises(ValueError, match="n_labelled"):  # 8 rows cannot be 1 labelled + 2 examples x C
        op(torch.rand(8, 4), torch.rand(5, 4), None, torch.rand(3, 5), 1)
    with pytest.raises(ValueError, match="rows"):  # 1 + 2 * C rows for n_l = 1 of N = 3
        op(torch.zeros(4, 4), torch.zeros(5, 4), None, torch.zeros(3, 5), 1)
    with pytest.raises(ValueError, match="n_labelled must be in"):
        op(torch.zeros(4, 4), torch.zeros(5, 4), None, torch.zeros(3, 5), 4)
    with pytest.raises(ValueError, match="n_labelled applies to the 2-D"):
        op(torch.zeros(3, 2, 4), torch.zeros(5, 4), None, torch.zeros(3, 5), 1)
    with pytest.raises(ValueError, match="weight must be"):
        op(torch.zeros(3, 2, 4), torch.zeros(5, 3), None, torch.zeros(3, 5))
    with pytest.raises(ValueError, match="bias must be"):
        op(torch.zeros(3, 2, 4), torch.zeros(5, 4), torch.zeros(4), torch.zeros(3, 5))


@pytest.mark.parametrize("backend", on_backends(*COMPILED))
def test_dtype_and_precision_errors(backend):
    device = device_of(backend)
    h, weight, x = torch.rand(2, 3, 4, device=device), torch.rand(5, 4, device=device), torch.rand(2, 5, device=device)
    with pytest.raises(TypeError, match="one dtype"):
        _op(backend)(h, weight.double(), None, x)
    with pytest.raises(ValueError, match="precision"):
        _op(backend)(h, weight, None, x, precision="bf16")


# (N, n_l, C): n_l = 0, n_l = N, N - n_l = 1, C = 1, and C = 0 (no enumerated row).
LAYOUTS = [(5, 0, 3), (5, 5, 3), (5, 4, 3), (6, 2, 1), (7, 3, 17), (4, 2, 0)]


@pytest.mark.parametrize("N,n_l,C", LAYOUTS)
@pytest.mark.parametrize("backend", COMPILED)
def test_fake_shapes(backend, N, n_l, C):
    """The custom ops' fakes give the layout's shapes, forward (s only when stored) and backward, as the
    tracers see them: meta tensors, no kernel runs (no GPU needed)."""
    fused = registered(module, backend)
    meta = lambda *shape: torch.empty(*shape, device="meta", requires_grad=True)  # noqa: E731
    H, D, M = 6, 9, n_l + (N - n_l) * C
    h, weight, bias, x = meta(M, H), meta(D, H), meta(D), meta(N, D)
    for store_s in (True, False):
        ll, s = fused.op(h, weight, bias, x, n_l, C, store_s, "ieee")
        assert ll.shape == (M,) and s.shape == ((M, D) if store_s else (0,))
    ll.sum().backward()
    assert h.grad.shape == (M, H) and weight.grad.shape == (D, H) and bias.grad.shape == (D,)
    assert x.grad.shape == (N, D)
    grads = fused.backward_op(ll, h, weight, None, x, s, n_l, C, "ieee", False, True, True, False)
    assert [tuple(g.shape) for g in grads] == [(0,), (D, H), (0,), (0,)]


@pytest.mark.parametrize("backend", on_backends(*COMPILED))
def test_torch_library_opcheck(backend):
    def cases(r, grad, device):
        x = torch.rand(2, 6, generator=torch.Generator().manual_seed(35), dtype=torch.float64).to(device)
        return ([(grad(6, 4), grad(6, 4), grad(6), x.clone().requires_grad_(True), 0, 3, True, "ieee"),
                 (grad(4, 4), grad(6, 4), None, x, 1, 3, True, "ieee")],
                [(r(6), r(6, 4), r(6, 4), r(6), x, r(6, 6), 0, 3, "ieee", True, True, True, True),
                 (r(4), r(4, 4), r(6, 4), None, x, r(0), 1, 3, "ieee", True, True, False, True)])  # s recomputed

    check_opcheck(module, backend, cases)


def _half_inputs(form: str, device):
    """make(dtype) for the 16-bit tests: MNIST's D = 785 (one more than a multiple of 16; the cpu kernels' bf16
    rows take it in two blocks of at most 512), every class of 13 examples with H = 70, or 40 labelled rows and
    20 examples of 10 classes with H = 300 (two chunks of the cpu kernels' 256-element bf16 stage); ll and the
    gradients of h, weight, bias and x."""
    N, n_l, C, H, D = (13, 0, 10, 70, 785) if form == "every class" else (60, 40, 10, 300, 785)
    M = n_l + (N - n_l) * C
    h64, w64 = rand(M, H, seed=88), rand(D, H, seed=89, scale=0.3)
    b64, x64 = rand(D, seed=90), rand(N, D, seed=91, uniform=True)

    def make(dt):
        h = leaf(h64, dt, device)
        return {"h": h.view(N, C, H) if form == "every class" else h, "weight": leaf(w64, dt, device),
                "bias": leaf(b64, dt, device), "x": leaf(x64, dt, device),
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
    """Under torch.autocast(bfloat16), which casts every input to bf16 as for a linear layer (float32 ones, or
    a bf16 h from the previous GEMM): ll in float32 and the gradients in their inputs' dtypes, as the torch
    face's, and the tolerance rule against the torch face under the same autocast; s kept or recomputed."""
    device = device_of(backend)
    with recompute_logits(backend, recompute):
        check_op_under_autocast(_op(backend), torch_face, _half_inputs(form, device), half, device=device)


@pytest.mark.skipif(
    HAS_CUDA and torch.cuda.get_device_properties(0).total_memory < 40 * 2**30, reason="needs a GPU with 40 GB"
)
@pytest.mark.parametrize("n_l", [0, 5])
@pytest.mark.parametrize("backend", on_backends(*GPU_BACKENDS, gpu_only=True))
def test_int64_offsets(backend, n_l):
    """Outputs past 2**31 elements (M * D = 2.2e9): the last rows of ll and of the s buffer are right (int32
    offsets would wrap); every class of every example (n_l = 0) and a labelled prefix."""
    torch.manual_seed(0)
    N, C, D, H = 700_000, 4, 784, 16
    M = n_l + (N - n_l) * C
    h = torch.randn(M, H, device="cuda") * 0.3
    weight, bias = torch.randn(D, H, device="cuda") * 0.3, torch.randn(D, device="cuda")
    x = torch.rand(N, D, device="cuda")
    ll, s = module.IMPLEMENTATIONS[backend].op(h, weight, bias, x, n_l, C, True, "ieee")
    tail = slice(N - 3, N)  # the last 3 examples: the last 3 * C rows
    h_tail = h[-3 * C:].view(3, C, H).double()
    expected_ll = torch_face(h_tail, weight.double(), bias.double(), x[tail].double())
    torch.testing.assert_close(ll[-3 * C:].double(), expected_ll.flatten(), rtol=1e-5, atol=1e-3)
    logits = torch.nn.functional.linear(h_tail, weight.double(), bias.double())
    expected_s = (x[tail].double().unsqueeze(1) - torch.sigmoid(logits)).reshape(-1, D)
    torch.testing.assert_close(s[-3 * C:].double(), expected_s, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("N,n_l,C", [(5, 0, 3), (5, 5, 3), (5, 2, 3), (6, 5, 17), (3, 1, 1)])
def test_torch_face_equals_gathered_rows(N, n_l, C):
    """The torch face's labelled-prefix form (the spec of every backend's) equals the naive computation on
    rows gathered by enumeration, values and gradients, in float64."""
    g = torch.Generator().manual_seed(N * 100 + n_l * 10 + C)
    H, D = 7, 9
    classes = torch.randint(0, C, (n_l,), generator=g)
    examples, _ = labelled_prefix_rows(N, n_l, C, classes)
    h = torch.randn(examples.numel(), H, generator=g, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(D, H, generator=g, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(D, generator=g, dtype=torch.float64, requires_grad=True)
    x = (torch.rand(N, D, generator=g, dtype=torch.float64) < 0.4).double().requires_grad_(True)
    ll = torch_face(h, weight, bias, x, n_l)
    logits = h @ weight.t() + bias
    naive = (x[examples] * logits - torch.nn.functional.softplus(logits)).sum(-1)
    torch.testing.assert_close(ll, naive, rtol=1e-12, atol=1e-12)
    upstream = torch.randn(ll.shape, generator=g, dtype=torch.float64)
    leaves = (h, weight, bias, x)
    torch.testing.assert_close(torch.autograd.grad((ll * upstream).sum(), leaves),
                               torch.autograd.grad((naive * upstream).sum(), leaves), rtol=1e-11, atol=1e-11)
