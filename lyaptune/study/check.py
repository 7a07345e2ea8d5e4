"""The registry step of a study spec: :func:`check_study`.

Building a spec is pure; this step looks names up in the dataset, model, optimizer and schedule
registries and builds each arm's optimizer and schedule on a one-element tensor with its fixed values
and with every searched bound or choice, so a bad name or value fails before any compute. Every
registry import happens inside a function: importing this module imports no torch. It sits above
:mod:`lyaptune.study.spec` (the spec never imports it).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lyaptune._fields import _choice, _FieldError, _rebased
from lyaptune.study.lookup import check_init, check_model, dataset_names, schedule_info
from lyaptune.study.params import ParamSpec, _thaw
from lyaptune.study.spec import ArmSpec, StudySpec, TaskSpec

__all__ = ["check_arm", "check_study", "check_task"]


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
    sched = {**schedule_info(arm.schedule).defaults, **_thaw(arm.schedule_args)}
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


# --------------------------------------------------------------------------------------------------
# The registry step.


def check_task(task: TaskSpec) -> TaskSpec:
    """Check a task's dataset, model (and its arguments) and init scheme against their registries;
    building the task does not (it is pure).

    Returns:
      The task itself.

    Raises:
      ConfigError: an unknown name or model argument (``task.model_args.widht: unknown ...``).
    """
    path = TaskSpec._ROOT
    names = dataset_names()
    if names is not None:
        _choice(f"{path}.dataset", task.dataset, names, "dataset")
    check_model(path, task.model, task.model_args)
    if task.init is not None:
        check_init(f"{path}.init", task.init)
    return task


def check_arm(arm: ArmSpec) -> ArmSpec:
    """Check an arm's names against the optimizer and schedule registries (no optimizer built).

    The optimizer and schedule exist; every fixed and searched name is one of theirs (routed, not
    ambiguous, not both fixed and searched, not twice); ``lr`` is neither fixed nor searched for a
    derived step size; ``lipschitz`` only with a schedule that needs the estimate.

    Returns:
      The arm itself.

    Raises:
      ConfigError: the first problem, its message starting with the field path.
    """
    path = ArmSpec._ROOT  # errors are re-based to arms[i] by check_study
    arm._check_registry_names()
    if arm.lipschitz and not arm.needs_lipschitz:
        raise _FieldError(
            f"{path}.lipschitz",
            f"only for a schedule that needs the Lipschitz estimate (derived-constant); "
            f"arm '{arm.name}' uses schedule '{arm.schedule}'",
        )
    for key in arm.optimizer_args:
        arm._route_fixed(f"{path}.optimizer_args.{key}", key, "optimizer")
    for key in arm.schedule_args:
        arm._route_fixed(f"{path}.schedule_args.{key}", key, "schedule")
    field_name = "grid" if arm.grid is not None else "space"
    seen: dict[tuple[str, str], str] = {}
    for key in arm.grid if arm.grid is not None else arm.space:
        where = f"{path}.{field_name}.{key}"
        target, name = arm.route(key, where)
        arm._check_not_fixed(where, target, name, arm.optimizer_args, arm.schedule_args)
        if (target, name) in seen:
            raise _FieldError(where, f"the same hyperparameter as {field_name}.{seen[(target, name)]}")
        seen[(target, name)] = key
    return arm


def check_study(spec: StudySpec) -> StudySpec:
    """Check a study spec against the registries, so a bad name or value fails before any compute.

    Building a :class:`~lyaptune.study.spec.StudySpec` (or ``load_spec``) is pure: it checks shapes and
    values, and builds no optimizer or schedule. This step, which ``lyaptune run`` (also
    ``--dry-run``) and ``resume`` take before starting anything, checks the dataset, model and init
    names (:func:`check_task`), each arm's optimizer, schedule and hyperparameter names
    (:func:`check_arm`), builds each arm's optimizer and schedule with its fixed values and with every
    searched bound or choice on a one-element tensor, and rejects two arms that train the same update
    (METHODS.md section 2).

    Returns:
      The spec itself (``check_study(load_spec(path))``).

    Raises:
      ConfigError: the first problem, its message starting with the field path.
    """
    check_task(spec.task)
    for i, arm in enumerate(spec.arms):
        p = f"arms[{i}]"
        _rebased(ArmSpec, p, lambda arm=arm: check_arm(arm))
        task = _rebased(ArmSpec, p, lambda arm=arm: arm.task_for(spec.task))
        if arm.task:
            _rebased(TaskSpec, f"{p}.task", lambda task=task: check_task(task))
        _probe_arm(p, arm, task.epochs)
    _check_distinct_updates(spec)
    return spec


def _check_distinct_updates(spec: StudySpec) -> None:
    """Reject two arms that train the same update (METHODS.md section 2: never two such arms)."""
    seen: list[tuple[Any, int]] = []  # compared with ==, so values need not be hashable
    for i, arm in enumerate(spec.arms):
        key = _update_key(arm, arm.task_for(spec.task))
        j = next((j for k, j in seen if k == key), None)
        if j is not None:
            first = spec.arms[j].name
            raise _FieldError(
                f"arms[{i}]",
                f"arms '{first}' (arms[{j}]) and '{arm.name}' (arms[{i}]) are the same update: optimizer "
                f"'{arm.optimizer}' with equal resolved hyperparameters, schedule '{arm.schedule}' with "
                "equal parameters, equal search space and task; remove one or make them differ",
            )
        seen.append((key, i))
