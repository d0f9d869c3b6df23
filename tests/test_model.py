"""M2's public surface: constructor, networks, loss arguments, inference helpers, backend selection."""

import pytest
import torch

import ssvae_fast
from ssvae_fast import M2, BackendUnavailableError, available_backends
from tests.factories import make_batch


def test_network_shapes():
    model = M2(30, 4, 6, hidden=(20, 10))
    x = torch.rand(5, 30)
    y = torch.nn.functional.one_hot(torch.tensor([0, 1, 2, 3, 0]), 4).float()
    assert model.classifier(x).shape == (5, 4)
    mu, logvar = model.encoder(x, y)
    assert mu.shape == (5, 6) and logvar.shape == (5, 6)
    assert model.decoder(torch.randn(5, 6), y).shape == (5, 30)
    relaxed = torch.softmax(torch.randn(5, 4), -1)  # a relaxed class vector is accepted too
    assert model.decoder(torch.randn(5, 6), relaxed).shape == (5, 30)


def test_per_network_hidden_override():
    model = M2(30, 4, 6, hidden=(20,), classifier_hidden=(), encoder_hidden=(8, 9), decoder_hidden=(7,))
    assert len(model.classifier.hidden_layers) == 0
    assert model.encoder.input.out_features == 8 and model.encoder.head.in_features == 9
    assert model.decoder.input.out_features == 7
    assert model.encoder.input.in_features == 30 + 4 and model.decoder.input.in_features == 6 + 4


def test_constructor_errors():
    with pytest.raises(ValueError, match="activation"):
        M2(10, 3, 2, activation="tanh")
    with pytest.raises(ValueError, match="backend"):
        M2(10, 3, 2, backend="fortran")
    with pytest.raises(ValueError, match="n_classes"):
        M2(10, 1, 2)
    with pytest.raises(ValueError, match="encoder needs at least one hidden layer"):
        M2(10, 3, 2, encoder_hidden=())


def test_loss_accepts_missing_parts_and_draws_noise():
    model = M2(12, 3, 2, hidden=(8,), backend="torch")
    x = torch.rand(4, 12)
    y = torch.tensor([0, 1, 2, 0])
    assert model.loss(x, y, None, alpha=1.0).dim() == 0
    assert model.loss(None, None, x, alpha=1.0).dim() == 0
    assert model.loss(x[:0], y[:0], x, alpha=1.0, reduction="none").shape == (4,)
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    a = model.loss(x, y, x, alpha=1.0, generator=g1)
    b = model.loss(x, y, x, alpha=1.0, generator=g2)
    assert torch.equal(a, b)  # same generator seed, same noise, same loss


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        (dict(x_l=torch.rand(4, 11)), ValueError, r"x_l must be a \(n, 12\)"),
        (dict(y_l=torch.tensor([0, 1, 2])), ValueError, "y_l must be"),
        (dict(y_l=torch.tensor([0.0, 1.0, 2.0, 0.0])), TypeError, "int64"),
        (dict(y_l=torch.tensor([0, 1, 3, 0])), ValueError,
         r"y_l must be class indices in \[0, 3\), got values from 0 to 3"),
        (dict(eps_l=torch.randn(4, 3)), ValueError, r"eps_l must be a \(4, 2\) tensor"),
        (dict(eps_u=torch.randn(5, 2)), ValueError, r"eps_u must be a \(5, 3, 2\) tensor"),
        (dict(reduction="avg"), ValueError, "reduction"),
        (dict(x_u=torch.randint(0, 2, (5, 12))), TypeError, "floating-point"),
    ],
)
def test_loss_argument_errors(kwargs, error, match):
    model = M2(12, 3, 2, hidden=(8,), backend="torch")
    args = dict(x_l=torch.rand(4, 12), y_l=torch.tensor([0, 1, 2, 0]), x_u=torch.rand(5, 12))
    args.update(kwargs)
    extra = {k: args.pop(k) for k in ("eps_l", "eps_u", "reduction") if k in args}
    with pytest.raises(error, match=match):
        model.loss(args["x_l"], args["y_l"], args["x_u"], alpha=1.0, **extra)


def test_loss_needs_an_example():
    model = M2(12, 3, 2, hidden=(8,))
    with pytest.raises(ValueError, match="at least one example"):
        model.loss(None, None, None, alpha=1.0)


def test_predict_sample_style_transfer():
    torch.manual_seed(0)
    model = M2(12, 3, 2, hidden=(8,))
    x = torch.rand(5, 12)
    pred = model.predict(x)
    assert pred.dtype == torch.int64 and pred.shape == (5,)
    assert torch.equal(pred, model.classifier(x).argmax(-1))
    means = model.sample(torch.tensor([0, 1, 2]))
    assert means.shape == (3, 12) and (means >= 0).all() and (means <= 1).all()
    binary = model.sample(torch.tensor([0, 1, 2]), mean=False)
    assert set(binary.unique().tolist()) <= {0.0, 1.0}
    z = torch.zeros(3, 2)
    y = torch.tensor([0, 1, 2])
    expected = torch.sigmoid(model.decoder(z, torch.nn.functional.one_hot(y, 3).float()))
    torch.testing.assert_close(model.sample(y, z), expected)
    styles = model.style_transfer(x)
    assert styles.shape == (5, 3, 12)
    # the row of the predicted class is the reconstruction of x under its own class
    mu, _ = model.encoder(x, torch.nn.functional.one_hot(pred, 3).float())
    recon = torch.sigmoid(model.decoder(mu, torch.nn.functional.one_hot(pred, 3).float()))
    torch.testing.assert_close(styles[torch.arange(5), pred], recon)


def test_save_and_load_round_trip(tmp_path):
    torch.manual_seed(0)
    model = M2(12, 3, 2, hidden=(8,), activation="relu", decoder_hidden=(9, 7), backend="torch")
    path = tmp_path / "m2.pt"
    model.save(path)
    loaded = M2.load(path, backend="reference")
    assert loaded.config == model.config and loaded.config["decoder_hidden"] == [9, 7]
    assert loaded.backend == "reference" and loaded.activation == "relu"
    for (name, a), (name_b, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert name == name_b and torch.equal(a, b)
    b = make_batch(model, 3, 4, seed=1)
    loss = model.loss(b.x_l, b.y_l, b.x_u, alpha=2.0, eps_l=b.eps_l, eps_u=b.eps_u, reduction="none")
    again = loaded.loss(b.x_l, b.y_l, b.x_u, alpha=2.0, eps_l=b.eps_l, eps_u=b.eps_u, reduction="none")
    torch.testing.assert_close(again, loss)
    assert M2(**model.config).config == model.config


def test_load_rejects_what_save_did_not_write(tmp_path):
    torch.save({"weights": torch.zeros(3)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not an M2 checkpoint"):
        M2.load(tmp_path / "other.pt")
    (tmp_path / "text.pt").write_text("hello")
    with pytest.raises(ValueError, match="not an M2 checkpoint"):
        M2.load(tmp_path / "text.pt")
    with pytest.raises(FileNotFoundError):
        M2.load(tmp_path / "missing.pt")


def test_available_backends_and_errors():
    names = available_backends()
    assert "reference" in names and "torch" in names
    assert set(names) <= set(ssvae_fast.BACKENDS)
    assert "cuda" not in available_backends("cpu")
    model = M2(12, 3, 2, hidden=(8,))
    assert model.resolved_backend() in available_backends("cpu")
    if not torch.cuda.is_available():
        model.backend = "cuda"
        with pytest.raises(BackendUnavailableError, match="CUDA"):
            model.loss(torch.rand(2, 12), torch.tensor([0, 1]), None, alpha=1.0)


def test_torch_and_reference_agree_through_the_model():
    torch.manual_seed(0)
    model = M2(20, 4, 3, hidden=(10,)).double()
    b = make_batch(model, 3, 5, dtype=torch.float64)
    out = {}
    for name in ("reference", "torch"):
        model.backend = name
        out[name] = model.loss(b.x_l, b.y_l, b.x_u, alpha=2.0, eps_l=b.eps_l, eps_u=b.eps_u, reduction="sum")
    torch.testing.assert_close(out["torch"], out["reference"], rtol=1e-12, atol=1e-10)


def test_import_never_needs_gpu_or_extension():
    import os
    import subprocess
    import sys
    from pathlib import Path

    from ssvae_fast import _ext

    code = "import ssvae_fast, ssvae_fast._ext as e; print(ssvae_fast.available_backends())"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    assert result.returncode == 0, result.stderr
    assert "reference" in result.stdout
    # The extension state is consistent: a built module imports (else the reason is kept and named).
    assert _ext.HAS_EXT == (_ext._C is not None) == (_ext.EXT_IMPORT_ERROR is None)
    built = list(Path(_ext.__file__).parent.glob("_C.*.so")) + list(Path(_ext.__file__).parent.glob("_C.*.pyd"))
    if built:
        assert _ext.HAS_EXT, f"{built[0].name} is built but does not import: {_ext.EXT_IMPORT_ERROR}"
        assert "cpu" in result.stdout
    else:
        assert "ssvae_fast._C" in _ext.EXT_IMPORT_ERROR and "cpu" not in result.stdout
