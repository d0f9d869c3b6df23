"""Pictures of what M2 learned, as grayscale PNG files (no plotting library needed).

    write_style_figure(model, x, "styles.png")   # a row per image of x: x, then x's style under every class

`image_grid` tiles (rows, cols, D) images with D = side * side pixels in [0, 1]; `write_png` writes an
(H, W) uint8 array as an 8-bit grayscale PNG (zlib from the standard library).
"""

from __future__ import annotations

import math
import struct
import zlib
from typing import Optional

import numpy as np
import torch

__all__ = ["image_side", "image_grid", "random_shift", "write_png", "style_figure", "write_style_figure"]


def image_side(x_dim: int) -> int:
    """The side of a square image of x_dim pixels; ValueError when x_dim is not a square."""
    side = math.isqrt(x_dim)
    if side * side != x_dim:
        raise ValueError(f"x_dim = {x_dim} pixels is not a square image (28 x 28 = 784 for MNIST, 8 x 8 = 64 for digits)")
    return side


def random_shift(x: torch.Tensor, max_shift: int, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Each square image of x (N, side * side) translated by its own random offset (dy, dx), each uniform in
    [-max_shift, max_shift] and drawn from `generator`: pixels shifted out are dropped, pixels shifted in are
    0. One gather, on x's device and dtype; max_shift 0 returns x itself (and draws nothing)."""
    if max_shift < 0:
        raise ValueError(f"max_shift must be at least 0, got {max_shift}")
    if x.dim() != 2:
        raise ValueError(f"random_shift expects (N, side * side) images, got shape {tuple(x.shape)}")
    if max_shift == 0 or x.shape[0] == 0:
        return x
    n, side = x.shape[0], image_side(x.shape[1])
    offsets = torch.randint(-max_shift, max_shift + 1, (2, n, 1), device=x.device, generator=generator)
    padded = torch.nn.functional.pad(x.reshape(n, side, side), (max_shift,) * 4)
    ar = torch.arange(side, device=x.device)
    rows = (ar + max_shift - offsets[0])[:, :, None]  # out[i, r, c] = x[i, r - dy, c - dx] (0 outside)
    cols = (ar + max_shift - offsets[1])[:, None, :]
    out = padded[torch.arange(n, device=x.device)[:, None, None], rows, cols]
    return out.reshape(n, side * side)


def image_grid(images, pad: int = 1, scale: int = 1) -> np.ndarray:
    """(rows, cols, D) values in [0, 1] -> an (H, W) uint8 picture: square tiles of side sqrt(D), each
    pixel repeated `scale` times in both directions, `pad` white pixels between and around tiles."""
    images = torch.as_tensor(images).detach().to("cpu", torch.float64)
    if images.dim() != 3:
        raise ValueError(f"images must be (rows, cols, D), got shape {tuple(images.shape)}")
    if pad < 0 or scale < 1:
        raise ValueError(f"need pad >= 0 and scale >= 1, got pad={pad}, scale={scale}")
    rows, cols, x_dim = images.shape
    side = image_side(x_dim)
    tiles = (images.clamp(0, 1) * 255).round().to(torch.uint8).view(rows, cols, side, side).numpy()
    tiles = tiles.repeat(scale, axis=2).repeat(scale, axis=3)
    # Each tile with its top and left gap, laid out row by row; then the gap after the last row and column.
    cells = np.pad(tiles, ((0, 0), (0, 0), (pad, 0), (pad, 0)), constant_values=255)
    picture = cells.transpose(0, 2, 1, 3).reshape(rows * cells.shape[2], cols * cells.shape[3])
    return np.pad(picture, ((0, pad), (0, pad)), constant_values=255)


def write_png(path, picture: np.ndarray) -> None:
    """Write an (H, W) uint8 array as an 8-bit grayscale PNG."""
    picture = np.asarray(picture)
    if picture.ndim != 2 or picture.dtype != np.uint8 or 0 in picture.shape:
        raise ValueError(f"picture must be a non-empty (H, W) uint8 array, got {picture.dtype} {picture.shape}")
    height, width = picture.shape

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    # Each scanline is prefixed by its filter type, 0 (none).
    raw = np.concatenate([np.zeros((height, 1), np.uint8), picture], axis=1).tobytes()
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit depth, grayscale, no interlace
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 9))
                + chunk(b"IEND", b""))


def style_figure(model, x: torch.Tensor, scale: Optional[int] = None) -> np.ndarray:
    """The picture `write_style_figure` writes: one row per image of x (B, D), the image itself, then
    `model.style_transfer(x)`: its style (z = mu under its predicted class) decoded under each class.
    `scale` (pixels per image pixel) defaults to tiles about 56 pixels wide."""
    if scale is None:
        scale = max(1, round(56 / image_side(model.x_dim)))
    styles = model.style_transfer(x)  # (B, C, D) Bernoulli means
    return image_grid(torch.cat([x.unsqueeze(1).to(styles.dtype), styles], dim=1), pad=2, scale=scale)


def write_style_figure(model, x: torch.Tensor, path, scale: Optional[int] = None) -> None:
    """Write `style_figure(model, x)` to `path` as a PNG (Kingma et al.'s analogies figure)."""
    image_side(model.x_dim)  # a clear error before any work
    write_png(path, style_figure(model, x, scale=scale))
