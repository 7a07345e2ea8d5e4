"""The registry step of a study spec (:meth:`lyaptune.study.spec.StudySpec.check`).

Building a spec is pure; these helpers look names up in the dataset, model, optimizer and schedule
registries and build each arm's optimizer and schedule on a one-element tensor with its fixed values
and with every searched bound or choice, so a bad name or value fails before any compute. Every
registry import happens inside a function: importing this module imports no torch.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from lyaptune._fields import _FieldError, _wrap
from lyaptune._registry import unknown_choice
from lyaptune.errors import ConfigError
from lyaptune.study.params import ParamSpec, _thaw

if TYPE_CHECKING:
    from lyaptune.study.spec import ArmSpec, TaskSpec


# --------------------------------------------------------------------------------------------------
# Registries of datasets, models, optimizers and schedules.


def _dataset_names() -> list[str] | None:
    try:
        from lyaptune.data import list_datasets
    except ImportError:
        return None
    return list_datasets()


def _check_model(path: str, model: str, model_args: Mapping[str, Any]) -> None:
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


def _check_init(path: str, init: str) -> None:
    try:
        from lyaptune.models import parse_init
    except ImportError:
        return
    try:
        parse_init(init)
    except ConfigError as exc:
        raise _wrap(path, exc) from None


def _optimizer_names(name: str) -> list[str]:
    from lyaptune.optim import hyperparameter_names

    return list(hyperparameter_names(name))


def _schedule_info(name: str) -> Any:
    from lyaptune.optim import get_schedule_info

    return get_schedule_info(name)


def _schedule_names(name: str) -> list[str]:
    try:
        from lyaptune.optim.schedules import schedule_parameter_names
    except ImportError:
        info = _schedule_info(name)
        return list(dict.fromkeys([*info.defaults, *info.space]))
    return list(schedule_parameter_names(name))


def _optimizer_space(name: str) -> Mapping[str, Mapping[str, Any]]:
    from lyaptune.optim import get_optimizer_info

    return get_optimizer_info(name).space


def _tuple_params(name: str) -> Mapping[str, tuple[str, ...]]:
    from lyaptune.optim import get_optimizer_info

    return get_optimizer_info(name).tuple_params


# --------------------------------------------------------------------------------------------------
# Probing the registries with the spec's values, so bad values fail before any compute.


def _probe_optimizer(path: str, arm: ArmSpec, opt_args: Mapping[str, Any], what: str) -> Any:
    import torch

    from lyaptune.optim import create_optimizer

    args = dict(opt_args)
    if arm.needs_lipschitz:
        args["lr"] = 1e-3  # a valid stand-in rate: the derived step is computed per run, before training
    try:
        return create_optimizer(arm.optimizer, [torch.zeros(1, requires_grad=True)], **args)
    except (ValueError, TypeError, RuntimeError) as exc:
        by = "" if f"'{arm.optimizer}'" in str(exc) else f" by optimizer '{arm.optimizer}'"
        raise _FieldError(path, f"{what} rejected{by}: {exc}") from None


def _probe_schedule(
    path: str,
    arm: ArmSpec,
    opt_args: Mapping[str, Any],
    sched_args: Mapping[str, Any],
    epochs: int,
    what: str,
) -> None:
    from lyaptune.optim import create_schedule

    optimizer = _probe_optimizer(path, arm, opt_args, "optimizer_args")
    args = dict(sched_args)
    if arm.needs_lipschitz:
        args["lr"] = 1e-3
    try:
        create_schedule(
            arm.schedule, optimizer, epochs=epochs, steps_per_epoch=1, per=arm.schedule_per, **args
        )
    except (ValueError, TypeError, RuntimeError) as exc:
        by = "" if f"'{arm.schedule}'" in str(exc) else f" by schedule '{arm.schedule}'"
        raise _FieldError(path, f"{what} rejected{by}: {exc}") from None


def _normalized(value: Any) -> Any:
    """A hashable, order-free form of nested values (mappings sorted by key, lists as tuples)."""
    if isinstance(value, ParamSpec):
        value = value.to_yaml()
    if isinstance(value, Mapping):
        return tuple(sorted((str(k), _normalized(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return tuple(_normalized(v) for v in value)
    return value


def _update_key(arm: ArmSpec, task: TaskSpec) -> Any:
    """What makes an arm's training distinct: the optimizer class with every resolved hyperparameter
    (registry and class defaults filled in, tuple components folded), the schedule with its defaults,
    ``schedule_per``, the Lipschitz settings, what is searched, and the arm's effective task."""
    optimizer = _probe_optimizer(f"arms.{arm.name}", arm, _thaw(arm.optimizer_args), "optimizer_args")
    sched = {**_schedule_info(arm.schedule).defaults, **_thaw(arm.schedule_args)}
    return (
        type(optimizer),
        _normalized(optimizer.defaults),
        arm.schedule,
        _normalized(sched),
        arm.schedule_per,
        _normalized(arm.lipschitz),
        _normalized(arm.space),
        _normalized(arm.grid),
        _normalized(task.to_dict()),
    )


def _probe_arm(p: str, arm: ArmSpec, epochs: int) -> None:
    """Build the arm's optimizer and schedule with the fixed values, then with each searched bound/choice."""
    opt, sched = dict(_thaw(arm.optimizer_args)), dict(_thaw(arm.schedule_args))
    _probe_optimizer(f"{p}.optimizer_args", arm, opt, "optimizer_args")
    _probe_schedule(f"{p}.schedule_args", arm, opt, sched, epochs, "schedule_args")
    field_name = "grid" if arm.grid is not None else "space"
    for key, spec in arm.resolved_space().items():
        target, name = arm.route(key)
        values = spec.choices if spec.kind == "choices" else (spec.low, spec.high)
        for value in values:
            what = f"value {value!r}" if spec.kind == "choices" else f"bound {value!r}"
            path = f"{p}.{field_name}.{key}"
            if target == "optimizer":
                _probe_optimizer(path, arm, {**opt, name: value}, what)
            else:
                _probe_schedule(path, arm, opt, {**sched, name: value}, epochs, what)
