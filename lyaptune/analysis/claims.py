"""A verdict on each of the spec's claims: supported, contradicted or inconclusive (METHODS.md section 8).

A claim (the spec's ``claims:`` list) reads "``arm`` has a ``direction`` (lower / higher) ``metric``
than ``than`` (an arm, or every other arm with ``all``), by more than ``margin``". With the per-seed
paired difference ``d_s = metric_s(arm) - metric_s(other)`` over the final seeds both arms completed,
``lower`` claims ``mean(d) < -margin`` and ``higher`` claims ``mean(d) > margin``.

Each comparison the claim implies is a two-sided paired test (t below 6 pairs, Wilcoxon signed-rank from
6 pairs on, METHODS section 8) of ``d`` against the claimed bound
(``-margin`` for lower, ``+margin`` for higher; the bound is 0 without a margin), with the effect
``mean(d)`` and its Student-t interval; the p-values are Holm-adjusted across the claim's comparisons.
A comparison whose adjusted p is below :data:`~lyaptune.analysis.compare.ALPHA` is significant on the
side of the bound where ``mean(d)`` lies. The verdict is

- ``supported``: every comparison significant on the claimed side of the bound;
- ``contradicted``: at least one comparison significant on the other side (the claimed difference is
  significantly absent, e.g. the arm is significantly *higher* when it was claimed lower);
- ``inconclusive``: otherwise, and always (with the reason) when an arm is missing, has fewer than two
  completed final runs, has a collapsed, diverged, errored or stopped final run, or the metric is not
  recorded; a contradiction found in a valid comparison still stands.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from lyaptune.analysis.collapse import CollapseThresholds, LabelStats, classify_collapse, task_label_stats
from lyaptune.analysis.compare import ALPHA, _study_num_classes
from lyaptune.analysis.load import Study
from lyaptune.analysis.stats import holm_adjust, paired_interval, paired_test
from lyaptune.errors import ConfigError

__all__ = [
    "CLAIM_DIRECTIONS",
    "CLAIM_VERDICTS",
    "ClaimComparison",
    "ClaimResult",
    "evaluate_claims",
    "study_claims",
]

#: Directions a claim can state.
CLAIM_DIRECTIONS: tuple[str, ...] = ("lower", "higher")
#: The verdicts :func:`evaluate_claims` gives.
CLAIM_VERDICTS: tuple[str, ...] = ("supported", "contradicted", "inconclusive")
_FAILED = ("diverged", "errored", "stopped")
_SHAPE = "{id, text, metric, arm, than, direction[, margin]}"


@dataclass(frozen=True)
class ClaimComparison:
    """One paired comparison behind a claim: ``arm`` against ``other`` over their common final seeds.

    Attributes:
      other: the arm compared with.
      n: seeds both arms completed (the pairs).
      effect: ``mean_s (x_s(arm) - x_s(other))`` (NaN without a pair).
      ci_low, ci_high: its Student-t interval at the claim's level (NaN below two pairs).
      ci_method: ``"t"``.
      bound: the claimed bound of ``effect`` (``-margin`` for lower, ``+margin`` for higher).
      p: raw two-sided p of the deciding paired test of the differences against ``bound`` (the t-test
        below 6 pairs, the Wilcoxon signed-rank test from 6 pairs on).
      p_wilcoxon: the Wilcoxon signed-rank p of the same shifted differences, from 6 pairs.
      p_adj: ``p`` Holm-adjusted across the claim's tested comparisons.
      outcome: ``claimed`` / ``opposite`` (significant on that side of the bound), ``not significant``,
        or ``not tested`` (see ``reason``).
      reason: why the comparison was not tested (empty when it was).
    """

    other: str
    n: int
    effect: float
    ci_low: float
    ci_high: float
    ci_method: str
    bound: float
    p: float
    p_wilcoxon: float
    p_adj: float
    outcome: str
    reason: str = ""


@dataclass(frozen=True)
class ClaimResult:
    """The verdict on one claim, with the comparisons it rests on.

    Attributes:
      id, text, metric, arm, than, direction, margin: the claim as the spec states it.
      verdict: one of :data:`CLAIM_VERDICTS`.
      reason: why the verdict is ``inconclusive`` (or what else limits it); empty when supported.
      comparisons: one :class:`ClaimComparison` per arm compared with (one, or every other arm).
      level: the confidence level of the intervals; alpha: the significance level of the verdict.
    """

    id: str
    text: str
    metric: str
    arm: str
    than: str
    direction: str
    margin: float
    verdict: str
    reason: str
    comparisons: tuple[ClaimComparison, ...] = field(default_factory=tuple)
    level: float = 0.95
    alpha: float = ALPHA

    @property
    def decisive(self) -> ClaimComparison | None:
        """The comparison least favourable to the claim: the tested one whose effect lies furthest
        toward the opposite side of the bound (the closest competitor under ``than: all``); an untested
        one with an effect when none was tested; ``None`` without any effect."""
        tested = [c for c in self.comparisons if not c.reason and math.isfinite(c.effect)]
        pool = tested or [c for c in self.comparisons if math.isfinite(c.effect)]
        if not pool:
            return None
        sign = 1.0 if self.direction == "lower" else -1.0  # larger sign * (effect - bound) = worse
        return max(pool, key=lambda c: sign * (c.effect - c.bound))

    def to_dict(self) -> dict[str, Any]:
        """Plain data for ``compare.json``: the claim, its verdict and reason, the decisive comparison's
        ``effect`` / ``interval`` / ``p`` / ``p_adj`` at the top level, and every comparison."""
        d = self.decisive
        out: dict[str, Any] = {
            "id": self.id,
            "text": self.text,
            "metric": self.metric,
            "arm": self.arm,
            "than": self.than,
            "direction": self.direction,
            "margin": self.margin,
            "verdict": self.verdict,
            "reason": self.reason,
            "compared_with": d.other if d else None,
            "effect": _num_or_none(d.effect) if d else None,
            "interval": {
                "low": _num_or_none(d.ci_low) if d else None,
                "high": _num_or_none(d.ci_high) if d else None,
                "method": "t",
                "level": self.level,
                "n": d.n if d else 0,
            },
            "p": _num_or_none(d.p) if d else None,
            "p_adj": _num_or_none(d.p_adj) if d else None,
            "alpha": self.alpha,
            "comparisons": [{k: _num_or_none(v) for k, v in asdict(c).items()} for c in self.comparisons],
        }
        return out


def _num_or_none(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def study_claims(study: Study) -> list[dict[str, Any]]:
    """The spec's ``claims:`` as plain dicts ``{id, text, metric, arm, than, direction, margin}``.

    Read from the stored spec defensively (a run from before claims existed has none: ``[]``);
    ``than`` defaults to ``all``, ``margin`` to 0.

    Raises:
      ConfigError: a malformed entry, naming ``claims[i].<field>``, the value and what is valid.
    """
    raw = study.spec.get("claims")
    if raw is None:
        return []
    if not isinstance(raw, (list, tuple)):
        raise ConfigError(f"claims: expected a list of {_SHAPE}, got {raw!r}")
    out = []
    for i, c in enumerate(raw):
        where = f"claims[{i}]"
        if not isinstance(c, Mapping):
            raise ConfigError(f"{where}: expected a mapping {_SHAPE}, got {c!r}")
        for key in ("id", "metric", "arm"):
            if not isinstance(c.get(key), str) or not c[key]:
                raise ConfigError(f"{where}.{key}: expected a non-empty string, got {c.get(key)!r}")
        direction = c.get("direction")
        if direction not in CLAIM_DIRECTIONS:
            raise ConfigError(f"{where}.direction: {direction!r} is not valid; choices: lower, higher")
        margin = c.get("margin", 0.0)
        margin = 0.0 if margin is None else margin
        if isinstance(margin, bool) or not isinstance(margin, (int, float)) or not margin >= 0:
            raise ConfigError(f"{where}.margin: {margin!r} is not valid; expected a number >= 0")
        out.append(
            {
                "id": str(c["id"]),
                "text": str(c.get("text") or ""),
                "metric": str(c["metric"]),
                "arm": str(c["arm"]),
                "than": str(c.get("than") or "all"),
                "direction": str(direction),
                "margin": float(margin),
            }
        )
    return out


def _arm_problem(arm: str, final: pd.DataFrame, metric: str, present: Sequence[str]) -> str:
    """Why ``arm``'s final runs cannot carry a verdict (empty when they can)."""
    if arm not in present:
        return f"arm '{arm}' is not in this study"
    rows = final[final["arm"] == arm]
    done = rows[rows["status"] == "completed"]
    failed = {s: int((rows["status"] == s).sum()) for s in _FAILED}
    failed = {s: n for s, n in failed.items() if n}
    if failed:
        what = ", ".join(f"{n} {s}" for s, n in failed.items())
        return f"arm '{arm}' has failed final runs ({what} of {len(rows)})"
    n_collapsed = int(done["collapsed"].sum()) if "collapsed" in done and len(done) else 0
    if n_collapsed:
        return f"arm '{arm}' collapsed on {n_collapsed} of {len(done)} completed final runs"
    values = pd.to_numeric(done[metric], errors="coerce") if metric in done else pd.Series(dtype=float)
    n = int(np.isfinite(values.to_numpy(float)).sum())
    if n < 2:
        return f"arm '{arm}' has {n} completed final run(s) with {metric} (2 needed)"
    return ""


def _seed_values(final: pd.DataFrame, arm: str, metric: str) -> pd.Series:
    rows = final[(final["arm"] == arm) & (final["status"] == "completed")]
    one = rows.drop_duplicates("seed").set_index("seed")[metric]
    values = pd.to_numeric(one, errors="coerce")
    return values[np.isfinite(values.to_numpy(float))]


def evaluate_claims(
    study: Study,
    *,
    thresholds: CollapseThresholds | None = None,
    labels: LabelStats | None = None,
    level: float = 0.95,
    alpha: float = ALPHA,
) -> list[ClaimResult]:
    r"""The verdict on each of the study's claims (:func:`study_claims`), in the spec's order.

    For a claim about ``arm`` and each arm it is compared with (``than``, or every other arm of the
    study for ``than: all``), over the seeds both completed, the paired differences
    :math:`d_s = x_s(\text{arm}) - x_s(\text{other})` give the effect :math:`\bar d` with its Student-t
    interval :math:`\bar d \pm t_{(1+\text{level})/2, n-1}\, s_d/\sqrt n`, and a two-sided paired
    t-test of :math:`d` against the claimed bound :math:`b` (:math:`-\text{margin}` for lower,
    :math:`+\text{margin}` for higher), i.e. of :math:`t = (\bar d - b)\sqrt n / s_d`. The p-values are
    Holm-adjusted across the claim's tested comparisons (a family per claim); a comparison is
    significant when its adjusted p < ``alpha``, on the side of :math:`b` where :math:`\bar d` lies.
    The verdict is ``supported`` when every comparison is significant on the claimed side,
    ``contradicted`` when at least one is significant on the other side, else ``inconclusive`` with
    the reason (which also covers a missing arm, fewer than 2 completed final runs, a collapsed or
    failed final run, or an unrecorded metric: such a comparison is not tested).

    Args:
      study: a loaded study.
      thresholds: collapse thresholds (default :class:`~lyaptune.analysis.collapse.CollapseThresholds`).
      labels: the task's label statistics for the collapse rule (default read from the dataset).
      level: confidence level of the intervals.
      alpha: significance level of the verdicts (on Holm-adjusted p).

    Returns:
      One :class:`ClaimResult` per claim (``[]`` when the spec states none).

    Raises:
      ConfigError: a malformed claim in the stored spec.

    References:
      METHODS.md section 8; Holm (1979), Scand. J. Statist. 6(2); Student (1908), Biometrika 6(1).
    """
    claims = study_claims(study)
    if not claims:
        return []
    th = thresholds or CollapseThresholds()
    t = study.trials
    if len(t):
        if labels is None:
            labels = task_label_stats(study.task, _study_num_classes(study))
        t = classify_collapse(t, th, labels=labels)
        final = t[t["phase"] == "final"]
    else:
        final = pd.DataFrame(columns=["arm", "seed", "status", "phase", "collapsed"])
    return [_evaluate_one(c, final, study.arms, level, alpha) for c in claims]


def _evaluate_one(
    claim: dict[str, Any], final: pd.DataFrame, arms: Sequence[str], level: float, alpha: float
) -> ClaimResult:
    metric, arm, direction, margin = claim["metric"], claim["arm"], claim["direction"], claim["margin"]
    bound = (-margin if direction == "lower" else margin) if margin else 0.0
    if claim["than"] == "all":
        others = [a for a in arms if a != arm]
    else:
        others = [claim["than"]]
    problems: list[str] = []
    if len(final) and metric not in final.columns:
        problems.append(f"metric '{metric}' is not recorded in this study's trials")
    own = _arm_problem(arm, final, metric, arms) if not problems else ""
    if own:
        problems.append(own)
    if not others:
        problems.append(f"no other arm to compare '{arm}' with")
    shared = problems[0] if problems else ""  # a problem of the claim itself stops every comparison
    raw: list[dict[str, Any]] = []
    for other in others:
        reason = shared or _arm_problem(other, final, metric, arms)
        entry: dict[str, Any] = {"other": other, "n": 0, "effect": math.nan, "ci": (math.nan, math.nan)}
        entry.update({"p": math.nan, "p_wilcoxon": math.nan, "reason": reason})
        if metric in final.columns and arm in arms and other in arms:
            a, b = _seed_values(final, arm, metric), _seed_values(final, other, metric)
            common = sorted(set(a.index) & set(b.index))
            xa, xb = a.loc[common].to_numpy(float), b.loc[common].to_numpy(float)
            entry["n"] = len(common)
            if common:
                entry["effect"] = float(np.mean(xa - xb))
                entry["ci"] = paired_interval(xa, xb, level, "t")
            if not reason and len(common) < 2:
                reason = entry["reason"] = (
                    f"'{arm}' and '{other}' completed {len(common)} common final seed(s) (2 needed)"
                )
            if not reason:
                # the differences shifted by the bound: d - b, tested against 0
                test = paired_test(xa - bound, xb)
                entry["p"], entry["p_wilcoxon"] = test["p"], test["p_wilcoxon"]
        if reason and reason not in problems:
            problems.append(reason)
        raw.append(entry)
    p_adj = holm_adjust([e["p"] for e in raw]) if raw else np.array([])
    comps = []
    for e, pa in zip(raw, p_adj):
        if e["reason"]:
            outcome = "not tested"
        elif math.isfinite(pa) and pa < alpha and e["effect"] != bound:
            outcome = "claimed" if (e["effect"] < bound) == (direction == "lower") else "opposite"
        else:
            outcome = "not significant"
        comps.append(
            ClaimComparison(
                other=e["other"],
                n=int(e["n"]),
                effect=float(e["effect"]),
                ci_low=float(e["ci"][0]),
                ci_high=float(e["ci"][1]),
                ci_method="t",
                bound=float(bound),
                p=float(e["p"]),
                p_wilcoxon=float(e["p_wilcoxon"]),
                p_adj=float(pa),
                outcome=outcome,
                reason=e["reason"],
            )
        )
    opposite = [c for c in comps if c.outcome == "opposite"]
    side = f"{direction} than '{{}}'" + (f" by more than {margin:g}" if margin else "")
    if opposite:
        verdict = "contradicted"
        reason = "; ".join(
            f"'{arm}' is significantly not {side.format(c.other)} (Holm-adjusted p = {c.p_adj:.2g})"
            for c in opposite
        )
        if problems:
            reason += "; also: " + "; ".join(problems)
    elif problems:
        verdict, reason = "inconclusive", "; ".join(problems)
    elif all(c.outcome == "claimed" for c in comps):
        verdict, reason = "supported", ""
    else:
        verdict = "inconclusive"
        reason = "; ".join(
            f"not significant against '{c.other}' (Holm-adjusted p = "
            + (f"{c.p_adj:.2g}" if math.isfinite(c.p_adj) else "-")
            + f", n = {c.n})"
            for c in comps
            if c.outcome != "claimed"
        )
    return ClaimResult(
        id=claim["id"],
        text=claim["text"],
        metric=metric,
        arm=arm,
        than=claim["than"],
        direction=direction,
        margin=margin,
        verdict=verdict,
        reason=reason,
        comparisons=tuple(comps),
        level=level,
        alpha=alpha,
    )
