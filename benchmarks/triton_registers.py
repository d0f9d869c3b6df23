"""Registers and spills of every Triton kernel, compiled for a CUDA GPU on a machine that has none.

    python benchmarks/triton_registers.py                          # sm_90, MNIST sizes, fp32 and bf16
    python benchmarks/triton_registers.py --dtypes fp32,bf16,fp16 --precisions tf32,tf32x3 --json out.json
    python benchmarks/triton_registers.py --kernels bernoulli --spills-only

Every launcher of the `triton` backend (ssvae_fast/triton/<op>.py: forward and backward of the four
ops) runs on CPU tensors of MNIST M2's sizes (B = 100 examples, 10 labelled, C = 10, D = 784, H = 500,
z = 50). Triton's launch is turned into its `warmup` (compile, never launch) against a stand-in driver
that names the target, so each kernel is compiled exactly as the launchers specialize it (the same
arguments, constexprs and divisibility), an autotuned kernel once per config. The ptxas that Triton
ships then reports each compiled kernel's registers and spill stores (`ptxas -v`). No GPU, no CUDA
driver; needs Triton's NVIDIA backend (Linux x86-64 wheels). Not for the interpreter (TRITON_INTERPRET).

Registers and spills are what can be checked without a GPU; whether a config is fast is the autotuner's
and the benchmarks' business on a GPU.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

if os.environ.get("TRITON_INTERPRET") == "1":
    raise SystemExit("triton_registers.py compiles real kernels: unset TRITON_INTERPRET")

import torch  # noqa: E402
import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.runtime import driver  # noqa: E402
from triton.runtime.jit import KernelInterface  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import ssvae_fast.triton as settings  # noqa: E402
from ssvae_fast.triton import bernoulli_loglik_linear, class_conditional_activation  # noqa: E402
from ssvae_fast.triton import elbo_reduction, gaussian_reparam_kl  # noqa: E402

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16, "fp64": torch.float64}
SIZES = dict(N=100, n_l=10, C=10, D=784, H=500, Z=50)  # MNIST M2, 10% labelled


class _CompileOnlyDriver:
    """What `JITFunction.run(..., warmup=True)` asks of the driver: the target, a device and a stream."""

    def __init__(self, target: GPUTarget):
        self.target = target

    def get_current_target(self):
        return self.target

    def get_current_device(self):
        return 0

    def get_current_stream(self, device=None):
        return 0


@contextlib.contextmanager
def compile_only(arch: int, compiled: list):
    """Within: `kernel[grid](...)` compiles (every autotune config) for sm_`arch` and appends the
    CompiledKernel objects to `compiled` instead of launching."""
    original = KernelInterface.__getitem__

    def getitem(self, grid):
        def warmup(*args, **kwargs):
            out = self.warmup(*args, grid=grid, **kwargs)
            compiled.extend(out if isinstance(out, list) else [out])

        return warmup

    previous = driver._active  # None until something asked for the real driver (there is none here)
    driver.set_active(_CompileOnlyDriver(GPUTarget("cuda", arch, 32)))
    KernelInterface.__getitem__ = getitem
    try:
        yield
    finally:
        KernelInterface.__getitem__ = original
        driver._active = previous


def launch_all(dtype: torch.dtype) -> None:
    """Call every launcher once per form the training step uses (CPU tensors; outputs are garbage)."""
    N, n_l, C, D, H, Z = (SIZES[k] for k in ("N", "n_l", "C", "D", "H", "Z"))
    t = lambda *shape: torch.rand(*shape, dtype=dtype)  # noqa: E731
    classes = torch.randint(0, C, (n_l,))
    rows = n_l + (N - n_l) * C
    a, w_y = t(N, H), t(H, Z + C)[:, Z:]  # w_y: the class columns of a first-layer weight, read in place
    for activation in ("softplus", "relu"):
        for cls in (None, classes):  # every class (decoder form: rows n_l + j C + c) / labelled prefix
            out = class_conditional_activation.forward(a, w_y, cls, activation)
            class_conditional_activation.backward(torch.ones_like(out), a, w_y, None, cls, activation, N, True, True)
    head, eps = t(rows, 2 * Z), t(rows, Z)
    gaussian_reparam_kl.forward(head, eps)
    gaussian_reparam_kl.backward(head, eps, t(rows, Z), t(rows), True, True)
    h, weight, bias, x = t(rows, H), t(D, H), t(D), t(N, D)
    precision = settings.get_input_precision()
    for store_s in (True, False):
        _, s = bernoulli_loglik_linear.forward(h, weight, bias, x, n_l, C, store_s, precision)
    # s is empty (store_s False): the backward kernel recomputes the logits
    bernoulli_loglik_linear.backward(t(rows), h, weight, bias, x, s, n_l, C, precision, True, True, True, True)
    logits_y, y_l = t(N, C), classes
    ll_l, kl_l, ll_u, kl_u = t(n_l), t(n_l), t(N - n_l, C), t(N - n_l, C)
    elbo_reduction.forward(logits_y, y_l, ll_l, kl_l, ll_u, kl_u, 8.0)
    elbo_reduction.backward(t(N), logits_y, y_l, ll_u, kl_u, 8.0)


def ptxas_report(kernel, arch: int) -> dict:
    """{"registers", "spill_stores", "spill_loads"} from `ptxas -v` on the kernel's PTX."""
    from triton.backends.nvidia.compiler import get_ptxas

    ptxas = get_ptxas(arch).path
    with tempfile.TemporaryDirectory() as tmp:
        ptx = Path(tmp) / "kernel.ptx"
        ptx.write_text(kernel.asm["ptx"])
        suffix = "a" if arch >= 90 else ""  # Triton's PTX for sm_90 and later targets the 'a' variant
        out = subprocess.run([ptxas, "-v", f"--gpu-name=sm_{arch}{suffix}", str(ptx), "-o", str(Path(tmp) / "k.cubin")],
                             capture_output=True, text=True, check=True).stderr
    registers = re.search(r"Used (\d+) registers", out)
    spills = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", out)
    return {
        "registers": int(registers.group(1)) if registers else None,
        "spill_stores": int(spills.group(1)) if spills else 0,
        "spill_loads": int(spills.group(2)) if spills else 0,
    }


def _constexprs(kernel) -> dict:
    """The kernel's tl.constexpr arguments by name (BLOCK sizes, flags), from its compile source."""
    src = kernel.src
    names = src.fn.arg_names
    out = {}
    for key, value in src.constants.items():
        index = key[0] if isinstance(key, tuple) else key
        name = names[index] if isinstance(index, int) else index
        if isinstance(value, (bool, int, float, str)) and name.isupper():
            out[name] = value
    return out


def report(arch: int, dtypes, precisions, kernel_filter: str | None = None) -> list[dict]:
    rows, seen = [], set()
    for dtype_name, precision in itertools.product(dtypes, precisions):
        if dtype_name != "fp32" and precision != precisions[0]:
            continue  # the input precision applies to fp32 dots only
        compiled: list = []
        with compile_only(arch, compiled), settings.set_input_precision(precision):
            launch_all(DTYPES[dtype_name])
        for kernel in compiled:
            name = kernel.src.fn.__name__
            if kernel_filter and kernel_filter not in name:
                continue
            consts = _constexprs(kernel)
            if "INPUT_PRECISION" not in consts and precision != precisions[0]:
                continue  # kernels without a dot: one row per dtype
            if dtype_name != "fp32":
                consts.pop("INPUT_PRECISION", None)
            key = (name, dtype_name, kernel.metadata.num_warps, kernel.metadata.num_stages,
                   tuple(sorted(consts.items())))
            if key in seen:
                continue
            seen.add(key)
            rows.append(dict(kernel=name, dtype=dtype_name, num_warps=kernel.metadata.num_warps,
                             num_stages=kernel.metadata.num_stages, constexprs=consts,
                             shared_bytes=kernel.metadata.shared, **ptxas_report(kernel, arch)))
    return rows


def render(rows: list[dict], spills_only: bool = False) -> str:
    lines = ["| kernel | dtype | warps | stages | constexprs | registers | spill stores (bytes) | shared (bytes) |",
             "|---|---|---:|---:|---|---:|---:|---:|"]
    for r in rows:
        if spills_only and not r["spill_stores"]:
            continue
        consts = ", ".join(f"{k}={v}" for k, v in r["constexprs"].items() if k != "IS_FP64")
        lines.append(f"| `{r['kernel']}` | {r['dtype']} | {r['num_warps']} | {r['num_stages']} | {consts} | "
                     f"{r['registers']} | {r['spill_stores']} | {r['shared_bytes']} |")
    spilling = sum(1 for r in rows if r["spill_stores"])
    lines.append("")
    lines.append(f"{len(rows)} compiled kernels, {spilling} with spills (triton {triton.__version__}, "
                 f"MNIST sizes {SIZES})")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", type=int, default=90, help="compute capability as an integer (default 90)")
    parser.add_argument("--dtypes", default="fp32,bf16", help=f"from {','.join(DTYPES)}")
    parser.add_argument("--precisions", default="tf32", help="fp32 tl.dot input precisions: tf32,tf32x3,ieee")
    parser.add_argument("--kernels", default=None, help="only kernels whose name contains this")
    parser.add_argument("--spills-only", action="store_true", help="list only the kernels that spill")
    parser.add_argument("--json", default=None, help="also write the rows to this JSON file")
    args = parser.parse_args(argv)
    dtypes = args.dtypes.split(",")
    precisions = args.precisions.split(",")
    unknown = [d for d in dtypes if d not in DTYPES]
    if unknown:
        parser.error(f"unknown dtype(s) {unknown}; choose from {list(DTYPES)}")
    rows = report(args.arch, dtypes, precisions, args.kernels)
    print(render(rows, args.spills_only))
    if args.json:
        Path(args.json).write_text(json.dumps({"triton": triton.__version__, "arch": args.arch, "sizes": SIZES,
                                               "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
