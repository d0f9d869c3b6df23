"""Command line: `python -m ssvae_fast train|evaluate|sample|backends ...` (also installed as `ssvae-fast`)."""

from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence


def build_parser() -> argparse.ArgumentParser:
    from .training.cli import add_evaluate_arguments, add_sample_arguments, add_train_arguments

    parser = argparse.ArgumentParser(prog="ssvae-fast", description="Fast M2 semi-supervised VAE.")
    sub = parser.add_subparsers(dest="command", required=True)
    add_train_arguments(sub.add_parser("train", help="train M2, select on validation, report test accuracy"))
    add_evaluate_arguments(sub.add_parser("evaluate", help="accuracy, class consistency and loss terms of a run"))
    add_sample_arguments(sub.add_parser("sample", help="class-conditional samples of a run, as a PNG"))
    sub.add_parser("backends", help="list the backends this machine can run")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from .backends import BackendUnavailableError, available_backends
    from .data import DatasetError
    from .training.checkpoint import TrainingError

    try:
        if args.command == "backends":
            print(" ".join(available_backends()))
            return 0
        from .training import cli

        run = {"train": cli.run_from_args, "evaluate": cli.evaluate_from_args, "sample": cli.sample_from_args}
        return run[args.command](args)
    except (DatasetError, BackendUnavailableError) as exc:
        print(f"ssvae-fast: error: {exc}", file=sys.stderr)
        return 2
    except TrainingError as exc:
        print(f"ssvae-fast: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("ssvae-fast: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
