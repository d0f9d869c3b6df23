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
its backward is two large GEMMs over sig instead of autograd's elementwise chain over the logits.

Two forms, one computation: h (N, C, H), every example with C rows; or h (M, H) rows with n_labelled
examples first, one row each (their label's), then C rows per remaining example, M = n_l + (N - n_l) C:
the layout `class_conditional_activation` produces when given the labels, so that M2's labelled and
unlabelled examples go through the decoder as one batch. In every formula above, "the C rows of
example n" then reads "the rows of example n".
"""

from __future__ import annotations

import torch

from ..functional import softplus


def _n_rest(rows: int, n_labelled: int, n_classes: int, n_examples) -> int:
    """Examples after the labelled prefix: N - n_l when N is given, else inferred from the rows."""
    if n_examples is not None:
        return n_examples - n_labelled
    return (rows - n_labelled) // n_classes if n_classes else 0


def per_example_sum(t: torch.Tensor, n_labelled: int, n_classes: int, n_examples=None) -> torch.Tensor:
    """(M, ...) rows in the layout of `bernoulli_loglik_linear`'s 2-D form -> (N, ...) sums over each
    example's rows: row i for i < n_l, rows n_l + j * C + c (c < C) for example n_l + j. n_examples (N)
    is needed only when C = 0 (examples without rows)."""
    n_l = n_labelled
    n_u = _n_rest(t.shape[0], n_l, n_classes, n_examples)
    summed = t[n_l:].reshape(n_u, n_classes, *t.shape[1:]).sum(1)
    return torch.cat([t[:n_l], summed]) if n_l else summed


def bernoulli_linear_vjp_from_s(s, grad_ll, h, weight, bias, n_labelled: int, n_classes: int, n_examples=None):
    """(dh (M, H), dW (D, H), db (D,) or empty without bias, dx (N, D)) as torch GEMMs, from
    s = x - sigmoid(l) (M, D) kept by a fused forward: dl = g * s is never formed (the row factor g goes
    through the (M, H) side), and dx uses l's linearity in h. h (M, H) and grad_ll (M,) are rows in the
    2-D layout of `bernoulli_loglik_linear_torch`. The backward of the GPU backends' ops."""
    g = grad_ll.reshape(-1)
    dh = (s @ weight) * g[:, None]  # dl W
    dweight = s.t() @ (h * g[:, None])  # dl^T h
    dbias = s.t() @ g if bias is not None else h.new_empty((0,))  # sum_m dl[m]
    return dh, dweight, dbias, bernoulli_linear_dx(g, h, weight, bias, n_labelled, n_classes, n_examples)


def bernoulli_linear_dx(grad_ll, h, weight, bias, n_labelled: int, n_classes: int, n_examples=None):
    """dx[n] = sum over example n's rows m of g[m] l[m] = W (sum_m g[m] h[m]) + b sum_m g[m], (N, D);
    grad_ll (M,) and h (M, H) in the 2-D layout. The weighted row sums are a batched GEMM, (N, H)."""
    g = grad_ll.reshape(-1)
    n_l = n_labelled
    n_u = _n_rest(h.shape[0], n_l, n_classes, n_examples)
    g_h = torch.bmm(g[n_l:].view(n_u, 1, n_classes), h[n_l:].view(n_u, n_classes, h.shape[1])).squeeze(1)
    if n_l:
        g_h = torch.cat([g[:n_l, None] * h[:n_l], g_h])
    dx = g_h @ weight.t()
    if bias is not None:
        dx = dx + per_example_sum(g, n_l, n_classes, n_examples)[:, None] * bias
    return dx


def check_bernoulli_linear_inputs(h, weight, bias, x, n_labelled: int = 0) -> int:
    """Checks the shapes; returns C, the rows per unlabelled example (h's second dim for the 3-D form)."""
    if h.dim() not in (2, 3):
        raise ValueError(f"h must be (N, C, H) or (M, H) rows, got shape {tuple(h.shape)}")
    hidden = h.shape[-1]
    if weight.dim() != 2 or weight.shape[1] != hidden:
        raise ValueError(f"weight must be (D, H) with H = {hidden}, got {tuple(weight.shape)}")
    d = weight.shape[0]
    if bias is not None and bias.shape != (d,):
        raise ValueError(f"bias must be (D,) = ({d},), got {tuple(bias.shape)}")
    if x.dim() != 2 or x.shape[1] != d:
        raise ValueError(f"x must be (N, D) with D = {d}, got {tuple(x.shape)}")
    n = x.shape[0]
    if h.dim() == 3:
        if h.shape[0] != n:
            raise ValueError(f"x must be (N, D) = {(h.shape[0], d)} for h {tuple(h.shape)}, got {tuple(x.shape)}")
        if n_labelled != 0:
            raise ValueError("n_labelled applies to the 2-D (M, H) form of h only")
        return h.shape[1]
    if not 0 <= n_labelled <= n:
        raise ValueError(f"n_labelled must be in [0, N = {n}], got {n_labelled}")
    rest_rows, rest_examples = h.shape[0] - n_labelled, n - n_labelled
    if rest_examples == 0:
        if rest_rows != 0:
            raise ValueError(f"h has {h.shape[0]} rows; with n_labelled = N = {n} it must have N")
        return 1
    if rest_rows < 0 or rest_rows % rest_examples:
        raise ValueError(
            f"h has {h.shape[0]} rows; it must have n_labelled + (N - n_labelled) * C = "
            f"{n_labelled} + {rest_examples} * C for x (N, D) = {tuple(x.shape)}"
        )
    return rest_rows // rest_examples


def _rows_dot(h, v, n_l: int, n_classes: int):
    """(M,) h[m] . v[example of m], without repeating v per row (h (M, K), v (N, K))."""
    rest = h[n_l:]
    dots = (rest.view(v.shape[0] - n_l, n_classes, h.shape[1]) * v[n_l:].unsqueeze(1)).sum(-1).flatten()
    return torch.cat([(h[:n_l] * v[:n_l]).sum(-1), dots]) if n_l else dots


class _BernoulliLoglikLinear(torch.autograd.Function):
    """The 2-D form: h (M, H) rows, x (N, D), n_l labelled rows first, then C rows per example."""

    @staticmethod
    def forward(ctx, h, weight, bias, x, n_l, n_classes):
        logits = torch.addmm(bias, h, weight.t()) if bias is not None else h @ weight.t()  # (M, D)
        x_w = x @ weight  # (N, H): W^T x once per example, shared by its rows
        x_logits = _rows_dot(h, x_w, n_l, n_classes)
        if bias is not None:
            xb = x @ bias  # (N,)
            x_logits = x_logits + torch.cat([xb[:n_l], xb[n_l:].repeat_interleave(n_classes)])
        ll = x_logits - softplus(logits).sum(-1)
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
    weight: (D, H), bias: (D,) or None.
    """
    n_classes = check_bernoulli_linear_inputs(h, weight, bias, x, n_labelled)
    if h.dim() == 3:
        n = h.shape[0]
        rows = h.reshape(n * n_classes, h.shape[2])
        return _BernoulliLoglikLinear.apply(rows, weight, bias, x, 0, n_classes).view(n, n_classes)
    return _BernoulliLoglikLinear.apply(h, weight, bias, x, n_labelled, n_classes)
