"""Where a trial runs and what it trains on: the device, and the task's data on it (below the engines)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from lyaptune.errors import ConfigError

if TYPE_CHECKING:
    from lyaptune.config import TaskConfig

__all__ = ["load_task_data", "resolve_device"]


def resolve_device(device: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; anything else as given (checked)."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} requested but CUDA is not available; use device: auto or cpu")
    return dev


def load_task_data(config: TaskConfig, device: torch.device | str = "cpu") -> Any:
    """The :class:`lyaptune.data.DataSplits` of a trial's task (cached per process)."""
    from lyaptune.data import load_dataset

    c = config
    return load_dataset(
        c.dataset,
        data_root=c.data_root,
        download=c.download,
        validation_fraction=c.validation_fraction,
        seed=c.data_seed,
        device=device,
        **dict(c.dataset_args),
    )
