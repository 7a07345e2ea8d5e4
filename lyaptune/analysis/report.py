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
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
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
from lyaptune.analysis.formatting import num as _num
from lyaptune.analysis.load import Study
from lyaptune.analysis.paper_figures import paper_figures
from lyaptune.analysis.report_sections import (
    claims_blocks,
    comparison_blocks,
    how_to_read,
    problem_runs,
    spec_blocks,
    status_counts,
)
from lyaptune.analysis.sensitivity import divergence_vs_lr_khat, sensitivity, study_k_hat
from lyaptune.analysis.tables import format_compare_tables
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
    labels = task_label_stats(study.task, _study_num_classes(study))
    table = compare(study, reference, thresholds=th, level=level, method=method, seed=seed, labels=labels)
    ref = next((str(a) for a, r in zip(table["arm"], table["is_reference"]) if r), None)
    w = _Writer(
        study=study,
        out=out,
        figures=figures,
        importance=importance,
        seed=seed,
        th=th,
        labels=labels,
        table=table,
        ref=ref,
        classified=classify_collapse(study.trials, th, labels=labels) if len(study.trials) else study.trials,
        claims=evaluate_claims(study, thresholds=th, labels=labels, level=level),
        match=matching_budgets(study, ref) if ref is not None else pd.DataFrame(),
    )
    ref_source = str(table["reference_source"].iloc[0]) if len(table) else "none"
    methods = {arm: budget_method(study, arm) for arm in study.arms}
    blocks: list[Block] = [("h1", f"lyaptune report: {study.name}")]
    blocks += answer_blocks(study, table, w.match)
    if not figures:
        blocks.append(("p", "Figures were not drawn (written with --no-figures); the tables are complete."))
    blocks += claims_blocks(w.claims, level)
    blocks += how_to_read(study, table, th, labels, methods, ref, ref_source)
    blocks += spec_blocks(study)
    blocks += [
        ("h3", "Runs recorded"),
        (
            "table",
            ["arm", "phase", "runs", "completed", "diverged", "stopped", "errored", "running"],
            status_counts(study),
        ),
    ]
    blocks += comparison_blocks(study, table, th, labels, level=level, method=method)
    w.write("compare.csv", table.to_csv(index=False))
    w.write("compare.json", _compare_json(table, th, ref, labels, w.claims))
    blocks += w.curves()
    blocks += w.budget()
    blocks += w.sensitivity()
    blocks += w.notes()
    if "md" in formats:
        w.write("report.md", _md(blocks))
    if "html" in formats:
        w.write("report.html", _html(blocks, f"lyaptune report: {study.name}"))
    written = w.written
    return sorted(set(written))


def _budget_intro(metric: str) -> str:
    """What the budget curves show, by estimator (METHODS.md section 8 "Budget curves")."""
    return (
        f"Best validation {metric} after k search trials, each arm by the estimator its "
        "sampler allows. 'expected-max' (random, quasi-random, grid search): the expected best of "
        "k trials drawn without replacement from those run, in its exact form (Dodge et al. 2019 "
        "draw with replacement; the two agree for k much smaller than the trials run); its band, "
        "+-1 sd, is the spread of the best of k draws, not an uncertainty of the curve. "
        "'best-so-far' (adaptive samplers such as TPE, CMA-ES, GP, whose trials learn from "
        "earlier ones and are not independent draws): the best of the first k trials in trial "
        "order, averaged over the arm's independent search repeats, the band spanning the worst "
        "to the best repeat; with a single repeat no spread can be shown (the legend says so). "
        "Failed trials (diverged, errored, stopped) count as the arm's worst completed value; "
        "pending trials are left out."
    )


@dataclass
class _Writer:
    """The report's detail sections after the comparison, and the files they write (in ``out``)."""

    study: Study
    out: Path
    figures: bool
    importance: bool
    seed: int
    th: CollapseThresholds
    labels: LabelStats
    table: pd.DataFrame
    ref: str | None
    classified: pd.DataFrame
    claims: Sequence[ClaimResult]
    match: pd.DataFrame
    written: list[Path] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # analyses skipped, with the reason

    def write(self, name: str, text: str) -> None:
        (self.out / name).write_text(text, encoding="utf-8")
        self.written.append(self.out / name)

    def fig(self, fig: Any, stem: str, caption: str) -> Block:
        """Save ``fig`` (a Figure, or a function making one, not called with ``figures=False``)."""
        if not self.figures:
            return ("p", f"(Figure not drawn, --no-figures: {caption})")
        paths = save_figure(fig() if callable(fig) else fig, self.out / FIGURES_DIR / stem)
        self.written.extend(Path(p) for p in paths)
        return ("fig", f"{FIGURES_DIR}/{stem}.png", f"{FIGURES_DIR}/{stem}.svg", caption)

    @property
    def colors(self) -> dict[str, Any]:
        return arm_colors(self.study.arms, self.ref)

    def curves(self) -> list[Block]:
        """Training curves of the final runs, and papers/003's figures where the arms fit them."""
        study, table = self.study, self.table
        collapsed = {
            str(r["arm"]): (int(r["n_collapsed"]), int(r["n_completed"])) for _, r in table.iterrows()
        }
        blocks: list[Block] = [("h2", "Training curves")]
        if not (len(study.epochs) and (study.epochs["phase"] == "final").any()):
            return [*blocks, ("p", "No final-phase epochs recorded yet.")]
        blocks.append(
            self.fig(
                lambda: training_curves_figure(
                    study.epochs,
                    arms=study.arms,
                    reference=self.ref,
                    collapsed=collapsed,
                    title=f"{study.name}: final configurations (mean over seeds, min-max band)",
                ),
                "curves",
                "Gradient norm (log scale), training loss and test accuracy against "
                "epoch for each arm's final configuration; collapsed arms dashed grey.",
            )
        )
        if self.figures:
            c = self.classified
            dead = c.loc[c["collapsed"], "trial_id"] if len(c) else ()
            for pfig in paper_figures(study, collapsed=set(dead)):
                blocks.append(("h3", f"papers/003: {pfig.title}"))
                blocks.append(self.fig(pfig.figure, pfig.stem, pfig.caption))
        return blocks

    def budget(self) -> list[Block]:
        """Budget curves (by the estimator each sampler allows) and trials needed to match the reference."""
        study, match, obj = self.study, self.match, self.study.objective
        blocks: list[Block] = []
        blocks.append(("h2", "Budget curves"))
        curves = {arm: budget_curve(study, arm) for arm in study.arms}
        curves = {a: c for a, c in curves.items() if not c.empty}
        long = (
            pd.concat([c.assign(arm=a) for a, c in curves.items()], ignore_index=True)
            if curves
            else pd.DataFrame(columns=["arm", *BUDGET_COLUMNS])
        )
        self.write("budget.csv", long.to_csv(index=False))
        self.write("matching.csv", match.to_csv(index=False))
        if curves:
            target = float(match["target"].iloc[0]) if len(match) else None
            matches = {r["arm"]: (None if pd.isna(r["k"]) else int(r["k"])) for _, r in match.iterrows()}
            fig = lambda: budget_figure(  # noqa: E731
                curves,
                metric=obj["metric"],
                mode=obj["mode"],
                reference=self.ref,
                target=target,
                matches=matches,
                colors=self.colors,
            )
            est = [
                f"{a}: {c['method'].iloc[0]} (sampler {study.sampler_of(a)}): {c['estimator'].iloc[0]}; "
                f"band: {c['band'].iloc[0]}"
                for a, c in curves.items()
            ]
            blocks += [
                (
                    "p",
                    _budget_intro(obj["metric"]),
                ),
                ("ul", est),
                self.fig(
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
        return blocks

    def sensitivity(self) -> list[Block]:
        """Per arm: the search objective against each hyperparameter, grid responses, importances; and
        divergence against lr x K_hat."""
        study = self.study
        blocks: list[Block] = []
        blocks.append(("h2", "Sensitivity"))
        any_sens = False
        for arm in study.arms:
            sens = sensitivity(study, arm, importance=self.importance, seed=self.seed)
            self.skipped += list(sens.notes)
            if sens.trials.empty:
                continue
            any_sens = True
            slug = _slug(arm)
            blocks.append(("h3", arm))
            blocks.append(
                self.fig(
                    partial(slices_figure, sens),
                    f"slices_{slug}",
                    f"{arm}: search objective of each trial against each hyperparameter (x: failed).",
                )
            )
            g = grid_response_figure(sens) if self.figures else None
            if g is not None:
                blocks.append(
                    self.fig(
                        g, f"grid_{slug}", f"{arm}: grid response (1-D means +-1 sd, 2-D mean heatmaps)."
                    )
                )
            if not sens.importance.empty:
                f = partial(importance_figure, sens.importance, title=f"{arm}: hyperparameter importance")
                blocks.append(
                    self.fig(f, f"importance_{slug}", f"{arm}: importance by PED-ANOVA and fANOVA.")
                )
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
        dfig = divergence_figure(div, k_hat=k_hat, colors=self.colors) if self.figures else None
        blocks.append(("h3", "Divergence against lr x K_hat"))
        if dfig is not None or not self.figures:
            blocks.append(
                self.fig(
                    dfig,
                    "divergence",
                    "Share of runs that diverged against lr x K_hat (K_hat from the "
                    "derived arm's estimate where a run has none); dotted line at 2.",
                )
            )
        else:
            blocks.append(("p", "Not available: no run has both a learning rate and a K_hat estimate."))
        return blocks

    def notes(self) -> list[Block]:
        """Diverged, failed and collapsed runs; skipped analyses; ``runs.csv``."""
        study, classified = self.study, self.classified
        blocks: list[Block] = []
        blocks += [
            ("h2", "Notes on diverged, failed and collapsed runs"),
            (
                "table",
                ["arm", "phase", "run", "outcome", "epochs", "detail"],
                problem_runs(study, classified),
            ),
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
        if self.skipped:
            blocks += [("h3", "Skipped analyses"), ("ul", self.skipped)]
        runs_csv = classified.drop(
            columns=[c for c in ("info_json", "config_json") if c in classified], errors="ignore"
        )
        self.write("runs.csv", runs_csv.to_csv(index=False))
        return blocks


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
