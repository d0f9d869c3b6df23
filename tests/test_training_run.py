"""A run directory: resume, checkpoints, model selection on validation, metrics, figures, subcommands,
several seeds, the baseline and a non-finite loss."""

from __future__ import annotations

import json
import os
import statistics

import numpy as np
import pytest
import torch
from matplotlib import image as mpimg

import ssvae_fast.training.loop as loop
from ssvae_fast import M2
from ssvae_fast.__main__ import main
from ssvae_fast.data import load_digits_split
from ssvae_fast.images import style_figure
from ssvae_fast.training import METRIC_KEYS, TrainConfig, accuracy, resume, train, train_baseline
from ssvae_fast.training import checkpoint, plots
from ssvae_fast.training.evaluate import first_test_image_of_each_class

SMALL = dict(labels=20, val_size=50, hidden=(32,), z_dim=4, batch_size=64, backend="torch", progress=False)
SMALL_ARGS = ["--labels", "20", "--val-size", "50", "--hidden", "32", "--z-dim", "4", "--backend", "torch",
              "--no-progress"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    result = train(TrainConfig(**SMALL, steps=30, eval_every=10), out=str(out))
    return out, result


def _state(path):
    return checkpoint.load(os.path.join(path, "last.pt"))


def test_resume_is_bit_identical_to_an_uninterrupted_run(tmp_path):
    cfg = TrainConfig(**SMALL, steps=24, eval_every=6, lr_schedule="cosine", binarize="dynamic", clip_grad=5.0)
    whole = train(cfg, out=str(tmp_path / "whole"))
    first = train(cfg, out=str(tmp_path / "split"), stop_after=12)
    assert not first.finished and _state(tmp_path / "split")["step"] == 12
    rest = resume(str(tmp_path / "split"))
    assert rest.finished and rest.steps == 24 and rest.selected_step == whole.selected_step
    a, b = _state(tmp_path / "whole"), _state(tmp_path / "split")
    for name, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][name]), name
    for pid, state in a["optimizer"]["state"].items():
        for key, value in state.items():
            assert torch.equal(value, b["optimizer"]["state"][pid][key]), (pid, key)
    assert torch.equal(a["rng"]["generator"], b["rng"]["generator"])
    assert a["scheduler"]["last_epoch"] == b["scheduler"]["last_epoch"] == 24
    rows = lambda r: [dict(row, wall_s=None) for row in r.history]  # noqa: E731
    assert rows(whole) == rows(rest) and len(rest.history) == 4
    assert whole.test_accuracy == rest.test_accuracy
    metrics = (tmp_path / "split" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in metrics] == [6, 12, 18, 24]


def test_resume_from_the_command_line(tmp_path, capsys):
    train(TrainConfig(**SMALL, steps=8, eval_every=4), out=str(tmp_path), stop_after=4)
    assert main(["train", "--resume", str(tmp_path), "--no-progress"]) == 0
    assert "8 steps" in capsys.readouterr().out and _state(tmp_path)["step"] == 8
    assert main(["train", "--resume", str(tmp_path), "--lr", "0.1"]) == 2
    assert "drop --lr" in capsys.readouterr().err


def _boom(obj, f, *args, **kwargs):
    f.write(b"PK\x03\x04 half a checkpoint")
    raise OSError("disk full")


def test_an_interrupted_checkpoint_write_leaves_the_previous_one(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    checkpoint.atomic_save({"format": checkpoint.FORMAT, "step": 1, "w": torch.ones(3)}, path)
    monkeypatch.setattr(torch, "save", _boom)
    with pytest.raises(OSError, match="disk full"):
        checkpoint.atomic_save({"format": checkpoint.FORMAT, "step": 2, "w": torch.zeros(3)}, path)
    monkeypatch.undo()
    kept = checkpoint.load(path)
    assert kept["step"] == 1 and torch.equal(kept["w"], torch.ones(3))
    assert os.listdir(tmp_path) == ["last.pt"]  # no temporary file left behind


class _Payload:
    def __reduce__(self):
        return (_mark, (os.environ.get("SSVAE_FAST_TEST_MARK", "/nonexistent/mark"),))


def _mark(path):
    open(path, "w").close()
    return {}


def test_checkpoints_load_weights_only_and_refuse_arbitrary_pickles(run_dir, tmp_path, monkeypatch):
    out, _ = run_dir
    state = torch.load(out / "best.pt", weights_only=True)  # tensors and plain values only
    assert state["format"] == checkpoint.FORMAT and isinstance(state["config"], dict)
    assert {"torch_cpu", "generator"} <= set(state["rng"]) and state["rng"]["generator"].dtype == torch.uint8
    assert {"model", "optimizer", "scheduler", "sampler", "step", "best", "wall_s"} <= set(state)
    mark = tmp_path / "ran"
    monkeypatch.setenv("SSVAE_FAST_TEST_MARK", str(mark))
    evil = tmp_path / "evil.pt"
    torch.save({"format": checkpoint.FORMAT, "x": _Payload()}, evil)
    with pytest.raises(checkpoint.TrainingError, match="weights_only"):
        checkpoint.load(evil)
    assert not mark.exists()


def test_model_selection_follows_validation_not_test(monkeypatch, tmp_path):
    """Validation labels shifted by one class: validation and test then disagree on the best step; the
    run must pick validation's, and look at the test set once, at the end."""
    split = load_digits_split(n_labelled=20, seed=0, val_size=50)
    split.y_val = (split.y_val + 1) % split.n_classes
    x_test, y_test = torch.as_tensor(split.x_test), torch.as_tensor(split.y_test)
    test_by_step, test_looks = {}, []
    row_of = loop._evaluation_row

    def spy_row(model, x_val, y_val, step, *args):
        test_by_step[step] = accuracy(model, x_test, y_test)
        return row_of(model, x_val, y_val, step, *args)

    evaluate_of = loop.evaluate_set

    def spy_evaluate(model, x, y):
        if x.shape[0] == x_test.shape[0]:
            test_looks.append(len(test_by_step))
        return evaluate_of(model, x, y)

    monkeypatch.setattr(loop, "_evaluation_row", spy_row)
    monkeypatch.setattr(loop, "evaluate_set", spy_evaluate)
    result = train(TrainConfig(**SMALL, steps=40, eval_every=4), split, out=str(tmp_path))
    val = {row["step"]: row["val_accuracy"] for row in result.history}
    by_val = max(val, key=lambda s: (val[s], -s))  # the first step with the best validation accuracy
    by_test = max(test_by_step, key=lambda s: (test_by_step[s], -s))
    assert by_val != by_test, (val, test_by_step)
    assert result.selected_step == by_val and result.val_accuracy == val[by_val]
    assert result.test_accuracy == test_by_step[by_val]
    assert test_looks == [10]  # once, after all 10 evaluations
    assert checkpoint.load(tmp_path / "best.pt")["step"] == by_val


def test_metrics_rows_have_the_documented_keys(run_dir):
    out, result = run_dir
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rows] == [10, 20, 30] and rows == result.history
    for row in rows:
        assert set(row) == set(METRIC_KEYS)
        for key in METRIC_KEYS:
            assert isinstance(row[key], (int, float)) and np.isfinite(row[key]), key
        assert 0 <= row["val_accuracy"] <= 1 and 0 <= row["val_class_consistency"] <= 1
        assert row["val_total"] == pytest.approx(
            row["val_reconstruction"] + row["val_kl"] + np.log(10) + row["val_entropy"])
    assert json.loads((out / "config.json").read_text())["steps"] == 30


def _gray(path):
    rgba = mpimg.imread(path)
    return np.rint(rgba[..., 0] * 255).astype(np.uint8), rgba.shape


def test_figures_decode_with_the_expected_sizes(run_dir):
    out, result = run_dir
    model = checkpoint.model_from(checkpoint.load(out / "best.pt"))
    samples, _ = _gray(out / plots.SAMPLES)
    assert np.array_equal(samples, plots.samples_picture(model))  # 10 rows of 10, 8x8 digits at 7x
    assert samples.shape == (10 * (56 + 2) + 2, 10 * (56 + 2) + 2)
    styles, _ = _gray(out / plots.STYLES)
    assert np.array_equal(styles, style_figure(model, first_test_image_of_each_class(result.split)))
    for name, (width, height) in ((plots.LATENT, plots.LATENT_SIZE), (plots.CURVES, plots.CURVES_SIZE)):
        picture = mpimg.imread(out / name)
        assert picture.shape[:2] == (height, width), name
        assert picture[..., :3].std() > 0.05, name  # something was drawn


def test_evaluate_and_sample_subcommands(run_dir, tmp_path, capsys):
    out, result = run_dir
    record = tmp_path / "eval.json"
    assert main(["evaluate", str(out), "--json", str(record)]) == 0
    text = capsys.readouterr().out
    assert "validation (50 images): accuracy" in text and "test (359 images): accuracy" in text
    assert "class consistency" in text and "reconstruction" in text
    figures = json.loads(record.read_text())
    assert figures["step"] == result.selected_step
    assert figures["test"]["accuracy"] == pytest.approx(result.test_accuracy)
    assert figures["validation"]["accuracy"] == pytest.approx(result.val_accuracy)
    assert main(["evaluate", str(out), "--checkpoint", "last", "--json", str(record)]) == 0
    assert json.loads(record.read_text())["step"] == 30
    png = tmp_path / "samples.png"
    assert main(["sample", str(out), "--out", str(png), "--per-class", "3", "--seed", "1"]) == 0
    model = checkpoint.model_from(checkpoint.load(out / "best.pt"))
    assert np.array_equal(_gray(png)[0], plots.samples_picture(model, per_class=3, seed=1))


def test_seeds_print_a_table_with_mean_and_std(tmp_path, capsys):
    record = tmp_path / "seeds.json"
    code = main(["train", "--seeds", "0", "1", "2", "--steps", "12", "--eval-every", "4", "--baseline",
                 *SMALL_ARGS, "--json", str(record), "--out", str(tmp_path / "runs")])
    assert code == 0
    text = capsys.readouterr().out
    assert "| seed | val acc | test acc | baseline test acc | steps | wall s |" in text
    data = json.loads(record.read_text())
    tests = [run["test_accuracy"] for run in data["runs"]]
    assert [run["seed"] for run in data["runs"]] == [0, 1, 2] and len(set(tests)) > 1
    assert data["test_accuracy"]["mean"] == pytest.approx(statistics.fmean(tests))
    assert data["test_accuracy"]["std"] == pytest.approx(statistics.stdev(tests))
    mean_row = [line for line in text.splitlines() if line.startswith("| mean ± std")][0]
    assert f"{100 * statistics.fmean(tests):.2f}% ± {100 * statistics.stdev(tests):.2f}%" in mean_row
    assert "test accuracy over 3 label draws" in text and "model selection used 50 validation labels" in text
    for seed in (0, 1, 2):
        assert (tmp_path / "runs" / f"seed-{seed}" / "best.pt").exists()
    assert (tmp_path / "runs" / "seeds.md").exists()


def test_baseline_starts_from_m2s_classifier_and_trains_it_alone():
    split = load_digits_split(n_labelled=20, seed=3, val_size=50)
    cfg = loop.resolve(TrainConfig(**{**SMALL, "seed": 3}, steps=6, eval_every=3, lr=1e-12), split)
    torch.manual_seed(3)
    untrained = M2(split.x_dim, split.n_classes, cfg.z_dim, hidden=cfg.hidden, activation=cfg.activation)
    x_test, y_test = torch.as_tensor(split.x_test), torch.as_tensor(split.y_test)
    frozen = train_baseline(cfg, split, "cpu")  # a learning rate too small to move any prediction
    assert frozen.test_accuracy == accuracy(untrained, x_test, y_test)
    trained = train_baseline(loop.resolve(TrainConfig(**{**SMALL, "seed": 3}, steps=60, eval_every=20), split),
                             split, "cpu")
    assert trained.test_accuracy > 0.3 and [h["step"] for h in trained.history] == [20, 40, 60]
    assert trained.val_accuracy == max(h["val_accuracy"] for h in trained.history)


def test_a_non_finite_loss_stops_the_run_naming_step_and_term(tmp_path, monkeypatch, capsys):
    draw = loop.batches.draw
    calls = []

    def poisoned(*args, **kwargs):
        batch = draw(*args, **kwargs)
        calls.append(1)
        if len(calls) == 7:
            batch.eps_u[0, 0, 0] = float("inf")  # z = inf for one (example, class): its reconstruction is not finite
        return batch

    monkeypatch.setattr(loop.batches, "draw", poisoned)
    code = main(["train", "--steps", "20", "--eval-every", "3", *SMALL_ARGS, "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 1 and len(err.strip().splitlines()) == 1
    assert "step 7:" in err and "reconstruction = nan" in err and "kl =" not in err
    last = checkpoint.load(tmp_path / "last.pt")  # the last good checkpoint, intact
    assert last["step"] == 6 and all(torch.isfinite(t).all() for t in last["model"].values())
    assert [json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [3, 6]


def test_ema_is_the_moving_average_it_evaluates_and_keeps(tmp_path, monkeypatch):
    """--ema: after every optimizer step the average moves toward the weights by 1 - decay(step), computed
    here independently from the recorded weights; validation scores the average, best.pt / model_from
    and the result's model hold it, and a resumed run ends bit-identical to an uninterrupted one."""
    from ssvae_fast.training.config import ema_decay

    assert ema_decay(1, 0.999) == 2 / 11 and ema_decay(10**6, 0.999) == 0.999
    seen = []
    real_step = torch.optim.Adam.step

    def recording_step(self, *a, **k):
        out = real_step(self, *a, **k)
        seen.append([p.detach().clone() for g in self.param_groups for p in g["params"]])
        return out

    monkeypatch.setattr(torch.optim.Adam, "step", recording_step)
    cfg = TrainConfig(**SMALL, steps=12, eval_every=4, ema=0.9)
    result = train(cfg, out=str(tmp_path / "whole"))
    average = [w.clone() for w in seen[0]]
    for step, weights in enumerate(seen[1:], start=2):
        d = min(0.9, (1 + step) / (10 + step))
        average = [d * a + (1 - d) * w for a, w in zip(average, weights)]
    ck = checkpoint.load(os.path.join(tmp_path / "whole", "last.pt"))
    trained = [n for n, p in result.model.named_parameters() if p.requires_grad]
    for name, expected, raw in zip(trained, average, seen[-1]):
        assert torch.allclose(ck["ema"][name], expected, rtol=1e-5, atol=1e-6), name
        assert torch.equal(ck["model"][name], raw), name  # the trained weights are kept beside it
        assert not torch.equal(ck["ema"][name], raw), name
    best = checkpoint.load(os.path.join(tmp_path / "whole", "best.pt"))
    model = checkpoint.model_from(best)
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, best["ema"][name]), name
        assert torch.equal(result.model.state_dict()[name], tensor), name  # the selected average
    step_of_best = [row["step"] for row in result.history].index(result.selected_step)
    assert result.history[step_of_best]["val_accuracy"] == result.val_accuracy

    monkeypatch.setattr(torch.optim.Adam, "step", real_step)
    whole = train(cfg, out=str(tmp_path / "again"))
    train(cfg, out=str(tmp_path / "split"), stop_after=8)
    rest = resume(str(tmp_path / "split"))
    a, b = _state(tmp_path / "again"), _state(tmp_path / "split")
    for name, tensor in a["ema"].items():
        assert torch.equal(tensor, b["ema"][name]), name
    assert rest.test_accuracy == whole.test_accuracy and rest.val_accuracy == whole.val_accuracy


def test_ema_off_keeps_no_average_and_bad_decays_are_refused(tmp_path):
    train(TrainConfig(**SMALL, steps=4, eval_every=4), out=str(tmp_path / "run"))
    assert _state(tmp_path / "run")["ema"] is None
    for bad in (1.0, -0.1, 1.5):
        with pytest.raises(Exception, match="--ema must be in"):
            TrainConfig(**SMALL, ema=bad).with_defaults()
