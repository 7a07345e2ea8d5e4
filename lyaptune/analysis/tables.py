"""The comparison table as display tables of strings: outcomes, differences to the reference, cost.

Used by the report (:mod:`lyaptune.analysis.report`) and by ``lyaptune compare``; every interval cell
states its method and n, log-scale metrics show geometric means and ratios, accuracies points
(METHODS.md section 8).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import pandas as pd

from lyaptune.analysis.compare import DEFAULT_METRICS, METRIC_LABELS
from lyaptune.analysis.formatting import fmt_metric as _fmt_metric
from lyaptune.analysis.formatting import fmt_p as _fmt_p
from lyaptune.analysis.formatting import format_effect
from lyaptune.analysis.formatting import num as _num

__all__ = ["format_compare_tables"]


def format_compare_tables(
    table: pd.DataFrame, metrics: Sequence[str] | None = None
) -> dict[str, tuple[list[str], list[list[str]]]]:
    """The comparison table as three display tables of strings: outcomes, differences, cost and rank.

    Every interval cell says its method and n (``[low, high] t n=5``). Log-scale metrics show the
    geometric mean per arm and the geometric-mean ratio A / reference with its t interval
    (``0.52x [0.38, 0.71]``), accuracies the difference in points. A tested arm's cell gives the raw and
    Holm-adjusted p of the deciding paired t-test, the robustness p-values (Wilcoxon signed-rank,
    exact sign-flip) with a flag where they disagree with t, and the verdict (better / worse at
    adjusted p < 0.05, else no significant difference); an arm decided by collapse or failure shows its
    effect and that verdict, without a p (METHODS.md section 8).

    Args:
      table: the output of :func:`~lyaptune.analysis.compare.compare`.
      metrics: metrics to show (default those it was computed for).

    Returns:
      ``{"outcomes": (header, rows), "differences": (...), "cost": (...)}``; accuracies are shown in
      percent, intervals as ``[low, high]``.
    """
    metrics = list(metrics or table.attrs.get("metrics") or DEFAULT_METRICS)
    multi = table["study"].nunique() > 1 if len(table) else False
    keys = ["study", "arm"] if multi else ["arm"]
    if multi and table["dataset"].nunique() > 1:
        keys = ["study", "dataset", "arm"]
    level = float(table.attrs.get("level", 0.95))
    primary = {p["metric"] for p in table.attrs.get("primary", [])}

    def label(m: str) -> str:
        return METRIC_LABELS.get(m, m) + (" (primary)" if m in primary else "")

    def is_log(m: str) -> bool:
        return bool(len(table)) and f"{m}_scale" in table and (table[f"{m}_scale"] == "log").any()

    def key_cells(r: pd.Series) -> list[str]:
        cells = [str(r[k]) for k in keys]
        if r.get("is_reference"):
            cells[-1] += " (ref)" if r.get("reference_source") != "best" else " (ref: best on search)"
        if r.get("n_collapsed", 0) > 0:
            cells[-1] += f" [collapsed {r['n_collapsed']}/{r['n_completed']}]"
        return cells

    head = (
        keys
        + ["runs", "collapsed", "diverged"]
        + [
            f"{label(m)}: "
            + ("geometric mean" if is_log(m) else "mean +- sd")
            + f" [{level:.0%} CI, method, n]"
            for m in metrics
        ]
    )
    outcomes = []
    for _, r in table.iterrows():
        row = key_cells(r) + [
            f"{r['n_completed']}/{r['n_final']}",
            str(r["n_collapsed"]),
            str(r["n_diverged"]),
        ]
        row += [_outcome_cell(r, m) for m in metrics]
        outcomes.append(row)
    dhead = keys + [
        f"{label(m)}: "
        + ("ratio A/ref" if is_log(m) else "diff A-ref")
        + f" [{level:.0%} CI, method, n], p t raw / Holm; robustness p (Wilcoxon, sign-flip); verdict"
        for m in metrics
    ]
    diffs = []
    for _, r in table.iterrows():
        row = key_cells(r)
        row += [_difference_cell(r, m) for m in metrics]
        diffs.append(row)
    rank_by = str(table["rank_by"].iloc[0]) if len(table) else "objective"
    has_pop = "population_wall_s" in table and table["population_wall_s"].notna().any()
    chead = keys + [
        "search trials",
        "search runs",
        "search device-s",
        "K_hat device-s",
        "tuning device-s",
        *(["population wall s"] if has_pop else []),
        "CPU-s",
        "GPU-s",
        f"rank by final {METRIC_LABELS.get(rank_by, rank_by)}",
    ]
    cost = []
    for _, r in table.iterrows():
        cost.append(
            key_cells(r)
            + [
                str(r["search_trials"]),
                str(r["search_runs"]),
                _num(r["search_device_s"]),
                _num(r["khat_s"]),
                _num(r["tuning_device_s"]),
                *([_num(r["population_wall_s"])] if has_pop else []),
                _num(r["cpu_s"]),
                _num(r["gpu_s"]),
                _rank_cell(r),
            ]
        )
    return {"outcomes": (head, outcomes), "differences": (dhead, diffs), "cost": (chead, cost)}


def _outcome_cell(r: pd.Series, m: str) -> str:
    """One arm's value of ``m``: geometric mean (log scale) or mean +- sd, with its interval, method, n."""
    n = r[f"{m}_n"]
    if n == 0:
        return "-"
    if r.get(f"{m}_scale") == "log":
        if not math.isfinite(float(r[f"{m}_gmean"])):
            return f"- (a value <= 0; mean {_num(r[f'{m}_mean'])})"
        cell = _num(r[f"{m}_gmean"])
        if n >= 2:
            lo, hi = _num(r[f"{m}_gmean_ci_low"]), _num(r[f"{m}_gmean_ci_high"])
            return cell + f" [{lo}, {hi}] {r[f'{m}_ci_method']} n={n}"
        return cell + f" (n={n}, no interval)"
    cell = _fmt_metric(m, r[f"{m}_mean"])
    if n >= 2:
        sd, lo, hi = (_fmt_metric(m, r[f"{m}_{k}"]) for k in ("std", "ci_low", "ci_high"))
        return cell + f" +- {sd} [{lo}, {hi}] {r[f'{m}_ci_method']} n={n}"
    return cell + f" (n={n}, no interval)"


def _difference_cell(r: pd.Series, m: str) -> str:
    """One arm against the reference on ``m``: effect, p raw / Holm, robustness p and the verdict."""
    v = str(r.get(f"{m}_verdict", "") or "")
    if v == "reference":
        return "reference"
    effect = format_effect(r, m)
    if not bool(r.get(f"{m}_tested", False)):
        return f"{effect}, {v}" if v and effect != "-" else (v or "-")
    p_raw, p_a = (_fmt_p(r[f"{m}_{k}"]) for k in ("p", "p_adj"))
    pw, ps = (_fmt_p(r.get(f"{m}_{k}")) for k in ("p_wilcoxon", "p_signflip"))
    flag = " DISAGREE with t" if bool(r.get(f"{m}_disagree", False)) else ""
    return f"{effect}, p {p_raw} / {p_a} (t); Wilcoxon {pw}, sign-flip {ps}{flag}; {v}"


def _rank_cell(r: pd.Series) -> str:
    """The arm's rank, or why it has none."""
    if not pd.isna(r["rank"]):
        return str(int(r["rank"]))
    if r["n_collapsed"]:
        why = "collapsed"
    elif r["n_diverged"] + r["n_errored"] + r["n_stopped"]:
        why = "a final run failed"
    else:
        why = "no completed run" if r["n_completed"] == 0 else "no value"
    return f"- ({why})"
