"""`elbo_reduction` on a CUDA GPU (csrc/cuda/elbo_reduction.cu, with the VJP): one warp per row;
log-softmax in fp32 (fp64 for fp64 inputs). Labels are not range-checked on the device."""

# No `from __future__ import annotations`: the custom ops' schemas come from these annotations.
from typing import Tuple

import torch
from torch import Tensor

from .._launch import dtype_name, stream
from . import extension, require_cuda

MIN_CLASSES = 1  # log C is undefined for C = 0


def _sizes(logits_y: Tensor, y_l: Tensor, ll_u: Tensor, kl_u: Tensor, alpha: float) -> dict:
    """Sizes, alpha and the strides both kernels take."""
    return dict(
        n_l=y_l.shape[0], n_u=ll_u.shape[0], C=logits_y.shape[1], alpha=alpha,
        stride_lr=logits_y.stride(0), stride_lc=logits_y.stride(1), stride_y=y_l.stride(0),
        stride_ll_ur=ll_u.stride(0), stride_ll_uc=ll_u.stride(1),
        stride_kl_ur=kl_u.stride(0), stride_kl_uc=kl_u.stride(1),
        dtype=dtype_name(logits_y), stream=stream(logits_y),
    )


def forward(
    logits_y: Tensor, y_l: Tensor, ll_l: Tensor, kl_l: Tensor, ll_u: Tensor, kl_u: Tensor, alpha: float
) -> Tensor:
    require_cuda("elbo_reduction_cuda", logits_y, y_l, ll_l, kl_l, ll_u, kl_u)
    loss = logits_y.new_empty((logits_y.shape[0],))
    if loss.numel() == 0:
        return loss
    with torch.cuda.device(logits_y.device):
        extension().elbo_reduction_forward(
            logits_y_ptr=logits_y.data_ptr(), y_l_ptr=y_l.data_ptr(), ll_l_ptr=ll_l.data_ptr(),
            kl_l_ptr=kl_l.data_ptr(), ll_u_ptr=ll_u.data_ptr(), kl_u_ptr=kl_u.data_ptr(), loss_ptr=loss.data_ptr(),
            stride_ll_l=ll_l.stride(0), stride_kl_l=kl_l.stride(0), **_sizes(logits_y, y_l, ll_u, kl_u, alpha),
        )
    return loss


def backward(
    grad: Tensor, logits_y: Tensor, y_l: Tensor, ll_u: Tensor, kl_u: Tensor, alpha: float
) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """(d logits_y, d ll_l, d kl_l, d ll_u, d kl_u), contiguous."""
    require_cuda("elbo_reduction_cuda_backward", grad, logits_y, y_l, ll_u, kl_u)
    n, C = logits_y.shape
    n_l, n_u = y_l.shape[0], ll_u.shape[0]
    dlogits = logits_y.new_empty((n, C))
    dll_l, dkl_l = logits_y.new_empty((n_l,)), logits_y.new_empty((n_l,))
    dll_u, dkl_u = logits_y.new_empty((n_u, C)), logits_y.new_empty((n_u, C))
    if n > 0:
        with torch.cuda.device(logits_y.device):
            extension().elbo_reduction_backward(
                grad_ptr=grad.data_ptr(), logits_y_ptr=logits_y.data_ptr(), y_l_ptr=y_l.data_ptr(),
                ll_u_ptr=ll_u.data_ptr(), kl_u_ptr=kl_u.data_ptr(), dlogits_y_ptr=dlogits.data_ptr(),
                dll_l_ptr=dll_l.data_ptr(), dkl_l_ptr=dkl_l.data_ptr(), dll_u_ptr=dll_u.data_ptr(),
                dkl_u_ptr=dkl_u.data_ptr(), stride_g=grad.stride(0), **_sizes(logits_y, y_l, ll_u, kl_u, alpha),
            )
    return dlogits, dll_l, dkl_l, dll_u, dkl_u
