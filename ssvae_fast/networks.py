"""The three MLPs of M2: classifier q(y|x), encoder q(z|x,y) and decoder p(x|y,z).

Each network's `forward` is the plain textbook formulation (the encoder's and the decoder's first layer
act on a concatenation with the class vector y), which the reference objective uses. The fused backends
read the same parameters and split the first layer's weight into its input and class columns
(`Linear([v, onehot(c)]) = W_v v + W_y[:, c] + b`), so one set of parameters serves every backend.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from .functional import activation_fn, bernoulli_loglik, gaussian_loglik


def _check_hidden(hidden: Sequence[int], name: str, allow_empty: bool) -> tuple[int, ...]:
    hidden = tuple(int(h) for h in hidden)
    if not allow_empty and len(hidden) == 0:
        raise ValueError(f"{name} needs at least one hidden layer (got hidden=())")
    if any(h < 1 for h in hidden):
        raise ValueError(f"{name} hidden sizes must be positive, got {hidden}")
    return hidden


class _MLPBody(nn.Module):
    """`input` layer, then `hidden_layers`, each followed by the activation."""

    def __init__(self, in_dim: int, hidden: tuple[int, ...], activation: str):
        super().__init__()
        self.activation = activation
        self._act = activation_fn(activation)
        self.input = nn.Linear(in_dim, hidden[0])
        self.hidden_layers = nn.ModuleList(
            nn.Linear(a, b) for a, b in zip(hidden[:-1], hidden[1:])
        )

    def run_hidden_layers(self, h: torch.Tensor) -> torch.Tensor:
        """Apply every layer after the first (h is already activated)."""
        for layer in self.hidden_layers:
            h = self._act(layer(h))
        return h


class Classifier(nn.Module):
    """q(y|x): x (B, x_dim) -> logits_y (B, n_classes). `hidden` may be empty (a linear classifier)."""

    def __init__(self, x_dim: int, n_classes: int, hidden: Sequence[int], activation: str):
        super().__init__()
        hidden = _check_hidden(hidden, "classifier", allow_empty=True)
        dims = (x_dim, *hidden)
        self.activation = activation
        self._act = activation_fn(activation)
        self.hidden_layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))
        self.output = nn.Linear(dims[-1], n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        for layer in self.hidden_layers:
            h = self._act(layer(h))
        return self.output(h)


class ConvClassifier(nn.Module):
    """q(y|x) for square images: x (B, side * side) -> logits_y (B, n_classes). Two 3x3 convolutions
    (`channels`, ReLU, each followed by 2x2 max pooling), then a hidden layer of `hidden` units and the
    output layer. Only the classifier is convolutional: the encoder and the decoder stay MLPs, on the fused
    kernels' path."""

    def __init__(self, x_dim: int, n_classes: int, channels: Sequence[int] = (16, 32), hidden: int = 128):
        super().__init__()
        side = int(round(x_dim ** 0.5))
        if side * side != x_dim or side < 4:
            raise ValueError(f"a convolutional classifier needs square images: x_dim = {x_dim} is not side * side "
                             f"with side >= 4")
        self.side, self.activation = side, "relu"
        layers, c_in, size = [], 1, side
        for c_out in channels:
            # Pooling before the ReLU: relu(maxpool(v)) = maxpool(relu(v)) value for value and in the gradient
            # (max and ReLU commute; torch's ReLU passes no gradient at 0), with the ReLU on a quarter of
            # the elements. The parameters' names are those of conv -> ReLU -> pool (convolutions at 0, 3).
            layers += [nn.Conv2d(c_in, c_out, 3, padding=1), nn.MaxPool2d(2), nn.ReLU()]
            c_in, size = c_out, size // 2
        self.features = nn.Sequential(*layers)
        self.hidden = nn.Linear(c_in * size * size, hidden)
        self.output = nn.Linear(hidden, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.reshape(x.shape[0], 1, self.side, self.side)
        # On the CPU the feature maps run channels-last (NHWC): oneDNN's NHWC convolutions and torch's NHWC
        # max pooling take about half the time of NCHW forward and backward at MNIST sizes (200 images,
        # `benchmarks/conv_classifier.py`). Explicit strides, since a single channel's NCHW and NHWC strides
        # are both "contiguous" and torch would keep NCHW. The parameters stay in their own layout.
        nhwc = h.device.type == "cpu"
        if nhwc:
            h = _channels_last(h)
        for layer in self.features:
            if nhwc and isinstance(layer, nn.Conv2d):
                h = nn.functional.conv2d(h, _channels_last(layer.weight), layer.bias, padding=layer.padding)
            else:
                h = layer(h)
        return self.output(torch.relu(self.hidden(h.flatten(1))))

    def forward_textbook(self, x: torch.Tensor) -> torch.Tensor:
        """The same function in its textbook form (NCHW, convolution -> ReLU -> pooling): what `forward` is
        tested and timed against."""
        h = x.reshape(x.shape[0], 1, self.side, self.side)
        for layer in self.features:
            if isinstance(layer, nn.Conv2d):
                h = nn.functional.max_pool2d(torch.relu(layer(h)), 2)
        return self.output(torch.relu(self.hidden(h.flatten(1))))


def _channels_last(t: torch.Tensor) -> torch.Tensor:
    """t (N, C, H, W) copied into channels-last strides, even where C or H * W is 1 (differentiable)."""
    return torch.empty_like(t, memory_format=torch.channels_last).copy_(t)


class Encoder(_MLPBody):
    """q(z|x,y) = N(mu, diag(exp(logvar))).

    forward(x (B, x_dim), y (B, n_classes) float one-hot or relaxed) -> (mu, logvar), each (B, z_dim).
    `input` acts on [x, y] (weight columns: x_dim of x, then n_classes of y); `head` outputs
    [mu, logvar] (2 * z_dim).
    """

    def __init__(self, x_dim: int, n_classes: int, z_dim: int, hidden: Sequence[int], activation: str):
        hidden = _check_hidden(hidden, "encoder", allow_empty=False)
        super().__init__(x_dim + n_classes, hidden, activation)
        self.x_dim, self.n_classes, self.z_dim = x_dim, n_classes, z_dim
        self.head = nn.Linear(hidden[-1], 2 * z_dim)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self._act(self.input(torch.cat([x, y.to(x.dtype)], dim=-1)))
        out = self.head(self.run_hidden_layers(h))
        return out[..., : self.z_dim], out[..., self.z_dim :]


class Decoder(_MLPBody):
    """p(x|y,z) = Bernoulli(sigmoid(out)) or, with likelihood "gaussian", N(out, diag(exp(logvar))) with a
    learned per-dimension log-variance `logvar` (x_dim,), initialized to 0.

    forward(z (B, z_dim), y (B, n_classes)) -> out (B, x_dim): the Bernoulli logits or the Gaussian means.
    `input` acts on [z, y] (weight columns: z_dim of z, then n_classes of y; n_classes may be 0, for M1);
    `output` is the last linear layer.
    """

    def __init__(self, x_dim: int, n_classes: int, z_dim: int, hidden: Sequence[int], activation: str,
                 likelihood: str = "bernoulli"):
        hidden = _check_hidden(hidden, "decoder", allow_empty=False)
        super().__init__(z_dim + n_classes, hidden, activation)
        self.x_dim, self.n_classes, self.z_dim = x_dim, n_classes, z_dim
        self.likelihood = likelihood
        self.output = nn.Linear(hidden[-1], x_dim)
        if likelihood == "gaussian":
            self.logvar = nn.Parameter(torch.zeros(x_dim))
        elif likelihood != "bernoulli":
            raise ValueError(f"unknown likelihood {likelihood!r}; choose 'bernoulli' or 'gaussian'")

    def log_likelihood(self, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """log p(x | out) summed over the last dimension (out: this decoder's output)."""
        if self.likelihood == "gaussian":
            return gaussian_loglik(out, self.logvar, x)
        return bernoulli_loglik(out, x)

    def mean(self, out: torch.Tensor) -> torch.Tensor:
        """E[x | out]: sigmoid(logits) or the Gaussian mean."""
        return out if self.likelihood == "gaussian" else torch.sigmoid(out)

    def draw(self, out: torch.Tensor, generator=None) -> torch.Tensor:
        """A sample of p(x | out)."""
        if self.likelihood == "gaussian":
            noise = torch.randn(out.shape, dtype=out.dtype, device=out.device, generator=generator)
            return out + torch.exp(0.5 * self.logvar) * noise
        return torch.bernoulli(torch.sigmoid(out), generator=generator)

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = self._act(self.input(torch.cat([z, y.to(z.dtype)], dim=-1)))
        return self.output(self.run_hidden_layers(h))
