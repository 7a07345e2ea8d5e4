"""Step-size schedules (METHODS.md section 5) behind a registry.

Every schedule scales each parameter group's *base* lr (the group's ``initial_lr``, i.e. its lr when
the first scheduler was attached), so optimizers with several groups keep their ratios. ``e`` below is
the schedule's counter in epochs: with ``per="epoch"`` it is the number of completed epochs
(``epoch_end`` calls); with ``per="step"`` the same formulas are evaluated at the fractional epoch
``e = step / steps_per_epoch`` (continuous in epochs), so both granularities describe one curve. ``E``
is the number of epochs of the run.

================  ==================================================  =========================
name              lr used at epoch ``e`` (base lr ``lr``)             rate constants (defaults)
================  ==================================================  =========================
constant          ``lr``                                              -
step              ``lr * gamma ** floor(e / step_size)``              gamma 0.1, step_size by E
linear            ``lr * (1 + (end_factor - 1) * min(e, E) / E)``     end_factor 0.1
exponential       ``lr * gamma ** e``                                 gamma 0.9
one-cycle         torch ``OneCycleLR`` with ``max_lr = lr``           pct_start 0.3, ...
sqrt              ``lr / sqrt(e + 1)``                                -
inverse-time      ``lr / (1 + k * e)``                                k 0.01
exp-decay         ``lr * exp(-k * e)``                                k 0.01
cosine            ``lr * (m + (1 - m) * (1 + cos(pi * e / E)) / 2)``  min_factor m 0.5
cosine-restarts   ``lr * (1 + cos(pi * t_cur / T_i)) / 2``            T_0 10, T_mult 2
derived-constant  ``alpha * multiplier`` for every group              multiplier 1.0
================  ==================================================  =========================

Notes:
  * ``step_size`` of ``step`` is in epochs for both granularities; its default is 10 when E = 20,
    20 when E = 50 and 40 otherwise (the authors' choices, :func:`default_step_size`).
  * ``linear`` and ``cosine`` hold their end value for ``e > E``.
  * ``one-cycle`` counts ``E`` (``per="epoch"``) or ``E * steps_per_epoch`` (``per="step"``) total
    steps. Building it sets the lr to ``max_lr / div_factor`` at once (torch behaviour). It schedules
    the step size only: ``cycle_momentum=False`` by default (METHODS.md section 5; papers/003 compares
    step sizes, so Adam's ``beta1`` stays at its value, 0.9). ``cycle_momentum=True`` (torch's own
    default) is an option: it also cycles the optimizer's ``momentum`` or ``betas[0]`` between
    ``max_momentum`` and ``base_momentum``, and then needs an optimizer with one of them.
  * ``cosine-restarts`` is torch's ``CosineAnnealingWarmRestarts`` (SGDR, Loshchilov & Hutter 2017)
    with ``eta_min = 0``: cycle ``i`` lasts ``T_i = T_0 * T_mult ** i`` epochs, ``t_cur`` counts the
    epochs since the last restart, and the lr jumps back to ``lr`` at every restart. Both are integers
    in epochs (``per="step"`` counts ``T_0 * steps_per_epoch`` steps for the first cycle). It is
    papers/002's "SGD with cosine restarts" baseline.
  * ``derived-constant`` only holds the step size: ``alpha`` (parameter ``lr``) is computed by the
    trainer from :mod:`lyaptune.lipschitz` (METHODS.md section 4). It overwrites every group's lr.
  * Resuming: build the optimizer and the schedule first, then load the optimizer's state and then
    the schedule's (building a scheduler rewrites the groups' lr, as torch warns).

References:
  papers/003 (Appendix C.1, Table 1: the schedulers compared against the derived constant step);
  Smith & Topin 2019 (one-cycle); Loshchilov & Hutter 2017, SGDR (cosine-restarts).
"""

from __future__ import annotations

import difflib
import inspect
import math
import numbers
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import torch
from torch.optim.lr_scheduler import (
    CosineAnnealingWarmRestarts,
    LambdaLR,
    LinearLR,
    LRScheduler,
    OneCycleLR,
    StepLR,
)

from lyaptune._registry import Registry
from lyaptune.errors import ConfigError

__all__ = [
    "PERS",
    "SCHEDULES",
    "Schedule",
    "ScheduleInfo",
    "cosine_factor",
    "create_schedule",
    "default_step_size",
    "exp_decay_factor",
    "get_schedule_info",
    "inverse_time_factor",
    "list_schedules",
    "register_schedule",
    "schedule_parameter_names",
    "sqrt_factor",
]

PERS: tuple[str, ...] = ("epoch", "step")
"""When a schedule advances: once per epoch or once per optimizer step."""

_COMMON = ("epochs", "steps_per_epoch", "per")


# --------------------------------------------------------------------------------------------------
# The rules, as pure functions of the (possibly fractional) epoch e.


def default_step_size(epochs: int) -> int:
    """The authors' ``step_size`` of the ``step`` schedule for a run of ``epochs`` epochs.

    Returns:
      10 if ``epochs == 20``, 20 if ``epochs == 50``, else 40 (papers/003, METHODS.md section 5).
    """
    return {20: 10, 50: 20}.get(epochs, 40)


def sqrt_factor(e: float) -> float:
    """Square-root decay: ``1 / sqrt(e + 1)``."""
    return 1.0 / math.sqrt(e + 1.0)


def inverse_time_factor(e: float, k: float) -> float:
    """Inverse-time decay: ``1 / (1 + k * e)``."""
    return 1.0 / (1.0 + k * e)


def exp_decay_factor(e: float, k: float) -> float:
    """Exponential decay in continuous form: ``exp(-k * e)``."""
    return math.exp(-k * e)


def cosine_factor(e: float, epochs: int, min_factor: float = 0.5) -> float:
    """Half-cosine from 1 at ``e = 0`` to ``min_factor`` at ``e = E``, held there afterwards.

    .. math:: f(e) = m + (1 - m) \\frac{1 + \\cos(\\pi \\min(e, E) / E)}{2}

    With ``m = 0.5`` and lr 0.01 this is METHODS.md's ``0.005 + 0.005 (1 + cos(pi e / E)) / 2``.
    """
    e = min(e, float(epochs))
    return min_factor + (1.0 - min_factor) * (1.0 + math.cos(math.pi * e / epochs)) / 2.0


# LambdaLR multipliers of the scheduler counter. Callable objects (not closures) whose attributes are
# plain numbers: LambdaLR saves their ``__dict__`` in its state_dict, so a checkpoint restores the rate
# constants and loads with ``torch.load(weights_only=True)``.


@dataclass
class _ConstantFactor:
    def __call__(self, count: int) -> float:
        return 1.0


@dataclass
class _SqrtFactor:
    units: int

    def __call__(self, count: int) -> float:
        return sqrt_factor(count / self.units)


@dataclass
class _InverseTimeFactor:
    k: float
    units: int

    def __call__(self, count: int) -> float:
        return inverse_time_factor(count / self.units, self.k)


@dataclass
class _ExpDecayFactor:
    k: float
    units: int

    def __call__(self, count: int) -> float:
        return exp_decay_factor(count / self.units, self.k)


@dataclass
class _CosineFactor:
    epochs: int
    min_factor: float
    units: int

    def __call__(self, count: int) -> float:
        return cosine_factor(count / self.units, self.epochs, self.min_factor)


# --------------------------------------------------------------------------------------------------
# Validation: every message names the schedule, the parameter, the value and what is allowed.


def _number(schedule: str, key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ConfigError(f"schedule '{schedule}': {key} must be a finite number, got {value!r}")
    return float(value)


def _in_range(
    schedule: str, key: str, value: Any, low: float, high: float, *, low_open: bool, high_open: bool
) -> float:
    x = _number(schedule, key, value)
    too_low = x <= low if low_open else x < low
    too_high = x >= high if high_open else x > high
    if too_low or too_high:
        interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        raise ConfigError(f"schedule '{schedule}': {key} must be in {interval}, got {value!r}")
    return x


def _rate_in_unit(schedule: str, key: str, value: Any) -> float:
    """A multiplicative rate in (0, 1]."""
    return _in_range(schedule, key, value, 0.0, 1.0, low_open=True, high_open=False)


def _fraction(schedule: str, key: str, value: Any) -> float:
    """A fraction in [0, 1]."""
    return _in_range(schedule, key, value, 0.0, 1.0, low_open=False, high_open=False)


def _non_negative(schedule: str, key: str, value: Any) -> float:
    x = _number(schedule, key, value)
    if x < 0:
        raise ConfigError(f"schedule '{schedule}': {key} must be >= 0, got {value!r}")
    return x


def _positive(schedule: str, key: str, value: Any) -> float:
    x = _number(schedule, key, value)
    if x <= 0:
        raise ConfigError(f"schedule '{schedule}': {key} must be > 0, got {value!r}")
    return x


def _positive_int(schedule: str, key: str, value: Any) -> int:
    integral = isinstance(value, numbers.Integral) or (isinstance(value, float) and value.is_integer())
    if isinstance(value, bool) or not integral or value < 1:
        raise ConfigError(f"schedule '{schedule}': {key} must be an integer >= 1, got {value!r}")
    return int(value)


def _flag(schedule: str, key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"schedule '{schedule}': {key} must be true or false, got {value!r}")
    return value


def _check_per(per: Any) -> str:
    if per not in PERS:
        close = difflib.get_close_matches(str(per), PERS, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise ConfigError(f"unknown value of per {per!r}{hint} choices: {', '.join(PERS)}")
    return per


def _units(per: str, steps_per_epoch: int) -> int:
    """Scheduler counts per epoch: 1 when it advances per epoch, else ``steps_per_epoch``."""
    return 1 if per == "epoch" else steps_per_epoch


def _set_lr(group: dict[str, Any], key: str, value: float) -> None:
    if isinstance(group.get(key), torch.Tensor):
        group[key].fill_(value)
    else:
        group[key] = value


# --------------------------------------------------------------------------------------------------
# Builders: ``build(optimizer, *, epochs, steps_per_epoch, per, <rate constants>) -> LRScheduler``.
# Their keyword defaults are the authors' values and become ``ScheduleInfo.defaults``.


def _build_constant(
    optimizer: torch.optim.Optimizer, *, epochs: int, steps_per_epoch: int, per: str
) -> LRScheduler:
    return LambdaLR(optimizer, _ConstantFactor())


def _build_step(
    optimizer: torch.optim.Optimizer,
    *,
    epochs: int,
    steps_per_epoch: int,
    per: str,
    gamma: float = 0.1,
    step_size: int | None = None,
) -> LRScheduler:
    gamma = _rate_in_unit("step", "gamma", gamma)
    size = default_step_size(epochs) if step_size is None else _positive_int("step", "step_size", step_size)
    return StepLR(optimizer, step_size=size * _units(per, steps_per_epoch), gamma=gamma)


def _build_linear(
    optimizer: torch.optim.Optimizer, *, epochs: int, steps_per_epoch: int, per: str, end_factor: float = 0.1
) -> LRScheduler:
    end_factor = _fraction("linear", "end_factor", end_factor)
    total = epochs * _units(per, steps_per_epoch)
    return LinearLR(optimizer, start_factor=1.0, end_factor=end_factor, total_iters=total)


def _build_exponential(
    optimizer: torch.optim.Optimizer, *, epochs: int, steps_per_epoch: int, per: str, gamma: float = 0.9
) -> LRScheduler:
    gamma = _rate_in_unit("exponential", "gamma", gamma)
    # per step: gamma ** (1 / steps_per_epoch) each step, i.e. gamma ** e at the fractional epoch e.
    return torch.optim.lr_scheduler.ExponentialLR(
        optimizer, gamma=gamma ** (1.0 / _units(per, steps_per_epoch))
    )


def _build_one_cycle(
    optimizer: torch.optim.Optimizer,
    *,
    epochs: int,
    steps_per_epoch: int,
    per: str,
    pct_start: float = 0.3,
    anneal_strategy: str = "cos",
    div_factor: float = 25.0,
    final_div_factor: float = 1e4,
    three_phase: bool = False,
    cycle_momentum: bool = False,
    base_momentum: float = 0.85,
    max_momentum: float = 0.95,
) -> LRScheduler:
    name = "one-cycle"
    pct_start = _in_range(name, "pct_start", pct_start, 0.0, 1.0, low_open=True, high_open=True)
    if anneal_strategy not in ("cos", "linear"):
        raise ConfigError(
            f"schedule '{name}': anneal_strategy must be one of cos, linear, got {anneal_strategy!r}"
        )
    div_factor = _positive(name, "div_factor", div_factor)
    final_div_factor = _positive(name, "final_div_factor", final_div_factor)
    three_phase = _flag(name, "three_phase", three_phase)
    cycle_momentum = _flag(name, "cycle_momentum", cycle_momentum)
    base_momentum = _fraction(name, "base_momentum", base_momentum)
    max_momentum = _fraction(name, "max_momentum", max_momentum)
    if cycle_momentum and "momentum" not in optimizer.defaults and "betas" not in optimizer.defaults:
        raise ConfigError(
            f"schedule '{name}': cycle_momentum=True needs an optimizer with a 'momentum' or 'betas' "
            f"hyperparameter, {type(optimizer).__name__} has neither; pass cycle_momentum=False"
        )
    max_lrs = [float(g.get("initial_lr", g["lr"])) for g in optimizer.param_groups]
    total = epochs * _units(per, steps_per_epoch)
    if abs(pct_start * total - 1.0) < 1e-9:
        raise ConfigError(
            f"schedule '{name}': pct_start={pct_start} of {total} steps puts the peak at the first step, "
            "where torch's OneCycleLR divides by zero; use another pct_start or more epochs"
        )
    return OneCycleLR(
        optimizer,
        max_lr=max_lrs,
        total_steps=total,
        pct_start=pct_start,
        anneal_strategy=anneal_strategy,
        cycle_momentum=cycle_momentum,
        base_momentum=base_momentum,
        max_momentum=max_momentum,
        div_factor=div_factor,
        final_div_factor=final_div_factor,
        three_phase=three_phase,
    )


def _build_sqrt(
    optimizer: torch.optim.Optimizer, *, epochs: int, steps_per_epoch: int, per: str
) -> LRScheduler:
    return LambdaLR(optimizer, _SqrtFactor(_units(per, steps_per_epoch)))


def _build_inverse_time(
    optimizer: torch.optim.Optimizer, *, epochs: int, steps_per_epoch: int, per: str, k: float = 0.01
) -> LRScheduler:
    k = _non_negative("inverse-time", "k", k)
    return LambdaLR(optimizer, _InverseTimeFactor(k, _units(per, steps_per_epoch)))


def _build_exp_decay(
    optimizer: torch.optim.Optimizer, *, epochs: int, steps_per_epoch: int, per: str, k: float = 0.01
) -> LRScheduler:
    k = _non_negative("exp-decay", "k", k)
    return LambdaLR(optimizer, _ExpDecayFactor(k, _units(per, steps_per_epoch)))


def _build_cosine(
    optimizer: torch.optim.Optimizer, *, epochs: int, steps_per_epoch: int, per: str, min_factor: float = 0.5
) -> LRScheduler:
    min_factor = _fraction("cosine", "min_factor", min_factor)
    return LambdaLR(optimizer, _CosineFactor(epochs, min_factor, _units(per, steps_per_epoch)))


def _build_cosine_restarts(
    optimizer: torch.optim.Optimizer,
    *,
    epochs: int,
    steps_per_epoch: int,
    per: str,
    T_0: int = 10,
    T_mult: int = 2,
) -> LRScheduler:
    t0 = _positive_int("cosine-restarts", "T_0", T_0)
    t_mult = _positive_int("cosine-restarts", "T_mult", T_mult)
    return CosineAnnealingWarmRestarts(optimizer, T_0=t0 * _units(per, steps_per_epoch), T_mult=t_mult)


def _build_derived_constant(
    optimizer: torch.optim.Optimizer,
    *,
    epochs: int,
    steps_per_epoch: int,
    per: str,
    lr: float,
    multiplier: float = 1.0,
) -> LRScheduler:
    value = _positive("derived-constant", "lr", lr) * _positive("derived-constant", "multiplier", multiplier)
    for group in optimizer.param_groups:
        _set_lr(group, "lr", value)
        _set_lr(group, "initial_lr", value)  # the base LambdaLR scales; set before it reads it
    return LambdaLR(optimizer, _ConstantFactor())


# --------------------------------------------------------------------------------------------------
# Registry.


def _signature_params(build: Callable[..., LRScheduler]) -> dict[str, inspect.Parameter]:
    return {
        k: p
        for k, p in inspect.signature(build).parameters.items()
        if p.kind is inspect.Parameter.KEYWORD_ONLY and k not in _COMMON
    }


@dataclass(frozen=True)
class ScheduleInfo:
    """Metadata of one registered schedule.

    Attributes:
      name: registry name.
      build: ``build(optimizer, *, epochs, steps_per_epoch, per, **params) -> LRScheduler``; it
        validates its parameters.
      defaults: the authors' values of the optional parameters (``step_size=None`` means "by E").
      space: search ranges of the rate constants, one ``{"low", "high", "log"}`` or
        ``{"choices": [...]}`` per searchable parameter.
      description: one line.
      needs_lipschitz: the schedule needs the derived step size (``lr``) from the Lipschitz estimate.
      reference: where the rule comes from.
    """

    name: str
    build: Callable[..., LRScheduler]
    defaults: Mapping[str, Any] = field(default_factory=dict)
    space: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    description: str = ""
    needs_lipschitz: bool = False
    reference: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "defaults", MappingProxyType(dict(self.defaults)))
        object.__setattr__(
            self, "space", MappingProxyType({k: MappingProxyType(dict(v)) for k, v in self.space.items()})
        )


@dataclass
class Schedule:
    """A built schedule: the torch scheduler and when it advances.

    Attributes:
      scheduler: the torch ``LRScheduler`` (it owns the optimizer's lr).
      per: ``"epoch"`` (advance in :meth:`epoch_end`) or ``"step"`` (advance in :meth:`step_end`).
    """

    scheduler: LRScheduler
    per: str = "epoch"

    def __post_init__(self) -> None:
        _check_per(self.per)

    def step_end(self) -> None:
        """Call after every optimizer step; advances the schedule when ``per == "step"``."""
        if self.per == "step":
            self.scheduler.step()

    def epoch_end(self) -> None:
        """Call after every epoch; advances the schedule when ``per == "epoch"``."""
        if self.per == "epoch":
            self.scheduler.step()

    def current_lr(self) -> float:
        """The lr the optimizer's first parameter group will use next."""
        return float(self.scheduler.optimizer.param_groups[0]["lr"])

    def state_dict(self) -> dict[str, Any]:
        """The scheduler's state (save the optimizer's state too: it holds the current lr)."""
        return self.scheduler.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the scheduler's state; call after building the schedule and loading the optimizer."""
        self.scheduler.load_state_dict(state_dict)


SCHEDULES: Registry[ScheduleInfo] = Registry("schedule")


def register_schedule(
    name: str,
    build: Callable[..., LRScheduler],
    *,
    space: Mapping[str, Mapping[str, Any]] | None = None,
    description: str = "",
    needs_lipschitz: bool = False,
    reference: str = "",
) -> ScheduleInfo:
    """Register ``build`` under ``name``; its keyword defaults become the schedule's defaults.

    Args:
      name: registry name.
      build: ``build(optimizer, *, epochs, steps_per_epoch, per, **params) -> LRScheduler``.
      space: search ranges of the rate constants (names must be parameters of ``build``).
      description: one line.
      needs_lipschitz: whether the schedule consumes the derived step size.
      reference: where the rule comes from.

    Returns:
      The registered :class:`ScheduleInfo`.
    """
    params = _signature_params(build)
    missing = [c for c in _COMMON if c not in inspect.signature(build).parameters]
    if missing:
        raise ValueError(f"schedule {name!r}: build must take keyword arguments {', '.join(missing)}")
    unknown = [k for k in (space or {}) if k not in params]
    if unknown:
        raise ValueError(f"schedule {name!r}: space names unknown parameters {', '.join(unknown)}")
    defaults = {k: p.default for k, p in params.items() if p.default is not inspect.Parameter.empty}
    info = ScheduleInfo(
        name=name,
        build=build,
        defaults=defaults,
        space=space or {},
        description=description,
        needs_lipschitz=needs_lipschitz,
        reference=reference,
    )
    return SCHEDULES.register(name, info)


def get_schedule_info(name: str) -> ScheduleInfo:
    """The :class:`ScheduleInfo` of ``name``; unknown names raise with the closest match."""
    return SCHEDULES.get(name)


def list_schedules(pattern: str | None = None) -> list[str]:
    """Registered schedule names, optionally filtered by a glob pattern."""
    return SCHEDULES.names(pattern)


def schedule_parameter_names(name: str) -> list[str]:
    """The parameters ``create_schedule(name, ...)`` takes besides ``epochs``, ``steps_per_epoch``, ``per``.

    Raises:
      ConfigError: an unknown schedule (with the closest match).
    """
    return list(_signature_params(get_schedule_info(name).build))


def create_schedule(
    name: str,
    optimizer: torch.optim.Optimizer,
    *,
    epochs: int,
    steps_per_epoch: int,
    per: str = "epoch",
    **params: Any,
) -> Schedule:
    """Build the schedule registered as ``name`` on ``optimizer``.

    The lr of group ``i`` at epoch ``e`` is ``initial_lr_i * f(e)`` with the schedule's factor ``f``
    (module docstring); ``derived-constant`` instead sets every group to ``lr * multiplier``.

    Args:
      name: registry name (see :func:`list_schedules`).
      optimizer: the optimizer whose groups' lr the schedule drives.
      epochs: ``E``, the number of epochs of the run.
      steps_per_epoch: optimizer steps per epoch (used when ``per == "step"`` and by ``one-cycle``).
      per: ``"epoch"`` or ``"step"``; with ``"step"`` the rules are evaluated at the fractional epoch
        ``step / steps_per_epoch``.
      **params: the schedule's parameters (see :func:`schedule_parameter_names`); missing optional ones
        take the authors' defaults.

    Returns:
      The :class:`Schedule`; call its ``step_end`` after every optimizer step and ``epoch_end`` after
      every epoch.

    Raises:
      ConfigError: an unknown schedule, ``per`` or parameter, a missing required parameter or an
        invalid value (named, with the valid choices or range).

    References:
      papers/003 Appendix C.1 (the schedulers), METHODS.md section 5.
    """
    info = get_schedule_info(name)
    epochs = _positive_int(name, "epochs", epochs)
    steps_per_epoch = _positive_int(name, "steps_per_epoch", steps_per_epoch)
    per = _check_per(per)
    accepted = _signature_params(info.build)
    valid = ", ".join(accepted) or "(none)"
    for key in params:
        if key not in accepted:
            close = difflib.get_close_matches(key, list(accepted), n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise ConfigError(
                f"unknown parameter {key!r} for schedule '{name}'{hint} valid parameters: {valid}"
            )
    for key, p in accepted.items():
        if p.default is inspect.Parameter.empty and key not in params:
            raise ConfigError(f"schedule '{name}' needs parameter {key!r} (valid parameters: {valid})")
    scheduler = info.build(optimizer, epochs=epochs, steps_per_epoch=steps_per_epoch, per=per, **params)
    return Schedule(scheduler, per)


_PAPER = "papers/003 Appendix C.1 Table 1; METHODS.md section 5"

register_schedule(
    "constant",
    _build_constant,
    description="constant lr (the base lr of each group)",
    reference=_PAPER,
)
register_schedule(
    "step",
    _build_step,
    space={"gamma": {"low": 0.01, "high": 0.9, "log": True}, "step_size": {"choices": [5, 10, 20, 30, 40]}},
    description="lr x gamma every step_size epochs (step_size 10 / 20 / 40 for E = 20 / 50 / other)",
    reference=_PAPER + " (torch StepLR)",
)
register_schedule(
    "linear",
    _build_linear,
    space={"end_factor": {"low": 0.01, "high": 0.9, "log": True}},
    description="factor linearly from 1 to end_factor over the E epochs",
    reference=_PAPER + " (torch LinearLR)",
)
register_schedule(
    "exponential",
    _build_exponential,
    space={"gamma": {"low": 0.8, "high": 0.999}},
    description="lr x gamma each epoch",
    reference=_PAPER + " (torch ExponentialLR)",
)
register_schedule(
    "one-cycle",
    _build_one_cycle,
    space={
        "pct_start": {"low": 0.1, "high": 0.45},
        "div_factor": {"low": 5.0, "high": 100.0, "log": True},
        "final_div_factor": {"low": 1e2, "high": 1e5, "log": True},
    },
    description="one-cycle policy with max_lr = each group's lr (starts at max_lr / div_factor; "
    "beta1 / momentum fixed unless cycle_momentum=True)",
    reference="Smith & Topin 2019; " + _PAPER + " (torch OneCycleLR)",
)
register_schedule(
    "sqrt",
    _build_sqrt,
    description="lr / sqrt(e + 1)",
    reference=_PAPER,
)
register_schedule(
    "inverse-time",
    _build_inverse_time,
    space={"k": {"low": 1e-3, "high": 1.0, "log": True}},
    description="lr / (1 + k e)",
    reference=_PAPER,
)
register_schedule(
    "exp-decay",
    _build_exp_decay,
    space={"k": {"low": 1e-3, "high": 0.3, "log": True}},
    description="lr exp(-k e)",
    reference=_PAPER,
)
register_schedule(
    "cosine",
    _build_cosine,
    space={"min_factor": {"low": 0.0, "high": 0.9}},
    description="half-cosine from lr to min_factor x lr over the E epochs",
    reference=_PAPER,
)
register_schedule(
    "cosine-restarts",
    _build_cosine_restarts,
    space={"T_0": {"choices": [5, 10, 20, 25, 50]}, "T_mult": {"choices": [1, 2, 3]}},
    description="cosine from lr to 0 over cycles of T_0, T_0 T_mult, T_0 T_mult^2, ... epochs, then restart",
    reference="Loshchilov & Hutter 2017 (SGDR); papers/002's baseline (torch CosineAnnealingWarmRestarts)",
)
register_schedule(
    "derived-constant",
    _build_derived_constant,
    space={"multiplier": {"low": 0.25, "high": 4.0, "log": True}},
    description="constant alpha x multiplier, alpha = sqrt(2 L(w0) / (K_hat T)) given as lr",
    needs_lipschitz=True,
    reference="papers/003 section 4; METHODS.md section 4",
)
