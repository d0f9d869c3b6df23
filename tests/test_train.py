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
from ssvae_fast.train import TrainConfig, accuracy, first_test_image_of_each_class, train
from tests.test_images import read_png


def test_training_smoke_loss_falls_and_beats_chance():
    split = load_digits_split(n_labelled=50, seed=0)
    cfg = TrainConfig(labels=50, epochs=6, hidden=(64,), z_dim=8, batch_size=128, backend="torch", progress=False)
    result = train(cfg, split)
    losses = [h["loss"] for h in result.history]
    assert losses[-1] < 0.8 * losses[0], losses
    assert result.test_accuracy > 0.5  # chance is 0.1 on ten classes
    assert "test accuracy" in result.summary() and "6 epochs" in result.summary()


def test_training_is_deterministic_for_a_seed():
    split = load_digits_split(n_labelled=20, seed=0)
    cfg = TrainConfig(labels=20, epochs=1, hidden=(16,), z_dim=4, batch_size=256, backend="torch", progress=False)
    a, b = train(cfg, split), train(cfg, split)
    assert a.history == b.history
    for pa, pb in zip(a.model.parameters(), b.model.parameters()):
        assert torch.equal(pa, pb)


def test_cli_trains_and_prints_summary(tmp_path, capsys):
    out = tmp_path / "result.json"
    code = main(["train", "--epochs", "1", "--hidden", "16", "--z-dim", "4", "--labels", "20",
                 "--backend", "torch", "--no-progress", "--json", str(out)])
    assert code == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith("test accuracy") and "1 epochs" in line
    assert out.exists() and "history" in out.read_text()


def test_cli_saves_the_model_and_draws_the_style_figure(tmp_path, capsys):
    model_path, figure = tmp_path / "m2.pt", tmp_path / "styles.png"
    code = main(["train", "--epochs", "1", "--hidden", "16", "--z-dim", "4", "--labels", "20", "--backend", "torch",
                 "--no-progress", "--save", str(model_path), "--figure", str(figure)])
    assert code == 0
    out = capsys.readouterr().out
    assert f"model saved to {model_path}" in out and f"figure written to {figure}" in out
    model = M2.load(model_path)
    assert model.config["hidden"] == [16] and model.config["z_dim"] == 4 and model.x_dim == 64
    accuracy_printed = float(out.split("test accuracy ")[1].split("%")[0])
    split = load_digits_split(n_labelled=20, seed=0)
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
        (["train", "--dataset", "mnist", "--data-dir", "/nonexistent/mnist"], "not found"),
        (["train", "--dataset", "mnist"], "--data-dir"),
        (["train", "--epochs", "0"], "--epochs must be at least 1"),
    ],
)
def test_cli_bad_arguments_give_one_line_errors(argv, message):
    result = subprocess.run([sys.executable, "-m", "ssvae_fast", *argv, "--no-progress"], capture_output=True, text=True)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert message in lines[0]


def test_cli_unavailable_backend_is_one_line():
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU, so the cuda backend may be available")
    result = subprocess.run([sys.executable, "-m", "ssvae_fast", "train", "--backend", "cuda", "--no-progress"],
                            capture_output=True, text=True)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "not available" in result.stderr
