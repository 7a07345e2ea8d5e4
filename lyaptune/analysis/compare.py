"""The comparison table: every arm's final-seed runs against a reference arm, with uncertainty.

For each arm, on its ``phase == "final"`` runs that completed, :func:`compare` reports the mean, the
sample standard deviation and a percentile-bootstrap confidence interval over seeds of each metric
(final test accuracy, final training loss, final and minimum gradient norm, wall time), the paired
difference to the reference arm (runs matched by seed) with its bootstrap interval and paired tests,
the tuning cost (search runs and CPU/GPU-seconds), the collapsed runs (:mod:`.collapse`), and a rank by
gradient norm that only arms without a collapsed run take part in.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from lyaptune._registry import unknown_choice
from lyaptune.analysis.collapse import CollapseThresholds, classify_collapse
from lyaptune.analysis.load import DERIVED_SCHEDULE, Study, parse_json_column
from lyaptune.errors import ConfigError

__all__ = [
    "DEFAULT_METRICS",
    "METRIC_LABELS",
    "METRIC_SENSE",
    "bootstrap_ci",
    "compare",
    "compare_json",
    "paired_test",
    "resolve_reference",
]

#: The metrics :func:`compare` reports by default (columns of ``trials.parquet``).
DEFAULT_METRICS: tuple[str, ...] = (
    "final_test_acc",
    "final_train_loss",
    "final_grad_norm",
    "min_grad_norm",
    "wall_s",
)
#: Whether higher (``max``) or lower (``min``) is better, per metric; ``objective`` follows the spec.
METRIC_SENSE: dict[str, str] = {
    "final_test_acc": "max",
    "final_val_acc": "max",
    "final_train_loss": "min",
    "final_val_loss": "min",
    "final_test_loss": "min",
    "final_grad_norm": "min",
    "min_grad_norm": "min",
    "wall_s": "min",
    "epochs_completed": "max",
}
#: Short labels for tables and figures.
METRIC_LABELS: dict[str, str] = {
    "final_test_acc": "test acc",
    "final_val_acc": "val acc",
    "final_train_loss": "train loss",
    "final_val_loss": "val loss",
    "final_test_loss": "test loss",
    "final_grad_norm": "final grad norm",
    "min_grad_norm": "min grad norm",
    "wall_s": "wall s",
    "objective": "objective",
    "epochs_completed": "epochs",
}
#: Paired Wilcoxon signed-rank tests are run from this many pairs on: the smallest n at which the
#: exact two-sided test can reach p < 0.05 (its smallest p is 2 / 2^n).
WILCOXON_MIN_PAIRS = 6


def bootstrap_ci(
    values: Sequence[float] | np.ndarray,
    *,
    n_resamples: int = 10_000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile-bootstrap confidence interval of the mean.

    Draws ``n_resamples`` resamples of size n with replacement (``rng.integers(0, n, (B, n))`` with
    ``rng = numpy.random.default_rng(seed)``), takes each resample's mean, and returns the
    ``(1 - confidence) / 2`` and ``(1 + confidence) / 2`` quantiles (numpy's default linear
    interpolation) of those means.

    Args:
      values: the sample (e.g. one metric over seeds); non-finite values are dropped.
      n_resamples: bootstrap resamples B.
      confidence: the interval's nominal coverage, in (0, 1).
      seed: seed of the resampling, so every table is reproducible.

    Returns:
      ``(low, high)``; ``(nan, nan)`` with fewer than two finite values.

    References:
      Efron & Tibshirani, An Introduction to the Bootstrap (1993), ch. 13 (percentile interval).
    """
    if not 0.0 < confidence < 1.0:
        raise ConfigError(f"confidence must be in (0, 1), got {confidence!r}")
    if int(n_resamples) < 1:
        raise ConfigError(f"n_resamples must be a positive integer, got {n_resamples!r}")
    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    n = x.size
    if n < 2:
        return (math.nan, math.nan)
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, n, size=(int(n_resamples), n))].mean(axis=1)
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(means, [alpha, 1.0 - alpha])
    return (float(low), float(high))


def paired_test(x: Sequence[float] | np.ndarray, reference: Sequence[float] | np.ndarray) -> dict[str, float]:
    """Paired tests of ``x`` against ``reference`` (equal-length, matched by seed).

    The paired t-test (``scipy.stats.ttest_rel``) runs from 2 pairs on when the differences are not
    all equal (to a relative 1e-12); the Wilcoxon signed-rank test (``scipy.stats.wilcoxon``) from
    :data:`WILCOXON_MIN_PAIRS` pairs on when some difference is non-zero. Both are two-sided.

    Returns:
      ``{"n": pairs, "mean_diff": mean(x - reference), "p_ttest": p, "p_wilcoxon": p}`` (NaN where a
      test does not apply).
    """
    a = np.asarray(x, dtype=float)
    b = np.asarray(reference, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"paired samples must have the same length, got {a.size} and {b.size}")
    keep = np.isfinite(a) & np.isfinite(b)
    a, b = a[keep], b[keep]
    d = a - b
    out = {"n": int(d.size), "mean_diff": float(d.mean()) if d.size else math.nan}
    out["p_ttest"] = math.nan
    out["p_wilcoxon"] = math.nan
    # differences equal up to rounding have no spread to test against (scipy would divide ~0 by ~0)
    if d.size >= 2 and np.ptp(d) > 1e-12 * np.max(np.abs(d)):
        out["p_ttest"] = float(stats.ttest_rel(a, b).pvalue)
    if d.size >= WILCOXON_MIN_PAIRS and np.any(d != 0):
        out["p_wilcoxon"] = float(stats.wilcoxon(a, b).pvalue)
    return out


def resolve_reference(study: Study, reference: str | None) -> str | None:
    """The arm that ``reference`` names in ``study``.

    ``"derived"`` means the arm called ``derived`` or, if there is none, the first arm whose schedule
    is ``derived-constant``. ``None`` or ``"none"`` means no reference.

    Raises:
      ConfigError: no such arm (naming the study's arms and the closest match).
    """
    if reference is None or reference == "none":
        return None
    arms = study.arms
    if reference in arms:
        return reference
    if reference == "derived":
        for arm in arms:
            if study.schedule_of(arm) == DERIVED_SCHEDULE:
                return arm
    err = unknown_choice(f"reference arm of study '{study.name}':", reference, arms)
    raise ConfigError(f"{err} (or 'none')")


def _sense(metric: str, study: Study) -> str:
    if metric == "objective":
        return study.objective["mode"]
    return METRIC_SENSE.get(metric, "min")


def _direction(diff: float, sense: str) -> str:
    if not math.isfinite(diff):
        return ""
    if diff == 0:
        return "same"
    return "better" if (diff > 0) == (sense == "max") else "worse"


def _tuning_cost(study: Study, arm: str) -> dict[str, Any]:
    t = study.trials
    rows = t[(t["arm"] == arm) & (t["phase"] == "search")] if len(t) else t
    key = rows["optuna_number"].astype("object").where(rows["optuna_number"].notna(), rows["trial_id"])
    wall = (
        float(np.nansum(pd.to_numeric(rows["wall_s"], errors="coerce").to_numpy(float))) if len(rows) else 0.0
    )
    res = study.resources
    return {
        "search_trials": int(key.nunique()) if len(rows) else 0,
        "search_runs": int(len(rows)),
        "search_wall_s": wall,
        "cpu_s": wall * res["cpu"],
        "gpu_s": wall * res["gpu"],
    }


def _lipschitz_seconds(final: pd.DataFrame) -> float:
    vals = [
        i.get("lipschitz_seconds") for i in parse_json_column(final.get("info_json", pd.Series(dtype=str)))
    ]
    vals = [float(v) for v in vals if isinstance(v, (int, float)) and math.isfinite(v)]
    return float(np.mean(vals)) if vals else math.nan


def _study_table(
    study: Study,
    reference: str | None,
    metrics: Sequence[str],
    thresholds: CollapseThresholds,
    rank_by: str,
    n_resamples: int,
    confidence: float,
    seed: int,
) -> pd.DataFrame:
    ref = resolve_reference(study, reference)
    t = classify_collapse(study.trials, thresholds) if len(study.trials) else study.trials
    final_all = t[t["phase"] == "final"] if len(t) else t
    wanted = list(dict.fromkeys([*metrics, rank_by]))
    for m in wanted:
        if len(t) and m not in t.columns:
            raise unknown_choice("metric", m, [c for c in t.columns if pd.api.types.is_numeric_dtype(t[c])])

    def completed(arm: str) -> pd.DataFrame:
        rows = final_all[(final_all["arm"] == arm) & (final_all["status"] == "completed")] if len(t) else t
        return rows.sort_values("seed")

    ref_rows = completed(ref) if ref is not None else None
    rows_out = []
    for arm in study.arms:
        final = final_all[final_all["arm"] == arm] if len(t) else t
        done = completed(arm)
        status = final["status"].value_counts().to_dict() if len(final) else {}
        row: dict[str, Any] = {
            "study": study.name,
            "dataset": study.task.get("dataset"),
            "model": study.task.get("model"),
            "arm": arm,
            "optimizer": study.arm_spec(arm).get("optimizer"),
            "schedule": study.schedule_of(arm),
            "is_reference": arm == ref,
            "n_final": int(len(final)),
            "n_completed": int(len(done)),
            "n_diverged": int(status.get("diverged", 0)),
            "n_errored": int(status.get("errored", 0)),
            "n_stopped": int(status.get("stopped", 0)),
            "n_running": int(status.get("running", 0)),
            "n_collapsed": int(done["collapsed"].sum()) if len(done) else 0,
        }
        row["collapsed"] = row["n_collapsed"] > 0
        for m in wanted:
            x = pd.to_numeric(done[m], errors="coerce").to_numpy(float) if len(done) else np.zeros(0)
            xf = x[np.isfinite(x)]
            row[f"{m}_n"] = int(xf.size)
            row[f"{m}_mean"] = float(xf.mean()) if xf.size else math.nan
            row[f"{m}_std"] = float(xf.std(ddof=1)) if xf.size >= 2 else math.nan
            row[f"{m}_ci_low"], row[f"{m}_ci_high"] = bootstrap_ci(
                xf, n_resamples=n_resamples, confidence=confidence, seed=seed
            )
            if ref_rows is None or arm == ref:
                d_stats = {"n": 0, "mean_diff": math.nan, "p_ttest": math.nan, "p_wilcoxon": math.nan}
                ci = (math.nan, math.nan)
            else:
                a = done.drop_duplicates("seed").set_index("seed")[m]
                b = ref_rows.drop_duplicates("seed").set_index("seed")[m]
                common = sorted(set(a.index) & set(b.index))
                xa = pd.to_numeric(a.loc[common], errors="coerce").to_numpy(float)
                xb = pd.to_numeric(b.loc[common], errors="coerce").to_numpy(float)
                d_stats = paired_test(xa, xb)
                keep = np.isfinite(xa) & np.isfinite(xb)
                ci = bootstrap_ci(
                    xa[keep] - xb[keep], n_resamples=n_resamples, confidence=confidence, seed=seed
                )
            row[f"{m}_diff"] = d_stats["mean_diff"]
            row[f"{m}_diff_ci_low"], row[f"{m}_diff_ci_high"] = ci
            row[f"{m}_n_pairs"] = d_stats["n"]
            row[f"{m}_p_ttest"] = d_stats["p_ttest"]
            row[f"{m}_p_wilcoxon"] = d_stats["p_wilcoxon"]
            row[f"{m}_direction"] = (
                "reference" if arm == ref else _direction(d_stats["mean_diff"], _sense(m, study))
            )
        row.update(_tuning_cost(study, arm))
        row["lipschitz_s"] = _lipschitz_seconds(done)
        rows_out.append(row)
    df = pd.DataFrame(rows_out)
    # Rank only arms whose final runs all completed (runs still going aside) without collapsing: a
    # dead network's tiny gradient norm is not a success, nor is a mean over the seeds that survived.
    failed = df["n_diverged"] + df["n_errored"] + df["n_stopped"]
    eligible = (
        (df["n_collapsed"] == 0)
        & (failed == 0)
        & (df["n_completed"] > 0)
        & np.isfinite(df[f"{rank_by}_mean"])
    )
    values = df[f"{rank_by}_mean"].where(eligible)
    asc = _sense(rank_by, study) == "min"
    df["rank"] = values.rank(method="min", ascending=asc).astype("Int64")
    df["rank_by"] = rank_by
    return df


def compare(
    study: Study | Sequence[Study],
    reference: str | None = "derived",
    metrics: Sequence[str] = DEFAULT_METRICS,
    *,
    thresholds: CollapseThresholds | None = None,
    rank_by: str = "min_grad_norm",
    n_resamples: int = 10_000,
    confidence: float = 0.95,
    seed: int = 0,
) -> pd.DataFrame:
    """The comparison table of one study, or of several studies stacked into one table.

    Per arm, over its completed final-seed runs (``phase == "final"``, ``status == "completed"``):

    - ``<m>_mean``, ``<m>_std`` (ddof = 1), ``<m>_ci_low`` / ``<m>_ci_high`` (:func:`bootstrap_ci`);
    - the paired difference ``<m>_diff = mean_s (x_s - x_s^ref)`` over the seeds s both arms completed,
      its bootstrap interval ``<m>_diff_ci_low`` / ``_high``, ``<m>_p_ttest`` / ``<m>_p_wilcoxon``
      (:func:`paired_test`) and ``<m>_direction`` (``better`` / ``worse`` / ``same`` than the reference
      by the metric's sense, :data:`METRIC_SENSE`);
    - counts of final runs by status (``n_final``, ``n_completed``, ``n_diverged``, ...), collapsed runs
      ``n_collapsed`` (:func:`~lyaptune.analysis.collapse.classify_collapse`) and ``collapsed`` (any);
    - the tuning cost: ``search_trials`` (Optuna trials), ``search_runs`` (training runs, one per trial
      and search seed), ``search_wall_s`` (their summed wall time), ``cpu_s`` / ``gpu_s`` (wall time x
      the spec's per-trial resources), and ``lipschitz_s`` (mean K_hat estimation time of a final run);
    - ``rank`` (1 = best) by ``<rank_by>_mean`` among arms with at least one completed final run
      and no collapsed, diverged, errored or stopped one; other arms get no rank.

    Args:
      study: a :class:`Study`, or several (e.g. the same study on several datasets).
      reference: the arm the differences are taken against (see :func:`resolve_reference`); ``None``
        for no differences.
      metrics: ``trials.parquet`` columns to summarise.
      thresholds: collapse thresholds (default :class:`CollapseThresholds`).
      rank_by: the metric arms are ranked by (default the minimum gradient norm, papers/003's claim).
      n_resamples, confidence, seed: bootstrap settings (every interval uses the same seed).

    Returns:
      One row per (study, arm), in the spec's arm order.

    Raises:
      ConfigError: an unknown reference arm or metric.
    """
    studies = [study] if isinstance(study, Study) else list(study)
    if not studies:
        raise ConfigError("compare needs at least one study, got none")
    th = thresholds or CollapseThresholds()
    tables = [
        _study_table(s, reference, metrics, th, rank_by, n_resamples, confidence, seed) for s in studies
    ]
    out = pd.concat(tables, ignore_index=True)
    out.attrs["thresholds"] = th.to_dict()
    out.attrs["metrics"] = list(metrics)
    out.attrs["confidence"] = confidence
    out.attrs["n_resamples"] = n_resamples
    out.attrs["seed"] = seed
    return out


def compare_json(table: pd.DataFrame) -> str:
    """The comparison table and its settings as JSON text (NaN as null)."""
    records = json.loads(table.to_json(orient="records"))
    return json.dumps({"settings": table.attrs, "arms": records}, indent=2)
