"""What an evaluation measures: class consistency and the loss's terms, against direct computations."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from ssvae_fast import M2
from ssvae_fast.training import class_consistency, loss_terms
from ssvae_fast.training.evaluate import term_sums


def _model(seed=0, backend="torch"):
    torch.manual_seed(seed)
    return M2(x_dim=16, n_classes=5, z_dim=3, hidden=(12,), backend=backend).double()


def _x(n, seed=1):
    return torch.rand(n, 16, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_class_consistency_is_the_fraction_of_decodings_classified_as_their_class():
    model, x = _model(), _x(23)
    with torch.no_grad():
        model.decoder.input.weight[:, 3:] *= 40.0  # make the decoder lean on y, so hits are not all-or-nothing
    hits = 0
    for image in x:  # the definition, one image and one class at a time
        y_hat = model.predict(image[None])
        mu, _ = model.encoder(image[None], F.one_hot(y_hat, 5).double())
        for c in range(5):
            decoded = torch.sigmoid(model.decoder(mu, F.one_hot(torch.tensor([c]), 5).double()))
            hits += int(model.predict(decoded)[0] == c)
    assert class_consistency(model, x, batch_size=7) == hits / (23 * 5)
    assert 0 < hits < 23 * 5


def test_class_consistency_of_a_decoder_that_ignores_y_is_one_over_c():
    model, x = _model(), _x(31)
    with torch.no_grad():
        model.decoder.input.weight[:, 3:] = 0.0  # the columns that read y
    assert class_consistency(model, x) == pytest.approx(1 / 5)


@pytest.mark.parametrize("backend", ["reference", "torch"])
def test_loss_terms_add_up_to_m2s_loss_on_the_same_noise(backend):
    model, x = _model(backend=backend), _x(19)
    y = torch.arange(19) % 5
    terms = loss_terms(model, x, y, batch_size=8, generator=torch.Generator().manual_seed(4))
    generator = torch.Generator().manual_seed(4)
    eps = torch.cat([torch.randn(n, 5, 3, dtype=torch.float64, generator=generator) for n in (8, 8, 3)])
    with torch.no_grad():
        unlabelled = model.loss(None, None, x, alpha=1.0, eps_u=eps)
        cross_entropy = F.cross_entropy(model.classifier(x), y)
    assert terms["total"] == pytest.approx(float(unlabelled), rel=1e-12)
    assert terms["classification"] == pytest.approx(float(cross_entropy), rel=1e-12)
    assert terms["entropy"] <= 0 and terms["kl"] >= 0 and terms["reconstruction"] > 0


def test_term_sums_rebuild_the_mixed_batch_loss():
    model, x = _model(), _x(9)
    x_l, y_l, x_u = x[:4], torch.tensor([0, 4, 2, 2]), x[4:]
    generator = torch.Generator().manual_seed(2)
    eps_l = torch.randn(4, 3, dtype=torch.float64, generator=generator)
    eps_u = torch.randn(5, 5, 3, dtype=torch.float64, generator=generator)
    with torch.no_grad():
        terms = term_sums(model, x_l, y_l, x_u, eps_l, eps_u)
        loss = model.loss(x_l, y_l, x_u, alpha=2.5, eps_l=eps_l, eps_u=eps_u, reduction="sum")
    rebuilt = terms["reconstruction"] + terms["kl"] + 9 * math.log(5) + 2.5 * terms["classification"] + terms["entropy"]
    assert float(rebuilt) == pytest.approx(float(loss), rel=1e-12)
