"""Tests for the run-directory lock (lyaptune.store.lock_run_dir) with real processes.

A holder runs in a subprocess and says when it holds the lock (a line on stdout, read blocking), so no
test depends on timing.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from lyaptune.store import LOCK_FILE, RunDirLockedError, lock_run_dir

HOLD = textwrap.dedent(
    """
    import sys
    from lyaptune.store import lock_run_dir
    lock = lock_run_dir(sys.argv[1])
    print("locked", flush=True)
    sys.stdin.read()  # hold until the test closes stdin (or kills this process)
    lock.release()
    print("released", flush=True)
    """
)

# What `lyaptune run` / `resume` do with the error: one line on stderr, exit 2.
TRY = textwrap.dedent(
    """
    import sys
    from lyaptune.errors import UserError
    from lyaptune.store import lock_run_dir
    try:
        lock = lock_run_dir(sys.argv[1])
    except UserError as err:
        print(err, file=sys.stderr)
        sys.exit(2)
    print("took over" if lock.taken_over else "locked", lock.taken_over and lock.taken_over.pid)
    lock.release()
    """
)


def _holder(run: Path) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(run)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "locked"
    return proc


def _try(run: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", TRY, str(run)], capture_output=True, text=True, timeout=120)


def test_a_second_process_is_refused_with_one_line_naming_the_holder(tmp_path: Path):
    run = tmp_path / "run"
    holder = _holder(run)
    try:
        held = json.loads((run / LOCK_FILE).read_text())
        assert held["pid"] == holder.pid and held["host"] == socket.gethostname()
        second = _try(run)
        assert second.returncode == 2
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1, second.stderr
        assert f"pid {holder.pid} on host {socket.gethostname()} since {held['since']}" in lines[0]
        assert str(run) in lines[0] and "in use" in lines[0]
        with pytest.raises(RunDirLockedError, match=f"pid {holder.pid} "):  # this process too
            lock_run_dir(run)
    finally:
        holder.stdin.close()
        assert holder.stdout.readline().strip() == "released"
        holder.wait(timeout=60)
    assert not (run / LOCK_FILE).exists()  # a released lock leaves nothing behind
    again = _try(run)
    assert (again.returncode, again.stdout.split()[0]) == (0, "locked"), again.stderr


def test_the_lock_of_a_killed_process_is_taken_over(tmp_path: Path):
    run = tmp_path / "run"
    holder = _holder(run)
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=60)
    assert json.loads((run / LOCK_FILE).read_text())["pid"] == holder.pid  # the file stays behind
    taker = _try(run)
    assert taker.returncode == 0, taker.stderr
    assert taker.stdout.split() == ["took", "over", str(holder.pid)]
    assert not (run / LOCK_FILE).exists()


def test_a_stale_file_is_taken_over_and_names_its_holder(tmp_path: Path):
    # a lock file no process holds (its holder is gone: a pid that exited), as after a crash
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    dead_pid = int(dead.stdout)
    run = tmp_path / "run"
    run.mkdir()
    stale = {
        "pid": dead_pid,
        "host": socket.gethostname(),
        "since": "2026-01-01T00:00:00+00:00",
        "command": "x",
    }
    (run / LOCK_FILE).write_text(json.dumps(stale))
    with lock_run_dir(run) as lock:
        assert lock.held and lock.taken_over is not None
        assert (lock.taken_over.pid, lock.taken_over.is_alive()) == (dead_pid, False)
        assert json.loads((run / LOCK_FILE).read_text())["pid"] == os.getpid()
    assert not lock.held and not (run / LOCK_FILE).exists()


def test_a_lock_file_from_another_host_is_refused(tmp_path: Path):
    run = tmp_path / "run"
    run.mkdir()
    other = {"pid": 4242, "host": "node-7.example", "since": "2026-01-01T00:00:00+00:00", "command": ""}
    (run / LOCK_FILE).write_text(json.dumps(other))
    with pytest.raises(RunDirLockedError) as err:
        lock_run_dir(run)
    msg = str(err.value)
    assert "pid 4242 on host node-7.example since 2026-01-01T00:00:00+00:00" in msg
    assert f"delete {run / LOCK_FILE}" in msg and "\n" not in msg
    assert json.loads((run / LOCK_FILE).read_text()) == other  # left as it was


def test_lock_creates_the_directory_and_is_reusable(tmp_path: Path):
    run = tmp_path / "a" / "b"
    lock = lock_run_dir(run.as_uri())
    assert lock.directory == str(run) and (run / LOCK_FILE).is_file() and lock.taken_over is None
    with pytest.raises(RunDirLockedError):
        lock_run_dir(run)
    lock.release()
    lock.release()  # twice is harmless
    with lock_run_dir(run):
        pass
    with pytest.raises(ValueError, match="a lock file needs a local directory"):
        lock_run_dir("s3://bucket/run")
