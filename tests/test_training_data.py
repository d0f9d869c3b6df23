"""The validation split (carved from the training pool, for model selection only) and the training
configuration's defaults and their resolution."""

from __future__ import annotations


import numpy as np
import pytest

from ssvae_fast.data import DatasetError, SemiSupervisedSplit, load_digits_split, load_mnist_split, load_split, make_split
from ssvae_fast.training import DATASET_DEFAULTS, TrainConfig, resolve
from ssvae_fast.training.config import learning_rate_factor
from tests.test_data import fake_t10k_dir, row_index


def _toy(n=400, classes=4):
    y = (np.arange(n) % classes).astype(np.int64)
    x = np.tile((np.arange(n) / (n - 1)).astype(np.float32)[:, None], (1, 6))  # x[:, 0] encodes the index
    return x, y, np.arange(n) % 5 == 4


def _ids(a, n=400):
    return set(np.rint(a[:, 0] * (n - 1)).astype(int))


def test_validation_split_is_disjoint_stratified_and_out_of_the_unlabelled_pool():
    x, y, mask = _toy()
    kw = dict(n_classes=4, n_labelled=10, test_mask=mask, name="toy", image_shape=(2, 3))
    s = make_split(x, y, seed=3, val_size=42, **kw)
    lab, val, unl, test = _ids(s.x_labelled), _ids(s.x_val), _ids(s.x_unlabelled), _ids(s.x_test)
    assert len(lab) == 10 and len(val) == 42 and len(unl) == 320 - 52 and len(test) == 80
    assert not (lab & val) and not (val & unl) and not (val & test) and not (lab & unl)
    assert lab | val | unl == set(np.flatnonzero(~mask))
    assert s.n_val == 42 and s.x_val.dtype == np.float32 and s.y_val.dtype == np.int64
    np.testing.assert_array_equal(s.y_val, y[sorted(val)])
    np.testing.assert_array_equal(np.bincount(s.y_val, minlength=4), [11, 11, 10, 10])
    assert s.description.endswith(", 42 validation (10-11 per class, +1 for classes 0..1)")


def test_validation_split_leaves_the_labelled_draw_alone_and_follows_the_seed():
    x, y, mask = _toy()
    kw = dict(n_classes=4, n_labelled=12, test_mask=mask, name="toy", image_shape=(2, 3))
    without = make_split(x, y, seed=5, **kw)
    with_val = make_split(x, y, seed=5, val_size=40, **kw)
    np.testing.assert_array_equal(without.x_labelled, with_val.x_labelled)
    assert without.n_val == 0 and without.x_val.shape == (0, 6) and without.y_val.shape == (0,)
    assert "validation" not in without.description
    again = make_split(x, y, seed=5, val_size=40, **kw)
    np.testing.assert_array_equal(again.x_val, with_val.x_val)
    other = make_split(x, y, seed=6, val_size=40, **kw)
    assert _ids(other.x_val) != _ids(with_val.x_val)


def test_validation_split_errors():
    x, y, mask = _toy()
    kw = dict(n_classes=4, n_labelled=10, test_mask=mask, name="toy", image_shape=(2, 3), seed=0)
    with pytest.raises(DatasetError, match="cannot draw 311 validation examples from a training pool of 310"):
        make_split(x, y, val_size=311, **kw)
    with pytest.raises(DatasetError, match="validation size must be >= 0"):
        make_split(x, y, val_size=-1, **kw)
    with pytest.raises(DatasetError, match=r"class 0 has only 77 .* but 78 validation were requested"):
        make_split(x, y, val_size=310, **kw)


def test_a_split_built_without_validation_has_an_empty_one():
    s = SemiSupervisedSplit(np.zeros((2, 4), np.float32), np.zeros(2, np.int64), np.zeros((3, 4), np.float32),
                            np.zeros((1, 4), np.float32), np.zeros(1, np.int64), 2, (2, 2), "t", "t")
    assert s.n_val == 0 and s.x_val.shape == (0, 4) and s.y_val.dtype == np.int64


def test_digits_and_mnist_loaders_take_val_size(tmp_path):
    s = load_digits_split(n_labelled=100, seed=0, val_size=200)
    assert s.n_labelled == 100 and s.n_val == 200 and s.n_unlabelled == 1438 - 300 and s.n_test == 359
    np.testing.assert_array_equal(np.bincount(s.y_val, minlength=10), np.full(10, 20))
    np.testing.assert_array_equal(load_split("digits", n_labelled=100, seed=0, val_size=200).x_val, s.x_val)
    np.testing.assert_array_equal(load_digits_split(n_labelled=100, seed=0).x_labelled, s.x_labelled)
    d, _, labels = fake_t10k_dir(tmp_path, n=100)
    m = load_mnist_split(d, n_labelled=10, seed=0, val_size=20)
    lab, val, unl = row_index(m.x_labelled), row_index(m.x_val), row_index(m.x_unlabelled)
    assert len(val) == 20 and not set(val) & (set(lab) | set(unl))
    assert set(lab) | set(val) | set(unl) == {i for i in range(100) if i % 5 != 4}
    np.testing.assert_array_equal(m.y_val, labels[val])
    np.testing.assert_array_equal(load_split("mnist", data_dir=d, n_labelled=10, val_size=20).x_val, m.x_val)


# ---------------------------------------------------------------------------- configuration


def test_defaults_table_covers_every_option_of_every_dataset():
    keys = {"steps", "epochs", "eval_every", "val_size", "batch_size", "labelled_batch_size", "lr", "lr_schedule",
            "lr_final", "alpha", "clip_grad", "binarize", "hidden", "z_dim", "classifier"}
    for name, row in DATASET_DEFAULTS.items():
        assert keys <= set(row), (name, keys - set(row))
    assert DATASET_DEFAULTS["digits"]["val_size"] == 200 and DATASET_DEFAULTS["mnist"]["val_size"] == 1000


def test_resolve_turns_defaults_into_numbers():
    split = load_digits_split(n_labelled=100, seed=0, val_size=200)
    cfg = resolve(TrainConfig(), split)
    assert cfg.steps == 3000 and cfg.epochs is None  # the digits default, in steps
    assert cfg.eval_every == cfg.steps // 20 and cfg.labelled_batch_size == 64
    assert cfg.alpha == pytest.approx(0.1 * 1238 / 100) and cfg.lr_final == pytest.approx(cfg.lr / 100)
    assert resolve(TrainConfig(epochs=2), split).steps == 2 * 18
    assert resolve(TrainConfig(steps=7), split).steps == 7
    with pytest.raises(DatasetError, match="--steps or --epochs, not both"):
        TrainConfig(steps=3, epochs=2).with_defaults()
    with pytest.raises(DatasetError, match="--val-size must be at least 0"):
        TrainConfig(val_size=-1).with_defaults()
    with pytest.raises(DatasetError, match="--clip-grad"):
        TrainConfig(clip_grad=-1.0).with_defaults()
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize("dataset,model,classifier", [("digits", "m2", "mlp"), ("mnist", "m2", "conv"),
                                                      ("mnist", "m1m2", "conv"), ("digits", "m1m2", "mlp")])
def test_the_classifier_default_follows_dataset_and_model(dataset, model, classifier):
    """MNIST's M2 and M1+M2 classify the images with the CNN; on digits M1+M2's MLP reads M1's features."""
    assert TrainConfig(dataset=dataset, model=model).with_defaults().classifier == classifier
    assert TrainConfig(dataset=dataset, model="m2", classifier="mlp").with_defaults().classifier == "mlp"
    if (dataset, model) == ("mnist", "m1m2"):
        cfg = TrainConfig(dataset=dataset, model=model).with_defaults()
        assert (cfg.m1_hidden, cfg.m1_z_dim, cfg.m1_warmup, cfg.warmup) == ((500,), 20, 5000, 0)


@pytest.mark.parametrize("schedule", ["constant", "cosine", "exp"])
def test_learning_rate_schedules_start_at_lr_and_end_at_lr_final(schedule):
    f = learning_rate_factor(schedule, 1e-2, 1e-4, 100)
    assert f(0) == 1.0
    assert f(100) == pytest.approx(1.0 if schedule == "constant" else 1e-2)
    assert f(50) == pytest.approx({"constant": 1.0, "cosine": (1 + 1e-2) / 2, "exp": 1e-1}[schedule])
