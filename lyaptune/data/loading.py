"""``load_dataset``: one pipeline for every registered dataset, and ``iterate_batches``.

The pipeline, in order (each random step has its own stream of ``seed``, see ``subsets.STREAMS``):

1. the loader reads the raw train/test splits (mini-* subsets and digits' train/test split are
   seeded by their own options, so the test set does not move with ``seed``);
2. ``validation_fraction``: a stratified ``round(fraction * N)`` examples leave the training set;
3. ``label_noise``: exactly ``round(fraction * N)`` training labels change to a different class;
4. ``poison``: exactly ``round(poison_fraction * N)`` training images are replaced by images of
   another dataset (resized, channel-matched, labels kept) - papers/000, Section 3.1.1;
5. normalisation (METHODS.md section 7) of all splits, then a single move to ``device``.

Validation and test data are never noised. Results are cached per process, keyed by all arguments
(the ``CACHE_SIZE`` most recently used).
"""

from __future__ import annotations

import math
import os
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lyaptune._registry import unknown_choice
from lyaptune.data import datasets as _datasets  # noqa: F401  (registers the datasets)
from lyaptune.data._normalize import NORMALIZATIONS, apply_normalization, resolve_normalization
from lyaptune.data._readers import ImageFileDataset, load_images
from lyaptune.data._registry import DATASETS, RawSplit, default_data_root, get_dataset_info
from lyaptune.data.noise import choose_indices, fit_images, flip_labels
from lyaptune.data.subsets import index_digest, rng_for, stratified_split
from lyaptune.errors import ConfigError

__all__ = ["DataSplits", "Split", "clear_cache", "iterate_batches", "load_dataset"]


@dataclass(frozen=True, eq=False)
class Split:
    """One split of a dataset.

    Attributes:
      x: ``float32`` normalised inputs ``(N, *input_shape)`` for in-memory data, else ``None``.
      y: ``int64`` labels ``(N,)`` for in-memory data, else ``None``.
      dataset: a ``torch.utils.data.Dataset`` of normalised ``(x, y)`` pairs, only for data too
        large to hold in memory (then ``x`` and ``y`` are ``None``).

    The tensors are shared with the ``load_dataset`` cache: treat them as read-only.
    """

    x: torch.Tensor | None
    y: torch.Tensor | None
    dataset: torch.utils.data.Dataset | None = None

    def __len__(self) -> int:
        if self.dataset is not None:
            return len(self.dataset)
        return int(self.y.shape[0])


@dataclass(frozen=True, eq=False)
class DataSplits:
    """A loaded dataset: train, optional validation and test splits, and how they were made.

    Attributes:
      name: registry name.
      train: training split (noised when label noise or poisoning was asked for).
      val: validation split carved from the training set when ``validation_fraction > 0``, else ``None``.
      test: test split.
      num_classes: number of classes.
      input_shape: ``(C, H, W)`` for images, ``(D,)`` for vectors.
      normalization: ``{"mean": [...], "std": [...]}`` actually applied, or ``None``.
      info: everything needed to reproduce the splits: seeds, sizes, options, noise settings
        (``label_noise``, ``poison``: fractions, exact counts, index fingerprints), the data root.
    """

    name: str
    train: Split
    val: Split | None
    test: Split
    num_classes: int
    input_shape: tuple[int, ...]
    normalization: dict | None
    info: dict


# Most recently used last; a long-lived worker that loads many variants keeps only the newest few.
_CACHE: OrderedDict[str, DataSplits] = OrderedDict()
CACHE_SIZE = 4


def clear_cache() -> None:
    """Forget every dataset ``load_dataset`` has cached in this process."""
    _CACHE.clear()


def _fraction(field: str, value: Any, *, upper_open: bool) -> float:
    ok = isinstance(value, (int, float, np.floating)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and 0.0 <= value and (value < 1.0 if upper_open else value <= 1.0)
    if not ok:
        interval = "[0, 1)" if upper_open else "[0, 1]"
        raise ConfigError(f"{field}={value!r} must be a number in {interval}")
    return float(value)


def _freeze(value: Any) -> Any:
    """A hashable, canonical form of an argument for the cache key (lists and tuples alike)."""
    if isinstance(value, Mapping):
        return tuple(sorted((str(k), _freeze(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    return value


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _image_datasets() -> list[str]:
    return [n for n in DATASETS.names() if DATASETS.get(n).images]


def _unit_images(split: RawSplit, name: str) -> torch.Tensor:
    """The inputs of an in-memory or lazy split as ``float32``; ``uint8`` images become [0, 1]."""
    if split.x is None:
        return load_images(name, split.files, split.image_size, split.crop).to(torch.float32).div_(255.0)
    if split.x.dtype == torch.uint8:
        return split.x.to(torch.float32).div_(255.0)
    return split.x.to(torch.float32)


def _poison_images(
    source: str, root: Path, download: bool, count: int, shape: tuple[int, ...], rng: np.random.Generator
) -> tuple[torch.Tensor, np.ndarray]:
    """``count`` training images of ``source`` (with default options) fitted to ``shape``, in [0, 1]."""
    info = get_dataset_info(source)
    raw = info.loader(root, download, dict(info.options)).train
    n = len(raw)
    pick = rng.choice(n, size=count, replace=count > n)
    return fit_images(_unit_images(raw.take(pick), source), shape), pick


def _finalize(
    raw: RawSplit,
    y: torch.Tensor,
    normalization: dict | None,
    device: torch.device,
    name: str,
    poison_at: np.ndarray | None = None,
    poison_x: torch.Tensor | None = None,
) -> Split:
    if raw.x is None:
        slot = None
        if poison_at is not None and len(poison_at):
            slot = torch.full((len(raw),), -1, dtype=torch.int64)
            slot[torch.as_tensor(poison_at)] = torch.arange(len(poison_at))
        mean = std = None
        if normalization is not None:
            mean = torch.tensor(normalization["mean"], dtype=torch.float32)
            std = torch.tensor(normalization["std"], dtype=torch.float32)
        return Split(
            None,
            None,
            ImageFileDataset(
                raw.files,
                y,
                raw.image_size,
                mean,
                std,
                poison_x if slot is not None else None,
                slot,
                crop=raw.crop,
            ),
        )
    x = _unit_images(raw, name)
    if poison_at is not None and len(poison_at):
        x[torch.as_tensor(poison_at)] = poison_x.to(x.dtype)
    x = apply_normalization(x.contiguous(), normalization)
    return Split(x.to(device), y.to(device))


def load_dataset(
    name: str,
    *,
    data_root: str | os.PathLike | None = None,
    download: bool = False,
    validation_fraction: float = 0.0,
    seed: int = 0,
    normalize: str | dict | None = "default",
    label_noise: float = 0.0,
    poison: str | None = None,
    poison_fraction: float = 0.0,
    device: str | torch.device = "cpu",
    cache: bool = True,
    **options: Any,
) -> DataSplits:
    """Load a registered dataset as normalised tensors (or a lazy dataset), with optional noise.

    Args:
      name: registry name (see :func:`list_datasets`).
      data_root: directory holding the files; default :func:`default_data_root`.
      download: fetch missing files (never done otherwise).
      validation_fraction: fraction in [0, 1) of the training set carved out (stratified, seeded)
        as the validation split; 0 gives ``val=None``.
      seed: seeds the validation split and the noise (not the test set or the mini-* subsets).
      normalize: ``"default"`` (METHODS.md section 7: MNIST-family ``(x - 0.5) / 0.5``, CIFAR-10
        per-channel, CIFAR-100 and ImageNet-style data the ImageNet mean/std), ``"none"``/``None``,
        a preset name (``"mnist"``, ``"cifar10"``, ``"imagenet"``) or ``{"mean": [...], "std": [...]}``.
      label_noise: fraction in [0, 1] of training labels changed to a different class
        (exactly ``round(label_noise * N)``).
      poison: name of an image dataset whose training images replace training images of this one.
      poison_fraction: fraction in [0, 1] of training images replaced (exactly ``round(. * N)``).
      device: where in-memory tensors are moved (once).
      cache: reuse the result of an earlier call with the same arguments in this process (the
        ``CACHE_SIZE`` most recently used results are kept; :func:`clear_cache` empties it).
      **options: dataset-specific options (``get_dataset_info(name).options``).

    Returns:
      :class:`DataSplits`.

    Raises:
      ConfigError: unknown dataset, option or normalisation; a fraction out of range.
      DataError: missing or unreadable files (the message names them, the directory and the fix).

    References:
      papers/000, Section 3.1.1 (noisy training data); papers/003, Section 5.1 (mini datasets).
    """
    info = get_dataset_info(name)
    validation_fraction = _fraction("validation_fraction", validation_fraction, upper_open=True)
    label_noise = _fraction("label_noise", label_noise, upper_open=False)
    poison_fraction = _fraction("poison_fraction", poison_fraction, upper_open=False)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigError(f"seed={seed!r} must be an integer >= 0")
    seed = int(seed)
    if poison is not None and (poison not in DATASETS or not DATASETS.get(poison).images):
        raise unknown_choice("poison dataset", poison, _image_datasets())
    if poison_fraction > 0 and poison is None:
        raise ConfigError(
            f"poison_fraction={poison_fraction} needs poison=<dataset>; "
            f"choices: {', '.join(_image_datasets())}"
        )
    if isinstance(normalize, str) and normalize not in ("default", "none", *NORMALIZATIONS):
        raise unknown_choice("normalize", normalize, ["default", "none", *NORMALIZATIONS])
    for key in options:
        if key not in info.options:
            if not info.options:
                raise ConfigError(f"dataset '{name}' takes no options, got {key}={options[key]!r}")
            raise unknown_choice(f"option for dataset '{name}':", key, list(info.options))
    opts = {**info.options, **options}
    root = Path(data_root).expanduser().absolute() if data_root is not None else default_data_root()
    dev = torch.device(device)
    args = (name, root, bool(download), validation_fraction, seed, normalize, label_noise, poison)
    key = repr(_freeze((*args, poison_fraction, str(dev), opts)))
    if cache and key in _CACHE:
        _CACHE.move_to_end(key)
        return _CACHE[key]
    result = _make_splits(*args, poison_fraction, dev, opts)
    if cache:
        _CACHE[key] = result
        while len(_CACHE) > CACHE_SIZE:
            _CACHE.popitem(last=False)
    return result


def _make_splits(
    name: str,
    root: Path,
    download: bool,
    validation_fraction: float,
    seed: int,
    normalize: Any,
    label_noise: float,
    poison: str | None,
    poison_fraction: float,
    dev: torch.device,
    opts: dict[str, Any],
) -> DataSplits:
    info = get_dataset_info(name)
    raw = info.loader(root, download, opts)
    shape, k = tuple(raw.input_shape), int(raw.num_classes)
    normalization, norm_label = resolve_normalization(normalize, info.normalization, shape)
    if poison is not None and poison_fraction > 0 and (len(shape) != 3 or shape[0] not in (1, 3)):
        raise ConfigError(
            f"poison={poison!r} needs image data with 1 or 3 channels, but '{name}' has input_shape={shape}"
        )
    record: dict[str, Any] = {
        "name": name,
        "data_root": str(root),
        "seed": seed,
        "validation_fraction": validation_fraction,
        "options": _jsonable(opts),
        "normalize": norm_label,
        "normalization": normalization,
        "input_shape": list(shape),
        "num_classes": k,
        "storage": "memory" if raw.train.x is not None else "lazy",
        "device": str(dev) if raw.train.x is not None else "cpu",
        "source": _jsonable(raw.info),
    }
    if "stand_in_for" in raw.info:
        record["stand_in_for"] = raw.info["stand_in_for"]

    train, val = raw.train, None
    n_full = len(train)
    if validation_fraction > 0:
        n_val = round(validation_fraction * n_full)
        if not 0 < n_val < n_full:
            raise ConfigError(
                f"validation_fraction={validation_fraction} of {n_full} training examples gives {n_val} "
                "validation examples; choose a fraction that leaves both splits non-empty"
            )
        val_idx, train_idx = stratified_split(train.y.numpy(), n_val, rng_for(seed, "validation"))
        val, train = train.take(val_idx), train.take(train_idx)
        record["validation_indices_sha256"] = index_digest(val_idx)
    n = len(train)

    y = train.y
    flip_idx = np.zeros(0, dtype=np.int64)
    if label_noise > 0:
        rng = rng_for(seed, "label-noise")
        flip_idx = choose_indices(n, label_noise, rng)
        y = flip_labels(train.y, flip_idx, k, rng)
    record["label_noise"] = {
        "fraction": label_noise,
        "count": int(len(flip_idx)),
        "indices_sha256": index_digest(flip_idx),
    }

    poison_at, poison_x = None, None
    if poison is not None and poison_fraction > 0:
        poison_at = choose_indices(n, poison_fraction, rng_for(seed, "poison-target"))
        poison_x, picked = _poison_images(
            poison, root, download, len(poison_at), shape, rng_for(seed, "poison-source")
        )
        record["poison"] = {
            "dataset": poison,
            "fraction": poison_fraction,
            "count": int(len(poison_at)),
            "indices_sha256": index_digest(poison_at),
            "source_indices_sha256": index_digest(picked),
            "source_split": "train",
            "resize": "bilinear, antialiased (torch.nn.functional.interpolate)",
            "channels": "grey repeated to RGB / RGB averaged to grey",
        }
    else:
        record["poison"] = {"dataset": poison, "fraction": poison_fraction, "count": 0}

    train_split = _finalize(train, y, normalization, dev, name, poison_at, poison_x)
    val_split = _finalize(val, val.y, normalization, dev, name) if val is not None else None
    test_split = _finalize(raw.test, raw.test.y, normalization, dev, name)
    record["sizes"] = {
        "train": len(train_split),
        "val": len(val_split) if val_split is not None else 0,
        "test": len(test_split),
    }
    return DataSplits(
        name=name,
        train=train_split,
        val=val_split,
        test=test_split,
        num_classes=k,
        input_shape=shape,
        normalization=normalization,
        info=record,
    )


def iterate_batches(
    split: Split,
    batch_size: int | None,
    *,
    shuffle: bool,
    generator: torch.Generator | None = None,
    device: str | torch.device | None = None,
    drop_last: bool = False,
    num_workers: int = 0,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield ``(x, y)`` mini-batches covering the split once (one epoch).

    In-memory splits are indexed where they live (``torch.randperm`` with ``generator``, no
    ``DataLoader``); splits holding a ``dataset`` go through a ``DataLoader``.

    Args:
      split: the split.
      batch_size: examples per batch; ``None`` yields the whole split as one batch (never shuffled,
        as the order of a full batch does not matter).
      shuffle: draw a new permutation for this epoch.
      generator: source of the permutation; the same generator state gives the same order.
      device: move each batch there (``None``: leave batches where the data are).
      drop_last: skip a final batch smaller than ``batch_size``.
      num_workers: ``DataLoader`` worker processes for ``dataset`` splits.

    Returns:
      An iterator over ``(x, y)`` pairs.
    """
    if batch_size is not None and (
        isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1
    ):
        raise ConfigError(f"batch_size={batch_size!r} must be a positive integer or None (full batch)")
    dev = torch.device(device) if device is not None else None
    return _batches(split, batch_size, bool(shuffle), generator, dev, bool(drop_last), int(num_workers))


def _batches(
    split: Split,
    batch_size: int | None,
    shuffle: bool,
    generator: torch.Generator | None,
    dev: torch.device | None,
    drop_last: bool,
    num_workers: int,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    n = len(split)

    def move(xb: torch.Tensor, yb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if dev is None:
            return xb, yb
        # asynchronous only host -> GPU; a GPU -> host copy must finish before the batch is used
        asynchronous = dev.type == "cuda"
        return xb.to(dev, non_blocking=asynchronous), yb.to(dev, non_blocking=asynchronous)

    if split.dataset is not None:
        loader = torch.utils.data.DataLoader(
            split.dataset,
            batch_size=int(batch_size) if batch_size is not None else max(n, 1),
            shuffle=shuffle and batch_size is not None,
            generator=generator,
            drop_last=drop_last,
            num_workers=num_workers,
            pin_memory=dev is not None and dev.type == "cuda",
        )
        for xb, yb in loader:
            yield move(xb, yb)
        return

    x, y = split.x, split.y
    if batch_size is None:
        yield move(x, y)
        return
    bs = int(batch_size)
    perm = None
    if shuffle:
        perm_device = generator.device if generator is not None else torch.device("cpu")
        perm = torch.randperm(n, generator=generator, device=perm_device).to(x.device)
    for start in range(0, n, bs):
        end = min(start + bs, n)
        if drop_last and end - start < bs:
            break
        if perm is None:
            yield move(x[start:end], y[start:end])
        else:
            idx = perm[start:end]
            yield move(x[idx], y[idx])
