"""The CUDA kernels of ssvae_fast._C_cuda (bernoulli_loglik_cuda) against the plain-torch formula.

GPU only: skips with a reason where there is no CUDA GPU or the CUDA extension is not built. Same rule
as the CPU tests (docs/design.md section 4, tests/tolerance.py); the references run on the same GPU.
"""

import pytest
import torch

from ssvae_fast import _ext
from ssvae_fast.ops.bernoulli_loglik import bernoulli_loglik_cuda, bernoulli_loglik_torch
from tests.tolerance import assert_close_to_reference

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not _ext.HAS_CUDA_EXT, reason="needs a CUDA GPU and the CUDA extension"),
]

DTYPES = [torch.float32, torch.float64]
_DTYPE_NAMES = {torch.float32: "float32", torch.float64: "float64"}


def make_inputs(B, C, D, dtype, seed=0, scale=3.0):
    g = torch.Generator().manual_seed(seed)
    logits = scale * torch.randn(B, C, D, generator=g, dtype=torch.float64)
    x = torch.rand(B, D, generator=g, dtype=torch.float64)
    grad_out = torch.randn(B, C, generator=g, dtype=torch.float64)
    return tuple(t.to(device="cuda", dtype=dtype) for t in (logits, x, grad_out))


def value_and_grads(fn, logits, x, grad_out):
    logits = logits.detach().clone().requires_grad_(True)
    x = x.detach().clone().requires_grad_(True)
    ll = fn(logits, x)
    grad_logits, grad_x = torch.autograd.grad(ll, (logits, x), grad_out)
    return ll.detach(), grad_logits, grad_x


def check_against_reference(logits, x, grad_out, name):
    fast = value_and_grads(bernoulli_loglik_cuda, logits, x, grad_out)
    ref = value_and_grads(bernoulli_loglik_torch, logits, x, grad_out)
    ref64 = value_and_grads(bernoulli_loglik_torch, logits.double(), x.double(), grad_out.double())
    for what, f, r, r64 in zip(("ll", "grad_logits", "grad_x"), fast, ref, ref64):
        assert f.device == logits.device and f.dtype == logits.dtype
        assert_close_to_reference(f, r, r64, name=f"{name} {what}")


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("D", [1, 13, 785, 4099])
@pytest.mark.parametrize("C", [1, 2, 10, 17])
@pytest.mark.parametrize("B", [1, 7, 33])
def test_forward_backward_match_torch(B, C, D, dtype):
    logits, x, grad_out = make_inputs(B, C, D, dtype, seed=B * 1000 + C * 10 + D)
    check_against_reference(logits, x, grad_out, f"B={B} C={C} D={D} {dtype}")


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_two_dimensional_and_non_contiguous(dtype):
    logits, x, grad_out = make_inputs(7, 10, 13, dtype)
    logits_nc = logits.transpose(0, 1).contiguous().transpose(0, 1)
    x_nc = torch.stack([x, torch.zeros_like(x)], dim=-1)[..., 0]
    assert not logits_nc.is_contiguous() and not x_nc.is_contiguous()
    check_against_reference(logits_nc, x_nc, grad_out, f"non-contiguous {dtype}")
    ll = bernoulli_loglik_cuda(logits[:, 0], x)
    assert ll.shape == (7,)
    assert_close_to_reference(
        ll, bernoulli_loglik_torch(logits[:, 0], x), bernoulli_loglik_torch(logits[:, 0].double(), x.double())
    )


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_extreme_logits(dtype):
    special = torch.tensor([1e4, -1e4, 1e3, -1e3, 100.0, -100.0, 30.0, -30.0, 20.5, -20.5, 0.0, 1e-30])
    g = torch.Generator().manual_seed(1)
    B, C, D = 5, 3, special.numel() + 20
    logits = torch.cat([special.expand(B, C, -1), 1e4 * (2 * torch.rand(B, C, 20, generator=g) - 1)], -1)
    x = (torch.rand(B, D, generator=g) > 0.5).float()
    grad_out = torch.randn(B, C, generator=g)
    l_, x_, g_ = (t.to(device="cuda", dtype=dtype) for t in (logits, x, grad_out))
    for t in value_and_grads(bernoulli_loglik_cuda, l_, x_, g_):
        assert torch.isfinite(t).all()
    check_against_reference(l_, x_, g_, f"extreme logits {dtype}")


def test_gradcheck_float64():
    logits, x, _ = make_inputs(3, 4, 5, torch.float64)
    assert torch.autograd.gradcheck(bernoulli_loglik_cuda, (logits.requires_grad_(True), x.requires_grad_(True)))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_deterministic(dtype):
    logits, x, grad_out = make_inputs(33, 17, 785, dtype)
    first = value_and_grads(bernoulli_loglik_cuda, logits, x, grad_out)
    for _ in range(3):
        for a, b in zip(first, value_and_grads(bernoulli_loglik_cuda, logits, x, grad_out)):
            assert torch.equal(a, b)


def test_runs_on_the_current_stream():
    """The kernels launch on torch's current stream (a side stream here), ordered with torch's own work."""
    logits, x, _ = make_inputs(33, 10, 785, torch.float32)
    expected = bernoulli_loglik_cuda(logits, x)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        shifted = logits + 0.0  # produced on the side stream just before the kernel reads it
        got = bernoulli_loglik_cuda(shifted, x)
    torch.cuda.current_stream().wait_stream(side)
    assert torch.equal(got, expected)


def test_raw_module_on_explicit_stream():
    C_cuda = _ext.require_cuda_ext()
    assert C_cuda.device_count() >= 1
    logits, x, grad_out = make_inputs(7, 10, 13, torch.float32)
    out = torch.empty(7, 10, device="cuda")
    stream = torch.cuda.current_stream().cuda_stream
    C_cuda.bernoulli_loglik_forward(logits.data_ptr(), x.data_ptr(), out.data_ptr(), 7, 10, 13, "float32", stream)
    torch.cuda.synchronize()
    assert_close_to_reference(out, bernoulli_loglik_torch(logits, x), bernoulli_loglik_torch(logits.double(), x.double()))
    grad_logits = torch.empty_like(logits)
    C_cuda.bernoulli_loglik_backward(
        logits.data_ptr(), x.data_ptr(), grad_out.data_ptr(), grad_logits.data_ptr(), 0, 7, 10, 13, "float32", stream
    )
    torch.cuda.synchronize()
    expected = grad_out.unsqueeze(-1) * (x.unsqueeze(1) - torch.sigmoid(logits))
    assert torch.allclose(grad_logits, expected, rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="unsupported dtype"):
        C_cuda.bernoulli_loglik_forward(logits.data_ptr(), x.data_ptr(), out.data_ptr(), 7, 10, 13, "half", stream)


def test_cuda_graph_capture():
    logits, x, _ = make_inputs(33, 10, 785, torch.float32)
    expected = bernoulli_loglik_cuda(logits, x)
    static_logits = logits.clone()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up outside capture, as torch.cuda.graphs recommends
        bernoulli_loglik_cuda(static_logits, x)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_out = bernoulli_loglik_cuda(static_logits, x)
    graph.replay()
    torch.cuda.synchronize()
    assert torch.equal(static_out, expected)


def test_torch_library_opcheck():
    logits, x, grad_out = make_inputs(3, 4, 5, torch.float32)
    torch.library.opcheck(
        torch.ops.ssvae_fast.bernoulli_loglik_cuda.default, (logits.requires_grad_(True), x.requires_grad_(True))
    )
    torch.library.opcheck(
        torch.ops.ssvae_fast.bernoulli_loglik_cuda_backward.default, (logits.detach(), x.detach(), grad_out, True)
    )


def test_cpu_tensors_are_rejected():
    with pytest.raises(ValueError, match="cuda device"):
        bernoulli_loglik_cuda(torch.zeros(2, 3, 4), torch.zeros(2, 4))
