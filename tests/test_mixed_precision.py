"""Mixed precision: M2.loss under torch.autocast in bfloat16 and float16, and fp32 accumulation of every
reduction.

- the whole objective under autocast (float32 parameters and inputs, 16-bit GEMMs): losses and the gradient
  of every parameter and input follow the tolerance rule against the float64 reference (no worse than twice
  the reference's own error under the same autocast, plus the 16-bit floor): on the GPU for torch, triton
  and cuda (GPU only); on the CPU for the torch backend under CPU autocast, where its reductions
  (log-likelihood, KL, ELBO) come out in float32 as torch's own reductions do under autocast (the cpu
  backend's: tests/test_backends.py);
- each reduction op on 16-bit inputs accumulates in float32: over D = 4096 pixels (or Z = 4096 latent
  dimensions) its result is within one 16-bit ulp (plus the inputs' own rounding) of the float64 value of
  the same 16-bit inputs, where accumulating in 16 bits errs by tens of ulp.
"""

from __future__ import annotations

import contextlib
import math

import pytest
import torch

from ssvae_fast import backends
from tests.equivalence import check_autocast
from tests.op_checks import GPU_BACKENDS, gemm_precision, half_precision_params, on_backends

HALF = [torch.bfloat16, torch.float16]
HAS_CUDA = torch.cuda.is_available()


@pytest.mark.parametrize("dtype", HALF)
@pytest.mark.parametrize("backend", on_backends("torch", *GPU_BACKENDS, gpu_only=True))
def test_autocast_on_gpu_follows_tolerance_rule(backend, dtype):
    setting = gemm_precision(backend, "tf32") if backend in GPU_BACKENDS else contextlib.nullcontext()
    check_autocast(backend, "cuda", setting, dtype)


@pytest.mark.parametrize("dtype", HALF)
def test_torch_backend_under_cpu_autocast_follows_tolerance_rule(dtype):
    fast = check_autocast("torch", "cpu", contextlib.nullcontext(), dtype)
    assert fast["losses"].dtype == torch.float32  # the ELBO reduction's result stays in float32


def _ulp16(value: torch.Tensor, dtype) -> torch.Tensor:
    """The spacing of `dtype` at |value| (float64)."""
    mantissa = 7 if dtype == torch.bfloat16 else 10
    _, exponent = torch.frexp(value.double())
    return torch.ldexp(torch.ones_like(value.double()), exponent.to(torch.int64) - 1 - mantissa)


def _device(backend):
    return "cuda" if backend == "cuda" or (backend == "triton" and HAS_CUDA) else "cpu"


def _half_params(*names):
    """(backend, dtype) parameters for 16-bit op inputs: the torch face anywhere in both 16-bit dtypes, the cpu
    backend in bfloat16, the GPU backends on a GPU in both (the Triton interpreter has no 16-bit dot)."""
    return ([pytest.param("torch", dtype) for dtype in HALF] + half_precision_params("cpu")
            + half_precision_params(*names, gpu_only=True))


@pytest.mark.parametrize("backend,dtype", _half_params(*GPU_BACKENDS))
def test_bernoulli_row_sums_accumulate_in_float32(backend, dtype):
    device = _device(backend)
    g = torch.Generator().manual_seed(3)
    M, H, D = 6, 16, 4096
    h = (torch.rand(M, H, generator=g) * 2 - 1).to(dtype)
    weight = (torch.randn(D, H, generator=g) * 0.3).to(dtype)
    x = (torch.rand(M, D, generator=g) < 0.3).to(dtype)
    op = backends.get_ops(backend).bernoulli_loglik_linear
    with gemm_precision(backend, "ieee") if backend != "torch" else contextlib.nullcontext():
        got = op(h.to(device).view(M, 1, H), weight.to(device), None, x.to(device)).view(M).double().cpu()
    logits = h.double() @ weight.double().t()
    truth = (x.double() * logits - torch.nn.functional.softplus(logits, threshold=1e9)).sum(-1)
    # One ulp of the result, plus what rounding the D logits to 16 bits may cost (a product of 16-bit
    # inputs accumulated in float32 is then rounded once per logit): sqrt(D) times that rounding, 4 sigma.
    eps16 = 2.0 ** (-8 if dtype == torch.bfloat16 else -11)
    rounding = 4 * math.sqrt(D) * eps16 * float(logits.abs().max())
    bound = _ulp16(truth, dtype) + rounding
    assert ((got - truth).abs() <= bound).all(), ((got - truth).abs().max(), bound.min())
    assert float(_ulp16(truth, dtype).min()) > 4 * rounding  # what a 16-bit running sum would miss is not hidden


@pytest.mark.parametrize("backend,dtype", _half_params(*GPU_BACKENDS))
def test_kl_accumulates_in_float32(backend, dtype):
    device = _device(backend)
    g = torch.Generator().manual_seed(4)
    R, Z = 5, 4096
    head = torch.cat([torch.randn(R, Z, generator=g), torch.rand(R, Z, generator=g) * 2 - 1], 1).to(dtype)
    eps = torch.randn(R, Z, generator=g).to(dtype)
    _, kl = backends.get_ops(backend).gaussian_reparam_kl(head.to(device), eps.to(device))
    mu, logvar = head.double()[:, :Z], head.double()[:, Z:]
    truth = 0.5 * (mu.square() + logvar.exp() - 1 - logvar).sum(-1)
    bound = _ulp16(truth, dtype) + 4 * math.sqrt(Z) * 2.0**-24 * 8  # one ulp + float32 accumulation
    assert ((kl.double().cpu() - truth).abs() <= bound).all(), ((kl.double().cpu() - truth).abs().max(), bound)


def test_a_sixteen_bit_running_sum_would_fail_these_bounds():
    """The bounds above separate float32 from 16-bit accumulation: summing the same terms in bfloat16 errs by
    far more than one ulp of the result."""
    g = torch.Generator().manual_seed(5)
    terms = (torch.rand(4096, generator=g) * 2).to(torch.bfloat16)
    truth = terms.double().sum()
    running = torch.zeros((), dtype=torch.bfloat16)
    for t in terms:
        running = running + t
    assert abs(float(running) - float(truth)) > 10 * float(_ulp16(truth, torch.bfloat16))
