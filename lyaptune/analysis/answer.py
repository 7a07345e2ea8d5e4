"""The report's opening "Answer": a few sentences and one table, generated from the comparison table.

It restates, for a reader who has one screen, what :func:`~lyaptune.analysis.compare.compare` already
decided (METHODS.md section 8), and computes no statistic of its own: per arm the first primary
metric (the spec's ``compare:``, the ranking metric) with its interval, test accuracy, the collapsed
and failed final runs, the verdict against the reference on that metric (the comparison table's
``<metric>_verdict``, so collapse and failure decide without a test exactly as there), and the tuning
cost (``tuning_device_s``: search training seconds plus K_hat estimation). For each derived arm
(schedule ``derived-constant``, papers/003) it reads K_hat and the step alpha = sqrt(2 L(w0) / (K_hat T))
its runs stored (``k_hat`` and ``derived_lr`` of the trials table).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from lyaptune.analysis.formatting import Block, fmt_metric, num
from lyaptune.analysis.load import DERIVED_SCHEDULE, Study
from lyaptune.metrics import metric_info

__all__ = ["ANSWER_ID", "Answer", "DerivedStep", "answer", "answer_blocks", "derived_steps"]

#: The HTML id of the Answer block (``<section id="answer">``).
ANSWER_ID = "answer"
#: Test accuracy, shown beside the primary metric whatever the spec compares.
TEST_ACC = "final_test_acc"


@dataclass(frozen=True)
class DerivedStep:
    """K_hat and the derived step alpha a derived arm's runs stored (papers/003, METHODS.md section 4).

    Attributes:
      arm: the arm.
      runs: the runs the values come from: the arm's completed final runs that stored K_hat, else any
        of its runs that did.
      phase: ``final`` or ``any`` (which runs).
      k_hat, k_hat_min, k_hat_max: mean, smallest and largest K_hat over those runs.
      alpha, alpha_min, alpha_max: the same of the derived step alpha = sqrt(2 L(w0) / (K_hat T)).
    """

    arm: str
    runs: int
    phase: str
    k_hat: float
    k_hat_min: float
    k_hat_max: float
    alpha: float
    alpha_min: float
    alpha_max: float


def derived_steps(study: Study) -> dict[str, DerivedStep]:
    """K_hat and alpha of every derived arm (schedule :data:`DERIVED_SCHEDULE`), from its stored runs.

    Args:
      study: a loaded study.

    Returns:
      ``{arm: DerivedStep}`` in spec order, for the derived arms with at least one run that stored a
      finite K_hat; the mean is the arithmetic mean over those runs.
    """
    t = study.trials
    out: dict[str, DerivedStep] = {}
    if not len(t) or "k_hat" not in t:
        return out
    for arm in study.arms:
        if study.schedule_of(arm) != DERIVED_SCHEDULE:
            continue
        rows = t[(t["arm"] == arm) & pd.to_numeric(t["k_hat"], errors="coerce").notna()]
        final = rows[(rows["phase"] == "final") & (rows["status"] == "completed")]
        use, phase = (final, "final") if len(final) else (rows, "any")
        if not len(use):
            continue
        k = pd.to_numeric(use["k_hat"], errors="coerce").to_numpy(float)
        a = pd.to_numeric(use.get("derived_lr", pd.Series(np.nan, index=use.index)), errors="coerce")
        a = a.to_numpy(float)
        af = a[np.isfinite(a)]
        out[arm] = DerivedStep(
            arm=arm,
            runs=len(use),
            phase=phase,
            k_hat=float(k.mean()),
            k_hat_min=float(k.min()),
            k_hat_max=float(k.max()),
            alpha=float(af.mean()) if af.size else math.nan,
            alpha_min=float(af.min()) if af.size else math.nan,
            alpha_max=float(af.max()) if af.size else math.nan,
        )
    return out


@dataclass(frozen=True)
class Answer:
    """The Answer block: sentences, one table (header and rows of strings) and its footnotes."""

    sentences: list[str]
    header: list[str]
    rows: list[list[str]]
    notes: list[str] = field(default_factory=list)

    def blocks(self) -> list[Block]:
        """Report blocks: an HTML section ``answer`` holding the heading, sentences, table and notes."""
        return [
            ("section", ANSWER_ID),
            ("h2", "Answer"),
            *(("p", s) for s in self.sentences),
            ("table", self.header, self.rows),
            *(("note", n) for n in self.notes),
            ("end",),
        ]


def _spread(mean: float, lo: float, hi: float, digits: int = 3) -> str:
    """``mean`` with the range of the runs when they differ in the shown digits: ``0.388 (0.382-0.398)``."""
    cell = num(mean, digits)
    if num(lo, digits) != num(hi, digits):
        cell += f" ({num(lo, digits)}-{num(hi, digits)})"
    return cell


def _center(r: pd.Series, m: str) -> str:
    """The arm's value of metric ``m`` with its interval, as the comparison table computed them."""
    n = int(r.get(f"{m}_n", 0) or 0)
    if n == 0:
        return "-"
    log = r.get(f"{m}_scale") == "log"
    key = f"{m}_gmean" if log else f"{m}_mean"
    if log and not math.isfinite(float(r[key])):
        return f"- (a value <= 0; mean {num(r[f'{m}_mean'])})"
    cell = fmt_metric(m, r[key])
    if n >= 2:
        pre = key if log else m
        cell += f" [{fmt_metric(m, r[f'{pre}_ci_low'])}, {fmt_metric(m, r[f'{pre}_ci_high'])}]"
    return cell


def _cost(r: pd.Series) -> str:
    """The tuning cost cell: device-seconds and what they are: ``1.3 (search, 12 trials)``,
    ``6.39 (K_hat, 3 estimates)``, or ``7.7 = search 1.3 (12 trials) + K_hat 6.4 (3 estimates)``."""
    parts = []
    if int(r["search_runs"]):
        n = int(r["search_trials"])
        parts.append(("search", num(r["search_device_s"], 3), f"{n} trial{'' if n == 1 else 's'}"))
    k = int(r.get("khat_runs", 0) or 0)
    if k or float(r["khat_s"]) > 0:
        parts.append(("K_hat", num(r["khat_s"], 3), f"{k} estimate{'' if k == 1 else 's'}"))
    total = num(r["tuning_device_s"], 3)
    if not parts:
        return f"{total} (nothing tuned)"
    if len(parts) == 1:
        return f"{total} ({parts[0][0]}, {parts[0][2]})"
    return f"{total} = " + " + ".join(f"{what} {secs} ({n})" for what, secs, n in parts)


def _test_acc(r: pd.Series) -> str:
    return fmt_metric(TEST_ACC, r[f"{TEST_ACC}_mean"]) if f"{TEST_ACC}_mean" in r else "-"


def _verdict(r: pd.Series, m: str) -> str:
    v = str(r.get(f"{m}_verdict", "") or "")
    return v or "-"


def _count_phrase(r: pd.Series) -> str:
    k, j, n = int(r["n_collapsed"]), int(r["n_failed"]), int(r["n_final"])
    bits = [f"collapsed on {k}" if k else "", f"failed on {j}" if j else ""]
    return " and ".join(b for b in bits if b) + f" of {n} final seeds"


def _sentences(
    study: Study, table: pd.DataFrame, steps: dict[str, DerivedStep], match: pd.DataFrame | None
) -> list[str]:
    primary = study.primary_metrics
    m = primary[0]["metric"] if primary else str(table["rank_by"].iloc[0])
    label = metric_info(m).label
    mode = "lower" if (primary[0]["mode"] if primary else metric_info(m).mode) == "min" else "higher"
    ref_rows = table[table["is_reference"].astype(bool)]
    ref = str(ref_rows["arm"].iloc[0]) if len(ref_rows) else None
    n_final = sorted({int(n) for n in table["n_final"]})
    out = [
        f"Each arm's best configuration re-run on {'/'.join(map(str, n_final))} fresh final seeds, "
        f"judged on {label} at the final epoch ({mode} is better; the spec's primary metric)"
        + (f" against the reference arm '{ref}'." if ref else "; no reference arm, so no verdicts.")
    ]
    bad = [r for _, r in table.iterrows() if int(r["n_collapsed"]) or int(r["n_failed"])]
    if bad:
        out.append(
            "; ".join(f"'{r['arm']}' {_count_phrase(r)} (test accuracy {_test_acc(r)})" for r in bad)
            + ": such runs are counted, never ranked as wins."
        )
    others = [r for _, r in table.iterrows() if str(r["arm"]) != ref] if ref is not None else []
    groups: dict[tuple[str, ...], list[str]] = {}  # primary metrics with the same verdicts, together
    for p in primary or [{"metric": m}]:
        if f"{p['metric']}_verdict" in table:
            key = tuple(_verdict(r, p["metric"]) for r in others)
            groups.setdefault(key, []).append(metric_info(p["metric"]).label)
    for verdicts, labels in groups.items() if others else ():
        out.append(
            f"Against '{ref}' on {' and '.join(labels)}: "
            + "; ".join(f"'{r['arm']}' {v}" for r, v in zip(others, verdicts))
            + " (paired t-test, Holm-adjusted, or decided by collapse and failure: METHODS.md section 8)."
        )
    ranked = table[table["rank"].notna()].sort_values("rank") if "rank" in table else table.iloc[:0]
    if len(ranked):
        out.append(
            f"Best arm on {label} among those with no collapsed or failed run: '{ranked['arm'].iloc[0]}'."
        )
    if match is not None and len(match):
        ks = [
            f"'{r['arm']}' " + ("not matched" if pd.isna(r["k"]) else f"after {int(r['k'])}")
            for _, r in match.iterrows()
        ]
        out.append(
            f"Search trials a tuned arm needs to match the reference's objective: {', '.join(ks)} "
            "(a selected best against an unselected mean, which favours the tuned arm)."
        )
    for s in steps.values():
        out.append(
            f"'{s.arm}' ran at the derived step alpha = sqrt(2 L(w0) / (K_hat T)) = "
            f"{_spread(s.alpha, s.alpha_min, s.alpha_max)} from K_hat = "
            f"{_spread(s.k_hat, s.k_hat_min, s.k_hat_max)} (mean over {s.runs} "
            f"{'final runs' if s.phase == 'final' else 'runs'}; range in parentheses)."
        )
    return out


def answer(study: Study, table: pd.DataFrame, match: pd.DataFrame | None = None) -> Answer:
    """The Answer block of ``study``'s report, from its comparison table.

    Args:
      study: the loaded study (for its primary metrics and derived arms' stored K_hat and alpha).
      table: :func:`~lyaptune.analysis.compare.compare` of ``study`` (one study).
      match: :func:`~lyaptune.analysis.budget.matching_budgets` against the reference, or ``None``.

    Returns:
      The sentences, one row per arm (arm, primary metric with its interval, test accuracy,
      collapsed / failed of the final runs, verdict against the reference on the primary metric,
      tuning device-seconds, K_hat, alpha) and the footnotes saying what is counted.
    """
    primary = study.primary_metrics
    m = primary[0]["metric"] if primary else str(table["rank_by"].iloc[0])
    info = metric_info(m)
    level = float(table.attrs.get("level", 0.95))
    center = "geometric mean" if info.scale == "log" else "mean"
    ns = sorted({int(n) for n in table.get(f"{m}_n", pd.Series(dtype=int))})
    ci_method = "Student-t" if table.attrs.get("method", "t") == "t" else "BCa / t"
    steps = derived_steps(study)
    ref_rows = table[table["is_reference"].astype(bool)]
    ref = str(ref_rows["arm"].iloc[0]) if len(ref_rows) else None
    header = [
        "arm",
        f"{info.label} (primary): {center} [{level:.0%} CI]",
        "test acc: mean",
        "collapsed / failed",
        f"verdict vs {ref}" if ref else "verdict",
        "tuning device-s (1)",
        "K_hat",
        "alpha",
    ]
    rows = []
    for _, r in table.iterrows():
        arm = str(r["arm"])
        s = steps.get(arm)
        rows.append(
            [
                arm + (" (ref)" if bool(r["is_reference"]) else ""),
                _center(r, m),
                _test_acc(r),
                f"{int(r['n_collapsed'])} / {int(r['n_failed'])} of {int(r['n_final'])}",
                _verdict(r, m),
                _cost(r),
                _spread(s.k_hat, s.k_hat_min, s.k_hat_max) if s else "-",
                _spread(s.alpha, s.alpha_min, s.alpha_max) if s else "-",
            ]
        )
    unclocked = int(table["search_runs_unclocked"].sum()) if "search_runs_unclocked" in table else 0
    eval_s = float(table["search_eval_s"].sum()) if "search_eval_s" in table else math.nan
    notes = [
        "(1) Tuning cost in device-seconds = the search runs' training time (each run's training clock "
        "train_s; a member of a vmapped population charged its 1 / P share) + the time of every K_hat "
        "estimate of the arm's runs, search and final (the derived step's tuning). Not counted: the "
        f"search runs' evaluation ({num(eval_s, 3)} device-s in all), data loading, Ray's start-up and "
        "the final runs' training."
        + (
            f" {unclocked} search run(s) recorded without a training clock are charged their wall time."
            if unclocked
            else ""
        ),
        f"Intervals: {ci_method} {level:.0%} over the completed final runs (n = "
        f"{', '.join(map(str, ns)) or '-'}); the verdict is the comparison table's on this metric. "
        "K_hat and alpha: mean over the derived arm's final runs, each estimating its own K_hat; "
        "the range in parentheses.",
    ]
    return Answer(_sentences(study, table, steps, match), header, rows, notes)


def answer_blocks(study: Study, table: pd.DataFrame, match: pd.DataFrame | None = None) -> list[Block]:
    """:func:`answer` as report blocks (an HTML section ``answer``; no statistics of its own)."""
    if not len(table):
        return [
            ("section", ANSWER_ID),
            ("h2", "Answer"),
            ("p", "No runs recorded yet: nothing to answer."),
            ("end",),
        ]
    return answer(study, table, match).blocks()
