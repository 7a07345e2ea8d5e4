"""The one training loop: epochs, measurement, records, divergence and checkpoints over any engine.

:func:`run_epochs` trains every member of an :class:`~lyaptune.engines.Engine` (one model, or a
vmapped population) for its epochs and measures, at the end of each epoch, the quantities papers/003
plots: training loss and gradient norm over the *whole* training set (eval mode), validation and test
loss and accuracy, the step size used, the Lyapunov drift of papers/000, the steps and time so far,
the optimizer's diagnostics and every registered per-epoch metric (:func:`register_epoch_metric`).

Full batch without batch-norm or dropout (``engine.fused``), the loss and gradient that epoch ``k + 1``
computes for its update *are* the measurement that ends epoch ``k``: the record of epoch ``k`` waits
("pending") until then, and each epoch costs one forward and one backward pass. A measurement of its
own is made where it cannot wait: before a checkpoint, after the last epoch, and for every epoch of a
mini-batch or mode-dependent model.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from lyaptune._records import RECORD_FIELDS, EpochRecord
from lyaptune.config import TrialConfig
from lyaptune.engines import Engine, Grads

__all__ = [
    "EpochView",
    "EpochMetric",
    "MemberOutcome",
    "run_epochs",
    "register_epoch_metric",
    "unregister_epoch_metric",
    "epoch_metrics",
]


@dataclass(frozen=True)
class EpochView:
    """What a per-epoch metric sees of one member at the end of an epoch (read it, do not modify it).

    Attributes:
      index: the member's position in its engine (0 for a single run).
      config: the member's configuration.
      epoch: epochs completed.
      params: the member's weights at the end of the epoch, by parameter name.
      grads: the whole-training-set gradient at those weights (eval mode), by parameter name.
      record: the epoch's fixed record fields (:data:`~lyaptune._records.RECORD_FIELDS`) as floats.
      optimizer: the member's optimizer.
      info: the member's run info (``initial_loss``, ``num_params``, ...).
    """

    index: int
    config: TrialConfig
    epoch: int
    params: Mapping[str, torch.Tensor]
    grads: Mapping[str, torch.Tensor]
    record: Mapping[str, float]
    optimizer: torch.optim.Optimizer
    info: Mapping[str, Any]


#: A per-epoch metric: a float (or a 0-d tensor, fetched with the others in one transfer) per member.
EpochMetric = Callable[[EpochView], "float | torch.Tensor"]

_EPOCH_METRICS: dict[str, EpochMetric] = {}


def register_epoch_metric(name: str, fn: EpochMetric) -> EpochMetric:
    """Add a metric to every run's per-epoch records, single runs and population members alike.

    The value ``fn(view)`` is stored under ``name`` in each record (and so in the store's epochs
    table). Register it at import time of a module that the training processes (Ray workers
    included) import, or pass it to one run with ``metrics=``.

    Args:
      name: the record field; not one of :data:`~lyaptune._records.RECORD_FIELDS`, not already
        registered.
      fn: called with an :class:`EpochView` once per member and epoch.

    Returns:
      ``fn``, so this also works as ``register_epoch_metric("name", fn)`` in an assignment.

    Raises:
      ValueError: the name is taken.
    """
    _check_metric_name(name)
    if name in _EPOCH_METRICS:
        raise ValueError(f"epoch metric {name!r} is already registered")
    _EPOCH_METRICS[name] = fn
    return fn


def unregister_epoch_metric(name: str) -> None:
    """Remove a metric added with :func:`register_epoch_metric` (unknown names are an error)."""
    if name not in _EPOCH_METRICS:
        raise ValueError(f"no epoch metric {name!r} is registered; registered: {sorted(_EPOCH_METRICS)}")
    del _EPOCH_METRICS[name]


def epoch_metrics() -> dict[str, EpochMetric]:
    """The registered per-epoch metrics, by name (a copy)."""
    return dict(_EPOCH_METRICS)


def _check_metric_name(name: str) -> None:
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"an epoch metric name must be an identifier, got {name!r}")
    if name in RECORD_FIELDS:
        raise ValueError(
            f"epoch metric {name!r} would replace a record field; fields: {', '.join(RECORD_FIELDS)}"
        )


@dataclass
class MemberOutcome:
    """How one member's training ended.

    Attributes:
      status: ``completed``, or ``diverged`` when a non-finite training loss or gradient norm ended
        it (the records up to and including that epoch are kept).
      message: why it ended early, if it did.
      records: its per-epoch records (:meth:`EpochRecord.to_dict` form).
      info: the member's run info.
    """

    status: str = "completed"
    message: str = ""
    records: list[dict[str, Any]] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def alive(self) -> bool:
        return self.status == "completed"


class _Loop:
    def __init__(self, engine: Engine, metrics: Mapping[str, EpochMetric] | None) -> None:
        self.engine = engine
        merged = dict(_EPOCH_METRICS)
        for name, fn in (metrics or {}).items():
            _check_metric_name(name)
            if name in merged:
                raise ValueError(f"epoch metric {name!r} is given twice (registered and in metrics=)")
            merged[name] = fn
        self.metrics = merged
        self.epoch = 0
        self.step = 0
        self.elapsed = 0.0  # training seconds (measurement excluded)
        self.eval_s = 0.0  # measurement seconds
        self.outcomes = [MemberOutcome(info=m.info) for m in engine.members]
        self.prev_loss = [float(m.info["initial_loss"]) for m in engine.members]

    # -- state ------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "engine": self.engine.state_dict(),
            "epoch": self.epoch,
            "step": self.step,
            "elapsed": self.elapsed,
            "eval_s": self.eval_s,
            "members": [
                {
                    "status": o.status,
                    "message": o.message,
                    "prev_loss": p,
                    "records": [dict(r) for r in o.records],
                    "info": dict(o.info),
                }
                for o, p in zip(self.outcomes, self.prev_loss)
            ],
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        missing = [k for k in ("engine", "epoch", "step", "elapsed", "members") if k not in state]
        if missing:
            raise ValueError(
                f"not a checkpoint of lyaptune.loop.run_epochs (no {', '.join(missing)}): written by an "
                "older lyaptune? start the run over"
            )
        if len(state["members"]) != self.engine.size:
            raise ValueError(
                f"the checkpoint holds {len(state['members'])} members, this engine {self.engine.size}"
            )
        self.engine.load_state_dict(state["engine"])
        self.epoch = int(state["epoch"])
        self.step = int(state["step"])
        self.elapsed = float(state["elapsed"])
        self.eval_s = float(state.get("eval_s", 0.0))  # absent in checkpoints of older versions
        for i, s in enumerate(state["members"]):
            o = self.outcomes[i]
            o.status, o.message = str(s["status"]), str(s["message"])
            o.records = [dict(r) for r in s["records"]]
            o.info.update(s["info"])
            self.prev_loss[i] = float(s["prev_loss"])

    # -- one update -------------------------------------------------------------------------------
    def _apply(self, grads: Grads) -> None:
        for i, member in enumerate(self.engine.members):
            if not self.outcomes[i].alive:
                continue
            gs = self.engine.member_grads(grads, i)
            if member.noise is not None:
                for g in gs:
                    noise = torch.randn(g.shape, generator=member.noise, device=g.device, dtype=g.dtype)
                    g.add_(noise, alpha=member.config.grad_noise)
            for p, g in zip(member.params, gs):
                p.grad = g
            member.optimizer.step()
            member.schedule.step_end()
        self.step += 1

    # -- records ----------------------------------------------------------------------------------
    def _emit(
        self,
        pending: tuple[list[float], int, float],
        measured: tuple[torch.Tensor, torch.Tensor, Grads],
        on_epoch: Callable[[int, dict[str, Any]], None] | None,
    ) -> None:
        engine = self.engine
        lrs, epoch, elapsed = pending
        loss, acc, grads = measured
        val = engine.evaluate(engine.data.val)
        test = engine.evaluate(engine.data.test)
        cols = (loss, acc, engine.grad_norms(grads), *val, *test)
        # one host synchronisation for every member's fixed fields
        table = torch.stack([c.detach().to(engine.device, torch.float64).reshape(-1) for c in cols], 1)
        rows = table.cpu().tolist()
        live = [i for i in range(engine.size) if self.outcomes[i].alive]
        # time charged to each run: a member of a population of P is charged the population's time / P
        charged = elapsed / engine.size
        charged_eval = self.eval_s / engine.size
        base: dict[int, dict[str, float]] = {}
        for i in live:
            tl, ta, gn, vl, va, sl, sa = rows[i]
            base[i] = {
                "epoch": epoch,
                "train_loss": tl,
                "train_acc": ta,
                "grad_norm": gn,
                "val_loss": vl,
                "val_acc": va,
                "test_loss": sl,
                "test_acc": sa,
                "lr": lrs[i],
                "lyapunov_drift": tl - self.prev_loss[i],
                "step": engine.steps_through(epoch),
                "time_s": charged,
                "eval_time_s": charged_eval,
            }
        extras = self._metric_values(live, base, grads, epoch)
        shared = engine.record_extras(epoch - 1)  # e.g. the batch size epoch `epoch` trained with
        for i in live:
            member, outcome = engine.members[i], self.outcomes[i]
            extra: dict[str, float] = dict(shared)
            diag = getattr(member.optimizer, "diagnostics", None)
            if callable(diag):
                extra.update({k: float(v) for k, v in diag().items()})
            for name, value in extras[i].items():
                if name in extra:
                    raise ValueError(
                        f"epoch metric {name!r} has the name of an optimizer diagnostic or engine field"
                    )
                extra[name] = value
            rec = EpochRecord(**base[i], extra=extra).to_dict()
            self.prev_loss[i] = rec["train_loss"]
            outcome.records.append(rec)
            if on_epoch is not None:
                on_epoch(i, dict(rec))
            if not (math.isfinite(rec["train_loss"]) and math.isfinite(rec["grad_norm"])):
                outcome.status = "diverged"
                outcome.message = f"non-finite training loss or gradient at epoch {epoch}"

    def _metric_values(
        self, live: list[int], base: dict[int, dict[str, float]], grads: Grads, epoch: int
    ) -> dict[int, dict[str, float]]:
        out: dict[int, dict[str, float]] = {i: {} for i in live}
        if not self.metrics or not live:
            return out
        engine = self.engine
        keys: list[tuple[int, str]] = []
        values: list[torch.Tensor] = []
        with torch.no_grad():
            for i in live:
                m = engine.members[i]
                view = EpochView(
                    index=i,
                    config=m.config,
                    epoch=epoch,
                    params=dict(zip(m.names, (p.detach() for p in m.params))),
                    grads=dict(zip(m.names, engine.member_grads(grads, i))),
                    record=dict(base[i]),
                    optimizer=m.optimizer,
                    info=m.info,
                )
                for name, fn in self.metrics.items():
                    v = torch.as_tensor(fn(view), dtype=torch.float64, device=engine.device)
                    if v.numel() != 1:
                        raise ValueError(f"epoch metric {name!r} returned {v.numel()} values, not one")
                    keys.append((i, name))
                    values.append(v.reshape(()))
        # one host synchronisation for all metric values
        for (i, name), v in zip(keys, torch.stack(values).cpu().tolist()):
            out[i][name] = v
        return out

    # -- epochs -----------------------------------------------------------------------------------
    def run(
        self,
        on_epoch: Callable[[int, dict[str, Any]], None] | None,
        on_checkpoint: Callable[[dict[str, Any]], None] | None,
        checkpoint_every: int,
    ) -> None:
        engine = self.engine
        pending: tuple[list[float], int, float] | None = None  # an epoch awaiting its measurement
        clock = _Clock(engine.device)
        train_base = self.elapsed  # training seconds before this call (a resumed run)

        def any_alive() -> bool:
            return any(o.alive for o in self.outcomes)

        def emit(measured: tuple[torch.Tensor, torch.Tensor, Grads] | None) -> None:
            # measurement: its seconds go to eval_s, never to the training clock
            assert pending is not None
            with clock.measuring() as seconds:
                self._emit(pending, measured or engine.train_loss_and_grads(train_mode=False), on_epoch)
            self.eval_s += seconds()

        while self.epoch < engine.epochs and any_alive():
            lrs = [m.current_lr() for m in engine.members]
            if engine.full_batch:
                # fused: the gradient at the start of an epoch is both the update's and the previous
                # epoch's measurement; it is training, only the rest of the measurement is not
                measured = engine.train_loss_and_grads(train_mode=not engine.fused)
                if engine.fused and pending is not None:
                    emit(measured)
                    if not any_alive():
                        return
                self._apply(measured[2])
            else:
                for grads in engine.minibatch_grads(self.epoch):
                    self._apply(grads)
            self.epoch += 1
            self.elapsed = train_base + clock.training()
            for m, o in zip(engine.members, self.outcomes):
                if o.alive:
                    epoch_end = getattr(m.optimizer, "epoch_end", None)
                    if callable(epoch_end):
                        epoch_end()
                    m.schedule.epoch_end()
            pending = (lrs, self.epoch, self.elapsed)
            checkpoint_due = bool(on_checkpoint and checkpoint_every and self.epoch % checkpoint_every == 0)
            if not engine.fused or checkpoint_due or self.epoch == engine.epochs:
                emit(None)
                pending = None
                if not any_alive():
                    return
            if checkpoint_due and on_checkpoint is not None:
                on_checkpoint(self.state_dict())


class _Clock:
    """Two clocks over one ``perf_counter``: training is everything outside :meth:`measuring`.

    On CUDA the device is synchronised at each boundary, so that queued training kernels are not
    charged to the measurement that waits for them.
    """

    def __init__(self, device: torch.device) -> None:
        self.cuda = torch.device(device).type == "cuda"
        self.device = device
        self.start = self._now()
        self.measured = 0.0

    def _now(self) -> float:
        if self.cuda:
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def training(self) -> float:
        """Seconds since the clock started, less the seconds spent measuring."""
        return self._now() - self.start - self.measured

    @contextlib.contextmanager
    def measuring(self) -> Iterator[Callable[[], float]]:
        t = self._now()
        box = [0.0]
        try:
            yield lambda: box[0]
        finally:
            box[0] = self._now() - t
            self.measured += box[0]


def run_epochs(
    engine: Engine,
    *,
    on_epoch: Callable[[int, dict[str, Any]], None] | None = None,
    on_checkpoint: Callable[[dict[str, Any]], None] | None = None,
    checkpoint_every: int = 0,
    resume_from: Mapping[str, Any] | None = None,
    metrics: Mapping[str, EpochMetric] | None = None,
) -> list[MemberOutcome]:
    """Train every member of ``engine`` for its epochs, recording each epoch.

    Per member and epoch ``k`` the record (:class:`~lyaptune._records.EpochRecord`) holds, at the
    weights ``theta_k`` reached at the end of the epoch, in eval mode:

        train_loss = L(theta_k) over the whole training set,  grad_norm = ||grad L(theta_k)||_2,
        lyapunov_drift = L(theta_k) - L(theta_{k-1})  (L(theta_0) = info["initial_loss"]),

    the held-out splits' loss and accuracy, the step size the epoch used, ``step`` (optimizer steps
    in epochs 1..k: ``k x steps per epoch``, or their sum when the batch grows, with the epoch's
    ``batch_size`` as an extra field), ``time_s`` (training seconds so far divided by the number of
    members: a run trained in a vmapped population of P is charged wall / P, METHODS.md section 8;
    measurement excluded) and ``eval_time_s`` (the seconds of measuring the earlier records, charged
    alike; the totals are the outcome's ``info["train_s"]`` and ``info["eval_s"]``),
    the optimizer's ``diagnostics()`` and the registered metrics plus ``metrics``. After each epoch the
    optimizer's ``epoch_end()`` (if any) and the schedule's ``epoch_end()`` run. A member whose training
    loss or gradient norm is not finite stops (status ``diverged``, no exception); the others go on.

    Args:
      engine: the members and the operations that depend on how they are trained.
      on_epoch: called as ``on_epoch(member_index, record)`` (a copy) right after each record.
      on_checkpoint: called with the loop's state every ``checkpoint_every`` epochs (after that epoch's
        record); :func:`run_epochs` with ``resume_from`` set to it continues bit-exactly.
      checkpoint_every: epochs between checkpoints (0 = never).
      resume_from: a state from ``on_checkpoint``, for an engine built from the same configurations.
      metrics: per-epoch metrics for this call only, by name (besides the registered ones).

    Returns:
      One :class:`MemberOutcome` per member, in order.

    References:
      papers/003 Section 5 (per-epoch gradient norm, training loss, test accuracy); papers/000
      (Lyapunov drift).
    """
    loop = _Loop(engine, metrics)
    if resume_from is not None:
        loop.load_state_dict(resume_from)
    loop.run(on_epoch, on_checkpoint, checkpoint_every)
    for outcome in loop.outcomes:  # the run's two clocks, charged per member like time_s
        outcome.info["train_s"] = loop.elapsed / engine.size
        outcome.info["eval_s"] = loop.eval_s / engine.size
    return loop.outcomes
