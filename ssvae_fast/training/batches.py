"""Each step's batch: which examples, their binarization and their reparameterization noise, all drawn
from one torch.Generator so that a run is a function of its seed (and a checkpoint can hold its place)."""

from __future__ import annotations

from typing import NamedTuple, Optional

import torch

from .. import data
from ..images import random_shift


class Batch(NamedTuple):
    """One step's global batch: labelled examples first, then unlabelled; noise one draw per labelled
    example, one per (unlabelled example, class)."""

    x_l: torch.Tensor  # (n_l, D)
    y_l: torch.Tensor  # (n_l,) int64
    x_u: torch.Tensor  # (n_u, D)
    eps_l: torch.Tensor  # (n_l, Z)
    eps_u: torch.Tensor  # (n_u, C, Z); (n_u, Z) for the Gumbel-softmax estimator
    gumbel: Optional[torch.Tensor] = None  # (n_u, C) Gumbel(0, 1) noise for that estimator
    c_l: Optional[torch.Tensor] = None  # (n_l, D) the classifier's inputs when they differ from x_l (shifted)
    c_u: Optional[torch.Tensor] = None  # (n_u, D) ... and from x_u

    @property
    def size(self) -> int:
        return self.x_l.shape[0] + self.x_u.shape[0]


class BatchSampler:
    """Indices of each step's labelled and unlabelled batch.

    Unlabelled: a permutation of the pool, `batch_size` at a time; a new permutation once it is used up
    (the last batch of a pass may be smaller). Labelled: a permutation of the labelled examples,
    `labelled_batch_size` at a time; a new one when fewer than that remain. Every draw uses `generator`,
    unlabelled permutation first."""

    def __init__(self, n_labelled: int, n_unlabelled: int, labelled_batch_size: int, batch_size: int,
                 generator: torch.Generator):
        self.n_labelled, self.n_unlabelled = n_labelled, n_unlabelled
        self.labelled_batch_size, self.batch_size = labelled_batch_size, batch_size
        self.generator = generator
        self.device = generator.device
        self.u_perm: Optional[torch.Tensor] = None
        self.u_pos = 0
        self.l_perm: Optional[torch.Tensor] = None
        self.l_pos = 0

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(labelled indices, unlabelled indices) of the next step."""
        if self.n_unlabelled == 0:
            idx_u = torch.empty(0, dtype=torch.int64, device=self.device)
        else:
            if self.u_perm is None or self.u_pos >= self.n_unlabelled:
                self.u_perm = torch.randperm(self.n_unlabelled, device=self.device, generator=self.generator)
                self.u_pos = 0
            idx_u = self.u_perm[self.u_pos : self.u_pos + self.batch_size]
            self.u_pos += self.batch_size
        if self.l_perm is None or self.l_pos + self.labelled_batch_size > self.n_labelled:
            self.l_perm = torch.randperm(self.n_labelled, device=self.device, generator=self.generator)
            self.l_pos = 0
        idx_l = self.l_perm[self.l_pos : self.l_pos + self.labelled_batch_size]
        self.l_pos += self.labelled_batch_size
        return idx_l, idx_u

    def state_dict(self) -> dict:
        """Where the sampler stands, as tensors and ints (the generator's state is saved with the others)."""
        empty = torch.empty(0, dtype=torch.int64)
        return {
            "u_perm": empty if self.u_perm is None else self.u_perm.cpu(), "u_pos": self.u_pos,
            "l_perm": empty if self.l_perm is None else self.l_perm.cpu(), "l_pos": self.l_pos,
        }

    def load_state_dict(self, state: dict) -> None:
        self.u_perm = state["u_perm"].to(self.device) if state["u_perm"].numel() else None
        self.l_perm = state["l_perm"].to(self.device) if state["l_perm"].numel() else None
        self.u_pos, self.l_pos = int(state["u_pos"]), int(state["l_pos"])


def draw(sampler: BatchSampler, x_l, y_l, x_u, *, binarize: str, n_classes: int, z_dim: int,
         n_samples: int = 1, estimator: str = "enumerate", shift: int = 0) -> Batch:
    """The next global batch: indices, binarized pixels, then noise (labelled, unlabelled), in that order
    from the sampler's generator. Every process of a multi-process run draws the same batch. With
    n_samples K > 1 every example appears K times in a row, each copy with its own noise: the batch's mean
    loss is then the mean over examples of their K-sample Monte-Carlo losses (`M2.loss(n_samples=K)`).
    shift > 0: the classifier's inputs c_l and c_u are the binarized images, each translated by its own random
    offset of up to `shift` pixels (`images.random_shift`), drawn last; the generative terms read x."""
    generator = sampler.generator
    idx_l, idx_u = sampler.next()
    if n_samples > 1:
        idx_l, idx_u = idx_l.repeat_interleave(n_samples), idx_u.repeat_interleave(n_samples)
    xb_l = data.binarize(x_l[idx_l], binarize, generator)
    xb_u = data.binarize(x_u[idx_u], binarize, generator)
    eps_l = torch.randn(xb_l.shape[0], z_dim, dtype=xb_l.dtype, device=xb_l.device, generator=generator)
    if estimator == "gumbel":
        eps_u = torch.randn(xb_u.shape[0], z_dim, dtype=xb_u.dtype, device=xb_u.device, generator=generator)
        uniform = torch.rand(xb_u.shape[0], n_classes, dtype=xb_u.dtype, device=xb_u.device, generator=generator)
        gumbel = -torch.log(-torch.log(uniform.clamp_min(torch.finfo(uniform.dtype).tiny)))
    else:
        eps_u = torch.randn(xb_u.shape[0], n_classes, z_dim, dtype=xb_u.dtype, device=xb_u.device,
                            generator=generator)
        gumbel = None
    if shift > 0:
        return Batch(xb_l, y_l[idx_l], xb_u, eps_l, eps_u, gumbel,
                     random_shift(xb_l, shift, generator), random_shift(xb_u, shift, generator))
    return Batch(xb_l, y_l[idx_l], xb_u, eps_l, eps_u, gumbel)
