"""One writer per run directory: a second driver is refused naming the holder; a dead holder's lock is
taken over (issue 14). Real drivers in subprocesses; the first is held at a known point by the
fault-injection hook (no timing)."""

import json
import os
import subprocess
import sys

import pytest
from _procs import kill_family, wait_for_marker
from test_reliability import BASE, write

from lyaptune.store import RunStore


@pytest.mark.slow
def test_second_writer_is_refused_and_a_dead_holders_lock_is_taken_over(tmp_path):
    spec = {
        **BASE,
        "name": "locked",
        "search": {"sampler": "random", "trials_per_arm": 2, "final_seeds": [1]},
        "max_concurrent": 1,
    }
    out = tmp_path / "runs"
    run_dir = out / "locked"
    marks = tmp_path / "marks"
    fault = {"match": "adam-search-0000", "block": "start", "dir": str(marks)}
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "LYAPTUNE_FAULT_INJECTION")}
    first = subprocess.Popen(
        [sys.executable, "-m", "lyaptune.cli", "run", str(write(tmp_path, spec)), "--out", str(out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**env, "LYAPTUNE_FAULT_INJECTION": json.dumps(fault)},
        start_new_session=True,
    )
    try:
        marker = marks / "adam-search-0000-s0.blocked"
        # the known point: the first driver holds the lock, its run waits
        wait_for_marker(
            marker, lambda: first.poll() is None, lambda: "the first driver ended before the known point"
        )
        second = subprocess.run(
            [sys.executable, "-m", "lyaptune.cli", "resume", str(run_dir)],
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
        )
        assert second.returncode != 0
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in second.stderr, second.stderr
        assert f"pid {first.pid} " in lines[0] and "in use" in lines[0], lines[0]
        assert RunStore(run_dir).trials().empty  # the refused driver wrote nothing
    finally:
        kill_family(first)
    # the holder is dead (SIGKILL): its lock file is still there, and the next driver takes it over
    assert (run_dir / ".lyaptune.lock").exists()
    r = subprocess.run(
        [sys.executable, "-m", "lyaptune.cli", "resume", str(run_dir)],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )
    assert r.returncode == 0, (r.stdout, r.stderr)
    assert "took over the run directory lock" in r.stdout + r.stderr
    trials = RunStore(run_dir).trials()
    assert sorted(trials["trial_id"]) == ["adam-final-s1", "adam-search-0000-s0", "adam-search-0001-s0"]
    assert not (run_dir / ".lyaptune.lock").exists()  # released at the end
