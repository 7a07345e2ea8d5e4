"""One vocabulary of metrics: each name, its column, its direction, its scale and its label, stated once.

The store writes these columns, the spec's ``compare:`` and ``claims:`` may name them, the comparison
tests them and the CLI and report label them; all of them import this module instead of keeping a
list of their own (HOUSE_STYLE "One vocabulary"). A metric's scale is fixed by its name, never chosen
after seeing the data (METHODS.md section 8 "Scale"): positive quantities that vary multiplicatively
across seeds (losses, gradient norms, seconds, step sizes) are compared on the log scale, as ratios;
accuracies as differences in points.

This module imports nothing from lyaptune but :mod:`lyaptune.errors` and :mod:`lyaptune._records`, so
every layer may import it.
"""

from __future__ import annotations

from dataclasses import dataclass

from lyaptune._records import RECORD_FIELDS

__all__ = [
    "COMPARE_METRICS",
    "FINAL_FIELDS",
    "METRICS",
    "MODES",
    "SCALES",
    "SCHEDULE_UNITS",
    "OBJECTIVE_METRICS",
    "MetricInfo",
    "metric_info",
    "natural_mode",
]

#: Directions of a metric: lower is better (``min``) or higher is better (``max``).
MODES: tuple[str, ...] = ("min", "max")
#: Scales a metric is compared on: ``log`` (ratios, geometric means) or ``linear`` (differences).
SCALES: tuple[str, ...] = ("log", "linear")
#: Units a schedule's step counter may advance in.
SCHEDULE_UNITS: tuple[str, ...] = ("epoch", "step")


@dataclass(frozen=True)
class MetricInfo:
    """What a metric is: its ``trials`` column, which way is better, its scale and its label.

    Attributes:
      name: the column of the trials table (``final_<field>`` for a record field at the final epoch).
      label: a short label for tables and figures.
      mode: ``min`` (lower is better), ``max`` (higher is better), or ``None`` where neither is (a
        derived step size, whose claims are about equivalence, not rank).
      scale: ``log`` (compared as ratios of geometric means, tested on log differences) or ``linear``.
      field: the per-epoch record field whose last value this is, or ``None`` for a run-level column.
      percent: shown in points (x 100): accuracies stored as fractions.
    """

    name: str
    label: str
    mode: str | None
    scale: str
    field: str | None = None
    percent: bool = False


_FINAL_LABELS: dict[str, tuple[str, str | None, str, bool]] = {
    # record field: (label, mode, scale, percent)
    "train_loss": ("train loss", "min", "log", False),
    "train_acc": ("train acc", "max", "linear", True),
    "grad_norm": ("final grad norm", "min", "log", False),
    "val_loss": ("val loss", "min", "log", False),
    "val_acc": ("val acc", "max", "linear", True),
    "test_loss": ("test loss", "min", "log", False),
    "test_acc": ("test acc", "max", "linear", True),
}
assert set(_FINAL_LABELS) <= set(RECORD_FIELDS)

#: ``final_<field>`` column -> record field, for every record field whose final value the store keeps.
FINAL_FIELDS: dict[str, str] = {f"final_{f}": f for f in _FINAL_LABELS}

METRICS: dict[str, MetricInfo] = {
    **{
        col: MetricInfo(col, label, mode, scale, field=f, percent=pct)
        for col, f in FINAL_FIELDS.items()
        for label, mode, scale, pct in [_FINAL_LABELS[f]]
    },
    "min_grad_norm": MetricInfo("min_grad_norm", "min grad norm", "min", "log"),
    "wall_s": MetricInfo("wall_s", "wall s", "min", "log"),
    "epochs_completed": MetricInfo("epochs_completed", "epochs", "max", "linear"),
    "derived_lr": MetricInfo("derived_lr", "derived step alpha", None, "log"),
    "k_hat": MetricInfo("k_hat", "K_hat", None, "log"),
    "initial_loss": MetricInfo("initial_loss", "initial loss L(w0)", None, "log"),
}
"""Every numeric run-level column of the trials table that analysis may compare, by name."""

#: Per-epoch metrics a study may tune on (the objective): never a test metric, since tuning never
#: looks at test data (METHODS.md section 8).
OBJECTIVE_METRICS: tuple[str, ...] = ("val_loss", "val_acc", "train_loss", "grad_norm", "train_acc")
assert set(OBJECTIVE_METRICS) == {f for f in _FINAL_LABELS if not f.startswith("test")}

#: Metrics arms are compared (ranked, tested) on in a spec's ``compare:``: a record field at the final
#: epoch, ``final_<field>`` (never a minimum over epochs, METHODS.md section 8 "Primary metric").
COMPARE_METRICS: tuple[str, ...] = tuple(FINAL_FIELDS)


def natural_mode(metric: str) -> str:
    """``max`` for accuracies, ``min`` for everything else (the direction a spec may leave out)."""
    info = METRICS.get(metric)
    if info is not None and info.mode is not None:
        return info.mode
    return "max" if metric.endswith("_acc") else "min"


def metric_info(metric: str) -> MetricInfo:
    """The :class:`MetricInfo` of ``metric``; an unknown name (e.g. an optimizer diagnostic) is a
    ``min``, ``linear`` metric labelled by its own name, so that analysis of extra columns still works."""
    info = METRICS.get(metric)
    if info is not None:
        return info
    return MetricInfo(metric, metric, natural_mode(metric), "linear")
