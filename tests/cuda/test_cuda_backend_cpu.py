"""The `cuda` backend on a machine without a GPU: what must work there (docs/design.md: `import ssvae_fast`
never fails without a GPU; backends give clear errors). The GPU tests are in test_cuda_backend.py."""

from __future__ import annotations

import pytest
import torch

from ssvae_fast import backends


def test_module_imports_and_factory_builds_without_cuda():
    from ssvae_fast.ops import cuda_backend

    ops = cuda_backend.cuda_ops()
    assert isinstance(ops, backends.BackendOps)
    assert ops.name == "cuda"
    assert ops.class_conditional_activation is cuda_backend.class_conditional_activation_cuda
    assert ops.gaussian_reparam_kl is cuda_backend.gaussian_reparam_kl_cuda
    assert ops.bernoulli_loglik_linear is cuda_backend.bernoulli_loglik_linear_cuda
    assert ops.elbo_reduction is cuda_backend.elbo_reduction_cuda
    for name in ("class_conditional_activation_cuda", "gaussian_reparam_kl_cuda", "bernoulli_loglik_linear_cuda",
                 "elbo_reduction_cuda"):
        assert hasattr(torch.ops.ssvae_fast, name) and hasattr(torch.ops.ssvae_fast, name + "_backward"), name


def test_registry_names_the_factory():
    assert backends._OPS_FACTORIES["cuda"] == "ssvae_fast.ops.cuda_backend:cuda_ops"


def test_cpu_tensors_raise_a_clear_error():
    from ssvae_fast.ops import cuda_backend

    ops = cuda_backend.cuda_ops()
    with pytest.raises(ValueError, match="CUDA tensors"):
        ops.class_conditional_activation(torch.zeros(2, 4), torch.zeros(4, 3), None, "softplus")
    with pytest.raises(ValueError, match="CUDA tensors"):
        ops.gaussian_reparam_kl(torch.zeros(2, 6), torch.zeros(2, 3))
    with pytest.raises(ValueError, match="CUDA tensors"):
        ops.bernoulli_loglik_linear(torch.zeros(2, 3, 4), torch.zeros(5, 4), torch.zeros(5), torch.zeros(2, 5))
    with pytest.raises(ValueError, match="CUDA tensors"):
        ops.elbo_reduction(torch.zeros(3, 2), torch.zeros(1, dtype=torch.int64), torch.zeros(1), torch.zeros(1),
                           torch.zeros(2, 2), torch.zeros(2, 2), 1.0)
    # The custom ops themselves, reached directly, refuse CPU tensors too (no launch with host pointers).
    with pytest.raises(ValueError, match="CUDA tensors"):
        torch.ops.ssvae_fast.gaussian_reparam_kl_cuda(torch.zeros(2, 6), torch.zeros(2, 3))


def test_shape_errors_come_before_device_errors():
    from ssvae_fast.ops import cuda_backend

    with pytest.raises(ValueError, match="eps must be"):
        cuda_backend.gaussian_reparam_kl_cuda(torch.zeros(2, 6), torch.zeros(2, 4))


def test_precision_setting():
    from ssvae_fast.ops import cuda_backend

    before = cuda_backend.get_precision()
    assert before in cuda_backend.PRECISIONS
    with cuda_backend.set_precision("ieee"):
        assert cuda_backend.get_precision() == "ieee"
        with cuda_backend.set_precision("tf32"):
            assert cuda_backend.get_precision() == "tf32"
        assert cuda_backend.get_precision() == "ieee"
    assert cuda_backend.get_precision() == before
    with pytest.raises(ValueError, match="precision"):
        cuda_backend.set_precision("bf16")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU path of the backend registry")
def test_backend_reports_why_it_is_unavailable():
    reason = backends.unavailable_reason("cuda")
    assert reason is not None and "CUDA" in reason
    with pytest.raises(backends.BackendUnavailableError, match="not available"):
        backends.resolve("cuda", torch.device("cpu"))
