"""Benchmark M2's training step, its loss and its fused ops; write JSON and print markdown tables.

    python benchmarks/run.py --device cpu                              # the grid -> JSON + table
    python benchmarks/run.py --fast                                    # few rounds, smallest size
    python benchmarks/run.py table benchmarks/results/*.json --readme  # regenerate README.md's table

`python benchmarks/run.py --help` lists the options; benchmarks/README.md explains every figure.
"""

import sys
from pathlib import Path

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

from harness.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
