"""What every part of the GPU suite shares: its time budget, its JSON, and being cut.

A part runs as ``python -m benchmarks.gpu.<part> --out DIR --budget S [--toy]`` and writes
``DIR/<part>.json`` with the keys of :data:`KEYS`:

    part, title, status, message, toy, device, device_name, torch, commit, budget_s, wall_s,
    figures (name -> number), goals (list of {figure, goal, value, met}), notes (list), details

``status`` is ``ok``, ``cut`` (the budget ran out: what was measured is kept and the message says what
was left out), ``skipped`` (the message says why, e.g. ``no CUDA device: skipped``) or ``failed``
(the message holds the error). The JSON is rewritten after every measurement, so a part killed from
outside still leaves what it had. ``gpu_suite.sh`` runs each part under ``timeout`` a little longer
than its budget; the part itself checks :meth:`Part.remaining` before each measurement and turns
SIGTERM into a cut.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]

PARTS: dict[str, str] = {
    "a_optimizer_step": "a. Optimizer step (ViT-B/16 shapes)",
    "b_study_throughput": "b. Study throughput",
    "c_khat": "c. K_hat (FC 3x1000, mini-MNIST)",
    "d_paper003": "d. papers/003 study (FC 3x1000, constant steps)",
    "e_device_checks": "e. Device checks (CPU vs device)",
}
KEYS: tuple[str, ...] = (
    "part",
    "title",
    "status",
    "message",
    "toy",
    "device",
    "device_name",
    "torch",
    "commit",
    "budget_s",
    "wall_s",
    "figures",
    "goals",
    "notes",
    "details",
)
STATUSES: tuple[str, ...] = ("ok", "cut", "skipped", "failed")
NO_CUDA = "no CUDA device: skipped"


class Cut(BaseException):
    """Raised inside a part when its budget runs out (SIGTERM from the suite, or a check before a step)."""


def commit() -> str:
    """The commit measured: ``LYAPTUNE_COMMIT`` if set (the device machine has no .git), else git's."""
    env = os.environ.get("LYAPTUNE_COMMIT")
    if env:
        return env
    try:
        r = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, timeout=10
        )
        return r.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def data_root() -> str:
    """Where mini-MNIST's files are: ``LYAPTUNE_SUITE_DATA`` (set by gpu_suite.sh), else ../shared/data."""
    return os.environ.get("LYAPTUNE_SUITE_DATA") or str(REPO.parent / "shared" / "data")


def arguments(doc: str, argv: Sequence[str] | None = None, extra: Callable[[Any], None] | None = None) -> Any:
    """The arguments every part takes: ``--out``, ``--budget``, ``--toy`` (and ``extra``'s)."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--out", required=True, help="folder of the suite's JSON files")
    ap.add_argument("--budget", type=float, required=True, help="seconds this part may take")
    ap.add_argument("--toy", action="store_true", help="toy sizes (CPU, CI)")
    if extra is not None:
        extra(ap)
    return ap.parse_args(argv)


class Part:
    """One part's budget and JSON; use as a context manager around the part's work.

    On leaving, the JSON is written with ``status`` ``ok``, or ``cut`` when :class:`Cut` was raised
    (by SIGTERM or :meth:`check`), or ``failed`` with the error's last line for any other exception.
    """

    def __init__(self, name: str, out: str | os.PathLike, budget_s: float, toy: bool) -> None:
        import torch

        self.name = name
        self.path = Path(out) / f"{name}.json"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.t0 = time.perf_counter()
        self.budget_s = float(budget_s)
        cuda = torch.cuda.is_available()
        self.data: dict[str, Any] = {
            "part": name,
            "title": PARTS[name],
            "status": "running",
            "message": "",
            "toy": bool(toy),
            "device": "cuda" if cuda else "cpu",
            "device_name": torch.cuda.get_device_name(0) if cuda else f"CPU ({os.cpu_count()} cores)",
            "torch": torch.__version__,
            "commit": commit(),
            "budget_s": self.budget_s,
            "wall_s": 0.0,
            "figures": {},
            "goals": [],
            "notes": [],
            "details": {},
        }

    # -- budget
    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def remaining(self) -> float:
        return self.budget_s - self.elapsed()

    def check(self, needed_s: float, what: str) -> None:
        """Raise :class:`Cut` (saying ``what`` was left out) unless ``needed_s`` seconds remain."""
        if self.remaining() < needed_s:
            raise Cut(
                f"{what} left out: {self.remaining():.0f} s of the budget left, about {needed_s:.0f} s needed"
            )

    # -- results
    def figure(self, name: str, value: float) -> None:
        self.data["figures"][name] = float(value)
        self.write()

    def goal(self, figure: str, goal: str, met: bool) -> None:
        value = self.data["figures"].get(figure)
        self.data["goals"].append({"figure": figure, "goal": goal, "value": value, "met": bool(met)})
        self.write()

    def note(self, text: str) -> None:
        self.data["notes"].append(text)
        self.write()

    @property
    def details(self) -> dict[str, Any]:
        return self.data["details"]

    def write(self) -> None:
        self.data["wall_s"] = round(self.elapsed(), 3)
        tmp = self.path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(_finite(self.data), indent=2, default=str))
        os.replace(tmp, self.path)

    def skip(self, message: str) -> None:
        self.data["status"], self.data["message"] = "skipped", message

    # -- context
    def __enter__(self) -> Part:
        def on_term(signum: int, frame: Any) -> None:
            raise Cut(f"stopped at the part's budget of {self.budget_s:.0f} s (signal {signum})")

        signal.signal(signal.SIGTERM, on_term)
        self.write()
        return self

    def __exit__(self, typ: Any, exc: BaseException | None, tb: Any) -> bool:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        if exc is None:
            if self.data["status"] == "running":
                self.data["status"] = "ok"
        elif isinstance(exc, Cut):
            self.data["status"], self.data["message"] = "cut", str(exc)
        elif isinstance(exc, Exception):
            self.data["status"] = "failed"
            self.data["message"] = "".join(traceback.format_exception_only(type(exc), exc)).strip()[-2000:]
            self.details["traceback"] = "".join(traceback.format_exception(typ, exc, tb))[-6000:]
        else:
            return False
        self.write()
        print(f"{self.name}: {self.data['status']} in {self.elapsed():.1f} s {self.data['message']}".rstrip())
        return True


def _finite(obj: Any) -> Any:
    """``obj`` with NaN / inf floats as strings (strict JSON has neither)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    return obj


def run_command(cmd: list[str], timeout_s: float, log: Path, env: dict[str, str] | None = None) -> float:
    """Run ``cmd`` (output to ``log``), at most ``timeout_s`` seconds; return its wall seconds.

    At the limit it gets SIGTERM (lyaptune's CLI stops a study cleanly on it), then SIGKILL 20 s later,
    and :class:`Cut` is raised. A non-zero exit raises RuntimeError with the log's tail.
    """
    t0 = time.perf_counter()
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=REPO, env=env)
        try:
            try:
                rc = proc.wait(timeout=max(timeout_s, 1.0))
            except subprocess.TimeoutExpired:
                proc.terminate()
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
                raise Cut(
                    f"{' '.join(cmd[2:4])} stopped after {timeout_s:.0f} s (the part's budget)"
                ) from None
        except Cut:
            raise
        except BaseException:  # SIGTERM of this part while the command runs: stop it too
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
            raise
    wall = time.perf_counter() - t0
    if rc != 0:
        tail = log.read_text()[-3000:]
        raise RuntimeError(f"{' '.join(cmd)} exited {rc}:\n{tail}")
    return wall


def fallback(argv: Sequence[str] | None = None) -> None:
    """``python -m benchmarks.gpu.common --out DIR --part NAME --rc N``: after a part's process ended,
    mark its JSON ``cut`` or ``failed`` if the process did not finish it (killed, or no JSON at all)."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--part", required=True, choices=sorted(PARTS))
    ap.add_argument("--rc", type=int, required=True)
    ap.add_argument("--budget", type=float, default=0.0)
    args = ap.parse_args(argv)
    path = Path(args.out) / f"{args.part}.json"
    killed = args.rc in (124, 137, -9, -15)
    why = (
        f"killed at the suite's limit for this part ({args.budget:.0f} s budget; exit {args.rc})"
        if killed
        else f"the part's process exited {args.rc} without finishing its JSON"
    )
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        data = None
    if data is not None and data.get("status") in STATUSES:
        return
    if data is None:
        data = {k: None for k in KEYS}
        data.update(part=args.part, title=PARTS[args.part], figures={}, goals=[], notes=[], details={})
        data.update(budget_s=args.budget, wall_s=args.budget if killed else 0.0, commit=commit())
    data["status"] = "cut" if killed else "failed"
    data["message"] = why
    path.write_text(json.dumps(data, indent=2))


if __name__ == "__main__":
    fallback(sys.argv[1:])
