"""Datasets behind one registry: normalised in-memory tensors, seeded splits, label noise and poisoning.

>>> from lyaptune.data import load_dataset, iterate_batches
>>> data = load_dataset("digits", validation_fraction=0.1, seed=0)
>>> data.input_shape, data.num_classes
((1, 8, 8), 10)
>>> xb, yb = next(iterate_batches(data.train, 64, shuffle=True))
"""

from lyaptune.data._normalize import NORMALIZATIONS
from lyaptune.data._registry import (
    DATASETS,
    DatasetInfo,
    RawData,
    RawSplit,
    default_data_root,
    get_dataset_info,
    list_datasets,
    register_dataset,
)
from lyaptune.data.loading import DataSplits, Split, clear_cache, iterate_batches, load_dataset

__all__ = [
    "DATASETS",
    "NORMALIZATIONS",
    "DataSplits",
    "DatasetInfo",
    "RawData",
    "RawSplit",
    "Split",
    "clear_cache",
    "default_data_root",
    "get_dataset_info",
    "iterate_batches",
    "list_datasets",
    "load_dataset",
    "register_dataset",
]
