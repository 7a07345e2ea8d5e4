"""papers/003's figures as the paper draws them: the derived step beside every constant step / schedule.

papers/003 compares its derived constant step size alpha = sqrt(2 L(w0) / (K_hat T)) with

- every constant step of a grid (Figures 2, 4, 8, 9 and 11: {1e-2, 1e-3, 1e-4, 1e-5}), not only the
  grid's best: :func:`constant_steps_figure`;
- every step-size schedule (Figures 1, 3, 6, 7 and 10): :func:`schedulers_figure`.

Both draw three panels against epoch (gradient norm on a log scale, training loss, test accuracy),
one line per configuration with a min-max band over its seeds:

- a grid arm (``grid: {lr: [...]}``) gives one curve per grid point, from its search runs (every point
  runs on each search seed; the final phase re-runs only the best point, so it is not used here);
- any other arm (the derived step, a fixed or tuned schedule) gives one curve from its final runs.

:func:`paper_figures` picks the figures a study's arms fit (a constant-step grid arm and a derived arm;
schedule arms and a derived arm), with a caption each; ``lyaptune report`` draws them, and
``analysis/fig_constant_steps.py`` / ``analysis/fig_gradnorm_vs_schedulers.py`` are command lines over
the same functions. Figures are built without pyplot's global state (the ``Agg`` canvas).
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from lyaptune.analysis.figures import shared_legend
from lyaptune.analysis.load import Study
from lyaptune.errors import UserError

__all__ = [
    "DERIVED",
    "PANELS",
    "Curve",
    "PaperFigure",
    "constant_steps_figure",
    "curves_figure",
    "grid_point_curves",
    "paper_figures",
    "schedulers_figure",
]

#: The panels of papers/003's figures: (record field, axis label, log scale).
PANELS: tuple[tuple[str, str, bool], ...] = (
    ("grad_norm", "gradient norm", True),
    ("train_loss", "training loss", False),
    ("test_acc", "test accuracy", False),
)
#: The schedule of the derived constant step size (papers/003 Algorithm 1).
DERIVED = "derived-constant"
#: Line styles telling apart several derived (or several grid) arms in one figure: solid, dashed,
#: dash-dot, dotted, dash-dot-dot, long dashes.
_ARM_STYLES: tuple[Any, ...] = ("-", "--", "-.", ":", (0, (3, 1, 1, 1, 1, 1)), (0, (8, 2)))
_CONSTANT = "constant"


@dataclass(frozen=True)
class Curve:
    """One configuration's per-epoch mean and min-max band over its seeds.

    Attributes:
      label: the legend entry, e.g. ``adam-constant lr=0.001 (3 seeds, search)``.
      arm: the arm it belongs to.
      params: the configuration's searched / grid values (``{}`` for an arm without any).
      phase: ``"search"`` or ``"final"``: which runs were averaged.
      seeds: the seeds averaged.
      epochs: the epoch numbers (1-based).
      mean, low, high: per panel field, the mean / min / max over seeds at each epoch (NaN where no
        seed has a value, e.g. after a divergence).
      derived: whether the arm is the derived constant step.
      n_collapsed: how many of its runs collapsed (METHODS.md section 8; marked in the label and
        with ``x`` markers, so a flat gradient norm of a dead network cannot pass for convergence).
    """

    label: str
    arm: str
    params: dict[str, Any]
    phase: str
    seeds: tuple[int, ...]
    epochs: np.ndarray
    mean: dict[str, np.ndarray]
    low: dict[str, np.ndarray]
    high: dict[str, np.ndarray]
    derived: bool
    n_collapsed: int = 0


@dataclass(frozen=True)
class PaperFigure:
    """A papers/003 figure drawn from a study, ready to save.

    Attributes:
      stem: the file stem (``constant_steps`` or ``gradnorm_vs_schedulers``).
      title: what it compares, e.g. ``derived constant step vs constant steps``.
      figure: the figure.
      curves: the curves drawn (one line per curve in each panel).
      caption: one line saying what it shows: which paper figure, which runs and seeds, what the band is.
    """

    stem: str
    title: str
    figure: Figure
    curves: tuple[Curve, ...]
    caption: str


def _fmt(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _band(epochs: pd.DataFrame, trial_ids: Sequence[str], field: str, grid: np.ndarray) -> tuple:
    if field not in epochs:
        nan = np.full(len(grid), np.nan)
        return nan, nan.copy(), nan.copy()
    rows = epochs[epochs["trial_id"].isin(list(trial_ids))]
    table = rows.pivot_table(index="epoch", columns="trial_id", values=field, aggfunc="last")
    values = table.reindex(grid).to_numpy(dtype=float)
    with warnings.catch_warnings():  # epochs no seed reached (after a divergence) stay NaN
        warnings.simplefilter("ignore", category=RuntimeWarning)
        return np.nanmean(values, axis=1), np.nanmin(values, axis=1), np.nanmax(values, axis=1)


def grid_point_curves(study: Study, arms: Sequence[str], collapsed: Collection[str] = ()) -> list[Curve]:
    """One :class:`Curve` per grid point of every grid arm and per other arm, in the given arm order.

    Grid arms: one curve per distinct configuration of their search runs (sorted by the grid values),
    averaging the search seeds. Other arms: their final runs (the best configuration re-run on the
    final seeds). Runs of every status that wrote epochs are used (a diverged constant step shows
    where it diverged). Per epoch e and field f the curve is mean_s f_s(e) over its seeds s, the band
    [min_s f_s(e), max_s f_s(e)].

    Args:
      study: a loaded study (:func:`lyaptune.analysis.load_study`).
      arms: the arms to draw.
      collapsed: trial ids of collapsed runs (:func:`~lyaptune.analysis.collapse.classify_collapse`);
        a curve with any gets ``[collapsed c/n]`` in its label (and ``x`` markers).

    Returns:
      The curves; an arm without runs of the phase it needs is left out.

    Raises:
      UserError: an unknown arm, or no curve at all to draw.

    References:
      papers/003, Figures 1-4 and 6-11 (one line per configuration, mean over seeds).
    """
    trials, epochs = study.trials, study.epochs
    collapsed = set(collapsed)
    curves: list[Curve] = []
    for arm in arms:
        study.check_arm(arm)
        if not len(trials) or not len(epochs):
            continue
        grid = study.is_grid(arm)
        phase = "search" if grid else "final"
        runs = trials[(trials["arm"] == arm) & (trials["phase"] == phase)]
        runs = runs[runs["trial_id"].isin(set(epochs["trial_id"]))]
        if runs.empty:
            continue
        derived = study.schedule_of(arm) == DERIVED
        groups: dict[str, list[int]] = {}
        params_col = runs["params_json"] if "params_json" in runs else pd.Series(["{}"] * len(runs))
        for i, raw in enumerate(params_col.fillna("{}")):
            key = json.dumps(json.loads(raw) if grid else {}, sort_keys=True)
            groups.setdefault(key, []).append(i)
        for key in sorted(groups, key=lambda k: sorted(json.loads(k).items())):
            params = json.loads(key)
            part = runs.iloc[groups[key]]
            ids = list(part["trial_id"])
            seeds = tuple(sorted(int(s) for s in part["seed"]))
            mine = epochs[epochs["trial_id"].isin(ids)]
            grid_epochs = np.arange(1, int(mine["epoch"].max()) + 1)
            mean, low, high = {}, {}, {}
            for field, _, _ in PANELS:
                mean[field], low[field], high[field] = _band(epochs, ids, field, grid_epochs)
            what = " ".join(f"{k}={_fmt(v)}" for k, v in params.items())
            if derived and "derived_lr" in part:
                alpha = pd.to_numeric(part["derived_lr"], errors="coerce").mean()
                what = f"alpha={alpha:.3g}" if math.isfinite(alpha) else ""
            n = len(seeds)
            dead = sum(t in collapsed for t in ids)
            label = f"{arm} {what}".strip() + (f" [collapsed {dead}/{n}]" if dead else "")
            label += f" ({n} seed{'s' if n != 1 else ''}, {phase})"
            curves.append(
                Curve(label, arm, params, phase, seeds, grid_epochs, mean, low, high, derived, dead)
            )
    if not curves:
        raise UserError(f"no runs with epochs to draw for arms {', '.join(arms)} in {study.path}")
    return curves


def curves_figure(curves: Sequence[Curve], title: str) -> Figure:
    """Three panels (gradient norm, log scale; training loss; test accuracy) against epoch.

    Each curve is its seeds' mean (a line, labelled) with a min-max band (a shaded area, no line),
    the training loss on a log scale too when its means span more than two orders of magnitude,
    so every panel holds exactly one line per curve, bands in the lines' order. The derived step is
    black and drawn on top; the grid points of an arm share a sequential colour map ordered by their
    values; other arms take matplotlib's ``tab10`` cycle (``tab20`` beyond 10 arms). Where several
    derived or several grid arms share a figure (e.g. one per network width), each of them gets its
    own line style; a curve with collapsed runs has ``x`` markers. One legend below the panels.

    Args:
      curves: from :func:`grid_point_curves`.
      title: the figure title.

    Returns:
      The figure.
    """
    fig = Figure(figsize=(5.0 * len(PANELS), 4.6 + 0.16 * len(curves)), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(PANELS), squeeze=False)[0]
    by_arm: dict[str, list[Curve]] = {}
    for c in curves:
        by_arm.setdefault(c.arm, []).append(c)
    colors: dict[int, Any] = {}
    styles: dict[int, str] = {}
    n_single = sum(1 for members in by_arm.values() if len(members) == 1 and not members[0].derived)
    palette = matplotlib.colormaps["tab10" if n_single <= 10 else "tab20"].colors  # 16 schedule arms
    others = iter(list(palette) * (1 + n_single // len(palette)))
    kinds: dict[str, int] = {}  # arms so far per kind (derived / grid): the line style of the next one
    for members in by_arm.values():
        kind = "derived" if members[0].derived else ("grid" if len(members) > 1 else "other")
        style = _ARM_STYLES[kinds.get(kind, 0) % len(_ARM_STYLES)] if kind != "other" else "-"
        kinds[kind] = kinds.get(kind, 0) + 1
        for c in members:
            styles[id(c)] = style
        if members[0].derived:
            for c in members:
                colors[id(c)] = "black"
        elif len(members) > 1:
            shades = matplotlib.colormaps["viridis"](np.linspace(0.0, 0.85, len(members)))
            for c, shade in zip(members, shades):
                colors[id(c)] = shade
        else:
            colors[id(members[0])] = next(others)
    for ax, (field, name, log) in zip(axes, PANELS):
        if not log and field.endswith("_loss"):  # a run that blew up would flatten the others
            y = np.concatenate([c.mean[field] for c in curves])
            y = y[np.isfinite(y) & (y > 0)]
            log = bool(y.size) and float(y.max() / y.min()) > 100.0
            name += " (log scale)" if log else ""
        for c in curves:
            color = colors[id(c)]
            z = 3 if c.derived else 2
            y, lo, hi = c.mean[field], c.low[field], c.high[field]
            if log:  # a log axis cannot show zero or below
                y, lo, hi = (np.where(v > 0, v, np.nan) for v in (y, lo, hi))
            ax.fill_between(c.epochs, lo, hi, color=color, alpha=0.18, lw=0, zorder=z)
            lw = 2.2 if c.derived else 1.4
            marker = "x" if c.n_collapsed else None
            ax.plot(c.epochs, y, color=color, ls=styles[id(c)], marker=marker, lw=lw, label=c.label, zorder=z)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(name)
        if log:
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
    shared_legend(fig, axes[0], max_columns=3)
    fig.suptitle(title)
    return fig


def _constant_arms(study: Study) -> list[str]:
    return study.arms_by_schedule(include=(_CONSTANT, DERIVED))


def _schedule_arms(study: Study) -> list[str]:
    return [a for a in study.arms if study.schedule_of(a) not in (None, _CONSTANT)]


def constant_steps_figure(
    study: Study, arms: Sequence[str] | None = None, collapsed: Collection[str] = ()
) -> Figure:
    """papers/003 Figure 2: every constant step of the grid and the derived step.

    Args:
      study: a loaded study.
      arms: the arms to draw (default: those with a ``constant`` or ``derived-constant`` schedule).
      collapsed: trial ids of collapsed runs (marked, see :func:`grid_point_curves`).

    Returns:
      The figure (one line per grid point plus one per other arm, in each panel).

    References:
      papers/003, Figures 2, 4, 8, 9 and 11 (comparison with constant step sizes).
    """
    curves = grid_point_curves(study, list(arms) if arms else _constant_arms(study), collapsed)
    return curves_figure(curves, f"{study.name}: derived constant step vs constant steps")


def schedulers_figure(
    study: Study, arms: Sequence[str] | None = None, collapsed: Collection[str] = ()
) -> Figure:
    """papers/003 Figure 1: every step-size schedule arm and the derived step.

    Args:
      study: a loaded study (:func:`lyaptune.analysis.load_study`).
      arms: the arms to draw (default: every arm whose schedule is not a plain ``constant``, the
        derived step included).
      collapsed: trial ids of collapsed runs (marked, see :func:`grid_point_curves`).

    Returns:
      The figure, one line per arm (per grid point for a grid arm) in each panel.

    References:
      papers/003, Figures 1, 3, 6, 7 and 10 (comparison with schedulers).
    """
    curves = grid_point_curves(study, list(arms) if arms else _schedule_arms(study), collapsed)
    return curves_figure(curves, f"{study.name}: derived constant step vs step-size schedules")


def _seeds_text(curves: Sequence[Curve], phase: str) -> str:
    counts = sorted({len(c.seeds) for c in curves if c.phase == phase})
    if not counts:
        return ""
    n = f"{counts[0]}-{counts[-1]}" if len(counts) > 1 else str(counts[0])
    return f"{phase} runs, {n} seed{'s' if counts[-1] != 1 else ''} each"


def _caption(which: str, figures: str, curves: Sequence[Curve]) -> str:
    derived = [c for c in curves if c.derived]
    rest = [c for c in curves if not c.derived]
    grid_points = [c for c in rest if c.phase == "search"]
    parts = []
    if grid_points:
        arms = ", ".join(dict.fromkeys(c.arm for c in grid_points))
        parts.append(f"{len(grid_points)} grid points of {arms} ({_seeds_text(grid_points, 'search')})")
    finals = [c for c in rest if c.phase == "final"]
    if finals:
        parts.append(f"{len(finals)} arm{'s' if len(finals) != 1 else ''} ({_seeds_text(finals, 'final')})")
    n_derived = len({c.arm for c in derived})
    what = "the derived step" if n_derived == 1 else f"{n_derived} derived steps (a line style each)"
    parts.append(f"{what} in black ({_seeds_text(derived, 'final')})")
    dead = sum(1 for c in curves if c.n_collapsed)
    return (
        f"papers/003 {figures} ({which}): gradient norm (log scale), training loss and test accuracy "
        f"against epoch for {'; '.join(parts)}; each line is the mean over its seeds, the band the "
        "min-max over them"
        + (f"; x markers: {dead} curve{'s' if dead != 1 else ''} with collapsed runs." if dead else ".")
    )


def paper_figures(study: Study, collapsed: Collection[str] = ()) -> list[PaperFigure]:
    """The papers/003 figures that ``study``'s arms fit, each with its caption.

    - A derived arm (``derived-constant``) and a constant-step grid arm (schedule ``constant`` with a
      ``grid``): :func:`constant_steps_figure` over the constant and derived arms, one line per grid
      point plus the derived step (papers/003 Figures 2, 4, 8, 9, 11).
    - A derived arm and at least one arm with another schedule (step, cosine, one-cycle, ...):
      :func:`schedulers_figure` over the schedule arms and the derived step (Figures 1, 3, 6, 7, 10).

    A figure is left out while its arms have no epochs recorded (for the constant-steps figure: no grid
    point's search runs).

    Args:
      study: a loaded study with its epochs.
      collapsed: trial ids of collapsed runs (marked, see :func:`grid_point_curves`).

    Returns:
      The figures, constant steps first; ``[]`` when the study fits neither.

    References:
      papers/003, Section 5 (Figures 1-4, 6-11).
    """
    arms = study.arms
    if not len(study.trials) or not len(study.epochs):
        return []
    schedules = {a: study.schedule_of(a) for a in arms}
    if DERIVED not in schedules.values():
        return []
    out: list[PaperFigure] = []
    plans = []
    if any(s == _CONSTANT and study.is_grid(a) for a, s in schedules.items()):
        plans.append(
            (
                "constant_steps",
                _constant_arms(study),
                "derived constant step vs constant steps",
                "Figure 2 (also 4, 8, 9, 11)",
            )
        )
    if any(s not in (None, _CONSTANT, DERIVED) for s in schedules.values()):
        plans.append(
            (
                "gradnorm_vs_schedulers",
                _schedule_arms(study),
                "derived constant step vs step-size schedules",
                "Figure 1 (also 3, 6, 7, 10)",
            )
        )
    for stem, chosen, which, figures in plans:
        try:
            curves = grid_point_curves(study, chosen, set(collapsed))
        except UserError:  # no epochs for these arms yet
            continue
        if not any(c.derived for c in curves):
            continue
        if stem == "constant_steps" and not any(c.phase == "search" for c in curves):
            continue  # no grid point has epochs (yet): nothing of Figure 2 to draw
        if all(c.derived for c in curves):
            continue  # nothing to set the derived step against (yet)
        fig = curves_figure(curves, f"{study.name}: {which}")
        out.append(PaperFigure(stem, which, fig, tuple(curves), _caption(which, figures, curves)))
    return out
