"""The `torch` backend (docs/design.md section 2's rewrites in plain torch) against the reference."""

import pytest
import torch

from tests.equivalence import MIXES, SHAPES, check_backend


@pytest.mark.parametrize("mix", MIXES)
@pytest.mark.parametrize("B,C", SHAPES)
def test_torch_backend_matches_reference(B, C, mix):
    check_backend("torch", B, C, mix)


@pytest.mark.parametrize("activation", ["softplus", "relu"])
def test_torch_backend_deeper_networks(activation):
    check_backend("torch", 7, 10, "mixed", hidden_layers=2, activation=activation, D=29, H=13)


def test_torch_backend_float64_exact_enough():
    check_backend("torch", 33, 17, "mixed", dtype=torch.float64)


def test_equivalence_check_can_fail():
    """A backend with a wrong op must be caught: drop the KL's '-1' term (a constant shift) and the
    softplus gradient sign, one at a time, and the check must raise."""
    from ssvae_fast import backends
    from ssvae_fast.ops.gaussian import gaussian_reparam_kl_torch

    base = backends.get_ops("torch")

    def wrong_kl(head, eps):
        z, kl = gaussian_reparam_kl_torch(head, eps)
        return z, kl * 1.001  # a 0.1% error

    def wrong_z(head, eps):
        z, kl = gaussian_reparam_kl_torch(head, eps)
        return z.detach() + (z - z.detach()) * 0.99, kl  # right value, gradient 1% off

    for wrong in (wrong_kl, wrong_z):
        backends._OPS_CACHE["torch"] = backends.BackendOps(
            "torch", base.class_conditional_activation, wrong, base.bernoulli_loglik_linear, base.elbo_reduction
        )
        try:
            with pytest.raises(AssertionError):
                check_backend("torch", 7, 10, "mixed")
        finally:
            backends._OPS_CACHE["torch"] = base


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_torch_ops_on_empty_inputs(dtype):
    from ssvae_fast import backends
    from tests.equivalence import check_empty_inputs

    check_empty_inputs(backends.get_ops("torch"), dtype)
