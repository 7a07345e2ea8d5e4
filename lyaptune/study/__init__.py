"""Studies: a typed spec, Optuna search spaces per arm, the Ray Tune trainable and the runner."""

from lyaptune.study.runner import resume_study, run_study
from lyaptune.study.spec import ArmSpec, StudySpec, load_spec

__all__ = ["ArmSpec", "StudySpec", "load_spec", "resume_study", "run_study"]
