"""The reference objective against a per-example, per-class Python loop in float64, and gradcheck."""

import math

import pytest
import torch

from ssvae_fast import M2, reference
from tests.factories import make_batch, make_model


def loop_loss(model, x_l, y_l, x_u, eps_l, eps_u, alpha):
    """docs/design.md section 1 one (example, class) pair at a time, scalar by scalar where it matters."""
    C = model.n_classes
    losses = []

    def neg_elbo(x, c, eps):
        y = torch.zeros(1, C, dtype=x.dtype)
        y[0, c] = 1.0
        mu, logvar = model.encoder(x[None], y)
        mu, logvar = mu[0], logvar[0]
        z = mu + torch.exp(logvar / 2) * eps
        logits = model.decoder(z[None], y)[0]
        log_px = sum(
            float(x[d]) * float(logits[d]) - math.log1p(math.exp(-abs(float(logits[d])))) - max(float(logits[d]), 0.0)
            for d in range(x.shape[0])
        )
        kl = 0.5 * sum(
            float(mu[k]) ** 2 + math.exp(float(logvar[k])) - 1.0 - float(logvar[k]) for k in range(mu.shape[0])
        )
        return -log_px + kl + math.log(C)

    def log_q(x):
        logits = [float(v) for v in model.classifier(x[None])[0]]
        m = max(logits)
        lse = m + math.log(sum(math.exp(v - m) for v in logits))
        return [v - lse for v in logits]

    for i in range(x_l.shape[0]):
        c = int(y_l[i])
        losses.append(neg_elbo(x_l[i], c, eps_l[i]) - alpha * log_q(x_l[i])[c])
    for i in range(x_u.shape[0]):
        lq = log_q(x_u[i])
        total = 0.0
        for c in range(C):
            q = math.exp(lq[c])
            total += q * neg_elbo(x_u[i], c, eps_u[i, c]) + q * lq[c]
        losses.append(total)
    return torch.tensor(losses, dtype=torch.float64)


@pytest.mark.parametrize("n_l,n_u,C", [(3, 4, 3), (0, 2, 2), (5, 0, 4), (1, 1, 17)])
@pytest.mark.parametrize("activation", ["softplus", "relu"])
def test_reference_matches_scalar_loop(n_l, n_u, C, activation):
    torch.manual_seed(0)
    model = make_model(D=11, C=C, Z=3, H=7, activation=activation, dtype=torch.float64, hidden_layers=2)
    batch = make_batch(model, n_l, n_u, dtype=torch.float64, seed=1)
    with torch.no_grad():
        got = reference.per_example_losses(model, *batch.args(), alpha=0.7)
        want = loop_loss(model, *batch.args(), alpha=0.7)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-10)


def test_reduction_modes_follow_design():
    torch.manual_seed(0)
    model = make_model(D=9, C=3, Z=2, H=5, dtype=torch.float64)
    model.backend = "reference"
    b = make_batch(model, 4, 6, dtype=torch.float64, seed=2)
    none = model.loss(b.x_l, b.y_l, b.x_u, alpha=1.5, eps_l=b.eps_l, eps_u=b.eps_u, reduction="none")
    total = model.loss(b.x_l, b.y_l, b.x_u, alpha=1.5, eps_l=b.eps_l, eps_u=b.eps_u, reduction="sum")
    mean = model.loss(b.x_l, b.y_l, b.x_u, alpha=1.5, eps_l=b.eps_l, eps_u=b.eps_u, reduction="mean")
    assert none.shape == (10,)
    torch.testing.assert_close(total, none.sum(), rtol=0, atol=0)
    torch.testing.assert_close(mean, none.sum() / 10, rtol=0, atol=0)
    # labelled first: the labelled part alone equals the first n_l entries
    lab = model.loss(b.x_l, b.y_l, None, alpha=1.5, eps_l=b.eps_l, reduction="none")
    torch.testing.assert_close(lab, none[:4], rtol=0, atol=0)


def test_alpha_enters_labelled_losses_only():
    torch.manual_seed(0)
    model = make_model(D=9, C=3, Z=2, H=5, dtype=torch.float64)
    b = make_batch(model, 4, 6, dtype=torch.float64, seed=3)
    with torch.no_grad():
        a = reference.per_example_losses(model, *b.args(), alpha=0.0)
        c = reference.per_example_losses(model, *b.args(), alpha=2.0)
        log_q = torch.log_softmax(model.classifier(b.x_l), -1).gather(1, b.y_l[:, None]).squeeze(1)
    torch.testing.assert_close(c[:4] - a[:4], -2.0 * log_q, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(c[4:], a[4:], rtol=0, atol=0)


def test_reference_gradcheck_float64():
    torch.manual_seed(0)
    model = make_model(D=5, C=3, Z=2, H=4, dtype=torch.float64)
    b = make_batch(model, 2, 2, dtype=torch.float64, seed=4)
    params = [p for p in model.parameters()]
    x_l = b.x_l.clone().requires_grad_(True)
    x_u = b.x_u.clone().requires_grad_(True)
    eps_u = b.eps_u.clone().requires_grad_(True)

    def fn(x_l, x_u, eps_u, *flat):
        with torch.nn.utils.stateless._reparametrize_module(
            model, {name: t for (name, _), t in zip(model.named_parameters(), flat)}
        ):
            return reference.per_example_losses(model, x_l, b.y_l, x_u, b.eps_l, eps_u, alpha=0.9)

    inputs = (x_l, x_u, eps_u, *[p.detach().clone().requires_grad_(True) for p in params])
    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-6, rtol=1e-5)


def test_reference_gradient_is_not_trivially_zero():
    # A guard for the equivalence tests: every parameter gets a non-zero gradient from a mixed batch.
    torch.manual_seed(0)
    model = M2(8, 3, 2, hidden=(6,)).double()
    model.backend = "reference"
    b = make_batch(model, 3, 3, dtype=torch.float64, seed=5)
    model.loss(b.x_l, b.y_l, b.x_u, alpha=1.0, eps_l=b.eps_l, eps_u=b.eps_u).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().max() > 0, name
