"""Each fused op alone, and the whole M2 loss, forward and forward+backward.

    pytest benchmarks/bench_ops.py --benchmark-only

Ops (`ssvae_fast.backends.get_ops(backend)`), on the arguments they receive inside the objective:
class_conditional_activation in the encoder's form (labelled examples one class each, the others every
class, [encoder]) and the decoder's (one class per row, [decoder]), gaussian_reparam_kl, bernoulli_loglik_linear, elbo_reduction; per backend
that has its own implementation (torch, triton, cuda, cpu). Forward runs without autograd;
forward+backward takes torch.autograd.grad of every differentiable input against fixed upstream
gradients. The whole loss: per provider, forward with autograd recording (as in training), and
forward+backward.
"""

import pytest

from conftest import DEVICE, PRECISIONS, SIZES
from harness import op_cases
from harness.config import OP_BACKENDS, OP_MODES, OP_VARIANTS, PROVIDERS
from harness.measure import matmul_precision


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("B", SIZES)
@pytest.mark.parametrize("mode", OP_MODES)
@pytest.mark.parametrize("backend", OP_BACKENDS)
@pytest.mark.parametrize("op", tuple(OP_VARIANTS))
def test_op(measure, case, op, backend, mode, B, precision):
    reason = op_cases.op_unavailable_reason(op, backend, DEVICE)
    if reason is not None:
        pytest.skip(reason)
    with matmul_precision(precision):
        op_bench = op_cases.build_op_bench(op, backend, case(B), precision, mode)
    measure(
        op_bench.fn,
        op_bench.inputs,
        B=B,
        precision=precision,
        group=f"{mode} {op} B={B} {precision}",
        flops=op_bench.flops,
        nbytes=op_bench.bytes,
    )


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("B", SIZES)
@pytest.mark.parametrize("mode", ("loss_forward", "loss_forward_backward"))
@pytest.mark.parametrize("provider", PROVIDERS)
def test_loss(measure, loss_runner, provider, mode, B, precision):
    runner = loss_runner(provider, B, precision)
    fn = runner.forward if mode == "loss_forward" else runner.forward_backward
    measure(
        fn,
        runner.case.batches,
        B=B,
        precision=precision,
        group=f"{mode} B={B} {precision}",
        flops=runner.case.flops(backward=mode != "loss_forward"),
    )
