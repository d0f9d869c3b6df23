"""The cpu kernels' float32 math helpers (csrc/cpu/vec_math.h) against float64, in ulp.

The tolerance rule's float32 floor (2e-5 relative) is about 170 ulp: an accuracy regression of tens of ulp
in a helper passes every equivalence test. Here each helper M2's kernels use is measured on its own, as the
kernels compile it (`ssvae_fast._C.vec_math_eval`: the same target clones and SIMD loops), over a dense
sweep of its domain (an even grid, uniform draws, and random float32 bit patterns, which cover every binade
down to the subnormals) and at its extremes, and its maximum error must stay within the bound below.

ulp: |f32 result - float64 truth| / 2^(e - 23), e the binade of the truth (floored at float32's smallest
normal binade, so subnormal results count in subnormal ulps).

The kernels' bfloat16 rounding (csrc/cpu/bfloat16.h) must equal torch's float32 -> bfloat16 conversion bit
for bit (round to nearest even, inf kept, overflow to inf, NaN kept NaN) over every float32 sign and
exponent with random mantissas, the ties, and the specials.
"""

from __future__ import annotations

import math

import pytest
import torch

from ssvae_fast import _ext, backends

pytestmark = pytest.mark.skipif(backends.unavailable_reason("cpu") is not None,
                                reason=f"{backends.unavailable_reason('cpu')}")

FLT_MIN_NORMAL = 1.1754943508222875e-38
N = 1 << 20


def evaluate(name: str, x: torch.Tensor) -> torch.Tensor:
    x = x.to(torch.float32).contiguous()
    out = torch.empty_like(x)
    _ext.require_ext().vec_math_eval(name, x.data_ptr(), out.data_ptr(), x.numel())
    return out


def ulp_error(got: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    truth = truth.double()
    _, exponent = torch.frexp(truth)
    binade = torch.clamp(exponent.to(torch.int64) - 1, min=-126)
    return (got.double() - truth).abs() / torch.ldexp(torch.ones_like(truth), binade - 23)


def grid(lo: float, hi: float, seed: int) -> torch.Tensor:
    """float32 values in [lo, hi]: an even grid, uniform draws, and (for a non-negative range) random bit
    patterns between the two ends (every binade, subnormals included), plus both ends."""
    g = torch.Generator().manual_seed(seed)
    parts = [torch.linspace(lo, hi, N, dtype=torch.float64),
             lo + (hi - lo) * torch.rand(N, generator=g, dtype=torch.float64), torch.tensor([lo, hi]).double()]
    out = torch.cat(parts).float()
    if lo >= 0:
        bits = torch.tensor([lo, hi], dtype=torch.float32).view(torch.int32).tolist()
        patterns = torch.randint(bits[0], bits[1] + 1, (N,), generator=g, dtype=torch.int64).to(torch.int32)
        out = torch.cat([out, patterns.view(torch.float32)])
    return out


def both_signs(hi: float, lo_negative: float, seed: int) -> torch.Tensor:
    """[lo_negative, hi] with the bit-pattern sweep on each side of 0."""
    return torch.cat([grid(lo_negative, hi, seed), grid(0.0, hi, seed + 1), -grid(0.0, -lo_negative, seed + 2)])


def _softplus64(v):
    return torch.clamp(v, min=0) + torch.log1p(torch.exp(-v.abs()))


# name -> (inputs, float64 truth, max ulp): every float32 helper M2's cpu kernels use, and the composed forms
# the kernels evaluate (softplus' = 1 - exp(-softplus(v)) from the saved output; the Bernoulli epilogue's
# sigmoid from exp(-|v|)). Domains stop where a helper flushes to 0 on purpose (tested below).
HELPERS = {
    "exp_neg": (lambda: grid(0.0, 87.0, 1), lambda a: torch.exp(-a), 1.05),
    "exp": (lambda: both_signs(88.72, -103.97, 2), torch.exp, 1.05),
    "log1p_unit_poly": (lambda: grid(0.0, 1.0, 3), torch.log1p, 2.0),
    "log1p_exp_neg": (lambda: grid(0.0, 87.0, 4), lambda a: torch.log1p(torch.exp(-a)), 2.05),
    "one_minus_exp_neg": (lambda: grid(0.0, 87.0, 5), lambda y: -torch.expm1(-y), 0.9),
    "sigmoid": (lambda: both_signs(100.0, -87.0, 6), torch.sigmoid, 3.0),
    "sigmoid_from_exp_neg_abs": (lambda: both_signs(100.0, -87.0, 7), torch.sigmoid, 3.0),
    "softplus": (lambda: both_signs(1e4, -87.0, 8), _softplus64, 2.05),
    "sigmoid_from_softplus": (lambda: both_signs(100.0, -87.0, 9), torch.sigmoid, 3.0),
}


@pytest.mark.parametrize("name", list(HELPERS))
def test_max_ulp_error(name):
    inputs, truth, bound = HELPERS[name]
    x = inputs()
    err = ulp_error(evaluate(name, x), truth(x.double()))
    worst = int(err.argmax())
    assert float(err.max()) <= bound, f"{name}: {float(err.max()):.3f} ulp at {float(x[worst])!r} (bound {bound})"


def test_the_bounds_can_fail():
    """A helper one step less accurate (float32 exp through float16) is caught by the sweep."""
    x = grid(0.0, 87.0, 1)
    lossy = evaluate("exp_neg", x).half().float()
    assert float(ulp_error(lossy, torch.exp(-x.double())).max()) > HELPERS["exp_neg"][2]


INF, NAN = math.inf, math.nan

# (name, input, expected output or a predicate): signed zeros, infinities, NaN, the flush thresholds.
SPECIALS = [
    ("exp_neg", 0.0, 1.0), ("exp_neg", 87.5, 0.0), ("exp_neg", 1e30, 0.0), ("exp_neg", INF, 0.0),
    ("exp_neg", NAN, NAN),
    ("exp", 0.0, 1.0), ("exp", -0.0, 1.0), ("exp", 88.73, INF), ("exp", INF, INF), ("exp", -INF, 0.0),
    ("exp", -104.0, 0.0), ("exp", NAN, NAN), ("exp", -100.0, lambda v: 0 < v < FLT_MIN_NORMAL),
    ("log1p_unit_poly", 0.0, 0.0), ("log1p_unit_poly", 1.0, lambda v: abs(v - math.log(2)) < 1e-7),
    ("one_minus_exp_neg", 0.0, 0.0), ("one_minus_exp_neg", 1e-30, lambda v: abs(v - 1e-30) < 1e-36),
    ("one_minus_exp_neg", 88.0, 1.0), ("one_minus_exp_neg", INF, 1.0), ("one_minus_exp_neg", NAN, NAN),
    ("sigmoid", 0.0, 0.5), ("sigmoid", 1e4, 1.0), ("sigmoid", INF, 1.0), ("sigmoid", -INF, 0.0),
    ("sigmoid", NAN, NAN), ("sigmoid", -88.0, lambda v: 0 <= v < 2 * FLT_MIN_NORMAL),
    ("sigmoid", -1e4, 0.0),
    ("softplus", 0.0, lambda v: abs(v - math.log(2)) < 1e-7), ("softplus", 1e30, 1e30), ("softplus", INF, INF),
    ("softplus", -INF, 0.0), ("softplus", NAN, NAN), ("softplus", -1e4, 0.0),
    ("softplus", -88.0, lambda v: 0 <= v < 2 * FLT_MIN_NORMAL), ("softplus", 1e4, 1e4),
    ("sigmoid_from_softplus", 1e4, 1.0), ("sigmoid_from_softplus", -1e4, 0.0),
    ("sigmoid_from_softplus", 0.0, lambda v: abs(v - 0.5) < 1e-7),
]


@pytest.mark.parametrize("name,value,expected", SPECIALS)
def test_special_values(name, value, expected):
    got = float(evaluate(name, torch.tensor([value]))[0])
    if callable(expected):
        assert expected(got), (name, value, got)
    elif math.isnan(expected):
        assert math.isnan(got), (name, value, got)
    else:
        assert got == float(torch.tensor(expected, dtype=torch.float32)), (name, value, got)


def test_flush_regions_are_tiny():
    """Below their thresholds exp_neg, sigmoid and softplus return 0 where the true value is under float32's
    smallest normal number (the absolute error is what matters there)."""
    for name, truth in (("sigmoid", torch.sigmoid), ("softplus", _softplus64),
                        ("sigmoid_from_exp_neg_abs", torch.sigmoid)):
        x = -grid(87.0, 1e4, 10)
        err = (evaluate(name, x).double() - truth(x.double())).abs()
        assert float(err.max()) < 2 * FLT_MIN_NORMAL, name
    x = grid(87.0, 1e4, 11)
    assert float((evaluate("exp_neg", x).double() - torch.exp(-x.double())).abs().max()) < 2 * FLT_MIN_NORMAL


def test_unknown_helper_is_refused():
    x = torch.zeros(1)
    with pytest.raises(ValueError, match="unknown function 'tanh'"):
        _ext.require_ext().vec_math_eval("tanh", x.data_ptr(), x.data_ptr(), 1)


def test_bfloat16_rounding_equals_torch():
    """bf16_round(v) = float(bfloat16(v)) as torch rounds it, bit for bit (NaN: any NaN), over random float32 bit
    patterns (every binade, subnormals and both signs), the exact ties (the lower 16 bits 0x8000, odd and even
    upper halves), the largest finite values and the specials."""
    g = torch.Generator().manual_seed(12)
    patterns = torch.randint(-(2**31), 2**31, (N,), generator=g, dtype=torch.int64).to(torch.int32)
    upper = torch.randint(0, 2**16, (4096,), generator=g, dtype=torch.int64)
    ties = ((upper << 16) | 0x8000).to(torch.int64)
    ties = torch.where(ties >= 2**31, ties - 2**32, ties).to(torch.int32)
    specials = torch.tensor([0.0, -0.0, INF, -INF, NAN, 3.4028234663852886e38, -3.4028234663852886e38,
                             3.3961775e38, 1e-45, FLT_MIN_NORMAL, 1.0, -1.0, 1.00390625, 1.0078125],
                            dtype=torch.float32)
    x = torch.cat([patterns.view(torch.float32), ties.view(torch.float32), specials])
    got = evaluate("bf16_round", x)
    expected = x.to(torch.bfloat16).float()
    nan = torch.isnan(expected)
    assert torch.equal(torch.isnan(got), nan)
    same = got.view(torch.int32)[~nan] == expected.view(torch.int32)[~nan]
    worst = int((~same).nonzero()[0]) if not bool(same.all()) else -1
    assert bool(same.all()), f"bf16_round({float(x[~nan][worst])!r}) = {float(got[~nan][worst])!r}, torch: " \
                             f"{float(expected[~nan][worst])!r}"
