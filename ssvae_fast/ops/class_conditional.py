"""Class-conditional first layer: act(a + W_y[:, c]) without repeated inputs or one-hot vectors.

`Linear([v, onehot(c)]) = W_v v + b + W_y[:, c]`: the input part `a = W_v v + b` is computed once per
row by the caller (once per *example* for the encoder, whose v = x is shared by the C classes) and the
class part is a bias column picked from W_y. This file holds the plain-torch op; the fused backends
provide the same signature.
"""

from __future__ import annotations

from typing import Optional

import torch

from ..functional import activation_fn


def check_class_conditional_inputs(a: torch.Tensor, w_y: torch.Tensor, classes: Optional[torch.Tensor]):
    if a.dim() != 2:
        raise ValueError(f"a must be (N, H), got shape {tuple(a.shape)}")
    if w_y.dim() != 2 or w_y.shape[0] != a.shape[1]:
        raise ValueError(f"w_y must be (H, C) with H = {a.shape[1]}, got shape {tuple(w_y.shape)}")
    if classes is not None and (classes.dim() != 1 or classes.shape[0] > a.shape[0]):
        raise ValueError(
            f"classes must be (n_l,) with n_l <= N = {a.shape[0]}, got shape {tuple(classes.shape)}"
        )


def class_conditional_output_shape(a, w_y, classes: Optional[torch.Tensor]) -> tuple:
    """(N, C, H) for classes None; (n_l + (N - n_l) * C, H) for classes (n_l,)."""
    (n, hidden), n_classes = a.shape, w_y.shape[1]
    if classes is None:
        return (n, n_classes, hidden)
    n_l = classes.shape[0]
    return (n_l + (n - n_l) * n_classes, hidden)


def class_conditional_activation_torch(
    a: torch.Tensor, w_y: torch.Tensor, classes: Optional[torch.Tensor], activation: str
) -> torch.Tensor:
    """Hidden activations of a first layer acting on [v, onehot(class)].

    a: (N, H) = W_v v (+ b); w_y: (H, C) class columns of the layer's weight (+ b, where the caller folds
    the bias into the columns instead of into a).
    classes None: every class for every row -> (N, C, H), out[n, c] = act(a[n] + w_y[:, c]).
    classes (n_l,) int64, n_l <= N: the first n_l rows take one class each, the other N - n_l rows every
    class -> (n_l + (N - n_l) * C, H), rows in this order:
        out[i]                = act(a[i] + w_y[:, classes[i]])      i < n_l
        out[n_l + j * C + c]  = act(a[n_l + j] + w_y[:, c])         j < N - n_l, c < C
    (n_l = N: one class per row, (N, H); n_l = 0: the every-class rows, flat.) Labelled examples then
    unlabelled ones go through the layer as one batch of rows.
    """
    check_class_conditional_inputs(a, w_y, classes)
    act = activation_fn(activation)
    if classes is None:
        return act(a.unsqueeze(1) + w_y.t().unsqueeze(0))
    n_l = classes.shape[0]
    # A one-hot product picks the class columns: exact (products by 0 and 1), and its backward is a
    # small GEMM, deterministic on every device (index_select's backward accumulates with atomics on CUDA).
    one_hot = torch.nn.functional.one_hot(classes, w_y.shape[1]).to(a.dtype)
    labelled = act(a[:n_l] + one_hot @ w_y.t())
    if n_l == a.shape[0]:
        return labelled
    every = act(a[n_l:].unsqueeze(1) + w_y.t().unsqueeze(0)).flatten(0, 1)
    return torch.cat([labelled, every]) if n_l else every
