"""Field checks shared by every config model: one message form, ``<field path>: <what is wrong>``.

Each check takes the field's path (``task.epochs``, ``arms[1].space.lr``) and its value, returns the
value (converted where noted) and raises :class:`FieldError` naming the path, the bad value and what
is valid. The config models (:mod:`lyaptune.config`, :mod:`lyaptune.study.spec`) are pydantic v2
dataclasses whose field validators call these checks; :func:`config_model` turns pydantic's
``ValidationError`` into the same one-line :class:`~lyaptune.errors.ConfigError` (``loc`` -> dotted
path), so a user sees one message form whichever model rejected the value.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from pydantic import ConfigDict, ValidationError, ValidationInfo, field_validator
from pydantic.dataclasses import dataclass as _pydantic_dataclass

from lyaptune._registry import unknown_choice
from lyaptune.errors import ConfigError

NAME_RE = re.compile(r"[A-Za-z0-9_.-]+")
"""What a study, arm or claim name may be made of (it names folders and report rows)."""

_SCI_STRING = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$")

T = TypeVar("T")


class _FieldError(ConfigError):
    """A :class:`ConfigError` that knows the path of the field it is about, so a parent can rebase it."""

    def __init__(self, path: str, detail: str) -> None:
        super().__init__(f"{path}: {detail}" if path else detail)
        self.path = path
        self.detail = detail

    def rebase(self, root: str, new_root: str) -> _FieldError:
        """The same error with the leading ``root`` of its path replaced by ``new_root``."""
        path = self.path
        if root and (path == root or path.startswith((root + ".", root + "["))):
            path = new_root + path[len(root) :]
        elif not root:
            path = _join(new_root, path)
        return _FieldError(path, self.detail)


FieldError = _FieldError


def _join(path: str, key: str) -> str:
    if not path:
        return key
    return f"{path}{key}" if key.startswith("[") else f"{path}.{key}"


def _wrap(path: str, exc: BaseException) -> _FieldError:
    return _FieldError(path, str(exc))


def _rebased(cls: type, path: str, build: Callable[[], T]) -> T:
    """Call ``build()``; errors under ``cls._ROOT`` are reported under ``path`` instead."""
    try:
        return build()
    except _FieldError as exc:
        raise exc.rebase(cls._ROOT, path) from None


# --------------------------------------------------------------------------------------------------
# Small validators; each raises a _FieldError naming the path and the value.


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _string_hint(value: Any) -> str:
    if isinstance(value, str) and _SCI_STRING.match(value.strip()):
        return f" (YAML 1.1 reads {value} as text: write it with a dot, e.g. {float(value):.1e})"
    return ""


def _number(path: str, value: Any, what: str = "a number") -> float:
    if not _is_number(value) or not math.isfinite(value):
        raise _FieldError(path, f"must be {what}, got {value!r}{_string_hint(value)}")
    return value


def _positive(path: str, value: Any) -> float:
    x = _number(path, value, "a positive number")
    if x <= 0:
        raise _FieldError(path, f"must be a positive number, got {value!r}")
    return x


def _nonnegative(path: str, value: Any) -> float:
    x = _number(path, value, "a number >= 0")
    if x < 0:
        raise _FieldError(path, f"must be a number >= 0, got {value!r}")
    return x


def _integer(path: str, value: Any, minimum: int | None = None) -> int:
    bound = f" >= {minimum}" if minimum is not None else ""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise _FieldError(path, f"must be an integer{bound}, got {value!r}")
    if minimum is not None and value < minimum:
        raise _FieldError(path, f"must be an integer{bound}, got {value!r}")
    return int(value)


def _flag(path: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise _FieldError(path, f"must be true or false, got {value!r}")
    return value


def _choice(path: str, value: Any, choices: Sequence[str], kind: str) -> str:
    if value not in choices:
        raise _wrap(path, unknown_choice(kind, value, list(choices)))
    return value


def _mapping(path: str, value: Any, what: str = "a mapping") -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise _FieldError(path, f"must be {what}, got {type(value).__name__} {value!r}")
    for key in value:
        if not isinstance(key, str):
            raise _FieldError(path, f"keys must be strings, got {key!r}")
    return value


def _seed_list(path: str, value: Any, *, allow_empty: bool) -> tuple[int, ...]:
    what = "a list of integers" if allow_empty else "a non-empty list of integers"
    if not isinstance(value, (list, tuple)) or (not allow_empty and not value):
        raise _FieldError(path, f"must be {what}, got {value!r}")
    seeds = tuple(_integer(f"{path}[{i}]", s) for i, s in enumerate(value))
    dupes = sorted({s for s in seeds if seeds.count(s) > 1})
    if dupes:
        raise _FieldError(path, f"seeds must be distinct, {dupes} repeated in {list(seeds)}")
    return seeds


def _check_keys(path: str, data: Mapping[str, Any], known: Sequence[str], kind: str) -> None:
    for key in data:
        if key not in known:
            raise _wrap(_join(path, str(key)), unknown_choice(f"{kind} key", key, list(known)))


def _require(path: str, data: Mapping[str, Any], key: str, hint: str) -> None:
    if key not in data or data[key] is None:
        raise _FieldError(_join(path, key), f"required ({hint})")


def build_from_mapping(
    cls: type[T],
    data: Any,
    path: str,
    *,
    kind: str,
    what: str = "a mapping",
    keys: Sequence[str] | None = None,
    required: Mapping[str, str | Callable[[], str]] | None = None,
) -> T:
    """Build ``cls`` from the YAML mapping found at ``path``, every error naming its field path.

    In order: ``data`` must be a mapping (``what`` says of what); an unknown key fails with the
    closest known one (``keys``, default the fields of ``cls``); a missing or null required key fails
    with its hint (a text, or a function giving it, called only then); errors of ``cls`` itself are
    rebased from ``cls._ROOT`` onto ``path``. An instance of ``cls`` is returned as it is.
    """
    if isinstance(data, cls):
        return data
    data = _mapping(path, data, what)
    _check_keys(path, data, keys if keys is not None else _field_names(cls), kind)
    for key, hint in (required or {}).items():
        if data.get(key) is None:
            _require(path, data, key, hint() if callable(hint) else hint)
    return _rebased(cls, path, lambda: cls(**data))


def _field_names(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def _categorical_ok(value: Any) -> bool:
    return value is None or isinstance(value, (str, bool, int, float))


# --------------------------------------------------------------------------------------------------
# pydantic v2 dataclasses with the one-line errors.


def _loc_path(root: str, loc: Sequence[Any]) -> str:
    path = root
    for part in loc:
        path = _join(path, f"[{part}]" if isinstance(part, int) else str(part))
    return path


def _hint(cls: type, name: str) -> str:
    f = cls.__dataclass_fields__.get(name)  # type: ignore[attr-defined]
    return (f.metadata.get("hint") if f is not None else None) or "see the docs"


def config_error(cls: type, exc: ValidationError) -> ConfigError:
    """The one-line :class:`ConfigError` of a pydantic ``ValidationError`` raised by ``cls``.

    Unknown keys come first (with the closest known one), then missing required fields (with the
    field's ``hint`` metadata), then the first bad value in field order; the message starts with the
    field's dotted path under ``cls._ROOT``.
    """
    root = getattr(cls, "_ROOT", "")
    kind = getattr(cls, "_KIND", cls.__name__)
    errors = exc.errors()
    rank = {"unexpected_keyword_argument": 0, "extra_forbidden": 0, "missing": 1}
    first = min(errors, key=lambda e: rank.get(str(e["type"]), 2))
    path = _loc_path(root, first["loc"])
    if first["type"] in ("unexpected_keyword_argument", "extra_forbidden"):
        key = first["loc"][-1]
        return _wrap(path, unknown_choice(f"{kind} key", key, _field_names(cls)))
    if first["type"] == "missing":
        return _FieldError(path, f"required ({_hint(cls, str(first['loc'][-1]))})")
    cause = (first.get("ctx") or {}).get("error")
    if isinstance(cause, _FieldError):
        if not first["loc"] and cause.path:  # raised by __post_init__ with its full path
            return _FieldError(cause.path, cause.detail)
        return _FieldError(_join(path, cause.path) if cause.path else path, cause.detail)
    return _FieldError(path, str(cause) if cause is not None else first["msg"])


def config_model(
    checks: Mapping[str, Callable[[Any], Any]] | None = None,
) -> Callable[[type[T]], type[T]]:
    """Make a class a frozen, keyword-only pydantic v2 dataclass that rejects unknown keys and raises
    the one-line :class:`ConfigError` (see :func:`config_error`) instead of a ``ValidationError``.

    Args:
      checks: field name -> its check (the value in, the stored value out; raises :class:`FieldError`
        with a path relative to the field, usually ``""``). Each becomes the field's pydantic ``plain``
        validator, so no other coercion happens; fields without one are validated by pydantic from
        their annotation, and cross-field rules go in ``__post_init__``.

    Returns:
      The class decorator. The model stays a dataclass: ``dataclasses.fields`` and
      ``dataclasses.replace`` (validated) work, it compares field by field and pickles cleanly to Ray
      workers.
    """

    def decorate(cls: type[T]) -> type[T]:
        if checks:
            table = dict(checks)

            def check_field(_cls: type, value: Any, info: ValidationInfo) -> Any:
                return table[str(info.field_name)](value)

            # one name per class, so a subclass adds its checks instead of replacing its parent's
            validator = field_validator(*table, mode="plain")(classmethod(check_field))
            setattr(cls, f"_check_{cls.__name__}_fields", validator)
        return _model(cls)

    return decorate


def _model(cls: type[T]) -> type[T]:
    model = _pydantic_dataclass(frozen=True, kw_only=True, config=ConfigDict(extra="forbid"))(cls)
    validated_init = model.__init__

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        try:
            validated_init(self, *args, **kwargs)
        except ValidationError as exc:
            raise config_error(type(self), exc) from None

    __init__.__doc__ = validated_init.__doc__
    model.__init__ = __init__  # type: ignore[method-assign]
    return model
