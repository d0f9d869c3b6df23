"""`M1`: the plain VAE of Kingma et al. (NIPS 2014), its bounds in nats, and its latent features for M1+M2.

    q(z|x) = N(mu(x), diag(exp(logvar(x))))     p(z) = N(0, I)     p(x|z) Bernoulli (or Gaussian)

    loss:   -ELBO(x) = -E_q[log p(x|z)] + KL(q(z|x) || p(z)), one sample of z per example (K with
            n_samples), the KL weighted during a warm-up
    bound:  log p(x) >= log (1/K) sum_k p(x, z_k) / q(z_k|x), z_k ~ q(z|x)  (importance weighted; K = 1 is
            the ELBO)

The fused ops serve M1 as they serve M2: `gaussian_reparam_kl` draws z and its KL in one pass, and the
decoder's output layer with its log-likelihood is one op. The importance-weighted bound scores the K
samples of an image against the same x with the every-class form of that op (K samples play the part of
M2's C classes: x is read once per example, the K x D logits are never kept).
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
from torch import nn

from . import backends, saving, validation
from .functional import ACTIVATIONS, LIKELIHOODS, gaussian_kl
from .networks import Decoder, Encoder
from .objective import output_log_likelihood

CHECKPOINT_FORMAT = "ssvae_fast.M1/1"
REDUCTIONS = ("mean", "sum", "none")


class M1(nn.Module):
    """The VAE M1: encoder q(z|x), decoder p(x|z), prior N(0, I).

    Args:
        x_dim: D. z_dim: the latent size.
        hidden: hidden layer sizes of the encoder and the decoder (`encoder_hidden`, `decoder_hidden`
            override it per network; each needs at least one layer).
        activation: "softplus" (default) or "relu".
        likelihood: "bernoulli" (default; inputs in [0, 1]) or "gaussian" (learned per-dimension variance).
        backend: "auto", "reference", "torch", "triton", "cuda" or "cpu", as for `M2`.

    Example:
        >>> m1 = M1(784, 50, hidden=(600, 600))
        >>> m1.loss(x).backward()
        >>> features = m1.features(x)                      # z ~ q(z|x), for M2 (M1+M2)
        >>> m1.log_likelihood(x_test, n_samples=5000)      # importance-weighted bound, nats per image
    """

    def __init__(self, x_dim: int, z_dim: int, hidden: Sequence[int] = (500,), activation: str = "softplus",
                 likelihood: str = "bernoulli", backend: str = "auto", *,
                 encoder_hidden: Optional[Sequence[int]] = None, decoder_hidden: Optional[Sequence[int]] = None):
        super().__init__()
        where = "M1"
        x_dim = validation.positive_int(where, "x_dim", x_dim)
        z_dim = validation.positive_int(where, "z_dim", z_dim)
        validation.choice(where, "activation", activation, ACTIVATIONS)
        validation.choice(where, "likelihood", likelihood, LIKELIHOODS)
        hidden = validation.sizes(where, "hidden", hidden, allow_empty=True)
        sizes = {}
        for network, override in (("encoder", encoder_hidden), ("decoder", decoder_hidden)):
            name, value = (f"{network}_hidden", override) if override is not None else ("hidden", hidden)
            sizes[network] = validation.sizes(where, name, value, allow_empty=False,
                                              what=f" (the {network} needs at least one hidden layer)")
        self.backend = backend
        self.x_dim, self.z_dim, self.likelihood, self.activation = int(x_dim), int(z_dim), likelihood, activation
        self.encoder = Encoder(x_dim, 0, z_dim, sizes["encoder"], activation)
        self.decoder = Decoder(x_dim, 0, z_dim, sizes["decoder"], activation, likelihood)
        self._config = dict(x_dim=x_dim, z_dim=z_dim, hidden=list(hidden), activation=activation,
                            likelihood=likelihood,
                            encoder_hidden=None if encoder_hidden is None else list(sizes["encoder"]),
                            decoder_hidden=None if decoder_hidden is None else list(sizes["decoder"]))

    @property
    def backend(self) -> str:
        return self._backend

    @backend.setter
    def backend(self, name: str):
        self._backend = validation.choice("M1", "backend", name, ("auto",) + backends.BACKENDS)

    @property
    def config(self) -> dict:
        """The constructor's arguments except `backend`."""
        return dict(self._config)

    def resolved_backend(self, device: Optional[torch.device] = None) -> str:
        if device is None:
            device = self.encoder.input.weight.device
        return backends.resolve(self._backend, torch.device(device))

    def save(self, path) -> None:
        saving.save(self, path, CHECKPOINT_FORMAT)

    @classmethod
    def load(cls, path, *, backend: str = "auto", map_location="cpu") -> "M1":
        """The model `M1.save` wrote (read with torch.load(weights_only=True))."""
        return saving.load(cls, path, CHECKPOINT_FORMAT, lambda config: cls(**config, backend=backend), map_location)

    # ------------------------------------------------------------------ networks

    def _head(self, x: torch.Tensor) -> torch.Tensor:
        """The encoder's output [mu, logvar], (N, 2Z)."""
        enc = self.encoder
        return enc.head(enc.run_hidden_layers(enc._act(enc.input(x))))

    def _decoder_hidden(self, z: torch.Tensor) -> torch.Tensor:
        dec = self.decoder
        return dec.run_hidden_layers(dec._act(dec.input(z)))

    def _logvar(self):
        return self.decoder.logvar if self.likelihood == "gaussian" else None

    def _check_x(self, x, where: str) -> torch.Tensor:
        check = validation.unit_interval if self.likelihood == "bernoulli" else validation.finite
        return validation.model_inputs(where, x, self.x_dim, self.encoder.input.weight, check)

    # ------------------------------------------------------------------ objective

    def per_example_terms(self, x: torch.Tensor, eps: torch.Tensor) -> tuple:
        """(log p(x|z) (N,), KL(q(z|x) || p(z)) (N,)) for z = mu + exp(logvar / 2) eps, eps (N, Z)."""
        name = self.resolved_backend(x.device)
        head = self._head(x)
        if name == "reference":
            mu, logvar = head.chunk(2, dim=-1)
            z = mu + torch.exp(0.5 * logvar) * eps
            return self.decoder.log_likelihood(self.decoder.output(self._decoder_hidden(z)), x), gaussian_kl(mu, logvar)
        ops = backends.get_ops(name)
        z, kl = ops.gaussian_reparam_kl(head, eps)
        out = self.decoder.output
        # Every row is its own example: the rows layout with n_labelled = N.
        ll = output_log_likelihood(ops, out.weight, out.bias, self._logvar(), self._decoder_hidden(z), x, x.shape[0])
        return ll, kl

    def loss(self, x: torch.Tensor, *, eps: Optional[torch.Tensor] = None, kl_weight: float = 1.0,
             n_samples: int = 1, reduction: str = "mean", generator: Optional[torch.Generator] = None):
        """-ELBO per example (log p(x|z) - kl_weight * KL, negated), averaged over `n_samples` draws of z;
        reduced by `reduction` ("mean", "sum" or "none"). eps: (n_samples * N, Z) explicit noise, draw k of
        example i at row i K + k; drawn from `generator` when None."""
        where = "M1.loss"
        x = self._check_x(x, where)
        validation.choice(where, "reduction", reduction, REDUCTIONS)
        kl_weight = validation.alpha(where, kl_weight, name="kl_weight")
        K = validation.positive_int(where, "n_samples", n_samples)
        n = x.shape[0]
        eps = self._noise(eps, (K * n, self.z_dim), x, generator, where)
        ll, kl = self.per_example_terms(x.repeat_interleave(K, 0) if K > 1 else x, eps)
        losses = (kl_weight * kl - ll).view(n, K).mean(1)
        if reduction == "none":
            return losses
        return losses.sum() if reduction == "sum" else losses.mean()

    def _noise(self, eps, shape, x, generator, where):
        if eps is None:
            return torch.randn(shape, dtype=x.dtype, device=x.device, generator=generator)
        validation.tensor(where, "eps", eps)
        if tuple(eps.shape) != shape:
            validation.fail(where, "eps", f"a {shape} tensor (n_samples * N, z_dim)", validation.describe(eps))
        return eps.to(x.dtype)

    # ------------------------------------------------------------------ bounds in nats

    @torch.no_grad()
    def elbo(self, x: torch.Tensor, *, n_samples: int = 1, generator: Optional[torch.Generator] = None):
        """The ELBO of each image in nats, (B,), averaged over `n_samples` draws of z."""
        return -self.loss(x, n_samples=n_samples, reduction="none", generator=generator)

    @torch.no_grad()
    def log_likelihood(self, x: torch.Tensor, *, n_samples: int = 5000, sample_chunk: int = 500,
                       batch_size: int = 100, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """The importance-weighted bound on log p(x) with K = n_samples samples of q(z|x), in nats, (B,):
        log (1/K) sum_k p(x|z_k) p(z_k) / q(z_k|x). Computed `sample_chunk` samples and `batch_size` images at
        a time (a running log-sum-exp), the K samples of an image scored against its x by the every-class
        form of the log-likelihood op."""
        where = "M1.log_likelihood"
        x = self._check_x(x, where)
        K = validation.positive_int(where, "n_samples", n_samples)
        chunk = validation.positive_int(where, "sample_chunk", sample_chunk)
        name = self.resolved_backend(x.device)
        ops = backends.get_ops("torch" if name == "reference" else name)
        out = self.decoder.output
        parts = []
        for start in range(0, x.shape[0], batch_size):
            xb = x[start : start + batch_size]
            mu, logvar = self._head(xb).chunk(2, dim=-1)
            total = torch.full((xb.shape[0],), -math.inf, dtype=torch.float64, device=x.device)
            for k0 in range(0, K, chunk):
                k = min(chunk, K - k0)
                eps = torch.randn(xb.shape[0], k, self.z_dim, dtype=x.dtype, device=x.device, generator=generator)
                z = mu.unsqueeze(1) + torch.exp(0.5 * logvar).unsqueeze(1) * eps  # (B, k, Z)
                ll = output_log_likelihood(ops, out.weight, out.bias, self._logvar(), self._decoder_hidden(z), xb)
                # log p(z) - log q(z|x): the log 2 pi terms cancel
                log_ratio = -0.5 * (z.square() - eps.square()).sum(-1) + 0.5 * logvar.sum(-1, keepdim=True)
                total = torch.logaddexp(total, torch.logsumexp((ll + log_ratio).double(), dim=1))
            parts.append(total - math.log(K))
        return torch.cat(parts).to(x.dtype)

    # ------------------------------------------------------------------ features and pictures

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> tuple:
        """(mu, logvar) of q(z|x), each (B, z_dim)."""
        return self._head(self._check_x(x, "M1.encode")).chunk(2, dim=-1)

    @torch.no_grad()
    def features(self, x: torch.Tensor, *, sample: bool = True, generator: Optional[torch.Generator] = None):
        """M1's latent features of x, (B, z_dim): a draw z ~ q(z|x) (what M1+M2 trains M2 on, re-drawn every
        batch), or the mean mu when `sample` is False (what M1+M2 classifies)."""
        mu, logvar = self._head(x).chunk(2, dim=-1)
        if not sample:
            return mu
        eps = torch.randn(mu.shape, dtype=mu.dtype, device=mu.device, generator=generator)
        return mu + torch.exp(0.5 * logvar) * eps

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """E[x|z], (B, x_dim)."""
        return self.decoder.mean(self.decoder.output(self._decoder_hidden(z)))

    @torch.no_grad()
    def sample(self, n: int, *, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """n images E[x|z], z ~ N(0, I)."""
        weight = self.encoder.input.weight
        z = torch.randn(n, self.z_dim, device=weight.device, dtype=weight.dtype, generator=generator)
        return self.decode(z)

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """E[x|z = mu(x)], (B, x_dim)."""
        return self.decode(self.encode(x)[0])
