"""The study spec: a YAML file validated into frozen, typed models before any compute is spent.

A study compares *arms* (an optimizer x a step-size schedule, with a search space) on one *task*, tunes
each arm with an equal Optuna budget on a validation *objective*, then re-runs every arm's best
configuration on fresh seeds, and compares the arms' final runs on the paper's primary metric::

    name: quickstart
    task: {dataset: digits, model: fc, model_args: {depth: 2, width: 128}, epochs: 20, batch_size: full}
    objective: {metric: val_loss, mode: min, at: final}
    search: {sampler: tpe, trials_per_arm: 12, seeds: [0], final_seeds: [1, 2, 3], scheduler: none}
    compare: [{metric: final_grad_norm, mode: min}, {metric: final_train_loss, mode: min}]
    reference: derived
    claims:
      - {id: grad-norm, text: "the derived step reaches the lowest final gradient norm",
         metric: final_grad_norm, arm: derived, than: all, direction: lower}
    resources: {cpu: 1, gpu: 0}
    max_concurrent: 2
    arms:
      - {name: derived, optimizer: adam, schedule: derived-constant, lipschitz: {samples: 5}}
      - name: adam-exponential
        optimizer: adam
        schedule: exponential
        space: {lr: {low: 1.0e-5, high: 1.0e-1, log: true}, gamma: {low: 0.8, high: 0.999}}
      - {name: lyam, optimizer: lyam, space: default}

Every validation error is a :class:`~lyaptune.errors.ConfigError` whose message starts with the path
of the offending field (``arms[1].space.lr: low (0.1) > high (0.01)``), names the bad value and the
valid choices. :meth:`StudySpec.to_dict` is the *resolved* spec (``space: default`` expanded, fixed
values moved into ``optimizer_args`` / ``schedule_args``): written next to the results as
``spec.yaml``, it loads back into an equal :class:`StudySpec`. A spec file may ``extends:`` another
(:func:`resolve_spec_file`); what is stored is the resolved spec.

Two steps, so that reading a stored run is cheap:

- **Building** (:meth:`StudySpec.from_dict`, :func:`load_spec`) is pure: it checks shapes and values
  and builds no optimizer or schedule. It reads the optimizer and schedule registries only to fill in
  what a new spec leaves to them (``space: default``, a fixed value written in a ``space``, the default
  ``reference``); a stored, resolved ``spec.yaml`` has none of these, so loading it imports no torch.
- **Checking** (:meth:`StudySpec.check`) is the registry step: dataset, model, optimizer, schedule and
  hyperparameter names, each arm's optimizer and schedule built with its fixed values and every
  searched bound or choice, and no two arms training the same update. ``lyaptune run`` (also
  ``--dry-run``) and ``resume`` call it before anything starts.

The spec's parts live in modules by concern, all re-exported here: the task fields in
:mod:`lyaptune.config` (:class:`~lyaptune.config.TaskConfig`, shared with
:class:`lyaptune.train.TrialConfig`), the task / objective / search / resources sections in
:mod:`lyaptune.study.sections`, the arm's routing and search space in :mod:`lyaptune.study.routing`,
search dimensions in :mod:`lyaptune.study.params`, compare
metrics and claims in :mod:`lyaptune.study.comparison`, the registry step in
:mod:`lyaptune.study.check`, YAML reading and ``extends:`` in :mod:`lyaptune.study.compose`, and the
field checks every part uses in :mod:`lyaptune._fields`.

The comparison protocol (METHODS.md section 8) is part of the spec: final seeds are disjoint from the
search seeds (an overlap is rejected), ``compare`` names the final-epoch metrics arms are ranked on,
``reference`` the arm the others are tested against, ``claims`` the paper's claims the report gives a
verdict on, ``search.repeats`` the independent searches per arm; no two arms may be the same update.

Search-space entries (:class:`ParamSpec`), in YAML:

- ``{low: 1.0e-5, high: 1.0e-1, log: true}``: a float range (``step`` optional; ``type: int`` for an
  integer range);
- ``{choices: [sign, tanh]}``: a categorical (values str / int / float / bool / null, as Optuna needs);
- a plain value (``eps: 1.0e-8``, ``betas: [0.9, 0.99]``): fixed, not searched.

Hyperparameter names are the optimizer's and schedule's own keyword names
(:func:`lyaptune.optim.hyperparameter_names`, :func:`lyaptune.optim.schedules.schedule_parameter_names`);
tuple hyperparameters are searched per component (``beta1``, ``beta2``, ``beta3``). A name both the
optimizer and the schedule take is written ``optimizer.<name>`` or ``schedule.<name>``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import field
from functools import partial
from pathlib import Path
from typing import Any, ClassVar

import yaml

from lyaptune._fields import NAME_RE as _NAME_RE
from lyaptune._fields import (
    _check_keys,
    _field_names,
    _FieldError,
    _integer,
    _mapping,
    _rebased,
    _require,
    _wrap,
    build_from_mapping,
    config_model,
)
from lyaptune._frozen import FrozenDict
from lyaptune._frozen import freeze as _frozen
from lyaptune._registry import unknown_choice
from lyaptune.config import TrialConfig, UpdateConfig, check_lipschitz
from lyaptune.errors import ConfigError
from lyaptune.study.comparison import (
    _READING_STORED,
    CLAIM_DIRECTIONS,
    COMPARE_METRICS,
    ClaimSpec,
    CompareSpec,
    _claims_list,
    _compare_list,
)
from lyaptune.study.compose import EXPERIMENTS_DIR, resolve_spec_file
from lyaptune.study.params import ParamSpec, _thaw
from lyaptune.study.routing import ArmRouting
from lyaptune.study.sections import (
    DEFAULT_FINAL_SEEDS,
    METRICS,
    SAMPLERS,
    SCHEDULERS,
    ObjectiveSpec,
    ResourcesSpec,
    SearchSpec,
    TaskSpec,
)

__all__ = [
    "ArmSpec",
    "CLAIM_DIRECTIONS",
    "COMPARE_METRICS",
    "ClaimSpec",
    "CompareSpec",
    "DEFAULT_FINAL_SEEDS",
    "EXPERIMENTS_DIR",
    "METRICS",
    "ObjectiveSpec",
    "ParamSpec",
    "ResourcesSpec",
    "SAMPLERS",
    "SCHEDULERS",
    "SearchSpec",
    "StudySpec",
    "TaskSpec",
    "load_spec",
    "resolve_spec_file",
]

# --------------------------------------------------------------------------------------------------
# One arm.


def _optimizer_hint() -> str:
    from lyaptune.optim import list_optimizers

    return f"an optimizer name; choices: {', '.join(list_optimizers())}"


def _run_name(value: Any, path: str = "") -> str:
    """A study or arm name: it names folders and report rows."""
    if not isinstance(value, str) or not _NAME_RE.fullmatch(value) or set(value) == {"."}:
        raise _FieldError(path, f"must match [A-Za-z0-9_.-]+ (and not be only dots), got {value!r}")
    return value


def _as_given(value: Any) -> Any:
    return value  # checked by __post_init__, with the other fields


def _lipschitz_settings(value: Any) -> dict[str, Any]:
    opts = dict(_mapping("", value))
    check_lipschitz("", opts, extra=("multiplier",))
    return opts


def _task_overrides(value: Any) -> Mapping[str, Any]:
    overrides = _mapping("", value)
    _check_keys("", overrides, _field_names(TaskSpec), "task")
    return overrides


_ARM_CHECKS: dict[str, Callable[[Any], Any]] = {  # beside UpdateConfig's checks of the update fields
    "name": _run_name,
    "lipschitz": _lipschitz_settings,  # also a ``multiplier``, moved to schedule_args by __post_init__
    "space": _as_given,  # resolved by __post_init__ (ParamSpec entries), routed by check()
    "grid": _as_given,
    "task": _task_overrides,
}


@config_model(_ARM_CHECKS)
class ArmSpec(ArmRouting, UpdateConfig):
    """One arm: an optimizer x a schedule, fixed hyperparameters, and what is searched.

    After construction ``space`` is always a mapping name -> searched :class:`ParamSpec` (``"default"``
    expanded from the registries; fixed entries moved into ``optimizer_args`` / ``schedule_args``), so
    :meth:`StudySpec.to_dict` writes the resolved arm.

    Attributes:
      name: unique within the study, ``[A-Za-z0-9_.-]+``.
      optimizer, optimizer_args: registry name and fixed hyperparameters.
      schedule, schedule_args, schedule_per: schedule name (default ``constant``), its fixed
        parameters, and whether it advances per ``epoch`` or per ``step``.
      lipschitz: settings of the K_hat estimate (keys :data:`lyaptune.config.LIPSCHITZ_KEYS`, plus
        ``multiplier``), only for a schedule that needs it (``derived-constant``); ``multiplier``
        moves to ``schedule_args``.
      space: ``None`` (nothing searched), ``"default"`` (the optimizer's and the schedule's registry
        ranges, minus fixed names and minus ``lr`` for a derived step size) or name -> range.
      grid: name -> list of values; the arm runs their cartesian product (a sensitivity sweep).
      task: overrides of the study's :class:`TaskSpec` fields for this arm (replaced, not merged).
    """

    _ROOT: ClassVar[str] = "arm"
    _KIND: ClassVar[str] = "arm"

    name: str
    optimizer: str  # required here (UpdateConfig's default is for a single trial)
    space: Mapping[str, ParamSpec] | str | None = None
    grid: Mapping[str, tuple[Any, ...]] | None = None
    task: Mapping[str, Any] = field(default_factory=FrozenDict)

    def __post_init__(self) -> None:
        # Pure: checks shapes and values only. The registry step is :meth:`check`; the registries are
        # read here only to expand ``space: default`` and to route fixed values written in a space,
        # which a resolved (stored) spec never has.
        p = self._ROOT
        opt_args, sched_args = dict(self.optimizer_args), dict(self.schedule_args)
        lipschitz, task = dict(self.lipschitz), self.task
        if lipschitz:
            if "multiplier" in lipschitz:
                if "multiplier" in sched_args:
                    raise _FieldError(
                        f"{p}.lipschitz.multiplier", "also given in schedule_args; give it once"
                    )
                sched_args["multiplier"] = lipschitz.pop("multiplier")

        space = self._resolve_space(p, opt_args, sched_args)
        grid = self._resolve_grid(p)
        if space and grid is not None:
            raise _FieldError(p, f"arm '{self.name}' has both a space and a grid; give one of them")

        object.__setattr__(self, "optimizer_args", _frozen(opt_args))
        object.__setattr__(self, "schedule_args", _frozen(sched_args))
        object.__setattr__(self, "lipschitz", _frozen(lipschitz))
        object.__setattr__(self, "space", _frozen(space))
        object.__setattr__(self, "grid", grid)
        object.__setattr__(self, "task", _frozen(task))

    def task_for(self, task: TaskSpec) -> TaskSpec:
        """The study's task with this arm's overrides applied."""
        if not self.task:
            return task
        return _rebased(TaskSpec, f"{self._ROOT}.task", lambda: dataclasses.replace(task, **_thaw(self.task)))

    @classmethod
    def from_dict(cls, data: Any, path: str = "arm") -> ArmSpec:
        """Build from a YAML mapping, rejecting unknown keys."""
        required = {"name": "a name matching [A-Za-z0-9_.-]+", "optimizer": _optimizer_hint}
        return build_from_mapping(cls, data, path, kind="arm", required=required)

    def to_dict(self) -> dict[str, Any]:
        """The resolved arm as plain YAML types (empty optional entries left out)."""
        out: dict[str, Any] = {
            "name": self.name,
            "optimizer": self.optimizer,
            "optimizer_args": _thaw(self.optimizer_args),
            "schedule": self.schedule,
            "schedule_args": _thaw(self.schedule_args),
            "schedule_per": self.schedule_per,
            "space": {k: v.to_yaml() for k, v in self.space.items()},
        }
        if self.lipschitz:
            out["lipschitz"] = _thaw(self.lipschitz)
        if self.grid is not None:
            out["grid"] = _thaw(self.grid)
        if self.task:
            out["task"] = _thaw(self.task)
        return out


# --------------------------------------------------------------------------------------------------
# The study.

POPULATION_MODES = ("auto", "on", "off")


def _cut_to_two(lists: Mapping[str, Sequence[Any]]) -> dict[str, tuple[Any, ...]]:
    """The smallest product-shaped sub-grid holding the first two points of ``product(*lists)``."""
    out = {k: tuple(v[:1]) for k, v in lists.items()}
    for key in reversed(list(lists)):
        if len(lists[key]) >= 2:
            out[key] = tuple(lists[key][:2])
            break
    return out


def _instance(cls: type) -> Callable[[Any], Any]:
    def check(value: Any) -> Any:
        if not isinstance(value, cls):
            raise _FieldError("", f"must be a {cls.__name__}, got {value!r}")
        return value

    return check


def _population(value: Any) -> str:
    if value not in POPULATION_MODES:
        raise _FieldError("", f"must be one of {', '.join(POPULATION_MODES)}, got {value!r}")
    return value


def _arms(value: Any) -> tuple[ArmSpec, ...]:
    if not isinstance(value, (list, tuple)) or not value:
        raise _FieldError("", f"must be a non-empty list, got {value!r}")
    seen: dict[str, int] = {}
    for i, arm in enumerate(value):
        if not isinstance(arm, ArmSpec):
            raise _FieldError(f"[{i}]", f"must be an ArmSpec, got {arm!r}")
        if arm.name in seen:
            raise _FieldError(f"[{i}].name", f"duplicate arm name {arm.name!r} (also arms[{seen[arm.name]}])")
        seen[arm.name] = i
    return tuple(value)


_STUDY_CHECKS: dict[str, Callable[[Any], Any]] = {
    "name": _run_name,
    "task": _instance(TaskSpec),
    "objective": _instance(ObjectiveSpec),
    "search": _instance(SearchSpec),
    "resources": _instance(ResourcesSpec),
    "max_concurrent": partial(_integer, "", minimum=1),
    "arms": _arms,
    "checkpoint_every": partial(_integer, "", minimum=0),
    "max_failures": partial(_integer, "", minimum=0),
    "population": _population,
    "population_size": partial(_integer, "", minimum=1),
    "compare": _as_given,
    "reference": _as_given,
    "claims": _as_given,
}


@config_model(_STUDY_CHECKS)
class StudySpec:
    """A whole study: the task, the objective, how to search, and the arms.

    Attributes:
      name: the study's name (the run directory ``<out>/<name>/``), ``[A-Za-z0-9_.-]+``.
      task, objective, search, resources: see :class:`TaskSpec`, :class:`ObjectiveSpec`,
        :class:`SearchSpec`, :class:`ResourcesSpec`.
      max_concurrent: trials running at once (>= 1).
      arms: the arms compared (non-empty, unique names).
      checkpoint_every: epochs between trial checkpoints (0 = none).
      max_failures: retries of a trial that raised (>= 0).
      population: ``auto`` (default) trains the configurations of a grid arm together as one vmapped
        population (:mod:`lyaptune.population`) when trials run on a GPU, the model is small and
        training is full-batch; ``on`` requires it (also on CPUs; an error where ineligible); ``off``
        never.
      population_size: most members trained in one population (>= 1).
      compare: the metrics the final-seed runs are compared and ranked on (:class:`CompareSpec`, its
        paper's primary metric first); a mapping or a list of them in YAML. Default: the objective's
        metric at the final epoch (``final_val_loss`` for ``objective: {metric: val_loss}``).
      reference: the arm every other arm is compared with, or ``"none"`` (arms compared pairwise with
        the best arm). Default: the derived arm when there is one (the arm named ``derived``, else the
        first arm whose schedule computes the derived step), else ``"none"`` (METHODS.md section 8).
      claims: the paper's claims as checkable statements (:class:`ClaimSpec`); the report opens with a
        verdict per claim.
    """

    _ROOT: ClassVar[str] = ""
    _KIND: ClassVar[str] = "study"

    name: str
    task: TaskSpec
    objective: ObjectiveSpec = field(default_factory=ObjectiveSpec)
    search: SearchSpec = field(default_factory=SearchSpec)
    resources: ResourcesSpec = field(default_factory=ResourcesSpec)
    max_concurrent: int = 2
    arms: tuple[ArmSpec, ...]
    checkpoint_every: int = 0
    max_failures: int = 1
    population: str = "auto"
    population_size: int = 64
    compare: tuple[CompareSpec, ...] | None = None
    reference: str | None = None
    claims: tuple[ClaimSpec, ...] = ()

    def __post_init__(self) -> None:
        for i, arm in enumerate(self.arms):
            self._check_arm(i, arm)
        self._resolve_comparison()
        if self.task.device.startswith("cuda") and self.resources.gpu == 0:
            raise _FieldError(
                "task.device",
                f"{self.task.device!r} needs resources.gpu > 0 (Ray hides the GPUs from trials that reserve "
                "none); use device: auto",
            )

    def _check_arm(self, i: int, arm: ArmSpec) -> None:
        p = f"arms[{i}]"
        task = _rebased(ArmSpec, p, lambda: arm.task_for(self.task))
        if task.validation_fraction == 0 and self.objective.metric.startswith("val_"):
            where = (
                f"{p}.task.validation_fraction"
                if "validation_fraction" in arm.task
                else "task.validation_fraction"
            )
            raise _FieldError(
                where, f"objective {self.objective.metric!r} needs a validation split, got 0 (use e.g. 0.1)"
            )
        if self.search.sampler == "grid" and arm.is_searched and arm.grid is None:
            for key, spec in arm.space.items():
                if spec.kind != "choices":
                    raise _FieldError(
                        f"{p}.space.{key}",
                        f"sampler 'grid' enumerates choices, but arm '{arm.name}' searches {key!r} over a "
                        "range; give choices, a grid, or another sampler",
                    )

    def _resolve_comparison(self) -> None:
        if self.compare is None:
            metric = f"final_{self.objective.metric}"
            compare: tuple[CompareSpec, ...] = (CompareSpec(metric=metric, mode=self.objective.mode),)
        else:
            compare = _compare_list(self.compare)
        object.__setattr__(self, "compare", compare)
        names = [a.name for a in self.arms]
        reference = self.reference
        if reference is None:  # a stored (resolved) spec names it: only a new spec reads the registry
            for i, arm in enumerate(self.arms):
                _rebased(ArmSpec, f"arms[{i}]", arm._check_registry_names)
            derived = [a.name for a in self.arms if a.needs_lipschitz]
            reference = "derived" if "derived" in derived else (derived[0] if derived else "none")
        elif reference not in [*names, "none"]:
            raise _wrap("reference", unknown_choice("reference arm", reference, [*names, "none"]))
        object.__setattr__(self, "reference", reference)
        object.__setattr__(self, "claims", _claims_list(self.claims or (), names))

    @property
    def primary_metric(self) -> CompareSpec:
        """The metric the study's ranking uses: the first of ``compare``."""
        return self.compare[0]

    # -- lookups ----------------------------------------------------------------------------------
    def arm(self, name: str) -> ArmSpec:
        """The arm called ``name``."""
        for arm in self.arms:
            if arm.name == name:
                return arm
        raise unknown_choice("arm", name, [a.name for a in self.arms])

    def _arm(self, arm: ArmSpec | str) -> ArmSpec:
        return self.arm(arm) if isinstance(arm, str) else arm

    def is_grid(self, arm: ArmSpec | str) -> bool:
        """Whether ``arm`` enumerates a grid (its own ``grid``, or a searched arm under ``sampler: grid``)."""
        arm = self._arm(arm)
        return arm.grid is not None or (self.search.sampler == "grid" and arm.is_searched)

    def repeats(self, arm: ArmSpec | str) -> int:
        """Independent Optuna studies of ``arm``: ``search.repeats`` if sampled, else 1 (grid or none)."""
        arm = self._arm(arm)
        return self.search.repeats if arm.is_searched and not self.is_grid(arm) else 1

    def budget(self, arm: ArmSpec | str) -> int:
        """Search trials of ``arm`` over all its repeats: its grid size, ``trials_per_arm x repeats`` if
        searched, else 0."""
        arm = self._arm(arm)
        if self.is_grid(arm):
            return len(arm.grid_points())
        return self.search.trials_per_arm * self.search.repeats if arm.is_searched else 0

    def trial_config(self, arm: ArmSpec | str, params: Mapping[str, Any], seed: int) -> TrialConfig:
        """The :class:`lyaptune.config.TrialConfig` of ``arm`` with sampled ``params`` on ``seed``:
        the arm's task, its update (:class:`~lyaptune.config.UpdateConfig`) with the sampled values
        routed into its arguments, and the seed."""
        arm = self._arm(arm)
        update = {name: getattr(arm, name) for name in UpdateConfig.update_field_names()}
        update["optimizer_args"], update["schedule_args"] = arm.split_params(params)
        return TrialConfig(**arm.task_for(self.task).to_dict(), **update, seed=int(seed))

    # -- transforms -------------------------------------------------------------------------------
    def smoke(self) -> StudySpec:
        """A miniature of this study for CI: 2 trials per arm, 2 epochs, 1 seed, 1 search repeat.

        Grid arms keep their first 2 grid points; search and final seeds are cut to their first one
        (final: the search seed + 1 when none); arm epoch overrides become 2; Lipschitz samples at most 2.
        """
        arms = []
        for arm in self.arms:
            changes: dict[str, Any] = {}
            if arm.grid is not None:
                changes["grid"] = _cut_to_two(arm.grid)
            elif self.is_grid(arm):
                cut = _cut_to_two({k: s.choices for k, s in arm.space.items()})
                changes["space"] = {k: {"choices": list(v)} for k, v in cut.items()}
            if "epochs" in arm.task:
                changes["task"] = {**arm.task, "epochs": 2}
            if arm.needs_lipschitz:
                changes["lipschitz"] = {**arm.lipschitz, "samples": min(arm.lipschitz.get("samples", 2), 2)}
            arms.append(dataclasses.replace(arm, **changes) if changes else arm)
        search = dataclasses.replace(
            self.search,
            trials_per_arm=2,
            seeds=self.search.seeds[:1],
            final_seeds=self.search.final_seeds[:1] or (self.search.seeds[0] + 1,),
            repeats=1,
        )
        return dataclasses.replace(self, task=self.task.replace(epochs=2), search=search, arms=tuple(arms))

    # -- (de)serialisation --------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: Any) -> StudySpec:
        """Validate a parsed YAML mapping into a :class:`StudySpec`.

        Raises:
          ConfigError: the first problem found, its message starting with the field path.
        """
        if not isinstance(data, Mapping):
            raise ConfigError(f"a study spec must be a mapping of keys (name, task, arms, ...), got {data!r}")
        if "extends" in data:
            raise _FieldError(
                "extends", "only a spec file can extend another (load_spec / resolve_spec_file resolve it)"
            )
        _check_keys("", data, _field_names(cls), "study")
        _require("", data, "name", "the study's name, [A-Za-z0-9_.-]+")
        _require("", data, "task", "a mapping with dataset, model, epochs, ...")
        kwargs: dict[str, Any] = {
            k: v for k, v in data.items() if k not in ("task", "objective", "search", "resources", "arms")
        }
        kwargs["task"] = TaskSpec.from_dict(data["task"], "task")
        for key, sub in (("objective", ObjectiveSpec), ("search", SearchSpec), ("resources", ResourcesSpec)):
            if data.get(key) is not None:
                kwargs[key] = sub.from_dict(data[key], key)
        arms = data.get("arms")
        if not isinstance(arms, (list, tuple)) or not arms:
            raise _FieldError("arms", f"must be a non-empty list, got {arms!r}")
        kwargs["arms"] = tuple(ArmSpec.from_dict(a, f"arms[{i}]") for i, a in enumerate(arms))
        return cls(**kwargs)

    @classmethod
    def from_stored(cls, data: Any) -> StudySpec:
        """The spec a run directory stores (``spec.yaml``), as :meth:`from_dict` reads it, pure and cheap.

        Every field is validated as for a new spec, except the design rules a study written by an
        earlier version may break without being unreadable: its final seeds may overlap its search
        seeds (the report says so). A resolved spec builds no optimizer and imports no torch.

        Raises:
          ConfigError: the first problem found, its message starting with the field path.
        """
        token = _READING_STORED.set(True)
        try:
            return cls.from_dict(data)
        finally:
            _READING_STORED.reset(token)

    def to_dict(self) -> dict[str, Any]:
        """The resolved spec as plain YAML types; :meth:`from_dict` of it gives an equal spec."""
        return {
            "name": self.name,
            "task": self.task.to_dict(),
            "objective": self.objective.to_dict(),
            "search": self.search.to_dict(),
            "resources": self.resources.to_dict(),
            "max_concurrent": self.max_concurrent,
            "checkpoint_every": self.checkpoint_every,
            "max_failures": self.max_failures,
            "population": self.population,
            "population_size": self.population_size,
            "compare": [c.to_dict() for c in self.compare],
            "reference": self.reference,
            "claims": [c.to_dict() for c in self.claims],
            "arms": [a.to_dict() for a in self.arms],
        }

    def to_yaml(self) -> str:
        """:meth:`to_dict` as YAML text (what ``spec.yaml`` holds)."""
        return yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=None, width=110)


def load_spec(path: str | Path) -> StudySpec:
    """Read and validate a study spec from a YAML file.

    The file is read with a ``yaml.SafeLoader`` (no Python objects are built from it) that also reads
    ``1e-5`` as a number and rejects duplicate keys. A spec may ``extends:`` another
    (:func:`resolve_spec_file`); the spec returned, and so the ``spec.yaml`` a run stores, is the
    resolved one.

    Raises:
      ConfigError: a missing or unreadable file, a YAML syntax error (with line and column), a file
        that is not a mapping, a missing base or a cycle of ``extends``, or any invalid field (message
        starting with the field path).
    """
    return StudySpec.from_dict(resolve_spec_file(path))
