"""The fault-injection points (lyaptune/faults.py): one small module, the only reader of its variables.

Each behaviour is checked against the files it must leave (attempt markers, a block marker holding the
blocked process's pid) and, for a block, against a real process that waits at the point until killed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lyaptune import faults
from tests._procs import kill_family, wait_for_marker

PACKAGE = Path(__file__).resolve().parents[1] / "lyaptune"


def test_only_the_faults_module_reads_the_fault_variables():
    readers = sorted(
        str(p.relative_to(PACKAGE))
        for p in PACKAGE.rglob("*.py")
        if any(v in p.read_text() for v in (faults.FAULT_ENV, faults.COMPACTION_FAULT_ENV))
    )
    assert readers == ["faults.py"]


def test_times_raises_on_the_first_attempts_then_lets_the_run_go(tmp_path, monkeypatch):
    fault = {"match": "adam-search-0001", "times": 2, "dir": str(tmp_path)}
    monkeypatch.setenv(faults.FAULT_ENV, json.dumps(fault))
    tid = "adam-search-0001-s0"
    for attempt in (1, 2):
        with pytest.raises(RuntimeError, match=f"injected fault \\(attempt {attempt} of {tid}\\)"):
            faults.at_run_point(tid, "start")
    faults.at_run_point(tid, "start")  # the third attempt trains
    assert sorted(os.listdir(tmp_path)) == [f"{tid}.1", f"{tid}.2", f"{tid}.3"]
    faults.at_run_point("lyam-search-0001-s0", "start")  # not matched: nothing written
    faults.at_run_point(tid, "checkpoint")  # errors are injected at the start only
    assert len(os.listdir(tmp_path)) == 3


def test_no_variable_no_fault_and_unknown_points_are_refused(monkeypatch):
    monkeypatch.delenv(faults.FAULT_ENV, raising=False)
    monkeypatch.delenv(faults.COMPACTION_FAULT_ENV, raising=False)
    faults.at_run_point("adam-search-0000-s0", "start")
    faults.at_compaction_step("manifest")
    with pytest.raises(ValueError, match="unknown point 'begin'; valid: start, checkpoint, recorded"):
        faults.at_run_point("adam-search-0000-s0", "begin")


@pytest.mark.parametrize("point", faults.RUN_POINTS)
def test_a_block_waits_at_its_point_once(tmp_path, point):
    tid = "adam-final-0000-s7"
    fault = {"match": tid, "block": point, "dir": str(tmp_path)}
    code = f"from lyaptune import faults; faults.at_run_point({tid!r}, {point!r}); print('passed')"
    env = {**os.environ, faults.FAULT_ENV: json.dumps(fault)}
    proc = subprocess.Popen(
        [sys.executable, "-c", code], env=env, start_new_session=True, text=True, stdout=subprocess.PIPE
    )
    marker = tmp_path / f"{tid}.{faults.BLOCK_MARKERS[point]}"
    try:
        wait_for_marker(marker, lambda: proc.poll() is None, proc.communicate)
        assert int(marker.read_text()) == proc.pid
        assert proc.poll() is None  # still waiting at the point
    finally:
        kill_family(proc)
    # the retry finds the marker and goes on
    again = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and again.stdout.strip() == "passed", again.stderr


def test_compaction_step_kills_the_process_at_its_step(tmp_path):
    code = (
        "from lyaptune import faults\n"
        "for s in faults.COMPACTION_STEPS:\n"
        "    print(s, flush=True)\n"
        "    faults.at_compaction_step(s)\n"
    )
    env = {**os.environ, faults.COMPACTION_FAULT_ENV: "trials_part"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == -9
    assert out.stdout.split() == ["manifest", "epochs_parts", "trials_part"]


def test_worker_env_carries_only_the_run_fault(monkeypatch):
    monkeypatch.setenv(faults.FAULT_ENV, '{"match": "x", "times": 1, "dir": "/tmp"}')
    monkeypatch.setenv(faults.COMPACTION_FAULT_ENV, "manifest")
    assert faults.worker_env() == {faults.FAULT_ENV: '{"match": "x", "times": 1, "dir": "/tmp"}'}
    monkeypatch.delenv(faults.FAULT_ENV)
    assert faults.worker_env() == {}
