"""Gradient equivalence of a backend against the reference (docs/design.md section 4), and the model-level
checks every backend's tests share (tests/test_backends.py, tests/test_saved_for_backward.py).

For one model and one batch with explicit noise, `run` returns the per-example losses and the gradient
of a randomly weighted sum of them with respect to every parameter and every input (x_l, x_u, eps_l,
eps_u). `check_backend` compares a backend in `dtype` with the reference in float64, under the rule
|fast - ref64| <= 2 |ref_dtype - ref64| + floor (max-abs per tensor), and float64 runs of the backend
with a float64 floor alone.
"""

from __future__ import annotations

import torch

from tests.factories import cast_model, make_batch, make_model
from tests.tolerance import assert_close_to_reference

# (B, C) grid of docs/design.md section 4 and the three batch compositions.
SHAPES = [(1, 2), (7, 10), (33, 17), (1, 17), (7, 2), (33, 10)]
MIXES = ["labelled", "unlabelled", "mixed"]


def split_batch(B: int, mix: str) -> tuple[int, int]:
    if mix == "labelled":
        return B, 0
    if mix == "unlabelled":
        return 0, B
    n_l = B // 2 if B > 1 else 1
    return n_l, B - n_l if B > 1 else 1  # B = 1 mixed: one labelled and one unlabelled example


def run(model, backend: str, batch, alpha: float = 1.3, weight_seed: int = 7) -> dict:
    """Per-example losses and gradients of sum(w * losses) for every parameter and input."""
    model.backend = backend
    model.zero_grad(set_to_none=True)
    inputs = {k: getattr(batch, k).detach().clone().requires_grad_(True) for k in ("x_l", "x_u", "eps_l", "eps_u")}
    losses = model.loss(
        inputs["x_l"], batch.y_l, inputs["x_u"], alpha=alpha, eps_l=inputs["eps_l"], eps_u=inputs["eps_u"],
        reduction="none",
    )
    g = torch.Generator().manual_seed(weight_seed)
    w = (0.5 + torch.rand(losses.shape[0], generator=g, dtype=torch.float64)).to(losses)
    (losses * w).sum().backward()
    out = {"losses": losses.detach()}
    for name, p in model.named_parameters():
        out[f"grad {name}"] = p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p)
    for name, t in inputs.items():
        out[f"grad {name}"] = t.grad.detach().clone() if t.grad is not None else torch.zeros_like(t)
    return out


def check_backend(
    backend: str,
    B: int,
    C: int,
    mix: str,
    *,
    dtype=torch.float32,
    D: int = 37,
    H: int = 19,
    Z: int = 5,
    hidden_layers: int = 1,
    activation: str = "softplus",
    device: str | None = None,
    check_float64: bool = True,
    likelihood: str = "bernoulli",
):
    """Assert that `backend` agrees with the reference for one configuration (see module docstring).

    `device` defaults to where the backend runs: CUDA for `cuda`, and for `triton` when a GPU is present.
    """
    if device is None:
        gpu = torch.cuda.is_available()
        device = "cuda" if backend == "cuda" or (backend == "triton" and gpu) else "cpu"
    n_l, n_u = split_batch(B, mix)
    model64 = make_model(D, C, Z, H, activation=activation, dtype=torch.float64, hidden_layers=hidden_layers,
                         device=device, likelihood=likelihood)
    batch64 = make_batch(model64, n_l, n_u, dtype=torch.float64, seed=B * 100 + C, device=device)
    ref64 = run(model64, "reference", batch64)
    model_lo = cast_model(model64, dtype)
    batch_lo = batch64.to(dtype=dtype)
    ref_lo = run(model_lo, "reference", batch_lo)
    fast_lo = run(cast_model(model64, dtype), backend, batch_lo)
    for key in ref64:
        assert_close_to_reference(fast_lo[key], ref_lo[key], ref64[key], name=f"{backend} {dtype} {key}")
    if check_float64 and dtype != torch.float64:
        fast64 = run(cast_model(model64, torch.float64), backend, batch64)
        for key in ref64:
            assert_close_to_reference(fast64[key], ref64[key], ref64[key], name=f"{backend} float64 {key}")


def check_autocast(backend: str, device, precision_setting, dtype=torch.bfloat16, likelihood: str = "bernoulli",
                   B: tuple = (16, 17)) -> dict:
    """model.loss under torch.autocast(dtype) with float32 parameters (the benchmarks' "bf16" setting):
    op inputs are cast as torch would, the losses and gradients come out in the reference's dtypes under the
    same autocast, and are no worse than twice the reference's own error there (plus the floor of `dtype`),
    against the float64 reference. precision_setting: a context manager the backend's fast GEMM precision
    runs under; B: (labelled, unlabelled) examples. Returns the backend's results under autocast."""
    model64 = make_model(150, 10, 5, 70, dtype=torch.float64, device=device, likelihood=likelihood)
    batch64 = make_batch(model64, *B, dtype=torch.float64, device=device)
    ref64 = run(model64, "reference", batch64)
    model32, batch32 = cast_model(model64, torch.float32), batch64.to(dtype=torch.float32)
    with torch.autocast(torch.device(device).type, dtype=dtype), precision_setting:
        ref_ac = run(cast_model(model32, torch.float32), "reference", batch32)
        fast_ac = run(cast_model(model32, torch.float32), backend, batch32)
    assert fast_ac.keys() == ref64.keys()
    for key in ref64:
        assert_close_to_reference(fast_ac[key], ref_ac[key], ref64[key], name=f"{backend} autocast {dtype} {key}",
                                  floor_dtype=dtype)
    return fast_ac


def check_compile_fullgraph(backend: str, device="cpu") -> None:
    """objective.per_example_losses with `backend`'s ops compiles as one graph (fullgraph=True, forward and
    backward through the backward custom ops) containing all four custom ops, and matches eager."""
    from ssvae_fast import backends, objective

    model = make_model(13, 3, 4, 11, device=device)
    batch = make_batch(model, 2, 3, device=device)
    ops = backends.get_ops(backend)
    seen = []

    def recording_backend(gm, example_inputs):
        seen.append(str(gm.graph))
        return torch._dynamo.lookup_backend("aot_eager")(gm, example_inputs)

    def loss_fn(x_l, y_l, x_u, eps_l, eps_u):
        weights = model.objective_weights()
        return objective.per_example_losses(ops, weights, x_l, y_l, x_u, eps_l, eps_u, 1.3).sum()

    def loss_and_grads(fn):
        model.zero_grad(set_to_none=True)
        inputs = [t.detach().clone().requires_grad_(t.is_floating_point()) for t in batch.args()]
        loss = fn(*inputs)
        loss.backward()
        grads = [t.grad for t in inputs if t.is_floating_point()] + [p.grad.clone() for p in model.parameters()]
        return loss.detach(), grads

    torch._dynamo.reset()
    compiled_loss, compiled_grads = loss_and_grads(torch.compile(loss_fn, backend=recording_backend, fullgraph=True))
    assert len(seen) == 1
    for op in ("class_conditional_activation", "gaussian_reparam_kl", "bernoulli_loglik_linear", "elbo_reduction"):
        assert f"{op}_{backend}" in seen[0], op
    eager_loss, eager_grads = loss_and_grads(loss_fn)
    torch.testing.assert_close(compiled_loss, eager_loss, rtol=1e-6, atol=1e-6)
    for compiled_grad, eager_grad in zip(compiled_grads, eager_grads):
        torch.testing.assert_close(compiled_grad, eager_grad, rtol=1e-5, atol=1e-6)


def _assert_empty_op(out_shapes, outs, leaves):
    outs = outs if isinstance(outs, tuple) else (outs,)
    assert [tuple(o.shape) for o in outs] == out_shapes
    sum(o.sum() for o in outs).backward()
    for name, leaf in leaves.items():
        assert leaf.grad is not None and leaf.grad.shape == leaf.shape, name
        assert torch.all(leaf.grad == 0), name


def check_empty_inputs(ops, dtype, device="cpu"):
    """Every op of `ops` (a BackendOps) on zero rows: outputs of the right shapes, zero gradients for
    every float input."""
    z = lambda *s: torch.zeros(*s, dtype=dtype, device=device, requires_grad=True)  # noqa: E731
    rand = lambda *s: torch.rand(*s, dtype=dtype, device=device).requires_grad_(True)  # noqa: E731
    no_rows = torch.empty(0, dtype=torch.int64, device=device)

    a, w = z(0, 19), rand(19, 4)
    _assert_empty_op([(0, 4, 19)], ops.class_conditional_activation(a, w, None, "softplus"), {"a": a, "w_y": w})
    a, w = z(0, 19), rand(19, 4)
    _assert_empty_op([(0, 19)], ops.class_conditional_activation(a, w, no_rows, "relu"), {"a": a, "w_y": w})

    head, eps = z(0, 10), z(0, 5)
    _assert_empty_op([(0, 5), (0,)], ops.gaussian_reparam_kl(head, eps), {"head": head, "eps": eps})

    for h_shape in [(0, 1, 19), (0, 10, 19)]:
        h, weight, bias, x = z(*h_shape), rand(37, 19), rand(37), z(0, 37)
        leaves = {"h": h, "weight": weight, "bias": bias, "x": x}
        _assert_empty_op([h_shape[:2]], ops.bernoulli_loglik_linear(h, weight, bias, x), leaves)
    h, weight, bias, x = z(0, 19), rand(37, 19), rand(37), z(0, 37)  # the rows form, no rows
    leaves = {"h": h, "weight": weight, "bias": bias, "x": x}
    _assert_empty_op([(0,)], ops.bernoulli_loglik_linear(h, weight, bias, x, 0), leaves)

    logits, ll_l, kl_l, ll_u, kl_u = z(0, 3), z(0), z(0), z(0, 3), z(0, 3)
    _assert_empty_op(
        [(0,)],
        ops.elbo_reduction(logits, no_rows, ll_l, kl_l, ll_u, kl_u, 1.0),
        {"logits_y": logits, "ll_l": ll_l, "kl_l": kl_l, "ll_u": ll_u, "kl_u": kl_u},
    )
