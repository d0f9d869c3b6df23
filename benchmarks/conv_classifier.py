"""Time the convolutional classifier q(y|x) (`M2(..., classifier="conv")`, the MNIST M1+M2 default's) on
the CPU: its forward (channels-last feature maps, pooling before the ReLU) against the same function in
the textbook NCHW order (`ConvClassifier.forward_textbook`), training (forward and backward) and
evaluation (forward under no_grad). The values agree to rounding (tests/test_model_family.py).

    python benchmarks/conv_classifier.py                         # B = 200 (100 + 100 a training step)
    python benchmarks/conv_classifier.py --batch 200 --rounds 40 --json out.json

Timing: a few warm-up calls, then `--rounds` rounds, each calling every variant once in a rotated order
(the machine is shared: interleaving puts every variant under the same background load); median and min
per call, and the ratio of medians.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness.measure import time_interleaved  # noqa: E402
from ssvae_fast.networks import ConvClassifier  # noqa: E402


def variants(model: ConvClassifier, x: torch.Tensor) -> dict:
    def train(forward):
        def step():
            model.zero_grad(set_to_none=True)
            forward(x).logsumexp(1).sum().backward()
        return step

    def evaluate(forward):
        def call():
            with torch.no_grad():
                forward(x)
        return call

    return {
        "training, textbook NCHW": train(model.forward_textbook),
        "training, ConvClassifier.forward": train(model.forward),
        "evaluation, textbook NCHW": evaluate(model.forward_textbook),
        "evaluation, ConvClassifier.forward": evaluate(model.forward),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--json", default=None, help="also write the figures to this path")
    args = parser.parse_args(argv)
    if args.batch < 1 or args.rounds < 1:
        parser.error("--batch and --rounds must be positive")

    torch.manual_seed(0)
    model = ConvClassifier(784, 10)
    x = torch.rand(args.batch, 784)
    calls = variants(model, x)
    names = list(calls)
    samples = time_interleaved(calls, args.rounds, args.warmup)
    median = {k: statistics.median(v) * 1e3 for k, v in samples.items()}
    print(f"# ConvClassifier(784, 10), B={args.batch}, float32, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; median / min ms over {args.rounds} rounds")
    for k in names:
        print(f"{k:<38} {median[k]:>9.2f} {min(samples[k]) * 1e3:>9.2f}")
    ratios = {mode: median[f"{mode}, textbook NCHW"] / median[f"{mode}, ConvClassifier.forward"]
              for mode in ("training", "evaluation")}
    for mode, r in ratios.items():
        print(f"{mode}: textbook / forward = {r:.2f}x")
    if args.json:
        doc = {
            "date": datetime.date.today().isoformat(), "command": "python benchmarks/conv_classifier.py "
            + " ".join(sys.argv[1:] if argv is None else argv), "batch": args.batch, "rounds": args.rounds,
            "torch": torch.__version__, "threads": torch.get_num_threads(),
            "hardware": platform.processor() or platform.machine(), "median_ms": median,
            "min_ms": {k: min(v) * 1e3 for k, v in samples.items()}, "ratio_of_medians": ratios,
        }
        Path(args.json).write_text(json.dumps(doc, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
