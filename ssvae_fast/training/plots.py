"""A run's pictures, drawn with matplotlib (Agg, through `Figure` directly: no pyplot, no global backend).

    samples.png       class-conditional samples: a row per class, z ~ N(0, I)
    styles.png        the first test image of each class, then its style decoded under every class
    latent_pca.png    the first two principal components of the latent means of the test images, by class
    curves.png        the loss terms, validation accuracy and class consistency against the step
"""

from __future__ import annotations

import os

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib import image as mpimg
from matplotlib.figure import Figure

from ..images import image_grid, image_side, style_figure
from .evaluate import first_test_image_of_each_class

SAMPLES, STYLES, LATENT, CURVES = "samples.png", "styles.png", "latent_pca.png", "curves.png"
#: Pixel sizes of the drawn figures (width, height): figsize in inches times DPI.
DPI = 100
LATENT_SIZE, CURVES_SIZE = (640, 560), (1500, 420)


def _scale(x_dim: int) -> int:
    """Pixels per image pixel: tiles about 56 pixels wide (as `images.style_figure`)."""
    return max(1, round(56 / image_side(x_dim)))


def samples_picture(model, per_class: int = 10, seed: int = 0) -> np.ndarray:
    """(H, W) uint8: `per_class` samples (Bernoulli means) of each class, a row per class; z from a
    generator seeded with `seed`."""
    weight = model.decoder.output.weight
    generator = torch.Generator(device=weight.device).manual_seed(seed)
    C = model.n_classes
    y = torch.arange(C, device=weight.device).repeat_interleave(per_class)
    z = torch.randn(y.shape[0], model.z_dim, device=weight.device, dtype=weight.dtype, generator=generator)
    images = model.sample(y, z)
    return image_grid(images.view(C, per_class, -1), pad=2, scale=_scale(model.x_dim))


def write_gray(path, picture: np.ndarray) -> None:
    """Write an (H, W) uint8 picture as a PNG of exactly that many pixels (as RGB: no colour map between
    the values and the file)."""
    mpimg.imsave(path, np.repeat(np.asarray(picture, np.uint8)[..., None], 3, axis=2), format="png")


@torch.no_grad()
def latent_means(model, x: torch.Tensor) -> torch.Tensor:
    """(B, z_dim): mu of q(z|x, y) under each image's predicted class."""
    y = F.one_hot(model.predict(x), model.n_classes).to(x.dtype)
    return model.encoder(x, y)[0]


def pca_2d(points: torch.Tensor) -> np.ndarray:
    """(N, K) -> (N, 2): the projection on the first two principal components (zeros past the rank)."""
    centred = points.detach().to("cpu", torch.float64)
    centred = centred - centred.mean(0)
    _, _, vh = torch.linalg.svd(centred, full_matrices=False)
    projected = centred @ vh[:2].T
    if projected.shape[1] < 2:
        projected = torch.cat([projected, projected.new_zeros(projected.shape[0], 2 - projected.shape[1])], 1)
    return projected.numpy()


def write_latent_pca(path, model, x: torch.Tensor, y: torch.Tensor) -> None:
    xy = pca_2d(latent_means(model, x))
    fig = Figure(figsize=(LATENT_SIZE[0] / DPI, LATENT_SIZE[1] / DPI), dpi=DPI)
    ax = fig.add_subplot()
    labels = y.cpu().numpy()
    for c in range(model.n_classes):
        mask = labels == c
        ax.scatter(xy[mask, 0], xy[mask, 1], s=6, alpha=0.7, label=str(c), color=_colour(c, model.n_classes))
    ax.set_xlabel("PC 1")
    ax.set_ylabel("PC 2")
    ax.set_title("latent means (z = mu under the predicted class), by true class")
    ax.legend(markerscale=2, fontsize=7, loc="best", ncols=2)
    fig.savefig(path, dpi=DPI)


def _colour(c: int, n: int):
    from matplotlib import colormaps

    return colormaps["tab10" if n <= 10 else "tab20"](c % (10 if n <= 10 else 20))


def write_curves(path, history: list) -> None:
    """Three panels against the step: loss terms (validation, and the training loss), validation
    accuracy, class consistency."""
    fig = Figure(figsize=(CURVES_SIZE[0] / DPI, CURVES_SIZE[1] / DPI), dpi=DPI)
    axes = fig.subplots(1, 3)
    steps = [row["step"] for row in history]

    def plot(ax, key, label):
        values = [np.nan if row.get(key) is None else row[key] for row in history]
        if not all(np.isnan(values)):
            ax.plot(steps, values, marker=".", label=label)

    for key, label in (("train_loss", "training loss"), ("val_total", "total (unlabelled)"),
                       ("val_reconstruction", "reconstruction"), ("val_kl", "KL"),
                       ("val_classification", "classification"), ("val_entropy", "entropy term")):
        plot(axes[0], key, label)
    axes[0].set_title("loss terms (validation, per image)")
    axes[0].legend(fontsize=7)
    plot(axes[1], "val_accuracy", "validation accuracy")
    axes[1].set_title("validation accuracy")
    plot(axes[2], "val_class_consistency", "class consistency")
    axes[2].set_title("class consistency (1/C: decoder ignores y)")
    for ax in axes:
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)


def write_run_figures(out, model, split, history: list) -> None:
    """samples.png, styles.png, latent_pca.png and curves.png in the run directory `out`."""
    weight = model.decoder.output.weight
    to = lambda a: torch.as_tensor(a).to(weight.device, weight.dtype)  # noqa: E731
    write_gray(os.path.join(out, SAMPLES), samples_picture(model))
    write_gray(os.path.join(out, STYLES), style_figure(model, to(first_test_image_of_each_class(split))))
    write_latent_pca(os.path.join(out, LATENT), model, to(split.x_test), torch.as_tensor(split.y_test))
    write_curves(os.path.join(out, CURVES), history)
