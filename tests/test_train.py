"""The main job: a short training run learns, and the command line fails with one-line errors."""

import subprocess
import sys

import numpy as np
import pytest
import torch

from ssvae_fast import M2
from ssvae_fast.__main__ import main
from ssvae_fast.data import load_digits_split
from ssvae_fast.images import style_figure
from ssvae_fast.training import TrainConfig, accuracy, first_test_image_of_each_class, train
from tests.test_images import read_png

TINY = ["--hidden", "16", "--z-dim", "4", "--labels", "20", "--backend", "torch", "--no-progress"]


def test_training_smoke_loss_falls_and_beats_chance():
    split = load_digits_split(n_labelled=50, seed=0, val_size=100)
    cfg = TrainConfig(labels=50, val_size=100, steps=60, eval_every=10, hidden=(64,), z_dim=8, batch_size=128,
                      backend="torch", progress=False)
    result = train(cfg, split)
    losses = [h["train_loss"] for h in result.history]
    assert len(result.history) == 6 and losses[-1] < 0.8 * losses[0], losses
    assert result.test_accuracy > 0.5  # chance is 0.1 on ten classes
    summary = result.summary()
    assert summary.startswith("test accuracy") and "60 steps" in summary
    assert "model selection used 100 validation labels" in summary


def test_training_is_deterministic_for_a_seed():
    split = load_digits_split(n_labelled=20, seed=0, val_size=50)
    cfg = TrainConfig(labels=20, val_size=50, steps=8, eval_every=4, hidden=(16,), z_dim=4, batch_size=256,
                      backend="torch", progress=False)
    a, b = train(cfg, split), train(cfg, split)
    assert [dict(h, wall_s=0) for h in a.history] == [dict(h, wall_s=0) for h in b.history]
    for pa, pb in zip(a.model.parameters(), b.model.parameters()):
        assert torch.equal(pa, pb)


def test_without_validation_the_last_model_is_reported():
    cfg = TrainConfig(labels=20, val_size=0, steps=6, eval_every=3, hidden=(16,), z_dim=4, backend="torch",
                      progress=False)
    result = train(cfg)
    assert result.selected_step == 6 and result.val_accuracy is None and result.n_val == 0
    assert all(row["val_accuracy"] is None for row in result.history)
    assert "no model selection" in result.summary()


def test_cli_trains_and_prints_summary(tmp_path, capsys):
    out = tmp_path / "result.json"
    code = main(["train", "--epochs", "1", *TINY, "--json", str(out)])
    assert code == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith("test accuracy") and "20 steps" in line  # one pass over 1438 - 20 - 200 images, 64 a step
    assert "model selection used 200 validation labels" in line
    assert out.exists() and "history" in out.read_text()


def test_cli_saves_the_model_and_draws_the_style_figure(tmp_path, capsys):
    model_path, figure = tmp_path / "m2.pt", tmp_path / "styles.png"
    code = main(["train", "--steps", "3", *TINY, "--save", str(model_path), "--figure", str(figure)])
    assert code == 0
    out = capsys.readouterr().out
    assert f"model saved to {model_path}" in out and f"figure written to {figure}" in out
    model = M2.load(model_path)
    assert model.config["hidden"] == [16] and model.config["z_dim"] == 4 and model.x_dim == 64
    accuracy_printed = float(out.split("test accuracy ")[1].split("%")[0])
    split = load_digits_split(n_labelled=20, seed=0, val_size=200)
    assert accuracy(model, torch.as_tensor(split.x_test), torch.as_tensor(split.y_test)) * 100 == pytest.approx(
        accuracy_printed, abs=0.005)
    examples = first_test_image_of_each_class(split)
    assert [int(split.y_test[(torch.as_tensor(split.x_test) == e).all(1).numpy()][0]) for e in examples] == list(range(10))
    picture = read_png(figure)
    assert np.array_equal(picture, style_figure(model, examples))  # 10 rows (one per class) x 11 tiles


def test_cli_checks_output_paths_before_training(tmp_path):
    result = subprocess.run([sys.executable, "-m", "ssvae_fast", "train", "--no-progress", "--save",
                             str(tmp_path / "missing" / "m.pt")], capture_output=True, text=True)
    assert result.returncode == 2 and "--save" in result.stderr and "does not exist" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "test accuracy" not in result.stdout


@pytest.mark.parametrize(
    "argv,message",
    [
        (["train", "--dataset", "cifar"], "unknown dataset"),
        (["train", "--labels", "5000"], "labelled"),
        (["train", "--val-size", "1400"], "validation"),
        (["train", "--dataset", "mnist", "--data-dir", "/nonexistent/mnist"], "not found"),
        (["train", "--dataset", "mnist"], "--data-dir"),
        (["train", "--epochs", "0"], "--epochs must be at least 1"),
        (["train", "--steps", "0"], "--steps must be at least 1"),
        (["train", "--seeds", "0", "1", "--save", "m.pt"], "--save keeps one model"),
        (["train", "--resume", "/nonexistent/run"], "no checkpoint at /nonexistent/run/last.pt"),
        (["evaluate", "/nonexistent/run"], "no checkpoint"),
    ],
)
def test_cli_bad_arguments_give_one_line_errors(argv, message, capsys):
    code = main([*argv, "--no-progress"] if argv[0] == "train" else argv)
    err = capsys.readouterr().err
    assert code in (1, 2)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert message in lines[0]


def test_cli_steps_and_epochs_are_alternatives(capsys):
    with pytest.raises(SystemExit) as info:
        main(["train", "--steps", "5", "--epochs", "1"])
    assert info.value.code == 2 and "not allowed with argument" in capsys.readouterr().err


def test_cli_unavailable_backend_is_one_line():
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU, so the cuda backend may be available")
    result = subprocess.run([sys.executable, "-m", "ssvae_fast", "train", "--backend", "cuda", "--no-progress"],
                            capture_output=True, text=True)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "not available" in result.stderr
