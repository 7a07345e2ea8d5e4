"""A small generic registry (timm's ``_optim_factory`` pattern) shared by optimizers, schedules,
datasets and models."""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from lyaptune.errors import ConfigError

T = TypeVar("T")

__all__ = ["Registry", "unknown_choice"]


def unknown_choice(kind: str, value: object, choices: list[str]) -> ConfigError:
    """Build the one-line error for an unknown name, with the closest match and all choices."""
    close = difflib.get_close_matches(str(value), choices, n=1)
    hint = f"; did you mean '{close[0]}'?" if close else ";"
    return ConfigError(f"unknown {kind} {value!r}{hint} choices: {', '.join(choices)}")


class Registry(Generic[T]):
    """Name -> entry mapping with helpful errors for unknown names.

    Args:
      kind: what the entries are ("optimizer", "dataset", ...); used in error messages.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str, entry: T) -> T:
        """Add ``entry`` under ``name``; registering a name twice is an error."""
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._entries[name] = entry
        return entry

    def decorator(self, name: str, make: Callable[[object], T]) -> Callable[[object], object]:
        """Return a decorator that registers ``make(obj)`` under ``name`` and returns ``obj``."""

        def wrap(obj: object) -> object:
            self.register(name, make(obj))
            return obj

        return wrap

    def get(self, name: str) -> T:
        """Return the entry for ``name`` or raise :class:`ConfigError` naming the choices."""
        try:
            return self._entries[name]
        except KeyError:
            raise unknown_choice(self.kind, name, self.names()) from None

    def names(self, pattern: str | None = None) -> list[str]:
        """Sorted registered names, optionally filtered by a glob ``pattern``."""
        names = sorted(self._entries)
        if pattern is not None:
            names = [n for n in names if fnmatch.fnmatch(n, pattern)]
        return names

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)
