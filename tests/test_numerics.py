"""Numerical robustness of the whole objective on every backend, against the float64 reference.

At the extremes: decoder logits up to |1e4|, logvar in [-30, 30], classifier logits up to |1e4|, one class
with probability 1 (and labels on classes of probability 0): losses and the gradient of every parameter and
input are finite wherever the float64 reference is, and follow the tolerance rule there (tests/tolerance.py:
float32 against the float32 reference's own error, float64 to the float64 floor). And at the edges of the
shapes: empty labelled or unlabelled parts, B = 1, C = 2, D, H and z_dim from 1 up.
"""

from __future__ import annotations

import pytest
import torch

from tests.equivalence import run, split_batch
from tests.factories import cast_model, make_batch, make_model
from tests.op_checks import device_of, on_backends, per_backend
from tests.tolerance import FLOORS

ALL = ("torch", "cpu", "triton", "cuda")


def _make_extreme(model, kind: str):
    """Set `model`'s (float64) weights so that its activations reach the extreme `kind`."""
    Z, C = model.z_dim, model.n_classes
    enc, dec, clf = model.encoder, model.decoder, model.classifier
    with torch.no_grad():
        if kind in ("decoder_logits", "all"):  # logits_x = +-1e4 (+ O(1)), both signs, every row
            sign = torch.where(torch.arange(model.x_dim) % 3 == 0, -1.0, 1.0).to(dec.output.bias)
            dec.output.bias.copy_(1e4 * sign)
        if kind in ("logvar", "all"):  # logvar spans [-30, 30] whatever the input
            enc.head.weight[Z:].mul_(1e-3)
            enc.head.bias[Z:].copy_(torch.linspace(-30, 30, Z) if Z > 1 else torch.tensor([30.0]))
        if kind in ("classifier_logits", "all"):  # logits_y from -1e4 to 1e4
            clf.output.weight.mul_(1e-3)
            clf.output.bias.copy_(torch.linspace(-1e4, 1e4, C))
        if kind == "certain":  # q(0|x) = 1 exactly, every other class 0 (exp(-1e4) underflows)
            clf.output.weight.mul_(1e-3)
            clf.output.bias.copy_(torch.tensor([1e4] + [0.0] * (C - 1)))
    return model


def _check_where_finite(fast: dict, ref_lo: dict, ref64: dict, name: str):
    """The tolerance rule on the entries where the float64 reference is finite; there fast must be finite."""
    for key in ref64:
        exact = ref64[key].detach().double().cpu()
        got = fast[key].detach().double().cpu()
        same = ref_lo[key].detach().double().cpu()
        finite = torch.isfinite(exact)
        if not finite.any():
            continue
        assert torch.isfinite(got[finite]).all(), f"{name} {key}: non-finite where the reference is finite"
        scale = max(1.0, float(exact[finite].abs().max()))
        both = finite & torch.isfinite(same)
        base = float((same[both] - exact[both]).abs().max()) if both.any() else 0.0
        if not both.equal(finite):
            base = float("inf")  # the same-dtype reference overflows there: only finiteness is required
        bound = 2.0 * base + FLOORS[ref_lo[key].dtype] * scale
        err = float((got[finite] - exact[finite]).abs().max())
        assert err <= bound, f"{name} {key}: error {err:.3e} > bound {bound:.3e}"


def check_extreme(backend: str, kind: str, *, B=7, C=10, mix="mixed", D=37, H=19, Z=5, labels=None):
    device = device_of(backend)
    n_l, n_u = split_batch(B, mix)
    model64 = _make_extreme(make_model(D, C, Z, H, dtype=torch.float64, device=device), kind)
    batch64 = make_batch(model64, n_l, n_u, dtype=torch.float64, seed=B * 100 + C, device=device)
    if labels is not None:
        batch64.y_l = torch.full_like(batch64.y_l, labels)
    ref64 = run(model64, "reference", batch64)
    assert torch.isfinite(ref64["losses"]).all(), "the extreme case must have a finite loss"
    for dtype in (torch.float32, torch.float64):
        model, batch = cast_model(model64, dtype), batch64.to(dtype=dtype)
        ref_lo = ref64 if dtype == torch.float64 else run(model, "reference", batch)
        fast = run(cast_model(model64, dtype), backend, batch)
        _check_where_finite(fast, ref_lo, ref64, f"{backend} {kind} {dtype}")


EXTREMES = ["decoder_logits", "logvar", "classifier_logits", "certain", "all"]


@pytest.mark.parametrize("backend,kind", per_backend({b: EXTREMES for b in ALL}))
def test_extremes_match_reference(backend, kind):
    small = dict(B=3, C=4, D=11, H=6, Z=3) if backend == "triton" else {}
    check_extreme(backend, kind, **small)


@pytest.mark.parametrize("backend", on_backends(*ALL))
def test_labels_on_classes_of_probability_zero(backend):
    """q(0|x) = 1: labelled examples of class C - 1 have log q(y|x) = -2e4 (finite, alpha-weighted)."""
    small = dict(B=3, C=4, D=11, H=6, Z=3) if backend == "triton" else {}
    check_extreme(backend, "certain", labels=small.get("C", 10) - 1, mix="labelled", **small)


# (B, C, mix, D, H, Z): batch compositions and sizes at their edges.
EDGES = [
    (1, 2, "labelled", 1, 1, 1),
    (1, 2, "unlabelled", 1, 1, 1),
    (1, 2, "mixed", 2, 3, 1),
    (2, 2, "mixed", 17, 1, 2),
    (3, 3, "unlabelled", 1, 17, 3),
    (5, 2, "labelled", 300, 5, 2),
    (4, 7, "mixed", 5, 300, 2),
    (9, 2, "mixed", 33, 65, 1),
]
TRITON_EDGES = [e for e in EDGES if e[3] * e[4] < 1000]


@pytest.mark.parametrize("backend,B,C,mix,D,H,Z", per_backend({b: EDGES for b in ("torch", "cpu", "cuda")}
                                                             | {"triton": TRITON_EDGES}))
def test_shape_edges_match_reference(backend, B, C, mix, D, H, Z):
    from tests.equivalence import check_backend

    check_backend(backend, B, C, mix, D=D, H=H, Z=Z)


@pytest.mark.parametrize("backend", on_backends("reference", *ALL))
def test_empty_part_alongside_the_other(backend):
    """x_l empty (0, D) with y_l empty, or x_u None, next to a non-empty other part: the same losses as the
    part alone, and zero gradients for the empty inputs."""
    device = device_of(backend)
    model = make_model(13, 3, 4, 11, dtype=torch.float64, device=device)
    model.backend = backend
    b = make_batch(model, 3, 4, dtype=torch.float64, device=device, seed=9)
    x_l = b.x_l[:0].clone().requires_grad_(True)
    only_u = model.loss(x_l, b.y_l[:0], b.x_u, alpha=1.0, eps_l=b.eps_l[:0], eps_u=b.eps_u, reduction="none")
    alone = model.loss(None, None, b.x_u, alpha=1.0, eps_u=b.eps_u, reduction="none")
    torch.testing.assert_close(only_u, alone, rtol=0, atol=0)
    only_u.sum().backward()
    assert x_l.grad is None or x_l.grad.shape == (0, 13)
    only_l = model.loss(b.x_l, b.y_l, None, alpha=1.0, eps_l=b.eps_l, reduction="none")
    with_empty = model.loss(b.x_l, b.y_l, b.x_u[:0], alpha=1.0, eps_l=b.eps_l, eps_u=b.eps_u[:0], reduction="none")
    torch.testing.assert_close(with_empty, only_l, rtol=0, atol=0)
    assert only_l.shape == (3,) and torch.isfinite(only_l).all()
