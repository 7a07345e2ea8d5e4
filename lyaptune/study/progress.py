"""Live progress of ``lyaptune run`` / ``resume``: one line of at most 100 characters.

The line says how many runs are done of the study's total, how many are in flight, the time elapsed,
an ETA from the finished runs' times, and done / planned runs per arm (as many arms as fit, the others
counted)::

    [0:41] 12/33 runs, 2 running, ETA 1:10 | derived 1/3, adam-exponential 6/15, lyam 5/15

On a terminal it is redrawn in place about once a second by ``tqdm`` (messages are written above it);
when the output is not a terminal (CI, a log file) it is written as a plain line when the study
starts, then at most every ``interval`` seconds while something changes (and every ``heartbeat``
seconds when nothing does), and once at the end.

- :func:`eta_seconds`, :func:`format_line`, :func:`format_arms`: the arithmetic and the text (pure).
- :class:`StudyProgress`: the counts of a running study, fed by the searcher's start / finish calls.
- :class:`ProgressDisplay`: where the line and the study's messages go (a terminal or plain lines).
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TextIO

__all__ = [
    "WIDTH",
    "ArmProgress",
    "ProgressDisplay",
    "StudyProgress",
    "eta_seconds",
    "format_arms",
    "format_duration",
    "format_line",
]

#: the widest line the display prints
WIDTH = 100

# what tqdm draws before the text on a terminal: an 8-character bar and a space
_BAR_FORMAT = "{bar:8} {desc}"
_BAR_COLUMNS = 9

# (done, total, text) for a given elapsed time and text width
Frame = tuple[int, int, str]


# --------------------------------------------------------------------------------------------------
# The arithmetic and the text.


@dataclass(frozen=True)
class ArmProgress:
    """One arm's runs: ``done`` of ``budget`` (search runs on every search seed plus final runs),
    ``running`` in flight now."""

    name: str
    done: int
    budget: int
    running: int = 0


def format_duration(seconds: float) -> str:
    """``m:ss`` below an hour, ``h:mm:ss`` from an hour on (rounded to the second)."""
    s = max(0, int(round(seconds)))
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def eta_seconds(durations: Sequence[float], remaining: int, slots: int) -> float | None:
    """Time left, from the finished runs' times: ``mean(durations) * remaining / slots``.

    Args:
      durations: seconds each finished run took, from the driver handing it to Ray to its result
        being stored (Ray's scheduling and start-up included).
      remaining: runs not finished yet (those in flight included).
      slots: runs trained at once (at least 1).

    Returns:
      Seconds, 0 when nothing remains, or None before any run has finished.
    """
    if remaining <= 0:
        return 0.0
    if not durations:
        return None
    return sum(durations) / len(durations) * remaining / max(1, slots)


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(0, width - 3)] + "..."


def _arm(a: ArmProgress) -> str:
    return f"{a.name} {a.done}/{a.budget}"


def format_arms(arms: Sequence[ArmProgress], room: int) -> str:
    """Done / planned runs per arm in at most ``room`` characters.

    All arms when they fit (``derived 1/3, lyam 5/15``); else the arms in progress (runs in flight or
    partly done), as many as fit, then counts of the others (``3 more in progress, 9 arms done,
    4 to start``).
    """
    full = ", ".join(_arm(a) for a in arms)
    if len(full) <= room:
        return full
    active = [a for a in arms if a.running or 0 < a.done < a.budget]
    finished = sum(1 for a in arms if a not in active and a.done >= a.budget)
    waiting = len(arms) - len(active) - finished
    text = ""
    for k in range(len(active), -1, -1):
        parts = [_arm(a) for a in active[:k]]
        if len(active) > k:
            parts.append(f"{len(active) - k} {'more ' if k else ''}in progress")
        if finished:
            parts.append(f"{finished} arm{'s' if finished != 1 else ''} done")
        if waiting:
            parts.append(f"{waiting} to start")
        text = ", ".join(parts)
        if len(text) <= room:
            return text
    return _clip(text, room)


def format_line(
    *,
    elapsed: float,
    done: int,
    total: int,
    running: int = 0,
    failed: int = 0,
    eta: float | None = None,
    phase: str = "",
    arms: Sequence[ArmProgress] = (),
    width: int = WIDTH,
) -> str:
    """The progress line, at most ``width`` characters.

    ``[elapsed] done/total runs (failed), running, phase, ETA | arms``; the arms part
    (:func:`format_arms`) takes the room left, and is left out when less than 12 characters remain.
    """
    head = f"[{format_duration(elapsed)}] {done}/{total} runs"
    if failed:
        head += f" ({failed} failed)"
    if running:
        head += f", {running} running"
    if phase:
        head += f", {phase}"
    if eta is not None:
        head += f", ETA {format_duration(eta)}"
    room = width - len(head) - 3
    if arms and room >= 12:
        head += " | " + format_arms(arms, room)
    return _clip(head, width)


# --------------------------------------------------------------------------------------------------
# The counts of a running study.


class StudyProgress:
    """What a study has done and is doing, for :class:`ProgressDisplay`.

    Fed by the Tune searcher's calls: :meth:`started` when a job is handed to Ray, :meth:`finished`
    when a run's result is stored. Runs that end with a status other than ``completed`` are also
    written as a message line of their own.

    Args:
      budgets: arm name -> runs planned (search runs on every search seed plus final runs).
      display: where the line and messages go.
      clock: seconds (monotonic), for the runs' durations.
    """

    def __init__(
        self,
        budgets: Mapping[str, int],
        display: ProgressDisplay,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.budgets = dict(budgets)
        self.display = display
        self.clock = clock
        self.done = dict.fromkeys(self.budgets, 0)
        self.failed = 0
        self.in_flight: dict[str, tuple[str, float]] = {}  # trial id -> (arm, start)
        self.durations: list[float] = []
        self.peak = 0  # most runs seen in flight at once: the ETA's slots
        self.phase = ""
        self._lock = threading.Lock()

    @property
    def total(self) -> int:
        return sum(self.budgets.values())

    def set_phase(self, phase: str) -> None:
        """What the study is doing while no run is in flight (``starting Ray``, ...)."""
        self.phase = phase
        self.display.refresh(changed=True)

    def restore(self, done: Mapping[str, int]) -> None:
        """Runs an earlier driver stored (a resume): arm name -> count."""
        with self._lock:
            for arm, n in done.items():
                self.done[arm] = self.done.get(arm, 0) + int(n)

    def started(self, job: Any) -> None:
        """A job (a run, or a population of runs) was handed to Ray."""
        now = self.clock()
        with self._lock:
            self.phase = ""  # runs have started: the line counts them from now on
            for member in job.members or [job]:
                self.in_flight[member.trial_id] = (member.arm, now)
            self.peak = max(self.peak, len(self.in_flight))
        self.display.refresh(changed=True)

    def finished(self, job: Any, status: str, value: float) -> None:
        """A run's result was stored (``status`` as stored, ``value`` its objective)."""
        with self._lock:
            arm, start = self.in_flight.pop(job.trial_id, (job.arm, None))
            if start is not None:
                self.durations.append(self.clock() - start)
            self.done[arm] = self.done.get(arm, 0) + 1
            if status != "completed":
                self.failed += 1
        if status != "completed":
            self.display.log(_clip(f"{job.trial_id}: {status}", WIDTH))
        self.display.refresh(changed=True)

    def frame(self, elapsed: float, width: int) -> Frame:
        """``(done, total, line)`` now (the :class:`ProgressDisplay` source)."""
        with self._lock:
            done = sum(self.done.values())
            running: dict[str, int] = {}
            for arm, _ in self.in_flight.values():
                running[arm] = running.get(arm, 0) + 1
            arms = [ArmProgress(a, self.done[a], b, running.get(a, 0)) for a, b in self.budgets.items()]
            eta = eta_seconds(self.durations, self.total - done, self.peak) if done < self.total else None
            phase = self.phase if not self.in_flight else ""
            if self.in_flight and eta is None:
                phase = "ETA after the first run"
            line = format_line(
                elapsed=elapsed,
                done=done,
                total=self.total,
                running=len(self.in_flight),
                failed=self.failed,
                eta=eta,
                phase=phase,
                arms=arms,
                width=width,
            )
        return done, self.total, line


# --------------------------------------------------------------------------------------------------
# Where the line goes.


def _terminal_width(stream: TextIO) -> int:
    try:
        columns = os.get_terminal_size(stream.fileno()).columns
    except (OSError, ValueError, AttributeError):
        columns = 0
    return min(WIDTH, columns - 1) if columns > 20 else WIDTH


class ProgressDisplay:
    """The progress line and the study's messages, on a terminal or as plain lines.

    Use it as a context manager (a background thread redraws the line once a second). Before a study
    is attached, :meth:`status` says what is happening (drawn on a terminal only); :meth:`attach`
    gives it the study's :meth:`StudyProgress.frame`, :meth:`detach` draws the last line.

    Args:
      write: where plain lines and messages go (default ``print``).
      stream: the terminal to draw on in place with tqdm (None: plain lines through ``write``).
      width: the widest line (default 100, less on a narrower terminal).
      interval: plain lines: at most one per ``interval`` seconds while something changes.
      heartbeat: plain lines: one per ``heartbeat`` seconds when nothing changes.
      tick: seconds between redraws.
      clock: seconds (monotonic).
    """

    def __init__(
        self,
        write: Callable[[str], None] = print,
        *,
        stream: TextIO | None = None,
        width: int = WIDTH,
        interval: float = 15.0,
        heartbeat: float = 60.0,
        tick: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._write = write
        self.stream = stream
        self.width = width
        self.interval, self.heartbeat, self.tick = interval, heartbeat, tick
        self.clock = clock
        self.t0 = clock()
        self._source: Callable[[float, int], Frame] | None = None
        self._status = "starting"
        self._lock = threading.RLock()
        self._bar: Any = None
        self._version = 0  # bumped by every change
        self._printed: tuple[float, int] | None = None  # (when, version) of the last plain line
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @classmethod
    def for_stream(cls, stream: TextIO | None = None, **kwargs: Any) -> ProgressDisplay:
        """In place on ``stream`` (default stdout) when it is a terminal, plain lines on it otherwise."""
        stream = stream or sys.stdout

        def write(line: str) -> None:
            print(line, file=stream, flush=True)

        if stream.isatty():
            return cls(write, stream=stream, width=_terminal_width(stream), **kwargs)
        return cls(write, **kwargs)

    @property
    def tty(self) -> bool:
        return self.stream is not None

    def __enter__(self) -> ProgressDisplay:
        if self.tty:
            from tqdm import tqdm

            self._bar = tqdm(
                total=1,
                file=self.stream,
                bar_format=_BAR_FORMAT,
                ncols=self.width,
                dynamic_ncols=False,
                leave=True,
                mininterval=0,
                miniters=0,
            )
        self.refresh(changed=True)
        self._thread = threading.Thread(target=self._run, name="lyaptune-progress", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.detach(keep=exc[0] is None)

    def _run(self) -> None:
        while not self._stop.wait(self.tick):
            self.refresh()

    def status(self, text: str) -> None:
        """What happens before a study is attached (``checking the spec``); drawn on a terminal only."""
        with self._lock:
            self._status = text
        self.refresh(changed=True)

    def attach(self, source: Callable[[float, int], Frame]) -> None:
        """Show ``source(elapsed, width) -> (done, total, line)`` from now on; a plain line at once."""
        with self._lock:
            self._source = source
            self._printed = None
        self.refresh(changed=True)

    def detach(self, keep: bool = True) -> None:
        """Draw the last line (kept on a terminal when ``keep``, else cleared) and stop showing it."""
        with self._lock:
            if self._source is not None and not self.tty:
                self._write(self._frame()[2])
            elif self._bar is not None:
                self._draw()
                self._bar.leave = keep and self._source is not None
                self._bar.close()
                self._bar = None
            self._source = None

    def log(self, message: str) -> None:
        """A message line (above the progress line on a terminal)."""
        with self._lock:
            if self._bar is not None:
                self._bar.write(message, file=self.stream)
            else:
                self._write(message)

    def _frame(self) -> Frame:
        elapsed = self.clock() - self.t0
        width = self.width - (_BAR_COLUMNS if self.tty else 0)
        if self._source is None:
            return 0, 1, _clip(f"[{format_duration(elapsed)}] {self._status}", width)
        return self._source(elapsed, width)

    def _draw(self) -> None:
        done, total, text = self._frame()
        self._bar.total = max(total, 1)
        self._bar.n = min(done, self._bar.total)
        self._bar.set_description_str(text, refresh=False)
        self._bar.refresh()

    def refresh(self, changed: bool = False) -> None:
        """Redraw (a terminal), or write a plain line when one is due (see the class)."""
        with self._lock:
            if changed:
                self._version += 1
            if self._bar is not None:
                self._draw()
                return
            if self.tty or self._source is None:
                return
            now = self.clock()
            if self._printed is not None:
                since, version = now - self._printed[0], self._printed[1]
                due = since >= self.heartbeat or (version != self._version and since >= self.interval)
                if not due:
                    return
            self._printed = (now, self._version)
            self._write(self._frame()[2])
