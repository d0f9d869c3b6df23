"""Fused decoder output layer + Gaussian log-likelihood with a learned per-dimension log-variance, x shared
by the C class rows (the likelihood of M2 on real-valued inputs, e.g. M1's latent features in M1+M2).

    ll[m] = -0.5 sum_d [ exp(-v_d) (x[e(m), d] - mu[m, d])^2 + v_d + log(2 pi) ],   mu[m] = W h[m] + b

with v (D,) the log-variance and e(m) the example of row m (the row layouts of `bernoulli_loglik_linear`:
h (N, C, H) every class of every example, or h (M, H) rows with n_labelled examples first, one row each,
then C rows per remaining example). This file holds the plain-torch op; the fused backends provide the
same signature and never write the means to memory.

Backward (g = dLoss/dll, (M,); s = exp(-v) (x - mu), (M, D), the only (M, D) tensor a fused forward keeps):

    dh[m]  = g[m] (s[m] @ W)                      dW = s^T (g h)            db = s^T g
    dv     = 0.5 exp(v) (s * s)^T g - 0.5 sum_m g[m]     (since exp(-v) (x - mu)^2 = exp(v) s^2)
    dx[n]  = -sum over example n's rows m of g[m] s[m]

the Bernoulli op's backward with s in place of x - sigmoid(l), plus the column sums of g s^2 for v and
a per-example row sum for x.
"""

# No `from __future__ import annotations`: torch.library.custom_op infers each op's schema from the
# implementations' real annotations.
import math
from typing import Optional

import torch
from torch import Tensor

from .. import validation
from .._launch import compute_dtype
from .bernoulli_loglik_linear import _check_shapes
from .glue import (Implementations, bind_backend, cast_for_backend, check_tensors, check_types, reduction_dtype,
                   reduction_result)

OP = "gaussian_loglik_linear"
LOG_2PI = math.log(2.0 * math.pi)


def example_of_rows(n_rows: int, n_examples: int, n_labelled: int, n_classes: int, device) -> Tensor:
    """e(m) for every row m of the labelled-prefix layout, (M,) int64."""
    rest = torch.arange(n_labelled, n_examples, device=device).repeat_interleave(n_classes)
    return torch.cat([torch.arange(n_labelled, device=device), rest])[:n_rows]


# 1. The plain-torch face: autograd through the textbook formula, rows gathered per example.
def gaussian_loglik_linear_torch(
    h: Tensor, weight: Tensor, bias: Optional[Tensor], logvar: Tensor, x: Tensor, n_labelled: int = 0
) -> Tensor:
    """ll = -0.5 sum_d [exp(-v_d) (x_d - mu_d)^2 + v_d + log 2 pi] for every row of h, mu = W h + b.

    3-D form: h (N, C, H), x (N, D) shared by the C rows of each example -> ll (N, C).
    2-D form: h (M, H) rows, M = n_l + (N - n_l) * C (the layout of `class_conditional_activation` with
    n_l classes given) -> ll (M,). weight (D, H), bias (D,) or None, logvar (D,). Row sums in float32 for
    16-bit inputs; ll in h's dtype, or float32 under torch.autocast.
    """
    n_classes = check_inputs(h, weight, bias, logvar, x, n_labelled)
    check_tensors(f"{OP}_torch", "torch", {"h": h, "weight": weight, "bias": bias, "logvar": logvar, "x": x})
    if h.dim() == 3:
        n = h.shape[0]
        rows = h.reshape(n * n_classes, h.shape[2])
        return _torch_rows(rows, weight, bias, logvar, x, 0, n_classes).view(n, n_classes)
    return _torch_rows(h, weight, bias, logvar, x, n_labelled, n_classes)


def _torch_rows(h, weight, bias, logvar, x, n_l: int, n_classes: int) -> Tensor:
    mu = torch.addmm(bias, h, weight.t()) if bias is not None else h @ weight.t()
    acc = compute_dtype(mu.dtype)
    rows = example_of_rows(h.shape[0], x.shape[0], n_l, n_classes, h.device)
    r = x.index_select(0, rows).to(acc) - mu.to(acc)
    v = logvar.to(acc)
    ll = -0.5 * ((r.square() * torch.exp(-v)).sum(-1) + v.sum() + weight.shape[0] * LOG_2PI)
    return reduction_result(ll, h.dtype)


# 2. Input checks: types, shapes and (when value checks are on) finite x and logvar; each backend's
#    devices and dtypes are checked by `glue.check_tensors`.
def check_inputs(h, weight, bias, logvar, x, n_labelled: int = 0) -> int:
    """Checks the types and shapes and (when value checks are on) that x and logvar are finite; returns C,
    the rows per unlabelled example."""
    check_types(OP, {"h": h, "weight": weight, "bias": bias, "logvar": logvar, "x": x})
    if isinstance(n_labelled, bool) or not isinstance(n_labelled, (int, torch.SymInt)):
        raise TypeError(f"{OP}: n_labelled must be an int, got {type(n_labelled).__name__}")
    n_classes = _check_shapes(h, weight, bias, x, n_labelled)
    d = weight.shape[0]
    if logvar.shape != (d,):
        raise ValueError(f"{OP}: logvar must be (D,) = ({d},), got {tuple(logvar.shape)}")
    validation.check_values(OP, (validation.finite, "x", x), (validation.finite, "logvar", logvar))
    return n_classes


# 3. The custom ops' schemas (from the kernel modules' annotations) and fakes; h is always (M, H) rows:
#    forward(h, weight, bias?, logvar, x, n_labelled, n_classes, store_s, precision)
#        -> (ll (M,) in `glue.reduction_dtype`, s = exp(-logvar) (x - mu) (M, D) when store_s, else (0,))
#    backward(grad_ll, h, weight, bias?, logvar, x, s, n_labelled, n_classes, precision,
#             need_h, need_weight, need_bias, need_logvar, need_x) -> (dh, dW, db, dlogvar, dx), each (0,)
#        when not needed; an s that is not (M, D) is recomputed.
def _forward_fake(h, weight, bias, logvar, x, n_labelled, n_classes, store_s, precision, kernels):
    return (h.new_empty((h.shape[0],), dtype=reduction_dtype(kernels, h.dtype)),
            h.new_empty((h.shape[0], weight.shape[0]) if store_s else (0,)))


def _backward_fake(grad_ll, h, weight, bias, logvar, x, s, n_labelled, n_classes, precision, need_h, need_weight,
                   need_bias, need_logvar, need_x):
    D = weight.shape[0]
    return (
        h.new_empty(h.shape if need_h else (0,)),
        h.new_empty((D, h.shape[1]) if need_weight else (0,)),
        h.new_empty((D,) if need_bias and bias is not None else (0,)),
        h.new_empty((D,) if need_logvar else (0,)),
        h.new_empty((x.shape[0], D) if need_x else (0,)),
    )


# 4. The autograd formula every compiled backend shares. As for the Bernoulli op, a backend whose kernels can
#    overwrite s (`backward_in_place`) gets it in eager mode, once; a second backward recomputes it.
def _setup_context(ctx, inputs, output, kernels) -> None:
    h, weight, bias, logvar, x, n_labelled, n_classes, store_s, precision = inputs
    _, s = output
    ctx.layout = (n_labelled, n_classes, precision)
    ctx.s_used = False
    ctx.save_for_backward(h, weight, bias, logvar, x, s)
    ctx.mark_non_differentiable(s)
    ctx.set_materialize_grads(False)


def _vjp(ctx, backward, grad_ll, grad_s):
    needs = ctx.needs_input_grad
    if grad_ll is None or not any(needs[:5]):
        return (None,) * 9
    h, weight, bias, logvar, x, s = ctx.saved_tensors
    has_bias = bias is not None
    in_place = getattr(backward, "in_place", None)  # eager mode: a backend's kernels may use s up, once
    if ctx.s_used:
        s = s.new_empty((0,))
    elif in_place is not None and s.numel() == h.shape[0] * weight.shape[0] and s.numel():
        backward, ctx.s_used = in_place, True
    grads = backward(grad_ll, h, weight, bias, logvar, x, s, *ctx.layout, needs[0], needs[1], has_bias and needs[2],
                     needs[3], needs[4])
    wanted = (needs[0], needs[1], has_bias and needs[2], needs[3], needs[4])
    return tuple(grad if need else None for grad, need in zip(grads, wanted)) + (None,) * 4


# 5. Implementations by backend: `torch` is the face above; each other backend's kernels are in
#    ssvae_fast/<backend>/gaussian_loglik_linear.py, with `resolve_precision(None | str)` for their GEMM.
IMPLEMENTATIONS = Implementations(OP, ("cpu", "cuda", "triton"), _forward_fake, _backward_fake, _setup_context, _vjp)


def gaussian_loglik_linear(
    h: Tensor, weight: Tensor, bias: Optional[Tensor], logvar: Tensor, x: Tensor, n_labelled: int = 0, *,
    backend: str = "torch", precision: Optional[str] = None,
) -> Tensor:
    """ll = -0.5 sum_d [exp(-v_d) (x_d - mu_d)^2 + v_d + log 2 pi] for every row of h, mu = W h + b, v =
    logvar, by `backend`'s kernels.

    3-D form: h (N, C, H), x (N, D) shared by the C rows of example n -> ll (N, C) (n_labelled must be 0).
    2-D form: h (M, H) rows, M = n_l + (N - n_l) * C with n_l = n_labelled: row i < n_l scores x[i], row
    n_l + j * C + c scores x[n_l + j] -> ll (M,). weight (D, H); bias (D,) or None; logvar (D,). x and logvar
    must be finite (checked unless `ssvae_fast.set_validation(False)`). Differentiable in h, weight, bias,
    logvar and x; deterministic. When a gradient is needed the forward keeps s = exp(-logvar) (x - mu),
    (M, D), for the backward, unless the backend's recompute setting (the Bernoulli op's) is on: then the
    backward recomputes it. precision: the in-kernel GEMM's, as for `bernoulli_loglik_linear`. ll in h's
    dtype (float32 for 16-bit inputs under torch.autocast on the `torch` and `cpu` backends), as for
    `bernoulli_loglik_linear`, whose autocast casting (all five inputs) this op shares.
    """
    if backend == "torch":
        return gaussian_loglik_linear_torch(h, weight, bias, logvar, x, n_labelled)
    n_classes = check_inputs(h, weight, bias, logvar, x, n_labelled)
    h, weight, bias, logvar, x = cast_for_backend(backend, (h, weight, bias, logvar, x), matmul=True)
    check_tensors(f"{OP}_{backend}", backend, {"h": h, "weight": weight, "bias": bias, "logvar": logvar, "x": x})
    kernels = IMPLEMENTATIONS.module(backend)
    precision = kernels.resolve_precision(precision)
    tensors = (h, weight, bias, logvar, x)
    store_s = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors) and kernels.keeps_s()
    op = IMPLEMENTATIONS[backend]
    if h.dim() == 3:  # every class of every example: the 2-D form with n_l = 0
        N, _, H = h.shape
        ll, _ = op(h.reshape(N * n_classes, H), weight, bias, logvar, x, 0, n_classes, store_s, precision)
        return reduction_result(ll.view(N, n_classes), h.dtype)
    ll, _ = op(h, weight, bias, logvar, x, n_labelled, n_classes, store_s, precision)
    return reduction_result(ll, h.dtype)


gaussian_loglik_linear_cpu, gaussian_loglik_linear_cuda, gaussian_loglik_linear_triton = (
    bind_backend(gaussian_loglik_linear, name) for name in IMPLEMENTATIONS.backends
)
