"""Optimizers and step-size schedules, behind one registry.

>>> from lyaptune.optim import create_optimizer, list_optimizers
>>> opt = create_optimizer("lyam", model.parameters(), lr=1e-2)  # doctest: +SKIP
"""

from lyaptune.optim import baselines, expdecay, lyam, rlo  # noqa: F401  (registers the optimizers)
from lyaptune.optim._registry import (
    OPTIMIZERS,
    OptimInfo,
    create_optimizer,
    get_optimizer_info,
    hyperparameter_names,
    list_optimizers,
    register_optimizer,
    resolve_hyperparameters,
)
from lyaptune.optim.schedules import (
    SCHEDULES,
    Schedule,
    ScheduleInfo,
    create_schedule,
    get_schedule_info,
    list_schedules,
    register_schedule,
    schedule_parameter_names,
)

__all__ = [
    "OPTIMIZERS",
    "SCHEDULES",
    "OptimInfo",
    "Schedule",
    "ScheduleInfo",
    "create_optimizer",
    "create_schedule",
    "get_optimizer_info",
    "get_schedule_info",
    "hyperparameter_names",
    "list_optimizers",
    "list_schedules",
    "register_optimizer",
    "register_schedule",
    "schedule_parameter_names",
    "resolve_hyperparameters",
]
