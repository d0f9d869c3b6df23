"""The main job: train M2 semi-supervised and report test accuracy.

    python -m ssvae_fast train                                  # bundled 8x8 digits, 100 labels
    python -m ssvae_fast train --dataset mnist --data-dir DIR   # MNIST IDX files (gzip or raw)

Each step sees one labelled batch (drawn from the N labelled examples, reshuffled when exhausted) and
one unlabelled batch; an epoch is one pass over the unlabelled pool. Adam; progress bar with loss and
test accuracy; one summary line at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Optional

import numpy as np
import torch

from . import backends, data
from .model import M2

# Per-dataset defaults: (epochs, hidden, z_dim, unlabelled batch, learning rate).
DATASET_DEFAULTS = {
    "digits": dict(epochs=80, hidden=(256,), z_dim=16, batch_size=64, lr=3e-3),
    "mnist": dict(epochs=50, hidden=(500,), z_dim=50, batch_size=256, lr=1e-3),
}


@dataclass
class TrainConfig:
    dataset: str = "digits"
    data_dir: Optional[str] = None
    labels: int = 100
    epochs: Optional[int] = None
    batch_size: Optional[int] = None
    labelled_batch_size: Optional[int] = None
    lr: Optional[float] = None
    alpha: Optional[float] = None
    hidden: Optional[tuple] = None
    z_dim: Optional[int] = None
    activation: str = "softplus"
    backend: str = "auto"
    binarize: str = "none"
    seed: int = 0
    device: str = "cpu"
    progress: bool = True

    def resolved(self) -> "TrainConfig":
        """A copy with the dataset's defaults filled in."""
        if self.dataset not in DATASET_DEFAULTS:
            raise data.DatasetError(
                f"unknown dataset {self.dataset!r}; choose one of {sorted(DATASET_DEFAULTS)}"
            )
        out = TrainConfig(**asdict(self))
        for key, value in DATASET_DEFAULTS[self.dataset].items():
            if getattr(out, key) is None:
                setattr(out, key, value)
        out.hidden = tuple(out.hidden)
        if out.labelled_batch_size is None:
            out.labelled_batch_size = min(out.labels, out.batch_size)
        return out


@dataclass
class TrainResult:
    model: M2
    test_accuracy: float
    epochs: int
    wall_time_s: float
    backend: str
    alpha: float
    description: str
    history: list = field(default_factory=list)  # per epoch: {"epoch", "loss", "test_accuracy"}
    split: Optional[data.SemiSupervisedSplit] = None  # the data it was trained and tested on

    def summary(self) -> str:
        return (
            f"test accuracy {100 * self.test_accuracy:.2f}% | {self.description} | "
            f"{self.epochs} epochs in {self.wall_time_s:.1f} s | backend {self.backend}, alpha {self.alpha:.3g}"
        )


@torch.no_grad()
def accuracy(model: M2, x: torch.Tensor, y: torch.Tensor, batch_size: int = 4096) -> float:
    """Fraction of x whose predicted class equals y."""
    correct = 0
    for start in range(0, x.shape[0], batch_size):
        correct += int((model.predict(x[start : start + batch_size]) == y[start : start + batch_size]).sum())
    return correct / max(1, x.shape[0])


def _check_config(cfg: TrainConfig):
    for name in ("labels", "epochs", "batch_size", "labelled_batch_size", "z_dim"):
        value = getattr(cfg, name)
        if value < 1:
            raise data.DatasetError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
    if cfg.lr <= 0:
        raise data.DatasetError(f"--lr must be positive, got {cfg.lr}")
    if cfg.alpha is not None and cfg.alpha < 0:
        raise data.DatasetError(f"--alpha must be non-negative, got {cfg.alpha}")


def train(config: TrainConfig, split: Optional[data.SemiSupervisedSplit] = None) -> TrainResult:
    """Train M2 on `split` (loaded from `config` when None) and return the model and its test accuracy."""
    cfg = config.resolved()
    _check_config(cfg)
    try:
        device = torch.device(cfg.device)
    except RuntimeError as exc:
        raise data.DatasetError(f"bad --device {cfg.device!r}: {exc}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise data.DatasetError("--device cuda asked for, but torch sees no CUDA GPU")
    if split is None:
        split = data.load_split(cfg.dataset, data_dir=cfg.data_dir, n_labelled=cfg.labels, seed=cfg.seed)

    torch.manual_seed(cfg.seed)
    generator = torch.Generator(device=device).manual_seed(cfg.seed)
    to = lambda a: torch.as_tensor(a).to(device)  # noqa: E731
    x_l, y_l, x_u = to(split.x_labelled), to(split.y_labelled), to(split.x_unlabelled)
    x_test, y_test = to(split.x_test), to(split.y_test)
    n_total = x_l.shape[0] + x_u.shape[0]
    alpha = cfg.alpha if cfg.alpha is not None else 0.1 * n_total / x_l.shape[0]

    model = M2(
        split.x_dim, split.n_classes, cfg.z_dim, hidden=cfg.hidden, activation=cfg.activation,
        backend=cfg.backend,
    ).to(device)
    backend = model.resolved_backend(device)  # raises BackendUnavailableError early, with the reason
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, fused=True)  # one kernel for all parameters

    steps_per_epoch = max(1, -(-x_u.shape[0] // cfg.batch_size))
    progress = _progress(cfg.epochs * steps_per_epoch, cfg.progress)
    history, start, lab_perm, lab_pos = [], time.perf_counter(), None, 0
    test_acc = 0.0
    for epoch in range(1, cfg.epochs + 1):
        model.train()
        perm = torch.randperm(x_u.shape[0], device=device, generator=generator)
        epoch_loss = 0.0
        for step in range(steps_per_epoch):
            idx_u = perm[step * cfg.batch_size : (step + 1) * cfg.batch_size]
            if lab_perm is None or lab_pos + cfg.labelled_batch_size > x_l.shape[0]:
                lab_perm = torch.randperm(x_l.shape[0], device=device, generator=generator)
                lab_pos = 0
            idx_l = lab_perm[lab_pos : lab_pos + cfg.labelled_batch_size]
            lab_pos += cfg.labelled_batch_size
            xb_l = data.binarize(x_l[idx_l], cfg.binarize, generator)
            xb_u = data.binarize(x_u[idx_u], cfg.binarize, generator)
            loss = model.loss(xb_l, y_l[idx_l], xb_u, alpha=alpha, generator=generator)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            epoch_loss += float(loss.detach())
            progress.update(1)
        model.eval()
        test_acc = accuracy(model, x_test, y_test)
        history.append({"epoch": epoch, "loss": epoch_loss / steps_per_epoch, "test_accuracy": test_acc})
        progress.set_postfix(epoch=epoch, loss=f"{epoch_loss / steps_per_epoch:.2f}", acc=f"{100 * test_acc:.1f}%")
    progress.close()
    wall = time.perf_counter() - start
    return TrainResult(model, test_acc, cfg.epochs, wall, backend, alpha, split.description, history, split)


def first_test_image_of_each_class(split: data.SemiSupervisedSplit) -> torch.Tensor:
    """(K, D): the first test image of each class that the test set holds, in class order."""
    picks = [int(np.flatnonzero(split.y_test == c)[0]) for c in range(split.n_classes) if (split.y_test == c).any()]
    return torch.as_tensor(split.x_test[picks])


class _NoProgress:
    def update(self, n):
        pass

    def set_postfix(self, **kwargs):
        pass

    def close(self):
        pass


def _progress(total: int, enabled: bool):
    if not enabled:
        return _NoProgress()
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="train", unit="step", dynamic_ncols=True, file=sys.stderr)


def add_train_arguments(parser: argparse.ArgumentParser):
    parser.add_argument("--dataset", default="digits", help="digits (bundled, default) or mnist")
    parser.add_argument("--data-dir", default=None, help="folder with MNIST IDX files (gzip or raw)")
    parser.add_argument("--labels", type=int, default=100, help="labelled examples, stratified by class")
    parser.add_argument("--epochs", type=int, default=None, help="passes over the unlabelled pool")
    parser.add_argument("--batch-size", type=int, default=None, help="unlabelled examples per step")
    parser.add_argument("--labelled-batch-size", type=int, default=None, help="labelled examples per step")
    parser.add_argument("--lr", type=float, default=None, help="Adam learning rate")
    parser.add_argument("--alpha", type=float, default=None, help="default 0.1 * N_total / N_labelled")
    parser.add_argument("--hidden", type=int, nargs="+", default=None, help="hidden layer sizes")
    parser.add_argument("--z-dim", type=int, default=None)
    parser.add_argument("--activation", default="softplus", choices=["softplus", "relu"])
    parser.add_argument("--backend", default="auto", choices=["auto", *backends.BACKENDS])
    parser.add_argument("--binarize", default="none", choices=["none", "threshold", "dynamic"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--json", default=None, help="also write the result and history to this JSON file")
    parser.add_argument("--save", default=None, metavar="FILE", help="save the trained model (M2.load reads it)")
    parser.add_argument("--figure", default=None, metavar="PNG",
                        help="draw the first test image of each class and its style under every class")


def run_from_args(args: argparse.Namespace) -> int:
    cfg = TrainConfig(
        dataset=args.dataset, data_dir=args.data_dir, labels=args.labels, epochs=args.epochs,
        batch_size=args.batch_size, labelled_batch_size=args.labelled_batch_size, lr=args.lr,
        alpha=args.alpha, hidden=tuple(args.hidden) if args.hidden else None, z_dim=args.z_dim,
        activation=args.activation, backend=args.backend, binarize=args.binarize, seed=args.seed,
        device=args.device, progress=not args.no_progress,
    )
    if args.figure:
        _check_writable(args.figure, "--figure")
    if args.save:
        _check_writable(args.save, "--save")
    result = train(cfg)
    print(result.summary())
    if args.save:
        result.model.save(args.save)
        print(f"model saved to {args.save}")
    if args.figure:
        from .images import write_style_figure

        examples = first_test_image_of_each_class(result.split)
        weight = result.model.decoder.output.weight
        write_style_figure(result.model, examples.to(weight.device, weight.dtype), args.figure)
        print(f"figure written to {args.figure}")
    if args.json:
        record = {
            "test_accuracy": result.test_accuracy, "epochs": result.epochs, "wall_time_s": result.wall_time_s,
            "backend": result.backend, "alpha": result.alpha, "split": result.description,
            "config": asdict(cfg.resolved()), "history": result.history,
        }
        with open(args.json, "w") as f:
            json.dump(record, f, indent=2)
    return 0


def _check_writable(path: str, flag: str) -> None:
    """Fail before training, not after it, when `path` cannot be written."""
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder) or not os.access(folder, os.W_OK):
        raise data.DatasetError(f"{flag} {path}: folder {folder} does not exist or is not writable")
