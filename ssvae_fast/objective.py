"""M2's objective through the exact rewrites of docs/design.md section 2, assembled from four fused ops.

The ops come from a backend (`ssvae_fast.backends.BackendOps`): plain torch for `torch`, Triton or
C++/CUDA kernels for the others. The weights come as arguments (`ObjectiveWeights`, which
`M2.objective_weights()` builds from its networks): this module knows nothing of the networks. The
arithmetic is the reference's, reorganized:

1. one-hot factorization: the encoder's first layer is `W_x x + b` once per example plus a class
   column `W_y[:, c]`; the decoder's first layer is `W_z z + b` plus the class column of its row;
2. shared x: the C unlabelled rows of an example are scored against the same x;
3. the decoder's last layer and the log-likelihood (Bernoulli, or Gaussian) form one op;
4. reparameterization and KL form one op; 5. the ELBO reduction is one op.

Labelled examples (one class each, n_l rows) and unlabelled ones (every class, n_u * C rows) go through
the encoder and the decoder as one batch of R = n_l + n_u * C rows, labelled rows first: the
class-conditional op takes the labels of the first n_l examples and enumerates the classes of the rest,
and the Bernoulli op scores each row against its example's x. Every GEMM and op runs once per step on R
rows (two streams would double the small calls: on the CPU each pays a cold-cache penalty after the large
GEMMs), and nothing of size (rows, H) or (rows, D) is concatenated, forward or backward. The per-row
log-likelihoods and KLs are split (views) into their labelled and unlabelled parts for the ELBO reduction.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from .functional import activation_fn


@dataclass(frozen=True)
class ObjectiveWeights:
    """What the objective needs of M2's networks, first layers split into input and class columns.

    classifier: x (n, D), or what it reads instead (`classifier_inputs`) -> logits_y (n, C)
    enc_input (H_e, D), enc_columns (H_e, C): the encoder's first layer, W_y + b folded into the columns
    enc_rest: the encoder's hidden layers after the first, then its head -> [mu, logvar] (rows, 2Z)
    dec_input (H_d, Z), dec_columns (H_d, C): the decoder's first layer, likewise
    dec_hidden: the decoder's hidden layers after the first
    out_weight (D, H_d), out_bias (D,) or None: the decoder's output layer
    out_logvar (D,) or None: the Gaussian likelihood's log-variance (None: the Bernoulli likelihood)
    enc_activation, dec_activation: the first layers' activations ("softplus" or "relu")
    """

    classifier: Callable[[Tensor], Tensor]
    enc_input: Tensor
    enc_columns: Tensor
    enc_rest: Callable[[Tensor], Tensor]
    enc_activation: str
    dec_input: Tensor
    dec_columns: Tensor
    dec_hidden: Callable[[Tensor], Tensor]
    dec_activation: str
    out_weight: Tensor
    out_bias: Tensor | None
    out_logvar: Tensor | None = None


def per_example_losses(ops, weights: ObjectiveWeights, x_l, y_l, x_u, eps_l, eps_u, alpha: float,
                       kl_weight: float = 1.0, classifier_inputs=None) -> Tensor:
    """Per-example losses (n_l + n_u,), labelled first; same contract as `reference.per_example_losses`."""
    w = weights
    n_l, n_u = x_l.shape[0], x_u.shape[0]
    n_classes, z_dim = w.enc_columns.shape[1], w.dec_input.shape[1]

    x_all = _labelled_first(x_l, x_u)
    logits_y = w.classifier(x_all if classifier_inputs is None else _labelled_first(*classifier_inputs))

    # Rows: labelled example i (class y_i) for i < n_l, then (j, c) for unlabelled example j and class c.
    # First layers: W_v v once per row of v; the class column plus the bias, W_y[:, c] + b, is added by the op.
    h = ops.class_conditional_activation(x_all @ w.enc_input.t(), w.enc_columns, y_l, w.enc_activation)
    head = w.enc_rest(h)
    eps_rows = eps_u.reshape(n_u * n_classes, z_dim)
    eps = _labelled_first(eps_l, eps_rows)
    z, kl = ops.gaussian_reparam_kl(head, eps)
    classes = torch.arange(n_classes, device=x_all.device).repeat(n_u)
    classes = torch.cat([y_l, classes]) if n_l else classes
    h_dec = ops.class_conditional_activation(z @ w.dec_input.t(), w.dec_columns, classes, w.dec_activation)
    ll = log_likelihood(ops, w, w.dec_hidden(h_dec), x_all, n_l)
    if kl_weight != 1.0:  # KL warm-up: the KL term weighted, every backend's reduction unchanged
        kl = kl * kl_weight
    ll_l, ll_u = ll[:n_l], ll[n_l:].view(n_u, n_classes)
    kl_l, kl_u = kl[:n_l], kl[n_l:].view(n_u, n_classes)
    return ops.elbo_reduction(logits_y, y_l, ll_l, kl_l, ll_u, kl_u, alpha)


def per_example_losses_relaxed(ops, weights: ObjectiveWeights, x_l, y_l, x_u, eps_l, eps_u, gumbel, temperature: float,
                               alpha: float, kl_weight: float = 1.0, classifier_inputs=None) -> Tensor:
    """Per-example losses (n_l + n_u,) with the Gumbel-softmax estimator of the unlabelled term: one row per
    example. An unlabelled example's class is the relaxed one-hot y = softmax((log q(y|x) + gumbel) / T),
    differentiable in the classifier, and its loss is L(x, y) + sum_c q(c|x) log q(c|x) (one decoder pass
    instead of C). Labelled rows take their class through the class-conditional op, unlabelled rows the
    relaxed vector through a dense product with the same class columns (sum_c y_c (W_y[:, c] + b) =
    W_y y + b); the reparameterization, the log-likelihood and the reduction are the backend's fused ops.
    eps_u: (n_u, Z); gumbel: (n_u, C). Same contract as `reference.per_example_losses_relaxed`."""
    w = weights
    n_l, n_u = x_l.shape[0], x_u.shape[0]
    n_classes = w.enc_columns.shape[1]
    x_all = _labelled_first(x_l, x_u)
    logits_y = w.classifier(x_all if classifier_inputs is None else _labelled_first(*classifier_inputs))
    y_soft = torch.softmax((torch.log_softmax(logits_y[n_l:], dim=-1) + gumbel) / temperature, dim=-1)

    def first_layer(a, columns, activation):
        rows = [ops.class_conditional_activation(a[:n_l], columns, y_l, activation)] if n_l else []
        if n_u:
            rows.append(activation_fn(activation)(a[n_l:] + y_soft @ columns.t()))
        return torch.cat(rows) if len(rows) == 2 else rows[0]

    h = first_layer(x_all @ w.enc_input.t(), w.enc_columns, w.enc_activation)
    eps = _labelled_first(eps_l, eps_u)
    z, kl = ops.gaussian_reparam_kl(w.enc_rest(h), eps)
    h_dec = first_layer(z @ w.dec_input.t(), w.dec_columns, w.dec_activation)
    ll = log_likelihood(ops, w, w.dec_hidden(h_dec), x_all, x_all.shape[0])  # one row per example
    if kl_weight != 1.0:
        kl = kl * kl_weight
    # sum_c q(c|x) L = L for an L that does not depend on c: the reduction's unlabelled form, L repeated C times
    ll_u, kl_u = (t[n_l:].unsqueeze(1).expand(n_u, n_classes) for t in (ll, kl))
    return ops.elbo_reduction(logits_y, y_l, ll[:n_l], kl[:n_l], ll_u, kl_u, alpha)


def log_likelihood(ops, w: ObjectiveWeights, h: Tensor, x: Tensor, n_labelled: int) -> Tensor:
    """The decoder's output layer and its log-likelihood on rows h (`output_log_likelihood`)."""
    return output_log_likelihood(ops, w.out_weight, w.out_bias, w.out_logvar, h, x, n_labelled)


def output_log_likelihood(ops, weight: Tensor, bias, logvar, h: Tensor, x: Tensor, n_labelled: int = 0) -> Tensor:
    """A decoder's output layer (weight, bias) and its log-likelihood as one fused op: Bernoulli, or Gaussian
    with the per-dimension log-variance `logvar` when it is not None. h: rows in the ops' layouts ((N, C, H)
    every class, or (M, H) rows with n_labelled examples first)."""
    if logvar is None:
        return ops.bernoulli_loglik_linear(h, weight, bias, x, n_labelled)
    return ops.gaussian_loglik_linear(h, weight, bias, logvar, x, n_labelled)


def _labelled_first(labelled: Tensor, unlabelled: Tensor) -> Tensor:
    """The labelled part's rows, then the unlabelled part's (no copy when one part is empty)."""
    if labelled.shape[0] and unlabelled.shape[0]:
        return torch.cat([labelled, unlabelled])
    return labelled if labelled.shape[0] else unlabelled
