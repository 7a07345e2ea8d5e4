"""Answers across several studies: performance profiles and the probability of improvement.

One study says whether arm A beats the reference on one task; several (the 003 d1 / d3 / d5 studies,
one spec on several datasets) say how often and by how much. Two summaries, both on each study's
primary metric at the final epoch (:attr:`~lyaptune.analysis.load.Study.primary_metrics`):

- the performance profile (Dolan & More 2002, as AlgoPerf uses it): for each arm, the fraction of
  studies in which its value is within a factor tau of the best arm's, always on a quantity where
  smaller is better: loss, gradient norm, or the error rate 1 - accuracy for an accuracy (a ratio of
  accuracies would call 0.90 vs 0.98 a factor 1.09 while the error rates differ 5x);
- the probability of improvement P(A > B) (Agarwal et al. 2021, rliable): the chance that a run of A
  beats a run of B on a study drawn at random, with a stratified-bootstrap interval (runs resampled
  within each study), marked as rough when a study has fewer than :data:`FEW_RUNS` runs of an arm.

Every study counts (METHODS.md section 8 "Across studies"): in a profile an arm that collapsed or
failed in a study has ratio infinity there; in P(A > B) a run that collapsed or failed loses to every
valid run (two such runs tie, 1/2). Studies are told apart by the table's ``study`` column (the run
directory's name where two runs share a spec name), so each study counts once and every fraction is
in [0, 1].
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from lyaptune.errors import ConfigError
from lyaptune.metrics import metric_info

__all__ = [
    "FEW_RUNS",
    "performance_profile",
    "probability_of_improvement",
    "profile_quantity",
    "study_scores",
    "pairwise_improvement",
]

#: Below this many runs of an arm in some study, a P(A > B) interval is marked as rough (METHODS 8).
FEW_RUNS = 5


def profile_quantity(metric: str, mode: str) -> tuple[str, bool]:
    """The quantity a performance profile takes ratios of, for ``metric``: ``(label, as_error_rate)``.

    Smaller must be better: an accuracy (a ``max`` metric in [0, 1]) becomes its error rate
    1 - accuracy; a ``min`` metric (loss, gradient norm) is taken as it is.

    Raises:
      ConfigError: a ``max`` metric that is not an accuracy (no smaller-is-better quantity to take).
    """
    if mode == "min":
        return metric, False
    if metric_info(metric).percent or metric.endswith("_acc"):
        return f"error rate (1 - {metric})", True
    raise ConfigError(
        f"performance profile of metric {metric!r} (mode max) is undefined: profiles need a quantity "
        "where smaller is better (a loss, a gradient norm, or an accuracy's error rate)"
    )


def study_scores(table: pd.DataFrame) -> pd.DataFrame:
    """Each study's primary-metric value per arm, from a several-study :func:`~.compare.compare` table.

    The value is the arm's geometric mean for a log-scale metric (``<m>_gmean``), else its mean;
    ``profile_value`` is the quantity profiles take ratios of (:func:`profile_quantity`: the value,
    or 1 - value for an accuracy).

    Returns:
      Columns ``study`` (the table's study label, unique per study), ``arm``, ``metric`` (the study's
      ranking metric), ``mode``, ``value`` (NaN for arms that are not ranked: collapsed, failed or
      without completed runs), ``profile_metric``, ``profile_value``.
    """
    rows = []
    for _, r in table.iterrows():
        m = str(r["rank_by"])
        mode = str(r.get(f"{m}_mode", "min"))
        ok = bool(r.get("eligible", not pd.isna(r["rank"])))
        center = r.get(f"{m}_gmean", math.nan) if r.get(f"{m}_scale") == "log" else r[f"{m}_mean"]
        value = float(center) if ok else math.nan
        label, err = profile_quantity(m, mode)
        rows.append(
            {
                "study": r["study"],
                "arm": r["arm"],
                "metric": m,
                "mode": mode,
                "value": value,
                "profile_metric": label,
                "profile_value": 1.0 - value if err else value,
            }
        )
    cols = ["study", "arm", "metric", "mode", "value", "profile_metric", "profile_value"]
    return pd.DataFrame(rows, columns=cols)


def performance_profile(
    scores: pd.DataFrame, taus: Sequence[float] | np.ndarray | None = None
) -> pd.DataFrame:
    r"""Performance profiles of the arms over the studies, on a quantity where smaller is better.

    For study s and arm a with value :math:`v_{s,a}` (``profile_value`` of :func:`study_scores`: a
    loss, a gradient norm, or an error rate 1 - accuracy) and the smallest value :math:`v_s^*` of that
    study, the performance ratio is :math:`r_{s,a} = v_{s,a} / v_s^*` (>= 1; infinity for an arm
    without a value there, e.g. collapsed), and

    .. math::

        \rho_a(\tau) = \frac{1}{S} \left|\{ s : r_{s,a} \le \tau \}\right| \in [0, 1],

    S the number of distinct studies (an arm counts at most once per study).

    Args:
      scores: :func:`study_scores` (``profile_value`` must be positive where present; a frame without
        it uses ``value`` with ``mode`` min).
      taus: the factors tau (default 100 points from 1 to the largest finite ratio x 1.05).

    Returns:
      Columns ``arm``, ``tau``, ``fraction``, ``n_studies``.

    Raises:
      ConfigError: a non-positive value (ratios are undefined), or an arm twice in one study.

    References:
      Dolan & More (2002), "Benchmarking optimization software with performance profiles", Math.
      Program. 91; Dahl et al. (2023), "Benchmarking Neural Network Training Algorithms" (AlgoPerf).
    """
    col = "profile_value" if "profile_value" in scores else "value"
    if col == "value" and (scores["mode"] != "min").any():
        raise ConfigError("performance profile needs a smaller-is-better value; use study_scores()")
    v = scores[col].to_numpy(float)
    if np.any(np.isfinite(v) & (v <= 0)):
        bad = scores.loc[np.isfinite(v) & (v <= 0)].iloc[0]
        raise ConfigError(
            f"performance profile needs positive values; study {bad['study']!r} arm {bad['arm']!r} has "
            f"{bad.get('profile_metric', bad['metric'])} = {bad[col]!r}"
        )
    dup = scores.duplicated(["study", "arm"])
    if dup.any():
        bad = scores.loc[dup].iloc[0]
        raise ConfigError(
            f"performance profile: arm {bad['arm']!r} appears twice in study {bad['study']!r}; give each "
            "study its own label (two runs of one spec are two studies)"
        )
    ratios = []
    for _, g in scores.groupby("study", sort=False):
        vals = g[col].to_numpy(float)
        fin = vals[np.isfinite(vals)]
        if not fin.size:
            r = np.full(vals.size, np.inf)
        else:
            with np.errstate(divide="ignore", invalid="ignore"):
                r = vals / fin.min()
            r = np.where(np.isfinite(r), r, np.inf)
        ratios.append(pd.DataFrame({"arm": g["arm"].to_numpy(), "ratio": r}))
    rat = pd.concat(ratios, ignore_index=True)
    n_studies = scores["study"].nunique()
    if taus is None:
        finite = rat["ratio"][np.isfinite(rat["ratio"])]
        top = max(float(finite.max()) if len(finite) else 1.0, 1.0) * 1.05
        taus = np.linspace(1.0, max(top, 1.05), 100)
    taus = np.asarray(taus, dtype=float)
    out = []
    for arm in pd.unique(scores["arm"]):
        r = rat.loc[rat["arm"] == arm, "ratio"].to_numpy(float)
        for tau in taus:
            out.append({"arm": arm, "tau": float(tau), "fraction": float((r <= tau).sum()) / n_studies})
    df = pd.DataFrame(out, columns=["arm", "tau", "fraction"])
    df["n_studies"] = n_studies
    return df


def _scores(values: np.ndarray, sign: float) -> np.ndarray:
    """Runs as scores where larger is better; a collapsed or failed run (non-finite) is -inf."""
    v = np.asarray(values, dtype=float)
    return np.where(np.isfinite(v), sign * v, -np.inf)


def _poi(xs: Sequence[np.ndarray], ys: Sequence[np.ndarray]) -> float:
    per_study = []
    for x, y in zip(xs, ys):
        a, b = x[:, None], y[None, :]
        per_study.append(float(((a > b) + 0.5 * (a == b)).mean()))
    return float(np.mean(per_study))


def probability_of_improvement(
    x: Sequence[Sequence[float] | np.ndarray],
    y: Sequence[Sequence[float] | np.ndarray],
    *,
    mode: str = "max",
    level: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
) -> tuple[float, float, float]:
    r"""P(X > Y): the probability that a run of X beats a run of Y, averaged over studies.

    With runs :math:`x_{m,i}` (i = 1..N_m) and :math:`y_{m,j}` (j = 1..K_m) on study m = 1..M,

    .. math::

        P(X > Y) = \frac{1}{M} \sum_m \frac{1}{N_m K_m} \sum_{i,j} S(x_{m,i}, y_{m,j}),
        \quad S(a, b) = 1 \text{ if } a \text{ beats } b,\ \tfrac12 \text{ if tied},\ 0 \text{ else}

    (the Mann-Whitney U statistic per study; "beats" is ``>`` for ``mode="max"``, ``<`` for ``min``).
    A non-finite value is a run that collapsed or failed: it loses to every valid run and ties with
    another such run (METHODS.md section 8), so a study where X collapsed counts against X instead of
    being dropped. The interval is rliable's stratified bootstrap: runs of X and of Y resampled with
    replacement within each study, the statistic recomputed, and the percentile interval of the
    resamples taken; with fewer than :data:`FEW_RUNS` runs per study it is rough (callers mark it).

    Args:
      x, y: one array of runs per study (same studies, same order; NaN for a collapsed or failed run).
      mode: ``max`` or ``min``.
      level: interval level.
      n_resamples: bootstrap resamples.
      seed: seed of the resampling.

    Returns:
      ``(p, low, high)``; NaN when no study has runs of both.

    References:
      Agarwal, Schwarzer, Castro, Courville, Bellemare (2021), "Deep Reinforcement Learning at the
      Edge of the Statistical Precipice", NeurIPS (probability of improvement, stratified bootstrap).
    """
    if mode not in ("min", "max"):
        raise ConfigError(f"mode={mode!r} is not valid; choices: min, max")
    if len(x) != len(y):
        raise ValueError(f"x and y need one array per study each, got {len(x)} and {len(y)}")
    sign = 1.0 if mode == "max" else -1.0
    xs, ys = [], []
    for a, b in zip(x, y):
        a = np.asarray(a, dtype=float).ravel()
        b = np.asarray(b, dtype=float).ravel()
        if a.size and b.size:  # a study without any run of one arm cannot compare them
            xs.append(_scores(a, sign))
            ys.append(_scores(b, sign))
    if not xs:
        return (math.nan, math.nan, math.nan)
    p = _poi(xs, ys)
    rng = np.random.default_rng(seed)
    boot = np.empty(int(n_resamples))
    for i in range(boot.size):
        bx = [a[rng.integers(0, a.size, a.size)] for a in xs]
        by = [b[rng.integers(0, b.size, b.size)] for b in ys]
        boot[i] = _poi(bx, by)
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(boot, [alpha, 1.0 - alpha])
    return (p, float(low), float(high))


def pairwise_improvement(
    runs: Mapping[str, Mapping[str, np.ndarray]],
    modes: Mapping[str, str],
    *,
    level: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
) -> pd.DataFrame:
    """:func:`probability_of_improvement` for every ordered pair of arms.

    Args:
      runs: ``{study: {arm: primary-metric value of each of its final runs}}``, NaN for a run that
        collapsed or failed (it loses to every valid run); every study is kept.
      modes: ``{study: "min" | "max"}`` (all studies must agree).

    Returns:
      Columns ``arm_a``, ``arm_b``, ``p_a_beats_b``, ``low``, ``high``, ``n_studies`` (studies with
      runs of both), ``min_runs`` (fewest runs of either arm in one of those studies) and ``rough``
      (``min_runs`` < :data:`FEW_RUNS`: the interval is from too few runs per study to trust).

    Raises:
      ConfigError: studies whose primary metrics point in different directions.
    """
    if len(set(modes.values())) > 1:
        raise ConfigError(
            f"the studies' primary metrics differ in mode ({dict(modes)}); compare like with like"
        )
    mode = next(iter(modes.values()), "max")
    studies = list(runs)
    arms = list(dict.fromkeys(a for s in studies for a in runs[s]))
    cols = ["arm_a", "arm_b", "p_a_beats_b", "low", "high", "n_studies", "min_runs", "rough"]
    out = []
    for a in arms:
        for b in arms:
            if a == b:
                continue
            xa = [np.asarray(runs[s].get(a, []), float).ravel() for s in studies]
            xb = [np.asarray(runs[s].get(b, []), float).ravel() for s in studies]
            both = [(u.size, v.size) for u, v in zip(xa, xb) if u.size and v.size]
            p, lo, hi = probability_of_improvement(
                xa, xb, mode=mode, level=level, n_resamples=n_resamples, seed=seed
            )
            fewest = min((min(u, v) for u, v in both), default=0)
            out.append(
                {
                    "arm_a": a,
                    "arm_b": b,
                    "p_a_beats_b": p,
                    "low": lo,
                    "high": hi,
                    "n_studies": len(both),
                    "min_runs": fewest,
                    "rough": fewest < FEW_RUNS,
                }
            )
    return pd.DataFrame(out, columns=cols)
