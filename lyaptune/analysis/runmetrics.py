"""Whole-run metrics of a run, computed from its per-epoch records (METHODS.md section 8, "What a claim
may say").

A claim may be about the whole run rather than its final epoch. Each metric here is one number per run,
computed from the run's epoch records (:attr:`~lyaptune.analysis.load.Study.epochs`), so that a claim
compares it seed by seed like a final-epoch metric:

- ``epochs_to_target``: the first epoch :math:`e` at which the record field ``target.field`` is below
  (``target.below``) or above (``target.above``) the target. A run that never reaches it is *censored
  at the budget*: it counts as :math:`E + 1` with :math:`E` its last recorded epoch (one epoch past
  its budget: the slowest, and slower than a run that reaches the target at its last epoch).
- ``seconds_to_target``: the run's charged device-seconds (``time_s``) at that epoch; a censored run
  counts its whole time plus one mean epoch, :math:`t_E (1 + 1/E)`.
- ``auc_train_loss``: the area under the training-loss curve per epoch, by the trapezoid rule from
  :math:`L(w_0)` (the run's ``initial_loss``, at epoch 0) through every recorded epoch, divided by the
  epochs: :math:`\\frac1E \\sum_{e=1}^{E} \\frac{L_{e-1} + L_e}{2}` (the mean loss along the run; lower
  is faster convergence). Without ``initial_loss`` the curve starts at epoch 1.
- ``drift_fraction``: the fraction of epochs whose Lyapunov drift
  :math:`V(t+1) - V(t)` (the record's ``lyapunov_drift``) is :math:`\\le 0`: 1.0 for a monotone loss.
- ``max_diagnostic``: the largest value over the run's epochs of a recorded field or optimizer
  diagnostic named by ``of`` (e.g. ``grad_norm``, or an optimizer's extra column).

Each metric's scale is fixed by its name (METHODS.md section 8 "Scale"): times and areas are positive
and vary multiplicatively, so they are compared on the log scale as ratios; the drift fraction is a
proportion compared as a difference; ``max_diagnostic`` takes the scale of the field it is the
maximum of (log for a loss or gradient norm, linear for anything else).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from lyaptune.metrics import FINAL_FIELDS, MetricInfo, metric_info

__all__ = ["RUN_METRICS", "TARGET_METRICS", "run_metric_info", "run_metric_values"]

#: Whole-run metrics a claim may name, with which way is better and their scale.
RUN_METRICS: dict[str, MetricInfo] = {
    "epochs_to_target": MetricInfo("epochs_to_target", "epochs to target", "min", "log"),
    "seconds_to_target": MetricInfo("seconds_to_target", "device-seconds to target", "min", "log"),
    "auc_train_loss": MetricInfo(
        "auc_train_loss", "mean train loss over the run (AUC / epochs)", "min", "log"
    ),
    "drift_fraction": MetricInfo("drift_fraction", "fraction of epochs with drift <= 0", "max", "linear"),
    "max_diagnostic": MetricInfo("max_diagnostic", "max over epochs", None, "linear"),
}
#: The whole-run metrics that need a ``target``.
TARGET_METRICS: tuple[str, ...] = ("epochs_to_target", "seconds_to_target")


def run_metric_info(metric: str, of: str | None = None) -> MetricInfo:
    """The :class:`MetricInfo` of a claim metric: a whole-run metric of :data:`RUN_METRICS` (for
    ``max_diagnostic`` the scale and direction of the field ``of`` when it is a known record field), else
    :func:`lyaptune.metrics.metric_info`."""
    if metric == "max_diagnostic":
        base = metric_info(f"final_{of}") if of and f"final_{of}" in FINAL_FIELDS else None
        label = f"max {of} over epochs"
        if base is not None:
            return MetricInfo(metric, label, base.mode, base.scale, field=of)
        return MetricInfo(metric, label, None, "linear", field=of)
    if metric in RUN_METRICS:
        return RUN_METRICS[metric]
    return metric_info(metric)


def _to_target(ep: pd.DataFrame, field: str, below: float | None, above: float | None, col: str) -> float:
    values = pd.to_numeric(ep[field], errors="coerce").to_numpy(float)
    hit = values < below if below is not None else values > above  # type: ignore[operator]
    hit &= np.isfinite(values)
    epochs = ep["epoch"].to_numpy(float)
    if col == "epoch":
        if hit.any():
            return float(epochs[np.argmax(hit)])
        return float(epochs[-1] + 1)
    times = pd.to_numeric(ep["time_s"], errors="coerce").to_numpy(float)
    if hit.any():
        return float(times[np.argmax(hit)])
    last_e, last_t = float(epochs[-1]), float(times[-1])
    return last_t * (1.0 + 1.0 / last_e) if last_e > 0 else math.nan


def _auc(ep: pd.DataFrame, initial: float) -> float:
    loss = pd.to_numeric(ep["train_loss"], errors="coerce").to_numpy(float)
    if math.isfinite(initial):
        loss = np.concatenate([[initial], loss])
    if loss.size < 2 or not np.all(np.isfinite(loss)):
        return math.nan
    return float(np.mean((loss[1:] + loss[:-1]) / 2.0))


def run_metric_values(
    trials: pd.DataFrame,
    epochs: pd.DataFrame,
    metric: str,
    *,
    target: Mapping[str, Any] | None = None,
    of: str | None = None,
) -> pd.Series:
    """One value of a whole-run ``metric`` per run, indexed like ``trials`` (NaN where a run has no
    epoch records, or lacks the field).

    Args:
      trials: the trials table (``trial_id``, ``initial_loss``).
      epochs: the per-epoch records (``trial_id``, ``epoch``, the record fields, diagnostics).
      metric: a name of :data:`RUN_METRICS`.
      target: for :data:`TARGET_METRICS`, ``{"field": record field, "below": x}`` or ``{..., "above": x}``.
      of: for ``max_diagnostic``, the field or diagnostic column.

    Returns:
      A float Series aligned with ``trials.index``.

    Raises:
      ValueError: an unknown metric, or a missing ``target`` / ``of``.
    """
    if metric not in RUN_METRICS:
        raise ValueError(f"unknown whole-run metric {metric!r}; choices: {', '.join(RUN_METRICS)}")
    if metric in TARGET_METRICS and not target:
        raise ValueError(f"{metric} needs a target {{field, below | above}}")
    if metric == "max_diagnostic" and not of:
        raise ValueError("max_diagnostic needs 'of' (the field or diagnostic)")
    out = pd.Series(math.nan, index=trials.index, dtype=float)
    if not len(epochs) or "trial_id" not in epochs:
        return out
    groups = {tid: g.sort_values("epoch") for tid, g in epochs.groupby("trial_id", sort=False)}
    for idx, tid in trials["trial_id"].items():
        ep = groups.get(tid)
        if ep is None or not len(ep):
            continue
        if metric in TARGET_METRICS:
            field = str(target["field"])  # type: ignore[index]
            if field not in ep:
                continue
            below, above = target.get("below"), target.get("above")  # type: ignore[union-attr]
            col = "epoch" if metric == "epochs_to_target" else "time"
            out[idx] = _to_target(ep, field, below, above, col)
        elif metric == "auc_train_loss":
            initial = pd.to_numeric(pd.Series([trials.at[idx, "initial_loss"]]), errors="coerce").iloc[0]
            out[idx] = _auc(ep, float(initial) if "initial_loss" in trials else math.nan)
        elif metric == "drift_fraction":
            drift = pd.to_numeric(ep["lyapunov_drift"], errors="coerce").to_numpy(float)
            drift = drift[np.isfinite(drift)]
            out[idx] = float(np.mean(drift <= 0.0)) if drift.size else math.nan
        else:  # max_diagnostic
            if of not in ep:
                continue
            vals = pd.to_numeric(ep[of], errors="coerce").to_numpy(float)
            vals = vals[np.isfinite(vals)]
            out[idx] = float(vals.max()) if vals.size else math.nan
    return out
