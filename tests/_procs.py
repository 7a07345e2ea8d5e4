"""Process helpers shared by the tests that start real drivers, Ray nodes and servers."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def descendants(pid: int) -> list[int]:
    """All processes below ``pid`` (from /proc)."""
    parent = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                parent[int(d.name)] = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
    out, frontier = [], [pid]
    while frontier:
        p = frontier.pop()
        kids = [c for c, pp in parent.items() if pp == p]
        out += kids
        frontier += kids
    return out


def kill_family(proc: subprocess.Popen) -> None:
    """SIGKILL a driver started with ``start_new_session=True``, its process group and every process
    below it (its local Ray included), then reap it."""
    family = descendants(proc.pid)
    try:
        os.killpg(proc.pid, 9)
    except ProcessLookupError:
        pass
    for pid in family:
        try:
            os.kill(pid, 9)
        except ProcessLookupError:
            pass
    proc.wait()


def wait_for_marker(marker: Path, alive: Callable[[], bool], why: Callable[[], object]) -> None:
    """Wait until the fault-injection hook writes ``marker`` (a known point the run itself reaches).

    Fails with ``why()`` as soon as ``alive()`` is false: the driver or study ended before that point.
    """
    while not marker.exists():
        assert alive(), why()
        time.sleep(0.1)
