"""Pictures: the grid layout, the PNG bytes (decoded here independently of the writer), the style figure."""

import struct
import zlib

import numpy as np
import pytest
import torch

from ssvae_fast import M2
from ssvae_fast.images import image_grid, image_side, style_figure, write_png, write_style_figure


def read_png(path) -> np.ndarray:
    """Decode an 8-bit grayscale, non-interlaced, unfiltered PNG to an (H, W) uint8 array,
    checking every chunk's CRC."""
    data = open(path, "rb").read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, chunks = 8, []
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, payload = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        assert crc == zlib.crc32(kind + payload), kind
        chunks.append((kind, payload))
        pos += 12 + length
    assert [k for k, _ in chunks][0] == b"IHDR" and chunks[-1][0] == b"IEND"
    width, height, depth, color, _, _, interlace = struct.unpack(">IIBBBBB", chunks[0][1])
    assert (depth, color, interlace) == (8, 0, 0)
    raw = zlib.decompress(b"".join(p for k, p in chunks if k == b"IDAT"))
    rows = []
    for r in range(height):
        line = raw[r * (width + 1) : (r + 1) * (width + 1)]
        assert line[0] == 0, "the writer uses filter 0 (none); other filters are not decoded here"
        rows.append(np.frombuffer(line[1:], dtype=np.uint8))
    return np.stack(rows)


def test_png_round_trip(tmp_path):
    picture = np.random.default_rng(0).integers(0, 256, size=(7, 13), dtype=np.uint8)
    write_png(tmp_path / "p.png", picture)
    assert np.array_equal(read_png(tmp_path / "p.png"), picture)


@pytest.mark.parametrize("bad", [np.zeros((3, 4), np.float32), np.zeros((3, 4, 1), np.uint8), np.zeros((0, 4), np.uint8)])
def test_png_rejects_what_it_cannot_write(tmp_path, bad):
    with pytest.raises(ValueError, match="uint8"):
        write_png(tmp_path / "p.png", bad)


def test_image_grid_layout():
    images = torch.rand(2, 3, 16, generator=torch.Generator().manual_seed(0))  # 4 x 4 tiles
    pad, scale = 2, 3
    grid = image_grid(images, pad=pad, scale=scale)
    cell = 4 * scale + pad
    assert grid.shape == (2 * cell + pad, 3 * cell + pad)
    for r in range(2):
        for c in range(3):
            tile = grid[pad + r * cell : pad + r * cell + 4 * scale, pad + c * cell : pad + c * cell + 4 * scale]
            expected = (images[r, c].view(4, 4) * 255).round().to(torch.uint8).numpy()
            assert np.array_equal(tile[::scale, ::scale], expected)
            assert np.array_equal(tile, expected.repeat(scale, 0).repeat(scale, 1))
    # the gaps between and around tiles are white
    assert (grid[:pad] == 255).all() and (grid[:, :pad] == 255).all()
    assert (grid[pad + 4 * scale : cell + pad] == 255).all()
    assert image_grid(torch.full((1, 1, 4), 7.0), pad=0).tolist() == [[255, 255], [255, 255]]  # clamped to [0, 1]


def test_image_errors():
    with pytest.raises(ValueError, match="not a square"):
        image_side(10)
    assert image_side(784) == 28
    with pytest.raises(ValueError, match="rows, cols, D"):
        image_grid(torch.rand(3, 16))
    with pytest.raises(ValueError, match="not a square"):
        write_style_figure(M2(10, 3, 2, hidden=(4,)), torch.rand(2, 10), "unused.png")


def test_style_figure_rows_are_the_image_then_its_style_under_each_class(tmp_path):
    torch.manual_seed(0)
    model = M2(16, 3, 2, hidden=(8,))
    x = torch.rand(2, 16)
    path = tmp_path / "styles.png"
    write_style_figure(model, x, path, scale=1)
    picture = read_png(path)
    expected = image_grid(torch.cat([x.unsqueeze(1), model.style_transfer(x)], 1), pad=2, scale=1)
    assert np.array_equal(picture, expected)
    assert picture.shape == (2 * 6 + 2, 4 * 6 + 2)  # 2 rows; the image + 3 classes; 4 x 4 tiles, pad 2
    assert style_figure(model, x).shape == (2 * (4 * 14 + 2) + 2, 4 * (4 * 14 + 2) + 2)  # default: ~56-pixel tiles


def test_random_shift_moves_each_image_by_its_own_offset():
    """Every output is its input translated by one (dy, dx) in [-s, s]^2, zeros shifted in; offsets differ
    between images and follow the generator."""
    from ssvae_fast.images import random_shift

    side, s = 6, 2
    x = torch.rand(64, side * side) + 0.5  # no zero pixel: zeros in the output are shifted-in pixels
    g = torch.Generator().manual_seed(0)
    out = random_shift(x, s, g)
    assert out.shape == x.shape and out.dtype == x.dtype
    seen = set()
    for img, src in zip(out.reshape(-1, side, side), x.reshape(-1, side, side)):
        matches = []
        for dy in range(-s, s + 1):
            for dx in range(-s, s + 1):
                want = torch.zeros(side + 2 * s, side + 2 * s)
                want[s + dy : s + dy + side, s + dx : s + dx + side] = src
                if torch.equal(img, want[s : s + side, s : s + side]):
                    matches.append((dy, dx))
        assert len(matches) == 1
        seen.add(matches[0])
    assert len(seen) > 10  # offsets are drawn per image
    again = random_shift(x, s, torch.Generator().manual_seed(0))
    assert torch.equal(again, out)
    assert random_shift(x, 0, g) is x


def test_random_shift_errors():
    from ssvae_fast.images import random_shift

    with pytest.raises(ValueError, match="max_shift"):
        random_shift(torch.rand(2, 16), -1)
    with pytest.raises(ValueError, match="square"):
        random_shift(torch.rand(2, 15), 1)
    with pytest.raises(ValueError, match="side"):
        random_shift(torch.rand(2, 4, 4), 1)
