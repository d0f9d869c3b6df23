"""The supervised baseline: M2's classifier network trained alone on the labelled examples.

Same network and initialization (`M2(...).classifier` built under the same seed), same number of steps,
labelled batch size, binarization, random shifts (`--shift`), optimizer, learning-rate schedule and
clipping, cross-entropy only;
selected on the same validation split, tested once. What M2 adds over it is what the unlabelled data
bought.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Optional

import torch
import torch.nn.functional as F

from .. import data
from ..images import random_shift
from ..model import M2
from .batches import BatchSampler
from .config import TrainConfig, autocast, autocast_dtype, optimizer_and_schedule
from .evaluate import accuracy


@dataclass
class BaselineResult:
    test_accuracy: float
    val_accuracy: Optional[float]  # of the selected network; None without a validation split
    selected_step: int
    steps: int
    wall_time_s: float
    history: list = field(default_factory=list)  # {"step", "train_loss", "val_accuracy"} per evaluation

    def record(self) -> dict:
        return {"test_accuracy": self.test_accuracy, "val_accuracy": self.val_accuracy,
                "selected_step": self.selected_step, "steps": self.steps, "wall_time_s": self.wall_time_s,
                "history": self.history}


def train_baseline(cfg: TrainConfig, split: data.SemiSupervisedSplit, device) -> BaselineResult:
    """Train and test the baseline for a resolved `cfg` on `split`."""
    to = lambda a: torch.as_tensor(a).to(device)  # noqa: E731
    x_l, y_l, x_val, y_val = to(split.x_labelled), to(split.y_labelled), to(split.x_val), to(split.y_val)
    torch.manual_seed(cfg.seed)
    net = M2(split.x_dim, split.n_classes, cfg.z_dim, hidden=cfg.hidden, activation=cfg.activation,
             classifier_hidden=cfg.classifier_hidden, classifier=cfg.classifier).classifier
    net = net.to(device)
    optimizer, scheduler = optimizer_and_schedule(net.parameters(), cfg)
    generator = torch.Generator(device=device).manual_seed(cfg.seed)
    sampler = BatchSampler(x_l.shape[0], 0, cfg.labelled_batch_size, cfg.batch_size, generator)

    best_acc, best_step, best_state, history, running, n_running = None, cfg.steps, None, [], 0.0, 0
    start = time.perf_counter()
    for step in range(1, cfg.steps + 1):
        net.train()
        idx, _ = sampler.next()
        with autocast(autocast_dtype(cfg), x_l.device.type):  # the same precision as the M2 run beside it
            xb = random_shift(data.binarize(x_l[idx], cfg.binarize, generator), cfg.shift or 0, generator)
            loss = F.cross_entropy(net(xb), y_l[idx])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.clip_grad > 0:
            torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.clip_grad)
        optimizer.step()
        scheduler.step()
        running, n_running = running + float(loss.detach()), n_running + 1
        if step % cfg.eval_every and step != cfg.steps:
            continue
        net.eval()
        val_acc = accuracy(net, x_val, y_val) if x_val.shape[0] else None
        history.append({"step": step, "train_loss": running / n_running, "val_accuracy": val_acc})
        running, n_running = 0.0, 0
        if val_acc is not None and (best_acc is None or val_acc > best_acc):
            best_acc, best_step, best_state = val_acc, step, copy.deepcopy(net.state_dict())
    wall = time.perf_counter() - start
    if best_state is not None:
        net.load_state_dict(best_state)
    net.eval()
    test_acc = accuracy(net, to(split.x_test), to(split.y_test))
    return BaselineResult(test_acc, best_acc, best_step, cfg.steps, wall, history)
