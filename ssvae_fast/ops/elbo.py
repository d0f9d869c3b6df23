"""The classifier-weighted ELBO reduction of M2 (docs/design.md section 1).

Inputs are the per-(example, class) terms; output the per-example losses, labelled first:

    L            = -ll + kl + log C
    labelled     l_lab = L[y] - alpha * log_softmax(logits_y)[y]
    unlabelled   l_unl = sum_c q_c * (L_c + log q_c),  q = softmax(logits_y)

This file holds the plain-torch op; the fused backends provide the same signature.
"""

from __future__ import annotations

import torch

from ..functional import log_n_classes


def check_elbo_inputs(logits_y, y_l, ll_l, kl_l, ll_u, kl_u):
    if logits_y.dim() != 2:
        raise ValueError(f"logits_y must be (n_l + n_u, C), got {tuple(logits_y.shape)}")
    n_l = y_l.shape[0]
    n_u = ll_u.shape[0]
    n, c = logits_y.shape
    if n != n_l + n_u:
        raise ValueError(f"logits_y has {n} rows but n_l + n_u = {n_l} + {n_u}")
    if ll_l.shape != (n_l,) or kl_l.shape != (n_l,):
        raise ValueError(f"ll_l and kl_l must be ({n_l},), got {tuple(ll_l.shape)}, {tuple(kl_l.shape)}")
    if ll_u.shape != (n_u, c) or kl_u.shape != (n_u, c):
        raise ValueError(f"ll_u and kl_u must be {(n_u, c)}, got {tuple(ll_u.shape)}, {tuple(kl_u.shape)}")


def elbo_reduction_torch(logits_y, y_l, ll_l, kl_l, ll_u, kl_u, alpha: float) -> torch.Tensor:
    """logits_y: (n_l + n_u, C), labelled rows first; y_l: (n_l,) int64; ll_l, kl_l: (n_l,);
    ll_u, kl_u: (n_u, C); alpha: weight of -log q(y|x) -> per-example losses (n_l + n_u,)."""
    check_elbo_inputs(logits_y, y_l, ll_l, kl_l, ll_u, kl_u)
    n_l = y_l.shape[0]
    log_c = log_n_classes(logits_y.shape[1])
    log_q = torch.log_softmax(logits_y, dim=-1)
    log_q_y = log_q[:n_l].gather(1, y_l.unsqueeze(1)).squeeze(1)
    loss_l = kl_l - ll_l + log_c - alpha * log_q_y
    log_q_u = log_q[n_l:]
    loss_u = (log_q_u.exp() * (kl_u - ll_u + log_c + log_q_u)).sum(-1)
    return torch.cat([loss_l, loss_u])
