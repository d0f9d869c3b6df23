"""M2's objective through the exact rewrites of docs/design.md section 2, assembled from four fused ops.

The ops come from a backend (`ssvae_fast.backends.BackendOps`): plain torch for `torch`, Triton or
C++/CUDA kernels for the others. The arithmetic is the reference's, reorganized:

1. one-hot factorization: the encoder's first layer is `W_x x + b` once per example plus a class
   column `W_y[:, c]`; the decoder's first layer is `W_z z + b` plus the class column of its row;
2. shared x: the C unlabelled rows of an example are scored against the same x;
3. the decoder's last layer and the Bernoulli log-likelihood form one op;
4. reparameterization and KL form one op; 5. the ELBO reduction is one op.

Labelled rows (one class each, n_l rows) and unlabelled rows (every class, n_u * C rows) run through the
encoder and the decoder as two streams that share the parameters and meet only in the ELBO reduction,
which takes their per-row log-likelihoods and KLs separately. Nothing of size (rows, H) or (rows, D) is
ever concatenated, forward or backward (a single batch of n_l + n_u * C rows would copy the encoder's
hidden activations into one tensor in the forward and the decoder's hidden gradient in the backward);
the weights the streams share receive two gradients, which autograd adds (parameter-sized, small).
"""

from __future__ import annotations

from typing import Optional

import torch


def per_example_losses(model, ops, x_l, y_l, x_u, eps_l, eps_u, alpha: float) -> torch.Tensor:
    """Per-example losses (n_l + n_u,), labelled first; same contract as `reference.per_example_losses`."""
    encoder, decoder = model.encoder, model.decoder
    n_l, n_u = x_l.shape[0], x_u.shape[0]
    n_classes, x_dim, z_dim = model.n_classes, model.x_dim, model.z_dim

    x_all = torch.cat([x_l, x_u]) if n_l and n_u else (x_l if n_l else x_u)
    logits_y = model.classifier(x_all)

    # First layers: W_v v once per row of v; the class column plus the bias, W_y[:, c] + b, is added by
    # the op. (`split` rather than slicing: its backward is one copy, not a zero-fill per slice.)
    w_x, w_y = encoder.input.weight.split([x_dim, n_classes], dim=1)
    enc_columns = w_y + encoder.input.bias.unsqueeze(1)  # (H, C)
    w_z, w_y_dec = decoder.input.weight.split([z_dim, n_classes], dim=1)
    dec_columns = w_y_dec + decoder.input.bias.unsqueeze(1)
    a_l, a_u = (x_all @ w_x.t()).split([n_l, n_u])

    def stream(a, x, classes: Optional[torch.Tensor], eps):
        """(ll, kl), each (n,) for labelled rows (classes given) or (n, C) for unlabelled ones (None)."""
        n = a.shape[0]
        k = 1 if classes is not None else n_classes
        if n == 0:  # an absent stream: empty terms, no op calls
            empty = a.new_empty((0,) if k == 1 else (0, k))
            return empty, empty
        h = ops.class_conditional_activation(a, enc_columns, classes, encoder.activation)
        head = encoder.head(encoder.run_hidden_layers(h.reshape(n * k, h.shape[-1])))
        z, kl = ops.gaussian_reparam_kl(head, eps.reshape(n * k, z_dim))
        if classes is None:  # row (i, c) of the unlabelled stream decodes class c
            classes = torch.arange(n_classes, device=a.device).repeat(n)
        h_dec = ops.class_conditional_activation(z @ w_z.t(), dec_columns, classes, decoder.activation)
        h_dec = decoder.run_hidden_layers(h_dec)
        ll = ops.bernoulli_loglik_linear(
            h_dec.view(n, k, h_dec.shape[1]), decoder.output.weight, decoder.output.bias, x
        )
        return (ll.squeeze(1), kl) if k == 1 else (ll, kl.view(n, k))

    ll_l, kl_l = stream(a_l, x_l, y_l, eps_l)
    ll_u, kl_u = stream(a_u, x_u, None, eps_u)
    return ops.elbo_reduction(logits_y, y_l, ll_l, kl_l, ll_u, kl_u, alpha)
