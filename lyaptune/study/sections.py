"""The study spec's sections besides the arms: the task, the objective, the search and the resources.

Each is a frozen, typed model (:func:`lyaptune._fields.config_model`) whose errors name their path
(``search.trials_per_arm: must be an integer >= 1, got 0``); :mod:`lyaptune.study.spec` composes them
into a :class:`~lyaptune.study.spec.StudySpec` and re-exports them.
"""

from __future__ import annotations

import dataclasses
import importlib.util
from collections.abc import Callable
from functools import partial
from typing import Any, ClassVar

from lyaptune._fields import (
    _choice,
    _FieldError,
    _integer,
    _nonnegative,
    _number,
    _positive,
    _seed_list,
    build_from_mapping,
    config_model,
)
from lyaptune.config import TaskConfig, required_task_field
from lyaptune.config import required_hint as _required_hint
from lyaptune.metrics import OBJECTIVE_METRICS
from lyaptune.study.comparison import _READING_STORED, _settle_mode, check_mode, metric_check
from lyaptune.study.params import _thaw

__all__ = [
    "AT",
    "DEFAULT_FINAL_SEEDS",
    "METRICS",
    "SAMPLERS",
    "SCHEDULERS",
    "ObjectiveSpec",
    "ResourcesSpec",
    "SearchSpec",
    "TPE_HISTORY",
    "TPE_MIN_HISTORY",
    "TaskSpec",
    "check_sampler",
]

METRICS: tuple[str, ...] = OBJECTIVE_METRICS
"""Metrics a study may tune on (never a test metric): :data:`lyaptune.metrics.OBJECTIVE_METRICS`."""

SAMPLERS: tuple[str, ...] = ("tpe", "random", "cmaes", "gp", "qmc", "grid")
"""Optuna samplers by spec name."""

SCHEDULERS: tuple[str, ...] = ("none", "asha")
"""Trial schedulers (early stopping) by spec name."""

DEFAULT_FINAL_SEEDS = 3

"""How many final seeds a spec without ``search.final_seeds`` gets (after its largest search seed)."""

AT: tuple[str, ...] = ("final", "best")


# --------------------------------------------------------------------------------------------------
# The task.


@config_model()
class TaskSpec(TaskConfig):
    """What every trial of the study trains: a :class:`~lyaptune.config.TaskConfig` with the study
    defaults (``dataset``, ``model`` and ``epochs`` required, ``validation_fraction`` 0.1).

    Attributes:
      dataset, ..., eval_chunk_size: the task fields, defined and checked by
        :class:`~lyaptune.config.TaskConfig`; errors name the path ``task.<field>``.
    """

    _ROOT: ClassVar[str] = "task"
    _KIND: ClassVar[str] = "task"

    dataset: str = required_task_field("dataset")
    model: str = required_task_field("model")
    epochs: int = required_task_field("epochs")
    validation_fraction: float = 0.1

    @classmethod
    def from_dict(cls, data: Any, path: str = "task") -> TaskSpec:
        """Build from a YAML mapping, rejecting unknown keys (with the closest known one)."""
        required = {key: _required_hint(key) for key in ("dataset", "model", "epochs")}
        return build_from_mapping(cls, data, path, kind="task", required=required)


# --------------------------------------------------------------------------------------------------
# The objective, the search, the resources.


def _test_metric(name: str) -> str | None:
    if not name.startswith("test"):
        return None
    return f"{name!r} is a test metric; tuning never looks at test data, tune on validation instead"


_OBJECTIVE_CHECKS: dict[str, Callable[[Any], Any]] = {
    "metric": metric_check(METRICS, "objective metric", _test_metric),
    "mode": check_mode,
    "at": partial(_choice, "", choices=AT, kind="'at' value"),
}


@config_model(_OBJECTIVE_CHECKS)
class ObjectiveSpec:
    """What the search optimises: a per-epoch metric, its direction, and which epoch counts.

    Attributes:
      metric: one of :data:`METRICS`; test metrics are rejected (tuning never looks at test).
      mode: ``min`` or ``max``; default ``max`` for accuracies, else ``min``.
      at: ``final`` (the last epoch's value) or ``best`` (the best value over epochs).
    """

    _ROOT: ClassVar[str] = "objective"

    metric: str = "val_loss"
    mode: str | None = None
    at: str = "final"

    def __post_init__(self) -> None:
        _settle_mode(self, self._ROOT, "select the worst configuration")

    @classmethod
    def from_dict(cls, data: Any, path: str = "objective") -> ObjectiveSpec:
        """Build from a YAML mapping, rejecting unknown keys."""
        return build_from_mapping(cls, data, path, kind="objective")

    def to_dict(self) -> dict[str, Any]:
        """A plain-dict copy (mode resolved)."""
        return {"metric": self.metric, "mode": self.mode, "at": self.at}


def check_sampler(value: Any, path: str = "") -> str:
    """A sampler name of :data:`SAMPLERS` whose package is installed (``cmaes`` needs ``cmaes``).

    The one check of a sampler name, for the spec and for :func:`lyaptune.study.spaces.make_sampler`.

    Raises:
      ConfigError: an unknown name (with the choices), or ``cmaes`` without its package.
    """
    _choice(path, value, SAMPLERS, "sampler")
    if value == "cmaes" and importlib.util.find_spec("cmaes") is None:
        raise _FieldError(
            path,
            "'cmaes' needs the cmaes package, which is not installed: pip install cmaes "
            "(or use sampler: tpe, gp, random or qmc)",
        )
    return value


#: The default window of TPE's history (``search.tpe_history``): the last 1,000 finished trials.
TPE_HISTORY = 1000
#: The smallest window: TPE's start-up phase (Optuna's ``n_startup_trials``, 10 random trials) must end.
TPE_MIN_HISTORY = 10


def _above_one(value: Any) -> float:
    rf = _number("", value, "a number > 1")
    if rf <= 1:
        raise _FieldError("", f"must be a number > 1, got {rf!r}")
    return rf


_SEARCH_CHECKS: dict[str, Callable[[Any], Any]] = {
    "sampler": check_sampler,
    "sampler_seed": partial(_integer, "", minimum=0),
    "trials_per_arm": partial(_integer, "", minimum=1),
    "seeds": partial(_seed_list, "", allow_empty=False),
    "final_seeds": lambda v: None if v is None else _seed_list("", v, allow_empty=True),
    "repeats": partial(_integer, "", minimum=1),
    "scheduler": partial(_choice, "", choices=SCHEDULERS, kind="scheduler"),
    "grace_period": partial(_integer, "", minimum=1),
    "reduction_factor": _above_one,
    "tpe_history": lambda v: None if v is None else _integer("", v, minimum=TPE_MIN_HISTORY),
}


@config_model(_SEARCH_CHECKS)
class SearchSpec:
    """How each arm is tuned.

    Attributes:
      sampler: Optuna sampler, one of :data:`SAMPLERS` (``grid`` enumerates a grid or all-choices space).
      sampler_seed: seed of every arm's sampler.
      trials_per_arm: search trials per searched arm (grid arms run their grid instead).
      seeds: training seeds of every search trial; the objective is the mean over them.
      final_seeds: seeds the best configuration of each arm is re-run on (may be empty); disjoint from
        ``seeds`` (a final run on a search seed would repeat the run that won selection, a winner's-curse
        bias the untuned arms never get; METHODS.md section 8). Default: the
        :data:`DEFAULT_FINAL_SEEDS` seeds after the largest search seed (``seeds: [0]`` -> ``[1, 2, 3]``).
      repeats: independent Optuna studies per searched arm (>= 1), repeat ``r``'s trial ``k`` proposed
        by a sampler seeded with ``trial_seed(sampler_seed, arm, r, k)`` (``study/spaces.py``; the same
        proposals after any interruption) and the full ``trials_per_arm`` budget each, so an arm runs
        ``repeats x trials_per_arm`` search trials; the final phase re-runs the best configuration over
        all repeats. Budget curves of adaptive samplers average over the repeats. A grid arm runs its
        grid once whatever ``repeats`` says: a grid is not sampled, so a repeat would re-run the same
        configurations.
      scheduler: ``none`` or ``asha`` (early stopping on the objective's metric).
      grace_period, reduction_factor: ASHA's minimum epochs before stopping and its halving rate.
      tpe_history: TPE fits its density estimators to the last ``tpe_history`` finished trials of the
        arm's study (default :data:`TPE_HISTORY`, >= :data:`TPE_MIN_HISTORY`; ``null``: every trial, as
        Optuna's own ``TPESampler``). Optuna's TPE reads its whole history on every ask, so a study's
        total TPE time grows with the square of its trials (9 ms an ask at 1,000 trials, 58 ms at
        6,000 in ``benchmarks/driver.py``); an arm with fewer finished trials than the window gets
        exactly Optuna's proposals (:class:`lyaptune.study.spaces.RecentHistoryTPESampler`).
    """

    _ROOT: ClassVar[str] = "search"

    sampler: str = "tpe"
    sampler_seed: int = 0
    trials_per_arm: int = 20
    seeds: tuple[int, ...] = (0,)
    final_seeds: tuple[int, ...] | None = None
    repeats: int = 1
    scheduler: str = "none"
    grace_period: int = 1
    reduction_factor: float = 3
    tpe_history: int | None = TPE_HISTORY

    def __post_init__(self) -> None:
        p = self._ROOT
        if self.final_seeds is None:
            start = max(self.seeds) + 1
            object.__setattr__(self, "final_seeds", tuple(range(start, start + DEFAULT_FINAL_SEEDS)))
        final = self.final_seeds
        shared = sorted(set(final) & set(self.seeds))
        if shared and not _READING_STORED.get():
            raise _FieldError(
                f"{p}.final_seeds",
                f"final seeds {list(final)} overlap the search seeds {list(self.seeds)} ({p}.seeds) in "
                f"{shared}; final runs must use fresh seeds (METHODS.md section 8), e.g. final_seeds: "
                f"{list(range(max(self.seeds) + 1, max(self.seeds) + 1 + max(len(final), 1)))}, or leave "
                "final_seeds out for the seeds after the largest search seed",
            )

    @classmethod
    def from_dict(cls, data: Any, path: str = "search") -> SearchSpec:
        """Build from a YAML mapping, rejecting unknown keys."""
        return build_from_mapping(cls, data, path, kind="search")

    def to_dict(self) -> dict[str, Any]:
        """A plain-dict copy."""
        return {f.name: _thaw(getattr(self, f.name)) for f in dataclasses.fields(self)}


def _gpus(value: Any) -> float:
    gpu = _nonnegative("", value)
    if gpu > 1 and gpu != int(gpu):
        raise _FieldError("", f"above 1 must be a whole number of GPUs (Ray's rule), got {gpu!r}")
    return gpu


@config_model({"cpu": partial(_positive, ""), "gpu": _gpus})
class ResourcesSpec:
    """Ray resources reserved per trial.

    Attributes:
      cpu: CPUs per trial (> 0, fractions allowed).
      gpu: GPUs per trial (>= 0; fractions pack several trials on one GPU; above 1, whole numbers).
    """

    _ROOT: ClassVar[str] = "resources"

    cpu: float = 1
    gpu: float = 0

    @classmethod
    def from_dict(cls, data: Any, path: str = "resources") -> ResourcesSpec:
        """Build from a YAML mapping, rejecting unknown keys."""
        return build_from_mapping(cls, data, path, kind="resources")

    def to_dict(self) -> dict[str, Any]:
        """A plain-dict copy."""
        return {"cpu": self.cpu, "gpu": self.gpu}
