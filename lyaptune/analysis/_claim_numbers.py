"""The numbers a claim is decided on: the runs on each side of a comparison and the deciding test.

Private to :mod:`lyaptune.analysis.claims`, which decides the verdicts: a :class:`_Group` is the runs
standing for one side (an arm's final runs, or one grid point's runs), :func:`_values` its metric per
seed, and :func:`_test` the paired t-test on common seeds (Welch's test without them), its confidence
interval, and for an ``equivalent`` claim the two one-sided tests (TOST) against the bound
(METHODS.md section 8).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as sps

from lyaptune.analysis.load import Study
from lyaptune.analysis.stats import paired_t_p

# the statuses of a run that failed (not "completed", not "running")
_FAILED = ("diverged", "errored", "stopped")


# -- per-arm state -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Group:
    """The runs standing for one side of a comparison."""

    label: str
    rows: pd.DataFrame  # completed-or-failed runs (no running ones)

    @property
    def n(self) -> int:
        return len(self.rows)

    @property
    def dead(self) -> int:
        failed = self.rows["status"].isin(_FAILED)
        collapsed = self.rows["collapsed"].astype(bool) & (self.rows["status"] == "completed")
        return int((failed | collapsed).sum())

    def counts(self) -> str:
        r = self.rows
        n_col = int((r["collapsed"].astype(bool) & (r["status"] == "completed")).sum())
        n_fail = int(r["status"].isin(_FAILED).sum())
        return f"'{self.label}' collapsed on {n_col} and failed on {n_fail} of {self.n} final runs"

    @property
    def mostly_dead(self) -> bool:
        return self.n > 0 and 2 * self.dead > self.n


def _group_rows(rows: pd.DataFrame) -> pd.DataFrame:
    return rows[rows["status"] != "running"]


def _groups_for(study: Study, t: pd.DataFrame, arm: str, grid: str) -> list[_Group]:
    """The side(s) ``arm`` contributes to a comparison: its final runs, or one group per grid point."""
    if grid == "each" and study.is_grid(arm):
        rows = _group_rows(t[t["arm"] == arm])
        out = []
        for pj, g in rows.groupby("params_json", sort=False):
            try:
                params = json.loads(pj) if isinstance(pj, str) and pj else {}
            except ValueError:
                params = {}
            inner = ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())
            out.append(_Group(f"{arm}[{inner}]", g))
        return sorted(out, key=lambda x: x.label) or [_Group(arm, rows)]
    return [_Group(arm, _group_rows(t[(t["arm"] == arm) & (t["phase"] == "final")]))]


def _values(group: _Group, col: str, log: bool) -> pd.Series:
    """The metric per seed over the group's completed runs (logs on the log scale; one run per seed)."""
    r = group.rows[group.rows["status"] == "completed"]
    v = pd.to_numeric(r[col], errors="coerce") if col in r else pd.Series(dtype=float)
    v = pd.Series(v.to_numpy(float), index=r["seed"].to_numpy())
    v = v[~v.index.duplicated()]
    if log:
        with np.errstate(divide="ignore", invalid="ignore"):
            v = pd.Series(np.where(v.to_numpy() > 0, np.log(v.to_numpy()), np.nan), index=v.index)
    return v[np.isfinite(v.to_numpy(float))]


# -- tests -------------------------------------------------------------------------------------------


def _t_interval(d: np.ndarray, level: float) -> tuple[float, float]:
    if d.size < 2:
        return math.nan, math.nan
    half = sps.t.ppf((1 + level) / 2, d.size - 1) * d.std(ddof=1) / math.sqrt(d.size)
    return float(d.mean() - half), float(d.mean() + half)


def _one_sided_p(d: np.ndarray, greater: bool) -> float:
    """One-sided one-sample t p of ``mean(d) > 0`` (``greater``) or ``< 0``; the exact one-sided
    sign-flip p (``1/2^n`` when every difference lies on the claimed side) without spread."""
    if d.size < 2:
        return math.nan
    scale = float(np.max(np.abs(d)))
    if scale == 0.0 or np.ptp(d) <= 1e-12 * scale:
        on_side = d[0] > 0 if greater else d[0] < 0
        return 0.5**d.size if on_side else 1.0
    return float(sps.ttest_1samp(d, 0.0, alternative="greater" if greater else "less").pvalue)


def _wilcoxon_p(d: np.ndarray) -> float:
    if d.size < 2 or not np.any(d != 0):
        return math.nan
    try:
        return float(sps.wilcoxon(d).pvalue)
    except ValueError:
        return math.nan


def _test(a: pd.Series, b: pd.Series, bound: float, level: float, equivalent: bool) -> dict[str, Any] | str:
    """The deciding test of one comparison, or why it could not run."""
    common = sorted(set(a.index) & set(b.index))
    out: dict[str, Any] = {"p_wilcoxon": math.nan, "p_outside": math.nan}
    if len(common) >= 2:
        d = a.loc[common].to_numpy(float) - b.loc[common].to_numpy(float)
        out.update(n=d.size, effect=float(d.mean()), ci=_t_interval(d, level), method="t")
        if equivalent:
            p_lo, p_hi = _one_sided_p(d + bound, True), _one_sided_p(d - bound, False)
            out["p"] = max(p_lo, p_hi)
            edge = bound if d.mean() > 0 else -bound
            out["p_outside"] = paired_t_p(d - edge) if abs(d.mean()) > bound else 1.0
        else:
            out["p"] = paired_t_p(d - bound)
            out["p_wilcoxon"] = _wilcoxon_p(d - bound)
        return out
    xa, xb = a.to_numpy(float), b.to_numpy(float)
    if xa.size < 2 or xb.size < 2:
        return (
            f"'{{a}}' and '{{b}}' have {len(common)} common seed(s) and {xa.size} / {xb.size} runs "
            "with the metric (2 paired, or 2 each unpaired, needed)"
        )
    va, vb = xa.var(ddof=1) / xa.size, xb.var(ddof=1) / xb.size
    se = math.sqrt(va + vb)
    effect = float(xa.mean() - xb.mean())
    if se == 0.0:
        return "'{a}' and '{b}' have no spread and no common seeds (Welch's test is undefined)"
    df = (va + vb) ** 2 / (va**2 / (xa.size - 1) + vb**2 / (xb.size - 1)) if va + vb > 0 else 1.0
    half = sps.t.ppf((1 + level) / 2, df) * se
    out.update(n=int(min(xa.size, xb.size)), effect=effect, ci=(effect - half, effect + half), method="welch")

    def p_two(shift: float) -> float:
        return float(2 * sps.t.sf(abs((effect - shift) / se), df))

    if equivalent:
        p_lo = float(sps.t.sf((effect + bound) / se, df))
        p_hi = float(sps.t.cdf((effect - bound) / se, df))
        out["p"] = max(p_lo, p_hi)
        edge = bound if effect > 0 else -bound
        out["p_outside"] = p_two(edge) if abs(effect) > bound else 1.0
    else:
        out["p"] = p_two(bound)
    return out
