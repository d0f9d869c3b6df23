"""Shared model and batch factories for tests (benchmarks have their own in benchmarks/conftest.py)."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch

from ssvae_fast import M2


def make_model(D, C, Z, H, *, activation="softplus", dtype=torch.float32, hidden_layers=1, seed=0, device="cpu",
               likelihood="bernoulli"):
    """An M2 with `hidden_layers` hidden layers of size H in every network, weights perturbed so biases
    and class columns (and the Gaussian log-variance) are not near zero (gradients of every parameter are
    then exercised)."""
    torch.manual_seed(seed)
    model = M2(D, C, Z, hidden=(H,) * hidden_layers, activation=activation, likelihood=likelihood)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model.to(device=device, dtype=dtype)


@dataclass
class Batch:
    x_l: torch.Tensor
    y_l: torch.Tensor
    x_u: torch.Tensor
    eps_l: torch.Tensor
    eps_u: torch.Tensor

    def args(self):
        """Positional arguments of `per_example_losses(model, x_l, y_l, x_u, eps_l, eps_u)`."""
        return self.x_l, self.y_l, self.x_u, self.eps_l, self.eps_u

    def to(self, dtype=None, device=None):
        conv = lambda t: t.to(device=device, dtype=dtype) if t.is_floating_point() else t.to(device=device)  # noqa: E731
        return Batch(*(conv(t) for t in self.args()))


def make_batch(model, n_l, n_u, *, dtype=torch.float32, seed=0, device="cpu") -> Batch:
    """Inputs in [0, 1] (not binary, so x enters every term), labels covering the classes, explicit noise."""
    g = torch.Generator().manual_seed(seed)
    D, C, Z = model.x_dim, model.n_classes, model.z_dim
    x_l = torch.rand(n_l, D, generator=g, dtype=torch.float64)
    y_l = torch.randint(0, C, (n_l,), generator=g)
    x_u = torch.rand(n_u, D, generator=g, dtype=torch.float64)
    eps_l = torch.randn(n_l, Z, generator=g, dtype=torch.float64)
    eps_u = torch.randn(n_u, C, Z, generator=g, dtype=torch.float64)
    return Batch(x_l, y_l, x_u, eps_l, eps_u).to(dtype=dtype, device=device)


def cast_model(model, dtype):
    """A deep copy of `model` in `dtype` (same weights, rounded)."""
    return copy.deepcopy(model).to(dtype)
