"""The ELBO reduction's autograd wiring, shared by every backend's custom ops.

Each backend registers `ssvae_fast::elbo_reduction_<backend>` (forward) and
`ssvae_fast::elbo_reduction_<backend>_backward` (grad, logits_y, y_l, ll_u, kl_u, alpha) ->
(d logits_y, d ll_l, d kl_l, d ll_u, d kl_u); this module gives the backward op its fake (meta)
implementation and the forward op its autograd formula. Forward inputs, in order:
logits_y, y_l, ll_l, kl_l, ll_u, kl_u, alpha.
"""

from __future__ import annotations


def elbo_backward_fake(grad, logits_y, y_l, ll_u, kl_u, alpha):
    """Shapes of the backward op's outputs, for torch.compile and CUDA-graph tracing."""
    n_l = y_l.shape[0]
    return (
        logits_y.new_empty(logits_y.shape),
        logits_y.new_empty((n_l,)),
        logits_y.new_empty((n_l,)),
        logits_y.new_empty(ll_u.shape),
        logits_y.new_empty(kl_u.shape),
    )


def elbo_setup_context(ctx, inputs, output) -> None:
    logits_y, y_l, ll_l, kl_l, ll_u, kl_u, alpha = inputs
    ctx.save_for_backward(logits_y, y_l, ll_u, kl_u)
    ctx.alpha = alpha


def register_elbo_autograd(forward_op, backward_op) -> None:
    """Give `backward_op` its fake implementation and `forward_op` its backward through `backward_op`."""
    backward_op.register_fake(elbo_backward_fake)

    def backward(ctx, grad):
        logits_y, y_l, ll_u, kl_u = ctx.saved_tensors
        dlogits, dll_l, dkl_l, dll_u, dkl_u = backward_op(grad, logits_y, y_l, ll_u, kl_u, ctx.alpha)
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

    forward_op.register_autograd(backward, setup_context=elbo_setup_context)
