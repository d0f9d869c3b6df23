"""Training M1, the VAE: alone (`--model m1`, its test bounds in nats) or as the first stage of M1+M2.

M1 sees every image of the training pool (labelled and unlabelled; labels unused, validation and test
images never), `m1_batch_size` at a time, for `m1_steps` Adam steps at `m1_lr` with the run's learning-rate
schedule, clipping and binarization, and its own KL warm-up over `m1_warmup` steps. Its validation ELBO is reported at the end.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Optional

import torch

from .. import data
from ..m1 import M1
from .checkpoint import TrainingError
from .config import TrainConfig, autocast, autocast_dtype, kl_weight, learning_rate_factor
from .progress import progress_bar

#: Seed of the noise (and binarization) of M1's evaluations: their own generator.
EVAL_SEED = 0


@dataclass
class M1Result:
    model: M1
    steps: int
    wall_time_s: float
    val_elbo: Optional[float]  # mean ELBO per validation image, nats (None without a validation split)

    def record(self) -> dict:
        return {"steps": self.steps, "wall_time_s": self.wall_time_s, "val_elbo": self.val_elbo}


def build_m1(cfg: TrainConfig, x_dim: int) -> M1:
    return M1(x_dim, cfg.m1_z_dim, hidden=cfg.m1_hidden, activation=cfg.activation, backend=cfg.backend)


def train_m1(cfg: TrainConfig, split: data.SemiSupervisedSplit, device, *, progress: bool = False) -> M1Result:
    """Train M1 on the training pool's images as the resolved `cfg` says (seeded by cfg.seed)."""
    to = lambda a: torch.as_tensor(a).to(device)  # noqa: E731
    x = torch.cat([to(split.x_labelled), to(split.x_unlabelled)])
    torch.manual_seed(cfg.seed)
    model = build_m1(cfg, split.x_dim).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.m1_lr, fused=True)
    factor = learning_rate_factor(cfg.lr_schedule, cfg.m1_lr, cfg.m1_lr / 100, cfg.m1_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    generator = torch.Generator(device=device).manual_seed(cfg.seed + 1_000_003)
    bar = progress_bar(cfg.m1_steps, 0, progress, desc="train M1")
    perm, pos, start = None, x.shape[0], time.perf_counter()
    for step in range(1, cfg.m1_steps + 1):
        if pos >= x.shape[0]:
            perm, pos = torch.randperm(x.shape[0], device=device, generator=generator), 0
        idx = perm[pos : pos + cfg.m1_batch_size]
        pos += cfg.m1_batch_size
        xb = data.binarize(x[idx], cfg.binarize, generator)
        eps = torch.randn(xb.shape[0] * cfg.samples, model.z_dim, dtype=xb.dtype, device=device, generator=generator)
        with autocast(autocast_dtype(cfg), device.type):
            loss = model.loss(xb, eps=eps, kl_weight=kl_weight(step, cfg.m1_warmup), n_samples=cfg.samples)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        value = float(loss.detach())
        if not math.isfinite(value):
            bar.close()
            raise TrainingError(f"M1, step {step}: the loss is not finite ({value})")
        if cfg.clip_grad > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_grad)
        optimizer.step()
        scheduler.step()
        bar.update(1)
        if step % 100 == 0:
            bar.set_postfix(loss=f"{value:.2f}")
    bar.close()
    wall = time.perf_counter() - start
    model.eval()
    val_elbo = None
    if split.n_val:
        val_elbo = float(elbo(model, to(split.x_val), cfg.binarize).mean())
    return M1Result(model, cfg.m1_steps, wall, val_elbo)


@torch.no_grad()
def elbo(model: M1, x: torch.Tensor, binarize: str, batch_size: int = 1000) -> torch.Tensor:
    """Each image's ELBO in nats (one draw of z), images binarized as in training, from a fixed seed."""
    generator = torch.Generator(device=x.device).manual_seed(EVAL_SEED)
    x = data.binarize(x, binarize, generator)
    return torch.cat([model.elbo(x[i : i + batch_size], generator=generator) for i in range(0, x.shape[0], batch_size)])


@torch.no_grad()
def test_bounds(model: M1, x: torch.Tensor, binarize: str, iw_samples: int) -> dict:
    """The test set's mean ELBO and importance-weighted bound (K = iw_samples) per image, in nats."""
    generator = torch.Generator(device=x.device).manual_seed(EVAL_SEED)
    xb = data.binarize(x, binarize, generator)
    start = time.perf_counter()
    bound = model.log_likelihood(xb, n_samples=iw_samples, generator=generator)
    return {"elbo": float(elbo(model, x, binarize).mean()), "log_likelihood": float(bound.mean()),
            "iw_samples": iw_samples, "n_test": x.shape[0], "bound_wall_s": time.perf_counter() - start}
