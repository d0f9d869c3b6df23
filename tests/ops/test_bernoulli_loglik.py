"""The CPU kernel of ssvae_fast._C (bernoulli_loglik_cpu) against the plain-torch formula.

Rule (docs/design.md section 4, tests/tolerance.py): |fast - ref64| <= 2 |ref_same_dtype - ref64| + floor, with
the reference `bernoulli_loglik_torch` run in the input dtype and in float64.
"""

import os
import subprocess
import sys
import textwrap

import pytest
import torch

from ssvae_fast import _ext
from ssvae_fast.ops.bernoulli_loglik import bernoulli_loglik_cpu, bernoulli_loglik_cuda, bernoulli_loglik_torch
from tests.tolerance import assert_close_to_reference

pytestmark = pytest.mark.skipif(
    not _ext.HAS_EXT,
    reason=f"the compiled extension ssvae_fast._C is not built ({_ext.EXT_IMPORT_ERROR}); run `pip install -e .`",
)

DTYPES = [torch.float32, torch.float64]
BS = [1, 7, 33]
CS = [1, 2, 10, 17]
DS = [1, 13, 785]


def make_inputs(B, C, D, dtype, seed=0, scale=3.0, binary_x=False):
    g = torch.Generator().manual_seed(seed)
    logits = scale * torch.randn(B, C, D, generator=g, dtype=torch.float64)
    x = torch.rand(B, D, generator=g, dtype=torch.float64)
    if binary_x:
        x = (x > 0.5).double()
    grad_out = torch.randn(B, C, generator=g, dtype=torch.float64)
    return logits.to(dtype), x.to(dtype), grad_out.to(dtype)


def value_and_grads(fn, logits, x, grad_out):
    """fn(logits, x) and the gradients of sum(fn * grad_out) with respect to logits and x."""
    logits = logits.detach().clone().requires_grad_(True)
    x = x.detach().clone().requires_grad_(True)
    ll = fn(logits, x)
    grad_logits, grad_x = torch.autograd.grad(ll, (logits, x), grad_out)
    return ll.detach(), grad_logits, grad_x


def check_against_reference(logits, x, grad_out, name):
    fast = value_and_grads(bernoulli_loglik_cpu, logits, x, grad_out)
    ref = value_and_grads(bernoulli_loglik_torch, logits, x, grad_out)
    ref64 = value_and_grads(bernoulli_loglik_torch, logits.double(), x.double(), grad_out.double())
    for what, f, r, r64 in zip(("ll", "grad_logits", "grad_x"), fast, ref, ref64):
        assert f.dtype == logits.dtype
        assert_close_to_reference(f, r, r64, name=f"{name} {what}")


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("D", DS)
@pytest.mark.parametrize("C", CS)
@pytest.mark.parametrize("B", BS)
def test_forward_backward_match_torch(B, C, D, dtype):
    logits, x, grad_out = make_inputs(B, C, D, dtype, seed=B * 1000 + C * 10 + D)
    check_against_reference(logits, x, grad_out, f"B={B} C={C} D={D} {dtype}")


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_binary_x(dtype):
    logits, x, grad_out = make_inputs(33, 10, 785, dtype, binary_x=True)
    check_against_reference(logits, x, grad_out, f"binary x {dtype}")


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_two_dimensional_logits(dtype):
    """logits (B, D) -> (B,), same numbers as the (B, 1, D) case."""
    logits, x, grad_out = make_inputs(7, 1, 13, dtype)
    logits2, grad_out2 = logits[:, 0], grad_out[:, 0]
    ll, grad_logits, grad_x = value_and_grads(bernoulli_loglik_cpu, logits2, x, grad_out2)
    assert ll.shape == (7,) and grad_logits.shape == (7, 13) and grad_x.shape == (7, 13)
    ref = value_and_grads(bernoulli_loglik_torch, logits2, x, grad_out2)
    ref64 = value_and_grads(bernoulli_loglik_torch, logits2.double(), x.double(), grad_out2.double())
    for f, r, r64 in zip((ll, grad_logits, grad_x), ref, ref64):
        assert_close_to_reference(f, r, r64, name="2-D logits")


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_non_contiguous_inputs(dtype):
    logits, x, grad_out = make_inputs(7, 10, 13, dtype)
    logits_nc = logits.transpose(0, 1).contiguous().transpose(0, 1)  # (B, C, D) with C outermost in memory
    x_nc = torch.stack([x, torch.zeros_like(x)], dim=-1)[..., 0]  # stride 2 along D
    grad_out_nc = grad_out.t().contiguous().t()
    assert not logits_nc.is_contiguous() and not x_nc.is_contiguous() and not grad_out_nc.is_contiguous()
    check_against_reference(logits_nc, x_nc, grad_out_nc, f"non-contiguous {dtype}")


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_extreme_logits(dtype):
    """|l| up to 1e4: finite, and equal to the exact formula (no overflow in exp, no softplus threshold)."""
    special = torch.tensor([1e4, -1e4, 1e3, -1e3, 100.0, -100.0, 30.0, -30.0, 20.5, -20.5, 17.0, -17.0, 0.0, 1e-30])
    g = torch.Generator().manual_seed(1)
    B, C, D = 5, 3, special.numel() + 20
    logits = torch.cat([special.expand(B, C, -1), 1e4 * (2 * torch.rand(B, C, 20, generator=g) - 1)], -1)
    for binary_x in (False, True):
        x = torch.rand(B, D, generator=g)
        if binary_x:
            x = (x > 0.5).to(x.dtype)
        grad_out = torch.randn(B, C, generator=g)
        l_, x_, g_ = logits.to(dtype), x.to(dtype), grad_out.to(dtype)
        fast = value_and_grads(bernoulli_loglik_cpu, l_, x_, g_)
        for t in fast:
            assert torch.isfinite(t).all()
        check_against_reference(l_, x_, g_, f"extreme logits, binary_x={binary_x}, {dtype}")


def _ulps(err: torch.Tensor, ref64: torch.Tensor) -> torch.Tensor:
    """err in units in the last place of float32 at |ref64|."""
    mag = ref64.float().abs()
    return err / (torch.nextafter(mag, torch.tensor(float("inf"))).double() - mag.double())


@pytest.mark.parametrize("x_value", [0.0, 0.3])
def test_float32_softplus_sweep_ulps(x_value):
    """The float32 path's own exp/log1p polynomials, elementwise over l in [-85, 85] (D = 1, so no summation):
    within 2 ulp of the exact value, like glibc's log1pf(expf) (measured 1.9 vs 1.5 ulp at x = 0)."""
    logits = torch.linspace(-85.0, 85.0, 400_001, dtype=torch.float32).reshape(-1, 1, 1)
    x = torch.full((logits.shape[0], 1), x_value)
    fast = bernoulli_loglik_cpu(logits, x).double()
    ref64 = bernoulli_loglik_torch(logits.double(), x.double())
    assert _ulps((fast - ref64).abs(), ref64).max() <= 2.0
    # and the gradient: x - sigmoid(l), within 3 ulp of its magnitude scale (cancellation near x = sigmoid(l))
    logits.requires_grad_(True)
    (grad,) = torch.autograd.grad(bernoulli_loglik_cpu(logits, x).sum(), logits)
    logits64 = logits.detach().double().requires_grad_(True)
    (grad64,) = torch.autograd.grad(bernoulli_loglik_torch(logits64, x.double()).sum(), logits64)
    assert ((grad.double() - grad64).abs() <= 3 * 2.0**-24).all()


def test_special_values_propagate():
    """NaN logits give NaN (like torch), not a silently finite number."""
    logits, x, _ = make_inputs(2, 2, 5, torch.float32)
    logits[0, 1, 3] = float("nan")
    ll = bernoulli_loglik_cpu(logits, x)
    assert torch.isnan(ll[0, 1]) and torch.isfinite(ll[0, 0]) and torch.isfinite(ll[1]).all()


def test_gradcheck_float64():
    logits, x, _ = make_inputs(3, 4, 5, torch.float64)
    logits.requires_grad_(True)
    x.requires_grad_(True)
    assert torch.autograd.gradcheck(bernoulli_loglik_cpu, (logits, x))
    assert torch.autograd.gradcheck(bernoulli_loglik_cpu, (logits[:, 0].detach().requires_grad_(True), x))


def test_gradient_of_logits_only():
    """x without requires_grad: the backward kernel skips grad_x, grad_logits is unchanged."""
    logits, x, grad_out = make_inputs(7, 10, 13, torch.float64)
    logits.requires_grad_(True)
    (grad_logits,) = torch.autograd.grad(bernoulli_loglik_cpu(logits, x), logits, grad_out)
    (ref,) = torch.autograd.grad(bernoulli_loglik_torch(logits, x), logits, grad_out)
    assert_close_to_reference(grad_logits, ref, ref, name="grad_logits without grad_x")


@pytest.mark.parametrize("B,C,D", [(0, 3, 5), (3, 0, 5), (3, 4, 0)])
def test_empty(B, C, D):
    logits, x, grad_out = make_inputs(B, C, D, torch.float32)
    ll, grad_logits, grad_x = value_and_grads(bernoulli_loglik_cpu, logits, x, grad_out)
    assert ll.shape == (B, C) and grad_logits.shape == (B, C, D) and grad_x.shape == (B, D)
    assert (ll == 0).all() and (grad_x == 0).all()


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_deterministic(dtype):
    """Bitwise equal run to run (no atomics; each output owned by one thread)."""
    logits, x, grad_out = make_inputs(33, 17, 785, dtype)
    first = value_and_grads(bernoulli_loglik_cpu, logits, x, grad_out)
    for _ in range(3):
        again = value_and_grads(bernoulli_loglik_cpu, logits, x, grad_out)
        for a, b in zip(first, again):
            assert torch.equal(a, b)


@pytest.mark.skipif(not (_ext.HAS_EXT and _ext._C.has_openmp()), reason="ssvae_fast._C built without OpenMP")
def test_same_bits_with_one_thread(tmp_path):
    """The result does not depend on the number of OpenMP threads (fixed summation order)."""
    script = textwrap.dedent(
        """
        import sys, torch
        from ssvae_fast.ops.bernoulli_loglik import bernoulli_loglik_cpu
        g = torch.Generator().manual_seed(0)
        logits = (3 * torch.randn(33, 17, 785, generator=g)).requires_grad_(True)
        x = torch.rand(33, 785, generator=g).requires_grad_(True)
        ll = bernoulli_loglik_cpu(logits, x)
        grads = torch.autograd.grad(ll, (logits, x), torch.randn(33, 17, generator=g))
        torch.save((ll.detach(), *grads), sys.argv[1])
        """
    )
    results = []
    for threads in ("1", "3"):
        out = tmp_path / f"threads{threads}.pt"
        env = dict(os.environ, OMP_NUM_THREADS=threads)
        subprocess.run([sys.executable, "-c", script, str(out)], check=True, env=env, cwd=os.getcwd())
        results.append(torch.load(out))
    for a, b in zip(*results):
        assert torch.equal(a, b)


def test_torch_library_opcheck():
    """Schema, fake (meta) implementation, autograd registration and AOT dispatch of both custom ops."""
    logits, x, grad_out = make_inputs(3, 4, 5, torch.float32)
    forward_op = torch.ops.ssvae_fast.bernoulli_loglik_cpu.default
    backward_op = torch.ops.ssvae_fast.bernoulli_loglik_cpu_backward.default
    torch.library.opcheck(forward_op, (logits.requires_grad_(True), x.requires_grad_(True)))
    torch.library.opcheck(backward_op, (logits.detach(), x.detach(), grad_out, True))
    torch.library.opcheck(backward_op, (logits.detach(), x.detach(), grad_out, False))


def test_torch_compile_passes_through():
    logits, x, grad_out = make_inputs(7, 10, 13, torch.float32)

    def loss(logits, x):
        return (bernoulli_loglik_cpu(logits, x) * grad_out).sum()

    compiled = torch.compile(loss, backend="aot_eager", fullgraph=True)
    eager = value_and_grads(lambda l, x: loss(l, x), logits, x, torch.tensor(1.0))
    traced = value_and_grads(lambda l, x: compiled(l, x), logits, x, torch.tensor(1.0))
    for a, b in zip(eager, traced):
        assert torch.equal(a, b)


# ---- errors ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "logits, x, match",
    [
        (torch.zeros(2, 3, 4, dtype=torch.int64), torch.zeros(2, 4, dtype=torch.int64), "float32 or float64"),
        (torch.zeros(2, 3, 4, dtype=torch.float16), torch.zeros(2, 4, dtype=torch.float16), "float32 or float64"),
        (torch.zeros(2, 3, 4), torch.zeros(2, 4, dtype=torch.float64), "dtype of logits"),
        (torch.zeros(2, 3, 4), torch.zeros(2, 5), "disagree"),
        (torch.zeros(2, 3, 4), torch.zeros(3, 4), "disagree"),
        (torch.zeros(2, 3, 4, 5), torch.zeros(2, 5), r"\(B, C, D\) or \(B, D\)"),
        (torch.zeros(2, 3, 4), torch.zeros(8), r"x must be \(B, D\)"),
        (torch.zeros(2, 3, 4, device="meta"), torch.zeros(2, 4, device="meta"), "cpu device"),
        (torch.zeros(2, 3, 4), torch.zeros(2, 4, device="meta"), "cpu device"),
    ],
    ids=["int64", "float16", "mixed-dtypes", "D-mismatch", "B-mismatch", "4-D", "1-D-x", "meta", "mixed-devices"],
)
def test_bad_inputs_raise_value_error(logits, x, match):
    with pytest.raises(ValueError, match=match):
        bernoulli_loglik_cpu(logits, x)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU to make a CUDA tensor")
def test_cuda_tensor_is_rejected():
    with pytest.raises(ValueError, match="cpu device"):
        bernoulli_loglik_cpu(torch.zeros(2, 3, 4, device="cuda"), torch.zeros(2, 4, device="cuda"))


@pytest.mark.skipif(_ext.HAS_CUDA_EXT, reason="this machine can run the CUDA kernel")
def test_cuda_entry_point_without_cuda_says_why():
    with pytest.raises(RuntimeError, match="CUDA"):
        bernoulli_loglik_cuda(torch.zeros(2, 3, 4), torch.zeros(2, 4))


def test_raw_kernel_argument_errors():
    C_ = _ext.require_ext()
    logits, x, _ = make_inputs(2, 3, 4, torch.float32)
    out = torch.empty(2, 3)
    args = (logits.data_ptr(), x.data_ptr(), out.data_ptr())
    with pytest.raises(ValueError, match="unsupported dtype 'float16'"):
        C_.bernoulli_loglik_forward(*args, 2, 3, 4, "float16")
    with pytest.raises(ValueError, match="non-negative"):
        C_.bernoulli_loglik_forward(*args, 2, -3, 4, "float32")
    with pytest.raises(ValueError, match="null pointer"):
        C_.bernoulli_loglik_forward(0, x.data_ptr(), out.data_ptr(), 2, 3, 4, "float32")
    with pytest.raises(ValueError, match="null pointer"):
        C_.bernoulli_loglik_backward(*args, 0, 0, 2, 3, 4, "float32")


def test_module_info():
    C_ = _ext.require_ext()
    assert C_.num_threads() >= 1
    assert isinstance(C_.has_openmp(), bool)
    if not C_.has_openmp():
        assert C_.num_threads() == 1
