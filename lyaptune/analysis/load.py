"""Reading a run directory into memory: the edge where analysis touches files.

Every other module of :mod:`lyaptune.analysis` takes the :class:`Study` (or its DataFrames) this
module returns and does no I/O of its own, except :mod:`lyaptune.analysis.report`, which writes.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import pandas as pd

from lyaptune._registry import unknown_choice
from lyaptune.errors import ConfigError, UserError
from lyaptune.store import EPOCH_KEY_COLUMNS, EPOCH_RECORD_FIELDS, PARAM_PREFIX, TRIALS_FILE, RunStore
from lyaptune.study.spec import ArmSpec, StudySpec

__all__ = ["Study", "load_study", "JOURNAL_FILE", "DERIVED_SCHEDULE"]

#: The Optuna journal of a run directory (one study per arm, named ``<study>/<arm>``).
JOURNAL_FILE = "optuna.journal"
#: The schedule of papers/003's derived constant step size; ``reference="derived"`` finds its arm.
DERIVED_SCHEDULE = "derived-constant"


@dataclass(frozen=True, eq=False)
class Study:
    """One study's results in memory.

    Attributes:
      trials: the trials table (:meth:`RunStore.trials`), one row per training run (search and final).
      epochs: the per-epoch records of every run, with an ``arm`` column.
      spec: the resolved spec (``spec.yaml``) as plain mappings; :attr:`model` is its typed form.
      info: ``study.json`` (versions, host, start / end; ``{}`` while it is not written).
      path: the run directory as given (absolute for a local path).
      journal: the local path of the Optuna journal, or ``None`` when there is none (or the run is
        not on the local filesystem).
    """

    trials: pd.DataFrame
    epochs: pd.DataFrame
    spec: Mapping[str, Any]
    info: Mapping[str, Any] = field(default_factory=dict)
    path: str = ""
    journal: str | None = None

    # -- spec lookups ------------------------------------------------------------------------------
    @cached_property
    def model(self) -> StudySpec:
        """The stored spec as the typed :class:`~lyaptune.study.spec.StudySpec` the lookups below read.

        Built with :meth:`StudySpec.from_stored`: pure (a stored, resolved ``spec.yaml`` builds no
        optimizer and imports no torch), and a study an earlier version ran stays readable.

        Raises:
          UserError: the stored spec is not a valid spec (the message names the field).
        """
        try:
            return StudySpec.from_stored(dict(self.spec))
        except ConfigError as err:
            where = f"{self.path.rstrip('/')}/spec.yaml" if self.path else "the study's spec"
            raise UserError(f"cannot read {where}: {err}") from err

    @property
    def name(self) -> str:
        """The study's name (``spec.name``, else the run directory's base name)."""
        name = self.spec.get("name")
        return str(name) if name else os.path.basename(self.path.rstrip("/")) or "study"

    @property
    def objective(self) -> dict[str, str]:
        """``{"metric", "mode", "at"}`` of the spec's objective (defaults: val_loss, min, final)."""
        obj = self.model.objective
        return {"metric": obj.metric, "mode": obj.mode, "at": obj.at}

    @property
    def primary_metrics(self) -> list[dict[str, str]]:
        """The metrics the study's claims are about: ``[{"metric", "mode"}, ...]``, first = ranking.

        The spec's ``compare:`` (``trials.parquet`` fields, values at the final epoch such as
        ``final_grad_norm``); a spec without it uses its objective's metric at the final epoch
        (``final_<objective metric>``) and mode, as :class:`~lyaptune.study.spec.StudySpec` resolves it.
        """
        return [{"metric": c.metric, "mode": c.mode} for c in self.model.compare]

    @property
    def reference_setting(self) -> str | None:
        """The spec's ``reference:`` (an arm name or ``"none"``), or ``None`` when it states none."""
        return None if self.spec.get("reference") is None else self.model.reference

    def sampler_of(self, arm: str) -> str:
        """How ``arm``'s search trials were drawn: ``grid`` for a grid arm, else the spec's sampler."""
        return "grid" if self.is_grid(arm) else self.model.search.sampler

    @property
    def arms(self) -> list[str]:
        """Arm names: the spec's order, then any arm seen only in the trials."""
        names = [a.name for a in self.model.arms]
        if len(self.trials) and "arm" in self.trials:
            names += [a for a in pd.unique(self.trials["arm"].astype(str)) if a not in names]
        return names

    def _arm_model(self, arm: str) -> ArmSpec | None:
        self.check_arm(arm)
        return next((a for a in self.model.arms if a.name == arm), None)

    def arm_spec(self, arm: str) -> dict[str, Any]:
        """The spec entry of ``arm`` as plain mappings (``{}`` for an arm only in the trials)."""
        model = self._arm_model(arm)
        return {} if model is None else model.to_dict()

    def check_arm(self, arm: str) -> str:
        """Return ``arm`` if the study has it.

        Raises:
          ConfigError: an unknown arm, naming the valid ones and the closest match.
        """
        if arm not in self.arms:
            raise unknown_choice("arm", arm, self.arms)
        return arm

    @property
    def task(self) -> dict[str, Any]:
        """The spec's task, every field (defaults filled in), as plain types."""
        return self.model.task.to_dict()

    @property
    def resources(self) -> dict[str, float]:
        """Resources reserved per trial: ``{"cpu": ..., "gpu": ...}`` (defaults 1 CPU, 0 GPU)."""
        res = self.model.resources
        return {"cpu": float(res.cpu), "gpu": float(res.gpu)}

    def is_grid(self, arm: str) -> bool:
        """Whether ``arm`` enumerates a grid (its own ``grid``, or a searched arm under ``sampler: grid``)."""
        model = self._arm_model(arm)
        return model is not None and self.model.is_grid(model)

    def searched_params(self, arm: str) -> list[str]:
        """The hyperparameters ``arm`` searches: its space or grid names, else its ``param_`` columns."""
        model = self._arm_model(arm)
        names = [k for k, p in model.resolved_space().items() if p.is_searched] if model else []
        if names:
            return names
        rows = self.trials[self.trials["arm"] == arm] if len(self.trials) else self.trials
        return [
            c[len(PARAM_PREFIX) :]
            for c in rows.columns
            if c.startswith(PARAM_PREFIX) and rows[c].notna().any()
        ]

    def schedule_of(self, arm: str) -> str | None:
        """The schedule of ``arm`` (from the spec, else from its trials)."""
        model = self._arm_model(arm)
        if model is not None:
            return model.schedule
        rows = self.trials[self.trials["arm"] == arm] if len(self.trials) else self.trials
        return str(rows["schedule"].iloc[0]) if len(rows) and "schedule" in rows else None

    def arms_by_schedule(
        self, *, include: Sequence[str] | None = None, exclude: Sequence[str] = ()
    ) -> list[str]:
        """Arms whose schedule is in ``include`` (default: any) and not in ``exclude``, in spec order."""
        out = []
        for arm in self.arms:
            s = self.schedule_of(arm)
            if (include is None or s in include) and s not in exclude:
                out.append(arm)
        return out

    def param_is_log(self, arm: str, param: str) -> bool:
        """Whether the spec searches ``param`` of ``arm`` on a log scale."""
        model = self._arm_model(arm)
        p = model.resolved_space().get(param) if model is not None else None
        return p is not None and bool(p.log)


def load_study(
    path_or_uri: str | os.PathLike[str], *, epochs: bool = True, epoch_columns: Sequence[str] | None = None
) -> Study:
    """Read a run directory (finished or still running) into a :class:`Study`.

    The trials table and the epochs are each read as one pyarrow dataset over the runs' own files and
    the compacted parts (:meth:`RunStore.trials`, :meth:`RunStore.epochs`), one row per run (its newest
    copy). A study in progress is readable: the store writes every file atomically and a compaction
    keeps every run readable exactly once, so a reader sees whole runs; trials still running have
    ``status == "running"`` or are absent, and the final phase may be missing.

    Args:
      path_or_uri: the run directory, a local path or a URI pyarrow understands (``s3://``, ...).
      epochs: also read the per-epoch records (``False`` leaves :attr:`Study.epochs` empty).
      epoch_columns: read only these epoch fields (``arm``, the key columns and ``epoch`` come along);
        default all.

    Returns:
      The study's trials, epochs, spec and info.

    Raises:
      UserError: not a run directory, no trials recorded yet, or a missing / corrupt / truncated
        Parquet file (the message names the file).
    """
    store = RunStore(path_or_uri)
    spec = store.read_spec()
    info = store.read_study_info()
    if not store.has_trials():
        raise UserError(
            f"no trials recorded in {store.uri.rstrip('/')} (neither trials/*.parquet nor {TRIALS_FILE}): "
            "no run of this study has finished yet"
        )
    trials = store.trials()
    if epochs:
        ep = store.epochs(columns=epoch_columns)
    else:
        ep = pd.DataFrame(columns=["arm", *EPOCH_KEY_COLUMNS, *EPOCH_RECORD_FIELDS])
    journal = None
    if store.is_local:
        candidate = os.path.join(store.path, JOURNAL_FILE)
        journal = candidate if os.path.isfile(candidate) else None
    return Study(trials=trials, epochs=ep, spec=spec, info=info, path=store.uri, journal=journal)


def parse_json_column(values: Sequence[Any] | pd.Series) -> list[dict[str, Any]]:
    """Each JSON text of ``values`` as a dict (``{}`` for null, empty or malformed entries)."""
    out = []
    for v in values:
        if not isinstance(v, str) or not v:
            out.append({})
            continue
        try:
            d = json.loads(v)
        except (TypeError, ValueError):
            d = {}
        out.append(d if isinstance(d, dict) else {})
    return out
