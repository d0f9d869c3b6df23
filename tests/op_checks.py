"""Op-level checks shared by the compiled backends' test files (cpu, cuda, triton): an op against its
plain-torch face, outputs and the gradient of every float input, under docs/design.md section 4's rule
(each dtype no worse than twice the torch op's own error in that dtype plus the floor; float64: the
floor), and the extreme-value cases every backend must pass."""

from __future__ import annotations

import torch

from ssvae_fast.ops.bernoulli_loglik_linear import bernoulli_loglik_linear_torch
from ssvae_fast.ops.class_conditional import class_conditional_activation_torch
from ssvae_fast.ops.elbo import elbo_reduction_torch
from ssvae_fast.ops.gaussian import gaussian_reparam_kl_torch
from tests.tolerance import assert_close_to_reference


def outputs_and_grads(fn, inputs: dict, seed: int = 0):
    """Outputs of fn(**inputs) and the gradients of sum_k <w_k, out_k> (random w_k) w.r.t. every float
    input that requires grad; a flat dict of tensors."""
    leaves = {k: v for k, v in inputs.items() if isinstance(v, torch.Tensor) and v.requires_grad}
    out = fn(**inputs)
    outs = out if isinstance(out, tuple) else (out,)
    g = torch.Generator().manual_seed(seed)
    total = sum((o * (0.5 + torch.rand(o.shape, generator=g, dtype=torch.float64)).to(o)).sum() for o in outs)
    grads = torch.autograd.grad(total, list(leaves.values()), allow_unused=True) if leaves else ()
    result = {f"out{i}": o.detach() for i, o in enumerate(outs)}
    for (name, leaf), grad in zip(leaves.items(), grads):
        result[f"grad {name}"] = grad if grad is not None else torch.zeros_like(leaf)
    return result


def check_op_against_torch(fast_fn, torch_fn, make_inputs, *, device, dtypes=(torch.float32, torch.float64)):
    """Outputs and gradients of `fast_fn` against `torch_fn` in float64 under the tolerance rule, for each
    of `dtypes`; `make_inputs(dtype)` gives the keyword arguments. Every result must be on `device`."""
    ref64 = outputs_and_grads(torch_fn, make_inputs(torch.float64))
    for dtype in dtypes:
        fast = outputs_and_grads(fast_fn, make_inputs(dtype))
        ref_lo = outputs_and_grads(torch_fn, make_inputs(dtype)) if dtype != torch.float64 else ref64
        assert fast.keys() == ref64.keys()
        for key in ref64:
            assert fast[key].device.type == torch.device(device).type, key
            assert_close_to_reference(fast[key], ref_lo[key], ref64[key], name=f"{fast_fn.__name__} {dtype} {key}")


def rand(*shape, seed, scale=1.0, uniform=False):
    """float64 draws on the CPU (the same numbers on every device), uniform in [0, 1) or normal, times scale."""
    g = torch.Generator().manual_seed(seed)
    draw = torch.rand if uniform else torch.randn
    return draw(*shape, generator=g, dtype=torch.float64) * scale


def leaf(t64, dtype, device, requires_grad=True):
    return t64.to(device=device, dtype=dtype, copy=True).requires_grad_(requires_grad)


def check_gaussian_extreme_logvar(ops, device, seed: int):
    """logvar in [-80, 80] (exp(80) is finite in fp32) and |mu| ~ 100: finite and equal to the torch op."""
    Z = 8
    logvar64 = torch.linspace(-80, 80, 3 * Z, dtype=torch.float64).view(3, Z)
    head64 = torch.cat([rand(3, Z, seed=seed, scale=100.0), logvar64], 1)
    eps64 = rand(3, Z, seed=seed + 1)

    def make(dtype):
        return {"head": leaf(head64, dtype, device), "eps": leaf(eps64, dtype, device)}

    check_op_against_torch(ops.gaussian_reparam_kl, gaussian_reparam_kl_torch, make, device=device)


def check_elbo_extreme_logits(ops, extreme, device, seed: int):
    """Classifier logits built from `extreme` (ascending values, |l| up to 1e4), labels on the least likely
    class, the most likely and the middle one: finite and equal to the torch op."""
    n_l, n_u, C = 3, 3, extreme.numel()
    logits64 = torch.stack([extreme, extreme.flip(0), extreme * 0.5, extreme, -extreme, extreme.roll(3)])

    def make(dtype):
        return {
            "logits_y": leaf(logits64, dtype, device),
            "y_l": torch.tensor([0, C - 1, C // 2], device=device),
            "ll_l": leaf(rand(n_l, seed=seed, scale=30.0), dtype, device),
            "kl_l": leaf(rand(n_l, seed=seed + 1, uniform=True), dtype, device),
            "ll_u": leaf(rand(n_u, C, seed=seed + 2, scale=30.0), dtype, device),
            "kl_u": leaf(rand(n_u, C, seed=seed + 3, uniform=True), dtype, device),
            "alpha": 0.7,
        }

    check_op_against_torch(ops.elbo_reduction, elbo_reduction_torch, make, device=device)


def check_class_conditional_labelled_prefix(ops, device, *, N, n_l, H, C, activation, seed: int):
    """class_conditional_activation with classes for the first n_l of N rows (n_l + (N - n_l) * C output
    rows, labelled first) against the torch op: outputs, grad a and grad w_y."""
    a64, w64 = rand(N, H, seed=seed, scale=2.0), rand(H, C, seed=seed + 1)
    classes = torch.randint(0, C, (n_l,), generator=torch.Generator().manual_seed(seed + 2))

    def make(dtype):
        return {"a": leaf(a64, dtype, device), "w_y": leaf(w64, dtype, device),
                "classes": classes.to(device), "activation": activation}

    out = ops.class_conditional_activation(**make(torch.float64))
    assert out.shape == (n_l + (N - n_l) * C, H)
    check_op_against_torch(ops.class_conditional_activation, class_conditional_activation_torch, make, device=device)


def check_bernoulli_labelled_prefix(ops, device, *, N, n_l, C, H, D, bias=True, x_grad=False, seed: int):
    """bernoulli_loglik_linear's 2-D form (rows: n_l labelled, then C per remaining example) against the
    torch op: ll (M,), and the gradients of h, weight, bias and (when x_grad) x."""
    M = n_l + (N - n_l) * C
    h64 = rand(M, H, seed=seed).sigmoid() * 2.0
    w64, b64 = rand(D, H, seed=seed + 1, scale=0.5), rand(D, seed=seed + 2, scale=0.3)
    x64 = (rand(N, D, seed=seed + 3, uniform=True) < 0.3).double()

    def make(dtype):
        return {"h": leaf(h64, dtype, device), "weight": leaf(w64, dtype, device),
                "bias": leaf(b64, dtype, device) if bias else None,
                "x": leaf(x64, dtype, device, requires_grad=x_grad), "n_labelled": n_l}

    assert ops.bernoulli_loglik_linear(**make(torch.float64)).shape == (M,)
    check_op_against_torch(ops.bernoulli_loglik_linear, bernoulli_loglik_linear_torch, make, device=device)
