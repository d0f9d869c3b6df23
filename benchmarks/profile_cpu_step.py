"""Time M2's training step on the CPU for the `cpu` backend against `reference`, `reference` under
torch.compile, `torch`, and the step's GEMMs alone; measure peak memory; profile. A standalone
iteration tool for the `cpu` backend (the reported benchmarks are `python benchmarks/run.py` and
`pytest benchmarks/`); it never asserts anything.

    python benchmarks/profile_cpu_step.py                         # times, ratios (interleaved rounds)
    python benchmarks/profile_cpu_step.py --memory                # + peak memory, one subprocess each
    python benchmarks/profile_cpu_step.py --providers cpu,cpu:store-chunk=256,cpu:recompute,gemm
    python benchmarks/profile_cpu_step.py --ops                   # the Bernoulli op's variants alone
    python benchmarks/profile_cpu_step.py --layouts --precision bf16  # weight-gradient operand layouts
    python benchmarks/profile_cpu_step.py --profile cpu           # torch.profiler table of one provider
    python benchmarks/profile_cpu_step.py --precision bf16 --providers reference,cpu,gemm --profile cpu

Step: zero_grad, loss (reduction="mean"), backward, torch.optim.Adam(lr=1e-3).step(), float32 (or, with
`--precision bf16`, the loss under torch.autocast("cpu", dtype=torch.bfloat16) and bf16 GEMMs for `gemm`), on the
MNIST-sized M2 of benchmarks/harness (D=784, C=10, H=500, z=50, one softplus hidden layer per network,
B=256 = 26 labelled + 230 unlabelled, binarized x, explicit noise; 4 rotating batches).

Providers: reference | reference-compile (torch.compile(loss), inductor, dynamic=False) | torch | cpu |
gemm (the factorized step's GEMMs alone, forward and backward, on preallocated tensors: the floor every
backend that keeps GEMMs in torch stands on). `cpu:store-chunk=R` runs the Bernoulli logits GEMM and
epilogue in chunks of R rows (default: all rows at once), `cpu:recompute` keeps no s and recomputes the
logits in the backward. `--ops` times those variants on the Bernoulli op alone.

Timing: warm-up calls first (compilation excluded), then `--rounds` rounds; each round calls every
provider once, in a rotated order (the machine is shared: interleaving puts every provider under the
same background load). Reported: median and min per step, and ratios of medians.
Peak memory (--memory), a fresh subprocess per provider, two methods:
  RSS: glibc's mmap threshold set to 64 KiB and malloc_trim(0) so freed tensors leave the resident set,
  one settling step, the RSS high-water mark reset through /proc/self/clear_refs, then peak = VmHWM
  after one step - VmRSS before it (what the step allocates: activations, saved tensors, gradients,
  temporaries; parameters, Adam state and inputs already resident are excluded). The method of
  benchmarks/run.py's CPU figures; noisy by a few MiB (malloc arenas, page granularity).
  allocator: the peak of torch's live tensor bytes during one step above the level before it, from the
  profiler's allocation events (profile_memory=True). Deterministic; tensors only.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import ctypes
import gc
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness.measure import time_interleaved  # noqa: E402
from ssvae_fast import M2  # noqa: E402

D, C, H, Z = 784, 10, 500, 50
ALPHA = 0.1 * 60000 / 100
PRECISION = "fp32"  # or "bf16" (--precision)


def _autocast():
    if PRECISION == "bf16":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def make_case(B: int = 256, labelled_fraction: float = 0.1, seed: int = 0, n_batches: int = 4):
    """(model, batches): the input factory `make_case` of benchmarks/harness/cases.py, repeated here so
    that this script stands alone."""
    n_l = int(labelled_fraction * B + 0.5)
    n_u = B - n_l
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = M2(D, C, Z, hidden=(H,), activation="softplus", backend="reference")
    g = torch.Generator().manual_seed(seed + 1)
    batches = []
    for _ in range(n_batches):
        x_l = (torch.rand(n_l, D, generator=g) < 0.13).float()
        x_u = (torch.rand(n_u, D, generator=g) < 0.13).float()
        y_l = torch.randint(0, C, (n_l,), generator=g)
        eps_l = torch.randn(n_l, Z, generator=g)
        eps_u = torch.randn(n_u, C, Z, generator=g)
        batches.append((x_l, y_l, x_u, eps_l, eps_u))
    return model, batches


class TrainStep:
    """One provider's training step on its own copy of the model."""

    def __init__(self, provider: str, model, batches):
        self.provider, self.batches, self.i = provider, batches, 0
        self.model = copy.deepcopy(model)
        name, _, option = provider.partition(":")
        self.option = option
        if name == "reference-compile":
            self.model.backend = "reference"
        else:
            self.model.backend = name
        m = self.model

        def loss(x_l, y_l, x_u, eps_l, eps_u):
            with _autocast():
                return m.loss(x_l, y_l, x_u, alpha=ALPHA, eps_l=eps_l, eps_u=eps_u)

        self.loss = torch.compile(loss, dynamic=False) if name == "reference-compile" else loss
        self.optimizer = torch.optim.Adam(m.parameters(), lr=1e-3, fused=True)

    def __call__(self):
        batch = self.batches[self.i % len(self.batches)]
        self.i += 1
        with self._options():
            self.optimizer.zero_grad(set_to_none=True)
            self.loss(*batch).backward()
            self.optimizer.step()

    def _options(self):
        if not self.option:
            return contextlib.nullcontext()
        from ssvae_fast.cpu import bernoulli_loglik_linear as cpu_bernoulli

        if self.option == "recompute":
            return cpu_bernoulli.recompute_bernoulli_logits()
        if self.option.startswith("store-chunk="):
            return _store_chunk_rows(int(self.option.split("=")[1]))
        raise ValueError(f"unknown option {self.option!r}")


@contextlib.contextmanager
def _store_chunk_rows(rows):
    """bernoulli_loglik_linear_cpu with s kept: GEMM + epilogue in chunks of `rows` rows."""
    from ssvae_fast.cpu import bernoulli_loglik_linear as cpu_bernoulli

    previous, cpu_bernoulli.STORE_CHUNK_ROWS = cpu_bernoulli.STORE_CHUNK_ROWS, rows
    try:
        yield
    finally:
        cpu_bernoulli.STORE_CHUNK_ROWS = previous


class GemmOnly:
    """The factorized step's GEMMs (forward and backward, one hidden layer, the layouts autograd uses),
    on preallocated operands and outputs. No elementwise work, no allocation."""

    def __init__(self, B: int = 256, n_l: int = 26):
        n_u = B - n_l
        R = n_l + n_u * C
        dtype = torch.bfloat16 if PRECISION == "bf16" else torch.float32
        r = lambda *s: (torch.randn(*s) * 0.05).to(dtype)  # noqa: E731
        self.x = r(B, D)
        self.w = {  # (out, in) like nn.Linear
            "c1": r(H, D), "c2": r(C, H), "ex": r(H, D), "eh": r(2 * Z, H), "dz": r(H, Z), "do": r(D, H),
        }
        self.act = {"c1": r(B, H), "eh": r(R, H), "dz": r(R, Z), "do": r(R, H)}
        self.grad = {"c2": r(B, C), "c1": r(B, H), "ex": r(B, H), "eh": r(R, 2 * Z), "dz": r(R, H), "do": r(R, D)}
        self.out = {}
        forward = [("c1", self.x), ("c2", self.act["c1"]), ("ex", self.x), ("eh", self.act["eh"]),
                   ("dz", self.act["dz"]), ("do", self.act["do"])]
        self.forward = [(inp, self.w[k], torch.empty(inp.shape[0], self.w[k].shape[0], dtype=dtype))
                        for k, inp in forward]
        # backward: dW = dY^T X for every layer; dX = dY W except where X is the data x.
        self.weight_grads = []
        for k, inp in forward:
            self.weight_grads.append((self.grad[k], inp, torch.empty_like(self.w[k])))
        self.input_grads = [
            (self.grad[k], self.w[k], torch.empty(self.grad[k].shape[0], self.w[k].shape[1], dtype=dtype))
            for k in ("c2", "eh", "dz", "do")
        ]

    def __call__(self):
        for inp, w, out in self.forward:
            torch.mm(inp, w.t(), out=out)
        for dy, inp, out in self.weight_grads:
            torch.mm(dy.t(), inp, out=out)
        for dy, w, out in self.input_grads:
            torch.mm(dy, w, out=out)


def build(provider: str, model, batches):
    return GemmOnly() if provider == "gemm" else TrainStep(provider, model, batches)


def time_providers(providers, rounds: int, warmup: int) -> dict:
    model, batches = make_case()
    steps = {p: build(p, model, batches) for p in providers}
    for p, step in steps.items():
        t0 = time.perf_counter()
        for _ in range(warmup):
            step()
        print(f"# warm-up {p}: {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return time_interleaved(steps, rounds, warmup=0)


# ---- peak memory (fresh process per provider) -----------------------------------------------------------
def _status_kib(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise RuntimeError(key)


def peak_memory_bytes(provider: str) -> int:
    model, batches = make_case()
    step = build(provider, model, batches)
    for _ in range(3):
        step()
    libc = ctypes.CDLL("libc.so.6")
    libc.mallopt(-3, 64 * 1024)  # M_MMAP_THRESHOLD: big tensors are mappings, unmapped when freed
    gc.collect()
    libc.malloc_trim(0)
    step()  # settle under the new malloc settings
    gc.collect()
    libc.malloc_trim(0)
    before = _status_kib("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # VmHWM := VmRSS
    step()
    return max(0, _status_kib("VmHWM") - before) * 1024


def allocator_peak_bytes(provider: str) -> int:
    """Peak of the bytes torch's CPU allocator holds during one step, above what it holds when the step
    starts: the profiler's allocation events (profile_memory=True) summed in time order over two steps,
    the peak taken within the second (whose frees of the first step's tensors, old gradients included,
    are then all of known size). Deterministic (no malloc or page effects); tensors only, not the
    kernels' own small std::vector partials."""
    from torch.profiler import ProfilerActivity, profile as torch_profile, record_function

    model, batches = make_case()
    step = build(provider, model, batches)
    for _ in range(3):
        step()
    with torch_profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
        with record_function("measured_step"):
            step()
    events = list(prof.profiler.kineto_results.events())
    start = next(e.start_ns() for e in events if e.name() == "measured_step")
    if not any(e.name() == "[memory]" and e.start_ns() >= start for e in events):
        return 0  # nothing allocated (the gemm provider)
    memory = sorted((e for e in events if e.name() == "[memory]"), key=lambda e: e.start_ns())
    live, at_start, peak = 0, None, 0
    for e in memory:
        if at_start is None and e.start_ns() >= start:
            at_start = peak = live
        live += e.nbytes()
        if at_start is not None:
            peak = max(peak, live)
    return peak - at_start


def op_variants(rounds: int) -> None:
    """bernoulli_loglik_linear at the step's unlabelled shape (N=230, C=10, H=500, D=784, float32):
    forward with s kept, unchunked against chunked; forward without autograd (chunked); forward +
    backward with s kept (through autograd, which uses s up, and the two custom ops called directly, dl in
    a buffer of its own), with the logits recomputed, and the same backward in torch ops (for comparison);
    and the GEMMs alone."""
    from ssvae_fast.cpu import bernoulli_loglik_linear as cpu_bernoulli
    from ssvae_fast.ops.bernoulli_loglik_linear import bernoulli_loglik_linear_cpu

    g = torch.Generator().manual_seed(0)
    N, C_, H_, D_ = 230, C, H, D
    h = torch.nn.functional.softplus(torch.randn(N, C_, H_, generator=g)).requires_grad_(True)
    weight = (torch.randn(D_, H_, generator=g) * 0.04).requires_grad_(True)
    bias = (torch.randn(D_, generator=g) * 0.1).requires_grad_(True)
    x = (torch.rand(N, D_, generator=g) < 0.13).float()
    grad_ll = torch.randn(N, C_, generator=g)
    h_rows = h.detach().view(N * C_, H_)
    op = bernoulli_loglik_linear_cpu

    def forward_store(rows):
        def fn():
            with _store_chunk_rows(rows):
                op(h, weight, bias, x)
        return fn

    def forward_no_grad():
        with torch.no_grad():
            op(h, weight, bias, x)

    def forward_backward(recompute=False):
        def fn():
            with cpu_bernoulli.recompute_bernoulli_logits(recompute):
                torch.autograd.grad(op(h, weight, bias, x), (h, weight, bias), grad_ll)
        return fn

    def forward_backward_ops():
        # the two custom ops called directly (no autograd), as the two rows below
        with torch.no_grad():
            _, s_buf = torch.ops.ssvae_fast.bernoulli_loglik_linear_cpu(h_rows, weight, bias, x, 0, C_, True, "ieee")
            torch.ops.ssvae_fast.bernoulli_loglik_linear_cpu_backward(
                grad_ll.view(-1), h_rows, weight, bias, x, s_buf, 0, C_, "ieee", True, True, True, False
            )

    def forward_backward_dl_formed():
        # the same backward in torch ops: dl = g * s as a tensor, then dh = dl W, dW = dl^T h, db = sum dl
        with torch.no_grad():
            _, s_buf = torch.ops.ssvae_fast.bernoulli_loglik_linear_cpu(h_rows, weight, bias, x, 0, C_, True, "ieee")
            dl = s_buf * grad_ll.view(-1, 1)
            torch.mm(dl, weight), torch.mm(dl.t(), h_rows), dl.sum(0)

    def gemm_forward():
        torch.mm(h_rows, weight.detach().t())

    s_fixed = torch.rand(N * C_, D_) - 0.5

    def gemm_all():
        torch.mm(h_rows, weight.detach().t()), torch.mm(s_fixed, weight.detach()), torch.mm(s_fixed.t(), h_rows)

    variants = {"gemm forward (logits)": gemm_forward}
    variants.update({f"forward, s kept, chunks of {r}": forward_store(r) for r in (64, 128, 256, 512)})
    variants["forward, s kept, all rows at once"] = forward_store(None)
    variants[f"forward, no autograd, chunks of {cpu_bernoulli.CHUNK_ROWS}"] = forward_no_grad
    variants["gemm forward + backward (3 GEMMs)"] = gemm_all
    variants["forward + backward, s kept"] = forward_backward(False)
    variants["forward + backward, logits recomputed"] = forward_backward(True)
    variants["fwd + bwd custom ops, no autograd"] = forward_backward_ops
    variants["fwd op + the backward in torch ops"] = forward_backward_dl_formed
    names, samples = list(variants), time_interleaved(variants, rounds)
    print(f"# bernoulli_loglik_linear_cpu, N={N} C={C_} H={H_} D={D_}, float32, {torch.get_num_threads()} threads")
    print(f"{'variant':<48} {'median ms':>10} {'min ms':>9}")
    for k in names:
        print(f"{k:<48} {statistics.median(samples[k]) * 1e3:>10.2f} {min(samples[k]) * 1e3:>9.2f}")


def weight_grad_layouts(rounds: int) -> None:
    """dW = dY^T X over the step's R = 2,326 rows (the decoder's output layer, N = 784; the encoder's head,
    N = 100; the decoder's z layer, dY the hidden pre-activation, X = z of 50) in the --precision dtype: the
    product as autograd forms it (dY^T and X read row-major), the same product with the operands swapped
    (a transposed result, no copy), from transposed copies made beforehand (what a kernel that wrote them
    for free would give) and with torch's copy timed inside; the same-size forward GEMM for scale."""
    dtype = torch.bfloat16 if PRECISION == "bf16" else torch.float32
    R = 26 + 230 * C
    g = torch.Generator().manual_seed(0)
    cases = {"decoder out": (D, H), "encoder head": (2 * Z, H), "decoder z": (H, Z)}
    print(f"# dW = dY^T X, R={R} rows, {PRECISION}, {torch.get_num_threads()} threads; median / min ms")
    for case, (N, K) in cases.items():
        dy = torch.randn(R, N, generator=g).to(dtype)
        x = torch.randn(R, K, generator=g).to(dtype)
        w = torch.randn(N, K, generator=g).to(dtype)
        dyT, xT = dy.t().contiguous(), x.t().contiguous()
        variants = {
            "forward x W^T (same FLOPs)": lambda: torch.mm(x, w.t()),
            "dY^T X (row-major, autograd)": lambda: torch.mm(dy.t(), x),
            "(X^T dY)^T": lambda: torch.mm(x.t(), dy),
            "dYT X, dYT made beforehand": lambda: torch.mm(dyT, x),
            "(XT dY)^T, XT made beforehand": lambda: torch.mm(xT, dy),
            "(X.t().contiguous() dY)^T": lambda: torch.mm(x.t().contiguous(), dy),
            "dY.t().contiguous() alone": lambda: dy.t().contiguous(),
        }
        names, samples = list(variants), time_interleaved(variants, rounds)
        print(f"{case}: dY ({R}, {N}), X ({R}, {K})")
        for k in names:
            print(f"  {k:<36} {statistics.median(samples[k]) * 1e3:>8.3f} {min(samples[k]) * 1e3:>8.3f}")


def profile(provider: str, steps: int = 10) -> None:
    from torch.profiler import ProfilerActivity, profile as torch_profile

    model, batches = make_case()
    step = build(provider, model, batches)
    for _ in range(3):
        step()
    with torch_profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        for _ in range(steps):
            step()
    table = prof.key_averages(group_by_input_shape=True).table(
        sort_by="self_cpu_time_total", row_limit=40, max_name_column_width=40, max_shapes_column_width=70)
    print(table)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--providers", default="reference,reference-compile,torch,cpu,gemm")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--memory", action="store_true", help="also measure peak memory (subprocesses)")
    parser.add_argument("--profile", metavar="PROVIDER", help="print a torch.profiler table and exit")
    parser.add_argument("--ops", action="store_true", help="time the Bernoulli op's variants and exit")
    parser.add_argument("--layouts", action="store_true",
                        help="time the weight-gradient GEMMs' operand layouts (--precision) and exit")
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32",
                        help="bf16: the loss under CPU autocast to bfloat16, bf16 GEMMs for `gemm`")
    parser.add_argument("--memory-worker", metavar="PROVIDER", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    global PRECISION
    PRECISION = args.precision
    if args.memory_worker:
        rss = peak_memory_bytes(args.memory_worker)
        print(json.dumps({"peak_bytes": rss, "allocator_peak_bytes": allocator_peak_bytes(args.memory_worker)}))
        return 0
    if args.ops:
        op_variants(args.rounds)
        return 0
    if args.layouts:
        weight_grad_layouts(args.rounds)
        return 0
    if args.profile:
        profile(args.profile)
        return 0
    providers = [p for p in args.providers.split(",") if p]
    print(f"# torch {torch.__version__}, {torch.get_num_threads()} threads, {PRECISION}, B=256 (26 + 230)")
    samples = time_providers(providers, args.rounds, args.warmup)
    med = {p: statistics.median(v) * 1e3 for p, v in samples.items()}
    print(f"{'provider':<22} {'median ms':>10} {'min ms':>9}")
    for p in providers:
        print(f"{p:<22} {med[p]:>10.2f} {min(samples[p]) * 1e3:>9.2f}")
    for p in providers:
        if p.startswith("cpu"):
            for base in ("reference", "reference-compile", "torch"):
                if base in med:
                    print(f"{base} / {p} = {med[base] / med[p]:.2f}x")
            if "gemm" in med:
                print(f"{p} / gemm = {med[p] / med['gemm']:.2f}x")
    if args.memory:
        peaks = {}
        for p in providers:
            if p == "gemm":
                continue
            out = subprocess.run(
                [sys.executable, __file__, "--memory-worker", p, "--precision", PRECISION], capture_output=True,
                text=True, check=True,
            )
            record = json.loads(out.stdout.strip().splitlines()[-1])
            peaks[p] = (record["peak_bytes"], record["allocator_peak_bytes"])
            print(f"peak memory {p:<22} RSS {peaks[p][0] / 2**20:7.1f} MiB   allocator {peaks[p][1] / 2**20:7.1f} MiB")
        for p in peaks:
            if p.startswith("cpu") and "reference" in peaks:
                ratios = [peaks[p][i] / peaks["reference"][i] for i in (0, 1)]
                print(f"{p} peak / reference peak: RSS {ratios[0]:.2f}, allocator {ratios[1]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
