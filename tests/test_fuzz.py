"""Fuzzed equivalence: hypothesis draws shapes, label mixes, dtypes, memory layouts and options, and every
backend that runs here is compared with the reference under the tolerance rule (tests/tolerance.py) on the
losses and the gradient of every parameter and input.

Drawn: n_l and n_u (either may be 0, not both), C, D, H, z_dim, one or two hidden layers, the activation,
float32 or float64, alpha, chunk_size, binary or grey pixels, and a layout per input: contiguous,
non-contiguous (every other row or column of a larger tensor), transposed storage, an offset view into a
larger buffer, and for the images channels-last (N, c, h, w) tensors flattened to (N, D); the weights
either contiguous or stored transposed.

Bounded so that CI stays fast (150 examples for torch and cpu, 30 at tiny shapes for Triton's
interpreter, derandomized so that CI runs the same examples every time); SSVAE_FAST_FUZZ_EXAMPLES=N runs N
examples per test, with a fresh random draw each run:

    SSVAE_FAST_FUZZ_EXAMPLES=2000 python3 -m pytest tests/test_fuzz.py
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.factories import cast_model, make_model
from tests.op_checks import device_of, on_backends
from tests.tolerance import assert_close_to_reference

_MANY = int(os.environ.get("SSVAE_FAST_FUZZ_EXAMPLES", "0") or 0)


def fuzz_settings(examples: int):
    """`examples` examples in CI (derandomized), or SSVAE_FAST_FUZZ_EXAMPLES of them (random) when set."""
    return settings(
        max_examples=_MANY or examples,
        derandomize=not _MANY,
        deadline=None,
        database=None,
        print_blob=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny shapes gain nothing from a second thread, and on a busy machine each parallel region can wait
    for a descheduled thread: one thread keeps the examples' time predictable."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


X_LAYOUTS = ("contiguous", "rows", "columns", "transposed", "offset", "channels_last")
EPS_LAYOUTS = ("contiguous", "rows", "columns", "transposed", "offset")
LABEL_LAYOUTS = ("contiguous", "strided", "offset")


@dataclass(frozen=True)
class Case:
    n_l: int
    n_u: int
    C: int
    D: int
    H: int
    Z: int
    hidden_layers: int
    activation: str
    dtype: torch.dtype
    alpha: float
    chunk_size: int | None
    binary: bool
    layouts: tuple  # x_l, x_u, eps_l, eps_u, y_l, weights
    seed: int


@st.composite
def cases(draw, max_n=9, max_C=12, max_D=40, max_H=24, max_Z=6):
    n_l = draw(st.integers(0, max_n))
    n_u = draw(st.integers(0 if n_l else 1, max_n))
    n = n_l + n_u
    return Case(
        n_l=n_l, n_u=n_u, C=draw(st.integers(2, max_C)), D=draw(st.integers(1, max_D)),
        H=draw(st.integers(1, max_H)), Z=draw(st.integers(1, max_Z)), hidden_layers=draw(st.sampled_from((1, 2))),
        activation=draw(st.sampled_from(("softplus", "relu"))),
        dtype=draw(st.sampled_from((torch.float32, torch.float64))),
        alpha=draw(st.sampled_from((0.0, 0.5, 3.7))),
        chunk_size=draw(st.one_of(st.none(), st.integers(1, n))),
        binary=draw(st.booleans()),
        layouts=(draw(st.sampled_from(X_LAYOUTS)), draw(st.sampled_from(X_LAYOUTS)), draw(st.sampled_from(EPS_LAYOUTS)),
                 draw(st.sampled_from(EPS_LAYOUTS)), draw(st.sampled_from(LABEL_LAYOUTS)),
                 draw(st.sampled_from(("contiguous", "transposed")))),
        seed=draw(st.integers(0, 2**16)),
    )


def _image_shape(D: int) -> tuple:
    """(c, h, w) with c * h * w = D: three channels when D allows, else two, else one."""
    c = 3 if D % 3 == 0 else (2 if D % 2 == 0 else 1)
    hw = D // c
    h = max(d for d in range(1, int(hw**0.5) + 1) if hw % d == 0)
    return c, h, hw // h


def laid_out(t: torch.Tensor, layout: str, requires_grad: bool = True):
    """(leaf, used): a leaf holding t's values in `layout` and the tensor of t's shape to pass on (the leaf
    itself, or for channels_last the flattened view or copy of the (N, c, h, w) leaf)."""
    if layout == "contiguous":
        leaf = t.clone()
    elif layout == "rows":  # every other row of a tensor twice as tall
        big = t.new_full((2 * t.shape[0], *t.shape[1:]), float("nan") if t.is_floating_point() else -1)
        big[::2] = t
        leaf = big[::2]
    elif layout == "columns":  # every other entry of the last dimension
        big = t.new_full((*t.shape[:-1], 2 * t.shape[-1]), float("nan"))
        big[..., ::2] = t
        leaf = big[..., ::2]
    elif layout == "strided":  # 1-D
        big = t.new_full((3 * t.shape[0],), -1)
        big[::3] = t
        leaf = big[::3]
    elif layout == "transposed":  # the last two dimensions stored transposed
        leaf = t.transpose(-1, -2).contiguous().transpose(-1, -2)
    elif layout == "offset":  # a view 5 elements into a larger buffer
        flat = t.new_full((t.numel() + 9,), float("nan") if t.is_floating_point() else -1)
        flat[5 : 5 + t.numel()] = t.flatten()
        leaf = flat[5 : 5 + t.numel()].view(t.shape)
    elif layout == "channels_last":
        c, h, w = _image_shape(t.shape[1])
        leaf = t.reshape(t.shape[0], c, h, w).contiguous(memory_format=torch.channels_last)
        assert leaf.is_contiguous(memory_format=torch.channels_last)
    else:
        raise ValueError(layout)
    if requires_grad:
        leaf.requires_grad_(True)
    used = leaf.flatten(1) if layout == "channels_last" else leaf
    assert torch.equal(used.detach(), t)
    return leaf, used


def _data(case: Case):
    """float64 model and inputs of `case`."""
    model = make_model(case.D, case.C, case.Z, case.H, activation=case.activation, dtype=torch.float64,
                       hidden_layers=case.hidden_layers, seed=case.seed)
    g = torch.Generator().manual_seed(case.seed)
    x = torch.rand(case.n_l + case.n_u, case.D, generator=g, dtype=torch.float64)
    if case.binary:
        x = (x < 0.4).double()
    y_l = torch.randint(0, case.C, (case.n_l,), generator=g)
    eps_l = torch.randn(case.n_l, case.Z, generator=g, dtype=torch.float64)
    eps_u = torch.randn(case.n_u, case.C, case.Z, generator=g, dtype=torch.float64)
    return model, (x[: case.n_l], y_l, x[case.n_l :], eps_l, eps_u)


def run_case(case: Case, model, backend: str, data, dtype, layouts=None, device="cpu") -> dict:
    """Per-example losses and the gradients of a random weighting of them, for `model` (cast to dtype) on
    `backend`, the inputs in `layouts` (contiguous when None)."""
    model = cast_model(model, dtype).to(device)
    x_l, y_l, x_u, eps_l, eps_u = data
    lay = layouts or ("contiguous",) * 6
    if lay[5] == "transposed":
        with torch.no_grad():
            for p in model.parameters():
                if p.dim() == 2:
                    p.data = p.data.t().contiguous().t()
    model.backend = backend
    leaves, used = {}, {}
    for name, t, layout in (("x_l", x_l, lay[0]), ("x_u", x_u, lay[1]), ("eps_l", eps_l, lay[2]),
                            ("eps_u", eps_u, lay[3])):
        if t.numel() == 0 or (layout == "channels_last" and t.shape[0] == 0):
            layout = "contiguous"
        leaves[name], used[name] = laid_out(t.to(device=device, dtype=dtype), layout)
    _, labels = laid_out(y_l.to(device), lay[4] if y_l.numel() else "contiguous", requires_grad=False)
    losses = model.loss(used["x_l"], labels, used["x_u"], alpha=case.alpha, eps_l=used["eps_l"],
                        eps_u=used["eps_u"], reduction="none", chunk_size=case.chunk_size)
    w = (0.5 + torch.rand(losses.shape[0], generator=torch.Generator().manual_seed(case.seed + 1),
                          dtype=torch.float64)).to(losses)
    (losses * w).sum().backward()
    out = {"losses": losses.detach()}
    for name, p in model.named_parameters():
        out[f"grad {name}"] = p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p)
    for name, leaf in leaves.items():
        grad = leaf.grad if leaf.grad is not None else torch.zeros_like(leaf)
        out[f"grad {name}"] = grad.reshape(used[name].shape).detach().clone()
    return out


def check_case(case: Case, backends: tuple, device="cpu"):
    model, data = _data(case)
    ref64 = run_case(case, model, "reference", data, torch.float64)
    ref_lo = ref64 if case.dtype == torch.float64 else run_case(case, model, "reference", data, case.dtype)
    for backend in backends:
        fast = run_case(case, model, backend, data, case.dtype, case.layouts, device=device)
        for key in ref64:
            assert_close_to_reference(fast[key], ref_lo[key], ref64[key], name=f"{backend} {case} {key}")


def _available(*names):
    return tuple(p.values[0] for p in on_backends(*names) if not p.marks)


CPU_BACKENDS = _available("torch", "cpu")


@pytest.mark.skipif(not CPU_BACKENDS, reason="no backend to fuzz")
@fuzz_settings(150)
@given(case=cases())
def test_fuzz_cpu_backends_match_reference(case):
    check_case(case, CPU_BACKENDS)


@pytest.mark.skipif(not _available("triton"), reason="the triton backend cannot run here")
@fuzz_settings(30)
@given(case=cases(max_n=3, max_C=4, max_D=9, max_H=6, max_Z=3))
def test_fuzz_triton_matches_reference(case):
    check_case(case, ("triton",), device=device_of("triton"))


@pytest.mark.skipif(not torch.cuda.is_available() or not _available("cuda"), reason="needs a CUDA GPU")
@fuzz_settings(25)
@given(case=cases())
def test_fuzz_cuda_matches_reference(case):
    import ssvae_fast.cuda

    with ssvae_fast.cuda.set_precision("ieee"):
        check_case(case, ("cuda", "torch"), device="cuda")


def test_layouts_are_what_they_say():
    """The layouts the fuzzer draws: a non-contiguous tensor for every layout but contiguous."""
    t = torch.rand(4, 6, dtype=torch.float64)
    for layout in X_LAYOUTS:
        leaf, used = laid_out(t, layout)
        assert torch.equal(used.detach(), t)
        assert used.is_contiguous() == (layout in ("contiguous", "offset", "channels_last")), layout
        if layout == "offset":
            assert used.storage_offset() == 5
        if layout == "channels_last":
            assert leaf.dim() == 4 and not leaf.is_contiguous()
    assert not laid_out(torch.arange(5), "strided", requires_grad=False)[1].is_contiguous()
