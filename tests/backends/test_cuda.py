"""What only the `cuda` backend has; everything it shares with the other backends is tested in tests/ops
and tests/test_backends.py (GPU only, skipped with the reason elsewhere).

Without a GPU (docs/design.md: `import ssvae_fast` never fails without a GPU; backends give clear errors):
the registry says why the backend is unavailable, CPU tensors are refused with a clear error by the ops and
by the custom ops reached directly, and the extension's host-side checks of the labelled-prefix layout
hold (where ssvae_fast._C_cuda is built). On a GPU: the TF32 switch really changes the GEMM, and the
extension's own argument checks.
"""

from __future__ import annotations

import pytest
import torch

from ssvae_fast import _ext, backends
from ssvae_fast.ops import bernoulli_loglik_linear, gaussian_reparam_kl
from ssvae_fast.ops.bernoulli_loglik_linear import bernoulli_loglik_linear_torch

needs_gpu = pytest.mark.skipif(backends.unavailable_reason("cuda") is not None,
                               reason=f"{backends.unavailable_reason('cuda')}")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU path of the backend registry")
def test_backend_reports_why_it_is_unavailable():
    reason = backends.unavailable_reason("cuda")
    assert reason is not None and "CUDA" in reason
    with pytest.raises(backends.BackendUnavailableError, match="not available"):
        backends.resolve("cuda", torch.device("cpu"))


def test_cpu_tensors_raise_a_clear_error():
    ops = backends.get_ops("cuda")
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
        gaussian_reparam_kl.IMPLEMENTATIONS["cuda"].op(torch.zeros(2, 6), torch.zeros(2, 3))
    with pytest.raises(ValueError, match="CUDA tensors"):
        bernoulli_loglik_linear.IMPLEMENTATIONS["cuda"].op(
            torch.zeros(4, 4), torch.zeros(5, 4), None, torch.zeros(2, 5), 1, 3, False, "ieee"
        )


@pytest.mark.skipif(_ext._C_cuda is None, reason="needs the CUDA extension ssvae_fast._C_cuda built (not a GPU)")
def test_raw_module_layout_argument_errors():
    """The extension's host-side checks of the labelled-prefix layout (n_l): ValueError before anything
    touches a device, so they hold without a GPU. Pointers are dummies (never dereferenced)."""
    ext = _ext._C_cuda
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


@needs_gpu
def test_tf32_switch_changes_the_gemm():
    """"tf32" really takes the tensor-core path (TF32-rounded products differ from exact ones at ~1e-3
    relative) and "ieee" the exact one (close to the float64 product to ~1e-6)."""
    g = torch.Generator().manual_seed(35)
    h = torch.randn(8, 10, 300, generator=g).to("cuda")
    weight = (torch.randn(200, 300, generator=g) * 0.1).to("cuda")
    x = torch.rand(8, 200, generator=g).to("cuda")
    exact = bernoulli_loglik_linear_torch(h.double(), weight.double(), None, x.double())
    op = backends.get_ops("cuda").bernoulli_loglik_linear
    ieee = op(h, weight, None, x, precision="ieee")
    tf32 = op(h, weight, None, x, precision="tf32")
    err_ieee = float((ieee.double() - exact).abs().max())
    err_tf32 = float((tf32.double() - exact).abs().max())
    scale = float(exact.abs().max())
    assert err_ieee < 1e-5 * scale, err_ieee
    assert 10 * err_ieee < err_tf32 < 1e-2 * scale, (err_ieee, err_tf32)


@needs_gpu
def test_raw_module_errors():
    """The extension's own checks: unknown dtype/activation strings and negative sizes raise ValueError."""
    ext = _ext.require_cuda_ext()
    stream = torch.cuda.current_stream().cuda_stream
    t = torch.zeros(8, device="cuda")
    common = dict(head_ptr=t.data_ptr(), eps_ptr=t.data_ptr(), z_ptr=t.data_ptr(), kl_ptr=t.data_ptr(), R=2, Z=1,
                  stride_hr=2, stride_hz=1, stride_er=1, stride_ez=1, stream=stream)
    with pytest.raises(ValueError, match="unsupported dtype"):
        ext.gaussian_reparam_kl_forward(dtype="int8", **common)
    with pytest.raises(ValueError, match="non-negative"):
        ext.gaussian_reparam_kl_forward(dtype="float32", **{**common, "R": -1})
    with pytest.raises(ValueError, match="activation"):
        ext.class_conditional_forward(a_ptr=t.data_ptr(), w_y_ptr=t.data_ptr(), classes_ptr=0, out_ptr=t.data_ptr(),
                                      N=1, n_l=0, H=2, C=2, stride_an=2, stride_ah=1, stride_wh=2, stride_wc=1,
                                      stride_cls=0, activation="tanh", dtype="float32", stream=stream)
