"""Every backend's whole objective against the reference (docs/design.md section 4), and what each must do
at model level.

- `tests.equivalence.check_backend` (the loss and the gradient of every parameter and input against the
  float64 reference, in float32 under the tolerance rule, then in float64) over SHAPES x MIXES (a subset for
  Triton's interpreter), deeper networks, relu, larger sizes (the cpu kernels' parallel paths, several
  cuda tiles), the recompute settings; the check itself catches a wrong op;
- bitwise determinism of loss + backward; every op on empty inputs; M2 trains;
- 16-bit: a bf16 model (bf16/fp16 on the GPU backends) and a float32 model under torch.autocast against the
  rule (the reference in the same dtype, or under the same autocast), both likelihoods on the cpu backend;
  M2, M1 and M1+M2 train under CPU autocast and as bf16 models, in the reference's dtypes;
- torch.compile: one graph through the custom ops (forward and backward), no break inside the fused ops,
  inductor;
- the registry: `get_ops` gives each op module's per-backend functions; the backends' module settings;
- GPU only: TF32 against the rule, the current stream, a CUDA-graph-captured training step.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import importlib
import os

import pytest
import torch

from ssvae_fast import M1, M1M2, M2, backends
from ssvae_fast.ops import gaussian_reparam_kl
from tests.equivalence import (
    MIXES,
    SHAPES,
    check_autocast,
    check_backend,
    check_compile_fullgraph,
    check_empty_inputs,
    run,
)
from tests.factories import cast_model, make_batch, make_model
from tests.op_checks import (COMPILED, GPU_BACKENDS, HALF_DTYPES, RECOMPUTE_BACKENDS, device_of, gemm_precision,
                             gpu_precision_params, on_backends, per_backend, recompute_logits)

pytestmark = pytest.mark.usefixtures("exact_gemm")

ALL = ("torch", *COMPILED)
OP_NAMES = ("class_conditional_activation", "gaussian_reparam_kl", "bernoulli_loglik_linear", "gaussian_loglik_linear",
            "elbo_reduction")

# Triton's interpreter is slow: fewer shapes (its larger batch is in test_larger_sizes).
TRITON_SHAPES = [(1, 2), (7, 17), (1, 17), (7, 2)]
REFERENCE_CASES = per_backend(
    {b: [(B, C, mix) for B, C in SHAPES for mix in MIXES] for b in ("torch", "cpu", "cuda")}
    | {"triton": [(B, C, mix) for B, C in TRITON_SHAPES for mix in MIXES]}
)


@pytest.mark.parametrize("backend,B,C,mix", REFERENCE_CASES)
def test_matches_reference(backend, B, C, mix):
    check_backend(backend, B, C, mix)  # float32 under the rule, then float64


@pytest.mark.parametrize("B,C,mix", [(7, 10, "mixed"), (1, 2, "unlabelled"), (7, 17, "labelled")])
@pytest.mark.parametrize("backend", on_backends(*ALL))
def test_gaussian_likelihood_matches_reference(backend, B, C, mix):
    """M2 with the Gaussian likelihood (its log-variance a parameter): the whole objective and every gradient."""
    check_backend(backend, B, C, mix, likelihood="gaussian")


@pytest.mark.parametrize("activation", ["softplus", "relu"])
@pytest.mark.parametrize("backend", on_backends(*ALL))
def test_deeper_networks(backend, activation):
    check_backend(backend, 7, 10, "mixed", hidden_layers=2, activation=activation, D=29, H=13)


@pytest.mark.parametrize("backend,config", per_backend({
    "torch": [dict(B=33, C=17, dtype=torch.float64)],
    "cpu": [dict(B=40, C=10, D=97, H=90, Z=8, check_float64=False)],  # past every kernel's serial threshold
    "triton": [dict(B=33, C=10)],
    "cuda": [dict(B=33, C=10, D=150, H=70, Z=9)],  # 3 D tiles, several K steps, 6 row tiles
}))
def test_larger_sizes(backend, config):
    check_backend(backend, mix="mixed", **config)


@pytest.mark.parametrize("B,C,mix", [(7, 10, "mixed"), (1, 2, "unlabelled")])
@pytest.mark.parametrize("backend", on_backends(*RECOMPUTE_BACKENDS))
def test_recompute_variant(backend, B, C, mix):
    """Nothing of size (rows, D) kept: the Bernoulli backward recomputes the logits; same results."""
    with recompute_logits(backend):
        check_backend(backend, B, C, mix)


def test_equivalence_check_can_fail():
    """A backend with a wrong op must be caught: a 0.1% error in the KL, or a gradient 1% off, one at a
    time, and the check must raise."""
    base = backends.get_ops("torch")

    def wrong_kl(head, eps):
        z, kl = gaussian_reparam_kl.gaussian_reparam_kl_torch(head, eps)
        return z, kl * 1.001

    def wrong_z(head, eps):
        z, kl = gaussian_reparam_kl.gaussian_reparam_kl_torch(head, eps)
        return z.detach() + (z - z.detach()) * 0.99, kl  # right value, gradient 1% off

    for wrong in (wrong_kl, wrong_z):
        backends._OPS_CACHE["torch"] = dataclasses.replace(base, gaussian_reparam_kl=wrong)
        try:
            with pytest.raises(AssertionError):
                check_backend("torch", 7, 10, "mixed")
        finally:
            backends._OPS_CACHE["torch"] = base


# Sizes (D, C, Z, H, n_l, n_u) and GEMM precision of each backend's determinism check.
DETERMINISM = {
    "cpu": [((97, 10, 8, 90, 6, 34), "ieee")],
    "triton": [((37, 10, 5, 19, 4, 5), "ieee")],
    "cuda": [((150, 10, 5, 70, 20, 30), "ieee"), ((150, 10, 5, 70, 20, 30), "tf32")],
}


@pytest.mark.parametrize("backend,sizes,precision", per_backend(DETERMINISM))
def test_is_deterministic(backend, sizes, precision):
    """Two runs of loss + backward give bitwise-equal losses and gradients (no atomics anywhere)."""
    D, C, Z, H, n_l, n_u = sizes
    device = device_of(backend)
    model = make_model(D, C, Z, H, device=device)
    batch = make_batch(model, n_l, n_u, device=device)
    with gemm_precision(backend, precision):
        first, second = run(model, backend, batch), run(model, backend, batch)
    for key in first:
        assert torch.equal(first[key], second[key]), key


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("backend", on_backends(*ALL))
def test_empty_inputs(backend, dtype):
    check_empty_inputs(backends.get_ops(backend), dtype, device_of(backend))


@pytest.mark.parametrize("backend", on_backends(*ALL))
def test_m2_trains(backend):
    device = device_of(backend)
    torch.manual_seed(0)
    model = M2(37, 3, 5, hidden=(19,), backend=backend).to(device)
    assert model.resolved_backend() == backend
    g = torch.Generator().manual_seed(1)
    x_l, x_u = torch.rand(6, 37, generator=g).to(device), torch.rand(6, 37, generator=g).to(device)
    y_l = torch.randint(0, 3, (6,), generator=g).to(device)
    eps_l, eps_u = torch.randn(6, 5, generator=g).to(device), torch.randn(6, 3, 5, generator=g).to(device)
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


@pytest.mark.parametrize("backend", on_backends(*COMPILED))
def test_torch_compile_fullgraph_through_custom_ops(backend):
    check_compile_fullgraph(backend, device_of(backend))


def _model_loss(backend):
    """(model.loss over a small batch as a function of the batch, the batch), on the backend's device."""
    device = device_of(backend)
    model = make_model(13, 3, 4, 11, device=device)
    model.backend = backend
    batch = make_batch(model, 2, 3, device=device)
    # A backend is resolved, and its ops imported and registered, on first use: outside the compiled
    # region here, as a training script's first eager step would do.
    backends.get_ops(model.resolved_backend(device))

    def loss(x_l, y_l, x_u, eps_l, eps_u):
        return model.loss(x_l, y_l, x_u, alpha=1.0, eps_l=eps_l, eps_u=eps_u)

    return model, loss, batch


# Where the fused ops, their registration and their launchers live: no graph break may come from these
# files once the backend is resolved (`_model_loss`).
_PACKAGE = os.path.dirname(importlib.import_module("ssvae_fast").__file__)
_FUSED_FILES = tuple(os.path.join(_PACKAGE, part) for part in (
    "cpu", "cuda", "triton", "objective.py", "rows.py", "_launch.py", "ops/glue.py",
    *(f"ops/{name}.py" for name in OP_NAMES)))


@pytest.mark.parametrize("backend", on_backends(*COMPILED))
def test_torch_compile_model_loss_has_no_break_in_fused_ops(backend):
    _, loss, batch = _model_loss(backend)
    torch._dynamo.reset()
    explanation = torch._dynamo.explain(loss)(*batch.args())
    for reason in explanation.break_reasons:
        files = [frame.filename for frame in reason.user_stack]
        assert not any(f.startswith(_FUSED_FILES) for f in files), reason.reason


@pytest.mark.parametrize("backend", on_backends("cpu", "cuda"))
def test_torch_compile_inductor_model_loss(backend):
    """torch.compile(model.loss) with inductor: one graph, no break, same loss and gradients as eager."""
    model, loss, batch = _model_loss(backend)

    def loss_and_grads(fn):
        model.zero_grad(set_to_none=True)
        value = fn(*batch.args())
        value.backward()
        return value.detach(), [p.grad.clone() for p in model.parameters()]

    torch._dynamo.reset()
    compiled_loss, compiled_grads = loss_and_grads(torch.compile(loss, backend="inductor", fullgraph=True))
    eager_loss, eager_grads = loss_and_grads(loss)
    torch.testing.assert_close(compiled_loss, eager_loss, rtol=1e-5, atol=1e-5)
    for compiled_grad, eager_grad in zip(compiled_grads, eager_grads):
        torch.testing.assert_close(compiled_grad, eager_grad, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("mode", ["autocast", "bfloat16 model"])
@pytest.mark.parametrize("backend", on_backends("cpu"))
def test_torch_compile_model_loss_in_bfloat16(backend, mode):
    """torch.compile(model.loss) (aot_eager, one graph) under torch.autocast("cpu", dtype=torch.bfloat16) or on
    a bf16 model: the fakes' dtypes are the kernels' (reductions in float32), so the graph traces, and its loss
    and gradients equal eager's."""
    model, loss, batch = _model_loss(backend)
    if mode == "bfloat16 model":
        model.to(torch.bfloat16)
        batch = batch.to(dtype=torch.bfloat16)
    context = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if mode == "autocast" else contextlib.nullcontext

    def loss_and_grads(fn):
        model.zero_grad(set_to_none=True)
        with context():
            value = fn(*batch.args())
        value.backward()
        return value.detach(), [p.grad.clone() for p in model.parameters()]

    torch._dynamo.reset()
    compiled_loss, compiled_grads = loss_and_grads(torch.compile(loss, backend="aot_eager", fullgraph=True))
    eager_loss, eager_grads = loss_and_grads(loss)
    assert compiled_loss.dtype == eager_loss.dtype == (torch.float32 if mode == "autocast" else torch.bfloat16)
    torch.testing.assert_close(compiled_loss, eager_loss, rtol=0, atol=0)
    for compiled_grad, eager_grad in zip(compiled_grads, eager_grads):
        torch.testing.assert_close(compiled_grad, eager_grad, rtol=0, atol=0)


@pytest.mark.parametrize("backend", ALL)
def test_get_ops_gives_each_op_modules_backend_function(backend):
    """backends.get_ops(name): the four ops of ssvae_fast/ops/<op>.py with the backend bound (the torch
    faces for `torch`); built without running anything, so also where the backend cannot run."""
    if backend == "cpu" and backends.unavailable_reason("cpu") is not None:
        pytest.skip(backends.unavailable_reason("cpu"))
    ops = backends.get_ops(backend)
    assert isinstance(ops, backends.BackendOps) and ops.name == backend
    for name in OP_NAMES:
        module = importlib.import_module(f"ssvae_fast.ops.{name}")
        assert module.OP == name
        assert getattr(ops, name) is getattr(module, f"{name}_{backend}")
    with pytest.raises(ValueError, match="no fused ops"):
        backends.get_ops("reference")


# ------------------------------------------------------------------------------------------------------
# The backends' module settings (read at every launch; context managers that restore the previous value).
# ------------------------------------------------------------------------------------------------------
def _setting(name):
    """(get, set, values, a value set must refuse or None) of setting `name`."""
    if name == "cpu recompute":
        import ssvae_fast.cpu.bernoulli_loglik_linear as kernels

        return (lambda: not kernels.keeps_s()), kernels.recompute_bernoulli_logits, (True, False), None
    if name == "cuda precision":
        import ssvae_fast.cuda

        return ssvae_fast.cuda.get_precision, ssvae_fast.cuda.set_precision, ssvae_fast.cuda.PRECISIONS, "bf16"
    import ssvae_fast.triton

    if name == "triton input precision":
        return (ssvae_fast.triton.get_input_precision, ssvae_fast.triton.set_input_precision,
                ("ieee", "tf32", "tf32x3"), "bf16")
    return ssvae_fast.triton.get_bernoulli_recompute, ssvae_fast.triton.set_bernoulli_recompute, (True, False), None


@pytest.mark.parametrize("name", ["cpu recompute", "cuda precision"] + [
    pytest.param(name, marks=pytest.mark.skipif(backends.unavailable_reason("triton") is not None,
                                                reason=f"{backends.unavailable_reason('triton')}"))
    for name in ("triton input precision", "triton recompute")])
def test_module_setting(name):
    get, set_, values, refused = _setting(name)
    before = get()
    for value in values:
        other = values[1] if value == values[0] else values[0]
        with set_(value):
            assert get() == value
            with set_(other):
                assert get() == other
            assert get() == value
        assert get() == before
    set_(values[-1])  # the handle ignored: the value stays
    try:
        assert get() == values[-1]
    finally:
        set_(before)
    if refused is not None:
        with pytest.raises(ValueError, match="precision"):
            set_(refused)
        assert get() == before


# ------------------------------------------------------------------------------------------------------
# 16-bit: bf16 / fp16 models, and float32 models under torch.autocast.
# ------------------------------------------------------------------------------------------------------
# (backend, precision of the 16-bit GEMM, batch, dtype, likelihood): the cpu backend in bfloat16 (torch's
# GEMMs), both likelihoods; Triton's tl.dot ignores the precision; cuda's tensor-core tiles ("tf32") and
# exact FMAs ("ieee"); the GPU backends in both 16-bit dtypes.
HALF_MODEL_CASES = per_backend({"cpu": [("ieee", B, torch.bfloat16, likelihood) for B in (7, 33)
                                        for likelihood in ("bernoulli", "gaussian")]}) + per_backend(
    {"triton": [("ieee", 33, dtype, "bernoulli") for dtype in HALF_DTYPES["triton"]],
     "cuda": [(precision, B, dtype, "bernoulli") for precision, B in (("tf32", 33), ("ieee", 7))
              for dtype in HALF_DTYPES["cuda"]]}, gpu_only=True)


@pytest.mark.parametrize("backend,precision,B,dtype,likelihood", HALF_MODEL_CASES)
def test_half_precision_against_tolerance_rule(backend, precision, B, dtype, likelihood):
    """A 16-bit model (parameters, inputs and noise in `dtype`) against the reference in the same dtype."""
    with gemm_precision(backend, precision):
        check_backend(backend, B, 10, "mixed", dtype=dtype, device=device_of(backend), check_float64=False,
                      likelihood=likelihood)


# (backend, device, likelihood, (labelled, unlabelled) examples): the cpu backend under CPU autocast, both
# likelihoods and the three batch compositions; the GPU backends under CUDA autocast.
AUTOCAST_CASES = per_backend({"cpu": [("cpu", likelihood, B) for likelihood in ("bernoulli", "gaussian")
                                      for B in ((16, 17), (16, 0), (0, 17))]}) + per_backend(
    {name: [("cuda", "bernoulli", (16, 17))] for name in GPU_BACKENDS}, gpu_only=True)


@pytest.mark.parametrize("backend,device,likelihood,B", AUTOCAST_CASES)
def test_autocast_bf16_against_tolerance_rule(backend, device, likelihood, B):
    """A float32 model under torch.autocast(bfloat16) against the reference under the same autocast: the same
    dtypes (losses in float32), within the rule (`equivalence.check_autocast`)."""
    setting = gemm_precision(backend, "tf32") if device == "cuda" else contextlib.nullcontext()
    fast = check_autocast(backend, device, setting, torch.bfloat16, likelihood=likelihood, B=B)
    assert fast["losses"].dtype == torch.float32


def _training_setup(name: str, backend: str, dtype):
    """(a model, loss(model, generator)) for `name`: M2 with either likelihood, M1 with either likelihood, or
    M1+M2 (M2 on M1's features, Gaussian); small sizes, a fixed batch in `dtype`, the model's."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    x, y = torch.rand(12, 37, generator=g).to(dtype), torch.randint(0, 3, (6,), generator=g)
    kind, likelihood = (name.split() + ["gaussian"])[:2]
    if kind == "M1":
        model = M1(37, 5, hidden=(19,), likelihood=likelihood, backend=backend)
        return model.to(dtype), lambda m, gen: m.loss(x, generator=gen)
    if kind == "M2":
        model = M2(37, 3, 5, hidden=(19,), likelihood=likelihood, backend=backend)
    else:
        model = M1M2(M1(37, 6, hidden=(19,), backend=backend), M2(6, 3, 5, hidden=(19,), likelihood="gaussian",
                                                                    backend=backend))
    return model.to(dtype), lambda m, gen: m.loss(x[:6], y, x[6:], alpha=1.0, generator=gen)


@pytest.mark.parametrize("mode", ["autocast", "bfloat16 model"])
@pytest.mark.parametrize("name", ["M2 bernoulli", "M2 gaussian", "M1 bernoulli", "M1 gaussian", "M1+M2"])
@pytest.mark.parametrize("backend", on_backends("torch", "cpu"))
def test_trains_in_bfloat16_on_the_cpu(backend, name, mode):
    """Training steps (loss, backward, Adam) under torch.autocast("cpu", dtype=torch.bfloat16) with float32
    parameters, or with the model in bfloat16: each loss and gradient finite and in the reference's dtype (the
    reference run on the same model and noise in the same setting), and the loss goes down on a fixed batch
    and fixed noise."""
    model, loss_fn = _training_setup(name, backend, torch.bfloat16 if mode == "bfloat16 model" else torch.float32)
    context = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if mode == "autocast" else contextlib.nullcontext
    reference = copy.deepcopy(model)
    reference.backend = "reference"
    with context():
        expected = loss_fn(reference, torch.Generator().manual_seed(2))
    expected.backward()
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    losses = []
    for _ in range(8):
        optimizer.zero_grad()
        with context():
            loss = loss_fn(model, torch.Generator().manual_seed(2))
        loss.backward()
        assert loss.dtype == expected.dtype and torch.isfinite(loss), (loss.dtype, expected.dtype, loss)
        for (p_name, p), ref in zip(model.named_parameters(), reference.parameters()):
            if p.requires_grad:
                assert p.grad.dtype == ref.grad.dtype == p.dtype and torch.isfinite(p.grad).all(), p_name
        optimizer.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < losses[0] - 0.5, losses


# ------------------------------------------------------------------------------------------------------
# GPU only.
# ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("backend,sizes", per_backend({"triton": [{}], "cuda": [dict(D=150, H=70)]}, gpu_only=True))
def test_tf32_against_tolerance_rule(backend, sizes):
    """The GPU default: TF32 products in the Bernoulli GEMM. The reference runs its matmuls in TF32 too
    (allow_tf32), so the rule compares like with like: no worse than twice the TF32 reference's error."""
    previous = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = True
    try:
        with gemm_precision(backend, "tf32"):
            check_backend(backend, 33, 10, "mixed", device="cuda", check_float64=False, **sizes)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = previous


@pytest.mark.parametrize("backend", on_backends(*GPU_BACKENDS, gpu_only=True))
def test_runs_on_the_current_stream(backend):
    """The kernels launch on torch's current stream (a side stream here), ordered with torch's own work."""
    model = make_model(150, 10, 5, 70, device="cuda")
    batch = make_batch(model, 20, 30, device="cuda")
    expected = run(model, backend, batch)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        got = run(model, backend, batch)
    torch.cuda.current_stream().wait_stream(side)
    torch.cuda.synchronize()
    for key in expected:  # a race (a launch on another stream) shows as garbage, far beyond this
        torch.testing.assert_close(got[key], expected[key], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("backend,precision", gpu_precision_params())
def test_cuda_graph_training_step(backend, precision):
    """A whole training step (loss, backward, SGD step) captured in a CUDA graph and replayed matches eager."""
    model = make_model(37, 10, 5, 19, device="cuda")
    model.backend = backend
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

    with gemm_precision(backend, precision):
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
