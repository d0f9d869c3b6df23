"""The `cpu` backend (C++/OpenMP kernels of ssvae_fast._C, GEMMs by torch) against the reference.

- model level: `tests.equivalence.check_backend` (loss and the gradient of every parameter and input
  against the reference, docs/design.md section 4's rule) over SHAPES x MIXES in float32 and float64, deeper
  networks, relu;
- op level: each op against its plain-torch face (forward and every input's gradient) on odd shapes,
  shapes large enough for the parallel paths, a non-contiguous w_y, extreme values, empty inputs, the
  no-grad (chunked) and recompute paths of the Bernoulli op; gradcheck in float64;
- bitwise determinism of loss + backward run to run, and of the kernels across thread counts;
- M2(backend="cpu") trains; torch.compile traces the custom ops (fullgraph, forward and backward).
"""

from __future__ import annotations

import pytest
import torch

from ssvae_fast import M2, _ext, backends
from ssvae_fast.ops.bernoulli_loglik_linear import bernoulli_loglik_linear_torch
from ssvae_fast.ops.class_conditional import class_conditional_activation_torch
from ssvae_fast.ops.elbo import elbo_reduction_torch
from ssvae_fast.ops.gaussian import gaussian_reparam_kl_torch
from tests import op_checks
from tests.equivalence import check_compile_fullgraph, MIXES, SHAPES, check_backend, check_empty_inputs, run
from tests.factories import make_batch, make_model
from tests.tolerance import assert_close_to_reference

pytestmark = pytest.mark.skipif(
    not _ext.HAS_EXT,
    reason=f"the compiled extension ssvae_fast._C is not built ({_ext.EXT_IMPORT_ERROR}); run `pip install -e .`",
)


def _ops():
    return backends.get_ops("cpu")


def _cpu_backend():
    from ssvae_fast.ops import cpu_backend

    return cpu_backend


# ------------------------------------------------------------------------------------------------------
# Whole model against the reference.
# ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mix", MIXES)
@pytest.mark.parametrize("B,C", SHAPES)
def test_cpu_backend_matches_reference(B, C, mix):
    check_backend("cpu", B, C, mix)  # float32 under the rule, then float64


@pytest.mark.parametrize("activation", ["softplus", "relu"])
def test_cpu_backend_deeper_networks(activation):
    check_backend("cpu", 7, 10, "mixed", hidden_layers=2, activation=activation, D=29, H=13)


def test_cpu_backend_parallel_sizes():
    """Sizes past every kernel's serial threshold (32768 elements) and several reduction blocks."""
    check_backend("cpu", 40, 10, "mixed", D=97, H=90, Z=8, check_float64=False)


def test_cpu_backend_recompute_variant():
    """Nothing of size (N*C, D) kept: the backward recomputes the logits; same results."""
    with _cpu_backend().recompute_bernoulli_logits():
        check_backend("cpu", 7, 10, "mixed")


def test_cpu_backend_is_deterministic():
    """Two runs of loss + backward give bitwise-equal losses and gradients."""
    model = make_model(97, 10, 8, 90)
    batch = make_batch(model, 6, 34)
    first, second = run(model, "cpu", batch), run(model, "cpu", batch)
    for key in first:
        assert torch.equal(first[key], second[key]), key


# ------------------------------------------------------------------------------------------------------
# Op level: each op against its plain-torch face.
# ------------------------------------------------------------------------------------------------------
_rand = op_checks.rand


def _leaf(t64, dtype, requires_grad=True):
    return op_checks.leaf(t64, dtype, "cpu", requires_grad)


def check_op_against_torch(fast_fn, torch_fn, make_inputs, *, dtypes=(torch.float32, torch.float64)):
    op_checks.check_op_against_torch(fast_fn, torch_fn, make_inputs, device="cpu", dtypes=dtypes)


@pytest.mark.parametrize("activation", ["softplus", "relu"])
@pytest.mark.parametrize("indexed", [False, True])
@pytest.mark.parametrize("N,H,C", [(1, 1, 2), (13, 37, 17), (70, 129, 10)])
def test_class_conditional_matches_torch(N, H, C, indexed, activation):
    a64 = _rand(N, H, seed=1, scale=3.0)
    weight64 = _rand(H, 11 + C, seed=2)  # [W_v | W_y]: w_y is a non-contiguous column slice
    classes = torch.randint(0, C, (N,), generator=torch.Generator().manual_seed(3)) if indexed else None

    def make(dtype):
        w_y = _leaf(weight64, dtype)[:, 11:].detach().requires_grad_(True)
        assert H == 1 or not w_y.is_contiguous()
        return {"a": _leaf(a64, dtype), "w_y": w_y, "classes": classes, "activation": activation}

    check_op_against_torch(_ops().class_conditional_activation, class_conditional_activation_torch, make)


@pytest.mark.parametrize("activation", ["softplus", "relu"])
@pytest.mark.parametrize("N,n_l,H,C", [(1, 0, 3, 2), (1, 1, 3, 2), (9, 4, 13, 17), (70, 7, 129, 10), (70, 69, 33, 1)])
def test_class_conditional_labelled_prefix(N, n_l, H, C, activation):
    op_checks.check_class_conditional_labelled_prefix(_ops(), "cpu", N=N, n_l=n_l, H=H, C=C,
                                                      activation=activation, seed=N + n_l)


@pytest.mark.parametrize("x_grad", [False, True])
@pytest.mark.parametrize("N,n_l,C,H,D", [(1, 1, 3, 5, 7), (5, 0, 3, 9, 11), (9, 4, 17, 13, 21), (64, 7, 10, 33, 97)])
def test_bernoulli_linear_labelled_prefix(N, n_l, C, H, D, x_grad):
    op_checks.check_bernoulli_labelled_prefix(_ops(), "cpu", N=N, n_l=n_l, C=C, H=H, D=D, bias=N % 2 == 1,
                                              x_grad=x_grad, seed=N + C)


def test_class_conditional_gradient_reaches_weight_columns():
    """w_y arrives as weight[:, x_dim:], a strided view; its gradient lands in those columns of weight."""
    ops = _ops()
    weight = _leaf(_rand(19, 30 + 4, seed=4), torch.float64)
    a = _leaf(_rand(6, 19, seed=5), torch.float64)
    ops.class_conditional_activation(a, weight[:, 30:], None, "softplus").sum().backward()
    expected_out = class_conditional_activation_torch(a, weight[:, 30:], None, "softplus")
    expected = torch.autograd.grad(expected_out.sum(), weight)[0]
    torch.testing.assert_close(weight.grad, expected, rtol=1e-12, atol=1e-12)
    assert torch.all(weight.grad[:, :30] == 0)


def test_class_conditional_only_some_gradients():
    """Gradients requested for a alone or w_y alone (the kernel skips the other)."""
    a64, w64 = _rand(40, 33, seed=6), _rand(33, 5, seed=7)
    classes = torch.randint(0, 5, (40,), generator=torch.Generator().manual_seed(8))
    for cls in (None, classes):
        for which in ("a", "w_y"):
            a = _leaf(a64, torch.float64, which == "a")
            w_y = _leaf(w64, torch.float64, which == "w_y")
            leaf = a if which == "a" else w_y
            (fast,) = torch.autograd.grad(_ops().class_conditional_activation(a, w_y, cls, "softplus").sum(), leaf)
            (ref,) = torch.autograd.grad(class_conditional_activation_torch(a, w_y, cls, "softplus").sum(), leaf)
            torch.testing.assert_close(fast, ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("R,Z", [(1, 1), (37, 5), (700, 50)])
def test_gaussian_matches_torch(R, Z):
    head64 = _rand(R, 2 * Z, seed=9)
    eps64 = _rand(Z, R, seed=10)

    def make(dtype):
        eps_t = _leaf(eps64, dtype).t().detach().requires_grad_(True)  # (R, Z), non-contiguous
        return {"head": _leaf(head64, dtype), "eps": eps_t}

    check_op_against_torch(_ops().gaussian_reparam_kl, gaussian_reparam_kl_torch, make)


def test_gaussian_one_output_used():
    """Only z or only kl reaches the loss: the other's gradient is None in the backward (counted as 0)."""
    head64, eps64 = _rand(9, 8, seed=11), _rand(9, 4, seed=12)
    for index in (0, 1):
        grads = []
        for fn in (_ops().gaussian_reparam_kl, gaussian_reparam_kl_torch):
            head, eps = _leaf(head64, torch.float64), _leaf(eps64, torch.float64)
            grads.append(torch.autograd.grad(fn(head, eps)[index].sum(), (head, eps), allow_unused=True))
        for fast, ref in zip(*grads):
            torch.testing.assert_close(fast if fast is not None else torch.zeros_like(ref),
                                       ref if ref is not None else torch.zeros_like(fast), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("x_grad", [True, False])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("N,C,H,D", [(1, 1, 1, 1), (7, 10, 13, 37), (3, 17, 19, 785), (60, 10, 21, 43)])
def test_bernoulli_linear_matches_torch(N, C, H, D, bias, x_grad):
    h64 = _rand(C, N, H, seed=13)
    w64 = _rand(H, D, seed=14, scale=0.5)
    b64 = _rand(D, seed=15)
    x64 = _rand(N, 2 * D, seed=16, uniform=True)

    def make(dtype):
        return {
            "h": _leaf(h64, dtype).transpose(0, 1).detach().requires_grad_(True),  # (N, C, H), strided
            "weight": _leaf(w64, dtype).t().detach().requires_grad_(True),  # (D, H), column-major
            "bias": _leaf(b64, dtype) if bias else None,
            "x": _leaf(x64, dtype)[:, ::2].detach().requires_grad_(x_grad),  # (N, D), stride 2 along D
        }

    check_op_against_torch(_ops().bernoulli_loglik_linear, bernoulli_loglik_linear_torch, make)


def test_bernoulli_linear_without_autograd_uses_chunks():
    """No gradient needed: the logits go through chunks of BERNOULLI_CHUNK_ROWS rows (600 rows here: two
    chunks, the second partial) and nothing of size (N*C, D) is kept."""
    cb = _cpu_backend()
    N, C, H, D = 60, 10, 21, 43
    h64, w64, b64, x64 = _rand(N, C, H, seed=17), _rand(D, H, seed=18), _rand(D, seed=19), _rand(N, D, seed=20)
    assert N * C > cb.BERNOULLI_CHUNK_ROWS
    for dtype in (torch.float32, torch.float64):
        args = [t.to(dtype) for t in (h64, w64, b64, x64)]
        with torch.no_grad():
            fast = _ops().bernoulli_loglik_linear(*args)
            ll, s = torch.ops.ssvae_fast.bernoulli_loglik_linear_cpu(args[0].view(N * C, H), *args[1:], 0, C, False)
        assert s.numel() == 0 and torch.equal(ll.view(N, C), fast)
        ref = bernoulli_loglik_linear_torch(*args)
        ref64 = bernoulli_loglik_linear_torch(h64, w64, b64, x64)
        assert_close_to_reference(fast, ref, ref64, name=f"no-grad {dtype}")


# ------------------------------------------------------------------------------------------------------
# Extreme values: finite, and right.
# ------------------------------------------------------------------------------------------------------
EXTREME = torch.tensor([-1e4, -100.0, -88.0, -30.0, -1.0, -1e-3, 0.0, 1e-3, 1.0, 30.0, 88.0, 100.0, 1e4],
                       dtype=torch.float64)


def test_bernoulli_linear_backward_twice_with_retain_graph():
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


def test_bernoulli_linear_extreme_logits():
    # h[n, c, 0] = 1 and W[:, 0] = EXTREME make l[n, c, :] = EXTREME + small, |l| up to 1e4.
    D, H, N, C = EXTREME.numel(), 3, 2, 3
    h64 = torch.zeros(N, C, H, dtype=torch.float64)
    h64[..., 0] = 1.0
    h64[..., 1] = _rand(N, C, seed=21, scale=0.1)
    w64 = torch.zeros(D, H, dtype=torch.float64)
    w64[:, 0] = EXTREME
    w64[:, 1] = _rand(D, seed=22)
    b64 = _rand(D, seed=23, scale=0.1)
    x64 = _rand(N, D, seed=24, uniform=True)

    def make(dtype):
        return {"h": _leaf(h64, dtype), "weight": _leaf(w64, dtype), "bias": _leaf(b64, dtype), "x": _leaf(x64, dtype)}

    check_op_against_torch(_ops().bernoulli_loglik_linear, bernoulli_loglik_linear_torch, make)


@pytest.mark.parametrize("activation", ["softplus", "relu"])
@pytest.mark.parametrize("indexed", [False, True])
def test_class_conditional_extreme_preactivations(indexed, activation):
    a64 = EXTREME.repeat(3, 1)  # (3, 13)
    w64 = _rand(EXTREME.numel(), 4, seed=25, scale=1e-2)
    classes = torch.tensor([0, 3, 1]) if indexed else None

    def make(dtype):
        return {"a": _leaf(a64, dtype), "w_y": _leaf(w64, dtype), "classes": classes, "activation": activation}

    check_op_against_torch(_ops().class_conditional_activation, class_conditional_activation_torch, make)


def test_gaussian_extreme_logvar():
    op_checks.check_gaussian_extreme_logvar(_ops(), "cpu", seed=26)


def test_elbo_extreme_logits():
    op_checks.check_elbo_extreme_logits(_ops(), EXTREME, "cpu", seed=28)


@pytest.mark.parametrize("n_l,n_u,C", [(5, 9, 2), (50, 90, 17), (0, 6, 10), (6, 0, 10)])
def test_elbo_matches_torch(n_l, n_u, C):
    logits64 = _rand(n_l + n_u, C, seed=32, scale=2.0)
    y_l = torch.randint(0, C, (n_l,), generator=torch.Generator().manual_seed(33))
    ll_l64, kl_l64 = _rand(n_l, seed=34, scale=30.0), _rand(n_l, seed=35, uniform=True, scale=5.0)
    ll_u64, kl_u64 = _rand(C, n_u, seed=36, scale=30.0), _rand(n_u, C, seed=37, uniform=True, scale=5.0)

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


# ------------------------------------------------------------------------------------------------------
# Empty inputs: right shapes, zero gradients.
# ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_empty_inputs(dtype):
    check_empty_inputs(_ops(), dtype, "cpu")


# ------------------------------------------------------------------------------------------------------
# gradcheck in float64, determinism across thread counts.
# ------------------------------------------------------------------------------------------------------
def test_gradcheck_float64():
    ops = _ops()
    g = torch.Generator().manual_seed(38)
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64).requires_grad_(True)  # noqa: E731

    a, weight = r(3, 5), r(5, 7)
    classes = torch.tensor([2, 0, 1])
    for act in ("softplus", "relu"):  # randn pre-activations: no relu kink within gradcheck's 1e-6 steps
        for cls in (None, classes, classes[:2]):  # every class, one per row, labelled prefix
            fn = lambda a, w: ops.class_conditional_activation(a, w[:, 4:], cls, act)  # noqa: E731
            assert torch.autograd.gradcheck(fn, (a, weight))
    assert torch.autograd.gradcheck(ops.gaussian_reparam_kl, (r(3, 4), r(3, 2)))
    x = torch.rand(2, 6, generator=g, dtype=torch.float64).requires_grad_(True)
    assert torch.autograd.gradcheck(ops.bernoulli_loglik_linear, (r(2, 3, 4), r(6, 4), r(6), x))
    assert torch.autograd.gradcheck(ops.bernoulli_loglik_linear, (r(2, 3, 4), r(6, 4), None, x))
    with _cpu_backend().recompute_bernoulli_logits():
        assert torch.autograd.gradcheck(ops.bernoulli_loglik_linear, (r(2, 3, 4), r(6, 4), r(6), x))
    x3 = torch.rand(3, 6, generator=g, dtype=torch.float64).requires_grad_(True)
    for n_l in (0, 1, 3):  # rows: n_l labelled, then 3 per remaining example
        h = r(n_l + (3 - n_l) * 3, 4)
        assert torch.autograd.gradcheck(lambda *t: ops.bernoulli_loglik_linear(*t, n_l), (h, r(6, 4), r(6), x3))
    y_l = torch.tensor([1, 0])
    assert torch.autograd.gradcheck(
        lambda lg, a, b, c, d: ops.elbo_reduction(lg, y_l, a, b, c, d, 0.9), (r(5, 3), r(2), r(2), r(3, 3), r(3, 3))
    )


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


# ------------------------------------------------------------------------------------------------------
# Errors.
# ------------------------------------------------------------------------------------------------------
def test_launcher_errors():
    ops = _ops()
    with pytest.raises(TypeError, match="one dtype"):
        ops.bernoulli_loglik_linear(torch.rand(2, 3, 4), torch.rand(5, 4, dtype=torch.float64), None, torch.rand(2, 5))
    with pytest.raises(TypeError, match="one dtype"):
        ops.gaussian_reparam_kl(torch.rand(2, 4, dtype=torch.float16), torch.rand(2, 2, dtype=torch.float16))
    with pytest.raises(TypeError, match="int64"):
        ops.class_conditional_activation(torch.rand(2, 4), torch.rand(4, 3), torch.tensor([0, 1], dtype=torch.int32),
                                         "relu")
    with pytest.raises(ValueError, match="activation"):
        ops.class_conditional_activation(torch.rand(2, 4), torch.rand(4, 3), None, "tanh")
    with pytest.raises(ValueError, match="class index"):
        ops.class_conditional_activation(torch.rand(2, 4), torch.rand(4, 3), torch.tensor([0, 3]), "relu")
    with pytest.raises(ValueError, match="class index"):
        ops.elbo_reduction(torch.rand(2, 3), torch.tensor([-1]), torch.rand(1), torch.rand(1), torch.rand(1, 3),
                           torch.rand(1, 3), 1.0)
    with pytest.raises(ValueError, match="eps must be"):
        ops.gaussian_reparam_kl(torch.rand(2, 4), torch.rand(2, 3))
    with pytest.raises(ValueError, match="x must be"):
        ops.bernoulli_loglik_linear(torch.rand(2, 3, 4), torch.rand(5, 4), None, torch.rand(3, 5))
    with pytest.raises(ValueError, match="n_labelled"):  # 8 rows cannot be 1 labelled + 2 examples x C
        ops.bernoulli_loglik_linear(torch.rand(8, 4), torch.rand(5, 4), None, torch.rand(3, 5), 1)
    with pytest.raises(ValueError, match="n_l <= N"):
        ops.class_conditional_activation(torch.rand(2, 4), torch.rand(4, 3), torch.tensor([0, 1, 2]), "relu")
    ext = _ext.require_ext()
    with pytest.raises(ValueError, match="exceed N"):
        t = torch.zeros(64)
        ext.class_conditional_forward(t.data_ptr(), t.data_ptr(), 0, t.data_ptr(), 2, 3, 4, 3, "relu", "float32")


# ------------------------------------------------------------------------------------------------------
# Training and torch.compile.
# ------------------------------------------------------------------------------------------------------
def test_m2_trains_with_cpu_backend():
    torch.manual_seed(0)
    model = M2(37, 3, 5, hidden=(19,), backend="cpu")
    assert model.resolved_backend() == "cpu"
    g = torch.Generator().manual_seed(1)
    x_l, x_u = torch.rand(6, 37, generator=g), torch.rand(6, 37, generator=g)
    y_l = torch.randint(0, 3, (6,), generator=g)
    eps_l, eps_u = torch.randn(6, 5, generator=g), torch.randn(6, 3, 5, generator=g)
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


def test_torch_compile_fullgraph_through_custom_ops():
    check_compile_fullgraph("cpu")


def test_torch_compile_model_loss_has_no_break_in_fused_ops():
    """torch._dynamo.explain(model.loss): no graph break inside the fused ops or their launchers."""
    model = make_model(13, 3, 4, 11)
    model.backend = "cpu"
    batch = make_batch(model, 2, 3)

    def loss(x_l, y_l, x_u, eps_l, eps_u):
        return model.loss(x_l, y_l, x_u, alpha=1.0, eps_l=eps_l, eps_u=eps_u)

    torch._dynamo.reset()
    explanation = torch._dynamo.explain(loss)(*batch.args())
    for reason in explanation.break_reasons:
        files = [frame.filename for frame in reason.user_stack]
        assert not any(f.endswith(("fused.py", "cpu_backend.py")) for f in files), reason.reason


def test_torch_compile_inductor_model_loss():
    """torch.compile(model.loss) with inductor: one graph, no break, same loss and gradients as eager."""
    model = make_model(13, 3, 4, 11)
    model.backend = "cpu"
    batch = make_batch(model, 2, 3)

    def loss_and_grads(fn):
        model.zero_grad(set_to_none=True)
        loss = fn(*batch.args())
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in model.parameters()]

    def loss(x_l, y_l, x_u, eps_l, eps_u):
        return model.loss(x_l, y_l, x_u, alpha=1.0, eps_l=eps_l, eps_u=eps_u)

    torch._dynamo.reset()
    compiled_loss, compiled_grads = loss_and_grads(torch.compile(loss, backend="inductor", fullgraph=True))
    eager_loss, eager_grads = loss_and_grads(loss)
    torch.testing.assert_close(compiled_loss, eager_loss, rtol=1e-5, atol=1e-5)
    for compiled_grad, eager_grad in zip(compiled_grads, eager_grads):
        torch.testing.assert_close(compiled_grad, eager_grad, rtol=1e-4, atol=1e-5)
