"""`ssvae_fast.rows`, M2's row layout shared by the ops and the kernels (labelled rows first, one each,
then C rows per remaining example), against loops over the rows: the class-conditional op's output shape,
per-example sums, and the Bernoulli op's backward GEMMs from s = x - sigmoid(l)."""

from __future__ import annotations

import pytest
import torch

from ssvae_fast import rows
from ssvae_fast.ops.bernoulli_loglik_linear import bernoulli_loglik_linear_torch
from tests.op_checks import labelled_prefix_rows

# (N, n_l, C): every class (n_l = 0), all labelled (n_l = N), one unlabelled example, C = 1, and C = 0
# (examples past the labelled ones without rows).
LAYOUTS = [(5, 0, 3), (5, 5, 3), (5, 4, 3), (6, 2, 1), (7, 3, 17), (4, 2, 0)]


def _examples(N, n_l, C):
    """The example of every row, by enumeration."""
    return labelled_prefix_rows(N, n_l, C, torch.zeros(n_l, dtype=torch.long))[0]


def test_class_conditional_output_shape():
    a, w_y = torch.empty(5, 7), torch.empty(7, 3)
    assert rows.class_conditional_output_shape(a, w_y, None) == (5, 3, 7)
    assert rows.class_conditional_output_shape(a, w_y, torch.zeros(2, dtype=torch.long)) == (2 + 3 * 3, 7)
    assert rows.class_conditional_output_shape(a, w_y, torch.zeros(5, dtype=torch.long)) == (5, 7)


@pytest.mark.parametrize("trailing", [(), (4,), (2, 3)])
@pytest.mark.parametrize("N,n_l,C", LAYOUTS)
def test_per_example_sum_equals_a_loop(N, n_l, C, trailing):
    examples = _examples(N, n_l, C)
    t = torch.randn(examples.numel(), *trailing, generator=torch.Generator().manual_seed(N + C), dtype=torch.float64)
    expected = torch.zeros(N, *trailing, dtype=torch.float64)
    for m, n in enumerate(examples.tolist()):
        expected[n] += t[m]
    torch.testing.assert_close(rows.per_example_sum(t, n_l, C, N), expected, rtol=1e-14, atol=1e-14)
    if C:  # N inferred from the rows
        torch.testing.assert_close(rows.per_example_sum(t, n_l, C), expected, rtol=1e-14, atol=1e-14)


def _bernoulli_case(N, n_l, C, bias, seed=0):
    g = torch.Generator().manual_seed(seed)
    H, D = 5, 7
    examples = _examples(N, n_l, C)
    h = torch.randn(examples.numel(), H, generator=g, dtype=torch.float64)
    weight = torch.randn(D, H, generator=g, dtype=torch.float64)
    b = torch.randn(D, generator=g, dtype=torch.float64) if bias else None
    x = torch.rand(N, D, generator=g, dtype=torch.float64)
    grad_ll = torch.randn(examples.numel(), generator=g, dtype=torch.float64)
    return examples, h, weight, b, x, grad_ll


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("N,n_l,C", LAYOUTS)
def test_bernoulli_linear_dx_equals_a_loop(N, n_l, C, bias):
    """dx[n] = sum over example n's rows m of g[m] (W h[m] + b)."""
    examples, h, weight, b, x, g = _bernoulli_case(N, n_l, C, bias)
    expected = torch.zeros_like(x)
    for m, n in enumerate(examples.tolist()):
        expected[n] += g[m] * (weight @ h[m] + (b if b is not None else 0.0))
    got = rows.bernoulli_linear_dx(g, h, weight, b, n_l, C, N)
    torch.testing.assert_close(got, expected, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("N,n_l,C", LAYOUTS)
def test_bernoulli_linear_vjp_from_s_equals_autograd(N, n_l, C, bias):
    """The backward GEMMs the compiled backends share, given s = x[example] - sigmoid(l), equal autograd
    through the torch face; db is empty without a bias."""
    examples, h, weight, b, x, g = _bernoulli_case(N, n_l, C, bias, seed=1)
    logits = h @ weight.t() + (b if b is not None else 0.0)
    s = x[examples] - torch.sigmoid(logits)
    dh, dweight, dbias, dx = rows.bernoulli_linear_vjp_from_s(s, g, h, weight, b, n_l, C, N)
    leaves = [t.clone().requires_grad_(True) for t in (h, weight, x)] + ([b.clone().requires_grad_(True)] if bias else [])
    h_, w_, x_ = leaves[:3]
    ll = bernoulli_loglik_linear_torch(h_, w_, leaves[3] if bias else None, x_, n_l)
    expected = torch.autograd.grad(ll, leaves, g)
    for got, want in zip((dh, dweight, dx) + ((dbias,) if bias else ()), expected):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    if not bias:
        assert dbias.shape == (0,)
