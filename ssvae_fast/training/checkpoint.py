"""A run's checkpoints: written atomically, read with `torch.load(weights_only=True)`.

A checkpoint is a dict of tensors and plain values: `format`, `config` (the resolved training config),
`model_config` (M2's constructor arguments; for M1+M2 those of M1 and M2), `model`, `optimizer` and `scheduler` state dicts, `rng` (the
torch CPU state, the CUDA states when CUDA is in use, the data generator's state, all uint8 tensors),
`sampler` (where the batch sampler stands), `step`, `best` (step and validation accuracy of the best
evaluation so far), `wall_s` (training time so far) and, for a run with `--ema`, `ema` (the moving average
of the weights: the model that is evaluated, selected and loaded by `model_from`).
"""

from __future__ import annotations

import os
import tempfile
from typing import Optional

import torch

from ..model import M2
from ..stacked import M1M2

FORMAT = "ssvae_fast.run/1"
BEST, LAST = "best.pt", "last.pt"


class TrainingError(RuntimeError):
    """A run that cannot go on (a non-finite loss, an unreadable checkpoint); the message is one line."""


def atomic_save(obj, path) -> None:
    """torch.save `obj` to a temporary file in `path`'s folder, fsync it, then os.replace it onto `path`:
    a crash at any moment leaves either the previous file or the new one, never a torn one."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    _fsync_folder(folder)


def _fsync_folder(folder: str) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # a platform without directory handles
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def load(path, map_location="cpu") -> dict:
    """The checkpoint at `path`, read with weights_only=True (a file holding anything but tensors and
    plain values is refused); TrainingError when it is missing or not a run checkpoint."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise TrainingError(f"no checkpoint at {path}")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # pickle, zip and weights_only errors: not a checkpoint this code wrote
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
        raise TrainingError(f"{path}: not a run checkpoint that loads with weights_only=True ({reason})") from None
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != FORMAT:
        raise TrainingError(f"{path}: not a run checkpoint (format {FORMAT!r} expected)")
    return checkpoint


def model_from(checkpoint: dict, *, backend: Optional[str] = None, device="cpu"):
    """The model a checkpoint holds (an M2, or an M1M2 for model m1m2), on `device` (backend: the run's
    unless given)."""
    backend = backend or checkpoint["config"]["backend"]
    config = checkpoint["model_config"]
    model = M1M2.from_config(config, backend=backend) if "m1" in config else M2(**config, backend=backend)
    model.load_state_dict(evaluated_state(checkpoint))
    return model.to(device)


def evaluated_state(checkpoint: dict) -> dict:
    """The weights a checkpoint's evaluations scored: the moving average of a run with `--ema`, the
    trained weights otherwise."""
    return checkpoint["ema"] if checkpoint.get("ema") is not None else checkpoint["model"]


def rng_states(generator: torch.Generator) -> dict:
    """Every random state a run uses, as uint8 tensors."""
    states = {"torch_cpu": torch.get_rng_state(), "generator": generator.get_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["torch_cuda"] = torch.stack(torch.cuda.get_rng_state_all())
    return states


def restore_rng_states(states: dict, generator: torch.Generator) -> None:
    torch.set_rng_state(states["torch_cpu"].cpu())
    generator.set_state(states["generator"].cpu())
    if "torch_cuda" in states and torch.cuda.is_available():
        cuda_states = list(states["torch_cuda"].cpu())
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)


def snapshot(*, config: dict, model, optimizer, scheduler, sampler, generator, step: int, best: dict,
             wall_s: float, ema=None) -> dict:
    """The checkpoint dict of a run at `step` (tensors are the live ones: save it before training on);
    `ema`: the moving-average model of a run with `--ema`."""
    return {
        "format": FORMAT, "config": config, "model_config": model.config, "model": model.state_dict(),
        "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
        "rng": rng_states(generator), "sampler": sampler.state_dict(), "step": int(step),
        "best": dict(best), "wall_s": float(wall_s), "ema": None if ema is None else ema.state_dict(),
    }
