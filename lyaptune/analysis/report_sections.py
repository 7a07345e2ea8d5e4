"""The report's text sections: the claims, "How to read this report", the study and its runs.

Pure functions from a loaded study (or its claims and comparison table) to report blocks
(:data:`~lyaptune.analysis.formatting.Block`); :func:`lyaptune.analysis.report.write_report` puts
them in order and renders them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import pandas as pd

from lyaptune.analysis.claims import ClaimResult
from lyaptune.analysis.collapse import CollapseThresholds, LabelStats
from lyaptune.analysis.compare import ALPHA
from lyaptune.analysis.formatting import Block
from lyaptune.analysis.formatting import fmt_diff as _fmt_diff
from lyaptune.analysis.formatting import fmt_metric as _fmt_metric
from lyaptune.analysis.formatting import fmt_p as _fmt_p
from lyaptune.analysis.formatting import fmt_ratio as _fmt_ratio
from lyaptune.analysis.formatting import num as _num
from lyaptune.analysis.load import Study
from lyaptune.analysis.tables import format_compare_tables

__all__ = [
    "claims_blocks",
    "comparison_blocks",
    "how_to_read",
    "problem_runs",
    "spec_blocks",
    "status_counts",
]


def _describe_space(arm: dict[str, Any]) -> str:
    if arm.get("grid"):
        return "grid: " + "; ".join(f"{k} in {list(v)}" for k, v in arm["grid"].items())
    parts = []
    for k, v in (arm.get("space") or {}).items():
        if isinstance(v, dict) and "choices" in v:
            parts.append(f"{k} in {v['choices']}")
        elif isinstance(v, dict) and "low" in v:
            parts.append(f"{k} in [{_num(v['low'])}, {_num(v['high'])}]{' (log)' if v.get('log') else ''}")
        else:
            parts.append(f"{k} = {v}")
    return "; ".join(parts) if parts else "none (not tuned: runs on the final seeds only)"


def spec_blocks(study: Study) -> list[Block]:
    spec, task, obj = study.spec, study.task, study.objective
    search = dict(spec.get("search") or {})
    res = study.resources
    finished = study.info.get("finished")
    state = (
        f"finished {finished}"
        if finished
        else "in progress or interrupted (the tables show what is recorded)"
    )
    rows = [
        ["study", study.name],
        ["run directory", study.path],
        ["state", f"started {study.info.get('started', '?')}; {state}"],
        [
            "task",
            f"dataset {task.get('dataset')} {dict(task.get('dataset_args') or {}) or ''}; "
            f"model {task.get('model')} {dict(task.get('model_args') or {}) or ''}; "
            f"{task.get('epochs')} epochs; batch {task.get('batch_size')}; "
            f"validation fraction {task.get('validation_fraction')}",
        ],
        ["objective", f"{obj['metric']} ({obj['mode']}, at {obj['at']} epoch)"],
        [
            "search",
            f"sampler {search.get('sampler')}; {search.get('trials_per_arm')} trials per arm; search seeds "
            f"{search.get('seeds')}; final seeds {search.get('final_seeds')}; "
            f"scheduler {search.get('scheduler', 'none')}",
        ],
        ["resources per trial", f"{res['cpu']:g} CPU, {res['gpu']:g} GPU"],
        [
            "versions",
            ", ".join(
                f"{k} {study.info[k]}"
                for k in ("lyaptune", "torch", "ray", "optuna", "python")
                if k in study.info
            )
            or "-",
        ],
    ]
    if study.info.get("git_commit"):
        rows.append(["git commit", str(study.info["git_commit"])])
    arms = []
    for a in study.spec.get("arms") or []:
        extra = dict(a.get("optimizer_args") or {})
        extra.update({f"schedule.{k}": v for k, v in (a.get("schedule_args") or {}).items()})
        if a.get("lipschitz"):
            extra["lipschitz"] = dict(a["lipschitz"])
        arms.append(
            [
                str(a.get("name")),
                str(a.get("optimizer")),
                str(a.get("schedule")),
                _describe_space(a),
                ", ".join(f"{k}={v}" for k, v in extra.items()) or "-",
            ]
        )
    return [
        ("h2", "Study"),
        ("table", ["field", "value"], rows),
        ("h3", "Arms"),
        ("table", ["arm", "optimizer", "schedule", "searched", "fixed"], arms),
    ]


def status_counts(study: Study) -> list[list[str]]:
    t = study.trials
    out = []
    for arm in study.arms:
        rows = t[t["arm"] == arm] if len(t) else t
        for phase in ("search", "final"):
            p = rows[rows["phase"] == phase] if len(rows) else rows
            if not len(p):
                continue
            counts = p["status"].value_counts().to_dict()
            out.append(
                [arm, phase, str(len(p))]
                + [str(counts.get(s, 0)) for s in ("completed", "diverged", "stopped", "errored", "running")]
            )
    return out


def problem_runs(study: Study, classified: pd.DataFrame) -> list[list[str]]:
    if not len(classified):
        return []
    # every run that did not complete, and the collapsed final runs (search runs at a useless learning
    # rate often "collapse" too; they are counted separately, not listed)
    final_collapsed = classified["collapsed"] & (classified["phase"] == "final")
    bad = classified[(classified["status"] != "completed") | final_collapsed]
    rows = []
    for _, r in bad.sort_values(["arm", "phase", "trial_id"]).iterrows():
        what = r["status"] if r["status"] != "completed" else f"collapsed ({r['collapse_reason']})"
        msg = str(r.get("message") or "")
        if r["collapsed"]:
            msg = (
                f"final train loss {_num(r['final_train_loss'])} vs L(w0) {_num(r['initial_loss'])}; "
                f"test acc {_fmt_metric('final_test_acc', r['final_test_acc'])} vs chance "
                f"{_fmt_metric('final_test_acc', r['chance_acc'])}; min grad norm {_num(r['min_grad_norm'])}"
            )
        rows.append(
            [str(r["arm"]), str(r["phase"]), str(r["trial_id"]), what, _num(r["epochs_completed"]), msg[:300]]
        )
    return rows


def _claim_statement(c: ClaimResult) -> str:
    words = str(getattr(c, "statement", "") or "")
    if not words:
        than = "every other arm" if c.than == "all" else f"'{c.than}'"
        margin = f" by more than {_fmt_diff(c.metric, c.margin).lstrip('+')}" if c.margin else ""
        words = f"'{c.arm}' has a {c.direction} {c.metric} (final epoch) than {than}{margin}"
    return f"{c.text} [{words}]" if c.text else words


def _comparison_effect(metric: str, x: Any, level: float) -> str:
    """One comparison's effect: a ratio with its interval on the log scale, else a difference."""
    n = int(getattr(x, "n", 0) or 0)
    method = getattr(x, "ci_method", "") or "t"
    if getattr(x, "scale", "linear") == "log" and math.isfinite(float(getattr(x, "ratio", math.nan))):
        lo, hi = getattr(x, "ratio_low", math.nan), getattr(x, "ratio_high", math.nan)
        ci = f"[{_fmt_ratio(lo)}, {_fmt_ratio(hi)}]" if n >= 2 else "[-]"
        return f"{_fmt_ratio(x.ratio)} {ci} ({level:.0%}, {method}, n={n})"
    ci = f"[{_fmt_diff(metric, x.ci_low)}, {_fmt_diff(metric, x.ci_high)}]" if n >= 2 else "[-]"
    return f"{_fmt_diff(metric, x.effect)} {ci} ({level:.0%}, {method}, n={n})"


def _claim_effect(c: ClaimResult, level: float) -> str:
    d = c.decisive
    if d is None:
        return "-"
    log = getattr(d, "scale", "linear") == "log" and math.isfinite(float(getattr(d, "ratio", math.nan)))
    return f"{c.arm} {'/' if log else '-'} {d.other}: {_comparison_effect(c.metric, d, level)}"


def _claim_place(c: ClaimResult) -> str:
    paper, place = str(getattr(c, "paper", "") or ""), str(getattr(c, "place", "") or "")
    return ", ".join(x for x in (paper, place) if x) or "-"


def claims_blocks(claims: Sequence[ClaimResult], level: float = 0.95) -> list[Block]:
    """The report's opening "Claims" section: the paper's claims first, then our extensions.

    Per claim its id, where the paper says it (paper and place; extensions have none), the statement,
    the measured effect with its interval (method and n; a ratio for a log-scale metric) and the
    verdict with the rule that decided it; then every comparison with its raw and Holm-adjusted p.
    Claims are grouped by ``source`` (``getattr(claim, "source", "paper")``: ``extension`` for ours,
    anything else the paper's).

    Args:
      claims: the output of :func:`~lyaptune.analysis.claims.evaluate_claims`.
      level: the intervals' confidence level.

    Returns:
      Report blocks; "This spec states no claims." when there are none.
    """
    if not claims:
        return [("h2", "Claims"), ("p", "This spec states no claims.")]
    alpha = claims[0].alpha
    intro = (
        "Each claim of the spec, checked on the final-seed runs at the final epoch (or on the whole-run "
        "metric it names). Runs are paired by seed; the effect is the claimed arm against the other: the "
        f"geometric-mean ratio with its {level:.0%} Student-t interval for a log-scale metric (loss, "
        "gradient norm), else the mean difference (accuracies in points), with n pairs; under 'than: "
        "all' the row shows the comparison least favourable to the claim. Each comparison is a paired "
        "t-test against the claimed bound (on log differences for a log-scale metric). A claim over "
        f"all of several comparisons is 'supported' when each is significant in the claimed direction "
        f"at {alpha:g} unadjusted (an intersection-union test needs no adjustment), a claim over any "
        "one comparison after Holm; it is 'contradicted' when a comparison is significant the other "
        "way after Holm. Collapse and failure count: a claimed winner that collapsed or failed on most "
        "of its final seeds is contradicted (a dead network's small gradient norm is no win), a claim "
        "against an arm that did is supported when the claimed arm has no such run, any other mix is "
        "inconclusive with the counts. 'inconclusive' otherwise; the reason names the rule that decided."
    )
    paper = [c for c in claims if getattr(c, "source", "paper") != "extension"]
    ours = [c for c in claims if getattr(c, "source", "paper") == "extension"]
    blocks: list[Block] = [("h2", "Claims"), ("p", intro)]
    head = ["claim", "where", "statement", "measured effect [interval, method, n]", "verdict"]
    for title, group in (("The paper's claims", paper), ("Our extensions", ours)):
        if not group:
            continue
        rows = []
        for c in group:
            verdict = c.verdict + (f": {c.reason}" if c.reason else "")
            where = _claim_place(c) if group is paper else "extension"
            rows.append([c.id, where, _claim_statement(c), _claim_effect(c, level), verdict])
        blocks += [("h3", title), ("table", head, rows)]
    comps = []
    for c in [*paper, *ours]:
        for x in c.comparisons:
            bound = getattr(x, "bound", 0.0)
            comps.append(
                [
                    c.id,
                    f"{c.arm} {'/' if getattr(x, 'scale', '') == 'log' else '-'} {x.other}",
                    _comparison_effect(c.metric, x, level),
                    _fmt_diff(c.metric, bound) if bound else "0",
                    f"{_fmt_p(x.p)} / {_fmt_p(x.p_adj)}",
                    x.outcome + (f" ({x.reason})" if x.reason else ""),
                ]
            )
    blocks += [
        ("h3", "Comparisons behind the verdicts"),
        (
            "table",
            [
                "claim",
                "comparison",
                f"effect [{level:.0%} CI, method, n]",
                "bound (tested scale)",
                "p raw / Holm",
                "outcome",
            ],
            comps,
        ),
    ]
    return blocks


def _method_name(method: str) -> str:
    return "Student-t" if method == "t" else "BCa bootstrap (Student-t where n < 20)"


def _labels_text(labels: LabelStats) -> str:
    if not math.isfinite(labels.label_entropy):
        return "H(y) and the majority rate are unknown (no class count): only the L(w0) test applies"
    src = (
        "from the dataset's labels"
        if labels.source == "labels"
        else f"assumed balanced: ln C and 1/C. Note: {labels.note}"
    )
    return f"H(y) = {labels.label_entropy:.4g} nats, majority-class rate {labels.majority_rate:.2%}, {src}"


def how_to_read(
    study: Study,
    table: pd.DataFrame,
    th: CollapseThresholds,
    labels: LabelStats,
    methods: dict[str, str],
    ref: str | None,
    ref_source: str,
) -> list[Block]:
    search = dict(study.spec.get("search") or {})
    primary = "; ".join(
        f"{p['metric']} ({'lower' if p['mode'] == 'min' else 'higher'} is better)"
        for p in study.primary_metrics
    )
    n_final = sorted({int(n) for n in table["n_completed"]}) if len(table) else []
    ref_line = {
        "best": "No reference arm is named, so each arm is compared with the best arm on the search "
        f"runs' validation objective ({ref or 'none: no arm has a completed search trial'}), never "
        "chosen on the final seeds it is then tested on.",
        "none": "No reference arm: arms are not compared pairwise.",
    }.get(ref_source, f"Each arm is compared with the reference arm '{ref}'.")
    by_method: dict[str, list[str]] = {}
    for arm, m in methods.items():
        if study.searched_params(arm):
            by_method.setdefault(m, []).append(arm)
    budget_line = (
        "Budget curves: "
        + "; ".join(f"{m} for {', '.join(a)}" for m, a in by_method.items())
        + ". 'expected-max' is the expected best of k trials drawn without replacement from those run "
        "(the exact form; Dodge et al. 2019 draw with replacement), used only where trials are "
        "independent draws (random, quasi-random, grid); its band is the spread of the best of k, not an "
        "uncertainty of the curve. Adaptive searches (TPE, CMA-ES, GP) get the best-so-far in trial "
        "order, averaged over independent search repeats, the band spanning the repeats; with one "
        "repeat no spread can be shown. 'Trials needed to match the reference' compares a selected best "
        "with the reference's unselected mean, which favours the tuned arm."
        if by_method
        else "Budget curves: no arm was searched."
    )
    items = [
        f"Final seeds {search.get('final_seeds')} are disjoint from the search seeds {search.get('seeds')}: "
        "a tuned arm's final runs are fresh runs, not the runs that won its search (which would favour "
        "tuned arms over the untuned derived step)."
        if not set(search.get("final_seeds") or []) & set(search.get("seeds") or [])
        else f"Warning: final seeds {search.get('final_seeds')} overlap the search seeds "
        f"{search.get('seeds')}: a tuned arm's final runs include the runs that won its search "
        "(a winner's-curse bias in its favour).",
        f"Primary metric, taken at the final epoch (never the minimum over epochs, which rewards transient "
        f"dips): {primary}. Arms are ranked by it; minima over epochs are secondary columns.",
        f"Intervals are {_method_name(table.attrs.get('method', 't'))} {table.attrs.get('level', 0.95):.0%} "
        "intervals (never a plain percentile bootstrap; a BCa bootstrap only from n = 20) of the mean "
        f"over final seeds (n = completed runs per arm: {', '.join(map(str, n_final)) or '-'}); every "
        "cell states its method and n. With n <= 10, a skewed metric on the raw scale makes any interval "
        "less reliable than its nominal level; log-scale metrics are therefore compared on logs.",
        ref_line,
        "Scale: losses, gradient norms and seconds vary multiplicatively across seeds, so they are "
        "compared on the log scale: each arm's geometric mean, and the ratio arm / reference with its "
        "interval (a halved gradient norm reads 0.5x). Accuracies are compared as differences in "
        "points. A metric's scale is fixed by its name, not chosen after seeing the data.",
        "One deciding test: differences are paired by seed and tested with the paired t-test at every "
        "number of seeds (on log differences for log-scale metrics), so adding a seed never lowers the "
        "power and the verdict agrees with the interval. The p-values are Holm-adjusted across the arms "
        f"tested against the reference, per metric. 'better' or 'worse' means the adjusted p < {ALPHA:g}, "
        "in the direction of the tested mean difference; 'no significant difference' means the data "
        "cannot tell the arms apart at that level, whatever the sign (it does not prove them equal). "
        "Where every difference is the same, the t statistic is undefined and the exact sign-flip p "
        "(2 / 2^n) is used, never p = 0. The Wilcoxon signed-rank and exact sign-flip tests are shown "
        "beside it as robustness checks; a disagreement with t is flagged, not used to decide.",
        "Who is tested: only arms whose final runs all completed and none collapsed get a t-test and "
        "count in the Holm family. An arm that collapsed or failed on most of its final seeds is 'worse "
        "(collapsed k of n)' than a valid reference on every metric, however small its dead network's "
        "gradient norm; a valid arm is 'better (reference collapsed k of n)' than such a reference; any "
        "other mix is 'not tested (collapsed k of n, failed j of n)'. None of these is ranked.",
        budget_line,
        f"Collapse: {th.describe()} ({_labels_text(labels)}). Collapsed runs are counted and shown, never "
        "ranked as wins.",
        "Cost: an arm's tuning cost is in device-seconds: its search runs' training time (each run's "
        "training clock; a run trained inside a vmapped population of P members is charged its 1 / P "
        "share, the population's wall time its own column) plus every K_hat estimate of its runs, the "
        "derived step's tuning, counted the same way. Evaluation, data loading and Ray's start-up are "
        "not counted; the search runs' wall time is shown beside it.",
    ]
    return [("h2", "How to read this report"), ("ul", items)]


def comparison_blocks(
    study: Study,
    table: pd.DataFrame,
    th: CollapseThresholds,
    labels: LabelStats,
    *,
    level: float = 0.95,
    method: str = "t",
) -> list[Block]:
    """The "Comparison of the final configurations" section: what the tables show, the collapse rule,
    the outcome, difference and cost tables (:func:`~lyaptune.analysis.tables.format_compare_tables`)
    and the collapsed final runs per arm (METHODS.md section 8)."""
    obj = study.objective
    ref = next((str(a) for a, r in zip(table["arm"], table["is_reference"]) if r), None)
    ref_source = str(table["reference_source"].iloc[0]) if len(table) else "none"
    blocks: list[Block] = []
    tabs = format_compare_tables(table)
    primary = ", ".join(f"{p['metric']} ({p['mode']})" for p in study.primary_metrics)
    ref_text = {
        "best": f"none named, so every arm is compared with the best arm on the primary metric ({ref})",
        "none": "none",
    }.get(ref_source, f"{ref} ({'from the spec' if ref_source == 'spec' else ref_source})")
    blocks += [
        ("h2", "Comparison of the final configurations"),
        (
            "p",
            f"Each arm's best configuration (by the validation objective {obj['metric']}) re-run on the "
            f"final seeds. Primary metric(s), at the final epoch: {primary}; ranking uses the first. "
            f"Statistics over completed final runs: mean, sample sd and a {level:.0%} "
            f"{'Student-t' if method == 't' else 'BCa bootstrap (t below n = 20)'} interval; log-scale "
            "metrics (losses, gradient norms, seconds) show the geometric mean instead; each cell gives "
            f"its method and n. Reference arm: {ref_text}. Differences are paired by seed: for a "
            "log-scale metric the ratio arm / reference of geometric means with its t interval (tested "
            "on log differences), for an accuracy the difference in points. The deciding test is the "
            "paired t-test at every n; its p-values are Holm-adjusted across the tested arms, per metric; "
            f"'better'/'worse' only at adjusted p < {ALPHA:g} (the direction from the tested mean "
            "difference, so it agrees with the interval), else 'no significant difference'. The "
            "Wilcoxon signed-rank and exact sign-flip p-values are robustness columns; 'DISAGREE with "
            "t' marks a comparison where one falls on the other side of 0.05. Only arms whose final runs "
            "all completed and none collapsed are tested (against a reference of which the same "
            "holds); collapse and failure decide the others without a test: 'worse (collapsed k of n)', "
            "'better (reference collapsed k of n)', or 'not tested (collapsed k of n, failed j of n)'.",
        ),
        (
            "p",
            f"Collapse rule (thresholds stored in compare.json): {th.describe()} (loss_rel={th.loss_rel:g}, "
            f"acc_points={th.acc_points:g}; {_labels_text(labels)}). Collapsed runs count in the "
            "statistics but an arm with any collapsed (or diverged, errored, stopped) final run is never "
            "ranked nor t-tested.",
        ),
        ("table", *tabs["outcomes"]),
        ("h3", "Difference to the reference"),
        ("table", *tabs["differences"]),
        ("h3", "Tuning cost and rank"),
        ("table", *tabs["cost"]),
    ]
    collapsed_lines = [
        f"{r['arm']}: {r['n_collapsed']} of {r['n_completed']} completed final runs collapsed"
        for _, r in table.iterrows()
    ]
    blocks += [("p", "Collapsed final-seed runs per arm:"), ("ul", collapsed_lines)]
    return blocks
