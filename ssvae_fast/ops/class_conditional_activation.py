"""Class-conditional first layer: act(a + W_y[:, c]) without repeated inputs or one-hot vectors.

`Linear([v, onehot(c)]) = W_v v + b + W_y[:, c]`: the input part `a = W_v v + b` is computed once per row
by the caller (once per *example* for the encoder, whose v = x is shared by the C classes) and the class
part is a bias column picked from W_y. Layouts:

    classes None:   out (N, C, H),                    out[n, c] = act(a[n] + w_y[:, c])
    classes (n_l,): out (n_l + (N - n_l) C, H) rows,  out[i] = act(a[i] + w_y[:, classes[i]])    i < n_l
                                                      out[n_l + j C + c] = act(a[n_l + j] + w_y[:, c])

(n_l = N: one class per row; n_l = 0: the every-class rows, flat.) M2's labelled examples then its
unlabelled ones go through the layer as one batch of rows.

VJP (g = dLoss/dout, p = the pre-activation): dp = g * act'(p); da[n] = sum of dp over row n's rows;
dw_y[:, c] = sum of dp over the rows of class c. act' comes from the output where a backend declares
`GRAD_FROM_OUTPUT` for the row form (softplus' = 1 - exp(-out), relu' = [out > 0]: the output is the next
layer's saved input, alive anyway, so `a` need not be kept), else from a + w_y.

Faces, top to bottom: the plain-torch op (the `torch` backend), the input checks, the custom ops' fakes,
the autograd formula every compiled backend shares, the table of implementations by backend, and the
public entry point `class_conditional_activation(a, w_y, classes, activation, backend=...)`.
"""

# No `from __future__ import annotations`: torch.library.custom_op infers each op's schema from the
# implementations' real annotations.
from contextlib import nullcontext
from typing import Optional

import torch
from torch import Tensor

from .. import validation
from ..functional import activation_fn
from ..rows import class_conditional_output_shape
from .glue import (Implementations, autocast_inputs, bind_backend, cast_for_backend, check_activation, check_tensors,
                   check_types)

OP = "class_conditional_activation"


# 1. The plain-torch face.
def class_conditional_activation_torch(a: Tensor, w_y: Tensor, classes: Optional[Tensor], activation: str) -> Tensor:
    """Hidden activations of a first layer acting on [v, onehot(class)].

    a: (N, H) = W_v v (+ b); w_y: (H, C) class columns of the layer's weight (+ b, where the caller folds
    the bias into the columns instead of into a). classes None -> (N, C, H); classes (n_l,) int64,
    n_l <= N -> (n_l + (N - n_l) * C, H) rows, labelled first (module docstring).
    """
    check_inputs(a, w_y, classes)
    check_activation(f"{OP}_torch", activation)
    # Under torch.autocast the class columns are part of a linear layer's weight: they take the autocast
    # dtype, as that layer's GEMM would (the rule of every backend, `glue.autocast_inputs`).
    if validation.autocasting(a.device):
        a, w_y = autocast_inputs((a, w_y), True, a.device.type)
    check_tensors(f"{OP}_torch", "torch", {"a": a, "w_y": w_y}, {"classes": classes})
    act = activation_fn(activation)
    if classes is None:
        return act(a.unsqueeze(1) + w_y.t().unsqueeze(0))
    n_l = classes.shape[0]
    # A one-hot product picks the class columns: exact (products by 0 and 1), and its backward is a
    # small GEMM, deterministic on every device (index_select's backward accumulates with atomics on CUDA).
    # Outside autocast: the selection is exact in the columns' own dtype (already cast above).
    one_hot = torch.nn.functional.one_hot(classes, w_y.shape[1]).to(w_y.dtype)
    exact = torch.autocast(a.device.type, enabled=False) if validation.autocasting(a.device) else nullcontext()
    with exact:
        columns = one_hot @ w_y.t()
    labelled = act(a[:n_l] + columns)
    if n_l == a.shape[0]:
        return labelled
    every = act(a[n_l:].unsqueeze(1) + w_y.t().unsqueeze(0)).flatten(0, 1)
    return torch.cat([labelled, every]) if n_l else every


# 2. Input checks: types, shapes and (when value checks are on, `ssvae_fast.set_validation`) the classes'
#    range; each backend's devices and dtypes are checked by `glue.check_tensors`.
def check_inputs(a: Tensor, w_y: Tensor, classes: Optional[Tensor]) -> None:
    check_types(OP, {"a": a, "w_y": w_y}, {"classes": classes})
    if a.dim() != 2:
        raise ValueError(f"{OP}: a must be (N, H), got shape {tuple(a.shape)}")
    if w_y.dim() != 2 or w_y.shape[0] != a.shape[1]:
        raise ValueError(f"{OP}: w_y must be (H, C) with H = {a.shape[1]}, got shape {tuple(w_y.shape)}")
    if classes is not None and (classes.dim() != 1 or classes.shape[0] > a.shape[0]):
        raise ValueError(
            f"{OP}: classes must be (n_l,) with n_l <= N = {a.shape[0]}, got shape {tuple(classes.shape)}")
    if classes is not None and classes.dtype == torch.int64:
        validation.check_values(OP, (validation.class_indices, "classes", classes, w_y.shape[1]))


# 3. The custom ops' schemas (from the implementations' annotations) and fakes:
#    forward(a, w_y, classes?, activation) -> out
#    backward(grad_out, a?, w_y, out?, classes?, activation, N, need_a, need_w_y)
#        -> (grad_a (N, H) or (0,), grad_w_y (H, C) or (0,)); act' from `out` when given, else from a + w_y.
def _forward_fake(a, w_y, classes, activation, kernels):
    return a.new_empty(class_conditional_output_shape(a, w_y, classes))


def _backward_fake(grad_out, a, w_y, out, classes, activation, N, need_a, need_w_y):
    H, C = w_y.shape
    return grad_out.new_empty((N, H) if need_a else (0,)), grad_out.new_empty((H, C) if need_w_y else (0,))


# 4. The autograd formula.
def _setup_context(ctx, inputs, output, kernels) -> None:
    a, w_y, classes, activation = inputs
    ctx.activation = activation
    ctx.n_rows = a.shape[0]
    # The (N, C, H) form (classes None) may be reshaped or copied by the caller, so act' is recomputed
    # from a (N, H) rather than keeping that output alive.
    from_output = classes is not None and getattr(kernels, "GRAD_FROM_OUTPUT", False)
    ctx.save_for_backward(None if from_output else a, w_y, output if from_output else None, classes)


def _vjp(ctx, backward, grad_out):
    a, w_y, out, classes = ctx.saved_tensors
    need_a, need_w_y = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
    if grad_out is None or not (need_a or need_w_y):
        return None, None, None, None
    grad_a, grad_w_y = backward(grad_out, a, w_y, out, classes, ctx.activation, ctx.n_rows, need_a, need_w_y)
    return (grad_a if need_a else None, grad_w_y if need_w_y else None, None, None)


# 5. Implementations by backend: `torch` is the face above; each other backend's kernels are in
#    ssvae_fast/<backend>/<OP>.py.
IMPLEMENTATIONS = Implementations(OP, ("cpu", "cuda", "triton"), _forward_fake, _backward_fake, _setup_context, _vjp)


def class_conditional_activation(
    a: Tensor, w_y: Tensor, classes: Optional[Tensor], activation: str, *, backend: str = "torch"
) -> Tensor:
    """Hidden activations of a first layer acting on [v, onehot(class)], by `backend`'s kernels.

    a: (N, H) = W_v v + b; w_y: (H, C) class columns of the layer's weight (any strides);
    classes None: every class for every row -> (N, C, H), out[n, c] = act(a[n] + w_y[:, c]);
    classes (n_l,) int64, n_l <= N: the first n_l rows take one class each, the other rows every class ->
    (n_l + (N - n_l) * C, H), labelled rows first (n_l = N: one class per row, (N, H)).
    activation: "softplus" (exact, max(v, 0) + log1p(exp(-|v|))) or "relu". Computes in fp32 (fp64 for fp64
    inputs; the cpu backend reduces grad_w_y in double); the output in the inputs' dtype (bf16 inputs: bf16,
    the next layer's GEMM input). Under torch.autocast a and w_y take the autocast dtype, as the linear layer
    whose class part this op is would (a bf16 `a` with float32 class columns runs in bf16; float64 is never
    cast). Differentiable in a and w_y, deterministic.
    """
    if backend == "torch":
        return class_conditional_activation_torch(a, w_y, classes, activation)
    check_inputs(a, w_y, classes)
    check_activation(f"{OP}_{backend}", activation)
    a, w_y = cast_for_backend(backend, (a, w_y), matmul=True)
    check_tensors(f"{OP}_{backend}", backend, {"a": a, "w_y": w_y}, {"classes": classes})
    return IMPLEMENTATIONS[backend](a, w_y, classes, activation)


class_conditional_activation_cpu, class_conditional_activation_cuda, class_conditional_activation_triton = (
    bind_backend(class_conditional_activation, name) for name in IMPLEMENTATIONS.backends
)
