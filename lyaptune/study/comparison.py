"""The comparison part of a study spec (METHODS.md section 8): the metrics arms are compared on
(:class:`CompareSpec`) and the paper's claims as checkable statements (:class:`ClaimSpec`)."""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any, ClassVar

from lyaptune._fields import (
    NAME_RE,
    _choice,
    _FieldError,
    _nonnegative,
    _wrap,
    build_from_mapping,
    config_model,
)
from lyaptune._records import RECORD_FIELDS
from lyaptune._registry import unknown_choice
from lyaptune.metrics import COMPARE_METRICS, MODES, natural_mode

__all__ = [
    "CLAIM_DIRECTIONS",
    "CLAIM_METRICS",
    "CLAIM_RUN_METRICS",
    "CLAIM_SOURCES",
    "COMPARE_METRICS",
    "MODES",
    "ClaimSpec",
    "CompareSpec",
]

#: Set while :meth:`~lyaptune.study.spec.StudySpec.from_stored` reads a run directory's spec: rules on
#: how a *new* study must be designed (fresh final seeds, a claim's source) are not applied to a study
#: that already ran under older rules.
_READING_STORED: contextvars.ContextVar[bool] = contextvars.ContextVar("reading_stored", default=False)


def metric_check(
    choices: Sequence[str], kind: str, refuse: Callable[[str], str | None]
) -> Callable[[Any], str]:
    """The check of a ``metric`` field: one of ``choices``; ``refuse(name)`` says why a near miss (a
    test metric, a bare record field) is rejected, or ``None``."""

    def check(value: Any) -> str:
        why = refuse(value) if isinstance(value, str) else None
        if why is not None:
            raise _FieldError("", f"{why} (choices: {', '.join(choices)})")
        return _choice("", value, choices, kind)

    return check


def check_mode(value: Any) -> str | None:
    """The check of a ``mode`` field: ``min``, ``max`` or ``None`` (the metric's natural direction)."""
    return None if value is None else _choice("", value, MODES, "mode")


def _settle_mode(spec: Any, p: str, wrong: str) -> None:
    """Default a frozen spec's ``mode`` to its metric's natural direction; refuse the other one (it would
    ``wrong``)."""
    natural = natural_mode(spec.metric)
    if spec.mode is None:
        object.__setattr__(spec, "mode", natural)
    if spec.mode != natural:
        raise _FieldError(
            f"{p}.mode",
            f"{spec.mode!r} with metric {spec.metric!r} would {wrong}; use {natural!r} (or leave mode out)",
        )


def _bare_field(name: str) -> str | None:
    bare = f"final_{name}" in COMPARE_METRICS
    return f"write the final-epoch value as 'final_{name}', got {name!r}" if bare else None


_COMPARE_CHECKS: dict[str, Callable[[Any], Any]] = {
    "metric": metric_check(COMPARE_METRICS, "compare metric", _bare_field),
    "mode": check_mode,
}


@config_model(_COMPARE_CHECKS)
class CompareSpec:
    """A metric the arms' final-seed runs are compared on, and which direction is better.

    The value of a run is the record field at its final epoch (``final_grad_norm`` is ``grad_norm`` of
    the last epoch), never a minimum over epochs, which rewards transient dips (METHODS.md section 8).

    Attributes:
      metric: one of :data:`COMPARE_METRICS` (test metrics allowed: comparing is not tuning).
      mode: ``min`` or ``max``; default ``max`` for accuracies, else ``min`` (the other is rejected).
    """

    _ROOT: ClassVar[str] = "compare"

    metric: str
    mode: str | None = None

    def __post_init__(self) -> None:
        _settle_mode(self, self._ROOT, "rank the worst arm first")

    @classmethod
    def from_dict(cls, data: Any, path: str = "compare") -> CompareSpec:
        """Build from a YAML mapping ``{metric, mode}``, rejecting unknown keys."""
        what = "a mapping {metric: final_<field>, mode: min|max}"
        required = {"metric": f"one of {', '.join(COMPARE_METRICS)}"}
        return build_from_mapping(cls, data, path, kind="compare", what=what, required=required)

    def to_dict(self) -> dict[str, Any]:
        """A plain-dict copy (mode resolved)."""
        return {"metric": self.metric, "mode": self.mode}


def _compare_list(value: Any) -> tuple[CompareSpec, ...]:
    """``compare:`` as a mapping or a non-empty list of mappings -> a tuple of :class:`CompareSpec`."""
    if isinstance(value, (CompareSpec, Mapping)):
        return (CompareSpec.from_dict(value, "compare"),)
    if not isinstance(value, (list, tuple)) or not value:
        raise _FieldError(
            "compare", f"must be a mapping {{metric, mode}} or a non-empty list of them, got {value!r}"
        )
    out = tuple(CompareSpec.from_dict(v, f"compare[{i}]") for i, v in enumerate(value))
    metrics = [c.metric for c in out]
    for i, m in enumerate(metrics):
        if metrics.index(m) != i:
            raise _FieldError(
                f"compare[{i}].metric", f"{m!r} is listed twice (also compare[{metrics.index(m)}])"
            )
    return out


# -- claims ----------------------------------------------------------------------------------------------

#: What a claim can state of its arm: a lower / higher metric than the others (beyond an optional
#: margin), an ``equivalent`` one (within a stated margin, judged by TOST), or that the arm ``collapses``.
CLAIM_DIRECTIONS: tuple[str, ...] = ("lower", "higher", "equivalent", "collapses")
#: Where a claim comes from: the paper (with its place) or our own hypothesis.
CLAIM_SOURCES: tuple[str, ...] = ("paper", "extension")
#: How a claim over several comparisons is read: every one must hold (``each``) or one suffices (``any``).
CLAIM_QUANTIFIERS: tuple[str, ...] = ("each", "any")
#: How a grid arm enters a claim: its re-run best point (``best``) or every grid point (``each``).
CLAIM_GRID: tuple[str, ...] = ("best", "each")
#: Whole-run metrics a claim may name (computed by :mod:`lyaptune.analysis.runmetrics`).
CLAIM_RUN_METRICS: tuple[str, ...] = (
    "epochs_to_target",
    "seconds_to_target",
    "auc_train_loss",
    "drift_fraction",
    "max_diagnostic",
)
#: Run-level columns a claim may name besides the final-epoch metrics.
CLAIM_RUN_COLUMNS: tuple[str, ...] = ("derived_lr", "k_hat", "initial_loss", "wall_s", "min_grad_norm")
#: Every metric a claim may name.
CLAIM_METRICS: tuple[str, ...] = (*COMPARE_METRICS, *CLAIM_RUN_COLUMNS, *CLAIM_RUN_METRICS)
_TARGET_METRICS = ("epochs_to_target", "seconds_to_target")
_CLAIM_KEYS = (
    "id",
    "text",
    "source",
    "paper",
    "place",
    "metric",
    "arm",
    "than",
    "direction",
    "quantifier",
    "grid",
    "margin",
    "factor",
    "target",
    "of",
)


def _claim_id(value: Any) -> str:
    if not isinstance(value, str) or not NAME_RE.fullmatch(value):
        raise _FieldError("", f"must match [A-Za-z0-9_.-]+, got {value!r}")
    return value


def _claim_text(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _FieldError("", f"must be the claim in words, got {value!r}")
    return value


def _arm_name(value: Any) -> str:
    if not isinstance(value, str):
        raise _FieldError("", f"must be an arm name, got {value!r}")
    return value


def _than(value: Any) -> str | tuple[str, ...]:
    if isinstance(value, str) and value:
        return value
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, str) and v for v in value):
        if len(set(value)) != len(value):
            raise _FieldError("", f"lists an arm twice: {list(value)!r}")
        return tuple(value)
    raise _FieldError("", f"must be an arm name, a non-empty list of arm names, or all; got {value!r}")


def _direction(value: Any) -> str:
    if value not in CLAIM_DIRECTIONS:
        raise _FieldError("", f"{value!r} is not valid; choices: {', '.join(CLAIM_DIRECTIONS)}")
    return value


def _optional_text(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise _FieldError("", f"must be a non-empty string, got {value!r}")
    return value


def _factor(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 1:
        raise _FieldError("", f"must be a ratio > 1 (e.g. 10 for 'at least 10x lower'), got {value!r}")
    return float(value)


def _margin(value: Any) -> float | None:
    return None if value is None else _nonnegative("", value)


def _target(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    shape = "a mapping {field: <record field>, below: <number>} or {field, above: <number>}"
    if not isinstance(value, Mapping) or not isinstance(value.get("field"), str):
        raise _FieldError("", f"must be {shape}, got {value!r}")
    extra = set(value) - {"field", "below", "above"}
    sides = [k for k in ("below", "above") if value.get(k) is not None]
    if extra or len(sides) != 1:
        raise _FieldError("", f"must be {shape} (exactly one of below / above), got {value!r}")
    fields = [f for f in RECORD_FIELDS if f not in ("epoch", "step", "time_s")]
    if value["field"] not in fields:
        raise _wrap("field", unknown_choice("target field", value["field"], fields))
    x = value[sides[0]]
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        raise _FieldError(f"{sides[0]}", f"must be a number, got {x!r}")
    return {"field": value["field"], sides[0]: float(x)}


_CLAIM_CHECKS: dict[str, Callable[[Any], Any]] = {
    "id": _claim_id,
    "text": _claim_text,
    "source": partial(_choice, "", choices=CLAIM_SOURCES, kind="claim source"),
    "paper": _optional_text,
    "place": _optional_text,
    "metric": lambda v: None if v is None else _choice("", v, CLAIM_METRICS, "claim metric"),
    "arm": _arm_name,
    "than": _than,
    "direction": _direction,
    "quantifier": partial(_choice, "", choices=CLAIM_QUANTIFIERS, kind="claim quantifier"),
    "grid": partial(_choice, "", choices=CLAIM_GRID, kind="claim grid"),
    "margin": _margin,
    "factor": _factor,
    "target": _target,
    "of": _optional_text,
}


def _log_scale(metric: str, of: str | None) -> bool:
    """Whether a claim metric is compared on the log scale (lyaptune.metrics; whole-run metrics as
    lyaptune.analysis.runmetrics states them)."""
    from lyaptune.metrics import FINAL_FIELDS, metric_info

    if metric in ("epochs_to_target", "seconds_to_target", "auc_train_loss"):
        return True
    if metric == "drift_fraction":
        return False
    if metric == "max_diagnostic":
        return bool(of) and f"final_{of}" in FINAL_FIELDS and metric_info(f"final_{of}").scale == "log"
    return metric_info(metric).scale == "log"


@config_model(_CLAIM_CHECKS)
class ClaimSpec:
    """A claim as a checkable statement about the final-seed runs of a study (METHODS.md section 8).

    The claim reads "``arm`` has a ``direction`` ``metric`` than ``than``": with ``d`` the per-seed
    difference ``metric(arm) - metric(other)`` (of logs for a log-scale metric), ``lower`` claims
    ``d < -margin`` (log scale: ``d < -ln factor``, the arm at least ``factor`` times lower), ``higher``
    claims ``d > margin`` (``d > ln factor``), ``equivalent`` claims ``|d| < margin`` (``|d| < ln
    factor``: the ratio within ``[1/factor, factor]``), and ``collapses`` claims that ``arm``
    collapses on most of its final seeds (no ``than``). The verdicts are
    :func:`lyaptune.analysis.claims.evaluate_claims`'s.

    Attributes:
      id: unique within the spec, ``[A-Za-z0-9_.-]+`` (e.g. ``003-fig1-gradnorm``).
      text: the claim in words.
      source: ``paper`` (the paper's own claim; ``paper`` and ``place`` required) or ``extension``.
      paper: the paper it comes from, e.g. ``"003"`` (papers/003); place: the section, table, figure
        or a short verbatim quote of the paper where the claim is made.
      metric: one of :data:`CLAIM_METRICS`: a final-epoch metric, a run-level column (``derived_lr``),
        or a whole-run metric (:data:`CLAIM_RUN_METRICS`).
      arm: the arm the claim is about.
      than: another arm, a list of arms, or ``all`` (every other arm); unused by ``collapses``.
      direction: one of :data:`CLAIM_DIRECTIONS`.
      quantifier: ``each`` (every comparison must hold; default) or ``any`` (one suffices).
      grid: ``best`` (a grid arm is its re-run best point; default) or ``each`` (every grid point).
      margin: linear-scale metrics: the least difference claimed (lower / higher, >= 0) or the
        equivalence margin (equivalent, > 0), in the metric's units (accuracies as fractions).
      factor: log-scale metrics: the least ratio claimed (> 1; "at least 10x lower" is 10) or the
        equivalence ratio (the ratio within [1/factor, factor]).
      target: ``{field, below | above}`` for ``epochs_to_target`` / ``seconds_to_target``.
      of: the recorded field or diagnostic of ``max_diagnostic``.
    """

    _ROOT: ClassVar[str] = "claim"

    id: str
    text: str
    source: str | None = None
    paper: str | None = None
    place: str | None = None
    metric: str | None = None
    arm: str
    than: str | tuple[str, ...] = "all"
    direction: str
    quantifier: str = "each"
    grid: str = "best"
    margin: float | None = None
    factor: float | None = None
    target: dict[str, Any] | None = None
    of: str | None = None

    def __post_init__(self) -> None:
        p = self._ROOT
        if self.source == "paper" and not (self.paper and self.place):
            missing = "paper" if not self.paper else "place"
            raise _FieldError(
                f"{p}.{missing}", "required for source: paper (the paper and the place it says so)"
            )
        if self.direction == "collapses":
            if self.metric is not None:
                raise _FieldError(
                    f"{p}.metric", "a 'collapses' claim names no metric (collapse is judged per run)"
                )
            return
        if self.metric is None:
            raise _FieldError(f"{p}.metric", f"required (one of {', '.join(CLAIM_METRICS)})")
        arms = (self.than,) if isinstance(self.than, str) else self.than
        if self.arm in arms:
            raise _FieldError(f"{p}.than", f"must differ from arm {self.arm!r} (another arm, a list, or all)")
        if self.metric in _TARGET_METRICS and self.target is None:
            raise _FieldError(f"{p}.target", f"required for {self.metric} ({{field, below | above}})")
        if self.metric not in _TARGET_METRICS and self.target is not None:
            raise _FieldError(f"{p}.target", f"only for {', '.join(_TARGET_METRICS)}, not {self.metric}")
        if (self.metric == "max_diagnostic") != (self.of is not None):
            what = (
                "required for max_diagnostic"
                if self.of is None
                else f"only for max_diagnostic, not {self.metric}"
            )
            raise _FieldError(f"{p}.of", what)
        log = _log_scale(self.metric, self.of)
        if log and self.margin:
            raise _FieldError(
                f"{p}.margin",
                f"{self.metric} is compared on the log scale: state the gap as factor (a ratio > 1)",
            )
        if not log and self.factor is not None:
            raise _FieldError(
                f"{p}.factor", f"{self.metric} is compared as a difference: state the gap as margin"
            )
        if self.direction == "equivalent" and not (self.factor or self.margin):
            which = "factor" if log else "margin"
            raise _FieldError(f"{p}.{which}", "required (> 0) for an equivalence claim")

    @property
    def than_arms(self) -> tuple[str, ...]:
        """``than`` as a tuple (``("all",)`` for every other arm)."""
        return (self.than,) if isinstance(self.than, str) else self.than

    @classmethod
    def from_dict(cls, data: Any, path: str = "claim", *, stored: bool = False) -> ClaimSpec:
        """Build from a YAML mapping, rejecting unknown keys. ``source`` is required of a new spec; a
        stored spec from before provenance existed reads as ``extension`` when it has none (``stored``)."""
        what = "a mapping {id, text, source, metric, arm, than, direction[, margin | factor]}"
        required = dict.fromkeys(("id", "text", "arm", "direction"), "see ClaimSpec")
        if not stored:
            required["source"] = "paper (with paper and place) or extension"
        elif isinstance(data, Mapping) and data.get("source") is None:
            data = {**data, "source": "extension"}
        kind, keys = "claim", _CLAIM_KEYS
        return build_from_mapping(cls, data, path, kind=kind, what=what, keys=keys, required=required)

    def to_dict(self) -> dict[str, Any]:
        """A plain-dict copy (every key present; ``than`` as a string or a list)."""
        out = {k: getattr(self, k) for k in _CLAIM_KEYS}
        if isinstance(self.than, tuple):
            out["than"] = list(self.than)
        return out


def _claims_list(value: Any, arms: Sequence[str], *, stored: bool | None = None) -> tuple[ClaimSpec, ...]:
    """The spec's ``claims:`` checked against its arms; ``stored`` (default: whether a stored spec is
    being read, :meth:`StudySpec.from_stored`) lets a claim without ``source`` read as ``extension``."""
    if stored is None:
        stored = _READING_STORED.get()
    if not isinstance(value, (list, tuple)):
        raise _FieldError(
            "claims",
            f"must be a list of claims {{id, text, source, metric, arm, than, direction}}, got {value!r}",
        )
    out = tuple(ClaimSpec.from_dict(c, f"claims[{i}]", stored=stored) for i, c in enumerate(value))
    ids: dict[str, int] = {}
    for i, claim in enumerate(out):
        if claim.id in ids:
            raise _FieldError(
                f"claims[{i}].id", f"duplicate claim id {claim.id!r} (also claims[{ids[claim.id]}])"
            )
        ids[claim.id] = i
        if claim.arm not in arms:
            raise _wrap(f"claims[{i}].arm", unknown_choice("arm", claim.arm, list(arms)))
        if claim.than != "all":
            for j, other in enumerate(claim.than_arms):
                if other not in arms:
                    where = f"claims[{i}].than" + (f"[{j}]" if isinstance(claim.than, tuple) else "")
                    raise _wrap(where, unknown_choice("arm", other, [*arms, "all"]))
    return out
