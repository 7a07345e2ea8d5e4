"""The dataset registry: one frozen :class:`DatasetInfo` per name, and the loader contract.

A loader turns ``(root, download, options)`` into :class:`RawData`: the train and test splits as they
are on disk (``uint8`` images, or ``float32`` already in [0, 1], or arbitrary floats for generated
data), before any validation carve-out, noise or normalisation. :func:`lyaptune.data.load_dataset`
does the rest, the same way for every dataset.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lyaptune._registry import Registry

__all__ = [
    "DATASETS",
    "DatasetInfo",
    "RawData",
    "RawSplit",
    "default_data_root",
    "get_dataset_info",
    "list_datasets",
    "register_dataset",
]


def default_data_root() -> Path:
    """The directory datasets are looked for in: ``$LYAPTUNE_DATA_ROOT``, else ``./data``.

    Returns:
      An absolute path (relative values are taken from the current working directory *now*; resolve
      it before handing it to a process that changes directory, e.g. a Ray Tune trial).
    """
    env = os.environ.get("LYAPTUNE_DATA_ROOT")
    return Path(env or "data").expanduser().absolute()


@dataclass
class RawSplit:
    """One split as a loader returns it.

    Exactly one of ``x`` (in-memory examples) and ``files`` (image paths read lazily) is set.

    Attributes:
      y: ``int64`` labels, shape ``(N,)``.
      x: ``uint8`` images ``(N, C, H, W)`` (divide by 255 for [0, 1]) or ``float32`` values
        (images already in [0, 1], or generated data).
      files: image file paths (RGB images, resized to ``image_size`` when read).
      image_size: side length lazily read images are resized to.
      crop: None (lazily read images are resized to the square) or the center-crop ratio of
        :func:`lyaptune.data._readers.load_image` (ImageNet's resize-shorter-side then center crop).
    """

    y: torch.Tensor
    x: torch.Tensor | None = None
    files: list[str] | None = None
    image_size: int | None = None
    crop: float | None = None

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def take(self, index: np.ndarray) -> RawSplit:
        """The examples at ``index`` (a 1-D integer array), in that order."""
        idx = torch.as_tensor(np.asarray(index, dtype=np.int64))
        return RawSplit(
            y=self.y[idx],
            x=self.x[idx] if self.x is not None else None,
            files=[self.files[i] for i in idx.tolist()] if self.files is not None else None,
            image_size=self.image_size,
            crop=self.crop,
        )


@dataclass
class RawData:
    """What a loader returns: both splits before carving, noise and normalisation.

    Attributes:
      train, test: the splits.
      input_shape: shape of one example.
      num_classes: number of classes.
      info: loader-specific facts worth recording (subset seeds, split sizes, sources).

    ``load_dataset`` owns the returned tensors and may modify them in place, so a loader must return
    fresh tensors on every call (never ones it keeps).
    """

    train: RawSplit
    test: RawSplit
    input_shape: tuple[int, ...]
    num_classes: int
    info: dict[str, Any] = field(default_factory=dict)


Loader = Callable[[Path, bool, dict[str, Any]], RawData]


class _ReadOnlyDict(Mapping):
    """A read-only mapping that, unlike ``MappingProxyType``, pickles (e.g. to Ray workers)."""

    def __init__(self, data: Mapping[str, Any]) -> None:
        self._data = dict(data)

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        return repr(self._data)


@dataclass(frozen=True)
class DatasetInfo:
    """Metadata of one registered dataset.

    Attributes:
      name: registry name.
      input_shape: shape of one example with the default options (``(C, H, W)`` or ``(D,)``).
      num_classes: number of classes with the default options.
      description: one line.
      files: the files (or directories) the loader needs, relative to the data root; named in the
        error message when they are missing. Empty for bundled or generated data.
      reference: where the dataset (or its use here) comes from.
      loader: ``loader(root, download, options) -> RawData``.
      options: the dataset-specific keyword options of ``load_dataset`` and their defaults.
      normalization: the default normalisation preset (see ``lyaptune.data.NORMALIZATIONS``) or
        ``None`` for data used as generated.
      images: whether examples are images with raw values in [0, 1] (usable as a poison source).
      download_hint: how to obtain the files when ``download=True`` cannot.
    """

    name: str
    input_shape: tuple[int, ...]
    num_classes: int
    description: str = ""
    files: tuple[str, ...] = ()
    reference: str = ""
    loader: Loader | None = field(default=None, repr=False, compare=False)
    options: Mapping[str, Any] = field(default_factory=dict)
    normalization: str | None = None
    images: bool = True
    download_hint: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "input_shape", tuple(int(s) for s in self.input_shape))
        object.__setattr__(self, "files", tuple(self.files))
        object.__setattr__(self, "options", _ReadOnlyDict(self.options))


DATASETS: Registry[DatasetInfo] = Registry("dataset")


def register_dataset(
    name: str,
    *,
    input_shape: Sequence[int],
    num_classes: int,
    description: str = "",
    files: Sequence[str] = (),
    reference: str = "",
    options: Mapping[str, Any] | None = None,
    normalization: str | None = None,
    images: bool = True,
    download_hint: str = "",
) -> Callable[[Loader], Loader]:
    """Function decorator registering a loader under ``name`` (see :class:`DatasetInfo`)."""

    def wrap(loader: Loader) -> Loader:
        DATASETS.register(
            name,
            DatasetInfo(
                name=name,
                input_shape=tuple(input_shape),
                num_classes=num_classes,
                description=description,
                files=tuple(files),
                reference=reference,
                loader=loader,
                options=options or {},
                normalization=normalization,
                images=images,
                download_hint=download_hint,
            ),
        )
        return loader

    return wrap


def list_datasets(pattern: str | None = None) -> list[str]:
    """Registered dataset names, optionally filtered by a glob ``pattern`` (``"mini-*"``)."""
    return DATASETS.names(pattern)


def get_dataset_info(name: str) -> DatasetInfo:
    """The :class:`DatasetInfo` of ``name``; unknown names raise ``ConfigError`` with the closest match."""
    return DATASETS.get(name)
