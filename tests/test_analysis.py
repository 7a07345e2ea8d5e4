"""lyaptune.analysis on run directories with known answers, written here with pandas / pyarrow.

Every number is checked against an independent computation in the test (numpy, hand formulas,
brute-force enumeration), never against the analysis code's own output.
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import json
import math
import runpy
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import yaml
from scipy import stats

from lyaptune.analysis import (
    CollapseThresholds,
    LabelStats,
    Study,
    budget_curve,
    classify_collapse,
    compare,
    curve_bands,
    divergence_vs_lr_khat,
    expected_best,
    load_study,
    matching_budget,
    matching_budgets,
    paired_test,
    param_importance,
    search_trial_values,
    sensitivity,
    training_curves_figure,
    write_report,
)
from lyaptune.errors import ConfigError, UserError
from lyaptune.store import RunStore

REPO = Path(__file__).resolve().parents[1]
N_CLASSES = 10
EPOCHS = 5
FINAL_SEEDS = [0, 1, 2, 3, 4, 5]

# -- a synthetic run directory ------------------------------------------------------------------------

TRIAL_TYPES = {
    "study": pa.string(),
    "arm": pa.string(),
    "trial_id": pa.string(),
    "phase": pa.string(),
    "optimizer": pa.string(),
    "schedule": pa.string(),
    "dataset": pa.string(),
    "model": pa.string(),
    "seed": pa.int64(),
    "optuna_number": pa.int64(),
    "status": pa.string(),
    "epochs_completed": pa.int64(),
    "objective": pa.float64(),
    "final_train_loss": pa.float64(),
    "final_grad_norm": pa.float64(),
    "min_grad_norm": pa.float64(),
    "final_val_loss": pa.float64(),
    "final_val_acc": pa.float64(),
    "final_test_loss": pa.float64(),
    "final_test_acc": pa.float64(),
    "wall_s": pa.float64(),
    "derived_lr": pa.float64(),
    "k_hat": pa.float64(),
    "initial_loss": pa.float64(),
    "message": pa.string(),
    "info_json": pa.string(),
    "config_json": pa.string(),
    "updated_at": pa.timestamp("us", tz="UTC"),
}
L0 = 2.30

# final-seed values per arm, by seed 0..5
DERIVED = {
    "final_test_acc": [0.91, 0.92, 0.90, 0.93, 0.915, 0.925],
    "final_train_loss": [0.20, 0.18, 0.22, 0.17, 0.19, 0.21],
    "final_grad_norm": [1.0e-3, 2.0e-3, 1.5e-3, 1.2e-3, 0.9e-3, 1.1e-3],
    "min_grad_norm": [0.8e-3, 1.7e-3, 1.4e-3, 1.0e-3, 0.9e-3, 1.0e-3],
    "wall_s": [2.0, 2.1, 1.9, 2.2, 2.0, 2.05],
    "objective": [0.25, 0.24, 0.26, 0.23, 0.25, 0.24],
}
COSINE = {
    "final_test_acc": [0.89, 0.90, 0.88, 0.91, 0.90, 0.89],
    "final_train_loss": [0.25, 0.24, 0.27, 0.22, 0.23, 0.26],
    "final_grad_norm": [5e-3, 6e-3, 4e-3, 7e-3, 5.5e-3, 4.5e-3],
    "min_grad_norm": [4e-3, 5e-3, 3.5e-3, 6e-3, 5e-3, 4e-3],
    "wall_s": [1.0, 1.1, 0.9, 1.2, 1.0, 1.05],
    "objective": [0.28, 0.27, 0.29, 0.26, 0.27, 0.28],
}
DEAD = {  # a collapsed arm: dead ReLUs, loss at L(w0), chance accuracy, vanishing gradient
    "final_test_acc": [0.10, 0.098, 0.102, 0.10, 0.099, 0.101],
    "final_train_loss": [2.295, 2.299, 2.297, 2.296, 2.298, 2.294],
    "final_grad_norm": [1e-9, 2e-9, 1e-9, 3e-9, 1e-9, 2e-9],
    "min_grad_norm": [1e-10, 2e-10, 1e-10, 3e-10, 1e-10, 2e-10],
    "wall_s": [1.0] * 6,
    "objective": [2.30] * 6,
}
# adam-cosine search: Optuna number -> (lr, objective or None for diverged, wall_s)
COSINE_SEARCH = {
    0: (1e-4, 0.9, 1.0),
    1: (3e-4, 0.5, 1.0),
    2: (1e-3, 0.3, 1.0),
    3: (1e-1, None, 0.5),
    4: (2e-3, 0.26, 1.0),
    5: (4e-3, 0.24, 1.0),
    6: (5e-4, 0.4, 1.0),
    7: (8e-3, 0.22, 1.0),
}
DEAD_SEARCH = {0: (0.5, 2.30, 1.0), 1: (0.8, 2.31, 1.0), 2: (0.3, 2.29, 1.0)}
# grid arm: (lr, beta2) -> objective; the response depends on lr strongly, on beta2 weakly
GRID = {(1e-3, 0.9): 0.40, (1e-3, 0.99): 0.38, (1e-2, 0.9): 0.30, (1e-2, 0.99): 0.26}
GRID_FINAL = {
    "final_test_acc": [0.90, 0.91, 0.90, 0.92, 0.91, 0.90],
    "final_train_loss": [0.21, 0.20, 0.23, 0.19, 0.20, 0.22],
    "final_grad_norm": [2e-3, 3e-3, 2.5e-3, 2e-3, 2.2e-3, 2.8e-3],
    "min_grad_norm": [1.9e-3, 2.5e-3, 2.2e-3, 1.8e-3, 2.0e-3, 2.4e-3],
    "wall_s": [1.5] * 6,
    "objective": [0.27, 0.26, 0.28, 0.25, 0.26, 0.27],
}
RESOURCES = {"cpu": 2, "gpu": 0.5}
K_HAT = 40.0


def make_spec(name: str = "synth", search_seeds=(0,), final_seeds=tuple(FINAL_SEEDS)) -> dict:
    return {
        "name": name,
        "task": {
            "dataset": "synthetic",
            "dataset_args": {"num_classes": N_CLASSES},
            "model": "fc",
            "model_args": {"depth": 1, "width": 16},
            "epochs": EPOCHS,
            "batch_size": "full",
            "validation_fraction": 0.25,
        },
        "objective": {"metric": "val_loss", "mode": "min", "at": "final"},
        "search": {
            "sampler": "tpe",
            "trials_per_arm": 8,
            "seeds": list(search_seeds),
            "final_seeds": list(final_seeds),
            "scheduler": "none",
        },
        "resources": RESOURCES,
        "max_concurrent": 2,
        "arms": [
            {
                "name": "derived",
                "optimizer": "adam",
                "optimizer_args": {},
                "schedule": "derived-constant",
                "schedule_args": {},
                "space": {},
                "lipschitz": {"samples": 2},
            },
            {
                "name": "adam-cosine",
                "optimizer": "adam",
                "optimizer_args": {},
                "schedule": "cosine",
                "schedule_args": {},
                "space": {"lr": {"low": 1e-4, "high": 1e-1, "log": True}},
            },
            {
                "name": "dead",
                "optimizer": "sgd",
                "optimizer_args": {},
                "schedule": "constant",
                "schedule_args": {},
                "space": {"lr": {"low": 0.1, "high": 1.0, "log": False}},
            },
            {
                "name": "lyam-grid",
                "optimizer": "lyam",
                "optimizer_args": {},
                "schedule": "constant",
                "schedule_args": {},
                "grid": {"lr": [1e-3, 1e-2], "beta2": [0.9, 0.99]},
            },
        ],
    }


ARM_META = {
    "derived": ("adam", "derived-constant"),
    "adam-cosine": ("adam", "cosine"),
    "dead": ("sgd", "constant"),
    "lyam-grid": ("lyam", "constant"),
}


def run_row(
    arm: str,
    trial_id: str,
    phase: str,
    seed: int,
    *,
    status: str = "completed",
    number=None,
    values: dict | None = None,
    params: dict | None = None,
    message: str = "",
) -> dict:
    opt, sched = ARM_META[arm]
    v = dict(values or {})
    derived = arm == "derived"
    row = {
        "study": "synth",
        "arm": arm,
        "trial_id": trial_id,
        "phase": phase,
        "optimizer": opt,
        "schedule": sched,
        "dataset": "synthetic",
        "model": "fc",
        "seed": seed,
        "optuna_number": number,
        "status": status,
        "epochs_completed": EPOCHS if status == "completed" else 2,
        "objective": v.get("objective", math.nan),
        "final_train_loss": v.get("final_train_loss", math.nan),
        "final_grad_norm": v.get("final_grad_norm", math.nan),
        "min_grad_norm": v.get("min_grad_norm", math.nan),
        "final_val_loss": v.get("objective", math.nan),
        "final_val_acc": v.get("final_test_acc", math.nan),
        "final_test_loss": math.nan,
        "final_test_acc": v.get("final_test_acc", math.nan),
        "wall_s": v.get("wall_s", math.nan),
        "derived_lr": 0.005 if derived else None,
        "k_hat": K_HAT if derived else None,
        "initial_loss": L0,
        "message": message,
        "info_json": json.dumps(
            {
                "dataset_info": {"num_classes": N_CLASSES},
                "initial_loss": L0,
                **({"k_hat": K_HAT, "derived_lr": 0.005, "lipschitz_seconds": 0.4} if derived else {}),
            }
        ),
        "config_json": json.dumps(
            {
                "dataset": "synthetic",
                "optimizer": opt,
                "schedule": sched,
                "optimizer_args": dict(params or {}),
            }
        ),
        "updated_at": dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc),
    }
    for k, val in (params or {}).items():
        row[f"param_{k}"] = val
    return row


def epoch_rows(final: dict, seed: int, idx: int) -> list[dict]:
    """Per-epoch records ending at the run's final values (geometric decay from L(w0) and 1.0)."""
    rows = []
    for e in range(1, EPOCHS + 1):
        f = e / EPOCHS
        rows.append(
            {
                "epoch": e,
                "train_loss": L0 * (final["final_train_loss"][idx] / L0) ** f,
                "train_acc": final["final_test_acc"][idx] * f,
                "grad_norm": 1.0 * (final["final_grad_norm"][idx]) ** f,
                "val_loss": final["objective"][idx] * (1 + (1 - f)),
                "val_acc": final["final_test_acc"][idx] * f,
                "test_loss": math.nan,
                "test_acc": final["final_test_acc"][idx] * f,
                "lr": 1e-3,
                "lyapunov_drift": -0.1,
                "step": e,
                "time_s": 0.1 * e,
            }
        )
    return rows


def write_trials(root: Path, rows: list[dict], epochs: dict[str, list[dict]] | None = None) -> None:
    """Record ``rows`` (and the epochs of some of them, by trial id) through the real store."""
    store = RunStore(root, create=True)
    for r in rows:
        store.record_trial(r, (epochs or {}).get(r["trial_id"]))


def stored_rows(root: Path) -> list[dict]:
    """The stored rows, as :func:`run_row` dicts (to modify and record again)."""
    df = RunStore(root).trials()
    keep = [c for c in df.columns if c in TRIAL_TYPES or c.startswith("param_") or c in ("repeat",)]
    return [
        {k: (None if (isinstance(v, float) and math.isnan(v)) or v is pd.NA else v) for k, v in r.items()}
        for r in df[keep].to_dict("records")
    ]


def build_run(root: Path, *, finals: bool = True, shuffle: bool = True, spec: dict | None = None) -> Path:
    RunStore(root, create=True).write_spec(spec or make_spec())
    (root / "study.json").write_text(
        json.dumps(
            {
                "started": "2026-01-01T00:00:00+00:00",
                "lyaptune": "0.1.0",
                **({"finished": "2026-01-01T00:10:00+00:00"} if finals else {}),
            }
        )
    )
    rows = []
    for n, (lr, obj, wall) in COSINE_SEARCH.items():
        status = "completed" if obj is not None else "diverged"
        vals = {"objective": obj if obj is not None else math.nan, "wall_s": wall}
        rows.append(
            run_row(
                "adam-cosine",
                f"adam-cosine-search-{n}-s0",
                "search",
                0,
                status=status,
                number=n,
                values=vals,
                params={"lr": lr},
                message="" if obj is not None else "non-finite loss",
            )
        )
    for n, (lr, obj, wall) in DEAD_SEARCH.items():
        rows.append(
            run_row(
                "dead",
                f"dead-search-{n}-s0",
                "search",
                0,
                number=n,
                values={"objective": obj, "wall_s": wall},
                params={"lr": lr},
            )
        )
    for n, ((lr, b2), obj) in enumerate(GRID.items()):
        rows.append(
            run_row(
                "lyam-grid",
                f"lyam-grid-search-{n}-s0",
                "search",
                0,
                number=n,
                values={"objective": obj, "wall_s": 1.5},
                params={"lr": lr, "beta2": b2},
            )
        )
    epochs: dict[str, list[dict]] = {}
    if finals:
        for arm, final, params in (
            ("derived", DERIVED, {}),
            ("adam-cosine", COSINE, {"lr": 8e-3}),
            ("dead", DEAD, {"lr": 0.3}),
            ("lyam-grid", GRID_FINAL, {"lr": 1e-2, "beta2": 0.99}),
        ):
            for i, s in enumerate(FINAL_SEEDS):
                tid = f"{arm}-final-s{s}"
                vals = {k: final[k][i] for k in final}
                rows.append(run_row(arm, tid, "final", s, values=vals, params=params))
                epochs[tid] = epoch_rows(final, s, i)
    if shuffle:  # pairing must go by seed, not by row order
        rng = np.random.default_rng(7)
        rows = [rows[i] for i in rng.permutation(len(rows))]
    write_trials(root, rows, epochs)
    return root


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    return build_run(tmp_path_factory.mktemp("runs") / "synth")


@pytest.fixture(scope="module")
def study(run_dir):
    return load_study(run_dir)


@pytest.fixture(scope="module")
def table(study):
    return compare(study).set_index("arm")  # the spec names no reference: the derived arm


# -- loading ----------------------------------------------------------------------------------------------


def test_load_study_reads_trials_epochs_spec(study):
    assert len(study.trials) == 8 + 3 + 4 + 4 * 6
    assert set(study.epochs["arm"]) == {"derived", "adam-cosine", "dead", "lyam-grid"}
    assert len(study.epochs) == 4 * 6 * EPOCHS
    assert study.spec["name"] == "synth" and study.name == "synth"
    assert study.arms == ["derived", "adam-cosine", "dead", "lyam-grid"]
    assert study.objective == {"metric": "val_loss", "mode": "min", "at": "final"}
    assert study.resources == {"cpu": 2.0, "gpu": 0.5}
    assert study.is_grid("lyam-grid") and not study.is_grid("adam-cosine")


def test_load_study_from_a_file_uri(run_dir):
    st = load_study(run_dir.as_uri())
    assert len(st.trials) == 8 + 3 + 4 + 4 * 6 and len(st.epochs) == 4 * 6 * EPOCHS
    assert st.path == run_dir.as_uri()


def test_a_study_without_trials_says_so(tmp_path):
    root = tmp_path / "r"
    RunStore(root, create=True).write_spec(make_spec())
    with pytest.raises(UserError, match=r"no trials recorded"):
        load_study(root)


def test_corrupt_trials_file_names_the_file(tmp_path):
    root = build_run(tmp_path / "r")
    bad = next((root / "trials").glob("adam-cosine-final-s3*.parquet"))
    data = bad.read_bytes()
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match=r"adam-cosine-final-s3"):
        load_study(root)


def test_corrupt_epoch_file_names_the_file(tmp_path):
    root = build_run(tmp_path / "r")
    bad = root / "epochs" / "arm=adam-cosine" / "adam-cosine-final-s3.parquet"
    bad.write_bytes(b"PAR1 this is not a parquet file PAR1")
    with pytest.raises(UserError, match=r"adam-cosine-final-s3\.parquet"):
        load_study(root)


def test_not_a_run_directory(tmp_path):
    with pytest.raises(UserError, match="not a lyaptune run directory"):
        load_study(tmp_path / "nothing-here")


def test_in_progress_run_with_only_search_rows_loads(tmp_path):
    root = build_run(tmp_path / "r", finals=False)
    # one search trial still running
    write_trials(
        root,
        [
            run_row(
                "adam-cosine",
                "adam-cosine-search-8-s0",
                "search",
                0,
                status="running",
                number=8,
                params={"lr": 1e-2},
            )
        ],
    )
    st = load_study(root)
    assert set(st.trials["phase"]) == {"search"}
    assert st.epochs.empty
    t = compare(st).set_index("arm")
    assert (t["n_final"] == 0).all() and t["rank"].isna().all()
    tv = search_trial_values(st, "adam-cosine")
    assert (tv["state"] == "pending").sum() == 1
    curve = budget_curve(st, "adam-cosine")
    assert curve["n_trials"].iloc[0] == 8 and curve["n_pending"].iloc[0] == 1
    # the report command works on it too (one format only)
    p = _parser()
    args = p.parse_args(
        ["report", str(root), "--out", str(tmp_path / "rep"), "--format", "md", "--no-importance"]
    )
    assert args.func(args) == 0
    assert (tmp_path / "rep" / "report.md").is_file() and not (tmp_path / "rep" / "report.html").exists()
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "in progress" in md and "No final-phase epochs recorded yet" in md


# -- statistics ---------------------------------------------------------------------------------------------


def t_interval(x, level=0.95):
    x = np.asarray(x, float)
    if np.ptp(x) == 0:  # no spread: the interval is the point (scipy gives NaN for scale 0)
        return (x.mean(), x.mean())
    return stats.t.interval(level, x.size - 1, loc=x.mean(), scale=stats.sem(x))


@pytest.mark.parametrize(
    "arm,values", [("derived", DERIVED), ("adam-cosine", COSINE), ("lyam-grid", GRID_FINAL)]
)
@pytest.mark.parametrize(
    "metric", ["final_test_acc", "final_train_loss", "final_grad_norm", "min_grad_norm", "wall_s"]
)
def test_mean_std_ci_match_scipy(table, arm, values, metric):
    x = np.array(values[metric], float)
    r = table.loc[arm]
    assert r[f"{metric}_mean"] == pytest.approx(x.mean(), rel=1e-12)
    assert r[f"{metric}_std"] == pytest.approx(x.std(ddof=1), rel=1e-12)
    lo, hi = t_interval(x)
    assert r[f"{metric}_ci_low"] == pytest.approx(lo, rel=1e-12)
    assert r[f"{metric}_ci_high"] == pytest.approx(hi, rel=1e-12)
    assert r[f"{metric}_ci_method"] == "t" and r[f"{metric}_n"] == 6


def holm_by_hand(p):
    """Holm's step-down procedure written out for a handful of p-values."""
    order = sorted(range(len(p)), key=lambda i: p[i])
    m = len(p)
    adj, running = [0.0] * m, 0.0
    for rank, i in enumerate(order):
        running = max(running, (m - rank) * p[i])
        adj[i] = min(1.0, running)
    return adj


def test_paired_difference_by_seed_holm_and_verdict(table):
    r = table.loc["adam-cosine"]
    d = np.array(COSINE["final_test_acc"]) - np.array(DERIVED["final_test_acc"])
    assert r["final_test_acc_diff"] == pytest.approx(d.mean(), rel=1e-12)
    assert r["final_test_acc_n_pairs"] == 6
    lo, hi = t_interval(d)
    assert (r["final_test_acc_diff_ci_low"], r["final_test_acc_diff_ci_high"]) == pytest.approx(
        (lo, hi), rel=1e-12
    )
    # paired t by hand
    t = d.mean() / (d.std(ddof=1) / math.sqrt(d.size))
    p = 2 * stats.t.sf(abs(t), d.size - 1)
    assert r["final_test_acc_p_ttest"] == pytest.approx(p, rel=1e-9)
    # all six differences negative: exact two-sided Wilcoxon p = 2 / 2^6, a robustness column only
    assert r["final_test_acc_p_wilcoxon"] == pytest.approx(2 / 64, rel=1e-9)
    # the paired t-test decides at every n (METHODS section 8; Wilcoxon no longer takes over at 6 pairs)
    assert r["final_test_acc_test"] == "t" and r["final_test_acc_p"] == r["final_test_acc_p_ttest"]
    # the dead arm collapsed on all six seeds: decided without a test and outside the Holm family
    assert table.loc["dead", "final_test_acc_verdict"] == "worse (collapsed 6 of 6)"
    for m, log in (("final_test_acc", False), ("final_train_loss", True), ("min_grad_norm", True)):
        f = np.log if log else np.asarray
        arms = ["adam-cosine", "lyam-grid"]
        raw = [stats.ttest_rel(f(vals[m]), f(DERIVED[m])).pvalue for vals in (COSINE, GRID_FINAL)]
        adj = holm_by_hand(raw)
        for arm, p_adj, vals in zip(arms, adj, (COSINE, GRID_FINAL)):
            assert table.loc[arm, f"{m}_p_adj"] == pytest.approx(p_adj, rel=1e-9)
            mean_d = float(np.mean(f(vals[m]) - f(DERIVED[m])))
            assert table.loc[arm, f"{m}_diff"] == pytest.approx(mean_d, rel=1e-9)
            mode = "max" if m.endswith("_acc") else "min"
            want = (
                "no significant difference"
                if p_adj >= 0.05
                else ("better" if (mean_d > 0) == (mode == "max") else "worse")
            )
            assert table.loc[arm, f"{m}_verdict"] == want
        assert math.isnan(table.loc["dead", f"{m}_p_adj"]) and not table.loc["dead", f"{m}_tested"]
    # the cosine arm is below the reference on all six seeds: t finds it (Wilcoxon could not, after Holm)
    assert table.loc["adam-cosine", "final_test_acc_verdict"] == "worse"
    assert table.loc["derived", "final_test_acc_verdict"] == "reference"
    assert table.loc["derived", "is_reference"]
    assert table.loc["derived", "reference_source"] == "derived"


def test_paired_test_direction_and_small_n():
    out = paired_test([2.0, 3.0, 4.5], [1.0, 1.5, 2.0])
    assert out["mean_diff"] == pytest.approx(np.mean([1.0, 1.5, 2.5]))
    d = np.array([1.0, 1.5, 2.5])
    assert out["p_ttest"] == pytest.approx(stats.ttest_1samp(d, 0.0).pvalue, rel=1e-12)
    assert out["p"] == out["p_ttest"] and out["test"] == "t"
    # robustness columns at any n: exact Wilcoxon (all three positive: 2/8) and sign-flip (2/8)
    assert out["p_wilcoxon"] == pytest.approx(0.25) and out["p_signflip"] == pytest.approx(0.25)
    with pytest.raises(ValueError, match="same length"):
        paired_test([1.0], [1.0, 2.0])


def test_tuning_cost(table):
    r = table.loc["adam-cosine"]
    wall = sum(w for _, _, w in COSINE_SEARCH.values())
    assert r["search_trials"] == 8 and r["search_runs"] == 8
    assert r["search_wall_s"] == pytest.approx(wall)
    assert r["search_device_s"] == pytest.approx(wall) and r["khat_s"] == 0
    assert r["tuning_device_s"] == pytest.approx(wall)
    assert r["cpu_s"] == pytest.approx(wall * RESOURCES["cpu"])
    assert r["gpu_s"] == pytest.approx(wall * RESOURCES["gpu"])
    assert pd.isna(r["population_wall_s"])  # no population runs in this study
    d = table.loc["derived"]
    # the derived step is not free: six final runs, each with a 0.4 s K_hat estimate
    assert d["search_trials"] == 0 and d["search_device_s"] == 0
    assert d["khat_s"] == pytest.approx(6 * 0.4) and d["tuning_device_s"] == pytest.approx(2.4)
    assert d["cpu_s"] == pytest.approx(2.4 * RESOURCES["cpu"])
    assert d["lipschitz_s"] == pytest.approx(0.4)


# -- collapse ----------------------------------------------------------------------------------------------


def test_collapsed_arm_is_flagged_and_never_ranked(table):
    dead = table.loc["dead"]
    assert dead["n_collapsed"] == 6 and dead["collapsed"]
    assert pd.isna(dead["rank"])
    # without the collapse rule the dead arm would win: its min gradient norm is the smallest by far
    means = {
        a: np.mean(v["min_grad_norm"])
        for a, v in {"derived": DERIVED, "adam-cosine": COSINE, "dead": DEAD, "lyam-grid": GRID_FINAL}.items()
    }
    assert min(means, key=means.get) == "dead"
    ranked = sorted((a for a in means if a != "dead"), key=means.get)
    assert [int(table.loc[a, "rank"]) for a in ranked] == [1, 2, 3]
    assert table.loc[ranked[0], "rank"] == 1 and ranked[0] == "derived"
    assert (table.drop(index="dead")["n_collapsed"] == 0).all()


def test_an_arm_with_a_diverged_final_run_is_not_ranked(tmp_path):
    root = build_run(tmp_path / "r")
    rows = [r for r in stored_rows(root) if r["trial_id"] == "adam-cosine-final-s2"]
    rows[0].update(status="diverged", message="non-finite loss")
    write_trials(root, rows)
    t = compare(load_study(root)).set_index("arm")
    assert t.loc["adam-cosine", "n_diverged"] == 1 and t.loc["adam-cosine", "n_completed"] == 5
    assert t.loc["adam-cosine", "final_test_acc_mean"] == pytest.approx(
        np.delete(COSINE["final_test_acc"], 2).mean()
    )
    assert t.loc["adam-cosine", "final_test_acc_n_pairs"] == 5
    assert pd.isna(t.loc["adam-cosine", "rank"])
    assert t.loc["derived", "rank"] == 1 and t.loc["lyam-grid", "rank"] == 2


def test_collapse_thresholds_at_the_boundary():
    base = {
        "status": "completed",
        "initial_loss": 2.0,
        "info_json": json.dumps({"dataset_info": {"num_classes": 10}}),
    }
    rows = pd.DataFrame(
        [
            {**base, "final_train_loss": 0.951 * 2.0, "final_test_acc": 0.50},  # 4.9% under L(w0): collapsed
            {**base, "final_train_loss": 0.949 * 2.0, "final_test_acc": 0.50},  # 5.1% under: fine
            {**base, "final_train_loss": 1.049 * 2.0, "final_test_acc": 0.50},  # 4.9% over: collapsed
            {**base, "final_train_loss": 30.0, "final_test_acc": 0.50},  # blew up: not a collapse
            {**base, "final_train_loss": 0.5, "final_test_acc": 0.119},  # chance + 1.9 points: collapsed
            {**base, "final_train_loss": 0.5, "final_test_acc": 0.121},  # chance + 2.1 points: fine
            {**base, "final_train_loss": 0.5, "final_test_acc": 0.081},  # chance - 1.9 points: collapsed
            {**base, "final_train_loss": 2.0, "final_test_acc": 0.1},  # both
            {**base, "status": "diverged", "final_train_loss": 2.0, "final_test_acc": 0.1},  # not completed
        ]
    )
    c = classify_collapse(rows)
    assert c["collapsed"].tolist() == [True, False, True, False, True, False, True, True, False]
    assert c["collapse_reason"].tolist() == [
        "loss",
        "",
        "loss",
        "",
        "majority-class accuracy",
        "",
        "majority-class accuracy",
        "loss + majority-class accuracy",
        "",
    ]
    # without label statistics the fallback is the balanced one: ln C and 1/C
    assert c["label_entropy"].tolist() == pytest.approx([math.log(10)] * 9)
    assert c["chance_acc"].tolist() == pytest.approx([0.1] * 9)
    looser = classify_collapse(rows, CollapseThresholds(loss_rel=0.06, acc_points=1.0))
    assert looser["collapsed"].tolist() == [True, True, True, False, False, False, False, True, False]
    with pytest.raises(ConfigError, match="loss_rel"):
        CollapseThresholds(loss_rel=1.5)


def test_collapse_thresholds_are_configurable_in_compare(study):
    # tight thresholds: only some dead seeds stay within 0.1% of L(w0) or exactly at chance accuracy
    th = CollapseThresholds(loss_rel=0.001, acc_points=0.0)
    t = compare(study, thresholds=th, labels=LabelStats.uniform(N_CLASSES)).set_index("arm")
    accs, losses = np.array(DEAD["final_test_acc"]), np.array(DEAD["final_train_loss"])
    h = math.log(N_CLASSES)
    hand = (
        (np.abs(losses - L0) <= 0.001 * L0)
        | (np.abs(losses - h) <= 0.001 * h)
        | (np.abs(accs - 1 / N_CLASSES) <= 0.0)
    )
    assert 0 < hand.sum() < 6
    assert t.loc["dead", "n_collapsed"] == hand.sum()
    assert pd.isna(t.loc["dead", "rank"])
    assert t.attrs["thresholds"] == {"loss_rel": 0.001, "acc_points": 0.0}


# -- budget curves -----------------------------------------------------------------------------------------


def brute_force_expected_best(values, k, mode):
    best = min if mode == "min" else max
    perms = list(itertools.permutations(values))
    by_order = np.mean([best(p[:k]) for p in perms])
    subsets = list(itertools.combinations(values, k))
    by_subset = np.mean([best(s) for s in subsets])
    assert by_order == pytest.approx(by_subset)
    sd = np.sqrt(np.mean([(best(s) - by_subset) ** 2 for s in subsets]))
    return by_subset, sd


@pytest.mark.parametrize("mode", ["min", "max"])
@pytest.mark.parametrize(
    "values", [[0.3, 0.1, 0.5, 0.2, 0.4], [1.0, 1.0, 3.0, 2.0, 2.0], [5.0, -1.0, 2.5, 7.0, 0.0]]
)
def test_expected_best_matches_brute_force(values, mode):
    exp, sd = expected_best(values, mode=mode)
    for k in range(1, len(values) + 1):
        e_bf, sd_bf = brute_force_expected_best(values, k, mode)
        assert exp[k - 1] == pytest.approx(e_bf, rel=1e-12, abs=1e-12)
        assert sd[k - 1] == pytest.approx(sd_bf, rel=1e-9, abs=1e-12)
    best = min if mode == "min" else max
    assert exp[-1] == pytest.approx(best(values))
    assert exp[0] == pytest.approx(np.mean(values))


@pytest.mark.parametrize("failed", ["worst", "exclude"])
def test_budget_curve_of_a_random_search_is_expected_max(tmp_path, failed):
    spec = make_spec()
    spec["search"]["sampler"] = "random"
    study = load_study(build_run(tmp_path / "r", spec=spec))
    ok = [o for _, o, _ in COSINE_SEARCH.values() if o is not None]
    values = ok + ([max(ok)] if failed == "worst" else [])  # one diverged trial, min objective
    curve = budget_curve(study, "adam-cosine", failed=failed)
    assert curve["k"].tolist() == list(range(1, len(values) + 1))
    assert set(curve["method"]) == {"expected-max"}
    for k in range(1, len(values) + 1):
        assert curve["best"].iloc[k - 1] == pytest.approx(brute_force_expected_best(values, k, "min")[0])
    assert curve["n_failed"].iloc[0] == (1 if failed == "worst" else 0)


@pytest.mark.parametrize("failed", ["worst", "exclude"])
def test_budget_curve_of_a_tpe_search_is_best_so_far(study, failed):
    # trial order 0..7; trial 3 diverged (the worst completed value, 0.9, or left out)
    order = [v[1] for _, v in sorted(COSINE_SEARCH.items())]
    worst = max(o for o in order if o is not None)
    vals = [worst if o is None else o for o in order if o is not None or failed == "worst"]
    running = [min(vals[: k + 1]) for k in range(len(vals))]
    curve = budget_curve(study, "adam-cosine", failed=failed)
    assert set(curve["method"]) == {"best-so-far"}  # TPE trials are not i.i.d.: never expected-max
    assert curve["best"].tolist() == pytest.approx(running)
    assert curve["n_repeats"].tolist() == [1] * len(vals)
    assert curve["sd"].isna().all()  # one repeat: no spread to show
    # the grid arm of the same study is an exhaustive grid: expected-max is valid there
    grid = budget_curve(study, "lyam-grid")
    assert set(grid["method"]) == {"expected-max"}
    vals = list(GRID.values())
    assert grid["best"].tolist() == pytest.approx(
        [brute_force_expected_best(vals, k, "min")[0] for k in range(1, 5)]
    )
    assert budget_curve(study, "derived").empty  # not tuned
    with pytest.raises(ConfigError, match="did you mean 'adam-cosine'"):
        budget_curve(study, "adam-cosin")


def test_search_trials_average_over_search_seeds(tmp_path):
    root = tmp_path / "two-seeds"
    RunStore(root, create=True).write_spec(make_spec(search_seeds=(0, 1), final_seeds=(2, 3)))
    rows = []
    plan = {0: [(0, 0.4), (1, 0.6)], 1: [(0, 0.3), (1, None)], 2: [(0, 0.2)]}  # None: diverged
    for n, runs in plan.items():
        for seed, obj in runs:
            rows.append(
                run_row(
                    "adam-cosine",
                    f"adam-cosine-search-{n}-s{seed}",
                    "search",
                    seed,
                    status="completed" if obj is not None else "diverged",
                    number=n,
                    values={"objective": math.nan if obj is None else obj, "wall_s": 1.0},
                    params={"lr": 10.0 ** -(n + 2)},
                )
            )
    write_trials(root, rows)
    tv = search_trial_values(load_study(root), "adam-cosine").set_index("trial")
    assert tv.loc[0, "state"] == "completed" and tv.loc[0, "value"] == pytest.approx(0.5)
    assert tv.loc[1, "state"] == "failed" and math.isnan(tv.loc[1, "value"])
    assert tv.loc[2, "state"] == "pending"  # one of its two seeds has not finished
    curve = budget_curve(load_study(root), "adam-cosine")
    # one completed trial (0.5) and one failed one counted as the worst completed value (0.5)
    assert curve["best"].tolist() == pytest.approx([0.5, 0.5])
    assert curve["n_pending"].iloc[0] == 1


def test_matching_budget(study):
    order = [v[1] for _, v in sorted(COSINE_SEARCH.items())]
    values = [max(o for o in order if o is not None) if o is None else o for o in order]
    target = np.mean(DERIVED["objective"])
    # TPE: the arm's own curve is the best-so-far in trial order
    expected_k = next(k for k in range(1, len(values) + 1) if min(values[:k]) <= target)
    assert expected_k == 6
    m = matching_budget(study, "adam-cosine", "derived")
    assert m.target == pytest.approx(target)
    assert m.k == expected_k
    assert m.budget == len(values)
    # the dead arm never reaches the derived step's validation loss
    d = matching_budget(study, "dead", "derived")
    assert d.k is None and d.budget == 3
    table = matching_budgets(study).set_index("arm")
    assert set(table.index) == {"adam-cosine", "dead", "lyam-grid"}
    assert table.loc["adam-cosine", "k"] == expected_k
    assert pd.isna(table.loc["dead", "k"])


def test_reference_resolution(study):
    t = compare(study, reference="adam-cosine").set_index("arm")
    assert t.loc["adam-cosine", "is_reference"]
    d = np.array(DERIVED["final_test_acc"]) - np.array(COSINE["final_test_acc"])
    assert t.loc["derived", "final_test_acc_diff"] == pytest.approx(d.mean())
    # higher on all 6 seeds: the paired t-test, Holm over the two valid arms (the dead one is decided
    # by its collapse), calls it better; the exact Wilcoxon p (2 / 2^6) would have been lifted to 0.094
    raw = [
        stats.ttest_rel(v["final_test_acc"], COSINE["final_test_acc"]).pvalue for v in (DERIVED, GRID_FINAL)
    ]
    assert t.loc["derived", "final_test_acc_p_adj"] == pytest.approx(holm_by_hand(raw)[0], rel=1e-9)
    assert t.loc["derived", "final_test_acc_verdict"] == "better"
    assert t.loc["dead", "final_test_acc_verdict"] == "worse (collapsed 6 of 6)"
    with pytest.raises(ConfigError, match="did you mean 'derived'"):
        compare(study, reference="derivd")
    none = compare(study, reference=None)
    assert none["final_test_acc_diff"].isna().all()
    with pytest.raises(ConfigError, match="unknown metric 'final_test_ac'; did you mean 'final_test_acc'"):
        compare(study, metrics=["final_test_ac"])


def test_several_runs_in_one_table(tmp_path):
    a = load_study(build_run(tmp_path / "a"))
    b_root = build_run(tmp_path / "b")
    spec = yaml.safe_load((b_root / "spec.yaml").read_text())
    spec["name"], spec["task"]["dataset"] = "synth-b", "digits"
    (b_root / "spec.yaml").write_text(yaml.safe_dump(spec))
    both = compare([a, load_study(b_root)])
    assert len(both) == 8
    assert both["study"].tolist() == ["synth"] * 4 + ["synth-b"] * 4
    assert set(both["dataset"]) == {"synthetic", "digits"}
    assert (both.groupby("study")["rank"].min() == 1).all()  # ranked within each study


# -- sensitivity -------------------------------------------------------------------------------------------


def test_grid_response_and_slices(study):
    s = sensitivity(study, "lyam-grid", importance=False)
    assert s.grid and s.params == ["lr", "beta2"]
    r = s.response_1d["lr"].set_index("value")
    for lr in (1e-3, 1e-2):
        assert r.loc[lr, "mean"] == pytest.approx(np.mean([v for (a, _), v in GRID.items() if a == lr]))
    r2 = s.response_2d[("lr", "beta2")]
    assert r2.loc[1e-2, 0.99] == pytest.approx(GRID[(1e-2, 0.99)])
    c = sensitivity(study, "adam-cosine", importance=False)
    assert not c.grid and c.log_params == ("lr",)
    assert len(c.trials) == 8 and (c.trials["state"] == "failed").sum() == 1


def test_divergence_rate_against_lr_khat():
    lrs = [1e-4, 1e-3, 1e-2, 5e-2, 1e-1, 0.4, 2e-1]
    status = ["completed", "completed", "diverged", "completed", "diverged", "diverged", "errored"]
    rows = pd.DataFrame(
        {"status": status, "param_lr": lrs, "k_hat": [np.nan] * 6 + [20.0], "config_json": ["{}"] * 7}
    )
    edges = [1e-3, 1e-1, 1.0, 10.0]
    d = divergence_vs_lr_khat(rows, k_hat=20.0, bins=edges)
    x = np.array(lrs[:6]) * 20.0  # the errored run does not count
    div = np.array(status[:6]) == "diverged"
    for b in range(3):
        last = b == 2
        m = (x >= edges[b]) & ((x <= edges[b + 1]) if last else (x < edges[b + 1]))
        assert d["n"].iloc[b] == m.sum()
        assert d["n_diverged"].iloc[b] == div[m].sum()
    assert d["rate"].tolist() == pytest.approx([0.0, 1.0, 2 / 3])


def test_divergence_uses_the_derived_arm_k_hat(study):
    s = sensitivity(study, "adam-cosine", importance=False)
    x = np.array([lr for lr, _, _ in COSINE_SEARCH.values()] + [8e-3] * 6) * K_HAT
    assert s.divergence["n"].sum() == x.size
    assert s.divergence["bin_low"].iloc[0] == pytest.approx(x.min())
    assert s.divergence["bin_high"].iloc[-1] == pytest.approx(x.max())
    assert s.divergence["n_diverged"].sum() == 1


def test_importance_from_an_optuna_journal(tmp_path):
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    journal = tmp_path / "optuna.journal"
    storage = JournalStorage(JournalFileBackend(str(journal)))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    st = optuna.create_study(
        study_name="synth/arm", storage=storage, sampler=optuna.samplers.RandomSampler(seed=0)
    )
    # the objective depends on lr only; beta2 is irrelevant
    st.optimize(
        lambda t: (
            (math.log10(t.suggest_float("lr", 1e-5, 1e-1, log=True)) + 3) ** 2
            + 0 * t.suggest_float("beta2", 0.9, 0.999)
        ),
        n_trials=24,
    )
    imp, notes = param_importance(str(journal), "synth/arm")
    assert not notes
    for ev in ("PED-ANOVA", "fANOVA"):
        d = imp[imp["evaluator"] == ev].set_index("param")["importance"]
        assert d["lr"] > d["beta2"]
        assert d.sum() == pytest.approx(1.0)
    few, notes = param_importance(str(journal), "synth/arm", min_trials=100)
    assert few.empty and "at least 100" in notes[0]
    none, notes = param_importance(None, "synth/arm")
    assert none.empty and "no local Optuna journal" in notes[0]


def test_sensitivity_reads_the_arms_optuna_study(tmp_path):
    import optuna
    from optuna.distributions import FloatDistribution
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    root = build_run(tmp_path / "r")
    storage = JournalStorage(JournalFileBackend(str(root / "optuna.journal")))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    st = optuna.create_study(study_name="synth/adam-cosine", storage=storage)
    for _, (lr, obj, _) in COSINE_SEARCH.items():
        st.enqueue_trial({"lr": lr})
        trial = st.ask({"lr": FloatDistribution(1e-4, 1e-1, log=True)})
        assert trial.params["lr"] == lr
        st.tell(trial, obj) if obj is not None else st.tell(trial, state=optuna.trial.TrialState.FAIL)
    study = load_study(root)
    assert study.journal == str(root / "optuna.journal")
    s = sensitivity(study, "adam-cosine", min_trials=5)
    # one searched hyperparameter: it carries all the importance under both evaluators
    assert sorted(s.importance["evaluator"]) == ["PED-ANOVA", "fANOVA"]
    assert s.importance["importance"].tolist() == pytest.approx([1.0, 1.0])
    skipped = sensitivity(study, "adam-cosine")  # 7 completed trials < 10
    assert skipped.importance.empty and any("7 completed trials, at least 10" in n for n in skipped.notes)
    missing = sensitivity(study, "dead", min_trials=1)  # no Optuna study for this arm in the journal
    assert missing.importance.empty and any("cannot open" in n for n in missing.notes)


# -- figures and report ------------------------------------------------------------------------------------


def test_curve_bands_match_numpy(study):
    b = curve_bands(study.epochs, "grad_norm").set_index(["arm", "epoch"])
    for e in range(1, EPOCHS + 1):
        vals = np.array(DERIVED["final_grad_norm"]) ** (e / EPOCHS)
        row = b.loc[("derived", e)]
        assert row["mean"] == pytest.approx(vals.mean())
        assert (row["low"], row["high"]) == pytest.approx((vals.min(), vals.max()))
        assert row["n"] == 6


def test_training_curves_figure_marks_collapsed_arms(study, table):
    collapsed = {a: (int(r["n_collapsed"]), int(r["n_completed"])) for a, r in table.iterrows()}
    fig = training_curves_figure(study.epochs, arms=study.arms, reference="derived", collapsed=collapsed)
    axes = fig.get_axes()
    assert len(axes) == 3
    assert axes[0].get_yscale() == "log"
    lines = {ln.get_label(): ln for ln in axes[0].get_lines()}
    assert lines["dead (collapsed 6/6)"].get_linestyle() == "--"
    assert lines["derived (reference)"].get_linestyle() == "-"


@pytest.mark.integration
def test_write_report_produces_every_file(study, tmp_path):
    out = tmp_path / "report"
    files = write_report(study, out, importance=False)
    names = {str(p.relative_to(out)) for p in files}
    expected = {
        "report.md",
        "report.html",
        "compare.csv",
        "compare.json",
        "budget.csv",
        "matching.csv",
        "runs.csv",
    }
    for stem in (
        "curves",
        "budget",
        "slices_adam-cosine",
        "slices_dead",
        "slices_lyam-grid",
        "grid_lyam-grid",
        "divergence",
        "gradnorm_vs_schedulers",  # derived + a schedule arm (adam-cosine): papers/003 Figure 1
    ):
        expected |= {f"figures/{stem}.png", f"figures/{stem}.svg"}
    assert expected <= names
    assert all((out / n).stat().st_size > 0 for n in names)
    md = (out / "report.md").read_text()
    assert "dead: 6 of 6 completed final runs collapsed" in md
    assert "loss_rel=0.05" in md and "acc_points=2" in md
    html = (out / "report.html").read_text()
    import re

    for src in re.findall(r'(?:src|href)="([^"]+)"', html):
        assert (out / src).is_file(), src
    assert "<script" not in html
    settings = json.loads((out / "compare.json").read_text())["settings"]
    assert settings["collapse_thresholds"] == {"loss_rel": 0.05, "acc_points": 2.0}
    assert settings["reference"] == "derived"
    assert "![papers/003 Figure 1" in md and "](figures/gradnorm_vs_schedulers.png)" in md
    # lyam-grid is a constant-step grid, but its search runs stored no epochs: no Figure 2 to draw
    assert "constant_steps.png" not in md and not (out / "figures" / "constant_steps.png").exists()


def test_paper_figures_of_the_study(study, run_dir):
    """Schedulers figure: the derived step and adam-cosine (from their final runs). The constant-steps
    figure needs the grid points' search epochs: drawn once lyam-grid's search runs have some, with
    one line per grid point (counted from its search runs here) plus the derived step and ``dead``."""
    from lyaptune.analysis.paper_figures import paper_figures

    figs = {f.stem: f for f in paper_figures(study)}
    assert list(figs) == ["gradnorm_vs_schedulers"]
    for ax in figs["gradnorm_vs_schedulers"].figure.get_axes():
        assert [ln.get_label().split(" ")[0] for ln in ax.get_lines()] == ["derived", "adam-cosine"]
    t = study.trials
    search = t[(t["arm"] == "lyam-grid") & (t["phase"] == "search") & (t["status"] == "completed")]
    points = {json.dumps(json.loads(p), sort_keys=True) for p in search["params_json"]}
    assert len(points) >= 2
    e = study.epochs
    one_run = e[e["trial_id"] == e.loc[e["arm"] == "derived", "trial_id"].iloc[0]].to_dict("records")
    extra = [
        {**row, "arm": "lyam-grid", "phase": "search", "trial_id": tid}
        for tid in search["trial_id"]
        for row in one_run
    ]
    with_search = Study(
        trials=t, epochs=pd.concat([study.epochs, pd.DataFrame(extra)], ignore_index=True), spec=study.spec
    )
    figs = {f.stem: f for f in paper_figures(with_search)}
    assert list(figs) == ["constant_steps", "gradnorm_vs_schedulers"]
    for ax in figs["constant_steps"].figure.get_axes():
        labels = [ln.get_label() for ln in ax.get_lines()]
        assert len(labels) == len(points) + 2, labels
        assert sum(x.startswith("lyam-grid ") for x in labels) == len(points)
        assert sum(x.startswith("derived ") for x in labels) == 1
    for ax in figs["gradnorm_vs_schedulers"].figure.get_axes():
        assert [ln.get_label().split(" ")[0] for ln in ax.get_lines()] == ["derived", "adam-cosine"]


@pytest.mark.integration
def test_write_report_without_figures(study, tmp_path):
    with_figs = tmp_path / "full"
    write_report(study, with_figs, importance=False)
    out = tmp_path / "bare"
    files = write_report(study, out, importance=False, figures=False)
    assert not [p for p in files if p.parent.name == "figures"]
    assert not list((out / "figures").iterdir())
    md = (out / "report.md").read_text()
    assert "![" not in md and "Figures were not drawn (written with --no-figures)" in md
    # the tables are those of the full report
    assert (out / "compare.csv").read_text() == (with_figs / "compare.csv").read_text()
    assert (out / "budget.csv").read_text() == (with_figs / "budget.csv").read_text()


def _parser():
    from lyaptune._cli_analysis import add_commands

    p = argparse.ArgumentParser(prog="lyaptune")
    add_commands(p.add_subparsers(dest="command"))
    return p


def test_cli_compare_and_report_functions(run_dir, tmp_path, capsys):
    p = _parser()
    args = p.parse_args(["compare", str(run_dir), str(run_dir), "--out", str(tmp_path / "cross")])
    assert args.func(args) == 0
    assert (tmp_path / "cross" / "cross_study.json").is_file()
    out = capsys.readouterr().out
    assert "dead" in out and "collapsed" in out and "adam-cosine" in out
    with pytest.raises(UserError, match="unknown report format 'pdf'"):
        args = p.parse_args(["report", str(run_dir), "--out", str(tmp_path / "rep2"), "--format", "md,pdf"])
        args.func(args)
    with pytest.raises(UserError, match="reference arm"):
        args = p.parse_args(["compare", str(run_dir), "--reference", "nope"])
        args.func(args)


def _script(name: str):
    return runpy.run_path(str(REPO / "analysis" / f"{name}.py"), run_name="analysis_script")["main"]


@pytest.mark.integration
def test_analysis_scripts(run_dir, tmp_path, capsys):
    # one script as a user runs it, in a fresh interpreter
    r = subprocess.run(
        [
            sys.executable,
            str(REPO / "analysis" / "fig_gradnorm_vs_schedulers.py"),
            str(run_dir),
            "--out",
            str(tmp_path / "figs"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "figs" / "gradnorm_vs_schedulers.png").is_file()
    # the others in-process
    assert _script("table_compare")([str(run_dir), "--csv", str(tmp_path / "t.csv")]) == 0
    out = capsys.readouterr().out
    assert "derived (ref)" in out and "dead [collapsed 6/6]" in out
    assert len(pd.read_csv(tmp_path / "t.csv")) == 4
    assert _script("fig_constant_steps")([str(run_dir), "--out", str(tmp_path / "figs")]) == 0
    assert _script("budget_curves")([str(run_dir), "--out", str(tmp_path / "figs")]) == 0
    assert "adam-cosine: k = 6 of 8 trials (best-so-far)" in capsys.readouterr().out
    assert _script("sensitivity")([str(run_dir), "--arms", "lyam-grid", "--out", str(tmp_path / "figs")]) == 0
    for stem in ("constant_steps", "budget_curves", "slices_lyam-grid", "grid_lyam-grid", "divergence"):
        assert (tmp_path / "figs" / f"{stem}.png").is_file(), stem
    assert _script("table_compare")([str(tmp_path / "nope")]) == 2
    assert "not a lyaptune run directory" in capsys.readouterr().err


def test_a_runs_lr_is_param_lr_else_derived_lr_else_its_configs_fixed_lr():
    from lyaptune.analysis.sensitivity import _run_lrs

    configs = [
        {},
        {},
        {"optimizer_args": {"lr": 0.04}},
        {"optimizer_args": {"lr": 0.5}},
        {"optimizer_args": {}},
    ]
    rows = pd.DataFrame(
        {
            "param_lr": [0.01, np.nan, np.nan, -1.0, np.nan],  # -1: not a step size, the next source decides
            "derived_lr": [0.9, 0.02, np.nan, 0.03, np.nan],
            "config_json": [json.dumps(c) for c in configs],
        }
    )
    assert _run_lrs(rows) == pytest.approx([0.01, 0.02, 0.04, 0.03, np.nan], nan_ok=True)
    assert _run_lrs(rows.drop(columns=["derived_lr"])) == pytest.approx(
        [0.01, np.nan, 0.04, 0.5, np.nan], nan_ok=True
    )


def test_dense_layers_are_rasterized_in_svg_and_the_rest_stays_vector(tmp_path):
    from lyaptune.analysis.figures import RASTER_POINTS, _figure, save_figure

    fig = _figure(4.0, 3.0)
    ax = fig.subplots()
    rng = np.random.default_rng(0)
    dense = ax.scatter(rng.random(RASTER_POINTS + 1), rng.random(RASTER_POINTS + 1), s=4)
    (sparse,) = ax.plot(np.arange(50), np.arange(50) / 50)
    band = ax.fill_between(np.arange(RASTER_POINTS), 0.0, 1.0, alpha=0.1)
    svg, png = save_figure(fig, tmp_path / "f", formats=("svg", "png"))
    assert dense.get_rasterized() and band.get_rasterized() and not sparse.get_rasterized()
    text = Path(svg).read_text()
    assert text.count("<image") == 1  # the scatter and the band, drawn one after the other: one raster
    assert len(text) < 200_000  # 5,001 vector markers alone would be about 1 MB
    assert Path(png).stat().st_size > 0
