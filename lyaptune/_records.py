"""The per-epoch record, shared by the training loop and the store (no torch import here)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

__all__ = ["EpochRecord", "RECORD_FIELDS", "TrialResult"]


@dataclass(frozen=True, kw_only=True)
class EpochRecord:
    """One epoch of one run, as :func:`lyaptune.loop.run_epochs` measures it.

    Attributes:
      epoch: epochs completed (1-based).
      train_loss, train_acc: loss and accuracy on the whole training set, eval mode, at the weights
        reached at the end of the epoch.
      grad_norm: L2 norm (global over all parameters) of the whole-training-set gradient there.
      val_loss, val_acc, test_loss, test_acc: the held-out splits (NaN when a split is empty).
      lr: the step size the epoch's updates used (first parameter group).
      lyapunov_drift: ``dV = L(theta_k) - L(theta_{k-1})`` between consecutive epochs (papers/000),
        with ``L(theta_0)`` the initial loss.
      step: optimizer steps so far.
      time_s: seconds of training charged to this run so far (a member of a vmapped population of P
        runs is charged the population's time divided by P; METHODS.md section 8 "Cost"). Training
        excludes measurement: the epochs' evaluation (held-out splits, the extra whole-training-set
        pass where the update does not share it, the per-epoch metrics) is kept apart.
      eval_time_s: seconds of that measurement for the earlier epochs' records, charged the same way
        (AlgoPerf's separate clocks; the run's totals are ``info['train_s']`` and ``info['eval_s']``).
      extra: the optimizer's diagnostics and the registered per-epoch metrics, by name.
    """

    epoch: int
    train_loss: float
    train_acc: float
    grad_norm: float
    val_loss: float
    val_acc: float
    test_loss: float
    test_acc: float
    lr: float
    lyapunov_drift: float
    step: int
    time_s: float
    eval_time_s: float = 0.0
    extra: Mapping[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The flat record: :data:`RECORD_FIELDS` in order, then the ``extra`` values."""
        rec: dict[str, Any] = {name: getattr(self, name) for name in RECORD_FIELDS}
        rec.update(self.extra)
        return rec


#: The fixed fields of every per-epoch record, in store column order (``extra`` values follow).
RECORD_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(EpochRecord) if f.name != "extra")


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
