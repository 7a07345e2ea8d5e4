"""Studies: a typed spec, Optuna search spaces per arm, the Ray Tune trainable and the runner.

The spec is importable on its own (no torch, no Ray): reading a stored run loads
:class:`StudySpec` only. :func:`run_study` and :func:`resume_study` import the runner (Ray, torch)
on first use.
"""

from typing import Any

from lyaptune.study.spec import ArmSpec, StudySpec, load_spec

__all__ = ["ArmSpec", "StudySpec", "load_spec", "resume_study", "run_study"]


def __getattr__(name: str) -> Any:
    if name in ("run_study", "resume_study"):
        from lyaptune.study import runner

        return getattr(runner, name)
    raise AttributeError(f"module 'lyaptune.study' has no attribute {name!r}")
