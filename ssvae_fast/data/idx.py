"""MNIST's IDX file format: the reader and the loader's error type."""

from __future__ import annotations

import gzip
import os
import zlib
from typing import Dict, Union

import numpy as np
from pathlib import Path

PathLike = Union[str, "os.PathLike[str]"]


class DatasetError(ValueError):
    """A bad dataset input (missing/malformed file, impossible split, ...).

    The message is a single user-facing line (the CLI prints it as-is).
    """


# ---------------------------------------------------------------------------
# IDX reader
# ---------------------------------------------------------------------------

_GZIP_MAGIC = b"\x1f\x8b"

# IDX dtype code -> big-endian numpy dtype.
_IDX_DTYPES: Dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def read_idx(path: PathLike) -> np.ndarray:
    """Read an IDX file (the MNIST format), gzip-compressed or raw.

    Layout: two zero bytes, a dtype code (``0x08`` ubyte, ``0x09`` sbyte,
    ``0x0B`` int16, ``0x0C`` int32, ``0x0D`` float32, ``0x0E`` float64), the
    number of dimensions ``k``, then ``k`` big-endian uint32 sizes and the
    big-endian payload.  Compression is detected from the gzip magic bytes
    (``1f 8b``), not from the file suffix.

    Args:
        path: file to read.

    Returns:
        ``np.ndarray`` of shape ``(d_1, ..., d_k)`` in native byte order, with
        dtype uint8 / int8 / int16 / int32 / float32 / float64 (writable copy).

    Raises:
        DatasetError: the file is missing/unreadable, not valid gzip, has a bad
            magic number, an invalid number of dimensions, or a payload whose
            size does not match the dimensions.  The message names the path.
    """
    p = Path(path)
    try:
        raw = p.read_bytes()
    except FileNotFoundError:
        raise DatasetError(f"IDX file not found: {p}") from None
    except OSError as exc:
        raise DatasetError(f"cannot read IDX file {p}: {exc.strerror or exc}") from None

    if raw[:2] == _GZIP_MAGIC:
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise DatasetError(f"malformed IDX file {p}: corrupt gzip data ({msg})") from None

    if len(raw) < 4:
        raise DatasetError(f"malformed IDX file {p}: only {len(raw)} bytes, no 4-byte magic number")
    if raw[0] != 0 or raw[1] != 0:
        raise DatasetError(
            f"malformed IDX file {p}: bad magic number 0x{raw[:4].hex()} "
            "(expected 0x0000 followed by dtype code and number of dims)"
        )
    code, ndim = raw[2], raw[3]
    if code not in _IDX_DTYPES:
        known = ", ".join(f"0x{c:02X}" for c in _IDX_DTYPES)
        raise DatasetError(
            f"malformed IDX file {p}: unknown dtype code 0x{code:02X} in magic number (known: {known})"
        )
    if ndim < 1:
        raise DatasetError(f"malformed IDX file {p}: number of dimensions is 0")
    header_len = 4 + 4 * ndim
    if len(raw) < header_len:
        raise DatasetError(
            f"malformed IDX file {p}: truncated header ({len(raw)} bytes, {ndim} dims need {header_len})"
        )
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = _IDX_DTYPES[code]
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    actual = len(raw) - header_len
    if actual != expected:
        kind = "truncated payload" if actual < expected else "trailing data after payload"
        raise DatasetError(
            f"malformed IDX file {p}: {kind} ({actual} bytes, dims {dims} x {dtype.itemsize} "
            f"byte(s) need {expected})"
        )
    arr = np.frombuffer(raw, dtype=dtype, count=expected // dtype.itemsize, offset=header_len)
    return arr.reshape(dims).astype(dtype.newbyteorder("="), copy=True)
