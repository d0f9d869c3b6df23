"""`ssvae_fast.ops.glue.FusedOp`: eager calls (a torch.autograd.Function around the two implementations)
and the registered custom ops give the same tensors bit for bit, forward and backward, for every fused op
of every compiled backend that runs here (`cpu`; `triton` under its interpreter or on a GPU; `cuda` on a
GPU); tracers (fake tensors, torch.compile) get the custom ops. The autocast casting rule the GPU backends
share.
"""

from __future__ import annotations

import importlib

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

from ssvae_fast import backends
from ssvae_fast.ops import glue

MODULES = {
    "cpu": "ssvae_fast.ops.cpu_backend",
    "triton": "ssvae_fast.ops.triton_ops",
    "cuda": "ssvae_fast.ops.cuda_backend",
}


def _backend_module(name):
    reason = backends.unavailable_reason(name)
    if reason is not None:
        pytest.skip(f"backend {name!r} cannot run here: {reason}")
    return importlib.import_module(MODULES[name])


def _device(name):
    return "cpu" if name == "cpu" or not torch.cuda.is_available() else "cuda"


def _cases(device):
    """(attribute of the FusedOp in the backend module, forward arguments) at tiny odd shapes."""
    g = torch.Generator().manual_seed(0)
    r = lambda *s: torch.randn(*s, generator=g).to(device).requires_grad_(True)  # noqa: E731
    N, C, H, D, Z = 3, 4, 5, 7, 2
    classes = torch.randint(0, C, (N,), generator=g).to(device)
    x = (torch.rand(N, D, generator=g) < 0.4).float().to(device)
    return {
        "every class": ("_class_conditional_op", (r(N, H), r(H, C), None, "softplus")),
        "one class per row": ("_class_conditional_op", (r(N, H), r(H, C), classes, "relu")),
        "labelled prefix": ("_class_conditional_op", (r(N, H), r(H, C), classes[:1], "softplus")),
        "gaussian": ("_gaussian_op", (r(N, 2 * Z), r(N, Z))),
        # rows: one labelled example, then C rows for each of the other two
        "bernoulli": ("_bernoulli_op", (r(1 + (N - 1) * C, H), r(D, H), r(D), x, 1, C)),
        "elbo": ("_elbo_op", (r(N + 2, C), classes[:2], r(2), r(2), r(N, C), r(N, C), 3.5)),
    }


def _forward_args(backend, attr, args):
    """The forward op's own argument list (the Bernoulli op also takes store_s, and on cuda the precision)
    after (h rows, weight, bias, x, n_labelled, C)."""
    if attr != "_bernoulli_op":
        return args
    return args + ((True,) if backend != "cuda" else (True, "ieee"))


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
    weights = [torch.linspace(-1.0, 2.0, o.numel(), device=o.device).view(o.shape) for o in diff]
    tensors = [a for a in leaves if isinstance(a, torch.Tensor) and a.requires_grad]
    grads = torch.autograd.grad(diff, tensors, weights)
    return kept, list(grads)


@pytest.mark.parametrize("backend", ["cpu", "triton", "cuda"])
@pytest.mark.parametrize(
    "case", ["every class", "one class per row", "labelled prefix", "gaussian", "bernoulli", "elbo"]
)
def test_eager_path_equals_custom_op(backend, case):
    module = _backend_module(backend)
    attr, args = _cases(_device(backend))[case]
    fused_op = getattr(module, attr)
    assert isinstance(fused_op, glue.FusedOp)
    args = _forward_args(backend, attr, args)
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
    """The cuda and triton backends' casting rule. Under autocast (state patched, so that it runs anywhere)
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
