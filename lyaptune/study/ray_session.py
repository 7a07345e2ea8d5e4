"""Ray, for the study driver: connecting to (or starting) it, token authentication, and its output.

Every ``ray.init`` of a study goes through :func:`_init_ray`; while a study runs, :class:`_RayQuiet`
routes Ray's loggers and warnings to the run directory's ``ray.log`` and turns off Tune's console
output, default loggers and SIGINT handler (``_RAY_ENV``), restoring everything afterwards. The Tune
experiment itself is built in :mod:`lyaptune.study.tune_adapter`; :mod:`lyaptune.study.runner`
orchestrates.
"""

from __future__ import annotations

import contextlib
import logging
import logging.handlers
import os
import socket
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lyaptune import faults
from lyaptune.errors import UserError

# Settings a study applies to Ray while it runs (restored afterwards; nothing is changed at import):
# Tune's CSV/JSON/TensorBoard loggers duplicate the store, its new console output prints a configuration
# box, and its SIGINT handler prints a ``Tuner.restore`` hint; lyaptune handles interruptions itself.
# Tune's experiment state (every trial's config and last result, rewritten every 20 times as long as
# one write takes: a growing share of the driver's time and memory at 10,000 trials, issue 22) is
# written at the end of the experiment only: lyaptune resumes from its store, journal and the trials'
# own checkpoints, never from Tune's experiment state.
_RAY_ENV = {
    "TUNE_GLOBAL_CHECKPOINT_S": str(7 * 24 * 3600),
    "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1",
    "RAY_AIR_NEW_OUTPUT": "0",
    "TUNE_DISABLE_SIGINT_HANDLER": "1",
    "RAY_DEDUP_LOGS": "0",
}


def _check_reachable(address: str) -> None:
    """Fail fast (seconds, not Ray's minutes of retries) when a ``host:port`` address does not answer."""
    if address in ("auto", "local"):
        return
    hostport = address.split("://", 1)[-1].rstrip("/")
    host, _, port = hostport.rpartition(":")
    try:
        socket.create_connection((host or "127.0.0.1", int(port)), timeout=5).close()
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot reach Ray at {address!r}: {exc}; is the cluster up (`ray status`)?") from exc


class _RayQuiet:
    """While a study runs: Ray's Python loggers and warnings go to a log file, Tune's console output,
    default loggers and SIGINT handler are off (``_RAY_ENV``); everything is restored on exit.

    Records logged before the run directory exists are buffered and written once :meth:`attach` names
    the file.
    """

    def __init__(self) -> None:
        self._buffer = logging.handlers.MemoryHandler(capacity=100_000, flushLevel=logging.CRITICAL + 1)
        self._buffer.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        self._saved_env: dict[str, str | None] = {}
        self._saved_loggers: dict[str, tuple[list[logging.Handler], bool, int]] = {}
        self._file: logging.Handler | None = None
        self._warnings: Any = None

    def __enter__(self) -> _RayQuiet:
        for key, value in _RAY_ENV.items():
            self._saved_env[key] = os.environ.get(key)
            os.environ[key] = value
        import ray  # noqa: F401  (its import installs the "ray" logger's stderr handler, replaced here)

        names = ["ray"] + [
            n
            for n, lg in logging.root.manager.loggerDict.items()
            if n.startswith("ray.") and isinstance(lg, logging.Logger) and lg.handlers
        ]
        for name in names:
            lg = logging.getLogger(name)
            self._saved_loggers[name] = (list(lg.handlers), lg.propagate, lg.level)
            lg.handlers = [self._buffer] if name == "ray" else []
            lg.propagate = name != "ray"
        logging.getLogger("ray").setLevel(logging.INFO)
        self._warnings = warnings.catch_warnings()
        self._warnings.__enter__()
        self._show_other = warnings.showwarning
        warnings.showwarning = self._showwarning
        return self

    def reclaim(self) -> None:
        """Put the log file handler back on the "ray" logger (``ray.init`` clears that logger's handlers)."""
        ray_logger = logging.getLogger("ray")
        if self._buffer not in ray_logger.handlers:
            ray_logger.addHandler(self._buffer)
        ray_logger.propagate = False

    def set_env(self, key: str, value: str) -> None:
        """Set an environment variable for the study's duration (restored on exit)."""
        if key not in self._saved_env:
            self._saved_env[key] = os.environ.get(key)
        os.environ[key] = value

    def _showwarning(self, message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ANN001
        ray_dir = os.path.dirname(sys.modules["ray"].__file__)
        if not os.path.abspath(str(filename)).startswith(ray_dir):  # not Ray's: shown as usual
            self._show_other(message, category, filename, lineno, file, line)
            return
        name = category.__name__
        logging.getLogger("ray.warnings").warning("%s:%s: %s: %s", filename, lineno, name, message)

    def attach(self, path: Path) -> None:
        """Write Ray's log (so far and from now on) to ``path``."""
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = logging.FileHandler(path, encoding="utf-8")
        self._file.setFormatter(self._buffer.formatter)
        self._buffer.setTarget(self._file)
        self._buffer.flush()

    def __exit__(self, *exc: Any) -> None:
        self._warnings.__exit__(*exc)
        self._buffer.flush()
        for name, (handlers, propagate, level) in self._saved_loggers.items():
            lg = logging.getLogger(name)
            lg.handlers, lg.propagate = handlers, propagate
            lg.setLevel(level)
        self._buffer.close()
        if self._file is not None:
            self._file.close()
        auth_changed = os.environ.get("RAY_AUTH_MODE") != self._saved_env.get("RAY_AUTH_MODE", "")
        for key, value in self._saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        if "RAY_AUTH_MODE" in self._saved_env and auth_changed:
            _refresh_ray_config()


@contextlib.contextmanager
def _stderr_to(path: str | os.PathLike | None) -> Iterator[None]:
    """Send file descriptor 2 to ``path`` (or /dev/null) for a moment: Ray's C++ client logs there."""

    sys.stderr.flush()
    saved = os.dup(2)
    target = os.open(os.fspath(path) if path else os.devnull, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.dup2(target, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(target)


def _use_local_token() -> bool:
    """Turn on Ray's token authentication for this process when ``RAY_AUTH_MODE`` is unset and a token
    is at hand (``RAY_AUTH_TOKEN``, ``RAY_AUTH_TOKEN_PATH`` or ``~/.ray/auth_token``), as Ray itself does
    for ``address="auto"`` but not for an explicit address. Returns whether token mode is on."""
    if os.environ.get("RAY_AUTH_MODE") is not None:
        return os.environ["RAY_AUTH_MODE"].lower() == "token"
    try:
        from ray._private.authentication.authentication_token_setup import (
            maybe_enable_token_auth_if_token_available,
        )
    except ImportError:  # a Ray without token authentication
        return False
    return bool(maybe_enable_token_auth_if_token_available(warn_if_disabled=False))


_AUTH_HELP = (
    "set RAY_AUTH_MODE=token and the cluster's token as RAY_AUTH_TOKEN (or the file ~/.ray/auth_token; "
    "`ray get-auth-token` on the head prints it), or start the cluster with RAY_AUTH_MODE=disabled on a "
    "trusted network"
)


def _refresh_ray_config() -> None:
    """Make Ray's C++ side re-read ``RAY_*`` settings (``RAY_AUTH_MODE``) from the environment."""
    try:
        from ray._raylet import Config
    except ImportError:
        return
    Config.initialize("")


def _check_auth(address: str) -> None:
    """Fail in about a second, with what to set, when the cluster refuses this driver's token (Ray's own
    ``ray.init`` retries for about 20 s and then reports only a connection failure)."""
    if address.startswith("ray://") or address in ("auto", "local"):
        return
    try:
        from ray._raylet import GcsClient
        from ray.exceptions import AuthenticationError
    except ImportError:
        return
    try:
        with _stderr_to(None):
            GcsClient(address=address.split("://", 1)[-1])
    except AuthenticationError as exc:
        mode = os.environ.get("RAY_AUTH_MODE", "unset")
        raise UserError(
            f"Ray at {address!r} refused this driver: token authentication failed (RAY_AUTH_MODE is {mode}); "
            + _AUTH_HELP
        ) from exc
    except Exception:  # anything else is left to ray.init, which reports it
        return


def _ray_initialized() -> bool:
    import ray

    return ray.is_initialized()


def _init_ray(address: str | None, quiet: _RayQuiet | None = None) -> bool:
    """Connect to (or start) Ray; returns True if this call started it.

    A local Ray keeps Ray's default, token authentication, set explicitly (``RAY_AUTH_MODE=token``
    unless the user set it) so that Ray does not print its banner about it.
    """
    import ray

    if ray.is_initialized():
        if address:  # an address that does not answer fails even where this process holds a Ray already
            _check_reachable(address)
        return False
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        _check_reachable(address)
        _use_local_token()
        _check_auth(address)
    elif quiet is not None and "RAY_AUTH_MODE" not in os.environ:
        quiet.set_env("RAY_AUTH_MODE", "token")
        _refresh_ray_config()
    # the fault-injection points (lyaptune.faults) reach a remote cluster's workers this way
    fault_env = faults.worker_env()
    runtime_env = {"env_vars": fault_env} if fault_env else None
    try:
        if address:
            ray.init(address=address, log_to_driver=False, configure_logging=False, runtime_env=runtime_env)
        else:
            ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False)
    except (ConnectionError, TimeoutError, RuntimeError, ValueError) as exc:
        where = address or "a local Ray"
        raise UserError(f"cannot connect to Ray at {where!r}: {str(exc).splitlines()[0]}") from exc
    return True
