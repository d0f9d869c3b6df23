"""What the value checks (`ssvae_fast.set_validation`) cost in a training step.

One process times M2's training step (loss, backward, Adam) at MNIST sizes with the value checks on and
off, alternating the two in blocks so that both see the same machine state, and reports the median of each,
their difference, and the time of the checks alone (M2.loss's input checks: pixels of x_l and x_u in [0, 1]
and finite, labels in range, read with one synchronization).

    python benchmarks/validation_cost.py [--device cpu] [--backend auto] [--batch 256] [--blocks 10] [--steps 10]
                                         [--threads N]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ssvae_fast import M2, set_validation, validation  # noqa: E402


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--blocks", type=int, default=10, help="blocks per setting, alternating on/off")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per block")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    device = torch.device(args.device)
    torch.manual_seed(0)
    D, C, Z, H = 784, 10, 50, 500
    n_l = max(1, args.batch // 10)
    n_u = args.batch - n_l
    model = M2(D, C, Z, hidden=(H,), backend=args.backend).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    g = torch.Generator().manual_seed(1)
    x_l, x_u = torch.rand(n_l, D, generator=g).to(device), torch.rand(n_u, D, generator=g).to(device)
    y_l = torch.randint(0, C, (n_l,), generator=g).to(device)

    def step():
        opt.zero_grad(set_to_none=True)
        model.loss(x_l, y_l, x_u, alpha=0.1 * 60000 / 100).backward()
        opt.step()

    for _ in range(3):
        step()
    times = {True: [], False: []}
    for block in range(2 * args.blocks):
        enabled = block % 2 == 0
        with set_validation(enabled):
            for _ in range(args.steps):
                _sync(device)
                start = time.perf_counter()
                step()
                _sync(device)
                times[enabled].append(time.perf_counter() - start)

    checks = []
    rows = [(validation.unit_interval, "x_l", x_l), (validation.unit_interval, "x_u", x_u),
            (validation.class_indices, "y_l", y_l, C)]
    for _ in range(200):
        _sync(device)
        start = time.perf_counter()
        validation.run_value_checks("M2.loss", validation.value_checks(rows))
        _sync(device)
        checks.append(time.perf_counter() - start)

    on, off = statistics.median(times[True]) * 1e3, statistics.median(times[False]) * 1e3
    alone = statistics.median(checks) * 1e3
    print(f"device {device}, backend {model.resolved_backend(device)}, B={args.batch} ({n_l} labelled + {n_u} "
          f"unlabelled), D={D}, C={C}, H={H}, z={Z}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"training step, median of {len(times[True])} steps each: checks on {on:.2f} ms, off {off:.2f} ms, "
          f"difference {on - off:+.2f} ms ({(on - off) / off:+.1%})")
    print(f"the value checks alone (median of {len(checks)}): {alone * 1e3:.0f} us ({alone / off:.2%} of a step)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
