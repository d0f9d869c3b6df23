"""Datasets and semi-supervised splits for the M2 model.

Two datasets are supported:

* ``digits``: scikit-learn's bundled 8x8 handwritten digits (1,797 images, no
  network access needed).  Test set = images with index ``i % 5 == 4`` (359),
  training pool = the other 1,438.
* ``mnist``: IDX files (raw or gzip) in a user-supplied directory.  With the
  training files present the standard 60k train / 10k test split is used; with
  only the ``t10k`` files the *t10k protocol* is used: test = images with
  index ``i % 5 == 4`` (2,000), training pool = the other 8,000.

In both cases ``N`` labelled examples are drawn from the training pool,
stratified by class (``N // n_classes`` per class, remainder one each over the
first classes) with ``np.random.default_rng(seed)``; the rest of the pool is
unlabelled.  Pixels are scaled to ``[0, 1]`` and flattened.

Every bad input raises :class:`DatasetError` with a one-line message.
"""

from __future__ import annotations

import gzip
import os
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple, Union

import numpy as np
import torch

__all__ = [
    "DatasetError",
    "KNOWN_DATASETS",
    "MNIST_ENV_VAR",
    "SemiSupervisedSplit",
    "binarize",
    "find_mnist_files",
    "load_digits_split",
    "load_mnist_split",
    "load_split",
    "make_split",
    "read_idx",
    "shared_mnist_dir",
    "stratified_labelled_indices",
]

PathLike = Union[str, "os.PathLike[str]"]

#: Dataset names accepted by :func:`load_split`.
KNOWN_DATASETS: Tuple[str, ...] = ("digits", "mnist")

#: Environment variable that overrides :func:`shared_mnist_dir`.
MNIST_ENV_VAR = "SSVAE_FAST_MNIST_DIR"

#: Binarization modes accepted by :func:`binarize`.
BINARIZE_MODES: Tuple[str, ...] = ("none", "threshold", "dynamic")


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


# ---------------------------------------------------------------------------
# Splits
# ---------------------------------------------------------------------------


@dataclass
class SemiSupervisedSplit:
    """A semi-supervised dataset split (all images flattened to ``D`` pixels).

    Attributes:
        x_labelled: float32 ``(n_l, D)``, pixels in ``[0, 1]``.
        y_labelled: int64 ``(n_l,)``, labels in ``0 .. n_classes-1``.
        x_unlabelled: float32 ``(n_u, D)``, pixels in ``[0, 1]``.
        x_test: float32 ``(n_test, D)``, pixels in ``[0, 1]``.
        y_test: int64 ``(n_test,)``.
        n_classes: number of classes ``K``.
        image_shape: image shape with ``prod(image_shape) == D``, e.g. ``(8, 8)``.
        name: dataset name (``"digits"`` or ``"mnist"``).
        description: one line saying how the split was made.
    """

    x_labelled: np.ndarray
    y_labelled: np.ndarray
    x_unlabelled: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    n_classes: int
    image_shape: Tuple[int, ...]
    name: str
    description: str

    @property
    def x_dim(self) -> int:
        """Number of pixels ``D`` per (flattened) image."""
        return int(self.x_labelled.shape[1])

    @property
    def n_labelled(self) -> int:
        """Number of labelled training examples ``n_l``."""
        return int(self.x_labelled.shape[0])

    @property
    def n_unlabelled(self) -> int:
        """Number of unlabelled training examples ``n_u``."""
        return int(self.x_unlabelled.shape[0])

    @property
    def n_test(self) -> int:
        """Number of test examples."""
        return int(self.x_test.shape[0])


def _as_int(value: object, what: str) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise DatasetError(f"{what} must be an integer, got {value!r}")
    return int(value)


def _per_class_counts(n_labelled: int, n_classes: int) -> np.ndarray:
    base, rem = divmod(n_labelled, n_classes)
    counts = np.full(n_classes, base, dtype=np.int64)
    counts[:rem] += 1
    return counts


def stratified_labelled_indices(
    labels: Union[np.ndarray, Sequence[int]],
    n_labelled: int,
    n_classes: int,
    seed: int,
) -> np.ndarray:
    """Draw ``n_labelled`` indices into ``labels``, stratified by class.

    Class ``c`` gets ``n_labelled // n_classes`` examples, plus one more for the
    first ``n_labelled % n_classes`` classes (in class order).  Within each class
    the examples are drawn without replacement with
    ``np.random.default_rng(seed)`` (classes visited in order ``0 .. K-1``), so
    the result is deterministic for a seed.

    Args:
        labels: int array ``(N,)`` with values in ``0 .. n_classes-1``.
        n_labelled: number of indices to draw, ``1 <= n_labelled <= N``.
        n_classes: number of classes ``K``.
        seed: seed for ``np.random.default_rng``.

    Returns:
        int64 array ``(n_labelled,)`` of distinct indices into ``labels``, sorted.

    Raises:
        DatasetError: ``n_labelled < 1``, ``n_labelled > N``, labels outside
            ``0 .. K-1``, or a class with fewer examples than it is asked for.
    """
    y = np.asarray(labels)
    if y.ndim != 1:
        raise DatasetError(f"labels must be a 1-D array, got shape {y.shape}")
    if y.size and not np.issubdtype(y.dtype, np.integer):
        raise DatasetError(f"labels must be integers, got dtype {y.dtype}")
    n_labelled = _as_int(n_labelled, "number of labelled examples")
    n_classes = _as_int(n_classes, "number of classes")
    if n_classes < 1:
        raise DatasetError(f"number of classes must be >= 1, got {n_classes}")
    if n_labelled < 1:
        raise DatasetError(f"number of labelled examples must be >= 1, got {n_labelled}")
    if n_labelled > y.shape[0]:
        raise DatasetError(
            f"cannot draw {n_labelled} labelled examples from a training pool of {y.shape[0]}"
        )
    if y.size and (y.min() < 0 or y.max() >= n_classes):
        raise DatasetError(
            f"labels must lie in 0..{n_classes - 1}, found range {int(y.min())}..{int(y.max())}"
        )
    counts = _per_class_counts(n_labelled, n_classes)
    rng = np.random.default_rng(seed)
    chosen = []
    for c in range(n_classes):
        members = np.flatnonzero(y == c)
        need = int(counts[c])
        if members.size < need:
            raise DatasetError(
                f"class {c} has only {members.size} example(s) in the training pool, "
                f"but {need} labelled were requested ({n_labelled} over {n_classes} classes)"
            )
        if need:
            chosen.append(rng.choice(members, size=need, replace=False))
    out = np.concatenate(chosen).astype(np.int64) if chosen else np.empty(0, np.int64)
    out.sort()
    return out


def _describe_counts(n_labelled: int, n_classes: int) -> str:
    base, rem = divmod(n_labelled, n_classes)
    if rem == 0:
        return f"{base} per class"
    return f"{base}-{base + 1} per class, +1 for classes 0..{rem - 1}"


def make_split(
    x: np.ndarray,
    y: np.ndarray,
    *,
    n_classes: int,
    n_labelled: int,
    seed: int,
    test_mask: np.ndarray,
    name: str,
    image_shape: Tuple[int, ...],
    test_rule: str = "",
) -> SemiSupervisedSplit:
    """Split a labelled dataset into labelled / unlabelled / test parts.

    The training pool is ``~test_mask``; ``n_labelled`` examples are drawn from
    it with :func:`stratified_labelled_indices` (indices relative to the pool),
    the rest of the pool (file order kept) is unlabelled.  Deterministic for a
    seed.

    Args:
        x: images ``(N, D)`` or ``(N, *image_shape)``, any real dtype, values in
            ``[0, 1]``; converted to float32 ``(N, D)``.
        y: int labels ``(N,)`` in ``0 .. n_classes-1``.
        n_classes: number of classes ``K``.
        n_labelled: number of labelled training examples.
        seed: seed for the stratified draw.
        test_mask: bool ``(N,)``; True marks test examples.
        name: dataset name stored in the split.
        image_shape: image shape, ``prod(image_shape) == D``.
        test_rule: optional short text for the description saying how the test
            set was chosen (e.g. ``"i % 5 == 4"``).

    Returns:
        :class:`SemiSupervisedSplit` with float32 images and int64 labels.

    Raises:
        DatasetError: inconsistent shapes, pixels outside ``[0, 1]``, or an
            impossible labelled draw.
    """
    x = np.asarray(x)
    y = np.asarray(y)
    mask = np.asarray(test_mask)
    image_shape = tuple(int(s) for s in image_shape)
    if x.ndim < 2:
        raise DatasetError(f"images must have shape (N, D) or (N, H, W), got {x.shape}")
    n = x.shape[0]
    x = x.reshape(n, -1)
    d = x.shape[1]
    if int(np.prod(image_shape, dtype=np.int64)) != d:
        raise DatasetError(f"image shape {image_shape} does not match {d} pixels per image")
    if y.shape != (n,):
        raise DatasetError(f"labels must have shape ({n},) to match {n} images, got {y.shape}")
    if mask.shape != (n,) or mask.dtype != np.bool_:
        raise DatasetError(f"test mask must be a bool array of shape ({n},), got {mask.dtype} {mask.shape}")
    if n and not np.issubdtype(y.dtype, np.integer):
        raise DatasetError(f"labels must be integers, got dtype {y.dtype}")
    x = x.astype(np.float32, copy=False)
    if x.size:
        lo, hi = float(x.min()), float(x.max())
        if not (np.isfinite(lo) and np.isfinite(hi)) or lo < 0.0 or hi > 1.0:
            raise DatasetError(f"pixels must lie in [0, 1], found range {lo}..{hi}")
    y = y.astype(np.int64, copy=False)

    pool_idx = np.flatnonzero(~mask)
    test_idx = np.flatnonzero(mask)
    local = stratified_labelled_indices(y[pool_idx], n_labelled, n_classes, seed)
    lab_idx = pool_idx[local]
    keep = np.ones(pool_idx.shape[0], dtype=bool)
    keep[local] = False
    unl_idx = pool_idx[keep]

    rule = f" ({test_rule})" if test_rule else ""
    description = (
        f"{name}: {pool_idx.size} train pool / {test_idx.size} test{rule}, "
        f"{int(n_labelled)} labelled ({_describe_counts(int(n_labelled), int(n_classes))}, seed {seed})"
    )
    return SemiSupervisedSplit(
        x_labelled=np.ascontiguousarray(x[lab_idx]),
        y_labelled=np.ascontiguousarray(y[lab_idx]),
        x_unlabelled=np.ascontiguousarray(x[unl_idx]),
        x_test=np.ascontiguousarray(x[test_idx]),
        y_test=np.ascontiguousarray(y[test_idx]),
        n_classes=int(n_classes),
        image_shape=image_shape,
        name=name,
        description=description,
    )


def _every_fifth_test_mask(n: int) -> np.ndarray:
    """bool ``(n,)``: True where ``i % 5 == 4`` (the t10k protocol test rule)."""
    return np.arange(n) % 5 == 4


# ---------------------------------------------------------------------------
# digits
# ---------------------------------------------------------------------------


def load_digits_split(n_labelled: int = 100, seed: int = 0) -> SemiSupervisedSplit:
    """scikit-learn's bundled 8x8 digits as a semi-supervised split.

    1,797 images, pixels ``/ 16`` to ``[0, 1]``, flattened to ``D = 64``.
    Test set = images with index ``i % 5 == 4`` (359 images: i = 4, 9, ...,
    1794); training pool = the other 1,438, from which ``n_labelled`` are drawn stratified with ``seed``.

    Returns:
        :class:`SemiSupervisedSplit` with ``name="digits"``, ``n_classes=10``,
        ``image_shape=(8, 8)``; x arrays float32 ``(n, 64)``, y int64.

    Raises:
        DatasetError: scikit-learn missing, or an impossible labelled draw.
    """
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise DatasetError("--dataset digits needs scikit-learn (pip install scikit-learn)") from None
    bunch = load_digits()
    images = np.asarray(bunch.images, dtype=np.float32)  # (1797, 8, 8), values 0..16
    x = images.reshape(images.shape[0], -1) / np.float32(16.0)
    y = np.asarray(bunch.target, dtype=np.int64)
    return make_split(
        x,
        y,
        n_classes=10,
        n_labelled=n_labelled,
        seed=seed,
        test_mask=_every_fifth_test_mask(x.shape[0]),
        name="digits",
        image_shape=tuple(images.shape[1:]),
        test_rule="i % 5 == 4",
    )


# ---------------------------------------------------------------------------
# MNIST
# ---------------------------------------------------------------------------

_MNIST_FILES: Dict[str, Tuple[str, str]] = {
    # key -> (dash name, dot name)
    "train_images": ("train-images-idx3-ubyte", "train-images.idx3-ubyte"),
    "train_labels": ("train-labels-idx1-ubyte", "train-labels.idx1-ubyte"),
    "test_images": ("t10k-images-idx3-ubyte", "t10k-images.idx3-ubyte"),
    "test_labels": ("t10k-labels-idx1-ubyte", "t10k-labels.idx1-ubyte"),
}


def find_mnist_files(data_dir: PathLike) -> Dict[str, Path]:
    """Locate the MNIST IDX files in ``data_dir``.

    Looks for ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
    ``t10k-images-idx3-ubyte`` and ``t10k-labels-idx1-ubyte``, each raw or with
    ``.gz``, also accepting the ``.idx3-ubyte`` / ``.idx1-ubyte`` spelling
    (e.g. ``train-images.idx3-ubyte``).  Candidate order: dash raw, dash gz,
    dot raw, dot gz; the first existing file wins.

    Args:
        data_dir: directory to search.

    Returns:
        dict with keys among ``"train_images"``, ``"train_labels"``,
        ``"test_images"``, ``"test_labels"`` mapping to existing file paths;
        images and labels of a set are always present together.

    Raises:
        DatasetError: the directory does not exist, one set has images without
            labels (or vice versa), or neither a train nor a t10k pair is present.
    """
    d = Path(data_dir).expanduser()
    if not d.is_dir():
        raise DatasetError(f"MNIST data directory not found: {d}")
    found: Dict[str, Path] = {}
    for key, (dash, dot) in _MNIST_FILES.items():
        for cand in (dash, dash + ".gz", dot, dot + ".gz"):
            p = d / cand
            if p.is_file():
                found[key] = p
                break
    for prefix, shown in (("train", "train"), ("test", "t10k")):
        has_img = f"{prefix}_images" in found
        has_lab = f"{prefix}_labels" in found
        if has_img != has_lab:
            present, missing = ("images", "labels") if has_img else ("labels", "images")
            raise DatasetError(
                f"MNIST data directory {d} has {shown} {present} but no {shown} {missing} "
                f"(expected {_MNIST_FILES[f'{prefix}_{missing}'][0]}[.gz])"
            )
    if not found:
        raise DatasetError(
            f"no MNIST IDX files in {d} (expected t10k-images-idx3-ubyte[.gz] + "
            "t10k-labels-idx1-ubyte[.gz], optionally with the train-* pair)"
        )
    return found


def _load_mnist_pair(images_path: Path, labels_path: Path) -> Tuple[np.ndarray, np.ndarray]:
    """Read and validate one images/labels pair: uint8 ``(N, H, W)``, int64 ``(N,)``."""
    images = read_idx(images_path)
    labels = read_idx(labels_path)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise DatasetError(
            f"{images_path}: expected 3-D ubyte images (N, H, W), got {images.dtype} {images.shape}"
        )
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise DatasetError(f"{labels_path}: expected 1-D integer labels, got {labels.dtype} {labels.shape}")
    if images.shape[0] != labels.shape[0]:
        raise DatasetError(
            f"MNIST image/label count mismatch: {images.shape[0]} images in {images_path.name}, "
            f"{labels.shape[0]} labels in {labels_path.name}"
        )
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise DatasetError(
            f"{labels_path}: MNIST labels must lie in 0..9, found {int(labels.min())}..{int(labels.max())}"
        )
    return images, labels.astype(np.int64)


def load_mnist_split(
    data_dir: PathLike,
    n_labelled: int = 100,
    seed: int = 0,
    *,
    protocol: str = "auto",
) -> SemiSupervisedSplit:
    """MNIST from IDX files as a semi-supervised split.

    * ``protocol="standard"`` (the ``"auto"`` choice when the train files are
      present): pool = all training images (60,000), test = the t10k images
      (10,000).
    * ``protocol="t10k"`` (the ``"auto"`` choice when only the t10k files are
      present): the t10k protocol; test = t10k images with index
      ``i % 5 == 4`` (2,000), pool = the other 8,000.

    ``n_labelled`` examples are drawn from the pool stratified by class with
    ``seed``.  Pixels ``/ 255`` to ``[0, 1]``, flattened to ``D = H * W`` (784).

    Args:
        data_dir: directory with the IDX files (see :func:`find_mnist_files`).
        n_labelled: number of labelled training examples.
        seed: seed for the stratified draw.
        protocol: ``"auto"``, ``"standard"`` or ``"t10k"``.

    Returns:
        :class:`SemiSupervisedSplit` with ``name="mnist"``, ``n_classes=10``,
        ``image_shape=(28, 28)``; x arrays float32 ``(n, 784)``, y int64.

    Raises:
        DatasetError: missing directory/files, malformed files, image/label
            count mismatch, labels outside 0..9, or an impossible labelled draw.
    """
    if protocol not in ("auto", "standard", "t10k"):
        raise DatasetError(f"unknown MNIST protocol {protocol!r} (known: auto, standard, t10k)")
    files = find_mnist_files(data_dir)
    has_train = "train_images" in files
    has_test = "test_images" in files
    if not has_test:
        raise DatasetError(
            f"MNIST data directory {Path(data_dir)} has train files but no t10k-images-idx3-ubyte[.gz] "
            "/ t10k-labels-idx1-ubyte[.gz] test files"
        )
    if protocol == "auto":
        protocol = "standard" if has_train else "t10k"
    if protocol == "standard" and not has_train:
        raise DatasetError(
            f"MNIST standard split needs train-images-idx3-ubyte[.gz] and train-labels-idx1-ubyte[.gz] "
            f"in {Path(data_dir)}"
        )

    test_images, test_labels = _load_mnist_pair(files["test_images"], files["test_labels"])
    scale = np.float32(1.0 / 255.0)
    if protocol == "t10k":
        image_shape = test_images.shape[1:]
        x = test_images.reshape(test_images.shape[0], -1).astype(np.float32) * scale
        y = test_labels
        mask = _every_fifth_test_mask(x.shape[0])
        rule = "t10k protocol, i % 5 == 4"
    else:
        train_images, train_labels = _load_mnist_pair(files["train_images"], files["train_labels"])
        if train_images.shape[1:] != test_images.shape[1:]:
            raise DatasetError(
                f"MNIST train images are {train_images.shape[1:]} but t10k images are {test_images.shape[1:]}"
            )
        image_shape = test_images.shape[1:]
        n_train, n_test = train_images.shape[0], test_images.shape[0]
        x = np.empty((n_train + n_test, int(np.prod(image_shape))), dtype=np.float32)
        np.multiply(train_images.reshape(n_train, -1), scale, out=x[:n_train], casting="unsafe")
        np.multiply(test_images.reshape(n_test, -1), scale, out=x[n_train:], casting="unsafe")
        y = np.concatenate([train_labels, test_labels])
        mask = np.zeros(n_train + n_test, dtype=bool)
        mask[n_train:] = True
        rule = "standard train / t10k files"
    np.clip(x, 0.0, 1.0, out=x)  # guard against float rounding above 1
    return make_split(
        x,
        y,
        n_classes=10,
        n_labelled=n_labelled,
        seed=seed,
        test_mask=mask,
        name="mnist",
        image_shape=tuple(int(s) for s in image_shape),
        test_rule=rule,
    )


def shared_mnist_dir() -> Optional[Path]:
    """The shared MNIST folder beside the repository root, if it exists.

    ``$SSVAE_FAST_MNIST_DIR`` is honoured first (when set to an existing
    directory); otherwise ``<repo root>/../shared/data/mnist``, i.e.
    ``Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"``.

    Returns:
        the directory as a ``Path``, or ``None`` if neither exists.
    """
    env = os.environ.get(MNIST_ENV_VAR, "").strip()
    if env:
        p = Path(env).expanduser()
        if p.is_dir():
            return p
    default = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"
    return default if default.is_dir() else None


# ---------------------------------------------------------------------------
# Dispatch and binarization
# ---------------------------------------------------------------------------


def load_split(
    name: str,
    *,
    data_dir: Optional[PathLike] = None,
    n_labelled: int = 100,
    seed: int = 0,
) -> SemiSupervisedSplit:
    """Load a named dataset as a :class:`SemiSupervisedSplit`.

    Args:
        name: ``"digits"`` or ``"mnist"`` (case-insensitive).
        data_dir: directory with the MNIST IDX files; required for ``"mnist"``,
            ignored for ``"digits"``.
        n_labelled: number of labelled training examples.
        seed: seed for the stratified draw.

    Returns:
        the split (float32 ``(n, D)`` images in ``[0, 1]``, int64 labels).

    Raises:
        DatasetError: unknown name, ``"mnist"`` without ``data_dir``, or any
            error of the underlying loader.
    """
    key = str(name).strip().lower()
    if key == "digits":
        return load_digits_split(n_labelled=n_labelled, seed=seed)
    if key == "mnist":
        if data_dir is None or str(data_dir) == "":
            raise DatasetError("--dataset mnist needs --data-dir")
        return load_mnist_split(data_dir, n_labelled=n_labelled, seed=seed)
    raise DatasetError(f"unknown dataset {name!r} (known: {', '.join(KNOWN_DATASETS)})")


def binarize(
    x: Union[torch.Tensor, np.ndarray],
    mode: str,
    generator: Optional[torch.Generator] = None,
) -> Union[torch.Tensor, np.ndarray]:
    """Binarize pixel intensities for a Bernoulli likelihood.

    Args:
        x: pixels in ``[0, 1]``, any shape (e.g. float32 ``(B, D)``); a torch
            tensor or a numpy array (returned as the same kind).
        mode: ``"none"`` (``x`` returned unchanged), ``"threshold"``
            (``x > 0.5`` as float, same dtype as ``x`` when it is floating,
            float32 otherwise) or ``"dynamic"`` (``torch.bernoulli(x,
            generator=generator)``, a fresh sample per call; needs floating
            ``x``).
        generator: optional ``torch.Generator`` for ``"dynamic"`` (must live on
            ``x``'s device).

    Returns:
        array/tensor of the same shape as ``x`` with values in ``{0, 1}``
        (or ``x`` itself for ``"none"``).

    Raises:
        DatasetError: unknown mode, or ``"dynamic"`` on a non-float input.
    """
    if mode not in BINARIZE_MODES:
        raise DatasetError(f"unknown binarization mode {mode!r} (known: {', '.join(BINARIZE_MODES)})")
    if mode == "none":
        return x
    if isinstance(x, np.ndarray):
        arr = np.ascontiguousarray(x)
        if not arr.flags.writeable:
            arr = arr.copy()
        out = binarize(torch.from_numpy(arr), mode, generator)
        return out.numpy()
    if not isinstance(x, torch.Tensor):
        raise DatasetError(f"binarize expects a torch tensor or numpy array, got {type(x).__name__}")
    if mode == "threshold":
        dtype = x.dtype if x.is_floating_point() else torch.float32
        return (x > 0.5).to(dtype)
    if not x.is_floating_point():
        raise DatasetError(f"dynamic binarization needs floating-point pixels in [0, 1], got {x.dtype}")
    return torch.bernoulli(x, generator=generator)
