"""Budget curves: how good an arm's best configuration is expected to be after k trials of tuning.

Dodge et al. (2019), "Show Your Work: Improved Reporting of Experimental Results", report the expected
best validation score of a random search as a function of its budget. Here the budget is counted in
Optuna trials of an arm's search phase, and the expectation is over which k of the n trials the
study ran had been drawn (without replacement). Comparing that curve with the derived step size
(which needs no tuning) answers "how many trials of tuning does Adam + cosine need to do what the
derived step does with none".
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.special import gammaln

from lyaptune.analysis.compare import resolve_reference
from lyaptune.analysis.load import Study
from lyaptune.errors import ConfigError, UserError

__all__ = [
    "FAILED_POLICIES",
    "MatchingBudget",
    "budget_curve",
    "expected_best",
    "matching_budget",
    "matching_budgets",
    "search_trial_values",
]

#: What a failed search trial (diverged, errored, or stopped early) counts as in a budget curve.
FAILED_POLICIES: tuple[str, ...] = ("worst", "exclude")


def _log_comb(n: np.ndarray, k: np.ndarray) -> np.ndarray:
    return gammaln(n + 1.0) - gammaln(k + 1.0) - gammaln(n - k + 1.0)


def expected_best(
    values: Sequence[float] | np.ndarray, ks: Sequence[int] | None = None, *, mode: str = "max"
) -> tuple[np.ndarray, np.ndarray]:
    """Expected best of k values drawn without replacement from ``values``, and its standard deviation.

    With the n values sorted so that ``v_(1)`` is the worst and ``v_(n)`` the best, the best of a uniformly
    random k-subset is ``v_(i)`` with probability ``C(i-1, k-1) / C(n, k)`` (the other k-1 are among the
    i-1 worse ones), so

    .. math::

        \\mathbb{E}[\\text{best}_k] = \\sum_{i=k}^{n} v_{(i)} \\binom{i-1}{k-1} \\Big/ \\binom{n}{k},
        \\qquad
        \\mathrm{sd}_k = \\sqrt{\\sum_i v_{(i)}^2 p_i - \\mathbb{E}[\\text{best}_k]^2}.

    Ties need no special care: the formula treats tied values as distinct items, which leaves the
    expectation unchanged.

    Args:
      values: the trials' objective values (finite).
      ks: budgets to evaluate, each in 1..n (default 1..n).
      mode: ``max`` (higher is better) or ``min``.

    Returns:
      ``(expected, sd)`` arrays, one entry per k.

    References:
      Dodge, Gururangan, Card, Schwartz, Smith (2019), "Show Your Work: Improved Reporting of
      Experimental Results", EMNLP, section 3 (expected validation performance); the exact
      without-replacement form.
    """
    if mode not in ("min", "max"):
        raise ConfigError(f"mode must be 'min' or 'max', got {mode!r}")
    v = np.asarray(values, dtype=float)
    if v.ndim != 1 or not np.all(np.isfinite(v)):
        raise ValueError("values must be a 1-D array of finite numbers")
    n = v.size
    ks_arr = np.arange(1, n + 1) if ks is None else np.asarray(list(ks), dtype=int)
    if n == 0:
        return np.full(ks_arr.shape, np.nan), np.full(ks_arr.shape, np.nan)
    if np.any((ks_arr < 1) | (ks_arr > n)):
        raise ValueError(f"every k must be in 1..{n}, got {ks_arr.tolist()}")
    # ascending in "goodness": for min, the worst (largest) value comes first
    srt = np.sort(v) if mode == "max" else np.sort(v)[::-1]
    i = np.arange(1, n + 1, dtype=float)
    exp = np.empty(ks_arr.size)
    sd = np.empty(ks_arr.size)
    for j, k in enumerate(ks_arr):
        w = np.zeros(n)
        m = i >= k
        w[m] = np.exp(
            _log_comb(i[m] - 1.0, np.full(m.sum(), k - 1.0)) - _log_comb(np.float64(n), np.float64(k))
        )
        w /= w.sum()  # the weights sum to one (hockey-stick identity); remove rounding
        e = float(np.dot(w, srt))
        exp[j] = e
        sd[j] = math.sqrt(max(float(np.dot(w, (srt - e) ** 2)), 0.0))
    return exp, sd


def search_trial_values(study: Study, arm: str) -> pd.DataFrame:
    """The arm's search-phase Optuna trials, one row each, with the value the search saw.

    A trial's value is the mean of its runs' ``objective`` over the search seeds (what Optuna was
    told). A trial is ``pending`` while it has fewer finished runs than search seeds or a run still
    ``running``, ``failed`` when a run diverged, errored or was stopped early, else ``completed``.

    Returns:
      Columns ``trial`` (Optuna number, or the trial id when there is none), ``value`` (NaN unless
      completed), ``state``, ``runs``, ``wall_s`` (summed), and one ``param_<name>`` column per
      hyperparameter (the first run's value).
    """
    study.check_arm(arm)
    t = study.trials
    rows = t[(t["arm"] == arm) & (t["phase"] == "search")] if len(t) else t
    n_seeds = max(len((study.spec.get("search") or {}).get("seeds") or [0]), 1)
    params = [c for c in t.columns if c.startswith("param_")]
    cols = ["trial", "value", "state", "runs", "wall_s", *params]
    if not len(rows):
        return pd.DataFrame(columns=cols)
    key = rows["optuna_number"].astype("object").where(rows["optuna_number"].notna(), rows["trial_id"])
    out = []
    for trial, g in rows.groupby(key, sort=False):
        statuses = set(g["status"])
        obj = pd.to_numeric(g["objective"], errors="coerce").to_numpy(float)
        if "running" in statuses or len(g) < n_seeds:
            state = "pending"
        elif statuses == {"completed"} and np.all(np.isfinite(obj)):
            state = "completed"
        else:
            state = "failed"
        rec = {
            "trial": trial,
            "value": float(obj.mean()) if state == "completed" else math.nan,
            "state": state,
            "runs": int(len(g)),
            "wall_s": float(np.nansum(pd.to_numeric(g["wall_s"], errors="coerce").to_numpy(float))),
        }
        first = g.iloc[0]
        rec.update({p: first[p] for p in params})
        out.append(rec)
    df = pd.DataFrame(out, columns=cols)
    try:
        return df.sort_values("trial", key=lambda s: pd.to_numeric(s, errors="coerce")).reset_index(drop=True)
    except TypeError:
        return df


def budget_curve(study: Study, arm: str, *, failed: str = "worst") -> pd.DataFrame:
    """Expected best validation objective of ``arm`` after k = 1..n search trials (:func:`expected_best`).

    Only finished trials count (pending ones are left out). Failed trials (diverged, errored, or
    stopped early by ASHA) are, with ``failed="worst"`` (default), given the worst objective among
    the arm's completed trials: a failed trial is a spent trial that found nothing better, so it can
    never raise the expected best but does lower it at small k. With ``failed="exclude"`` they are
    dropped, as if they had never been run (an optimistic curve). The spec's objective mode decides
    what "best" means.

    Args:
      study: the study.
      arm: an arm with search trials (an arm without any gives an empty frame).
      failed: ``worst`` or ``exclude``.

    Returns:
      Columns ``k``, ``expected_best``, ``sd``, ``n_trials`` (n), ``n_failed``, ``n_pending``;
      empty when no trial has completed.
    """
    if failed not in FAILED_POLICIES:
        raise ConfigError(f"failed must be one of {', '.join(FAILED_POLICIES)}; got {failed!r}")
    mode = study.objective["mode"]
    trials = search_trial_values(study, arm)
    cols = ["k", "expected_best", "sd", "n_trials", "n_failed", "n_pending"]
    ok = trials.loc[trials["state"] == "completed", "value"].to_numpy(float)
    n_failed = int((trials["state"] == "failed").sum())
    n_pending = int((trials["state"] == "pending").sum())
    if ok.size == 0:
        return pd.DataFrame(columns=cols)
    values = ok
    if failed == "worst" and n_failed:
        worst = ok.max() if mode == "min" else ok.min()
        values = np.concatenate([ok, np.full(n_failed, worst)])
    exp, sd = expected_best(values, mode=mode)
    n = values.size
    return pd.DataFrame(
        {
            "k": np.arange(1, n + 1),
            "expected_best": exp,
            "sd": sd,
            "n_trials": n,
            "n_failed": n_failed if failed == "worst" else 0,
            "n_pending": n_pending,
        },
        columns=cols,
    )


@dataclass(frozen=True)
class MatchingBudget:
    """How many search trials ``baseline`` needs to match ``reference``.

    Attributes:
      baseline, reference: arm names.
      target: the reference arm's mean objective over its completed final-seed runs.
      k: the smallest budget k whose expected best objective is at least as good as ``target``, or
        ``None`` when even the whole search (``budget`` trials) does not reach it.
      budget: the number of finished search trials of ``baseline``.
      expected_at_k: the expected best at ``k`` (or at ``budget`` when not matched).
      mode: the objective's mode.
    """

    baseline: str
    reference: str
    target: float
    k: int | None
    budget: int
    expected_at_k: float
    mode: str


def matching_budget(
    study: Study, baseline: str, reference: str = "derived", *, failed: str = "worst"
) -> MatchingBudget:
    """The smallest number of ``baseline``'s search trials whose expected best matches ``reference``.

    The target is the mean ``objective`` (the spec's validation metric) of the reference arm's
    completed final-seed runs; the baseline's curve is :func:`budget_curve`. Matching means
    ``expected_best(k) <= target`` for a ``min`` objective, ``>=`` for ``max``.

    Raises:
      ConfigError: an unknown arm.
      UserError: the reference arm has no completed final run yet.
    """
    study.check_arm(baseline)
    ref = resolve_reference(study, reference)
    if ref is None:
        raise ConfigError("matching_budget needs a reference arm, got 'none'")
    mode = study.objective["mode"]
    t = study.trials
    fin = t[(t["arm"] == ref) & (t["phase"] == "final") & (t["status"] == "completed")] if len(t) else t
    obj = pd.to_numeric(fin["objective"], errors="coerce").to_numpy(float) if len(fin) else np.zeros(0)
    obj = obj[np.isfinite(obj)]
    if obj.size == 0:
        raise UserError(f"reference arm '{ref}' has no completed final run with an objective yet")
    target = float(obj.mean())
    curve = budget_curve(study, baseline, failed=failed)
    if curve.empty:
        return MatchingBudget(baseline, ref, target, None, 0, math.nan, mode)
    e = curve["expected_best"].to_numpy(float)
    hit = e <= target if mode == "min" else e >= target
    idx = int(np.argmax(hit)) if hit.any() else None
    budget = int(curve["n_trials"].iloc[0])
    if idx is None:
        return MatchingBudget(baseline, ref, target, None, budget, float(e[-1]), mode)
    return MatchingBudget(baseline, ref, target, int(curve["k"].iloc[idx]), budget, float(e[idx]), mode)


def matching_budgets(study: Study, reference: str = "derived", *, failed: str = "worst") -> pd.DataFrame:
    """:func:`matching_budget` for every arm with search trials other than the reference.

    Returns:
      Columns ``arm``, ``reference``, ``target``, ``k`` (nullable integer), ``budget``,
      ``expected_at_k``, ``mode``; empty when the reference has no completed final run.
    """
    ref = resolve_reference(study, reference)
    cols = ["arm", "reference", "target", "k", "budget", "expected_at_k", "mode"]
    rows = []
    if ref is None:
        return pd.DataFrame(columns=cols)
    for arm in study.arms:
        if arm == ref or search_trial_values(study, arm).empty:
            continue
        try:
            m = matching_budget(study, arm, ref, failed=failed)
        except UserError:
            return pd.DataFrame(columns=cols)
        rows.append([m.baseline, m.reference, m.target, m.k, m.budget, m.expected_at_k, m.mode])
    df = pd.DataFrame(rows, columns=cols)
    df["k"] = pd.array(df["k"].tolist(), dtype="Int64")
    return df
