"""One search dimension of a study spec (:class:`ParamSpec`): a range, a set of choices, or a fixed value.

:mod:`lyaptune.study.spaces` turns it into an Optuna distribution.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from lyaptune._fields import (
    _categorical_ok,
    _check_keys,
    _choice,
    _FieldError,
    _flag,
    _integer,
    _join,
    _number,
    _positive,
    _rebased,
)
from lyaptune._frozen import freeze_value as _freeze

__all__ = ["ParamSpec"]


_PARAM_KEYS = ("low", "high", "log", "step", "type", "choices")


@dataclass(frozen=True, kw_only=True)
class ParamSpec:
    """One search dimension: a range, a set of choices, or a fixed value.

    Attributes:
      kind: ``range`` (``low``, ``high``, ``log``, ``step``, ``type``), ``choices`` or ``fixed`` (``value``).
      low, high: range bounds, ``low <= high``; with ``log`` both must be > 0.
      log: sample on a log scale.
      step: optional discretisation step (> 0; not with ``log`` for floats).
      type: ``float`` (default) or ``int``.
      choices: the categorical values (str, int, float, bool or None: what Optuna stores).
      value: the fixed value (a scalar or a list of scalars).

    Use :meth:`range`, :meth:`categorical`, :meth:`fixed` or :meth:`parse` (YAML forms) to build one.
    """

    _ROOT: ClassVar[str] = "param"

    kind: str
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: float | int | None = None
    type: str = "float"
    choices: tuple[Any, ...] = ()
    value: Any = None

    def __post_init__(self) -> None:
        p = self._ROOT
        _choice(f"{p}.kind", self.kind, ("range", "choices", "fixed"), "parameter kind")
        if self.kind == "range":
            self._check_range(p)
        elif self.kind == "choices":
            self._check_choices(p)
        else:
            object.__setattr__(self, "value", _freeze(self.value))
            self._check_fixed(p)

    def _check_range(self, p: str) -> None:
        _choice(f"{p}.type", self.type, ("float", "int"), "parameter type")
        _flag(f"{p}.log", self.log)
        if self.type == "int":
            low = _integer(f"{p}.low", self.low)
            high = _integer(f"{p}.high", self.high)
            step = None if self.step is None else _integer(f"{p}.step", self.step, 1)
            if self.log and step not in (None, 1):
                raise _FieldError(f"{p}.step", f"must be 1 (or absent) with log: true, got {step!r}")
        else:
            low = float(_number(f"{p}.low", self.low))
            high = float(_number(f"{p}.high", self.high))
            step = None if self.step is None else float(_positive(f"{p}.step", self.step))
            if self.log and step is not None:
                raise _FieldError(f"{p}.step", f"cannot be combined with log: true (got step {step!r})")
        if low > high:
            raise _FieldError(p, f"low ({self.low}) > high ({self.high})")
        if self.log and low <= 0:
            raise _FieldError(f"{p}.low", f"must be > 0 with log: true, got {self.low!r}")
        object.__setattr__(self, "low", low)
        object.__setattr__(self, "high", high)
        object.__setattr__(self, "step", step)

    def _check_choices(self, p: str) -> None:
        if not isinstance(self.choices, (list, tuple)) or len(self.choices) == 0:
            raise _FieldError(f"{p}.choices", f"must be a non-empty list, got {self.choices!r}")
        for i, c in enumerate(self.choices):
            if not _categorical_ok(c):
                raise _FieldError(
                    f"{p}.choices[{i}]",
                    f"must be a string, number, boolean or null (Optuna's categorical values), got {c!r}; "
                    "search a tuple hyperparameter per component (beta1, beta2, ...)",
                )
        keys = [(type(c).__name__, c) for c in self.choices]
        if len(set(keys)) != len(keys):
            raise _FieldError(f"{p}.choices", f"must be distinct, got {list(self.choices)!r}")
        object.__setattr__(self, "choices", tuple(self.choices))

    def _check_fixed(self, p: str) -> None:
        values = self.value if isinstance(self.value, tuple) else (self.value,)
        for v in values:
            if not _categorical_ok(v):
                raise _FieldError(
                    p, f"a fixed value must be a scalar or a list of scalars, got {self.value!r}"
                )

    # -- constructors -----------------------------------------------------------------------------
    @classmethod
    def range(
        cls, low: float, high: float, *, log: bool = False, step: float | None = None, type: str = "float"
    ) -> ParamSpec:
        """A float (or ``type="int"``) range ``[low, high]``."""
        return cls(kind="range", low=low, high=high, log=log, step=step, type=type)

    @classmethod
    def categorical(cls, choices: Sequence[Any]) -> ParamSpec:
        """A categorical over ``choices``."""
        return cls(kind="choices", choices=tuple(choices))

    @classmethod
    def fixed(cls, value: Any) -> ParamSpec:
        """A fixed value (not searched)."""
        return cls(kind="fixed", value=value)

    @classmethod
    def parse(cls, obj: Any, path: str = "param") -> ParamSpec:
        """Parse a YAML form: ``{low, high[, log, step, type]}``, ``{choices: [...]}`` or a plain value."""
        if isinstance(obj, ParamSpec):
            return obj
        if isinstance(obj, Mapping):
            _check_keys(path, obj, _PARAM_KEYS, "search-space")
            if "choices" in obj:
                extra = [k for k in obj if k != "choices"]
                if extra:
                    raise _FieldError(_join(path, extra[0]), "a choices entry takes no other keys")
                return _rebased(cls, path, lambda: cls(kind="choices", choices=obj["choices"]))
            for key in ("low", "high"):
                if key not in obj:
                    raise _FieldError(
                        _join(path, key),
                        "required: a range is {low, high[, log, step, type]}, or use {choices: [...]}",
                    )
            return _rebased(cls, path, lambda: cls(kind="range", **obj))
        return _rebased(cls, path, lambda: cls(kind="fixed", value=obj))

    # -- views --------------------------------------------------------------------------------------
    @property
    def is_searched(self) -> bool:
        """Whether the sampler chooses this value (a range or choices)."""
        return self.kind != "fixed"

    def __str__(self) -> str:
        """Compact form for listings: ``[1e-05, 0.1] log``, ``{sign, tanh}``, ``= 0.9``."""
        if self.kind == "choices":
            return "{" + ", ".join(str(c) for c in self.choices) + "}"
        if self.kind == "fixed":
            return f"= {_thaw(self.value)!r}"
        text = f"[{self.low:g}, {self.high:g}]"
        if self.log:
            text += " log"
        if self.step is not None:
            text += f" step {self.step:g}"
        if self.type == "int":
            text += " int"
        return text

    def to_yaml(self) -> Any:
        """The YAML form :meth:`parse` reads back into an equal spec."""
        if self.kind == "choices":
            return {"choices": list(self.choices)}
        if self.kind == "fixed":
            return _thaw(self.value)
        out: dict[str, Any] = {"low": self.low, "high": self.high, "log": self.log}
        if self.step is not None:
            out["step"] = self.step
        if self.type != "float":
            out["type"] = self.type
        return out


def _thaw(value: Any) -> Any:
    """Plain YAML/JSON types: mappings -> dict, tuples -> list."""
    if isinstance(value, ParamSpec):
        return value.to_yaml()
    if isinstance(value, Mapping):
        return {k: _thaw(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_thaw(v) for v in value]
    return value
