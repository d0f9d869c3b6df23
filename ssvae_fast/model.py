"""`M2`: the semi-supervised VAE of Kingma et al. (NIPS 2014) as an `nn.Module` with a fast loss."""

from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from torch import nn

from . import backends, objective, reference, saving, validation
from .functional import ACTIVATIONS, LIKELIHOODS
from .networks import Classifier, ConvClassifier, Decoder, Encoder

REDUCTIONS = ("mean", "sum", "none")
ESTIMATORS = ("enumerate", "gumbel")
CLASSIFIERS = ("mlp", "conv")
CHECKPOINT_FORMAT = "ssvae_fast.M2/1"


def _sizes(sizes: Optional[Sequence[int]]) -> Optional[list]:
    return None if sizes is None else [int(s) for s in sizes]


class M2(nn.Module):
    """M2: classifier q(y|x), encoder q(z|x,y), decoder p(x|y,z), priors N(0, I) and uniform.

    Args:
        x_dim: D, the number of pixels (inputs in [0, 1]) or features.
        n_classes: C.
        z_dim: the latent size.
        hidden: hidden layer sizes of all three networks (each needs at least one for the encoder
            and the decoder); `classifier_hidden`, `encoder_hidden`, `decoder_hidden` override it per
            network.
        activation: "softplus" (default) or "relu".
        likelihood: "bernoulli" (default; inputs in [0, 1]) or "gaussian" (any finite inputs, e.g. M1's
            features in M1+M2; a learned per-dimension log-variance `decoder.logvar`).
        classifier: "mlp" (default) or "conv" (`networks.ConvClassifier`, for square images; the encoder
            and the decoder stay MLPs on the fused kernels).
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
        likelihood: str = "bernoulli",
        classifier: str = "mlp",
        classifier_x_dim: Optional[int] = None,
    ):
        super().__init__()
        where = "M2"
        validation.choice(where, "likelihood", likelihood, LIKELIHOODS)
        validation.choice(where, "classifier", classifier, CLASSIFIERS)
        x_dim = validation.positive_int(where, "x_dim", x_dim)
        n_classes = validation.positive_int(where, "n_classes", n_classes, minimum=2)
        z_dim = validation.positive_int(where, "z_dim", z_dim)
        validation.choice(where, "activation", activation, ACTIVATIONS)
        hidden = validation.sizes(where, "hidden", hidden, allow_empty=True)
        if classifier_x_dim is not None:
            classifier_x_dim = validation.positive_int(where, "classifier_x_dim", classifier_x_dim)

        def pick(network: str, override, allow_empty: bool):
            name, value = (f"{network}_hidden", override) if override is not None else ("hidden", hidden)
            why = f" (the {network} needs at least one hidden layer)"
            return validation.sizes(where, name, value, allow_empty=allow_empty, what=why)

        classifier_sizes = pick("classifier", classifier_hidden, True)
        encoder_sizes = pick("encoder", encoder_hidden, False)
        decoder_sizes = pick("decoder", decoder_hidden, False)
        self.backend = backend  # validated by the setter
        self.x_dim, self.n_classes, self.z_dim = int(x_dim), int(n_classes), int(z_dim)
        self.activation = activation
        # What q(y|.) reads: x, or inputs of its own width (M1+M2: the images, where x is M1's features).
        self.classifier_x_dim = int(classifier_x_dim or x_dim)
        if classifier == "conv":
            self.classifier = ConvClassifier(self.classifier_x_dim, n_classes)
        else:
            self.classifier = Classifier(self.classifier_x_dim, n_classes, classifier_sizes, activation)
        self.encoder = Encoder(x_dim, n_classes, z_dim, encoder_sizes, activation)
        self.decoder = Decoder(x_dim, n_classes, z_dim, decoder_sizes, activation, likelihood)
        self.likelihood = likelihood
        self._config = dict(
            x_dim=x_dim, n_classes=n_classes, z_dim=z_dim, hidden=_sizes(hidden),
            activation=activation, classifier_hidden=_sizes(classifier_hidden),
            encoder_hidden=_sizes(encoder_hidden), decoder_hidden=_sizes(decoder_hidden), likelihood=likelihood,
            classifier=classifier, classifier_x_dim=None if classifier_x_dim is None else int(classifier_x_dim),
        )

    @property
    def backend(self) -> str:
        return self._backend

    @backend.setter
    def backend(self, name: str):
        self._backend = validation.choice("M2", "backend", name, ("auto",) + backends.BACKENDS)

    def extra_repr(self) -> str:
        return f"backend={self._backend!r}"

    @property
    def config(self) -> dict:
        """The constructor's arguments except `backend`: `M2(**model.config)` builds the same networks."""
        return dict(self._config)

    def save(self, path) -> None:
        """Write the constructor's arguments and the parameters to `path` (one file; `M2.load` reads it)."""
        saving.save(self, path, CHECKPOINT_FORMAT)

    @classmethod
    def load(cls, path, *, backend: str = "auto", map_location="cpu") -> "M2":
        """The model `M2.save` wrote to `path`, its tensors on `map_location`, with the given backend.

        Reads with `torch.load(weights_only=True)`: a checkpoint holds tensors and plain values only."""
        return saving.load(cls, path, CHECKPOINT_FORMAT, lambda config: cls(**config, backend=backend), map_location)

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
        chunk_size: Optional[int] = None,
        kl_weight: float = 1.0,
        n_samples: int = 1,
        estimator: str = "enumerate",
        temperature: float = 1.0,
        gumbel: Optional[torch.Tensor] = None,
        classifier_inputs: Optional[tuple] = None,
    ) -> torch.Tensor:
        """Minus the M2 objective (docs/design.md section 1).

        Args:
            x_l: (n_l, D) labelled inputs in [0, 1], or None / empty.
            y_l: (n_l,) int64 labels in [0, C).
            x_u: (n_u, D) unlabelled inputs in [0, 1], or None / empty.
            alpha: weight of -log q(y|x) per labelled example, finite and >= 0 (Kingma et al.:
                0.1 * N_total / N_labelled).
            eps_l: (n_l, z_dim) noise for the labelled reparameterization; drawn from N(0, I) when None.
            eps_u: (n_u, C, z_dim) noise, one draw per (example, class) ((n_u, z_dim) for the "gumbel"
                estimator); drawn when None.
            reduction: "mean" (sum over all examples / (n_l + n_u)), "sum", or "none" (per-example
                losses, labelled first).
            generator: the torch.Generator for drawn noise.
            chunk_size: None (one pass), or the number of examples (labelled first, then unlabelled)
                computed at a time: each chunk's activations are recomputed in the backward
                (activation checkpointing), so memory is bounded by one chunk's, for the same result up
                to float summation order.
            kl_weight: the weight of every KL term (1: the objective; below 1 during a KL warm-up).
            n_samples: K, Monte-Carlo samples of z per (x, y): each example counts K times with independent
                noise and its loss is the mean of the K (noise given explicitly must then be for the K
                copies: eps_l (K n_l, z_dim), eps_u (K n_u, C, z_dim), copy k of example i at row i K + k).
            estimator: the unlabelled term's: "enumerate" (exact: every class, weighted by q(c|x)) or
                "gumbel" (one relaxed class y = softmax((log q(y|x) + g) / temperature), g ~ Gumbel(0, 1):
                one decoder pass per example; `gumbel` (n_u, C) gives g explicitly).
            classifier_inputs: (c_l (n_l, W), c_u (n_u, W)) what q(y|.) reads instead of x_l and x_u, for a
                model built with classifier_x_dim = W (M1+M2: the images, where x is M1's features); None
                or empty parts where x_l or x_u is. Required for such a model, refused otherwise.

        Inputs, labels and noise must be on the parameters' device, floating inputs and noise in the
        parameters' dtype (any float dtype under torch.autocast). Raises TypeError or ValueError naming
        the argument otherwise; pixel and label values are checked unless `ssvae_fast.set_validation(False)`.
        """
        where = "M2.loss"
        validation.choice(where, "reduction", reduction, REDUCTIONS)
        alpha = validation.alpha(where, alpha)
        kl_weight = validation.alpha(where, kl_weight, name="kl_weight")
        n_samples = validation.positive_int(where, "n_samples", n_samples)
        validation.choice(where, "estimator", estimator, ESTIMATORS)
        temperature = validation.alpha(where, temperature, name="temperature")
        if temperature == 0:
            validation.fail(where, "temperature", "a finite number > 0", "0.0")
        if chunk_size is not None:
            chunk_size = validation.positive_int(where, "chunk_size", chunk_size)
        if generator is not None and not isinstance(generator, torch.Generator):
            validation.fail(where, "generator", "a torch.Generator or None", validation.describe(generator),
                            TypeError)
        x_l, y_l, x_u, eps_l, eps_u, gumbel = self._prepare(x_l, y_l, x_u, eps_l, eps_u, generator, n_samples,
                                                            estimator, gumbel)
        cls = self._classifier_inputs(classifier_inputs, x_l, x_u)
        name = self.resolved_backend(x_l.device)
        if n_samples > 1:  # K copies of every example, each with its own noise
            K = n_samples
            x_l, y_l, x_u = x_l.repeat_interleave(K, 0), y_l.repeat_interleave(K), x_u.repeat_interleave(K, 0)
            if cls is not None:
                cls = tuple(c.repeat_interleave(K, 0) for c in cls)
        relaxed = None if estimator == "enumerate" else temperature
        args = (name, x_l, y_l, x_u, eps_l, eps_u, gumbel, alpha, chunk_size, kl_weight, relaxed, cls)
        if validation.tracing():  # torch.compile / CUDA graph capture: nothing data-dependent, no handlers
            losses = self._per_example_losses(*args)
        else:
            try:
                losses = self._per_example_losses(*args)
            except Exception as exc:
                if validation.is_out_of_memory(exc):
                    raise validation.out_of_memory(exc, self._memory_advice(x_l, x_u, chunk_size)) from exc
                raise
        if n_samples > 1:  # (K n_l + K n_u,) -> the mean over the copies, labelled first
            n_l, n_u = x_l.shape[0] // n_samples, x_u.shape[0] // n_samples
            lab = losses[: n_l * n_samples].view(n_l, n_samples).mean(1)
            losses = torch.cat([lab, losses[n_l * n_samples:].view(n_u, n_samples).mean(1)])
        if reduction == "none":
            return losses
        total = losses.sum()
        return total if reduction == "sum" else total / losses.shape[0]

    def _per_example_losses(self, name, x_l, y_l, x_u, eps_l, eps_u, gumbel, alpha, chunk_size, kl_weight,
                            temperature, classifier_inputs=None) -> torch.Tensor:
        """(n_l + n_u,) losses, labelled first; with chunk_size, chunk_size examples at a time, each chunk
        checkpointed when a gradient is needed (its activations recomputed in the backward). temperature:
        None for the exact enumeration, else the Gumbel-softmax estimator's. classifier_inputs: (c_l, c_u) or
        None (the classifier reads x)."""
        own = classifier_inputs is not None

        def compute(x_l, y_l, x_u, eps_l, eps_u, gumbel, c_l=None, c_u=None):
            cls = (c_l, c_u) if own else None
            if temperature is not None:
                if name == "reference":
                    return reference.per_example_losses_relaxed(self, x_l, y_l, x_u, eps_l, eps_u, gumbel, temperature,
                                                                alpha, kl_weight, cls)
                return objective.per_example_losses_relaxed(backends.get_ops(name), self.objective_weights(), x_l, y_l,
                                                            x_u, eps_l, eps_u, gumbel, temperature, alpha, kl_weight,
                                                            cls)
            if name == "reference":
                return reference.per_example_losses(self, x_l, y_l, x_u, eps_l, eps_u, alpha, kl_weight, cls)
            weights = self.objective_weights()
            return objective.per_example_losses(backends.get_ops(name), weights, x_l, y_l, x_u, eps_l, eps_u, alpha,
                                                kl_weight, cls)

        def losses(*inputs):
            if validation.tracing():
                return compute(*inputs)
            # The ops need not check again what _prepare checked (nor when the backward recomputes a chunk).
            with validation.suspended():
                return compute(*inputs)

        n_l, n_u = x_l.shape[0], x_u.shape[0]
        extra = tuple(classifier_inputs) if own else ()
        if chunk_size is None or n_l + n_u <= chunk_size:
            return losses(x_l, y_l, x_u, eps_l, eps_u, gumbel, *extra)
        parts = []
        for start in range(0, n_l + n_u, chunk_size):
            stop = start + chunk_size
            lab = slice(min(start, n_l), min(stop, n_l))
            unl = slice(max(start - n_l, 0), max(min(stop - n_l, n_u), 0))
            part = (x_l[lab], y_l[lab], x_u[unl], eps_l[lab], eps_u[unl], gumbel[unl])
            if own:
                part += (extra[0][lab], extra[1][unl])
            if torch.is_grad_enabled():
                parts.append(torch.utils.checkpoint.checkpoint(
                    losses, *part, use_reentrant=False, preserve_rng_state=False))
            else:
                parts.append(losses(*part))
        return torch.cat(parts)

    def _memory_advice(self, x_l, x_u, chunk_size) -> str:
        n_l, n_u = x_l.shape[0], x_u.shape[0]
        rows = n_l + n_u * self.n_classes
        widest = max(self.x_dim, *(m.out_features for m in self.modules() if isinstance(m, nn.Linear)))
        if chunk_size is None:
            fix = ("pass chunk_size=N to M2.loss to compute N examples at a time (memory then grows with "
                   "N * C * (H + D), not with the batch), for the same result up to float summation order")
        else:
            fix = f"pass a smaller chunk_size than {chunk_size} to M2.loss"
        return (f"M2.loss: out of memory for a batch of {n_l} labelled + {n_u} unlabelled examples "
                f"({rows} encoder/decoder rows, activations up to {widest} wide); {fix}")

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
            out_logvar=dec.logvar if self.likelihood == "gaussian" else None,
        )

    def _prepare(self, x_l, y_l, x_u, eps_l, eps_u, generator, n_samples: int = 1, estimator: str = "enumerate",
                 gumbel=None):
        """Check types, shapes, dtypes, devices and (when on) values; turn None parts into empty tensors;
        draw missing noise."""
        where = "M2.loss"
        weight = self.encoder.input.weight
        device = weight.device
        D, C, Z = self.x_dim, self.n_classes, self.z_dim
        for name, x in (("x_l", x_l), ("x_u", x_u)):
            if x is not None:
                validation.tensor(where, name, x)
        present = [(name, x) for name, x in (("x_l", x_l), ("x_u", x_u)) if x is not None and x.numel() > 0]
        if not present:
            validation.fail(where, "x_l and x_u", "at least one example between them",
                            "both None or empty")
        first_name, first = present[0]
        dtype = first.dtype

        def inputs(x, name):
            if x is None:
                return torch.empty(0, D, dtype=dtype, device=device)
            if x.dim() != 2 or (x.numel() and x.shape[1] != D):
                validation.fail(where, name, f"a (n, {D}) tensor (D = x_dim = {D})", validation.describe(x))
            validation.floating(where, name, x)
            validation.on_device(where, name, x, device)
            if x.numel():
                validation.same_dtype(where, name, x, weight.dtype, "the model's parameters")
                if x is not first and x.dtype != dtype:
                    validation.fail(where, name, f"a {validation.dtype_name(dtype)} tensor (the dtype of "
                                    f"{first_name})", validation.describe(x), TypeError)
            return x.reshape(x.shape[0], D).to(dtype)

        x_l, x_u = inputs(x_l, "x_l"), inputs(x_u, "x_u")
        n_l, n_u = x_l.shape[0], x_u.shape[0]
        if y_l is None:
            if n_l:
                validation.fail(where, "y_l", f"a ({n_l},) int64 tensor, one label per row of x_l", "None")
            y_l = torch.empty(0, dtype=torch.int64, device=device)
        validation.tensor(where, "y_l", y_l)
        if tuple(y_l.shape) != (n_l,):
            validation.fail(where, "y_l", f"a ({n_l},) tensor, one label per row of x_l (n_l = {n_l})",
                            validation.describe(y_l))
        validation.labels_dtype(where, "y_l", y_l)
        validation.on_device(where, "y_l", y_l, device)

        def noise(eps, shape, name, what):
            if eps is None:
                return torch.randn(shape, dtype=dtype, device=device, generator=generator)
            validation.tensor(where, name, eps)
            if tuple(eps.shape) != shape:
                validation.fail(where, name, f"a {shape} tensor ({what})", validation.describe(eps))
            validation.floating(where, name, eps)
            validation.on_device(where, name, eps, device)
            if eps.numel() and eps.dtype != dtype and not validation.autocasting(device):
                validation.fail(where, name, f"a {validation.dtype_name(dtype)} tensor (the dtype of {first_name})",
                                validation.describe(eps), TypeError)
            return eps.to(dtype)

        K = n_samples
        checks = []
        eps_l = noise(eps_l, (K * n_l, Z), "eps_l", "K n_l, z_dim: one draw per labelled example and sample")
        if estimator == "enumerate":
            eps_u = noise(eps_u, (K * n_u, C, Z), "eps_u",
                          "K n_u, C, z_dim: one draw per unlabelled example, class and sample")
            if gumbel is not None:
                validation.fail(where, "gumbel", "None with the 'enumerate' estimator", validation.describe(gumbel))
            gumbel = x_u.new_empty((K * n_u, 0))
        else:
            eps_u = noise(eps_u, (K * n_u, Z), "eps_u", "K n_u, z_dim: one draw per unlabelled example and sample")
            if gumbel is None:
                uniform = torch.rand((K * n_u, C), dtype=dtype, device=device, generator=generator)
                gumbel = -torch.log(-torch.log(uniform.clamp_min(torch.finfo(dtype).tiny)))
            else:
                gumbel = noise(gumbel, (K * n_u, C), "gumbel", "K n_u, C: Gumbel(0, 1) noise per unlabelled example")
                checks.append((validation.finite, "gumbel", gumbel))
        inputs_check = self._inputs_check()
        validation.check_values(
            where,
            (inputs_check, "x_l", x_l),
            (inputs_check, "x_u", x_u),
            (validation.class_indices, "y_l", y_l, C),
            *checks,
        )
        return x_l, y_l, x_u, eps_l, eps_u, gumbel

    @property
    def classifier_reads_x(self) -> bool:
        """Whether q(y|.) reads x (the default), rather than inputs of its own (`classifier_x_dim`)."""
        return self._config["classifier_x_dim"] is None

    def _classifier_inputs(self, classifier_inputs, x_l, x_u) -> Optional[tuple]:
        """`classifier_inputs` checked against the prepared x_l and x_u: (c_l, c_u) in x's dtype, or None when
        the classifier reads x."""
        where, W = "M2.loss", self.classifier_x_dim
        if self.classifier_reads_x:
            if classifier_inputs is not None:
                validation.fail(where, "classifier_inputs", "None (this model's classifier reads x; build the model "
                                "with classifier_x_dim for a classifier with inputs of its own)",
                                validation.describe(classifier_inputs), TypeError)
            return None
        expected = f"a pair (c_l, c_u) of (n, {W}) tensors (this model's classifier reads inputs of width {W})"
        if not isinstance(classifier_inputs, (tuple, list)) or len(classifier_inputs) != 2:
            validation.fail(where, "classifier_inputs", expected, validation.describe(classifier_inputs), TypeError)
        out = []
        for i, (c, x) in enumerate(zip(classifier_inputs, (x_l, x_u))):
            name, n = f"classifier_inputs[{i}]", x.shape[0]
            if c is None and n == 0:
                out.append(x.new_empty((0, W)))
                continue
            validation.tensor(where, name, c)
            if tuple(c.shape) != (n, W):
                validation.fail(where, name, f"a ({n}, {W}) tensor (a row per row of {('x_l', 'x_u')[i]})",
                                validation.describe(c))
            validation.floating(where, name, c)
            validation.on_device(where, name, c, x.device)
            validation.same_dtype(where, name, c, x.dtype, "x")
            validation.check_values(where, (validation.finite, name, c))
            out.append(c.to(x.dtype))
        return tuple(out)

    def _inputs_check(self):
        """The value check of the inputs: in [0, 1] for the Bernoulli likelihood, finite for the Gaussian."""
        return validation.unit_interval if self.likelihood == "bernoulli" else validation.finite

    # ------------------------------------------------------------------ bounds in nats

    @torch.no_grad()
    def elbo(self, x: torch.Tensor, *, n_samples: int = 1, generator: Optional[torch.Generator] = None):
        """The ELBO of each unlabelled x in nats, (B,): sum_c q(c|x) [-L(x, c)] - sum_c q(c|x) log q(c|x) (minus
        the unlabelled loss), averaged over `n_samples` draws of z per (x, c); the model's backend."""
        x = self._images(x, "M2.elbo")
        return -self.loss(None, None, x, alpha=0.0, n_samples=n_samples, reduction="none", generator=generator)

    @torch.no_grad()
    def log_likelihood(self, x: torch.Tensor, *, n_samples: int = 1000, batch_size: int = 100,
                       generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """An importance-weighted bound on log p(x) in nats, (B,): the sum over classes stays exact and each
        p(x|y) is estimated from K = n_samples draws of q(z|x, y),

            log p(x) >= E log sum_y p(y) (1/K) sum_k p(x|y, z_k) p(z_k) / q(z_k|x, y)

        (an unbiased estimate of p(x) inside the log). Plain torch on the model's networks."""
        x = self._images(x, "M2.log_likelihood")
        K = validation.positive_int("M2.log_likelihood", "n_samples", n_samples)
        C, Z = self.n_classes, self.z_dim
        parts = []
        for start in range(0, x.shape[0], batch_size):
            xb = x[start : start + batch_size]
            B = xb.shape[0]
            y = torch.eye(C, dtype=x.dtype, device=x.device).repeat(B, 1)  # (B C, C): class c of example b
            x_rows = xb.repeat_interleave(C, 0)
            mu, logvar = self.encoder(x_rows, y)
            eps = torch.randn(B * C, K, Z, dtype=x.dtype, device=x.device, generator=generator)
            z = mu.unsqueeze(1) + torch.exp(0.5 * logvar).unsqueeze(1) * eps  # (B C, K, Z)
            out = self.decoder(z.reshape(B * C * K, Z), y.repeat_interleave(K, 0))
            ll = self.decoder.log_likelihood(out, x_rows.repeat_interleave(K, 0)).view(B * C, K)
            log_w = ll - 0.5 * (z.square() - eps.square()).sum(-1) + 0.5 * logvar.sum(-1, keepdim=True)
            log_w = log_w.double().view(B, C * K)
            parts.append(torch.logsumexp(log_w, dim=1) - math.log(K) - math.log(C))
        return torch.cat(parts).to(x.dtype)

    # ------------------------------------------------------------------ inference

    def _images(self, x, where: str) -> torch.Tensor:
        """x (B, D) checked as the model's input images (type, shape, dtype, device; values when on)."""
        return validation.model_inputs(where, x, self.x_dim, self.classifier.output.weight, self._inputs_check())

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, D) (in [0, 1] for the Bernoulli likelihood) -> int64 labels (B,), argmax of q(y|x). For a
        model whose classifier reads inputs of its own (`classifier_x_dim`), x is those inputs."""
        if not self.classifier_reads_x:
            x = validation.model_inputs("M2.predict", x, self.classifier_x_dim, self.classifier.output.weight,
                                        validation.finite)
            return self.classifier(x).argmax(dim=-1)
        return self.classifier(self._images(x, "M2.predict")).argmax(dim=-1)

    def _class_vector(self, y, where: str) -> tuple:
        """(y as a (B, C) class vector on the model's device in its dtype, the value checks of y)."""
        weight = self.decoder.output.weight
        C = self.n_classes
        validation.tensor(where, "y", y)
        expected = f"(B,) int64 labels or a (B, {C}) float class vector"
        if y.dim() == 1:
            validation.labels_dtype(where, "y", y)
            y = y.to(weight.device)
            return y, (validation.class_indices, "y", y, C)
        if y.dim() == 2 and y.shape[1] == C:
            if not y.is_floating_point():
                validation.fail(where, "y", expected, validation.describe(y), TypeError)
            y = y.to(weight.device, weight.dtype)
            return y, (validation.finite, "y", y)
        validation.fail(where, "y", expected, validation.describe(y))

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

        y: (B,) int64 labels in [0, C) or (B, C) float class vectors (moved to the model's device);
        z: (B, z_dim) on the model's device in its dtype, or None. Returns (B, D): the means of p(x|y, z)
        (sigmoid(logits), or the Gaussian means) when `mean`, else samples of it.
        """
        where = "M2.sample"
        weight = self.decoder.output.weight
        y, y_check = self._class_vector(y, where)
        if not isinstance(mean, bool):
            validation.fail(where, "mean", "True or False", validation.describe(mean), TypeError)
        B = y.shape[0]
        if z is None:
            z = torch.randn(B, self.z_dim, device=weight.device, dtype=weight.dtype, generator=generator)
        else:
            validation.tensor(where, "z", z)
            if tuple(z.shape) != (B, self.z_dim):
                validation.fail(where, "z", f"a ({B}, {self.z_dim}) tensor (one latent per row of y)",
                                validation.describe(z))
            validation.floating(where, "z", z)
            validation.on_device(where, "z", z, weight.device)
            validation.same_dtype(where, "z", z, weight.dtype, "the model's parameters")
        validation.check_values(where, y_check, (validation.finite, "z", z))
        if y.dim() == 1:
            y = F.one_hot(y, self.n_classes).to(weight.dtype)
        out = self.decoder(z, y)
        return self.decoder.mean(out) if mean else self.decoder.draw(out, generator)

    @torch.no_grad()
    def style_transfer(self, x: torch.Tensor, *, classes: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Encode x under its predicted class (z = mu) and decode it under every class.

        x: (B, D) -> (B, C, D) means of p(x|y, z): the same style, each class. classes: (B,) int64, the
        classes to encode under instead of the predicted ones (required when the classifier reads inputs of
        its own).
        """
        where = "M2.style_transfer"
        x = self._images(x, where)
        if classes is None:
            if not self.classifier_reads_x:
                validation.fail(where, "classes", "the (B,) classes of x (this model's classifier does not read x)",
                                "None", TypeError)
            classes = self.classifier(x).argmax(dim=-1)
        else:
            validation.tensor(where, "classes", classes)
            validation.labels_dtype(where, "classes", classes)
            if tuple(classes.shape) != (x.shape[0],):
                validation.fail(where, "classes", f"a ({x.shape[0]},) tensor, one class per row of x",
                                validation.describe(classes))
            classes = classes.to(x.device)
            validation.check_values(where, (validation.class_indices, "classes", classes, self.n_classes))
        y = F.one_hot(classes, self.n_classes).to(x.dtype)
        mu, _ = self.encoder(x, y)
        B, C = x.shape[0], self.n_classes
        z = mu.repeat_interleave(C, dim=0)
        y_all = torch.eye(C, dtype=x.dtype, device=x.device).repeat(B, 1)
        return self.decoder.mean(self.decoder(z, y_all)).view(B, C, self.x_dim)
