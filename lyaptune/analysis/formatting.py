"""How the report writes numbers: significant digits, percentages, points, ratios and p-values.

Pure string formatting shared by the report's sections (:mod:`lyaptune.analysis.report`,
:mod:`lyaptune.analysis.answer`): a value that is missing or not finite is ``-`` everywhere.
"""

from __future__ import annotations

import math
from functools import partial
from typing import Any

import pandas as pd

__all__ = ["Block", "fmt_diff", "fmt_metric", "fmt_p", "fmt_points", "fmt_ratio", "format_effect", "num"]

#: One piece of a report, rendered by both templates: ``("h1" | "h2" | "h3", text)``, ``("p", text)``,
#: ``("note", text)`` (a footnote, small print in HTML), ``("ul", items)``, ``("table", header, rows)``,
#: ``("fig", png, svg, caption)``, ``("pre", text)``, ``("section", id)`` ... ``("end",)`` (an HTML
#: ``<section>`` around the blocks between; nothing in Markdown).
Block = tuple[Any, ...]


def _float(v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def num(v: Any, digits: int = 4) -> str:
    """``v`` to ``digits`` significant digits (``-`` when not finite; a non-number as its text)."""
    try:
        f = float(v)
    except (TypeError, ValueError):
        return "" if v is None else str(v)
    if not math.isfinite(f):
        return "-"
    return f"{f:.{digits}g}"


def fmt_metric(m: str, v: Any) -> str:
    """A value of metric ``m``: an accuracy (``*_acc``, a fraction) in percent; else :func:`num`."""
    if m.endswith("_acc"):
        f = _float(v)
        return "-" if not math.isfinite(f) else f"{100 * f:.2f}%"
    return num(v)


def fmt_p(p: Any) -> str:
    """A p-value: 2 significant digits, scientific below 0.001."""
    f = _float(p)
    return "-" if not math.isfinite(f) else (f"{f:.2g}" if f >= 1e-3 else f"{f:.1e}")


def fmt_ratio(v: Any) -> str:
    """A ratio A / reference, 3 significant digits: ``0.52x``."""
    f = _float(v)
    return "-" if not math.isfinite(f) else f"{f:.3g}x"


def fmt_points(v: Any) -> str:
    """An accuracy difference (a fraction) in signed percentage points: ``+1.20 pt``."""
    f = _float(v)
    return "-" if not math.isfinite(f) else f"{100 * f:+.2f} pt"


def fmt_diff(metric: str, v: Any) -> str:
    """A difference of ``metric``: percentage points for accuracies, else signed, 4 digits."""
    if metric.endswith("_acc"):
        return fmt_points(v)
    f = _float(v)
    return "-" if not math.isfinite(f) else f"{f:+.4g}"


def format_effect(r: pd.Series | dict[str, Any], m: str) -> str:
    """The effect of one arm against the reference on metric ``m``, as the table shows it.

    A log-scale metric (``<m>_scale == "log"``) shows the geometric-mean ratio A / reference with its
    t interval (``0.52x [0.38, 0.71] t n=5``), an accuracy the difference in points
    (``+1.20 pt [+0.50, +1.90] t n=5``), any other metric the signed difference. ``-`` without pairs.
    """
    n = int(r.get(f"{m}_n_pairs", 0) or 0)
    if n == 0:
        return "-"
    ci_m = r.get(f"{m}_diff_ci_method", "t") or "t"
    if r.get(f"{m}_scale") == "log":
        cell = fmt_ratio(r[f"{m}_ratio"])
        lo, hi = r[f"{m}_ratio_ci_low"], r[f"{m}_ratio_ci_high"]
        fmt = fmt_ratio
    else:
        fmt = fmt_points if m.endswith("_acc") else partial(fmt_diff, m)
        cell = fmt(r[f"{m}_diff"])
        lo, hi = r[f"{m}_diff_ci_low"], r[f"{m}_diff_ci_high"]
    if math.isfinite(float(lo)) and math.isfinite(float(hi)):
        cell += f" [{fmt(lo)}, {fmt(hi)}]"
    return cell + f" {ci_m} n={n}"
