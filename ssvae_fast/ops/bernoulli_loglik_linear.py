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
"""

from __future__ import annotations

import torch

from ..functional import softplus


def bernoulli_linear_vjp_from_s(s, grad_ll, h, weight, bias):
    """(dh (N, C, H), dW (D, H), db (D,) or empty without bias, dx (N, D)) as torch GEMMs, from
    s = x - sigmoid(l) (N*C, D) kept by a fused forward: dl = g * s is never formed (the row factor g goes
    through the (M, H) side), and dx uses l's linearity in h. The backward of the GPU backends' ops."""
    N, C, H = h.shape
    M = N * C
    h_rows = h.reshape(M, H)
    g = grad_ll.reshape(M)
    dh = (s @ weight) * g[:, None]  # dl W
    dweight = s.t() @ (h_rows * g[:, None])  # dl^T h
    dbias = s.t() @ g if bias is not None else h.new_empty((0,))  # sum_m dl[m]
    return dh.reshape(N, C, H), dweight, dbias, bernoulli_linear_dx(grad_ll, h, weight, bias)


def bernoulli_linear_dx(grad_ll, h, weight, bias):
    """dx[n] = sum_c g[n, c] l[n, c] = W (sum_c g[n, c] h[n, c]) + b sum_c g[n, c], (N, D)."""
    dx = torch.bmm(grad_ll.unsqueeze(1), h).squeeze(1) @ weight.t()
    if bias is not None:
        dx = dx + grad_ll.sum(1)[:, None] * bias
    return dx


def check_bernoulli_linear_inputs(h, weight, bias, x):
    if h.dim() != 3:
        raise ValueError(f"h must be (N, C, H), got shape {tuple(h.shape)}")
    n, _, hidden = h.shape
    if weight.dim() != 2 or weight.shape[1] != hidden:
        raise ValueError(f"weight must be (D, H) with H = {hidden}, got {tuple(weight.shape)}")
    d = weight.shape[0]
    if bias is not None and bias.shape != (d,):
        raise ValueError(f"bias must be (D,) = ({d},), got {tuple(bias.shape)}")
    if x.shape != (n, d):
        raise ValueError(f"x must be (N, D) = {(n, d)}, got {tuple(x.shape)}")


class _BernoulliLoglikLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h, weight, bias, x):
        n, c, hidden = h.shape
        h2 = h.reshape(n * c, hidden)
        logits = torch.addmm(bias, h2, weight.t()) if bias is not None else h2 @ weight.t()  # (N*C, D)
        x_w = x @ weight  # (N, H): W^T x once per example, shared by its C rows
        x_logits = (h * x_w.unsqueeze(1)).sum(-1)
        if bias is not None:
            x_logits = x_logits + (x @ bias).unsqueeze(1)
        ll = x_logits - softplus(logits).sum(-1).view(n, c)
        sig = logits.sigmoid_()  # the logits are not needed again: keep sigmoid(l) in their place
        ctx.save_for_backward(h, weight, bias, x, x_w, sig)
        return ll

    @staticmethod
    def backward(ctx, g):
        h_in, weight_in, bias_in, x_in, x_w, sig = ctx.saved_tensors
        # Under autocast the forward's products ran in a lower precision than the parameters: do the
        # backward in the promoted dtype and return each gradient in its input's dtype.
        dt = torch.promote_types(sig.dtype, weight_in.dtype)
        h, weight, x, x_w, sig = (t.to(dt) for t in (h_in, weight_in, x_in, x_w, sig))
        bias = bias_in.to(dt) if bias_in is not None else None
        n, c, hidden = h.shape
        need_h, need_w, need_b, need_x = ctx.needs_input_grad
        g = g.to(dt).contiguous()
        dh = dw = db = dx = None
        if need_h:
            dh = g.unsqueeze(-1) * (x_w.unsqueeze(1) - (sig @ weight).view(n, c, hidden))
        g_sum = g.sum(1)  # (N,)
        gh_sum = (g.unsqueeze(-1) * h).sum(1)  # (N, H): sum_c g h
        if need_w or need_b:
            gh = (g.unsqueeze(-1) * h).reshape(n * c, hidden)
            if need_w:
                dw = x.t() @ gh_sum - sig.t() @ gh
            if need_b:
                db = x.t() @ g_sum - sig.t() @ g.reshape(n * c)
        if need_x:
            dx = gh_sum @ weight.t()
            if bias is not None:
                dx = dx + g_sum.unsqueeze(1) * bias
        cast = lambda grad, like: None if grad is None else grad.to(like.dtype)  # noqa: E731
        return cast(dh, h_in), cast(dw, weight_in), cast(db, bias_in) if bias_in is not None else None, cast(dx, x_in)


def bernoulli_loglik_linear_torch(h: torch.Tensor, weight: torch.Tensor, bias, x: torch.Tensor) -> torch.Tensor:
    """h: (N, C, H), weight: (D, H), bias: (D,) or None, x: (N, D) -> ll (N, C)."""
    check_bernoulli_linear_inputs(h, weight, bias, x)
    return _BernoulliLoglikLinear.apply(h, weight, bias, x)
