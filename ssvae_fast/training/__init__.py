"""Training M2: the loop, its configuration, evaluation, checkpoints, figures and command line.

    from ssvae_fast.training import TrainConfig, train
    result = train(TrainConfig(dataset="digits", labels=100, steps=2000), out="runs/digits")
    print(result.summary())

Modules: `config` (options and the per-dataset defaults table), `batches` (what each step sees),
`loop` (train, resume), `evaluate` (accuracy, class consistency, loss terms), `checkpoint` (atomic,
weights-only files), `baseline` (the classifier alone), `distributed` (torchrun), `seeds` (several label
draws), `plots` (the run's pictures), `cli` (the subcommands).
"""

from .baseline import BaselineResult, train_baseline
from .checkpoint import TrainingError
from .config import DATASET_DEFAULTS, LR_SCHEDULES, TrainConfig, resolve
from .evaluate import accuracy, class_consistency, evaluate_set, first_test_image_of_each_class, loss_terms
from .loop import METRIC_KEYS, NonFiniteLoss, TrainResult, resume, train
from .seeds import mean_std, run_seeds, seeds_table

__all__ = [
    "BaselineResult", "DATASET_DEFAULTS", "LR_SCHEDULES", "METRIC_KEYS", "NonFiniteLoss", "TrainConfig",
    "TrainResult", "TrainingError", "accuracy", "class_consistency", "evaluate_set",
    "first_test_image_of_each_class", "loss_terms", "mean_std", "resolve", "resume", "run_seeds", "seeds_table",
    "train", "train_baseline",
]
