"""Sensitivity of an arm to its hyperparameters, and the stability boundary lr x K_hat.

- Slices: the search objective of every trial against each hyperparameter's value.
- Grid arms: the 1-D response (mean objective per value of one hyperparameter, averaged over the
  others) and the 2-D response (mean per pair of values).
- Importance: ``optuna.importance`` with PED-ANOVA and fANOVA on the arm's Optuna study, read from
  the run's journal.
- Divergence rate against ``lr * K_hat``: papers/000 and 003 argue about where a step size becomes
  unstable relative to the curvature bound K_hat; the runs of a study put numbers on it.
"""

from __future__ import annotations

import itertools
import math
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from lyaptune.analysis.budget import search_trial_values
from lyaptune.analysis.load import Study, parse_json_column

__all__ = [
    "IMPORTANCE_EVALUATORS",
    "Sensitivity",
    "divergence_vs_lr_khat",
    "param_importance",
    "sensitivity",
    "study_k_hat",
]

#: The Optuna importance evaluators used, by the name shown in tables.
IMPORTANCE_EVALUATORS: tuple[str, ...] = ("PED-ANOVA", "fANOVA")


@dataclass(frozen=True, eq=False)
class Sensitivity:
    """An arm's sensitivity analysis (:func:`sensitivity`).

    Attributes:
      arm: the arm.
      metric, mode: the objective the search optimised.
      params: the searched hyperparameters.
      trials: one row per search trial (:func:`~lyaptune.analysis.budget.search_trial_values`):
        ``trial``, ``value``, ``state`` and ``param_<name>`` columns.
      grid: whether the arm is a grid arm.
      response_1d: grid arms: per hyperparameter, a frame ``value, mean, sd, n, n_failed``.
      response_2d: grid arms: per pair of hyperparameters, the mean objective as a pivot table
        (rows the first, columns the second).
      importance: ``param, evaluator, importance`` (importances of one evaluator sum to 1).
      divergence: :func:`divergence_vs_lr_khat` of the arm's runs.
      log_params: hyperparameters searched on a log scale.
      notes: what was skipped and why.
    """

    arm: str
    metric: str
    mode: str
    params: list[str]
    trials: pd.DataFrame
    grid: bool = False
    response_1d: dict[str, pd.DataFrame] = field(default_factory=dict)
    response_2d: dict[tuple[str, str], pd.DataFrame] = field(default_factory=dict)
    importance: pd.DataFrame = field(
        default_factory=lambda: pd.DataFrame(columns=["param", "evaluator", "importance"])
    )
    divergence: pd.DataFrame = field(default_factory=pd.DataFrame)
    log_params: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()


def _response_1d(trials: pd.DataFrame, param: str) -> pd.DataFrame:
    col = f"param_{param}"
    rows = []
    for value, g in trials.groupby(col, sort=True, dropna=False):
        ok = g.loc[g["state"] == "completed", "value"].to_numpy(float)
        rows.append(
            {
                "value": value,
                "mean": float(ok.mean()) if ok.size else math.nan,
                "sd": float(ok.std(ddof=1)) if ok.size >= 2 else math.nan,
                "n": int(ok.size),
                "n_failed": int((g["state"] == "failed").sum()),
            }
        )
    return pd.DataFrame(rows, columns=["value", "mean", "sd", "n", "n_failed"])


def _response_2d(trials: pd.DataFrame, p1: str, p2: str) -> pd.DataFrame:
    ok = trials[trials["state"] == "completed"]
    return ok.pivot_table(index=f"param_{p1}", columns=f"param_{p2}", values="value", aggfunc="mean")


def param_importance(
    journal: str | None,
    study_name: str,
    *,
    min_trials: int = 10,
    seed: int = 0,
) -> tuple[pd.DataFrame, list[str]]:
    """Hyperparameter importances of one Optuna study by PED-ANOVA and fANOVA.

    PED-ANOVA (Watanabe et al., 2023) compares the density of the top ``max(10%, 2/n)`` (at most half)
    of the trials with all trials per hyperparameter; fANOVA (Hutter et al., 2014) decomposes the
    variance of a random forest fit. Both come from ``optuna.importance`` and are normalised to sum to one.

    Args:
      journal: path of the run's Optuna journal (``None``: skipped with a note).
      study_name: the arm's Optuna study, ``<study>/<arm>``.
      min_trials: fewer completed trials than this are skipped with a note.
      seed: fANOVA's forest seed.

    Returns:
      ``(importance frame with param, evaluator, importance; notes)``.
    """
    cols = ["param", "evaluator", "importance"]
    empty = pd.DataFrame(columns=cols)
    if journal is None or not os.path.isfile(journal):
        return empty, [f"importance skipped for {study_name}: the run has no local Optuna journal"]
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        storage = JournalStorage(JournalFileBackend(journal, lock_obj=JournalFileOpenLock(journal)))
        ostudy = optuna.load_study(study_name=study_name, storage=storage)
    except (KeyError, ValueError, OSError, RuntimeError) as err:
        return empty, [f"importance skipped for {study_name}: cannot open it in {journal} ({err})"]
    complete = ostudy.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if len(complete) < min_trials:
        return empty, [
            f"importance skipped for {study_name}: {len(complete)} completed trials, "
            f"at least {min_trials} needed"
        ]
    varied = sorted(
        {name for t in complete for name in t.params if len({repr(u.params.get(name)) for u in complete}) > 1}
    )
    if not varied:
        return empty, [f"importance skipped for {study_name}: no hyperparameter took more than one value"]
    # PED-ANOVA's top set: the best 10% of trials, but at least two (and at most half of them)
    quantile = min(max(0.1, 2.0 / len(complete)), 0.5)
    evaluators = {
        "PED-ANOVA": lambda: optuna.importance.PedAnovaImportanceEvaluator(target_quantile=quantile),
        "fANOVA": lambda: optuna.importance.FanovaImportanceEvaluator(seed=seed),
    }
    rows, notes = [], []
    for name, make in evaluators.items():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                imp = optuna.importance.get_param_importances(ostudy, evaluator=make(), params=varied)
        except (ValueError, RuntimeError, ZeroDivisionError, AssertionError) as err:  # optuna asserts inputs
            notes.append(f"{name} importance failed for {study_name}: {str(err).splitlines()[0]}")
            continue
        rows += [{"param": p, "evaluator": name, "importance": float(v)} for p, v in imp.items()]
    return pd.DataFrame(rows, columns=cols), notes


def _positive(values: Any, n: int) -> np.ndarray:
    """``values`` as floats, NaN where not a finite positive number."""
    if values is None:
        return np.full(n, math.nan)
    x = pd.to_numeric(pd.Series(values), errors="coerce").to_numpy(float)
    return np.where(np.isfinite(x) & (x > 0), x, math.nan)


def _run_lrs(rows: pd.DataFrame) -> np.ndarray:
    """Each run's base learning rate: ``param_lr``, else ``derived_lr``, else its config's fixed
    ``optimizer_args.lr`` (the config JSON is parsed only for the runs the two columns leave open)."""
    n = len(rows)
    lr = _positive(rows["param_lr"].to_numpy() if "param_lr" in rows else None, n)
    if "derived_lr" in rows:
        lr = np.where(np.isfinite(lr), lr, _positive(rows["derived_lr"].to_numpy(), n))
    open_ = np.flatnonzero(~np.isfinite(lr))
    if open_.size and "config_json" in rows:
        configs = parse_json_column(rows["config_json"].iloc[open_])
        fixed = [(c.get("optimizer_args") or {}).get("lr") for c in configs]
        lr[open_] = _positive([v if isinstance(v, (int, float, str)) else None for v in fixed], open_.size)
    return lr


def study_k_hat(trials: pd.DataFrame) -> float:
    """The study's K_hat: the median of the finite ``k_hat`` values its runs recorded (NaN if none).

    K_hat depends on the task, the model and the weight distribution, not on the arm, so the value
    estimated by a derived-constant arm also bounds the curvature the other arms meet.
    """
    if "k_hat" not in trials:
        return math.nan
    k = pd.to_numeric(trials["k_hat"], errors="coerce").to_numpy(float)
    k = k[np.isfinite(k) & (k > 0)]
    return float(np.median(k)) if k.size else math.nan


def divergence_vs_lr_khat(
    trials: pd.DataFrame, *, k_hat: float | None = None, bins: int | Sequence[float] = 8
) -> pd.DataFrame:
    """Share of diverged runs per bin of ``lr * K_hat``.

    ``lr`` is a run's base learning rate: its searched ``param_lr``, else its ``derived_lr``, else the
    fixed ``optimizer_args.lr`` of its config. ``K_hat`` is the run's own ``k_hat``, else ``k_hat``
    (the study's, :func:`study_k_hat`). Only runs that ended ``completed`` or ``diverged`` count (an
    error or an early stop says nothing about stability). Bins are log-spaced over the observed range
    unless edges are given; the left edge is closed, the last bin also closed on the right.

    Returns:
      Columns ``bin_low``, ``bin_high``, ``n``, ``n_diverged``, ``rate`` (NaN for an empty bin); empty
      when no run has both values.
    """
    cols = ["bin_low", "bin_high", "n", "n_diverged", "rate"]
    if not len(trials):
        return pd.DataFrame(columns=cols)
    rows = trials[trials["status"].isin(["completed", "diverged"])]
    lr = _run_lrs(rows)
    own = pd.to_numeric(rows.get("k_hat", pd.Series(np.nan, index=rows.index)), errors="coerce").to_numpy(
        float
    )
    fallback = math.nan if k_hat is None else float(k_hat)
    kh = np.where(np.isfinite(own) & (own > 0), own, fallback)
    x = lr * kh
    keep = np.isfinite(x) & (x > 0)
    x, div = x[keep], (rows["status"].to_numpy() == "diverged")[keep]
    if x.size == 0:
        return pd.DataFrame(columns=cols)
    if isinstance(bins, int):
        lo, hi = float(x.min()), float(x.max())
        if lo == hi:
            edges = np.array([lo, hi])
        else:
            edges = np.geomspace(lo, hi, max(1, min(bins, np.unique(x).size)) + 1)
    else:
        edges = np.asarray(bins, dtype=float)
    idx = np.clip(np.searchsorted(edges, x, side="right") - 1, 0, edges.size - 2)
    inside = (x >= edges[0]) & (x <= edges[-1])
    out = []
    for b in range(edges.size - 1):
        m = inside & (idx == b)
        n = int(m.sum())
        nd = int(div[m].sum())
        out.append([float(edges[b]), float(edges[b + 1]), n, nd, nd / n if n else math.nan])
    return pd.DataFrame(out, columns=cols)


def sensitivity(
    study: Study,
    arm: str,
    *,
    importance: bool = True,
    min_trials: int = 10,
    bins: int = 8,
    seed: int = 0,
) -> Sensitivity:
    """Sensitivity of ``arm`` to its hyperparameters (see the module docstring).

    Args:
      study: the study.
      arm: one of its arms.
      importance: compute PED-ANOVA / fANOVA importances from the journal.
      min_trials: completed trials needed for importances.
      bins: bins of ``lr * K_hat`` for the divergence rate.
      seed: fANOVA's seed.

    Returns:
      A :class:`Sensitivity`; an arm without search trials gives empty slices and a note.
    """
    study.check_arm(arm)
    obj = study.objective
    trials = search_trial_values(study, arm)
    params = [p for p in study.searched_params(arm) if f"param_{p}" in trials.columns]
    notes: list[str] = []
    if trials.empty:
        notes.append(f"arm '{arm}' has no search trials (it is not tuned): no slices or importances")
    grid = study.is_grid(arm)
    r1: dict[str, pd.DataFrame] = {}
    r2: dict[tuple[str, str], pd.DataFrame] = {}
    if grid and not trials.empty:
        r1 = {p: _response_1d(trials, p) for p in params}
        r2 = {(a, b): _response_2d(trials, a, b) for a, b in itertools.combinations(params, 2)}
    imp = pd.DataFrame(columns=["param", "evaluator", "importance"])
    if importance and not trials.empty:
        imp, more = param_importance(study.journal, f"{study.name}/{arm}", min_trials=min_trials, seed=seed)
        notes += more
    t = study.trials
    arm_rows = t[t["arm"] == arm] if len(t) else t
    div = divergence_vs_lr_khat(arm_rows, k_hat=study_k_hat(t), bins=bins)
    if div.empty:
        notes.append(
            f"divergence against lr x K_hat skipped for '{arm}': no run with both a learning rate and K_hat"
        )
    log_params = tuple(p for p in params if study.param_is_log(arm, p))
    return Sensitivity(
        arm=arm,
        metric=obj["metric"],
        mode=obj["mode"],
        params=params,
        trials=trials,
        grid=grid,
        response_1d=r1,
        response_2d=r2,
        importance=imp,
        divergence=div,
        log_params=log_params,
        notes=tuple(notes),
    )
