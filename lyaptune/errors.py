"""Errors a user can act on.

Anything raised as :class:`UserError` is printed by the CLI as one line and exits non-zero, with no
traceback (``--debug`` shows it).
"""

from __future__ import annotations

__all__ = ["UserError", "ConfigError", "DataError"]


class UserError(Exception):
    """A problem with the user's input or environment, reported as one line."""


class ConfigError(UserError, ValueError):
    """A bad configuration value: names the field, the value and the valid choices."""


class DataError(UserError, FileNotFoundError):
    """A dataset that cannot be loaded: names the missing files, where, and how to get them."""
