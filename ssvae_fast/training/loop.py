"""The training loop: M2 semi-supervised, model selection on validation, test accuracy once at the end.

Each step sees one labelled batch and one unlabelled batch (`batches.py`); Adam with an optional
learning-rate schedule and gradient-norm clipping. Every `eval_every` steps (and at the last step) the
model is evaluated on the validation split: a row of metrics, `last.pt`, and `best.pt` when validation
accuracy improved. At the end the best model (the last one when there is no validation split) is tested
once on the test set.
"""

from __future__ import annotations

import copy
import json
import math
import os
import time
from dataclasses import dataclass, field
from typing import Optional

import torch

from .. import data
from ..model import M2
from ..stacked import M1M2
from . import batches, checkpoint, distributed
from .baseline import BaselineResult, train_baseline
from .checkpoint import BEST, LAST, TrainingError
from .config import (TrainConfig, autocast_dtype, ema_decay, gumbel_temperature, kl_weight, optimizer_and_schedule,
                     resolve)
from .evaluate import TERMS, evaluate_set, term_sums
from .m1_stage import M1Result, build_m1, test_bounds, train_m1
from .progress import progress_bar

#: The keys of every row of metrics.jsonl (val_* are None when the run has no validation split).
METRIC_KEYS = ("step", "lr", "wall_s", "train_loss", *(f"val_{t}" for t in TERMS), "val_accuracy",
               "val_class_consistency")
CONFIG_FILE, METRICS_FILE, M1_FILE = "config.json", "metrics.jsonl", "m1.pt"


class NonFiniteLoss(TrainingError):
    """The loss (or the gradient) stopped being finite; the message names the step and the term."""


@dataclass
class TrainResult:
    model: object  # the selected M2 / M1M2 (best on validation, or the last one), or the trained M1
    config: TrainConfig  # resolved: every option a value
    test_accuracy: Optional[float]  # of the selected model; None on processes other than rank 0
    val_accuracy: Optional[float]  # of the selected model; None without a validation split
    selected_step: int
    steps: int  # steps trained
    wall_time_s: float
    backend: str
    description: str
    n_val: int
    history: list = field(default_factory=list)  # one dict per evaluation, keys METRIC_KEYS
    test: dict = field(default_factory=dict)  # evaluate_set on the test split, for the selected model
    split: Optional[data.SemiSupervisedSplit] = None
    baseline: Optional[BaselineResult] = None
    finished: bool = True  # False when stopped early (`stop_after`)
    m1: Optional[M1Result] = None  # models m1 and m1m2: M1's training

    @property
    def alpha(self) -> float:
        return self.config.alpha

    def summary(self) -> str:
        if self.config.model == "m1":
            bounds = ("not tested" if not self.test else
                      f"test ELBO {self.test['elbo']:.2f} nats, importance-weighted bound (K = "
                      f"{self.test['iw_samples']}) {self.test['log_likelihood']:.2f} nats per image")
            val = "" if self.m1.val_elbo is None else f" | validation ELBO {self.m1.val_elbo:.2f} nats"
            return (f"M1: {bounds}{val} | {self.description} | {self.steps} steps in {self.wall_time_s:.1f} s | "
                    f"backend {self.backend}")
        if not self.finished:
            return f"stopped at step {self.steps} of {self.config.steps}: `train --resume DIR` continues the run"
        if self.n_val:
            selection = (f"model selection used {self.n_val} validation labels (step {self.selected_step} of "
                         f"{self.steps}, validation accuracy {100 * self.val_accuracy:.2f}%)")
        else:
            selection = "no model selection (--val-size 0: the last step's model)"
        tested = "not tested" if self.test_accuracy is None else f"test accuracy {100 * self.test_accuracy:.2f}%"
        line = f"{tested} | {selection}"
        if self.baseline is not None:
            line += f" | baseline (classifier alone, labelled only) {100 * self.baseline.test_accuracy:.2f}%"
        stage = "" if self.m1 is None else f" (after M1: {self.m1.steps} steps in {self.m1.wall_time_s:.1f} s)"
        return (f"{line} | {self.description} | {self.steps} steps in {self.wall_time_s:.1f} s{stage} | "
                f"backend {self.backend}, alpha {self.alpha:.3g}")

    def record(self) -> dict:
        """The result as plain values (for --json)."""
        return {
            "test_accuracy": self.test_accuracy, "val_accuracy": self.val_accuracy, "seed": self.config.seed,
            "selected_step": self.selected_step, "steps": self.steps, "wall_time_s": self.wall_time_s,
            "backend": self.backend, "alpha": self.alpha, "split": self.description, "n_val": self.n_val,
            "test": self.test, "baseline": None if self.baseline is None else self.baseline.record(),
            "m1": None if self.m1 is None else self.m1.record(), "config": self.config.to_dict(),
            "history": self.history,
        }


def train(config: TrainConfig, split: Optional[data.SemiSupervisedSplit] = None, *, out=None,
          stop_after: Optional[int] = None) -> TrainResult:
    """Train M2 as `config` says on `split` (loaded from the config when None).

    out: the run directory (config.json, metrics.jsonl, best.pt, last.pt, figures); None writes nothing.
    stop_after: stop at the first evaluation at or after this step, as an interrupted run would (its
        last.pt is where `resume` continues)."""
    return _run(config, split, out=out, stop_after=stop_after)


def resume(run_dir, *, steps: Optional[int] = None, progress: Optional[bool] = None, device: Optional[str] = None,
           stop_after: Optional[int] = None) -> TrainResult:
    """Continue the run in `run_dir` from its last.pt (optionally to a larger `steps`). On the CPU the
    result is bit-identical to the run never having stopped."""
    last = checkpoint.load(os.path.join(run_dir, LAST))
    cfg = TrainConfig.from_dict(last["config"])
    if steps is not None:
        if steps < last["step"]:
            raise data.DatasetError(f"--steps {steps} is before the checkpoint's step {last['step']}")
        cfg.steps = steps
    if progress is not None:
        cfg.progress = progress
    if device is not None:
        cfg.device = device
    return _run(cfg, None, out=run_dir, stop_after=stop_after, start=last)


def _device(name: str) -> torch.device:
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise data.DatasetError(f"bad --device {name!r}: {exc}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise data.DatasetError("--device cuda asked for, but torch sees no CUDA GPU")
    return device


def _run(config, split, *, out, stop_after, start: Optional[dict] = None) -> TrainResult:
    procs = distributed.setup(str(_device(config.device)))
    device = procs.device
    pre = config.with_defaults()
    if split is None:
        split = data.load_split(pre.dataset, data_dir=pre.data_dir, n_labelled=pre.labels, seed=pre.seed,
                                val_size=pre.val_size)
    cfg = resolve(config, split)
    if out is not None and procs.is_main:
        os.makedirs(out, exist_ok=True)
        with open(os.path.join(out, CONFIG_FILE), "w") as f:
            json.dump(cfg.to_dict(), f, indent=2)

    to = lambda a: torch.as_tensor(a).to(device)  # noqa: E731
    x_l, y_l, x_u = to(split.x_labelled), to(split.y_labelled), to(split.x_unlabelled)
    x_val, y_val = to(split.x_val), to(split.y_val)
    if cfg.model == "m1":
        return _run_m1(cfg, split, procs, out)

    m1_result = None
    if cfg.model == "m1m2" and start is None:  # the first stage (a resumed run holds M1 in its checkpoint)
        m1_result = train_m1(cfg, split, device, progress=cfg.progress and procs.is_main)
    torch.manual_seed(cfg.seed)
    model = _build_model(cfg, split, None if m1_result is None else m1_result.model).to(device)
    backend = model.resolved_backend(device)  # raises BackendUnavailableError early, with the reason
    optimizer, scheduler = optimizer_and_schedule([p for p in model.parameters() if p.requires_grad], cfg)
    generator = torch.Generator(device=device).manual_seed(cfg.seed)
    sampler = batches.BatchSampler(x_l.shape[0], x_u.shape[0], cfg.labelled_batch_size, cfg.batch_size, generator)

    step, wall_before, best = 0, 0.0, {"step": 0, "val_accuracy": None}
    best_state, history = None, []
    if start is not None:
        model.load_state_dict(start["model"])
        optimizer.load_state_dict(start["optimizer"])
        scheduler.load_state_dict(start["scheduler"])
        sampler.load_state_dict(start["sampler"])
        checkpoint.restore_rng_states(start["rng"], generator)
        step, wall_before, best = start["step"], start["wall_s"], dict(start["best"])
        if best["val_accuracy"] is not None and procs.is_main:
            best_state = checkpoint.evaluated_state(checkpoint.load(os.path.join(out, BEST), map_location=device))
        if procs.is_main:
            history = _read_metrics(out, up_to=step)
    procs.broadcast_(list(model.state_dict().values()))
    # --ema: a copy of the model holds the weights' moving average; it is what is evaluated and kept
    ema = None if not cfg.ema else copy.deepcopy(model).requires_grad_(False)
    if ema is not None and start is not None:
        ema.load_state_dict(checkpoint.evaluated_state(start))

    metrics_path = None if out is None or not procs.is_main else os.path.join(out, METRICS_FILE)
    if metrics_path is not None:
        _write_metrics(metrics_path, history)
    progress = progress_bar(cfg.steps, step, cfg.progress and procs.is_main)
    params = [p for p in model.parameters() if p.requires_grad]
    if ema is not None:
        ema_params = [e for e, p in zip(ema.parameters(), model.parameters()) if p.requires_grad]
        ema_buffers, buffers = list(ema.buffers()), list(model.buffers())
    evaluated = model if ema is None else ema
    t0, running, n_running = time.perf_counter(), 0.0, 0
    finished = True
    while step < cfg.steps:
        step += 1
        model.train()
        batch = batches.draw(sampler, x_l, y_l, x_u, binarize=cfg.binarize, n_classes=split.n_classes,
                             z_dim=cfg.z_dim, n_samples=cfg.samples, estimator=cfg.estimator, shift=cfg.shift)
        loss = distributed.gradients(model, batch, cfg.alpha, procs, kl_weight=kl_weight(step, cfg.warmup),
                                     temperature=gumbel_temperature(step, cfg), autocast_dtype=autocast_dtype(cfg))
        norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in params]))
        loss_value, norm_value = torch.stack([loss, norm]).tolist()  # one synchronization
        if not (math.isfinite(loss_value) and math.isfinite(norm_value)):
            progress.close()
            raise NonFiniteLoss(_diagnose(model, batch, step, loss_value, norm_value, out))
        if cfg.clip_grad > 0 and norm_value > cfg.clip_grad:
            scale = cfg.clip_grad / (norm_value + 1e-6)
            for p in params:
                p.grad.mul_(scale)
        optimizer.step()
        scheduler.step()
        if ema is not None:
            with torch.no_grad():
                torch._foreach_lerp_(ema_params, params, 1.0 - ema_decay(step, cfg.ema))
                if buffers:
                    torch._foreach_copy_(ema_buffers, buffers)
        running, n_running = running + loss_value, n_running + 1
        progress.update(1)
        if step % cfg.eval_every and step != cfg.steps:
            continue
        wall = wall_before + time.perf_counter() - t0
        if procs.is_main:
            evaluated.eval()
            row = _evaluation_row(evaluated, x_val, y_val, step, optimizer, wall, running / n_running)
            history.append(row)
            improved = row["val_accuracy"] is not None and (
                best["val_accuracy"] is None or row["val_accuracy"] > best["val_accuracy"])
            if improved:
                best = {"step": step, "val_accuracy": row["val_accuracy"]}
                best_state = {k: v.detach().clone() for k, v in evaluated.state_dict().items()}
            if out is not None:
                _append_metrics(metrics_path, row)
                state = checkpoint.snapshot(
                    config=cfg.to_dict(), model=model, optimizer=optimizer, scheduler=scheduler, sampler=sampler,
                    generator=generator, step=step, best=best, wall_s=wall, ema=ema)
                checkpoint.atomic_save(state, os.path.join(out, LAST))
                if improved:
                    checkpoint.atomic_save(state, os.path.join(out, BEST))
            progress.set_postfix(loss=f"{running / n_running:.2f}", val=_percent(row["val_accuracy"]))
        running, n_running = 0.0, 0
        if stop_after is not None and step >= stop_after and step < cfg.steps:
            finished = False
            break
    progress.close()
    wall = wall_before + time.perf_counter() - t0

    result = TrainResult(model, cfg, None, best["val_accuracy"], best["step"] if split.n_val else step, step,
                         wall, backend, split.description, split.n_val, history, split=split, finished=finished,
                         m1=m1_result)
    if procs.is_main and finished:
        if best_state is not None:
            model.load_state_dict(best_state)
        elif ema is not None:  # no validation split: the last moving average
            model.load_state_dict(ema.state_dict())
        model.eval()
        if cfg.test:
            result.test = evaluate_set(model, to(split.x_test), to(split.y_test))
            result.test_accuracy = result.test["accuracy"]
        if cfg.baseline:
            result.baseline = train_baseline(cfg, split, device)
        if out is not None:
            from .plots import write_run_figures

            write_run_figures(out, model, split, history)
    procs.barrier()
    return result


def _build_model(cfg: TrainConfig, split, m1=None):
    """The model a run trains: M2 on the images, or (model m1m2) M2 with a Gaussian likelihood on the
    features of `m1` (a fresh M1 when None: a resumed run loads its trained one from the checkpoint), its
    classifier on M1's features (mlp) or on the images (conv)."""
    kwargs = dict(hidden=cfg.hidden, activation=cfg.activation, backend=cfg.backend,
                  classifier_hidden=cfg.classifier_hidden, encoder_hidden=cfg.encoder_hidden,
                  decoder_hidden=cfg.decoder_hidden, classifier=cfg.classifier)
    if cfg.model == "m2":
        return M2(split.x_dim, split.n_classes, cfg.z_dim, likelihood=cfg.likelihood, **kwargs)
    m1 = m1 if m1 is not None else build_m1(cfg, split.x_dim)
    # classifier "conv": q(y|x), a CNN on the images; "mlp": Kingma et al.'s q(y|z1) on M1's features.
    images = split.x_dim if cfg.classifier == "conv" else None
    return M1M2(m1, M2(m1.z_dim, split.n_classes, cfg.z_dim, likelihood="gaussian", classifier_x_dim=images, **kwargs))


def _run_m1(cfg: TrainConfig, split, procs, out) -> TrainResult:
    """Model m1: train the VAE, then (rank 0) its test ELBO and importance-weighted bound in nats."""
    device = procs.device
    trained = train_m1(cfg, split, device, progress=cfg.progress and procs.is_main)
    backend = trained.model.resolved_backend(device)
    result = TrainResult(trained.model, cfg, None, None, trained.steps, trained.steps, trained.wall_time_s, backend,
                         split.description, split.n_val, split=split, m1=trained)
    if procs.is_main:
        if cfg.test:
            result.test = test_bounds(trained.model, torch.as_tensor(split.x_test).to(device), cfg.binarize,
                                      cfg.iw_samples)
        if out is not None:
            trained.model.save(os.path.join(out, M1_FILE))
    procs.barrier()
    return result


def _evaluation_row(model, x_val, y_val, step, optimizer, wall, train_loss) -> dict:
    row = dict.fromkeys(METRIC_KEYS)
    row.update(step=step, lr=optimizer.param_groups[0]["lr"], wall_s=wall, train_loss=train_loss)
    if x_val.shape[0]:
        for key, value in evaluate_set(model, x_val, y_val).items():
            row[f"val_{key}"] = value
    return row


def _diagnose(model, batch, step, loss_value, norm_value, out) -> str:
    """One line naming the step and the non-finite term(s) of the loss (recomputed in plain torch on the
    step's batch) and saying which checkpoint is left."""
    last = None if out is None else os.path.join(out, LAST)
    kept = f"; {last} (the last evaluation's) is intact" if last is not None and os.path.exists(last) else ""
    if math.isfinite(loss_value):
        return f"step {step}: the gradient norm is not finite ({norm_value}) although the loss is ({loss_value:.4g}){kept}"
    with torch.no_grad():
        eps_u = batch.eps_u if batch.gumbel is None else batch.eps_u[:, None].expand(-1, model.n_classes, -1)
        terms = {k: float(v) for k, v in term_sums(model, batch.x_l, batch.y_l, batch.x_u, batch.eps_l, eps_u).items()}
    bad = [f"{k} = {v}" for k, v in terms.items() if not math.isfinite(v)]
    if bad:
        named = "non-finite term " + ", ".join(bad)
    else:
        named = "total (every term is finite in plain torch: " + ", ".join(f"{k} {v:.4g}" for k, v in terms.items()) + ")"
    return f"step {step}: the loss is not finite ({loss_value}): {named}{kept}"


def _percent(value) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def _read_metrics(out, *, up_to: int) -> list:
    path = os.path.join(out, METRICS_FILE)
    if not os.path.exists(path):
        return []
    with open(path) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return [row for row in rows if row["step"] <= up_to]


def _write_metrics(path, rows) -> None:
    with open(path, "w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")


def _append_metrics(path, row) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(row) + "\n")
