"""Population mode: train P configurations of one small architecture at once, in one process.

The P models' parameters are stacked and one ``vmap``-ed forward/backward pass yields every member's
full-batch loss and gradient (:class:`lyaptune.engines.VmappedPopulation`); the epochs, measurements,
records, divergence and checkpoints are :func:`lyaptune.loop.run_epochs`, the loop a single run uses.
Each member keeps its *own* optimizer and schedule, built by the same registry as a single trial, so
any optimizer (ours or a baseline) and any per-member hyperparameters work, and member ``i`` follows
the trajectory of its configuration trained alone (to float tolerance: the batched matmuls round
differently).

Cost (METHODS.md section 8): the population's wall time is shared equally, so each member's
``wall_s`` and records' ``time_s`` are the population's divided by P; the population's own wall time
and P are kept in ``population_wall_s`` and ``population_size``.

Eligible: full-batch training of a model without batch-norm or dropout (:func:`lyaptune.models.is_small`),
every member sharing the task (dataset, model, epochs, device, ...) and no schedule that needs a
Lipschitz estimate. :func:`population_incompatibility` says why a set of configurations is not.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from lyaptune._records import TrialResult
from lyaptune.config import TrialConfig
from lyaptune.engines import SHARED_FIELDS, population_incompatibility

if TYPE_CHECKING:
    from lyaptune.loop import EpochMetric

__all__ = ["run_population", "population_incompatibility", "SHARED_FIELDS"]


def run_population(
    configs: Sequence[TrialConfig],
    on_epoch: Callable[[int, dict[str, Any]], None] | None = None,
    *,
    data: Any = None,
    resume_from: Mapping[str, Any] | None = None,
    on_checkpoint: Callable[[dict[str, Any]], None] | None = None,
    checkpoint_every: int = 0,
    metrics: Mapping[str, EpochMetric] | None = None,
) -> list[TrialResult]:
    """Train every configuration in ``configs`` at once; results in the same order and form as
    :func:`lyaptune.train.run_trial` would give them one by one.

    Each member is charged an equal share of the population's wall time W (METHODS.md section 8):

        wall_s = W / P,   time_s (per record) = training seconds so far / P,
        population_wall_s = W,   population_size = P   (also in ``info``).

    Args:
      configs: configurations sharing :data:`SHARED_FIELDS` (they may differ in optimizer, its
        hyperparameters, schedule and parameters, seed and gradient noise).
      on_epoch: called as ``on_epoch(member_index, record)`` after each epoch of each member.
      data: an already loaded dataset to reuse.
      resume_from: a state from ``on_checkpoint`` to continue from (bit-exactly on CPU).
      on_checkpoint: called with the population's state every ``checkpoint_every`` epochs.
      checkpoint_every: epochs between checkpoints (0 = never).
      metrics: per-epoch metrics for this call only (besides the registered ones), by name.

    Returns:
      One :class:`TrialResult` per configuration.

    Raises:
      ValueError: the configurations cannot train as one population (the reason is given).
    """
    from lyaptune.engines import VmappedPopulation
    from lyaptune.loop import run_epochs

    t0 = time.perf_counter()
    engine = VmappedPopulation(configs, data)
    outcomes = run_epochs(
        engine,
        on_epoch=on_epoch,
        on_checkpoint=on_checkpoint,
        checkpoint_every=checkpoint_every,
        resume_from=resume_from,
        metrics=metrics,
    )
    wall = time.perf_counter() - t0
    P = engine.size
    results = []
    for o in outcomes:
        info = {**o.info, "population_size": P, "population_wall_s": wall}
        results.append(
            TrialResult(
                status=o.status,
                records=o.records,
                info=info,
                wall_s=wall / P,
                message=o.message,
                population_wall_s=wall,
                population_size=P,
            )
        )
    return results
