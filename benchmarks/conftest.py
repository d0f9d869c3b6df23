"""Shared inputs, providers and settings of `pytest benchmarks/ --benchmark-only`.

The input factory is `make_case(B, labelled_fraction, device, dtype, seed)` (defined in
`harness.cases`, so the report runner `python benchmarks/run.py` uses the very same one):
MNIST-shaped M2 (D=784, C=10, H=500, z=50, one softplus hidden layer), 10% labelled rows (B=256 ->
26 labelled + 230 unlabelled), binarized x, explicit noise, alpha = 0.1 * 60000 / 100, and
`ROTATING_BATCHES` batches cycled across calls so no cache holds the same inputs twice in a row.

Environment:
    SSVAE_FAST_BENCH_FAST=1          CI mode: B=64 (CPU) / 100 (GPU), one precision, 2 rounds, 1 warm-up
    SSVAE_FAST_BENCH_DEVICE=cpu|cuda default: cuda when a GPU is visible
    SSVAE_FAST_BENCH_SIZES=64,256    override the batch sizes
    SSVAE_FAST_BENCH_PRECISIONS=tf32,bf16   override the precisions (see harness.config.PRECISIONS)

Each benchmark's `extra_info` carries B, the labelled mix, precision, examples/s, matmul FLOPs, TFLOP/s,
its fraction of the matmul ceiling measured in this session at the same precision, and on CUDA the peak
memory of one call. CPU peak memory needs a fresh process per provider: `python benchmarks/run.py`.
No assertion on speed anywhere.
"""

from __future__ import annotations

import itertools
import os

import pytest
import torch

from harness import cases, config as settings, measure as measuring
from harness.cases import make_case  # noqa: F401 - the one input factory, re-exported for the suite

FAST = os.environ.get("SSVAE_FAST_BENCH_FAST") == "1"
DEVICE = os.environ.get("SSVAE_FAST_BENCH_DEVICE") or ("cuda" if torch.cuda.is_available() else "cpu")


def _env_list(name, kind, default):
    text = os.environ.get(name)
    return tuple(kind(v) for v in text.split(",") if v.strip()) if text else tuple(default)


SIZES = _env_list("SSVAE_FAST_BENCH_SIZES", int, (settings.FAST_SIZES if FAST else settings.SIZES)[DEVICE])
PRECISIONS = _env_list(
    "SSVAE_FAST_BENCH_PRECISIONS", str, settings.DEFAULT_PRECISIONS[DEVICE][: 1 if FAST else None]
)
WARMUP = 1 if FAST else settings.TIMING_DEFAULTS[DEVICE]["warmup"]


def pytest_collect_file(file_path, parent):
    """Collect benchmarks/bench_*.py (pyproject's pytest settings only name tests/)."""
    if file_path.suffix == ".py" and file_path.name.startswith("bench_"):
        return pytest.Module.from_parent(parent, path=file_path)
    return None


def pytest_configure(config):
    """Fast mode: pytest-benchmark runs each benchmark for 2 rounds within ~0.05 s (runs before the
    plugin's own pytest_configure, which is trylast and reads these options)."""
    # Pyro imports torch.jit.script_method, deprecated in torch 2.10+: not ours to fix.
    config.addinivalue_line("filterwarnings", "ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")
    if FAST:
        config.option.benchmark_min_rounds = 2
        config.option.benchmark_max_time = 0.05
        config.option.benchmark_min_time = 0.000005
        config.option.benchmark_warmup = False


def pytest_report_header(config):
    return (
        f"ssvae_fast benchmarks: device={DEVICE} sizes={SIZES} precisions={PRECISIONS} fast={FAST} "
        f"labelled fraction={settings.LABELLED_FRACTION}"
    )


@pytest.fixture(scope="session")
def case():
    """case(B) -> the session's `make_case(B, device=DEVICE)` (one per B, shared by every provider)."""
    cache: dict = {}

    def get(B: int) -> cases.Case:
        if B not in cache:
            cache[B] = make_case(B, device=DEVICE)
        return cache[B]

    return get


@pytest.fixture(scope="session")
def loss_runner(case):
    """loss_runner(provider, B, precision) -> a `cases.LossRunner`, built once per session (a compiled
    provider compiles once for the loss and training-step benchmarks); skips when unavailable."""
    cache: dict = {}

    def get(provider: str, B: int, precision: str) -> cases.LossRunner:
        reason = cases.provider_unavailable_reason(provider, DEVICE) or settings.precision_unavailable_reason(
            provider, precision)
        if reason is not None:
            pytest.skip(reason)
        key = (provider, B, precision)
        if key not in cache:
            with measuring.matmul_precision(precision):
                cache[key] = cases.LossRunner(provider, case(B), precision)
        return cache[key]

    return get


@pytest.fixture(scope="session")
def ceiling():
    """ceiling(B, precision) -> TFLOP/s of a (B*C, 500) x (500, 784) matmul, measured once per session."""
    cache: dict = {}

    def get(B: int, precision: str) -> float:
        if (B, precision) not in cache:
            rounds = 3 if FAST else settings.TIMING_DEFAULTS[DEVICE]["rounds"]
            measured = measuring.matmul_ceiling(B, DEVICE, precision, rounds=rounds, warmup=WARMUP)
            cache[(B, precision)] = measured["tflops"]
        return cache[(B, precision)]

    return get


@pytest.fixture
def measure(benchmark, ceiling, case):
    """measure(fn, inputs, B=, precision=, group=, flops=None, nbytes=None): benchmark fn(inputs[i]).

    Warm-up calls (compilation, autotuning) run first, untimed. Inputs rotate across calls. On CUDA the
    timed callable ends with torch.cuda.synchronize(), since pytest-benchmark's timer is the host clock.
    """
    device = torch.device(DEVICE)

    def run(fn, inputs, *, B: int, precision: str, group: str, flops=None, nbytes=None):
        n = len(inputs)
        with measuring.matmul_precision(precision):
            for i in range(WARMUP):
                fn(inputs[i % n])
            if device.type == "cuda":
                torch.cuda.synchronize()
            counter = itertools.count()

            def target():
                fn(inputs[next(counter) % n])
                if device.type == "cuda":
                    torch.cuda.synchronize()

            benchmark.group = group
            benchmark(target)
            if benchmark.stats is None:  # --benchmark-disable: ran once, no statistics
                return
            median = float(benchmark.stats.stats.median)
            c = case(B)
            info = {
                "B": B,
                "n_labelled": c.n_l,
                "n_unlabelled": c.n_u,
                "precision": precision,
                "device": DEVICE,
                "examples_per_s": B / median,
                "flops": flops,
                "bytes": nbytes,
            }
            if flops:
                info["tflops"] = flops / median / 1e12
                info["ceiling_fraction"] = info["tflops"] / ceiling(B, precision)
            if nbytes:
                info["gb_per_s"] = nbytes / median / 1e9
            if device.type == "cuda":
                info["peak_mb"] = measuring.measure_peak_memory(fn, inputs[0], device) / 2**20
            benchmark.extra_info.update(info)

    return run
