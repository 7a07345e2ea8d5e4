r"""A verdict on each of the spec's claims: supported, contradicted or inconclusive (METHODS.md section 8).

A claim (:class:`~lyaptune.study.comparison.ClaimSpec`) is about one arm ``A`` and, except a
``collapses`` claim, the arms it is compared with (``than``: an arm, a list, or every other arm). Each
comparison of ``A`` with an arm ``B`` pairs their final runs by seed; the per-seed difference is
:math:`d_s = f(x_s(A)) - f(x_s(B))` with :math:`f = \ln` for a log-scale metric (losses, gradient
norms, seconds, ``derived_lr``: :mod:`lyaptune.metrics`) and the identity otherwise, so an effect on
the log scale is reported as the geometric-mean ratio :math:`e^{\bar d}` with its t interval.

**Rules of METHODS section 8**, as implemented here:

- *The test*: the paired t-test at every n (:func:`~lyaptune.analysis.stats.paired_t_p`: the exact
  sign-flip p where the differences have no spread) of :math:`d - b` against 0, with :math:`b` the
  claimed bound: 0, :math:`\mp` ``margin`` (linear metrics), or :math:`\mp \ln` ``factor`` (log-scale
  metrics: "at least 10x lower" is :math:`b = -\ln 10`). A comparison is significant on the side of
  :math:`b` where :math:`\bar d` lies.
- *All comparisons* (``quantifier: each``, the default): ``supported`` when every comparison is
  significant on the claimed side at ``alpha`` *unadjusted* (intersection-union test);
  ``contradicted`` when any is significant on the other side after Holm across the claim's tested
  comparisons.
- *Any comparison* (``quantifier: any``): ``supported`` when at least one is significant on the
  claimed side after Holm.
- *Collapse and failure decide without a test*, and only arms whose final runs all completed and none
  collapsed are t-tested. A claimed winner (``A`` when the claimed direction is the metric's better
  one, e.g. ``lower`` loss; ``B`` when the claim says ``A`` is worse) that collapsed or failed
  (diverged, errored, stopped) on most of its final runs loses the comparison: the claim is
  contradicted, naming it. A comparison against an arm that collapsed or failed on most runs, while the
  claimed winner has no such run, holds by the same rule. Any other mix is not tested and leaves the
  claim inconclusive, with the counts.
- *Equivalence* (``direction: equivalent``, margin :math:`\delta` = ``margin`` or :math:`\ln`
  ``factor``): two one-sided t-tests (TOST) of :math:`H_0: \mu \le -\delta` and :math:`H_0: \mu \ge
  \delta`; a comparison is equivalent when both reject at ``alpha``
  (:math:`p_{TOST} = \max(p_-, p_+)`); it is significantly outside the margin when the two-sided t-test
  of :math:`d \mp \delta` rejects after Holm with :math:`|\bar d| > \delta`. The claim is supported when
  every comparison is equivalent, contradicted when any is significantly outside.
- *Expected collapse* (``direction: collapses``): supported when ``A`` collapsed on most of its final
  runs, contradicted when on none, else inconclusive with the counts.

**Rules added where METHODS section 8 is silent:**

- An ``any`` claim is contradicted only when *every* comparison is lost (significant on the other side
  after Holm, or lost by the collapse rule).
- For a metric with no better direction (``derived_lr``, ``k_hat``, ``initial_loss``: measured before
  training) collapse and failure do not decide: every completed run with a value is paired.
- An equivalence comparison where exactly one arm collapsed or failed on most final runs and the other
  on none is significantly outside any margin (a dead network is not comparable to a live one); any
  other mix is not tested.
- ``collapses`` counts a diverged run (non-finite loss) as collapsed: both end at no better than
  chance. Errored and stopped runs do not count either way.
- ``grid: each`` compares ``A`` with every grid point of a grid arm, each point's runs taken from
  every phase (a grid point's search-seed runs and, for the chosen point, its final runs). Where a
  point shares at least two seeds with ``A``'s final runs the comparison is paired on them; otherwise
  it is Welch's unpaired t-test (:math:`t = (\bar f_A - \bar f_B - b)/\sqrt{s_A^2/n_A + s_B^2/n_B}`,
  Welch-Satterthwaite degrees of freedom) with its interval, the seeds being independent.
- A whole-run metric (:mod:`lyaptune.analysis.runmetrics`) is computed per run from its epoch records
  and then treated like a final-epoch metric.

The verdict's reason names the rule that decided: ``t, each comparison at 0.05 (intersection-union)``,
``Holm``, ``TOST``, ``collapse``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from lyaptune.analysis._claim_numbers import _Group, _groups_for, _t_interval, _test, _values
from lyaptune.analysis.collapse import CollapseThresholds, LabelStats, classify_collapse, task_label_stats
from lyaptune.analysis.compare import ALPHA, _study_num_classes
from lyaptune.analysis.load import Study
from lyaptune.analysis.runmetrics import RUN_METRICS, run_metric_info, run_metric_values
from lyaptune.analysis.stats import holm_adjust
from lyaptune.study.comparison import (
    CLAIM_DIRECTIONS,
    CLAIM_RUN_METRICS,
    ClaimSpec,
    _claims_list,
)

__all__ = [
    "CLAIM_DIRECTIONS",
    "CLAIM_VERDICTS",
    "ClaimComparison",
    "ClaimResult",
    "evaluate_claims",
    "study_claims",
]

assert set(RUN_METRICS) == set(CLAIM_RUN_METRICS)

#: The verdicts :func:`evaluate_claims` gives.
CLAIM_VERDICTS: tuple[str, ...] = ("supported", "contradicted", "inconclusive")


@dataclass(frozen=True)
class ClaimComparison:
    """One comparison behind a claim: ``arm`` against ``other``.

    Attributes:
      other: the arm (or grid point, ``arm[lr=0.01]``) compared with.
      n: pairs (paired test) or the smaller group (Welch); 0 when not tested.
      effect: the mean difference on the tested scale (of logs for a log-scale metric; NaN without data).
      ci_low, ci_high: its Student-t (or Welch) interval at the claim's level.
      ci_method: ``"t"`` (paired), ``"welch"`` (unpaired) or ``""``.
      bound: the claimed bound of ``effect`` (``-ln factor`` / ``-margin`` for lower, ``+`` for higher,
        the equivalence margin for an equivalence claim).
      p: raw p of the deciding test (the two-sided t-test of ``d - bound``; TOST's ``max(p-, p+)`` for
        an equivalence claim).
      p_wilcoxon: the Wilcoxon signed-rank p of ``d - bound`` (a robustness column; NaN unpaired).
      p_adj: Holm-adjusted across the claim's tested comparisons (for equivalence: of ``p_outside``).
      outcome: ``claimed`` / ``opposite`` (holds / fails significantly, or by the collapse rule),
        ``not significant``, or ``not tested`` (see ``reason``).
      reason: why the comparison was not tested, or the collapse rule that decided it.
      scale: ``log`` or ``linear``: the scale of ``effect``.
      ratio, ratio_low, ratio_high: ``exp`` of effect and interval on the log scale (NaN on linear).
      p_outside: equivalence only: the two-sided p that the difference lies outside the margin.
      rule: ``t``, ``welch``, ``tost`` or ``collapse``: what decided the outcome (empty: not tested).
      n_a, n_b: final runs of the two arms; dead_a, dead_b: those collapsed or failed.
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
    scale: str = "linear"
    ratio: float = math.nan
    ratio_low: float = math.nan
    ratio_high: float = math.nan
    p_outside: float = math.nan
    rule: str = ""
    n_a: int = 0
    n_b: int = 0
    dead_a: int = 0
    dead_b: int = 0


@dataclass(frozen=True)
class ClaimResult:
    """The verdict on one claim, with the comparisons it rests on.

    Attributes:
      id, text, metric, arm, than, direction, margin: the claim as the spec states it (``than`` as a
        string: an arm, ``all`` or a comma-joined list; ``margin`` the bound's size on the tested scale:
        ``ln factor`` for a log-scale metric; ``metric`` ``""`` for a ``collapses`` claim).
      verdict: one of :data:`CLAIM_VERDICTS`.
      reason: the rule that decided and why (for ``supported`` too).
      comparisons: one :class:`ClaimComparison` per arm or grid point compared with.
      level: the confidence level of the intervals; alpha: the significance level of the verdict.
      source: ``paper`` or ``extension``; paper, place: where the paper says so (``""`` for extensions).
      kind: ``compare`` (lower / higher), ``equivalent`` or ``collapses``.
      quantifier: ``each`` or ``any``; grid: ``best`` or ``each``.
      scale: the tested scale (``log`` / ``linear``); factor: the claimed ratio (log scale) or NaN.
      rule: the rule that decided (``intersection-union t``, ``Holm``, ``TOST``, ``collapse``, ...).
      statement: the claim in the tool's words (what exactly was tested).
      n_collapsed, n_final: the claimed arm's collapsed-or-failed and final runs.
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
    source: str = "extension"
    paper: str = ""
    place: str = ""
    kind: str = "compare"
    quantifier: str = "each"
    grid: str = "best"
    scale: str = "linear"
    factor: float = math.nan
    rule: str = ""
    statement: str = ""
    n_collapsed: int = 0
    n_final: int = 0

    @property
    def decisive(self) -> ClaimComparison | None:
        """The comparison least favourable to the claim: the tested one whose effect lies furthest
        toward the opposite side of the bound (for equivalence: furthest from 0); an untested one with
        an effect when none was tested; ``None`` without any effect."""
        tested = [c for c in self.comparisons if c.rule in ("t", "welch", "tost") and math.isfinite(c.effect)]
        pool = tested or [c for c in self.comparisons if math.isfinite(c.effect)]
        if not pool:
            return None
        if self.direction == "equivalent":
            return max(pool, key=lambda c: abs(c.effect))
        sign = 1.0 if self.direction == "lower" else -1.0  # larger sign * (effect - bound) = worse
        return max(pool, key=lambda c: sign * (c.effect - c.bound))

    def to_dict(self) -> dict[str, Any]:
        """Plain data for ``compare.json``: the claim with its provenance (``source``, ``paper``,
        ``place``), its verdict and reason, the decisive comparison's ``effect`` / ``interval`` / ``p``
        / ``p_adj`` (and ``ratio`` on the log scale) at the top level, and every comparison."""
        d = self.decisive
        out: dict[str, Any] = {
            "id": self.id,
            "text": self.text,
            "source": self.source,
            "paper": self.paper,
            "place": self.place,
            "kind": self.kind,
            "metric": self.metric,
            "arm": self.arm,
            "than": self.than,
            "direction": self.direction,
            "quantifier": self.quantifier,
            "grid": self.grid,
            "margin": self.margin,
            "factor": _num_or_none(self.factor),
            "scale": self.scale,
            "statement": self.statement,
            "verdict": self.verdict,
            "reason": self.reason,
            "rule": self.rule,
            "n_collapsed": self.n_collapsed,
            "n_final": self.n_final,
            "compared_with": d.other if d else None,
            "effect": _num_or_none(d.effect) if d else None,
            "interval": {
                "low": _num_or_none(d.ci_low) if d else None,
                "high": _num_or_none(d.ci_high) if d else None,
                "method": (d.ci_method or "t") if d else "t",
                "level": self.level,
                "n": d.n if d else 0,
            },
            "ratio": (
                {
                    "value": _num_or_none(d.ratio),
                    "low": _num_or_none(d.ratio_low),
                    "high": _num_or_none(d.ratio_high),
                }
                if d and self.scale == "log"
                else None
            ),
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


def study_claims(study: Study) -> list[ClaimSpec]:
    """The stored spec's ``claims:`` as :class:`~lyaptune.study.comparison.ClaimSpec` (``[]`` for a run
    from before claims existed); a stored claim without ``source`` reads as ``extension``.

    Raises:
      ConfigError: a malformed entry, naming ``claims[i].<field>``, the value and what is valid.
    """
    raw = study.spec.get("claims")
    if raw is None:
        return []
    return list(_claims_list(raw, study.arms, stored=True))


# -- evaluation --------------------------------------------------------------------------------------


def evaluate_claims(
    study: Study,
    *,
    thresholds: CollapseThresholds | None = None,
    labels: LabelStats | None = None,
    level: float = 0.95,
    alpha: float = ALPHA,
) -> list[ClaimResult]:
    r"""The verdict on each of the study's claims (:func:`study_claims`), in the spec's order.

    The rules are the module's (METHODS.md section 8 "Claims" and "What a claim may say", and the rules
    added where it is silent): paired t-tests of :math:`d - b` (logs for log-scale metrics) at every n,
    intersection-union for claims over every comparison, Holm for "any" claims and for contradictions,
    TOST for equivalence, and collapse or failure deciding without a test.

    Args:
      study: a loaded study (its epoch records are read for whole-run metrics).
      thresholds: collapse thresholds (default :class:`~lyaptune.analysis.collapse.CollapseThresholds`).
      labels: the task's label statistics for the collapse rule (default read from the dataset).
      level: confidence level of the intervals.
      alpha: significance level of the verdicts.

    Returns:
      One :class:`ClaimResult` per claim (``[]`` when the spec states none).

    Raises:
      ConfigError: a malformed claim in the stored spec.

    References:
      METHODS.md section 8; Berger (1982), Technometrics 24(4) (intersection-union tests); Schuirmann
      (1987), J. Pharmacokinet. Biopharm. 15(6) (TOST); Holm (1979), Scand. J. Statist. 6(2); Welch
      (1947), Biometrika 34(1-2).
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
    else:
        t = pd.DataFrame(columns=["arm", "seed", "status", "phase", "collapsed", "trial_id", "params_json"])
    if "params_json" not in t:
        t = t.assign(params_json="")
    return [_evaluate_one(study, c, t, level, alpha) for c in claims]


def _statement(c: ClaimSpec, scale: str) -> str:
    if c.direction == "collapses":
        return f"'{c.arm}' collapses (collapsed or diverged on most final runs)"
    metric = str(c.metric)
    if c.target:
        side = "below" if "below" in c.target else "above"
        metric += f" ({c.target['field']} {side} {c.target[side]:g})"
    if c.of:
        metric += f" of {c.of}"
    others = "every other arm" if c.than == "all" else ", ".join(f"'{x}'" for x in c.than_arms)
    if c.grid == "each":
        others += " (each grid point)"
    quant = (
        ""
        if len(c.than_arms) == 1 and c.than != "all"
        else (" (each)" if c.quantifier == "each" else " (any one)")
    )
    if c.direction == "equivalent":
        within = f"within a ratio of {c.factor:g}" if scale == "log" else f"within {c.margin:g}"
        return f"'{c.arm}' has an equivalent {metric} to {others}{quant}, {within}"
    gap = ""
    if c.factor:
        gap = f" by at least {c.factor:g}x"
    elif c.margin:
        gap = f" by more than {c.margin:g}"
    return f"'{c.arm}' has a {c.direction} {metric} than {others}{quant}{gap}"


def _evaluate_one(study: Study, c: ClaimSpec, t: pd.DataFrame, level: float, alpha: float) -> ClaimResult:
    info = run_metric_info(c.metric, c.of) if c.metric else None
    scale = info.scale if info else "linear"
    log = scale == "log"
    kind = {"equivalent": "equivalent", "collapses": "collapses"}.get(c.direction, "compare")
    base: dict[str, Any] = {
        "id": c.id,
        "text": c.text,
        "metric": c.metric or "",
        "arm": c.arm,
        "than": c.than if isinstance(c.than, str) else ", ".join(c.than),
        "direction": c.direction,
        "level": level,
        "alpha": alpha,
        "source": c.source or "extension",
        "paper": c.paper or "",
        "place": c.place or "",
        "kind": kind,
        "quantifier": c.quantifier,
        "grid": c.grid,
        "scale": scale,
        "factor": float(c.factor) if c.factor else math.nan,
        "statement": _statement(c, scale),
    }
    own = _groups_for(study, t, c.arm, "best")[0]
    base["n_final"], base["n_collapsed"] = own.n, own.dead
    if kind == "collapses":
        return _collapses(c, own, base)

    size = math.log(c.factor) if c.factor else float(c.margin or 0.0)
    base["margin"] = size
    if kind == "equivalent":
        bound = size
    else:
        bound = -size if c.direction == "lower" else size
    # the metric's values per run (whole-run metrics from the epoch records)
    col = str(c.metric)
    if c.metric in RUN_METRICS:
        col = f"__claim_{c.metric}"
        t = t.assign(**{col: run_metric_values(t, study.epochs, c.metric, target=c.target, of=c.of)})
        own = _groups_for(study, t, c.arm, "best")[0]
    if col not in t.columns:
        return ClaimResult(
            **base, verdict="inconclusive", reason=f"metric '{col}' is not recorded in this study", rule=""
        )
    if c.arm not in study.arms:
        return ClaimResult(**base, verdict="inconclusive", reason=f"arm '{c.arm}' is not in this study")
    names = [a for a in study.arms if a != c.arm] if c.than == "all" else list(c.than_arms)
    others: list[_Group] = []
    missing = []
    for name in names:
        if name not in study.arms:
            missing.append(f"arm '{name}' is not in this study")
            continue
        others += _groups_for(study, t, name, c.grid)
    mode = info.mode if info else None
    # who is the claimed winner of each comparison: A when the claimed direction is the better one
    a_wins = None if mode is None or kind == "equivalent" else (c.direction == "lower") == (mode == "min")
    raw: list[dict[str, Any]] = []
    for other in others:
        raw.append(_compare(c, own, other, col, log, bound, level, kind, a_wins, mode is not None))
    # Holm across the tested comparisons: of p (t) for directional claims, of p_outside for equivalence
    tested = [e for e in raw if e["rule"] in ("t", "welch", "tost")]
    key = "p_outside" if kind == "equivalent" else "p"
    adj = holm_adjust([e[key] for e in tested]) if tested else np.array([])
    for e, pa in zip(tested, adj):
        e["p_adj"] = float(pa)
    comps = []
    for e in raw:
        if e["rule"] in ("t", "welch", "tost"):
            e["outcome"] = _outcome(e, c, kind, bound, alpha, len(raw))
        comps.append(_comparison(e, scale))
    verdict, reason, rule = _verdict(c, comps, missing, kind, alpha, own)
    return ClaimResult(**base, verdict=verdict, reason=reason, rule=rule, comparisons=tuple(comps))


def _collapses(c: ClaimSpec, own: _Group, base: dict[str, Any]) -> ClaimResult:
    r = own.rows
    dead = int(
        ((r["status"] == "completed") & r["collapsed"].astype(bool)).sum() + (r["status"] == "diverged").sum()
    )
    n = int(r["status"].isin(("completed", "diverged")).sum())
    base = {**base, "margin": 0.0, "n_collapsed": dead, "n_final": n}
    counts = f"'{c.arm}' collapsed or diverged on {dead} of {n} final runs"
    if n == 0:
        return ClaimResult(**base, verdict="inconclusive", reason=f"arm '{c.arm}' has no completed final run")
    if 2 * dead > n:
        return ClaimResult(
            **base, verdict="supported", reason=f"collapse rule: {counts} (most)", rule="collapse"
        )
    if dead == 0:
        return ClaimResult(
            **base, verdict="contradicted", reason=f"collapse rule: {counts} (none)", rule="collapse"
        )
    return ClaimResult(
        **base, verdict="inconclusive", reason=f"collapse rule: {counts} (neither most nor none)"
    )


def _compare(
    c: ClaimSpec,
    own: _Group,
    other: _Group,
    col: str,
    log: bool,
    bound: float,
    level: float,
    kind: str,
    a_wins: bool | None,
    directed: bool,
) -> dict[str, Any]:
    e: dict[str, Any] = {
        "other": other.label,
        "n": 0,
        "effect": math.nan,
        "ci": (math.nan, math.nan),
        "ci_method": "",
        "bound": bound,
        "p": math.nan,
        "p_wilcoxon": math.nan,
        "p_outside": math.nan,
        "p_adj": math.nan,
        "outcome": "not tested",
        "reason": "",
        "rule": "",
        "n_a": own.n,
        "n_b": other.n,
        "dead_a": own.dead,
        "dead_b": other.dead,
    }
    va, vb = _values(own, col, log), _values(other, col, log)
    common = sorted(set(va.index) & set(vb.index))
    if common:  # the measured effect is shown even where collapse decides
        d = va.loc[common].to_numpy(float) - vb.loc[common].to_numpy(float)
        e["n"], e["effect"], e["ci"], e["ci_method"] = d.size, float(d.mean()), _t_interval(d, level), "t"
    if own.n == 0 or other.n == 0:
        who = own.label if own.n == 0 else other.label
        e["reason"] = f"'{who}' has no final run"
        return e
    if directed:  # collapse and failure decide only where the metric has a better direction
        winner, loser = (own, other) if a_wins in (True, None) else (other, own)
        if kind == "equivalent":
            if (own.mostly_dead and other.dead == 0) or (other.mostly_dead and own.dead == 0):
                dead = own if own.mostly_dead else other
                e.update(
                    outcome="opposite",
                    rule="collapse",
                    reason=f"{dead.counts()}: not equivalent to a live arm",
                )
                return e
        elif winner.mostly_dead:
            e.update(outcome="opposite", rule="collapse", reason=f"claimed winner {winner.counts()} (most)")
            return e
        elif loser.mostly_dead and winner.dead == 0:
            e.update(
                outcome="claimed",
                rule="collapse",
                reason=f"{loser.counts()} (most), '{winner.label}' on none",
            )
            return e
        if own.dead or other.dead:
            dead = [g.counts() for g in (own, other) if g.dead]
            e["reason"] = "not tested: " + "; ".join(dead)
            return e
    res = _test(va, vb, bound, level, kind == "equivalent")
    if isinstance(res, str):
        e["reason"] = res.format(a=own.label, b=other.label)
        return e
    e.update(
        n=res["n"],
        effect=res["effect"],
        ci=res["ci"],
        ci_method=res["method"],
        p=res["p"],
        p_wilcoxon=res["p_wilcoxon"],
        p_outside=res["p_outside"],
        rule="tost" if kind == "equivalent" else res["method"],
    )
    return e


def _outcome(e: dict[str, Any], c: ClaimSpec, kind: str, bound: float, alpha: float, m: int) -> str:
    if kind == "equivalent":
        if math.isfinite(e["p"]) and e["p"] < alpha:
            return "claimed"
        if math.isfinite(e["p_adj"]) and e["p_adj"] < alpha:
            return "opposite"
        return "not significant"
    if not math.isfinite(e["effect"]) or e["effect"] == bound:
        return "not significant"
    claimed_side = (e["effect"] < bound) == (c.direction == "lower")
    if claimed_side:
        # each: intersection-union, unadjusted; any: after Holm (one comparison: the same)
        p = e["p"] if c.quantifier == "each" else e["p_adj"]
        return "claimed" if math.isfinite(p) and p < alpha else "not significant"
    return "opposite" if math.isfinite(e["p_adj"]) and e["p_adj"] < alpha else "not significant"


def _comparison(e: dict[str, Any], scale: str) -> ClaimComparison:
    lo, hi = e["ci"]
    log = scale == "log"
    return ClaimComparison(
        other=e["other"],
        n=int(e["n"]),
        effect=float(e["effect"]),
        ci_low=float(lo),
        ci_high=float(hi),
        ci_method=e["ci_method"],
        bound=float(e["bound"]),
        p=float(e["p"]),
        p_wilcoxon=float(e["p_wilcoxon"]),
        p_adj=float(e["p_adj"]),
        outcome=e["outcome"],
        reason=e["reason"],
        scale=scale,
        ratio=math.exp(e["effect"]) if log and math.isfinite(e["effect"]) else math.nan,
        ratio_low=math.exp(lo) if log and math.isfinite(lo) else math.nan,
        ratio_high=math.exp(hi) if log and math.isfinite(hi) else math.nan,
        p_outside=float(e["p_outside"]),
        rule=e["rule"],
        n_a=int(e["n_a"]),
        n_b=int(e["n_b"]),
        dead_a=int(e["dead_a"]),
        dead_b=int(e["dead_b"]),
    )


def _fmt(p: float) -> str:
    return f"{p:.2g}" if math.isfinite(p) else "-"


def _verdict(
    c: ClaimSpec, comps: Sequence[ClaimComparison], missing: list[str], kind: str, alpha: float, own: _Group
) -> tuple[str, str, str]:
    if not comps and not missing:
        return "inconclusive", f"no other arm to compare '{c.arm}' with", ""
    opposite = [x for x in comps if x.outcome == "opposite"]
    claimed = [x for x in comps if x.outcome == "claimed"]
    rest = [x for x in comps if x.outcome not in ("opposite", "claimed")]

    def why(x: ClaimComparison) -> str:
        if x.rule == "collapse":
            return f"against '{x.other}', collapse rule: {x.reason}"
        if x.reason:
            return f"against '{x.other}': {x.reason}"
        if kind == "equivalent":
            outside = f"outside-margin p (Holm) = {_fmt(x.p_adj)}"
            return f"against '{x.other}': TOST p = {_fmt(x.p)}, {outside}, n = {x.n}"
        return f"against '{x.other}': {x.rule} p = {_fmt(x.p)}, Holm-adjusted {_fmt(x.p_adj)}, n = {x.n}"

    def rules(xs: Sequence[ClaimComparison]) -> str:
        names = sorted(
            {"collapse" if x.rule == "collapse" else ("TOST" if x.rule == "tost" else x.rule) for x in xs}
        )
        return " + ".join(names)

    many = len(comps) + len(missing) > 1
    if c.quantifier == "any" and many:
        if claimed:
            rule = "collapse" if all(x.rule == "collapse" for x in claimed) else "Holm"
            return "supported", f"{rule}: one comparison holds; " + "; ".join(why(x) for x in claimed), rule
        if comps and len(opposite) == len(comps) and not missing:
            return (
                "contradicted",
                f"{rules(opposite)}: every comparison fails; " + "; ".join(why(x) for x in opposite),
                rules(opposite),
            )
        return (
            "inconclusive",
            "no comparison holds after Holm; " + "; ".join(missing + [why(x) for x in comps]),
            "",
        )
    if opposite and len(opposite) == len(comps) and all(x.rule == "collapse" for x in opposite):
        reasons = {x.reason for x in opposite}
        if len(reasons) == 1 and (reason := reasons.pop()).startswith(f"claimed winner '{c.arm}'"):
            where = f"against '{opposite[0].other}'" if len(opposite) == 1 else "against every arm compared"
            return "contradicted", f"contradicted by the collapse rule ({where}): {reason}", "collapse"
    if opposite:
        rule = rules(opposite)
        head = "contradicted by the collapse rule" if rule == "collapse" else f"contradicted ({rule}, Holm)"
        return "contradicted", f"{head}: " + "; ".join(why(x) for x in opposite), rule
    if missing or rest:
        return "inconclusive", "; ".join(missing + [why(x) for x in rest]), ""
    rule = rules(claimed)
    if kind == "equivalent":
        label = "TOST at 0.05 in every comparison" if many else "TOST at 0.05"
    elif rule == "collapse":
        label = "collapse rule"
    else:
        label = (
            f"{rule}, each comparison at {alpha:g} unadjusted (intersection-union)"
            if many
            else f"{rule} at {alpha:g}"
        )
    return "supported", f"{label}: " + "; ".join(why(x) for x in claimed), rule
