"""The M2 objective in its naive formulation: the oracle every backend is checked against.

This is docs/design.md section 1 written the way the well-known implementations write it: each unlabelled
x is repeated once per class, the one-hot class vectors are concatenated to the inputs of the encoder
and the decoder, and the (n_u * C, D) decoder logits are materialized. It is deliberately never
optimized; its only job is to be obviously right.

For one example x and one class y, with z = mu + exp(logvar / 2) * eps:

    L(x, y)   = -sum_d [x_d l_d - softplus(l_d)] + 0.5 sum_k [mu_k^2 + exp(logvar_k) - 1 - logvar_k] + log C
    l_lab     = L(x, y) - alpha * log q(y|x)
    l_unl     = sum_c q(c|x) L(x, c) + sum_c q(c|x) log q(c|x)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .functional import bernoulli_loglik, gaussian_kl, gaussian_loglik, log_n_classes


def negative_elbo(model, x: torch.Tensor, y_onehot: torch.Tensor, eps: torch.Tensor, kl_weight: float = 1.0):
    """L(x, y) = -log p(x|y,z) + KL(q(z|x,y) || p(z)) - log p(y), one row per (x, y) pair (the KL times
    kl_weight during a warm-up). log p(x|y,z) is the decoder's likelihood: Bernoulli, or Gaussian with its
    learned log-variance.

    x: (N, D), y_onehot: (N, C) float, eps: (N, z_dim) -> (N,)
    """
    mu, logvar = model.encoder(x, y_onehot)
    z = mu + torch.exp(0.5 * logvar) * eps
    out = model.decoder(z, y_onehot)
    if model.decoder.likelihood == "gaussian":
        ll = gaussian_loglik(out, model.decoder.logvar, x)
    else:
        ll = bernoulli_loglik(out, x)
    return -ll + kl_weight * gaussian_kl(mu, logvar) + log_n_classes(y_onehot.shape[-1])


def labelled_losses(model, x_l, y_l, eps_l, alpha: float, kl_weight: float = 1.0, c_l=None) -> torch.Tensor:
    """l_lab(x, y) = L(x, y) - alpha * log q(y|x). x_l (n_l, D), y_l (n_l,) int64, eps_l (n_l, Z); c_l: what the
    classifier reads instead of x_l (None: x_l)."""
    n_classes = model.n_classes
    y_onehot = F.one_hot(y_l, n_classes).to(x_l.dtype)
    log_q = torch.log_softmax(model.classifier(x_l if c_l is None else c_l), dim=-1)
    log_q_y = (log_q * y_onehot).sum(-1)
    return negative_elbo(model, x_l, y_onehot, eps_l, kl_weight) - alpha * log_q_y


def unlabelled_losses(model, x_u, eps_u, kl_weight: float = 1.0, c_u=None) -> torch.Tensor:
    """l_unl(x) = sum_c q(c|x) L(x, c) + sum_c q(c|x) log q(c|x). x_u (n_u, D), eps_u (n_u, C, Z); c_u: what the
    classifier reads instead of x_u (None: x_u)."""
    n_u, n_classes = x_u.shape[0], model.n_classes
    x_rep = x_u.repeat_interleave(n_classes, dim=0)  # (n_u*C, D): x_0 C times, then x_1, ...
    y_rep = torch.eye(n_classes, dtype=x_u.dtype, device=x_u.device).repeat(n_u, 1)  # (n_u*C, C)
    neg_elbo = negative_elbo(model, x_rep, y_rep, eps_u.reshape(n_u * n_classes, eps_u.shape[-1]), kl_weight)
    neg_elbo = neg_elbo.view(n_u, n_classes)
    logits_y = model.classifier(x_u if c_u is None else c_u)
    q = torch.softmax(logits_y, dim=-1)
    log_q = torch.log_softmax(logits_y, dim=-1)
    return (q * neg_elbo).sum(-1) + (q * log_q).sum(-1)


def per_example_losses(model, x_l, y_l, x_u, eps_l, eps_u, alpha: float, kl_weight: float = 1.0,
                       classifier_inputs=None) -> torch.Tensor:
    """Labelled losses first, then unlabelled ones: (n_l + n_u,). Empty parts are (0, ...) tensors.
    classifier_inputs: (c_l, c_u), what the classifier reads instead of x_l and x_u (None: x)."""
    c_l, c_u = classifier_inputs or (None, None)
    return torch.cat([labelled_losses(model, x_l, y_l, eps_l, alpha, kl_weight, c_l),
                      unlabelled_losses(model, x_u, eps_u, kl_weight, c_u)])


def relaxed_class(logits_y: torch.Tensor, gumbel: torch.Tensor, temperature: float) -> torch.Tensor:
    """The Gumbel-softmax relaxed one-hot class: softmax((log q(y|x) + gumbel) / T)."""
    return torch.softmax((torch.log_softmax(logits_y, dim=-1) + gumbel) / temperature, dim=-1)


def unlabelled_losses_relaxed(model, x_u, eps_u, gumbel, temperature: float, kl_weight: float = 1.0, c_u=None):
    """The Gumbel-softmax estimator of l_unl: L(x, y) + sum_c q(c|x) log q(c|x) at one relaxed class
    y = softmax((log q(y|x) + gumbel) / T). x_u (n_u, D), eps_u (n_u, Z), gumbel (n_u, C); c_u as in
    `unlabelled_losses`."""
    logits_y = model.classifier(x_u if c_u is None else c_u)
    y = relaxed_class(logits_y, gumbel, temperature)
    q, log_q = torch.softmax(logits_y, dim=-1), torch.log_softmax(logits_y, dim=-1)
    return negative_elbo(model, x_u, y, eps_u, kl_weight) + (q * log_q).sum(-1)


def per_example_losses_relaxed(model, x_l, y_l, x_u, eps_l, eps_u, gumbel, temperature: float, alpha: float,
                               kl_weight: float = 1.0, classifier_inputs=None) -> torch.Tensor:
    """`per_example_losses` with the Gumbel-softmax estimator of the unlabelled term."""
    c_l, c_u = classifier_inputs or (None, None)
    return torch.cat([labelled_losses(model, x_l, y_l, eps_l, alpha, kl_weight, c_l),
                      unlabelled_losses_relaxed(model, x_u, eps_u, gumbel, temperature, kl_weight, c_u)])
