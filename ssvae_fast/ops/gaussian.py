"""Gaussian head epilogue: [mu, logvar], eps -> z = mu + exp(logvar / 2) * eps and KL(q || N(0, I)).

This file holds the plain-torch op; the fused backends provide the same signature.
"""

from __future__ import annotations

import torch

from ..functional import gaussian_kl


def check_gaussian_inputs(head: torch.Tensor, eps: torch.Tensor):
    if head.dim() != 2 or head.shape[1] % 2 != 0:
        raise ValueError(f"head must be (R, 2 * z_dim), got shape {tuple(head.shape)}")
    if eps.shape != (head.shape[0], head.shape[1] // 2):
        raise ValueError(
            f"eps must be (R, z_dim) = {(head.shape[0], head.shape[1] // 2)}, got {tuple(eps.shape)}"
        )


def gaussian_reparam_kl_torch(head: torch.Tensor, eps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """head: (R, 2Z) = [mu, logvar]; eps: (R, Z) -> z (R, Z), kl (R,)."""
    check_gaussian_inputs(head, eps)
    z_dim = eps.shape[1]
    mu, logvar = head[:, :z_dim], head[:, z_dim:]
    z = mu + torch.exp(0.5 * logvar) * eps
    return z, gaussian_kl(mu, logvar)
