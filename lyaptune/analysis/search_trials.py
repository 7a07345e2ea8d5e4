"""The search phase as the sampler saw it: one row per Optuna trial, with the value it was told.

Below :mod:`lyaptune.analysis.compare` (which chooses a "best" reference on these values) and
:mod:`lyaptune.analysis.budget` (which draws budget curves from them).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from lyaptune.analysis.load import Study

__all__ = ["search_trial_values"]


def _repeat_col(rows: pd.DataFrame) -> pd.Series:
    if "repeat" not in rows:
        return pd.Series(0, index=rows.index, dtype="int64")
    return pd.to_numeric(rows["repeat"], errors="coerce").fillna(0).astype("int64")


def search_trial_values(study: Study, arm: str) -> pd.DataFrame:
    """The arm's search-phase Optuna trials, one row each, with the value the search saw.

    A trial's value is the mean of its runs' ``objective`` over the search seeds (what Optuna was
    told). A trial is ``pending`` while it has fewer finished runs than search seeds or a run still
    ``running``, ``failed`` when a run diverged, errored or was stopped early, else ``completed``.
    Trials of independent search repeats (the ``repeat`` column; absent in older stores: repeat 0)
    are kept apart: each repeat is its own Optuna study, numbered from 0.

    Returns:
      Columns ``repeat``, ``trial`` (Optuna number, or the trial id when there is none), ``value`` (NaN
      unless completed), ``state``, ``runs``, ``wall_s`` (summed), and one ``param_<name>`` column
      per hyperparameter (the first run's value), sorted by repeat and trial order.
    """
    study.check_arm(arm)
    t = study.trials
    rows = t[(t["arm"] == arm) & (t["phase"] == "search")] if len(t) else t
    n_seeds = max(len((study.spec.get("search") or {}).get("seeds") or [0]), 1)
    params = [c for c in t.columns if c.startswith("param_")]
    cols = ["repeat", "trial", "value", "state", "runs", "wall_s", *params]
    if not len(rows):
        return pd.DataFrame(columns=cols)
    key = rows["optuna_number"].astype("object").where(rows["optuna_number"].notna(), rows["trial_id"])
    out = []
    for (rep, trial), g in rows.groupby([_repeat_col(rows), key], sort=False):
        statuses = set(g["status"])
        obj = pd.to_numeric(g["objective"], errors="coerce").to_numpy(float)
        if "running" in statuses or len(g) < n_seeds:
            state = "pending"
        elif statuses == {"completed"} and np.all(np.isfinite(obj)):
            state = "completed"
        else:
            state = "failed"
        rec = {
            "repeat": int(rep),
            "trial": trial,
            "value": float(obj.mean()) if state == "completed" else math.nan,
            "state": state,
            "runs": int(len(g)),
            "wall_s": float(np.nansum(pd.to_numeric(g["wall_s"], errors="coerce").to_numpy(float))),
        }
        first = g.iloc[0]
        rec.update({p: first[p] for p in params})
        out.append(rec)
    df = pd.DataFrame(out, columns=cols)
    order = pd.to_numeric(df["trial"], errors="coerce")
    if order.notna().all():
        df = df.assign(_o=order).sort_values(["repeat", "_o"], kind="stable").drop(columns="_o")
    return df.reset_index(drop=True)
