"""Semi-supervised splits: the split record, the stratified labelled draw, and pixel binarization."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Tuple, Union

import numpy as np
import torch

from .idx import DatasetError

#: Binarization modes accepted by :func:`binarize`.
BINARIZE_MODES: Tuple[str, ...] = ("none", "threshold", "dynamic")


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
        x_val: float32 ``(n_val, D)``: the validation images, carved from the training pool (disjoint
            from the labelled and the unlabelled examples); ``(0, D)`` when there is no validation split.
        y_val: int64 ``(n_val,)``: their labels, for model selection only.
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
    x_val: Optional[np.ndarray] = None
    y_val: Optional[np.ndarray] = None

    def __post_init__(self):
        if self.x_val is None:
            self.x_val = np.empty((0, self.x_labelled.shape[1]), dtype=np.float32)
        if self.y_val is None:
            self.y_val = np.empty(0, dtype=np.int64)

    x_dim = property(lambda self: int(self.x_labelled.shape[1]), doc="Pixels ``D`` per (flattened) image.")
    n_labelled = property(lambda self: len(self.x_labelled), doc="Labelled training examples ``n_l``.")
    n_unlabelled = property(lambda self: len(self.x_unlabelled), doc="Unlabelled training examples ``n_u``.")
    n_val = property(lambda self: len(self.x_val), doc="Validation examples (0 without a validation split).")
    n_test = property(lambda self: len(self.x_test), doc="Test examples.")


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
    return _stratified_indices(labels, n_labelled, n_classes, np.random.default_rng(seed), "labelled")


def _stratified_indices(labels, n_draw, n_classes, rng: np.random.Generator, what: str) -> np.ndarray:
    """`stratified_labelled_indices` with the generator given and `what` naming the draw in errors."""
    y = np.asarray(labels)
    if y.ndim != 1:
        raise DatasetError(f"labels must be a 1-D array, got shape {y.shape}")
    if y.size and not np.issubdtype(y.dtype, np.integer):
        raise DatasetError(f"labels must be integers, got dtype {y.dtype}")
    n_draw = _as_int(n_draw, f"number of {what} examples")
    n_classes = _as_int(n_classes, "number of classes")
    if n_classes < 1:
        raise DatasetError(f"number of classes must be >= 1, got {n_classes}")
    if n_draw < 1:
        raise DatasetError(f"number of {what} examples must be >= 1, got {n_draw}")
    if n_draw > y.shape[0]:
        raise DatasetError(f"cannot draw {n_draw} {what} examples from a training pool of {y.shape[0]}")
    if y.size and (y.min() < 0 or y.max() >= n_classes):
        raise DatasetError(
            f"labels must lie in 0..{n_classes - 1}, found range {int(y.min())}..{int(y.max())}"
        )
    counts = _per_class_counts(n_draw, n_classes)
    chosen = []
    for c in range(n_classes):
        members = np.flatnonzero(y == c)
        need = int(counts[c])
        if members.size < need:
            raise DatasetError(
                f"class {c} has only {members.size} example(s) in the training pool, "
                f"but {need} {what} were requested ({n_draw} over {n_classes} classes)"
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
    val_size: int = 0,
) -> SemiSupervisedSplit:
    """Split a labelled dataset into labelled / validation / unlabelled / test parts.

    The training pool is ``~test_mask``; ``n_labelled`` examples are drawn from
    it with :func:`stratified_labelled_indices` (indices relative to the pool).
    Then ``val_size`` validation examples are drawn from what is left, stratified
    the same way (``val_size // n_classes`` per class, the remainder one each
    over the first classes) with ``np.random.default_rng([seed, 1])``; the
    labelled draw does not depend on ``val_size``.  The rest of the pool (file
    order kept) is unlabelled.  Deterministic for a seed.

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
        val_size: number of validation examples (0: no validation split).

    Returns:
        :class:`SemiSupervisedSplit` with float32 images and int64 labels.

    Raises:
        DatasetError: inconsistent shapes, pixels outside ``[0, 1]``, or an
            impossible labelled or validation draw.
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
    val_size = _as_int(val_size, "validation size")
    if val_size < 0:
        raise DatasetError(f"validation size must be >= 0, got {val_size}")
    val_idx = np.empty(0, np.int64)
    if val_size:
        rest = np.flatnonzero(keep)
        picked = rest[_stratified_indices(y[pool_idx[rest]], val_size, n_classes, np.random.default_rng([seed, 1]),
                                          "validation")]
        val_idx = pool_idx[picked]
        keep[picked] = False
    unl_idx = pool_idx[keep]

    rule = f" ({test_rule})" if test_rule else ""
    description = (
        f"{name}: {pool_idx.size} train pool / {test_idx.size} test{rule}, "
        f"{int(n_labelled)} labelled ({_describe_counts(int(n_labelled), int(n_classes))}, seed {seed})"
    )
    if val_size:
        description += f", {val_size} validation ({_describe_counts(val_size, int(n_classes))})"
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
        x_val=np.ascontiguousarray(x[val_idx]),
        y_val=np.ascontiguousarray(y[val_idx]),
    )


def _every_fifth_test_mask(n: int) -> np.ndarray:
    """bool ``(n,)``: True where ``i % 5 == 4`` (the t10k protocol test rule)."""
    return np.arange(n) % 5 == 4


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
