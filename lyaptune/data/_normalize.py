"""Input normalisation presets (METHODS.md section 7) and their resolution against a dataset."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch

from lyaptune._registry import unknown_choice
from lyaptune.errors import ConfigError

__all__ = ["NORMALIZATIONS", "apply_normalization", "resolve_normalization"]

# name -> (mean, std) per channel; a single value applies to every channel.
NORMALIZATIONS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "mnist": ((0.5,), (0.5,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}


def _as_floats(field: str, value: Any) -> list[float]:
    try:
        out = [float(v) for v in (value if isinstance(value, (list, tuple)) else [value])]
    except (TypeError, ValueError):
        raise ConfigError(f"normalize {field}={value!r} must be a number or a list of numbers") from None
    if not out or not all(math.isfinite(v) for v in out):
        raise ConfigError(f"normalize {field}={value!r} must be a non-empty list of finite numbers")
    return out


def resolve_normalization(
    normalize: str | Mapping[str, Any] | None, default: str | None, input_shape: tuple[int, ...]
) -> tuple[dict[str, list[float]] | None, str | None]:
    """Turn the ``normalize`` argument of ``load_dataset`` into the mean/std to apply.

    Args:
      normalize: ``"default"`` (the dataset's own, METHODS.md section 7), ``"none"`` or ``None``
        (raw values), a preset name from :data:`NORMALIZATIONS`, or ``{"mean": [...], "std": [...]}``.
      default: the dataset's default preset, or ``None``.
      input_shape: shape of one example; ``mean``/``std`` have one entry or one per channel
        (``input_shape[0]``).

    Returns:
      ``({"mean": [...], "std": [...]} or None, the preset name / "custom" / None)``.
    """
    if isinstance(normalize, str):
        name = default if normalize == "default" else (None if normalize == "none" else normalize)
        if name is not None and name not in NORMALIZATIONS:
            raise unknown_choice("normalize", normalize, ["default", "none", *NORMALIZATIONS])
        if name is None:
            return None, None
        mean, std = (list(v) for v in NORMALIZATIONS[name])
        label: str | None = name
    elif normalize is None:
        return None, None
    elif isinstance(normalize, Mapping):
        if set(normalize) != {"mean", "std"}:
            raise ConfigError(f"normalize={dict(normalize)!r} must have exactly the keys 'mean' and 'std'")
        mean, std = _as_floats("mean", normalize["mean"]), _as_floats("std", normalize["std"])
        label = "custom"
    else:
        raise ConfigError(
            f"normalize={normalize!r} must be 'default', 'none', None, one of {', '.join(NORMALIZATIONS)} "
            "or a dict {'mean': [...], 'std': [...]}"
        )
    channels = input_shape[0]
    for field, values in (("mean", mean), ("std", std)):
        if len(values) not in (1, channels):
            raise ConfigError(
                f"normalize {field} has {len(values)} values but the data have {channels} channels "
                f"(input_shape={tuple(input_shape)}); give 1 or {channels} values"
            )
    if not all(s > 0 for s in std):
        raise ConfigError(f"normalize std={std} must be > 0")
    return {"mean": mean, "std": std}, label


def apply_normalization(x: torch.Tensor, normalization: dict[str, list[float]] | None) -> torch.Tensor:
    """``x <- (x - mean[c]) / std[c]`` per channel (dimension 1), in place; returns ``x``."""
    if normalization is None:
        return x
    view = (1, -1) + (1,) * (x.dim() - 2)
    mean = torch.tensor(normalization["mean"], dtype=x.dtype, device=x.device).reshape(view)
    std = torch.tensor(normalization["std"], dtype=x.dtype, device=x.device).reshape(view)
    return x.sub_(mean).div_(std)
