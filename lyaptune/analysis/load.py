"""Reading a run directory into memory: the edge where analysis touches files.

Every other module of :mod:`lyaptune.analysis` takes the :class:`Study` (or its DataFrames) this
module returns and does no I/O of its own, except :mod:`lyaptune.analysis.report`, which writes.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import pyarrow.fs as pafs

from lyaptune._registry import unknown_choice
from lyaptune.errors import ConfigError, UserError
from lyaptune.store import EPOCH_KEY_COLUMNS, EPOCH_RECORD_FIELDS, PARAM_PREFIX, TRIALS_FILE, RunStore

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
      spec: the resolved spec (``spec.yaml``) as plain mappings.
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
    @property
    def name(self) -> str:
        """The study's name (``spec.name``, else the run directory's base name)."""
        name = self.spec.get("name")
        return str(name) if name else os.path.basename(self.path.rstrip("/")) or "study"

    @property
    def objective(self) -> dict[str, str]:
        """``{"metric", "mode", "at"}`` of the spec's objective (defaults: val_loss, min, final)."""
        obj = dict(self.spec.get("objective") or {})
        return {
            "metric": str(obj.get("metric", "val_loss")),
            "mode": str(obj.get("mode", "min")),
            "at": str(obj.get("at", "final")),
        }

    @property
    def primary_metrics(self) -> list[dict[str, str]]:
        """The metrics the study's claims are about: ``[{"metric", "mode"}, ...]``, first = ranking.

        From the spec's ``compare:`` (``{metric: NAME, mode: min|max}`` or a list of them; NAME is a
        ``trials.parquet`` field, a value at the final epoch such as ``final_grad_norm``). A spec
        without it (older runs) uses its objective's metric at the final epoch
        (``final_<objective metric>``, e.g. ``val_loss`` -> ``final_val_loss``) and mode.

        Raises:
          ConfigError: a malformed ``compare`` entry (names the entry, the value and what is valid).
        """
        raw = self.spec.get("compare")
        if raw is None:
            obj = self.objective
            m = obj["metric"]
            metric = m if m.startswith(("final_", "min_")) or m == "objective" else f"final_{m}"
            return [{"metric": metric, "mode": obj["mode"]}]
        entries = raw if isinstance(raw, (list, tuple)) else [raw]
        out = []
        for i, e in enumerate(entries):
            where = "compare" if not isinstance(raw, (list, tuple)) else f"compare[{i}]"
            if not isinstance(e, Mapping) or not isinstance(e.get("metric"), str) or not e["metric"]:
                raise ConfigError(f"{where}: expected {{metric: NAME, mode: min|max}}, got {e!r}")
            mode = e.get("mode", "min")
            if mode not in ("min", "max"):
                raise ConfigError(f"{where}.mode: {mode!r} is not valid; choices: min, max")
            out.append({"metric": str(e["metric"]), "mode": str(mode)})
        if not out:
            raise ConfigError("compare: give at least one {metric: NAME, mode: min|max}")
        return out

    @property
    def reference_setting(self) -> str | None:
        """The spec's ``reference:`` (an arm name or ``"none"``), or ``None`` when it has none."""
        ref = self.spec.get("reference")
        return None if ref is None else str(ref)

    def sampler_of(self, arm: str) -> str:
        """How ``arm``'s search trials were drawn: ``grid`` for a grid arm, else the spec's sampler."""
        if self.is_grid(arm):
            return "grid"
        own = self.arm_spec(arm).get("sampler")
        return str(own or (self.spec.get("search") or {}).get("sampler") or "tpe")

    @property
    def arms(self) -> list[str]:
        """Arm names: the spec's order, then any arm seen only in the trials."""
        names = [str(a.get("name")) for a in self.spec.get("arms") or [] if isinstance(a, Mapping)]
        if len(self.trials) and "arm" in self.trials:
            names += [a for a in pd.unique(self.trials["arm"].astype(str)) if a not in names]
        return names

    def arm_spec(self, arm: str) -> dict[str, Any]:
        """The spec entry of ``arm`` (``{}`` for an arm that only appears in the trials)."""
        self.check_arm(arm)
        for a in self.spec.get("arms") or []:
            if isinstance(a, Mapping) and str(a.get("name")) == arm:
                return dict(a)
        return {}

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
        """The spec's task mapping."""
        return dict(self.spec.get("task") or {})

    @property
    def resources(self) -> dict[str, float]:
        """Resources reserved per trial: ``{"cpu": ..., "gpu": ...}`` (defaults 1 CPU, 0 GPU)."""
        res = dict(self.spec.get("resources") or {})
        return {"cpu": float(res.get("cpu", 1) or 0), "gpu": float(res.get("gpu", 0) or 0)}

    def is_grid(self, arm: str) -> bool:
        """Whether ``arm`` enumerates a grid (its own ``grid``, or a searched arm under ``sampler: grid``)."""
        a = self.arm_spec(arm)
        sampler = (self.spec.get("search") or {}).get("sampler")
        return bool(a.get("grid")) or (sampler == "grid" and bool(a.get("space")))

    def searched_params(self, arm: str) -> list[str]:
        """The hyperparameters ``arm`` searches: its space or grid names, else its ``param_`` columns."""
        a = self.arm_spec(arm)
        names = list(a.get("grid") or {}) or [k for k, v in (a.get("space") or {}).items() if _is_searched(v)]
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
        sched = self.arm_spec(arm).get("schedule")
        if sched:
            return str(sched)
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
        entry = (self.arm_spec(arm).get("space") or {}).get(param)
        return isinstance(entry, Mapping) and bool(entry.get("log"))


def _is_searched(entry: Any) -> bool:
    return isinstance(entry, Mapping) and ("choices" in entry or "low" in entry)


def load_study(path_or_uri: str | os.PathLike[str], *, epochs: bool = True) -> Study:
    """Read a run directory (finished or still running) into a :class:`Study`.

    A study in progress is readable: the store writes every file atomically, so a reader sees whole
    files; trials still running have ``status == "running"`` or are absent, and the final phase may
    be missing.

    Args:
      path_or_uri: the run directory, a local path or a URI pyarrow understands (``s3://``, ...).
      epochs: also read the per-epoch records (``False`` leaves :attr:`Study.epochs` empty).

    Returns:
      The study's trials, epochs, spec and info.

    Raises:
      UserError: not a run directory, no trials recorded yet, or a missing / corrupt / truncated
        Parquet file (the message names the file).
    """
    store = RunStore(path_or_uri)
    spec = store.read_spec()
    info = store.read_study_info()
    has_trials = getattr(store, "has_trials", None)
    if has_trials is not None:
        recorded = has_trials()
    else:  # a store from before the one-file-per-run layout
        trials_path = store.path.rstrip("/") + "/" + TRIALS_FILE
        recorded = store.filesystem.get_file_info(trials_path).type == pafs.FileType.File
    if not recorded:
        raise UserError(
            f"no trials recorded in {store.uri.rstrip('/')} (neither trials/*.parquet nor {TRIALS_FILE}): "
            "no run of this study has finished yet"
        )
    trials = store.trials()
    ep = store.epochs() if epochs else pd.DataFrame(columns=["arm", *EPOCH_KEY_COLUMNS, *EPOCH_RECORD_FIELDS])
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
