"""Fused decoder output layer + Bernoulli log-likelihood with x shared by the C class rows.

    ll[n, c] = sum_d x[n, d] * l[n, c, d] - softplus(l[n, c, d]),   l[n, c] = W h[n, c] + b

Since sum_d x_d l_d = h . (W^T x) + b . x, the linear part needs one (N, D) x (D, H) product per
example instead of a reduction over the (N, C, D) logits; only softplus needs every logit. This file
holds the plain-torch op; the fused backends provide the same signature and never write the logits to
memory.

Backward (g = dLoss/dll, (N, C); sig = sigmoid(l); dl = g * (x - sig), folded in before any reduction
over rows):

    dh[n, c] = g[n, c] * (W^T x[n] - W^T sig[n, c])      = g * (x_w - sig @ W)
    dW       = sum_{n,c} dl[n, c] h[n, c]^T              = x^T (sum_c g h) - sig^T (g h)
    db       = sum_{n,c} dl[n, c]                        = x^T (sum_c g) - sig^T g
    dx[n]    = sum_c g[n, c] l[n, c]                     = W (sum_c g h)[n] + b sum_c g[n]

so the torch op keeps only sig (written over the logits' buffer) between forward and backward, and
its backward is two large GEMMs over sig instead of autograd's elementwise chain over the logits. The
compiled backends keep s = x - sigmoid(l) instead (the GPU kernels write it in the GEMM's epilogue; the
logits never reach memory), or nothing, recomputing the logits in the backward where a backend's setting
asks for it.

Two forms, one computation: h (N, C, H), every example with C rows; or h (M, H) rows with n_labelled
examples first, one row each (their label's), then C rows per remaining example, M = n_l + (N - n_l) C:
the layout `class_conditional_activation` produces when given the labels, so that M2's labelled and
unlabelled examples go through the decoder as one batch. In every formula above, "the C rows of
example n" then reads "the rows of example n".

Faces, top to bottom: the plain-torch op (the `torch` backend), the input checks, the custom ops' fakes,
the autograd formula every compiled backend shares, the table of implementations by backend, and the
public entry point `bernoulli_loglik_linear(h, weight, bias, x, n_labelled, backend=...)`.
"""

# No `from __future__ import annotations`: torch.library.custom_op infers each op's schema from the
# implementations' real annotations.
import numbers
from typing import Optional

import torch
from torch import Tensor

from .. import validation
from .._launch import compute_dtype
from ..functional import softplus
from ..rows import per_example_sum
from .glue import (Implementations, bind_backend, cast_for_backend, check_tensors, check_types, reduction_dtype,
                   reduction_result)

OP = "bernoulli_loglik_linear"


# 1. The plain-torch face.
def _rows_dot(h, v, n_l: int, n_classes: int, acc: torch.dtype):
    """(M,) h[m] . v[example of m] summed in `acc`, without repeating v per row (h (M, K), v (N, K))."""
    rest = h[n_l:]
    dots = (rest.view(v.shape[0] - n_l, n_classes, h.shape[1]) * v[n_l:].unsqueeze(1)).sum(-1, dtype=acc).flatten()
    return torch.cat([(h[:n_l] * v[:n_l]).sum(-1, dtype=acc), dots]) if n_l else dots


class _BernoulliLoglikLinear(torch.autograd.Function):
    """The 2-D form: h (M, H) rows, x (N, D), n_l labelled rows first, then C rows per example."""

    @staticmethod
    def forward(ctx, h, weight, bias, x, n_l, n_classes):
        logits = torch.addmm(bias, h, weight.t()) if bias is not None else h @ weight.t()  # (M, D)
        x_w = x @ weight  # (N, H): W^T x once per example, shared by its rows
        # Row sums in float32 for 16-bit logits (float64 for float64); the result in h's dtype, or in that
        # float32 under torch.autocast, where reductions stay in float32 as torch's own do.
        acc = compute_dtype(logits.dtype)
        x_logits = _rows_dot(h, x_w, n_l, n_classes, acc)
        if bias is not None:
            xb = (x @ bias).to(acc)  # (N,)
            x_logits = x_logits + torch.cat([xb[:n_l], xb[n_l:].repeat_interleave(n_classes)])
        ll = x_logits - softplus(logits).sum(-1, dtype=acc)
        ll = reduction_result(ll, h.dtype)
        sig = logits.sigmoid_()  # the logits are not needed again: keep sigmoid(l) in their place
        ctx.save_for_backward(h, weight, bias, x, x_w, sig)
        ctx.layout = (n_l, n_classes)
        return ll

    @staticmethod
    def backward(ctx, g):
        h_in, weight_in, bias_in, x_in, x_w, sig = ctx.saved_tensors
        n_l, n_classes = ctx.layout
        # Under autocast the forward's products ran in a lower precision than the parameters: do the
        # backward in the promoted dtype and return each gradient in its input's dtype.
        dt = torch.promote_types(sig.dtype, weight_in.dtype)
        h, weight, x, x_w, sig = (t.to(dt) for t in (h_in, weight_in, x_in, x_w, sig))
        bias = bias_in.to(dt) if bias_in is not None else None
        need_h, need_w, need_b, need_x = ctx.needs_input_grad[:4]
        g = g.to(dt).contiguous()
        dh = dw = db = dx = None
        if need_h:  # g * (W^T x[example] - W^T sig)
            dh = -(sig @ weight)
            dh[:n_l] += x_w[:n_l]
            if dh.shape[0] > n_l:
                dh[n_l:].view(-1, n_classes, dh.shape[1]).add_(x_w[n_l:].unsqueeze(1))
            dh.mul_(g[:, None])
        n = x.shape[0]
        g_sum = per_example_sum(g, n_l, n_classes, n)  # (N,)
        gh = g[:, None] * h  # (M, H)
        gh_sum = per_example_sum(gh, n_l, n_classes, n)  # (N, H)
        if need_w:
            dw = x.t() @ gh_sum - sig.t() @ gh
        if need_b:
            db = x.t() @ g_sum - sig.t() @ g
        if need_x:
            dx = gh_sum @ weight.t()
            if bias is not None:
                dx = dx + g_sum.unsqueeze(1) * bias
        cast = lambda grad, like: None if grad is None else grad.to(like.dtype)  # noqa: E731
        db = cast(db, bias_in) if bias_in is not None else None
        return cast(dh, h_in), cast(dw, weight_in), db, cast(dx, x_in), None, None


def bernoulli_loglik_linear_torch(
    h: torch.Tensor, weight: torch.Tensor, bias, x: torch.Tensor, n_labelled: int = 0
) -> torch.Tensor:
    """ll = sum_d x_d l_d - softplus(l_d) for every row of h, l = W h + b.

    3-D form: h (N, C, H), x (N, D) shared by the C rows of each example -> ll (N, C).
    2-D form: h (M, H) rows, M = n_l + (N - n_l) * C: row i < n_l scores x[i], row n_l + j * C + c
    scores x[n_l + j] (the layout of `class_conditional_activation` with n_l classes given) -> ll (M,).
    weight: (D, H), bias: (D,) or None. Row sums in float32 for 16-bit inputs; ll in h's dtype, or float32
    under torch.autocast.
    """
    n_classes = check_inputs(h, weight, bias, x, n_labelled)
    check_tensors(f"{OP}_torch", "torch", {"h": h, "weight": weight, "bias": bias, "x": x})
    if h.dim() == 3:
        n = h.shape[0]
        rows = h.reshape(n * n_classes, h.shape[2])
        return _BernoulliLoglikLinear.apply(rows, weight, bias, x, 0, n_classes).view(n, n_classes)
    return _BernoulliLoglikLinear.apply(h, weight, bias, x, n_labelled, n_classes)


# 2. Input checks: types, shapes and (when value checks are on) x's values; each backend's devices and
#    dtypes are checked by `glue.check_tensors`.
def check_inputs(h, weight, bias, x, n_labelled: int = 0) -> int:
    """Checks the types, the shapes and (when value checks are on, `ssvae_fast.set_validation`) that x is
    finite and in [0, 1]; returns C, the rows per unlabelled example (h's second dim for the 3-D form)."""
    check_types(OP, {"h": h, "weight": weight, "bias": bias, "x": x})
    if isinstance(n_labelled, bool) or not isinstance(n_labelled, (numbers.Integral, torch.SymInt)):
        raise TypeError(f"{OP}: n_labelled must be an int, got {type(n_labelled).__name__}")
    n_classes = _check_shapes(h, weight, bias, x, n_labelled)
    if x.is_floating_point():
        validation.check_values(OP, (validation.unit_interval, "x", x))
    return n_classes


def _check_shapes(h, weight, bias, x, n_labelled: int) -> int:
    if h.dim() not in (2, 3):
        raise ValueError(f"{OP}: h must be (N, C, H) or (M, H) rows, got shape {tuple(h.shape)}")
    hidden = h.shape[-1]
    if weight.dim() != 2 or weight.shape[1] != hidden:
        raise ValueError(f"{OP}: weight must be (D, H) with H = {hidden}, got {tuple(weight.shape)}")
    d = weight.shape[0]
    if bias is not None and bias.shape != (d,):
        raise ValueError(f"{OP}: bias must be (D,) = ({d},), got {tuple(bias.shape)}")
    if x.dim() != 2 or x.shape[1] != d:
        raise ValueError(f"{OP}: x must be (N, D) with D = {d}, got {tuple(x.shape)}")
    n = x.shape[0]
    if h.dim() == 3:
        if h.shape[0] != n:
            raise ValueError(f"{OP}: x must be (N, D) = {(h.shape[0], d)} for h {tuple(h.shape)}, got {tuple(x.shape)}")
        if n_labelled != 0:
            raise ValueError(f"{OP}: n_labelled applies to the 2-D (M, H) form of h only")
        return h.shape[1]
    if not 0 <= n_labelled <= n:
        raise ValueError(f"{OP}: n_labelled must be in [0, N = {n}], got {n_labelled}")
    rest_rows, rest_examples = h.shape[0] - n_labelled, n - n_labelled
    if rest_examples == 0:
        if rest_rows != 0:
            raise ValueError(f"{OP}: h has {h.shape[0]} rows; with n_labelled = N = {n} it must have N")
        return 1
    if rest_rows < 0 or rest_rows % rest_examples:
        raise ValueError(
            f"{OP}: h has {h.shape[0]} rows; it must have n_labelled + (N - n_labelled) * C = "
            f"{n_labelled} + {rest_examples} * C for x (N, D) = {tuple(x.shape)}"
        )
    return rest_rows // rest_examples


# 3. The custom ops' schemas (from the implementations' annotations) and fakes; h is always (M, H) rows:
#    forward(h, weight, bias?, x, n_labelled, n_classes, store_s, precision)
#        -> (ll (M,) in `glue.reduction_dtype`, s = x - sigmoid(l) (M, D) when store_s, else (0,))
#    backward(grad_ll, h, weight, bias?, x, s, n_labelled, n_classes, precision,
#             need_h, need_weight, need_bias, need_x) -> (dh, dW, db, dx), each (0,) when not needed;
#        an s that is not (M, D) is recomputed.
def _forward_fake(h, weight, bias, x, n_labelled, n_classes, store_s, precision, kernels):
    return (h.new_empty((h.shape[0],), dtype=reduction_dtype(kernels, h.dtype)),
            h.new_empty((h.shape[0], weight.shape[0]) if store_s else (0,)))


def _backward_fake(grad_ll, h, weight, bias, x, s, n_labelled, n_classes, precision, need_h, need_weight,
                   need_bias, need_x):
    D = weight.shape[0]
    return (
        h.new_empty(h.shape if need_h else (0,)),
        h.new_empty((D, h.shape[1]) if need_weight else (0,)),
        h.new_empty((D,) if need_bias and bias is not None else (0,)),
        h.new_empty((x.shape[0], D) if need_x else (0,)),
    )


# 4. The autograd formula. s is the backward's only use of the forward's (M, D) work: a backend whose
# kernels can overwrite it in place (`backward_in_place`) gets it in eager mode, once; a second backward
# through the same graph (retain_graph) then recomputes it.
def _setup_context(ctx, inputs, output, kernels) -> None:
    h, weight, bias, x, n_labelled, n_classes, store_s, precision = inputs
    _, s = output
    ctx.layout = (n_labelled, n_classes, precision)
    ctx.s_used = False
    ctx.save_for_backward(h, weight, bias, x, s)
    ctx.mark_non_differentiable(s)
    ctx.set_materialize_grads(False)


def _vjp(ctx, backward, grad_ll, grad_s):
    needs = ctx.needs_input_grad
    if grad_ll is None or not any(needs[:4]):
        return (None,) * 8
    h, weight, bias, x, s = ctx.saved_tensors
    in_place = getattr(backward, "in_place", None)
    if ctx.s_used:
        s = s.new_empty((0,))
    elif in_place is not None and s.numel() == h.shape[0] * weight.shape[0] and s.numel():
        backward, ctx.s_used = in_place, True
    dh, dweight, dbias, dx = backward(
        grad_ll, h, weight, bias, x, s, *ctx.layout, needs[0], needs[1], bias is not None and needs[2], needs[3]
    )
    return (
        dh if needs[0] else None,
        dweight if needs[1] else None,
        dbias if bias is not None and needs[2] else None,
        dx if needs[3] else None,
    ) + (None,) * 4


# 5. Implementations by backend: `torch` is the face above; each other backend's kernels are in
#    ssvae_fast/<backend>/<OP>.py. Each kernel module also says whether its
# forward keeps s (`keeps_s()`: False under its recompute setting) and which GEMM precision it runs
# (`resolve_precision(None | str)`).
IMPLEMENTATIONS = Implementations(OP, ("cpu", "cuda", "triton"), _forward_fake, _backward_fake, _setup_context, _vjp)


def bernoulli_loglik_linear(
    h: Tensor, weight: Tensor, bias: Optional[Tensor], x: Tensor, n_labelled: int = 0, *, backend: str = "torch",
    precision: Optional[str] = None,
) -> Tensor:
    """ll = sum_d x_d l_d - softplus(l_d) for every row of h, l = W h + b, by `backend`'s kernels.

    3-D form: h (N, C, H), x (N, D) shared by the C rows of example n -> ll (N, C) (n_labelled must be 0).
    2-D form: h (M, H) rows, M = n_l + (N - n_l) * C with n_l = n_labelled: row i < n_l scores x[i], row
    n_l + j * C + c scores x[n_l + j] (the layout of `class_conditional_activation` given n_l classes)
    -> ll (M,). weight: (D, H); bias: (D,) or None. Returns h's dtype (the `torch` and `cpu` backends: float32
    for 16-bit inputs under torch.autocast, which casts h, weight, bias and x to its dtype as for a linear
    layer); accumulates in fp32 (fp64 for fp64 inputs; row sums in double on the CPU). x must be
    finite and in [0, 1] (checked unless `ssvae_fast.set_validation(False)`). precision: the in-kernel
    GEMM's ("tf32" or "ieee" on cuda, "ieee", "tf32" or "tf32x3" on triton; None: the backend's setting;
    float64 is always exact).
    Differentiable in h, weight, bias and x; deterministic. When a gradient is needed the forward keeps
    s = x - sigmoid(l), (M, D), for the backward, unless the backend's recompute setting is on.
    """
    if backend == "torch":
        return bernoulli_loglik_linear_torch(h, weight, bias, x, n_labelled)
    n_classes = check_inputs(h, weight, bias, x, n_labelled)
    h, weight, bias, x = cast_for_backend(backend, (h, weight, bias, x), matmul=True)
    check_tensors(f"{OP}_{backend}", backend, {"h": h, "weight": weight, "bias": bias, "x": x})
    kernels = IMPLEMENTATIONS.module(backend)
    precision = kernels.resolve_precision(precision)
    needs_grad = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (h, weight, bias, x))
    store_s = needs_grad and kernels.keeps_s()
    op = IMPLEMENTATIONS[backend]
    if h.dim() == 3:  # every class of every example: the 2-D form with n_l = 0
        N, _, H = h.shape
        rows = h.reshape(N * n_classes, H)  # a view when the strides allow it
        ll, _ = op(rows, weight, bias, x, 0, n_classes, store_s, precision)
        return reduction_result(ll.view(N, n_classes), h.dtype)
    ll, _ = op(h, weight, bias, x, n_labelled, n_classes, store_s, precision)
    return reduction_result(ll, h.dtype)


bernoulli_loglik_linear_cpu, bernoulli_loglik_linear_cuda, bernoulli_loglik_linear_triton = (
    bind_backend(bernoulli_loglik_linear, name) for name in IMPLEMENTATIONS.backends
)
