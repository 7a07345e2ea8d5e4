"""One trial, framework-free: a :class:`TrialConfig` in, per-epoch records out.

:func:`run_trial` is what every study runs, in a Ray worker or in a plain process. It imports no Ray.
Per epoch it records the quantities papers/003 plots: the training loss over the *whole* training set
(eval mode), the L2 norm of the full-training-set gradient at the end of the epoch, validation and test
loss/accuracy, the step size used, the Lyapunov drift ``dV = L(theta_{k+1}) - L(theta_k)`` of
papers/000, the optimizer steps so far and the elapsed time.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from lyaptune._frozen import freeze, thaw
from lyaptune._fullbatch import full_loss, full_loss_and_grad
from lyaptune._records import RECORD_FIELDS
from lyaptune.errors import ConfigError

__all__ = ["TrialConfig", "TrialResult", "run_trial", "resolve_device", "load_task_data", "RECORD_FIELDS"]


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
    """Outcome of :func:`run_trial`.

    Attributes:
      status: ``completed`` or ``diverged`` (a non-finite loss ended the run; records kept).
      records: one dict per epoch (fields :data:`RECORD_FIELDS` plus optimizer diagnostics).
      info: what the run measured besides the records: ``initial_loss`` (L(w0), eval mode, training
        set), ``initial_grad_norm``, ``num_params``, ``device``, ``steps_per_epoch``, ``total_steps``,
        and for ``derived-constant`` the Lipschitz estimate (``k_hat``, ``k_hat_values``,
        ``derived_lr``, ``lipschitz_seconds``, ...).
      wall_s: seconds for the whole trial, data loading included.
      message: why a run ended early, if it did.
    """

    status: str
    records: list[dict[str, Any]]
    info: dict[str, Any]
    wall_s: float
    message: str = ""

    @property
    def epochs_completed(self) -> int:
        return len(self.records)

    @property
    def final(self) -> dict[str, Any]:
        """The last epoch's record (empty if none)."""
        return self.records[-1] if self.records else {}


def make_record(
    *,
    epoch: int,
    lr: float,
    values: tuple[float, ...],
    prev_loss: float,
    step: int,
    elapsed: float,
    optimizer: torch.optim.Optimizer | None = None,
) -> dict[str, Any]:
    """One epoch's record from its measured ``values`` = (train_loss, train_acc, grad_norm, val_loss,
    val_acc, test_loss, test_acc), with the Lyapunov drift and the optimizer's diagnostics."""
    tl, ta, gn, vl, va, sl, sa = values
    rec = {
        "epoch": epoch,
        "train_loss": tl,
        "train_acc": ta,
        "grad_norm": gn,
        "val_loss": vl,
        "val_acc": va,
        "test_loss": sl,
        "test_acc": sa,
        "lr": lr,
        "lyapunov_drift": tl - prev_loss,
        "step": step,
        "time_s": elapsed,
    }
    diag = getattr(optimizer, "diagnostics", None)
    if callable(diag):
        rec.update({k: float(v) for k, v in diag().items()})
    return rec


def current_lr(optimizer: torch.optim.Optimizer) -> float:
    """The first parameter group's step size (a float even when the optimizer keeps a tensor)."""
    lr = optimizer.param_groups[0]["lr"]
    return float(lr.item()) if isinstance(lr, torch.Tensor) else float(lr)


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


def _has_mode_dependent_layers(model: nn.Module) -> bool:
    mode_types = (nn.modules.batchnorm._BatchNorm, nn.Dropout, nn.modules.dropout._DropoutNd)
    return any(isinstance(m, mode_types) for m in model.modules())


def _grad_norm(grads: list[torch.Tensor]) -> torch.Tensor:
    if not grads:
        return torch.zeros(())
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))


class _Trial:
    """The state of one running trial; checkpointable through :meth:`state_dict`."""

    def __init__(self, config: TrialConfig, data: Any = None) -> None:
        from lyaptune.data import get_dataset_info
        from lyaptune.models import create_model, default_sigma, get_model_info
        from lyaptune.optim import create_optimizer, create_schedule, get_optimizer_info, get_schedule_info

        self.config = c = config
        # fail on a bad name before any data is loaded
        get_dataset_info(c.dataset), get_model_info(c.model)
        get_optimizer_info(c.optimizer), get_schedule_info(c.schedule)
        self.device = resolve_device(c.device)
        self.data = data or load_task_data(c, self.device)
        torch.manual_seed(c.seed)
        self.gen = torch.Generator(device="cpu").manual_seed(c.seed)
        self.noise_gen = (
            torch.Generator(device=self.device).manual_seed(c.seed + 1) if c.grad_noise > 0 else None
        )

        def build() -> nn.Module:
            return create_model(
                c.model,
                input_shape=tuple(self.data.input_shape),
                num_classes=self.data.num_classes,
                init=c.init,
                generator=torch.Generator().manual_seed(c.seed),
                **dict(c.model_args),
            ).to(self.device)

        self.model = build()
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.loss_fn = F.cross_entropy
        train = self.data.train
        n_train = len(train)
        self.full_batch = c.batch_size == "full" or int(c.batch_size) >= n_train
        self.batch_size = None if self.full_batch else int(c.batch_size)
        self.steps_per_epoch = 1 if self.full_batch else math.ceil(n_train / self.batch_size)
        self.total_steps = c.epochs * self.steps_per_epoch
        self.fused_eval = (
            self.full_batch and train.x is not None and not _has_mode_dependent_layers(self.model)
        )
        self.info: dict[str, Any] = {
            "num_params": sum(p.numel() for p in self.params),
            "device": str(self.device),
            "steps_per_epoch": self.steps_per_epoch,
            "total_steps": self.total_steps,
            "dataset_info": dict(self.data.info),
            "normalization": self.data.normalization,
        }

        # L(w0): the training loss at the initial weights, eval mode, whole training set.
        self.model.eval()
        l0, _, _ = full_loss(self.model, self.loss_fn, self._train_data(), c.eval_chunk_size)
        self.info["initial_loss"] = float(l0)

        opt_args = dict(c.optimizer_args)
        sched_args = dict(c.schedule_args)
        if get_schedule_info(c.schedule).needs_lipschitz:
            alpha = self._derive_step_size(build, default_sigma(c.model), sched_args.pop("multiplier", 1.0))
            opt_args["lr"] = alpha
            sched_args["lr"] = alpha
        self.optimizer = create_optimizer(c.optimizer, self.params, **opt_args)
        self.schedule = create_schedule(
            c.schedule,
            self.optimizer,
            epochs=c.epochs,
            steps_per_epoch=self.steps_per_epoch,
            per=c.schedule_per,
            **sched_args,
        )
        self.epoch = 0
        self.step = 0
        self.records: list[dict[str, Any]] = []
        self.prev_loss = self.info["initial_loss"]
        self.elapsed = 0.0

    def _train_data(self) -> Any:
        train = self.data.train
        if train.x is not None:
            return (train.x, train.y)
        from lyaptune.data import iterate_batches

        return iterate_batches(train, self.config.eval_chunk_size or 1024, shuffle=False, device=self.device)

    def _derive_step_size(
        self, build: Callable[[], nn.Module], sigma_default: float, multiplier: float
    ) -> float:
        from lyaptune.lipschitz import derived_step_size, estimate_lipschitz

        opts = dict(self.config.lipschitz)
        if opts.get("weights", "normal") == "normal" and opts.get("sigma") is None:
            opts["sigma"] = sigma_default
        opts.setdefault("seed", self.config.seed)
        train = self.data.train
        data = (train.x, train.y) if train.x is not None else self._train_data()
        est = estimate_lipschitz(build, self.loss_fn, data, chunk_size=self.config.eval_chunk_size, **opts)
        alpha = derived_step_size(
            self.info["initial_loss"], est.k_hat, self.total_steps, multiplier=multiplier
        )
        self.info.update(
            k_hat=est.k_hat,
            k_hat_values=list(est.values),
            k_hat_iterations=list(est.iterations),
            k_hat_skipped=[list(s) for s in est.skipped],
            lipschitz_weights=est.weights,
            lipschitz_sigma=est.sigma,
            lipschitz_samples=est.samples,
            lipschitz_batch=est.batch,
            lipschitz_seconds=est.seconds,
            derived_multiplier=float(multiplier),
            derived_lr=alpha,
        )
        return alpha

    # -- evaluation -------------------------------------------------------------------------------
    def _eval_split(self, split: Any) -> tuple[torch.Tensor, torch.Tensor] | None:
        if split is None or len(split) == 0:
            return None
        if split.x is not None:
            data = (split.x, split.y)
        else:
            from lyaptune.data import iterate_batches

            data = iterate_batches(
                split, self.config.eval_chunk_size or 1024, shuffle=False, device=self.device
            )
        loss, correct, n = full_loss(self.model, self.loss_fn, data, self.config.eval_chunk_size)
        return loss, correct.double() / n

    def _measure(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Full-training-set loss, accuracy and gradient norm at the current weights (eval mode)."""
        self.model.eval()
        loss, grads, correct = full_loss_and_grad(
            self.model, self.loss_fn, self._train_data(), self.config.eval_chunk_size
        )
        return loss, correct.double() / len(self.data.train), _grad_norm(grads)

    # -- training ---------------------------------------------------------------------------------
    def _apply(self, grads: list[torch.Tensor]) -> None:
        if self.noise_gen is not None:
            for g in grads:
                noise = torch.randn(g.shape, generator=self.noise_gen, device=g.device, dtype=g.dtype)
                g.add_(noise, alpha=self.config.grad_noise)
        for p, g in zip(self.params, grads):
            p.grad = g
        self.optimizer.step()
        self.step += 1
        self.schedule.step_end()

    def _train_epoch(self, pending: tuple[float, int, float] | None, on_epoch) -> tuple[str, str] | None:
        """One epoch of updates.

        In the fused full-batch path (no batch-norm or dropout, so train and eval mode agree) the
        full-set loss and gradient computed for the step are also the measurement that ends the
        previous epoch: the ``pending`` record is emitted from them, before the weights move.
        """
        if self.full_batch:
            self.model.train(not self.fused_eval)
            loss, grads, correct = full_loss_and_grad(
                self.model, self.loss_fn, self._train_data(), self.config.eval_chunk_size
            )
            if self.fused_eval and pending is not None:
                measured = (loss, correct.double() / len(self.data.train), _grad_norm(grads))
                status = self._emit(pending, measured, on_epoch)
                if status:
                    return status
            self._apply(grads)
            return None
        from lyaptune.data import iterate_batches

        self.model.train()
        batches = iterate_batches(
            self.data.train, self.batch_size, shuffle=True, generator=self.gen, device=self.device
        )
        for xb, yb in batches:
            loss = self.loss_fn(self.model(xb), yb)
            self._apply(list(torch.autograd.grad(loss, self.params)))
        return None

    def _record(self, pending: tuple[float, int, float], measured) -> dict[str, Any]:
        lr, epoch, elapsed = pending
        self.model.eval()
        val = self._eval_split(self.data.val)
        test = self._eval_split(self.data.test)
        nan = torch.tensor(float("nan"), dtype=torch.float64)
        vals = [*measured, *(val or (nan, nan)), *(test or (nan, nan))]
        # one host synchronisation per epoch
        values = tuple(torch.stack([v.detach().double().cpu() for v in vals]).tolist())
        rec = make_record(
            epoch=epoch,
            lr=lr,
            values=values,
            prev_loss=self.prev_loss,
            step=epoch * self.steps_per_epoch,
            elapsed=elapsed,
            optimizer=self.optimizer,
        )
        self.prev_loss = rec["train_loss"]
        return rec

    def _emit(self, pending, measured, on_epoch) -> tuple[str, str] | None:
        rec = self._record(pending, measured)
        self.records.append(rec)
        if on_epoch is not None:
            on_epoch(dict(rec))
        if not (math.isfinite(rec["train_loss"]) and math.isfinite(rec["grad_norm"])):
            return "diverged", f"non-finite training loss or gradient at epoch {rec['epoch']}"
        return None

    def run(
        self,
        on_epoch: Callable[[dict[str, Any]], None] | None = None,
        on_checkpoint: Callable[[dict[str, Any]], None] | None = None,
        checkpoint_every: int = 0,
    ) -> tuple[str, str]:
        c = self.config
        pending: tuple[float, int, float] | None = None  # an epoch awaiting its measurement
        t0 = time.perf_counter() - self.elapsed
        while self.epoch < c.epochs:
            lr = current_lr(self.optimizer)
            status = self._train_epoch(pending, on_epoch)
            if status:
                return status
            self.epoch += 1
            self.elapsed = time.perf_counter() - t0
            epoch_end = getattr(self.optimizer, "epoch_end", None)
            if callable(epoch_end):
                epoch_end()
            self.schedule.epoch_end()
            pending = (lr, self.epoch, self.elapsed)
            checkpoint_due = bool(on_checkpoint and checkpoint_every and self.epoch % checkpoint_every == 0)
            if not self.fused_eval or checkpoint_due or self.epoch == c.epochs:
                status = self._emit(pending, self._measure(), on_epoch)
                pending = None
                if status:
                    return status
            if checkpoint_due:
                on_checkpoint(self.state_dict())
        return "completed", ""

    # -- checkpoints ------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue this trial exactly (tensors and plain Python values only)."""
        return {
            "model": copy.deepcopy(self.model.state_dict()),
            "optimizer": copy.deepcopy(self.optimizer.state_dict()),
            "schedule": self.schedule.scheduler.state_dict(),
            "gen": self.gen.get_state(),
            "noise_gen": self.noise_gen.get_state() if self.noise_gen is not None else None,
            "torch_rng": torch.get_rng_state(),
            "epoch": self.epoch,
            "step": self.step,
            "elapsed": self.elapsed,
            "prev_loss": self.prev_loss,
            "records": [dict(r) for r in self.records],
            "info": dict(self.info),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.scheduler.load_state_dict(state["schedule"])
        self.gen.set_state(state["gen"])
        if self.noise_gen is not None and state["noise_gen"] is not None:
            self.noise_gen.set_state(state["noise_gen"])
        torch.set_rng_state(state["torch_rng"])
        self.epoch = int(state["epoch"])
        self.step = int(state["step"])
        self.elapsed = float(state["elapsed"])
        self.prev_loss = float(state["prev_loss"])
        self.records = [dict(r) for r in state["records"]]
        self.info.update(state["info"])


def run_trial(
    config: TrialConfig,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
    *,
    data: Any = None,
    resume_from: Mapping[str, Any] | None = None,
    on_checkpoint: Callable[[dict[str, Any]], None] | None = None,
    checkpoint_every: int = 0,
) -> TrialResult:
    """Train one configuration and record every epoch.

    Args:
      config: the trial.
      on_epoch: called with each epoch's record (a copy) right after it is measured.
      data: an already loaded :class:`lyaptune.data.DataSplits` to reuse (else loaded, cached).
      resume_from: a :meth:`state_dict` from ``on_checkpoint`` to continue from.
      on_checkpoint: called with the trial state every ``checkpoint_every`` epochs.
      checkpoint_every: epochs between checkpoints (0 = never).

    Returns:
      A :class:`TrialResult`. A non-finite loss ends the run with status ``diverged`` (the records up to
      and including that epoch are kept); it does not raise.

    References:
      papers/003 Section 5 (metrics per epoch: gradient norm, training loss, test accuracy).
    """
    t0 = time.perf_counter()
    trial = _Trial(config, data=data)
    if resume_from is not None:
        trial.load_state_dict(resume_from)
    status, message = trial.run(on_epoch, on_checkpoint, checkpoint_every)
    return TrialResult(
        status=status,
        records=trial.records,
        info=trial.info,
        wall_s=time.perf_counter() - t0,
        message=message,
    )
