"""The main job: a short training run learns, and the command line fails with one-line errors."""

import subprocess
import sys

import pytest
import torch

from ssvae_fast.__main__ import main
from ssvae_fast.data import load_digits_split
from ssvae_fast.train import TrainConfig, train


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
