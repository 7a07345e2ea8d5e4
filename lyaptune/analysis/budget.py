"""Budget curves: how good an arm's best configuration is after k trials of tuning.

Two estimators, chosen per arm by how its trials were drawn (METHODS.md section 8):

- ``expected-max`` (random, quasi-random and grid search): the expected best validation score of k
  trials drawn *without replacement* from the n the study ran, in its exact form (Dodge et al.
  (2019), "Show Your Work", draw with replacement; the two agree for k << n). It assumes the trials
  are exchangeable draws. Its band (+-1 sd) is the spread of the best of k draws, not an uncertainty
  of the curve (:data:`BAND_LABELS`).
- ``best-so-far`` (adaptive samplers: TPE, CMA-ES, GP, anything else): later trials learn from
  earlier ones, so a random k-subset is not what k trials of that search give, and the expected-max
  curve would be optimistic at small k. The curve is the best value among the first k trials in trial
  order, averaged over the arm's independent search repeats (``search.repeats``), its band the worst
  to the best repeat; with one repeat no spread can be shown, and the curve says so.

"Trials needed to match the reference" (:func:`matching_budget`) compares a *selected* best (of k
trials) with the reference's *unselected* mean over its final seeds, which favours the tuned arm:
every row carries :data:`MATCHING_NOTE`.

Comparing a curve with the derived step size (which needs no tuning) answers "how many trials of
tuning does Adam + cosine need to do what the derived step does with none".
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
from lyaptune.analysis.search_trials import search_trial_values
from lyaptune.errors import ConfigError, UserError

__all__ = [
    "BAND_LABELS",
    "ESTIMATOR_LABELS",
    "MATCHING_NOTE",
    "NO_SPREAD_NOTE",
    "BUDGET_METHODS",
    "IID_SAMPLERS",
    "budget_method",
    "best_so_far",
    "FAILED_POLICIES",
    "MatchingBudget",
    "budget_curve",
    "expected_best",
    "matching_budget",
    "matching_budgets",
    "search_trial_values",
]

#: Samplers whose trials are exchangeable draws, for which Dodge et al.'s expected maximum is valid.
IID_SAMPLERS: tuple[str, ...] = ("random", "qmc", "sobol", "grid")
#: The budget-curve estimators: expected maximum of k draws, and best-so-far in trial order.
BUDGET_METHODS: tuple[str, ...] = ("expected-max", "best-so-far")

#: The exact name of each estimator, as every table and figure states it.
ESTIMATOR_LABELS: dict[str, str] = {
    "expected-max": "expected best of k trials drawn without replacement from those run (exact form; "
    "Dodge et al. 2019 draw with replacement)",
    "best-so-far": "best of the first k trials in trial order, mean over independent search repeats",
}
#: What each estimator's band is (it is never a confidence interval of the curve).
BAND_LABELS: dict[str, str] = {
    "expected-max": "+-1 sd: the spread of the best of k draws, not an uncertainty of the curve",
    "best-so-far": "worst to best search repeat",
}
#: Said of a best-so-far curve from a single search repeat.
NO_SPREAD_NOTE = "one search repeat: no spread can be shown (set search.repeats for one)"
#: Said beside every "trials needed to match the reference" number.
MATCHING_NOTE = (
    "optimistic for the tuned arm: a selected best of k trials is compared with the reference's "
    "unselected mean over its final seeds"
)

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


def best_so_far(values: Sequence[float] | np.ndarray, *, mode: str = "max") -> np.ndarray:
    r"""The running best of ``values`` in their order: :math:`b_k = \max_{i \le k} v_i` (``min`` for
    ``mode="min"``); NaN entries (trials that found nothing) leave the running best unchanged.

    Args:
      values: one search's trial values in trial order.
      mode: ``max`` or ``min``.

    Returns:
      ``b_1..b_n`` (NaN until the first finite value).
    """
    if mode not in ("min", "max"):
        raise ConfigError(f"mode must be 'min' or 'max', got {mode!r}")
    v = np.asarray(values, dtype=float)
    fill = np.inf if mode == "min" else -np.inf
    acc = (np.minimum if mode == "min" else np.maximum).accumulate(np.where(np.isfinite(v), v, fill))
    return np.where(np.isfinite(acc), acc, np.nan)


def budget_method(study: Study, arm: str) -> str:
    """``expected-max`` for a random, quasi-random or grid arm, else (adaptive) ``best-so-far``."""
    return "expected-max" if study.sampler_of(arm) in IID_SAMPLERS else "best-so-far"


BUDGET_COLUMNS = [
    "k",
    "best",
    "sd",
    "low",
    "high",
    "n_trials",
    "n_failed",
    "n_pending",
    "n_repeats",
    "method",
    "estimator",
    "band",
]


def budget_curve(study: Study, arm: str, *, failed: str = "worst") -> pd.DataFrame:
    """Best validation objective of ``arm`` after k = 1..n search trials, by the arm's estimator.

    The estimator (:func:`budget_method`) is ``expected-max`` for random, quasi-random and grid arms:
    :func:`expected_best` over all finished trials (of every repeat pooled), ``sd`` its standard
    deviation and ``low`` / ``high`` = best -+ sd. For adaptive samplers it is ``best-so-far``: per
    search repeat, :func:`best_so_far` of the finished trials in trial order; ``best`` is the mean
    over the repeats that ran at least k trials, ``sd`` their standard deviation (ddof = 1, NaN with
    one repeat) and ``low`` / ``high`` their minimum and maximum.

    Only finished trials count (pending ones are left out). Failed trials (diverged, errored, or
    stopped early by ASHA) are, with ``failed="worst"`` (default), given the worst objective among
    the arm's completed trials: a failed trial is a spent trial that found nothing better. With
    ``failed="exclude"`` they are dropped, as if they had never been run (an optimistic curve). The
    spec's objective mode decides what "best" means.

    Args:
      study: the study.
      arm: an arm with search trials (an arm without any gives an empty frame).
      failed: ``worst`` or ``exclude``.

    Returns:
      Columns ``k``, ``best``, ``sd``, ``low``, ``high``, ``n_trials`` (n, the most any repeat ran),
      ``n_failed``, ``n_pending``, ``n_repeats`` (repeats that reach k), ``method``, ``estimator``
      (:data:`ESTIMATOR_LABELS`) and ``band`` (:data:`BAND_LABELS`, or :data:`NO_SPREAD_NOTE` for a
      best-so-far curve from one repeat); empty when no trial has completed.

    References:
      Dodge et al. (2019), "Show Your Work", EMNLP (expected-max); METHODS.md section 8.
    """
    if failed not in FAILED_POLICIES:
        raise ConfigError(f"failed must be one of {', '.join(FAILED_POLICIES)}; got {failed!r}")
    mode = study.objective["mode"]
    method = budget_method(study, arm)
    trials = search_trial_values(study, arm)
    ok = trials.loc[trials["state"] == "completed", "value"].to_numpy(float)
    n_failed = int((trials["state"] == "failed").sum())
    n_pending = int((trials["state"] == "pending").sum())
    if ok.size == 0:
        return pd.DataFrame(columns=BUDGET_COLUMNS)
    worst = ok.max() if mode == "min" else ok.min()
    finished = trials[trials["state"] != "pending"]
    if failed == "exclude":
        finished = finished[finished["state"] == "completed"]
    vals = finished["value"].to_numpy(float)
    vals = np.where(finished["state"].to_numpy() == "failed", worst, vals)
    if method == "expected-max":
        exp, sd = expected_best(vals, mode=mode)
        n = vals.size
        k = np.arange(1, n + 1)
        best, low, high = exp, exp - sd, exp + sd
        reps = np.full(n, finished["repeat"].nunique())
    else:
        runs = [
            best_so_far(g["value"].to_numpy(float), mode=mode)
            for _, g in finished.assign(value=vals).groupby("repeat")
        ]
        n = max(r.size for r in runs)
        mat = np.full((len(runs), n), np.nan)
        for i, r in enumerate(runs):
            mat[i, : r.size] = r
        k = np.arange(1, n + 1)
        reps = np.isfinite(mat).sum(axis=0)
        best = np.nanmean(mat, axis=0)
        sd = np.array([np.nanstd(c, ddof=1) if np.isfinite(c).sum() >= 2 else np.nan for c in mat.T])
        low, high = np.nanmin(mat, axis=0), np.nanmax(mat, axis=0)
    return pd.DataFrame(
        {
            "k": k,
            "best": best,
            "sd": sd,
            "low": low,
            "high": high,
            "n_trials": n,
            "n_failed": n_failed if failed == "worst" else 0,
            "n_pending": n_pending,
            "n_repeats": reps.astype(int),
            "method": method,
            "estimator": ESTIMATOR_LABELS[method],
            "band": NO_SPREAD_NOTE
            if method == "best-so-far" and int(np.max(reps)) < 2
            else BAND_LABELS[method],
        },
        columns=BUDGET_COLUMNS,
    )


@dataclass(frozen=True)
class MatchingBudget:
    """How many search trials ``baseline`` needs to match ``reference``.

    Attributes:
      baseline, reference: arm names.
      target: the reference arm's mean objective over its completed final-seed runs.
      k: the smallest budget k whose curve value (the arm's own estimator) is at least as good as
        ``target``, or ``None`` when even the whole search (``budget`` trials) does not reach it.
      budget: the number of finished search trials of ``baseline``.
      expected_at_k: the curve's value at ``k`` (or at ``budget`` when not matched).
      method: the curve's estimator (``expected-max`` or ``best-so-far``).
      mode: the objective's mode.
    """

    baseline: str
    reference: str
    target: float
    k: int | None
    budget: int
    expected_at_k: float
    mode: str
    method: str = ""


def matching_budget(
    study: Study, baseline: str, reference: str = "auto", *, failed: str = "worst"
) -> MatchingBudget:
    """The smallest number of ``baseline``'s search trials whose budget curve matches ``reference``.

    The target is the mean ``objective`` (the spec's validation metric) of the reference arm's
    completed final-seed runs; the baseline's curve is its own :func:`budget_curve` (expected-max or
    best-so-far, by its sampler). Matching means ``best(k) <= target`` for a ``min`` objective,
    ``>=`` for ``max``. The number is optimistic for the baseline (:data:`MATCHING_NOTE`): its curve
    is a selected best, the target an unselected mean.

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
        return MatchingBudget(baseline, ref, target, None, 0, math.nan, mode, budget_method(study, baseline))
    method = str(curve["method"].iloc[0])
    e = curve["best"].to_numpy(float)
    hit = e <= target if mode == "min" else e >= target
    idx = int(np.argmax(hit)) if hit.any() else None
    budget = int(curve["n_trials"].iloc[0])
    if idx is None:
        return MatchingBudget(baseline, ref, target, None, budget, float(e[-1]), mode, method)
    return MatchingBudget(
        baseline, ref, target, int(curve["k"].iloc[idx]), budget, float(e[idx]), mode, method
    )


def matching_budgets(study: Study, reference: str = "auto", *, failed: str = "worst") -> pd.DataFrame:
    """:func:`matching_budget` for every arm with search trials other than the reference.

    Returns:
      Columns ``arm``, ``reference``, ``target``, ``k`` (nullable integer), ``budget``,
      ``expected_at_k``, ``mode``, ``method``, ``note`` (:data:`MATCHING_NOTE`); empty when the
      reference has no completed final run.
    """
    ref = resolve_reference(study, reference)
    cols = ["arm", "reference", "target", "k", "budget", "expected_at_k", "mode", "method", "note"]
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
        rows.append(
            [
                m.baseline,
                m.reference,
                m.target,
                m.k,
                m.budget,
                m.expected_at_k,
                m.mode,
                m.method,
                MATCHING_NOTE,
            ]
        )
    df = pd.DataFrame(rows, columns=cols)
    df["k"] = pd.array(df["k"].tolist(), dtype="Int64")
    return df
