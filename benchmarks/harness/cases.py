"""The case every benchmark runs on (`make_case`), which providers can run here, and the runners of a
provider's loss and training step (`LossRunner`, `CudaGraphTrainStep`)."""

from __future__ import annotations

import contextlib
import copy
import importlib.util
import math
from dataclasses import dataclass
from typing import Optional

import torch

from ssvae_fast import backends
from ssvae_fast.flops import step_flops
from ssvae_fast.model import M2

from .config import (
    ACTIVATION,
    ALPHA,
    BENCH_DIR,
    CUDAGRAPH_PROVIDERS,
    LABELLED_FRACTION,
    LEARNING_RATE,
    MODEL_SHAPES,
    PIXEL_ON_PROBABILITY,
    PROVIDERS,
    ROTATING_BATCHES,
)


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
    spec = importlib.util.spec_from_file_location("ssvae_fast_benchmarks_pyro_m2", BENCH_DIR / "pyro_m2.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _autocast(precision: str, device: torch.device, cache_enabled: bool = True):
    """bf16: torch.autocast to bfloat16 (its weight-cast cache must be off under CUDA-graph capture)."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16, cache_enabled=cache_enabled)
    return contextlib.nullcontext()


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
