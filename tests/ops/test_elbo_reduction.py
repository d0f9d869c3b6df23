"""`elbo_reduction` (ssvae_fast/ops/elbo_reduction.py) on every backend.

Against the plain-torch face (per-example losses and the gradients of logits_y, ll_* and kl_*,
docs/design.md section 4's rule): labelled-only, unlabelled-only and mixed batches, non-contiguous inputs,
many classes, extreme logits, gradcheck in float64, half precision (bfloat16 on the cpu backend, bfloat16
and float16 on the GPU backends), the cpu backend under torch.autocast against the torch face under the
same autocast; the fakes and torch.library.opcheck of the custom ops; the shape checks.
"""

from __future__ import annotations

import pytest
import torch

from ssvae_fast import backends
from ssvae_fast.ops import elbo_reduction as module
from ssvae_fast.ops.elbo_reduction import elbo_reduction_torch as torch_face
from tests.op_checks import (COMPILED, EXTREME, GPU_BACKENDS, check_elbo_extreme_logits, check_op_against_torch,
                             check_op_under_autocast, check_opcheck, device_of, half_precision_params, leaf,
                             on_backends, op_of, rand, registered)


def _op(backend):
    return op_of(backend, module.OP)


def _labels(n, C, seed, device):
    return torch.randint(0, C, (n,), generator=torch.Generator().manual_seed(seed)).to(device)


# C = 70: on cuda a row's classes span three passes of the warp's 32 lanes.
@pytest.mark.parametrize("n_l,n_u,C", [(5, 9, 2), (5, 9, 17), (50, 90, 17), (0, 6, 10), (6, 0, 10), (3, 4, 70)])
@pytest.mark.parametrize("backend", on_backends(*COMPILED))
def test_matches_torch(backend, n_l, n_u, C):
    device = device_of(backend)
    logits64 = rand(n_l + n_u, C, seed=16, scale=2.0)
    y_l = _labels(n_l, C, 17, device)
    ll_l64, kl_l64 = rand(n_l, seed=18, scale=30.0), rand(n_l, seed=19, uniform=True, scale=5.0)
    ll_u64, kl_u64 = rand(C, n_u, seed=20, scale=30.0), rand(n_u, C, seed=21, uniform=True, scale=5.0)

    def make(dtype):
        return {
            "logits_y": leaf(logits64, dtype, device),
            "y_l": y_l,
            "ll_l": leaf(ll_l64, dtype, device),
            "kl_l": leaf(kl_l64, dtype, device),
            "ll_u": leaf(ll_u64, dtype, device).t().detach().requires_grad_(True),  # non-contiguous
            "kl_u": leaf(kl_u64, dtype, device),
            "alpha": 1.3,
        }

    check_op_against_torch(_op(backend), torch_face, make, device=device)


@pytest.mark.parametrize("backend", on_backends(*COMPILED))
def test_extreme_logits(backend):
    check_elbo_extreme_logits(backends.get_ops(backend), EXTREME, device_of(backend), seed=28)


@pytest.mark.parametrize("backend", on_backends("torch", *COMPILED))
def test_gradcheck_float64(backend):
    device, op = device_of(backend), _op(backend)
    g = torch.Generator().manual_seed(38)
    leaves = [torch.randn(*s, generator=g, dtype=torch.float64).to(device).requires_grad_(True)
              for s in ((5, 3), (2,), (2,), (3, 3), (3, 3))]
    y_l = torch.tensor([1, 0], device=device)
    assert torch.autograd.gradcheck(lambda lg, a, b, c, d: op(lg, y_l, a, b, c, d, 0.9), leaves)


@pytest.mark.parametrize("backend", ["torch", *COMPILED])
def test_shape_errors(backend):
    """Shapes are checked first, on any device (before the backend's device and dtype rules)."""
    op = getattr(module, f"{module.OP}_{backend}")
    y_l = torch.zeros(1, dtype=torch.int64)
    with pytest.raises(ValueError, match=r"logits_y must have n_l \+ n_u = 1 \+ 2 rows \(y_l, ll_u\), got 4"):
        op(torch.zeros(4, 2), y_l, torch.zeros(1), torch.zeros(1), torch.zeros(2, 2), torch.zeros(2, 2), 1.0)
    with pytest.raises(ValueError, match="ll_l and kl_l must be"):
        op(torch.zeros(3, 2), y_l, torch.zeros(2), torch.zeros(1), torch.zeros(2, 2), torch.zeros(2, 2), 1.0)
    with pytest.raises(ValueError, match="ll_u and kl_u must be"):
        op(torch.zeros(3, 2), y_l, torch.zeros(1), torch.zeros(1), torch.zeros(2, 2), torch.zeros(2, 3), 1.0)


@pytest.mark.parametrize("backend", COMPILED)
def test_fake_shapes(backend):
    """Meta tensors through the custom ops: per-example losses, and one gradient per float input."""
    fused = registered(module, backend)
    meta = lambda *s: torch.empty(*s, device="meta", requires_grad=True)  # noqa: E731
    y_l = torch.empty(2, dtype=torch.int64, device="meta")
    inputs = (meta(5, 4), meta(2), meta(2), meta(3, 4), meta(3, 4))
    loss = fused.op(inputs[0], y_l, *inputs[1:], 0.5)
    assert loss.shape == (5,)
    loss.sum().backward()
    assert [t.grad.shape for t in inputs] == [t.shape for t in inputs]


@pytest.mark.parametrize("backend", on_backends(*COMPILED))
def test_torch_library_opcheck(backend):
    def cases(r, grad, device):
        y_l = torch.tensor([1, 0], device=device)
        return ([(grad(5, 3), y_l, grad(2), grad(2), grad(3, 3), grad(3, 3), 0.9)],
                [(r(5), r(5, 3), y_l, r(3, 3), r(3, 3), 0.9)])

    check_opcheck(module, backend, cases)


def _half_inputs(device, n_l: int = 5, n_u: int = 9):
    """make(dtype) for the 16-bit tests: n_l labelled and n_u unlabelled examples of 10 classes."""
    logits64, ll_l64 = rand(n_l + n_u, 10, seed=45), rand(n_l, seed=46, scale=30.0)
    kl_l64, ll_u64 = rand(n_l, seed=47, uniform=True), rand(n_u, 10, seed=48, scale=30.0)
    kl_u64, y_l = rand(n_u, 10, seed=49, uniform=True), _labels(n_l, 10, 50, device)
    return lambda dt: {"logits_y": leaf(logits64, dt, device), "y_l": y_l, "ll_l": leaf(ll_l64, dt, device),
                       "kl_l": leaf(kl_l64, dt, device), "ll_u": leaf(ll_u64, dt, device),
                       "kl_u": leaf(kl_u64, dt, device), "alpha": 1.3}


@pytest.mark.parametrize("backend,dtype", half_precision_params("cpu", *GPU_BACKENDS))
def test_half_precision_matches_torch(backend, dtype):
    """bf16/fp16 inputs, fp32 compute, outputs in the input dtype, under the tolerance rule."""
    device = device_of(backend)
    check_op_against_torch(_op(backend), torch_face, _half_inputs(device), device=device, dtypes=(dtype,))


@pytest.mark.parametrize("half", [("logits_y",), ("logits_y", "ll_l", "kl_l", "ll_u", "kl_u")])
@pytest.mark.parametrize("backend", on_backends("cpu"))
def test_autocast_matches_torch(backend, half):
    """Under torch.autocast(bfloat16): bf16 classifier logits with float32 terms, as M2's step gives them
    (run in float32 by the casting rule), or every input bf16: the losses in float32 as the torch face's, the
    gradients in their inputs' dtypes, and the tolerance rule against the torch face under the same
    autocast."""
    device = device_of(backend)
    check_op_under_autocast(_op(backend), torch_face, _half_inputs(device, 26, 230), half, device=device)
