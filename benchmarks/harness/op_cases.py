"""Each fused op alone, on the arguments it receives inside the objective.

The arguments are recorded, not rebuilt: the objective runs once (no_grad) on the torch backend's ops
wrapped in a recorder that keeps each call's positional arguments, and a variant takes the arguments of
its call (the encoder's class-conditional call is the first class_conditional_activation call, the
decoder's the second).
"""

from __future__ import annotations

import types
from dataclasses import dataclass
from typing import Callable, Optional

import torch

from ssvae_fast import backends, objective, validation
from ssvae_fast.flops import bernoulli_loglik_linear_flops

from .cases import Batch, Case, provider_unavailable_reason
from .config import OP_BACKENDS, OP_MODES, OP_VARIANTS

# variant -> (its call among its op's calls in one objective evaluation, 0-based; the positions of its
# differentiable arguments)
OP_CALLS = {
    "class_conditional_activation[encoder]": (0, (0, 1)),
    "class_conditional_activation[decoder]": (1, (0, 1)),
    "gaussian_reparam_kl": (0, (0,)),
    "bernoulli_loglik_linear": (0, (0, 1, 2)),
    "elbo_reduction": (0, (0, 2, 3, 4, 5)),
}


@dataclass
class OpBench:
    """One fused op alone: `fn(inputs[i])` for rotating `inputs`; useful matmul FLOPs (None when the op
    has no matmul) and compulsory bytes (each input, output, upstream and input gradient once)."""

    fn: Callable
    inputs: list
    flops: Optional[int]
    bytes: int


def record_op_calls(case: Case, batch: Batch) -> dict[str, list[tuple]]:
    """op name -> the positional arguments of each of its calls, in call order, when the objective runs
    on `batch` (no_grad) with the torch backend's ops. Tensors are detached copies."""
    torch_ops = backends.get_ops("torch")
    calls: dict[str, list[tuple]] = {field: [] for field in dict.fromkeys(OP_VARIANTS.values())}

    def recorded(field):
        op = getattr(torch_ops, field)

        def call(*args):
            calls[field].append(tuple(a.detach().clone() if isinstance(a, torch.Tensor) else a for a in args))
            return op(*args)

        return call

    ops = types.SimpleNamespace(**{field: recorded(field) for field in calls})
    b = batch
    with torch.no_grad():
        objective.per_example_losses(ops, case.model.objective_weights(), b.x_l, b.y_l, b.x_u, b.eps_l, b.eps_u,
                                     case.alpha)
    return calls


def op_inputs(case: Case, variant: str, batch: Batch) -> tuple[tuple, tuple[int, ...]]:
    """The arguments `variant` receives inside the objective on `batch` (`record_op_calls`), and the
    positions of its differentiable arguments."""
    if variant not in OP_VARIANTS:
        raise ValueError(f"unknown op variant {variant!r}; choose from {tuple(OP_VARIANTS)}")
    index, differentiable = OP_CALLS[variant]
    calls = record_op_calls(case, batch)[OP_VARIANTS[variant]]
    if index >= len(calls):
        raise RuntimeError(f"the objective calls {OP_VARIANTS[variant]} {len(calls)} time(s); {variant} is call "
                           f"{index + 1}")
    return calls[index], differentiable


def op_unavailable_reason(variant: str, backend: str, device) -> Optional[str]:
    """None when `backend` has its own implementation of `variant`'s op and can run here."""
    if variant not in OP_VARIANTS:
        raise ValueError(f"unknown op variant {variant!r}; choose from {tuple(OP_VARIANTS)}")
    if backend not in OP_BACKENDS:
        return f"{backend!r} has no fused ops (op benchmarks cover {OP_BACKENDS})"
    reason = provider_unavailable_reason(backend, device)
    if reason is not None:
        return reason
    if backend != "torch":
        field = OP_VARIANTS[variant]
        if getattr(backends.get_ops(backend), field) is getattr(backends.get_ops("torch"), field):
            return f"the {backend} backend uses the torch implementation of {field}"
    return None


def build_op_bench(variant: str, backend: str, case: Case, precision: str, mode: str) -> OpBench:
    """`variant` of `backend` alone, forward ("op_forward": no autograd) or forward+backward
    ("op_forward_backward": torch.autograd.grad of every differentiable input against fixed upstream
    gradients), on the arguments it receives inside the objective on each rotating batch."""
    if mode not in OP_MODES:
        raise ValueError(f"mode must be one of {OP_MODES}, got {mode!r}")
    reason = op_unavailable_reason(variant, backend, case.device)
    if reason is not None:
        raise backends.BackendUnavailableError(reason)
    unchecked = getattr(backends.get_ops(backend), OP_VARIANTS[variant])

    def op(*args):  # the kernels alone: the model has checked what the objective passes them
        with validation.suspended():
            return unchecked(*args)

    low = torch.bfloat16 if precision == "bf16" else None
    backward = mode == "op_forward_backward"
    g = torch.Generator().manual_seed(case.seed + 7)
    inputs = []
    for batch in case.batches:
        args, diff = op_inputs(case, variant, batch)
        args = list(args)
        for i, arg in enumerate(args):
            if isinstance(arg, torch.Tensor) and arg.is_floating_point():
                arg = arg.detach().to(low) if low is not None else arg.detach().clone()
                args[i] = arg.requires_grad_(backward and i in diff)
        grads = None
        if backward:
            with torch.no_grad():
                out = _as_tuple(op(*args))
            grads = tuple(
                torch.randn(o.shape, generator=g).to(device=o.device, dtype=o.dtype) for o in out
            )
        wrt = tuple(args[i] for i in diff if isinstance(args[i], torch.Tensor))  # an absent bias is None
        inputs.append((tuple(args), wrt, grads))

    def forward(item):
        with torch.no_grad():
            return op(*item[0])

    def forward_backward(item):
        args, wrt, grads = item
        return torch.autograd.grad(_as_tuple(op(*args)), wrt, grads)

    fn = forward_backward if backward else forward
    args, wrt, grads = inputs[0]
    out = _as_tuple(forward(inputs[0]))
    nbytes = sum(_nbytes(t) for t in args) + sum(_nbytes(t) for t in out)
    if backward:
        nbytes += sum(_nbytes(t) for t in grads) + sum(_nbytes(t) for t in wrt)
    flops = None
    if OP_VARIANTS[variant] == "bernoulli_loglik_linear":
        (M, H), N = args[0].shape, args[3].shape[0]
        flops = bernoulli_loglik_linear_flops(N, 1, H, args[1].shape[0], backward=backward, rows=M)
    return OpBench(fn, inputs, flops, nbytes)


def _as_tuple(x):
    return tuple(x) if isinstance(x, (tuple, list)) else (x,)


def _nbytes(t) -> int:
    return t.numel() * t.element_size() if isinstance(t, torch.Tensor) else 0
