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
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

import torch

from lyaptune._frozen import freeze, thaw
from lyaptune._records import RECORD_FIELDS, EpochRecord
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


_BATCH_CHOICES = "a positive integer or 'full'"


@dataclass(frozen=True, kw_only=True)
class TrialConfig:
    """Everything one training run needs; frozen, so it pickles cleanly to Ray workers.

    Attributes:
      dataset, dataset_args: the dataset registry name and its options (``label_noise``, ``poison``,
        ``poison_fraction``, ``normalize``, dataset-specific options such as ``n_train``).
      data_root, download: where dataset files live; whether torchvision may download them.
      validation_fraction: share of the training set held out (seeded by ``data_seed``) for tuning.
      data_seed: seed of the dataset's subsets and splits (kept fixed across training seeds).
      model, model_args, init: the model registry name, its arguments, an optional init scheme.
      optimizer, optimizer_args: registry name and hyperparameters (``beta1``-style components allowed).
      schedule, schedule_args, schedule_per: the step-size schedule, its rate constants, and whether it
        advances per ``epoch`` or per ``step``.
      lipschitz: settings of the K_hat estimate for ``derived-constant`` (``samples``, ``weights``,
        ``sigma``, ``a``, ``batch``, ``num_batches``, ``iters``, ``tol``, ``method``).
      epochs: number of epochs (>= 1); batch_size: a positive integer or ``"full"``.
      seed: training seed (initial weights, batch order, gradient noise).
      device: ``auto`` (CUDA when present), ``cpu``, ``cuda``, ``cuda:N``.
      grad_noise: std of Gaussian noise added to every gradient entry (papers/000's open question).
      eval_chunk_size: chunk size for full-dataset loss and gradient passes (None = one pass).
    """

    dataset: str = "digits"
    dataset_args: Mapping[str, Any] = field(default_factory=dict)
    data_root: str | None = None
    download: bool = False
    validation_fraction: float = 0.0
    data_seed: int = 0
    model: str = "fc"
    model_args: Mapping[str, Any] = field(default_factory=dict)
    init: str | None = None
    optimizer: str = "adam"
    optimizer_args: Mapping[str, Any] = field(default_factory=dict)
    schedule: str = "constant"
    schedule_args: Mapping[str, Any] = field(default_factory=dict)
    schedule_per: str = "epoch"
    lipschitz: Mapping[str, Any] = field(default_factory=dict)
    epochs: int = 10
    batch_size: int | str = "full"
    seed: int = 0
    device: str = "auto"
    grad_noise: float = 0.0
    eval_chunk_size: int | None = None

    def __post_init__(self) -> None:
        for name in ("dataset_args", "model_args", "optimizer_args", "schedule_args", "lipschitz"):
            object.__setattr__(self, name, freeze(getattr(self, name)))
        if isinstance(self.epochs, bool) or not isinstance(self.epochs, int) or self.epochs < 1:
            raise ConfigError(f"epochs must be a positive integer, got {self.epochs!r}")
        bs = self.batch_size
        if isinstance(bs, str):
            if bs != "full":
                raise ConfigError(f"batch_size must be {_BATCH_CHOICES}, got {bs!r}")
        elif isinstance(bs, bool) or not isinstance(bs, int) or bs < 1:
            raise ConfigError(f"batch_size must be {_BATCH_CHOICES}, got {bs!r}")
        if not 0.0 <= float(self.validation_fraction) < 1.0:
            raise ConfigError(f"validation_fraction must be in [0, 1), got {self.validation_fraction!r}")
        if self.schedule_per not in ("epoch", "step"):
            raise ConfigError(f"schedule_per must be one of epoch, step; got {self.schedule_per!r}")
        if not float(self.grad_noise) >= 0.0:
            raise ConfigError(f"grad_noise must be >= 0, got {self.grad_noise!r}")
        if self.eval_chunk_size is not None and int(self.eval_chunk_size) < 1:
            raise ConfigError(f"eval_chunk_size must be a positive integer, got {self.eval_chunk_size!r}")
        if not (self.device in ("auto", "cpu", "cuda", "mps") or str(self.device).startswith("cuda:")):
            raise ConfigError(f"device must be one of auto, cpu, cuda, cuda:N, mps; got {self.device!r}")

    def to_dict(self) -> dict[str, Any]:
        """A plain-dict copy (JSON/YAML friendly)."""
        return {f.name: thaw(getattr(self, f.name)) for f in fields(self)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TrialConfig:
        """Build from a mapping, rejecting unknown keys with the list of known ones."""
        known = list(cls.__dataclass_fields__)
        for key in d:
            if key not in known:
                from lyaptune._registry import unknown_choice

                raise unknown_choice("trial config key", key, known)
        return cls(**d)


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
