"""Optuna search spaces and samplers for a study's arms.

An arm's space maps to Optuna's own distributions (:func:`distributions`: ``FloatDistribution``,
``IntDistribution``, ``CategoricalDistribution``), asked for with Optuna's public ask/tell
(:func:`ask`, ``study.ask(fixed_distributions=...)``) or suggested define-by-run (:func:`suggest`, the
style of Ray's ``optuna_define_by_run_example.py``); both draw the same values from the same seeded
sampler. A grid (an arm's ``grid``, or ``sampler: grid`` over a space of choices) is enqueued point by
point with ``study.enqueue_trial`` (:func:`enqueue_grid`) and asked like any other space, so its budget
is exactly the grid size.
"""

from __future__ import annotations

import hashlib
import itertools
import warnings
from collections.abc import Callable, Container, Mapping
from typing import Any

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.trial import FrozenTrial, TrialState

from lyaptune.errors import ConfigError
from lyaptune.study.journal import recent_window
from lyaptune.study.sections import SAMPLERS, check_sampler
from lyaptune.study.spec import ArmSpec, ParamSpec, SearchSpec

__all__ = [
    "RecentHistoryTPESampler",
    "ask",
    "define_by_run",
    "distributions",
    "enqueue_grid",
    "grid_search_space",
    "make_sampler",
    "suggest",
    "trial_seed",
]


def distributions(space: Mapping[str, ParamSpec]) -> dict[str, BaseDistribution]:
    """The Optuna distribution of every searched dimension of ``space`` (fixed values are left out).

    A range becomes ``FloatDistribution(low, high, log, step)`` (``IntDistribution`` for
    ``type: int``, step 1 unless given); choices become ``CategoricalDistribution(choices)``.

    Args:
      space: name -> :class:`ParamSpec`, e.g. :meth:`ArmSpec.resolved_space`.

    Returns:
      name -> distribution, in the order of ``space``.
    """
    out: dict[str, BaseDistribution] = {}
    for name, spec in space.items():
        if spec.kind == "fixed":
            continue
        if spec.kind == "choices":
            out[name] = CategoricalDistribution(list(spec.choices))
        elif spec.type == "int":
            out[name] = IntDistribution(int(spec.low), int(spec.high), log=spec.log, step=int(spec.step or 1))
        else:
            step = None if spec.step is None else float(spec.step)
            out[name] = FloatDistribution(float(spec.low), float(spec.high), log=spec.log, step=step)
    return out


def _values(space: Mapping[str, ParamSpec], drawn: Mapping[str, Any]) -> dict[str, Any]:
    """Every dimension of ``space`` in order: the drawn value, or the fixed one."""
    return {name: spec.value if spec.kind == "fixed" else drawn[name] for name, spec in space.items()}


def ask(study: optuna.Study, space: Mapping[str, ParamSpec]) -> tuple[optuna.Trial, dict[str, Any]]:
    """Ask ``study`` for a new trial over ``space`` (``study.ask(fixed_distributions=...)``).

    An enqueued trial (a grid point, :func:`enqueue_grid`) comes first and takes its enqueued values.

    Args:
      study: the arm's Optuna study (its sampler draws the values).
      space: name -> :class:`ParamSpec`.

    Returns:
      ``(trial, params)``: the Optuna trial (tell it the objective) and name -> value for every
      dimension of ``space`` in order, fixed values as they are.
    """
    trial = study.ask(fixed_distributions=distributions(space))
    return trial, _values(space, trial.params)


def suggest(trial: optuna.Trial, space: Mapping[str, ParamSpec]) -> dict[str, Any]:
    """Suggest one value per searched dimension of ``space`` on a define-by-run ``trial``.

    Calls ``trial.suggest_float`` / ``suggest_int`` / ``suggest_categorical`` with the parameters of
    :func:`distributions`; a fixed value is returned as it is, without a suggestion.

    Args:
      trial: the Optuna trial (``study.ask()`` or the trial Ray's ``OptunaSearch`` passes).
      space: name -> :class:`ParamSpec`, e.g. :meth:`ArmSpec.resolved_space`.

    Returns:
      name -> value, in the order of ``space``.
    """
    drawn: dict[str, Any] = {}
    for name, dist in distributions(space).items():
        if isinstance(dist, CategoricalDistribution):
            drawn[name] = trial.suggest_categorical(name, list(dist.choices))
        elif isinstance(dist, IntDistribution):
            drawn[name] = trial.suggest_int(name, dist.low, dist.high, step=dist.step, log=dist.log)
        else:
            drawn[name] = trial.suggest_float(name, dist.low, dist.high, step=dist.step, log=dist.log)
    return _values(space, drawn)


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
    """The grid of ``arm``: name -> values, its ``grid`` or its space's choices (fixed values left out).

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


def enqueue_grid(study: optuna.Study, arm: ArmSpec) -> int:
    """Enqueue every point of the arm's grid (:func:`grid_search_space`) in ``study``, in a stable order.

    The order is ``itertools.product`` over the dimensions in the order given, the last varying fastest
    (that of :meth:`ArmSpec.grid_points`). Points already enqueued or asked are skipped
    (``skip_if_exists``), so enqueueing again on resume adds nothing.

    Returns:
      The number of grid points.

    Raises:
      ConfigError: the arm's space has a range.
    """
    grid = grid_search_space(arm)
    keys = list(grid)
    points = [dict(zip(keys, combo)) for combo in itertools.product(*(grid[k] for k in keys))]
    for point in points:
        study.enqueue_trial(point, skip_if_exists=True)
    return len(points)


def trial_seed(sampler_seed: int, arm: str, repeat: int, number: int) -> int:
    """The seed of the sampler that proposes Optuna trial ``number`` of an arm's search repeat.

    ``sha256("<sampler_seed>/<arm>/<repeat>/<number>")`` read as an unsigned 32-bit integer: a pure
    function of its arguments (no process state, no ``PYTHONHASHSEED``), so trial ``k`` draws the same
    values in every driver, however many drivers ran before it (issue 21).

    Args:
      sampler_seed: the spec's ``search.sampler_seed``.
      arm: the arm's name.
      repeat: the search repeat (0 for the first).
      number: the Optuna trial number the ask gets.

    Returns:
      A seed in ``[0, 2**32)``.
    """
    text = f"{int(sampler_seed)}/{arm}/{int(repeat)}/{int(number)}".encode()
    return int.from_bytes(hashlib.sha256(text).digest()[:4], "big")


def make_sampler(
    search: SearchSpec, arm: ArmSpec, repeat: int = 0, trial: int | None = None
) -> optuna.samplers.BaseSampler:
    """The seeded Optuna sampler of one arm (in search repeat ``repeat``).

    For an arm with a ``grid`` or under ``sampler: grid``, a seeded ``RandomSampler``: the grid points
    are enqueued (:func:`enqueue_grid`) and every trial asked takes one, so the sampler never draws.
    Otherwise the sampler ``search.sampler`` names (``tpe``, ``random``, ``cmaes``, ``gp``, ``qmc``).
    Samplers that model continuous dimensions only (CMA-ES, GP, QMC) draw categorical ones at random,
    without a warning per trial.

    Seeds: without ``trial``, ``search.sampler_seed + repeat`` (independent repeats draw independent
    sequences). With ``trial = k``, the sampler is for asking trial ``k`` only, seeded with
    :func:`trial_seed` ``(sampler_seed, arm, repeat, k)``: every sampler here keeps its random state in
    memory only and reads the rest (the trials told, CMA-ES's state) from the study's storage, so a
    sampler made afresh for each ask proposes trial ``k`` from the spec, the seed, ``k`` and the trials
    told before it, never from how many drivers ran (a sampler seeded once per driver restarts its
    random stream on every ``lyaptune resume`` and proposes the first trials again). QMC keeps the
    repeat's seed for its scrambling (its position in the sequence is stored with each trial); only its
    sampler of categorical dimensions takes the per-trial seed.

    Args:
      search: the spec's search section.
      arm: the arm.
      repeat: the search repeat (>= 0).
      trial: the Optuna trial number the sampler will propose, or None for one sampler for the study.

    Raises:
      ConfigError: ``cmaes`` without the ``cmaes`` package, or a grid over a range.
    """
    if isinstance(repeat, bool) or not isinstance(repeat, int) or repeat < 0:
        raise ConfigError(f"search repeat must be an integer >= 0, got {repeat!r}")
    check_sampler(search.sampler, "search.sampler")  # a stored spec may name one not installed here
    base = search.sampler_seed + repeat
    seed = base if trial is None else trial_seed(search.sampler_seed, arm.name, repeat, trial)
    if arm.grid is not None or search.sampler == "grid":
        grid_search_space(arm)  # a grid over a range is an error
        return optuna.samplers.RandomSampler(seed=seed)
    if search.sampler == "tpe" and search.tpe_history is not None:
        return RecentHistoryTPESampler(history=search.tpe_history, seed=seed)
    return _SAMPLERS[search.sampler](seed, base)


class _RecentHistory:
    """A view of an Optuna study whose trials are its last ``history`` finished ones (by number) and
    every running one; everything else is the study's own."""

    def __init__(self, study: optuna.Study, history: int) -> None:
        self._study, self._history = study, history

    def __getattr__(self, name: str) -> Any:
        return getattr(self._study, name)

    def _get_trials(
        self, deepcopy: bool = True, states: Container[TrialState] | None = None, use_cache: bool = False
    ) -> list[FrozenTrial]:
        # the journal answers from the study's end (IndexedJournalStorage): time in the window, not the
        # study; its answer is the same list, and the driver is the journal's one writer during an ask
        recent = getattr(self._study._storage, "get_recent_trials", None)
        if recent is not None:
            return recent(self._study._study_id, self._history, states, deepcopy)
        trials = self._study._get_trials(deepcopy=deepcopy, states=states, use_cache=use_cache)
        return recent_window(trials, self._history)

    def get_trials(
        self, deepcopy: bool = True, states: Container[TrialState] | None = None
    ) -> list[FrozenTrial]:
        return self._get_trials(deepcopy=deepcopy, states=states, use_cache=False)


class RecentHistoryTPESampler(optuna.samplers.TPESampler):
    """Optuna's TPE fitted to the last ``history`` finished trials of the study (``search.tpe_history``).

    Optuna's ``TPESampler`` reads every trial of the study on each ask, so its time per ask grows with
    the study and a study's total with the square of its size; ``TPESampler`` has no option for a window
    (``n_startup_trials`` only sets the random start). This sampler hands TPE a view of the study that
    holds the last ``history`` finished trials (by trial number) and the running ones (TPE's constant
    liar): with no more finished trials than that, its proposals are Optuna's own, and beyond, those
    Optuna's TPE would make on a study of the recent trials alone. Deterministic in the trials told, as
    every sampler here (:func:`make_sampler`).

    Args:
      history: the window, in finished trials (>= 10, Optuna's start-up trials).
      **kwargs: ``TPESampler``'s arguments (``seed``, ...).
    """

    def __init__(self, *, history: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._history = int(history)

    def infer_relative_search_space(
        self, study: optuna.Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        return super().infer_relative_search_space(_RecentHistory(study, self._history), trial)

    def sample_relative(
        self,
        study: optuna.Study,
        trial: FrozenTrial,
        search_space: dict[str, BaseDistribution],
    ) -> dict[str, Any]:
        return super().sample_relative(_RecentHistory(study, self._history), trial, search_space)

    def sample_independent(
        self,
        study: optuna.Study,
        trial: FrozenTrial,
        param_name: str,
        param_distribution: BaseDistribution,
    ) -> Any:
        view = _RecentHistory(study, self._history)
        return super().sample_independent(view, trial, param_name, param_distribution)


def _qmc(seed: int, base: int) -> optuna.samplers.BaseSampler:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.QMCSampler(
            scramble=True,
            seed=base,
            independent_sampler=optuna.samplers.RandomSampler(seed=seed),
            warn_independent_sampling=False,
        )


#: Each drawing sampler of :data:`lyaptune.study.spec.SAMPLERS` from (the ask's seed, the repeat's
#: seed); ``grid`` is a seeded RandomSampler over enqueued points (:func:`make_sampler`).
_SAMPLERS: dict[str, Callable[[int, int], optuna.samplers.BaseSampler]] = {
    "tpe": lambda seed, base: optuna.samplers.TPESampler(seed=seed),
    "random": lambda seed, base: optuna.samplers.RandomSampler(seed=seed),
    "cmaes": lambda seed, base: optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False),
    "gp": lambda seed, base: optuna.samplers.GPSampler(seed=seed, warn_independent_sampling=False),
    "qmc": _qmc,
}
assert set(_SAMPLERS) | {"grid"} == set(SAMPLERS)
