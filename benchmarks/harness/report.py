"""What a results document says: hardware and versions (`hardware_info`, `version_info`), markdown
tables (`render_tables`, `render_documents`) and the README's generated block (`rewrite_readme`)."""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
from pathlib import Path
from typing import Any, Optional, Sequence

import torch

import ssvae_fast

from .config import (
    BENCH_END,
    BENCH_START,
    CUDAGRAPH_MODE,
    LOSS_MODES,
    OP_MODES,
    OP_VARIANTS,
    PROVIDERS,
    REPO_ROOT,
    SCHEMA,
    TABLE_ORDER,
)


def hardware_info(device: str) -> dict:
    info: dict[str, Any] = {
        "cpu_model": _cpu_model(),
        "cpu_logical_cores": os.cpu_count(),
        "cpu_usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
    }
    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        info.update(
            gpu_name=props.name,
            gpu_count=torch.cuda.device_count(),
            gpu_memory_gib=round(props.total_memory / 2**30, 1),
            gpu_sm_count=props.multi_processor_count,
            gpu_capability=f"{props.major}.{props.minor}",
        )
    return info


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def version_info() -> dict:
    from importlib import metadata

    def version(dist):
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return None

    commit, dirty = _git_state()
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "triton": version("triton"),
        "pyro_ppl": version("pyro-ppl"),
        "numpy": version("numpy"),
        "ssvae_fast": ssvae_fast.__version__,
        "git_commit": commit,
        "git_dirty": dirty,
    }


def _git_state() -> tuple[Optional[str], Optional[bool]]:
    def git(*args):
        return subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=20)

    try:
        head = git("rev-parse", "HEAD")
        if head.returncode != 0:
            return None, None
        status = git("status", "--porcelain", "--untracked-files=no")
        return head.stdout.strip(), bool(status.stdout.strip())
    except (OSError, subprocess.SubprocessError):
        return None, None


TABLE_COLUMNS = ("provider", "B", "precision", "median ms", "IQR ms", "examples/s", "vs eager reference",
                 "peak MB", "TFLOP/s", "% of matmul ceiling")
OP_TABLE_COLUMNS = ("op", "backend", "B", "precision", "median ms", "IQR ms", "examples/s", "vs torch", "peak MB",
                    "GB/s", "TFLOP/s", "% of matmul ceiling")
MODE_TITLES = {
    "train_step": "Training step (loss, backward, Adam)",
    "train_step_cudagraph": "Training step captured in a CUDA graph",
    "loss_forward": "Loss forward",
    "loss_forward_backward": "Loss forward + backward",
    "op_forward": "Fused ops alone, forward",
    "op_forward_backward": "Fused ops alone, forward + backward",
}


def _fmt(value, digits: int = 3) -> str:
    """`digits` significant digits in plain notation ("0.0512", "12.3", "1,234")."""
    if value is None:
        return "–"
    if value == 0:
        return "0"
    decimals = max(0, digits - 1 - int(math.floor(math.log10(abs(value)))))
    return f"{value:,.{decimals}f}"


def _fmt_peak(mb: Optional[float], device: str) -> str:
    """CPU RSS figures resolve about 0.5 MB (the kernel batches RSS counters per thread): below 1 MB, "<1"."""
    if mb is not None and device == "cpu" and mb < 1:
        return "<1"
    return _fmt(mb)


def _heading(doc: dict) -> str:
    hw, v = doc["hardware"], doc["versions"]
    if doc["device"] == "cuda":
        where = f"{hw['gpu_name']} ({hw.get('gpu_sm_count')} SMs, {hw.get('gpu_memory_gib')} GiB), CUDA {v.get('cuda')}"
    else:
        where = f"{hw['cpu_model']}, {hw['cpu_usable_cores']} cores, {hw['torch_threads']} torch threads"
    commit = (v["git_commit"][:10] if v.get("git_commit") else "none") + ("+dirty" if v.get("git_dirty") else "")
    return f"{where}; torch {v['torch']}; {doc['date']}; commit {commit}"


def render_tables(doc: dict, modes: Sequence[str] = ("train_step", CUDAGRAPH_MODE), level: str = "###") -> str:
    """Markdown tables of `doc` (a results JSON) for `modes`, each headed with hardware and date.

    Speed-up: against the eager `reference` of the same mode, B and precision (CUDA-graph steps: against
    its eager training step); op tables: against the `torch` backend's op. Skipped and failed entries
    are listed under each table with their reasons.
    """
    results = doc["results"]
    eager = {(r["mode"], r["B"], r["precision"]): r["median_ms"] for r in results
             if r["provider"] == "reference" and r["status"] == "ok" and r["mode"] in LOSS_MODES}
    torch_ops = {(r["mode"], r["op"], r["B"], r["precision"]): r["median_ms"] for r in results
                 if r["provider"] == "torch" and r["status"] == "ok" and r["mode"] in OP_MODES}
    mix = doc["settings"]["mix"]
    provider_order = {p: i for i, p in enumerate(PROVIDERS)}
    op_order = {o: i for i, o in enumerate(OP_VARIANTS)}
    out = []
    for mode in modes:
        rows = [r for r in results if r["mode"] == mode]
        if not rows:
            continue
        op_mode = mode in OP_MODES
        columns = OP_TABLE_COLUMNS if op_mode else TABLE_COLUMNS
        n_text = 4 if op_mode else 3  # left-aligned leading columns
        out.append(f"{level} {MODE_TITLES[mode]}: {_heading(doc)}\n")
        out.append("| " + " | ".join(columns) + " |")
        out.append("|" + "|".join("---" if i < n_text else "---:" for i in range(len(columns))) + "|")
        ok = sorted((r for r in rows if r["status"] == "ok"), key=lambda r: (
            op_order.get(r["op"], -1), r["B"], r["precision"], provider_order.get(r["provider"], 99)))
        for r in ok:
            if op_mode:
                base = torch_ops.get((mode, r["op"], r["B"], r["precision"]))
            else:
                base = eager.get(("train_step" if mode == CUDAGRAPH_MODE else mode, r["B"], r["precision"]))
            frac = r.get("ceiling_fraction")
            cell = {
                "op": f"`{r['op']}`",
                "provider": f"`{r['provider']}`",
                "backend": f"`{r['provider']}`",
                "B": str(r["B"]),
                "precision": r["precision"],
                "median ms": _fmt(r["median_ms"]),
                "IQR ms": _fmt(r["iqr_ms"], 2),
                "examples/s": _fmt(r["examples_per_s"]) if r["examples_per_s"] < 1000
                else f"{r['examples_per_s']:,.0f}",
                "vs eager reference": f"{base / r['median_ms']:.2f}x" if base else "–",
                "vs torch": f"{base / r['median_ms']:.2f}x" if base else "–",
                "peak MB": _fmt_peak(r.get("peak_mb"), doc["device"]),
                "GB/s": _fmt(r.get("gb_per_s")),
                "TFLOP/s": _fmt(r.get("tflops")),
                "% of matmul ceiling": f"{100 * frac:.1f}%" if frac is not None else "–",
            }
            out.append("| " + " | ".join(cell[c] for c in columns) + " |")
        sizes = sorted({r["B"] for r in rows})
        mixes = ", ".join(f"B={B}: {mix['per_size'][str(B)][0]} labelled + {mix['per_size'][str(B)][1]} unlabelled"
                          for B in sizes if str(B) in mix["per_size"])
        out.append("")
        out.append(f"{round(100 * mix['labelled_fraction'])}% labelled rows per step ({mixes}); "
                   f"median over {doc['settings']['timing']['rounds']} rounds (fewer past the time cap), inputs "
                   f"rotating over {doc['settings']['rotating_batches']} batches; TFLOP/s from the factorized "
                   "matmul FLOP count (`ssvae_fast.flops`) for every provider; ceiling: a (B*C, 500) x (500, 784) "
                   "matmul at the same precision, timed in the same process; peak MB: what one call allocates beyond "
                   "what "
                   "is already resident (method in the JSON).")
        not_ok: dict = {}
        for r in rows:
            if r["status"] != "ok":
                entry = not_ok.setdefault((r["provider"], r["status"], r["reason"]), [set(), set()])
                entry[0].add(r["B"])
                if r.get("op"):
                    entry[1].add(r["op"])
        if not_ok:
            out.append("")
            for (provider, status, reason), (bs, ops) in sorted(
                    not_ok.items(), key=lambda kv: provider_order.get(kv[0][0], 99)):
                all_ops = ops == {r["op"] for r in rows}
                what = f"`{provider}`" + ("" if not ops or all_ops else " " + ", ".join(f"`{o}`" for o in sorted(ops)))
                out.append(f"- {what} {status} (B={', '.join(map(str, sorted(bs)))}): {reason}")
        if doc.get("complete") is False:
            workers = doc.get("workers", {})
            out.append("")
            out.append(f"- partial run: {workers.get('done', '?')} of {workers.get('total', '?')} (provider, B) "
                       "workers finished before the run was stopped; the others have no figure here")
        out.append("")
    return "\n".join(out)


def render_documents(paths: Sequence[str | Path], all_modes: bool = False) -> str:
    docs = [json.loads(Path(p).read_text()) for p in paths]
    for p, d in zip(paths, docs):
        if d.get("schema") != SCHEMA:
            raise SystemExit(f"{p}: not a {SCHEMA} document (schema {d.get('schema')!r})")
    docs.sort(key=lambda d: (d["device"], d["date"]))
    modes = TABLE_ORDER if all_modes else ("train_step", CUDAGRAPH_MODE)
    return "\n".join(render_tables(d, modes) for d in docs)


def render_bf16_comparison(paths: Sequence[str | Path], provider: str = "cpu", B: Optional[int] = None) -> str:
    """One column per results document (a run of the train_step grid with fp32 and bf16): `provider`'s step
    in both precisions and its bf16 speed-up, the eager reference under the same bf16 autocast, and the
    step's matmul FLOPs at the bf16 ceiling measured in `provider`'s own worker (the GEMM floor) with the
    step over it. B: the batch size (default: the largest in every document)."""
    docs = [json.loads(Path(p).read_text()) for p in paths]

    def step(doc, who, precision, size):
        for r in doc["results"]:
            if (r["mode"], r["provider"], r["precision"], r["B"], r["status"]) == (
                    "train_step", who, precision, size, "ok"):
                return r
        return None

    def ceiling(doc, precision, size):
        for c in doc.get("ceilings", []):
            if (c["provider"], c["precision"], c["B"]) == (provider, precision, size):
                return c["tflops"]
        return None

    sizes = [B or max(r["B"] for r in d["results"] if r["mode"] == "train_step") for d in docs]
    names = [Path(p).stem for p in paths]
    rows = {k: [] for k in ("fp32", "bf16", "speedup", "ref", "vs_ref", "c32", "c16", "floor", "over")}
    for doc, size in zip(docs, sizes):
        f32, b16, ref = step(doc, provider, "fp32", size), step(doc, provider, "bf16", size), step(
            doc, "reference", "bf16", size)
        c32, c16 = ceiling(doc, "fp32", size), ceiling(doc, "bf16", size)
        floor = b16["flops"] / (c16 * 1e12) * 1e3 if b16 and c16 else None
        rows["fp32"].append(f"{f32['median_ms']:.1f} ms" if f32 else "–")
        rows["bf16"].append(f"{b16['median_ms']:.1f} ms" if b16 else "–")
        rows["speedup"].append(f"{f32['median_ms'] / b16['median_ms']:.2f}x" if f32 and b16 else "–")
        rows["ref"].append(f"{ref['median_ms']:.1f} ms" if ref else "–")
        rows["vs_ref"].append(f"{ref['median_ms'] / b16['median_ms']:.2f}x" if ref and b16 else "–")
        rows["c32"].append(f"{c32:.2f}" if c32 else "–")
        rows["c16"].append(f"{c16:.2f}" if c16 else "–")
        rows["floor"].append(f"{floor:.1f} ms" if floor else "–")
        rows["over"].append(f"{b16['median_ms'] / floor:.2f}x" if floor else "–")
    labels = {
        "fp32": f"`{provider}`, float32", "bf16": f"`{provider}`, bf16 (autocast)",
        "speedup": f"bf16 speed-up of `{provider}`", "ref": "`reference`, bf16 (autocast)",
        "vs_ref": f"`{provider}` against `reference`, both bf16",
        "c32": "matmul ceiling, float32 (TFLOP/s)", "c16": "matmul ceiling, bf16 (TFLOP/s)",
        "floor": "the step's GEMMs at that bf16 ceiling (the floor)", "over": f"`{provider}` bf16 step over that floor",
    }
    size_text = ", ".join(sorted({str(s) for s in sizes}))
    out = [f"| training step, B = {size_text} | " + " | ".join(names) + " |",
           "| --- |" + " ---: |" * len(names)]
    out += [f"| {labels[k]} | " + " | ".join(v) + " |" for k, v in rows.items()]
    return "\n".join(out)


def rewrite_readme(path: str | Path, block: str) -> None:
    """Replace the text between BENCH_START and BENCH_END in `path` (markers kept, nothing else touched)."""
    path = Path(path)
    text = path.read_text()
    start, end = text.find(BENCH_START), text.find(BENCH_END)
    if start < 0 or end < 0 or end < start:
        raise SystemExit(f"{path}: needs a {BENCH_START} ... {BENCH_END} block to rewrite")
    body = ("\n<!-- generated by `python benchmarks/run.py table ... --readme` from benchmarks/results/*.json; "
            "do not edit by hand -->\n" + block.strip() + "\n")
    path.write_text(text[: start + len(BENCH_START)] + body + text[end:])
