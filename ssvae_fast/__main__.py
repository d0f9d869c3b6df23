"""Command line: `python -m ssvae_fast train ...` (also installed as `ssvae-fast`)."""

from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence


def build_parser() -> argparse.ArgumentParser:
    from .train import add_train_arguments

    parser = argparse.ArgumentParser(prog="ssvae-fast", description="Fast M2 semi-supervised VAE.")
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="train M2 and report test accuracy")
    add_train_arguments(train)
    sub.add_parser("backends", help="list the backends this machine can run")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from .backends import BackendUnavailableError, available_backends
    from .data import DatasetError

    try:
        if args.command == "backends":
            print(" ".join(available_backends()))
            return 0
        from .train import run_from_args

        return run_from_args(args)
    except (DatasetError, BackendUnavailableError) as exc:
        print(f"ssvae-fast: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ssvae-fast: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
