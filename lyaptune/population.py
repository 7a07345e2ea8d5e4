"""Population mode: train P configurations of one small architecture at once, in one process.

The P models' parameters are stacked (``torch.func.stack_module_state``) and one forward/backward pass
over the stacked parameters (``vmap`` of ``functional_call``) yields every member's full-batch loss and
gradient. Each member keeps its *own* optimizer and schedule, built by the same registry as a single
trial and stepping views of the stacked tensors in place, so any optimizer (ours or a baseline) and
any per-member hyperparameters work, and member ``i`` follows the trajectory of its configuration
trained alone (to float tolerance: the batched matmuls round differently).

Eligible: full-batch training of a model without batch-norm or dropout (:func:`lyaptune.models.is_small`),
every member sharing the task (dataset, model, epochs, device, ...) and no schedule that needs a
Lipschitz estimate. :func:`population_incompatibility` says why a set of configurations is not.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch.func import functional_call, stack_module_state, vmap
from torch.nn import functional as F

from lyaptune._fullbatch import iter_chunks
from lyaptune.train import TrialConfig, TrialResult, current_lr, load_task_data, make_record, resolve_device

__all__ = ["run_population", "population_incompatibility", "SHARED_FIELDS"]

#: TrialConfig fields every member of a population must share
SHARED_FIELDS = (
    "dataset",
    "dataset_args",
    "data_root",
    "download",
    "validation_fraction",
    "data_seed",
    "model",
    "model_args",
    "init",
    "epochs",
    "batch_size",
    "device",
    "eval_chunk_size",
    "schedule_per",
)


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


class _Population:
    def __init__(self, configs: Sequence[TrialConfig], data: Any = None) -> None:
        from lyaptune.models import create_model
        from lyaptune.optim import create_optimizer, create_schedule

        reason = population_incompatibility(configs)
        if reason:
            raise ValueError(f"these configurations cannot train as a population: {reason}")
        self.configs = list(configs)
        c0 = configs[0]
        self.device = resolve_device(c0.device)
        self.data = data or load_task_data(c0, self.device)
        models = []
        for c in configs:
            torch.manual_seed(c.seed)
            models.append(
                create_model(
                    c.model,
                    input_shape=tuple(self.data.input_shape),
                    num_classes=self.data.num_classes,
                    init=c.init,
                    generator=torch.Generator().manual_seed(c.seed),
                    **dict(c.model_args),
                ).to(self.device)
            )
        params, buffers = stack_module_state(models)
        self.base = copy.deepcopy(models[0]).to("meta").eval()
        self.names = [n for n, _ in models[0].named_parameters()]
        self.stacked = {n: params[n].detach() for n in self.names}
        self.buffers = {n: b.detach() for n, b in buffers.items()}
        self.P = len(configs)
        self.steps_per_epoch = 1
        self.epochs = c0.epochs
        self.chunk = c0.eval_chunk_size
        self.optimizers, self.schedules, self.noise = [], [], []
        for i, c in enumerate(configs):
            opt = create_optimizer(
                c.optimizer, [self.stacked[n][i] for n in self.names], **dict(c.optimizer_args)
            )
            self.optimizers.append(opt)
            self.schedules.append(
                create_schedule(
                    c.schedule,
                    opt,
                    epochs=c.epochs,
                    steps_per_epoch=1,
                    per=c.schedule_per,
                    **dict(c.schedule_args),
                )
            )
            self.noise.append(
                torch.Generator(device=self.device).manual_seed(c.seed + 1) if c.grad_noise > 0 else None
            )
        n_params = sum(p.numel() for p in models[0].parameters())
        self.infos = [
            {
                "num_params": n_params,
                "device": str(self.device),
                "steps_per_epoch": 1,
                "total_steps": c.epochs,
                "dataset_info": dict(self.data.info),
                "normalization": self.data.normalization,
                "population_size": self.P,
            }
            for c in configs
        ]

    def _forward(self, leaves: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        def f(p, b, xx):
            return functional_call(self.base, (p, b), (xx,))

        return vmap(f, in_dims=(0, 0, None))(leaves, self.buffers, x)

    def _per_member(self, out: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        P, N, C = out.shape
        losses = F.cross_entropy(out.reshape(P * N, C), y.repeat(P), reduction="none").view(P, N).mean(1)
        correct = (out.detach().argmax(-1) == y).sum(1)
        return losses, correct

    def loss_and_grads(self):
        """Per-member mean loss [P], correct count [P] and gradients (stacked) on the training set."""
        train = self.data.train
        n = len(train)
        leaves = {k: v.detach().requires_grad_() for k, v in self.stacked.items()}
        total = torch.zeros(self.P, device=self.device)
        correct = torch.zeros(self.P, device=self.device, dtype=torch.long)
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
            nan = torch.full((self.P,), float("nan"), dtype=torch.float64, device=self.device)
            return nan, nan
        total = torch.zeros(self.P, device=self.device)
        correct = torch.zeros(self.P, device=self.device, dtype=torch.long)
        n = len(split)
        for xb, yb in iter_chunks((split.x, split.y), self.chunk):
            losses, hit = self._per_member(self._forward(self.stacked, xb), yb)
            total += losses * (xb.shape[0] / n)
            correct += hit
        return total, correct.double() / n

    def step(self, grads: list[torch.Tensor], alive: list[bool]) -> None:
        for i, opt in enumerate(self.optimizers):
            if not alive[i]:
                continue
            member = [g[i].clone() for g in grads]
            gen = self.noise[i]
            if gen is not None:
                for g in member:
                    g.add_(
                        torch.randn(g.shape, generator=gen, device=g.device, dtype=g.dtype),
                        alpha=self.configs[i].grad_noise,
                    )
            for p, g in zip(opt.param_groups[0]["params"], member):
                p.grad = g
            opt.step()
            self.schedules[i].step_end()


def _norms(grads: list[torch.Tensor]) -> torch.Tensor:
    return torch.sqrt(sum(g.flatten(1).pow(2).sum(1) for g in grads))


def run_population(
    configs: Sequence[TrialConfig],
    on_epoch: Callable[[int, dict[str, Any]], None] | None = None,
    *,
    data: Any = None,
) -> list[TrialResult]:
    """Train every configuration in ``configs`` at once; results in the same order and form as
    :func:`lyaptune.train.run_trial` would give them one by one.

    Args:
      configs: configurations sharing :data:`SHARED_FIELDS` (they may differ in optimizer, its
        hyperparameters, schedule and parameters, seed and gradient noise).
      on_epoch: called as ``on_epoch(member_index, record)`` after each epoch of each member.
      data: an already loaded dataset to reuse.

    Returns:
      One :class:`TrialResult` per configuration (``wall_s`` is the population's, shared).

    Raises:
      ValueError: the configurations cannot train as one population (the reason is given).
    """
    t0 = time.perf_counter()
    pop = _Population(configs, data)
    P = pop.P
    records: list[list[dict[str, Any]]] = [[] for _ in range(P)]
    status = ["completed"] * P
    messages = [""] * P
    alive = [True] * P

    init_loss, _ = pop.evaluate(pop.data.train)
    prev = init_loss.double().cpu().tolist()
    for i in range(P):
        pop.infos[i]["initial_loss"] = prev[i]

    def emit(pending: tuple[list[float], int, float], measured) -> None:
        lrs, epoch, elapsed = pending
        tl, ta, grads = measured
        vl, va = pop.evaluate(pop.data.val)
        sl, sa = pop.evaluate(pop.data.test)
        table = torch.stack([t.double().cpu() for t in (tl, ta, _norms(grads), vl, va, sl, sa)], 1).tolist()
        for i in range(P):
            if not alive[i]:
                continue
            rec = make_record(
                epoch=epoch,
                lr=lrs[i],
                values=tuple(table[i]),
                prev_loss=prev[i],
                step=epoch,
                elapsed=elapsed,
                optimizer=pop.optimizers[i],
            )
            prev[i] = rec["train_loss"]
            records[i].append(rec)
            if on_epoch is not None:
                on_epoch(i, dict(rec))
            if not (math.isfinite(rec["train_loss"]) and math.isfinite(rec["grad_norm"])):
                alive[i] = False
                status[i] = "diverged"
                messages[i] = f"non-finite training loss or gradient at epoch {epoch}"

    pending = None
    start = time.perf_counter()
    for epoch in range(1, pop.epochs + 1):
        lrs = [current_lr(o) for o in pop.optimizers]
        measured = pop.loss_and_grads()
        if pending is not None:
            emit(pending, measured)
        if not any(alive):
            break
        pop.step(measured[2], alive)
        for i in range(P):
            if alive[i]:
                epoch_end = getattr(pop.optimizers[i], "epoch_end", None)
                if callable(epoch_end):
                    epoch_end()
                pop.schedules[i].epoch_end()
        pending = (lrs, epoch, time.perf_counter() - start)
    if pending is not None and any(alive):
        emit(pending, pop.loss_and_grads())
    wall = time.perf_counter() - t0
    return [
        TrialResult(status=status[i], records=records[i], info=pop.infos[i], wall_s=wall, message=messages[i])
        for i in range(P)
    ]
