"""The training command's other models and loss options: M1 alone (its bounds in nats), the stacked
M1+M2 (M1 first, then M2 on its features; resume, evaluate and sample on its run directory), KL warm-up
and several samples of z per example."""

from __future__ import annotations

import os

import pytest
import torch

from ssvae_fast import M1M2
from ssvae_fast.__main__ import main
from ssvae_fast.training import TrainConfig, resume, train
from ssvae_fast.training import batches, checkpoint
from ssvae_fast.training.config import kl_weight

SMALL = dict(labels=20, val_size=50, hidden=(32,), z_dim=4, batch_size=64, backend="torch", progress=False,
             m1_hidden=(32,), m1_z_dim=6, m1_steps=40)


def test_kl_weight_schedule():
    assert [kl_weight(s, 4) for s in (1, 2, 4, 9)] == [0.25, 0.5, 1.0, 1.0]
    assert kl_weight(1, 0) == 1.0


def test_m1_run_reports_its_bounds_in_nats(tmp_path, capsys):
    result = train(TrainConfig(**SMALL, model="m1", iw_samples=64), out=str(tmp_path))
    test = result.test
    assert test["iw_samples"] == 64 and test["n_test"] == result.split.n_test
    assert test["log_likelihood"] > test["elbo"]  # the importance-weighted bound is the tighter one
    assert result.m1.val_elbo is not None and result.test_accuracy is None
    assert "nats" in result.summary()
    from ssvae_fast import M1

    assert M1.load(tmp_path / "m1.pt").z_dim == 6
    assert main(["evaluate", str(tmp_path)]) == 1  # one line naming M1.load, not a missing best.pt
    assert "M1.load" in capsys.readouterr().err


def test_m1_warmup_is_m1s_and_warmup_is_m2s(monkeypatch):
    """M1's KL weight follows m1_warmup alone (M2's `warmup` leaves M1 unchanged), M2's follows warmup."""
    from ssvae_fast import M1, M2

    seen = {"M1": [], "M2": []}
    for cls in (M1, M2):
        original = cls.loss

        def recording(self, *args, _original=original, _name=cls.__name__, **kwargs):
            seen[_name].append(kwargs.get("kl_weight", 1.0))
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(cls, "loss", recording)
    base = dict(SMALL, model="m1m2", steps=8, eval_every=8, test=False, m1_steps=8)
    train(TrainConfig(**base, m1_warmup=4, warmup=0))
    assert seen["M1"][:5] == [0.25, 0.5, 0.75, 1.0, 1.0] and set(seen["M2"]) == {1.0}
    a = train(TrainConfig(**base, m1_warmup=0, warmup=4))
    b = train(TrainConfig(**base, m1_warmup=0, warmup=0))
    assert a.m1.val_elbo == b.m1.val_elbo  # M2's warm-up leaves M1's training alone
    assert TrainConfig(dataset="digits").with_defaults().m1_warmup == 0


def test_m1m2_run_and_resume(tmp_path):
    """M1 trains first (its steps reported), M2 then trains on its features; a resumed M1+M2 run (M1 read
    back from the checkpoint) ends bit-identical to the uninterrupted one."""
    cfg = TrainConfig(**SMALL, model="m1m2", steps=16, eval_every=4, warmup=6)
    whole = train(cfg, out=str(tmp_path / "whole"))
    assert isinstance(whole.model, M1M2) and whole.m1.steps == 40 and whole.config.likelihood == "gaussian"
    assert whole.model.m2.x_dim == 6 and 0.0 <= whole.test_accuracy <= 1.0
    first = train(cfg, out=str(tmp_path / "split"), stop_after=8)
    assert not first.finished
    rest = resume(str(tmp_path / "split"))
    a, b = (checkpoint.load(os.path.join(tmp_path / name, "last.pt")) for name in ("whole", "split"))
    for name, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][name]), name
    assert rest.test_accuracy == whole.test_accuracy
    model = checkpoint.model_from(a)
    assert isinstance(model, M1M2)


@pytest.mark.parametrize("classifier", ["mlp", "conv"])
def test_m1m2_subcommands(tmp_path, capsys, classifier):
    """train, evaluate and sample on an M1+M2 run directory, its classifier on M1's features (mlp) or on the
    images (conv)."""
    out = str(tmp_path / "run")
    args = ["train", "--model", "m1m2", "--labels", "20", "--val-size", "50", "--hidden", "32", "--z-dim", "4",
            "--m1-hidden", "32", "--m1-z-dim", "6", "--m1-steps", "30", "--steps", "8", "--backend", "torch",
            "--classifier", classifier, "--no-progress", "--out", out]
    assert main(args) == 0
    assert "after M1: 30 steps" in capsys.readouterr().out
    model = checkpoint.model_from(checkpoint.load(os.path.join(out, "best.pt")))
    assert model.classifies_images == (classifier == "conv")
    assert main(["evaluate", out]) == 0
    assert "class consistency" in capsys.readouterr().out
    assert main(["sample", out, "--out", str(tmp_path / "s.png"), "--per-class", "2"]) == 0
    assert os.path.getsize(tmp_path / "s.png") > 0


def test_samples_repeat_each_example_with_its_own_noise():
    g = torch.Generator().manual_seed(0)
    sampler = batches.BatchSampler(5, 7, 2, 3, g)
    x_l, y_l, x_u = torch.rand(5, 4), torch.arange(5), torch.rand(7, 4)
    batch = batches.draw(sampler, x_l, y_l, x_u, binarize="none", n_classes=3, z_dim=2, n_samples=3)
    assert batch.x_l.shape == (6, 4) and batch.x_u.shape == (9, 4) and batch.eps_u.shape == (9, 3, 2)
    assert torch.equal(batch.x_l[0], batch.x_l[2]) and torch.equal(batch.y_l[:3], batch.y_l[:1].expand(3))
    assert not torch.equal(batch.eps_l[0], batch.eps_l[1])
    result = train(TrainConfig(**{**SMALL, "m1_steps": None}, steps=6, samples=2))
    assert result.steps == 6


@pytest.mark.parametrize("bad,match", [(dict(model="m3"), "--model"), (dict(warmup=-1), "--warmup"),
                                       (dict(m1_warmup=-2), "--m1-warmup"),
                                       (dict(samples=0), "--samples"), (dict(m1_hidden=(0,)), "--m1-hidden"),
                                       (dict(precision="fp16"), "--precision"), (dict(classifier="cnn"), "--classifier"),
                                       (dict(shift=-1), "--shift"), (dict(shift=1, classifier="conv"), "--model m1m2"),
                                       (dict(model="m1m2", classifier="mlp", shift=2), "--classifier conv")])
def test_bad_options(bad, match):
    from ssvae_fast.data import DatasetError

    with pytest.raises(DatasetError, match=match):
        train(TrainConfig(**{**SMALL, **bad}))


def test_shift_gives_the_classifier_shifted_images_and_leaves_the_rest_of_the_batch_alone():
    """draw(shift=s): c_l and c_u are the batch's binarized images, each shifted (drawn after everything
    else, so x, y and the noise are those of the unshifted batch)."""
    x_l, y_l, x_u = torch.rand(5, 16), torch.arange(5), torch.rand(7, 16)

    def batch(shift):
        g = torch.Generator().manual_seed(0)
        return batches.draw(batches.BatchSampler(5, 7, 2, 3, g), x_l, y_l, x_u, binarize="dynamic", n_classes=3,
                            z_dim=2, shift=shift), g

    plain, _ = batch(0)
    shifted, _ = batch(2)
    assert plain.c_l is None and plain.c_u is None
    for a, b in zip(plain[:5], shifted[:5]):
        assert torch.equal(a, b)
    assert shifted.c_l.shape == (2, 16) and shifted.c_u.shape == (3, 16)
    again, _ = batch(2)  # a function of the seed
    assert torch.equal(again.c_l, shifted.c_l) and torch.equal(again.c_u, shifted.c_u)
    assert not torch.equal(shifted.c_u, shifted.x_u)  # moved (a 3-row batch of 4x4 images, offsets in [-2, 2])
    # each row is its image under one of the 25 offsets (zeros shifted in)
    for c, x in zip(torch.cat([shifted.c_l, shifted.c_u]), torch.cat([shifted.x_l, shifted.x_u])):
        img, pad = x.reshape(4, 4), torch.nn.functional.pad(x.reshape(4, 4), (2, 2, 2, 2))
        assert any(torch.equal(c.reshape(4, 4), pad[2 - dy : 6 - dy, 2 - dx : 6 - dx])
                   for dy in range(-2, 3) for dx in range(-2, 3)), img


def test_m1m2_classifier_reads_the_given_inputs():
    """M1M2.loss with classifier_inputs: q(y|.) reads them, the generative terms read the images; the
    images themselves as classifier inputs give the default loss bit for bit. A training run with --shift
    hands the shifted images to the loss."""
    from ssvae_fast import M1, M2

    torch.manual_seed(0)
    model = M1M2(M1(16, 6, hidden=(8,)), M2(6, 3, 2, hidden=(8,), likelihood="gaussian", classifier="conv",
                                             classifier_x_dim=16))
    x_l, y_l, x_u = torch.rand(4, 16).round(), torch.tensor([0, 1, 2, 0]), torch.rand(5, 16).round()

    def loss(**kw):
        return model.loss(x_l, y_l, x_u, alpha=1.0, generator=torch.Generator().manual_seed(1), **kw)

    assert torch.equal(loss(), loss(classifier_inputs=(x_l, x_u)))
    assert not torch.equal(loss(), loss(classifier_inputs=(1 - x_l, 1 - x_u)))

    seen = []
    original = M1M2.loss

    def recording(self, x_l, y_l, x_u, **kwargs):
        seen.append((x_l, x_u, kwargs.get("classifier_inputs")))
        return original(self, x_l, y_l, x_u, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(M1M2, "loss", recording)
        train(TrainConfig(**{**SMALL, "m1_steps": 4}, model="m1m2", classifier="conv", shift=1, steps=3,
                          eval_every=3, test=False))
    assert len(seen) == 3
    for xl, xu, inputs in seen:
        assert inputs is not None and inputs[0].shape == xl.shape and inputs[1].shape == xu.shape
    assert any(not torch.equal(inputs[1], xu) for _, xu, inputs in seen)


def test_gumbel_estimator_trains_with_an_annealed_temperature():
    from ssvae_fast.training.config import gumbel_temperature

    cfg = TrainConfig(**SMALL, steps=6, estimator="gumbel", temperature=2.0, temperature_min=0.5,
                      temperature_anneal=0.1)
    assert gumbel_temperature(0, cfg) == 2.0 and gumbel_temperature(100, cfg) == 0.5
    assert gumbel_temperature(3, cfg) == pytest.approx(2.0 * 2.718281828 ** -0.3)
    g = torch.Generator().manual_seed(0)
    batch = batches.draw(batches.BatchSampler(5, 7, 2, 3, g), torch.rand(5, 4), torch.arange(5), torch.rand(7, 4),
                         binarize="none", n_classes=3, z_dim=2, estimator="gumbel")
    assert batch.eps_u.shape == (3, 2) and batch.gumbel.shape == (3, 3)
    result = train(cfg)
    assert result.steps == 6 and 0.0 <= result.test_accuracy <= 1.0


def test_m1m2_trains_digits_end_to_end():
    """M1 (1,500 steps) then M2 on its features (1,000 steps) on the digits' 100 labels: a test accuracy far
    above chance and near M2's own (92.2% when measured; M2 alone, 3,000 steps: 95.5%)."""
    result = train(TrainConfig(model="m1m2", m1_steps=1500, steps=1000, seed=0, progress=False))
    assert result.config.binarize == "dynamic"  # the digits M1+M2 default
    assert result.test_accuracy > 0.85, result.summary()


def _record_autocast(monkeypatch, cls):
    """Wrap cls.loss to record whether CPU autocast (and to which dtype) was on at each call."""
    seen, loss = [], cls.loss

    def recorded(self, *args, **kwargs):
        on = torch.is_autocast_enabled("cpu")
        seen.append(torch.get_autocast_dtype("cpu") if on else None)
        return loss(self, *args, **kwargs)

    monkeypatch.setattr(cls, "loss", recorded)
    return seen


@pytest.mark.parametrize("model", ["m2", "m1m2"])
def test_bf16_precision_trains_under_cpu_autocast(monkeypatch, model):
    """--precision bf16: every training loss (M1's, M2's) runs under CPU autocast in bfloat16 while the
    parameters stay float32; the run trains like the float32 one (close, not equal, losses)."""
    from ssvae_fast import M1, M2

    cfg = dict(SMALL, model=model, backend="cpu", steps=40, eval_every=20, m1_steps=20)
    seen_m2 = _record_autocast(monkeypatch, M2)
    seen_m1 = _record_autocast(monkeypatch, M1)
    half = train(TrainConfig(**cfg, precision="bf16"))
    assert seen_m2[:40] == [torch.bfloat16] * 40  # the training steps (evaluations run in float32)
    assert seen_m1[:20] == ([torch.bfloat16] * 20 if model == "m1m2" else [])
    assert all(p.dtype == torch.float32 for p in half.model.parameters())
    seen_m2.clear()
    full = train(TrainConfig(**cfg))
    assert seen_m2[:40] == [None] * 40
    a, b = [r["train_loss"] for r in half.history], [r["train_loss"] for r in full.history]
    assert a != b and a == pytest.approx(b, rel=0.05)
