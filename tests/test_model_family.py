"""The model family beyond M2 with a Bernoulli likelihood: M1 (loss on every backend, its bounds in nats
against direct float64 formulas), several samples of z, the KL weight of a warm-up, and the stacked M1M2.
(The Gaussian likelihood's op is in tests/ops/test_gaussian_loglik_linear.py, M2 with it in
tests/test_backends.py.)"""

from __future__ import annotations

import copy
import math

import pytest
import torch

from ssvae_fast import M1, M1M2, M2
from ssvae_fast.training.evaluate import term_sums
from tests.factories import make_batch, make_model
from tests.op_checks import on_backends

BACKENDS = on_backends("reference", "torch", "cpu", "triton")


def _m1(likelihood="bernoulli", dtype=torch.float64, D=13, Z=3, H=11, seed=0):
    torch.manual_seed(seed)
    model = M1(D, Z, hidden=(H, 7), likelihood=likelihood)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model.to(dtype)


def _loss_and_grads(model, backend, x, **kwargs):
    model = copy.deepcopy(model)
    model.backend = backend
    loss = model.loss(x, reduction="sum", **kwargs)
    grads = torch.autograd.grad(loss, list(model.parameters()))
    return loss.detach(), grads


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_m1_loss_matches_direct_formula(backend, likelihood):
    """M1's loss and every parameter's gradient on each backend equal -log p(x|z) + KL written with
    torch.distributions in float64 (z from the same noise)."""
    model = _m1(likelihood)
    g = torch.Generator().manual_seed(1)
    x = torch.rand(6, 13, generator=g, dtype=torch.float64)
    eps = torch.randn(6, 3, generator=g, dtype=torch.float64)
    got, got_grads = _loss_and_grads(model, backend, x, eps=eps, kl_weight=0.7)

    def direct(m):
        enc, dec = m.encoder, m.decoder
        mu, logvar = enc.head(enc.run_hidden_layers(enc._act(enc.input(x)))).chunk(2, dim=-1)
        q = torch.distributions.Normal(mu, torch.exp(0.5 * logvar))
        kl = torch.distributions.kl_divergence(q, torch.distributions.Normal(0.0, 1.0)).sum(-1)
        out = dec.output(dec.run_hidden_layers(dec._act(dec.input(mu + torch.exp(0.5 * logvar) * eps))))
        if likelihood == "gaussian":
            ll = torch.distributions.Normal(out, torch.exp(0.5 * dec.logvar)).log_prob(x).sum(-1)
        else:
            ll = torch.distributions.Bernoulli(logits=out, validate_args=False).log_prob(x).sum(-1)
        return (0.7 * kl - ll).sum()

    expected = direct(model)
    expected_grads = torch.autograd.grad(expected, list(model.parameters()))
    torch.testing.assert_close(got, expected.detach(), rtol=1e-11, atol=1e-11)
    for a, b in zip(got_grads, expected_grads):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("backend", on_backends("torch", "cpu", "triton"))
def test_m1_importance_weighted_bound_is_log_mean_exp_of_explicit_samples(backend):
    """log_likelihood(x, K) = log (1/K) sum_k p(x|z_k) p(z_k) / q(z_k|x) over explicit samples z_k (the same
    draws), each density from torch.distributions, float64."""
    model, K = _m1(), 37
    model.backend = backend
    x = (torch.rand(5, 13, generator=torch.Generator().manual_seed(2), dtype=torch.float64) < 0.4).double()
    got = model.log_likelihood(x, n_samples=K, sample_chunk=K, generator=torch.Generator().manual_seed(3))
    eps = torch.randn(5, K, 3, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    with torch.no_grad():
        mu, logvar = model.encode(x)
        std = torch.exp(0.5 * logvar)
        z = mu[:, None] + std[:, None] * eps
        logits = model.decoder.output(model._decoder_hidden(z))
        log_w = (torch.distributions.Bernoulli(logits=logits).log_prob(x[:, None]).sum(-1)
                 + torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(-1)
                 - torch.distributions.Normal(mu[:, None], std[:, None]).log_prob(z).sum(-1))
        expected = torch.logsumexp(log_w, dim=1) - math.log(K)
    torch.testing.assert_close(got, expected, rtol=1e-11, atol=1e-10)
    # chunked over samples and images: other draws, the same bound up to Monte-Carlo error
    chunked = model.log_likelihood(x, n_samples=400, sample_chunk=64, batch_size=2,
                                   generator=torch.Generator().manual_seed(4))
    assert chunked.shape == (5,) and torch.isfinite(chunked).all()


def test_m1_bound_tightens_with_samples():
    """The importance-weighted bound (K = 500) lies above the ELBO (its K = 1 case), on average."""
    model = _m1()
    x = (torch.rand(40, 13, generator=torch.Generator().manual_seed(5), dtype=torch.float64) < 0.4).double()
    elbo = model.elbo(x, n_samples=200, generator=torch.Generator().manual_seed(6)).mean()
    bound = model.log_likelihood(x, n_samples=500, generator=torch.Generator().manual_seed(7)).mean()
    assert bound > elbo + 1e-3


@pytest.mark.parametrize("backend", on_backends("reference", "cpu"))
def test_n_samples_is_the_mean_over_copies(backend):
    """loss(n_samples=K) with noise for K copies (copy k of example i at row i K + k) is the mean over k of
    the one-sample losses with copy k's noise: M1 and M2."""
    K = 3
    m1 = _m1()
    m1.backend = backend
    x = torch.rand(4, 13, generator=torch.Generator().manual_seed(8), dtype=torch.float64)
    eps = torch.randn(4 * K, 3, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    many = m1.loss(x, eps=eps, n_samples=K, reduction="none")
    each = torch.stack([m1.loss(x, eps=eps.view(4, K, 3)[:, k], reduction="none") for k in range(K)]).mean(0)
    torch.testing.assert_close(many, each, rtol=1e-12, atol=1e-12)

    m2 = make_model(13, 4, 3, 9, dtype=torch.float64)
    m2.backend = backend
    b = make_batch(m2, 3, 2, dtype=torch.float64, seed=10)
    g = torch.Generator().manual_seed(11)
    eps_l, eps_u = torch.randn(3 * K, 3, generator=g, dtype=torch.float64), torch.randn(2 * K, 4, 3, generator=g,
                                                                                         dtype=torch.float64)
    many = m2.loss(b.x_l, b.y_l, b.x_u, alpha=2.0, eps_l=eps_l, eps_u=eps_u, n_samples=K, reduction="none")
    each = torch.stack([m2.loss(b.x_l, b.y_l, b.x_u, alpha=2.0, eps_l=eps_l.view(3, K, 3)[:, k],
                                eps_u=eps_u.view(2, K, 4, 3)[:, k], reduction="none") for k in range(K)]).mean(0)
    torch.testing.assert_close(many, each, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
def test_m2_kl_weight_scales_the_kl_terms(backend):
    """loss(kl_weight=1) - loss(kl_weight=w) = (1 - w) times the KL terms (labelled, and q-weighted
    unlabelled) that `term_sums` computes in plain torch; gradients equal the reference's."""
    model = make_model(13, 4, 3, 9, dtype=torch.float64)
    model.backend = backend
    b = make_batch(model, 3, 2, dtype=torch.float64, seed=12)
    args = dict(alpha=2.0, eps_l=b.eps_l, eps_u=b.eps_u, reduction="sum")
    full = model.loss(b.x_l, b.y_l, b.x_u, **args)
    warm = model.loss(b.x_l, b.y_l, b.x_u, kl_weight=0.25, **args)
    with torch.no_grad():
        kl = term_sums(model, *b.args())["kl"]
    torch.testing.assert_close((full - warm).detach(), 0.75 * kl, rtol=1e-11, atol=1e-11)
    reference = copy.deepcopy(model)
    reference.backend = "reference"
    expected = torch.autograd.grad(reference.loss(b.x_l, b.y_l, b.x_u, kl_weight=0.25, **args),
                                   list(reference.parameters()))
    for a, e in zip(torch.autograd.grad(warm, list(model.parameters())), expected):
        torch.testing.assert_close(a, e, rtol=1e-10, atol=1e-12)


def _m1m2_loss_and_m2s(m1, m2, images=False):
    """(M1M2(m1, m2), x_l, y_l, x_u, its loss, M2's loss on the same feature draws (the images as the
    classifier's inputs when `images`))."""
    model = M1M2(m1, m2)
    g = torch.Generator().manual_seed(13)
    x_l, x_u = torch.rand(3, m1.x_dim, generator=g), torch.rand(5, m1.x_dim, generator=g)
    y_l = torch.tensor([0, 1, 3])
    loss = model.loss(x_l, y_l, x_u, alpha=3.0, generator=torch.Generator().manual_seed(14))
    g = torch.Generator().manual_seed(14)
    f_l, f_u = m1.features(x_l, generator=g), m1.features(x_u, generator=g)
    extra = dict(classifier_inputs=(x_l, x_u)) if images else {}
    return model, x_l, y_l, x_u, loss, m2.loss(f_l, y_l, f_u, alpha=3.0, generator=g, **extra)


def test_m1m2_is_m2_on_m1_features():
    """M1M2's loss is M2's on features drawn from q(z1|x) (the same generator draws), its predictions are
    M2's at M1's mean features, its pictures are M1's decodings; M1 stays fixed; save/load round-trips."""
    m1 = _m1(dtype=torch.float32)
    m2 = M2(3, 4, 2, hidden=(8,), likelihood="gaussian")
    model, x_l, y_l, x_u, loss, expected = _m1m2_loss_and_m2s(m1, m2)
    assert not any(p.requires_grad for p in model.m1.parameters())
    torch.testing.assert_close(loss, expected)
    assert torch.equal(model.predict(x_u), m2.predict(m1.encode(x_u)[0]))
    assert model.style_transfer(x_u[:2]).shape == (2, 4, 13)
    assert model.sample(torch.arange(4)).shape == (4, 13)
    with pytest.raises(ValueError, match="x_dim"):
        M1M2(m1, M2(5, 4, 2))


def test_m1m2_save_load(tmp_path):
    model = M1M2(_m1(dtype=torch.float32), M2(3, 4, 2, hidden=(8,), likelihood="gaussian"))
    model.save(tmp_path / "m.pt")
    again = M1M2.load(tmp_path / "m.pt")
    x = torch.rand(6, 13)
    assert torch.equal(again.predict(x), model.predict(x))
    m1 = model.m1
    m1.save(tmp_path / "m1.pt")
    assert torch.equal(M1.load(tmp_path / "m1.pt").encode(x)[0], m1.encode(x)[0])
    with pytest.raises(ValueError, match="not an M1 checkpoint"):
        M1.load(tmp_path / "m.pt")


def test_m1_input_errors():
    model = _m1(dtype=torch.float32)
    with pytest.raises(ValueError, match=r"\(B, 13\)"):
        model.loss(torch.rand(2, 12))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        model.loss(torch.full((2, 13), 2.0))
    with pytest.raises(ValueError, match="n_samples"):
        model.loss(torch.rand(2, 13), n_samples=0)
    with pytest.raises(ValueError, match="kl_weight"):
        model.loss(torch.rand(2, 13), kl_weight=-1.0)
    gaussian = _m1("gaussian", dtype=torch.float32)
    gaussian.loss(torch.full((2, 13), 2.0))  # any finite input for the Gaussian likelihood
    with pytest.raises(ValueError, match="finite"):
        gaussian.loss(torch.full((2, 13), float("nan")))


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_gumbel_estimator_matches_direct_formula(backend, likelihood):
    """The Gumbel-softmax estimator at fixed noise and temperature, every backend: labelled losses as ever,
    unlabelled ones -log p(x|y,z) + KL + log C + sum_c q log q at the relaxed class
    y = softmax((log q(y|x) + g) / T), written here with torch.distributions in float64; values and every
    parameter's and input's gradient."""
    model = make_model(13, 4, 3, 9, dtype=torch.float64, likelihood=likelihood)
    model.backend = backend
    b = make_batch(model, 3, 5, dtype=torch.float64, seed=15)
    g = torch.Generator().manual_seed(16)
    eps_u = torch.randn(5, 3, generator=g, dtype=torch.float64)
    gumbel = -torch.log(-torch.log(torch.rand(5, 4, generator=g, dtype=torch.float64)))
    x_u = b.x_u.clone().requires_grad_(True)
    got = model.loss(b.x_l, b.y_l, x_u, alpha=2.0, eps_l=b.eps_l, eps_u=eps_u, estimator="gumbel", temperature=0.7,
                     gumbel=gumbel, reduction="none", kl_weight=0.9)
    leaves = list(model.parameters()) + [x_u]
    w = torch.linspace(0.5, 1.5, got.shape[0], dtype=torch.float64)
    got_grads = torch.autograd.grad((got * w).sum(), leaves)

    def direct(x, y_onehot, eps):
        mu, logvar = model.encoder(x, y_onehot)
        q = torch.distributions.Normal(mu, torch.exp(0.5 * logvar))
        kl = torch.distributions.kl_divergence(q, torch.distributions.Normal(0.0, 1.0)).sum(-1)
        out = model.decoder(mu + torch.exp(0.5 * logvar) * eps, y_onehot)
        if likelihood == "gaussian":
            ll = torch.distributions.Normal(out, torch.exp(0.5 * model.decoder.logvar)).log_prob(x).sum(-1)
        else:
            ll = torch.distributions.Bernoulli(logits=out, validate_args=False).log_prob(x).sum(-1)
        return -ll + 0.9 * kl + math.log(4)

    log_q_l = torch.log_softmax(model.classifier(b.x_l), -1)
    lab = direct(b.x_l, torch.nn.functional.one_hot(b.y_l, 4).double(), b.eps_l) - 2.0 * log_q_l.gather(
        1, b.y_l[:, None]).squeeze(1)
    log_q = torch.log_softmax(model.classifier(x_u), -1)
    y = torch.softmax((log_q + gumbel) / 0.7, -1)
    unl = direct(x_u, y, eps_u) + (log_q.exp() * log_q).sum(-1)
    expected = torch.cat([lab, unl])
    torch.testing.assert_close(got.detach(), expected.detach(), rtol=1e-11, atol=1e-11)
    for a, e in zip(got_grads, torch.autograd.grad((expected * w).sum(), leaves)):
        torch.testing.assert_close(a, e, rtol=1e-9, atol=1e-11)


def test_gumbel_estimator_input_checks():
    model = make_model(13, 4, 3, 9)
    b = make_batch(model, 2, 3)
    with pytest.raises(ValueError, match="eps_u"):
        model.loss(b.x_l, b.y_l, b.x_u, alpha=1.0, eps_u=b.eps_u, estimator="gumbel")
    with pytest.raises(ValueError, match="temperature"):
        model.loss(b.x_l, b.y_l, b.x_u, alpha=1.0, estimator="gumbel", temperature=0.0)
    with pytest.raises(ValueError, match="estimator"):
        model.loss(b.x_l, b.y_l, b.x_u, alpha=1.0, estimator="sample")
    with pytest.raises(ValueError, match="gumbel"):
        model.loss(b.x_l, b.y_l, b.x_u, alpha=1.0, estimator="gumbel", gumbel=torch.full((3, 4), float("nan")))
    with pytest.raises(ValueError, match="gumbel"):  # noise for an estimator that does not use it
        model.loss(b.x_l, b.y_l, b.x_u, alpha=1.0, gumbel=torch.zeros(3, 4))
    loss = model.loss(b.x_l, b.y_l, b.x_u, alpha=1.0, estimator="gumbel", generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(loss)


@pytest.mark.parametrize("backend", on_backends("reference", "cpu"))
def test_conv_classifier_composes_with_the_fused_objective(backend):
    """M2 with the convolutional classifier: the fused objective equals the reference (the classifier is a
    plain module in both), values and gradients, float64; checkpoints keep the choice."""
    torch.manual_seed(0)
    model = M2(64, 4, 3, hidden=(9,), classifier="conv").double()
    model.backend = backend
    b = make_batch(model, 3, 2, dtype=torch.float64, seed=17)
    loss = model.loss(b.x_l, b.y_l, b.x_u, alpha=2.0, eps_l=b.eps_l, eps_u=b.eps_u)
    ref = copy.deepcopy(model)
    ref.backend = "reference"
    expected = ref.loss(b.x_l, b.y_l, b.x_u, alpha=2.0, eps_l=b.eps_l, eps_u=b.eps_u)
    torch.testing.assert_close(loss, expected, rtol=1e-12, atol=1e-12)
    for a, e in zip(torch.autograd.grad(loss, list(model.parameters())),
                    torch.autograd.grad(expected, list(ref.parameters()))):
        torch.testing.assert_close(a, e, rtol=1e-10, atol=1e-12)
    assert model.config["classifier"] == "conv"
    with pytest.raises(ValueError, match="square"):
        M2(50, 4, 3, classifier="conv")


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_conv_classifier_equals_its_textbook_form(dtype):
    """ConvClassifier.forward (channels-last feature maps on the CPU, pooling before the ReLU) is the textbook
    NCHW convolution -> ReLU -> pooling, in values and in every parameter's and the input's gradient, within
    the rounding of a different summation order; the parameters keep their layout and their state-dict names
    (the convolutions at features.0 and features.3, as in the conv -> ReLU -> pool order)."""
    from ssvae_fast.networks import ConvClassifier

    torch.manual_seed(0)
    model = ConvClassifier(784, 10).to(dtype)
    x = torch.randn(12, 784, dtype=dtype).requires_grad_(True)
    out = model(x)
    expected = model.forward_textbook(x)
    tol = dict(rtol=1e-12, atol=1e-12) if dtype == torch.float64 else dict(rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out, expected, **tol)
    upstream = torch.randn_like(out)
    params = [x] + list(model.parameters())
    for a, e in zip(torch.autograd.grad(out, params, upstream), torch.autograd.grad(expected, params, upstream)):
        torch.testing.assert_close(a, e, **tol)
    assert all(p.is_contiguous() for p in model.parameters())  # the layout is the forward's, not the weights'
    assert [k for k in model.state_dict() if k.startswith("features.")] == [
        "features.0.weight", "features.0.bias", "features.3.weight", "features.3.bias"]
    with torch.no_grad():  # eval mode and no_grad take the same path
        torch.testing.assert_close(model.eval()(x), expected, **tol)


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
def test_m2_bounds_in_nats(likelihood):
    """M2.log_likelihood(x, K) is log sum_y p(y) (1/K) sum_k p(x|y,z_k) p(z_k) / q(z_k|x,y) over explicit draws
    (torch.distributions, float64, the same noise); M2.elbo(x) is minus the unlabelled loss; with many
    samples the bound lies above the ELBO."""
    model = make_model(13, 4, 3, 9, dtype=torch.float64, likelihood=likelihood)
    x = (torch.rand(5, 13, generator=torch.Generator().manual_seed(18), dtype=torch.float64) < 0.4).double()
    K = 7
    got = model.log_likelihood(x, n_samples=K, generator=torch.Generator().manual_seed(19))
    eps = torch.randn(5 * 4, K, 3, generator=torch.Generator().manual_seed(19), dtype=torch.float64)
    with torch.no_grad():
        total = []
        for b in range(5):
            terms = []
            for c in range(4):
                y = torch.nn.functional.one_hot(torch.tensor([c]), 4).double()
                mu, logvar = model.encoder(x[b : b + 1], y)
                q = torch.distributions.Normal(mu, torch.exp(0.5 * logvar))
                z = mu + torch.exp(0.5 * logvar) * eps[b * 4 + c]
                out = model.decoder(z, y.expand(K, 4))
                if likelihood == "gaussian":
                    log_px = torch.distributions.Normal(out, torch.exp(0.5 * model.decoder.logvar)).log_prob(x[b]).sum(-1)
                else:
                    log_px = torch.distributions.Bernoulli(logits=out).log_prob(x[b]).sum(-1)
                log_w = log_px + torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(-1) - q.log_prob(z).sum(-1)
                terms.append(log_w - math.log(4))
            total.append(torch.logsumexp(torch.cat(terms), 0) - math.log(K))
    torch.testing.assert_close(got, torch.stack(total), rtol=1e-11, atol=1e-10)
    g = torch.Generator().manual_seed(20)
    eps_u = torch.randn(5, 4, 3, generator=g, dtype=torch.float64)
    elbo = model.elbo(x, generator=torch.Generator().manual_seed(20))
    torch.testing.assert_close(elbo, -model.loss(None, None, x, alpha=0.0, eps_u=eps_u, reduction="none"))
    many = model.log_likelihood(x, n_samples=400, generator=torch.Generator().manual_seed(21)).mean()
    assert many > model.elbo(x, n_samples=200, generator=torch.Generator().manual_seed(22)).mean()


def _own_input_model(classifier="mlp", W=16, backend="reference"):
    """M2 on 3-wide features whose classifier reads 16-wide inputs of its own (4x4 'images'), float64."""
    torch.manual_seed(2)
    model = M2(3, 4, 2, hidden=(9,), likelihood="gaussian", classifier=classifier, classifier_x_dim=W).double()
    model.backend = backend
    return model


@pytest.mark.parametrize("n_samples", [1, 2])
@pytest.mark.parametrize("backend", BACKENDS)
def test_classifier_inputs_match_direct_formula(backend, n_samples):
    """With classifier_x_dim, q(y|.) reads classifier_inputs (c_l, c_u), the rest of the objective reads x:
    per-example losses equal L(x, y) - alpha log q(y|c) and sum_c q(c|c_u) L(x_u, c) + sum q log q written out
    from the networks (float64), on every backend, with gradients equal to the reference's; chunks and
    samples keep each row with its own classifier input."""
    model = _own_input_model(backend=backend)
    b = make_batch(model, 3, 4, dtype=torch.float64, seed=21)
    g = torch.Generator().manual_seed(22)
    c_l, c_u = torch.rand(3, 16, generator=g, dtype=torch.float64), torch.rand(4, 16, generator=g, dtype=torch.float64)
    K = n_samples
    eps_l, eps_u = torch.randn(K * 3, 2, generator=g).double(), torch.randn(K * 4, 4, 2, generator=g).double()
    b = b._replace(eps_l=eps_l, eps_u=eps_u) if hasattr(b, "_replace") else type(b)(b.x_l, b.y_l, b.x_u, eps_l, eps_u)
    kwargs = dict(alpha=2.5, eps_l=b.eps_l, eps_u=b.eps_u, classifier_inputs=(c_l, c_u), n_samples=n_samples)
    got = model.loss(b.x_l, b.y_l, b.x_u, reduction="none", **kwargs)
    chunked = model.loss(b.x_l, b.y_l, b.x_u, reduction="none", chunk_size=3, **kwargs)

    from ssvae_fast import reference

    C = 4
    with torch.no_grad():
        x_l, y_l, x_u = (t.repeat_interleave(K, 0) for t in (b.x_l, b.y_l, b.x_u))
        log_q_l = torch.log_softmax(model.classifier(c_l.repeat_interleave(K, 0)), -1)
        lab = reference.negative_elbo(model, x_l, torch.nn.functional.one_hot(y_l, C).double(), b.eps_l) \
            - 2.5 * log_q_l.gather(1, y_l[:, None])[:, 0]
        rows = reference.negative_elbo(model, x_u.repeat_interleave(C, 0), torch.eye(C).double().repeat(x_u.shape[0], 1),
                                       b.eps_u.reshape(-1, 2)).view(-1, C)
        log_q_u = torch.log_softmax(model.classifier(c_u.repeat_interleave(K, 0)), -1)
        unl = (log_q_u.exp() * rows).sum(-1) + (log_q_u.exp() * log_q_u).sum(-1)
        expected = torch.cat([lab.view(3, K).mean(1), unl.view(4, K).mean(1)])
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(chunked, expected, rtol=1e-12, atol=1e-12)
    ref = copy.deepcopy(model)
    ref.backend = "reference"
    grads = torch.autograd.grad(model.loss(b.x_l, b.y_l, b.x_u, **kwargs), list(model.parameters()))
    ref_grads = torch.autograd.grad(ref.loss(b.x_l, b.y_l, b.x_u, **kwargs), list(ref.parameters()))
    for a, e in zip(grads, ref_grads):
        torch.testing.assert_close(a, e, rtol=1e-10, atol=1e-12)


def test_classifier_inputs_are_checked():
    model = _own_input_model()
    b = make_batch(model, 2, 3, dtype=torch.float64, seed=23)
    c_l, c_u = torch.rand(2, 16, dtype=torch.float64), torch.rand(3, 16, dtype=torch.float64)
    with pytest.raises(TypeError, match="classifier_inputs must be a pair"):
        model.loss(b.x_l, b.y_l, b.x_u, alpha=1.0)
    with pytest.raises(ValueError, match=r"classifier_inputs\[1\] must be a \(3, 16\) tensor"):
        model.loss(b.x_l, b.y_l, b.x_u, alpha=1.0, classifier_inputs=(c_l, c_u[:2]))
    with pytest.raises(TypeError, match="float64"):
        model.loss(b.x_l, b.y_l, b.x_u, alpha=1.0, classifier_inputs=(c_l.float(), c_u))
    assert torch.isfinite(model.loss(None, None, b.x_u, alpha=1.0, classifier_inputs=(None, c_u)))
    plain = M2(3, 4, 2, hidden=(9,), likelihood="gaussian").double()
    with pytest.raises(TypeError, match="reads x"):
        plain.loss(b.x_l, b.y_l, b.x_u, alpha=1.0, classifier_inputs=(c_l, c_u))
    with pytest.raises(TypeError, match="classes"):
        model.style_transfer(b.x_u)
    assert model.style_transfer(b.x_u, classes=torch.tensor([0, 3, 1])).shape == (3, 4, 3)
    assert torch.equal(model.predict(c_u), model.classifier(c_u).argmax(-1))
    assert M2(**model.config).classifier_x_dim == 16 and plain.config["classifier_x_dim"] is None


@pytest.mark.parametrize("backend", on_backends("reference", "cpu"))
def test_m1m2_with_a_classifier_of_the_images(backend, tmp_path):
    """M1M2 whose M2 classifies the images (q(y|x), a CNN): its loss is M2's on M1's features with the images
    as the classifier's inputs, predictions and styles come from the images, checkpoints keep it."""
    torch.manual_seed(4)
    m1 = M1(16, 3, hidden=(11,)).to(torch.float32)
    m2 = M2(3, 4, 2, hidden=(8,), likelihood="gaussian", classifier="conv", classifier_x_dim=16, backend=backend)
    model, x_l, y_l, x_u, loss, expected = _m1m2_loss_and_m2s(m1, m2, images=True)
    assert model.classifies_images
    torch.testing.assert_close(loss, expected)
    assert torch.equal(model.predict(x_u), m2.classifier(x_u).argmax(-1))
    assert torch.equal(model.classifier(x_u), m2.classifier(x_u))
    assert model.style_transfer(x_u[:2]).shape == (2, 4, 16)
    terms = term_sums(model, x_l, y_l, x_u, torch.randn(3, 2), torch.randn(5, 4, 2))
    log_q = torch.log_softmax(m2.classifier(x_l), -1)
    torch.testing.assert_close(terms["classification"], -log_q.gather(1, y_l[:, None]).sum())
    model.save(tmp_path / "m.pt")
    assert torch.equal(M1M2.load(tmp_path / "m.pt").predict(x_u), model.predict(x_u))
    with pytest.raises(ValueError, match="classifier_x_dim"):
        M1M2(m1, M2(3, 4, 2, likelihood="gaussian", classifier_x_dim=9))
