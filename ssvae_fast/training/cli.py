"""The `train`, `evaluate` and `sample` subcommands of `python -m ssvae_fast`."""

from __future__ import annotations

import argparse
import json
import os
import sys

import torch

from .. import backends, data
from . import checkpoint, distributed
from .checkpoint import BEST, LAST, TrainingError
from .config import ESTIMATORS, LR_SCHEDULES, MODELS, PRECISIONS, SIZE_OPTIONS, TrainConfig
from .evaluate import TERMS, evaluate_set
from .loop import resume, train
from .seeds import run_seeds, seeds_record, seeds_summary, seeds_table

#: Options that --resume may be given with (the rest of the run's config comes from its checkpoint).
RESUME_OPTIONS = ("steps", "device")


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    """Every option defaults to None: the dataset's default (`DATASET_DEFAULTS`) is filled in later."""
    add = parser.add_argument
    add("--dataset", default=None, help="digits (bundled, default) or mnist")
    add("--model", default=None, choices=list(MODELS),
        help="m2 (default), m1 (the VAE alone: test bounds in nats) or m1m2 (M2 on M1's latent features)")
    add("--data-dir", default=None, help="folder with MNIST IDX files (gzip or raw)")
    add("--labels", type=int, default=None, help="labelled examples, stratified by class (default 100)")
    length = parser.add_mutually_exclusive_group()
    length.add_argument("--steps", type=int, default=None, help="run length in optimizer steps")
    length.add_argument("--epochs", type=int, default=None, help="run length in passes over the unlabelled pool")
    add("--eval-every", type=int, default=None, help="steps between evaluations (default: about 20 per run)")
    add("--val-size", type=int, default=None,
        help="validation examples carved from the training pool, for model selection only (0: none)")
    add("--batch-size", type=int, default=None, help="unlabelled examples per step")
    add("--labelled-batch-size", type=int, default=None, help="labelled examples per step")
    add("--lr", type=float, default=None, help="Adam learning rate (the schedule's start)")
    add("--lr-schedule", default=None, choices=LR_SCHEDULES, help="learning rate over the run")
    add("--lr-final", type=float, default=None, help="the cosine / exp schedule's last learning rate (default lr/100)")
    add("--alpha", type=float, default=None, help="weight of -log q(y|x); default 0.1 * N_total / N_labelled")
    add("--clip-grad", type=float, default=None, metavar="NORM", help="gradient-norm clipping (0: off)")
    add("--ema", type=float, default=None, metavar="DECAY",
        help="evaluate, select and keep an exponential moving average of the weights, decay per step "
             "(e.g. 0.999; 0: off, the default)")
    add("--hidden", type=int, nargs="+", default=None, help="hidden layer sizes (every network)")
    add("--classifier", default=None, choices=["mlp", "conv"],
        help="M2's classifier: an MLP or a small CNN (square images; encoder and decoder stay MLPs); for "
             "--model m1m2, mlp reads M1's features and conv the images; default: the dataset's")
    add("--shift", type=int, default=None, metavar="PX",
        help="translate each image the classifier reads in training by a random offset of up to PX pixels "
             "(--model m1m2 --classifier conv; the generative terms read the images unshifted; 0: off)")
    for network in ("classifier", "encoder", "decoder"):
        add(f"--{network}-hidden", type=int, nargs="+", default=None, help=f"the {network}'s hidden layers")
    add("--z-dim", type=int, default=None)
    add("--activation", default=None, choices=["softplus", "relu"])
    add("--likelihood", default=None, choices=["bernoulli", "gaussian"],
        help="M2's p(x|y,z) (model m2; m1m2's M2 is always Gaussian)")
    add("--warmup", type=int, default=None, metavar="STEPS",
        help="M2's KL warm-up: the KL weight rises 0 -> 1 linearly")
    add("--samples", type=int, default=None, help="Monte-Carlo samples of z per (x, y) in the loss")
    add("--estimator", default=None, choices=list(ESTIMATORS),
        help="the unlabelled term: enumerate every class (exact, default) or gumbel (one relaxed class)")
    add("--temperature", type=float, default=None, help="Gumbel-softmax temperature at the start (default 1)")
    add("--temperature-min", type=float, default=None, help="the annealed temperature's floor (default 0.5)")
    add("--temperature-anneal", type=float, default=None,
        help="annealing rate per step: T = max(min, T0 exp(-rate step)) (default 3e-5)")
    add("--m1-steps", type=int, default=None, help="M1's training steps (models m1, m1m2)")
    add("--m1-hidden", type=int, nargs="+", default=None, help="M1's hidden layers")
    add("--m1-z-dim", type=int, default=None, help="M1's latent size (the features M2 sees in m1m2)")
    add("--m1-lr", type=float, default=None)
    add("--m1-batch-size", type=int, default=None)
    add("--m1-warmup", type=int, default=None, metavar="STEPS", help="M1's KL warm-up (models m1, m1m2)")
    add("--iw-samples", type=int, default=None, help="model m1: samples of the importance-weighted test bound")
    add("--backend", default=None, choices=["auto", *backends.BACKENDS])
    add("--precision", default=None, choices=list(PRECISIONS),
        help="bf16: the losses' forward passes under torch.autocast in bfloat16 (float32 parameters and "
             "optimizer); default fp32")
    add("--binarize", default=None, choices=list(data.BINARIZE_MODES))
    seeds = parser.add_mutually_exclusive_group()
    seeds.add_argument("--seed", type=int, default=None, help="draws labels, validation split, init, batches")
    seeds.add_argument("--seeds", type=int, nargs="+", default=None, help="one run per seed, then a table")
    add("--baseline", action="store_const", const=True, default=None,
        help="also train the classifier alone on the labelled examples, same steps and settings")
    add("--no-test", dest="test", action="store_const", const=False, default=None,
        help="never score the test set (while choosing settings on validation)")
    add("--device", default=None, help="cpu or cuda")
    add("--out", default=None, metavar="DIR",
        help="run directory: config.json, metrics.jsonl, best.pt, last.pt, figures")
    add("--resume", default=None, metavar="DIR", help="continue the run in DIR from its last.pt")
    add("--no-progress", action="store_true", help="no progress bar")
    add("--json", default=None, help="also write the result(s) and history to this JSON file")
    add("--save", default=None, metavar="FILE",
        help="save the selected model (M2.load, M1M2.load or M1.load reads it, by --model)")
    add("--figure", default=None, metavar="PNG",
        help="draw the first test image of each class and its style under every class")


def _config_options(args) -> dict:
    names = [f for f in TrainConfig.__dataclass_fields__ if f != "progress"]
    given = {name: getattr(args, name) for name in names if getattr(args, name, None) is not None}
    for name in SIZE_OPTIONS:
        if name in given:
            given[name] = tuple(given[name])
    return given


def run_from_args(args: argparse.Namespace) -> int:
    given = _config_options(args)
    main = int(os.environ.get("RANK", "0")) == 0
    if args.seeds is not None and len(args.seeds) > 1:
        for flag in ("save", "figure"):
            if getattr(args, flag):
                raise data.DatasetError(f"--{flag} keeps one model: give one seed, or --out DIR for every run")
    for path, flag in ((args.figure, "--figure"), (args.save, "--save"), (args.json, "--json")):
        if path and main:
            _check_writable(path, flag)
    if args.out and main:
        try:
            os.makedirs(args.out, exist_ok=True)
        except OSError as exc:
            raise data.DatasetError(f"--out {args.out}: cannot create the run directory ({exc.strerror})") from None
    try:
        if args.resume:
            extra = sorted(set(given) - set(RESUME_OPTIONS)) + (["seeds"] if args.seeds else []) + (
                ["out"] if args.out else [])
            if extra:
                flags = ", ".join("--" + name.replace("_", "-") for name in extra)
                raise data.DatasetError(f"--resume continues the run with its own config; drop {flags}")
            results = [resume(args.resume, steps=args.steps, progress=not args.no_progress, device=args.device)]
        else:
            cfg = TrainConfig(**given, progress=not args.no_progress)
            if args.seeds is None:
                results = [train(cfg, out=args.out)]
            else:
                results = run_seeds(cfg, args.seeds, out=args.out)
    except KeyboardInterrupt:
        run_dir = args.resume or args.out
        if run_dir and main:
            print(f"interrupted: `train --resume {run_dir}` continues from its last evaluation", file=sys.stderr)
        raise
    finally:
        distributed.teardown()
    if main:
        _report(args, results)
    return 0


def _report(args, results) -> None:
    for result in results:
        print(result.summary())
    if args.seeds is not None:
        table = seeds_table(results)
        print(table)
        print(seeds_summary(results))
        if args.out:
            with open(os.path.join(args.out, "seeds.md"), "w") as f:
                f.write(table + "\n\n" + seeds_summary(results) + "\n")
    result = results[0]
    if args.save:
        result.model.save(args.save)
        print(f"model saved to {args.save}")
    if args.figure:
        from ..images import write_style_figure
        from .evaluate import first_test_image_of_each_class

        weight = result.model.decoder.output.weight
        examples = first_test_image_of_each_class(result.split).to(weight.device, weight.dtype)
        write_style_figure(result.model, examples, args.figure)
        print(f"figure written to {args.figure}")
    if args.json:
        record = seeds_record(results) if args.seeds is not None else result.record()
        with open(args.json, "w") as f:
            json.dump(record, f, indent=2)


def _check_writable(path: str, flag: str) -> None:
    """Fail before training, not after it, when `path` cannot be written."""
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder) or not os.access(folder, os.W_OK):
        raise data.DatasetError(f"{flag} {path}: folder {folder} does not exist or is not writable")


# ---------------------------------------------------------------------------------- evaluate, sample


def _add_run_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a run directory written by train --out")
    parser.add_argument("--checkpoint", default="best", choices=["best", "last"],
                        help="best.pt (selected on validation; default) or last.pt")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")


def add_evaluate_arguments(parser: argparse.ArgumentParser) -> None:
    _add_run_arguments(parser)
    parser.add_argument("--data-dir", default=None, help="the MNIST folder, if it moved since training")
    parser.add_argument("--json", default=None, help="also write the figures to this JSON file")


def add_sample_arguments(parser: argparse.ArgumentParser) -> None:
    _add_run_arguments(parser)
    parser.add_argument("--out", required=True, metavar="PNG", help="the picture to write")
    parser.add_argument("--per-class", type=int, default=10, help="samples per class (a row per class)")
    parser.add_argument("--seed", type=int, default=0, help="seed of z ~ N(0, I)")


def _load_run(args) -> tuple:
    """(checkpoint path, checkpoint dict) that --checkpoint names; a run without a validation split has
    no best.pt, and its last.pt stands for it."""
    m1_file = os.path.join(args.run_dir, "m1.pt")
    if os.path.exists(m1_file) and not os.path.exists(os.path.join(args.run_dir, LAST)):
        raise TrainingError(f"{args.run_dir} is an M1 run (--model m1): its bounds were printed by train; "
                            f"load its model with ssvae_fast.M1.load({m1_file!r})")
    path = os.path.join(args.run_dir, BEST if args.checkpoint == "best" else LAST)
    if args.checkpoint == "best" and not os.path.exists(path) and os.path.exists(os.path.join(args.run_dir, LAST)):
        last = checkpoint.load(os.path.join(args.run_dir, LAST), map_location=args.device)
        if not last["config"]["val_size"]:
            print(f"{args.run_dir}: no model selection in this run (--val-size 0): using {LAST}")
            return os.path.join(args.run_dir, LAST), last
    return path, checkpoint.load(path, map_location=args.device)


def _describe(name: str, n: int, figures: dict) -> str:
    terms = ", ".join(f"{t} {figures[t]:.3f}" for t in TERMS)
    return (f"{name} ({n} images): accuracy {100 * figures['accuracy']:.2f}% | class consistency "
            f"{figures['class_consistency']:.3f} | loss terms per image: {terms}")


def evaluate_from_args(args: argparse.Namespace) -> int:
    path, ck = _load_run(args)
    cfg = TrainConfig.from_dict(ck["config"])
    split = data.load_split(cfg.dataset, data_dir=args.data_dir or cfg.data_dir, n_labelled=cfg.labels,
                            seed=cfg.seed, val_size=cfg.val_size)
    model = checkpoint.model_from(ck, device=args.device).eval()
    to = lambda a: torch.as_tensor(a).to(args.device)  # noqa: E731
    record = {"checkpoint": path, "step": ck["step"], "steps": cfg.steps, "split": split.description}
    print(f"{path}: step {ck['step']} of {cfg.steps} | {split.description}")
    if split.n_val:
        record["validation"] = evaluate_set(model, to(split.x_val), to(split.y_val))
        print(_describe("validation", split.n_val, record["validation"]))
    record["test"] = evaluate_set(model, to(split.x_test), to(split.y_test))
    print(_describe("test", split.n_test, record["test"]))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(record, f, indent=2)
    return 0


def sample_from_args(args: argparse.Namespace) -> int:
    from .plots import samples_picture, write_gray

    if args.per_class < 1:
        raise data.DatasetError(f"--per-class must be at least 1, got {args.per_class}")
    _check_writable(args.out, "--out")
    _, ck = _load_run(args)
    model = checkpoint.model_from(ck, device=args.device).eval()
    write_gray(args.out, samples_picture(model, per_class=args.per_class, seed=args.seed))
    print(f"samples written to {args.out} ({model.n_classes} rows of {args.per_class})")
    return 0


__all__ = ["add_train_arguments", "add_evaluate_arguments", "add_sample_arguments", "run_from_args",
           "evaluate_from_args", "sample_from_args", "TrainingError"]
