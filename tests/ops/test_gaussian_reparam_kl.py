"""`gaussian_reparam_kl` (ssvae_fast/ops/gaussian_reparam_kl.py) on every backend.

Against the plain-torch face (z, kl and the gradients of head and eps, docs/design.md section 4's rule):
non-contiguous eps, only z or only kl reaching the loss (a None output gradient), extreme log-variances,
Z = 0, gradcheck in float64, half precision (bfloat16 on the cpu backend, bfloat16 and float16 on the GPU
backends), the cpu backend under torch.autocast against the torch face under the same autocast; the fakes
and torch.library.opcheck of the custom ops; the shape and device checks.
"""

from __future__ import annotations

import pytest
import torch

from ssvae_fast import backends
from ssvae_fast.ops import gaussian_reparam_kl as module
from ssvae_fast.ops.gaussian_reparam_kl import gaussian_reparam_kl_torch as torch_face
from tests.op_checks import (COMPILED, GPU_BACKENDS, assert_grads_match_torch, check_gaussian_extreme_logvar,
                             check_op_against_torch, check_op_under_autocast, check_opcheck, device_of,
                             half_precision_params, leaf, on_backends, op_of, per_backend, rand, registered)


def _op(backend):
    return op_of(backend, module.OP)


# R, Z: (700, 50) is past the cpu kernels' serial threshold; (300, 50) spans several blocks on cuda.
SHAPES = {
    "cpu": [(1, 1), (37, 5), (700, 50)],
    "triton": [(37, 5), (9, 70)],
    "cuda": [(37, 5), (9, 70), (300, 50)],
}


@pytest.mark.parametrize("backend,R,Z", per_backend(SHAPES))
def test_matches_torch(backend, R, Z):
    device = device_of(backend)
    head64, eps64 = rand(R, 2 * Z, seed=6), rand(Z, R, seed=7)

    def make(dtype):
        eps_t = leaf(eps64, dtype, device).t().detach().requires_grad_(True)  # (R, Z), strides (1, R)
        return {"head": leaf(head64, dtype, device), "eps": eps_t}

    check_op_against_torch(_op(backend), torch_face, make, device=device)


@pytest.mark.parametrize("pick", [0, 1])
@pytest.mark.parametrize("backend", on_backends(*COMPILED))
def test_only_z_or_only_kl_used(backend, pick):
    """Only z (or only kl) reaches the loss: the other output's gradient is None in the backward (counted
    as zero); kl does not depend on eps."""
    device = device_of(backend)
    head, eps = leaf(rand(9, 8, seed=11), torch.float64, device), leaf(rand(9, 4, seed=12), torch.float64, device)
    assert_grads_match_torch(_op(backend), torch_face, (head, eps), (head, eps), pick=pick)


@pytest.mark.parametrize("backend", on_backends(*COMPILED))
def test_extreme_logvar(backend):
    check_gaussian_extreme_logvar(backends.get_ops(backend), device_of(backend), seed=26)


@pytest.mark.parametrize("backend", on_backends("torch", *COMPILED))
def test_zero_width_latent(backend):
    """Z = 0: z is (R, 0) and kl is 0."""
    f64 = dict(dtype=torch.float64, device=device_of(backend))
    z, kl = _op(backend)(torch.rand(4, 0, **f64), torch.rand(4, 0, **f64))
    assert z.shape == (4, 0) and torch.equal(kl, torch.zeros(4, **f64))


@pytest.mark.parametrize("backend", on_backends("torch", *COMPILED))
def test_gradcheck_float64(backend):
    g = torch.Generator().manual_seed(38)
    head, eps = (torch.randn(*s, generator=g, dtype=torch.float64).to(device_of(backend)).requires_grad_(True)
                 for s in ((3, 4), (3, 2)))
    assert torch.autograd.gradcheck(_op(backend), (head, eps))


@pytest.mark.parametrize("backend", ["torch", *COMPILED])
def test_shape_errors(backend):
    """Shapes are checked first, on any device (before the backend's device and dtype rules)."""
    op = getattr(module, f"{module.OP}_{backend}")
    with pytest.raises(ValueError, match="eps must be"):
        op(torch.zeros(2, 6), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="head must be"):
        op(torch.zeros(2, 5), torch.zeros(2, 2))


@pytest.mark.parametrize("backend", on_backends(*COMPILED))
def test_inputs_on_two_devices(backend):
    with pytest.raises(ValueError, match="one device"):
        _op(backend)(torch.rand(2, 4, device=device_of(backend)), torch.rand(2, 2, device="meta"))


@pytest.mark.parametrize("backend", COMPILED)
def test_fake_shapes(backend):
    """Meta tensors through the custom ops: (z, kl), and the backward's gradients or (0,) where not needed."""
    fused = registered(module, backend)
    head, eps = (torch.empty(*s, device="meta", requires_grad=True) for s in ((5, 6), (5, 3)))
    z, kl = fused.op(head, eps)
    assert z.shape == (5, 3) and kl.shape == (5,)
    (z.sum() + kl.sum()).backward()
    assert head.grad.shape == (5, 6) and eps.grad.shape == (5, 3)
    dhead, deps = fused.backward_op(head, eps, None, torch.empty(5, device="meta"), True, False)
    assert dhead.shape == (5, 6) and deps.shape == (0,)


@pytest.mark.parametrize("backend", on_backends(*COMPILED))
def test_torch_library_opcheck(backend):
    check_opcheck(module, backend, lambda r, grad, device: (
        [(grad(4, 6), grad(4, 3))],
        [(r(4, 6), r(4, 3), r(4, 3), r(4), True, True), (r(4, 6), r(4, 3), None, r(4), True, False)],
    ))


@pytest.mark.parametrize("backend,dtype", half_precision_params("cpu", *GPU_BACKENDS))
def test_half_precision_matches_torch(backend, dtype):
    """bf16/fp16 inputs, fp32 compute, outputs in the input dtype, under the tolerance rule (on the cpu also
    past the kernels' serial threshold, and with rows of two chunks of the 256-element bf16 stage)."""
    device = device_of(backend)
    for R, Z in [(37, 5)] + ([(700, 50), (9, 300)] if backend == "cpu" else []):
        head64, eps64 = rand(R, 2 * Z, seed=43), rand(R, Z, seed=44)
        check_op_against_torch(_op(backend), torch_face,
                               lambda dt: {"head": leaf(head64, dt, device), "eps": leaf(eps64, dt, device)},
                               device=device, dtypes=(dtype,))


@pytest.mark.parametrize("half", [("head",), ("head", "eps")])
@pytest.mark.parametrize("backend", on_backends("cpu"))
def test_autocast_matches_torch(backend, half):
    """Under torch.autocast(bfloat16): a bf16 head (the encoder's last GEMM) with float32 noise, as M2's step
    gives them (run in float32 by the casting rule), or with bf16 noise (M1+M2's features): the torch face's
    dtypes (kl in float32), and the tolerance rule against the torch face under the same autocast."""
    device = device_of(backend)
    head64, eps64 = rand(700, 100, seed=46), rand(700, 50, seed=47)
    check_op_under_autocast(_op(backend), torch_face,
                            lambda dt: {"head": leaf(head64, dt, device), "eps": leaf(eps64, dt, device)},
                            half, device=device)
