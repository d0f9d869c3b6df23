"""Op-level checks shared by the compiled backends' test files (cpu, cuda, triton): an op against its
plain-torch face, outputs and the gradient of every float input, under docs/design.md section 4's rule
(each dtype no worse than twice the torch op's own error in that dtype plus the floor; float64: the
floor), and the extreme-value cases every backend must pass."""

from __future__ import annotations

import torch

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
