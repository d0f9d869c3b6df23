"""The grid: one worker per (provider, B), each in a fresh subprocess (`run_worker`), and the JSON
document of their figures (`run_grid`; schema in benchmarks/README.md).

A worker takes its timings first, then peak memory, so that neither a compile cache, an allocator pool
nor another provider's memory flatters a figure.
"""

from __future__ import annotations

import datetime
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Optional, Sequence

import torch

from ssvae_fast import backends
from ssvae_fast.flops import step_flops

from .cases import CudaGraphTrainStep, LossRunner, make_case, provider_unavailable_reason, split_batch
from .config import (
    ACTIVATION,
    ALPHA,
    CUDAGRAPH_MODE,
    CUDAGRAPH_PROVIDERS,
    CUDAGRAPH_SIZES,
    DEFAULT_PRECISIONS,
    FAST_SIZES,
    FAST_TIMING,
    LABELLED_FRACTION,
    LEARNING_RATE,
    LOSS_MODES,
    MODEL_SHAPES,
    MODES,
    OP_BACKENDS,
    OP_MODES,
    OP_VARIANTS,
    PIXEL_ON_PROBABILITY,
    PRECISIONS,
    PROVIDERS,
    REPO_ROOT,
    ROTATING_BATCHES,
    RUN_ORDER,
    RUN_SCRIPT,
    SCHEMA,
    SIZES,
    TIMING_DEFAULTS,
    precision_unavailable_reason,
)
from .measure import (
    CPU_MEMORY_METHOD,
    CUDA_MEMORY_METHOD,
    cpu_peak_memory_supported,
    matmul_ceiling,
    matmul_precision,
    measure_peak_memory,
    time_callable,
)
from .op_cases import build_op_bench, op_unavailable_reason
from .report import hardware_info, version_info


def run_worker(spec: dict) -> dict:
    """All figures of one (provider, B): build; time every (mode, precision, op), each precision after
    a matmul ceiling measured here; then measure memory (on the CPU that changes malloc settings, hence
    last). Errors become status "error" records. Returns {"records": [...], "ceilings": [...]}."""
    device = torch.device(spec["device"])
    provider, B = spec["provider"], int(spec["B"])
    timing = spec["timing"]
    case = make_case(B, spec.get("labelled_fraction", LABELLED_FRACTION), device, seed=spec.get("seed", 0))
    memory = spec.get("memory", True)
    items: list[tuple[dict, Optional[Callable], list, dict]] = []  # (record, fn, inputs, extra)

    def record(mode, precision, op=None):
        return {
            "mode": mode,
            "provider": provider,
            "op": op,
            "B": B,
            "n_l": case.n_l,
            "n_u": case.n_u,
            "precision": precision,
            "status": "ok",
            "reason": None,
        }

    for precision in spec["precisions"]:
        with matmul_precision(precision):
            runner = None
            for mode in spec["modes"]:
                if mode in LOSS_MODES:
                    rec = record(mode, precision)
                    try:
                        if runner is None:
                            runner = LossRunner(provider, case, precision)
                        fn = {"loss_forward": runner.forward, "loss_forward_backward": runner.forward_backward,
                              "train_step": runner.train_step}[mode]
                        flops = case.flops(backward=mode != "loss_forward")
                        items.append((rec, fn, case.batches, {"flops": flops}))
                    except Exception as exc:  # noqa: BLE001 - reported in the JSON, the grid goes on
                        items.append((_failed(rec, exc), None, [], {}))
                elif mode == CUDAGRAPH_MODE:
                    rec = record(mode, precision)
                    try:
                        step = CudaGraphTrainStep(provider, case, precision)
                        extra = {"flops": case.flops(), "peak_bytes": step.capture_peak_bytes}
                        items.append((rec, step, case.batches, extra))
                    except Exception as exc:  # noqa: BLE001
                        items.append((_failed(rec, exc), None, [], {}))
                elif mode in OP_MODES:
                    for variant in spec.get("ops", OP_VARIANTS):
                        rec = record(mode, precision, variant)
                        reason = op_unavailable_reason(variant, provider, device)
                        if reason is not None:
                            items.append((dict(rec, status="skipped", reason=reason), None, [], {}))
                            continue
                        try:
                            ob = build_op_bench(variant, provider, case, precision, mode)
                            items.append((rec, ob.fn, ob.inputs, {"flops": ob.flops, "bytes": ob.bytes}))
                        except Exception as exc:  # noqa: BLE001
                            items.append((_failed(rec, exc), None, [], {}))
                else:
                    raise ValueError(f"unknown mode {mode!r}; choose from {MODES}")

    ceilings: dict[str, dict] = {}
    for rec, fn, inputs, extra in items:
        if fn is None:
            continue
        precision = rec["precision"]
        try:
            if precision not in ceilings:  # in this process, just before this precision's timings
                ceilings[precision] = matmul_ceiling(
                    B, device, precision, rounds=timing["rounds"], warmup=timing["warmup"],
                    min_round_s=timing["min_round_s"],
                )
            with matmul_precision(precision):
                rec.update(time_callable(fn, inputs, device, **timing))
        except Exception as exc:  # noqa: BLE001
            _failed(rec, exc)
            continue
        seconds = rec["median_ms"] * 1e-3
        rec["examples_per_s"] = B / seconds
        rec["flops"] = extra.get("flops")
        rec["tflops"] = extra["flops"] / seconds / 1e12 if extra.get("flops") else None
        rec["ceiling_tflops"] = ceilings[precision]["tflops"]
        rec["ceiling_fraction"] = rec["tflops"] / rec["ceiling_tflops"] if rec["tflops"] else None
        rec["bytes"] = extra.get("bytes")
        rec["gb_per_s"] = extra["bytes"] / seconds / 1e9 if extra.get("bytes") else None

    for rec, fn, inputs, extra in items:
        rec.setdefault("peak_mb", None)
        if fn is None or rec["status"] != "ok" or not memory:
            continue
        try:
            if "peak_bytes" in extra:
                peak = extra["peak_bytes"]
            else:
                with matmul_precision(rec["precision"]):
                    peak = measure_peak_memory(fn, inputs[0], device)
            rec["peak_mb"] = peak / 2**20
        except Exception as exc:  # noqa: BLE001 - memory is a figure, not a reason to drop the timing
            rec["memory_error"] = f"{type(exc).__name__}: {exc}"
    return {
        "records": [rec for rec, *_ in items],
        "ceilings": [dict(c, provider=provider) for c in ceilings.values()],
    }


def _failed(rec: dict, exc: BaseException) -> dict:
    rec["status"] = "skipped" if isinstance(exc, backends.BackendUnavailableError) else "error"
    rec["reason"] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:400]
    return rec


def grid_specs(
    device: str,
    sizes: Sequence[int],
    providers: Sequence[str],
    precisions: Sequence[str],
    modes: Sequence[str],
    ops: Sequence[str],
) -> tuple[list[dict], list[dict]]:
    """(worker specs, skipped records): one worker per available (provider, B)."""
    specs, skipped = [], []
    for provider in providers:
        reason = provider_unavailable_reason(provider, device)
        for B in sizes:
            n_l, n_u = split_batch(B)
            wanted = [m for m in modes if m in LOSS_MODES]
            if provider in OP_BACKENDS:
                wanted += [m for m in modes if m in OP_MODES]
            graph_ok = device == "cuda" and provider in CUDAGRAPH_PROVIDERS and B in CUDAGRAPH_SIZES
            if CUDAGRAPH_MODE in modes and graph_ok:
                wanted.append(CUDAGRAPH_MODE)
            if not wanted:
                continue
            skips = {p: reason or precision_unavailable_reason(provider, p) for p in precisions}
            for precision, why in skips.items():
                if why is not None:
                    for mode in wanted:
                        for op in (ops if mode in OP_MODES else (None,)):
                            skipped.append({
                                "mode": mode, "provider": provider, "op": op, "B": B, "n_l": n_l, "n_u": n_u,
                                "precision": precision, "status": "skipped", "reason": why, "peak_mb": None,
                            })
            runnable = [p for p, why in skips.items() if why is None]
            if runnable:
                specs.append({"provider": provider, "B": B, "device": device, "precisions": runnable,
                              "modes": wanted, "ops": list(ops)})
    return specs, skipped


def _run_spec_in_subprocess(spec: dict, timeout_s: float) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "records.json"
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
        cmd = [sys.executable, str(RUN_SCRIPT), "worker", "--spec", json.dumps(spec), "--out", str(out)]
        try:
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout_s)
            failure = None if proc.returncode == 0 and out.is_file() else (
                f"worker exited with status {proc.returncode}: {proc.stderr.strip()[-400:]}"
            )
        except subprocess.TimeoutExpired:
            failure = f"worker ran past {timeout_s:.0f} s"
        if failure is None:
            return json.loads(out.read_text())
    n_l, n_u = split_batch(spec["B"])
    records = [{"mode": m, "provider": spec["provider"], "op": None, "B": spec["B"], "n_l": n_l, "n_u": n_u,
                "precision": p, "status": "error", "reason": failure, "peak_mb": None}
               for p in spec["precisions"] for m in spec["modes"]]
    return {"records": records, "ceilings": []}


def run_grid(
    device: str = "cpu",
    sizes: Optional[Sequence[int]] = None,
    providers: Sequence[str] = PROVIDERS,
    precisions: Optional[Sequence[str]] = None,
    modes: Sequence[str] = MODES,
    ops: Sequence[str] = tuple(OP_VARIANTS),
    *,
    fast: bool = False,
    rounds: Optional[int] = None,
    warmup: Optional[int] = None,
    in_process: bool = False,
    worker_timeout_s: float = 3600.0,
    command: Optional[str] = None,
    log: Callable[[str], None] = lambda s: print(s, file=sys.stderr, flush=True),
    checkpoint: Optional[Callable[[dict], None]] = None,
) -> dict:
    """Run the grid and return the JSON document (see benchmarks/README.md for its schema).

    Workers run in RUN_ORDER. `checkpoint`, when given, receives the document after every worker, with
    "complete": false and "workers" {"done", "total"} (what a run stopped part-way leaves behind); the
    returned document has "complete": true."""
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: torch sees no CUDA GPU")
    sizes = tuple(sizes or (FAST_SIZES if fast else SIZES)[device])
    precisions = tuple(precisions or DEFAULT_PRECISIONS[device][: 1 if fast else None])
    timing = dict(FAST_TIMING if fast else TIMING_DEFAULTS[device])
    if rounds is not None:
        timing["rounds"] = rounds
    if warmup is not None:
        timing["warmup"] = warmup
    for name, allowed, values in (("provider", PROVIDERS, providers), ("precision", PRECISIONS, precisions),
                                  ("mode", MODES, modes), ("op", OP_VARIANTS, ops)):
        unknown = [v for v in values if v not in allowed]
        if unknown:
            raise SystemExit(f"unknown {name}(s) {unknown}; choose from {tuple(allowed)}")

    memory_reason = cpu_peak_memory_supported() if device == "cpu" else None
    if device == "cpu" and in_process:
        memory_reason = "not measured with --in-process (the CPU method needs a fresh process per provider)"
    specs, results = grid_specs(device, sizes, providers, precisions, modes, ops)
    specs.sort(key=lambda spec: RUN_ORDER.index(spec["provider"]))  # stable: sizes stay in order
    ceilings = []

    def document(done: int) -> dict:
        for rec in results:
            rec.setdefault("ceiling_fraction", None)
        return _grid_document(device, sizes, precisions, timing, memory_reason, command, list(ceilings),
                              list(results), done=done, total=len(specs))

    for done, spec in enumerate(specs):
        spec.update(timing=timing, memory=memory_reason is None)
        log(f"[{done + 1}/{len(specs)}] {spec['provider']} B={spec['B']}: {', '.join(spec['modes'])}")
        t0 = time.perf_counter()
        out = run_worker(spec) if in_process else _run_spec_in_subprocess(spec, worker_timeout_s)
        log(f"  {time.perf_counter() - t0:.1f} s")
        results.extend(out["records"])
        ceilings.extend(out["ceilings"])
        if checkpoint is not None and done + 1 < len(specs):
            checkpoint(document(done + 1))
    return document(len(specs))


def _grid_document(device, sizes, precisions, timing, memory_reason, command, ceilings, results, *,
                   done: int, total: int) -> dict:
    return {
        "schema": SCHEMA,
        "complete": done == total,
        "workers": {"done": done, "total": total},
        "date": datetime.date.today().isoformat(),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": device,
        "hardware": hardware_info(device),
        "versions": version_info(),
        "settings": {
            "command": command,
            "model": dict(MODEL_SHAPES, activation=ACTIVATION),
            "mix": {
                "labelled_fraction": LABELLED_FRACTION,
                "rule": "n_l = floor(0.1 * B + 0.5) labelled rows, n_u = B - n_l unlabelled (every class enumerated)",
                "per_size": {str(B): list(split_batch(B)) for B in sizes},
            },
            "data": f"x binarized ~ Bernoulli({PIXEL_ON_PROBABILITY}); labels uniform; explicit N(0, 1) noise "
                    "(Pyro draws its own)",
            "alpha": ALPHA,
            "optimizer": f"torch.optim.Adam(lr={LEARNING_RATE}, fused=True) for every provider "
                         "(CUDA-graph steps: capturable=True)",
            "rotating_batches": ROTATING_BATCHES,
            "precisions": {p: PRECISIONS[p] for p in precisions},
            "float32_matmul_precision": torch.get_float32_matmul_precision(),
            "timing": dict(timing, timer="CUDA events around each round" if device == "cuda"
                           else "time.perf_counter around each round", statistic="median over rounds; "
                           "spread = IQR (q3 - q1) and stddev"),
            "memory_method": CUDA_MEMORY_METHOD if device == "cuda" else CPU_MEMORY_METHOD,
            "memory_unavailable": memory_reason,
            "flop_count": "matmul FLOPs of the factorized formulation for every provider "
                          "(ssvae_fast.flops.step_flops; the naive one, reference and Pyro, does "
                          f"{_naive_over_factorized(256):.2f}x "
                          "that at B=256); ceiling_fraction = TFLOP/s / ceiling_tflops, the TFLOP/s of a "
                          "(B*C, H) x (H, D) matmul at the same precision timed in the same worker process just before",
            "modes": {
                "train_step": "zero_grad, loss, backward, Adam step",
                "loss_forward": "the loss with autograd recording (as in training), no backward",
                "loss_forward_backward": "the loss and its backward",
                "op_forward": "one fused op alone, no autograd",
                "op_forward_backward": "one fused op and torch.autograd.grad of its differentiable inputs",
                "train_step_cudagraph": "the whole training step captured in one CUDA graph, replayed",
            },
            "pyro": "benchmarks/pyro_m2.py: TraceEnum_ELBO(max_plate_nesting=1), y enumerated in parallel; "
                    "Monte Carlo KL; Pyro argument validation off",
        },
        "ceilings": ceilings,
        "results": results,
    }


def _naive_over_factorized(B: int) -> float:
    n_l, _ = split_batch(B)
    shapes = [MODEL_SHAPES[k] for k in ("n_classes", "x_dim", "hidden", "z_dim")]
    return step_flops(B, n_l, *shapes, "naive") / step_flops(B, n_l, *shapes)
