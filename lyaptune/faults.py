"""Fault injection: the named points where tests and benchmarks stop, fail or kill lyaptune on purpose.

Production code calls :func:`at_run_point` and :func:`at_compaction_step` at the points named below;
both return at once unless the environment asks for a fault, so a test interrupts or kills a driver, a
worker or a node at a known point, never after a guessed delay. This module is the only place that
reads the two variables.

``LYAPTUNE_FAULT_INJECTION='{"match": "<trial id substring>", "dir": "<dir>", ...}'`` (JSON), for the
runs whose trial id contains ``match``:

- ``"times": N``: the run raises ``RuntimeError("injected fault ...")`` at its ``start`` on its first N
  attempts (attempts are counted with marker files ``<trial id>.<attempt>`` in ``dir``).
- ``"block": <point>`` with a point of :data:`RUN_POINTS`: at that point the process writes a marker
  (:data:`BLOCK_MARKERS`: ``<trial id>.blocked`` in a worker, ``<trial id>.recorded`` in the driver,
  holding its pid) and waits there until it is stopped or killed. It blocks once: where the marker
  exists already (an earlier attempt stopped there), it goes on.

``LYAPTUNE_COMPACTION_FAULT=<step>``: the process SIGKILLs itself at that step of a store compaction
(:data:`COMPACTION_STEPS`).
"""

from __future__ import annotations

import json
import os
import signal
import time
from typing import Any

__all__ = [
    "FAULT_ENV",
    "COMPACTION_FAULT_ENV",
    "RUN_POINTS",
    "BLOCK_MARKERS",
    "COMPACTION_STEPS",
    "at_run_point",
    "at_compaction_step",
    "worker_env",
]

#: The run fault's variable (JSON, see the module docstring).
FAULT_ENV = "LYAPTUNE_FAULT_INJECTION"
#: The compaction fault's variable: the step at which the process SIGKILLs itself.
COMPACTION_FAULT_ENV = "LYAPTUNE_COMPACTION_FAULT"
#: The points of a run: ``start`` (a worker, before training: faults raise or block here),
#: ``checkpoint`` (a worker, right after the run's first checkpoint is stored) and ``recorded`` (the
#: driver, right after it stored a run's row and before it told Optuna).
RUN_POINTS = ("start", "checkpoint", "recorded")
#: The suffix of the marker a blocked run point writes: ``<trial id>.<suffix>`` in the fault's ``dir``.
BLOCK_MARKERS = {"start": "blocked", "checkpoint": "blocked", "recorded": "recorded"}
#: The points of a compaction, in order: after the manifest is written, after the epochs parts, after
#: the trials part, after the folded trials files are deleted, after every folded file is deleted (only
#: the manifest left).
COMPACTION_STEPS = ("manifest", "epochs_parts", "trials_part", "trials_deleted", "deleted")


def _run_fault(trial_id: str) -> dict[str, Any] | None:
    text = os.environ.get(FAULT_ENV)
    if not text:
        return None
    fault = json.loads(text)
    return fault if fault["match"] in trial_id else None


def _block(fault: dict[str, Any], trial_id: str, point: str) -> None:
    os.makedirs(fault["dir"], exist_ok=True)
    marker = os.path.join(fault["dir"], f"{trial_id}.{BLOCK_MARKERS[point]}")
    if os.path.exists(marker):
        return
    with open(marker + ".tmp", "w") as f:
        f.write(str(os.getpid()))
    os.replace(marker + ".tmp", marker)
    while True:  # ended by the driver stopping the run, or by a kill
        time.sleep(0.2)


def at_run_point(trial_id: str, point: str) -> None:
    """The fault-injection point ``point`` (:data:`RUN_POINTS`) of run ``trial_id``.

    Args:
      trial_id: the run's id (``<arm>-<phase>-<number>-s<seed>``).
      point: one of :data:`RUN_POINTS`.

    Raises:
      RuntimeError: at ``start``, on the first ``times`` attempts of a matching run.
    """
    if point not in RUN_POINTS:
        raise ValueError(f"fault point: unknown point {point!r}; valid: {', '.join(RUN_POINTS)}")
    fault = _run_fault(trial_id)
    if fault is None:
        return
    if fault.get("block") == point:
        _block(fault, trial_id, point)
    if point != "start" or "block" in fault:
        return
    os.makedirs(fault["dir"], exist_ok=True)
    attempt = len([f for f in os.listdir(fault["dir"]) if f.startswith(trial_id + ".")]) + 1
    with open(os.path.join(fault["dir"], f"{trial_id}.{attempt}"), "w"):
        pass
    if attempt <= int(fault["times"]):
        raise RuntimeError(f"injected fault (attempt {attempt} of {trial_id})")


def at_compaction_step(step: str) -> None:
    """The fault-injection point ``step`` (:data:`COMPACTION_STEPS`) of a store compaction: the process
    SIGKILLs itself where ``LYAPTUNE_COMPACTION_FAULT`` names this step."""
    if os.environ.get(COMPACTION_FAULT_ENV) == step:
        os.kill(os.getpid(), signal.SIGKILL)


def worker_env() -> dict[str, str]:
    """The fault variables of this process, for the workers of a remote cluster (Ray's runtime_env)."""
    return {k: os.environ[k] for k in (FAULT_ENV,) if os.environ.get(k)}
