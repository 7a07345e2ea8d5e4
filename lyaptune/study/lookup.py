"""Registry look-ups a study spec needs while it is built and checked (datasets, models, optimizers,
schedules), each importing its registry inside the function: importing this module imports no torch.

Below :mod:`lyaptune.study.spec` (which expands ``space: default`` and routes names with them) and
:mod:`lyaptune.study.check` (the explicit registry step).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lyaptune._fields import _wrap
from lyaptune._registry import unknown_choice
from lyaptune.errors import ConfigError

__all__ = [
    "check_init",
    "check_model",
    "dataset_names",
    "optimizer_names",
    "optimizer_space",
    "schedule_info",
    "schedule_names",
    "tuple_params",
]


def dataset_names() -> list[str] | None:
    try:
        from lyaptune.data import list_datasets
    except ImportError:
        return None
    return list_datasets()


def check_model(path: str, model: str, model_args: Mapping[str, Any]) -> None:
    try:
        from lyaptune.models import get_model_info
    except ImportError:
        return
    try:
        info = get_model_info(model)
    except ConfigError as exc:
        raise _wrap(path + ".model", exc) from None
    accepted = list(getattr(info, "args", {}) or {})
    if accepted:
        for key in model_args:
            if key not in accepted:
                raise _wrap(
                    f"{path}.model_args.{key}", unknown_choice(f"argument of model '{model}':", key, accepted)
                )


def check_init(path: str, init: str) -> None:
    try:
        from lyaptune.models import parse_init
    except ImportError:
        return
    try:
        parse_init(init)
    except ConfigError as exc:
        raise _wrap(path, exc) from None


def optimizer_names(name: str) -> list[str]:
    from lyaptune.optim import hyperparameter_names

    return list(hyperparameter_names(name))


def schedule_info(name: str) -> Any:
    from lyaptune.optim import get_schedule_info

    return get_schedule_info(name)


def schedule_names(name: str) -> list[str]:
    try:
        from lyaptune.optim.schedules import schedule_parameter_names
    except ImportError:
        info = schedule_info(name)
        return list(dict.fromkeys([*info.defaults, *info.space]))
    return list(schedule_parameter_names(name))


def optimizer_space(name: str) -> Mapping[str, Mapping[str, Any]]:
    from lyaptune.optim import get_optimizer_info

    return get_optimizer_info(name).space


def tuple_params(name: str) -> Mapping[str, tuple[str, ...]]:
    from lyaptune.optim import get_optimizer_info

    return get_optimizer_info(name).tuple_params
