"""The comparison table: every arm's final-seed runs against a reference arm, with uncertainty.

The protocol is METHODS.md section 8. For each arm, on its ``phase == "final"`` runs that completed,
:func:`compare` reports the mean, the sample standard deviation and a Student-t interval (BCa as an
option from n = 20) of each metric, and for a log-scale metric (losses, gradient norms, seconds:
:data:`lyaptune.metrics.METRICS` ``scale == "log"``) the geometric mean with its interval. Against the
reference arm (runs matched by seed) it reports the paired difference on the tested scale (of logs for
a log-scale metric, shown as the geometric-mean ratio A / reference with its t interval; accuracies as
differences) and the deciding test, the paired t-test at every n; the Wilcoxon signed-rank and exact
sign-flip p-values are robustness columns, with a flag where they disagree with t. Only arms whose
final runs all completed and none collapsed are t-tested, against a reference of which the same
holds, and only they form the Holm family (per metric); collapse and failure decide the others without
a test (:func:`status_verdict`). A tested arm is better / worse exactly when its Holm-adjusted p <
:data:`ALPHA`, the direction from the sign of the tested mean difference, so the verdict agrees with
the interval; else no significant difference. Arms are ranked by the spec's primary metric at the final
epoch (``compare:``; never a minimum over epochs), collapsed or failed arms never. With no reference
named and no derived arm, the reference is the best arm on the *search* runs' validation objective
(:func:`best_on_search`). The tuning cost is counted in device-seconds: the search runs' training
seconds (a population member charged its 1 / P share; evaluation kept apart) plus every K_hat
estimate of the arm's runs (the derived step's tuning).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
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
from lyaptune.analysis.search_trials import search_trial_values
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
from lyaptune.metrics import METRICS, metric_info

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
    "best_on_search",
    "status_verdict",
    "study_labels",
    "paired_comparisons",
    "run_train_seconds",
    "COMPARISON_COLUMNS",
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
#: by default, the best arm on the search runs' validation objective (no reference named), or no
#: comparison at all.
REFERENCE_SOURCES: tuple[str, ...] = ("given", "spec", "derived", "best", "none")


def best_on_search(study: Study) -> str | None:
    """The arm whose best completed search trial has the best validation objective (METHODS section 8).

    Each arm's search trials (:func:`~lyaptune.analysis.budget.search_trial_values`: a trial's value is
    its runs' mean ``objective`` over the search seeds) are reduced to their best value by the spec's
    objective mode, and the arm with the best of those is returned (the first in spec order on a tie).
    The final seeds are never looked at: choosing the reference on the runs it is then tested on would
    be post-selection.

    Returns:
      The arm's name, or ``None`` when no arm has a completed search trial (untuned arms have none).
    """
    mode = study.objective["mode"]
    best_arm, best_val = None, math.nan
    for arm in study.arms:
        tv = search_trial_values(study, arm)
        vals = tv.loc[tv["state"] == "completed", "value"].to_numpy(float) if len(tv) else np.zeros(0)
        vals = vals[np.isfinite(vals)]
        if not vals.size:
            continue
        v = float(vals.min() if mode == "min" else vals.max())
        if best_arm is None or (v < best_val if mode == "min" else v > best_val):
            best_arm, best_val = arm, v
    return best_arm


def reference_choice(study: Study, reference: str | None = "auto") -> tuple[str | None, str]:
    """The reference arm of ``study`` and how it was chosen (METHODS.md section 8).

    - ``"auto"``: the spec's ``reference:``; without one, the arm called ``derived``, else the arm
      whose schedule is ``derived-constant`` if exactly one has it, else the best arm.
    - an arm name: that arm (``"derived"`` also finds a lone ``derived-constant`` arm).
    - ``"none"`` or ``"best"`` (also the spec's ``reference: none``): no fixed reference; every arm is
      compared with the best arm on the *search* runs' validation objective (:func:`best_on_search`),
      never on the final seeds that are then tested.
    - ``None``: no differences at all.

    Returns:
      ``(arm, source)``: ``arm`` is the best arm for source ``best`` (``None`` when no arm has a
      completed search trial) and ``None`` for ``none``; ``source`` is one of :data:`REFERENCE_SOURCES`.

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
            return (derived[0], "derived") if len(derived) == 1 else (best_on_search(study), "best")
        reference, source = spec_ref, "spec"
    if reference in ("none", "best"):
        return best_on_search(study), "best"
    arms = study.arms
    if reference in arms:
        return reference, source
    if reference == "derived":
        derived = [a for a in arms if study.schedule_of(a) == DERIVED_SCHEDULE]
        if len(derived) == 1:
            return derived[0], source
    where = "--reference" if source == "given" else "spec reference"
    err = unknown_choice(f"reference arm of study '{study.name}' ({where}):", reference, arms)
    raise ConfigError(f"{err} (or 'none': compare with the best arm on the search objective)")


def resolve_reference(study: Study, reference: str | None = "auto") -> str | None:
    """The reference arm's name (see :func:`reference_choice`); ``None`` when there is no fixed one."""
    return reference_choice(study, reference)[0]


def _scale(metric: str, study: Study) -> str:
    """``log`` or ``linear``: the metric's scale by its name (:data:`lyaptune.metrics.METRICS`);
    ``objective`` takes the scale of the spec's objective metric at the final epoch."""
    if metric == "objective":
        return metric_info(f"final_{study.objective['metric']}").scale
    return metric_info(metric).scale


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


def _info_seconds(rows: pd.DataFrame, *keys: str) -> dict[str, np.ndarray]:
    """``info_json[key]`` of each run as seconds, for each of ``keys`` (NaN where the run did not
    record it); the JSON of each run is parsed once for all keys."""
    if "info_json" not in rows or not len(rows):
        return {k: np.full(len(rows), np.nan) for k in keys}
    infos = parse_json_column(rows["info_json"])

    def seconds(key: str) -> np.ndarray:
        vals = (i.get(key) for i in infos)
        return np.array([float(v) if isinstance(v, (int, float)) else np.nan for v in vals], dtype=float)

    return {k: seconds(k) for k in keys}


def _lipschitz_each(rows: pd.DataFrame) -> np.ndarray:
    return _info_seconds(rows, "lipschitz_seconds")["lipschitz_seconds"]


def _train_seconds(rows: pd.DataFrame, train: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    clocked = np.isfinite(train)
    out = np.where(clocked, train, run_device_seconds(rows)) if len(rows) else train
    return out, clocked


def run_train_seconds(rows: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Training device-seconds charged to each run, and which runs had a training clock.

    A run's training clock is ``info["train_s"]`` (:func:`lyaptune.loop.run_epochs`: the optimizer's
    epochs only, its evaluation ``info["eval_s"]`` and the K_hat estimate ``lipschitz_seconds`` kept
    apart; a member of a vmapped population of P runs already charged its share, 1 / P). A run
    recorded before the clocks were separate falls back to :func:`run_device_seconds` (its wall time,
    evaluation, data loading and any K_hat estimate included).

    Returns:
      ``(seconds, clocked)``: one value per row; ``clocked[i]`` is whether row i had ``train_s``.
    """
    return _train_seconds(rows, _info_seconds(rows, "train_s")["train_s"])


def _tuning_cost(study: Study, arm: str) -> dict[str, Any]:
    """The arm's tuning cost (METHODS.md section 8 "Cost"): its search runs' training device-seconds
    (:func:`run_train_seconds`) plus the device-seconds of every K_hat estimate of the arm's runs; the
    search runs' evaluation seconds are recorded beside it (``search_eval_s``), never counted."""
    t = study.trials
    arm_rows = t[t["arm"] == arm] if len(t) else t
    searching = (arm_rows["phase"] == "search").to_numpy(bool) if len(arm_rows) else np.zeros(0, bool)
    rows = arm_rows[searching]
    key = rows["optuna_number"].astype("object").where(rows["optuna_number"].notna(), rows["trial_id"])
    seconds = _info_seconds(arm_rows, "train_s", "eval_s", "lipschitz_seconds")  # one parse per run
    train, clocked = _train_seconds(rows, seconds["train_s"][searching])
    search_s = float(np.nansum(train)) if len(rows) else 0.0
    khat = seconds["lipschitz_seconds"]
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
        "search_runs_unclocked": int((~clocked).sum()) if len(rows) else 0,
        "search_eval_s": float(np.nansum(seconds["eval_s"][searching])) if len(rows) else 0.0,
        "khat_s": khat_s,
        "khat_runs": int(np.isfinite(khat).sum()) if khat.size else 0,
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
    label: str | None = None,
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
            "study": label or study.name,
            "spec_name": study.name,
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
        row["n_failed"] = row["n_diverged"] + row["n_errored"] + row["n_stopped"]
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
            row[f"{m}_scale"] = _scale(m, study)
            gm = gl = gh = math.nan
            if row[f"{m}_scale"] == "log" and xf.size and np.all(xf > 0):
                lx = np.log(xf)
                gm = float(np.exp(lx.mean()))
                gl, gh = (float(np.exp(v)) for v in mean_interval(lx, level, m_method, seed=seed))
            row[f"{m}_gmean"], row[f"{m}_gmean_ci_low"], row[f"{m}_gmean_ci_high"] = gm, gl, gh
        row.update(_tuning_cost(study, arm))
        row["lipschitz_s"] = _lipschitz_seconds(done)
        rows_out.append(row)
    df = pd.DataFrame(rows_out)
    # Rank and test only arms whose final runs all completed (runs still going aside) without
    # collapsing: a dead network's tiny gradient norm is not a success, nor is a mean over the seeds
    # that survived (METHODS section 8 "Who is tested").
    center = df[f"{rank_by}_gmean"] if _scale(rank_by, study) == "log" else df[f"{rank_by}_mean"]
    valid = (df["n_collapsed"] == 0) & (df["n_failed"] == 0) & (df["n_completed"] > 0)
    eligible = valid & np.isfinite(center.astype(float))
    values = center.where(eligible)
    asc = _sense(rank_by, study) == "min"
    df["rank"] = values.rank(method="min", ascending=asc).astype("Int64")
    df["rank_by"] = rank_by
    df["eligible"] = eligible
    df["valid"] = valid
    df["is_reference"] = df["arm"] == ref if ref is not None else False
    df["reference"] = ref
    df["reference_source"] = ref_source
    ref_row = df.loc[df["arm"] == ref].iloc[0] if ref is not None and (df["arm"] == ref).any() else None
    decided = {
        arm: (status_verdict(r, ref_row) if ref_row is not None and arm != ref else None)
        for arm, (_, r) in zip(df["arm"], df.iterrows())
    }
    for m in wanted:
        sense = _sense(m, study)
        values = {
            arm: _seed_values(done_by_arm[arm], m) if len(done_by_arm[arm]) else None for arm in df["arm"]
        }
        cmp = paired_comparisons(
            values,
            ref,
            scale=_scale(m, study),
            mode=sense,
            decided=decided,
            level=level,
            method=method,
            seed=seed,
        )
        for k in cmp.columns:
            df[f"{m}_{k}" if k != "ci_method" else f"{m}_diff_ci_method"] = cmp[k].to_numpy()
        df[f"{m}_mode"] = sense
    return df


#: Columns of :func:`paired_comparisons`, one row per arm.
COMPARISON_COLUMNS: tuple[str, ...] = (
    *("diff", "diff_ci_low", "diff_ci_high", "n_pairs", "ratio", "ratio_ci_low", "ratio_ci_high"),
    *("p_ttest", "p_wilcoxon", "p_signflip", "disagree", "p", "test", "tested", "ci_method"),
    *("p_adj", "verdict"),
)


def paired_comparisons(
    values: Mapping[str, pd.Series | None],
    reference: str | None,
    *,
    scale: str,
    mode: str,
    decided: Mapping[str, str | None] | None = None,
    level: float = 0.95,
    method: str = "t",
    seed: int = 0,
    alpha: float = ALPHA,
) -> pd.DataFrame:
    r"""Every arm against ``reference`` on one metric: the paired t-test, Holm, the verdict (METHODS 8).

    Runs are paired by seed (the index of each series). For a ``log``-scale metric both values are
    logged first (a pair with a non-positive value drops out); the tested quantity is then the mean log
    difference :math:`\bar d = \tfrac1n \sum_s (\ln x_s - \ln x^{ref}_s)`, shown as the geometric-mean
    ratio :math:`e^{\bar d}` with its interval :math:`e^{\bar d \pm t\, s_d / \sqrt n}`; for a
    ``linear`` one it is the mean difference. The deciding test is the paired t-test at every n
    (:func:`~lyaptune.analysis.stats.paired_test`); the Wilcoxon signed-rank and exact sign-flip p
    are robustness columns, ``disagree`` flagging one on the other side of ``alpha`` from t. Only the
    arms with ``decided[arm] is None`` (valid arm, valid reference: :func:`status_verdict`) and at least
    2 pairs are tested and form the Holm family; the others take ``decided[arm]`` as their verdict
    (their effect and interval are still shown, without a p). The verdict of a tested arm is
    ``better`` / ``worse`` exactly when its Holm-adjusted p < ``alpha``, the direction from the sign
    of the tested mean difference and ``mode``; else ``no significant difference``.

    Args:
      values: ``{arm: metric value per seed}`` (``None`` for an arm without completed runs).
      reference: the reference arm (a key of ``values``), or ``None`` (no comparison).
      scale: ``log`` or ``linear``.
      mode: ``min`` or ``max`` (which way is better).
      decided: verdicts fixed by collapse and failure (default: every arm tested).
      level, method, seed: the interval (``t``; ``bca`` only from n = 20 pairs, else ``t``).
      alpha: the level of the verdicts.

    Returns:
      One row per arm (in ``values``' order), columns :data:`COMPARISON_COLUMNS`; the reference's
      verdict is ``reference``; with no reference every verdict is empty.
    """
    decided = dict(decided or {})
    log = scale == "log"
    rows = []
    ref_vals = values.get(reference) if reference is not None else None
    for arm, vals in values.items():
        rec: dict[str, Any] = dict.fromkeys(COMPARISON_COLUMNS, math.nan)
        rec.update({"n_pairs": 0, "disagree": False, "test": "", "tested": False, "ci_method": ""})
        if arm != reference and vals is not None and ref_vals is not None and len(vals) and len(ref_vals):
            common = sorted(set(vals.index) & set(ref_vals.index))
            xa = pd.to_numeric(vals.loc[common], errors="coerce").to_numpy(float)
            xb = pd.to_numeric(ref_vals.loc[common], errors="coerce").to_numpy(float)
            if log:  # the log of a non-positive value is no value: that pair drops out
                xa = np.where(xa > 0, np.log(np.where(xa > 0, xa, 1.0)), np.nan)
                xb = np.where(xb > 0, np.log(np.where(xb > 0, xb, 1.0)), np.nan)
            d = paired_test(xa, xb, alpha)
            ci_m = method if (method != "bca" or d["n"] >= BCA_MIN_N) else "t"
            lo, hi = paired_interval(xa, xb, level, ci_m, seed=seed)
            rec.update(diff=d["mean_diff"], diff_ci_low=lo, diff_ci_high=hi, n_pairs=d["n"], ci_method=ci_m)
            if log and d["n"]:
                rec.update(
                    ratio=math.exp(d["mean_diff"]), ratio_ci_low=math.exp(lo), ratio_ci_high=math.exp(hi)
                )
            if decided.get(arm) is None and d["n"] >= 2:  # a valid arm against a valid reference
                for k in ("p_ttest", "p_wilcoxon", "p_signflip", "disagree", "p", "test"):
                    rec[k] = d[k]
                rec["tested"] = True
        rows.append(rec)
    out = pd.DataFrame(rows, columns=list(COMPARISON_COLUMNS))
    # Holm across the tested arms compared with this reference (NaN p outside the family)
    out["p_adj"] = holm_adjust(out["p"].to_numpy(float))
    verdicts = []
    for arm, (_, r) in zip(values, out.iterrows()):
        if reference is None:
            verdicts.append("")
        elif arm == reference:
            verdicts.append("reference")
        elif decided.get(arm) is not None:
            verdicts.append(str(decided[arm]))
        else:
            n = int(r["n_pairs"]) if r["tested"] else 0
            verdicts.append(verdict(float(r["diff"]), float(r["p_adj"]), mode, n, alpha))
    out["verdict"] = verdicts
    return out


def _outcome_counts(r: pd.Series | dict[str, Any]) -> tuple[int, int, int]:
    """``(collapsed, failed, finished)`` final runs of one row of the table (running runs aside)."""
    k, j = int(r["n_collapsed"]), int(r["n_failed"])
    return k, j, int(r["n_completed"]) + j


def _counts_text(k: int, j: int, n: int, *, both: bool = False, who: str = "") -> str:
    parts = []
    if k or both:
        parts.append(f"{who}collapsed {k} of {n}")
    if j or both:
        parts.append(f"{'' if parts else who}failed {j} of {n}")
    return ", ".join(parts)


def status_verdict(arm_row: pd.Series | dict[str, Any], ref_row: pd.Series | dict[str, Any]) -> str | None:
    """The verdict collapse and failure decide without a test, or ``None`` when both arms are valid.

    METHODS.md section 8 "Who is tested": only an arm whose final runs all completed (runs still going
    aside) and none collapsed is t-tested, against a reference of which the same holds. Otherwise:

    - the arm collapsed or failed on most (more than half) of its finished final runs and the
      reference is valid: ``worse (collapsed k of n)`` (``failed j of n`` where runs failed), on every
      metric, however small a dead network's gradient norm;
    - the arm is valid and the reference collapsed or failed on most of its runs:
      ``better (reference collapsed k of n)``;
    - any other mix: ``not tested (collapsed k of n, failed j of n)`` (the reference's counts, so
      named, when the arm is valid).

    Args:
      arm_row, ref_row: rows of the comparison table (``n_collapsed``, ``n_failed``, ``n_completed``).

    Returns:
      The verdict text, or ``None`` for a pair to be t-tested.
    """
    k, j, n = _outcome_counts(arm_row)
    rk, rj, rn = _outcome_counts(ref_row)
    arm_ok = n > 0 and k == 0 and j == 0
    ref_ok = rn > 0 and rk == 0 and rj == 0
    if arm_ok and ref_ok:
        return None
    if n == 0:
        return "not tested (no finished final run)"
    if rn == 0:
        return "not tested (the reference has no finished final run)"
    arm_most = 2 * (k + j) > n
    ref_most = 2 * (rk + rj) > rn
    if arm_most and ref_ok:
        return f"worse ({_counts_text(k, j, n)})"
    if arm_ok and ref_most:
        return f"better ({_counts_text(rk, rj, rn, who='reference ')})"
    if arm_ok:
        return f"not tested ({_counts_text(rk, rj, rn, both=True, who='reference ')})"
    return f"not tested ({_counts_text(k, j, n, both=True)})"


def _study_num_classes(study: Study) -> int | None:
    t = study.trials
    infos = parse_json_column(t["info_json"].head(20)) if "info_json" in t else []
    for i in infos:
        c = num_classes_of(i, {"dataset": study.task.get("dataset"), **study.task})
        if c:
            return c
    return num_classes_of({}, {"dataset": study.task.get("dataset"), **study.task})


def study_labels(studies: Sequence[Study]) -> list[str]:
    """One label per study, told apart: the spec's name, or the run directory's name where two
    studies share a spec name (two runs of one spec are two studies), numbered if that collides too."""
    names = [s.name for s in studies]
    out = []
    for s in studies:
        if names.count(s.name) == 1:
            out.append(s.name)
        else:
            out.append(os.path.basename(os.fspath(s.path).rstrip("/")) or s.name)
    seen: dict[str, int] = {}
    for i, lab in enumerate(out):
        if out.count(lab) > 1:
            seen[lab] = seen.get(lab, 0) + 1
            out[i] = f"{lab}#{seen[lab]}"
    return out


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
      ``bca`` where asked for and n >= 20); ``<m>_scale`` (``log`` / ``linear``, fixed by the metric's
      name) and, for a log-scale metric, the geometric mean ``<m>_gmean`` with its t interval
      ``<m>_gmean_ci_low`` / ``_high``;
    - against the reference (:func:`paired_comparisons`), over the seeds both arms completed:
      ``<m>_diff``, the mean paired difference on the tested scale (``mean_s (ln x_s - ln x_s^ref)``
      for a log-scale metric, ``mean_s (x_s - x_s^ref)`` otherwise), its t interval
      ``<m>_diff_ci_low`` / ``_high`` (``<m>_diff_ci_method``), ``<m>_n_pairs``, for a log-scale metric
      the ratio ``<m>_ratio`` = exp(diff) with ``<m>_ratio_ci_low`` / ``_high``; ``<m>_tested``
      (the arm was t-tested and is in the Holm family), the paired t p ``<m>_p_ttest`` = ``<m>_p``
      (``<m>_test`` = ``t``), the robustness p-values ``<m>_p_wilcoxon`` and ``<m>_p_signflip`` with
      ``<m>_disagree``, the Holm-adjusted ``<m>_p_adj`` (across the tested arms, for this metric) and
      ``<m>_verdict``: ``better`` / ``worse`` when the adjusted p < :data:`ALPHA` (direction from the
      sign of ``<m>_diff`` and the metric's mode ``<m>_mode``), else ``no significant difference``;
      for an untested arm the verdict of :func:`status_verdict` (``worse (collapsed k of n)``,
      ``better (reference collapsed k of n)``, ``not tested (collapsed k of n, failed j of n)``);
      ``reference`` for the reference arm;
    - counts of final runs by status (``n_final``, ``n_completed``, ``n_diverged``, ...), collapsed runs
      ``n_collapsed`` (:func:`~lyaptune.analysis.collapse.classify_collapse`) and ``collapsed`` (any);
    - the tuning cost in device-seconds, training + K_hat (:func:`run_train_seconds`):
      ``search_trials``, ``search_runs``, ``search_wall_s`` (the search runs' wall time, shown for
      reference), ``search_device_s`` (the search runs' training seconds, ``info["train_s"]``, a
      population member charged its 1 / P share; a run recorded without that clock is charged its
      wall time, and ``search_runs_unclocked`` counts such runs), ``search_eval_s`` (their evaluation
      seconds, not counted), ``khat_s`` (K_hat estimation seconds summed over the arm's runs, search
      and final: the derived step's tuning) with ``khat_runs`` (the estimates counted),
      ``tuning_device_s`` = ``search_device_s + khat_s``, ``population_wall_s`` (population wall time,
      when recorded),
      ``cpu_s`` / ``gpu_s`` (tuning device-seconds x the spec's per-trial resources) and
      ``lipschitz_s`` (mean K_hat time of a final run);
    - ``rank`` (1 = best) by ``<rank_by>_mean`` (``_gmean`` for a log-scale metric) among arms with
      at least one completed final run and no collapsed, diverged, errored or stopped one (``valid``,
      ``eligible``); other arms get no rank; ``n_failed`` counts diverged, errored and stopped runs;
    - ``study`` (the study's label: its spec name, or its run directory's name where several studies
      share a spec name) and ``spec_name``.

    Args:
      study: a :class:`Study`, or several (e.g. the same study on several datasets).
      reference: see :func:`reference_choice` (default ``"auto"``: the spec's, else the derived arm,
        else the best arm on the search runs' validation objective); ``None`` for no differences.
      metrics: ``trials.parquet`` columns to summarise besides the primary metrics.
      thresholds: collapse thresholds (default :class:`CollapseThresholds`).
      rank_by: the ranking metric (default the spec's first primary metric, at the final epoch).
      level: confidence level of every interval.
      method: ``t`` (default) or ``bca`` (used where n >= 20, ``t`` below, each cell saying which).
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
    names = study_labels(studies)
    tables = [
        _study_table(s, reference, metrics, th, rank_by, level, method, seed, labels, name)
        for s, name in zip(studies, names)
    ]
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
    out.attrs["test"] = (
        "paired t-test at every n (on log differences for log-scale metrics), Holm-adjusted across the "
        "tested arms per metric; Wilcoxon signed-rank and exact sign-flip p as robustness columns"
    )
    out.attrs["who_is_tested"] = (
        "arms whose final runs all completed and none collapsed, against such a reference; collapse and "
        "failure decide the others (METHODS.md section 8)"
    )
    return out


def compare_json(table: pd.DataFrame) -> str:
    """The comparison table and its settings as JSON text (NaN as null)."""
    records = json.loads(table.to_json(orient="records"))
    return json.dumps({"settings": table.attrs, "arms": records}, indent=2)
