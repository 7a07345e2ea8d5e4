"""The study report: spec summary, comparison tables, figures, budget curves, sensitivity and notes.

:func:`write_report` is the writing edge of :mod:`lyaptune.analysis`: it calls the pure functions,
renders one list of blocks to Markdown and to a self-contained HTML page (inline CSS, no scripts,
images linked relatively so the directory can be opened from disk or moved as a whole), and writes
the tables as CSV and the settings and headline numbers as JSON. The rendering is two Jinja2
templates, package data in ``lyaptune/analysis/templates`` (``report.md.j2`` with the pipe-table
macro of ``table.md.j2``; ``report.html.j2``, autoescaped, so no study text becomes markup).
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Sequence
from functools import cache, partial
from pathlib import Path
from typing import Any

import jinja2
import numpy as np
import pandas as pd

from lyaptune.analysis.answer import answer_blocks
from lyaptune.analysis.budget import (
    BUDGET_COLUMNS,
    MATCHING_NOTE,
    budget_curve,
    budget_method,
    matching_budgets,
)
from lyaptune.analysis.claims import ClaimResult, evaluate_claims
from lyaptune.analysis.collapse import CollapseThresholds, LabelStats, classify_collapse, task_label_stats
from lyaptune.analysis.compare import (
    ALPHA,
    DEFAULT_METRICS,
    METRIC_LABELS,
    _study_num_classes,
    compare,
    compare_json,
)
from lyaptune.analysis.crossstudy import FEW_RUNS, pairwise_improvement, performance_profile, study_scores
from lyaptune.analysis.figures import (
    arm_colors,
    budget_figure,
    divergence_figure,
    grid_response_figure,
    importance_figure,
    performance_profile_figure,
    save_figure,
    slices_figure,
    training_curves_figure,
)
from lyaptune.analysis.formatting import Block, format_effect
from lyaptune.analysis.formatting import fmt_diff as _fmt_diff
from lyaptune.analysis.formatting import fmt_metric as _fmt_metric
from lyaptune.analysis.formatting import fmt_p as _fmt_p
from lyaptune.analysis.formatting import fmt_ratio as _fmt_ratio
from lyaptune.analysis.formatting import num as _num
from lyaptune.analysis.load import Study
from lyaptune.analysis.paper_figures import paper_figures
from lyaptune.analysis.sensitivity import divergence_vs_lr_khat, sensitivity, study_k_hat
from lyaptune.errors import ConfigError, UserError

__all__ = [
    "REPORT_FORMATS",
    "claims_blocks",
    "write_cross_study",
    "write_report",
    "format_compare_tables",
    "format_effect",
    "render_markdown_table",
    "render_text_table",
]

#: Report formats :func:`write_report` can write.
REPORT_FORMATS: tuple[str, ...] = ("md", "html")
FIGURES_DIR = "figures"


# -- formatting -------------------------------------------------------------------------------------


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
        for m in metrics:
            if r[f"{m}_n"] == 0:
                row.append("-")
                continue
            if r.get(f"{m}_scale") == "log":
                if not math.isfinite(float(r[f"{m}_gmean"])):
                    row.append(f"- (a value <= 0; mean {_num(r[f'{m}_mean'])})")
                    continue
                cell = _num(r[f"{m}_gmean"])
                if r[f"{m}_n"] >= 2:
                    lo, hi = _num(r[f"{m}_gmean_ci_low"]), _num(r[f"{m}_gmean_ci_high"])
                    cell += f" [{lo}, {hi}] {r[f'{m}_ci_method']} n={r[f'{m}_n']}"
                else:
                    cell += f" (n={r[f'{m}_n']}, no interval)"
                row.append(cell)
                continue
            cell = _fmt_metric(m, r[f"{m}_mean"])
            if r[f"{m}_n"] >= 2:
                sd, lo, hi = (_fmt_metric(m, r[f"{m}_{k}"]) for k in ("std", "ci_low", "ci_high"))
                cell += f" +- {sd} [{lo}, {hi}] {r[f'{m}_ci_method']} n={r[f'{m}_n']}"
            else:
                cell += f" (n={r[f'{m}_n']}, no interval)"
            row.append(cell)
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
        for m in metrics:
            v = str(r.get(f"{m}_verdict", "") or "")
            if v == "reference":
                row.append("reference")
                continue
            effect = format_effect(r, m)
            if not bool(r.get(f"{m}_tested", False)):
                row.append(f"{effect}, {v}" if v and effect != "-" else (v or "-"))
                continue
            p_raw, p_a = (_fmt_p(r[f"{m}_{k}"]) for k in ("p", "p_adj"))
            pw, ps = (_fmt_p(r.get(f"{m}_{k}")) for k in ("p_wilcoxon", "p_signflip"))
            flag = " DISAGREE with t" if bool(r.get(f"{m}_disagree", False)) else ""
            row.append(f"{effect}, p {p_raw} / {p_a} (t); Wilcoxon {pw}, sign-flip {ps}{flag}; {v}")
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
        if pd.isna(r["rank"]):
            if r["n_collapsed"]:
                why = "collapsed"
            elif r["n_diverged"] + r["n_errored"] + r["n_stopped"]:
                why = "a final run failed"
            else:
                why = "no completed run" if r["n_completed"] == 0 else "no value"
            rank = f"- ({why})"
        else:
            rank = str(int(r["rank"]))
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
                rank,
            ]
        )
    return {"outcomes": (head, outcomes), "differences": (dhead, diffs), "cost": (chead, cost)}


def _md_cell(s: Any) -> str:
    """A Markdown table cell: ``|`` escaped, newlines folded to spaces."""
    return str(s).replace("|", "\\|").replace("\n", " ")


@cache
def _templates() -> jinja2.Environment:
    """The report templates (package data ``lyaptune/analysis/templates``); HTML ones autoescaped."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("lyaptune.analysis", "templates"),
        autoescape=jinja2.select_autoescape(enabled_extensions=("html.j2",), default_for_string=False),
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters["md_cell"] = _md_cell
    return env


def render_markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A GitHub-flavoured Markdown pipe table (``|`` in cells escaped), from ``table.md.j2``.

    Args:
        header: the column names.
        rows: one sequence of cells per row, as long as ``header``.

    Returns:
        The table: a header line, a ``|---|`` delimiter line and one line per row, no final newline.
    """
    return str(_templates().get_template("table.md.j2").module.table(list(header), list(rows)))


def render_text_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain-text table with left-aligned columns two spaces apart (for the terminal).

    Args:
        header: the column names.
        rows: one sequence of cells per row, as long as ``header``.

    Returns:
        The header, a dashed rule and the rows, trailing blanks stripped, no final newline.
    """
    cols = [[str(h), *(str(r[i]) for r in rows)] for i, h in enumerate(header)]
    widths = [max(map(len, c)) for c in cols]
    lines = [[c.ljust(w) for c, w in zip(line, widths)] for line in zip(*cols)]
    lines.insert(1, ["-" * w for w in widths])
    return "\n".join("  ".join(line).rstrip() for line in lines)


# -- rendering blocks --------------------------------------------------------------------------------


def _md(blocks: Sequence[Block]) -> str:
    """The report's blocks as Markdown (template ``report.md.j2``)."""
    return _templates().get_template("report.md.j2").render(blocks=blocks)


def _html(blocks: Sequence[Block], title: str) -> str:
    """The report's blocks as one HTML page (template ``report.html.j2``, autoescaped)."""
    return _templates().get_template("report.html.j2").render(blocks=blocks, title=title)


# -- the report ---------------------------------------------------------------------------------------


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._") or "arm"


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


def _spec_blocks(study: Study) -> list[Block]:
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


def _status_counts(study: Study) -> list[list[str]]:
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


def _problem_runs(study: Study, classified: pd.DataFrame) -> list[list[str]]:
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


def write_report(
    study: Study,
    out_dir: str | os.PathLike[str],
    formats: Sequence[str] = REPORT_FORMATS,
    *,
    reference: str | None = "auto",
    thresholds: CollapseThresholds | None = None,
    level: float = 0.95,
    method: str = "t",
    seed: int = 0,
    importance: bool = True,
    figures: bool = True,
) -> list[Path]:
    """Write the study's report into ``out_dir``.

    The report opens with the Answer (:func:`~lyaptune.analysis.answer.answer_blocks`: a few sentences
    and one table per arm: primary metric with its interval, test accuracy, collapsed / failed runs,
    verdict against the reference, tuning cost, K_hat and alpha of derived arms; in HTML the section
    ``answer``), then the claims, then "How to read this report" (the protocol of METHODS.md section
    8 in plain words), then the detail. Files: ``report.md`` / ``report.html`` (per ``formats``),
    ``compare.csv`` and ``compare.json`` (the full comparison table and its settings: reference, primary
    metrics, interval method, collapse thresholds and label statistics), ``budget.csv`` (every arm's
    budget curve, its ``method`` column naming the estimator), ``matching.csv`` (trials each baseline
    needs to match the reference), ``runs.csv`` (every run with its collapse classification), and under
    ``figures/`` PNG and SVG of: ``curves`` (gradient norm, training loss, test accuracy against epoch
    per arm), ``budget`` (budget curves), ``slices_<arm>``, ``grid_<arm>`` (grid arms),
    ``importance_<arm>`` (where importances exist), ``divergence`` (where lr x K_hat is known) and
    papers/003's figures where the study's arms fit them
    (:func:`~lyaptune.analysis.paper_figures.paper_figures`): ``constant_steps`` (a constant-step grid
    arm and a derived arm: one line per grid point plus the derived step, as papers/003 Figure 2) and
    ``gradnorm_vs_schedulers`` (schedule arms and a derived arm, as Figure 1), each referenced in the
    report with a one-line caption.

    Args:
      study: a loaded study (:func:`~lyaptune.analysis.load.load_study`).
      out_dir: a local directory (created).
      formats: any of ``md``, ``html``.
      reference: the reference arm (see :func:`~lyaptune.analysis.compare.reference_choice`; default
        ``"auto"``: the spec's, else the derived arm, else the best arm on the primary metric).
      thresholds: collapse thresholds (stored in the report).
      level, method, seed: interval level and method (``t``, or ``bca`` where n >= 20), BCa seed.
      importance: compute hyperparameter importances (needs the Optuna journal).
      figures: draw the figures (``False``: tables, CSV and JSON only, the report says so; the
        figures are most of a small study's report time).

    Returns:
      The paths written, sorted.

    Raises:
      ConfigError: an unknown format or reference arm.
      UserError: ``out_dir`` is a URI or cannot be written.
    """
    formats = [f.strip().lower() for f in formats if f.strip()]
    for f in formats:
        if f not in REPORT_FORMATS:
            raise ConfigError(f"unknown report format {f!r}; choices: {', '.join(REPORT_FORMATS)}")
    if "://" in os.fspath(out_dir) and not os.fspath(out_dir).startswith("file://"):
        raise UserError(
            f"the report is written to a local directory, got {os.fspath(out_dir)!r}; use --out DIR"
        )
    out = Path(os.fspath(out_dir).removeprefix("file://"))
    try:
        (out / FIGURES_DIR).mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"cannot create the report directory {out}: {err.strerror or err}") from err
    th = thresholds or CollapseThresholds()
    written: list[Path] = []

    def fig_block(fig: Any, stem: str, caption: str) -> Block:
        """Save ``fig`` (a Figure, or a function making one, not called with ``figures=False``)."""
        if not figures:
            return ("p", f"(Figure not drawn, --no-figures: {caption})")
        paths = save_figure(fig() if callable(fig) else fig, out / FIGURES_DIR / stem)
        written.extend(Path(p) for p in paths)
        return ("fig", f"{FIGURES_DIR}/{stem}.png", f"{FIGURES_DIR}/{stem}.svg", caption)

    obj = study.objective
    labels = task_label_stats(study.task, _study_num_classes(study))
    table = compare(study, reference, thresholds=th, level=level, method=method, seed=seed, labels=labels)
    ref = next((str(a) for a, r in zip(table["arm"], table["is_reference"]) if r), None)
    ref_source = str(table["reference_source"].iloc[0]) if len(table) else "none"
    classified = classify_collapse(study.trials, th, labels=labels) if len(study.trials) else study.trials
    methods = {arm: budget_method(study, arm) for arm in study.arms}
    claims = evaluate_claims(study, thresholds=th, labels=labels, level=level)
    match = matching_budgets(study, ref) if ref is not None else pd.DataFrame()
    blocks: list[Block] = [("h1", f"lyaptune report: {study.name}")]
    blocks += answer_blocks(study, table, match)
    if not figures:
        blocks.append(("p", "Figures were not drawn (written with --no-figures); the tables are complete."))
    blocks += claims_blocks(claims, level)
    blocks += _how_to_read(study, table, th, labels, methods, ref, ref_source)
    blocks += _spec_blocks(study)
    blocks += [
        ("h3", "Runs recorded"),
        (
            "table",
            ["arm", "phase", "runs", "completed", "diverged", "stopped", "errored", "running"],
            _status_counts(study),
        ),
    ]

    # -- comparison
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
    (out / "compare.csv").write_text(table.to_csv(index=False))
    (out / "compare.json").write_text(_compare_json(table, th, ref, labels, claims))
    written += [out / "compare.csv", out / "compare.json"]

    # -- curves
    collapsed = {str(r["arm"]): (int(r["n_collapsed"]), int(r["n_completed"])) for _, r in table.iterrows()}
    colors = arm_colors(study.arms, ref)
    blocks.append(("h2", "Training curves"))
    if len(study.epochs) and (study.epochs["phase"] == "final").any():
        blocks.append(
            fig_block(
                lambda: training_curves_figure(
                    study.epochs,
                    arms=study.arms,
                    reference=ref,
                    collapsed=collapsed,
                    title=f"{study.name}: final configurations (mean over seeds, min-max band)",
                ),
                "curves",
                "Gradient norm (log scale), training loss and test accuracy against "
                "epoch for each arm's final configuration; collapsed arms dashed grey.",
            )
        )
        if figures:
            dead = classified.loc[classified["collapsed"], "trial_id"] if len(classified) else ()
            for pfig in paper_figures(study, collapsed=set(dead)):
                blocks.append(("h3", f"papers/003: {pfig.title}"))
                blocks.append(fig_block(pfig.figure, pfig.stem, pfig.caption))
    else:
        blocks.append(("p", "No final-phase epochs recorded yet."))

    # -- budget curves
    blocks.append(("h2", "Budget curves"))
    curves = {arm: budget_curve(study, arm) for arm in study.arms}
    curves = {a: c for a, c in curves.items() if not c.empty}
    long = (
        pd.concat([c.assign(arm=a) for a, c in curves.items()], ignore_index=True)
        if curves
        else pd.DataFrame(columns=["arm", *BUDGET_COLUMNS])
    )
    (out / "budget.csv").write_text(long.to_csv(index=False))
    (out / "matching.csv").write_text(match.to_csv(index=False))
    written += [out / "budget.csv", out / "matching.csv"]
    if curves:
        target = float(match["target"].iloc[0]) if len(match) else None
        matches = {r["arm"]: (None if pd.isna(r["k"]) else int(r["k"])) for _, r in match.iterrows()}
        fig = lambda: budget_figure(  # noqa: E731
            curves,
            metric=obj["metric"],
            mode=obj["mode"],
            reference=ref,
            target=target,
            matches=matches,
            colors=colors,
        )
        est = [
            f"{a}: {c['method'].iloc[0]} (sampler {study.sampler_of(a)}): {c['estimator'].iloc[0]}; "
            f"band: {c['band'].iloc[0]}"
            for a, c in curves.items()
        ]
        blocks += [
            (
                "p",
                f"Best validation {obj['metric']} after k search trials, each arm by the estimator its "
                "sampler allows. 'expected-max' (random, quasi-random, grid search): the expected best of "
                "k trials drawn without replacement from those run, in its exact form (Dodge et al. 2019 "
                "draw with replacement; the two agree for k much smaller than the trials run); its band, "
                "+-1 sd, is the spread of the best of k draws, not an uncertainty of the curve. "
                "'best-so-far' (adaptive samplers such as TPE, CMA-ES, GP, whose trials learn from "
                "earlier ones and are not independent draws): the best of the first k trials in trial "
                "order, averaged over the arm's independent search repeats, the band spanning the worst "
                "to the best repeat; with a single repeat no spread can be shown (the legend says so). "
                "Failed trials (diverged, errored, stopped) count as the arm's worst completed value; "
                "pending trials are left out.",
            ),
            ("ul", est),
            fig_block(
                fig,
                "budget",
                "Best objective against the number of search trials, each curve labelled with its "
                "estimator; the dashed line is the reference arm's mean final objective.",
            ),
        ]
        if len(match):
            rows = [
                [
                    r["arm"],
                    r["reference"],
                    _num(r["target"]),
                    "not matched" if pd.isna(r["k"]) else str(int(r["k"])),
                    str(r["budget"]),
                    _num(r["expected_at_k"]),
                    str(r["method"]),
                ]
                for _, r in match.iterrows()
            ]
            blocks += [
                ("h3", "Trials needed to match the reference"),
                ("p", f"Read with care: these numbers are {MATCHING_NOTE}."),
                (
                    "table",
                    [
                        "arm",
                        "reference",
                        "reference objective",
                        "k",
                        "trials run",
                        "curve value at k (or at all)",
                        "estimator",
                    ],
                    rows,
                ),
            ]
    else:
        blocks.append(("p", "No arm has completed search trials."))

    # -- sensitivity
    blocks.append(("h2", "Sensitivity"))
    notes: list[str] = []
    any_sens = False
    for arm in study.arms:
        sens = sensitivity(study, arm, importance=importance, seed=seed)
        notes += list(sens.notes)
        if sens.trials.empty:
            continue
        any_sens = True
        slug = _slug(arm)
        blocks.append(("h3", arm))
        blocks.append(
            fig_block(
                partial(slices_figure, sens),
                f"slices_{slug}",
                f"{arm}: search objective of each trial against each hyperparameter (x: failed).",
            )
        )
        g = grid_response_figure(sens) if figures else None
        if g is not None:
            blocks.append(
                fig_block(g, f"grid_{slug}", f"{arm}: grid response (1-D means +-1 sd, 2-D mean heatmaps).")
            )
        if not sens.importance.empty:
            f = partial(importance_figure, sens.importance, title=f"{arm}: hyperparameter importance")
            blocks.append(fig_block(f, f"importance_{slug}", f"{arm}: importance by PED-ANOVA and fANOVA."))
            piv = sens.importance.pivot_table(index="param", columns="evaluator", values="importance")
            blocks.append(
                (
                    "table",
                    ["hyperparameter", *map(str, piv.columns)],
                    [[str(i), *(_num(v, 3) for v in row)] for i, row in zip(piv.index, piv.to_numpy())],
                )
            )
    if not any_sens:
        blocks.append(("p", "No arm has search trials."))
    k_hat = study_k_hat(study.trials)
    div = (
        {
            arm: divergence_vs_lr_khat(study.trials[study.trials["arm"] == arm], k_hat=k_hat)
            for arm in study.arms
        }
        if len(study.trials)
        else {}
    )
    if len(study.trials):
        div["all runs"] = divergence_vs_lr_khat(study.trials, k_hat=k_hat)
    dfig = divergence_figure(div, k_hat=k_hat, colors=colors) if figures else None
    blocks.append(("h3", "Divergence against lr x K_hat"))
    if dfig is not None or not figures:
        blocks.append(
            fig_block(
                dfig,
                "divergence",
                "Share of runs that diverged against lr x K_hat (K_hat from the "
                "derived arm's estimate where a run has none); dotted line at 2.",
            )
        )
    else:
        blocks.append(("p", "Not available: no run has both a learning rate and a K_hat estimate."))

    # -- notes
    blocks += [
        ("h2", "Notes on diverged, failed and collapsed runs"),
        ("table", ["arm", "phase", "run", "outcome", "epochs", "detail"], _problem_runs(study, classified)),
    ]
    if len(classified):
        search_collapsed = classified[classified["collapsed"] & (classified["phase"] == "search")]
        counts = search_collapsed.groupby("arm").size().to_dict()
        if counts:
            blocks.append(
                (
                    "p",
                    "Search runs that ended collapsed (typically a learning rate too small to move): "
                    + ", ".join(f"{a} {counts[a]}" for a in study.arms if a in counts)
                    + ". They count as completed trials in the budget curves.",
                )
            )
    if notes:
        blocks += [("h3", "Skipped analyses"), ("ul", notes)]
    runs_csv = classified.drop(
        columns=[c for c in ("info_json", "config_json") if c in classified], errors="ignore"
    )
    (out / "runs.csv").write_text(runs_csv.to_csv(index=False))
    written.append(out / "runs.csv")

    if "md" in formats:
        (out / "report.md").write_text(_md(blocks), encoding="utf-8")
        written.append(out / "report.md")
    if "html" in formats:
        (out / "report.html").write_text(_html(blocks, f"lyaptune report: {study.name}"), encoding="utf-8")
        written.append(out / "report.html")
    return sorted(set(written))


def _compare_json(
    table: pd.DataFrame,
    th: CollapseThresholds,
    ref: str | None,
    labels: LabelStats,
    claims: Sequence[ClaimResult] = (),
) -> str:
    data = json.loads(compare_json(table))
    data["claims"] = [c.to_dict() for c in claims]
    data["settings"].update(
        {
            "reference": ref,
            "reference_source": str(table["reference_source"].iloc[0]) if len(table) else "none",
            "collapse_thresholds": th.to_dict(),
            "collapse_rule": th.describe(),
            "label_stats": {
                "label_entropy": labels.label_entropy,
                "majority_rate": labels.majority_rate,
                "num_classes": labels.num_classes,
                "source": labels.source,
                "note": labels.note,
            },
        }
    )
    return json.dumps(data, indent=2, default=str)


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


def _how_to_read(
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


def write_cross_study(
    studies: Sequence[Study],
    table: pd.DataFrame,
    out_dir: str | os.PathLike[str],
    *,
    level: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
    thresholds: CollapseThresholds | None = None,
) -> list[Path]:
    """Write the cross-study answers of several studies into ``out_dir``.

    Files: ``scores.csv`` (each study's value per arm, :func:`~lyaptune.analysis.crossstudy.study_scores`),
    ``profiles.csv`` (:func:`~lyaptune.analysis.crossstudy.performance_profile` on a quantity where
    smaller is better: loss, gradient norm or error rate, each fraction in [0, 1]), ``improvement.csv``
    (P(A beats B) per ordered pair of arms with a stratified-bootstrap interval, every study kept, a
    collapsed or failed run losing to every valid run, ``rough`` marking intervals from fewer than 5 runs
    per study, :func:`~lyaptune.analysis.crossstudy.pairwise_improvement`), ``cross_study.json`` (all
    of them, with the settings) and ``figures/profiles.png`` / ``.svg``. Studies are told apart by the
    table's ``study`` column (the run directory's name where two runs share a spec name).

    Args:
      studies: the loaded studies, in the table's order.
      table: their :func:`~lyaptune.analysis.compare.compare` table.
      out_dir: a local directory (created).
      level, n_resamples, seed: the bootstrap interval's settings.
      thresholds: the collapse rule (default :class:`CollapseThresholds`).

    Returns:
      The paths written, sorted.

    Raises:
      UserError: ``out_dir`` cannot be written; ConfigError: studies whose primary metrics point in
        different directions, or non-positive values for a profile.
    """
    out = Path(os.fspath(out_dir))
    try:
        (out / FIGURES_DIR).mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"cannot create the output directory {out}: {err.strerror or err}") from err
    th = thresholds or CollapseThresholds()
    scores = study_scores(table)
    profile = performance_profile(scores)
    runs: dict[str, dict[str, Any]] = {}
    modes: dict[str, str] = {}
    labels = list(pd.unique(table["study"]))
    for st, name in zip(studies, labels):
        rows = table[table["study"] == name]
        m = str(rows["rank_by"].iloc[0])
        modes[name] = str(rows[f"{m}_mode"].iloc[0])
        t = st.trials
        fin = t[t["phase"] == "final"] if len(t) else t
        if len(fin):
            stats = task_label_stats(st.task, _study_num_classes(st))
            fin = classify_collapse(fin, th, labels=stats)
        runs[name] = {}
        for arm in rows["arm"]:
            g = fin[fin["arm"] == arm] if len(fin) else fin
            g = g[g["status"] != "running"] if len(g) else g
            if not len(g):
                continue
            vals = pd.to_numeric(g[m], errors="coerce").to_numpy(float)
            # a collapsed or failed run loses to every valid run (NaN): every study is kept
            dead = (g["status"] != "completed").to_numpy() | g["collapsed"].to_numpy(bool)
            runs[name][str(arm)] = np.where(dead, np.nan, vals)
    poi = pairwise_improvement(runs, modes, level=level, n_resamples=n_resamples, seed=seed)
    (out / "scores.csv").write_text(scores.to_csv(index=False))
    (out / "profiles.csv").write_text(profile.to_csv(index=False))
    (out / "improvement.csv").write_text(poi.to_csv(index=False))
    data = {
        "settings": {
            "studies": labels,
            "spec_names": [s.name for s in studies],
            "run_dirs": [s.path for s in studies],
            "level": level,
            "n_resamples": n_resamples,
            "seed": seed,
            "interval": "stratified percentile bootstrap (rliable), runs resampled within each study",
            "rough": f"intervals from fewer than {FEW_RUNS} runs of an arm per study are marked rough",
            "failed_runs": "a collapsed or failed run loses to every valid run (ties 1/2); "
            "every study counts",
            "profile_quantity": str(scores["profile_metric"].iloc[0]) if len(scores) else "",
        },
        "scores": json.loads(scores.to_json(orient="records")),
        "improvement": json.loads(poi.to_json(orient="records")),
        "profiles": json.loads(profile.to_json(orient="records")),
    }
    (out / "cross_study.json").write_text(json.dumps(data, indent=2))
    metric = str(scores["profile_metric"].iloc[0]) if len(scores) else ""
    fig = performance_profile_figure(profile, metric=metric, mode="smaller is better" if metric else "")
    paths = [Path(p) for p in save_figure(fig, out / FIGURES_DIR / "profiles")]
    return sorted(
        [out / "scores.csv", out / "profiles.csv", out / "improvement.csv", out / "cross_study.json", *paths]
    )
