"""Tests for ssvae_fast.data: IDX reader, stratified splits, digits/MNIST loaders, binarize."""

from __future__ import annotations

import gzip
import hashlib
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from ssvae_fast.data import (
    DatasetError,
    SemiSupervisedSplit,
    binarize,
    find_mnist_files,
    load_digits_split,
    load_mnist_split,
    load_split,
    make_split,
    read_idx,
    shared_mnist_dir,
    stratified_labelled_indices,
)

# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------

_CODES = {np.dtype(np.uint8): 0x08, np.dtype(np.int8): 0x09, np.dtype(np.int16): 0x0B,
          np.dtype(np.int32): 0x0C, np.dtype(np.float32): 0x0D, np.dtype(np.float64): 0x0E}


def idx_bytes(arr: np.ndarray) -> bytes:
    """Encode an array in the IDX format (big-endian)."""
    arr = np.asarray(arr)
    code = _CODES[arr.dtype]
    header = struct.pack(">BBBB", 0, 0, code, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return header + arr.astype(arr.dtype.newbyteorder(">")).tobytes()


def write_idx(path: Path, arr: np.ndarray, compress: bool) -> Path:
    data = idx_bytes(arr)
    path.write_bytes(gzip.compress(data) if compress else data)
    return path


def fake_mnist_images(n: int, hw: int = 28) -> np.ndarray:
    """uint8 (n, hw, hw); pixel [0, 0] holds the file index so rows can be traced."""
    rng = np.random.default_rng(123)
    images = rng.integers(0, 256, size=(n, hw, hw), dtype=np.uint8)
    images[:, 0, 0] = np.arange(n, dtype=np.uint8)
    return images


def row_index(x: np.ndarray) -> np.ndarray:
    """Recover the file index stored in pixel 0 of a flattened /255 image."""
    return np.rint(x[:, 0] * 255).astype(np.int64)


def fake_t10k_dir(tmp_path: Path, n: int = 50, compress: bool = True) -> tuple[Path, np.ndarray, np.ndarray]:
    d = tmp_path / "mnist_t10k"
    d.mkdir()
    images = fake_mnist_images(n)
    labels = ((np.arange(n) // 5) % 10).astype(np.uint8)  # each class: 4 in pool, 1 in test
    sfx = ".gz" if compress else ""
    write_idx(d / f"t10k-images-idx3-ubyte{sfx}", images, compress)
    write_idx(d / f"t10k-labels-idx1-ubyte{sfx}", labels, compress)
    return d, images, labels


# ---------------------------------------------------------------------------
# IDX reader
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("compress", [False, True])
def test_read_idx_ubyte_images_and_labels(tmp_path, compress):
    images = fake_mnist_images(7, hw=5)
    labels = np.arange(7, dtype=np.uint8) % 3
    sfx = ".gz" if compress else ""
    got_img = read_idx(write_idx(tmp_path / f"img{sfx}", images, compress))
    got_lab = read_idx(write_idx(tmp_path / f"lab{sfx}", labels, compress))
    assert got_img.dtype == np.uint8 and got_img.shape == (7, 5, 5)
    np.testing.assert_array_equal(got_img, images)
    assert got_lab.dtype == np.uint8 and got_lab.shape == (7,)
    np.testing.assert_array_equal(got_lab, labels)
    got_img[0, 0, 0] = 1  # returned array is writable


def test_read_idx_gzip_detected_by_magic_not_suffix(tmp_path):
    labels = np.array([3, 1, 4, 1, 5], dtype=np.uint8)
    p = write_idx(tmp_path / "labels-idx1-ubyte", labels, compress=True)  # gzip, no .gz suffix
    np.testing.assert_array_equal(read_idx(p), labels)
    q = write_idx(tmp_path / "raw-but-named.gz", labels, compress=False)  # raw, .gz suffix
    np.testing.assert_array_equal(read_idx(q), labels)


@pytest.mark.parametrize("compress", [False, True])
def test_read_idx_float_and_other_dtypes(tmp_path, compress):
    f32 = np.linspace(-1.5, 2.5, 12, dtype=np.float32).reshape(3, 4)
    got = read_idx(write_idx(tmp_path / "f.idx", f32, compress))
    assert got.dtype == np.float32 and got.dtype.isnative and got.shape == (3, 4)
    np.testing.assert_array_equal(got, f32)
    for arr in (np.array([-3, 7], np.int8), np.array([-300, 12345], np.int16),
                np.array([[-70000], [2**30]], np.int32), np.array([np.pi, -1e-300], np.float64)):
        got = read_idx(write_idx(tmp_path / "x.idx", arr, compress))
        assert got.dtype == arr.dtype and got.dtype.isnative
        np.testing.assert_array_equal(got, arr)


def test_read_idx_malformed(tmp_path):
    good = idx_bytes(np.zeros((4, 3, 3), np.uint8))
    cases = {
        "badmagic": b"\x08\x03" + good[2:],  # first two bytes not zero
        "badcode": good[:2] + b"\x07" + good[3:],  # unknown dtype code
        "zerodims": b"\x00\x00\x08\x00",
        "short": b"\x00\x00",
        "header": good[:9],  # 3 dims announced, header cut
        "truncated": good[:-5],
        "trailing": good + b"\x00",
    }
    for name, data in cases.items():
        p = tmp_path / name
        p.write_bytes(data)
        with pytest.raises(DatasetError, match=name):
            read_idx(p)
    # truncated payload inside a valid gzip stream
    p = tmp_path / "trunc.gz"
    p.write_bytes(gzip.compress(good[:-1]))
    with pytest.raises(DatasetError, match="truncated payload"):
        read_idx(p)
    # corrupt gzip stream
    p = tmp_path / "corrupt.gz"
    p.write_bytes(gzip.compress(good)[:20])
    with pytest.raises(DatasetError, match="corrupt.gz"):
        read_idx(p)
    with pytest.raises(DatasetError, match="not found"):
        read_idx(tmp_path / "missing")


def test_dataset_error_is_value_error_and_one_line(tmp_path):
    assert issubclass(DatasetError, ValueError)
    p = tmp_path / "bad"
    p.write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(DatasetError) as info:
        read_idx(p)
    assert "\n" not in str(info.value)


# ---------------------------------------------------------------------------
# stratification / make_split
# ---------------------------------------------------------------------------


def _labels(n_per_class=(30, 25, 40, 20)):
    y = np.concatenate([np.full(n, c) for c, n in enumerate(n_per_class)])
    return np.random.default_rng(7).permutation(y).astype(np.int64)


def test_stratified_exact_counts_and_determinism():
    y = _labels()
    idx = stratified_labelled_indices(y, 20, 4, seed=3)
    assert idx.dtype == np.int64 and idx.shape == (20,)
    assert len(np.unique(idx)) == 20
    np.testing.assert_array_equal(np.bincount(y[idx], minlength=4), [5, 5, 5, 5])
    np.testing.assert_array_equal(idx, stratified_labelled_indices(y, 20, 4, seed=3))
    assert not np.array_equal(idx, stratified_labelled_indices(y, 20, 4, seed=4))


def test_stratified_remainder_spread_over_first_classes():
    y = _labels()
    idx = stratified_labelled_indices(y, 11, 4, seed=0)
    np.testing.assert_array_equal(np.bincount(y[idx], minlength=4), [3, 3, 3, 2])
    idx = stratified_labelled_indices(y, 2, 4, seed=0)  # fewer than classes
    np.testing.assert_array_equal(np.bincount(y[idx], minlength=4), [1, 1, 0, 0])


def test_stratified_errors():
    y = _labels((30, 25, 40, 3))
    with pytest.raises(DatasetError, match=">= 1"):
        stratified_labelled_indices(y, 0, 4, seed=0)
    with pytest.raises(DatasetError, match="pool of 98"):
        stratified_labelled_indices(y, 99, 4, seed=0)
    with pytest.raises(DatasetError, match="class 3 has only 3"):
        stratified_labelled_indices(y, 40, 4, seed=0)
    with pytest.raises(DatasetError, match="0..2"):
        stratified_labelled_indices(y, 4, 3, seed=0)


def test_make_split_disjoint_and_deterministic():
    n = 200
    y = (np.arange(n) % 4).astype(np.int64)
    x = np.tile((np.arange(n) / (n - 1)).astype(np.float32)[:, None], (1, 6))  # x[:, 0] encodes index
    mask = np.arange(n) % 5 == 4
    kw = dict(n_classes=4, n_labelled=10, test_mask=mask, name="toy", image_shape=(2, 3))
    s = make_split(x, y, seed=1, **kw)
    assert isinstance(s, SemiSupervisedSplit)
    assert s.x_dim == 6 and s.image_shape == (2, 3) and s.n_classes == 4
    for a in (s.x_labelled, s.x_unlabelled, s.x_test):
        assert a.dtype == np.float32 and a.ndim == 2
    assert s.y_labelled.dtype == np.int64 and s.y_test.dtype == np.int64
    ids = lambda a: set(np.rint(a[:, 0] * (n - 1)).astype(int))  # noqa: E731
    lab, unl, test = ids(s.x_labelled), ids(s.x_unlabelled), ids(s.x_test)
    assert len(lab) == 10 and len(unl) == 150 and len(test) == 40
    assert not (lab & unl) and not (lab & test) and not (unl & test)
    assert test == set(np.flatnonzero(mask))
    assert lab | unl == set(np.flatnonzero(~mask))
    np.testing.assert_array_equal(np.bincount(s.y_labelled, minlength=4), [3, 3, 2, 2])
    np.testing.assert_array_equal(s.y_labelled, y[sorted(lab)])
    s2 = make_split(x, y, seed=1, **kw)
    np.testing.assert_array_equal(s.x_labelled, s2.x_labelled)
    np.testing.assert_array_equal(s.x_unlabelled, s2.x_unlabelled)
    s3 = make_split(x, y, seed=2, **kw)
    assert not np.array_equal(s.x_labelled, s3.x_labelled)
    assert s.description == "toy: 160 train pool / 40 test, 10 labelled (2-3 per class, +1 for classes 0..1, seed 1)"


def test_make_split_validation():
    x = np.zeros((10, 4), np.float32)
    y = np.arange(10) % 2
    mask = np.zeros(10, bool)
    kw = dict(n_classes=2, n_labelled=2, seed=0, name="t")
    with pytest.raises(DatasetError, match="image shape"):
        make_split(x, y, test_mask=mask, image_shape=(3, 3), **kw)
    with pytest.raises(DatasetError, match=r"\[0, 1\]"):
        make_split(x + 2, y, test_mask=mask, image_shape=(2, 2), **kw)
    with pytest.raises(DatasetError, match="labels must have shape"):
        make_split(x, y[:5], test_mask=mask, image_shape=(2, 2), **kw)
    with pytest.raises(DatasetError, match="test mask"):
        make_split(x, y, test_mask=mask[:5], image_shape=(2, 2), **kw)


# ---------------------------------------------------------------------------
# digits
# ---------------------------------------------------------------------------


def test_digits_split():
    s = load_digits_split(n_labelled=100, seed=0)
    assert s.name == "digits" and s.n_classes == 10 and s.image_shape == (8, 8) and s.x_dim == 64
    # 1,797 images; i % 5 == 4 for i = 4, 9, ..., 1794 -> 359 test, 1,438 pool
    assert s.x_test.shape == (359, 64) and s.y_test.shape == (359,)
    assert s.x_labelled.shape == (100, 64) and s.x_unlabelled.shape == (1338, 64)
    assert s.n_labelled + s.n_unlabelled == 1438
    np.testing.assert_array_equal(np.bincount(s.y_labelled, minlength=10), np.full(10, 10))
    for a in (s.x_labelled, s.x_unlabelled, s.x_test):
        assert a.dtype == np.float32 and a.min() >= 0.0 and a.max() <= 1.0
    assert s.x_test.max() == 1.0
    assert s.description == "digits: 1438 train pool / 359 test (i % 5 == 4), 100 labelled (10 per class, seed 0)"
    from sklearn.datasets import load_digits

    ref = load_digits()
    np.testing.assert_array_equal(s.y_test, ref.target[4::5])
    np.testing.assert_allclose(s.x_test[0], ref.data[4] / 16.0)
    via = load_split("digits", n_labelled=100, seed=0)
    np.testing.assert_array_equal(via.x_labelled, s.x_labelled)
    other = load_digits_split(n_labelled=100, seed=1)
    assert not np.array_equal(other.x_labelled, s.x_labelled)


# ---------------------------------------------------------------------------
# MNIST (generated fake files)
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("compress", [True, False])
def test_fake_mnist_t10k_protocol(tmp_path, compress):
    d, images, labels = fake_t10k_dir(tmp_path, n=50, compress=compress)
    s = load_mnist_split(d, n_labelled=20, seed=0)
    assert s.name == "mnist" and s.n_classes == 10 and s.image_shape == (28, 28) and s.x_dim == 784
    assert s.x_test.shape == (10, 784) and s.n_labelled == 20 and s.n_unlabelled == 20
    test_ids = row_index(s.x_test)
    np.testing.assert_array_equal(test_ids, np.arange(4, 50, 5))  # i % 5 == 4, file order
    np.testing.assert_array_equal(s.y_test, labels[test_ids])
    np.testing.assert_allclose(s.x_test, images[test_ids].reshape(10, -1) / 255.0, rtol=1e-6)
    lab_ids, unl_ids = row_index(s.x_labelled), row_index(s.x_unlabelled)
    assert set(lab_ids).isdisjoint(unl_ids)
    assert set(lab_ids) | set(unl_ids) == {i for i in range(50) if i % 5 != 4}
    np.testing.assert_array_equal(s.y_labelled, labels[lab_ids])
    np.testing.assert_array_equal(np.bincount(s.y_labelled, minlength=10), np.full(10, 2))
    for a in (s.x_labelled, s.x_unlabelled, s.x_test):
        assert a.dtype == np.float32 and a.min() >= 0.0 and a.max() <= 1.0
    assert "40 train pool / 10 test" in s.description and "i % 5 == 4" in s.description
    again = load_split("mnist", data_dir=str(d), n_labelled=20, seed=0)
    np.testing.assert_array_equal(again.x_labelled, s.x_labelled)


def test_fake_mnist_with_train_files_uses_standard_split(tmp_path):
    d, test_images, test_labels = fake_t10k_dir(tmp_path, n=20)
    train_images = fake_mnist_images(60)
    train_labels = (np.arange(60) % 10).astype(np.uint8)
    write_idx(d / "train-images.idx3-ubyte", train_images, compress=False)  # dot variant, raw
    write_idx(d / "train-labels-idx1-ubyte.gz", train_labels, compress=True)
    files = find_mnist_files(d)
    assert set(files) == {"train_images", "train_labels", "test_images", "test_labels"}
    s = load_mnist_split(d, n_labelled=30, seed=5)
    assert s.x_test.shape == (20, 784) and s.n_labelled == 30 and s.n_unlabelled == 30
    np.testing.assert_allclose(s.x_test, test_images.reshape(20, -1) / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(s.y_test, test_labels)
    lab_ids, unl_ids = row_index(s.x_labelled), row_index(s.x_unlabelled)
    assert sorted(np.concatenate([lab_ids, unl_ids]).tolist()) == list(range(60))
    np.testing.assert_array_equal(s.y_labelled, train_labels[lab_ids])
    np.testing.assert_array_equal(np.bincount(s.y_labelled, minlength=10), np.full(10, 3))
    assert "60 train pool / 20 test" in s.description
    # the t10k protocol can still be forced
    t = load_mnist_split(d, n_labelled=4, seed=0, protocol="t10k")  # 20 t10k images, classes 0..3
    assert t.x_test.shape == (4, 784) and t.n_labelled + t.n_unlabelled == 16
    np.testing.assert_array_equal(row_index(t.x_test), [4, 9, 14, 19])


def test_mnist_errors(tmp_path):
    with pytest.raises(DatasetError, match="MNIST data directory not found"):
        load_split("mnist", data_dir=tmp_path / "nope")
    with pytest.raises(DatasetError, match="--dataset mnist needs --data-dir"):
        load_split("mnist")
    with pytest.raises(DatasetError, match="unknown dataset 'cifar'.*digits, mnist"):
        load_split("cifar")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DatasetError, match="no MNIST IDX files"):
        find_mnist_files(empty)
    half = tmp_path / "half"
    half.mkdir()
    write_idx(half / "t10k-images-idx3-ubyte.gz", fake_mnist_images(5), compress=True)
    with pytest.raises(DatasetError, match="t10k images but no t10k labels"):
        find_mnist_files(half)
    # image / label count mismatch
    mism = tmp_path / "mismatch"
    mism.mkdir()
    write_idx(mism / "t10k-images-idx3-ubyte", fake_mnist_images(10), compress=False)
    write_idx(mism / "t10k-labels-idx1-ubyte", np.zeros(9, np.uint8), compress=False)
    with pytest.raises(DatasetError, match="count mismatch"):
        load_mnist_split(mism)
    # labels out of range
    write_idx(mism / "t10k-labels-idx1-ubyte", np.full(10, 12, np.uint8), compress=False)
    with pytest.raises(DatasetError, match="0..9"):
        load_mnist_split(mism)
    # too many labels for the 40-image pool; a class missing from the pool; standard without train files
    d, _, _ = fake_t10k_dir(tmp_path, n=50)
    with pytest.raises(DatasetError, match="cannot draw 41"):
        load_mnist_split(d, n_labelled=41)
    skew = tmp_path / "skew"
    skew.mkdir()
    write_idx(skew / "t10k-images-idx3-ubyte", fake_mnist_images(50), compress=False)
    write_idx(skew / "t10k-labels-idx1-ubyte", (np.arange(50) % 9).astype(np.uint8), compress=False)
    with pytest.raises(DatasetError, match="class 9 has only 0"):
        load_mnist_split(skew, n_labelled=10)
    with pytest.raises(DatasetError, match="standard split needs"):
        load_mnist_split(d, protocol="standard")


def test_shared_mnist_dir_env(tmp_path, monkeypatch):
    monkeypatch.setenv("SSVAE_FAST_MNIST_DIR", str(tmp_path))
    assert shared_mnist_dir() == tmp_path
    monkeypatch.setenv("SSVAE_FAST_MNIST_DIR", str(tmp_path / "missing"))
    got = shared_mnist_dir()
    assert got is None or got.name == "mnist"


# ---------------------------------------------------------------------------
# real MNIST t10k (skipped when ../shared/data/mnist is absent)
# ---------------------------------------------------------------------------

_MD5 = {
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}


def _real_t10k_files():
    d = shared_mnist_dir()
    if d is None:
        return None, None
    try:
        files = find_mnist_files(d)
    except DatasetError:
        return None, None
    if "test_images" not in files:
        return None, None
    return d, files


def test_real_mnist_t10k_protocol():
    d, files = _real_t10k_files()
    if d is None:
        pytest.skip("real MNIST t10k files not found at ../shared/data/mnist")
    for key in ("test_images", "test_labels"):
        p = files[key]
        if p.name in _MD5:  # canonical gzip files: check they are byte-identical
            assert hashlib.md5(p.read_bytes()).hexdigest() == _MD5[p.name]
    s = load_mnist_split(d, n_labelled=100, seed=0, protocol="t10k")
    assert s.x_test.shape == (2000, 784) and s.y_test.shape == (2000,)
    assert s.n_labelled + s.n_unlabelled == 8000 and s.n_labelled == 100
    np.testing.assert_array_equal(np.bincount(s.y_labelled, minlength=10), np.full(10, 10))
    labels = read_idx(files["test_labels"])
    assert labels.shape == (10000,)
    assert s.y_test[0] == labels[4]
    np.testing.assert_array_equal(s.y_test, labels[4::5])
    images = read_idx(files["test_images"])
    np.testing.assert_allclose(s.x_test[0], images[4].reshape(-1) / 255.0, rtol=1e-6)
    assert s.x_labelled.min() >= 0.0 and s.x_labelled.max() <= 1.0
    assert s.description == (
        "mnist: 8000 train pool / 2000 test (t10k protocol, i % 5 == 4), 100 labelled (10 per class, seed 0)"
    )


# ---------------------------------------------------------------------------
# binarize
# ---------------------------------------------------------------------------


def test_binarize_modes():
    x = torch.tensor([[0.0, 0.2, 0.5, 0.51, 1.0]])
    assert binarize(x, "none") is x
    t = binarize(x, "threshold")
    assert t.dtype == torch.float32
    assert t.tolist() == [[0.0, 0.0, 0.0, 1.0, 1.0]]
    big = torch.full((200, 50), 0.3)
    g1, g2 = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    a, b = binarize(big, "dynamic", generator=g1), binarize(big, "dynamic", generator=g2)
    assert torch.equal(a, b)
    assert set(a.unique().tolist()) <= {0.0, 1.0}
    assert abs(a.mean().item() - 0.3) < 0.03
    c = binarize(big, "dynamic", generator=g1)
    assert not torch.equal(a, c)
    assert binarize(x, "dynamic").tolist()[0][0] == 0.0 and binarize(x, "dynamic").tolist()[0][-1] == 1.0
    xn = np.array([0.1, 0.9], np.float32)
    out = binarize(xn, "threshold")
    assert isinstance(out, np.ndarray) and out.tolist() == [0.0, 1.0]
    with pytest.raises(DatasetError, match="unknown binarization mode 'bogus'"):
        binarize(x, "bogus")
