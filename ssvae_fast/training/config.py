"""The training configuration: the per-dataset defaults table and their resolution against a split."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Optional

import torch

from .. import data

#: Per-dataset defaults of every training option left unset (None). One table, so that choosing new
#: defaults on validation is an edit of one row. `steps` None: `epochs` passes over the unlabelled pool;
#: `eval_every` None: about 20 evaluations per run; `labelled_batch_size` None: min(labels, batch_size);
#: `alpha` None: 0.1 * N_total / N_labelled (Kingma et al.); `lr_final` None: lr / 100.
DATASET_DEFAULTS = {
    # Chosen on validation (benchmarks/tune_training.py; README "Choosing the defaults"): 3000 steps and
    # relu led both digits sweeps (seeds 100-102 and 103-107).
    "digits": dict(
        steps=3000, epochs=None, eval_every=None, val_size=200, hidden=(256,), z_dim=16, activation="relu",
        batch_size=64, labelled_batch_size=None, lr=3e-3, lr_schedule="constant", lr_final=None, alpha=None,
        clip_grad=0.0, binarize="none", classifier="mlp", shift=0, ema=0.0,
        m1_steps=3000, m1_hidden=(256,), m1_z_dim=16, m1_lr=1e-3, m1_batch_size=64, m1_warmup=0,
    ),
    # The best MNIST (t10k protocol) setting on validation so far: 100 + 100 examples a step, alpha 200,
    # gradient-norm clipping at 5, cosine schedule, dynamic binarization (draws 100-102: 81.5% mean against
    # 80.9% without it), the convolutional classifier (the same draws: 88.2% against 81.5% with the MLP).
    "mnist": dict(
        steps=15000, epochs=None, eval_every=None, val_size=1000, hidden=(500,), z_dim=50, activation="softplus",
        batch_size=100, labelled_batch_size=None, lr=1e-3, lr_schedule="cosine", lr_final=None, alpha=200.0,
        clip_grad=5.0, binarize="dynamic", classifier="conv", shift=0, ema=0.0,
        m1_steps=10000, m1_hidden=(600, 600), m1_z_dim=50, m1_lr=1e-3, m1_batch_size=100, m1_warmup=0,
    ),
}

#: What a model other than M2 changes in its dataset's row (its own defaults, chosen on validation too).
MODEL_DEFAULTS = {
    # Dynamic binarization led the digits M1+M2 sweeps (README "Choosing the defaults").
    ("digits", "m1m2"): dict(binarize="dynamic"),
    # M1 of 500 hidden units, 20 latent dimensions and 5,000 steps of KL warm-up (every latent dimension
    # stays active), q(y|x) a CNN on the images, which it reads shifted by up to 2 pixels in training,
    # M2's latent of 20 dimensions on M1's features: draws 100-102, README "Choosing the defaults".
    ("mnist", "m1m2"): dict(classifier="conv", m1_hidden=(500,), m1_z_dim=20, m1_warmup=5000, shift=2, z_dim=20),
}

MODELS = ("m2", "m1", "m1m2")
ESTIMATORS = ("enumerate", "gumbel")
#: What the training losses' forward passes run in: "fp32", or "bf16" (torch.autocast in bfloat16 on the
#: run's device; parameters, optimizer state and gradients stay float32).
PRECISIONS = ("fp32", "bf16")
#: The options that hold layer sizes (tuples here, lists in JSON).
SIZE_OPTIONS = ("hidden", "classifier_hidden", "encoder_hidden", "decoder_hidden", "m1_hidden")

#: How many evaluations a run makes when `eval_every` is left to the default.
EVALUATIONS_PER_RUN = 20

LR_SCHEDULES = ("constant", "cosine", "exp")


@dataclass
class TrainConfig:
    """What a training run does. None means "the dataset's default" (`DATASET_DEFAULTS`); `resolve`
    turns every None into a number once the split is known. `steps` and `epochs` are alternatives."""

    dataset: str = "digits"
    model: str = "m2"  # "m2", "m1" (the VAE alone: its bounds in nats) or "m1m2" (M2 on M1's features)
    data_dir: Optional[str] = None
    labels: int = 100
    steps: Optional[int] = None
    epochs: Optional[int] = None
    eval_every: Optional[int] = None
    val_size: Optional[int] = None
    batch_size: Optional[int] = None
    labelled_batch_size: Optional[int] = None
    lr: Optional[float] = None
    lr_schedule: Optional[str] = None
    lr_final: Optional[float] = None
    alpha: Optional[float] = None
    clip_grad: Optional[float] = None
    ema: Optional[float] = None  # decay of the weights' moving average that is evaluated and kept (0: off)
    hidden: Optional[tuple] = None
    classifier: Optional[str] = None  # "mlp", or "conv" (a convolutional classifier, square images)
    classifier_hidden: Optional[tuple] = None  # per-network overrides of `hidden`
    shift: Optional[int] = None  # random translations (pixels) of the images a classifier of images reads in training
    encoder_hidden: Optional[tuple] = None
    decoder_hidden: Optional[tuple] = None
    z_dim: Optional[int] = None
    activation: Optional[str] = None
    likelihood: Optional[str] = None  # M2's: "bernoulli" on pixels; m1m2's M2 is always "gaussian"
    warmup: int = 0  # steps of KL warm-up of M2's loss: the KL weight rises linearly from 0 to 1
    samples: int = 1  # Monte-Carlo samples of z per (x, y) in the training loss
    estimator: str = "enumerate"  # the unlabelled term's: "enumerate" (exact) or "gumbel" (relaxed, one pass)
    temperature: float = 1.0  # the Gumbel-softmax temperature at step 0, annealed (`gumbel_temperature`)
    temperature_min: float = 0.5
    temperature_anneal: float = 3e-5  # per step: T = max(temperature_min, temperature * exp(-rate * step))
    m1_steps: Optional[int] = None  # M1 (models m1 and m1m2): its steps, layers, latent size, lr, batch
    m1_hidden: Optional[tuple] = None
    m1_z_dim: Optional[int] = None
    m1_lr: Optional[float] = None
    m1_batch_size: Optional[int] = None
    m1_warmup: Optional[int] = None  # M1's KL warm-up steps (models m1 and m1m2; 0: off)
    iw_samples: int = 5000  # model m1: samples of the importance-weighted test bound
    backend: str = "auto"
    precision: str = "fp32"  # "bf16": the losses' forward passes under torch.autocast in bfloat16
    binarize: Optional[str] = None
    seed: int = 0
    baseline: bool = False  # also train the classifier alone on the labelled examples, for comparison
    test: bool = True  # score the selected model on the test split at the end (False: while choosing settings)
    device: str = "cpu"
    progress: bool = True

    def with_defaults(self) -> "TrainConfig":
        """A copy with the dataset's defaults filled in (run length still possibly in epochs)."""
        if self.dataset not in DATASET_DEFAULTS:
            raise data.DatasetError(f"unknown dataset {self.dataset!r}; choose one of {sorted(DATASET_DEFAULTS)}")
        if self.model not in MODELS:
            raise data.DatasetError(f"unknown --model {self.model!r}; choose one of {MODELS}")
        if self.steps is not None and self.epochs is not None:
            raise data.DatasetError("give --steps or --epochs, not both")
        out = replace(self)
        defaults = dict(DATASET_DEFAULTS[self.dataset], **MODEL_DEFAULTS.get((self.dataset, self.model), {}))
        if self.steps is not None:
            defaults["epochs"] = None  # the run's length was given in steps
        if self.epochs is not None:
            defaults["steps"] = None  # ... or in epochs
        for key, value in defaults.items():
            if getattr(out, key) is None:
                setattr(out, key, value)
        for name in SIZE_OPTIONS:
            value = getattr(out, name)
            if value is not None:
                setattr(out, name, tuple(int(h) for h in value))
        if out.likelihood is None or out.model == "m1m2":
            out.likelihood = "gaussian" if out.model == "m1m2" else "bernoulli"
        _check(out)
        return out

    def to_dict(self) -> dict:
        """Plain values only (lists, not tuples): what config.json and checkpoints hold."""
        out = asdict(self)
        for name in SIZE_OPTIONS:
            out[name] = None if getattr(self, name) is None else list(getattr(self, name))
        return out

    @classmethod
    def from_dict(cls, values: dict) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise data.DatasetError(f"unknown training option(s) in the run's config: {', '.join(unknown)}")
        out = cls(**values)
        for name in SIZE_OPTIONS:
            if getattr(out, name) is not None:
                setattr(out, name, tuple(getattr(out, name)))
        return out


def autocast_dtype(cfg: TrainConfig) -> Optional[torch.dtype]:
    """The dtype the training losses' forward passes autocast to (None: no autocast)."""
    return torch.bfloat16 if cfg.precision == "bf16" else None


def autocast(dtype: Optional[torch.dtype], device_type: str):
    """torch.autocast(device_type, dtype) when dtype is given; a context that does nothing otherwise."""
    return torch.autocast(device_type, dtype=dtype or torch.bfloat16, enabled=dtype is not None)


def steps_per_epoch(n_unlabelled: int, batch_size: int) -> int:
    """Optimizer steps in one pass over the unlabelled pool (the last batch may be smaller)."""
    return max(1, math.ceil(n_unlabelled / batch_size))


def resolve(config: TrainConfig, split: data.SemiSupervisedSplit) -> TrainConfig:
    """Every option as a concrete value for `split`: run length in steps, evaluation period, labelled
    batch size, alpha and the final learning rate."""
    cfg = config.with_defaults()
    cfg.labels, cfg.val_size = split.n_labelled, split.n_val  # what the split holds, when it was given
    if cfg.steps is None:
        cfg.steps = cfg.epochs * steps_per_epoch(split.n_unlabelled, cfg.batch_size)
    cfg.epochs = None
    if cfg.eval_every is None:
        cfg.eval_every = max(1, cfg.steps // EVALUATIONS_PER_RUN)
    if cfg.labelled_batch_size is None:
        cfg.labelled_batch_size = min(split.n_labelled, cfg.batch_size)
    if cfg.alpha is None:
        cfg.alpha = 0.1 * (split.n_labelled + split.n_unlabelled) / split.n_labelled
    if cfg.lr_final is None:
        cfg.lr_final = cfg.lr / 100
    _check(cfg)
    return cfg


def _check(cfg: TrainConfig) -> None:
    for name in ("labels", "steps", "epochs", "eval_every", "batch_size", "labelled_batch_size", "z_dim", "samples",
                 "m1_steps", "m1_z_dim", "m1_batch_size", "iw_samples"):
        value = getattr(cfg, name)
        if value is not None and value < 1:
            raise data.DatasetError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
    if cfg.shift is not None and cfg.shift < 0:
        raise data.DatasetError(f"--shift must be at least 0 (0 = off), got {cfg.shift}")
    if cfg.shift and not (cfg.model == "m1m2" and cfg.classifier == "conv"):
        raise data.DatasetError(
            "--shift translates the images a classifier of images reads, beside the generative terms: it needs "
            f"--model m1m2 --classifier conv (q(y|x) on the images), not --model {cfg.model} --classifier {cfg.classifier}")
    if cfg.val_size is not None and cfg.val_size < 0:
        raise data.DatasetError(f"--val-size must be at least 0, got {cfg.val_size}")
    if cfg.classifier not in ("mlp", "conv"):
        raise data.DatasetError(f"unknown --classifier {cfg.classifier!r}; choose mlp or conv")
    if cfg.precision not in PRECISIONS:
        raise data.DatasetError(f"unknown --precision {cfg.precision!r}; choose one of {PRECISIONS}")
    if cfg.estimator not in ESTIMATORS:
        raise data.DatasetError(f"unknown --estimator {cfg.estimator!r}; choose one of {ESTIMATORS}")
    if not (cfg.temperature > 0 and cfg.temperature_min > 0 and cfg.temperature_anneal >= 0):
        raise data.DatasetError("--temperature and --temperature-min must be positive, --temperature-anneal >= 0")
    for name in ("warmup", "m1_warmup"):
        value = getattr(cfg, name)
        if value is not None and value < 0:
            raise data.DatasetError(f"--{name.replace('_', '-')} must be at least 0 (0 = off), got {value}")
    for name in SIZE_OPTIONS:
        value = getattr(cfg, name)
        if value is not None and (len(value) == 0 or min(value) < 1):
            raise data.DatasetError(f"--{name.replace('_', '-')} must be one or more positive sizes, got {list(value)}")
    if cfg.likelihood is not None and cfg.likelihood not in ("bernoulli", "gaussian"):
        raise data.DatasetError(f"unknown --likelihood {cfg.likelihood!r}; choose bernoulli or gaussian")
    for name in ("lr", "lr_final", "m1_lr"):
        value = getattr(cfg, name)
        if value is not None and not value > 0:
            raise data.DatasetError(f"--{name.replace('_', '-')} must be positive, got {value}")
    if cfg.alpha is not None and not cfg.alpha >= 0:
        raise data.DatasetError(f"--alpha must be non-negative, got {cfg.alpha}")
    if cfg.clip_grad is not None and not cfg.clip_grad >= 0:
        raise data.DatasetError(f"--clip-grad must be non-negative (0 = off), got {cfg.clip_grad}")
    if cfg.ema is not None and not 0 <= cfg.ema < 1:
        raise data.DatasetError(f"--ema must be in [0, 1) (0 = off), got {cfg.ema}")
    if cfg.lr_schedule is not None and cfg.lr_schedule not in LR_SCHEDULES:
        raise data.DatasetError(f"unknown --lr-schedule {cfg.lr_schedule!r}; choose one of {LR_SCHEDULES}")
    if cfg.binarize is not None and cfg.binarize not in data.BINARIZE_MODES:
        raise data.DatasetError(f"unknown --binarize {cfg.binarize!r}; choose one of {data.BINARIZE_MODES}")


def learning_rate_factor(schedule: str, lr: float, lr_final: float, total_steps: int):
    """The multiplier of `lr` after `t` optimizer steps (a function of t, for LambdaLR): constant 1;
    cosine from 1 to lr_final / lr over the run; exp geometric from 1 to lr_final / lr."""
    ratio = lr_final / lr
    span = max(1, total_steps)
    if schedule == "constant":
        return lambda t: 1.0
    if schedule == "cosine":
        return lambda t: ratio + (1.0 - ratio) * 0.5 * (1.0 + math.cos(math.pi * min(t, span) / span))
    if schedule == "exp":
        return lambda t: ratio ** (min(t, span) / span)
    raise data.DatasetError(f"unknown --lr-schedule {schedule!r}; choose one of {LR_SCHEDULES}")


def kl_weight(step: int, warmup: int) -> float:
    """The KL weight at optimizer step `step` (1-based) of a KL warm-up over `warmup` steps: step / warmup
    up to 1 (deterministic, so a resumed run continues the same schedule); 1 without warm-up."""
    return 1.0 if warmup <= 0 else min(1.0, step / warmup)


def ema_decay(step: int, decay: float) -> float:
    """The moving average's decay after optimizer step `step` (1-based): `decay`, held lower early on,
    (1 + step) / (10 + step), so the average does not keep the initial weights for ~1 / (1 - decay) steps."""
    return min(decay, (1.0 + step) / (10.0 + step))


def gumbel_temperature(step: int, cfg: TrainConfig) -> float:
    """The Gumbel-softmax temperature at optimizer step `step`: exponential annealing from cfg.temperature
    at rate cfg.temperature_anneal per step, never below cfg.temperature_min (Jang et al., 2017)."""
    return max(cfg.temperature_min, cfg.temperature * math.exp(-cfg.temperature_anneal * step))


def optimizer_and_schedule(params, cfg: TrainConfig):
    """Adam (fused: one kernel for all parameters) at cfg.lr and the LambdaLR of cfg.lr_schedule over
    cfg.steps: what M2 and the baseline both train with."""
    optimizer = torch.optim.Adam(params, lr=cfg.lr, fused=True)
    factor = learning_rate_factor(cfg.lr_schedule, cfg.lr, cfg.lr_final, cfg.steps)
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
