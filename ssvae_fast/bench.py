"""Benchmark runner and report generator for M2's training step, its loss and its fused ops.

    python -m ssvae_fast.bench                            # the grid on the default device -> JSON + table
    python -m ssvae_fast.bench --device cuda --sizes 100,128,1024,8192 --precisions tf32,fp32,bf16
    python -m ssvae_fast.bench --fast                     # CI: few rounds, smallest size
    python -m ssvae_fast.bench table benchmarks/results/*.json [--all] [--readme README.md]

Each (provider, B) runs in a fresh subprocess (`worker`): timing first, then peak memory, so neither a
compile cache, an allocator pool nor another provider's memory flatters a figure. The results go to
`benchmarks/results/<device>-<date>.json` (hardware, versions, commit, precision, the labelled mix and
every figure) and a markdown table is printed; `table` renders tables from committed JSON, and
`--readme` rewrites only the block between `<!-- bench:start -->` and `<!-- bench:end -->`.

The same building blocks serve `pytest benchmarks/ --benchmark-only` (benchmarks/conftest.py):
`make_case` is the one input factory of both. benchmarks/README.md explains every figure.

Figures per (mode, provider, B, precision):
    median / q1 / q3 / IQR / stddev of the per-call time over rounds (inputs rotate over a few batches);
    examples/s = B / median; TFLOP/s = matmul FLOPs of the useful (factorized) formulation / median
    (`ssvae_fast.flops.step_flops`), and its fraction of a (B*C, H) x (H, D) matmul timed in the same
    run at the same precision; peak memory of one call (method in the JSON's settings.memory_method).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import ctypes
import datetime
import gc
import importlib.util
import itertools
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import torch
import torch.nn.functional as F

from . import backends
from .flops import bernoulli_loglik_linear_flops, matmul_flops, step_flops
from .model import M2

SCHEMA = "ssvae_fast.bench/1"

# ---------------------------------------------------------------------------------------------- the case
# MNIST-sized M2 as in Kingma et al.: one hidden layer of 500 softplus units in every network, z = 50.
MODEL_SHAPES = {"x_dim": 784, "n_classes": 10, "hidden": 500, "z_dim": 50, "hidden_layers": 1}
ACTIVATION = "softplus"
LABELLED_FRACTION = 0.1  # 10% labelled rows per step: B = 256 -> 26 labelled + 230 unlabelled
ALPHA = 0.1 * 60000 / 100  # Kingma et al.'s alpha for 100 labels of MNIST's 60000, per labelled example
PIXEL_ON_PROBABILITY = 0.13  # binarized inputs ~ Bernoulli(0.13), MNIST's mean pixel intensity
LEARNING_RATE = 1e-3
ROTATING_BATCHES = 4  # pre-generated batches cycled across calls so no cache holds the same inputs

PROVIDERS = (
    "reference",
    "reference-compile",
    "reference-compile-max-autotune",
    "torch",
    "triton",
    "cuda",
    "cpu",
    "pyro",
)
OP_BACKENDS = ("torch", "triton", "cuda", "cpu")
# The order workers run in (tables sort by PROVIDERS): the fused backends and their baselines first, the
# slowest to compile last, so that a run stopped early has already measured what matters most.
RUN_ORDER = ("triton", "cuda", "cpu", "torch", "reference", "reference-compile", "pyro",
             "reference-compile-max-autotune")
CUDAGRAPH_PROVIDERS = ("reference", "torch", "triton", "cuda")
# (name shown in reports, BackendOps field): the four fused ops; class_conditional_activation twice, in
# the encoder's form (labelled examples one class each, the others every class) and the decoder's (one
# class per row).
OP_VARIANTS = {
    "class_conditional_activation[encoder]": "class_conditional_activation",
    "class_conditional_activation[decoder]": "class_conditional_activation",
    "gaussian_reparam_kl": "gaussian_reparam_kl",
    "bernoulli_loglik_linear": "bernoulli_loglik_linear",
    "elbo_reduction": "elbo_reduction",
}
LOSS_MODES = ("loss_forward", "loss_forward_backward", "train_step")
OP_MODES = ("op_forward", "op_forward_backward")
CUDAGRAPH_MODE = "train_step_cudagraph"
MODES = LOSS_MODES + OP_MODES + (CUDAGRAPH_MODE,)
TABLE_ORDER = ("train_step", CUDAGRAPH_MODE, "loss_forward", "loss_forward_backward") + OP_MODES

SIZES = {"cpu": (64, 256), "cuda": (100, 128, 1024, 8192)}
FAST_SIZES = {"cpu": (64,), "cuda": (100,)}
CUDAGRAPH_SIZES = (100,)
PRECISIONS = {
    "fp32": "float32 tensors, float32 matmuls (torch.backends.cuda.matmul.allow_tf32 = False)",
    "tf32": "float32 tensors, TF32 matmuls (torch.backends.cuda.matmul.allow_tf32 = True)",
    "bf16": "float32 parameters, the loss under torch.autocast(bfloat16); op inputs cast to bfloat16",
}
DEFAULT_PRECISIONS = {"cpu": ("fp32",), "cuda": ("tf32", "fp32", "bf16")}
# rounds, warm-up calls, shortest round (calls are repeated until a round lasts this long), time cap
TIMING_DEFAULTS = {
    "cpu": {"rounds": 10, "warmup": 3, "min_round_s": 5e-3, "max_time_s": 20.0},
    "cuda": {"rounds": 30, "warmup": 10, "min_round_s": 1e-3, "max_time_s": 10.0},
}
FAST_TIMING = {"rounds": 3, "warmup": 1, "min_round_s": 1e-3, "max_time_s": 2.0}

REPO_ROOT = Path(__file__).resolve().parent.parent
BENCH_START, BENCH_END = "<!-- bench:start -->", "<!-- bench:end -->"


@dataclass
class Batch:
    """One step's inputs: x_l (n_l, D) and x_u (n_u, D) binary in {0, 1}; y_l (n_l,) int64;
    eps_l (n_l, Z) and eps_u (n_u, C, Z) the reparameterization noise, explicit so every provider but
    Pyro sees the same draws."""

    x_l: torch.Tensor
    y_l: torch.Tensor
    x_u: torch.Tensor
    eps_l: torch.Tensor
    eps_u: torch.Tensor


@dataclass
class Case:
    """A model and the rotating batches it is benchmarked on (everything on `device`, float `dtype`)."""

    model: M2
    batches: list
    alpha: float
    B: int
    n_l: int
    n_u: int
    device: torch.device
    dtype: torch.dtype
    seed: int

    def flops(self, *, backward: bool = True, formulation: str = "factorized") -> int:
        """Matmul FLOPs of one loss forward (+ backward) on one batch (`ssvae_fast.flops.step_flops`)."""
        s = MODEL_SHAPES
        return step_flops(
            self.B, self.n_l, s["n_classes"], s["x_dim"], s["hidden"], s["z_dim"], formulation, backward=backward
        )


def split_batch(B: int, labelled_fraction: float = LABELLED_FRACTION) -> tuple[int, int]:
    """(n_l, n_u): n_l = floor(labelled_fraction * B + 0.5) labelled rows, the rest unlabelled."""
    if B < 1:
        raise ValueError(f"B must be at least 1, got {B}")
    if not 0.0 <= labelled_fraction <= 1.0:
        raise ValueError(f"labelled_fraction must lie in [0, 1], got {labelled_fraction}")
    n_l = int(math.floor(labelled_fraction * B + 0.5))
    return n_l, B - n_l


def make_case(
    B: int,
    labelled_fraction: float = LABELLED_FRACTION,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
    n_batches: int = ROTATING_BATCHES,
) -> Case:
    """The one input factory of the speed and memory runs (pytest and the report runner alike).

    Model: `M2(784, 10, 50, hidden=(500,), activation="softplus")`, weights from `seed`. Batches:
    `n_batches` independent ones of B examples, n_l = round(labelled_fraction * B) labelled; x binarized
    from Bernoulli(0.13); labels uniform; explicit N(0, 1) noise. alpha = 0.1 * 60000 / 100.
    """
    device = torch.device(device)
    n_l, n_u = split_batch(B, labelled_fraction)
    D, C, Z, H = (MODEL_SHAPES[k] for k in ("x_dim", "n_classes", "z_dim", "hidden"))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = M2(D, C, Z, hidden=(H,) * MODEL_SHAPES["hidden_layers"], activation=ACTIVATION, backend="reference")
    model = model.to(device=device, dtype=dtype)
    g = torch.Generator().manual_seed(seed + 1)

    def binary(n):
        return (torch.rand(n, D, generator=g) < PIXEL_ON_PROBABILITY).to(device=device, dtype=dtype)

    batches = []
    for _ in range(n_batches):
        x_l, x_u = binary(n_l), binary(n_u)
        y_l = torch.randint(0, C, (n_l,), generator=g).to(device)
        eps_l = torch.randn(n_l, Z, generator=g).to(device=device, dtype=dtype)
        eps_u = torch.randn(n_u, C, Z, generator=g).to(device=device, dtype=dtype)
        batches.append(Batch(x_l, y_l, x_u, eps_l, eps_u))
    return Case(model, batches, ALPHA, B, n_l, n_u, device, dtype, seed)


# ---------------------------------------------------------------------------------------------- providers
def provider_unavailable_reason(provider: str, device: str | torch.device) -> Optional[str]:
    """None when `provider` can be benchmarked on `device` here, else why not (the skip reason)."""
    kind = torch.device(device).type
    if provider not in PROVIDERS:
        raise ValueError(f"unknown provider {provider!r}; choose from {PROVIDERS}")
    if kind == "cuda" and not torch.cuda.is_available():
        return "no CUDA GPU visible to torch (torch.cuda.is_available() is False)"
    if provider == "pyro":
        if importlib.util.find_spec("pyro") is None:
            return "pyro-ppl not installed (pip install pyro-ppl)"
        if not (REPO_ROOT / "benchmarks" / "pyro_m2.py").is_file():
            return "benchmarks/pyro_m2.py not found: run from a source checkout of ssvae_fast"
        return None
    if provider == "reference-compile-max-autotune" and kind != "cuda":
        return (
            "torch.compile mode='max-autotune' is benchmarked on GPUs only: on the CPU it autotunes C++ GEMM "
            "templates and takes too long to compile on this machine; mode='default' is reported"
        )
    if provider.startswith("reference"):
        return None
    if provider == "triton" and kind == "cpu":
        return "Triton kernels run on CUDA GPUs (the CPU interpreter, TRITON_INTERPRET=1, is for tests only)"
    reason = backends.unavailable_reason(provider)
    if reason is not None:
        return reason
    if provider == "cpu" and kind != "cpu":
        return "the cpu backend runs on CPU tensors (benchmark it with --device cpu)"
    if provider == "cuda" and kind != "cuda":
        return "the cuda backend runs on CUDA tensors (benchmark it with --device cuda)"
    return None


def _load_pyro_m2():
    path = REPO_ROOT / "benchmarks" / "pyro_m2.py"
    spec = importlib.util.spec_from_file_location("ssvae_fast_benchmarks_pyro_m2", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _autocast(precision: str, device: torch.device, cache_enabled: bool = True):
    """bf16: torch.autocast to bfloat16 (its weight-cast cache must be off under CUDA-graph capture)."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16, cache_enabled=cache_enabled)
    return contextlib.nullcontext()


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


class LossRunner:
    """One provider's M2 loss on its own copy of the case's model, with an Adam optimizer.

    forward(batch): the loss (autograd records, as in training); forward_backward(batch): loss and
    gradients; train_step(batch): zero_grad, loss, backward, Adam step (`torch.optim.Adam(lr=1e-3)`,
    torch's default implementation for the device). Compilation happens on the first calls (warm-up).
    """

    def __init__(self, provider: str, case: Case, precision: str = "fp32"):
        reason = provider_unavailable_reason(provider, case.device)
        if reason is not None:
            raise backends.BackendUnavailableError(f"provider {provider!r} is not available: {reason}")
        self.provider, self.case, self.precision = provider, case, precision
        self.model = copy.deepcopy(case.model)
        self.compiled = provider.startswith("reference-compile")
        model, alpha = self.model, case.alpha
        if provider == "pyro":
            pyro_m2 = _load_pyro_m2().PyroM2(model, alpha)
            self._loss = lambda b: pyro_m2.loss(b.x_l, b.y_l, b.x_u)
        else:
            model.backend = "reference" if self.compiled else provider

            def loss(x_l, y_l, x_u, eps_l, eps_u):
                return model.loss(x_l, y_l, x_u, alpha=alpha, eps_l=eps_l, eps_u=eps_u)

            if self.compiled:
                mode = "max-autotune" if provider.endswith("max-autotune") else None
                loss = torch.compile(loss, mode=mode, dynamic=False)
            self._loss = lambda b: loss(b.x_l, b.y_l, b.x_u, b.eps_l, b.eps_u)
        self.optimizer = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE, fused=True)

    def forward(self, batch: Batch) -> torch.Tensor:
        if self.compiled and self.case.device.type == "cuda":
            torch.compiler.cudagraph_mark_step_begin()  # max-autotune's CUDA graphs: a new step starts
        with _autocast(self.precision, self.case.device):
            return self._loss(batch)

    def forward_backward(self, batch: Batch) -> None:
        self.model.zero_grad(set_to_none=True)
        self.forward(batch).backward()

    def train_step(self, batch: Batch) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        self.forward(batch).backward()
        self.optimizer.step()


class CudaGraphTrainStep:
    """The whole training step (loss, backward, Adam with capturable=True) captured in one CUDA graph.

    Calling it copies the batch into the graph's static inputs and replays the graph. Providers whose
    step has no host synchronization: reference, torch, triton, cuda. `capture_peak_bytes` is the
    memory allocated while capturing (the graph's private pool, reused by every replay).
    """

    def __init__(self, provider: str, case: Case, precision: str = "fp32", warmup: int = 3):
        if case.device.type != "cuda":
            raise backends.BackendUnavailableError("CUDA graphs need a CUDA device")
        if provider not in CUDAGRAPH_PROVIDERS:
            raise ValueError(f"CUDA-graph steps are built for {CUDAGRAPH_PROVIDERS}, not {provider!r}")
        reason = provider_unavailable_reason(provider, case.device)
        if reason is not None:
            raise backends.BackendUnavailableError(f"provider {provider!r} is not available: {reason}")
        self.model = copy.deepcopy(case.model)
        self.model.backend = provider
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=LEARNING_RATE, capturable=True)
        self.static = Batch(*(t.clone() for t in _batch_tensors(case.batches[0])))
        self.case, self.precision = case, precision

        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm-up off the capture stream, as torch.cuda.graphs requires
            for _ in range(warmup):
                self._step()
        torch.cuda.current_stream().wait_stream(side)
        torch.cuda.synchronize()
        self.optimizer.zero_grad(set_to_none=True)
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self._step(zero_grad=False)
        torch.cuda.synchronize()
        self.capture_peak_bytes = torch.cuda.max_memory_allocated() - before

    def _step(self, zero_grad: bool = True) -> None:
        if zero_grad:
            self.optimizer.zero_grad(set_to_none=True)
        b = self.static
        with _autocast(self.precision, self.case.device, cache_enabled=False):
            loss = self.model.loss(b.x_l, b.y_l, b.x_u, alpha=self.case.alpha, eps_l=b.eps_l, eps_u=b.eps_u)
        loss.backward()
        self.optimizer.step()

    def __call__(self, batch: Batch) -> None:
        for dst, src in zip(_batch_tensors(self.static), _batch_tensors(batch)):
            dst.copy_(src, non_blocking=True)
        self.graph.replay()


def _batch_tensors(b: Batch) -> tuple:
    return (b.x_l, b.y_l, b.x_u, b.eps_l, b.eps_u)


# ---------------------------------------------------------------------------------------------- ops alone
@dataclass
class OpBench:
    """One fused op alone: `fn(inputs[i])` for rotating `inputs`; useful matmul FLOPs (None when the op
    has no matmul) and compulsory bytes (each input, output, upstream and input gradient once)."""

    fn: Callable
    inputs: list
    flops: Optional[int]
    bytes: int


def op_inputs(case: Case, variant: str, batch: Batch) -> tuple[tuple, tuple[int, ...]]:
    """The arguments `variant` receives inside the loss on `batch`, computed with the torch backend's
    ops (no_grad), and the positions of its differentiable arguments. Weights are detached copies."""
    torch_ops = backends.get_ops("torch")
    model = case.model
    enc, dec = model.encoder, model.decoder
    D, C, Z = model.x_dim, model.n_classes, model.z_dim
    n_l, n_u = batch.x_l.shape[0], batch.x_u.shape[0]
    act = enc.activation
    with torch.no_grad():
        x_all = torch.cat([batch.x_l, batch.x_u])
        logits_y = model.classifier(x_all)
        w_enc, w_dec = enc.input.weight.detach(), dec.input.weight.detach()
        a = F.linear(x_all, w_enc[:, :D], enc.input.bias)
        w_y_enc = w_enc[:, D:].contiguous()
        if variant == "class_conditional_activation[encoder]":
            return (a, w_y_enc, batch.y_l, act), (0, 1)
        h = torch_ops.class_conditional_activation(a, w_y_enc, batch.y_l, act)
        head = enc.head(enc.run_hidden_layers(h))
        eps = torch.cat([batch.eps_l, batch.eps_u.reshape(n_u * C, Z)])
        if variant == "gaussian_reparam_kl":
            return (head, eps), (0,)
        z, kl = torch_ops.gaussian_reparam_kl(head, eps)
        classes = torch.cat([batch.y_l, torch.arange(C, device=batch.y_l.device).repeat(n_u)])
        a_dec = F.linear(z, w_dec[:, :Z], dec.input.bias)
        w_y_dec = w_dec[:, Z:].contiguous()
        if variant == "class_conditional_activation[decoder]":
            return (a_dec, w_y_dec, classes, act), (0, 1)
        h_dec = dec.run_hidden_layers(torch_ops.class_conditional_activation(a_dec, w_y_dec, classes, act))
        w_out, b_out = dec.output.weight.detach().clone(), dec.output.bias.detach().clone()
        if variant == "bernoulli_loglik_linear":
            return (h_dec, w_out, b_out, x_all, n_l), (0, 1, 2)
        ll = torch_ops.bernoulli_loglik_linear(h_dec, w_out, b_out, x_all, n_l)
        if variant == "elbo_reduction":
            ll_u, kl_u = ll[n_l:].reshape(n_u, C), kl[n_l:].reshape(n_u, C)
            return (logits_y, batch.y_l, ll[:n_l], kl[:n_l], ll_u, kl_u, case.alpha), (0, 2, 3, 4, 5)
    raise ValueError(f"unknown op variant {variant!r}; choose from {tuple(OP_VARIANTS)}")


def op_unavailable_reason(variant: str, backend: str, device) -> Optional[str]:
    """None when `backend` has its own implementation of `variant`'s op and can run here."""
    if variant not in OP_VARIANTS:
        raise ValueError(f"unknown op variant {variant!r}; choose from {tuple(OP_VARIANTS)}")
    if backend not in OP_BACKENDS:
        return f"{backend!r} has no fused ops (op benchmarks cover {OP_BACKENDS})"
    reason = provider_unavailable_reason(backend, device)
    if reason is not None:
        return reason
    if backend != "torch":
        field = OP_VARIANTS[variant]
        if getattr(backends.get_ops(backend), field) is getattr(backends.get_ops("torch"), field):
            return f"the {backend} backend uses the torch implementation of {field}"
    return None


def build_op_bench(variant: str, backend: str, case: Case, precision: str, mode: str) -> OpBench:
    """`variant` of `backend` alone, forward ("op_forward": no autograd) or forward+backward
    ("op_forward_backward": torch.autograd.grad of every differentiable input against fixed upstream
    gradients), on the arguments it sees inside the loss of each rotating batch."""
    if mode not in OP_MODES:
        raise ValueError(f"mode must be one of {OP_MODES}, got {mode!r}")
    reason = op_unavailable_reason(variant, backend, case.device)
    if reason is not None:
        raise backends.BackendUnavailableError(reason)
    op = getattr(backends.get_ops(backend), OP_VARIANTS[variant])
    low = torch.bfloat16 if precision == "bf16" else None
    backward = mode == "op_forward_backward"
    g = torch.Generator().manual_seed(case.seed + 7)
    inputs = []
    for batch in case.batches:
        args, diff = op_inputs(case, variant, batch)
        args = list(args)
        for i, arg in enumerate(args):
            if isinstance(arg, torch.Tensor) and arg.is_floating_point():
                arg = arg.detach().to(low) if low is not None else arg.detach().clone()
                args[i] = arg.requires_grad_(backward and i in diff)
        grads = None
        if backward:
            with torch.no_grad():
                out = _as_tuple(op(*args))
            grads = tuple(
                torch.randn(o.shape, generator=g).to(device=o.device, dtype=o.dtype) for o in out
            )
        inputs.append((tuple(args), tuple(args[i] for i in diff), grads))

    def forward(item):
        with torch.no_grad():
            return op(*item[0])

    def forward_backward(item):
        args, wrt, grads = item
        return torch.autograd.grad(_as_tuple(op(*args)), wrt, grads)

    fn = forward_backward if backward else forward
    args, wrt, grads = inputs[0]
    out = _as_tuple(forward(inputs[0]))
    nbytes = sum(_nbytes(t) for t in args) + sum(_nbytes(t) for t in out)
    if backward:
        nbytes += sum(_nbytes(t) for t in grads) + sum(_nbytes(t) for t in wrt)
    flops = None
    if OP_VARIANTS[variant] == "bernoulli_loglik_linear":
        (M, H), N = args[0].shape, args[3].shape[0]
        flops = bernoulli_loglik_linear_flops(N, 1, H, args[1].shape[0], backward=backward, rows=M)
    return OpBench(fn, inputs, flops, nbytes)


def _as_tuple(x):
    return tuple(x) if isinstance(x, (tuple, list)) else (x,)


def _nbytes(t) -> int:
    return t.numel() * t.element_size() if isinstance(t, torch.Tensor) else 0


# ---------------------------------------------------------------------------------------------- measuring
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


# ---------------------------------------------------------------------------------------------- worker
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


# ---------------------------------------------------------------------------------------------- the grid
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
            if reason is not None:
                for precision in precisions:
                    for mode in wanted:
                        for op in (ops if mode in OP_MODES else (None,)):
                            skipped.append({
                                "mode": mode, "provider": provider, "op": op, "B": B, "n_l": n_l, "n_u": n_u,
                                "precision": precision, "status": "skipped", "reason": reason, "peak_mb": None,
                            })
                continue
            specs.append({"provider": provider, "B": B, "device": device, "precisions": list(precisions),
                          "modes": wanted, "ops": list(ops)})
    return specs, skipped


def _run_spec_in_subprocess(spec: dict, timeout_s: float) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "records.json"
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
        cmd = [sys.executable, "-m", "ssvae_fast.bench", "worker", "--spec", json.dumps(spec), "--out", str(out)]
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

    from . import __version__

    commit, dirty = _git_state()
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "triton": version("triton"),
        "pyro_ppl": version("pyro-ppl"),
        "numpy": version("numpy"),
        "ssvae_fast": __version__,
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


# ---------------------------------------------------------------------------------------------- tables
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


def rewrite_readme(path: str | Path, block: str) -> None:
    """Replace the text between BENCH_START and BENCH_END in `path` (markers kept, nothing else touched)."""
    path = Path(path)
    text = path.read_text()
    start, end = text.find(BENCH_START), text.find(BENCH_END)
    if start < 0 or end < 0 or end < start:
        raise SystemExit(f"{path}: needs a {BENCH_START} ... {BENCH_END} block to rewrite")
    body = ("\n<!-- generated by `python -m ssvae_fast.bench table ... --readme` from benchmarks/results/*.json; "
            "do not edit by hand -->\n" + block.strip() + "\n")
    path.write_text(text[: start + len(BENCH_START)] + body + text[end:])


# ---------------------------------------------------------------------------------------------- CLI
def _csv(kind):
    def parse(text):
        return tuple(kind(v) for v in text.split(",") if v.strip())

    return parse


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "worker":
        parser = argparse.ArgumentParser(prog="python -m ssvae_fast.bench worker")
        parser.add_argument("--spec", required=True)
        parser.add_argument("--out", required=True)
        args = parser.parse_args(argv[1:])
        Path(args.out).write_text(json.dumps(run_worker(json.loads(args.spec))))  # {"records", "ceilings"}
        return 0
    if argv and argv[0] == "table":
        parser = argparse.ArgumentParser(
            prog="python -m ssvae_fast.bench table", description="Markdown tables from results JSON files."
        )
        parser.add_argument("files", nargs="+")
        parser.add_argument("--all", action="store_true", help="every mode (loss, ops), not only the step")
        parser.add_argument("--readme", nargs="?", const=str(REPO_ROOT / "README.md"), default=None,
                            help="rewrite the bench block of this README (default: the repository's)")
        args = parser.parse_args(argv[1:])
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
        prog="python -m ssvae_fast.bench",
        description="Benchmark M2's training step, loss and fused ops; write JSON and print a markdown table. "
                    "Subcommand `table FILE...` renders tables from results JSON.",
    )
    parser.add_argument("--device", choices=("cpu", "cuda"), default=default_device)
    parser.add_argument("--sizes", type=_csv(int), help="batch sizes B (default: cpu 64,256; cuda 100,128,1024,8192)")
    parser.add_argument("--providers", type=_csv(str), default=PROVIDERS, help=f"from {','.join(PROVIDERS)}")
    parser.add_argument("--precisions", type=_csv(str), help="fp32,tf32,bf16 (default: cpu fp32; cuda all)")
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
    out = Path(args.out) if args.out else REPO_ROOT / "benchmarks" / "results" / f"{args.device}-{date}.json"
    out.parent.mkdir(parents=True, exist_ok=True)

    def write(document: dict) -> None:  # whole file or nothing: a reader never sees half a document
        tmp = out.with_name(out.name + ".tmp")
        tmp.write_text(json.dumps(document, indent=1) + "\n")
        os.replace(tmp, out)

    doc = run_grid(args.device, args.sizes, args.providers, args.precisions, args.modes, args.ops,
                   fast=args.fast, rounds=args.rounds, warmup=args.warmup, in_process=args.in_process,
                   worker_timeout_s=args.worker_timeout, checkpoint=write,
                   command=" ".join(["python -m ssvae_fast.bench", *argv]))
    write(doc)
    print(render_tables(doc, TABLE_ORDER if args.all_tables else ("train_step", CUDAGRAPH_MODE)))
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
