"""The run-directory lock: one writer per run directory, named in the refusal a second one gets.

A study's driver (``lyaptune run`` / ``lyaptune resume``) holds an exclusive ``flock(2)`` on the file
:data:`LOCK_FILE` in the run directory for the life of the study. The file holds the holder's pid, host,
start time and command line as JSON, so a second driver is refused with one line naming who holds it.

Stale locks: the kernel drops a ``flock`` when its process dies (a crash, ``SIGKILL``, a killed
terminal), so a lock file left by a dead process on this host is taken over by the next driver; the
dead holder is kept in :attr:`RunDirLock.taken_over` for a progress line. A lock file that names another
host is refused even when its ``flock`` is free: lyaptune cannot check a process on another host, and a
filesystem that does not share ``flock`` between hosts would otherwise let two drivers write one run.

The file is removed when the lock is released. An acquirer that locked a file which its previous holder
removed meanwhile notices (the path no longer names the inode it locked) and tries again, so two
drivers never hold locks on two different files of one path.

POSIX only (``fcntl``). A run directory given as a remote URI (``s3://``, ``gs://``) cannot hold a lock
file: lock the local directory that holds the study's Optuna journal instead (the journal is local by
construction, and a second driver would have to share it).
"""

from __future__ import annotations

import datetime as _dt
import errno
import fcntl
import json
import os
import shlex
import socket
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal

from lyaptune.errors import UserError

__all__ = [
    "LOCK_FILE",
    "LockHolder",
    "RunDirLock",
    "RunDirLockedError",
    "RunState",
    "lock_run_dir",
    "read_holder",
    "run_state",
]

#: Name of the lock file inside the run directory (a leading ``.``: dataset readers skip it).
LOCK_FILE = ".lyaptune.lock"


class RunDirLockedError(UserError):
    """Another live process holds the run directory's lock (the message names it)."""


@dataclass(frozen=True)
class LockHolder:
    """Who holds (or held) a run-directory lock, as written in the lock file.

    Attributes:
      pid: the holder's process id.
      host: the holder's host name (:func:`socket.gethostname`).
      since: when it took the lock (ISO 8601, UTC).
      command: its command line.
    """

    pid: int
    host: str
    since: str
    command: str = ""

    def describe(self) -> str:
        """``pid 123 on host h since 2026-01-01T00:00:00+00:00 (lyaptune run spec.yaml)``."""
        cmd = f" ({self.command})" if self.command else ""
        return f"pid {self.pid} on host {self.host} since {self.since}{cmd}"

    def is_alive(self) -> bool | None:
        """Whether the holder's pid is a live process; ``None`` when it runs on another host."""
        if self.host != socket.gethostname():
            return None
        return _pid_alive(self.pid)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by another user
        return True
    return True


def _parse_holder(text: str) -> LockHolder | None:
    """The holder written in a lock file, or ``None`` for an empty or unreadable one."""
    try:
        data = json.loads(text)
        return LockHolder(
            pid=int(data["pid"]),
            host=str(data["host"]),
            since=str(data["since"]),
            command=str(data.get("command", "")),
        )
    except (ValueError, KeyError, TypeError):
        return None


def _read_fd(fd: int) -> str:
    os.lseek(fd, 0, os.SEEK_SET)
    chunks = []
    while chunk := os.read(fd, 65536):
        chunks.append(chunk)
    return b"".join(chunks).decode("utf-8", errors="replace")


def _local_dir(path: str | os.PathLike[str]) -> str:
    text = os.fspath(path)
    if text.startswith("file://"):
        text = text[len("file://") :]
    elif "://" in text:
        raise ValueError(
            f"cannot lock {text}: a lock file needs a local directory; lock the local directory of the "
            "study's Optuna journal instead"
        )
    return os.path.abspath(os.path.expanduser(text))


class RunDirLock:
    """An exclusive lock on one run directory, held until :meth:`release` (or the ``with`` block ends).

    Args:
      path: the run directory (a local path or a ``file://`` URI); created if missing.

    Attributes:
      path: the lock file.
      holder: this process, as written in the lock file (``None`` until acquired).
      taken_over: the dead holder whose stale lock file this lock replaced, else ``None``.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.directory = _local_dir(path)
        self.path = os.path.join(self.directory, LOCK_FILE)
        self.holder: LockHolder | None = None
        self.taken_over: LockHolder | None = None
        self._fd: int | None = None

    def __repr__(self) -> str:
        state = "held" if self._fd is not None else "released"
        return f"RunDirLock({self.directory!r}, {state})"

    @property
    def held(self) -> bool:
        """Whether this object holds the lock now."""
        return self._fd is not None

    def acquire(self) -> RunDirLock:
        """Take the lock, or fail at once (no waiting).

        Returns:
          ``self``.

        Raises:
          RunDirLockedError: a live process holds it, or the lock file names a process on another host
            (one line naming the holder's pid, host and start time, and the lock file).
          UserError: the lock file cannot be created (the message names it).
        """
        if self._fd is not None:
            raise RuntimeError(f"{self!r} is already held")
        try:
            os.makedirs(self.directory, exist_ok=True)
        except OSError as err:
            raise UserError(f"cannot create run directory {self.directory}: {err.strerror or err}") from err
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as err:
                raise UserError(f"cannot create lock file {self.path}: {err.strerror or err}") from err
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as err:
                holder_text = _read_fd(fd)
                os.close(fd)
                if err.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise UserError(f"cannot lock {self.path}: {err.strerror or err}") from err
                raise self._refusal(_parse_holder(holder_text)) from None
            if not self._same_file(fd):
                os.close(fd)  # its holder removed it while we waited for the flock: lock the new one
                continue
            break
        previous = _parse_holder(_read_fd(fd))
        if previous is not None and previous.host != socket.gethostname():
            os.close(fd)
            raise self._refusal(previous)
        holder = LockHolder(
            pid=os.getpid(),
            host=socket.gethostname(),
            since=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            command=shlex.join(sys.argv) if sys.argv and sys.argv[0] else "",
        )
        data = json.dumps(holder.__dict__).encode("utf-8")
        os.ftruncate(fd, 0)
        os.pwrite(fd, data, 0)
        os.fsync(fd)
        self._fd, self.holder, self.taken_over = fd, holder, previous
        return self

    def _same_file(self, fd: int) -> bool:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return False
        mine = os.fstat(fd)
        return (st.st_dev, st.st_ino) == (mine.st_dev, mine.st_ino)

    def _refusal(self, holder: LockHolder | None) -> RunDirLockedError:
        who = holder.describe() if holder is not None else "another process (it has not written its name yet)"
        hint = "wait for it to finish or stop it"
        if holder is not None and holder.host != socket.gethostname():
            hint = f"lyaptune cannot check a process on another host: if it has ended, delete {self.path}"
        return RunDirLockedError(
            f"run directory {self.directory} is in use by {who} (lock file {self.path}); {hint}"
        )

    def release(self) -> None:
        """Remove the lock file and drop the lock (nothing happens when it is not held)."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            if self._same_file(fd):
                os.unlink(self.path)  # while still locked, so nobody locks the file being removed
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def __enter__(self) -> RunDirLock:
        if self._fd is None:
            self.acquire()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()

    def __del__(self) -> None:  # a forgotten release must not keep the fd open forever
        fd = getattr(self, "_fd", None)
        if fd is not None:
            try:
                os.close(fd)
            except OSError:
                pass


def lock_run_dir(path: str | os.PathLike[str]) -> RunDirLock:
    """Lock a run directory for one writer; use as ``with lock_run_dir(run_dir): ...``.

    The lock is taken at once (the call fails rather than waits) and is held until the ``with`` block
    ends, :meth:`RunDirLock.release` is called, or the process exits (however it exits: the kernel drops
    the ``flock``). A lock file left by a dead process on this host is taken over; the returned lock's
    :attr:`~RunDirLock.taken_over` names that process.

    Args:
      path: the run directory: a local path or a ``file://`` URI. For a run directory on a remote URI,
        pass the local directory of the study's Optuna journal.

    Returns:
      The held :class:`RunDirLock`.

    Raises:
      RunDirLockedError: another live process holds the lock (one line: its pid, host, since when, and
        the lock file), or the lock file names a process on another host.
      ValueError: ``path`` is a remote URI.
    """
    return RunDirLock(path).acquire()


def read_holder(path: str | os.PathLike[str]) -> LockHolder | None:
    """The holder named in a run directory's lock file, or ``None`` (no lock file, a remote URI, or a
    file its holder has not written yet). Reads only; takes no lock."""
    try:
        with open(os.path.join(_local_dir(path), LOCK_FILE), encoding="utf-8") as f:
            return _parse_holder(f.read())
    except (OSError, ValueError):
        return None


@dataclass(frozen=True)
class RunState:
    """Whether a study's driver is at work on a run directory, stopped before the end, or done.

    Attributes:
      state: ``running`` (the lock file names a live process, or one on another host, which lyaptune
        cannot check), ``interrupted`` (no live holder and the study did not finish: a stale lock file
        left by a killed driver, or none; ``lyaptune resume`` continues it) or ``finished``.
      holder: the process named in the lock file (live for ``running``, dead for a stale lock), or None.
      checked: False when the holder runs on another host (its liveness is not known here).
    """

    state: Literal["running", "interrupted", "finished"]
    holder: LockHolder | None = None
    checked: bool = True

    def describe(self) -> str:
        """One phrase: ``running (pid 12 on host h since ...)``, ``interrupted (...)`` or ``finished``."""
        if self.state == "running" and self.holder is not None:
            note = "" if self.checked else "; on another host, not checked from here"
            h = self.holder
            return f"running (pid {h.pid} on host {h.host} since {h.since}{note})"
        if self.state == "interrupted":
            if self.holder is not None:
                return f"interrupted (its driver, pid {self.holder.pid} on host {self.holder.host}, is gone)"
            return "interrupted"
        return self.state


def run_state(run_dir: str | os.PathLike[str], info: Mapping[str, Any]) -> RunState:
    """The :class:`RunState` of a run directory: running, interrupted or finished (issue 21).

    A live holder of the run-directory lock means ``running`` (however far the study got); otherwise
    ``finished`` when ``study.json`` records the end of the study, else ``interrupted``. Reads the lock
    file and ``study.json`` only (no lock is taken, nothing is written).

    Args:
      run_dir: the run directory (a local path; for a URI the lock lives in the local journal
        directory, not known here, so only ``finished`` / ``interrupted`` are told apart).
      info: ``study.json``'s contents (``RunStore.read_study_info()``; the lock sits below the store).

    Returns:
      The state and the lock file's holder.
    """
    text = os.fspath(run_dir)
    holder = None if ("://" in text and not text.startswith("file://")) else read_holder(run_dir)
    if holder is not None:
        alive = holder.is_alive()
        if alive is None:
            return RunState("running", holder, checked=False)
        if alive:
            return RunState("running", holder)
    if info.get("finished"):
        return RunState("finished", None)
    return RunState("interrupted", holder)
