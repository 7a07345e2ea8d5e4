"""One trial, framework-free: a :class:`TrialConfig` in, per-epoch records out.

:func:`run_trial` is what every study runs, in a Ray worker or in a plain process. It imports no Ray.
It builds a :class:`~lyaptune.engines.SingleModel` engine and runs :func:`lyaptune.loop.run_epochs`,
the one training loop that a vmapped population (:func:`lyaptune.population.run_population`) runs
too. Per epoch it records the quantities papers/003 plots: the training loss over the *whole*
training set (eval mode), the L2 norm of the full-training-set gradient at the end of the epoch,
validation and test loss/accuracy, the step size used, the Lyapunov drift
``dV = L(theta_{k+1}) - L(theta_k)`` of papers/000, the optimizer steps so far and the elapsed time
(:class:`~lyaptune._records.EpochRecord`), plus any metric added with
:func:`lyaptune.loop.register_epoch_metric`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from lyaptune._records import RECORD_FIELDS, EpochRecord, TrialResult
from lyaptune.config import TrialConfig
from lyaptune.device import load_task_data, resolve_device

if TYPE_CHECKING:
    from lyaptune.loop import EpochMetric

__all__ = [
    "TrialConfig",
    "TrialResult",
    "run_trial",
    "resolve_device",
    "load_task_data",
    "RECORD_FIELDS",
    "EpochRecord",
]


def run_trial(
    config: TrialConfig,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
    *,
    data: Any = None,
    resume_from: Mapping[str, Any] | None = None,
    on_checkpoint: Callable[[dict[str, Any]], None] | None = None,
    checkpoint_every: int = 0,
    metrics: Mapping[str, EpochMetric] | None = None,
    progress: Callable[[str], None] | None = None,
) -> TrialResult:
    """Train one configuration and record every epoch (:func:`lyaptune.loop.run_epochs`).

    Args:
      config: the trial.
      on_epoch: called with each epoch's record (a copy) right after it is measured.
      data: an already loaded :class:`lyaptune.data.DataSplits` to reuse (else loaded, cached).
      resume_from: a state from ``on_checkpoint`` to continue from (bit-exactly on CPU).
      on_checkpoint: called with the trial state every ``checkpoint_every`` epochs; the state is
        :func:`~lyaptune.loop.run_epochs`' plus ``records`` (this trial's records so far).
      checkpoint_every: epochs between checkpoints (0 = never).
      metrics: per-epoch metrics for this run only (besides the registered ones), by name.
      progress: called with one line per step of the ``derived-constant`` K_hat estimate (it takes
        minutes on a real task), e.g. ``print``.

    Returns:
      A :class:`TrialResult`. A non-finite loss ends the run with status ``diverged`` (the records up to
      and including that epoch are kept); it does not raise.

    References:
      papers/003 Section 5 (metrics per epoch: gradient norm, training loss, test accuracy).
    """
    from lyaptune.engines import SingleModel
    from lyaptune.loop import run_epochs

    t0 = time.perf_counter()
    engine = SingleModel(config, data=data, progress=progress)

    checkpoint = None
    if on_checkpoint is not None:
        save = on_checkpoint

        def checkpoint(state: dict[str, Any]) -> None:
            save({**state, "records": state["members"][0]["records"]})

    (outcome,) = run_epochs(
        engine,
        on_epoch=(lambda _i, rec: on_epoch(rec)) if on_epoch is not None else None,
        on_checkpoint=checkpoint,
        checkpoint_every=checkpoint_every,
        resume_from=resume_from,
        metrics=metrics,
    )
    return TrialResult(
        status=outcome.status,
        records=outcome.records,
        info=outcome.info,
        wall_s=time.perf_counter() - t0,
        message=outcome.message,
    )
