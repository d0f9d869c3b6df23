"""Op-level checks shared by the op test modules (tests/ops) and the backend ones: which backends a test runs
on and where, an op against its plain-torch face (outputs and the gradient of every float input, under
docs/design.md section 4's rule: each dtype no worse than twice the torch op's own error in that dtype plus
the floor; float64: the floor; under torch.autocast, no worse than twice the torch op's own error under the
same autocast plus the autocast dtype's floor, with the same result dtypes), and the cases every backend
must pass.

Backends as pytest parameters: `on_backends(...)` and `per_backend({backend: cases})` give one parameter
per backend (and case), skipped with the reason `backends.unavailable_reason` gives where the backend cannot
run here, or "needs a CUDA GPU" for the GPU-only ones. `triton` runs on CPU tensors under its interpreter
(tests/conftest.py sets TRITON_INTERPRET=1 without a GPU), `cuda` on CUDA tensors: `device_of`.
"""

from __future__ import annotations

import contextlib

import pytest
import torch

from ssvae_fast import backends
from ssvae_fast.ops.bernoulli_loglik_linear import bernoulli_loglik_linear_torch
from ssvae_fast.ops.class_conditional_activation import class_conditional_activation_torch
from ssvae_fast.ops.elbo_reduction import elbo_reduction_torch
from ssvae_fast.ops.gaussian_reparam_kl import gaussian_reparam_kl_torch
from tests.tolerance import assert_close_to_reference

HAS_CUDA = torch.cuda.is_available()
COMPILED = ("cpu", "triton", "cuda")  # the backends whose ops are custom kernels
GPU_BACKENDS = ("triton", "cuda")
RECOMPUTE_BACKENDS = ("cpu", "triton")  # the backends with a setting that recomputes the Bernoulli logits
# The 16-bit dtypes each compiled backend takes (the cpu backend refuses float16: tests/backends/test_cpu.py).
HALF_DTYPES = {"cpu": (torch.bfloat16,), "triton": (torch.bfloat16, torch.float16),
               "cuda": (torch.bfloat16, torch.float16)}


# ------------------------------------------------------------------------------------------------------
# Backends as test parameters.
# ------------------------------------------------------------------------------------------------------
def device_of(backend: str) -> str:
    """Where `backend`'s tests run: the CPU for `cpu`, CUDA for `cuda`, and for the others the GPU when
    there is one (Triton's interpreter otherwise)."""
    if backend == "cpu":
        return "cpu"
    return "cuda" if backend == "cuda" or HAS_CUDA else "cpu"


def skip_reason(backend: str, gpu_only: bool = False):
    """Why `backend` cannot run a test here (None when it can)."""
    reason = backends.unavailable_reason(backend)
    if reason is None and gpu_only and not HAS_CUDA:
        reason = "needs a CUDA GPU"
    return reason


def backend_param(backend: str, *values, gpu_only: bool = False):
    """pytest.param(backend, *values), skipped with the reason where `backend` cannot run here."""
    reason = skip_reason(backend, gpu_only)
    return pytest.param(backend, *values, marks=(pytest.mark.skip(reason=reason),) if reason else ())


def on_backends(*names: str, gpu_only: bool = False) -> list:
    """One parameter per backend."""
    return [backend_param(name, gpu_only=gpu_only) for name in names]


def per_backend(table: dict, gpu_only: bool = False) -> list:
    """Parameters (backend, *case) for every case of every backend: `table` maps a backend to its cases
    (tuples, or single values)."""
    return [
        backend_param(name, *(case if isinstance(case, tuple) else (case,)), gpu_only=gpu_only)
        for name, cases in table.items()
        for case in cases
    ]


def op_of(backend: str, name: str):
    """Op `name` of `backend` (its per-backend function, e.g. `gaussian_reparam_kl_cpu`; the plain-torch
    face for `torch`)."""
    return getattr(backends.get_ops(backend), name)


def half_precision_params(*names: str, gpu_only: bool = False) -> list:
    """(backend, dtype) parameters: each 16-bit dtype that each backend of `names` takes (HALF_DTYPES)."""
    return per_backend({name: HALF_DTYPES[name] for name in names}, gpu_only=gpu_only)


def gemm_precision(backend: str, precision: str):
    """A context manager: `backend`'s Bernoulli GEMM runs in `precision` within it (the cpu backend has
    only "ieee")."""
    if backend == "cuda":
        import ssvae_fast.cuda

        return ssvae_fast.cuda.set_precision(precision)
    if backend == "triton":
        import ssvae_fast.triton

        return ssvae_fast.triton.set_input_precision(precision)
    if precision != "ieee":
        raise ValueError(f"backend {backend!r} runs its GEMMs in 'ieee' only")
    return contextlib.nullcontext()


def gpu_precision_params() -> list:
    """(backend, precision) parameters of the GPU backends' Bernoulli GEMM: Triton's (GPU only; its
    tl.dot ignores the setting for 16-bit inputs) and cuda's two tile kernels, tensor cores ("tf32") and
    FMAs ("ieee")."""
    return [backend_param("triton", "ieee", gpu_only=True), backend_param("cuda", "tf32"),
            backend_param("cuda", "ieee")]


def half_gemm_params() -> list:
    """(backend, precision, dtype) parameters of the output-layer ops' 16-bit tests: the cpu backend's
    bfloat16 ("ieee": torch's GEMMs), and each of `gpu_precision_params` with each 16-bit dtype."""
    params = [backend_param("cpu", "ieee", torch.bfloat16)]
    for param in gpu_precision_params():
        backend, precision = param.values
        params += [pytest.param(backend, precision, dtype, marks=param.marks) for dtype in HALF_DTYPES[backend]]
    return params


def recompute_logits(backend: str, enabled: bool = True):
    """A context manager: `backend`'s Bernoulli op keeps nothing of size (rows, D) for its backward, which
    recomputes the logits (a backend of RECOMPUTE_BACKENDS); nothing changes when not enabled."""
    if not enabled:
        return contextlib.nullcontext()
    if backend == "cpu":
        from ssvae_fast.cpu.bernoulli_loglik_linear import recompute_bernoulli_logits

        return recompute_bernoulli_logits(True)
    if backend == "triton":
        import ssvae_fast.triton

        return ssvae_fast.triton.set_bernoulli_recompute(True)
    raise ValueError(f"backend {backend!r} has no recompute setting")


# ------------------------------------------------------------------------------------------------------
# An op against its plain-torch face.
# ------------------------------------------------------------------------------------------------------
def outputs_and_grads(fn, inputs: dict, seed: int = 0):
    """Outputs of fn(**inputs) and the gradients of sum_k <w_k, out_k> (random w_k) w.r.t. every float
    input that requires grad; a flat dict of tensors."""
    leaves = {k: v for k, v in inputs.items() if isinstance(v, torch.Tensor) and v.requires_grad}
    out = fn(**inputs)
    outs = out if isinstance(out, tuple) else (out,)
    g = torch.Generator().manual_seed(seed)
    total = sum((o * (0.5 + torch.rand(o.shape, generator=g, dtype=torch.float64)).to(o)).sum() for o in outs)
    grads = torch.autograd.grad(total, list(leaves.values()), allow_unused=True) if leaves else ()
    result = {f"out{i}": o.detach() for i, o in enumerate(outs)}
    for (name, leaf), grad in zip(leaves.items(), grads):
        result[f"grad {name}"] = grad if grad is not None else torch.zeros_like(leaf)
    return result


def check_op_against_torch(fast_fn, torch_fn, make_inputs, *, device, dtypes=(torch.float32, torch.float64)):
    """Outputs and gradients of `fast_fn` against `torch_fn` in float64 under the tolerance rule, for each
    of `dtypes`; `make_inputs(dtype)` gives the keyword arguments. Every result must be on `device`."""
    name = getattr(fast_fn, "__name__", repr(fast_fn))
    ref64 = outputs_and_grads(torch_fn, make_inputs(torch.float64))
    for dtype in dtypes:
        fast = outputs_and_grads(fast_fn, make_inputs(dtype))
        ref_lo = outputs_and_grads(torch_fn, make_inputs(dtype)) if dtype != torch.float64 else ref64
        assert fast.keys() == ref64.keys()
        for key in ref64:
            assert fast[key].device.type == torch.device(device).type, key
            assert_close_to_reference(fast[key], ref_lo[key], ref64[key], name=f"{name} {dtype} {key}")


def check_op_under_autocast(fast_fn, torch_fn, make_inputs, half: tuple = (), *, device,
                            autocast_dtype=torch.bfloat16):
    """`fast_fn` against `torch_fn`, both called under torch.autocast(autocast_dtype) on `device` with the float
    inputs of `make_inputs` in float32 except those named in `half`, in autocast_dtype (as a training step
    under autocast hands them over: 16-bit activations, float32 parameters and data): the same dtype for every
    output and gradient, and each within the tolerance rule of the float64 torch op (no worse than twice
    torch_fn's own error under the same autocast, plus the floor of autocast_dtype). `make_inputs(dtype)`
    gives the keyword arguments."""
    name = getattr(fast_fn, "__name__", repr(fast_fn))
    ref64 = outputs_and_grads(torch_fn, make_inputs(torch.float64))

    def inputs():
        cast = lambda k, v: v.detach().to(autocast_dtype if k in half else torch.float32)  # noqa: E731
        return {k: cast(k, v).requires_grad_(v.requires_grad) if isinstance(v, torch.Tensor) and v.is_floating_point()
                else v for k, v in make_inputs(torch.float64).items()}

    with torch.autocast(torch.device(device).type, dtype=autocast_dtype):
        fast = outputs_and_grads(fast_fn, inputs())
        ref = outputs_and_grads(torch_fn, inputs())
    assert fast.keys() == ref64.keys()
    for key in ref64:
        assert fast[key].device.type == torch.device(device).type, key
        assert_close_to_reference(fast[key], ref[key], ref64[key], name=f"{name} autocast {autocast_dtype} {key}",
                                  floor_dtype=autocast_dtype)


def strided_output_layer_inputs(h64, w64, b64, x64, dtype, device, *, bias: bool, x_grad: bool) -> dict:
    """The output-layer ops' every-class inputs with awkward strides: h64 (C, N, H) seen as (N, C, H), w64
    (H, D) as a column-major (D, H) weight, x64 (N, 2D) as (N, D) with stride 2 along D; b64 (D,) or no
    bias."""
    return {
        "h": leaf(h64, dtype, device).transpose(0, 1).detach().requires_grad_(True),
        "weight": leaf(w64, dtype, device).t().detach().requires_grad_(True),
        "bias": leaf(b64, dtype, device) if bias else None,
        "x": leaf(x64, dtype, device)[:, ::2].detach().requires_grad_(x_grad),
    }


def rand(*shape, seed, scale=1.0, uniform=False):
    """float64 draws on the CPU (the same numbers on every device), uniform in [0, 1) or normal, times scale."""
    g = torch.Generator().manual_seed(seed)
    draw = torch.rand if uniform else torch.randn
    return draw(*shape, generator=g, dtype=torch.float64) * scale


def leaf(t64, dtype, device, requires_grad=True):
    return t64.to(device=device, dtype=dtype, copy=True).requires_grad_(requires_grad)


def assert_grads_match_torch(fast_fn, torch_fn, args: tuple, leaves: tuple, pick=None, tol=1e-12):
    """float64: the gradients of the sum of fast_fn(*args) (of its output `pick`) with respect to `leaves`
    equal the torch op's to `tol`; an input an output does not depend on counts as a zero gradient."""
    grads = []
    for fn in (fast_fn, torch_fn):
        out = fn(*args)
        out = out[pick] if pick is not None else out
        grads.append(torch.autograd.grad(out.sum(), leaves, allow_unused=True))
    for fast, ref, like in zip(*grads, leaves):
        torch.testing.assert_close(fast if fast is not None else torch.zeros_like(like),
                                   ref if ref is not None else torch.zeros_like(like), rtol=tol, atol=tol)


# ------------------------------------------------------------------------------------------------------
# Cases every backend must pass.
# ------------------------------------------------------------------------------------------------------
# Pre-activations, logits and log-variances out to where exp overflows float32 and past it.
EXTREME = torch.tensor([-1e4, -100.0, -88.0, -30.0, -1.0, -1e-3, 0.0, 1e-3, 1.0, 30.0, 88.0, 100.0, 1e4],
                       dtype=torch.float64)


def check_gaussian_extreme_logvar(ops, device, seed: int):
    """logvar in [-80, 80] (exp(80) is finite in fp32) and |mu| ~ 100: finite and equal to the torch op."""
    Z = 8
    logvar64 = torch.linspace(-80, 80, 3 * Z, dtype=torch.float64).view(3, Z)
    head64 = torch.cat([rand(3, Z, seed=seed, scale=100.0), logvar64], 1)
    eps64 = rand(3, Z, seed=seed + 1)

    def make(dtype):
        return {"head": leaf(head64, dtype, device), "eps": leaf(eps64, dtype, device)}

    check_op_against_torch(ops.gaussian_reparam_kl, gaussian_reparam_kl_torch, make, device=device)


def check_elbo_extreme_logits(ops, extreme, device, seed: int):
    """Classifier logits built from `extreme` (ascending values, |l| up to 1e4), labels on the least likely
    class, the most likely and the middle one: finite and equal to the torch op."""
    n_l, n_u, C = 3, 3, extreme.numel()
    logits64 = torch.stack([extreme, extreme.flip(0), extreme * 0.5, extreme, -extreme, extreme.roll(3)])

    def make(dtype):
        return {
            "logits_y": leaf(logits64, dtype, device),
            "y_l": torch.tensor([0, C - 1, C // 2], device=device),
            "ll_l": leaf(rand(n_l, seed=seed, scale=30.0), dtype, device),
            "kl_l": leaf(rand(n_l, seed=seed + 1, uniform=True), dtype, device),
            "ll_u": leaf(rand(n_u, C, seed=seed + 2, scale=30.0), dtype, device),
            "kl_u": leaf(rand(n_u, C, seed=seed + 3, uniform=True), dtype, device),
            "alpha": 0.7,
        }

    check_op_against_torch(ops.elbo_reduction, elbo_reduction_torch, make, device=device)


def check_class_conditional_labelled_prefix(ops, device, *, N, n_l, H, C, activation, seed: int):
    """class_conditional_activation with classes for the first n_l of N rows (n_l + (N - n_l) * C output
    rows, labelled first) against the torch op: outputs, grad a and grad w_y."""
    a64, w64 = rand(N, H, seed=seed, scale=2.0), rand(H, C, seed=seed + 1)
    classes = torch.randint(0, C, (n_l,), generator=torch.Generator().manual_seed(seed + 2))

    def make(dtype):
        return {"a": leaf(a64, dtype, device), "w_y": leaf(w64, dtype, device),
                "classes": classes.to(device), "activation": activation}

    out = ops.class_conditional_activation(**make(torch.float64))
    assert out.shape == (n_l + (N - n_l) * C, H)
    check_op_against_torch(ops.class_conditional_activation, class_conditional_activation_torch, make, device=device)


def check_bernoulli_labelled_prefix(ops, device, *, N, n_l, C, H, D, bias=True, x_grad=False, seed: int):
    """bernoulli_loglik_linear's 2-D form (rows: n_l labelled, then C per remaining example) against the
    torch op: ll (M,), and the gradients of h, weight, bias and (when x_grad) x."""
    M = n_l + (N - n_l) * C
    h64 = rand(M, H, seed=seed).sigmoid() * 2.0
    w64, b64 = rand(D, H, seed=seed + 1, scale=0.5), rand(D, seed=seed + 2, scale=0.3)
    x64 = (rand(N, D, seed=seed + 3, uniform=True) < 0.3).double()

    def make(dtype):
        return {"h": leaf(h64, dtype, device), "weight": leaf(w64, dtype, device),
                "bias": leaf(b64, dtype, device) if bias else None,
                "x": leaf(x64, dtype, device, requires_grad=x_grad), "n_labelled": n_l}

    assert ops.bernoulli_loglik_linear(**make(torch.float64)).shape == (M,)
    check_op_against_torch(ops.bernoulli_loglik_linear, bernoulli_loglik_linear_torch, make, device=device)


def labelled_prefix_rows(N: int, n_l: int, C: int, classes):
    """(example, class) of every row of the labelled-prefix layout, by enumeration: row i < n_l is example
    i with its class, then C rows (classes 0..C-1) per remaining example."""
    examples = list(range(n_l)) + [n_l + j for j in range(N - n_l) for _ in range(C)]
    row_classes = [int(c) for c in classes[:n_l]] + [c for _ in range(N - n_l) for c in range(C)]
    return torch.tensor(examples, dtype=torch.long), torch.tensor(row_classes, dtype=torch.long)


def check_opcheck(op_module, backend: str, cases) -> None:
    """torch.library.opcheck (schema, fakes, autograd registration, AOT dispatch) of `backend`'s forward and
    backward custom ops of `op_module`; `cases(r, grad, device)` gives (forward argument tuples, backward
    argument tuples), with r(*shape) float64 normal draws on the device and grad(*shape) the same requiring
    grad."""
    device, fused = device_of(backend), registered(op_module, backend)
    g = torch.Generator().manual_seed(34)
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64).to(device)  # noqa: E731
    forward_cases, backward_cases = cases(r, lambda *s: r(*s).requires_grad_(True), device)
    for args in forward_cases:
        torch.library.opcheck(fused.op, args)
    for args in backward_cases:
        torch.library.opcheck(fused.backward_op, args)


def registered(op_module, backend: str):
    """`op_module`'s FusedOp for `backend` (its custom ops registered); skips where the backend's kernel
    module cannot be imported (Triton not installed). The kernels need not be able to run."""
    try:
        return op_module.IMPLEMENTATIONS[backend]
    except ImportError as exc:  # pragma: no cover - only without triton
        pytest.skip(f"the {backend} kernels cannot be imported here: {exc}")
