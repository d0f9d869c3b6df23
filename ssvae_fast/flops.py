"""FLOP counts of M2's training step, the numerator of every "TFLOP/s" and "% of matmul ceiling" figure.

Only matrix multiplications are counted (2 * m * n * k per (m, k) x (k, n) product): they are more
than 99% of the arithmetic at MNIST sizes, and they are what the measured matmul ceiling measures.
Elementwise work (activations, softplus, KL, softmax, Adam) is left out for every provider alike.
"""

from __future__ import annotations

FORMULATIONS = ("factorized", "naive")


def step_flops(
    B: int,
    n_l: int,
    C: int,
    D: int,
    H: int,
    Z: int,
    formulation: str = "factorized",
    *,
    backward: bool = True,
) -> int:
    """Matmul FLOPs of one M2 loss forward (+ backward) on a batch of n_l labelled and B - n_l unlabelled rows.

    Networks with one hidden layer of H units each: classifier D -> H -> C, encoder [x, y] (D + C) -> H
    -> 2Z, decoder [z, y] (Z + C) -> H -> D. Every labelled row is scored under its label, every
    unlabelled row under all C classes, so the encoder head and the whole decoder see

        R = n_l + (B - n_l) * C        rows.

    A linear layer on m rows, k inputs, n outputs costs 2*m*k*n forward. Its backward costs the same
    twice (the input gradient dX = dY W and the weight gradient dW = dY^T X), except where the input is
    the data x, which needs no gradient (autograd skips it): there the backward is 1x forward.

    formulation="factorized" (the work the `torch`, `cpu`, `cuda` and `triton` backends need; docs/design.md
    section 2)::

        classifier              2*B*D*H + 2*B*H*C       input grad of the first layer skipped
        encoder input, x part   2*B*D*H                 once per example; the class is a bias column
        encoder head            2*R*H*(2Z)
        decoder input, z part   2*R*Z*H                 the class is a bias column
        decoder output          2*R*H*D                 the logits, needed by softplus
        W_out^T x               2*B*D*H                 sum_d x_d l_d = h . (W^T x) + b . x
        backward                2 x each of the above, 1 x for the three products fed by x

    At B = 256 (26 labelled, R = 2326) and MNIST sizes this is 2.78 GFLOP forward, 7.73 GFLOP per step;
    the decoder output layer alone is 71% of it. A backend may add small products that are not useful
    work and are not counted: the `torch` backend adds each row's class column as a one-hot (rows, C) x
    (C, H) product, 2 * (n_l + R) * C * H forward and as much again for the weight gradient (0.6% of
    the step).

    formulation="naive" (the `reference`, and Pyro's enumerated M2): the encoder's first layer runs on
    the R concatenated rows [x, onehot(y)], costing 2*R*(D+C)*H instead of 2*B*D*H (R / B = 9.1 times more at
    90% unlabelled), the decoder's on [z, onehot(y)] costs 2*R*(Z+C)*H, and there is no W^T x product.
    At B = 256 that is 10.7 GFLOP per step, 1.38 x the factorized count.

    Every provider's TFLOP/s uses the factorized count (the useful work), so a provider that does more
    arithmetic than it needs shows a lower figure rather than an inflated one. The Adam update and the
    other elementwise passes are not counted.

    Args:
        B: examples per step (labelled + unlabelled). n_l: labelled ones among them.
        C, D, H, Z: classes, pixels, hidden units, latent size.
        formulation: "factorized" or "naive".
        backward: include the backward pass (a training step); False counts the loss forward alone.
    Returns:
        the FLOP count, an int.
    """
    if formulation not in FORMULATIONS:
        raise ValueError(f"formulation must be one of {FORMULATIONS}, got {formulation!r}")
    if not 0 <= n_l <= B:
        raise ValueError(f"n_l must lie in [0, B] = [0, {B}], got {n_l}")
    n_u = B - n_l
    R = n_l + n_u * C

    def linear(m: int, k: int, n: int, input_grad: bool = True) -> int:
        forward = 2 * m * k * n
        if not backward:
            return forward
        return forward + forward + (forward if input_grad else 0)

    total = linear(B, D, H, input_grad=False) + linear(B, H, C)  # classifier
    total += linear(R, H, 2 * Z)  # encoder head -> [mu, logvar]
    total += linear(R, H, D)  # decoder output logits
    if formulation == "factorized":
        total += linear(B, D, H, input_grad=False)  # encoder input, once per example
        total += linear(R, Z, H)  # decoder input, z columns
        total += linear(B, D, H, input_grad=False)  # W_out^T x, shared by the C rows of an example
    else:
        total += linear(R, D + C, H, input_grad=False)  # encoder input on [x repeated, onehot]
        total += linear(R, Z + C, H)  # decoder input on [z, onehot]
    return total


def bernoulli_loglik_linear_flops(N: int, C: int, H: int, D: int, *, backward: bool = False, rows=None) -> int:
    """Matmul FLOPs of `bernoulli_loglik_linear` on h (N, C, H) (or `rows` rows of H, 2-D form), weight
    (D, H), x (N, D).

    Forward: the logits W h (2*M*H*D, M = N*C or rows) and W^T x (2*N*D*H). Backward: dh = dl W (2*M*D*H)
    and dW = dl^T h + x^T g (2*M*D*H + 2*N*D*H); x needs no gradient.
    """
    M = N * C if rows is None else rows
    forward = 2 * M * H * D + 2 * N * D * H
    return forward + (forward if backward else 0) + (2 * M * D * H if backward else 0)


def matmul_flops(m: int, k: int, n: int) -> int:
    """2*m*k*n: one (m, k) x (k, n) product (the ceiling benchmark)."""
    return 2 * m * k * n
