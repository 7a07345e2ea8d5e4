"""Optuna search spaces and samplers for a study's arms.

Spaces are *define-by-run*: :func:`suggest` only calls ``trial.suggest_*`` (the style of Ray's
``optuna_define_by_run_example.py``), so an arm's space is exactly the sequence of suggestions Optuna
records, and the same function works with Optuna's ask/tell and with Ray's ``OptunaSearch``.
"""

from __future__ import annotations

import importlib.util
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import optuna

from lyaptune.errors import ConfigError
from lyaptune.study.spec import ArmSpec, ParamSpec, SearchSpec

__all__ = ["AskTellGridSampler", "define_by_run", "grid_search_space", "make_sampler", "suggest"]


def suggest(trial: optuna.Trial, space: Mapping[str, ParamSpec]) -> dict[str, Any]:
    """Ask ``trial`` for one value per searched dimension of ``space``.

    A range becomes ``suggest_float`` (or ``suggest_int`` for ``type: int``) with its ``log`` and
    ``step``; choices become ``suggest_categorical``; a fixed value is returned as it is, without a
    suggestion.

    Args:
      trial: the Optuna trial (``study.ask()`` or the trial Ray's ``OptunaSearch`` passes).
      space: name -> :class:`ParamSpec`, e.g. :meth:`ArmSpec.resolved_space`.

    Returns:
      name -> value, in the order of ``space``.
    """
    params: dict[str, Any] = {}
    for name, spec in space.items():
        if spec.kind == "fixed":
            params[name] = spec.value
        elif spec.kind == "choices":
            params[name] = trial.suggest_categorical(name, list(spec.choices))
        elif spec.type == "int":
            params[name] = trial.suggest_int(name, spec.low, spec.high, step=spec.step or 1, log=spec.log)
        else:
            params[name] = trial.suggest_float(name, spec.low, spec.high, step=spec.step, log=spec.log)
    return params


def define_by_run(space: Mapping[str, ParamSpec]) -> Callable[[optuna.Trial], dict[str, Any]]:
    """A define-by-run function for Ray's ``OptunaSearch(space=...)``.

    It suggests every searched dimension and returns only the fixed values (Ray adds a returned dict to
    the trial's config as constants; the suggested values reach the config through Optuna).
    """

    def space_fn(trial: optuna.Trial) -> dict[str, Any]:
        suggest(trial, space)
        return {name: spec.value for name, spec in space.items() if spec.kind == "fixed"}

    return space_fn


def grid_search_space(arm: ArmSpec) -> dict[str, list[Any]]:
    """The search space of Optuna's ``GridSampler`` for ``arm``: its grid, or its space's choices.

    Raises:
      ConfigError: the arm's space has a range (a grid needs a finite set of values per dimension).
    """
    out: dict[str, list[Any]] = {}
    for name, spec in arm.resolved_space().items():
        if spec.kind == "choices":
            out[name] = list(spec.choices)
        elif spec.kind == "range":
            raise ConfigError(
                f"arm '{arm.name}': space.{name} is a range; a grid sampler needs choices or a grid"
            )
    return out


class AskTellGridSampler(optuna.samplers.GridSampler):
    """Optuna's ``GridSampler`` that also works with ask/tell.

    Optuna's version stops the study from ``after_trial`` once the grid is exhausted, and
    ``Study.stop()`` raises ``RuntimeError`` outside ``study.optimize`` (ask/tell, Ray's ``OptunaSearch``):
    the last ``tell`` of every grid arm would fail. Here the stop happens only inside ``optimize``; with
    ask/tell the study's budget (the grid size) ends the search.
    """

    def after_trial(
        self,
        study: optuna.Study,
        trial: optuna.trial.FrozenTrial,
        state: optuna.trial.TrialState,
        values: Sequence[float] | None,
    ) -> None:
        local = getattr(study, "_thread_local", None)
        if getattr(local, "in_optimize_loop", False):
            super().after_trial(study, trial, state, values)


def make_sampler(search: SearchSpec, arm: ArmSpec, repeat: int = 0) -> optuna.samplers.BaseSampler:
    """The seeded Optuna sampler of one arm (in search repeat ``repeat``).

    :class:`AskTellGridSampler` for an arm with a ``grid`` or under ``sampler: grid``; otherwise the sampler
    ``search.sampler`` names (``tpe``, ``random``, ``cmaes``, ``gp``, ``qmc``), seeded with
    ``search.sampler_seed + repeat`` (independent repeats draw independent sequences).
    Samplers that model continuous dimensions only (CMA-ES, GP, QMC) draw
    categorical ones at random, without a warning per trial.

    Raises:
      ConfigError: ``cmaes`` without the ``cmaes`` package, or a grid over a range.
    """
    if isinstance(repeat, bool) or not isinstance(repeat, int) or repeat < 0:
        raise ConfigError(f"search repeat must be an integer >= 0, got {repeat!r}")
    seed = search.sampler_seed + repeat
    samplers = optuna.samplers
    if arm.grid is not None or search.sampler == "grid":
        return AskTellGridSampler(grid_search_space(arm), seed=seed)
    if search.sampler == "tpe":
        return samplers.TPESampler(seed=seed)
    if search.sampler == "random":
        return samplers.RandomSampler(seed=seed)
    if search.sampler == "cmaes":
        if importlib.util.find_spec("cmaes") is None:
            raise ConfigError(
                "search.sampler: 'cmaes' needs the cmaes package, which is not installed: pip install cmaes"
            )
        return samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)
    if search.sampler == "gp":
        return samplers.GPSampler(seed=seed, warn_independent_sampling=False)
    if search.sampler == "qmc":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return samplers.QMCSampler(scramble=True, seed=seed, warn_independent_sampling=False)
    raise ConfigError(f"search.sampler: unknown sampler {search.sampler!r}")
