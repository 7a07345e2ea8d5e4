"""Answers across several studies: performance profiles and the probability of improvement.

One study says whether arm A beats the reference on one task; several (the 003 d1 / d3 / d5 studies,
one spec on several datasets) say how often and by how much. Two summaries, both on each study's
primary metric at the final epoch (:attr:`~lyaptune.analysis.load.Study.primary_metrics`):

- the performance profile (Dolan & More 2002, as AlgoPerf uses it): for each arm, the fraction of
  studies in which its mean is within a factor tau of the best arm's;
- the probability of improvement P(A > B) (Agarwal et al. 2021, rliable): the chance that a run of A
  beats a run of B on a study drawn at random, with a stratified-bootstrap interval (runs resampled
  within each study).

Collapsed arms and arms with a failed final run count as not solving a study (ratio infinity), as
they are never ranked within one.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from lyaptune.errors import ConfigError

__all__ = ["performance_profile", "probability_of_improvement", "study_scores", "pairwise_improvement"]


def study_scores(table: pd.DataFrame) -> pd.DataFrame:
    """Each study's primary-metric mean per arm, from a several-study :func:`~.compare.compare` table.

    Returns:
      Columns ``study``, ``arm``, ``metric`` (the study's ranking metric), ``mode``, ``value`` (the
      arm's mean, NaN for arms that are not ranked: collapsed, failed or without completed runs).
    """
    rows = []
    for _, r in table.iterrows():
        m = str(r["rank_by"])
        ok = bool(r.get("eligible", not pd.isna(r["rank"])))
        rows.append(
            {
                "study": r["study"],
                "arm": r["arm"],
                "metric": m,
                "mode": r.get(f"{m}_mode", "min"),
                "value": float(r[f"{m}_mean"]) if ok else math.nan,
            }
        )
    return pd.DataFrame(rows, columns=["study", "arm", "metric", "mode", "value"])


def performance_profile(
    scores: pd.DataFrame, taus: Sequence[float] | np.ndarray | None = None
) -> pd.DataFrame:
    r"""Performance profiles of the arms over the studies.

    For study s and arm a with value :math:`v_{s,a}` and the best value :math:`v_s^*` of that study,
    the performance ratio is :math:`r_{s,a} = v_{s,a} / v_s^*` for a ``min`` metric and
    :math:`v_s^* / v_{s,a}` for a ``max`` one (>= 1; infinity for an arm without a value), and

    .. math::

        \rho_a(\tau) = \frac{1}{S} \left|\{ s : r_{s,a} \le \tau \}\right|.

    Args:
      scores: :func:`study_scores` (values must be positive where present).
      taus: the factors tau (default 100 points from 1 to the largest finite ratio x 1.05).

    Returns:
      Columns ``arm``, ``tau``, ``fraction``, ``n_studies``.

    Raises:
      ConfigError: a non-positive value (ratios are undefined).

    References:
      Dolan & More (2002), "Benchmarking optimization software with performance profiles", Math.
      Program. 91; Dahl et al. (2023), "Benchmarking Neural Network Training Algorithms" (AlgoPerf).
    """
    v = scores["value"].to_numpy(float)
    if np.any(np.isfinite(v) & (v <= 0)):
        bad = scores.loc[np.isfinite(v) & (v <= 0)].iloc[0]
        raise ConfigError(
            f"performance profile needs positive values; study {bad['study']!r} arm {bad['arm']!r} has "
            f"{bad['metric']} = {bad['value']!r}"
        )
    ratios = []
    for _, g in scores.groupby("study", sort=False):
        vals = g["value"].to_numpy(float)
        mode = str(g["mode"].iloc[0])
        fin = vals[np.isfinite(vals)]
        if not fin.size:
            r = np.full(vals.size, np.inf)
        else:
            best = fin.min() if mode == "min" else fin.max()
            with np.errstate(divide="ignore", invalid="ignore"):
                r = vals / best if mode == "min" else best / vals
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


def _poi(xs: Sequence[np.ndarray], ys: Sequence[np.ndarray], sign: float) -> float:
    per_study = []
    for x, y in zip(xs, ys):
        d = sign * (x[:, None] - y[None, :])
        per_study.append(float(((d > 0) + 0.5 * (d == 0)).mean()))
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
        \quad S(a, b) = 1 \text{ if } a \text{ beats } b,\ \tfrac12 \text{ if equal},\ 0 \text{ else}

    (the Mann-Whitney U statistic per study; "beats" is ``>`` for ``mode="max"``, ``<`` for ``min``).
    The interval is rliable's stratified bootstrap: runs of X and of Y resampled with replacement
    within each study, the statistic recomputed, and the percentile interval of the resamples taken.
    With only a few runs per study it is approximate (the report says so).

    Args:
      x, y: one array of runs per study (same studies, same order; non-finite runs dropped).
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
    xs, ys = [], []
    for a, b in zip(x, y):
        a = np.asarray(a, dtype=float)
        b = np.asarray(b, dtype=float)
        a, b = a[np.isfinite(a)], b[np.isfinite(b)]
        if a.size and b.size:
            xs.append(a)
            ys.append(b)
    if not xs:
        return (math.nan, math.nan, math.nan)
    sign = 1.0 if mode == "max" else -1.0
    p = _poi(xs, ys, sign)
    rng = np.random.default_rng(seed)
    boot = np.empty(int(n_resamples))
    for i in range(boot.size):
        bx = [a[rng.integers(0, a.size, a.size)] for a in xs]
        by = [b[rng.integers(0, b.size, b.size)] for b in ys]
        boot[i] = _poi(bx, by, sign)
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
      runs: ``{study: {arm: primary-metric values of its completed final runs}}``; an arm that is
        not ranked in a study (collapsed, failed) should be given no runs there.
      modes: ``{study: "min" | "max"}`` (all studies must agree).

    Returns:
      Columns ``arm_a``, ``arm_b``, ``p_a_beats_b``, ``low``, ``high``, ``n_studies`` (studies with
      runs of both).

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
    out = []
    for a in arms:
        for b in arms:
            if a == b:
                continue
            xa = [np.asarray(runs[s].get(a, []), float) for s in studies]
            xb = [np.asarray(runs[s].get(b, []), float) for s in studies]
            n = sum(1 for u, v in zip(xa, xb) if np.isfinite(u).any() and np.isfinite(v).any())
            p, lo, hi = probability_of_improvement(
                xa, xb, mode=mode, level=level, n_resamples=n_resamples, seed=seed
            )
            out.append({"arm_a": a, "arm_b": b, "p_a_beats_b": p, "low": lo, "high": hi, "n_studies": n})
    return pd.DataFrame(out, columns=["arm_a", "arm_b", "p_a_beats_b", "low", "high", "n_studies"])
