"""Autograd wiring shared by the compiled backends (`cpu`, `cuda`, `triton`): one `FusedOp` per op.

A fused op is two `torch.library.custom_op`s, `ssvae_fast::<name>` (forward) and
`ssvae_fast::<name>_backward`, each with a fake (meta) implementation, and an autograd formula for the
forward op that calls the backward op. `torch.compile`, `torch.export`, fake tensors and every other
tracer see exactly those ops (no graph breaks; CUDA graphs capture them).

Eager calls take a shorter road to the same two implementations: a `torch.autograd.Function` whose
forward runs the forward implementation and whose backward runs the same formula with the backward
implementation, both called as plain Python functions. The results are the same tensors bit for bit
(tests/test_glue.py); what is skipped is the dispatcher's round trip (schema parsing, default filling,
redispatch, the tracing guards), 20 to 30 us per call on a warm CPU and 100 to 150 us right after a
large GEMM has flushed the caches (2-core Xeon, torch 2.13; M2's training step calls 18 such ops).

    op = FusedOp("gaussian_reparam_kl_cpu", forward_impl, forward_fake, backward_impl, backward_fake,
                 setup_context, vjp, device_types="cpu")
    z, kl = op(head, eps)        # eager: the Function; under torch.compile / a dispatch mode: op.op

`vjp(ctx, backward, *grads)` is the autograd formula: it receives the saved context, the backward
implementation to call (the custom op, or its plain function in eager mode) and the output gradients,
and returns one gradient (or None) per forward input, as `register_autograd` expects.
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence, Union

import torch
from torch import Tensor


def autocast_inputs(tensors: tuple, matmul: bool, device_type: str = "cuda") -> tuple:
    """`tensors` as an op takes them under `torch.autocast(device_type)`; unchanged outside autocast (the
    cuda and triton backends' public functions call this first, as torch's own ops would cast).
    matmul: cast every float32/16-bit tensor to the autocast dtype (float64 is never autocast), as for a
    linear layer; otherwise promote mixed float dtypes to the widest (a bf16 activation meeting a float32
    weight column runs in float32). Non-float entries and None pass through; the casts are differentiable."""
    floats = [t for t in tensors if isinstance(t, Tensor) and t.is_floating_point()]
    if not floats or not torch.is_autocast_enabled(device_type):
        return tensors
    if matmul:
        target = torch.get_autocast_dtype(device_type)
        eligible = lambda t: t.dtype != torch.float64  # noqa: E731
    else:
        target = floats[0].dtype
        for t in floats[1:]:
            target = torch.promote_types(target, t.dtype)
        eligible = lambda t: True  # noqa: E731
    return tuple(
        t.to(target) if isinstance(t, Tensor) and t.is_floating_point() and eligible(t) else t for t in tensors
    )


def tracing() -> bool:
    """True under torch.compile / torch.export or any torch_dispatch mode (fake tensors, make_fx proxies,
    FLOP counters): then the ops must be the registered custom ops, not plain Python."""
    return torch.compiler.is_compiling() or torch._C._len_torch_dispatch_stack() > 0


class FusedOp:
    """A forward/backward pair of custom ops with their autograd formula; call it like the forward op."""

    def __init__(
        self,
        name: str,
        forward: Callable,
        forward_fake: Callable,
        backward: Callable,
        backward_fake: Callable,
        setup_context: Callable,
        vjp: Callable,
        device_types: Optional[Union[str, Sequence[str]]] = None,
    ):
        self.name = name
        self.forward_impl, self.backward_impl = forward, backward
        self.op = torch.library.custom_op(f"ssvae_fast::{name}", forward, mutates_args=(), device_types=device_types)
        self.op.register_fake(forward_fake)
        self.backward_op = torch.library.custom_op(
            f"ssvae_fast::{name}_backward", backward, mutates_args=(), device_types=device_types
        )
        self.backward_op.register_fake(backward_fake)
        backward_op = self.backward_op
        self.op.register_autograd(lambda ctx, *grads: vjp(ctx, backward_op, *grads), setup_context=setup_context)

        def eager_forward(ctx, *args):
            output = forward(*args)
            setup_context(ctx, args, output)
            return output

        def eager_backward(ctx, *grads):
            return vjp(ctx, backward, *grads)

        self._eager = type(
            f"{name}_eager",
            (torch.autograd.Function,),
            {"forward": staticmethod(eager_forward), "backward": staticmethod(eager_backward)},
        )

    def __call__(self, *args):
        if tracing():
            return self.op(*args)
        if torch.is_grad_enabled() and any(isinstance(a, Tensor) and a.requires_grad for a in args):
            return self._eager.apply(*args)
        return self.forward_impl(*args)

    def __repr__(self) -> str:
        return f"FusedOp(ssvae_fast::{self.name})"


# ------------------------------------------------------------------------------------------------------
# The ELBO reduction's fakes and formula, the same for every backend. Forward inputs, in order:
# logits_y, y_l, ll_l, kl_l, ll_u, kl_u, alpha. Backward op: (grad, logits_y, y_l, ll_u, kl_u, alpha) ->
# (d logits_y, d ll_l, d kl_l, d ll_u, d kl_u).
# ------------------------------------------------------------------------------------------------------
def _elbo_forward_fake(logits_y, y_l, ll_l, kl_l, ll_u, kl_u, alpha):
    return logits_y.new_empty((logits_y.shape[0],))


def _elbo_backward_fake(grad, logits_y, y_l, ll_u, kl_u, alpha):
    n_l = y_l.shape[0]
    return (
        logits_y.new_empty(logits_y.shape),
        logits_y.new_empty((n_l,)),
        logits_y.new_empty((n_l,)),
        logits_y.new_empty(ll_u.shape),
        logits_y.new_empty(kl_u.shape),
    )


def _elbo_setup_context(ctx, inputs, output) -> None:
    logits_y, y_l, ll_l, kl_l, ll_u, kl_u, alpha = inputs
    ctx.save_for_backward(logits_y, y_l, ll_u, kl_u)
    ctx.alpha = alpha


def _elbo_vjp(ctx, backward, grad):
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


def elbo_fused_op(backend: str, forward: Callable, backward: Callable, device_types=None) -> FusedOp:
    """`ssvae_fast::elbo_reduction_<backend>` and its backward op from the two implementations."""
    return FusedOp(
        f"elbo_reduction_{backend}", forward, _elbo_forward_fake, backward, _elbo_backward_fake,
        _elbo_setup_context, _elbo_vjp, device_types=device_types,
    )


# ------------------------------------------------------------------------------------------------------
# The GPU backends' (cuda, triton) class-conditional and Gaussian ops: the same fakes and formulas.
# Class-conditional forward inputs: a, w_y, classes, activation; backward op: (grad, a, w_y, classes,
# activation) -> (da (N, H), dw_y (H, C)). Gaussian forward inputs: head, eps; backward op: (head, eps,
# grad_z, grad_kl) -> (d head, d eps).
# ------------------------------------------------------------------------------------------------------
def _class_conditional_forward_fake(a, w_y, classes, activation):
    from .class_conditional import class_conditional_output_shape

    return a.new_empty(class_conditional_output_shape(a, w_y, classes))


def _class_conditional_backward_fake(grad, a, w_y, classes, activation):
    return a.new_empty(a.shape), a.new_empty(w_y.shape)


def _class_conditional_setup_context(ctx, inputs, output) -> None:
    a, w_y, classes, activation = inputs
    ctx.save_for_backward(a, w_y, classes)
    ctx.activation = activation


def _class_conditional_vjp(ctx, backward, grad):
    a, w_y, classes = ctx.saved_tensors
    da, dw_y = backward(grad, a, w_y, classes, ctx.activation)
    needs = ctx.needs_input_grad
    return (da if needs[0] else None, dw_y if needs[1] else None, None, None)


def class_conditional_fused_op(backend: str, forward: Callable, backward: Callable) -> FusedOp:
    """`ssvae_fast::class_conditional_activation_<backend>` and its backward op (GPU backends)."""
    return FusedOp(
        f"class_conditional_activation_{backend}", forward, _class_conditional_forward_fake, backward,
        _class_conditional_backward_fake, _class_conditional_setup_context, _class_conditional_vjp,
    )


def _gaussian_forward_fake(head, eps):
    return head.new_empty(eps.shape), head.new_empty((eps.shape[0],))


def _gaussian_backward_fake(head, eps, grad_z, grad_kl):
    return head.new_empty((eps.shape[0], 2 * eps.shape[1])), head.new_empty(eps.shape)


def _gaussian_setup_context(ctx, inputs, output) -> None:
    ctx.save_for_backward(*inputs)


def _gaussian_vjp(ctx, backward, grad_z, grad_kl):
    head, eps = ctx.saved_tensors
    dhead, deps = backward(head, eps, grad_z, grad_kl)
    needs = ctx.needs_input_grad
    return (dhead if needs[0] else None, deps if needs[1] else None)


def gaussian_fused_op(backend: str, forward: Callable, backward: Callable) -> FusedOp:
    """`ssvae_fast::gaussian_reparam_kl_<backend>` and its backward op (GPU backends)."""
    return FusedOp(
        f"gaussian_reparam_kl_{backend}", forward, _gaussian_forward_fake, backward, _gaussian_backward_fake,
        _gaussian_setup_context, _gaussian_vjp,
    )


# ------------------------------------------------------------------------------------------------------
# The GPU backends' Bernoulli op. Forward inputs: h (M, H) rows, weight, bias, x, n_labelled, n_classes,
# store_s, then the backend's own (the cuda precision); outputs (ll (M,), s). Backward op: (grad_ll, h,
# weight, bias, x, s, n_labelled, n_classes, *extra) -> (dh, dW, db or empty, dx), where extra comes from
# the forward inputs through the backend's `backward_extra`.
# ------------------------------------------------------------------------------------------------------
def _bernoulli_forward_fake(h, weight, bias, x, n_labelled, n_classes, store_s, *extra):
    return h.new_empty((h.shape[0],)), h.new_empty((h.shape[0], weight.shape[0]) if store_s else (0,))


def _bernoulli_backward_fake(grad_ll, h, weight, bias, x, s, n_labelled, n_classes, *extra):
    return (
        h.new_empty(h.shape),
        weight.new_empty(weight.shape),
        h.new_empty((weight.shape[0],) if bias is not None else (0,)),
        x.new_empty(x.shape),
    )


def bernoulli_fused_op(backend: str, forward: Callable, backward: Callable, backward_extra: Callable) -> FusedOp:
    """`ssvae_fast::bernoulli_loglik_linear_<backend>` and its backward op (GPU backends);
    backward_extra(forward inputs) -> the tuple of trailing backward arguments."""

    def setup_context(ctx, inputs, output) -> None:
        h, weight, bias, x, n_labelled, n_classes = inputs[:6]
        _, s = output
        ctx.save_for_backward(h, weight, bias, x, s)
        ctx.layout, ctx.extra, ctx.n_inputs = (n_labelled, n_classes), tuple(backward_extra(inputs)), len(inputs)
        ctx.mark_non_differentiable(s)
        ctx.set_materialize_grads(False)

    def vjp(ctx, backward, grad_ll, grad_s):
        if grad_ll is None:
            return (None,) * ctx.n_inputs
        h, weight, bias, x, s = ctx.saved_tensors
        dh, dweight, dbias, dx = backward(grad_ll, h, weight, bias, x, s, *ctx.layout, *ctx.extra)
        needs = ctx.needs_input_grad
        return (
            dh if needs[0] else None,
            dweight if needs[1] else None,
            dbias if bias is not None and needs[2] else None,
            dx if needs[3] else None,
        ) + (None,) * (ctx.n_inputs - 4)

    return FusedOp(
        f"bernoulli_loglik_linear_{backend}", forward, _bernoulli_forward_fake, backward, _bernoulli_backward_fake,
        setup_context, vjp,
    )
