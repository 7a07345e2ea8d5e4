"""The comparison part of a study spec (METHODS.md section 8): the metrics arms are compared on
(:class:`CompareSpec`) and the paper's claims as checkable statements (:class:`ClaimSpec`)."""

from __future__ import annotations

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
from lyaptune._registry import unknown_choice
from lyaptune.metrics import COMPARE_METRICS, MODES, natural_mode

__all__ = ["CLAIM_DIRECTIONS", "COMPARE_METRICS", "MODES", "ClaimSpec", "CompareSpec"]


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


CLAIM_DIRECTIONS: tuple[str, ...] = ("lower", "higher")
_CLAIM_KEYS = ("id", "text", "metric", "arm", "than", "direction", "margin")


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


_CLAIM_CHECKS: dict[str, Callable[[Any], Any]] = {
    "id": _claim_id,
    "text": _claim_text,
    "metric": partial(_choice, "", choices=COMPARE_METRICS, kind="claim metric"),
    "arm": _arm_name,
    "than": _arm_name,
    "direction": partial(_choice, "", choices=CLAIM_DIRECTIONS, kind="claim direction"),
    "margin": partial(_nonnegative, ""),
}


@config_model(_CLAIM_CHECKS)
class ClaimSpec:
    """A paper's claim as a checkable statement about the final-seed runs of a study.

    The claim reads "``arm`` has a ``direction`` (lower / higher) ``metric`` than ``than`` (an arm, or
    every other arm with ``all``), by more than ``margin``": with ``d = metric(arm) - metric(than)``
    per seed, ``lower`` claims ``d < -margin`` and ``higher`` claims ``d > margin``. The report's verdict
    (METHODS.md section 8): supported when the claimed direction holds significantly (Holm across the
    claim's comparisons), contradicted when the opposite does, else inconclusive.

    Attributes:
      id: unique within the spec, ``[A-Za-z0-9_.-]+`` (e.g. ``003-fig1-gradnorm``).
      text: the claim in words, as the paper makes it.
      metric: one of :data:`COMPARE_METRICS` (a record field at the final epoch).
      arm: the arm the claim is about; than: another arm, or ``all`` (every other arm).
      direction: ``lower`` or ``higher``.
      margin: the least difference claimed, in the metric's units (>= 0; default 0).
    """

    _ROOT: ClassVar[str] = "claim"

    id: str
    text: str
    metric: str
    arm: str
    than: str = "all"
    direction: str
    margin: float = 0.0

    def __post_init__(self) -> None:
        if self.arm == self.than:
            raise _FieldError(
                f"{self._ROOT}.than", f"must differ from arm {self.arm!r} (another arm, or all)"
            )

    @classmethod
    def from_dict(cls, data: Any, path: str = "claim") -> ClaimSpec:
        """Build from a YAML mapping, rejecting unknown keys."""
        what = "a mapping {id, text, metric, arm, than, direction[, margin]}"
        required = dict.fromkeys(("id", "text", "metric", "arm", "direction"), "see ClaimSpec")
        kind, keys = "claim", _CLAIM_KEYS
        return build_from_mapping(cls, data, path, kind=kind, what=what, keys=keys, required=required)

    def to_dict(self) -> dict[str, Any]:
        """A plain-dict copy (every key present, ``margin`` resolved)."""
        return {k: getattr(self, k) for k in _CLAIM_KEYS}


def _claims_list(value: Any, arms: Sequence[str]) -> tuple[ClaimSpec, ...]:
    if not isinstance(value, (list, tuple)):
        raise _FieldError(
            "claims", f"must be a list of claims {{id, text, metric, arm, than, direction}}, got {value!r}"
        )
    out = tuple(ClaimSpec.from_dict(c, f"claims[{i}]") for i, c in enumerate(value))
    ids: dict[str, int] = {}
    for i, claim in enumerate(out):
        if claim.id in ids:
            raise _FieldError(
                f"claims[{i}].id", f"duplicate claim id {claim.id!r} (also claims[{ids[claim.id]}])"
            )
        ids[claim.id] = i
        if claim.arm not in arms:
            raise _wrap(f"claims[{i}].arm", unknown_choice("arm", claim.arm, list(arms)))
        if claim.than not in [*arms, "all"]:
            raise _wrap(f"claims[{i}].than", unknown_choice("arm", claim.than, [*arms, "all"]))
    return out
