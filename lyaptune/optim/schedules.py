"""Step-size schedules (METHODS.md section 5) behind a registry."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from lyaptune._registry import Registry

__all__ = ["SCHEDULES", "Schedule", "ScheduleInfo", "create_schedule", "get_schedule_info", "list_schedules"]


@dataclass(frozen=True)
class ScheduleInfo:
    """Metadata of one registered schedule (being written)."""

    name: str
    build: Callable[..., torch.optim.lr_scheduler.LRScheduler]
    defaults: Mapping[str, Any] = field(default_factory=dict)
    space: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    description: str = ""
    needs_lipschitz: bool = False


@dataclass
class Schedule:
    """A built schedule: the torch scheduler and when it advances."""

    scheduler: torch.optim.lr_scheduler.LRScheduler
    per: str = "epoch"

    def step_end(self) -> None:
        if self.per == "step":
            self.scheduler.step()

    def epoch_end(self) -> None:
        if self.per == "epoch":
            self.scheduler.step()


SCHEDULES: Registry[ScheduleInfo] = Registry("schedule")


def get_schedule_info(name: str) -> ScheduleInfo:
    return SCHEDULES.get(name)


def list_schedules(pattern: str | None = None) -> list[str]:
    return SCHEDULES.names(pattern)


def create_schedule(name: str, optimizer: torch.optim.Optimizer, *, epochs: int, steps_per_epoch: int,
                    per: str = "epoch", **params: Any) -> Schedule:
    info = get_schedule_info(name)
    return Schedule(info.build(optimizer, epochs=epochs, steps_per_epoch=steps_per_epoch, per=per,
                               **{**info.defaults, **params}), per)


def _constant(optimizer, *, epochs, steps_per_epoch, per, **_):
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda e: 1.0)


SCHEDULES.register("constant", ScheduleInfo("constant", _constant))
