"""The `cuda` backend on a machine without a GPU: what must work there (docs/design.md: `import ssvae_fast`
never fails without a GPU; backends give clear errors). The GPU tests are in test_cuda_backend.py."""

from __future__ import annotations

import pytest
import torch

from ssvae_fast import _ext, backends


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
    # The labelled-prefix layout: classes for the first rows only, 2-D h with n_labelled.
    with pytest.raises(ValueError, match="CUDA tensors"):
        ops.class_conditional_activation(torch.zeros(3, 4), torch.zeros(4, 2), torch.zeros(1, dtype=torch.int64),
                                         "relu")
    with pytest.raises(ValueError, match="CUDA tensors"):
        ops.bernoulli_loglik_linear(torch.zeros(1 + 2 * 3, 4), torch.zeros(5, 4), None, torch.zeros(3, 5), 1)
    # The custom ops themselves, reached directly, refuse CPU tensors too (no launch with host pointers).
    with pytest.raises(ValueError, match="CUDA tensors"):
        torch.ops.ssvae_fast.gaussian_reparam_kl_cuda(torch.zeros(2, 6), torch.zeros(2, 3))
    with pytest.raises(ValueError, match="CUDA tensors"):
        torch.ops.ssvae_fast.bernoulli_loglik_linear_cuda(
            torch.zeros(4, 4), torch.zeros(5, 4), None, torch.zeros(2, 5), 1, 3, False, "ieee"
        )


def test_shape_errors_come_before_device_errors():
    from ssvae_fast.ops import cuda_backend

    with pytest.raises(ValueError, match="eps must be"):
        cuda_backend.gaussian_reparam_kl_cuda(torch.zeros(2, 6), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="classes must be"):  # more classes than rows
        cuda_backend.class_conditional_activation_cuda(torch.zeros(2, 4), torch.zeros(4, 3),
                                                       torch.zeros(3, dtype=torch.int64), "relu")
    with pytest.raises(ValueError, match="n_labelled must be"):
        cuda_backend.bernoulli_loglik_linear_cuda(torch.zeros(4, 4), torch.zeros(5, 4), None, torch.zeros(3, 5), 4)
    with pytest.raises(ValueError, match="rows"):  # 1 + 2 * C rows for n_l = 1 of N = 3
        cuda_backend.bernoulli_loglik_linear_cuda(torch.zeros(4, 4), torch.zeros(5, 4), None, torch.zeros(3, 5), 1)
    with pytest.raises(ValueError, match="n_labelled applies"):
        cuda_backend.bernoulli_loglik_linear_cuda(torch.zeros(3, 2, 4), torch.zeros(5, 4), None, torch.zeros(3, 5), 1)


# (N, n_l, C): n_l = 0, n_l = N, N - n_l = 1, C = 1, and C = 0 (no enumerated row).
LAYOUTS = [(5, 0, 3), (5, 5, 3), (5, 4, 3), (6, 2, 1), (7, 3, 17), (4, 2, 0)]


@pytest.mark.parametrize("N,n_l,C", LAYOUTS)
def test_fake_shapes_of_the_labelled_prefix_layout(N, n_l, C):
    """The custom ops' fake (meta) implementations give the layout's shapes, forward and backward, as the
    tracers (torch.compile, CUDA-graph capture, export) see them; no GPU needed."""
    from ssvae_fast.ops import cuda_backend  # noqa: F401  (registers the custom ops)

    ops = torch.ops.ssvae_fast
    meta = lambda *shape: torch.empty(*shape, device="meta", requires_grad=True)  # noqa: E731
    H, D, M = 6, 9, n_l + (N - n_l) * C

    a, w_y = meta(N, H), meta(H, C)
    classes = torch.empty(n_l, dtype=torch.int64, device="meta")
    out = ops.class_conditional_activation_cuda(a, w_y, classes, "softplus")
    assert out.shape == (M, H)
    out.sum().backward()
    assert a.grad.shape == (N, H) and w_y.grad.shape == (H, C)
    da, dw_y = ops.class_conditional_activation_cuda_backward(torch.empty(M, H, device="meta"), a, w_y, classes, "relu")
    assert da.shape == (N, H) and dw_y.shape == (H, C)
    assert ops.class_conditional_activation_cuda(a, w_y, None, "relu").shape == (N, C, H)

    h, weight, bias, x = meta(M, H), meta(D, H), meta(D), meta(N, D)
    for store_s in (True, False):
        ll, s = ops.bernoulli_loglik_linear_cuda(h, weight, bias, x, n_l, C, store_s, "ieee")
        assert ll.shape == (M,) and s.shape == ((M, D) if store_s else (0,))
    ll.sum().backward()
    assert h.grad.shape == (M, H) and weight.grad.shape == (D, H) and bias.grad.shape == (D,)
    assert x.grad.shape == (N, D)


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


def check_raw_layout_argument_errors(ext):
    """The extension's host-side checks of the labelled-prefix layout (n_l): ValueError before anything
    touches a device, so they hold without a GPU. Pointers are dummies (never dereferenced)."""
    cc = dict(a_ptr=8, w_y_ptr=8, classes_ptr=0, out_ptr=8, N=1, n_l=0, H=2, C=2, stride_an=2, stride_ah=1,
              stride_wh=2, stride_wc=1, stride_cls=0, activation="relu", dtype="float32", stream=0)
    with pytest.raises(ValueError, match="n_l must be in"):
        ext.class_conditional_forward(**{**cc, "n_l": 2})
    with pytest.raises(ValueError, match="non-negative"):
        ext.class_conditional_forward(**{**cc, "n_l": -1})
    with pytest.raises(ValueError, match="classes is a null pointer"):
        ext.class_conditional_forward(**{**cc, "n_l": 1})
    bw = dict(grad_ptr=8, a_ptr=8, w_y_ptr=8, classes_ptr=0, da_ptr=8, dw_partial_ptr=8, dw_y_ptr=8, N=3, n_l=4, H=2,
              C=2, stride_an=2, stride_ah=1, stride_wh=2, stride_wc=1, stride_cls=0, activation="relu",
              dtype="float32", stream=0)
    with pytest.raises(ValueError, match="n_l must be in"):
        ext.class_conditional_backward(**bw)
    bern = dict(h_ptr=8, weight_ptr=8, bias_ptr=0, x_ptr=8, s_ptr=0, ll_partial_ptr=8, ll_ptr=8, M=4, D=1, H=1, C=3,
                n_l=1, stride_hm=1, stride_hk=1, stride_wd=1, stride_wk=1, stride_b=0, stride_xn=1, stride_xd=1,
                precision="ieee", dtype="float32", stream=0)
    with pytest.raises(ValueError, match="n_l must be in"):
        ext.bernoulli_loglik_linear_forward(**{**bern, "n_l": 5})
    with pytest.raises(ValueError, match="multiple of C"):  # 2 enumerated rows, C = 3
        ext.bernoulli_loglik_linear_forward(**{**bern, "n_l": 2})
    with pytest.raises(ValueError, match="multiple of C"):  # enumerated rows need C >= 1
        ext.bernoulli_loglik_linear_forward(**{**bern, "C": 0})
    # Sizes that write nothing return before any launch.
    ext.bernoulli_loglik_linear_forward(**{**bern, "M": 0, "n_l": 0})
    ext.class_conditional_forward(**{**cc, "N": 3, "C": 0})


@pytest.mark.skipif(_ext._C_cuda is None, reason="needs the CUDA extension ssvae_fast._C_cuda built (not a GPU)")
def test_raw_module_layout_argument_errors():
    check_raw_layout_argument_errors(_ext._C_cuda)
