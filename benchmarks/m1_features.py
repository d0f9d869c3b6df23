"""How much class information M1's features carry: train M1 as `python -m ssvae_fast train --model m1m2`
would (its first stage, on one label draw's training pool), then report which latent dimensions stay active
and how a k-nearest-neighbour classifier on the labelled examples' mean features scores on the validation
images, beside the same classifier on the pixels. Validation only; the test images are never read.

    python benchmarks/m1_features.py --dataset mnist --data-dir ../shared/data/mnist --seed 100
    python benchmarks/m1_features.py --dataset mnist --data-dir DIR --seed 100 --m1-z-dim 20 --m1-hidden 500 \\
        --m1-warmup 5000

A dimension is active when the standard deviation of its posterior means over the unlabelled pool exceeds
0.5 (an inactive one keeps q(z|x) near the prior N(0, 1): its means stay near 0).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ssvae_fast import data  # noqa: E402
from ssvae_fast.training.config import TrainConfig, resolve  # noqa: E402
from ssvae_fast.training.m1_stage import train_m1  # noqa: E402

ACTIVE_STD = 0.5


def knn_accuracy(train_x, train_y, test_x, test_y, k: int, n_classes: int) -> float:
    """Majority vote of the k nearest training rows (Euclidean), ties to the lowest class."""
    idx = torch.cdist(test_x, train_x).topk(k, largest=False).indices
    votes = torch.nn.functional.one_hot(train_y[idx], n_classes).sum(1)
    return float((votes.argmax(1) == test_y).float().mean())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="mnist")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--seed", type=int, default=100)
    parser.add_argument("--labels", type=int, default=100)
    parser.add_argument("--m1-hidden", type=int, nargs="+", default=None)
    parser.add_argument("--m1-z-dim", type=int, default=None)
    parser.add_argument("--m1-warmup", type=int, default=None)
    parser.add_argument("--m1-steps", type=int, default=None)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    overrides = {k: v for k, v in dict(m1_hidden=args.m1_hidden and tuple(args.m1_hidden), m1_z_dim=args.m1_z_dim,
                                       m1_warmup=args.m1_warmup, m1_steps=args.m1_steps).items() if v is not None}
    config = TrainConfig(dataset=args.dataset, model="m1m2", data_dir=args.data_dir, labels=args.labels,
                         seed=args.seed, progress=False, **overrides)
    pre = config.with_defaults()
    split = data.load_split(pre.dataset, data_dir=pre.data_dir, n_labelled=pre.labels, seed=pre.seed,
                            val_size=pre.val_size)
    cfg = resolve(config, split)
    start = time.perf_counter()
    m1 = train_m1(cfg, split, torch.device("cpu")).model
    wall = time.perf_counter() - start
    t = lambda a: torch.as_tensor(a)  # noqa: E731
    with torch.no_grad():
        mean = lambda x: m1.features(t(x), sample=False)  # noqa: E731
        f_l, f_u, f_v = mean(split.x_labelled), mean(split.x_unlabelled), mean(split.x_val)
    std = f_u.std(0)
    y_l, y_v = t(split.y_labelled), t(split.y_val)
    out = {
        "dataset": args.dataset, "seed": args.seed, "m1_hidden": list(cfg.m1_hidden), "m1_z_dim": cfg.m1_z_dim,
        "m1_warmup": cfg.m1_warmup, "m1_steps": cfg.m1_steps, "m1_wall_s": round(wall, 1),
        "active_dims": int((std > ACTIVE_STD).sum()), "mean_std_sorted": [round(float(s), 3) for s in std.sort(
            descending=True).values],
        "knn_val_accuracy": {
            f"{k}": {"features": knn_accuracy(f_l, y_l, f_v, y_v, k, split.n_classes),
                       "pixels": knn_accuracy(t(split.x_labelled), y_l, t(split.x_val), y_v, k, split.n_classes)}
            for k in (1, 3, 5)},
    }
    print(f"M1 {out['m1_hidden']} z {out['m1_z_dim']} warm-up {out['m1_warmup']}: {out['active_dims']} of "
          f"{out['m1_z_dim']} dimensions active ({out['m1_wall_s']} s)")
    for k, row in out["knn_val_accuracy"].items():
        print(f"  {k}-NN on {split.n_labelled} labels, validation accuracy: features {100 * row['features']:.1f}%, "
              f"pixels {100 * row['pixels']:.1f}%")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
