"""The task part of a training run's config, defined and validated once.

:class:`TaskConfig` holds what a run trains on (dataset, model, epochs, batch size, split, device,
...). The study spec's task (:class:`lyaptune.study.spec.TaskSpec`) is a :class:`TaskConfig` with the
study defaults, and a trial's config (:class:`lyaptune.train.TrialConfig`) is a :class:`TaskConfig`
extended with the optimizer, schedule and seed parts, so a task field is written, checked and
documented here only. Every bad value raises a one-line :class:`~lyaptune.errors.ConfigError` that
starts with the field's path (``task.epochs: must be an integer >= 1, got 0``).

This module imports neither torch nor any registry: building a config is pure and cheap. Checking
the dataset and model names against their registries is a separate step
(:func:`lyaptune.study.check.check_study`, or the run itself).
"""

from __future__ import annotations

import dataclasses
import numbers
import re
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any, ClassVar

from lyaptune._fields import (
    _check_keys,
    _choice,
    _FieldError,
    _flag,
    _integer,
    _join,
    _mapping,
    _nonnegative,
    _number,
    _positive,
    config_model,
)
from lyaptune._frozen import FrozenDict, freeze, thaw
from lyaptune.batching import check_batch_size
from lyaptune.metrics import SCHEDULE_UNITS

__all__ = [
    "TaskConfig",
    "TrialConfig",
    "PER_RUN_TASK_FIELDS",
    "SCHEDULE_PERS",
    "positive_or_full",
    "registry_name",
    "settings",
]

_DEVICE_RE = re.compile(r"(auto|cpu|mps|cuda|cuda:\d+)")

SCHEDULE_PERS: tuple[str, ...] = SCHEDULE_UNITS
"""When a schedule advances: once per epoch or once per optimizer step (:mod:`lyaptune.metrics`)."""

PER_RUN_TASK_FIELDS: tuple[str, ...] = ("grad_noise",)
"""Task fields the runs of one vmapped population may differ in (every other task field is shared)."""


def _hint(text: str) -> dict[str, str]:
    return {"hint": text}


def required_hint(name: str) -> str:
    """What a missing task field ``name`` should be (``"an integer >= 1"`` for ``epochs``)."""
    return TaskConfig.__dataclass_fields__[name].metadata.get("hint", "see TaskConfig")


def required_task_field(name: str) -> Any:
    """The task field ``name`` redeclared without a default (a subclass that requires it), its hint kept."""
    return dataclasses.field(metadata=TaskConfig.__dataclass_fields__[name].metadata)


def positive_or_full(path: str, value: Any) -> int | str:
    """A batch size: a positive integer or ``"full"`` (the whole training set per step).

    The check of the Lipschitz estimate's ``batch``; a training batch size may also grow during the
    run (:func:`lyaptune.batching.check_batch_size`, which gives the same message for these values).

    Raises:
      ConfigError: ``<path>: must be a positive integer or 'full', got <value>``.
    """
    if isinstance(value, str) and value == "full":
        return value
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise _FieldError(path, f"must be a positive integer or 'full', got {value!r}")
    return int(value)


def registry_name(kind: str) -> Callable[..., str]:
    """The check of a registry name's shape (a non-empty string); the registry itself is asked later."""

    def check(value: Any, path: str = "") -> str:
        if not isinstance(value, str) or not value:
            raise _FieldError(path, f"must be a{'n' * (kind[0] in 'aeiou')} {kind} name, got {value!r}")
        return value

    return check


def settings(value: Any) -> FrozenDict:
    """A mapping of options (``model_args``, ``optimizer_args``, ...), stored read-only."""
    return freeze(_mapping("", value))


#: The options of the K_hat estimate (keywords of :func:`lyaptune.lipschitz.estimate_lipschitz`) an arm
#: or a trial may set; a spec's arm may also write ``multiplier`` there (it moves to ``schedule_args``).
LIPSCHITZ_KEYS: tuple[str, ...] = (
    "samples",
    "weights",
    "sigma",
    "a",
    "batch",
    "num_batches",
    "iters",
    "tol",
    "method",
)
#: The weight distributions W of papers/003 Algorithm 2 (METHODS.md section 4).
LIPSCHITZ_WEIGHTS: tuple[str, ...] = ("normal", "init", "uniform")


def check_lipschitz(path: str, opts: Mapping[str, Any], extra: tuple[str, ...] = ()) -> None:
    """Check the K_hat estimate's options: known keys, counts >= 1, a known weight distribution,
    positive scales, ``a`` with ``weights: uniform``, a batch size or ``full``.

    The one check of these options, for a study spec's arm and for a :class:`TrialConfig`.

    Args:
      path: the field's path in messages (``arms[0].lipschitz``).
      opts: the options.
      extra: keys allowed beyond :data:`LIPSCHITZ_KEYS` (the spec's ``multiplier``), checked positive.

    Raises:
      ConfigError: the first bad option, named with its path, value and the valid choices.
    """
    _check_keys(path, opts, (*LIPSCHITZ_KEYS, *extra), "lipschitz")
    for key in ("samples", "num_batches", "iters"):
        if key in opts:
            _integer(_join(path, key), opts[key], 1)
    if "weights" in opts:
        _choice(_join(path, "weights"), opts["weights"], LIPSCHITZ_WEIGHTS, "Lipschitz weight distribution")
    for key in ("a", "tol", *extra):
        if key in opts:
            _positive(_join(path, key), opts[key])
    if opts.get("sigma") is not None:
        _positive(_join(path, "sigma"), opts["sigma"])
    if opts.get("weights") == "uniform" and "a" not in opts:
        raise _FieldError(_join(path, "a"), "required with weights: uniform (the half-width of U(-a, a))")
    if "batch" in opts:
        positive_or_full(_join(path, "batch"), opts["batch"])
    if "method" in opts and (not isinstance(opts["method"], str) or not opts["method"]):
        raise _FieldError(_join(path, "method"), f"must be a method name, got {opts['method']!r}")


def lipschitz_settings(value: Any) -> FrozenDict:
    """A trial's K_hat options, checked by :func:`check_lipschitz` and stored read-only."""
    opts = _mapping("", value)
    check_lipschitz("", opts)
    return freeze(opts)


def _optional(check: Callable[[Any], Any]) -> Callable[[Any], Any]:
    return lambda value: None if value is None else check(value)


def _path(value: Any) -> str:
    if not isinstance(value, str):
        raise _FieldError("", f"must be a path (string), got {value!r}")
    return value


def _fraction(value: Any) -> float:
    vf = _number("", value, "a number in [0, 1)")
    if not 0.0 <= vf < 1.0:
        raise _FieldError("", f"must be a number in [0, 1), got {vf!r}")
    return vf


def _device(value: Any) -> str:
    if not isinstance(value, str) or not _DEVICE_RE.fullmatch(value):
        raise _FieldError("", f"must be one of auto, cpu, cuda, cuda:N, mps; got {value!r}")
    return value


_TASK_CHECKS: dict[str, Callable[[Any], Any]] = {
    "dataset": registry_name("dataset"),
    "dataset_args": settings,
    "data_root": _optional(_path),
    "download": partial(_flag, ""),
    "model": registry_name("model"),
    "model_args": settings,
    "init": _optional(registry_name("init scheme")),
    "epochs": partial(_integer, "", minimum=1),
    "batch_size": partial(check_batch_size, ""),  # a fixed size or a growing batch
    "validation_fraction": _fraction,
    "data_seed": partial(_integer, "", minimum=0),
    "device": _device,
    "grad_noise": partial(_nonnegative, ""),
    "eval_chunk_size": _optional(partial(_integer, "", minimum=1)),
}
"""The one check of each task field (message without the path; the model adds it)."""


@config_model(_TASK_CHECKS)
class TaskConfig:
    """What a run trains on: the task fields shared by a study's task and a trial's config.

    Attributes:
      dataset, dataset_args: dataset registry name and its options (``label_noise``, ``poison``,
        ``poison_fraction``, ``normalize``, dataset-specific options such as ``n_train``).
      data_root, download: where dataset files live; whether torchvision may download them.
      model, model_args, init: model registry name (or ``timm:<name>``), its arguments, an optional
        init scheme.
      epochs: epochs per run (>= 1); batch_size: a positive integer, ``"full"``, or a batch that
        grows during the run (``{schedule: list, sizes, epochs}``, :mod:`lyaptune.batching`).
      validation_fraction: share of the training set held out (seeded by ``data_seed``) for tuning,
        in [0, 1).
      data_seed: seed of the dataset's subsets and splits (kept fixed across training seeds; >= 0).
      device: ``auto`` (CUDA when present), ``cpu``, ``cuda``, ``cuda:N``, ``mps``.
      grad_noise: std of Gaussian noise added to every gradient entry (>= 0; papers/000's question).
      eval_chunk_size: chunk size of full-dataset loss and gradient passes (None = one pass; >= 1).

    Mappings are stored read-only (:class:`~lyaptune._frozen.FrozenDict`, lists as tuples), so a
    config is hashable and pickles cleanly to Ray workers.
    """

    _ROOT: ClassVar[str] = ""
    _KIND: ClassVar[str] = "task"

    dataset: str = dataclasses.field(default="digits", metadata=_hint("a dataset name, e.g. digits"))
    dataset_args: Mapping[str, Any] = dataclasses.field(default_factory=FrozenDict)
    data_root: str | None = None
    download: bool = False
    model: str = dataclasses.field(default="fc", metadata=_hint("a model name, e.g. fc"))
    model_args: Mapping[str, Any] = dataclasses.field(default_factory=FrozenDict)
    init: str | None = None
    epochs: int = dataclasses.field(default=10, metadata=_hint("an integer >= 1"))
    batch_size: int | str | Mapping[str, Any] = "full"
    validation_fraction: float = 0.0
    data_seed: int = 0
    device: str = "auto"
    grad_noise: float = 0.0
    eval_chunk_size: int | None = None

    # -- views ---------------------------------------------------------------------------------------
    @classmethod
    def task_field_names(cls) -> tuple[str, ...]:
        """The task fields, in order (those of :class:`TaskConfig`, whatever the subclass)."""
        return tuple(f.name for f in dataclasses.fields(TaskConfig))

    def task_dict(self) -> dict[str, Any]:
        """The task fields only, as plain YAML/JSON types."""
        return {name: thaw(getattr(self, name)) for name in self.task_field_names()}

    def to_dict(self) -> dict[str, Any]:
        """Every field as plain YAML/JSON types (mappings -> dict, tuples -> list)."""
        return {f.name: thaw(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Any:
        """Build from a mapping, rejecting unknown keys with the list of known ones."""
        return cls(**_mapping(cls._ROOT, data))

    def replace(self, **changes: Any) -> Any:
        """A copy with ``changes`` applied (validated)."""
        return dataclasses.replace(self, **changes)


_UPDATE_CHECKS: dict[str, Callable[[Any], Any]] = {
    "optimizer": registry_name("optimizer"),
    "optimizer_args": settings,
    "schedule": registry_name("schedule"),
    "schedule_args": settings,
    "schedule_per": partial(_choice, "", choices=SCHEDULE_PERS, kind="schedule_per"),
    "lipschitz": lipschitz_settings,
}
"""The one check of each update field (a study spec's arm and a trial share them)."""


@config_model(_UPDATE_CHECKS)
class UpdateConfig:
    """How the weights are updated: an optimizer, a step-size schedule, and the K_hat estimate's options.

    A :class:`TrialConfig` is a :class:`TaskConfig`, an update and a seed; a study spec's arm
    (:class:`lyaptune.study.spec.ArmSpec`) is an update plus what is searched.

    Attributes:
      optimizer, optimizer_args: registry name and hyperparameters (``beta1``-style components allowed).
      schedule, schedule_args, schedule_per: the step-size schedule, its rate constants, and whether it
        advances per ``epoch`` or per ``step``.
      lipschitz: options of the K_hat estimate for ``derived-constant`` (:data:`LIPSCHITZ_KEYS`, checked
        by :func:`check_lipschitz`).
    """

    _ROOT: ClassVar[str] = ""
    _KIND: ClassVar[str] = "update"

    optimizer: str = "adam"
    optimizer_args: Mapping[str, Any] = dataclasses.field(default_factory=FrozenDict)
    schedule: str = "constant"
    schedule_args: Mapping[str, Any] = dataclasses.field(default_factory=FrozenDict)
    schedule_per: str = "epoch"
    lipschitz: Mapping[str, Any] = dataclasses.field(default_factory=FrozenDict)

    @classmethod
    def update_field_names(cls) -> tuple[str, ...]:
        """The update fields, in order (those of :class:`UpdateConfig`, whatever the subclass)."""
        return tuple(f.name for f in dataclasses.fields(UpdateConfig))


@config_model({"seed": partial(_integer, "")})
class TrialConfig(UpdateConfig, TaskConfig):
    """Everything one training run needs, composed: the task (:class:`TaskConfig`), the update
    (:class:`UpdateConfig`) and the training seed; frozen, so it pickles cleanly to Ray workers.

    Attributes:
      dataset, ..., eval_chunk_size: the task fields, defined and checked by :class:`TaskConfig` (here
        with ``validation_fraction`` 0 by default).
      optimizer, ..., lipschitz: the update fields, defined and checked by :class:`UpdateConfig`.
      seed: training seed (initial weights, batch order, gradient noise).

    Every bad value raises a one-line :class:`~lyaptune.errors.ConfigError` naming the field
    (``epochs: must be an integer >= 1, got 0``); names are checked against the registries when the
    run builds them.
    """

    _KIND: ClassVar[str] = "trial config"

    seed: int = 0
