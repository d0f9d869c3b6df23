"""`class_conditional_activation` (ssvae_fast/ops/class_conditional_activation.py) on every backend.

Against the plain-torch face (outputs, the gradients of a and w_y, docs/design.md section 4's rule): the
every-class, one-class-per-row and labelled-prefix layouts, strided inputs and upstream gradients, extreme
pre-activations, gradients of one input alone, gradcheck in float64, half precision (bfloat16 on the cpu
backend, bfloat16 and float16 on the GPU backends), the cpu backend under torch.autocast against the torch
face under the same autocast; the fakes the tracers see and torch.library.opcheck of the custom ops; int64
offsets (GPU only). The
torch face itself against rows gathered by enumeration. Shapes are per backend: tiny for Triton's
interpreter, past the kernels' serial threshold (cpu) and across several blocks (cuda).
"""

from __future__ import annotations

import pytest
import torch

from ssvae_fast import backends
from ssvae_fast.ops import class_conditional_activation as module
from ssvae_fast.ops.class_conditional_activation import class_conditional_activation_torch as torch_face
from tests.op_checks import (COMPILED, EXTREME, GPU_BACKENDS, HAS_CUDA, assert_grads_match_torch,
                             check_class_conditional_labelled_prefix, check_op_against_torch,
                             check_op_under_autocast, check_opcheck, device_of, half_precision_params,
                             labelled_prefix_rows, leaf, on_backends, op_of, per_backend, rand, registered)

ACTIVATIONS = ["softplus", "relu"]


def _op(backend):
    return op_of(backend, module.OP)


def _classes(n, C, seed, device):
    return torch.randint(0, C, (n,), generator=torch.Generator().manual_seed(seed)).to(device)


# N, H, C: (70, 129) is past the cpu kernels' serial threshold; on cuda N = 130 spans 3 row blocks of the
# backward kernel and H = 67 three blocks of 32 hidden units.
SHAPES = {
    "cpu": [(1, 1, 2), (13, 37, 17), (70, 129, 10)],
    "triton": [(13, 40, 5), (70, 19, 2)],
    "cuda": [(13, 40, 5), (130, 19, 2), (70, 67, 17)],
}


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("labelled", ["none", "all", "prefix"])
@pytest.mark.parametrize("backend,N,H,C", per_backend(SHAPES))
def test_matches_torch(backend, N, H, C, labelled, activation):
    device = device_of(backend)
    a64 = rand(N, H, seed=1)
    weight64 = rand(H, 11 + C, seed=2)  # [W_v | W_y]: w_y is a non-contiguous column slice
    n_l = {"none": 0, "all": N, "prefix": N // 2 + 1}[labelled]
    classes = None if labelled == "none" else _classes(n_l, C, 3, device)

    def make(dtype):
        w_y = leaf(weight64, dtype, device)[:, 11:].detach().requires_grad_(True)  # strides (11 + C, 1)
        assert H == 1 or not w_y.is_contiguous()
        return {"a": leaf(a64, dtype, device), "w_y": w_y, "classes": classes, "activation": activation}

    check_op_against_torch(_op(backend), torch_face, make, device=device)


# Labelled prefix: the first n_l of N examples one row each, then C rows per remaining example. N, n_l, H, C:
# n_l = 0, n_l = N, N - n_l = 1, C = 1, C = 17. Triton: the interpreter's tiles (8 examples x 16 hidden
# units) are crossed by the labelled and unlabelled blocks. cuda: N = 130 and 200 span 3 and 4 row blocks of
# the backward kernel with the prefix ending inside a block (70 = 64 + 6, 129 = 2 * 64 + 1) and inside a
# warp's rows; H = 19, 33, 67 are not multiples of 16 or 32 (partial hidden-unit blocks).
PREFIX_SHAPES = {
    "cpu": [(1, 0, 3, 2), (1, 1, 3, 2), (9, 4, 13, 17), (70, 7, 129, 10), (70, 69, 33, 1)],
    "triton": [(13, 5, 19, 3), (11, 0, 19, 3), (10, 10, 19, 4), (9, 8, 19, 5), (12, 9, 19, 1), (5, 2, 19, 17),
               (3, 2, 19, 17)],
    "cuda": [(13, 0, 40, 5), (13, 13, 40, 5), (13, 12, 19, 5), (130, 70, 67, 17), (70, 33, 19, 1),
             (200, 129, 33, 3), (64, 64, 33, 4), (65, 64, 19, 4)],
}


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("backend,N,n_l,H,C", per_backend(PREFIX_SHAPES))
def test_labelled_prefix(backend, N, n_l, H, C, activation):
    check_class_conditional_labelled_prefix(backends.get_ops(backend), device_of(backend), N=N, n_l=n_l, H=H, C=C,
                                            activation=activation, seed=N + n_l)


@pytest.mark.parametrize("backend,N,n_l,H,C", per_backend({b: [(11, 4, 19, 3), (70, 33, 19, 6)] for b in COMPILED}))
def test_strided_inputs_and_upstream_gradients(backend, N, n_l, H, C):
    """The prefix form reads a (columns strided), w_y (a column slice) and classes (stride 2) in place; the
    upstream gradient may be a transposed tensor or an expanded one (out.sum()): da and dw_y equal the
    torch op's, and w_y's gradient lands in its columns of the weight only."""
    device, op = device_of(backend), _op(backend)
    R = n_l + (N - n_l) * C
    a64, weight64 = rand(H, N, seed=60), rand(H, 7 + C, seed=61)
    classes = _classes(2 * n_l, C, 62, device)[::2]

    def make(dtype):
        return {"a": leaf(a64, dtype, device).t().detach().requires_grad_(True),  # (N, H), strides (1, N)
                "w_y": leaf(weight64, dtype, device)[:, 7:].detach().requires_grad_(True),
                "classes": classes, "activation": "softplus"}

    check_op_against_torch(op, torch_face, make, device=device)

    weight, a_t = leaf(weight64, torch.float64, device), leaf(a64, torch.float64, device)
    grad_t = rand(H, R, seed=63).to(device)

    def outputs_and_grads(fn):
        out = fn(a_t.t(), weight[:, 7:], classes, "softplus")
        assert out.shape == (R, H)
        transposed = torch.autograd.grad(out, (a_t, weight), grad_t.t(), retain_graph=True)  # strides (1, R)
        expanded = torch.autograd.grad(out.sum(), (a_t, weight))  # upstream strides (0, 0)
        return (out, *transposed, *expanded)

    got = outputs_and_grads(op)
    for g, e in zip(got, outputs_and_grads(torch_face)):
        torch.testing.assert_close(g, e, rtol=1e-12, atol=1e-12)
    assert torch.all(got[2][:, :7] == 0)


@pytest.mark.parametrize("backend", on_backends(*COMPILED))
def test_gradient_reaches_weight_columns(backend):
    """w_y arrives as weight[:, x_dim:], a strided view (every-class form); its gradient lands in those
    columns of weight."""
    device, op = device_of(backend), _op(backend)
    weight = leaf(rand(19, 30 + 4, seed=4), torch.float64, device)
    a = leaf(rand(6, 19, seed=5), torch.float64, device)
    w_y = weight[:, 30:]
    assert w_y.stride() == (34, 1)
    op(a, w_y, None, "softplus").sum().backward()
    expected = torch.autograd.grad(torch_face(a, weight[:, 30:], None, "softplus").sum(), weight)[0]
    torch.testing.assert_close(weight.grad, expected, rtol=1e-12, atol=1e-12)
    assert torch.all(weight.grad[:, :30] == 0)


@pytest.mark.parametrize("which", ["a", "w_y"])
@pytest.mark.parametrize("labelled", [False, True])
@pytest.mark.parametrize("backend", on_backends(*COMPILED))
def test_one_input_needs_a_gradient(backend, labelled, which):
    """A gradient requested for a alone or for w_y alone (the backward skips the other)."""
    device = device_of(backend)
    a = leaf(rand(40, 33, seed=6), torch.float64, device, which == "a")
    w_y = leaf(rand(33, 5, seed=7), torch.float64, device, which == "w_y")
    classes = _classes(40, 5, 8, device) if labelled else None
    assert_grads_match_torch(_op(backend), torch_face, (a, w_y, classes, "softplus"), (a if which == "a" else w_y,))


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("indexed", [False, True])
@pytest.mark.parametrize("backend", on_backends(*COMPILED))
def test_extreme_preactivations(backend, indexed, activation):
    device = device_of(backend)
    a64 = EXTREME.repeat(3, 1)  # (3, 13)
    w64 = rand(EXTREME.numel(), 4, seed=25, scale=1e-2)
    classes = torch.tensor([0, 3, 1], device=device) if indexed else None

    def make(dtype):
        return {"a": leaf(a64, dtype, device), "w_y": leaf(w64, dtype, device), "classes": classes,
                "activation": activation}

    check_op_against_torch(_op(backend), torch_face, make, device=device)


@pytest.mark.parametrize("n_l", [None, 3, 2, 1, 0])  # every class; one class per row; labelled prefixes
@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("backend", on_backends("torch", *COMPILED))
def test_gradcheck_float64(backend, activation, n_l):
    # randn pre-activations: no relu kink within gradcheck's 1e-6 steps
    device, op = device_of(backend), _op(backend)
    g = torch.Generator().manual_seed(38)
    a, weight = (torch.randn(*s, generator=g, dtype=torch.float64).to(device).requires_grad_(True)
                 for s in ((3, 5), (5, 7)))
    classes = None if n_l is None else torch.tensor([2, 0, 1], device=device)[:n_l]
    assert torch.autograd.gradcheck(lambda a, w: op(a, w[:, 4:], classes, activation), (a, weight))


@pytest.mark.parametrize("backend", ["torch", *COMPILED])
def test_shape_errors(backend):
    """Shapes are checked first, on any device (before the backend's device and dtype rules)."""
    op = getattr(module, f"{module.OP}_{backend}")
    with pytest.raises(ValueError, match="classes must be .* n_l <= N"):  # more classes than rows
        op(torch.rand(2, 4), torch.rand(4, 3), torch.tensor([0, 1, 2]), "relu")
    with pytest.raises(ValueError, match="a must be"):
        op(torch.zeros(2, 4, 1), torch.zeros(4, 3), None, "relu")
    with pytest.raises(ValueError, match="w_y must be"):
        op(torch.zeros(2, 4), torch.zeros(5, 3), None, "relu")
    with pytest.raises(ValueError, match="activation"):
        op(torch.zeros(2, 4), torch.zeros(4, 3), None, "tanh")


@pytest.mark.parametrize("backend", on_backends(*COMPILED))
def test_class_indices_must_be_int64(backend):
    device = device_of(backend)
    with pytest.raises(TypeError, match="int64"):
        _op(backend)(torch.rand(2, 4, device=device), torch.rand(4, 3, device=device),
                     torch.tensor([0, 1], dtype=torch.int32, device=device), "relu")


# (N, n_l, C): n_l = 0, n_l = N, N - n_l = 1, C = 1, and C = 0 (no enumerated row).
LAYOUTS = [(5, 0, 3), (5, 5, 3), (5, 4, 3), (6, 2, 1), (7, 3, 17), (4, 2, 0)]


@pytest.mark.parametrize("N,n_l,C", LAYOUTS)
@pytest.mark.parametrize("backend", COMPILED)
def test_fake_shapes(backend, N, n_l, C):
    """The custom ops' fakes give the layout's shapes, forward and backward, as the tracers
    (torch.compile, CUDA-graph capture, export) see them: meta tensors, no kernel runs (no GPU needed)."""
    fused = registered(module, backend)
    meta = lambda *shape: torch.empty(*shape, device="meta", requires_grad=True)  # noqa: E731
    H, M = 6, n_l + (N - n_l) * C
    a, w_y = meta(N, H), meta(H, C)
    classes = torch.empty(n_l, dtype=torch.int64, device="meta")
    out = fused.op(a, w_y, classes, "softplus")
    assert out.shape == (M, H)
    out.sum().backward()
    assert a.grad.shape == (N, H) and w_y.grad.shape == (H, C)
    grad = torch.empty(M, H, device="meta")
    da, dw_y = fused.backward_op(grad, a, w_y, None, classes, "relu", N, True, True)
    assert da.shape == (N, H) and dw_y.shape == (H, C)
    da, dw_y = fused.backward_op(grad, None, w_y, out, classes, "relu", N, False, True)
    assert da.shape == (0,) and dw_y.shape == (H, C)
    assert fused.op(a, w_y, None, "relu").shape == (N, C, H)


@pytest.mark.parametrize("backend", on_backends(*COMPILED))
def test_torch_library_opcheck(backend):
    def cases(r, grad, device):
        classes = torch.tensor([2, 0, 1], device=device)
        return ([(grad(3, 5), grad(5, 3), cls, act) for cls, act in
                 ((None, "softplus"), (classes, "relu"), (classes[:1], "relu"))],
                [(r(3, 3, 5), r(3, 5), r(5, 3), None, None, "softplus", 3, True, True),
                 (r(1 + 2 * 3, 5), r(3, 5), r(5, 3), None, classes[:1], "softplus", 3, True, False)])

    check_opcheck(module, backend, cases)


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("backend,dtype", half_precision_params("cpu", *GPU_BACKENDS))
def test_half_precision_matches_torch(backend, dtype, activation):
    """bf16/fp16 inputs, fp32 compute, outputs in the input dtype, under the tolerance rule (on the cpu also
    past the kernels' serial threshold, with rows of three chunks of their 256-element bf16 stage, and with
    blocks of more than 64 examples, whose float grad_W_y partials are flushed into double on the way)."""
    device = device_of(backend)
    for N, H in [(13, 40)] + ([(70, 129), (9, 600), (1100, 24)] if backend == "cpu" else []):
        a64, w64 = rand(N, H, seed=40), rand(H, 16, seed=41)
        classes = _classes(N, 5, 42, device)
        for cls in (None, classes, classes[: N // 2]):
            check_op_against_torch(
                _op(backend), torch_face,
                lambda dt: {"a": leaf(a64, dt, device), "w_y": leaf(w64, dt, device)[:, 11:], "classes": cls,
                            "activation": activation},
                device=device, dtypes=(dtype,),
            )


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("half", [("a",), ("a", "w_y")])
@pytest.mark.parametrize("backend", on_backends("cpu"))
def test_autocast_matches_torch(backend, half, activation):
    """Under torch.autocast(bfloat16): a bf16 `a` (a GEMM's output) with float32 class columns, as M2's first
    layers take them (the casting rule runs the op in float32), or both bf16: the torch face's dtypes, and
    the tolerance rule against the torch face under the same autocast, every layout."""
    device = device_of(backend)
    a64, w64 = rand(70, 129, seed=43, scale=2.0), rand(129, 16, seed=44)
    classes = _classes(70, 5, 45, device)
    for cls in (None, classes, classes[:30]):
        check_op_under_autocast(
            _op(backend), torch_face,
            lambda dt: {"a": leaf(a64, dt, device), "w_y": leaf(w64, dt, device)[:, 11:], "classes": cls,
                        "activation": activation},
            half, device=device,
        )


@pytest.mark.skipif(
    HAS_CUDA and torch.cuda.get_device_properties(0).total_memory < 40 * 2**30, reason="needs a GPU with 40 GB"
)
@pytest.mark.parametrize("backend", on_backends(*GPU_BACKENDS, gpu_only=True))
def test_int64_offsets(backend):
    """Outputs past 2**31 elements (N * C * H = 2.25e9): the last rows of the (N, C, H) form and of the
    labelled-prefix rows, and the backward's da, are right (int32 offsets would wrap)."""
    op, fused = _op(backend), module.IMPLEMENTATIONS[backend]
    torch.manual_seed(0)
    N, C, H = 1_100_000, 4, 512
    a, w_y = torch.randn(N, H, device="cuda"), torch.randn(H, C, device="cuda")
    out = op(a, w_y, None, "relu")
    torch.testing.assert_close(out[-2:], torch.relu(a[-2:, None, :] + w_y.t()[None]))
    del out
    grad_out = torch.ones(N, C, H, device="cuda")
    da, dw_y = fused.backward_op(grad_out, a, w_y, None, None, "relu", N, True, True)
    del grad_out
    expected_da = ((a[-2:, None, :] + w_y.t()[None]) > 0).sum(1).float()
    torch.testing.assert_close(da[-2:], expected_da)
    assert dw_y.shape == (H, C)
    classes = torch.tensor([3, 1], device="cuda")  # labelled prefix: 2 + (N - 2) * C rows
    out = op(a, w_y, classes, "relu")
    torch.testing.assert_close(out[:2], torch.relu(a[:2] + w_y.t()[classes]))
    torch.testing.assert_close(out[-C:], torch.relu(a[-1:] + w_y.t()))


@pytest.mark.parametrize("N,n_l,C", [(5, 0, 3), (5, 5, 3), (5, 2, 3), (6, 5, 17), (3, 1, 1)])
def test_torch_face_equals_gathered_rows(N, n_l, C):
    """The torch face's labelled-prefix form (the spec of every backend's) equals the naive computation on
    rows gathered by enumeration, values and gradients, in float64."""
    g = torch.Generator().manual_seed(N * 100 + n_l * 10 + C)
    a = torch.randn(N, 7, generator=g, dtype=torch.float64, requires_grad=True)
    w_y = torch.randn(7, C, generator=g, dtype=torch.float64, requires_grad=True)
    classes = torch.randint(0, C, (n_l,), generator=g)
    examples, row_classes = labelled_prefix_rows(N, n_l, C, classes)
    out = torch_face(a, w_y, classes, "softplus")
    naive = torch.nn.functional.softplus(a[examples] + w_y.t()[row_classes])
    torch.testing.assert_close(out, naive, rtol=1e-13, atol=0)
    upstream = torch.randn(out.shape, generator=g, dtype=torch.float64)
    torch.testing.assert_close(torch.autograd.grad((out * upstream).sum(), (a, w_y)),
                               torch.autograd.grad((naive * upstream).sum(), (a, w_y)), rtol=1e-12, atol=1e-13)
