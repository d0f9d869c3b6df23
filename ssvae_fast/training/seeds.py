"""Several label draws: one run per seed, a markdown table, mean and sample standard deviation."""

from __future__ import annotations

import math
import os
import statistics
from typing import Optional, Sequence

from .config import TrainConfig
from .loop import TrainResult, train


def run_seeds(config: TrainConfig, seeds: Sequence[int], out=None) -> list:
    """One run per seed (the seed draws the labels, the validation split, the init and the batches);
    with `out`, run s writes to out/seed-s."""
    results = []
    for seed in seeds:
        cfg = TrainConfig.from_dict({**config.to_dict(), "seed": int(seed)})
        results.append(train(cfg, out=None if out is None else os.path.join(out, f"seed-{seed}")))
    return results


def mean_std(values: Sequence[float]) -> tuple:
    """(mean, sample standard deviation); the deviation is nan for fewer than two values."""
    values = [v for v in values if v is not None]
    if not values:
        return math.nan, math.nan
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else math.nan


def _pct(value: Optional[float]) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{100 * value:.2f}%"


def _pct_pm(values) -> str:
    mean, std = mean_std(values)
    if math.isnan(mean):
        return "n/a"
    return f"{100 * mean:.2f}%" + ("" if math.isnan(std) else f" ± {100 * std:.2f}%")


def seeds_table(results: Sequence[TrainResult]) -> str:
    """Markdown: a row per seed (validation and test accuracy of the selected model, the baseline's
    test accuracy when it ran, steps, wall seconds), then mean ± sample standard deviation."""
    with_baseline = any(r.baseline is not None for r in results)
    head = ["seed", "val acc", "test acc"] + (["baseline test acc"] if with_baseline else []) + ["steps", "wall s"]
    lines = ["| " + " | ".join(head) + " |", "| --- |" + " ---: |" * (len(head) - 1)]
    for r in results:
        cells = [str(r.config.seed), _pct(r.val_accuracy), _pct(r.test_accuracy)]
        if with_baseline:
            cells.append(_pct(None if r.baseline is None else r.baseline.test_accuracy))
        lines.append("| " + " | ".join(cells + [str(r.steps), f"{r.wall_time_s:.1f}"]) + " |")
    cells = ["mean ± std", _pct_pm([r.val_accuracy for r in results]), _pct_pm([r.test_accuracy for r in results])]
    if with_baseline:
        cells.append(_pct_pm([r.baseline.test_accuracy for r in results if r.baseline is not None]))
    mean_steps = statistics.fmean(r.steps for r in results)
    lines.append("| " + " | ".join(cells + [f"{mean_steps:g}", f"{statistics.fmean(r.wall_time_s for r in results):.1f}"])
                 + " |")
    return "\n".join(lines)


def seeds_summary(results: Sequence[TrainResult]) -> str:
    """One line: test accuracy mean ± std over the draws, and how many validation labels selection used."""
    mean, std = mean_std([r.test_accuracy for r in results])
    spread = "n/a (one draw)" if math.isnan(std) else f"{100 * std:.2f}%"
    n_val = results[0].n_val
    selection = (f"model selection used {n_val} validation labels per run" if n_val
                 else "no model selection (--val-size 0)")
    line = (f"test accuracy over {len(results)} label draws: mean {100 * mean:.2f}%, sample std {spread} | "
            f"{selection}")
    baselines = [r.baseline.test_accuracy for r in results if r.baseline is not None]
    if baselines:
        line += f" | baseline {_pct_pm(baselines)}"
    return line


def seeds_record(results: Sequence[TrainResult]) -> dict:
    """Plain values for --json: every run's record, and mean / std of the accuracies."""
    def stats(values):
        mean, std = mean_std(values)
        return {"mean": None if math.isnan(mean) else mean, "std": None if math.isnan(std) else std}

    record = {
        "runs": [r.record() for r in results], "table": seeds_table(results),
        "test_accuracy": stats([r.test_accuracy for r in results]),
        "val_accuracy": stats([r.val_accuracy for r in results]),
    }
    if any(r.baseline is not None for r in results):
        record["baseline_test_accuracy"] = stats([r.baseline.test_accuracy for r in results if r.baseline])
    return record
