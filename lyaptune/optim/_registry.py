"""The optimizer registry: one :class:`OptimInfo` per name, with defaults and search ranges."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import torch

from lyaptune._registry import Registry, unknown_choice
from lyaptune.errors import ConfigError

__all__ = [
    "OptimInfo",
    "OPTIMIZERS",
    "register_optimizer",
    "create_optimizer",
    "list_optimizers",
    "get_optimizer_info",
    "hyperparameter_names",
]


def _frozen(d: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return MappingProxyType(dict(d or {}))


@dataclass(frozen=True)
class OptimInfo:
    """Metadata of one registered optimizer.

    Attributes:
      name: registry name.
      cls: the ``torch.optim.Optimizer`` subclass.
      defaults: hyperparameters lyaptune passes unless overridden (e.g. the paper's lr).
      space: default search space, one entry per searchable hyperparameter; each a dict
        ``{"low", "high", "log"}`` or ``{"choices": [...]}``. Tuple hyperparameters are flattened
        (``betas`` -> ``beta1``, ``beta2``, ...).
      tuple_params: tuple hyperparameters and their flattened component names.
      description: one line.
      reference: where the rule comes from.
    """

    name: str
    cls: type[torch.optim.Optimizer]
    defaults: Mapping[str, Any] = field(default_factory=dict)
    space: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    tuple_params: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    description: str = ""
    reference: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "defaults", _frozen(self.defaults))
        object.__setattr__(self, "space", _frozen({k: _frozen(v) for k, v in self.space.items()}))
        object.__setattr__(self, "tuple_params", _frozen(self.tuple_params))


OPTIMIZERS: Registry[OptimInfo] = Registry("optimizer")


def register_optimizer(
    name: str,
    *,
    defaults: Mapping[str, Any] | None = None,
    space: Mapping[str, Mapping[str, Any]] | None = None,
    tuple_params: Mapping[str, tuple[str, ...]] | None = None,
    description: str = "",
    reference: str = "",
) -> Callable[[type[torch.optim.Optimizer]], type[torch.optim.Optimizer]]:
    """Class decorator (or plain call) registering an optimizer class under ``name``."""

    def wrap(cls: type[torch.optim.Optimizer]) -> type[torch.optim.Optimizer]:
        OPTIMIZERS.register(
            name,
            OptimInfo(
                name=name,
                cls=cls,
                defaults=defaults or {},
                space=space or {},
                tuple_params=tuple_params or {},
                description=description,
                reference=reference,
            ),
        )
        return cls

    return wrap


def list_optimizers(pattern: str | None = None) -> list[str]:
    """Registered optimizer names, optionally filtered by a glob pattern."""
    return OPTIMIZERS.names(pattern)


def get_optimizer_info(name: str) -> OptimInfo:
    """The :class:`OptimInfo` of ``name``; unknown names raise with the closest match."""
    return OPTIMIZERS.get(name)


def _signature_params(cls: type) -> dict[str, inspect.Parameter]:
    sig = inspect.signature(cls.__init__)
    return {
        k: p
        for k, p in sig.parameters.items()
        if k not in ("self", "params") and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    }


def hyperparameter_names(name: str) -> list[str]:
    """Every hyperparameter ``create_optimizer(name, ...)`` accepts, tuple components included."""
    info = get_optimizer_info(name)
    names = list(_signature_params(info.cls))
    for comps in info.tuple_params.values():
        names.extend(comps)
    return names


def _fold_tuples(info: OptimInfo, hparams: dict[str, Any]) -> dict[str, Any]:
    """Turn ``beta1=..., beta2=...`` into ``betas=(...)``, filling missing components from defaults."""
    sig = _signature_params(info.cls)
    for tname, comps in info.tuple_params.items():
        given = {c: hparams.pop(c) for c in comps if c in hparams}
        if not given:
            continue
        if tname in hparams:
            base = list(hparams[tname])
        elif tname in info.defaults:
            base = list(info.defaults[tname])
        else:
            base = list(sig[tname].default)
        for i, c in enumerate(comps):
            if c in given:
                base[i] = given[c]
        hparams[tname] = tuple(base)
    return hparams


def resolve_hyperparameters(name: str, **hparams: Any) -> dict[str, Any]:
    """The keyword arguments ``create_optimizer`` passes to the class: defaults, overrides, folding.

    Raises:
      ConfigError: an unknown optimizer or hyperparameter (with the valid choices).
    """
    info = get_optimizer_info(name)
    valid = hyperparameter_names(name)
    for key in hparams:
        if key not in valid:
            raise unknown_choice(f"hyperparameter for optimizer '{name}':", key, valid)
    merged = {**info.defaults, **hparams}
    merged = _fold_tuples(info, merged)
    for k, v in list(merged.items()):
        if isinstance(v, list):
            merged[k] = tuple(v)
    return merged


def create_optimizer(name: str, params: Iterable[Any], **hparams: Any) -> torch.optim.Optimizer:
    """Build the optimizer registered as ``name`` over ``params``.

    Args:
      name: registry name (see :func:`list_optimizers`).
      params: parameters or parameter groups, as for any ``torch.optim.Optimizer``.
      **hparams: overrides of the registry defaults; tuple hyperparameters may be given per
        component (``beta1=0.9``).

    Returns:
      The optimizer.

    Raises:
      ConfigError: unknown name or hyperparameter; ValueError: an invalid value (from the class).
    """
    info = get_optimizer_info(name)
    kwargs = resolve_hyperparameters(name, **hparams)
    try:
        return info.cls(params, **kwargs)
    except TypeError as exc:  # e.g. a wrong type for a hyperparameter
        raise ConfigError(f"optimizer '{name}': {exc}") from exc
    except Exception as exc:
        # pytorch-optimizer validates with its own exception types (e.g. NegativeLRError)
        if type(exc).__module__.startswith("pytorch_optimizer") and not isinstance(exc, ValueError):
            raise ConfigError(f"optimizer '{name}': {exc}") from exc
        raise
