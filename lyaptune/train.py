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
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from lyaptune._fields import _choice, _integer, config_model
from lyaptune._frozen import FrozenDict
from lyaptune._records import RECORD_FIELDS, EpochRecord
from lyaptune.config import SCHEDULE_PERS, TaskConfig, registry_name, settings
from lyaptune.errors import ConfigError

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


_RUN_CHECKS: dict[str, Callable[[Any], Any]] = {
    "optimizer": registry_name("optimizer"),
    "optimizer_args": settings,
    "schedule": registry_name("schedule"),
    "schedule_args": settings,
    "schedule_per": partial(_choice, "", choices=SCHEDULE_PERS, kind="schedule_per"),
    "lipschitz": settings,
    "seed": partial(_integer, ""),
}
"""The check of each field a trial adds to its task (the task's own are :class:`TaskConfig`'s)."""


@config_model(_RUN_CHECKS)
class TrialConfig(TaskConfig):
    """Everything one training run needs: the task (:class:`~lyaptune.config.TaskConfig`), the
    optimizer and schedule of an arm, and the training seed; frozen, so it pickles cleanly to Ray workers.

    Attributes:
      dataset, ..., eval_chunk_size: the task fields, defined and checked by
        :class:`~lyaptune.config.TaskConfig` (here with ``validation_fraction`` 0 by default).
      optimizer, optimizer_args: registry name and hyperparameters (``beta1``-style components allowed).
      schedule, schedule_args, schedule_per: the step-size schedule, its rate constants, and whether it
        advances per ``epoch`` or per ``step``.
      lipschitz: settings of the K_hat estimate for ``derived-constant`` (``samples``, ``weights``,
        ``sigma``, ``a``, ``batch``, ``num_batches``, ``iters``, ``tol``, ``method``).
      seed: training seed (initial weights, batch order, gradient noise).

    Every bad value raises a one-line :class:`~lyaptune.errors.ConfigError` naming the field
    (``epochs: must be an integer >= 1, got 0``); names are checked against the registries when the
    run builds them.
    """

    _KIND: ClassVar[str] = "trial config"

    optimizer: str = "adam"
    optimizer_args: Mapping[str, Any] = field(default_factory=FrozenDict)
    schedule: str = "constant"
    schedule_args: Mapping[str, Any] = field(default_factory=FrozenDict)
    schedule_per: str = "epoch"
    lipschitz: Mapping[str, Any] = field(default_factory=FrozenDict)
    seed: int = 0


@dataclass
class TrialResult:
    """Outcome of :func:`run_trial` (or of one member of :func:`lyaptune.population.run_population`).

    Attributes:
      status: ``completed`` or ``diverged`` (a non-finite loss ended the run; records kept).
      records: one dict per epoch (:meth:`EpochRecord.to_dict`: :data:`RECORD_FIELDS`, then the
        optimizer's diagnostics and the registered per-epoch metrics).
      info: what the run measured besides the records: ``initial_loss`` (L(w0), eval mode, training
        set), ``num_params``, ``device``, ``steps_per_epoch``, ``total_steps``, and for
        ``derived-constant`` the Lipschitz estimate (``k_hat``, ``k_hat_values``, ``derived_lr``,
        ``lipschitz_seconds``, ...); a population member also carries ``population_size`` and
        ``population_wall_s``.
      wall_s: seconds charged to this run, data loading included: the trial's wall time, or for a
        member of a vmapped population of P runs the population's wall time divided by P
        (METHODS.md section 8 "Cost").
      message: why a run ended early, if it did.
      population_wall_s: the whole population's wall time (``None`` for a run trained alone).
      population_size: P, the members trained together (``None`` for a run trained alone).
    """

    status: str
    records: list[dict[str, Any]]
    info: dict[str, Any]
    wall_s: float
    message: str = ""
    population_wall_s: float | None = None
    population_size: int | None = None

    @property
    def epochs_completed(self) -> int:
        return len(self.records)

    @property
    def final(self) -> dict[str, Any]:
        """The last epoch's record (empty if none)."""
        return self.records[-1] if self.records else {}


def resolve_device(device: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; anything else as given (checked)."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} requested but CUDA is not available; use device: auto or cpu")
    return dev


def load_task_data(config: TrialConfig, device: torch.device | str = "cpu") -> Any:
    """The :class:`lyaptune.data.DataSplits` of a trial's task (cached per process)."""
    from lyaptune.data import load_dataset

    c = config
    return load_dataset(
        c.dataset,
        data_root=c.data_root,
        download=c.download,
        validation_fraction=c.validation_fraction,
        seed=c.data_seed,
        device=device,
        **dict(c.dataset_args),
    )


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
