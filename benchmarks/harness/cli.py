"""The command line of benchmarks/run.py.

    python benchmarks/run.py                            # the grid on the default device -> JSON + table
    python benchmarks/run.py --device cuda --sizes 100,128,1024,8192 --precisions tf32,fp32,bf16
    python benchmarks/run.py --fast                     # CI: few rounds, smallest size
    python benchmarks/run.py table benchmarks/results/*.json [--all] [--readme README.md]
    python benchmarks/run.py table --bf16 benchmarks/results/cpu-bf16-2026-12-02-{e,f,g}.json

Each (provider, B) runs in a fresh subprocess (`python benchmarks/run.py worker`, see `harness.grid`).
The results go to `benchmarks/results/<device>-<date>.json` (hardware, versions, commit, precision, the
labelled mix and every figure) and a markdown table is printed; `table` renders tables from committed
JSON, and `--readme` rewrites only the block between `<!-- bench:start -->` and `<!-- bench:end -->`.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
from pathlib import Path
from typing import Optional, Sequence

import torch

from .config import BENCH_DIR, CUDAGRAPH_MODE, MODES, OP_VARIANTS, PROVIDERS, REPO_ROOT, TABLE_ORDER
from .grid import run_grid, run_worker
from .report import render_bf16_comparison, render_documents, render_tables, rewrite_readme


def _csv(kind):
    def parse(text):
        return tuple(kind(v) for v in text.split(",") if v.strip())

    return parse


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "worker":
        parser = argparse.ArgumentParser(prog="python benchmarks/run.py worker")
        parser.add_argument("--spec", required=True)
        parser.add_argument("--out", required=True)
        args = parser.parse_args(argv[1:])
        Path(args.out).write_text(json.dumps(run_worker(json.loads(args.spec))))  # {"records", "ceilings"}
        return 0
    if argv and argv[0] == "table":
        parser = argparse.ArgumentParser(
            prog="python benchmarks/run.py table", description="Markdown tables from results JSON files."
        )
        parser.add_argument("files", nargs="+")
        parser.add_argument("--all", action="store_true", help="every mode (loss, ops), not only the step")
        parser.add_argument("--readme", nargs="?", const=str(REPO_ROOT / "README.md"), default=None,
                            help="rewrite the bench block of this README (default: the repository's)")
        parser.add_argument("--bf16", action="store_true",
                            help="the bf16 comparison instead: one column per file (cpu fp32 and bf16 steps, the "
                                 "reference in bf16, the bf16 GEMM floor)")
        args = parser.parse_args(argv[1:])
        if args.bf16:
            if args.readme:
                raise SystemExit("--bf16 prints its table; --readme rewrites the bench block only")
            print(render_bf16_comparison(args.files))
            return 0
        text = render_documents(args.files, all_modes=args.all)
        if args.readme:
            rewrite_readme(args.readme, text)
            print(f"rewrote the bench block of {args.readme}", file=sys.stderr)
        else:
            print(text)
        return 0
    if argv and argv[0] == "run":
        argv = argv[1:]
    default_device = "cuda" if torch.cuda.is_available() else "cpu"
    parser = argparse.ArgumentParser(
        prog="python benchmarks/run.py",
        description="Benchmark M2's training step, loss and fused ops; write JSON and print a markdown table. "
                    "Subcommand `table FILE...` renders tables from results JSON.",
    )
    parser.add_argument("--device", choices=("cpu", "cuda"), default=default_device)
    parser.add_argument("--sizes", type=_csv(int), help="batch sizes B (default: cpu 64,256; cuda 100,128,1024,8192)")
    parser.add_argument("--providers", type=_csv(str), default=PROVIDERS, help=f"from {','.join(PROVIDERS)}")
    parser.add_argument("--precisions", type=_csv(str), help="fp32,tf32,bf16 (default: cpu fp32,bf16, Pyro in fp32 only; cuda all)")
    parser.add_argument("--modes", type=_csv(str), default=MODES, help=f"from {','.join(MODES)}")
    parser.add_argument("--ops", type=_csv(str), default=tuple(OP_VARIANTS), help="op variants for op modes")
    parser.add_argument("--rounds", type=int)
    parser.add_argument("--warmup", type=int)
    parser.add_argument("--fast", action="store_true", help="CI: 3 rounds, the smallest size, one precision")
    parser.add_argument("--in-process", action="store_true", help="no subprocesses (debugging; no CPU memory)")
    parser.add_argument("--out", help="JSON path (default: benchmarks/results/<device>-<date>.json); "
                                      "rewritten after every worker, so a run stopped part-way keeps its figures")
    parser.add_argument("--worker-timeout", type=float, default=3600.0, metavar="S",
                        help="stop a (provider, B) worker after S seconds and record it as an error")
    parser.add_argument("--all-tables", action="store_true", help="print tables of every mode, not only the step")
    args = parser.parse_args(argv)
    if args.worker_timeout <= 0:
        parser.error("--worker-timeout must be positive")
    date = datetime.date.today().isoformat()
    out = Path(args.out) if args.out else BENCH_DIR / "results" / f"{args.device}-{date}.json"
    out.parent.mkdir(parents=True, exist_ok=True)

    def write(document: dict) -> None:  # whole file or nothing: a reader never sees half a document
        tmp = out.with_name(out.name + ".tmp")
        tmp.write_text(json.dumps(document, indent=1) + "\n")
        os.replace(tmp, out)

    doc = run_grid(args.device, args.sizes, args.providers, args.precisions, args.modes, args.ops,
                   fast=args.fast, rounds=args.rounds, warmup=args.warmup, in_process=args.in_process,
                   worker_timeout_s=args.worker_timeout, checkpoint=write,
                   command=" ".join(["python benchmarks/run.py", *argv]))
    write(doc)
    print(render_tables(doc, TABLE_ORDER if args.all_tables else ("train_step", CUDAGRAPH_MODE)))
    print(f"wrote {out}", file=sys.stderr)
    return 0
