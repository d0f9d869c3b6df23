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

from .datasets import (
    KNOWN_DATASETS,
    MNIST_ENV_VAR,
    find_mnist_files,
    load_digits_split,
    load_mnist_split,
    load_split,
    shared_mnist_dir,
)
from .idx import DatasetError, read_idx
from .splits import BINARIZE_MODES, SemiSupervisedSplit, binarize, make_split, stratified_labelled_indices

__all__ = [
    "BINARIZE_MODES",
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
