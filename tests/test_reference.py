"""The reference objective against a per-example, per-class Python loop in float64, and gradcheck.

The loop computes the three networks from the raw weights (the model's state_dict) with explicit
matrix-vector products, not through the modules of ssvae_fast/networks.py that the reference uses, so a bug
in the networks (a wrong concatenation order, a missing activation, a class vector ignored) cannot pass
unseen: `test_scalar_loop_catches_network_bugs` injects such bugs.
"""

import math

import pytest
import torch

from ssvae_fast import M2, networks, reference
from tests.factories import make_batch, make_model


def _activation(v: torch.Tensor, activation: str) -> torch.Tensor:
    """Elementwise, written out: softplus(v) = max(v, 0) + log(1 + exp(-|v|)), relu(v) = max(v, 0)."""
    out = [max(float(t), 0.0) + (math.log1p(math.exp(-abs(float(t)))) if activation == "softplus" else 0.0)
           for t in v]
    return torch.tensor(out, dtype=torch.float64)


def _affine(state: dict, name: str, v: torch.Tensor) -> torch.Tensor:
    """W v + b for the linear layer `name` of the state dict (W: (out, in), b: (out,))."""
    return state[f"{name}.weight"].double() @ v + state[f"{name}.bias"].double()


def _hidden(state: dict, network: str) -> list:
    """Names of `network`'s hidden_layers.i in order."""
    names, i = [], 0
    while f"{network}.hidden_layers.{i}.weight" in state:
        names.append(f"{network}.hidden_layers.{i}")
        i += 1
    return names


def networks_from_weights(model):
    """(classifier, encoder, decoder) as functions of one example, from model.state_dict() alone:

    classifier(x)    = output(act(... act(hidden_0(x))))                       -> logits (C,)
    encoder(x, y)    = head(act(hidden(... act(input([x, y])))))                 -> (mu, logvar), (Z,) each
    decoder(z, y)    = output(act(hidden(... act(input([z, y])))))               -> logits (D,)
    """
    state = {k: v.detach().double() for k, v in model.state_dict().items()}
    act, Z = model.activation, model.z_dim

    def body(network, first, v):
        h = _activation(_affine(state, first, v), act) if first else v
        for name in _hidden(state, network):
            h = _activation(_affine(state, name, h), act)
        return h

    def classifier(x):
        return _affine(state, "classifier.output", body("classifier", None, x.double()))

    def encoder(x, y):
        out = _affine(state, "encoder.head", body("encoder", "encoder.input", torch.cat([x.double(), y])))
        return out[:Z], out[Z:]

    def decoder(z, y):
        return _affine(state, "decoder.output", body("decoder", "decoder.input", torch.cat([z, y])))

    return classifier, encoder, decoder


def loop_loss(model, x_l, y_l, x_u, eps_l, eps_u, alpha):
    """docs/design.md section 1 one (example, class) pair at a time, scalar by scalar where it matters, with
    the networks computed from the raw weights (`networks_from_weights`)."""
    C = model.n_classes
    classifier, encoder, decoder = networks_from_weights(model)
    losses = []

    def neg_elbo(x, c, eps):
        y = torch.zeros(C, dtype=torch.float64)
        y[c] = 1.0
        mu, logvar = encoder(x, y)
        z = mu + torch.exp(logvar / 2) * eps.double()
        logits = decoder(z, y)
        log_px = sum(
            float(x[d]) * float(logits[d]) - math.log1p(math.exp(-abs(float(logits[d])))) - max(float(logits[d]), 0.0)
            for d in range(x.shape[0])
        )
        kl = 0.5 * sum(
            float(mu[k]) ** 2 + math.exp(float(logvar[k])) - 1.0 - float(logvar[k]) for k in range(mu.shape[0])
        )
        return -log_px + kl + math.log(C)

    def log_q(x):
        logits = [float(v) for v in classifier(x)]
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


def _broken_decoder_ignores_class(self, z, y):
    h = self._act(self.input(torch.cat([z, torch.zeros_like(y)], dim=-1)))
    return self.output(self.run_hidden_layers(h))


def _broken_encoder_concatenation(self, x, y):
    h = self._act(self.input(torch.cat([y.to(x.dtype), x], dim=-1)))
    out = self.head(self.run_hidden_layers(h))
    return out[..., : self.z_dim], out[..., self.z_dim :]


def _broken_classifier_no_activation(self, x):
    h = x
    for layer in self.hidden_layers:
        h = layer(h)
    return self.output(h)


def _broken_hidden_layers_skipped(self, h):
    return h


@pytest.mark.parametrize("target,broken", [
    (networks.Decoder, _broken_decoder_ignores_class),
    (networks.Encoder, _broken_encoder_concatenation),
    (networks.Classifier, _broken_classifier_no_activation),
    (networks._MLPBody, _broken_hidden_layers_skipped),
])
def test_scalar_loop_catches_network_bugs(monkeypatch, target, broken):
    """A bug in ssvae_fast/networks.py changes the reference but not the loop, which reads the weights."""
    torch.manual_seed(0)
    model = make_model(D=11, C=3, Z=3, H=7, dtype=torch.float64, hidden_layers=2)
    batch = make_batch(model, 2, 2, dtype=torch.float64, seed=1)
    with torch.no_grad():
        want = loop_loss(model, *batch.args(), alpha=0.7)
        torch.testing.assert_close(reference.per_example_losses(model, *batch.args(), alpha=0.7), want,
                                   rtol=1e-12, atol=1e-10)
        name = "run_hidden_layers" if target is networks._MLPBody else "forward"
        monkeypatch.setattr(target, name, broken)
        got = reference.per_example_losses(model, *batch.args(), alpha=0.7)
    assert not torch.allclose(got, want, rtol=1e-6, atol=1e-6)


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
