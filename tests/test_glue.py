"""`ssvae_fast.ops.glue`, what every fused op shares.

`FusedOp`: eager calls (a torch.autograd.Function around the two implementations) and the registered
custom ops give the same tensors bit for bit, forward and backward, for every fused op of every compiled
backend that runs here (`cpu`; `triton` under its interpreter or on a GPU; `cuda` on a GPU); tracers (fake
tensors, torch.compile) get the custom ops. `Implementations`: every op has the cpu, cuda and triton
kernels. `check_tensors`: each backend's device and dtype rules and their messages. `bind_backend`: the
per-backend functions' names. The autocast casting rule the GPU backends share, and what it does to the
elementwise ops.
"""

from __future__ import annotations

import dataclasses
import importlib
import re

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

from ssvae_fast import backends
from ssvae_fast.ops import glue
from tests.op_checks import COMPILED, backend_param, device_of, on_backends

OPS = {name: importlib.import_module(f"ssvae_fast.ops.{name}") for name in (
    "class_conditional_activation", "gaussian_reparam_kl", "bernoulli_loglik_linear", "elbo_reduction")}


def _cases(device, dtype=torch.float32):
    """(op, the forward custom op's arguments) at tiny odd shapes, float inputs in `dtype`."""
    g = torch.Generator().manual_seed(0)
    r = lambda *s: torch.randn(*s, generator=g).to(device=device, dtype=dtype).requires_grad_(True)  # noqa: E731
    N, C, H, D, Z = 3, 4, 5, 7, 2
    classes = torch.randint(0, C, (N,), generator=g).to(device)
    x = (torch.rand(N, D, generator=g) < 0.4).to(device=device, dtype=dtype)
    return {
        "every class": ("class_conditional_activation", (r(N, H), r(H, C), None, "softplus")),
        "one class per row": ("class_conditional_activation", (r(N, H), r(H, C), classes, "relu")),
        "labelled prefix": ("class_conditional_activation", (r(N, H), r(H, C), classes[:1], "softplus")),
        "gaussian": ("gaussian_reparam_kl", (r(N, 2 * Z), r(N, Z))),
        # rows: one labelled example, then C rows for each of the other two; s kept, exact GEMM
        "bernoulli": ("bernoulli_loglik_linear", (r(1 + (N - 1) * C, H), r(D, H), r(D), x, 1, C, True, "ieee")),
        "elbo": ("elbo_reduction", (r(N + 2, C), classes[:2], r(2), r(2), r(N, C), r(N, C), 3.5)),
    }


def _run(call, args):
    """Outputs, and the gradients of every tensor input that requires them under fixed upstream weights."""
    leaves = [
        a.detach().clone().requires_grad_(True) if isinstance(a, torch.Tensor) and a.requires_grad else a
        for a in args
    ]
    outs = call(*leaves)
    outs = outs if isinstance(outs, tuple) else (outs,)
    # Copies: a workspace output (the cpu Bernoulli op's s) may be used up by eager autograd's backward.
    kept = [o.detach().clone() for o in outs]
    diff = [o for o in outs if o.requires_grad]
    weights = [torch.linspace(-1.0, 2.0, o.numel(), device=o.device, dtype=o.dtype).view(o.shape) for o in diff]
    tensors = [a for a in leaves if isinstance(a, torch.Tensor) and a.requires_grad]
    grads = torch.autograd.grad(diff, tensors, weights)
    return kept, list(grads)


@pytest.mark.parametrize("case", ["every class", "one class per row", "labelled prefix", "gaussian", "bernoulli", "elbo"])
@pytest.mark.parametrize("backend,dtype", [backend_param(name, torch.float32) for name in COMPILED]
                         + [backend_param("cpu", torch.bfloat16)])
def test_eager_path_equals_custom_op(backend, dtype, case):
    """Outputs and gradients bit for bit, dtypes included (also the cpu backend's bfloat16 kernels)."""
    op, args = _cases(device_of(backend), dtype)[case]
    fused_op = OPS[op].IMPLEMENTATIONS[backend]
    assert isinstance(fused_op, glue.FusedOp) and fused_op.name == f"{op}_{backend}"
    eager_out, eager_grads = _run(fused_op, args)
    op_out, op_grads = _run(fused_op.op, args)
    assert len(eager_out) == len(op_out) and len(eager_grads) == len(op_grads) > 0
    for a, b in zip(eager_out + eager_grads, op_out + op_grads):
        assert a.shape == b.shape and a.dtype == b.dtype
        assert torch.equal(a, b)


def test_fused_op_routes_tracers_to_the_custom_op():
    calls = []

    def forward(x: torch.Tensor) -> torch.Tensor:
        calls.append(type(x).__name__)
        return x * 2

    def backward(g: torch.Tensor) -> torch.Tensor:
        return g * 2

    op = glue.FusedOp(
        "test_glue_double",
        forward,
        lambda x: torch.empty_like(x),
        backward,
        lambda g: torch.empty_like(g),
        lambda ctx, inputs, output: None,
        lambda ctx, backward, g: (backward(g),),
        device_types="cpu",
    )
    x = torch.arange(3.0, requires_grad=True)
    y = op(x)
    assert isinstance(y.grad_fn, torch.autograd.function.BackwardCFunction)  # the eager Function
    y.sum().backward()
    assert torch.equal(x.grad, torch.full((3,), 2.0))
    with torch.no_grad():
        assert op(x).grad_fn is None
    with FakeTensorMode() as mode:
        fake = op(mode.from_tensor(torch.ones(2)))  # the fake implementation: no call to forward
    assert fake.shape == (2,) and calls == ["Tensor", "Tensor"]
    compiled = torch.compile(lambda t: op(t) + 1, fullgraph=True, backend="eager")
    assert torch.equal(compiled(torch.ones(2)), torch.full((2,), 3.0))


def test_autocast_casting_rule(monkeypatch):
    """The compiled backends' casting rule. Under autocast (state patched, so that it runs anywhere)
    the GEMM op's inputs go to the autocast dtype, fp64 stays; the elementwise ops promote mixed inputs;
    outside autocast nothing changes."""
    bf, f32, f64 = (torch.zeros(2, dtype=d) for d in (torch.bfloat16, torch.float32, torch.float64))
    idx = torch.zeros(2, dtype=torch.int64)
    same = glue.autocast_inputs((bf, f32, None, idx), matmul=True)
    assert [t.dtype if t is not None else None for t in same] == [torch.bfloat16, torch.float32, None, torch.int64]
    monkeypatch.setattr(torch, "is_autocast_enabled", lambda device_type=None: True)
    monkeypatch.setattr(torch, "get_autocast_dtype", lambda device_type=None: torch.bfloat16)
    cast = glue.autocast_inputs((bf, f32, None, f64), matmul=True)
    assert [t.dtype if t is not None else None for t in cast] == [torch.bfloat16, torch.bfloat16, None, torch.float64]
    promoted = glue.autocast_inputs((bf, f32, idx), matmul=False)
    assert [t.dtype for t in promoted] == [torch.float32, torch.float32, torch.int64]


# ------------------------------------------------------------------------------------------------------
# Each backend's input rules (`check_tensors`), the per-backend names (`bind_backend`), the tables.
# ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("backend,device,interpret,where", [
    ("cpu", "meta", "1", "CPU tensors (use backend 'cuda' or 'triton' for CUDA tensors)"),
    ("cuda", "cpu", "1", "CUDA tensors (use backend 'torch' or 'cpu' on the CPU)"),
    ("triton", "cpu", "0", "CUDA tensors (CPU tensors only under TRITON_INTERPRET=1)"),
])
def test_check_tensors_device_messages(backend, device, interpret, where, monkeypatch):
    """A device the backend does not run on: ValueError naming the op, the backend, what it runs on and
    the offending argument (Triton takes CPU tensors only under its interpreter)."""
    monkeypatch.setenv("TRITON_INTERPRET", interpret)
    expected = f"op_{backend}: the {backend} backend runs on {where}, got w on {device}"
    with pytest.raises(ValueError, match=re.escape(expected)):
        glue.check_tensors(f"op_{backend}", backend, {"w": torch.zeros(2, device=device)})


@pytest.fixture
def rules_on_the_cpu(monkeypatch):
    """Every backend's rule with the CPU as its device, so that its dtype checks run on any machine."""
    for backend, rule in list(glue._RULES.items()):
        monkeypatch.setitem(glue._RULES, backend, dataclasses.replace(rule, devices=lambda: ("cpu",)))


@pytest.mark.parametrize("backend", COMPILED)
def test_check_tensors_dtype_messages(backend, rules_on_the_cpu):
    check = lambda floats, ints=None: glue.check_tensors(f"op_{backend}", backend, floats, ints)  # noqa: E731
    f32, f64 = torch.zeros(2), torch.zeros(2, dtype=torch.float64)
    check({"a": f32, "b": f32, "c": None}, {"classes": torch.zeros(2, dtype=torch.int64), "none": None})
    check({"a": f64})
    dtypes = "(torch.bfloat16, torch.float32, torch.float64)" if backend == "cpu" else (
        "(torch.float16, torch.bfloat16, torch.float32, torch.float64)")
    with pytest.raises(TypeError, match=re.escape(f"op_{backend}: float inputs must share one dtype among {dtypes}, "
                                                  "got a torch.float32, b torch.float64")):
        check({"a": f32, "b": f64})
    check({"a": f32.to(torch.bfloat16), "b": f32.to(torch.bfloat16)})  # every compiled backend takes bfloat16
    if backend == "cpu":  # the GPU backends take float16 too; the cpu backend says what to use instead
        expected = (f"op_cpu: float inputs must share one dtype among {dtypes}, got a torch.float16; the cpu "
                    "backend has no float16 kernels: use bfloat16 (e.g. torch.autocast('cpu', dtype=torch.bfloat16)) "
                    "or float32, or backend 'torch'")
        with pytest.raises(TypeError, match=re.escape(expected)):
            check({"a": f32.to(torch.float16)})
    else:
        check({"a": f32.to(torch.float16)})
    with pytest.raises(TypeError, match=re.escape(f"op_{backend}: classes must be int64 class indices, got "
                                                  "torch.int32")):
        check({"a": f32}, {"classes": torch.zeros(2, dtype=torch.int32)})
    with pytest.raises(TypeError, match=re.escape(f"op_{backend}: a must be a torch.Tensor, got list [0.0]")):
        check({"a": [0.0]})
    with pytest.raises(ValueError, match=re.escape(f"op_{backend}: all tensors must be on one device, got a on cpu, "
                                                   "b on meta")):
        check({"a": f32, "b": torch.zeros(2, device="meta")})


def test_bind_backend_names_the_per_backend_function():
    def scaled(x, *, backend="torch", scale=1):
        """Doc."""
        return x, backend, scale

    face = glue.bind_backend(scaled, "cpu")
    assert face.__name__ == face.__qualname__ == "scaled_cpu" and face.__doc__ == "Doc."
    assert face(3, scale=2) == (3, "cpu", 2)
    for module in OPS.values():
        for backend in COMPILED:
            bound = getattr(module, f"{module.OP}_{backend}")
            assert bound.__name__ == f"{module.OP}_{backend}"
            assert bound.__doc__ == getattr(module, module.OP).__doc__


@pytest.mark.parametrize("op", OPS)
def test_implementations_cover_every_compiled_backend(op):
    """Each op's table has the cpu, cuda and triton kernels, each in its backend's kernel package, with
    `forward` and `backward`; registering one (no GPU needed) gives the custom-op pair `<op>_<backend>`
    and `<op>_<backend>_backward`, once."""
    module = OPS[op]
    table = module.IMPLEMENTATIONS
    assert module.OP == table.op == op
    assert sorted(table.backends) == sorted(COMPILED)
    with pytest.raises(ValueError, match="no 'torch' implementation"):
        table.module("torch")
    for backend in COMPILED:
        try:
            kernels = table.module(backend)
        except ImportError:  # pragma: no cover - Triton not installed
            continue
        assert kernels.__name__ == f"{backends._KERNEL_PACKAGES[backend]}.{op}"
        assert callable(kernels.forward) and callable(kernels.backward)
        fused = table[backend]
        assert fused is table[backend] and fused.forward_impl is kernels.forward
        assert hasattr(torch.ops.ssvae_fast, f"{op}_{backend}")
        assert hasattr(torch.ops.ssvae_fast, f"{op}_{backend}_backward")


@pytest.mark.parametrize("backend", on_backends("cpu", "triton", "cuda"))
def test_autocast_promotes_mixed_elementwise_inputs(backend):
    """Under torch.autocast a bf16 activation meets float32 parameters: the elementwise ops run in the wider
    dtype, as torch's own elementwise ops do, and equal the float32 call; outside autocast mixed dtypes are
    refused. (The class-conditional activation and the output-layer ops cast to the autocast dtype instead: a bf16 GEMM, covered by
    tests/ops/test_bernoulli_loglik_linear.py::test_autocast_matches_torch on the cpu backend and
    tests/test_backends.py::test_autocast_bf16_against_tolerance_rule.)"""
    device, ops = device_of(backend), backends.get_ops(backend)
    g = torch.Generator().manual_seed(60)
    r = lambda *shape: torch.randn(*shape, generator=g).to(device)  # noqa: E731
    bf = lambda t: t.to(torch.bfloat16)  # noqa: E731
    head, eps, logits = r(6, 8), r(6, 4), r(5, 3)
    y_l = torch.tensor([2, 0], device=device)
    ll_l, kl_l, ll_u, kl_u = r(2), r(2), r(3, 3), r(3, 3)
    calls = {
        "gaussian_reparam_kl": lambda cast: ops.gaussian_reparam_kl(cast(head), eps),
        "elbo_reduction": lambda cast: ops.elbo_reduction(cast(logits), y_l, ll_l, kl_l, ll_u, kl_u, 2.0),
    }
    for name, call in calls.items():
        with torch.autocast(torch.device(device).type, dtype=torch.bfloat16):
            got = call(bf)
        expected = call(lambda t: bf(t).float())
        for g_, e in zip(got if isinstance(got, tuple) else (got,), expected if isinstance(expected, tuple) else (expected,)):
            assert g_.dtype == torch.float32 and torch.equal(g_, e), name
        with pytest.raises(TypeError, match="one dtype"):
            call(bf)


@pytest.mark.parametrize("backend", on_backends("torch", "cpu", "triton", "cuda"))
def test_autocast_casts_class_columns_like_a_linear_layer(backend):
    """The class-conditional activation is the class part of a linear layer: under torch.autocast a bf16
    pre-activation and float32 class columns both take bf16, as that layer's GEMM would, and the result equals
    the bf16 call outside autocast (bit for bit, in both forms); float64 inputs are never cast."""
    device, ops = device_of(backend), backends.get_ops(backend)
    g = torch.Generator().manual_seed(61)
    a, w_y = torch.randn(5, 12, generator=g).to(device), torch.randn(12, 3, generator=g).to(device)
    bf = lambda t: t.to(torch.bfloat16)  # noqa: E731
    for classes in (None, torch.tensor([2, 0], device=device)):
        with torch.autocast(torch.device(device).type, dtype=torch.bfloat16):
            got = ops.class_conditional_activation(bf(a), w_y, classes, "softplus")
            wide = ops.class_conditional_activation(a.double(), w_y.double(), classes, "softplus")
        expected = ops.class_conditional_activation(bf(a), bf(w_y), classes, "softplus")
        assert got.dtype == torch.bfloat16 and torch.equal(got, expected), classes
        assert wide.dtype == torch.float64
        with pytest.raises(TypeError, match="one dtype"):
            ops.class_conditional_activation(bf(a), w_y, classes, "softplus")
