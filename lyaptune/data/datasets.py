"""The registered datasets: each loader reads (or downloads, only when asked) the raw splits.

- ``digits``: scikit-learn's bundled 8x8 digits (offline), stratified 80/20 train/test; (1, 8, 8), 10.
- ``mnist``, ``fashion-mnist``: torchvision idx files in ``<root>/MNIST/raw`` (``FashionMNIST/raw``);
  (1, 28, 28), 10.
- ``mini-mnist``: 550 / 100 per class of MNIST train / test (papers/003); (1, 28, 28), 10.
- ``cifar10``, ``mini-cifar10``: ``<root>/cifar-10-batches-py``, mini: 500 / 100 per class; (3, 32, 32), 10.
- ``cifar100``: ``<root>/cifar-100-python``, fine labels; (3, 32, 32), 100.
- ``gtsrb``: torchvision layout ``<root>/gtsrb``, resized to ``image_size``; (3, 32, 32), 43.
- ``tinyimagenet``: ``<root>/tiny-imagenet-200/{train,val}``, read lazily by default; (3, 64, 64), 200.
- ``imagenet``: ``<root>/imagenet/{train,val}/<wnid>/`` (torchvision ImageFolder), shorter side 256 then
  center crop 224, read lazily; (3, 224, 224), 1000. ``tinyimagenet`` is its documented stand-in.
- ``synthetic``: seeded Gaussian clusters of any shape and class count; (1, 8, 8), 10 by default.

Default normalisations follow METHODS.md section 7: MNIST family and digits ``(x - 0.5) / 0.5``,
CIFAR-10 its per-channel mean/std, CIFAR-100, GTSRB, TinyImageNet and ImageNet the ImageNet mean/std;
synthetic data are used as generated.
"""

from __future__ import annotations

import gzip
import math
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lyaptune.data._readers import (
    gtsrb_samples,
    image_folder_samples,
    load_images,
    missing_files,
    raise_missing,
    read_cifar,
    read_failed,
    tinyimagenet_samples,
)
from lyaptune.data._registry import RawData, RawSplit, get_dataset_info, register_dataset
from lyaptune.data.subsets import STREAMS, index_digest, per_class_subset, rng_for, stratified_split
from lyaptune.errors import ConfigError, DataError

#: Up to this many class-mean entries (classes x dimensions) the synthetic means are drawn as one matrix;
#: above it (an ImageNet stand-in: 1000 x 150,528) only the classes drawn get a mean, each from its own
#: seeded stream, so memory stays bounded.
_SYNTHETIC_DENSE_MEANS = 1 << 24

__all__: list[str] = []

_MNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
_CIFAR10_FILES = tuple(f"cifar-10-batches-py/data_batch_{i}" for i in range(1, 6)) + (
    "cifar-10-batches-py/test_batch",
)
_CIFAR100_FILES = ("cifar-100-python/train", "cifar-100-python/test")
_GTSRB_FILES = ("gtsrb/GTSRB/Training", "gtsrb/GTSRB/Final_Test/Images", "gtsrb/GT-final_test.csv")
_TINY_FILES = ("tiny-imagenet-200/train", "tiny-imagenet-200/val")
_TINY_URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
_MNIST_REF = "LeCun et al. (1998); torchvision.datasets.MNIST"
_CIFAR_REF = "Krizhevsky (2009), Learning multiple layers of features from tiny images"


# ----------------------------------------------------------------------------- option checks


def _int_option(dataset: str, key: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ConfigError(f"dataset '{dataset}': option {key}={value!r} must be an integer >= {minimum}")
    return int(value)


def _float_option(dataset: str, key: str, value: Any, low: float, high: float, *, open_low: bool) -> float:
    ok = isinstance(value, (int, float, np.floating)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (low < value if open_low else low <= value) and value < high
    if not ok:
        bracket = "(" if open_low else "["
        raise ConfigError(f"dataset '{dataset}': option {key}={value!r} must be in {bracket}{low}, {high})")
    return float(value)


def _shape_option(dataset: str, key: str, value: Any) -> tuple[int, ...]:
    try:
        shape = tuple(value)
    except TypeError:
        shape = ()
    if not shape or not all(
        isinstance(s, (int, np.integer)) and not isinstance(s, bool) and s > 0 for s in shape
    ):
        raise ConfigError(
            f"dataset '{dataset}': option {key}={value!r} must be a non-empty tuple of positive integers"
        )
    return tuple(int(s) for s in shape)


def _check_files(name: str, root: Path, download: bool, files: tuple[str, ...], fetch) -> None:
    """Fetch the files when ``download`` (via ``fetch()``), then raise DataError if any is missing."""
    if download and missing_files(root, files):
        try:
            fetch()
        except DataError:
            raise
        except Exception as exc:  # network and archive errors come in many types
            raise DataError(
                f"dataset '{name}': download into {root} failed: {type(exc).__name__}: {exc}"
            ) from exc
    missing = missing_files(root, files)
    if missing:
        raise_missing(name, root, missing, can_download=True)


# ----------------------------------------------------------------------------- digits


@register_dataset(
    "digits",
    input_shape=(1, 8, 8),
    num_classes=10,
    description="scikit-learn's bundled 8x8 handwritten digits (1,797 images; offline), 80/20 split",
    reference="sklearn.datasets.load_digits (UCI optical recognition of handwritten digits)",
    options={"test_fraction": 0.2, "split_seed": 0},
    normalization="mnist",
)
def _digits(root: Path, download: bool, options: dict[str, Any]) -> RawData:
    """The 8x8 digits scaled to [0, 1] (divide by 16); stratified train/test split seeded by ``split_seed``.

    With the default ``test_fraction=0.2``: 1,438 train / 359 test images.
    """
    from sklearn.datasets import load_digits

    test_fraction = _float_option(
        "digits", "test_fraction", options["test_fraction"], 0.0, 1.0, open_low=True
    )
    split_seed = _int_option("digits", "split_seed", options["split_seed"], 0)
    bunch = load_digits()
    x = torch.from_numpy(np.asarray(bunch.images, dtype=np.float32) / np.float32(16.0)).unsqueeze(1)
    y = torch.from_numpy(np.asarray(bunch.target, dtype=np.int64))
    n_test = round(test_fraction * y.shape[0])
    if not 0 < n_test < y.shape[0]:
        raise ConfigError(f"dataset 'digits': option test_fraction={test_fraction} leaves an empty split")
    test_idx, train_idx = stratified_split(y.numpy(), n_test, rng_for(split_seed, "test-split"))
    full = RawSplit(y=y, x=x)
    info = {
        "split_seed": split_seed,
        "test_fraction": test_fraction,
        "test_indices_sha256": index_digest(test_idx),
    }
    return RawData(full.take(train_idx), full.take(test_idx), (1, 8, 8), 10, info)


# ----------------------------------------------------------------------------- MNIST family


def _mnist_like(name: str, cls_name: str, root: Path, download: bool) -> tuple[RawSplit, RawSplit]:
    import torchvision

    cls = getattr(torchvision.datasets, cls_name)
    files = tuple(f"{cls_name}/raw/{f}" for f in _MNIST_FILES)
    for f in missing_files(root, files):
        packed = root / f"{f}.gz"
        if packed.exists():  # the archives as downloaded: unpack them where torchvision reads them
            try:
                with gzip.open(packed, "rb") as src, open(root / f, "wb") as dst:
                    shutil.copyfileobj(src, dst)
            except OSError as exc:
                (root / f).unlink(missing_ok=True)
                raise read_failed(name, packed, exc) from exc
    _check_files(name, root, download, files, lambda: cls(str(root), train=True, download=True))
    splits = []
    for train in (True, False):
        try:
            ds = cls(str(root), train=train, download=False)
        except (RuntimeError, AssertionError, OSError, ValueError) as exc:
            raise read_failed(name, root / cls_name / "raw", exc) from exc
        splits.append(RawSplit(y=ds.targets.to(torch.int64), x=ds.data.unsqueeze(1)))
    return splits[0], splits[1]


@register_dataset(
    "mnist",
    input_shape=(1, 28, 28),
    num_classes=10,
    description="MNIST handwritten digits (60,000 train / 10,000 test)",
    files=tuple(f"MNIST/raw/{f}" for f in _MNIST_FILES),
    reference=_MNIST_REF,
    normalization="mnist",
)
def _mnist(root: Path, download: bool, options: dict[str, Any]) -> RawData:
    train, test = _mnist_like("mnist", "MNIST", root, download)
    return RawData(train, test, (1, 28, 28), 10, {})


@register_dataset(
    "fashion-mnist",
    input_shape=(1, 28, 28),
    num_classes=10,
    description="Fashion-MNIST clothing images (60,000 train / 10,000 test)",
    files=tuple(f"FashionMNIST/raw/{f}" for f in _MNIST_FILES),
    reference="Xiao et al. (2017), Fashion-MNIST; torchvision.datasets.FashionMNIST",
    normalization="mnist",
)
def _fashion_mnist(root: Path, download: bool, options: dict[str, Any]) -> RawData:
    train, test = _mnist_like("fashion-mnist", "FashionMNIST", root, download)
    return RawData(train, test, (1, 28, 28), 10, {})


def _mini(
    name: str, train: RawSplit, test: RawSplit, num_classes: int, options: dict[str, Any]
) -> tuple[RawSplit, RawSplit, dict[str, Any]]:
    """Per-class subsets of both splits, seeded by the ``subset_seed`` option (papers/003, Section 5.1)."""
    tr_k = _int_option(name, "train_per_class", options["train_per_class"], 1)
    te_k = _int_option(name, "test_per_class", options["test_per_class"], 1)
    seed = _int_option(name, "subset_seed", options["subset_seed"], 0)
    tr_idx = per_class_subset(
        train.y.numpy(), tr_k, num_classes, rng_for(seed, "subset-train"), what="train_per_class"
    )
    te_idx = per_class_subset(
        test.y.numpy(), te_k, num_classes, rng_for(seed, "subset-test"), what="test_per_class"
    )
    info = {
        "subset_seed": seed,
        "train_per_class": tr_k,
        "test_per_class": te_k,
        "train_indices_sha256": index_digest(tr_idx),
        "test_indices_sha256": index_digest(te_idx),
    }
    return train.take(tr_idx), test.take(te_idx), info


@register_dataset(
    "mini-mnist",
    input_shape=(1, 28, 28),
    num_classes=10,
    description="mini-MNIST: 550 train / 100 test images per class of MNIST (5,500 / 1,000), seeded",
    files=tuple(f"MNIST/raw/{f}" for f in _MNIST_FILES),
    reference="papers/003, Section 5.1",
    options={"train_per_class": 550, "test_per_class": 100, "subset_seed": 0},
    normalization="mnist",
)
def _mini_mnist(root: Path, download: bool, options: dict[str, Any]) -> RawData:
    train, test = _mnist_like("mini-mnist", "MNIST", root, download)
    train, test, info = _mini("mini-mnist", train, test, 10, options)
    return RawData(train, test, (1, 28, 28), 10, info)


# ----------------------------------------------------------------------------- CIFAR


def _cifar10_raw(name: str, root: Path, download: bool) -> tuple[RawSplit, RawSplit]:
    import torchvision

    _check_files(
        name, root, download, _CIFAR10_FILES, lambda: torchvision.datasets.CIFAR10(str(root), download=True)
    )
    x, y = read_cifar(name, [root / f for f in _CIFAR10_FILES[:5]], "labels")
    tx, ty = read_cifar(name, [root / _CIFAR10_FILES[5]], "labels")
    return RawSplit(y=y, x=x), RawSplit(y=ty, x=tx)


@register_dataset(
    "cifar10",
    input_shape=(3, 32, 32),
    num_classes=10,
    description="CIFAR-10 (50,000 train / 10,000 test colour images)",
    files=_CIFAR10_FILES,
    reference=_CIFAR_REF,
    normalization="cifar10",
)
def _cifar10(root: Path, download: bool, options: dict[str, Any]) -> RawData:
    train, test = _cifar10_raw("cifar10", root, download)
    return RawData(train, test, (3, 32, 32), 10, {})


@register_dataset(
    "mini-cifar10",
    input_shape=(3, 32, 32),
    num_classes=10,
    description="mini-CIFAR-10: 500 train / 100 test images per class of CIFAR-10 (5,000 / 1,000), seeded",
    files=_CIFAR10_FILES,
    reference="papers/003, Section 5.1",
    options={"train_per_class": 500, "test_per_class": 100, "subset_seed": 0},
    normalization="cifar10",
)
def _mini_cifar10(root: Path, download: bool, options: dict[str, Any]) -> RawData:
    train, test = _cifar10_raw("mini-cifar10", root, download)
    train, test, info = _mini("mini-cifar10", train, test, 10, options)
    return RawData(train, test, (3, 32, 32), 10, info)


@register_dataset(
    "cifar100",
    input_shape=(3, 32, 32),
    num_classes=100,
    description="CIFAR-100 (50,000 train / 10,000 test colour images, 100 fine classes)",
    files=_CIFAR100_FILES,
    reference=_CIFAR_REF,
    normalization="imagenet",
)
def _cifar100(root: Path, download: bool, options: dict[str, Any]) -> RawData:
    import torchvision

    _check_files(
        "cifar100",
        root,
        download,
        _CIFAR100_FILES,
        lambda: torchvision.datasets.CIFAR100(str(root), download=True),
    )
    x, y = read_cifar("cifar100", [root / _CIFAR100_FILES[0]], "fine_labels")
    tx, ty = read_cifar("cifar100", [root / _CIFAR100_FILES[1]], "fine_labels")
    return RawData(RawSplit(y=y, x=x), RawSplit(y=ty, x=tx), (3, 32, 32), 100, {})


# ----------------------------------------------------------------------------- GTSRB, TinyImageNet


@register_dataset(
    "gtsrb",
    input_shape=(3, 32, 32),
    num_classes=43,
    description="German Traffic Sign Recognition Benchmark (39,209 train / 12,630 test), resized square",
    files=_GTSRB_FILES,
    reference="Stallkamp et al. (2012); torchvision.datasets.GTSRB; used in papers/000",
    options={"image_size": 32},
    normalization="imagenet",
)
def _gtsrb(root: Path, download: bool, options: dict[str, Any]) -> RawData:
    import torchvision

    size = _int_option("gtsrb", "image_size", options["image_size"], 1)

    def fetch() -> None:
        torchvision.datasets.GTSRB(str(root), split="train", download=True)
        torchvision.datasets.GTSRB(str(root), split="test", download=True)

    _check_files("gtsrb", root, download, _GTSRB_FILES, fetch)
    tr_f, tr_y, te_f, te_y = gtsrb_samples(root / "gtsrb")
    if not tr_f or not te_f:
        raise DataError(
            f"dataset 'gtsrb': found {len(tr_f)} train and {len(te_f)} test images under {root / 'gtsrb'}"
        )
    train = RawSplit(y=torch.tensor(tr_y, dtype=torch.int64), x=load_images("gtsrb", tr_f, size))
    test = RawSplit(y=torch.tensor(te_y, dtype=torch.int64), x=load_images("gtsrb", te_f, size))
    return RawData(train, test, (3, size, size), 43, {"image_size": size, "resize": "PIL bilinear"})


@register_dataset(
    "tinyimagenet",
    input_shape=(3, 64, 64),
    num_classes=200,
    description="Tiny ImageNet (200 classes, 100,000 train / 10,000 val used as test), ImageFolder layout",
    files=_TINY_FILES,
    reference="Le & Yang (2015), Tiny ImageNet (CS231n); used in papers/000",
    options={"image_size": 64, "in_memory": False},
    normalization="imagenet",
)
def _tinyimagenet(root: Path, download: bool, options: dict[str, Any]) -> RawData:
    from torchvision.datasets.utils import download_and_extract_archive

    size = _int_option("tinyimagenet", "image_size", options["image_size"], 1)
    in_memory = options["in_memory"]
    if not isinstance(in_memory, bool):
        raise ConfigError(f"dataset 'tinyimagenet': option in_memory={in_memory!r} must be true or false")
    _check_files(
        "tinyimagenet",
        root,
        download,
        _TINY_FILES,
        lambda: download_and_extract_archive(_TINY_URL, str(root)),
    )
    tr_f, tr_y, te_f, te_y, classes = tinyimagenet_samples(root / "tiny-imagenet-200")
    splits = []
    for files, labels in ((tr_f, tr_y), (te_f, te_y)):
        y = torch.tensor(labels, dtype=torch.int64)
        if in_memory:
            splits.append(RawSplit(y=y, x=load_images("tinyimagenet", files, size)))
        else:
            splits.append(RawSplit(y=y, files=files, image_size=size))
    info = {"image_size": size, "in_memory": in_memory, "test_split": "val", "classes_found": len(classes)}
    return RawData(splits[0], splits[1], (3, size, size), 200, info)


_IMAGENET_FILES = ("imagenet/train", "imagenet/val")


@register_dataset(
    "imagenet",
    input_shape=(3, 224, 224),
    num_classes=1000,
    description="ImageNet (ILSVRC-2012), torchvision ImageFolder layout <root>/imagenet/{train,val}/<wnid>/",
    files=_IMAGENET_FILES,
    reference="Russakovsky et al. (2015), ILSVRC; used in papers/001 (ResNet-50, ViT-S/16, ViT-B/16)",
    options={"image_size": 224, "crop_ratio": 0.875, "num_classes": 1000, "in_memory": False},
    normalization="imagenet",
)
def _imagenet(root: Path, download: bool, options: dict[str, Any]) -> RawData:
    """ImageNet read from ``<root>/imagenet/train/<wnid>/*.JPEG`` and ``<root>/imagenet/val/<wnid>/*``.

    The layout is torchvision's ``ImageFolder`` (classes = the sorted wnid folders of ``train``; the
    official validation set, sorted into ``val/<wnid>/`` folders, is the test split; a validation
    fraction carves a search split out of ``train`` as for every dataset). Every image is read like
    ImageNet's evaluation transform: the shorter side resized to ``round(image_size / crop_ratio)``
    (bilinear), then a ``image_size`` center crop (224 from 256 by default; ``crop_ratio: 1`` crops the
    square from the shorter side), then the ImageNet mean/std normalisation of METHODS.md section 7. No
    augmentation. Images are read lazily (``in_memory: false``, the default; 1.28M images do not fit).

    The files cannot be downloaded (ImageNet needs a registration at image-net.org); a missing folder
    is a one-line error naming the expected path. ``num_classes`` (default 1000) is the classifier's
    width and must cover the classes found, so a class subset (e.g. ImageNet-100) works with its own
    count.

    Stand-in: papers/001's ImageNet results (ResNet-50, ViT-S/16, ViT-B/16) need the full set. Without
    it, ``tinyimagenet`` (200 classes, 64 px, the papers/000 dataset; ``image_size: 64``) is the
    documented smaller stand-in a spec may name instead, and a ``--smoke`` run with the files absent
    uses ``synthetic`` data of the same shape and class count (:mod:`lyaptune.study.standin`).
    """
    size = _int_option("imagenet", "image_size", options["image_size"], 1)
    crop = _float_option("imagenet", "crop_ratio", options["crop_ratio"], 0.0, 1.0 + 1e-12, open_low=True)
    num_classes = _int_option("imagenet", "num_classes", options["num_classes"], 1)
    in_memory = options["in_memory"]
    if not isinstance(in_memory, bool):
        raise ConfigError(f"dataset 'imagenet': option in_memory={in_memory!r} must be true or false")
    missing = missing_files(root, _IMAGENET_FILES)
    if missing:
        raise DataError(
            f"dataset 'imagenet': missing {', '.join(str(root / m) for m in missing)}; expected "
            f"torchvision's ImageFolder layout {root / 'imagenet'}/train/<wnid>/*.JPEG and "
            ".../val/<wnid>/*.JPEG "
            "(ImageNet cannot be downloaded: get ILSVRC-2012 from image-net.org, or point data_root / "
            "$LYAPTUNE_DATA_ROOT at the directory holding imagenet/)"
        )
    tr_f, tr_y, te_f, te_y, classes = image_folder_samples("imagenet", root / "imagenet")
    if len(classes) > num_classes:
        raise ConfigError(
            f"dataset 'imagenet': {len(classes)} class folders in {root / 'imagenet' / 'train'} but "
            f"num_classes={num_classes}; set the option num_classes to at least {len(classes)}"
        )
    splits = []
    for files, labels in ((tr_f, tr_y), (te_f, te_y)):
        y = torch.tensor(labels, dtype=torch.int64)
        if in_memory:
            splits.append(RawSplit(y=y, x=load_images("imagenet", files, size, crop)))
        else:
            splits.append(RawSplit(y=y, files=files, image_size=size, crop=crop))
    info = {
        "image_size": size,
        "crop_ratio": crop,
        "resize": f"shorter side {max(size, round(size / crop))} (PIL bilinear), center crop {size}",
        "in_memory": in_memory,
        "test_split": "val",
        "classes_found": len(classes),
    }
    return RawData(splits[0], splits[1], (3, size, size), num_classes, info)


# ----------------------------------------------------------------------------- synthetic


@register_dataset(
    "synthetic",
    input_shape=(1, 8, 8),
    num_classes=10,
    description="seeded Gaussian clusters of any input_shape / num_classes (tests; stand-in for absent data)",
    reference="lyaptune",
    options={
        "n_train": 512,
        "n_test": 256,
        "input_shape": (1, 8, 8),
        "num_classes": 10,
        "class_sep": 3.0,
        "data_seed": 0,
        "stand_in_for": None,
    },
    normalization=None,
    images=False,
)
def _synthetic(root: Path, download: bool, options: dict[str, Any]) -> RawData:
    """Gaussian clusters: ``x = mu_y + eps`` with ``eps ~ N(0, I)`` and class means ``mu_k`` drawn once.

    ``mu_k ~ N(0, (class_sep^2 / D) I)`` in ``D = prod(input_shape)`` dimensions, so two means are
    about ``sqrt(2) * class_sep`` noise standard deviations apart whatever ``D`` is: mostly, not
    perfectly, linearly separable. Labels are balanced (``i mod num_classes``, then shuffled). The
    data depend only on the options (``data_seed``), not on ``load_dataset``'s ``seed``.
    """
    n_train = _int_option("synthetic", "n_train", options["n_train"], 1)
    n_test = _int_option("synthetic", "n_test", options["n_test"], 1)
    shape = _shape_option("synthetic", "input_shape", options["input_shape"])
    k = _int_option("synthetic", "num_classes", options["num_classes"], 1)
    sep = options["class_sep"]
    if isinstance(sep, bool) or not isinstance(sep, (int, float)) or not math.isfinite(sep) or sep < 0:
        raise ConfigError(f"dataset 'synthetic': option class_sep={sep!r} must be a finite number >= 0")
    seed = _int_option("synthetic", "data_seed", options["data_seed"], 0)
    stand_in = options["stand_in_for"]
    if stand_in is not None:
        get_dataset_info(stand_in)  # a ConfigError with choices if misspelt
    rng = rng_for(seed, "synthetic")
    d = int(np.prod(shape))
    scale = float(sep) / math.sqrt(d)
    if k * d <= _SYNTHETIC_DENSE_MEANS:
        means = rng.standard_normal((k, d)) * scale
        mean_of = means.__getitem__
    else:  # e.g. an ImageNet stand-in (1000 x 150,528): each used class's mean from its own stream
        mean_rows: dict[int, np.ndarray] = {}

        def mean_of(y: np.ndarray) -> np.ndarray:
            for c in np.unique(y):
                if int(c) not in mean_rows:
                    own = np.random.default_rng([seed, STREAMS["synthetic"], int(c)])
                    mean_rows[int(c)] = own.standard_normal(d, dtype=np.float32) * np.float32(scale)
            return np.stack([mean_rows[int(c)] for c in y])

    def draw(n: int) -> RawSplit:
        y = rng.permutation(np.arange(n) % k)
        x = mean_of(y) + rng.standard_normal((n, d))
        return RawSplit(
            y=torch.from_numpy(y.astype(np.int64)),
            x=torch.from_numpy(x.astype(np.float32)).reshape(n, *shape),
        )

    train, test = draw(n_train), draw(n_test)
    info: dict[str, Any] = {"data_seed": seed, "class_sep": float(sep)}
    if stand_in is not None:
        info["stand_in_for"] = stand_in
    return RawData(train, test, shape, k, info)
