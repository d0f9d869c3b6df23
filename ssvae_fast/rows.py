"""M2's row layout, shared by the ops and every backend's kernels.

Labelled examples (one row each, their label's class) come first, then C rows per unlabelled example:
for N examples of which the first n_l are labelled there are M = n_l + (N - n_l) C rows, and

    row i            (i < n_l)  belongs to example i
    row n_l + j C + c           belongs to example n_l + j, class c

The every-class form (N, C, H) is the same memory as its rows with n_l = 0. Here: the class-conditional
op's output shape, per-example sums over rows, and the torch GEMMs of the Bernoulli op's backward that
the compiled backends share.
"""

from __future__ import annotations

from typing import Optional

import torch


def class_conditional_output_shape(a, w_y, classes: Optional[torch.Tensor]) -> tuple:
    """(N, C, H) for classes None; (n_l + (N - n_l) * C, H) for classes (n_l,)."""
    (n, hidden), n_classes = a.shape, w_y.shape[1]
    if classes is None:
        return (n, n_classes, hidden)
    n_l = classes.shape[0]
    return (n_l + (n - n_l) * n_classes, hidden)


def _n_rest(rows: int, n_labelled: int, n_classes: int, n_examples) -> int:
    """Examples after the labelled prefix: N - n_l when N is given, else inferred from the rows."""
    if n_examples is not None:
        return n_examples - n_labelled
    return (rows - n_labelled) // n_classes if n_classes else 0


def per_example_sum(t: torch.Tensor, n_labelled: int, n_classes: int, n_examples=None) -> torch.Tensor:
    """(M, ...) rows -> (N, ...) sums over each example's rows. n_examples (N) is needed only when C = 0
    (examples without rows)."""
    n_l = n_labelled
    n_u = _n_rest(t.shape[0], n_l, n_classes, n_examples)
    summed = t[n_l:].reshape(n_u, n_classes, *t.shape[1:]).sum(1)
    return torch.cat([t[:n_l], summed]) if n_l else summed


def bernoulli_linear_vjp_from_s(s, grad_ll, h, weight, bias, n_labelled: int, n_classes: int, n_examples=None):
    """(dh (M, H), dW (D, H), db (D,) or empty without bias, dx (N, D)) as torch GEMMs, from
    s = x - sigmoid(l) (M, D) kept by a fused forward: dl = g * s is never formed (the row factor g goes
    through the (M, H) side), and dx uses l's linearity in h. h (M, H) and grad_ll (M,) are rows."""
    g = grad_ll.reshape(-1)
    dh = (s @ weight) * g[:, None]  # dl W
    dweight = s.t() @ (h * g[:, None])  # dl^T h
    dbias = s.t() @ g if bias is not None else h.new_empty((0,))  # sum_m dl[m]
    return dh, dweight, dbias, bernoulli_linear_dx(g, h, weight, bias, n_labelled, n_classes, n_examples)


def bernoulli_linear_dx(grad_ll, h, weight, bias, n_labelled: int, n_classes: int, n_examples=None):
    """dx[n] = sum over example n's rows m of g[m] l[m] = W (sum_m g[m] h[m]) + b sum_m g[m], (N, D);
    grad_ll (M,) and h (M, H) rows. The weighted row sums are a batched GEMM, (N, H)."""
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


def gaussian_linear_vjp_from_s(s, grad_ll, h, weight, bias, logvar, n_labelled: int, n_classes: int, n_examples,
                               needs: tuple):
    """(dh (M, H), dW (D, H), db (D,), dlogvar (D,), dx (N, D)) of `gaussian_loglik_linear` as torch GEMMs,
    from s = exp(-logvar) (x - mu) (M, D) kept by a fused forward; each gradient whose entry of `needs`
    (need_h, need_weight, need_bias, need_logvar, need_x) is False is an empty tensor."""
    g = grad_ll.reshape(-1)
    empty = lambda: h.new_empty((0,))  # noqa: E731
    need_h, need_weight, need_bias, need_logvar, need_x = needs
    dh = (s @ weight) * g[:, None] if need_h else empty()
    dweight = s.t() @ (h * g[:, None]) if need_weight else empty()
    dbias = s.t() @ g if need_bias and bias is not None else empty()
    if need_logvar:  # exp(-v) (x - mu)^2 = exp(v) s^2
        dlogvar = 0.5 * torch.exp(logvar) * (s.square().t() @ g) - 0.5 * g.sum()
    else:
        dlogvar = empty()
    dx = -per_example_sum(s * g[:, None], n_labelled, n_classes, n_examples) if need_x else empty()
    return dh, dweight, dbias, dlogvar, dx
