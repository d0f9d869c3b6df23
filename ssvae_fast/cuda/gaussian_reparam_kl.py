"""`gaussian_reparam_kl` on a CUDA GPU: one kernel forward, one backward (csrc/cuda/gaussian_reparam_kl.cu,
with the VJP). KL accumulates in fp32 (fp64 for fp64 inputs). Any strides."""

# No `from __future__ import annotations`: the custom ops' schemas come from these annotations.
from typing import Optional, Tuple

import torch
from torch import Tensor

from .._launch import dtype_name, stream
from . import extension, require_cuda


def forward(head: Tensor, eps: Tensor) -> Tuple[Tensor, Tensor]:
    require_cuda("gaussian_reparam_kl_cuda", head, eps)
    R, Z = eps.shape
    z = head.new_empty((R, Z))
    kl = head.new_empty((R,))
    if R == 0:
        return z, kl
    with torch.cuda.device(head.device):
        extension().gaussian_reparam_kl_forward(
            head_ptr=head.data_ptr(), eps_ptr=eps.data_ptr(), z_ptr=z.data_ptr(), kl_ptr=kl.data_ptr(),
            R=R, Z=Z,
            stride_hr=head.stride(0), stride_hz=head.stride(1), stride_er=eps.stride(0), stride_ez=eps.stride(1),
            dtype=dtype_name(head), stream=stream(head),
        )
    return z, kl


def backward(
    head: Tensor, eps: Tensor, grad_z: Optional[Tensor], grad_kl: Optional[Tensor], need_head: bool, need_eps: bool
) -> Tuple[Tensor, Tensor]:
    """(d head (R, 2Z), d eps (R, Z)), contiguous, each empty when not needed; None gradients count as 0."""
    require_cuda("gaussian_reparam_kl_cuda_backward", head, eps, grad_z, grad_kl)
    R, Z = eps.shape
    dhead = head.new_empty((R, 2 * Z))
    deps = head.new_empty((R, Z))
    if R * Z > 0:
        grad_z = head.new_zeros((R, Z)) if grad_z is None else grad_z
        grad_kl = head.new_zeros((R,)) if grad_kl is None else grad_kl
        with torch.cuda.device(head.device):
            extension().gaussian_reparam_kl_backward(
                head_ptr=head.data_ptr(), eps_ptr=eps.data_ptr(), grad_z_ptr=grad_z.data_ptr(),
                grad_kl_ptr=grad_kl.data_ptr(), dhead_ptr=dhead.data_ptr(), deps_ptr=deps.data_ptr(),
                R=R, Z=Z,
                stride_hr=head.stride(0), stride_hz=head.stride(1), stride_er=eps.stride(0), stride_ez=eps.stride(1),
                stride_gzr=grad_z.stride(0), stride_gzz=grad_z.stride(1), stride_gkl=grad_kl.stride(0),
                dtype=dtype_name(head), stream=stream(head),
            )
    return dhead if need_head else head.new_empty((0,)), deps if need_eps else head.new_empty((0,))
