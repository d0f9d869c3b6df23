"""M2's objective through the exact rewrites of docs/design.md section 2, assembled from four fused ops.

The ops come from a backend (`ssvae_fast.backends.BackendOps`): plain torch for `torch`, Triton or
C++/CUDA kernels for the others. The arithmetic is the reference's, reorganized:

1. one-hot factorization: the encoder's first layer is `W_x x + b` once per example plus a class
   column `W_y[:, c]`; the decoder's first layer is `W_z z + b` plus the class column of its row;
2. shared x: the C unlabelled rows of an example are scored against the same x;
3. the decoder's last layer and the Bernoulli log-likelihood form one op;
4. reparameterization and KL form one op; 5. the ELBO reduction is one op.

Labelled rows (one class each) and unlabelled rows (C classes each) go through the encoder's deeper
layers and the whole decoder as one batch of n_l + n_u * C rows.
"""

from __future__ import annotations

import torch


def per_example_losses(model, ops, x_l, y_l, x_u, eps_l, eps_u, alpha: float) -> torch.Tensor:
    """Per-example losses (n_l + n_u,), labelled first; same contract as `reference.per_example_losses`."""
    encoder, decoder = model.encoder, model.decoder
    n_l, n_u = x_l.shape[0], x_u.shape[0]
    n_classes, x_dim, z_dim = model.n_classes, model.x_dim, model.z_dim

    x_all = torch.cat([x_l, x_u]) if n_l and n_u else (x_l if n_l else x_u)
    logits_y = model.classifier(x_all)

    # Encoder first layer: W_x x once per example; the class column plus the bias, W_y[:, c] + b, is
    # added by the op. (`split` rather than slicing: its backward is one copy, not a zero-fill per slice.)
    w_x, w_y = encoder.input.weight.split([x_dim, n_classes], dim=1)
    class_columns = w_y + encoder.input.bias.unsqueeze(1)  # (H, C)
    a_l, a_u = (x_all @ w_x.t()).split([n_l, n_u])
    h_l = ops.class_conditional_activation(a_l, class_columns, y_l, encoder.activation)
    h_u = ops.class_conditional_activation(a_u, class_columns, None, encoder.activation)
    h = torch.cat([h_l, h_u.reshape(n_u * n_classes, h_l.shape[1])])
    del h_l, h_u  # dead after the cat; not held at the forward's peak
    head = encoder.head(encoder.run_hidden_layers(h))  # (n_l + n_u*C, 2Z)

    eps = torch.cat([eps_l, eps_u.reshape(n_u * n_classes, z_dim)])
    z, kl = ops.gaussian_reparam_kl(head, eps)

    # Decoder first layer on [z, onehot(c)]: W_z z plus the class column (and bias) of each row.
    classes = torch.cat([y_l, torch.arange(n_classes, device=y_l.device).repeat(n_u)])
    w_z, w_y_dec = decoder.input.weight.split([z_dim, n_classes], dim=1)
    h_dec = ops.class_conditional_activation(
        z @ w_z.t(), w_y_dec + decoder.input.bias.unsqueeze(1), classes, decoder.activation
    )
    h_dec = decoder.run_hidden_layers(h_dec)

    w_out, b_out = decoder.output.weight, decoder.output.bias
    h_dec_l, h_dec_u = h_dec.split([n_l, n_u * n_classes])
    ll_l = ops.bernoulli_loglik_linear(h_dec_l.unsqueeze(1), w_out, b_out, x_l).squeeze(1)
    ll_u = ops.bernoulli_loglik_linear(h_dec_u.view(n_u, n_classes, h_dec.shape[1]), w_out, b_out, x_u)
    kl_l, kl_u = kl.split([n_l, n_u * n_classes])
    return ops.elbo_reduction(logits_y, y_l, ll_l, kl_l, ll_u, kl_u.view(n_u, n_classes), alpha)
