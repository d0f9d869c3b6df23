"""What an evaluation measures: accuracy, class consistency and the loss's terms.

    accuracy(model, x, y)            fraction of x whose predicted class is y
    class_consistency(model, x)      does the decoder use y? (1/C when it ignores it)
    loss_terms(model, x, y)          the objective's terms on labelled images treated as unlabelled
    evaluate_set(model, x, y)        all of the above in one dict
"""

from __future__ import annotations

import math
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from ..functional import gaussian_kl

#: The loss terms `loss_terms` reports, each a mean over the images.
TERMS = ("reconstruction", "kl", "classification", "entropy", "total")

#: Seed of the noise an evaluation draws (its own generator: the training generator is not touched).
EVAL_NOISE_SEED = 0


def _predict(net, x: torch.Tensor) -> torch.Tensor:
    """An M2's prediction, or a bare classifier network's argmax."""
    return net.predict(x) if hasattr(net, "predict") else net(x).argmax(dim=-1)


@torch.no_grad()
def accuracy(model, x: torch.Tensor, y: torch.Tensor, batch_size: int = 4096) -> float:
    """Fraction of x whose predicted class equals y (`model`: an M2, or a network giving logits)."""
    correct = 0
    for start in range(0, x.shape[0], batch_size):
        correct += int((_predict(model, x[start : start + batch_size]) == y[start : start + batch_size]).sum())
    return correct / max(1, x.shape[0])


@torch.no_grad()
def class_consistency(model, x: torch.Tensor, batch_size: int = 512) -> float:
    """How far the decoder follows y: each image's style (z = mu under its predicted class) is decoded
    under every class c (`model.style_transfer`), the decoded means are classified by the model's own
    classifier, and the result is the fraction of (image, c) pairs classified as c. Near 1: the class
    lives in y; near 1/C: the decoder ignores y and the class sits in z."""
    if x.shape[0] == 0:
        return float("nan")
    hits, C = 0, model.n_classes
    classes = torch.arange(C, device=x.device)
    for start in range(0, x.shape[0], batch_size):
        styles = model.style_transfer(x[start : start + batch_size])  # (B, C, D)
        predicted = model.predict(styles.reshape(-1, styles.shape[-1])).view(-1, C)
        hits += int((predicted == classes).sum())
    return hits / (x.shape[0] * C)


def term_sums(model, x_l, y_l, x_u, eps_l, eps_u) -> dict:
    """The objective's terms summed over a batch, in plain torch from the networks (docs/design.md
    section 1), so that a non-finite loss can be traced to its term:

        reconstruction  sum of -log p(x|y,z): labelled under their label, unlabelled weighted by q(c|x)
        kl              sum of KL(q(z|x,y) || p(z)), the same way
        classification  sum over the labelled of -log q(y|x)
        entropy         sum over the unlabelled of sum_c q(c|x) log q(c|x)

    M2.loss(reduction="sum") = reconstruction + kl + n log C + alpha * classification + entropy. For an
    M1M2 the terms are its M2's, on M1's mean features of the images."""
    classify = model.classifier  # images -> logits (an M1M2's, on its features or on the images)
    c_l, c_u = x_l, x_u
    if hasattr(model, "objective_view"):
        features = lambda x: None if x is None else model.objective_view(x)[1]  # noqa: E731
        x_l, x_u, model = features(x_l), features(x_u), model.m2
    zero = x_u.new_zeros(()) if x_u is not None else x_l.new_zeros(())
    out = {"reconstruction": zero, "kl": zero, "classification": zero, "entropy": zero}
    C = model.n_classes
    if x_l is not None and x_l.shape[0]:
        y = F.one_hot(y_l, C).to(x_l.dtype)
        rec, kl = _conditional_terms(model, x_l, y, eps_l)
        log_q = torch.log_softmax(classify(c_l), dim=-1)
        out["reconstruction"] = out["reconstruction"] + rec.sum()
        out["kl"] = out["kl"] + kl.sum()
        out["classification"] = -log_q.gather(1, y_l[:, None]).sum()
    if x_u is not None and x_u.shape[0]:
        n_u = x_u.shape[0]
        y = torch.eye(C, dtype=x_u.dtype, device=x_u.device).repeat(n_u, 1)
        rec, kl = _conditional_terms(model, x_u.repeat_interleave(C, dim=0), y, eps_u.reshape(n_u * C, -1))
        log_q = torch.log_softmax(classify(c_u), dim=-1)
        q = log_q.exp()
        out["reconstruction"] = out["reconstruction"] + (q * rec.view(n_u, C)).sum()
        out["kl"] = out["kl"] + (q * kl.view(n_u, C)).sum()
        out["entropy"] = (q * log_q).sum()
    return out


def _conditional_terms(model, x, y_onehot, eps):
    mu, logvar = model.encoder(x, y_onehot)
    z = mu + torch.exp(0.5 * logvar) * eps
    return -model.decoder.log_likelihood(model.decoder(z, y_onehot), x), gaussian_kl(mu, logvar)


@torch.no_grad()
def loss_terms(model, x: torch.Tensor, y: torch.Tensor, *, batch_size: int = 256,
               generator: Optional[torch.Generator] = None) -> dict:
    """The loss's terms on labelled held-out images, each a mean over the images (`TERMS`):
    reconstruction, kl and entropy as the objective scores the images unlabelled (labels unused),
    classification = mean -log q(y|x) with the true labels, and total = the unlabelled loss
    (reconstruction + kl + log C + entropy: `M2.loss(None, None, x)` on the same noise), an upper bound
    on -log p(x). Noise from `generator`, by default a fresh one seeded with `EVAL_NOISE_SEED`."""
    if generator is None:
        generator = torch.Generator(device=x.device).manual_seed(EVAL_NOISE_SEED)
    n = x.shape[0]
    if n == 0:
        return {name: float("nan") for name in TERMS}
    sums = dict.fromkeys(TERMS[:-1], 0.0)
    for start in range(0, n, batch_size):
        xb = x[start : start + batch_size]
        eps = torch.randn(xb.shape[0], model.n_classes, model.z_dim, dtype=xb.dtype, device=xb.device,
                          generator=generator)
        part = term_sums(model, None, None, xb, None, eps)
        log_q = torch.log_softmax(model.classifier(xb), dim=-1)
        part["classification"] = -log_q.gather(1, y[start : start + batch_size, None]).sum()
        for name in sums:
            sums[name] += float(part[name])
    out = {name: value / n for name, value in sums.items()}
    out["total"] = out["reconstruction"] + out["kl"] + math.log(model.n_classes) + out["entropy"]
    return out


def evaluate_set(model, x: torch.Tensor, y: torch.Tensor) -> dict:
    """accuracy, class_consistency and the `loss_terms` of `model` on (x, y)."""
    return {"accuracy": accuracy(model, x, y), "class_consistency": class_consistency(model, x),
            **loss_terms(model, x, y)}


def first_test_image_of_each_class(split) -> torch.Tensor:
    """(K, D): the first test image of each class that the test set holds, in class order."""
    picks = [int(np.flatnonzero(split.y_test == c)[0]) for c in range(split.n_classes) if (split.y_test == c).any()]
    return torch.as_tensor(split.x_test[picks])
