"""papers/003 Figures 2, 4, 8, 9 and 11: the derived constant step size against every constant step.

As papers/003 Figure 2 draws it: three panels against epoch (gradient norm on a log scale, training
loss, test accuracy) with one curve per constant step of the grid (e.g. {1e-2, 1e-3, 1e-4, 1e-5}),
not only the grid's best, beside the derived step alpha = sqrt(2 L(w0) / (K_hat T)) in black. Each
curve is the mean over that configuration's seeds with a min-max band (a single seed: the run itself):

- a grid arm (``grid: {lr: [...]}``) gives one curve per grid point, from its search runs (every point
  is run on each search seed; the final phase re-runs only the best point, so it is not used here);
- any other arm (the derived step, a fixed constant) gives one curve from its final runs.

    python analysis/fig_constant_steps.py runs/003_fc_fullbatch_constant_steps_d1 [--out figures/]

Writes ``constant_steps.png`` and ``constant_steps.svg`` and prints their paths. ``grid_point_curves``
and ``curves_figure`` are shared with ``fig_gradnorm_vs_schedulers.py``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from lyaptune.analysis import Study, load_study  # noqa: E402
from lyaptune.errors import UserError  # noqa: E402

#: The panels of papers/003's figures: (record field, axis label, log scale).
PANELS: tuple[tuple[str, str, bool], ...] = (
    ("grad_norm", "gradient norm", True),
    ("train_loss", "training loss", False),
    ("test_acc", "test accuracy", False),
)
DERIVED = "derived-constant"


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


def _fmt(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _band(epochs: pd.DataFrame, trial_ids: Sequence[str], field: str, grid: np.ndarray) -> tuple:
    rows = epochs[epochs["trial_id"].isin(list(trial_ids))]
    table = rows.pivot_table(index="epoch", columns="trial_id", values=field, aggfunc="last")
    values = table.reindex(grid).to_numpy(dtype=float)
    with warnings.catch_warnings():  # epochs no seed reached (after a divergence) stay NaN
        warnings.simplefilter("ignore", category=RuntimeWarning)
        return np.nanmean(values, axis=1), np.nanmin(values, axis=1), np.nanmax(values, axis=1)


def grid_point_curves(study: Study, arms: Sequence[str]) -> list[Curve]:
    """One :class:`Curve` per grid point of every grid arm and per other arm, in the given arm order.

    Grid arms: one curve per distinct configuration of their search runs (sorted by the grid values),
    averaging the search seeds. Other arms: their final runs (the best configuration re-run on the
    final seeds). Runs of every status that wrote epochs are used (a diverged constant step shows
    where it diverged).

    Args:
      study: a loaded study (:func:`lyaptune.analysis.load_study`).
      arms: the arms to draw.

    Returns:
      The curves; an arm without runs of the phase it needs is left out.

    Raises:
      UserError: an unknown arm, or no curve at all to draw.
    """
    trials, epochs = study.trials, study.epochs
    curves: list[Curve] = []
    for arm in arms:
        study.check_arm(arm)
        grid = study.is_grid(arm)
        phase = "search" if grid else "final"
        runs = trials[(trials["arm"] == arm) & (trials["phase"] == phase)]
        runs = runs[runs["trial_id"].isin(set(epochs["trial_id"]))]
        if runs.empty:
            continue
        derived = study.schedule_of(arm) == DERIVED
        groups: dict[str, list[int]] = {}
        for i, raw in enumerate(runs["params_json"].fillna("{}")):
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
            label = f"{arm} {what}".strip() + f" ({n} seed{'s' if n != 1 else ''}, {phase})"
            curves.append(Curve(label, arm, params, phase, seeds, grid_epochs, mean, low, high, derived))
    if not curves:
        raise UserError(f"no runs with epochs to draw for arms {', '.join(arms)} in {study.path}")
    return curves


def curves_figure(curves: Sequence[Curve], title: str) -> plt.Figure:
    """Three panels (gradient norm, log scale; training loss; test accuracy) against epoch.

    Each curve is its seeds' mean (a line, labelled) with a min-max band (a shaded area, no line),
    so every panel holds exactly one line per curve. The derived step is black and drawn on top;
    the grid points of an arm share a sequential colour map ordered by their values.

    Args:
      curves: from :func:`grid_point_curves`.
      title: the figure title.

    Returns:
      The figure.
    """
    fig, axes = plt.subplots(1, len(PANELS), figsize=(5.0 * len(PANELS), 4.2), constrained_layout=True)
    by_arm: dict[str, list[Curve]] = {}
    for c in curves:
        by_arm.setdefault(c.arm, []).append(c)
    colors: dict[int, Any] = {}
    others = iter(plt.get_cmap("tab10").colors)
    for members in by_arm.values():
        if members[0].derived:
            for c in members:
                colors[id(c)] = "black"
        elif len(members) > 1:
            shades = plt.get_cmap("viridis")(np.linspace(0.0, 0.85, len(members)))
            for c, shade in zip(members, shades):
                colors[id(c)] = shade
        else:
            colors[id(members[0])] = next(others)
    for ax, (field, name, log) in zip(np.atleast_1d(axes), PANELS):
        for c in curves:
            color = colors[id(c)]
            z = 3 if c.derived else 2
            ax.fill_between(c.epochs, c.low[field], c.high[field], color=color, alpha=0.18, lw=0, zorder=z)
            ax.plot(
                c.epochs, c.mean[field], color=color, lw=2.2 if c.derived else 1.4, label=c.label, zorder=z
            )
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(name)
        if log:
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
    np.atleast_1d(axes)[0].legend(fontsize=7, loc="best")
    fig.suptitle(title)
    return fig


def save(fig: plt.Figure, out: str | Path, stem: str) -> list[Path]:
    """Write ``<out>/<stem>.png`` and ``.svg``; return their paths."""
    directory = Path(out)
    directory.mkdir(parents=True, exist_ok=True)
    paths = [directory / f"{stem}.{ext}" for ext in ("png", "svg")]
    for path in paths:
        fig.savefig(path, dpi=150)
    return paths


def constant_steps_figure(study: Study, arms: Sequence[str] | None = None) -> plt.Figure:
    """papers/003 Figure 2: every constant step of the grid and the derived step.

    Args:
      study: a loaded study.
      arms: the arms to draw (default: those with a ``constant`` or ``derived-constant`` schedule).

    Returns:
      The figure (one line per grid point plus one per other arm, in each panel).
    """
    arms = list(arms) if arms else study.arms_by_schedule(include=("constant", DERIVED))
    curves = grid_point_curves(study, arms)
    return curves_figure(curves, f"{study.name}: derived constant step vs constant steps")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run_dir")
    p.add_argument("--out", default=".", help="output directory (default: .)")
    p.add_argument(
        "--arms", nargs="*", default=None, help="arms to draw (default: constant and derived-constant)"
    )
    args = p.parse_args(argv)
    try:
        fig = constant_steps_figure(load_study(args.run_dir), args.arms)
        for path in save(fig, args.out, "constant_steps"):
            print(path)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
