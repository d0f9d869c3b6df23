"""Timing (`time_callable`, `summarize`, `time_interleaved`), the matmul ceiling, the float32 matmul precision and peak memory."""

from __future__ import annotations

import contextlib
import ctypes
import gc
import itertools
import math
import platform
import statistics
import sys
import time
from typing import Callable, Optional, Sequence

import torch

from ssvae_fast.flops import matmul_flops

from .config import MODEL_SHAPES, PRECISIONS


@contextlib.contextmanager
def matmul_precision(precision: str):
    """Set the float32 matmul precision of `precision` ("fp32": TF32 off, "tf32": on) for the block."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose from {tuple(PRECISIONS)}")
    saved = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = precision == "tf32"
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = saved



def time_interleaved(calls: dict, rounds: int, warmup: int = 2) -> dict:
    """{name: [seconds of each call]}: `warmup` untimed calls of each, then `rounds` rounds calling every
    one once, in an order rotated by one each round, so that every call meets the same background load on
    a shared machine. CPU timing (time.perf_counter around the call; no device synchronization)."""
    names = list(calls)
    for fn in calls.values():
        for _ in range(warmup):
            fn()
    samples = {k: [] for k in names}
    for i in range(rounds):
        for k in names[i % len(names):] + names[: i % len(names)]:
            t0 = time.perf_counter()
            calls[k]()
            samples[k].append(time.perf_counter() - t0)
    return samples


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_callable(
    fn: Callable,
    inputs: Sequence,
    device: str | torch.device,
    *,
    rounds: int,
    warmup: int,
    min_round_s: float = 1e-3,
    max_time_s: float = 30.0,
) -> dict:
    """Per-call time statistics of `fn(inputs[i])`, i rotating over `inputs`.

    `warmup` untimed calls first (compilation, autotuning, CUDA-graph recording, allocator growth).
    Each round repeats the call `iterations` times (calibrated so a round lasts at least `min_round_s`)
    and records the mean; after `max_time_s` of rounds (and at least 3 rounds) it stops early. CPU:
    time.perf_counter. CUDA: events recorded on the current stream around the round, after a
    synchronize, then synchronized: the time the GPU needs, including any launch gaps the host causes.
    Returns median/q1/q3/iqr/stddev/min/mean (ms), rounds and iterations.
    """
    device = torch.device(device)
    counter = itertools.count()
    n = len(inputs)

    def call():
        return fn(inputs[next(counter) % n])

    for _ in range(warmup):
        call()
    _sync(device)
    t0 = time.perf_counter()
    call()
    _sync(device)
    single = max(time.perf_counter() - t0, 1e-7)
    iterations = max(1, min(10_000, math.ceil(min_round_s / single)))

    samples: list[float] = []
    spent = 0.0
    for r in range(rounds):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            torch.cuda.synchronize(device)
            start.record()
            for _ in range(iterations):
                call()
            end.record()
            end.synchronize()
            elapsed = start.elapsed_time(end) / 1e3
        else:
            t0 = time.perf_counter()
            for _ in range(iterations):
                call()
            elapsed = time.perf_counter() - t0
        samples.append(elapsed / iterations)
        spent += elapsed
        if spent > max_time_s and r + 1 >= 3:
            break
    return summarize(samples, iterations)


def summarize(samples_s: Sequence[float], iterations: int = 1) -> dict:
    """Median, quartiles (inclusive method), IQR, stddev, min, mean in ms of per-call samples in s."""
    ms = sorted(1e3 * s for s in samples_s)
    if len(ms) >= 2:
        q1, _, q3 = statistics.quantiles(ms, n=4, method="inclusive")
    else:
        q1 = q3 = ms[0]
    return {
        "median_ms": statistics.median(ms),
        "q1_ms": q1,
        "q3_ms": q3,
        "iqr_ms": q3 - q1,
        "stddev_ms": statistics.stdev(ms) if len(ms) >= 2 else 0.0,
        "min_ms": ms[0],
        "mean_ms": statistics.fmean(ms),
        "rounds": len(ms),
        "iterations": iterations,
    }


def matmul_ceiling(
    B: int, device: str | torch.device, precision: str, *, rounds: int, warmup: int, min_round_s: float = 1e-3
) -> dict:
    """The matmul the decoder's output layer does, (B*C, H) x (H, D), timed alone at `precision`
    (bf16: bfloat16 operands; fp32/tf32: float32 with TF32 off/on): the FLOP/s ceiling of the run.
    Each worker measures it in its own process just before timing a precision, so the fraction compares
    figures taken under the same conditions."""
    device = torch.device(device)
    C, H, D = MODEL_SHAPES["n_classes"], MODEL_SHAPES["hidden"], MODEL_SHAPES["x_dim"]
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    g = torch.Generator().manual_seed(0)
    operands = [torch.randn(B * C, H, generator=g).to(device=device, dtype=dtype) for _ in range(2)]
    weight = torch.randn(H, D, generator=g).to(device=device, dtype=dtype)
    with matmul_precision(precision):
        stats = time_callable(
            lambda a: torch.mm(a, weight), operands, device, rounds=rounds, warmup=warmup, min_round_s=min_round_s
        )
    flops = matmul_flops(B * C, H, D)
    return {
        "B": B,
        "precision": precision,
        "shape": [B * C, H, D],
        "flops": flops,
        "median_ms": stats["median_ms"],
        "iqr_ms": stats["iqr_ms"],
        "tflops": flops / (stats["median_ms"] * 1e-3) / 1e12,
    }


CPU_MEMORY_METHOD = (
    "fresh subprocess per (provider, B); all timings first, then glibc mallopt(M_MMAP_THRESHOLD, 64 KiB) "
    "and malloc_trim(0) so that every tensor above 64 KiB is its own mapping and freed memory leaves the "
    "resident set; one settling call; the peak RSS (VmHWM) is reset through /proc/self/clear_refs; "
    "peak = VmHWM after one call - VmRSS just before it (/proc/self/status). Counts what the call "
    "allocates (activations, gradients, temporaries); excludes parameters, optimizer state and inputs "
    "already resident"
)
CUDA_MEMORY_METHOD = (
    "torch.cuda.max_memory_allocated() after torch.cuda.reset_peak_memory_stats(), minus "
    "torch.cuda.memory_allocated() just before one call (tensors through the caching allocator: "
    "activations, gradients, temporaries; excludes parameters, optimizer state and inputs already "
    "allocated, the CUDA context and library workspaces). CUDA-graph steps: the memory allocated while "
    "capturing (the graph's private pool)"
)


def _proc_status_kib(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{key} not in /proc/self/status")


_LIBC = None


def _release_freed_memory_to_os() -> bool:
    """glibc: make every allocation above 64 KiB an mmap (freed -> unmapped) and trim the heaps."""
    global _LIBC
    try:
        if _LIBC is None:
            _LIBC = ctypes.CDLL("libc.so.6")
            _LIBC.mallopt(-3, 64 * 1024)  # M_MMAP_THRESHOLD; also stops glibc's dynamic threshold
        _LIBC.malloc_trim(0)
        return True
    except (OSError, AttributeError):
        return False


def cpu_peak_memory_supported() -> Optional[str]:
    """None when the CPU peak-memory method works here, else why not."""
    if sys.platform != "linux":
        return "the CPU peak-memory method needs Linux (/proc/self/status, /proc/self/clear_refs)"
    if platform.libc_ver()[0] != "glibc":
        return "the CPU peak-memory method needs glibc (mallopt, malloc_trim)"
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError as exc:
        return f"cannot reset the peak RSS through /proc/self/clear_refs ({exc})"
    return None


def measure_peak_memory(fn: Callable, item, device: str | torch.device) -> int:
    """Bytes one call of fn(item) allocates at its peak beyond what is allocated before it.

    CUDA: caching-allocator statistics. CPU: RSS high-water mark (see CPU_MEMORY_METHOD); it changes
    glibc's malloc settings for the rest of the process, so take every timing before the first call.
    """
    device = torch.device(device)
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        fn(item)
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - before
    reason = cpu_peak_memory_supported()
    if reason is not None:
        raise RuntimeError(reason)
    _release_freed_memory_to_os()
    fn(item)  # settle: caches grow, lazily created state appears, under the new malloc settings
    gc.collect()
    _release_freed_memory_to_os()
    before = _proc_status_kib("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # VmHWM := VmRSS
    fn(item)
    return max(0, _proc_status_kib("VmHWM") - before) * 1024
