"""The whole M2 training step (zero_grad, loss, backward, Adam step) per provider.

    pytest benchmarks/bench_train_step.py --benchmark-only
    SSVAE_FAST_BENCH_FAST=1 pytest benchmarks/ --benchmark-only      # CI: B=64, two rounds

Providers: reference (eager), reference under torch.compile (default mode; max-autotune on GPUs),
torch, triton, cuda, cpu, and Pyro's TraceEnum_ELBO M2 (benchmarks/pyro_m2.py) on the same networks.
"""

import pytest

from conftest import DEVICE, PRECISIONS, SIZES
from harness import cases
from harness.config import CUDAGRAPH_PROVIDERS, CUDAGRAPH_SIZES, PROVIDERS
from harness.measure import matmul_precision


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("B", SIZES)
@pytest.mark.parametrize("provider", PROVIDERS)
def test_train_step(measure, loss_runner, provider, B, precision):
    runner = loss_runner(provider, B, precision)
    measure(
        runner.train_step,
        runner.case.batches,
        B=B,
        precision=precision,
        group=f"train_step B={B} {precision}",
        flops=runner.case.flops(),
    )


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("provider", CUDAGRAPH_PROVIDERS)
def test_train_step_cudagraph(measure, case, provider, precision):
    """The training step captured in one CUDA graph and replayed, at B=100 (launch-bound size)."""
    if DEVICE != "cuda":
        pytest.skip("CUDA graphs need a CUDA GPU (SSVAE_FAST_BENCH_DEVICE=cuda)")
    reason = cases.provider_unavailable_reason(provider, DEVICE)
    if reason is not None:
        pytest.skip(reason)
    B = CUDAGRAPH_SIZES[0]
    c = case(B)
    with matmul_precision(precision):
        step = cases.CudaGraphTrainStep(provider, c, precision)
    measure(step, c.batches, B=B, precision=precision, group=f"train_step_cudagraph B={B} {precision}",
            flops=c.flops())
