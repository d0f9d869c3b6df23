"""The classifier-weighted ELBO reduction of M2 (docs/design.md section 1).

Inputs are the per-(example, class) terms; output the per-example losses, labelled first:

    L            = -ll + kl + log C
    labelled     l_lab = L[y] - alpha * log_softmax(logits_y)[y]
    unlabelled   l_unl = sum_c q_c * (L_c + log q_c),  q = softmax(logits_y)

VJP (g = dLoss/dl per example): labelled rows: d ll = -g, d kl = g, d logits = -alpha g (onehot(y) - q);
unlabelled rows, with t_c = L_c + log q_c and m = sum_c q_c t_c: d ll_c = -g q_c, d kl_c = g q_c,
d logits_c = g q_c (t_c - m) (the log q_c inside t contributes sum_c q_c d log q_c = 0).

Faces, top to bottom: the plain-torch op (the `torch` backend), the input checks, the custom ops' fakes,
the autograd formula every compiled backend shares, the table of implementations by backend, and the
public entry point `elbo_reduction(..., backend=...)`.
"""

# No `from __future__ import annotations`: torch.library.custom_op infers each op's schema from the
# implementations' real annotations.
import torch
from torch import Tensor

from .. import validation
from .._launch import compute_dtype
from ..functional import log_n_classes
from .glue import (Implementations, bind_backend, cast_for_backend, check_tensors, check_types, reduction_dtype,
                   reduction_result)

OP = "elbo_reduction"


# 1. The plain-torch face.
def elbo_reduction_torch(logits_y, y_l, ll_l, kl_l, ll_u, kl_u, alpha: float) -> Tensor:
    """logits_y: (n_l + n_u, C), labelled rows first; y_l: (n_l,) int64; ll_l, kl_l: (n_l,);
    ll_u, kl_u: (n_u, C); alpha: weight of -log q(y|x) -> per-example losses (n_l + n_u,)."""
    alpha = check_inputs(logits_y, y_l, ll_l, kl_l, ll_u, kl_u, alpha)
    check_tensors(f"{OP}_torch", "torch", _floats(logits_y, ll_l, kl_l, ll_u, kl_u), {"y_l": y_l})
    n_l = y_l.shape[0]
    # In float32 for 16-bit inputs (float64 when any input is float64); the losses in the inputs' promoted
    # dtype, or in that float32 under torch.autocast, where reductions stay in float32 as torch's own do.
    dtype = logits_y.dtype
    for t in (ll_l, kl_l, ll_u, kl_u):
        dtype = torch.promote_types(dtype, t.dtype)
    acc = compute_dtype(dtype)
    logits_y, ll_l, kl_l, ll_u, kl_u = (t.to(acc) for t in (logits_y, ll_l, kl_l, ll_u, kl_u))
    log_c = log_n_classes(logits_y.shape[1])
    log_q = torch.log_softmax(logits_y, dim=-1)
    log_q_y = log_q[:n_l].gather(1, y_l.unsqueeze(1)).squeeze(1)
    loss_l = kl_l - ll_l + log_c - alpha * log_q_y
    log_q_u = log_q[n_l:]
    loss_u = (log_q_u.exp() * (kl_u - ll_u + log_c + log_q_u)).sum(-1)
    loss = torch.cat([loss_l, loss_u])
    return reduction_result(loss, dtype)


# 2. Input checks: types, shapes, alpha, and (when value checks are on, `ssvae_fast.set_validation`) the
#    labels' range; each backend's devices and dtypes are checked by `glue.check_tensors`.
def check_inputs(logits_y, y_l, ll_l, kl_l, ll_u, kl_u, alpha) -> float:
    """Returns alpha as a float."""
    check_types(OP, _floats(logits_y, ll_l, kl_l, ll_u, kl_u), {"y_l": y_l})
    if logits_y.dim() != 2:
        raise ValueError(f"{OP}: logits_y must be (n_l + n_u, C), got shape {tuple(logits_y.shape)}")
    if y_l.dim() != 1:
        raise ValueError(f"{OP}: y_l must be (n_l,) class indices, got shape {tuple(y_l.shape)}")
    n_l = y_l.shape[0]
    n_u = ll_u.shape[0] if ll_u.dim() else 0
    n, c = logits_y.shape
    if n != n_l + n_u:
        raise ValueError(f"{OP}: logits_y must have n_l + n_u = {n_l} + {n_u} rows (y_l, ll_u), got {n} rows")
    if ll_l.shape != (n_l,) or kl_l.shape != (n_l,):
        raise ValueError(f"{OP}: ll_l and kl_l must be ({n_l},), got {tuple(ll_l.shape)}, {tuple(kl_l.shape)}")
    if ll_u.shape != (n_u, c) or kl_u.shape != (n_u, c):
        raise ValueError(f"{OP}: ll_u and kl_u must be {(n_u, c)}, got {tuple(ll_u.shape)}, {tuple(kl_u.shape)}")
    alpha = validation.alpha(OP, alpha)
    validation.check_values(OP, (validation.class_indices, "y_l", y_l, c))
    return alpha


def _floats(logits_y, ll_l, kl_l, ll_u, kl_u) -> dict:
    return {"logits_y": logits_y, "ll_l": ll_l, "kl_l": kl_l, "ll_u": ll_u, "kl_u": kl_u}


# 3. The custom ops' schemas (from the implementations' annotations) and fakes:
#    forward(logits_y, y_l, ll_l, kl_l, ll_u, kl_u, alpha) -> loss (n_l + n_u,) in `glue.reduction_dtype`
#    backward(grad, logits_y, y_l, ll_u, kl_u, alpha) -> (d logits_y, d ll_l, d kl_l, d ll_u, d kl_u)
def _forward_fake(logits_y, y_l, ll_l, kl_l, ll_u, kl_u, alpha, kernels):
    return logits_y.new_empty((logits_y.shape[0],), dtype=reduction_dtype(kernels, logits_y.dtype))


def _backward_fake(grad, logits_y, y_l, ll_u, kl_u, alpha):
    n_l = y_l.shape[0]
    return (
        logits_y.new_empty(logits_y.shape),
        logits_y.new_empty((n_l,)),
        logits_y.new_empty((n_l,)),
        logits_y.new_empty(ll_u.shape),
        logits_y.new_empty(kl_u.shape),
    )


# 4. The autograd formula.
def _setup_context(ctx, inputs, output, kernels) -> None:
    logits_y, y_l, ll_l, kl_l, ll_u, kl_u, alpha = inputs
    ctx.save_for_backward(logits_y, y_l, ll_u, kl_u)
    ctx.alpha = alpha


def _vjp(ctx, backward, grad):
    logits_y, y_l, ll_u, kl_u = ctx.saved_tensors
    dlogits, dll_l, dkl_l, dll_u, dkl_u = backward(grad, logits_y, y_l, ll_u, kl_u, ctx.alpha)
    needs = ctx.needs_input_grad
    return (
        dlogits if needs[0] else None,
        None,
        dll_l if needs[2] else None,
        dkl_l if needs[3] else None,
        dll_u if needs[4] else None,
        dkl_u if needs[5] else None,
        None,
    )


# 5. Implementations by backend: `torch` is the face above; each other backend's kernels are in
#    ssvae_fast/<backend>/<OP>.py.
IMPLEMENTATIONS = Implementations(OP, ("cpu", "cuda", "triton"), _forward_fake, _backward_fake, _setup_context, _vjp)


def elbo_reduction(logits_y, y_l, ll_l, kl_l, ll_u, kl_u, alpha: float, *, backend: str = "torch") -> Tensor:
    """Per-example M2 losses (n_l + n_u,), labelled first, by one kernel of `backend` (and one backward).

    logits_y: (n_l + n_u, C), labelled rows first; y_l: (n_l,) int64 in [0, C) (checked unless
    `ssvae_fast.set_validation(False)`, always by the cpu kernels; on a GPU without the check a label
    outside gives NaN); ll_l, kl_l: (n_l,); ll_u, kl_u: (n_u, C); alpha: weight of -log q(y|x), finite
    and >= 0. Stable log-softmax; in double on the CPU, fp32 (fp64 for fp64 inputs) on a GPU. The losses in
    the inputs' (promoted) dtype, except under torch.autocast, where the cpu backend's losses of 16-bit
    inputs are float32 (as the torch face's; the GPU backends round them to the inputs' dtype).
    Differentiable in logits_y, ll_*, kl_*.
    """
    if backend == "torch":
        return elbo_reduction_torch(logits_y, y_l, ll_l, kl_l, ll_u, kl_u, alpha)
    alpha = check_inputs(logits_y, y_l, ll_l, kl_l, ll_u, kl_u, alpha)
    logits_y, ll_l, kl_l, ll_u, kl_u = cast_for_backend(backend, (logits_y, ll_l, kl_l, ll_u, kl_u), matmul=False)
    name = f"{OP}_{backend}"
    check_tensors(name, backend, _floats(logits_y, ll_l, kl_l, ll_u, kl_u), {"y_l": y_l})
    kernels, n_classes = IMPLEMENTATIONS.module(backend), logits_y.shape[1]
    low, high = getattr(kernels, "MIN_CLASSES", 0), getattr(kernels, "MAX_CLASSES", n_classes)
    if not low <= n_classes <= high:
        raise ValueError(f"{name}: logits_y must have {low} to {high} classes, got {n_classes}")
    loss = IMPLEMENTATIONS[backend](logits_y, y_l, ll_l, kl_l, ll_u, kl_u, float(alpha))
    return reduction_result(loss, logits_y.dtype)


elbo_reduction_cpu, elbo_reduction_cuda, elbo_reduction_triton = (
    bind_backend(elbo_reduction, name) for name in IMPLEMENTATIONS.backends
)
