"""Kingma et al.'s M2 written as a Pyro program, on the networks of an `ssvae_fast.M2`.

This is what users pick today (Pyro's SS-VAE example): `TraceEnum_ELBO` with the class y enumerated in
parallel in the guide for unlabelled rows, plus an alpha-weighted classification loss on labelled rows.
It is built from the *same* `M2` instance's classifier, encoder and decoder modules, so parameters and
useful FLOPs match the other providers; only the way the objective is evaluated differs:

    model(x, y=None)   with plate: z ~ N(0, I); y ~ Categorical(uniform) (observed when labelled);
                                   x ~ Bernoulli(logits=decoder(z, onehot(y)))
    guide(x, y=None)   with plate: y ~ Categorical(logits=classifier(x)), enumerated in parallel when
                                   unlabelled; z ~ N(mu, exp(logvar / 2)), (mu, logvar) = encoder(x, onehot(y))
    classify(x, y)     with plate, scaled by alpha: y ~ Categorical(logits=classifier(x)), observed

Under parallel enumeration y has shape (C, 1), so the encoder and the decoder see x and z broadcast to
(C, n_u, .): the naive formulation (x repeated C times, one-hot concatenated), as in Pyro's example.

Differences from `M2.loss`, all inherent to Pyro and stated in the benchmark report: the KL term is the
Monte Carlo estimate log q(z|x,y) - log p(z) rather than the closed form (same expectation), and the
noise is drawn by Pyro rather than passed in. The loss is divided by n_l + n_u like `M2.loss(reduction="mean")`;
tests/test_bench.py checks that both agree in expectation. Pyro's argument validation is switched off
inside `loss` (it would add checks and host syncs users can also switch off).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

import pyro
import pyro.distributions as dist
from pyro import poutine
from pyro.infer import Trace_ELBO, TraceEnum_ELBO


def _broadcast_leading(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Expand a (..., m) and b (..., n) to a common leading shape (views, no copies)."""
    lead = torch.broadcast_shapes(a.shape[:-1], b.shape[:-1])
    return a.expand(*lead, a.shape[-1]), b.expand(*lead, b.shape[-1])


class PyroM2:
    """M2 as Pyro model and guide over `m2`'s networks.

    Args:
        m2: an `ssvae_fast.M2`; its classifier, encoder and decoder are used as they are (no copies).
        alpha: weight of -log q(y|x) per labelled example, as in `M2.loss`.
    """

    def __init__(self, m2, alpha: float):
        self.m2 = m2
        self.alpha = float(alpha)
        self.n_classes, self.z_dim = m2.n_classes, m2.z_dim
        self.elbo = TraceEnum_ELBO(max_plate_nesting=1, strict_enumeration_warning=False)
        self.classify_elbo = Trace_ELBO(max_plate_nesting=1)

    def _onehot(self, y: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return F.one_hot(y, self.n_classes).to(like.dtype)

    def model(self, xs: torch.Tensor, ys: torch.Tensor | None = None) -> None:
        """p(x, y, z) = p(x | y, z) p(y) p(z); xs (n, D) in [0, 1], ys (n,) int64 or None."""
        n = xs.shape[0]
        with pyro.plate("data", n):
            prior = dist.Normal(xs.new_zeros(n, self.z_dim), xs.new_ones(n, self.z_dim))
            zs = pyro.sample("z", prior.to_event(1))
            ys = pyro.sample("y", dist.Categorical(logits=xs.new_zeros(n, self.n_classes)), obs=ys)
            zs, onehot = _broadcast_leading(zs, self._onehot(ys, xs))
            logits = self.m2.decoder(zs, onehot)
            pyro.sample("x", dist.Bernoulli(logits=logits).to_event(1), obs=xs)

    def guide(self, xs: torch.Tensor, ys: torch.Tensor | None = None) -> None:
        """q(y | x) q(z | x, y); y enumerated in parallel when not observed."""
        n = xs.shape[0]
        with pyro.plate("data", n):
            if ys is None:
                q_y = dist.Categorical(logits=self.m2.classifier(xs))
                ys = pyro.sample("y", q_y, infer={"enumerate": "parallel"})
            x_b, onehot = _broadcast_leading(xs, self._onehot(ys, xs))
            mu, logvar = self.m2.encoder(x_b, onehot)
            pyro.sample("z", dist.Normal(mu, torch.exp(0.5 * logvar)).to_event(1))

    def model_classify(self, xs: torch.Tensor, ys: torch.Tensor) -> None:
        """alpha * -log q(y | x) on labelled rows, as the auxiliary loss of Pyro's SS-VAE example."""
        with pyro.plate("data", xs.shape[0]), poutine.scale(scale=self.alpha):
            pyro.sample("y_aux", dist.Categorical(logits=self.m2.classifier(xs)), obs=ys)

    def guide_classify(self, xs: torch.Tensor, ys: torch.Tensor) -> None:
        """The classification loss has no latent variables."""

    def loss(self, x_l: torch.Tensor, y_l: torch.Tensor, x_u: torch.Tensor) -> torch.Tensor:
        """Minus the M2 objective averaged over the n_l + n_u examples (a differentiable scalar)."""
        total = x_l.new_zeros(())
        with pyro.validation_enabled(False):
            if x_l.shape[0]:
                total = total + self.elbo.differentiable_loss(self.model, self.guide, x_l, y_l)
                total = total + self.classify_elbo.differentiable_loss(
                    self.model_classify, self.guide_classify, x_l, y_l
                )
            if x_u.shape[0]:
                total = total + self.elbo.differentiable_loss(self.model, self.guide, x_u)
        return total / (x_l.shape[0] + x_u.shape[0])
