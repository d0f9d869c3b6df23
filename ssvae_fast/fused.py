"""M2's objective through the exact rewrites of docs/design.md section 2, assembled from four fused ops.

The ops come from a backend (`ssvae_fast.backends.BackendOps`): plain torch for `torch`, Triton or
C++/CUDA kernels for the others. The arithmetic is the reference's, reorganized:

1. one-hot factorization: the encoder's first layer is `W_x x + b` once per example plus a class
   column `W_y[:, c]`; the decoder's first layer is `W_z z + b` plus the class column of its row;
2. shared x: the C unlabelled rows of an example are scored against the same x;
3. the decoder's last layer and the Bernoulli log-likelihood form one op;
4. reparameterization and KL form one op; 5. the ELBO reduction is one op.

Labelled examples (one class each, n_l rows) and unlabelled ones (every class, n_u * C rows) go through
the encoder and the decoder as one batch of R = n_l + n_u * C rows, labelled rows first: the
class-conditional op takes the labels of the first n_l examples and enumerates the classes of the rest,
and the Bernoulli op scores each row against its example's x. Every GEMM and op runs once per step on R
rows (two streams would double the small calls: on the CPU each pays a cold-cache penalty after the large
GEMMs), and nothing of size (rows, H) or (rows, D) is concatenated, forward or backward. The per-row
log-likelihoods and KLs are split (views) into their labelled and unlabelled parts for the ELBO reduction.
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

    # First layers: W_v v once per row of v; the class column plus the bias, W_y[:, c] + b, is added by
    # the op. (`split` rather than slicing: its backward is one copy, not a zero-fill per slice.)
    w_x, w_y = encoder.input.weight.split([x_dim, n_classes], dim=1)
    enc_columns = w_y + encoder.input.bias.unsqueeze(1)  # (H, C)
    w_z, w_y_dec = decoder.input.weight.split([z_dim, n_classes], dim=1)
    dec_columns = w_y_dec + decoder.input.bias.unsqueeze(1)

    # Rows: labelled example i (class y_i) for i < n_l, then (j, c) for unlabelled example j and class c.
    h = ops.class_conditional_activation(x_all @ w_x.t(), enc_columns, y_l, encoder.activation)
    head = encoder.head(encoder.run_hidden_layers(h))
    eps_rows = eps_u.reshape(n_u * n_classes, z_dim)
    eps = torch.cat([eps_l, eps_rows]) if n_l and n_u else (eps_l if n_l else eps_rows)
    z, kl = ops.gaussian_reparam_kl(head, eps)
    classes = torch.arange(n_classes, device=x_all.device).repeat(n_u)
    classes = torch.cat([y_l, classes]) if n_l else classes
    h_dec = ops.class_conditional_activation(z @ w_z.t(), dec_columns, classes, decoder.activation)
    output = decoder.output
    ll = ops.bernoulli_loglik_linear(decoder.run_hidden_layers(h_dec), output.weight, output.bias, x_all, n_l)
    ll_l, ll_u = ll[:n_l], ll[n_l:].view(n_u, n_classes)
    kl_l, kl_u = kl[:n_l], kl[n_l:].view(n_u, n_classes)
    return ops.elbo_reduction(logits_y, y_l, ll_l, kl_l, ll_u, kl_u, alpha)
