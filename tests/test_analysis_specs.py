"""Every spec in ``experiments/`` can be compared: its primary metric and reference resolve.

For each spec a small study is written through the real store (each arm's final runs on the spec's
final seeds, one search trial per searched arm) and compared; the ranking metric is the spec's first
``compare`` entry, the reference is the spec's (or the derived arm, or the best arm), and no spec
makes the analysis fail for lack of a derived arm.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from pathlib import Path

import numpy as np
import pytest

from lyaptune.analysis import budget_curve, compare, load_study
from lyaptune.analysis.collapse import LabelStats
from lyaptune.store import RunStore
from lyaptune.study.spec import load_spec

SPECS = sorted((Path(__file__).resolve().parents[1] / "experiments").glob("*.yaml"))
STAMP = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)


def _row(spec: dict, arm: dict, tid: str, phase: str, seed: int, i: int, **extra) -> dict:
    return {
        "study": spec["name"],
        "arm": arm["name"],
        "trial_id": tid,
        "phase": phase,
        "optimizer": str(arm.get("optimizer")),
        "schedule": str(arm.get("schedule", "constant")),
        "dataset": str(spec["task"]["dataset"]),
        "model": str(spec["task"]["model"]),
        "seed": seed,
        "status": "completed",
        "epochs_completed": 2,
        "initial_loss": 2.3,
        # arm i is a little better than arm i - 1 on every metric, with a seed effect
        "final_train_loss": 0.5 - 0.01 * i + 0.001 * seed,
        "final_val_loss": 0.6 - 0.01 * i + 0.001 * seed,
        "final_test_loss": 0.6 - 0.01 * i + 0.001 * seed,
        "final_test_acc": 0.8 + 0.005 * i + 0.001 * seed,
        "final_val_acc": 0.8 + 0.005 * i + 0.001 * seed,
        "final_grad_norm": 0.05 - 0.001 * i + 0.0001 * seed,
        "min_grad_norm": 0.04 - 0.001 * i + 0.0001 * seed,
        "objective": 0.6 - 0.01 * i,
        "wall_s": 1.0,
        "info_json": json.dumps({"dataset_info": {"num_classes": 10}}),
        "config_json": "{}",
        "updated_at": STAMP,
        **extra,
    }


@pytest.mark.parametrize("path", SPECS, ids=[p.stem for p in SPECS])
def test_every_spec_compares(path, tmp_path):
    spec = load_spec(path).to_dict()  # the resolved spec, as a run stores it in spec.yaml
    search = spec.get("search") or {}
    final_seeds = list(search.get("final_seeds") or [1, 2, 3])
    store = RunStore(tmp_path / "run", create=True)
    store.write_spec(spec)
    arms = spec["arms"]
    for i, arm in enumerate(arms):
        for s in final_seeds:
            store.record_trial(_row(spec, arm, f"{arm['name']}-final-s{s}", "final", s, i))
        if arm.get("space") or arm.get("grid"):
            for s in search.get("seeds") or [0]:  # one trial, run on every search seed
                tid = f"{arm['name']}-search-0-s{s}"
                store.record_trial(_row(spec, arm, tid, "search", s, i, optuna_number=0))
    study = load_study(tmp_path / "run")
    # labels given: the analysis of a spec must not depend on its dataset's files being present
    table = compare(study, labels=LabelStats.uniform(10)).set_index("arm")
    primary = study.primary_metrics[0]
    assert table["rank_by"].iloc[0] == primary["metric"]
    first = spec["compare"][0]  # every spec names its paper's primary metric
    assert primary == {"metric": first["metric"], "mode": first["mode"]}
    # the best arm on the primary metric is the last one (every metric improves with the arm index)
    assert int(table.loc[arms[-1]["name"], "rank"]) == 1
    ref = spec.get("reference")
    if ref not in (None, "none"):
        assert table.loc[ref, "is_reference"] and table.loc[ref, "reference_source"] == "spec"
    searched = any(a.get("space") or a.get("grid") for a in arms)
    if table["reference_source"].iloc[0] == "best" and not searched:
        # 'best' is chosen on the search runs' validation objective, never on the final seeds: a
        # study whose arms are all untuned has no best arm, so no reference (and the report still works)
        assert table["is_reference"].sum() == 0
    else:
        assert table["is_reference"].sum() == 1
    for arm in arms:
        if arm.get("space") or arm.get("grid"):
            assert not budget_curve(study, arm["name"]).empty
    verdicts = table[f"{primary['metric']}_verdict"]
    assert set(verdicts) <= {"reference", "better", "worse", "no significant difference", "not tested", ""}
    assert np.all(np.isfinite(table[f"{primary['metric']}_mean"])) and not math.isnan(
        table[f"{primary['metric']}_ci_low"].iloc[0]
    )
