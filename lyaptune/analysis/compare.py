"""The comparison table: every arm's final-seed runs against a reference arm, with uncertainty.

The protocol is METHODS.md section 8. For each arm, on its ``phase == "final"`` runs that completed,
:func:`compare` reports the mean, the sample standard deviation and a Student-t interval (BCa as an
option from n = 10) of each metric, the paired difference to the reference arm (runs matched by
seed) with its t interval, the paired t-test (the decision test; Wilcoxon shown from 6 pairs),
Holm-adjusted p-values across the arms compared with the reference per metric, and a verdict
(better / worse / no significant difference) from the adjusted p. Arms are ranked by the spec's
primary metric at the final epoch (``compare:``; never a minimum over epochs), collapsed arms
(:mod:`.collapse`) never. The tuning cost is counted in device-seconds per run (a population member
charged wall / P), the derived arm's K_hat estimate included.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from lyaptune._registry import unknown_choice
from lyaptune.analysis.collapse import (
    CollapseThresholds,
    LabelStats,
    classify_collapse,
    num_classes_of,
    task_label_stats,
)
from lyaptune.analysis.load import DERIVED_SCHEDULE, Study, parse_json_column
from lyaptune.analysis.stats import (
    BCA_MIN_N,
    INTERVAL_METHODS,
    holm_adjust,
    mean_interval,
    paired_interval,
    paired_test,
    verdict,
)
from lyaptune.errors import ConfigError
from lyaptune.metrics import METRICS

__all__ = [
    "DEFAULT_METRICS",
    "METRIC_LABELS",
    "METRIC_SENSE",
    "ALPHA",
    "compare",
    "compare_json",
    "paired_test",
    "reference_choice",
    "resolve_reference",
]

#: Significance level of every verdict (on Holm-adjusted p-values).
ALPHA = 0.05

#: The metrics :func:`compare` reports by default (columns of ``trials.parquet``).
DEFAULT_METRICS: tuple[str, ...] = (
    "final_test_acc",
    "final_train_loss",
    "final_grad_norm",
    "min_grad_norm",
    "wall_s",
)
#: Whether higher (``max``) or lower (``min``) is better, per metric (:data:`lyaptune.metrics.METRICS`);
#: ``objective`` follows the spec.
METRIC_SENSE: dict[str, str] = {m: i.mode for m, i in METRICS.items() if i.mode is not None}
#: Short labels for tables and figures (:data:`lyaptune.metrics.METRICS`).
METRIC_LABELS: dict[str, str] = {**{m: i.label for m, i in METRICS.items()}, "objective": "objective"}
#: How :func:`reference_choice` found the reference: named by the caller, by the spec, the derived arm
#: by default, the best arm on the primary metric (no reference named), or no comparison at all.
REFERENCE_SOURCES: tuple[str, ...] = ("given", "spec", "derived", "best", "none")


def reference_choice(study: Study, reference: str | None = "auto") -> tuple[str | None, str]:
    """The reference arm of ``study`` and how it was chosen (METHODS.md section 8).

    - ``"auto"``: the spec's ``reference:``; without one, the arm called ``derived``, else the arm
      whose schedule is ``derived-constant`` if exactly one has it, else the best arm.
    - an arm name: that arm (``"derived"`` also finds a lone ``derived-constant`` arm).
    - ``"none"`` or ``"best"`` (also the spec's ``reference: none``): no fixed reference; every arm is
      compared with the best arm on the primary metric, chosen by :func:`compare`.
    - ``None``: no differences at all.

    Returns:
      ``(arm, source)``: ``arm`` is ``None`` for ``best`` and ``none``; ``source`` is one of
      :data:`REFERENCE_SOURCES`.

    Raises:
      ConfigError: a named arm the study does not have (naming its arms and the closest match).
    """
    if reference is None:
        return None, "none"
    source = "given"
    if reference == "auto":
        spec_ref = study.reference_setting
        if spec_ref is None:
            arms = study.arms
            if "derived" in arms:
                return "derived", "derived"
            derived = [a for a in arms if study.schedule_of(a) == DERIVED_SCHEDULE]
            return (derived[0], "derived") if len(derived) == 1 else (None, "best")
        reference, source = spec_ref, "spec"
    if reference in ("none", "best"):
        return None, "best"
    arms = study.arms
    if reference in arms:
        return reference, source
    if reference == "derived":
        derived = [a for a in arms if study.schedule_of(a) == DERIVED_SCHEDULE]
        if len(derived) == 1:
            return derived[0], source
    where = "--reference" if source == "given" else "spec reference"
    err = unknown_choice(f"reference arm of study '{study.name}' ({where}):", reference, arms)
    raise ConfigError(f"{err} (or 'none': compare with the best arm)")


def resolve_reference(study: Study, reference: str | None = "auto") -> str | None:
    """The reference arm's name (see :func:`reference_choice`); ``None`` when there is no fixed one."""
    return reference_choice(study, reference)[0]


def _sense(metric: str, study: Study) -> str:
    if metric == "objective":
        return study.objective["mode"]
    for p in study.primary_metrics:
        if p["metric"] == metric:
            return p["mode"]
    return METRIC_SENSE.get(metric, "min")


def _num_col(rows: pd.DataFrame, name: str) -> np.ndarray:
    if name not in rows or not len(rows):
        return np.full(len(rows), np.nan)
    return pd.to_numeric(rows[name], errors="coerce").to_numpy(float)


def run_device_seconds(rows: pd.DataFrame) -> np.ndarray:
    """Seconds of device time charged to each run: ``population_wall_s / population_size`` for a member
    of a vmapped population (the population's wall time shared by its P members), else ``wall_s``."""
    wall = _num_col(rows, "wall_s")
    pop_wall = _num_col(rows, "population_wall_s")
    pop_size = _num_col(rows, "population_size")
    pop = np.isfinite(pop_wall) & np.isfinite(pop_size) & (pop_size >= 1)
    out = wall.copy()
    out[pop] = pop_wall[pop] / pop_size[pop]
    return out


def _lipschitz_each(rows: pd.DataFrame) -> np.ndarray:
    infos = parse_json_column(rows["info_json"]) if "info_json" in rows and len(rows) else []
    vals = [i.get("lipschitz_seconds") for i in infos]
    return np.array([float(v) if isinstance(v, (int, float)) else np.nan for v in vals], dtype=float)


def _tuning_cost(study: Study, arm: str) -> dict[str, Any]:
    t = study.trials
    arm_rows = t[t["arm"] == arm] if len(t) else t
    rows = arm_rows[arm_rows["phase"] == "search"] if len(arm_rows) else arm_rows
    key = rows["optuna_number"].astype("object").where(rows["optuna_number"].notna(), rows["trial_id"])
    device = run_device_seconds(rows)
    search_s = float(np.nansum(device)) if len(rows) else 0.0
    khat = _lipschitz_each(arm_rows)
    khat_s = float(np.nansum(khat)) if khat.size else 0.0
    pop_wall = math.nan
    if len(rows) and "population_wall_s" in rows and rows["population_wall_s"].notna().any():
        # members of one population share its wall time: count each population once
        pops = rows[["population_wall_s", "population_size"]].dropna().drop_duplicates()
        pop_wall = float(pd.to_numeric(pops["population_wall_s"], errors="coerce").sum())
    res = study.resources
    tuning = search_s + khat_s
    return {
        "search_trials": int(key.nunique()) if len(rows) else 0,
        "search_runs": int(len(rows)),
        "search_wall_s": float(np.nansum(_num_col(rows, "wall_s"))) if len(rows) else 0.0,
        "search_device_s": search_s,
        "khat_s": khat_s,
        "tuning_device_s": tuning,
        "population_wall_s": pop_wall,
        "cpu_s": tuning * res["cpu"],
        "gpu_s": tuning * res["gpu"],
    }


def _lipschitz_seconds(final: pd.DataFrame) -> float:
    vals = _lipschitz_each(final)
    vals = vals[np.isfinite(vals)]
    return float(np.mean(vals)) if vals.size else math.nan


def _seed_values(rows: pd.DataFrame, metric: str) -> pd.Series:
    one = rows.drop_duplicates("seed").set_index("seed")[metric]
    return pd.to_numeric(one, errors="coerce")


def _study_table(
    study: Study,
    reference: str | None,
    metrics: Sequence[str],
    thresholds: CollapseThresholds,
    rank_by: str | None,
    level: float,
    method: str,
    seed: int,
    labels: LabelStats | None,
) -> pd.DataFrame:
    ref, ref_source = reference_choice(study, reference)
    primary = study.primary_metrics
    rank_by = rank_by or primary[0]["metric"]
    if labels is None and len(study.trials):
        c = _study_num_classes(study)
        labels = task_label_stats(study.task, c)
    t = classify_collapse(study.trials, thresholds, labels=labels) if len(study.trials) else study.trials
    final_all = t[t["phase"] == "final"] if len(t) else t
    wanted = list(dict.fromkeys([*(p["metric"] for p in primary), *metrics, rank_by]))
    for m in wanted:
        if len(t) and m not in t.columns:
            numeric = [c for c in t.columns if pd.api.types.is_numeric_dtype(t[c])]
            raise unknown_choice("metric", m, numeric)

    def completed(arm: str) -> pd.DataFrame:
        rows = final_all[(final_all["arm"] == arm) & (final_all["status"] == "completed")] if len(t) else t
        return rows.sort_values("seed") if len(rows) else rows

    rows_out = []
    done_by_arm = {}
    for arm in study.arms:
        final = final_all[final_all["arm"] == arm] if len(t) else t
        done = completed(arm)
        done_by_arm[arm] = done
        status = final["status"].value_counts().to_dict() if len(final) else {}
        row: dict[str, Any] = {
            "study": study.name,
            "dataset": study.task.get("dataset"),
            "model": study.task.get("model"),
            "arm": arm,
            "optimizer": study.arm_spec(arm).get("optimizer"),
            "schedule": study.schedule_of(arm),
            "sampler": study.sampler_of(arm),
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
            x = _num_col(done, m)
            xf = x[np.isfinite(x)]
            row[f"{m}_n"] = int(xf.size)
            row[f"{m}_mean"] = float(xf.mean()) if xf.size else math.nan
            row[f"{m}_std"] = float(xf.std(ddof=1)) if xf.size >= 2 else math.nan
            m_method = method if (method != "bca" or xf.size >= BCA_MIN_N) else "t"
            row[f"{m}_ci_low"], row[f"{m}_ci_high"] = mean_interval(xf, level, m_method, seed=seed)
            row[f"{m}_ci_method"] = m_method
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
    df["eligible"] = eligible
    if ref is None and ref_source == "best":
        best = df.loc[df["rank"] == 1, "arm"]
        ref = str(best.iloc[0]) if len(best) else None
    df["is_reference"] = df["arm"] == ref if ref is not None else False
    df["reference"] = ref
    df["reference_source"] = ref_source
    ref_rows = done_by_arm.get(ref) if ref is not None else None
    for m in wanted:
        sense = _sense(m, study)
        cols: dict[str, list[Any]] = {
            k: []
            for k in (
                *("diff", "diff_ci_low", "diff_ci_high", "n_pairs"),
                *("p_ttest", "p_wilcoxon", "p", "test", "ci_method"),
            )
        }
        for arm in df["arm"]:
            done = done_by_arm[arm]
            if ref_rows is None or arm == ref or not len(done) or not len(ref_rows):
                d = {"n": 0, "mean_diff": math.nan, "p_ttest": math.nan, "p_wilcoxon": math.nan}
                d.update({"p": math.nan, "test": ""})
                ci, ci_m = (math.nan, math.nan), ""
            else:
                a, b = _seed_values(done, m), _seed_values(ref_rows, m)
                common = sorted(set(a.index) & set(b.index))
                xa, xb = a.loc[common].to_numpy(float), b.loc[common].to_numpy(float)
                d = paired_test(xa, xb)
                ci_m = method if (method != "bca" or d["n"] >= BCA_MIN_N) else "t"
                ci = paired_interval(xa, xb, level, ci_m, seed=seed)
            cols["diff"].append(d["mean_diff"])
            cols["diff_ci_low"].append(ci[0])
            cols["diff_ci_high"].append(ci[1])
            cols["n_pairs"].append(d["n"])
            cols["p_ttest"].append(d["p_ttest"])
            cols["p_wilcoxon"].append(d["p_wilcoxon"])
            cols["p"].append(d["p"])
            cols["test"].append(d["test"])
            cols["ci_method"].append(ci_m)
        for k, v in cols.items():
            df[f"{m}_{k}" if k != "ci_method" else f"{m}_diff_ci_method"] = v
        # Holm across the arms compared with this reference, for this metric
        df[f"{m}_p_adj"] = holm_adjust(df[f"{m}_p"].to_numpy(float))
        df[f"{m}_verdict"] = [
            "reference"
            if r["is_reference"]
            else verdict(r[f"{m}_diff"], r[f"{m}_p_adj"], sense, r[f"{m}_n_pairs"], ALPHA)
            if ref is not None
            else ""
            for _, r in df.iterrows()
        ]
        df[f"{m}_mode"] = sense
    return df


def _study_num_classes(study: Study) -> int | None:
    t = study.trials
    infos = parse_json_column(t["info_json"].head(20)) if "info_json" in t else []
    for i in infos:
        c = num_classes_of(i, {"dataset": study.task.get("dataset"), **study.task})
        if c:
            return c
    return num_classes_of({}, {"dataset": study.task.get("dataset"), **study.task})


def compare(
    study: Study | Sequence[Study],
    reference: str | None = "auto",
    metrics: Sequence[str] = DEFAULT_METRICS,
    *,
    thresholds: CollapseThresholds | None = None,
    rank_by: str | None = None,
    level: float = 0.95,
    method: str = "t",
    seed: int = 0,
    labels: LabelStats | None = None,
) -> pd.DataFrame:
    """The comparison table of one study, or of several studies stacked into one table.

    Per arm, over its completed final-seed runs (``phase == "final"``, ``status == "completed"``),
    for each metric m (the spec's primary metrics first, then ``metrics``):

    - ``<m>_n``, ``<m>_mean``, ``<m>_std`` (ddof = 1) and the interval ``<m>_ci_low`` / ``_high`` of
      the mean (:func:`~lyaptune.analysis.stats.mean_interval`; ``<m>_ci_method`` says which: ``t``, or
      ``bca`` where asked for and n >= 10);
    - against the reference, over the seeds both arms completed: ``<m>_diff = mean_s (x_s - x_s^ref)``,
      its interval ``<m>_diff_ci_low`` / ``_high`` (:func:`~lyaptune.analysis.stats.paired_interval`),
      ``<m>_n_pairs``, the raw p of the paired t-test ``<m>_p_ttest`` and of the Wilcoxon signed-rank
      test ``<m>_p_wilcoxon`` (from 6 pairs), the deciding test ``<m>_test`` (``t`` below 6 pairs,
      ``wilcoxon`` from 6, METHODS section 8) with its raw p ``<m>_p`` and its Holm-adjusted p
      ``<m>_p_adj`` (across the arms compared with the reference, for this metric) and
      ``<m>_verdict``: ``better`` / ``worse`` when the adjusted p < :data:`ALPHA` (direction by the
      metric's mode ``<m>_mode``), else ``no significant difference``; ``reference`` for the reference arm;
    - counts of final runs by status (``n_final``, ``n_completed``, ``n_diverged``, ...), collapsed runs
      ``n_collapsed`` (:func:`~lyaptune.analysis.collapse.classify_collapse`) and ``collapsed`` (any);
    - the tuning cost in device-seconds: ``search_trials``, ``search_runs``, ``search_wall_s``,
      ``search_device_s`` (each search run charged its own seconds, a population member wall / P),
      ``khat_s`` (K_hat estimation seconds summed over the arm's runs: the derived step's tuning),
      ``tuning_device_s`` (their sum), ``population_wall_s`` (population wall time, when recorded),
      ``cpu_s`` / ``gpu_s`` (tuning device-seconds x the spec's per-trial resources) and
      ``lipschitz_s`` (mean K_hat time of a final run);
    - ``rank`` (1 = best) by ``<rank_by>_mean`` among arms with at least one completed final run
      and no collapsed, diverged, errored or stopped one; other arms get no rank.

    Args:
      study: a :class:`Study`, or several (e.g. the same study on several datasets).
      reference: see :func:`reference_choice` (default ``"auto"``: the spec's, else the derived arm,
        else the best arm); ``None`` for no differences.
      metrics: ``trials.parquet`` columns to summarise besides the primary metrics.
      thresholds: collapse thresholds (default :class:`CollapseThresholds`).
      rank_by: the ranking metric (default the spec's first primary metric, at the final epoch).
      level: confidence level of every interval.
      method: ``t`` (default) or ``bca`` (used where n >= 10, ``t`` below, each cell saying which).
      seed: seed of the BCa resampling.
      labels: the task's label statistics for the collapse rule (default: read from the dataset,
        :func:`~lyaptune.analysis.collapse.task_label_stats`).

    Returns:
      One row per (study, arm), in the spec's arm order.

    Raises:
      ConfigError: an unknown reference arm, metric or interval method.

    References:
      METHODS.md section 8; Holm (1979); Student (1908).
    """
    studies = [study] if isinstance(study, Study) else list(study)
    if not studies:
        raise ConfigError("compare needs at least one study, got none")
    if method not in INTERVAL_METHODS:
        raise ConfigError(f"interval method={method!r} is unknown; choices: {', '.join(INTERVAL_METHODS)}")
    th = thresholds or CollapseThresholds()
    tables = [_study_table(s, reference, metrics, th, rank_by, level, method, seed, labels) for s in studies]
    out = pd.concat(tables, ignore_index=True)
    out.attrs["thresholds"] = th.to_dict()
    out.attrs["metrics"] = list(
        dict.fromkeys([*(p["metric"] for s in studies for p in s.primary_metrics), *metrics])
    )
    out.attrs["primary"] = [p for s in studies[:1] for p in s.primary_metrics]
    out.attrs["level"] = level
    out.attrs["method"] = method
    out.attrs["alpha"] = ALPHA
    out.attrs["seed"] = seed
    return out


def compare_json(table: pd.DataFrame) -> str:
    """The comparison table and its settings as JSON text (NaN as null)."""
    records = json.loads(table.to_json(orient="records"))
    return json.dumps({"settings": table.attrs, "arms": records}, indent=2)
