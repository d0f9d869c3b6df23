"""`M2`: the semi-supervised VAE of Kingma et al. (NIPS 2014) as an `nn.Module` with a fast loss."""

from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from . import backends, objective, reference
from .functional import ACTIVATIONS
from .networks import Classifier, Decoder, Encoder

REDUCTIONS = ("mean", "sum", "none")
CHECKPOINT_FORMAT = "ssvae_fast.M2/1"


def _sizes(sizes: Optional[Sequence[int]]) -> Optional[list]:
    return None if sizes is None else [int(s) for s in sizes]


class M2(nn.Module):
    """M2: classifier q(y|x), encoder q(z|x,y), Bernoulli decoder p(x|y,z), priors N(0, I) and uniform.

    Args:
        x_dim: D, the number of pixels (inputs in [0, 1]).
        n_classes: C.
        z_dim: the latent size.
        hidden: hidden layer sizes of all three networks (each needs at least one for the encoder
            and the decoder); `classifier_hidden`, `encoder_hidden`, `decoder_hidden` override it per
            network.
        activation: "softplus" (default) or "relu".
        backend: "auto", "reference", "torch", "triton", "cuda" or "cpu" (see
            `ssvae_fast.available_backends()`); checked when the loss first runs on a device.

    Example:
        >>> model = M2(784, 10, 50)
        >>> loss = model.loss(x_l, y_l, x_u, alpha=0.1 * 60000 / 100)
        >>> loss.backward()
    """

    def __init__(
        self,
        x_dim: int,
        n_classes: int,
        z_dim: int,
        hidden: Sequence[int] = (500,),
        activation: str = "softplus",
        backend: str = "auto",
        *,
        classifier_hidden: Optional[Sequence[int]] = None,
        encoder_hidden: Optional[Sequence[int]] = None,
        decoder_hidden: Optional[Sequence[int]] = None,
    ):
        super().__init__()
        for name, value in (("x_dim", x_dim), ("n_classes", n_classes), ("z_dim", z_dim)):
            if int(value) != value or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if n_classes < 2:
            raise ValueError(f"n_classes must be at least 2, got {n_classes}")
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; choose one of {ACTIVATIONS}")
        self.backend = backend  # validated by the setter
        self.x_dim, self.n_classes, self.z_dim = int(x_dim), int(n_classes), int(z_dim)
        self.activation = activation
        pick = lambda override: hidden if override is None else override  # noqa: E731
        self.classifier = Classifier(x_dim, n_classes, pick(classifier_hidden), activation)
        self.encoder = Encoder(x_dim, n_classes, z_dim, pick(encoder_hidden), activation)
        self.decoder = Decoder(x_dim, n_classes, z_dim, pick(decoder_hidden), activation)
        self._config = dict(
            x_dim=int(x_dim), n_classes=int(n_classes), z_dim=int(z_dim), hidden=_sizes(hidden),
            activation=activation, classifier_hidden=_sizes(classifier_hidden),
            encoder_hidden=_sizes(encoder_hidden), decoder_hidden=_sizes(decoder_hidden),
        )

    @property
    def backend(self) -> str:
        return self._backend

    @backend.setter
    def backend(self, name: str):
        if name != "auto" and name not in backends.BACKENDS:
            raise ValueError(f"unknown backend {name!r}; choose one of {('auto',) + backends.BACKENDS}")
        self._backend = name

    def extra_repr(self) -> str:
        return f"backend={self._backend!r}"

    @property
    def config(self) -> dict:
        """The constructor's arguments except `backend`: `M2(**model.config)` builds the same networks."""
        return dict(self._config)

    def save(self, path) -> None:
        """Write the constructor's arguments and the parameters to `path` (one file; `M2.load` reads it)."""
        torch.save({"format": CHECKPOINT_FORMAT, "config": self.config, "state_dict": self.state_dict()}, path)

    @classmethod
    def load(cls, path, *, backend: str = "auto", map_location="cpu") -> "M2":
        """The model `M2.save` wrote to `path`, its tensors on `map_location`, with the given backend.

        Reads with `torch.load(weights_only=True)`: a checkpoint holds tensors and plain values only."""
        try:
            checkpoint = torch.load(path, map_location=map_location, weights_only=True)
        except FileNotFoundError:
            raise
        except Exception as exc:  # pickle, zip and weights_only errors all mean "not a checkpoint we wrote"
            raise ValueError(f"{path}: not an M2 checkpoint written by M2.save ({exc.__class__.__name__})") from None
        if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"{path}: not an M2 checkpoint written by M2.save")
        model = cls(**checkpoint["config"], backend=backend)
        model.load_state_dict(checkpoint["state_dict"], assign=True)  # the tensors as loaded: their device
        return model

    def resolved_backend(self, device: Optional[torch.device] = None) -> str:
        """The concrete backend the loss uses on `device` (default: the parameters' device)."""
        if device is None:
            device = self.encoder.input.weight.device
        return backends.resolve(self._backend, torch.device(device))

    # ------------------------------------------------------------------ the objective

    def loss(
        self,
        x_l: Optional[torch.Tensor],
        y_l: Optional[torch.Tensor],
        x_u: Optional[torch.Tensor],
        *,
        alpha: float,
        eps_l: Optional[torch.Tensor] = None,
        eps_u: Optional[torch.Tensor] = None,
        reduction: str = "mean",
        generator: Optional[torch.Generator] = None,
    ) -> torch.Tensor:
        """Minus the M2 objective (docs/design.md section 1).

        Args:
            x_l: (n_l, D) labelled inputs in [0, 1], or None / empty.
            y_l: (n_l,) int64 labels in [0, C).
            x_u: (n_u, D) unlabelled inputs, or None / empty.
            alpha: weight of -log q(y|x) per labelled example (Kingma et al.: 0.1 * N_total / N_labelled).
            eps_l: (n_l, z_dim) noise for the labelled reparameterization; drawn from N(0, I) when None.
            eps_u: (n_u, C, z_dim) noise, one draw per (example, class); drawn when None.
            reduction: "mean" (sum over all examples / (n_l + n_u)), "sum", or "none" (per-example
                losses, labelled first).
            generator: the torch.Generator for drawn noise.
        """
        if reduction not in REDUCTIONS:
            raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
        x_l, y_l, x_u, eps_l, eps_u = self._prepare(x_l, y_l, x_u, eps_l, eps_u, generator)
        name = self.resolved_backend(x_l.device)
        if name == "reference":
            losses = reference.per_example_losses(self, x_l, y_l, x_u, eps_l, eps_u, float(alpha))
        else:
            ops = backends.get_ops(name)
            weights = self.objective_weights()
            losses = objective.per_example_losses(ops, weights, x_l, y_l, x_u, eps_l, eps_u, float(alpha))
        if reduction == "none":
            return losses
        total = losses.sum()
        return total if reduction == "sum" else total / losses.shape[0]

    def objective_weights(self) -> objective.ObjectiveWeights:
        """The networks' weights as the fused objective takes them: the first layers' weights split into
        input and class columns (`split`: its backward is one copy, not a zero-fill per slice), the bias
        folded into the class columns, the other layers as callables."""
        enc, dec = self.encoder, self.decoder
        w_x, w_y = enc.input.weight.split([self.x_dim, self.n_classes], dim=1)
        w_z, w_y_dec = dec.input.weight.split([self.z_dim, self.n_classes], dim=1)
        return objective.ObjectiveWeights(
            classifier=self.classifier,
            enc_input=w_x,
            enc_columns=w_y + enc.input.bias.unsqueeze(1),
            enc_rest=lambda h: enc.head(enc.run_hidden_layers(h)),
            enc_activation=enc.activation,
            dec_input=w_z,
            dec_columns=w_y_dec + dec.input.bias.unsqueeze(1),
            dec_hidden=dec.run_hidden_layers,
            dec_activation=dec.activation,
            out_weight=dec.output.weight,
            out_bias=dec.output.bias,
        )

    def _prepare(self, x_l, y_l, x_u, eps_l, eps_u, generator):
        """Check shapes, dtypes and devices; turn None parts into empty tensors; draw missing noise."""
        weight = self.encoder.input.weight
        device = weight.device
        present = [t for t in (x_l, x_u) if t is not None and t.numel() > 0]
        dtype = present[0].dtype if present else weight.dtype
        if not present:
            raise ValueError("loss needs at least one example: x_l and x_u are both None or empty")
        D, C, Z = self.x_dim, self.n_classes, self.z_dim

        def inputs(x, name):
            if x is None:
                return torch.empty(0, D, dtype=dtype, device=device)
            if not isinstance(x, torch.Tensor) or x.dim() != 2 or (x.numel() and x.shape[1] != D):
                shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
                raise ValueError(f"{name} must be a (n, {D}) tensor, got {shape}")
            if not x.is_floating_point():
                raise TypeError(f"{name} must be a floating-point tensor, got {x.dtype}")
            if x.device != device:
                raise ValueError(f"{name} is on {x.device} but the model is on {device}")
            return x.reshape(x.shape[0], D).to(dtype)

        x_l, x_u = inputs(x_l, "x_l"), inputs(x_u, "x_u")
        n_l, n_u = x_l.shape[0], x_u.shape[0]
        if y_l is None:
            if n_l:
                raise ValueError("y_l is None but x_l has examples")
            y_l = torch.empty(0, dtype=torch.int64, device=device)
        if y_l.shape != (n_l,):
            raise ValueError(f"y_l must be ({n_l},) to match x_l, got {tuple(y_l.shape)}")
        if y_l.dtype != torch.int64:
            raise TypeError(f"y_l must be int64 class indices, got {y_l.dtype}")
        if y_l.device != device:
            raise ValueError(f"y_l is on {y_l.device} but the model is on {device}")
        if n_l and not _tracing() and bool(((y_l < 0) | (y_l >= C)).any()):
            raise ValueError(f"y_l must lie in [0, {C}), got values from {int(y_l.min())} to {int(y_l.max())}")

        def noise(eps, shape, name):
            if eps is None:
                return torch.randn(shape, dtype=dtype, device=device, generator=generator)
            if tuple(eps.shape) != shape:
                raise ValueError(f"{name} must have shape {shape}, got {tuple(eps.shape)}")
            if eps.device != device:
                raise ValueError(f"{name} is on {eps.device} but the model is on {device}")
            return eps.to(dtype)

        eps_l = noise(eps_l, (n_l, Z), "eps_l")
        eps_u = noise(eps_u, (n_u, C, Z), "eps_u")
        return x_l, y_l, x_u, eps_l, eps_u

    # ------------------------------------------------------------------ inference

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, D) -> int64 labels (B,), argmax of q(y|x)."""
        return self.classifier(x).argmax(dim=-1)

    def _class_vector(self, y: torch.Tensor, dtype) -> torch.Tensor:
        if y.dim() == 1:
            if y.dtype != torch.int64:
                raise TypeError(f"y must be int64 labels (B,) or a float (B, {self.n_classes}) vector")
            return F.one_hot(y, self.n_classes).to(dtype)
        if y.dim() == 2 and y.shape[1] == self.n_classes:
            return y.to(dtype)
        raise ValueError(f"y must be (B,) labels or (B, {self.n_classes}), got {tuple(y.shape)}")

    @torch.no_grad()
    def sample(
        self,
        y: torch.Tensor,
        z: Optional[torch.Tensor] = None,
        *,
        mean: bool = True,
        generator: Optional[torch.Generator] = None,
    ) -> torch.Tensor:
        """Images from p(x|y, z), z ~ N(0, I) unless given.

        y: (B,) int64 labels or (B, C) class vectors; z: (B, z_dim) or None. Returns (B, D): the
        Bernoulli means sigmoid(logits) when `mean`, else binary samples.
        """
        weight = self.decoder.output.weight
        y = self._class_vector(y.to(weight.device), weight.dtype)
        if z is None:
            z = torch.randn(y.shape[0], self.z_dim, device=weight.device, dtype=weight.dtype, generator=generator)
        probs = torch.sigmoid(self.decoder(z, y))
        return probs if mean else torch.bernoulli(probs, generator=generator)

    @torch.no_grad()
    def style_transfer(self, x: torch.Tensor) -> torch.Tensor:
        """Encode x under its predicted class (z = mu) and decode it under every class.

        x: (B, D) -> (B, C, D) Bernoulli means: the same style, each digit class.
        """
        y = F.one_hot(self.predict(x), self.n_classes).to(x.dtype)
        mu, _ = self.encoder(x, y)
        B, C = x.shape[0], self.n_classes
        z = mu.repeat_interleave(C, dim=0)
        y_all = torch.eye(C, dtype=x.dtype, device=x.device).repeat(B, 1)
        return torch.sigmoid(self.decoder(z, y_all)).view(B, C, self.x_dim)


def _tracing() -> bool:
    """True under torch.compile tracing or CUDA graph capture, where a data-dependent check must not run."""
    if torch.compiler.is_compiling():
        return True
    return torch.cuda.is_available() and torch.cuda.is_current_stream_capturing()
