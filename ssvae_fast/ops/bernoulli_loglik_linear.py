"""Fused decoder output layer + Bernoulli log-likelihood with x shared by the C class rows.

    ll[n, c] = sum_d x[n, d] * l[n, c, d] - softplus(l[n, c, d]),   l[n, c] = W h[n, c] + b

Since sum_d x_d l_d = h . (W^T x) + b . x, the linear part needs one (N, D) x (D, H) product per
example instead of a reduction over the (N, C, D) logits; only softplus needs every logit. This file
holds the plain-torch op (which still materializes the logits once); the fused backends provide the
same signature and never write the logits to memory.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..functional import softplus


def check_bernoulli_linear_inputs(h, weight, bias, x):
    if h.dim() != 3:
        raise ValueError(f"h must be (N, C, H), got shape {tuple(h.shape)}")
    n, _, hidden = h.shape
    if weight.dim() != 2 or weight.shape[1] != hidden:
        raise ValueError(f"weight must be (D, H) with H = {hidden}, got {tuple(weight.shape)}")
    d = weight.shape[0]
    if bias is not None and bias.shape != (d,):
        raise ValueError(f"bias must be (D,) = ({d},), got {tuple(bias.shape)}")
    if x.shape != (n, d):
        raise ValueError(f"x must be (N, D) = {(n, d)}, got {tuple(x.shape)}")


def bernoulli_loglik_linear_torch(h: torch.Tensor, weight: torch.Tensor, bias, x: torch.Tensor) -> torch.Tensor:
    """h: (N, C, H), weight: (D, H), bias: (D,) or None, x: (N, D) -> ll (N, C)."""
    check_bernoulli_linear_inputs(h, weight, bias, x)
    logits = F.linear(h, weight, bias)  # (N, C, D)
    x_w = x @ weight  # (N, H): W^T x once per example, shared by its C rows
    x_logits = (h * x_w.unsqueeze(1)).sum(-1)
    if bias is not None:
        x_logits = x_logits + (x @ bias).unsqueeze(1)
    return x_logits - softplus(logits).sum(-1)
