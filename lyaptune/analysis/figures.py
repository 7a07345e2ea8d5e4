"""Figures in the style of papers/003 (Figures 1-11): one panel per metric against epochs, per arm.

Every function takes DataFrames (or analysis results) and returns a :class:`matplotlib.figure.Figure`
built without pyplot's global state (the ``Agg`` canvas), so figures can be made in threads and on
machines without a display; :func:`save_figure` writes PNG and SVG.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from lyaptune.analysis.collapse import CollapseThresholds, classify_collapse
from lyaptune.analysis.load import Study
from lyaptune.analysis.sensitivity import Sensitivity

__all__ = [
    "CURVE_METRICS",
    "arm_colors",
    "budget_figure",
    "curve_bands",
    "divergence_figure",
    "grid_response_figure",
    "importance_figure",
    "save_figure",
    "slices_figure",
    "performance_profile_figure",
    "study_curves_figure",
    "training_curves_figure",
]

#: The panels of papers/003's figures: gradient norm (log scale), training loss, test accuracy.
CURVE_METRICS: tuple[str, ...] = ("grad_norm", "train_loss", "test_acc")
_CURVE_LABELS = {
    "grad_norm": "gradient norm $\\|\\nabla L\\|$",
    "train_loss": "training loss",
    "test_acc": "test accuracy",
    "val_loss": "validation loss",
    "val_acc": "validation accuracy",
    "test_loss": "test loss",
    "lr": "learning rate",
    "train_acc": "training accuracy",
}
_LOG_METRICS = frozenset({"grad_norm", "lr"})
_COLLAPSED_COLOR = "0.55"
_REFERENCE_COLOR = "black"


def shared_legend(fig: Any, ax: Any, max_columns: int) -> None:
    """One legend below every panel of ``fig``, from the lines of ``ax`` (none when it has no labels)."""
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        fig.legend(
            handles,
            labels,
            loc="outside lower center",
            ncol=min(len(labels), max_columns),
            fontsize="small",
            frameon=False,
        )


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def arm_colors(arms: Sequence[str], reference: str | None = None) -> dict[str, str]:
    """A fixed colour per arm: black for the reference, then matplotlib's ``tab10`` cycle in order."""
    palette = [f"C{i}" for i in range(10)]
    out, i = {}, 0
    for arm in arms:
        if arm == reference:
            out[arm] = _REFERENCE_COLOR
        else:
            out[arm] = palette[i % len(palette)]
            i += 1
    return out


def curve_bands(
    epochs: pd.DataFrame, metric: str, *, band: str = "minmax", phase: str | None = "final"
) -> pd.DataFrame:
    """Per arm and epoch, the mean of ``metric`` over runs (seeds) and a band around it.

    Args:
      epochs: per-epoch records with ``arm``, ``epoch``, ``phase`` and ``metric``.
      metric: the column to aggregate.
      band: ``minmax`` (the band spans the runs' minimum to maximum) or ``sd`` (mean +- one standard
        deviation, ddof = 1).
      phase: keep only this phase (``None``: all rows).

    Returns:
      Columns ``arm``, ``epoch``, ``mean``, ``low``, ``high``, ``n`` (runs with a finite value).
    """
    if band not in ("minmax", "sd"):
        raise ValueError(f"band must be 'minmax' or 'sd', got {band!r}")
    cols = ["arm", "epoch", "mean", "low", "high", "n"]
    df = epochs if phase is None or not len(epochs) else epochs[epochs["phase"] == phase]
    if not len(df) or metric not in df:
        return pd.DataFrame(columns=cols)
    df = df[["arm", "epoch", metric]].copy()
    df[metric] = pd.to_numeric(df[metric], errors="coerce")
    df = df[np.isfinite(df[metric])]
    g = df.groupby(["arm", "epoch"], sort=True)[metric]
    out = g.agg(mean="mean", n="count").reset_index()
    if band == "minmax":
        out["low"] = g.min().to_numpy()
        out["high"] = g.max().to_numpy()
    else:
        sd = g.std(ddof=1).fillna(0.0).to_numpy()
        out["low"] = out["mean"] - sd
        out["high"] = out["mean"] + sd
    return out[cols]


def _spans_decades(bands: pd.DataFrame, decades: float) -> bool:
    """Whether the positive means of ``bands`` span more than ``decades`` orders of magnitude."""
    y = bands["mean"].to_numpy(float) if len(bands) else np.zeros(0)
    y = y[np.isfinite(y) & (y > 0)]
    return bool(y.size) and float(np.log10(y.max() / y.min())) > decades


def training_curves_figure(
    epochs: pd.DataFrame,
    *,
    arms: Sequence[str] | None = None,
    reference: str | None = None,
    collapsed: Mapping[str, tuple[int, int]] | None = None,
    metrics: Sequence[str] = CURVE_METRICS,
    band: str = "minmax",
    title: str | None = None,
) -> Figure:
    """Gradient norm (log scale), training loss and test accuracy against epoch, one line per arm.

    Each arm's final-seed runs (its best configuration) are averaged per epoch with a shaded band
    (:func:`curve_bands`). The gradient norm is on a log scale, as in the paper; a loss panel switches
    to a log scale when its curves span more than two orders of magnitude (a run that blew up). The
    reference arm is drawn in black; an arm with collapsed runs is drawn dashed and grey with
    ``(collapsed c/n)`` in its label, so a tiny gradient norm from a dead network cannot pass for
    convergence.

    Args:
      epochs: per-epoch records (``arm``, ``phase``, ``epoch`` and the metrics).
      arms: arms to draw, in legend order (default: all with final-phase records).
      reference: the reference arm.
      collapsed: per arm ``(collapsed runs, runs)`` (from the comparison table).
      metrics: one panel per metric (papers/003: ``grad_norm``, ``train_loss``, ``test_acc``).
      band: ``minmax`` or ``sd``.
      title: the figure's title.

    Returns:
      The figure.
    """
    collapsed = dict(collapsed or {})
    data = {m: curve_bands(epochs, m, band=band) for m in metrics}
    present = list(dict.fromkeys(a for d in data.values() for a in d["arm"]))
    arms = [a for a in (arms if arms is not None else present) if a in present]
    colors = arm_colors(arms, reference)
    fig = _figure(4.2 * len(metrics), 3.6)
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    band_label = "min-max over seeds" if band == "minmax" else "+-1 sd over seeds"
    for ax, m in zip(axes, metrics):
        d = data[m]
        log = m in _LOG_METRICS or (m.endswith("_loss") and _spans_decades(d, 2.0))
        for arm in arms:
            a = d[d["arm"] == arm]
            if a.empty:
                continue
            c, n = collapsed.get(arm, (0, 0))
            is_collapsed = c > 0
            label = arm + (" (reference)" if arm == reference else "")
            if is_collapsed:
                label += f" (collapsed {c}/{n})"
            color = _COLLAPSED_COLOR if is_collapsed else colors[arm]
            style = "--" if is_collapsed else "-"
            x, y, lo, hi = (a[k].to_numpy(float) for k in ("epoch", "mean", "low", "high"))
            if log:
                y, lo, hi = (np.where(v > 0, v, np.nan) for v in (y, lo, hi))
            lw = 2.2 if arm == reference else 1.5
            ax.plot(x, y, style, color=color, lw=lw, label=label, zorder=3 if arm == reference else 2)
            ax.fill_between(x, lo, hi, color=color, alpha=0.15, lw=0)
        if log:
            ax.set_yscale("log")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.set_ylabel(_CURVE_LABELS.get(m, m) + (" (log scale)" if log and m not in _LOG_METRICS else ""))
        ax.grid(True, which="major", alpha=0.3)
    shared_legend(fig, axes[0], max_columns=4)
    fig.suptitle(title or f"final configurations: mean over seeds, band {band_label}")
    return fig


def collapsed_counts(
    study: Study, thresholds: CollapseThresholds | None = None
) -> dict[str, tuple[int, int]]:
    """Per arm, ``(collapsed, completed)`` final-seed runs (see :func:`.collapse.classify_collapse`)."""
    t = study.trials
    if not len(t):
        return {}
    c = classify_collapse(t[(t["phase"] == "final") & (t["status"] == "completed")], thresholds)
    return {str(a): (int(g["collapsed"].sum()), int(len(g))) for a, g in c.groupby("arm")}


def study_curves_figure(
    study: Study,
    *,
    arms: Sequence[str] | None = None,
    reference: str | None = None,
    thresholds: CollapseThresholds | None = None,
    band: str = "minmax",
    title: str | None = None,
) -> Figure:
    """:func:`training_curves_figure` of a study's final runs, with its collapsed runs marked.

    Args:
      study: the study.
      arms: the arms to draw (default all).
      reference: the reference arm's name (drawn in black), already resolved.
      thresholds: collapse thresholds.
      band: ``minmax`` or ``sd``.
      title: the figure's title (default the study's name and task).

    Returns:
      The figure.
    """
    task = study.task
    default = (
        f"{study.name}: {task.get('model')} on {task.get('dataset')}, "
        f"batch {task.get('batch_size')}; final configurations, mean over seeds"
    )
    return training_curves_figure(
        study.epochs,
        arms=list(arms) if arms is not None else study.arms,
        reference=reference,
        collapsed=collapsed_counts(study, thresholds),
        band=band,
        title=title or default,
    )


def budget_figure(
    curves: Mapping[str, pd.DataFrame],
    *,
    metric: str,
    mode: str,
    reference: str | None = None,
    target: float | None = None,
    matches: Mapping[str, int | None] | None = None,
    colors: Mapping[str, str] | None = None,
) -> Figure:
    """Best validation objective against the number of search trials, each arm by its own estimator.

    Each arm's curve (:func:`~lyaptune.analysis.budget.budget_curve`) is labelled with its estimator:
    ``expected-max`` (expected best of k drawn without replacement, the exact form; band +-1 sd, the
    spread of the best of k draws, not an uncertainty of the curve, cut at the best trial's value,
    which no budget can beat) or ``best-so-far`` (mean over search repeats, dashed; band from the
    worst to the best repeat; "1 repeat, no spread" where there is one). A note under the axes says
    what the bands are. The reference arm's mean final objective is a horizontal dashed line, and the
    smallest budget at which an arm matches it is marked (an optimistic number: a selected best
    against an unselected mean).

    Returns:
      The figure.
    """
    matches = dict(matches or {})
    arms = [a for a, c in curves.items() if not c.empty]
    colors = dict(colors or arm_colors(list(curves), reference))
    fig = _figure(6.0, 4.4)
    ax = fig.subplots()
    for arm in arms:
        c = curves[arm]
        k, e, lo, hi = (c[x].to_numpy(float) for x in ("k", "best", "low", "high"))
        method = str(c["method"].iloc[0]) if "method" in c else "expected-max"
        col = colors.get(arm, "C0")
        reps = int(c["n_repeats"].max()) if "n_repeats" in c else 1
        if method == "best-so-far":
            label = f"{arm} (best-so-far, " + (f"{reps} repeats)" if reps > 1 else "1 repeat: no spread)")
        else:
            label = f"{arm} (expected max, without replacement)"
        style = "-o" if method == "expected-max" else "--s"
        # a marker per budget up to 60, then every n-th (50,000 markers drew nothing but ink)
        ax.plot(k, e, style, ms=3, color=col, label=label, markevery=max(1, len(k) // 60))
        if method == "expected-max":
            # the best of k trials is never better than the best trial run (the curve's last value)
            lo, hi = (np.maximum(lo, e[-1]), hi) if mode == "min" else (lo, np.minimum(hi, e[-1]))
        ok = np.isfinite(lo) & np.isfinite(hi)
        ax.fill_between(k[ok], lo[ok], hi[ok], color=col, alpha=0.15, lw=0)
        km = matches.get(arm)
        if km is not None and not pd.isna(km):
            ax.plot([km], [e[int(km) - 1]], marker="*", ms=13, color=col, mec="black", zorder=4)
    if target is not None and math.isfinite(target):
        ax.axhline(
            target,
            ls="--",
            color=_REFERENCE_COLOR,
            lw=1.5,
            label=f"{reference or 'reference'}: mean final {metric} (no tuning)",
        )
    drawn = np.concatenate([curves[a]["best"].to_numpy(float) for a in arms]) if arms else np.zeros(0)
    if target is not None and math.isfinite(target):
        drawn = np.append(drawn, target)
    drawn = drawn[np.isfinite(drawn)]
    if drawn.size and (drawn > 0).all() and drawn.max() / drawn.min() > 5:
        ax.set_yscale("log")  # keep a far-off arm from flattening the others
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("search trials k")
    ax.set_ylabel(f"best {metric} after k trials ({'lower' if mode == 'min' else 'higher'} is better)")
    ax.grid(True, alpha=0.3)
    labels = ax.get_legend_handles_labels()[1]
    shared_legend(fig, ax, max_columns=1 if any(len(lb) > 45 for lb in labels) else 2)
    ax.set_title("budget curves (stars: first k matching the reference, optimistic)", fontsize="medium")
    # a suptitle, so that the constrained layout makes room for it (a fig.text overlapped the title)
    fig.suptitle(
        "bands: expected max +-1 sd = spread of the best of k draws (not an uncertainty of the\n"
        "curve); best-so-far = worst to best search repeat",
        fontsize="x-small",
    )
    return fig


def performance_profile_figure(profile: pd.DataFrame, *, metric: str = "", mode: str = "") -> Figure:
    """Performance profiles (:func:`~lyaptune.analysis.crossstudy.performance_profile`) as step curves.

    x: the factor tau (1 = as good as the best arm of a study); y: the fraction of studies where the
    arm is within tau of the best.

    Returns:
      The figure.
    """
    fig = _figure(6.0, 4.2)
    ax = fig.subplots()
    arms = list(pd.unique(profile["arm"]))
    colors = arm_colors(arms)
    for arm in arms:
        g = profile[profile["arm"] == arm]
        ax.step(g["tau"], g["fraction"], where="post", color=colors.get(arm, "C0"), label=arm)
    n = int(profile["n_studies"].iloc[0]) if len(profile) else 0
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("tau (ratio to the best arm of each study" + (f", {metric} {mode}" if metric else "") + ")")
    ax.set_ylabel(f"fraction of {n} studies within tau")
    ax.grid(True, alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="outside lower center", ncol=min(len(labels), 3), fontsize="small")
    ax.set_title("performance profiles", fontsize="medium")
    return fig


def _is_numeric(s: pd.Series) -> bool:
    return bool(len(s)) and pd.to_numeric(s, errors="coerce").notna().all()


def _log_axis(param: str, values: pd.Series, sens: Sensitivity) -> bool:
    """Log scale for a hyperparameter searched on one, or positive values spanning a decade or more."""
    x = pd.to_numeric(values, errors="coerce").dropna().to_numpy(float)
    return param in sens.log_params or (x.size > 1 and (x > 0).all() and x.max() / x.min() >= 10)


def slices_figure(sens: Sensitivity) -> Figure:
    """The search objective of every trial against each hyperparameter (one panel each).

    Completed trials are dots; failed trials (diverged, errored, stopped) are red crosses at the top
    edge of the panel (their objective is undefined). Log-searched hyperparameters get a log axis.

    Returns:
      The figure (a single note panel when the arm has no searched hyperparameter).
    """
    params = sens.params or []
    n = max(len(params), 1)
    fig = _figure(min(max(3.6 * n, 5.5), 14.0), 3.4)
    axes = fig.subplots(1, n, squeeze=False)[0]
    t = sens.trials
    if not params or t.empty:
        axes[0].text(0.5, 0.5, f"arm '{sens.arm}': no search trials", ha="center", va="center")
        axes[0].set_axis_off()
        return fig
    ok = t[t["state"] == "completed"]
    bad = t[t["state"] == "failed"]
    for ax, p in zip(axes, params):
        col = f"param_{p}"
        if _is_numeric(t[col].dropna()):
            xo, xb = pd.to_numeric(ok[col], errors="coerce"), pd.to_numeric(bad[col], errors="coerce")
        else:
            cats = sorted(t[col].dropna().astype(str).unique())
            pos = {c: i for i, c in enumerate(cats)}
            xo, xb = ok[col].astype(str).map(pos), bad[col].astype(str).map(pos)
            ax.set_xticks(range(len(cats)), cats, rotation=30, fontsize="small")
        ax.scatter(xo, ok["value"], s=18, color="C0", label="completed", zorder=3)
        if len(bad):
            top = (
                np.nanmax(ok["value"])
                if sens.mode == "min" and len(ok)
                else (np.nanmin(ok["value"]) if len(ok) else 0.0)
            )
            ax.scatter(xb, np.full(len(bad), top), marker="x", s=30, color="C3", label="failed", zorder=3)
        if _is_numeric(t[col].dropna()) and _log_axis(p, t[col], sens):
            ax.set_xscale("log")
        ax.set_xlabel(p)
        ax.grid(True, alpha=0.3)
    axes[0].set_ylabel(f"{sens.metric} ({sens.mode})")
    if len(bad):
        axes[0].legend(fontsize="small", frameon=False)
    fig.suptitle(f"{sens.arm}: search objective per trial", fontsize="medium")
    return fig


def grid_response_figure(sens: Sensitivity) -> Figure | None:
    """Grid arms: 1-D responses (mean objective per value, +-1 sd) and 2-D heatmaps of the mean.

    Returns:
      The figure, or ``None`` when the arm is not a grid arm or has no response.
    """
    if not sens.grid or not sens.response_1d:
        return None
    n1, n2 = len(sens.response_1d), len(sens.response_2d)
    n = n1 + n2
    fig = _figure(min(3.8 * n, 15.0), 3.4)
    axes = fig.subplots(1, n, squeeze=False)[0]
    for ax, (p, r) in zip(axes[:n1], sens.response_1d.items()):
        numeric = _is_numeric(r["value"])
        x = pd.to_numeric(r["value"]) if numeric else np.arange(len(r))
        ax.errorbar(x, r["mean"], yerr=r["sd"].fillna(0.0), fmt="-o", ms=4, capsize=3, color="C0")
        if not numeric:
            ax.set_xticks(x, [str(v) for v in r["value"]], rotation=30, fontsize="small")
        elif _log_axis(p, r["value"], sens):
            ax.set_xscale("log")
        ax.set_xlabel(p)
        ax.set_ylabel(f"mean {sens.metric}")
        ax.grid(True, alpha=0.3)
    for ax, ((p1, p2), piv) in zip(axes[n1:], sens.response_2d.items()):
        vals = piv.to_numpy(float)
        im = ax.imshow(
            vals, origin="lower", aspect="auto", cmap="viridis_r" if sens.mode == "min" else "viridis"
        )
        ax.set_xticks(
            range(piv.shape[1]),
            [f"{v:g}" if isinstance(v, float) else str(v) for v in piv.columns],
            rotation=30,
            fontsize="small",
        )
        ax.set_yticks(
            range(piv.shape[0]),
            [f"{v:g}" if isinstance(v, float) else str(v) for v in piv.index],
            fontsize="small",
        )
        ax.set_xlabel(p2)
        ax.set_ylabel(p1)
        for (i, j), v in np.ndenumerate(vals):
            if math.isfinite(v):
                r, g, b, _ = im.cmap(im.norm(v))
                ink = "black" if 0.299 * r + 0.587 * g + 0.114 * b > 0.5 else "white"
                ax.text(j, i, f"{v:.3g}", ha="center", va="center", fontsize="small", color=ink)
        fig.colorbar(im, ax=ax, label=f"mean {sens.metric}")
    fig.suptitle(f"{sens.arm}: grid response", fontsize="medium")
    return fig


def importance_figure(importance: pd.DataFrame, *, title: str = "") -> Figure | None:
    """Horizontal bars of hyperparameter importance, one group per evaluator (PED-ANOVA, fANOVA).

    Returns:
      The figure, or ``None`` when there are no importances.
    """
    if importance is None or importance.empty:
        return None
    params = list(dict.fromkeys(importance.sort_values("importance")["param"]))
    evaluators = list(dict.fromkeys(importance["evaluator"]))
    fig = _figure(5.5, 0.5 + 0.45 * len(params) * max(len(evaluators), 1) + 0.8)
    ax = fig.subplots()
    h = 0.8 / max(len(evaluators), 1)
    for j, ev in enumerate(evaluators):
        d = importance[importance["evaluator"] == ev].set_index("param")["importance"]
        y = np.arange(len(params)) + (j - (len(evaluators) - 1) / 2) * h
        ax.barh(y, [float(d.get(p, 0.0)) for p in params], height=h, color=f"C{j}", label=ev)
    ax.set_yticks(np.arange(len(params)), params)
    ax.set_xlabel("importance (sums to 1 per evaluator)")
    ax.set_xlim(0, 1)
    ax.legend(fontsize="small", frameon=False, loc="lower right")
    ax.grid(True, axis="x", alpha=0.3)
    ax.set_title(title or "hyperparameter importance", fontsize="medium")
    return fig


def divergence_figure(
    divergence: Mapping[str, pd.DataFrame] | pd.DataFrame,
    *,
    k_hat: float | None = None,
    colors: Mapping[str, str] | None = None,
) -> Figure | None:
    """Share of diverged runs against ``lr * K_hat`` (log x), per arm and/or for the whole study.

    Each bin is drawn at its geometric midpoint; a series named ``all runs`` is drawn black and
    dashed. A vertical dotted line marks ``lr * K_hat = 2``, the classical stability limit of gradient
    descent on a quadratic of curvature K_hat.

    Returns:
      The figure, or ``None`` when there is nothing to draw.
    """
    series = {"all runs": divergence} if isinstance(divergence, pd.DataFrame) else dict(divergence)
    series = {k: v for k, v in series.items() if v is not None and not v.empty}
    if not series:
        return None
    colors = dict(colors or arm_colors([k for k in series if k != "all runs"]))
    fig = _figure(6.0, 3.6)
    ax = fig.subplots()
    for name, d in series.items():
        mid = np.sqrt(d["bin_low"].to_numpy(float) * d["bin_high"].to_numpy(float))
        pooled = name == "all runs"
        ax.plot(
            mid,
            d["rate"],
            "--s" if pooled else "-o",
            ms=5 if pooled else 4,
            lw=2 if pooled else 1.3,
            color=_REFERENCE_COLOR if pooled else colors.get(name, "C0"),
            zorder=4 if pooled else 2,
            label=f"{name} (n={int(d['n'].sum())})",
        )
    ax.axvline(2.0, ls=":", color="0.3", lw=1, label="lr x K_hat = 2")
    ax.set_xscale("log")
    ax.set_ylim(-0.03, 1.03)
    ax.set_xlabel(
        "lr x K_hat"
        + (f"  (study K_hat = {k_hat:.4g})" if k_hat is not None and math.isfinite(k_hat) else "")
    )
    ax.set_ylabel("share of runs diverged")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small", frameon=False)
    ax.set_title("divergence against the stability boundary lr x K_hat", fontsize="medium")
    return fig


#: Lines and scatters with more points than this are rasterized in SVG (:func:`save_figure`).
RASTER_POINTS = 5000


def _rasterize_dense(fig: Figure) -> None:
    for ax in fig.axes:
        for artist in [*ax.lines, *ax.collections]:
            if hasattr(artist, "get_xdata"):
                n = len(artist.get_xdata())
            else:  # a scatter's points, or the vertices of a filled band
                n = max(len(artist.get_offsets()), sum(len(p.vertices) for p in artist.get_paths()))
            if n > RASTER_POINTS:
                artist.set_rasterized(True)


def save_figure(
    fig: Figure, path_stem: str | os.PathLike[str], formats: Sequence[str] = ("png", "svg")
) -> list[str]:
    """Write ``fig`` as ``<path_stem>.<fmt>`` for each format (PNG at 150 dpi); returns the paths.

    A line or scatter of more than :data:`RASTER_POINTS` points is rasterized in vector formats (at
    150 dpi, axes and text stay vector): a scatter of a 100,000-run study's search trials made an 18 MB
    SVG that took seconds to write and to open.
    """
    out = []
    os.makedirs(os.path.dirname(os.fspath(path_stem)) or ".", exist_ok=True)
    _rasterize_dense(fig)
    engine = fig.get_layout_engine()
    for i, fmt in enumerate(formats):
        path = f"{os.fspath(path_stem)}.{fmt}"
        fig.savefig(path, format=fmt, dpi=150)
        out.append(path)
        if i == 0 and engine is not None:
            fig.set_layout_engine("none")  # the layout is done; later formats reuse it (and save faster)
    if engine is not None:
        fig.set_layout_engine(engine)
    return out
