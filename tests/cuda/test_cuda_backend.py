"""The `cuda` backend (CUDA kernels of ssvae_fast._C_cuda, wrapped in ssvae_fast/ops/cuda_backend.py).

GPU only: every test here skips with a reason where there is no CUDA GPU or the CUDA extension is not
built (tests/cuda/test_cuda_backend_cpu.py covers what runs without a GPU: import, factory, errors).

- model level: `tests.equivalence.check_backend` (loss and the gradient of every parameter and input
  against the float64 reference on the same GPU, docs/design.md section 4's rule) over SHAPES x MIXES, float32
  with the exact ("ieee") GEMM and float64; TF32 and bf16/fp16 against the same rule with the reference
  in the same precision;
- op level: each op against its plain-torch face (forward and every input's gradient) on shapes that span
  several tiles of every kernel, non-contiguous inputs, extreme values, empty inputs, gradcheck in float64;
- determinism (bitwise), the current stream, a CUDA-graph-captured training step, torch.compile
  (fullgraph) through the custom ops, torch.library.opcheck, int64 offsets past 2**31 elements.
"""

from __future__ import annotations

import pytest
import torch

from ssvae_fast import M2, _ext
from ssvae_fast.ops import cuda_backend
from ssvae_fast.ops.bernoulli_loglik_linear import bernoulli_loglik_linear_torch
from ssvae_fast.ops.class_conditional import class_conditional_activation_torch
from ssvae_fast.ops.elbo import elbo_reduction_torch
from ssvae_fast.ops.gaussian import gaussian_reparam_kl_torch
from tests import op_checks
from tests.equivalence import check_compile_fullgraph, MIXES, SHAPES, check_autocast_bf16, check_backend, check_empty_inputs, run
from tests.factories import cast_model, make_batch, make_model

pytestmark = pytest.mark.skipif(
    not (torch.cuda.is_available() and _ext.HAS_CUDA_EXT),
    reason="needs a CUDA GPU and the CUDA extension ssvae_fast._C_cuda",
)

DEVICE = "cuda"
BACKEND = "cuda"


@pytest.fixture(autouse=True)
def ieee_gemm():
    """Exact fp32 products in the Bernoulli GEMM (the default, TF32, is tested separately)."""
    with cuda_backend.set_precision("ieee"):
        yield


def _ops():
    return cuda_backend.cuda_ops()


# ------------------------------------------------------------------------------------------------------
# Whole model against the reference.
# ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mix", MIXES)
@pytest.mark.parametrize("B,C", SHAPES)
def test_cuda_backend_matches_reference(B, C, mix):
    # float32 (exact GEMM) against the rule, then float64 against the float64 floor.
    check_backend(BACKEND, B, C, mix, device=DEVICE)


@pytest.mark.parametrize("activation", ["softplus", "relu"])
def test_cuda_backend_deeper_networks(activation):
    check_backend(BACKEND, 7, 10, "mixed", hidden_layers=2, activation=activation, D=29, H=13, device=DEVICE)


def test_cuda_backend_spans_several_tiles():
    """D = 150 and H = 70 (3 D tiles, several K steps), 33 x 10 = 330 enumerated rows (6 row tiles)."""
    check_backend(BACKEND, 33, 10, "mixed", D=150, H=70, Z=9, device=DEVICE)


def test_cuda_backend_is_deterministic():
    """Two runs give bitwise-equal losses and gradients (no atomics anywhere), in both precisions."""
    model = make_model(150, 10, 5, 70, device=DEVICE)
    batch = make_batch(model, 20, 30, device=DEVICE)
    for precision in cuda_backend.PRECISIONS:
        with cuda_backend.set_precision(precision):
            first, second = run(model, BACKEND, batch), run(model, BACKEND, batch)
        for key in first:
            assert torch.equal(first[key], second[key]), f"{precision} {key}"


# ------------------------------------------------------------------------------------------------------
# Op level: each op against its plain-torch face.
# ------------------------------------------------------------------------------------------------------
_rand = op_checks.rand


def _leaf(t64, dtype, requires_grad=True):
    return op_checks.leaf(t64, dtype, DEVICE, requires_grad)


def check_op_against_torch(fast_fn, torch_fn, make_inputs, *, dtypes=(torch.float32, torch.float64)):
    op_checks.check_op_against_torch(fast_fn, torch_fn, make_inputs, device=DEVICE, dtypes=dtypes)


@pytest.mark.parametrize("activation", ["softplus", "relu"])
@pytest.mark.parametrize("indexed", [False, True])
@pytest.mark.parametrize("N,H,C", [(13, 40, 5), (130, 19, 2), (70, 67, 17)])
def test_class_conditional_matches_torch(N, H, C, indexed, activation):
    # N = 130 spans 3 row blocks of the backward kernel, H = 67 three blocks of 32 hidden units.
    a64 = _rand(N, H, seed=1)
    weight64 = _rand(H, 11 + C, seed=2)  # [W_v | W_y]: w_y is a non-contiguous column slice
    classes = torch.randint(0, C, (N,), generator=torch.Generator().manual_seed(3)).to(DEVICE) if indexed else None

    def make(dtype):
        w_y = _leaf(weight64, dtype)[:, 11:].detach().requires_grad_(True)  # strides (11 + C, 1)
        assert not w_y.is_contiguous()
        return {"a": _leaf(a64, dtype), "w_y": w_y, "classes": classes, "activation": activation}

    check_op_against_torch(_ops().class_conditional_activation, class_conditional_activation_torch, make)


def test_class_conditional_non_contiguous_w_y_gradient_reaches_weight():
    """w_y arrives as weight[:, x_dim:], a strided view; its gradient lands in those columns of weight."""
    ops = _ops()
    weight = _leaf(_rand(19, 30 + 4, seed=4), torch.float64)
    a = _leaf(_rand(6, 19, seed=5), torch.float64)
    out = ops.class_conditional_activation(a, weight[:, 30:], None, "softplus")
    out.sum().backward()
    expected_out = class_conditional_activation_torch(a, weight[:, 30:], None, "softplus")
    expected = torch.autograd.grad(expected_out.sum(), weight)[0]
    torch.testing.assert_close(weight.grad, expected, rtol=1e-12, atol=1e-12)
    assert torch.all(weight.grad[:, :30] == 0)


@pytest.mark.parametrize("R,Z", [(37, 5), (9, 70), (300, 50)])
def test_gaussian_matches_torch(R, Z):
    head64 = _rand(R, 2 * Z, seed=6)
    eps64 = _rand(Z, R, seed=7)

    def make(dtype):
        eps_t = _leaf(eps64, dtype).t().detach().requires_grad_(True)  # (R, Z), strides (1, R): non-contiguous
        return {"head": _leaf(head64, dtype), "eps": eps_t}

    check_op_against_torch(_ops().gaussian_reparam_kl, gaussian_reparam_kl_torch, make)


def test_gaussian_only_z_or_only_kl_used():
    """A gradient reaching only z (or only kl): autograd passes zeros for the other output."""
    ops = _ops()
    head, eps = _leaf(_rand(7, 6, seed=40), torch.float64), _leaf(_rand(7, 3, seed=41), torch.float64)
    for pick in (0, 1):
        fast = torch.autograd.grad(ops.gaussian_reparam_kl(head, eps)[pick].sum(), (head, eps), allow_unused=True)
        ref = torch.autograd.grad(gaussian_reparam_kl_torch(head, eps)[pick].sum(), (head, eps), allow_unused=True)
        for f, r, leaf in zip(fast, ref, (head, eps)):
            f = torch.zeros_like(leaf) if f is None else f  # kl does not depend on eps
            r = torch.zeros_like(leaf) if r is None else r
            torch.testing.assert_close(f, r, rtol=1e-12, atol=1e-12)


BERNOULLI_SHAPES = [(5, 7, 150, 40), (1, 1, 37, 19), (3, 17, 37, 19), (13, 10, 785, 70), (7, 2, 64, 64)]


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("N,C,D,H", BERNOULLI_SHAPES)
def test_bernoulli_linear_matches_torch(N, C, D, H, bias):
    # (13, 10, 785, 70): 130 rows = 3 row tiles, 13 D tiles (the last one 17 wide), H = 70 not a multiple
    # of either K step; (7, 2, 64, 64): exact tile multiples.
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


def test_bernoulli_linear_without_stored_s_recomputes():
    """The backward op given no s (forward run without grad, as under some tracing paths) recomputes s with
    the forward kernel and gives the same gradients as with the stored s (rows: 2 labelled, then 2 x 3)."""
    h, w, b, x = (_leaf(t, torch.float64, requires_grad=False)
                  for t in (_rand(2 + 2 * 3, 40, seed=12), _rand(150, 40, seed=13, scale=0.3), _rand(150, seed=14),
                            _rand(4, 150, seed=15, uniform=True)))
    g = _rand(2 + 2 * 3, seed=16).to(DEVICE)
    backward = torch.ops.ssvae_fast.bernoulli_loglik_linear_cuda_backward
    _, s = torch.ops.ssvae_fast.bernoulli_loglik_linear_cuda(h, w, b, x, 2, 3, True, "ieee")
    stored = backward(g, h, w, b, x, s, 2, 3, "ieee")
    recomputed = backward(g, h, w, b, x, h.new_empty((0,)), 2, 3, "ieee")
    for a_, b_ in zip(stored, recomputed):
        assert torch.equal(a_, b_)


# Labelled prefix: the first n_l of N examples one row each, then C rows per remaining example.
# (N, n_l, H, C): n_l = 0, n_l = N, N - n_l = 1, C = 1, C = 17; N = 130 and 200 span 3 and 4 row blocks of
# the backward kernel with the prefix ending inside a block (70 = 64 + 6, 129 = 2 * 64 + 1) and inside a
# warp's rows; H = 19, 33, 67 are not multiples of 16 or 32 (partial hidden-unit blocks).
CLASS_CONDITIONAL_PREFIX_SHAPES = [
    (13, 0, 40, 5), (13, 13, 40, 5), (13, 12, 19, 5), (130, 70, 67, 17), (70, 33, 19, 1), (200, 129, 33, 3),
    (64, 64, 33, 4), (65, 64, 19, 4),
]


@pytest.mark.parametrize("activation", ["softplus", "relu"])
@pytest.mark.parametrize("N,n_l,H,C", CLASS_CONDITIONAL_PREFIX_SHAPES)
def test_class_conditional_labelled_prefix(N, n_l, H, C, activation):
    op_checks.check_class_conditional_labelled_prefix(
        _ops(), DEVICE, N=N, n_l=n_l, H=H, C=C, activation=activation, seed=50 + N + n_l
    )


def test_class_conditional_labelled_prefix_strided_inputs():
    """The prefix form reads a (columns strided), w_y (a column slice) and classes (stride 2) in place."""
    N, n_l, H, C = 70, 33, 19, 6
    a64 = _rand(H, N, seed=60)
    weight64 = _rand(H, 11 + C, seed=61)
    classes = torch.randint(0, C, (2 * n_l,), generator=torch.Generator().manual_seed(62)).to(DEVICE)[::2]

    def make(dtype):
        return {"a": _leaf(a64, dtype).t().detach().requires_grad_(True),  # (N, H), strides (1, N)
                "w_y": _leaf(weight64, dtype)[:, 11:].detach().requires_grad_(True),
                "classes": classes, "activation": "softplus"}

    check_op_against_torch(_ops().class_conditional_activation, class_conditional_activation_torch, make)


# (N, n_l, C, H, D): n_l = 0, n_l = N, N - n_l = 1, C = 1, C = 17; M = n_l + (N - n_l) C rows from 9 to 730
# (up to 12 row tiles of 64), the prefix ending inside a row tile (37, 7, 30) and exactly on a tile edge
# (n_l = 64); D = 37, 65, 100, 150, 200, 785 (partial last D tiles; 13 D tiles for 785); H = 19, 24, 33,
# 50, 70 (partial K steps of both kernels).
BERNOULLI_PREFIX_SHAPES = [
    (5, 0, 7, 40, 150), (9, 9, 3, 19, 37), (13, 12, 10, 70, 785), (20, 7, 17, 33, 100), (70, 30, 1, 19, 37),
    (40, 37, 10, 70, 150), (80, 64, 3, 24, 65), (100, 30, 10, 50, 200),
]


@pytest.mark.parametrize("bias,x_grad", [(True, True), (False, False), (True, False)])
@pytest.mark.parametrize("N,n_l,C,H,D", BERNOULLI_PREFIX_SHAPES)
def test_bernoulli_labelled_prefix(N, n_l, C, H, D, bias, x_grad):
    op_checks.check_bernoulli_labelled_prefix(
        _ops(), DEVICE, N=N, n_l=n_l, C=C, H=H, D=D, bias=bias, x_grad=x_grad, seed=70 + N + n_l
    )


def test_bernoulli_labelled_prefix_strided_inputs():
    """2-D h with strided rows and columns, column-major W and x with stride 2 along D, read in place."""
    N, n_l, C, H, D = 20, 7, 17, 33, 100
    M = n_l + (N - n_l) * C
    h64, w64, b64 = _rand(H, M, seed=80), _rand(H, D, seed=81, scale=0.3), _rand(D, seed=82)
    x64 = _rand(N, 2 * D, seed=83, uniform=True)

    def make(dtype):
        return {"h": _leaf(h64, dtype).t().detach().requires_grad_(True),  # (M, H), strides (1, M)
                "weight": _leaf(w64, dtype).t().detach().requires_grad_(True),
                "bias": _leaf(b64, dtype),
                "x": _leaf(x64, dtype)[:, ::2].detach().requires_grad_(True),
                "n_labelled": n_l}

    check_op_against_torch(_ops().bernoulli_loglik_linear, bernoulli_loglik_linear_torch, make)


def test_bernoulli_labelled_prefix_without_enumerated_rows():
    """M == n_l < N (C = 0: the last examples have no rows): ll of the labelled rows, and dx of the other
    examples is zero; the kernel never divides by C."""
    f64 = dict(dtype=torch.float64, device=DEVICE)
    h, w, b = (_leaf(t, torch.float64) for t in (_rand(2, 4, seed=84), _rand(5, 4, seed=85), _rand(5, seed=86)))
    x = _leaf(_rand(3, 5, seed=87, uniform=True), torch.float64)
    ll = _ops().bernoulli_loglik_linear(h, w, b, x, 2)
    expected = bernoulli_loglik_linear_torch(h, w, b, x[:2], 2)
    torch.testing.assert_close(ll, expected, rtol=1e-12, atol=1e-12)
    (dx,) = torch.autograd.grad(ll.sum(), x)
    assert dx.shape == (3, 5) and torch.equal(dx[2], torch.zeros(5, **f64))


@pytest.mark.parametrize("n_l,n_u,C", [(5, 9, 2), (5, 9, 17), (50, 90, 17), (0, 6, 10), (6, 0, 10), (3, 4, 70)])
def test_elbo_matches_torch(n_l, n_u, C):
    # C = 70: a row's classes span three passes of the warp's 32 lanes.
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


# ------------------------------------------------------------------------------------------------------
# Extreme values: finite, and equal to the torch formula.
# ------------------------------------------------------------------------------------------------------
EXTREME = torch.tensor([-1e4, -100.0, -30.0, -1.0, -1e-3, 0.0, 1e-3, 1.0, 30.0, 100.0, 1e4], dtype=torch.float64)


def test_bernoulli_linear_extreme_logits():
    # h[n, c, 0] = 1 and W[:, 0] = EXTREME make l[n, c, :] = EXTREME + small, |l| up to 1e4.
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
@pytest.mark.parametrize("activation", ["softplus", "relu"])
def test_class_conditional_extreme_preactivations(indexed, activation):
    a64 = EXTREME.repeat(3, 1)  # (3, 11)
    w64 = _rand(11, 4, seed=26, scale=1e-2)
    classes = torch.tensor([0, 3, 1], device=DEVICE) if indexed else None

    def make(dtype):
        return {"a": _leaf(a64, dtype), "w_y": _leaf(w64, dtype), "classes": classes, "activation": activation}

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


def test_degenerate_sizes_match_torch():
    """Zero-width dimensions that are not rows: H = 0 (logits = bias), D = 0 (ll = 0), Z = 0 (kl = 0)."""
    ops = _ops()
    f64 = dict(dtype=torch.float64, device=DEVICE)
    h, weight = torch.rand(2, 3, 0, **f64), torch.rand(5, 0, **f64)
    bias, x = torch.rand(5, **f64), torch.rand(2, 5, **f64)
    torch.testing.assert_close(ops.bernoulli_loglik_linear(h, weight, bias, x),
                               bernoulli_loglik_linear_torch(h, weight, bias, x))
    h, weight, x = torch.rand(2, 3, 4, **f64), torch.rand(0, 4, **f64), torch.rand(2, 0, **f64)
    assert torch.equal(ops.bernoulli_loglik_linear(h, weight, None, x), torch.zeros(2, 3, **f64))
    z_, kl = ops.gaussian_reparam_kl(torch.rand(4, 0, **f64), torch.rand(4, 0, **f64))
    assert z_.shape == (4, 0) and torch.equal(kl, torch.zeros(4, **f64))


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
        for cls in (None, classes, classes[:1], classes[:0]):
            fn = lambda a, w: ops.class_conditional_activation(a, w[:, 4:], cls, act)  # noqa: E731
            assert torch.autograd.gradcheck(fn, (a, weight))
    assert torch.autograd.gradcheck(ops.gaussian_reparam_kl, (r(3, 4), r(3, 2)))
    x = torch.rand(2, 6, generator=g, **f64).requires_grad_(True)
    assert torch.autograd.gradcheck(ops.bernoulli_loglik_linear, (r(2, 3, 4), r(6, 4), r(6), x))
    assert torch.autograd.gradcheck(ops.bernoulli_loglik_linear, (r(2, 3, 4), r(6, 4), None, x))
    for n_l in (0, 1, 2):  # rows: n_l labelled, then 3 per remaining example
        fn = lambda h, w, b, x_: ops.bernoulli_loglik_linear(h, w, b, x_, n_l)  # noqa: E731
        assert torch.autograd.gradcheck(fn, (r(n_l + (2 - n_l) * 3, 4), r(6, 4), r(6), x))
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
    with pytest.raises(ValueError, match="one CUDA device"):
        ops.gaussian_reparam_kl(torch.rand(2, 4, **f32), torch.rand(2, 2))
    with pytest.raises(ValueError, match="precision"):
        cuda_backend.bernoulli_loglik_linear_cuda(torch.rand(2, 3, 4, **f32), torch.rand(5, 4, **f32), None,
                                                  torch.rand(2, 5, **f32), precision="bf16")
    with pytest.raises(ValueError, match="precision"):
        cuda_backend.set_precision("fp8")


# ------------------------------------------------------------------------------------------------------
# torch.compile and training.
# ------------------------------------------------------------------------------------------------------
def test_torch_compile_fullgraph_through_custom_ops():
    check_compile_fullgraph("cuda", DEVICE)


def test_torch_library_opcheck():
    """Schema, fake (meta) implementations, autograd registration and AOT dispatch of every custom op."""
    f64 = dict(dtype=torch.float64, device=DEVICE)
    g = torch.Generator(device=DEVICE).manual_seed(34)
    r = lambda *s: torch.randn(*s, generator=g, **f64)  # noqa: E731
    ops = torch.ops.ssvae_fast
    grad = lambda *s: r(*s).requires_grad_(True)  # noqa: E731
    classes = torch.tensor([2, 0, 1], device=DEVICE)
    torch.library.opcheck(ops.class_conditional_activation_cuda.default, (grad(3, 5), grad(5, 3), None, "softplus"))
    torch.library.opcheck(ops.class_conditional_activation_cuda.default, (grad(3, 5), grad(5, 3), classes, "relu"))
    torch.library.opcheck(ops.class_conditional_activation_cuda.default, (grad(3, 5), grad(5, 3), classes[:1], "relu"))
    torch.library.opcheck(ops.class_conditional_activation_cuda_backward.default,
                          (r(3, 3, 5), r(3, 5), r(5, 3), None, "softplus"))
    torch.library.opcheck(ops.class_conditional_activation_cuda_backward.default,
                          (r(1 + 2 * 3, 5), r(3, 5), r(5, 3), classes[:1], "softplus"))
    torch.library.opcheck(ops.gaussian_reparam_kl_cuda.default, (grad(4, 6), grad(4, 3)))
    torch.library.opcheck(ops.gaussian_reparam_kl_cuda_backward.default, (r(4, 6), r(4, 3), r(4, 3), r(4)))
    x = torch.rand(2, 6, generator=g, **f64)
    torch.library.opcheck(ops.bernoulli_loglik_linear_cuda.default,
                          (grad(6, 4), grad(6, 4), grad(6), x.requires_grad_(True), 0, 3, True, "ieee"))
    torch.library.opcheck(ops.bernoulli_loglik_linear_cuda.default,
                          (grad(4, 4), grad(6, 4), None, x, 1, 3, True, "ieee"))
    torch.library.opcheck(ops.bernoulli_loglik_linear_cuda_backward.default,
                          (r(6), r(6, 4), r(6, 4), r(6), x.detach(), r(6, 6), 0, 3, "ieee"))
    torch.library.opcheck(ops.bernoulli_loglik_linear_cuda_backward.default,
                          (r(4), r(4, 4), r(6, 4), None, x.detach(), r(0), 1, 3, "ieee"))
    y_l = torch.tensor([1, 0], device=DEVICE)
    torch.library.opcheck(ops.elbo_reduction_cuda.default,
                          (grad(5, 3), y_l, grad(2), grad(2), grad(3, 3), grad(3, 3), 0.9))
    torch.library.opcheck(ops.elbo_reduction_cuda_backward.default, (r(5), r(5, 3), y_l, r(3, 3), r(3, 3), 0.9))


def test_m2_trains_with_cuda_backend():
    torch.manual_seed(0)
    model = M2(37, 3, 5, hidden=(19,), backend=BACKEND).to(DEVICE)
    assert model.resolved_backend() == BACKEND
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
# Precision: TF32 and 16-bit inputs, under the rule with the reference in the same precision.
# ------------------------------------------------------------------------------------------------------
def test_tf32_against_tolerance_rule():
    """Default precision: TF32 tensor cores in the Bernoulli GEMM. The reference runs its matmuls in TF32 too
    (allow_tf32), so the rule compares like with like: no worse than twice the TF32 reference's error."""
    previous = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = True
    try:
        with cuda_backend.set_precision("tf32"):
            check_backend(BACKEND, 33, 10, "mixed", D=150, H=70, device=DEVICE, check_float64=False)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = previous


def test_tf32_switch_changes_the_gemm():
    """"tf32" really takes the tensor-core path (TF32-rounded products differ from exact ones at ~1e-3
    relative) and "ieee" the exact one (close to the float64 product to ~1e-6)."""
    g = torch.Generator().manual_seed(35)
    h = torch.randn(8, 10, 300, generator=g).to(DEVICE)
    weight = (torch.randn(200, 300, generator=g) * 0.1).to(DEVICE)
    x = torch.rand(8, 200, generator=g).to(DEVICE)
    exact = bernoulli_loglik_linear_torch(h.double(), weight.double(), None, x.double())
    ieee = cuda_backend.bernoulli_loglik_linear_cuda(h, weight, None, x, precision="ieee")
    tf32 = cuda_backend.bernoulli_loglik_linear_cuda(h, weight, None, x, precision="tf32")
    err_ieee = float((ieee.double() - exact).abs().max())
    err_tf32 = float((tf32.double() - exact).abs().max())
    scale = float(exact.abs().max())
    assert err_ieee < 1e-5 * scale, err_ieee
    assert 10 * err_ieee < err_tf32 < 1e-2 * scale, (err_ieee, err_tf32)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_model_against_tolerance_rule(dtype):
    with cuda_backend.set_precision("tf32"):  # tensor cores for the 16-bit GEMM
        check_backend(BACKEND, 33, 10, "mixed", dtype=dtype, device=DEVICE, check_float64=False)
    check_backend(BACKEND, 7, 10, "mixed", dtype=dtype, device=DEVICE, check_float64=False)  # exact FMAs


def test_autocast_bf16_against_tolerance_rule():
    check_autocast_bf16(BACKEND, DEVICE, cuda_backend.set_precision("tf32"))


@pytest.mark.parametrize("precision", ["tf32", "ieee"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_bernoulli_linear_against_tolerance_rule(dtype, precision):
    h64 = _rand(13, 10, 70, seed=36)
    w64 = _rand(785, 70, seed=37, scale=0.3)
    b64 = _rand(785, seed=38)
    x64 = _rand(13, 785, seed=39, uniform=True)

    def make(dt):
        return {"h": _leaf(h64, dt), "weight": _leaf(w64, dt), "bias": _leaf(b64, dt), "x": _leaf(x64, dt)}

    with cuda_backend.set_precision(precision):
        check_op_against_torch(_ops().bernoulli_loglik_linear, bernoulli_loglik_linear_torch, make, dtypes=(dtype,))


@pytest.mark.parametrize("precision", ["tf32", "ieee"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_bernoulli_labelled_prefix_against_tolerance_rule(dtype, precision):
    """Both tile kernels (tensor cores and FMAs) on the 2-D form: 40 labelled rows then 10 per example."""
    N, n_l, C, H, D = 60, 40, 10, 70, 785
    M = n_l + (N - n_l) * C
    h64, w64 = _rand(M, H, seed=88), _rand(D, H, seed=89, scale=0.3)
    b64, x64 = _rand(D, seed=90), _rand(N, D, seed=91, uniform=True)

    def make(dt):
        return {"h": _leaf(h64, dt), "weight": _leaf(w64, dt), "bias": _leaf(b64, dt), "x": _leaf(x64, dt),
                "n_labelled": n_l}

    with cuda_backend.set_precision(precision):
        check_op_against_torch(_ops().bernoulli_loglik_linear, bernoulli_loglik_linear_torch, make, dtypes=(dtype,))


# ------------------------------------------------------------------------------------------------------
# Streams, CUDA graphs, large sizes (GPU only by nature).
# ------------------------------------------------------------------------------------------------------
def test_runs_on_the_current_stream():
    """The kernels launch on torch's current stream (a side stream here), ordered with torch's own work."""
    model = make_model(150, 10, 5, 70, device=DEVICE)
    batch = make_batch(model, 20, 30, device=DEVICE)
    expected = run(model, BACKEND, batch)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        got = run(model, BACKEND, batch)
    torch.cuda.current_stream().wait_stream(side)
    torch.cuda.synchronize()
    for key in expected:  # a race (a launch on another stream) shows as garbage, far beyond this
        torch.testing.assert_close(got[key], expected[key], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("precision", ["tf32", "ieee"])
def test_cuda_graph_training_step(precision):
    """A whole training step (loss, backward, SGD step) captured in a CUDA graph and replayed matches eager."""
    model = make_model(37, 10, 5, 19, device=DEVICE)
    model.backend = BACKEND
    twin = cast_model(model, torch.float32)
    batch = make_batch(model, 8, 8, device=DEVICE)
    static = [t.clone() for t in batch.args()]

    def step(m, opt, args):
        opt.zero_grad(set_to_none=False)
        x_l, y_l, x_u, eps_l, eps_u = args
        loss = m.loss(x_l, y_l, x_u, alpha=1.0, eps_l=eps_l, eps_u=eps_u)
        loss.backward()
        opt.step()
        return loss

    with cuda_backend.set_precision(precision):
        opt = torch.optim.SGD(model.parameters(), lr=1e-2)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm-up: allocations outside the capture
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


def test_int64_offsets():
    """Outputs past 2**31 elements: the last rows of the Bernoulli s buffer (2-D form with a labelled prefix)
    and of the class-conditional (N, C, H) output are right (int32 offsets would wrap)."""
    torch.manual_seed(0)
    N, n_l, C, D, H = 700_000, 5, 4, 784, 16  # M * D = 2.2e9 > 2**31
    M = n_l + (N - n_l) * C
    h = torch.randn(M, H, device=DEVICE) * 0.3
    weight, bias = torch.randn(D, H, device=DEVICE) * 0.3, torch.randn(D, device=DEVICE)
    x = torch.rand(N, D, device=DEVICE)
    ll, s = torch.ops.ssvae_fast.bernoulli_loglik_linear_cuda(h, weight, bias, x, n_l, C, True, "ieee")
    tail = slice(N - 3, N)  # the last 3 examples: the last 3 * C rows
    h_tail = h[-3 * C:].view(3, C, H).double()
    expected_ll = bernoulli_loglik_linear_torch(h_tail, weight.double(), bias.double(), x[tail].double())
    torch.testing.assert_close(ll[-3 * C:].double(), expected_ll.flatten(), rtol=1e-5, atol=1e-3)
    logits = torch.nn.functional.linear(h_tail, weight.double(), bias.double())
    expected_s = (x[tail].double().unsqueeze(1) - torch.sigmoid(logits)).reshape(-1, D)
    torch.testing.assert_close(s[-3 * C:].double(), expected_s, rtol=1e-4, atol=1e-5)
    del ll, s, h, x

    N, C, H = 1_100_000, 4, 512  # N * C * H = 2.25e9 > 2**31
    a, w_y = torch.randn(N, H, device=DEVICE), torch.randn(H, C, device=DEVICE)
    out = _ops().class_conditional_activation(a, w_y, None, "relu")
    torch.testing.assert_close(out[-2:], torch.relu(a[-2:, None, :] + w_y.t()[None]))
    del out
    grad_out = torch.ones(N, C, H, device=DEVICE)
    da, dw_y = torch.ops.ssvae_fast.class_conditional_activation_cuda_backward(grad_out, a, w_y, None, "relu")
    expected_da = ((a[-2:, None, :] + w_y.t()[None]) > 0).sum(1).float()
    torch.testing.assert_close(da[-2:], expected_da)
    assert dw_y.shape == (H, C)


def test_raw_module_errors():
    """The extension's own checks: unknown dtype/activation/precision strings raise ValueError."""
    ext = _ext.require_cuda_ext()
    stream = torch.cuda.current_stream().cuda_stream
    t = torch.zeros(8, device=DEVICE)
    common = dict(head_ptr=t.data_ptr(), eps_ptr=t.data_ptr(), z_ptr=t.data_ptr(), kl_ptr=t.data_ptr(), R=2, Z=1,
                  stride_hr=2, stride_hz=1, stride_er=1, stride_ez=1, stream=stream)
    with pytest.raises(ValueError, match="unsupported dtype"):
        ext.gaussian_reparam_kl_forward(dtype="int8", **common)
    with pytest.raises(ValueError, match="non-negative"):
        ext.gaussian_reparam_kl_forward(dtype="float32", **{**common, "R": -1})
    with pytest.raises(ValueError, match="activation"):
        ext.class_conditional_forward(a_ptr=t.data_ptr(), w_y_ptr=t.data_ptr(), classes_ptr=0, out_ptr=t.data_ptr(),
                                      N=1, n_l=0, H=2, C=2, stride_an=2, stride_ah=1, stride_wh=2, stride_wc=1,
                                      stride_cls=0, activation="tanh", dtype="float32", stream=stream)
    # The labelled-prefix arguments (n_l) are checked on the host: tests/cuda/test_cuda_backend_cpu.py.
