"""File-format readers (CIFAR python pickles, image folders, GTSRB) and the lazily read image dataset.

Readers return raw ``uint8`` arrays; nothing here normalises except :class:`ImageFileDataset`, which
does in ``__getitem__`` what ``load_dataset`` does once for in-memory data.
"""

from __future__ import annotations

import csv
import os
import pickle
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from lyaptune.errors import DataError

__all__ = [
    "IMAGE_EXTENSIONS",
    "ImageFileDataset",
    "load_image",
    "load_images",
    "missing_files",
    "raise_missing",
    "read_cifar",
    "read_failed",
    "gtsrb_samples",
    "image_folder_samples",
    "tinyimagenet_samples",
]

IMAGE_EXTENSIONS = (".jpeg", ".jpg", ".png", ".ppm", ".bmp", ".webp", ".tif", ".tiff")


def missing_files(root: Path, files: Sequence[str]) -> list[str]:
    """The entries of ``files`` (relative to ``root``) that do not exist."""
    return [f for f in files if not (root / f).exists()]


def raise_missing(
    name: str, root: Path, missing: Sequence[str], *, can_download: bool, hint: str = ""
) -> None:
    """Raise the :class:`DataError` for missing dataset files: which, where, and how to get them."""
    if can_download:
        how = (
            f"fetch them with download=True (load_dataset(..., download=True); a study spec's "
            f"task.download: true; `lyaptune trial --download`) "
            f"into {root}, or put the files there "
            "yourself (or point data_root / $LYAPTUNE_DATA_ROOT at the directory holding them)"
        )
    else:
        how = f"{hint} (or point data_root / $LYAPTUNE_DATA_ROOT at the directory holding them)"
    raise DataError(
        f"dataset '{name}': missing {', '.join(missing)} in data directory {root}; to get them, {how}"
    )


def read_failed(name: str, path: Path | str, exc: BaseException) -> DataError:
    """The :class:`DataError` for a file that exists but cannot be read."""
    return DataError(
        f"dataset '{name}': cannot read {path} ({type(exc).__name__}: {exc}); the file looks corrupt or "
        "incomplete: delete it and fetch it again (task.download: true; `lyaptune trial --download`)"
    )


def read_cifar(name: str, paths: Sequence[Path], label_key: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Read CIFAR python-pickle batches into ``uint8`` images ``(N, 3, 32, 32)`` and ``int64`` labels.

    The on-disk rows are 3072 bytes in channel-major (CHW) order, so no transpose is needed.
    """
    xs, ys = [], []
    for path in paths:
        try:
            with open(path, "rb") as f:
                entry = pickle.load(f, encoding="latin1")
            data = np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
            labels = np.asarray(entry[label_key], dtype=np.int64)
            if labels.shape[0] != data.shape[0]:
                raise ValueError(f"{data.shape[0]} images but {labels.shape[0]} labels")
        except (OSError, pickle.UnpicklingError, EOFError, KeyError, ValueError, TypeError) as exc:
            raise read_failed(name, path, exc) from exc
        xs.append(data)
        ys.append(labels)
    return torch.from_numpy(np.concatenate(xs)), torch.from_numpy(np.concatenate(ys))


def load_image(path: str, size: int | None, crop: float | None = None) -> torch.Tensor:
    """One RGB image as ``uint8`` ``(3, H, W)``.

    Args:
      path: the image file.
      size: side of the square output; None keeps the image as it is.
      crop: None: resize to ``size x size`` directly (bilinear). A ratio in (0, 1]: ImageNet's
        evaluation transform, torchvision's ``Resize(round(size / crop))`` of the shorter side
        (bilinear, the longer side ``int(short_target * long / short)``) then ``CenterCrop(size)``;
        ``crop = 0.875`` at ``size = 224`` is the usual resize-256 / crop-224.

    Returns:
      The image, ``uint8`` ``(3, size, size)`` when ``size`` is given.
    """
    with Image.open(path) as im:
        im = im.convert("RGB")
        if size is not None and crop is not None:
            im = _resize_shorter_center_crop(im, size, crop)
        elif size is not None and im.size != (size, size):
            im = im.resize((size, size), Image.BILINEAR)
        arr = np.array(im, dtype=np.uint8)
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous()


def _resize_shorter_center_crop(im: Image.Image, size: int, crop: float) -> Image.Image:
    w, h = im.size
    short_target = max(size, int(round(size / crop)))
    if w <= h:
        new_w, new_h = short_target, int(short_target * h / w)
    else:
        new_w, new_h = int(short_target * w / h), short_target
    if (new_w, new_h) != (w, h):
        im = im.resize((new_w, new_h), Image.BILINEAR)
    top = int(round((new_h - size) / 2.0))
    left = int(round((new_w - size) / 2.0))
    return im.crop((left, top, left + size, top + size))


def load_images(name: str, paths: Sequence[str], size: int, crop: float | None = None) -> torch.Tensor:
    """Read many images (in a thread pool) into one ``uint8`` tensor ``(N, 3, size, size)``.

    ``crop`` as in :func:`load_image`.
    """
    out = torch.empty((len(paths), 3, size, size), dtype=torch.uint8)

    def one(i: int) -> None:
        try:
            out[i] = load_image(paths[i], size, crop)
        except OSError as exc:
            raise read_failed(name, paths[i], exc) from exc

    workers = min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for _ in pool.map(one, range(len(paths))):
            pass
    return out


def _image_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())


def tinyimagenet_samples(base: Path) -> tuple[list[str], list[int], list[str], list[int], list[str]]:
    """List TinyImageNet's train and val images with labels from an ImageFolder-style layout.

    ``base/train/<wnid>/**/<image>`` gives the classes (sorted wnids, as ``ImageFolder``). The val
    split is either the official ``base/val/images/*`` with ``base/val/val_annotations.txt``
    (``filename<TAB>wnid<TAB>...``) or class folders ``base/val/<wnid>/**/<image>``.

    Returns:
      ``(train_files, train_labels, val_files, val_labels, classes)``.
    """
    classes = sorted(d.name for d in (base / "train").iterdir() if d.is_dir())
    if not classes:
        raise DataError(f"dataset 'tinyimagenet': no class folders in {base / 'train'}")
    to_idx = {c: i for i, c in enumerate(classes)}
    train_files, train_labels = [], []
    for c in classes:
        files = _image_files(base / "train" / c)
        train_files += [str(p) for p in files]
        train_labels += [to_idx[c]] * len(files)
    val_files, val_labels = [], []
    annotations = base / "val" / "val_annotations.txt"
    if annotations.exists():
        with open(annotations) as f:
            for lineno, line in enumerate(f, 1):
                parts = line.strip().split("\t")
                if not parts or not parts[0]:
                    continue
                if len(parts) < 2 or parts[1] not in to_idx:
                    raise DataError(
                        f"dataset 'tinyimagenet': {annotations} line {lineno}: expected "
                        f"'filename<TAB>wnid' with a wnid from {base / 'train'}, got {line.strip()!r}"
                    )
                val_files.append(str(base / "val" / "images" / parts[0]))
                val_labels.append(to_idx[parts[1]])
    else:
        for c in classes:
            if (base / "val" / c).is_dir():
                files = _image_files(base / "val" / c)
                val_files += [str(p) for p in files]
                val_labels += [to_idx[c]] * len(files)
    if not train_files or not val_files:
        raise DataError(
            f"dataset 'tinyimagenet': found {len(train_files)} train and {len(val_files)} val images under "
            f"{base}; expected train/<wnid>/... and val/ as class folders or images/ + val_annotations.txt"
        )
    return train_files, train_labels, val_files, val_labels, classes


def image_folder_samples(
    name: str, base: Path
) -> tuple[list[str], list[int], list[str], list[int], list[str]]:
    """List ``base/train/<class>/**/<image>`` and ``base/val/<class>/**/<image>`` (torchvision ImageFolder).

    The classes are the sorted folder names of ``train`` (torchvision's ``find_classes``); the files of
    each split are listed by torchvision's ``make_dataset`` (the ImageFolder extensions, sorted).
    ``val`` must use the classes of ``train``.

    Returns:
      ``(train_files, train_labels, val_files, val_labels, classes)``.

    Raises:
      DataError: no class folders, a class folder without images, or a ``val`` class unknown to ``train``.
    """
    from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

    try:
        classes, to_idx = find_classes(base / "train")
    except FileNotFoundError:
        raise DataError(
            f"dataset '{name}': no class folders in {base / 'train'}; expected the ImageFolder layout "
            f"{base / 'train'}/<class>/<image>"
        ) from None
    val_classes = sorted(d.name for d in (base / "val").iterdir() if d.is_dir())
    unknown = [c for c in val_classes if c not in to_idx]
    if unknown or not val_classes:
        what = f"class folders not in train/: {', '.join(unknown[:5])}" if unknown else "no class folders"
        raise DataError(
            f"dataset '{name}': {base / 'val'} has {what}; expected {base / 'val'}/<class>/<image> with "
            f"the classes of {base / 'train'}"
        )
    splits = []
    for split, allow_empty in (("train", False), ("val", True)):
        try:
            samples = make_dataset(base / split, to_idx, extensions=IMG_EXTENSIONS, allow_empty=allow_empty)
        except FileNotFoundError as exc:  # a train class folder without images
            raise DataError(f"dataset '{name}': {base / split}: {str(exc).splitlines()[0]}") from None
        splits.append(([f for f, _ in samples], [y for _, y in samples]))
    if not splits[1][0]:
        raise DataError(f"dataset '{name}': no images under {base / 'val'}/<class>/")
    return splits[0][0], splits[0][1], splits[1][0], splits[1][1], classes


def gtsrb_samples(base: Path) -> tuple[list[str], list[int], list[str], list[int]]:
    """List GTSRB's images in torchvision's layout under ``base = <root>/gtsrb``.

    Train: ``GTSRB/Training/<class id, e.g. 00012>/*.ppm`` (the folder name is the label). Test:
    ``GTSRB/Final_Test/Images/*.ppm`` labelled by ``GT-final_test.csv`` (``Filename;...;ClassId``).
    """
    train_files, train_labels = [], []
    for d in sorted((base / "GTSRB" / "Training").iterdir()):
        if d.is_dir() and d.name.isdigit():
            files = sorted(str(p) for p in d.glob("*.ppm"))
            train_files += files
            train_labels += [int(d.name)] * len(files)
    test_files, test_labels = [], []
    csv_path = base / "GT-final_test.csv"
    with open(csv_path) as f:
        for row in csv.DictReader(f, delimiter=";", skipinitialspace=True):
            try:
                test_files.append(str(base / "GTSRB" / "Final_Test" / "Images" / row["Filename"]))
                test_labels.append(int(row["ClassId"]))
            except (KeyError, TypeError, ValueError) as exc:
                raise read_failed("gtsrb", csv_path, exc) from exc
    return train_files, train_labels, test_files, test_labels


class ImageFileDataset(torch.utils.data.Dataset):
    """Images read from files on access, normalised like the in-memory datasets.

    ``x = (load(file) / 255 - mean) / std`` per channel, with poisoned examples replaced by their
    (already resized, channel-matched) poison image in [0, 1] before normalisation.

    Args:
      files: image paths.
      labels: ``int64`` labels ``(N,)``.
      image_size: every image is resized to ``image_size x image_size``.
      mean, std: per-channel normalisation (shape ``(C,)``), or ``None`` for none.
      poison_images: ``(P, C, H, W)`` float images in [0, 1], or ``None``.
      poison_slot: ``(N,)`` int64, the row of ``poison_images`` for poisoned examples, -1 elsewhere.
      crop: None (resize to the square) or the center-crop ratio of :func:`load_image`.
    """

    def __init__(
        self,
        files: Sequence[str],
        labels: torch.Tensor,
        image_size: int,
        mean: torch.Tensor | None = None,
        std: torch.Tensor | None = None,
        poison_images: torch.Tensor | None = None,
        poison_slot: torch.Tensor | None = None,
        crop: float | None = None,
    ) -> None:
        self.files = list(files)
        self.crop = crop
        self.labels = labels
        self.image_size = int(image_size)
        self.mean = None if mean is None else mean.reshape(-1, 1, 1)
        self.std = None if std is None else std.reshape(-1, 1, 1)
        self.poison_images = poison_images
        self.poison_slot = poison_slot

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        slot = -1 if self.poison_slot is None else int(self.poison_slot[i])
        if slot >= 0:
            x = self.poison_images[slot].clone()
        else:
            x = load_image(self.files[i], self.image_size, self.crop).float().div_(255.0)
        if self.mean is not None:
            x.sub_(self.mean).div_(self.std)
        return x, self.labels[i]
