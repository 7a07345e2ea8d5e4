"""How an arm's names are routed and its search space resolved: the registry side of :class:`ArmSpec`.

:class:`ArmRouting` is the part of :class:`lyaptune.study.spec.ArmSpec` that reads the optimizer and
schedule registries: which of them a hyperparameter name belongs to (``lr`` of the optimizer, ``gamma``
of the schedule, ``optimizer.<name>`` / ``schedule.<name>`` where both take it), ``space: default``
expanded from their ranges, a grid's points, and sampled values split into ``optimizer_args`` and
``schedule_args``. The spec module keeps the arm's fields and their YAML form.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from lyaptune._fields import _choice, _FieldError, _mapping, _wrap
from lyaptune._frozen import FrozenDict
from lyaptune._frozen import freeze as _frozen
from lyaptune._registry import unknown_choice
from lyaptune.errors import ConfigError
from lyaptune.study.lookup import (
    optimizer_names,
    optimizer_space,
    schedule_info,
    schedule_names,
    tuple_params,
)
from lyaptune.study.params import ParamSpec, _thaw

__all__ = ["ArmRouting"]

#: The prefixes that say which side a hyperparameter name both take belongs to.
_QUALIFIERS = ("optimizer", "schedule")


class ArmRouting:
    """Registry-aware methods of an arm (mixed into :class:`lyaptune.study.spec.ArmSpec`)."""

    if TYPE_CHECKING:  # the arm's fields, declared by ArmSpec
        _ROOT: str
        name: str
        optimizer: str
        optimizer_args: Mapping[str, Any]
        schedule: str
        schedule_args: Mapping[str, Any]
        space: Any
        grid: Any

    def _check_registry_names(self) -> None:
        from lyaptune.optim import list_optimizers, list_schedules

        p = self._ROOT
        _choice(f"{p}.optimizer", self.optimizer, list_optimizers(), "optimizer")
        _choice(f"{p}.schedule", self.schedule, list_schedules(), "schedule")

    # -- names -----------------------------------------------------------------------------------
    @property
    def needs_lipschitz(self) -> bool:
        """Whether the schedule takes the derived step size (so ``lr`` is computed, not tuned)."""
        return bool(schedule_info(self.schedule).needs_lipschitz)

    def _names(self) -> tuple[list[str], list[str]]:
        opt = optimizer_names(self.optimizer)
        sched = schedule_names(self.schedule)
        if self.needs_lipschitz:
            sched = [n for n in sched if n != "lr"]
        return opt, sched

    def _derived_lr_error(self, path: str) -> _FieldError:
        return _FieldError(
            path,
            f"arm '{self.name}': schedule '{self.schedule}' computes lr from the Lipschitz estimate, "
            "so lr can be neither fixed nor searched (scale it with schedule_args.multiplier)",
        )

    def _unknown(self, path: str, key: str, valid: list[str], kind: str) -> _FieldError:
        return _wrap(path, unknown_choice(f"{kind} of arm '{self.name}':", key, valid))

    def _route_fixed(self, path: str, key: str, target: str) -> None:
        opt, sched = self._names()
        if self.needs_lipschitz and key == "lr":
            raise self._derived_lr_error(path)
        valid = opt if target == "optimizer" else sched
        if key not in valid:
            label = (
                f"hyperparameter (optimizer '{self.optimizer}')"
                if target == "optimizer"
                else f"parameter (schedule '{self.schedule}')"
            )
            raise self._unknown(path, key, valid, label)

    def route(self, key: str, path: str | None = None) -> tuple[str, str]:
        """Where a searched name goes: ``("optimizer" | "schedule", bare name)``.

        ``optimizer.<name>`` and ``schedule.<name>`` are explicit; a bare name goes where it is known and
        must be qualified when both take it.

        Raises:
          ConfigError: an unknown or ambiguous name (with the arm, the name and the valid names).
        """
        path = path or f"{self._ROOT}.space.{key}"
        opt, sched = self._names()
        qualifier, _, bare = key.partition(".")
        if bare and qualifier in _QUALIFIERS:
            target, name = qualifier, bare
            valid = opt if target == "optimizer" else sched
            if self.needs_lipschitz and name == "lr":
                raise self._derived_lr_error(path)
            if name not in valid:
                raise self._unknown(path, name, valid, f"{target} hyperparameter")
            return target, name
        if self.needs_lipschitz and key == "lr":
            raise self._derived_lr_error(path)
        if key in opt and key in sched:
            raise _FieldError(
                path,
                f"arm '{self.name}': {key!r} is a hyperparameter of optimizer '{self.optimizer}' and of "
                f"schedule '{self.schedule}'; write optimizer.{key} or schedule.{key}",
            )
        if key in opt:
            return "optimizer", key
        if key in sched:
            return "schedule", key
        valid = opt + [n for n in sched if n not in opt]
        raise self._unknown(
            path, key, valid, f"hyperparameter (optimizer '{self.optimizer}', schedule '{self.schedule}')"
        )

    def _check_not_fixed(
        self, path: str, target: str, name: str, opt_args: Mapping[str, Any], sched_args: Mapping[str, Any]
    ) -> None:
        fixed = opt_args if target == "optimizer" else sched_args
        if name in fixed:
            raise _FieldError(path, f"also fixed in {target}_args ({fixed[name]!r}); remove one of them")

    # -- space and grid -----------------------------------------------------------------------------
    def _default_space(self, opt_args: Mapping[str, Any], sched_args: Mapping[str, Any]) -> dict[str, Any]:
        opt, sched = self._names()
        fixed_opt = set(opt_args)
        for tname, comps in tuple_params(self.optimizer).items():
            if tname in opt_args:
                fixed_opt.update(comps)
        entries: list[tuple[str, str, Mapping[str, Any]]] = []
        for name, rng in optimizer_space(self.optimizer).items():
            if name in fixed_opt or (self.needs_lipschitz and name == "lr"):
                continue
            entries.append(("optimizer", name, rng))
        for name, rng in schedule_info(self.schedule).space.items():
            if name in sched_args or name == "lr":
                continue
            entries.append(("schedule", name, rng))
        out: dict[str, Any] = {}
        for target, name, rng in entries:
            ambiguous = name in opt and name in sched
            out[f"{target}.{name}" if ambiguous else name] = dict(rng)
        return out

    def _resolve_space(
        self, p: str, opt_args: dict[str, Any], sched_args: dict[str, Any]
    ) -> dict[str, ParamSpec]:
        raw = self.space
        if raw is None:
            return {}
        if isinstance(raw, str):
            if raw != "default":
                raise _FieldError(f"{p}.space", f"must be 'default' or a mapping name -> range, got {raw!r}")
            self._check_registry_names()
            raw = self._default_space(opt_args, sched_args)
        raw = _mapping(f"{p}.space", raw, "'default' or a mapping name -> range")
        out: dict[str, ParamSpec] = {}
        for key, obj in raw.items():
            path = f"{p}.space.{key}"
            spec = ParamSpec.parse(obj, path)
            if spec.is_searched:
                out[key] = spec
                continue
            self._check_registry_names()
            target, name = self.route(key, path)
            self._check_not_fixed(path, target, name, opt_args, sched_args)
            (opt_args if target == "optimizer" else sched_args)[name] = _thaw(spec.value)
        return out

    def _resolve_grid(self, p: str) -> FrozenDict | None:
        if self.grid is None:
            return None
        raw = _mapping(f"{p}.grid", self.grid, "a mapping name -> list of values")
        if not raw:
            raise _FieldError(f"{p}.grid", "must name at least one hyperparameter")
        out: dict[str, tuple[Any, ...]] = {}
        for key, values in raw.items():
            path = f"{p}.grid.{key}"
            if not isinstance(values, (list, tuple)) or not values:
                raise _FieldError(path, f"must be a non-empty list of values, got {values!r}")
            out[key] = ParamSpec.parse({"choices": list(values)}, path).choices
        return _frozen(out)

    # -- public views -----------------------------------------------------------------------------
    def resolved_space(self) -> dict[str, ParamSpec]:
        """What the sampler chooses: the space, or for a grid arm each grid list as choices."""
        if self.grid is not None:
            return {k: ParamSpec.categorical(v) for k, v in self.grid.items()}
        return dict(self.space)

    @property
    def is_searched(self) -> bool:
        """Whether anything is searched (a space or a grid); otherwise the arm runs once per seed."""
        return bool(self.space) or self.grid is not None

    @property
    def is_grid(self) -> bool:
        """Whether the arm has an explicit ``grid``."""
        return self.grid is not None

    def grid_points(self) -> list[dict[str, Any]]:
        """The cartesian product of the grid (or of an all-choices space), in a fixed order.

        Keys in the order given, the last one varying fastest (``itertools.product``).

        Raises:
          ConfigError: the space has a range, so it is not a grid.
        """
        space = self.resolved_space()
        for key, spec in space.items():
            if spec.kind != "choices":
                raise ConfigError(
                    f"arm '{self.name}': space.{key} is a range, not a grid; "
                    "use choices or a grid to enumerate it"
                )
        keys = list(space)
        return [dict(zip(keys, combo)) for combo in itertools.product(*(space[k].choices for k in keys))]

    def split_params(self, params: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """Route sampled values: ``(optimizer_args, schedule_args)``, the fixed args overridden by them.

        Nothing is folded (``beta1`` stays ``beta1``; the optimizer registry folds it into ``betas``).
        """
        opt = dict(_thaw(self.optimizer_args))
        sched = dict(_thaw(self.schedule_args))
        for key, value in params.items():
            target, name = self.route(key, f"params.{key}")
            (opt if target == "optimizer" else sched)[name] = value
        return opt, sched
