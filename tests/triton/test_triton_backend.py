"""The `triton` backend: real kernels on a CUDA GPU, Triton's interpreter on a CPU (tests/conftest.py sets
TRITON_INTERPRET=1 when no GPU is visible). Shapes are tiny because the interpreter is slow; they are
picked to span several tiles of every kernel (the interpreter's block sizes are small on purpose).

- model level: `tests.equivalence.check_backend` (loss and every gradient against the reference, under
  docs/design.md section 4's rule) for labelled-only, unlabelled-only and mixed batches, float32 with IEEE
  `tl.dot` and float64;
- op level: each op against its plain-torch face (forward and every input's gradient), non-contiguous
  inputs, the labelled-prefix row layout (n_l one-class rows, then C rows per remaining example) of the
  class-conditional and Bernoulli ops, extreme values, empty inputs, gradcheck in float64, determinism;
- torch.compile traces the custom ops without graph breaks; M2(backend="triton") trains;
- GPU only (skipped on a CPU): TF32 and bf16 against the tolerance rule, CUDA-graph capture of a
  training step, int64 offsets past 2**31 elements.
"""

from __future__ import annotations

import pytest
import torch

from ssvae_fast import M2, backends
from ssvae_fast.ops.bernoulli_loglik_linear import bernoulli_loglik_linear_torch
from ssvae_fast.ops.class_conditional import class_conditional_activation_torch
from ssvae_fast.ops.elbo import elbo_reduction_torch
from ssvae_fast.ops.gaussian import gaussian_reparam_kl_torch
from tests import op_checks
from tests.equivalence import check_compile_fullgraph, check_autocast_bf16, check_backend, check_empty_inputs, run
from tests.factories import cast_model, make_batch, make_model

pytestmark = pytest.mark.skipif(
    backends.unavailable_reason("triton") is not None, reason=f"{backends.unavailable_reason('triton')}"
)

HAS_CUDA = torch.cuda.is_available()
DEVICE = "cuda" if HAS_CUDA else "cpu"
needs_cuda = pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")


@pytest.fixture(autouse=True)
def ieee_dot():
    """Exact fp32 products in the Bernoulli GEMM (TF32 is the GPU default; tested separately)."""
    import ssvae_fast.triton as st

    with st.set_input_precision("ieee"):
        yield


def _ops():
    return backends.get_ops("triton")


# ------------------------------------------------------------------------------------------------------
# Whole model against the reference.
# ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mix", ["labelled", "unlabelled", "mixed"])
@pytest.mark.parametrize("B,C", [(1, 2), (7, 17), (1, 17), (7, 2)])
def test_triton_backend_matches_reference(B, C, mix):
    # float32 against the rule, then float64 (all four kernels support fp64, tl.dot included).
    check_backend("triton", B, C, mix, device=DEVICE)


def test_triton_backend_larger_batch():
    check_backend("triton", 33, 10, "mixed", device=DEVICE)


@pytest.mark.parametrize("activation", ["softplus", "relu"])
def test_triton_backend_deeper_networks(activation):
    check_backend("triton", 7, 10, "mixed", hidden_layers=2, activation=activation, D=29, H=13, device=DEVICE)


def test_triton_backend_recompute_variant():
    """The flash-style Bernoulli backward (logits recomputed, nothing stored) agrees with the reference."""
    import ssvae_fast.triton as st

    with st.set_bernoulli_recompute(True):
        check_backend("triton", 7, 10, "mixed", device=DEVICE)
        check_backend("triton", 1, 2, "unlabelled", device=DEVICE)


def test_triton_backend_is_deterministic():
    """Two runs give bitwise-equal losses and gradients (no atomics anywhere)."""
    model = make_model(37, 10, 5, 19, device=DEVICE)
    batch = make_batch(model, 4, 5, device=DEVICE)
    first, second = run(model, "triton", batch), run(model, "triton", batch)
    for key in first:
        assert torch.equal(first[key], second[key]), key


# ------------------------------------------------------------------------------------------------------
# Op level: each op against its plain-torch face.
# ------------------------------------------------------------------------------------------------------
_rand = op_checks.rand


def _leaf(t64, dtype, requires_grad=True):
    return op_checks.leaf(t64, dtype, DEVICE, requires_grad)


def check_op_against_torch(fast_fn, torch_fn, make_inputs, *, dtypes=(torch.float32, torch.float64)):
    op_checks.check_op_against_torch(fast_fn, torch_fn, make_inputs, device=DEVICE, dtypes=dtypes)


@pytest.mark.parametrize("activation", ["softplus", "relu"])
@pytest.mark.parametrize("labelled", ["none", "all", "prefix"])
@pytest.mark.parametrize("N,H,C", [(13, 40, 5), (70, 19, 2)])
def test_class_conditional_matches_torch(N, H, C, labelled, activation):
    a64 = _rand(N, H, seed=1)
    weight64 = _rand(H, 11 + C, seed=2)  # [W_v | W_y]: w_y is a non-contiguous column slice
    n_l = {"none": 0, "all": N, "prefix": N // 2 + 1}[labelled]
    classes = torch.randint(0, C, (n_l,), generator=torch.Generator().manual_seed(3)).to(DEVICE)
    classes = None if labelled == "none" else classes

    def make(dtype):
        w_y = _leaf(weight64, dtype)[:, 11:].detach().requires_grad_(True)  # strides (11 + C, 1)
        assert not w_y.is_contiguous()
        return {"a": _leaf(a64, dtype), "w_y": w_y, "classes": classes, "activation": activation}

    ops = _ops()
    check_op_against_torch(ops.class_conditional_activation, class_conditional_activation_torch, make)


def test_class_conditional_non_contiguous_w_y_gradient_reaches_weight():
    """w_y arrives as weight[:, x_dim:], a strided view; its gradient lands in those columns of weight."""
    ops = _ops()
    weight = _leaf(_rand(19, 30 + 4, seed=4), torch.float64)
    a = _leaf(_rand(6, 19, seed=5), torch.float64)
    w_y = weight[:, 30:]
    assert w_y.stride() == (34, 1)
    out = ops.class_conditional_activation(a, w_y, None, "softplus")
    out.sum().backward()
    expected_out = class_conditional_activation_torch(a, weight[:, 30:], None, "softplus")
    expected = torch.autograd.grad(expected_out.sum(), weight)[0]
    torch.testing.assert_close(weight.grad, expected, rtol=1e-12, atol=1e-12)
    assert torch.all(weight.grad[:, :30] == 0)


# Labelled-prefix layout: n_l labelled examples (one row each) then C rows per remaining example, one
# batch of rows. Shapes: n_l = 0, n_l = N, one unlabelled example, C = 1, C = 17; the interpreter's
# tiles (8 examples x 16 hidden units; 32 rows x 32 pixels x 16 hidden) are crossed by the labelled and
# unlabelled blocks, H = 19 and D = 37.
LABELLED_PREFIX_SHAPES = [  # N, n_l, C
    (13, 5, 3),
    (11, 0, 3),
    (10, 10, 4),
    (9, 8, 5),
    (12, 9, 1),
    (5, 2, 17),
    (3, 2, 17),
]


@pytest.mark.parametrize("N,n_l,C", LABELLED_PREFIX_SHAPES)
@pytest.mark.parametrize("activation", ["softplus", "relu"])
def test_class_conditional_labelled_prefix(N, n_l, C, activation):
    op_checks.check_class_conditional_labelled_prefix(
        _ops(), DEVICE, N=N, n_l=n_l, H=19, C=C, activation=activation, seed=70 + N + n_l
    )


def test_class_conditional_labelled_prefix_strided_inputs_and_gradient():
    """Prefix layout with a strided a, w_y a column slice of the weight, and upstream gradients that are
    a transposed tensor and an expanded one (out.sum()): da and dw_y equal the torch op's."""
    N, n_l, H, C = 11, 4, 19, 3
    R = n_l + (N - n_l) * C
    classes = torch.tensor([2, 0, 1, 2], device=DEVICE)
    weight = _leaf(_rand(H, 7 + C, seed=80), torch.float64)
    a_t = _leaf(_rand(H, N, seed=81), torch.float64)
    grad_t = _rand(H, R, seed=82).to(DEVICE)

    def outputs_and_grads(fn):
        out = fn(a_t.t(), weight[:, 7:], classes, "softplus")
        assert out.shape == (R, H)
        transposed = torch.autograd.grad(out, (a_t, weight), grad_t.t(), retain_graph=True)  # strides (1, R)
        expanded = torch.autograd.grad(out.sum(), (a_t, weight))  # upstream strides (0, 0)
        return (out, *transposed, *expanded)

    got = outputs_and_grads(_ops().class_conditional_activation)
    for g, e in zip(got, outputs_and_grads(class_conditional_activation_torch)):
        torch.testing.assert_close(g, e, rtol=1e-12, atol=1e-12)
    assert torch.all(got[2][:, :7] == 0)  # w_y's gradient lands in its columns only


@pytest.mark.parametrize("N,n_l,C", LABELLED_PREFIX_SHAPES)
@pytest.mark.parametrize("bias,x_grad", [(True, True), (False, False)])
def test_bernoulli_linear_labelled_prefix(N, n_l, C, bias, x_grad):
    op_checks.check_bernoulli_labelled_prefix(
        _ops(), DEVICE, N=N, n_l=n_l, C=C, H=19, D=37, bias=bias, x_grad=x_grad, seed=90 + N + n_l
    )


@pytest.mark.parametrize("N,n_l,C", [(13, 5, 3), (9, 8, 5), (3, 2, 17), (10, 10, 4)])
def test_bernoulli_linear_labelled_prefix_recompute(N, n_l, C):
    import ssvae_fast.triton as st

    with st.set_bernoulli_recompute(True):
        op_checks.check_bernoulli_labelled_prefix(
            _ops(), DEVICE, N=N, n_l=n_l, C=C, H=19, D=37, x_grad=True, seed=110 + N + n_l
        )


@pytest.mark.parametrize("recompute", [False, True])
def test_bernoulli_linear_labelled_prefix_no_enumerated_rows(recompute):
    """M = n_l rows for N > n_l examples (C = 0: the unlabelled examples have no rows): no division by
    0 in the kernels; ll has n_l entries and the unlabelled examples' x gradient is 0."""
    import ssvae_fast.triton as st

    N, n_l, H, D = 5, 3, 19, 37
    h64, w64, b64, x64 = _rand(n_l, H, seed=120), _rand(D, H, seed=121), _rand(D, seed=122), _rand(N, D, seed=123)

    def make(dtype):
        return {"h": _leaf(h64, dtype), "weight": _leaf(w64, dtype), "bias": _leaf(b64, dtype),
                "x": _leaf(x64, dtype), "n_labelled": n_l}

    with st.set_bernoulli_recompute(recompute):
        got = op_checks.outputs_and_grads(_ops().bernoulli_loglik_linear, make(torch.float64))
        check_op_against_torch(_ops().bernoulli_loglik_linear, bernoulli_loglik_linear_torch, make)
    assert got["out0"].shape == (n_l,)
    assert torch.all(got["grad x"][n_l:] == 0)


@pytest.mark.parametrize("R,Z", [(37, 5), (9, 70)])
def test_gaussian_matches_torch(R, Z):
    head64 = _rand(R, 2 * Z, seed=6)
    eps64 = _rand(Z, R, seed=7)

    def make(dtype):
        eps = _leaf(eps64, dtype)
        eps_t = eps.t().detach().requires_grad_(True)  # (R, Z), strides (1, R): non-contiguous
        return {"head": _leaf(head64, dtype), "eps": eps_t}

    check_op_against_torch(_ops().gaussian_reparam_kl, gaussian_reparam_kl_torch, make)


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("N,C,D,H", [(5, 7, 150, 40), (1, 1, 37, 19), (3, 17, 37, 19)])
def test_bernoulli_linear_matches_torch(N, C, D, H, bias):
    h64 = _rand(C, N, H, seed=8)
    w64 = _rand(H, D, seed=9, scale=0.3)
    b64 = _rand(D, seed=10)
    x64 = _rand(N, 2 * D, seed=11, uniform=True)

    def make(dtype):
        return {
            "h": _leaf(h64, dtype).transpose(0, 1).detach().requires_grad_(True),  # (N, C, H), rows strided
            "weight": _leaf(w64, dtype).t().detach().requires_grad_(True),  # (D, H), column-major
            "bias": _leaf(b64, dtype) if bias else None,
            "x": _leaf(x64, dtype)[:, ::2].detach().requires_grad_(True),  # (N, D), stride 2 along D
        }

    check_op_against_torch(_ops().bernoulli_loglik_linear, bernoulli_loglik_linear_torch, make)


def test_bernoulli_linear_recompute_matches_torch():
    import ssvae_fast.triton as st

    h64, w64, b64, x64 = _rand(4, 3, 40, seed=12), _rand(150, 40, seed=13, scale=0.3), _rand(150, seed=14), _rand(
        4, 150, seed=15, uniform=True
    )

    def make(dtype):
        return {"h": _leaf(h64, dtype), "weight": _leaf(w64, dtype), "bias": _leaf(b64, dtype), "x": _leaf(x64, dtype)}

    with st.set_bernoulli_recompute(True):
        check_op_against_torch(_ops().bernoulli_loglik_linear, bernoulli_loglik_linear_torch, make)


@pytest.mark.parametrize("n_l,n_u,C", [(5, 9, 2), (5, 9, 17), (50, 90, 17), (0, 6, 10), (6, 0, 10)])
def test_elbo_matches_torch(n_l, n_u, C):
    logits64 = _rand(n_l + n_u, C, seed=16, scale=2.0)
    y_l = torch.randint(0, C, (n_l,), generator=torch.Generator().manual_seed(17)).to(DEVICE)
    ll_l64, kl_l64 = _rand(n_l, seed=18, scale=30.0), _rand(n_l, seed=19, uniform=True, scale=5.0)
    ll_u64, kl_u64 = _rand(C, n_u, seed=20, scale=30.0), _rand(n_u, C, seed=21, uniform=True, scale=5.0)

    def make(dtype):
        return {
            "logits_y": _leaf(logits64, dtype),
            "y_l": y_l,
            "ll_l": _leaf(ll_l64, dtype),
            "kl_l": _leaf(kl_l64, dtype),
            "ll_u": _leaf(ll_u64, dtype).t().detach().requires_grad_(True),  # non-contiguous
            "kl_u": _leaf(kl_u64, dtype),
            "alpha": 1.3,
        }

    check_op_against_torch(_ops().elbo_reduction, elbo_reduction_torch, make)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_ops_match_torch(dtype):
    """bf16/fp16 inputs, fp32 accumulation, outputs in the input dtype, under the tolerance rule. The
    Bernoulli op needs a half-precision tl.dot, which the interpreter lacks: GPU only."""
    ops, dtypes = _ops(), (dtype,)
    a64, w64 = _rand(13, 40, seed=40), _rand(40, 16, seed=41)
    classes = torch.randint(0, 5, (13,), generator=torch.Generator().manual_seed(42)).to(DEVICE)
    for cls in (None, classes, classes[:6]):
        check_op_against_torch(
            ops.class_conditional_activation, class_conditional_activation_torch,
            lambda dt: {"a": _leaf(a64, dt), "w_y": _leaf(w64, dt)[:, 11:], "classes": cls, "activation": "softplus"},
            dtypes=dtypes,
        )
    head64, eps64 = _rand(37, 10, seed=43), _rand(37, 5, seed=44)
    check_op_against_torch(
        ops.gaussian_reparam_kl, gaussian_reparam_kl_torch,
        lambda dt: {"head": _leaf(head64, dt), "eps": _leaf(eps64, dt)}, dtypes=dtypes,
    )
    logits64, ll_l64, kl_l64 = _rand(14, 10, seed=45), _rand(5, seed=46, scale=30.0), _rand(5, seed=47, uniform=True)
    ll_u64, kl_u64 = _rand(9, 10, seed=48, scale=30.0), _rand(9, 10, seed=49, uniform=True)
    y_l = torch.randint(0, 10, (5,), generator=torch.Generator().manual_seed(50)).to(DEVICE)
    check_op_against_torch(
        ops.elbo_reduction, elbo_reduction_torch,
        lambda dt: {"logits_y": _leaf(logits64, dt), "y_l": y_l, "ll_l": _leaf(ll_l64, dt), "kl_l": _leaf(kl_l64, dt),
                    "ll_u": _leaf(ll_u64, dt), "kl_u": _leaf(kl_u64, dt), "alpha": 1.3},
        dtypes=dtypes,
    )
    if HAS_CUDA:
        h64, wo64, b64, x64 = _rand(5, 7, 40, seed=51), _rand(150, 40, seed=52, scale=0.3), _rand(150, seed=53), _rand(
            5, 150, seed=54, uniform=True)
        check_op_against_torch(
            ops.bernoulli_loglik_linear, bernoulli_loglik_linear_torch,
            lambda dt: {"h": _leaf(h64, dt), "weight": _leaf(wo64, dt), "bias": _leaf(b64, dt), "x": _leaf(x64, dt)},
            dtypes=dtypes,
        )


def test_autocast_promotes_mixed_elementwise_inputs():
    """Under torch.autocast a bf16 activation meets float32 parameters: the elementwise ops run in the wider
    dtype, as torch's own elementwise ops do, and equal the float32 call; outside autocast mixed dtypes are
    refused. (The Bernoulli op casts to the autocast dtype instead: a bf16 tl.dot, GPU only, covered by
    test_autocast_bf16_model_against_tolerance_rule.)"""
    ops = _ops()
    bf = lambda t: t.to(torch.bfloat16)  # noqa: E731
    r = lambda *shape, seed: _rand(*shape, seed=seed).float().to(DEVICE)  # noqa: E731
    a, w_y = r(5, 12, seed=60), r(12, 3, seed=61)
    head, eps = r(6, 8, seed=62), r(6, 4, seed=63)
    logits = r(5, 3, seed=64)
    y_l = torch.tensor([2, 0], device=DEVICE)
    ll_l, kl_l, ll_u, kl_u = (r(*s, seed=65 + i) for i, s in enumerate([(2,), (2,), (3, 3), (3, 3)]))
    calls = {
        "class_conditional_activation": lambda cast: ops.class_conditional_activation(cast(a), w_y, None, "softplus"),
        "gaussian_reparam_kl": lambda cast: ops.gaussian_reparam_kl(cast(head), eps),
        "elbo_reduction": lambda cast: ops.elbo_reduction(cast(logits), y_l, ll_l, kl_l, ll_u, kl_u, 2.0),
    }
    for name, call in calls.items():
        with torch.autocast(DEVICE, dtype=torch.bfloat16):
            got = call(bf)
        expected = call(lambda t: bf(t).float())
        for g, e in zip(got if isinstance(got, tuple) else (got,), expected if isinstance(expected, tuple) else (expected,)):
            assert g.dtype == torch.float32 and torch.equal(g, e), name
        with pytest.raises(TypeError, match="one dtype"):
            call(bf)


@needs_cuda
def test_autocast_bf16_model_against_tolerance_rule():
    import ssvae_fast.triton as st

    check_autocast_bf16("triton", DEVICE, st.set_input_precision("tf32"))


# ------------------------------------------------------------------------------------------------------
# Extreme values: finite, and equal to the torch formula.
# ------------------------------------------------------------------------------------------------------
EXTREME = torch.tensor([-1e4, -100.0, -30.0, -1.0, -1e-3, 0.0, 1e-3, 1.0, 30.0, 100.0, 1e4], dtype=torch.float64)


def test_bernoulli_linear_extreme_logits():
    # h[n, c, 0] = 1 and W[:, 0] = EXTREME make l[n, c, :] = EXTREME + b with |l| up to 1e4.
    D, H, N, C = EXTREME.numel(), 3, 2, 3
    h64 = torch.zeros(N, C, H, dtype=torch.float64)
    h64[..., 0] = 1.0
    h64[..., 1] = _rand(N, C, seed=22, scale=0.1)
    w64 = torch.zeros(D, H, dtype=torch.float64)
    w64[:, 0] = EXTREME
    w64[:, 1] = _rand(D, seed=23)
    b64 = _rand(D, seed=24, scale=0.1)
    x64 = _rand(N, D, seed=25, uniform=True)

    def make(dtype):
        return {"h": _leaf(h64, dtype), "weight": _leaf(w64, dtype), "bias": _leaf(b64, dtype), "x": _leaf(x64, dtype)}

    check_op_against_torch(_ops().bernoulli_loglik_linear, bernoulli_loglik_linear_torch, make)


@pytest.mark.parametrize("indexed", [False, True])
def test_class_conditional_extreme_preactivations(indexed):
    a64 = EXTREME.repeat(3, 1)  # (3, 11)
    w64 = _rand(11, 4, seed=26, scale=1e-2)
    classes = torch.tensor([0, 3, 1], device=DEVICE) if indexed else None

    def make(dtype):
        return {"a": _leaf(a64, dtype), "w_y": _leaf(w64, dtype), "classes": classes, "activation": "softplus"}

    check_op_against_torch(_ops().class_conditional_activation, class_conditional_activation_torch, make)


def test_gaussian_extreme_logvar():
    op_checks.check_gaussian_extreme_logvar(_ops(), DEVICE, seed=27)


def test_elbo_extreme_logits():
    op_checks.check_elbo_extreme_logits(_ops(), EXTREME, DEVICE, seed=29)


# ------------------------------------------------------------------------------------------------------
# Empty inputs: right shapes, zero gradients.
# ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_empty_inputs(dtype):
    check_empty_inputs(_ops(), dtype, DEVICE)


# ------------------------------------------------------------------------------------------------------
# gradcheck in float64 (finite differences through the kernels).
# ------------------------------------------------------------------------------------------------------
def test_gradcheck_float64():
    ops = _ops()
    f64 = dict(dtype=torch.float64, device=DEVICE)
    g = torch.Generator(device=DEVICE).manual_seed(33)
    r = lambda *s: torch.randn(*s, generator=g, **f64).requires_grad_(True)  # noqa: E731

    a, weight = r(3, 5), r(5, 7)
    classes = torch.tensor([2, 0, 1], device=DEVICE)
    for act in ("softplus", "relu"):
        for cls in (None, classes, classes[:1]):  # every class, one class per row, labelled prefix
            fn = lambda a, w: ops.class_conditional_activation(a, w[:, 4:], cls, act)  # noqa: E731
            assert torch.autograd.gradcheck(fn, (a, weight))
    assert torch.autograd.gradcheck(ops.gaussian_reparam_kl, (r(3, 4), r(3, 2)))
    x = torch.rand(2, 6, generator=g, **f64).requires_grad_(True)
    assert torch.autograd.gradcheck(ops.bernoulli_loglik_linear, (r(2, 3, 4), r(6, 4), r(6), x))
    assert torch.autograd.gradcheck(ops.bernoulli_loglik_linear, (r(2, 3, 4), r(6, 4), None, x))
    x3 = torch.rand(3, 6, generator=g, **f64).requires_grad_(True)
    prefix = lambda h, w, b, x: ops.bernoulli_loglik_linear(h, w, b, x, 1)  # noqa: E731  1 + 2 * 3 rows
    assert torch.autograd.gradcheck(prefix, (r(7, 4), r(6, 4), r(6), x3))
    y_l = torch.tensor([1, 0], device=DEVICE)
    assert torch.autograd.gradcheck(
        lambda lg, a, b, c, d: ops.elbo_reduction(lg, y_l, a, b, c, d, 0.9), (r(5, 3), r(2), r(2), r(3, 3), r(3, 3))
    )


# ------------------------------------------------------------------------------------------------------
# Errors.
# ------------------------------------------------------------------------------------------------------
def test_launcher_errors():
    ops = _ops()
    f32 = dict(dtype=torch.float32, device=DEVICE)
    with pytest.raises(TypeError, match="one dtype"):
        ops.bernoulli_loglik_linear(torch.rand(2, 3, 4, **f32), torch.rand(5, 4, dtype=torch.float64, device=DEVICE),
                                    None, torch.rand(2, 5, **f32))
    with pytest.raises(TypeError, match="int64"):
        ops.class_conditional_activation(torch.rand(2, 4, **f32), torch.rand(4, 3, **f32),
                                         torch.tensor([0, 1], dtype=torch.int32, device=DEVICE), "relu")
    with pytest.raises(ValueError, match="activation"):
        ops.class_conditional_activation(torch.rand(2, 4, **f32), torch.rand(4, 3, **f32), None, "tanh")
    with pytest.raises(ValueError, match="eps must be"):
        ops.gaussian_reparam_kl(torch.rand(2, 4, **f32), torch.rand(2, 3, **f32))
    import ssvae_fast.triton as st

    with pytest.raises(ValueError, match="input_precision"):
        st.set_input_precision("bf16")


# ------------------------------------------------------------------------------------------------------
# torch.compile and training.
# ------------------------------------------------------------------------------------------------------
def test_torch_compile_fullgraph_through_custom_ops():
    check_compile_fullgraph("triton", DEVICE)


def test_torch_compile_model_loss_has_no_break_in_fused_ops():
    """torch._dynamo.explain(model.loss): no graph break inside the fused ops (breaks, if any, may only
    come from backend resolution in model.py/backends.py, outside the ops)."""
    model = make_model(13, 3, 4, 11, device=DEVICE)
    model.backend = "triton"
    batch = make_batch(model, 2, 3, device=DEVICE)

    def loss(x_l, y_l, x_u, eps_l, eps_u):
        return model.loss(x_l, y_l, x_u, alpha=1.0, eps_l=eps_l, eps_u=eps_u)

    torch._dynamo.reset()
    explanation = torch._dynamo.explain(loss)(*batch.args())
    for reason in explanation.break_reasons:
        files = [frame.filename for frame in reason.user_stack]
        assert not any(f.endswith(("fused.py", "triton_ops.py")) for f in files), reason.reason


def test_m2_trains_with_triton_backend():
    torch.manual_seed(0)
    model = M2(37, 3, 5, hidden=(19,), backend="triton").to(DEVICE)
    assert model.resolved_backend() == "triton"
    g = torch.Generator().manual_seed(1)
    x_l, x_u = torch.rand(6, 37, generator=g).to(DEVICE), torch.rand(6, 37, generator=g).to(DEVICE)
    y_l = torch.randint(0, 3, (6,), generator=g).to(DEVICE)
    eps_l, eps_u = torch.randn(6, 5, generator=g).to(DEVICE), torch.randn(6, 3, 5, generator=g).to(DEVICE)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(8):
        optimizer.zero_grad()
        loss = model.loss(x_l, y_l, x_u, alpha=1.0, eps_l=eps_l, eps_u=eps_u)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < losses[0] - 1.0, losses


# ------------------------------------------------------------------------------------------------------
# GPU only.
# ------------------------------------------------------------------------------------------------------
@needs_cuda
def test_gpu_tf32_against_tolerance_rule():
    """Default GPU precision: TF32 products in the Bernoulli GEMM. The reference runs with TF32 matmuls too
    (allow_tf32), so the rule compares like with like: no worse than twice the TF32 reference's error."""
    import ssvae_fast.triton as st

    previous = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = True
    try:
        with st.set_input_precision("tf32"):
            check_backend("triton", 33, 10, "mixed", device="cuda", check_float64=False)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = previous


@needs_cuda
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_gpu_half_precision_against_tolerance_rule(dtype):
    check_backend("triton", 33, 10, "mixed", dtype=dtype, device="cuda", check_float64=False)


@needs_cuda
def test_gpu_cuda_graph_training_step():
    """A whole training step (loss, backward, SGD step) captured in a CUDA graph and replayed matches eager."""
    model = make_model(37, 10, 5, 19, device="cuda")
    model.backend = "triton"
    twin = cast_model(model, torch.float32)
    batch = make_batch(model, 8, 8, device="cuda")
    static = [t.clone() for t in batch.args()]

    def step(m, opt, args):
        opt.zero_grad(set_to_none=False)
        x_l, y_l, x_u, eps_l, eps_u = args
        loss = m.loss(x_l, y_l, x_u, alpha=1.0, eps_l=eps_l, eps_u=eps_u)
        loss.backward()
        opt.step()
        return loss

    opt = torch.optim.SGD(model.parameters(), lr=1e-2)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up: autotuning and allocations outside the capture
        for _ in range(3):
            step(model, opt, static)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_loss = step(model, opt, static)

    opt_twin = torch.optim.SGD(twin.parameters(), lr=1e-2)
    for _ in range(3):
        step(twin, opt_twin, static)
    for _ in range(2):
        graph.replay()
        eager_loss = step(twin, opt_twin, static)
        torch.cuda.synchronize()
        torch.testing.assert_close(static_loss, eager_loss, rtol=1e-5, atol=1e-5)
    for p, q in zip(model.parameters(), twin.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


@needs_cuda
@pytest.mark.skipif(
    HAS_CUDA and torch.cuda.get_device_properties(0).total_memory < 40 * 2**30, reason="needs a GPU with 40 GB"
)
def test_gpu_int64_offsets():
    """Outputs past 2**31 elements: the last rows of the Bernoulli s buffer and the class-conditional
    (N, C, H) output are right (int32 offsets would wrap)."""
    torch.manual_seed(0)
    N, C, D, H = 700_000, 4, 784, 16  # M * D = 2.2e9 > 2**31
    h = torch.randn(N, C, H, device="cuda") * 0.3
    weight, bias = torch.randn(D, H, device="cuda") * 0.3, torch.randn(D, device="cuda")
    x = torch.rand(N, D, device="cuda")
    ll, s = torch.ops.ssvae_fast.bernoulli_loglik_linear_triton(h.view(N * C, H), weight, bias, x, 0, C, True)
    ll = ll.view(N, C)
    tail = slice(N - 3, N)
    logits = torch.nn.functional.linear(h[tail].double(), weight.double(), bias.double())
    torch.testing.assert_close(ll[tail].double(), bernoulli_loglik_linear_torch(h[tail].double(), weight.double(),
                                                                                  bias.double(), x[tail].double()),
                               rtol=1e-5, atol=1e-3)
    expected_s = (x[tail].double().unsqueeze(1) - torch.sigmoid(logits)).reshape(-1, D)
    torch.testing.assert_close(s[-3 * C:].double(), expected_s, rtol=1e-4, atol=1e-5)
    del ll, s, h, x

    N, C, H = 1_100_000, 4, 512  # N * C * H = 2.25e9 > 2**31
    a, w_y = torch.randn(N, H, device="cuda"), torch.randn(H, C, device="cuda")
    out = _ops().class_conditional_activation(a, w_y, None, "relu")
    torch.testing.assert_close(out[-2:], torch.relu(a[-2:, None, :] + w_y.t()[None]))
    del out
    classes = torch.tensor([3, 1], device="cuda")  # labelled prefix: 2 + (N - 2) * C rows, past 2**31 elements
    out = _ops().class_conditional_activation(a, w_y, classes, "relu")
    torch.testing.assert_close(out[:2], torch.relu(a[:2] + w_y.t()[classes]))
    torch.testing.assert_close(out[-C:], torch.relu(a[-1:] + w_y.t()))


@pytest.mark.skipif(HAS_CUDA, reason="the interpreter compatibility shim applies only under TRITON_INTERPRET=1")
def test_interpreter_scalar_loop_bound_compat(monkeypatch):
    """A runtime int argument works as a loop bound with an interpreter that converts it the way triton 3.6's
    does (int() of its shape-(1,) array, refused by numpy >= 2.4): the shim installed by ssvae_fast.triton
    reads the one element, and the interpreter's patch scope still restores tensor.__index__ after a launch."""
    import numpy as np
    import triton.language as tl
    from triton.runtime import interpreter

    import ssvae_fast.triton as st

    had_index = "__index__" in vars(tl.core.tensor)

    def patch_lang_as_in_triton_3_6(fn):
        scope = interpreter._LangPatchScope()
        scope.set_attr(tl.core.tensor, "__index__", lambda self: int(self.handle.data))
        return scope

    monkeypatch.setattr(interpreter, "_patch_lang", patch_lang_as_in_triton_3_6)
    st._interpreter_scalar_index_compat()
    assert interpreter._patch_lang is not patch_lang_as_in_triton_3_6
    scope = interpreter._patch_lang(None)
    bound = tl.core.tensor(interpreter.TensorHandle(np.array([7], dtype=np.int32), tl.int32), tl.int32)
    assert list(range(0, bound, 3)) == [0, 3, 6]
    scope.restore()
    assert ("__index__" in vars(tl.core.tensor)) == had_index
