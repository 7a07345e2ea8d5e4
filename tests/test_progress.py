"""The progress line of `lyaptune run` / `resume` (issue 24, item 2): its arithmetic and widths, plain
lines when the output is not a terminal, and a real small study on a terminal (a pty).

The unit tests drive the display with a hand-set clock; the pty test asserts the order of events (the
first progress line is drawn before the first run is stored), never a duration.
"""

from __future__ import annotations

import fcntl
import io
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from lyaptune.study.progress import (
    WIDTH,
    ArmProgress,
    ProgressDisplay,
    StudyProgress,
    eta_seconds,
    format_arms,
    format_duration,
    format_line,
)
from lyaptune.study.spec import load_spec

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = load_spec(REPO / "experiments" / "quickstart.yaml")
SEVENTEEN = load_spec(REPO / "experiments" / "003_lenet_minibatch_schedulers.yaml")


class Clock:
    """A clock the test sets by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def job(trial_id: str, arm: str, members=None):
    return SimpleNamespace(trial_id=trial_id, arm=arm, members=members)


def budgets(spec) -> dict[str, int]:
    """Runs per arm as the runner plans them: budget x search seeds + final seeds."""
    return {a.name: spec.budget(a) * len(spec.search.seeds) + len(spec.search.final_seeds) for a in spec.arms}


# ---------------------------------------------------------------------------------------------------
# Arithmetic.


@pytest.mark.parametrize(
    "seconds,text",
    [(0, "0:00"), (59.4, "0:59"), (59.6, "1:00"), (61, "1:01"), (3599, "59:59"), (3661, "1:01:01")],
)
def test_durations(seconds, text):
    assert format_duration(seconds) == text


def test_eta_is_the_mean_run_time_times_the_runs_left_over_the_slots():
    # by hand: runs of 10 s and 20 s (mean 15 s), 6 runs left, 2 at a time: 15 * 6 / 2 = 45 s
    assert eta_seconds([10.0, 20.0], 6, 2) == 45.0
    # one slot: 15 * 6 = 90 s; slots below 1 count as 1
    assert eta_seconds([10.0, 20.0], 6, 1) == 90.0 == eta_seconds([10.0, 20.0], 6, 0)
    assert eta_seconds([], 6, 2) is None  # nothing finished yet: no estimate
    assert eta_seconds([], 0, 2) == 0.0 == eta_seconds([5.0], 0, 2)


def test_study_progress_counts_runs_and_estimates_from_their_times():
    clock = Clock()
    lines: list[str] = []
    display = ProgressDisplay(lines.append, clock=clock, interval=0, heartbeat=1e9, tick=1e9)
    progress = StudyProgress({"a": 3, "b": 3}, display, clock=clock)
    display.attach(progress.frame)
    progress.started(job("a-search-0000-s0", "a"))
    progress.started(job("b-search-0000-s0", "b"))
    clock.now += 12
    progress.finished(job("a-search-0000-s0", "a"), "completed", 0.5)
    # one run of 12 s, 5 runs left, 2 ran at once: 12 * 5 / 2 = 30 s
    assert display._frame() == (1, 6, "[0:12] 1/6 runs, 1 running, ETA 0:30 | a 1/3, b 0/3")
    progress.started(job("a-search-0001-s0", "a"))
    clock.now += 8
    progress.finished(job("b-search-0000-s0", "b"), "errored", float("nan"))
    # runs of 12 s and 20 s (mean 16 s), 4 left, 2 at once: 16 * 4 / 2 = 32 s
    assert display._frame()[2] == "[0:20] 2/6 runs (1 failed), 1 running, ETA 0:32 | a 1/3, b 1/3"
    assert "b-search-0000-s0: errored" in lines  # a run that did not complete gets its own line
    # a population: each member counts as a run in flight
    progress.started(
        job("b-population-0001-0002", "b", [job("b-search-0001-s0", "b"), job("b-search-0002-s0", "b")])
    )
    assert display._frame()[2].startswith("[0:20] 2/6 runs (1 failed), 3 running,")


def test_resumed_study_counts_the_stored_runs_and_shows_the_phase_before_runs_start():
    clock = Clock()
    display = ProgressDisplay(lambda line: None, clock=clock, tick=1e9)
    progress = StudyProgress({"derived": 3, "lyam": 15}, display, clock=clock)
    progress.restore({"lyam": 7})
    progress.set_phase("starting Ray")
    display.attach(progress.frame)
    clock.now += 3
    assert display._frame() == (7, 18, "[0:03] 7/18 runs, starting Ray | derived 0/3, lyam 7/15")
    progress.started(job("derived-final-s1", "derived"))
    assert (
        display._frame()[2] == "[0:03] 7/18 runs, 1 running, ETA after the first run | derived 0/3, lyam 7/15"
    )


# ---------------------------------------------------------------------------------------------------
# Widths.


def _states(spec):
    """The line's fields through a study: nothing done, part done with runs in flight, all done."""
    b = budgets(spec)
    names = list(b)
    yield [ArmProgress(n, 0, b[n]) for n in names], 0, None
    half = [ArmProgress(n, b[n] // 2, b[n], running=1 if i % 3 == 0 else 0) for i, n in enumerate(names)]
    yield half, 4, 7322.0
    mixed = [ArmProgress(n, b[n] if i < 5 else (0 if i > 10 else 1), b[n]) for i, n in enumerate(names)]
    yield mixed, 2, 59.0
    yield [ArmProgress(n, b[n], b[n]) for n in names], 0, None


@pytest.mark.parametrize("spec", [QUICKSTART, SEVENTEEN], ids=["3 arms", "17 arms"])
@pytest.mark.parametrize("width", [WIDTH, WIDTH - 9, 60])
def test_lines_fit_the_width_at_3_and_17_arms(spec, width):
    total = sum(budgets(spec).values())
    for arms, running, eta in _states(spec):
        done = sum(a.done for a in arms)
        for failed in (0, 12):
            line = format_line(
                elapsed=40000, done=done, total=total, running=running, failed=failed, eta=eta, arms=arms,
                width=width,
            )  # fmt: skip
            assert len(line) <= width, line
            assert f"{done}/{total} runs" in line


def test_three_arms_are_all_named_on_the_terminal_line():
    b = budgets(QUICKSTART)
    assert b == {"derived": 3, "adam-exponential": 15, "lyam": 15}  # 12 trials + 3 finals, K_hat arm 3
    arms = [
        ArmProgress("derived", 1, 3, 1),
        ArmProgress("adam-exponential", 6, 15, 1),
        ArmProgress("lyam", 5, 15),
    ]
    line = format_line(elapsed=41, done=12, total=33, running=2, eta=70, arms=arms, width=WIDTH - 9)
    assert line == "[0:41] 12/33 runs, 2 running, ETA 1:10 | derived 1/3, adam-exponential 6/15, lyam 5/15"


def test_seventeen_arms_show_those_in_progress_and_count_the_rest():
    arms = [ArmProgress(f"arm-{i:02d}-schedule", 13 if i < 9 else 0, 13) for i in range(17)]
    arms[9] = ArmProgress("arm-09-schedule", 4, 13, running=2)
    arms[10] = ArmProgress("arm-10-schedule", 0, 13, running=1)
    # all 17 (9 x 21 + 8 x 20 + 16 x 2 = 381 characters) do not fit: the two in progress by name
    # (67 characters), the rest counted
    assert len(", ".join(f"{a.name} {a.done}/{a.budget}" for a in arms)) == 381
    both = "arm-09-schedule 4/13, arm-10-schedule 0/13, 9 arms done, 6 to start"
    assert format_arms(arms, 67) == both
    # narrower: one named, the other counted (65 characters), then none named, then cut
    assert format_arms(arms, 66) == "arm-09-schedule 4/13, 1 more in progress, 9 arms done, 6 to start"
    assert format_arms(arms, 64) == "2 in progress, 9 arms done, 6 to start"
    assert format_arms(arms, 30) == "2 in progress, 9 arms done,..."


# ---------------------------------------------------------------------------------------------------
# Plain lines (not a terminal).


def test_plain_lines_at_start_then_periodic_then_at_the_end():
    clock = Clock()
    lines: list[str] = []
    display = ProgressDisplay(lines.append, clock=clock, interval=15, heartbeat=60, tick=1e9)
    display.status("checking the spec")  # before a study is attached: nothing printed (no terminal)
    assert lines == []
    progress = StudyProgress({"a": 2}, display, clock=clock)
    display.attach(progress.frame)
    assert lines == ["[0:00] 0/2 runs | a 0/2"]  # at once
    progress.started(job("a-search-0000-s0", "a"))
    clock.now += 5
    display.refresh()
    assert len(lines) == 1  # a change, but within 15 s of the last line
    clock.now += 10
    display.refresh()
    assert lines[-1] == "[0:15] 0/2 runs, 1 running, ETA after the first run | a 0/2"
    clock.now += 59
    display.refresh()
    assert len(lines) == 2  # nothing changed and less than 60 s: nothing
    clock.now += 1
    display.refresh()
    assert lines[-1] == "[1:15] 0/2 runs, 1 running, ETA after the first run | a 0/2"  # the heartbeat
    clock.now += 5
    progress.finished(job("a-search-0000-s0", "a"), "completed", 1.0)
    display.log("a message")
    display.detach()
    assert lines[-2:] == ["a message", "[1:20] 1/2 runs, ETA 1:20 | a 1/2"]  # 80 s * 1 left / 1 slot
    assert all("\r" not in ln and "\x1b" not in ln and len(ln) <= WIDTH for ln in lines)


def test_terminal_display_redraws_in_place_within_the_width():
    stream = io.StringIO()
    stream.isatty = lambda: True  # what tqdm is given; the width is passed
    clock = Clock()
    display = ProgressDisplay(stream=stream, width=WIDTH, clock=clock, tick=1e9)
    with display:
        display.status("checking the spec")
        spec_budgets = budgets(SEVENTEEN)
        progress = StudyProgress(spec_budgets, display, clock=clock)
        display.attach(progress.frame)
        for i, name in enumerate(spec_budgets):
            progress.started(job(f"{name}-search-0000-s0", name))
            clock.now += 3
            if i % 2:
                progress.finished(job(f"{name}-search-0000-s0", name), "completed", 0.1)
        display.log("a message above the line")
    text = stream.getvalue()
    assert "a message above the line\n" in text
    segments = [s for line in text.split("\n") for s in line.split("\r")]
    assert max(len(s) for s in segments) <= WIDTH
    # 17 runs started 3 s apart, the odd ones finished 3 s after their start: 8 runs of 3 s, 9 in
    # flight (the most at once), 325 - 8 = 317 left: ETA 3 * 317 / 9 = 105.7 s, shown 1:46
    assert sum(spec_budgets.values()) == 325
    assert (
        text.rstrip("\n")
        .split("\r")[-1]
        .endswith("[0:51] 8/325 runs, 9 running, ETA 1:46 | derived 0/5, adam-step 1/5, 15 more in progress")
    )


# ---------------------------------------------------------------------------------------------------
# A real study on a terminal.

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def tiny_quickstart(tmp_path: Path) -> Path:
    """The quickstart's arms (derived, adam-exponential, lyam) on digits, in miniature."""
    spec = yaml.safe_load((REPO / "experiments" / "quickstart.yaml").read_text())
    spec["task"].update(epochs=2, model_args={"depth": 1, "width": 16}, device="cpu")
    spec["search"].update(sampler="random", trials_per_arm=2, final_seeds=[1])
    spec["arms"][0]["lipschitz"] = {"samples": 1}
    spec.pop("claims", None)
    path = tmp_path / "quickstart.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def run_on_a_pty(args: list[str], cwd: Path, columns: int = 120) -> list[tuple[float, bytes]]:
    """Run ``lyaptune ARGS`` with a pty of ``columns`` columns as its terminal; (seconds, bytes) read."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    t0 = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "lyaptune.cli", *args],
        stdin=slave, stdout=slave, stderr=slave, cwd=cwd, env=env, start_new_session=True,
    )  # fmt: skip
    os.close(slave)
    chunks = []
    try:
        while True:
            ready, _, _ = select.select([master], [], [], 1.0)
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # the terminal closed: the process ended
                    data = b""
                if not data:
                    break
                chunks.append((time.monotonic() - t0, data))
            elif proc.poll() is not None:
                break
        assert proc.wait(timeout=600) == 0, b"".join(d for _, d in chunks).decode(errors="replace")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 9)
        os.close(master)
    return chunks


@pytest.mark.slow
def test_run_on_a_terminal_shows_progress_before_the_first_run_and_fits_100_columns(tmp_path):
    spec = tiny_quickstart(tmp_path)
    total = 1 + 3 + 3  # derived: 1 final; adam-exponential, lyam: 2 search + 1 final each
    chunks = run_on_a_pty(["run", str(spec), "--out", "runs"], tmp_path)
    text = b"".join(d for _, d in chunks).decode()
    segments = [_ANSI.sub("", s) for line in text.split("\n") for s in line.split("\r")]
    assert max(len(s) for s in segments) <= WIDTH, max(segments, key=len)
    # order of events: the first progress line is drawn before the first run is stored (it says so)
    first = next(i for i, s in enumerate(segments) if "[0:" in s)
    first_counted = next(i for i, s in enumerate(segments) if f"/{total} runs" in s)
    first_done = next(i for i, s in enumerate(segments) if f"1/{total} runs" in s)
    assert first <= first_counted < first_done
    assert f"0/{total} runs" in segments[first_counted]
    assert "derived 0/1, adam-exponential 0/3, lyam 0/3" in segments[first_counted]
    assert any(f"{total}/{total} runs | derived 1/1, adam-exponential 3/3, lyam 3/3" in s for s in segments)
    assert any(s.startswith(f"done: {total} runs (completed {total})") for s in segments)
    # redrawn in place: one terminal line rewritten at every run started and finished
    assert max(line.count("\r") for line in text.split("\n")) >= 2 * total
    seconds = next(t for t, d in chunks if b"[0:" in d)
    print(f"first progress line {seconds:.2f} s after the start (pty, {os.cpu_count()} CPUs)")


@pytest.mark.slow
def test_run_piped_to_a_file_writes_plain_lines_within_100_columns(tmp_path):
    spec = tiny_quickstart(tmp_path)
    log = tmp_path / "run.log"
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    with log.open("w") as f:
        r = subprocess.run(
            [sys.executable, "-m", "lyaptune.cli", "run", str(spec), "--out", "runs"],
            stdout=f, stderr=subprocess.STDOUT, cwd=tmp_path, env=env, timeout=600,
        )  # fmt: skip
    text = log.read_text()
    assert r.returncode == 0, text
    assert "\r" not in text and "\x1b" not in text
    lines = text.splitlines()
    assert max(len(ln) for ln in lines) <= WIDTH, lines
    assert lines[0] == "study quickstart: 3 arms, 7 runs, results in runs/quickstart"
    assert lines[1].startswith("[") and " 0/7 runs, starting Ray | " in lines[1]
    assert (
        lines[-2].startswith("[") and " 7/7 runs | derived 1/1, adam-exponential 3/3, lyam 3/3" in lines[-2]
    )
    assert lines[-1].startswith("done: 7 runs (completed 7); results in runs/quickstart")
