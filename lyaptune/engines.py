"""Training engines: the few operations in which one model and a vmapped population differ.

:func:`lyaptune.loop.run_epochs` owns everything else (epochs, the fused full-batch measurement,
records, divergence, checkpoints, the optimizers' ``epoch_end``). An engine trains ``P >= 1``
*members*; each member is one :class:`~lyaptune.train.TrialConfig` with its own optimizer, schedule and
gradient-noise generator (:class:`Member`). The engine supplies:

* ``train_loss_and_grads(train_mode)``: every member's mean loss, accuracy and gradient over the whole
  training set (one forward and one backward pass per chunk);
* ``minibatch_grads(epoch)``: the gradients of one epoch of mini-batches (single model only), at the
  batch size in force in that epoch (:func:`lyaptune.batching.batch_size_at`: fixed, or growing);
* ``steps_through(epochs)`` / ``record_extras(epoch)``: optimizer steps taken in the first ``epochs``
  epochs, and per-epoch record fields that depend on the engine (the batch size of a growing batch);
* ``evaluate(split)``: every member's mean loss and accuracy on a split, without gradients;
* ``member_grads(grads, i)`` / ``grad_norms(grads)``: member ``i``'s share of the gradients and all
  members' global L2 norms;
* ``weights_state()`` / ``load_weights_state()``: the weights and batch-order RNG of a checkpoint.

:class:`SingleModel` is one ``nn.Module``; :class:`VmappedPopulation` stacks P models of one small
architecture (``torch.func.stack_module_state``) and computes all members' losses and gradients in one
``vmap`` of ``functional_call``. Member ``i`` of a population follows its configuration trained alone
to float tolerance (batched matmuls round differently).
"""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap
from torch.nn import functional as F

from lyaptune._fullbatch import full_loss, full_loss_and_grad, iter_chunks
from lyaptune.batching import batch_size_at, epoch_steps, is_growing
from lyaptune.config import PER_RUN_TASK_FIELDS, TaskConfig, TrialConfig
from lyaptune.device import load_task_data, resolve_device
from lyaptune.errors import ConfigError

if TYPE_CHECKING:
    from lyaptune.optim.schedules import Schedule

__all__ = [
    "Member",
    "Engine",
    "SingleModel",
    "VmappedPopulation",
    "Grads",
    "SHARED_FIELDS",
    "population_incompatibility",
]

#: An engine's gradients: a list of tensors (single model) or of stacked ``[P, ...]`` tensors.
Grads = list[torch.Tensor]


@dataclass
class Member:
    """One run inside an engine: its configuration and the state that steps its weights.

    Attributes:
      config: the run's configuration.
      names: parameter names, in the order of ``params``.
      params: the tensors its optimizer updates (views into the stacked tensors for a population).
      optimizer, schedule: built by the registries exactly as for a run alone.
      noise: the generator of its gradient noise (``None`` without ``grad_noise``).
      info: what the run measured besides its records (``initial_loss``, ``num_params``, ...).
    """

    config: TrialConfig
    names: list[str]
    params: list[torch.Tensor]
    optimizer: torch.optim.Optimizer
    schedule: Schedule
    noise: torch.Generator | None
    info: dict[str, Any] = field(default_factory=dict)

    def current_lr(self) -> float:
        """The first parameter group's step size (a float even when the optimizer keeps a tensor)."""
        lr = self.optimizer.param_groups[0]["lr"]
        return float(lr.item()) if isinstance(lr, torch.Tensor) else float(lr)


def _build_member(
    config: TrialConfig,
    names: list[str],
    params: list[torch.Tensor],
    *,
    device: torch.device,
    steps_per_epoch: int,
    info: dict[str, Any],
    opt_args: Mapping[str, Any] | None = None,
    sched_args: Mapping[str, Any] | None = None,
) -> Member:
    from lyaptune.optim import create_optimizer, create_schedule

    c = config
    optimizer = create_optimizer(
        c.optimizer, params, **dict(c.optimizer_args if opt_args is None else opt_args)
    )
    schedule = create_schedule(
        c.schedule,
        optimizer,
        epochs=c.epochs,
        steps_per_epoch=steps_per_epoch,
        per=c.schedule_per,
        **dict(c.schedule_args if sched_args is None else sched_args),
    )
    noise = torch.Generator(device=device).manual_seed(c.seed + 1) if c.grad_noise > 0 else None
    return Member(c, names, params, optimizer, schedule, noise, info)


def build_model(config: TrialConfig, data: Any, device: torch.device) -> nn.Module:
    """The configuration's model with its seeded initial weights (seed ``config.seed``), on ``device``.

    The one place a run's model is built: both engines and ``lyaptune lipschitz`` call it.
    """
    from lyaptune.models import create_model

    return create_model(
        config.model,
        input_shape=tuple(data.input_shape),
        num_classes=data.num_classes,
        init=config.init,
        generator=torch.Generator().manual_seed(config.seed),
        **dict(config.model_args),
    ).to(device)


def _base_info(
    data: Any, device: torch.device, num_params: int, steps_per_epoch: int | None, total_steps: int
) -> dict:
    return {
        "num_params": num_params,
        "device": str(device),
        "steps_per_epoch": steps_per_epoch,
        "total_steps": total_steps,
        "dataset_info": dict(data.info),
        "normalization": data.normalization,
    }


def _has_mode_dependent_layers(model: nn.Module) -> bool:
    mode_types = (nn.modules.batchnorm._BatchNorm, nn.Dropout, nn.modules.dropout._DropoutNd)
    return any(isinstance(m, mode_types) for m in model.modules())


class Engine(ABC):
    """What :func:`lyaptune.loop.run_epochs` needs from a way of training ``P`` runs.

    Attributes:
      members: the runs, in order (``P = len(members)``).
      data: the task's :class:`lyaptune.data.DataSplits`.
      device: where the weights live.
      epochs: epochs every member trains.
      full_batch: one update per epoch on the whole training set.
      steps_per_epoch: optimizer steps per epoch (of the first epoch when the batch grows: then
        :meth:`steps_through` counts them).
      fused: the full-batch step's loss and gradient double as the measurement of the previous
        epoch's end (true when train and eval mode agree: no batch-norm, no dropout), so a full-batch
        epoch costs one forward and one backward pass.
    """

    members: list[Member]
    data: Any
    device: torch.device
    epochs: int
    full_batch: bool
    steps_per_epoch: int
    fused: bool

    @property
    def size(self) -> int:
        """``P``, the number of members."""
        return len(self.members)

    @abstractmethod
    def train_loss_and_grads(self, train_mode: bool) -> tuple[torch.Tensor, torch.Tensor, Grads]:
        """Every member's mean loss ``[P]``, accuracy ``[P]`` and gradient over the whole training set.

        Args:
          train_mode: put the model in train mode (a full-batch step) or eval mode (a measurement).
        """

    @abstractmethod
    def evaluate(self, split: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """Every member's mean loss ``[P]`` and accuracy ``[P]`` on ``split`` (eval mode, NaN if empty)."""

    @abstractmethod
    def member_grads(self, grads: Grads, i: int) -> list[torch.Tensor]:
        """Member ``i``'s gradient tensors, in the order of its ``params``."""

    @abstractmethod
    def grad_norms(self, grads: Grads) -> torch.Tensor:
        """Every member's global L2 gradient norm ``[P]``."""

    @abstractmethod
    def weights_state(self) -> dict[str, Any]:
        """The weights (and the batch-order generator) for a checkpoint."""

    @abstractmethod
    def load_weights_state(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`weights_state`."""

    def minibatch_grads(self, epoch: int) -> Iterator[Grads]:
        """The gradients of epoch ``epoch``'s mini-batch updates (``epoch`` counted from 0), one per
        batch, each computed after the previous one was applied."""
        raise ValueError(f"{type(self).__name__} trains full batch only")

    def steps_through(self, epochs: int) -> int:
        """Optimizer steps in the first ``epochs`` epochs (``epochs x steps_per_epoch`` unless the batch
        grows)."""
        return epochs * self.steps_per_epoch

    def record_extras(self, epoch: int) -> dict[str, float]:
        """Extra record fields of epoch ``epoch`` (counted from 0) shared by every member (none by
        default)."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        """Weights, every member's optimizer, schedule and noise generator, and torch's RNG."""
        return {
            "weights": self.weights_state(),
            "members": [
                {
                    "optimizer": copy.deepcopy(m.optimizer.state_dict()),
                    "schedule": m.schedule.state_dict(),
                    "noise": m.noise.get_state() if m.noise is not None else None,
                }
                for m in self.members
            ],
            "torch_rng": torch.get_rng_state(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` (optimizer before schedule: building the schedule set the lr)."""
        self.load_weights_state(state["weights"])
        for m, s in zip(self.members, state["members"], strict=True):
            m.optimizer.load_state_dict(s["optimizer"])
            m.schedule.load_state_dict(s["schedule"])
            if m.noise is not None and s["noise"] is not None:
                m.noise.set_state(s["noise"])
        torch.set_rng_state(state["torch_rng"])


def _grad_norm(grads: list[torch.Tensor]) -> torch.Tensor:
    if not grads:
        return torch.zeros(())
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))


class SingleModel(Engine):
    """One ``nn.Module`` trained by one configuration (any model, full batch or mini-batch).

    Args:
      config: the run.
      data: an already loaded :class:`lyaptune.data.DataSplits` (else loaded, cached per process).
      progress: called with a line per step of the K_hat estimate of ``derived-constant``.

    Raises:
      ConfigError: an unknown dataset, model, optimizer or schedule name (before any data is loaded).
    """

    def __init__(
        self, config: TrialConfig, data: Any = None, progress: Callable[[str], None] | None = None
    ) -> None:
        from lyaptune.data import get_dataset_info
        from lyaptune.models import get_model_info
        from lyaptune.optim import get_optimizer_info, get_schedule_info

        c = self.config = config
        # fail on a bad name before any data is loaded
        get_dataset_info(c.dataset), get_model_info(c.model)
        get_optimizer_info(c.optimizer), get_schedule_info(c.schedule)
        self.device = resolve_device(c.device)
        self.data = data or load_task_data(c, self.device)
        torch.manual_seed(c.seed)
        self.gen = torch.Generator(device="cpu").manual_seed(c.seed)
        self.model = build_model(c, self.data, self.device)
        names, params = zip(*[(n, p) for n, p in self.model.named_parameters() if p.requires_grad])
        self.loss_fn = F.cross_entropy
        n_train = len(self.data.train)
        self.epochs = c.epochs
        # a growing batch (papers/003 Section 5.3) trains every epoch as mini-batches, an epoch whose
        # batch is the whole training set as one batch
        self.growing = is_growing(c.batch_size)
        if self.growing and c.schedule_per != "epoch":
            raise ConfigError(
                f"schedule_per: a growing batch_size needs schedule_per 'epoch' (a per-step schedule "
                f"assumes the same number of steps in every epoch); got {c.schedule_per!r}"
            )
        self.full_batch = not self.growing and (c.batch_size == "full" or int(c.batch_size) >= n_train)
        self.batch_size = None if self.full_batch or self.growing else int(c.batch_size)
        self.epoch_steps = epoch_steps(c.batch_size, c.epochs, n_train)
        self.steps_per_epoch = self.epoch_steps[0]
        self.total_steps = sum(self.epoch_steps)
        self.fused = (
            self.full_batch and self.data.train.x is not None and not _has_mode_dependent_layers(self.model)
        )
        info = _base_info(
            self.data,
            self.device,
            sum(p.numel() for p in params),
            None if self.growing else self.steps_per_epoch,
            self.total_steps,
        )
        if self.growing:
            info["epoch_steps"] = list(self.epoch_steps)
            info["epoch_batch_sizes"] = [self._examples_per_batch(e) for e in range(c.epochs)]
        # L(w0): the training loss at the initial weights, eval mode, whole training set.
        self.members = []
        info["initial_loss"] = float(self._eval(self.data.train)[0])

        opt_args = dict(c.optimizer_args)
        sched_args = dict(c.schedule_args)
        if get_schedule_info(c.schedule).needs_lipschitz:
            multiplier = sched_args.pop("multiplier", 1.0)
            alpha = self._derive_step_size(info, multiplier, progress)
            opt_args["lr"] = alpha
            sched_args["lr"] = alpha
        self.members = [
            _build_member(
                c,
                list(names),
                list(params),
                device=self.device,
                steps_per_epoch=self.steps_per_epoch,
                info=info,
                opt_args=opt_args,
                sched_args=sched_args,
            )
        ]

    def _data_of(self, split: Any) -> Any:
        if split.x is not None:
            return (split.x, split.y)
        from lyaptune.data import iterate_batches

        return iterate_batches(split, self.config.eval_chunk_size or 1024, shuffle=False, device=self.device)

    def _derive_step_size(
        self,
        info: dict[str, Any],
        multiplier: float,
        progress: Callable[[str], None] | None,
    ) -> float:
        """alpha = sqrt(2 L(w0) / (K_hat T)) (papers/003 Theorem 4, METHODS.md section 4)."""
        from lyaptune.lipschitz import derived_step_size, estimate_lipschitz
        from lyaptune.models import lipschitz_sigma

        c = self.config
        opts = dict(c.lipschitz)
        sigma = lipschitz_sigma(c.model, opts.get("weights", "normal"), opts.get("sigma"))
        if sigma is not None:
            opts["sigma"] = sigma
        opts.setdefault("seed", c.seed)
        samples = int(opts.get("samples", 10))

        def on_sample(done: Any) -> None:  # a lyaptune.lipschitz.LipschitzProgress
            if progress is not None:
                progress(done.line())

        if progress is not None:
            what = opts.get("weights", "normal")
            if what == "normal":
                what += f"(0, sigma={opts['sigma']:g})"
            progress(f"estimating K_hat (papers/003 Algorithm 2): {samples} weight samples from {what}")

        def build() -> nn.Module:
            return build_model(c, self.data, self.device)

        train = self.data.train
        data = (train.x, train.y) if train.x is not None else self._data_of(train)
        est = estimate_lipschitz(
            build, self.loss_fn, data, chunk_size=c.eval_chunk_size, progress=on_sample, **opts
        )
        total_steps = self.total_steps
        alpha = derived_step_size(info["initial_loss"], est.k_hat, total_steps, multiplier=multiplier)
        info.update(
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
        if progress is not None:
            progress(
                f"K_hat = {est.k_hat:.6g} in {est.seconds:.1f} s; derived step alpha = {alpha:.6g} "
                f"(L(w0) = {info['initial_loss']:.6g}, T = {total_steps})"
            )
        return alpha

    def _eval(self, split: Any) -> tuple[torch.Tensor, torch.Tensor]:
        self.model.eval()
        loss, correct, n = full_loss(
            self.model, self.loss_fn, self._data_of(split), self.config.eval_chunk_size
        )
        return loss.reshape(1), (correct.double() / n).reshape(1)

    def evaluate(self, split: Any) -> tuple[torch.Tensor, torch.Tensor]:
        if split is None or len(split) == 0:
            nan = torch.full((1,), float("nan"), dtype=torch.float64, device=self.device)
            return nan, nan
        return self._eval(split)

    def train_loss_and_grads(self, train_mode: bool) -> tuple[torch.Tensor, torch.Tensor, Grads]:
        self.model.train(train_mode)
        loss, grads, correct = full_loss_and_grad(
            self.model, self.loss_fn, self._data_of(self.data.train), self.config.eval_chunk_size
        )
        return loss.reshape(1), (correct.double() / len(self.data.train)).reshape(1), grads

    def _examples_per_batch(self, epoch: int) -> int:
        """The batch size in force in ``epoch`` as a number of examples (the training set if full)."""
        n_train = len(self.data.train)
        size = batch_size_at(self.config.batch_size, epoch)
        return n_train if size == "full" else min(int(size), n_train)

    def steps_through(self, epochs: int) -> int:
        return sum(self.epoch_steps[:epochs])

    def record_extras(self, epoch: int) -> dict[str, float]:
        if not self.growing:
            return {}
        return {"batch_size": float(self._examples_per_batch(epoch))}

    def minibatch_grads(self, epoch: int) -> Iterator[Grads]:
        from lyaptune.data import iterate_batches

        self.model.train()
        params = self.members[0].params
        size: int | None = self.batch_size
        if self.growing:
            b = self._examples_per_batch(epoch)
            # the whole training set as one batch: unshuffled, as a full batch's order does not matter
            size = None if b >= len(self.data.train) else b
        batches = iterate_batches(
            self.data.train, size, shuffle=size is not None, generator=self.gen, device=self.device
        )
        for xb, yb in batches:
            loss = self.loss_fn(self.model(xb), yb)
            yield list(torch.autograd.grad(loss, params))

    def member_grads(self, grads: Grads, i: int) -> list[torch.Tensor]:
        return grads

    def grad_norms(self, grads: Grads) -> torch.Tensor:
        return _grad_norm(grads).reshape(1)

    def weights_state(self) -> dict[str, Any]:
        return {"model": copy.deepcopy(self.model.state_dict()), "gen": self.gen.get_state()}

    def load_weights_state(self, state: Mapping[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.gen.set_state(state["gen"])


SHARED_FIELDS: tuple[str, ...] = (
    *(name for name in TaskConfig.task_field_names() if name not in PER_RUN_TASK_FIELDS),
    "schedule_per",
)
"""TrialConfig fields every member of a population must share: the task fields of
:class:`~lyaptune.config.TaskConfig` but :data:`~lyaptune.config.PER_RUN_TASK_FIELDS`, and when the
schedules advance (members step together)."""


def population_incompatibility(configs: Sequence[TrialConfig]) -> str | None:
    """``None`` if ``configs`` can train as one population, else the reason why not."""
    from lyaptune.models import create_model, is_small
    from lyaptune.optim import get_schedule_info

    if not configs:
        return "no configurations"
    first = configs[0]
    for c in configs[1:]:
        for f in SHARED_FIELDS:
            if getattr(c, f) != getattr(first, f):
                return f"members differ in {f!r}"
    if first.batch_size != "full":
        return "population mode needs full-batch training"
    for c in configs:
        if get_schedule_info(c.schedule).needs_lipschitz:
            return f"schedule {c.schedule!r} needs a per-member Lipschitz estimate"
    from lyaptune.data import get_dataset_info

    info = get_dataset_info(first.dataset)
    shape = tuple(first.dataset_args.get("input_shape", info.input_shape))
    classes = int(first.dataset_args.get("num_classes", info.num_classes))
    with torch.device("meta"):
        probe = create_model(first.model, input_shape=shape, num_classes=classes, **dict(first.model_args))
    if not is_small(probe):
        return f"model {first.model!r} is not small (batch-norm, dropout or too many parameters)"
    return None


class VmappedPopulation(Engine):
    """P configurations of one small architecture trained at once, full batch, in one process.

    The P models' parameters are stacked (``torch.func.stack_module_state``); one ``vmap`` of
    ``functional_call`` over the stacked parameters gives every member's loss and gradient. Each
    member keeps its own optimizer and schedule, built by the registries as for a run alone and
    stepping views of the stacked tensors in place, so any optimizer and any per-member
    hyperparameters work.

    Args:
      configs: configurations that :func:`population_incompatibility` accepts.
      data: an already loaded dataset to reuse.

    Raises:
      ValueError: the configurations cannot train as one population (the reason is given).
    """

    def __init__(self, configs: Sequence[TrialConfig], data: Any = None) -> None:
        reason = population_incompatibility(configs)
        if reason:
            raise ValueError(f"these configurations cannot train as a population: {reason}")
        c0 = configs[0]
        self.device = resolve_device(c0.device)
        self.data = data or load_task_data(c0, self.device)
        models = []
        for c in configs:
            torch.manual_seed(c.seed)
            models.append(build_model(c, self.data, self.device))
        params, buffers = stack_module_state(models)
        self.base = copy.deepcopy(models[0]).to("meta").eval()
        self.names = [n for n, _ in models[0].named_parameters()]
        self.stacked = {n: params[n].detach() for n in self.names}
        self.buffers = {n: b.detach() for n, b in buffers.items()}
        self.chunk = c0.eval_chunk_size
        self.epochs = c0.epochs
        self.full_batch = True
        self.steps_per_epoch = 1
        self.fused = True
        n_params = sum(p.numel() for p in models[0].parameters())
        self.members = []
        for i, c in enumerate(configs):
            info = _base_info(self.data, self.device, n_params, 1, c.epochs)
            info["population_size"] = len(configs)
            views = [self.stacked[n][i] for n in self.names]
            self.members.append(
                _build_member(c, list(self.names), views, device=self.device, steps_per_epoch=1, info=info)
            )
        initial, _ = self.evaluate(self.data.train)
        for m, l0 in zip(self.members, initial.double().cpu().tolist()):
            m.info["initial_loss"] = l0

    def _forward(self, leaves: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        def f(p: dict[str, torch.Tensor], b: dict[str, torch.Tensor], xx: torch.Tensor) -> torch.Tensor:
            return functional_call(self.base, (p, b), (xx,))

        return vmap(f, in_dims=(0, 0, None))(leaves, self.buffers, x)

    def _per_member(self, out: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        P, N, C = out.shape
        losses = F.cross_entropy(out.reshape(P * N, C), y.repeat(P), reduction="none").view(P, N).mean(1)
        correct = (out.detach().argmax(-1) == y).sum(1)
        return losses, correct

    def train_loss_and_grads(self, train_mode: bool) -> tuple[torch.Tensor, torch.Tensor, Grads]:
        # no batch-norm or dropout in a population (is_small): train and eval mode agree
        train = self.data.train
        n = len(train)
        leaves = {k: v.detach().requires_grad_() for k, v in self.stacked.items()}
        total = torch.zeros(self.size, device=self.device)
        correct = torch.zeros(self.size, device=self.device, dtype=torch.long)
        grads = [torch.zeros_like(v) for v in leaves.values()]
        for xb, yb in iter_chunks((train.x, train.y), self.chunk):
            losses, hit = self._per_member(self._forward(leaves, xb), yb)
            w = xb.shape[0] / n
            gs = torch.autograd.grad(losses.sum() * w, list(leaves.values()))
            for acc, g in zip(grads, gs):
                acc.add_(g)
            total += losses.detach() * w
            correct += hit
        return total, correct.double() / n, grads

    @torch.no_grad()
    def evaluate(self, split: Any) -> tuple[torch.Tensor, torch.Tensor]:
        if split is None or len(split) == 0:
            nan = torch.full((self.size,), float("nan"), dtype=torch.float64, device=self.device)
            return nan, nan
        total = torch.zeros(self.size, device=self.device)
        correct = torch.zeros(self.size, device=self.device, dtype=torch.long)
        n = len(split)
        for xb, yb in iter_chunks((split.x, split.y), self.chunk):
            losses, hit = self._per_member(self._forward(self.stacked, xb), yb)
            total += losses * (xb.shape[0] / n)
            correct += hit
        return total, correct.double() / n

    def member_grads(self, grads: Grads, i: int) -> list[torch.Tensor]:
        return [g[i] for g in grads]

    def grad_norms(self, grads: Grads) -> torch.Tensor:
        return torch.sqrt(sum(g.flatten(1).pow(2).sum(1) for g in grads))

    def weights_state(self) -> dict[str, Any]:
        return {"stacked": {n: t.clone() for n, t in self.stacked.items()}}

    @torch.no_grad()
    def load_weights_state(self, state: Mapping[str, Any]) -> None:
        # in place: the members' optimizers hold views of these tensors
        for n, t in state["stacked"].items():
            self.stacked[n].copy_(t)
