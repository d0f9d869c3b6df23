"""The `torch` backend (docs/design.md section 2's rewrites in plain torch) against the reference."""

import pytest
import torch

from tests.equivalence import MIXES, SHAPES, check_backend


@pytest.mark.parametrize("mix", MIXES)
@pytest.mark.parametrize("B,C", SHAPES)
def test_torch_backend_matches_reference(B, C, mix):
    check_backend("torch", B, C, mix)


@pytest.mark.parametrize("activation", ["softplus", "relu"])
def test_torch_backend_deeper_networks(activation):
    check_backend("torch", 7, 10, "mixed", hidden_layers=2, activation=activation, D=29, H=13)


def test_torch_backend_float64_exact_enough():
    check_backend("torch", 33, 17, "mixed", dtype=torch.float64)


def test_equivalence_check_can_fail():
    """A backend with a wrong op must be caught: drop the KL's '-1' term (a constant shift) and the
    softplus gradient sign, one at a time, and the check must raise."""
    from ssvae_fast import backends
    from ssvae_fast.ops.gaussian import gaussian_reparam_kl_torch

    base = backends.get_ops("torch")

    def wrong_kl(head, eps):
        z, kl = gaussian_reparam_kl_torch(head, eps)
        return z, kl * 1.001  # a 0.1% error

    def wrong_z(head, eps):
        z, kl = gaussian_reparam_kl_torch(head, eps)
        return z.detach() + (z - z.detach()) * 0.99, kl  # right value, gradient 1% off

    for wrong in (wrong_kl, wrong_z):
        backends._OPS_CACHE["torch"] = backends.BackendOps(
            "torch", base.class_conditional_activation, wrong, base.bernoulli_loglik_linear, base.elbo_reduction
        )
        try:
            with pytest.raises(AssertionError):
                check_backend("torch", 7, 10, "mixed")
        finally:
            backends._OPS_CACHE["torch"] = base


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_torch_ops_on_empty_inputs(dtype):
    from ssvae_fast import backends
    from tests.equivalence import check_empty_inputs

    check_empty_inputs(backends.get_ops("torch"), dtype)


def _naive_rows(N, n_l, C, classes):
    """Example and class of every row of the labelled-prefix layout, by enumeration."""
    examples, row_classes = [], []
    for i in range(n_l):
        examples.append(i)
        row_classes.append(int(classes[i]))
    for j in range(N - n_l):
        for c in range(C):
            examples.append(n_l + j)
            row_classes.append(c)
    return torch.tensor(examples, dtype=torch.long), torch.tensor(row_classes, dtype=torch.long)


@pytest.mark.parametrize("N,n_l,C", [(5, 0, 3), (5, 5, 3), (5, 2, 3), (6, 5, 17), (3, 1, 1)])
def test_labelled_prefix_layout_against_gathered_rows(N, n_l, C):
    """The torch ops' labelled-prefix forms (the spec of every backend's) equal the naive computation
    on rows gathered by enumeration (row i < n_l: example i, its class; then C rows per example), values
    and gradients, in float64."""
    from ssvae_fast.ops.bernoulli_loglik_linear import bernoulli_loglik_linear_torch
    from ssvae_fast.ops.class_conditional import class_conditional_activation_torch

    g = torch.Generator().manual_seed(N * 100 + n_l * 10 + C)
    H, D = 7, 9
    a = torch.randn(N, H, generator=g, dtype=torch.float64, requires_grad=True)
    w_y = torch.randn(H, C, generator=g, dtype=torch.float64, requires_grad=True)
    classes = torch.randint(0, C, (n_l,), generator=g)
    examples, row_classes = _naive_rows(N, n_l, C, classes)

    out = class_conditional_activation_torch(a, w_y, classes, "softplus")
    naive = torch.nn.functional.softplus(a[examples] + w_y.t()[row_classes])
    torch.testing.assert_close(out, naive, rtol=1e-13, atol=0)
    upstream = torch.randn(out.shape, generator=g, dtype=torch.float64)
    torch.testing.assert_close(torch.autograd.grad((out * upstream).sum(), (a, w_y)),
                               torch.autograd.grad((naive * upstream).sum(), (a, w_y)), rtol=1e-12, atol=1e-13)

    h = torch.randn(examples.numel(), H, generator=g, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(D, H, generator=g, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(D, generator=g, dtype=torch.float64, requires_grad=True)
    x = (torch.rand(N, D, generator=g, dtype=torch.float64) < 0.4).double().requires_grad_(True)
    ll = bernoulli_loglik_linear_torch(h, weight, bias, x, n_l)
    logits = h @ weight.t() + bias
    naive_ll = (x[examples] * logits - torch.nn.functional.softplus(logits)).sum(-1)
    torch.testing.assert_close(ll, naive_ll, rtol=1e-12, atol=1e-12)
    upstream = torch.randn(ll.shape, generator=g, dtype=torch.float64)
    leaves = (h, weight, bias, x)
    torch.testing.assert_close(torch.autograd.grad((ll * upstream).sum(), leaves),
                               torch.autograd.grad((naive_ll * upstream).sum(), leaves), rtol=1e-11, atol=1e-11)


def test_labelled_prefix_shape_errors():
    from ssvae_fast.ops.bernoulli_loglik_linear import bernoulli_loglik_linear_torch
    from ssvae_fast.ops.class_conditional import class_conditional_activation_torch

    with pytest.raises(ValueError, match="n_l <= N"):
        class_conditional_activation_torch(torch.rand(2, 4), torch.rand(4, 3), torch.tensor([0, 1, 2]), "relu")
    with pytest.raises(ValueError, match="n_labelled"):  # 8 rows: not 1 + 2 * C
        bernoulli_loglik_linear_torch(torch.rand(8, 4), torch.rand(5, 4), None, torch.rand(3, 5), 1)
    with pytest.raises(ValueError, match="n_labelled must be in"):
        bernoulli_loglik_linear_torch(torch.rand(4, 4), torch.rand(5, 4), None, torch.rand(3, 5), 4)
    with pytest.raises(ValueError, match="2-D"):
        bernoulli_loglik_linear_torch(torch.rand(3, 2, 4), torch.rand(5, 4), None, torch.rand(3, 5), 1)
