"""`M1M2`: Kingma et al.'s stacked model, M2 with a Gaussian likelihood on the latent features of a trained M1.

M1 (a VAE trained on every training image, labels unused) maps an image x to q(z1|x); M2 is trained on
features z1 ~ q(z1|x), drawn anew for every batch, with a Gaussian p(z1|y, z2). M1 stays fixed while M2
trains. An image is classified by M2's classifier on M1's mean features (Kingma et al.'s q(y|z1)), or, for
an M2 built with `classifier_x_dim = m1.x_dim`, by M2's classifier on the image itself: q(y|x), for
instance a convolutional one. Either is a distribution over y given what the bound conditions on (z1 is
drawn from q(z1|x)), so the objective stays a lower bound on log p(z1) per feature draw. Everything an M2 offers on images
(predict, sample, style_transfer, loss) this model offers too: pictures go back to pixel space through M1's
decoder.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from . import saving
from .m1 import M1
from .model import M2

CHECKPOINT_FORMAT = "ssvae_fast.M1M2/1"


class M1M2(nn.Module):
    """M2 (`m2`, x_dim = m1.z_dim) on the features of a fixed M1 (`m1`, its parameters frozen).

    Example:
        >>> m1 = M1(784, 50, hidden=(600, 600)); ...train m1...
        >>> model = M1M2(m1, M2(50, 10, 50, hidden=(500,), likelihood="gaussian"))
        >>> # or q(y|x) on the images, a CNN: M2(50, 10, 50, likelihood="gaussian", classifier="conv",
        >>> #                                    classifier_x_dim=784)
        >>> model.loss(x_l, y_l, x_u, alpha=...).backward()     # images in, M2's loss on M1's features
        >>> model.predict(x_test)
    """

    def __init__(self, m1: M1, m2: M2):
        super().__init__()
        if not isinstance(m1, M1) or not isinstance(m2, M2):
            raise TypeError(f"M1M2 takes an M1 and an M2, got {type(m1).__name__} and {type(m2).__name__}")
        if m2.x_dim != m1.z_dim:
            raise ValueError(f"M1M2: M2's x_dim ({m2.x_dim}) must be M1's z_dim ({m1.z_dim}): M2 models M1's features")
        if not m2.classifier_reads_x and m2.classifier_x_dim != m1.x_dim:
            raise ValueError(f"M1M2: M2's classifier_x_dim ({m2.classifier_x_dim}) must be M1's x_dim ({m1.x_dim}): "
                             "a classifier with inputs of its own reads the images")
        self.m1, self.m2 = m1, m2
        m1.requires_grad_(False)
        self.n_classes, self.z_dim, self.x_dim = m2.n_classes, m2.z_dim, m1.x_dim

    @property
    def config(self) -> dict:
        return {"m1": self.m1.config, "m2": self.m2.config}

    @property
    def decoder(self):
        """M2's decoder (its parameters say where and in which dtype the model lives)."""
        return self.m2.decoder

    @property
    def backend(self) -> str:
        return self.m2.backend

    @backend.setter
    def backend(self, name: str):
        self.m1.backend = self.m2.backend = name

    def resolved_backend(self, device: Optional[torch.device] = None) -> str:
        return self.m2.resolved_backend(device)

    def train(self, mode: bool = True):
        super().train(mode)
        self.m1.eval()  # fixed: never in training mode
        return self

    def save(self, path) -> None:
        saving.save(self, path, CHECKPOINT_FORMAT)

    @classmethod
    def from_config(cls, config: dict, *, backend: str = "auto") -> "M1M2":
        return cls(M1(**config["m1"], backend=backend), M2(**config["m2"], backend=backend))

    @classmethod
    def load(cls, path, *, backend: str = "auto", map_location="cpu") -> "M1M2":
        return saving.load(cls, path, CHECKPOINT_FORMAT, lambda config: cls.from_config(config, backend=backend),
                           map_location)

    # ------------------------------------------------------------------ features

    def mean_features(self, x: torch.Tensor) -> torch.Tensor:
        """M1's mean features of images x, (B, m1.z_dim): what M2 classifies."""
        return self.m1.features(self.m1._check_x(x, "M1M2"), sample=False)

    def objective_view(self, x: torch.Tensor) -> tuple:
        """(the model M2's objective runs on, x as it sees it): (m2, M1's mean features of x)."""
        return self.m2, self.mean_features(x)

    # ------------------------------------------------------------------ M2's interface on images

    @property
    def classifies_images(self) -> bool:
        """Whether M2's classifier reads the images (q(y|x)) rather than M1's features (q(y|z1))."""
        return not self.m2.classifier_reads_x

    def loss(self, x_l, y_l, x_u, *, alpha: float, generator: Optional[torch.Generator] = None, **kwargs):
        """M2's loss (`M2.loss`, same keywords) on features z1 ~ q(z1|x) of the images x_l and x_u, drawn from
        `generator` (the global generator when None) before M2's own noise; a classifier on the images reads
        x_l and x_u themselves, or `classifier_inputs` = (c_l, c_u) when given (say, translated copies)."""
        images = [None if x is None else self.m1._check_x(x, "M1M2.loss") for x in (x_l, x_u)]  # checked once
        if self.classifies_images and kwargs.get("classifier_inputs") is None:
            kwargs["classifier_inputs"] = tuple(images)
        feats = [None if x is None or x.numel() == 0 else self.m1.features(x, sample=True, generator=generator)
                 for x in images]
        return self.m2.loss(feats[0], y_l, feats[1], alpha=alpha, generator=generator, **kwargs)

    def classifier(self, x: torch.Tensor) -> torch.Tensor:
        """M2's class logits of images x (on M1's mean features, or on x for a classifier of the images)."""
        if self.classifies_images:
            return self.m2.classifier(self.m1._check_x(x, "M1M2"))
        return self.m2.classifier(self.mean_features(x))

    def encoder(self, x: torch.Tensor, y: torch.Tensor) -> tuple:
        """M2's q(z2|z1, y) of images x (z1 = M1's mean features)."""
        return self.m2.encoder(self.mean_features(x), y)

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Labels (B,) of images x: argmax of M2's q(y|z1) at M1's mean features (of q(y|x) for a classifier of
        the images)."""
        if self.classifies_images:
            return self.m2.predict(self.m1._check_x(x, "M1M2.predict"))
        return self.m2.predict(self.mean_features(x))

    @torch.no_grad()
    def sample(self, y: torch.Tensor, z: Optional[torch.Tensor] = None, *, mean: bool = True,
               generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """Images (B, x_dim): M2 draws features z1 from p(z1|y, z2) (their means when `mean`), M1's decoder
        renders their mean images."""
        return self.m1.decode(self.m2.sample(y, z, mean=mean, generator=generator))

    @torch.no_grad()
    def style_transfer(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, x_dim): each image's M2 style decoded under every class, rendered by M1's decoder."""
        classes = self.predict(x) if self.classifies_images else None
        styles = self.m2.style_transfer(self.mean_features(x), classes=classes)  # (B, C, z1)
        return self.m1.decode(styles.reshape(-1, styles.shape[-1])).view(x.shape[0], self.n_classes, self.x_dim)


def objective_view(model, x: torch.Tensor) -> tuple:
    """(the M2 whose objective scores x, x as that M2 sees it): (model, x) for an M2, (m2, M1's features) for
    an M1M2."""
    view = getattr(model, "objective_view", None)
    return view(x) if view is not None else (model, x)


__all__ = ["M1M2", "objective_view"]
