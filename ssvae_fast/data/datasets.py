"""The datasets: scikit-learn's digits and MNIST (IDX files), each as a semi-supervised split."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, Optional, Tuple

import numpy as np

from .idx import DatasetError, PathLike, read_idx
from .splits import SemiSupervisedSplit, _every_fifth_test_mask, make_split

#: Dataset names accepted by :func:`load_split`.
KNOWN_DATASETS: Tuple[str, ...] = ("digits", "mnist")

#: Environment variable that overrides :func:`shared_mnist_dir`.
MNIST_ENV_VAR = "SSVAE_FAST_MNIST_DIR"


# ---------------------------------------------------------------------------
# digits
# ---------------------------------------------------------------------------


def load_digits_split(n_labelled: int = 100, seed: int = 0, val_size: int = 0) -> SemiSupervisedSplit:
    """scikit-learn's bundled 8x8 digits as a semi-supervised split.

    1,797 images, pixels ``/ 16`` to ``[0, 1]``, flattened to ``D = 64``.
    Test set = images with index ``i % 5 == 4`` (359 images: i = 4, 9, ...,
    1794); training pool = the other 1,438, from which ``n_labelled`` are drawn stratified with ``seed``,
    then ``val_size`` validation examples (see :func:`make_split`).

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
        val_size=val_size,
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
    val_size: int = 0,
) -> SemiSupervisedSplit:
    """MNIST from IDX files as a semi-supervised split.

    * ``protocol="standard"`` (the ``"auto"`` choice when the train files are
      present): pool = all training images (60,000), test = the t10k images
      (10,000).
    * ``protocol="t10k"`` (the ``"auto"`` choice when only the t10k files are
      present): the t10k protocol; test = t10k images with index
      ``i % 5 == 4`` (2,000), pool = the other 8,000.

    ``n_labelled`` examples are drawn from the pool stratified by class with
    ``seed``, then ``val_size`` validation examples (see :func:`make_split`).  Pixels ``/ 255`` to ``[0, 1]``, flattened to ``D = H * W`` (784).

    Args:
        data_dir: directory with the IDX files (see :func:`find_mnist_files`).
        n_labelled: number of labelled training examples.
        seed: seed for the stratified draw.
        protocol: ``"auto"``, ``"standard"`` or ``"t10k"``.
        val_size: number of validation examples carved from the pool (0: none).

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
        val_size=val_size,
    )


def shared_mnist_dir() -> Optional[Path]:
    """The shared MNIST folder beside the repository root, if it exists.

    ``$SSVAE_FAST_MNIST_DIR`` is honoured first (when set to an existing
    directory); otherwise ``<repo root>/../shared/data/mnist``, i.e.
    ``Path(__file__).resolve().parents[3] / "shared" / "data" / "mnist"``.

    Returns:
        the directory as a ``Path``, or ``None`` if neither exists.
    """
    env = os.environ.get(MNIST_ENV_VAR, "").strip()
    if env:
        p = Path(env).expanduser()
        if p.is_dir():
            return p
    default = Path(__file__).resolve().parents[3] / "shared" / "data" / "mnist"
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
    val_size: int = 0,
) -> SemiSupervisedSplit:
    """Load a named dataset as a :class:`SemiSupervisedSplit`.

    Args:
        name: ``"digits"`` or ``"mnist"`` (case-insensitive).
        data_dir: directory with the MNIST IDX files; required for ``"mnist"``,
            ignored for ``"digits"``.
        n_labelled: number of labelled training examples.
        seed: seed for the stratified draws.
        val_size: number of validation examples carved from the training pool (0: none).

    Returns:
        the split (float32 ``(n, D)`` images in ``[0, 1]``, int64 labels).

    Raises:
        DatasetError: unknown name, ``"mnist"`` without ``data_dir``, or any
            error of the underlying loader.
    """
    key = str(name).strip().lower()
    if key == "digits":
        return load_digits_split(n_labelled=n_labelled, seed=seed, val_size=val_size)
    if key == "mnist":
        if data_dir is None or str(data_dir) == "":
            raise DatasetError("--dataset mnist needs --data-dir")
        return load_mnist_split(data_dir, n_labelled=n_labelled, seed=seed, val_size=val_size)
    raise DatasetError(f"unknown dataset {name!r} (known: {', '.join(KNOWN_DATASETS)})")
