"""An immutable, picklable mapping for frozen configs (``MappingProxyType`` does not pickle)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class FrozenDict(dict):
    """A ``dict`` that refuses mutation; pickles, deep-copies and compares like a plain dict."""

    def _readonly(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError("this mapping is read-only (configs are frozen)")

    __setitem__ = __delitem__ = clear = pop = popitem = setdefault = update = _readonly  # type: ignore[assignment]
    __ior__ = _readonly  # type: ignore[assignment]

    def __reduce__(self) -> tuple[Any, ...]:
        return (FrozenDict, (dict(self),))

    def __copy__(self) -> FrozenDict:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> FrozenDict:
        import copy

        return FrozenDict(copy.deepcopy(dict(self), memo))

    def __hash__(self) -> int:  # type: ignore[override]
        return hash(tuple(sorted((k, _hashable(v)) for k, v in self.items())))


def _hashable(v: Any) -> Any:
    if isinstance(v, Mapping):
        return tuple(sorted((k, _hashable(x)) for k, x in v.items()))
    if isinstance(v, (list, tuple)):
        return tuple(_hashable(x) for x in v)
    return v


def freeze(d: Mapping[str, Any] | None) -> FrozenDict:
    """A read-only copy of ``d``: nested mappings frozen, lists turned into tuples (hashable, picklable)."""
    return FrozenDict({k: freeze_value(v) for k, v in (d or {}).items()})


def freeze_value(value: Any) -> Any:
    """``value`` made immutable: a mapping -> :class:`FrozenDict`, a list or tuple -> a tuple."""
    if isinstance(value, Mapping):
        return freeze(value)
    if isinstance(value, (list, tuple)):
        return tuple(freeze_value(v) for v in value)
    return value


def thaw(v: Any) -> Any:
    """Plain ``dict``/``list`` copy of a frozen structure (for YAML/JSON)."""
    if isinstance(v, Mapping):
        return {k: thaw(x) for k, x in v.items()}
    if isinstance(v, tuple):
        return [thaw(x) for x in v]
    if isinstance(v, list):
        return [thaw(x) for x in v]
    return v
