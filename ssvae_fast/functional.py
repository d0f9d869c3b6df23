"""Elementwise building blocks shared by the reference and every backend's plain-torch path.

Every function here is exact (no thresholds) and numerically stable for any finite input, so that the
backends can be compared with the reference to the last few ulps in float64.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

ACTIVATIONS = ("softplus", "relu")


class _Softplus(torch.autograd.Function):
    """Exact softplus forward in one kernel; backward g * sigmoid(x) (autograd's own derivative of
    logaddexp would take several elementwise passes)."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return torch.logaddexp(x, x.new_zeros(()))

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * torch.sigmoid(x)


def softplus(x: torch.Tensor) -> torch.Tensor:
    """log(1 + exp(x)) = max(x, 0) + log1p(exp(-|x|)), exact for every finite x; derivative sigmoid(x).

    (`torch.nn.functional.softplus` switches to the identity above x = 20, an error of up to 2e-9 that
    float64 comparisons would see.)
    """
    return _Softplus.apply(x)


def activation_fn(name: str):
    """The hidden-layer nonlinearity called `name` ("softplus" or "relu")."""
    if name == "softplus":
        return softplus
    if name == "relu":
        return F.relu
    raise ValueError(f"unknown activation {name!r}; choose one of {ACTIVATIONS}")


def bernoulli_loglik(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """sum_d [x_d * l_d - softplus(l_d)] over the last dimension; logits and x broadcast."""
    return (x * logits - softplus(logits)).sum(-1)


def gaussian_loglik(mean: torch.Tensor, logvar: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """sum_d log N(x_d; mean_d, exp(logvar_d)) over the last dimension; mean, logvar and x broadcast."""
    return -0.5 * ((x - mean).square() * torch.exp(-logvar) + logvar + math.log(2.0 * math.pi)).sum(-1)


LIKELIHOODS = ("bernoulli", "gaussian")


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)) = 0.5 * sum_k [mu^2 + exp(logvar) - 1 - logvar], last dim."""
    return 0.5 * (mu.square() + logvar.exp() - 1.0 - logvar).sum(-1)


def log_n_classes(n_classes: int) -> float:
    """-log p(y) for the uniform prior over `n_classes` classes."""
    return math.log(n_classes)
