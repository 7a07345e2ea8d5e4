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
    obj = pd.to_numeric(rows["objective"], errors="coerce")
    status = rows["status"].astype("object")
    runs = pd.DataFrame(
        {
            "repeat": _repeat_col(rows).to_numpy(),
            "trial": key.to_numpy(),
            "obj": obj.to_numpy(float),
            "ok": ((status == "completed") & np.isfinite(obj)).to_numpy(),
            "running": (status == "running").to_numpy(),
            "wall_s": pd.to_numeric(rows["wall_s"], errors="coerce").to_numpy(float),
        }
    )
    # one row per (repeat, trial), in the order of each trial's first run (a vectorised groupby: a
    # Python loop over 100,000 trials took minutes)
    g = runs.groupby(["repeat", "trial"], sort=False)
    agg = g.agg(
        runs=("obj", "size"),
        ok=("ok", "all"),
        running=("running", "any"),
        mean=("obj", "mean"),
        wall_s=("wall_s", "sum"),
    )
    state = np.where(
        agg["running"] | (agg["runs"] < n_seeds), "pending", np.where(agg["ok"], "completed", "failed")
    )
    first = rows.loc[~runs.duplicated(["repeat", "trial"]).to_numpy(), params]  # each trial's first run
    df = pd.DataFrame(
        {
            "repeat": agg.index.get_level_values("repeat").astype("int64"),
            "trial": list(agg.index.get_level_values("trial")),
            "value": np.where(state == "completed", agg["mean"].to_numpy(float), math.nan),
            "state": state,
            "runs": agg["runs"].to_numpy("int64"),
            "wall_s": agg["wall_s"].to_numpy(float),
            **{p: first[p].to_numpy() for p in params},
        },
        columns=cols,
    )
    order = pd.to_numeric(df["trial"], errors="coerce")
    if order.notna().all():
        df = df.assign(_o=order).sort_values(["repeat", "_o"], kind="stable").drop(columns="_o")
    return df.reset_index(drop=True)
