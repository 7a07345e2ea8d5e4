"""The study runner end to end: a real local Ray, real Optuna journal, real Parquet, the real CLI."""

import subprocess
import sys
import time
from pathlib import Path

import optuna
import pandas as pd
import pytest
import yaml
from _ray import own_ray, shared_ray

from lyaptune.store import RunStore
from lyaptune.study import load_spec, run_study
from lyaptune.study.searcher import journal_storage

#: Every test here runs a study (Ray, or the CLI in a subprocess): the integration tier, or slow.
pytestmark = pytest.mark.integration

SPEC = {
    "name": "tiny",
    "task": {
        "dataset": "synthetic",
        "dataset_args": {"n_train": 200, "n_test": 80, "input_shape": [1, 4, 4], "num_classes": 3},
        "model": "fc",
        "model_args": {"depth": 1, "width": 12},
        "epochs": 3,
        "batch_size": "full",
        "validation_fraction": 0.2,
        "device": "cpu",
    },
    "objective": {"metric": "val_loss", "mode": "min", "at": "final"},
    # final_seeds left out: the default, the 3 seeds after the largest search seed (1, 2, 3)
    "search": {"sampler": "tpe", "trials_per_arm": 3, "seeds": [0]},
    "resources": {"cpu": 1, "gpu": 0},
    "max_concurrent": 2,
    "arms": [
        {"name": "derived", "optimizer": "adam", "schedule": "derived-constant", "lipschitz": {"samples": 2}},
        {
            "name": "adam-exponential",
            "optimizer": "adam",
            "schedule": "exponential",
            "space": {"lr": {"low": 1e-4, "high": 1e-1, "log": True}, "gamma": {"low": 0.8, "high": 0.999}},
        },
        {"name": "lyam", "optimizer": "lyam", "space": "default"},
    ],
}
SEARCHED = ("adam-exponential", "lyam")
DEFAULT_FINAL_SEEDS = [1, 2, 3]  # seeds [0] -> the three seeds after 0 (METHODS.md section 8)


def stored_trials(run_dir: Path) -> pd.DataFrame:
    """The trials table of a run directory, read through the store (whatever its file layout)."""
    return RunStore(run_dir).trials()


def write_spec(tmp_path, **changes):
    spec = {**SPEC, **changes}
    path = tmp_path / f"{spec['name']}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def cli(*args, timeout=600, **kw):
    return subprocess.run(
        [sys.executable, "-m", "lyaptune.cli", *args], capture_output=True, text=True, timeout=timeout, **kw
    )


def check_complete(run_dir: Path, spec_dict=SPEC):
    """The guarantees of a finished run directory."""
    store = RunStore(run_dir)
    trials = store.trials()
    n_final = len(spec_dict["search"].get("final_seeds", DEFAULT_FINAL_SEEDS))
    budget = spec_dict["search"]["trials_per_arm"]
    assert trials["trial_id"].is_unique
    for arm in SEARCHED:
        rows = trials[trials["arm"] == arm]
        assert (rows["phase"] == "search").sum() == budget
        assert (rows["phase"] == "final").sum() == n_final
    assert len(trials) == budget * len(SEARCHED) + n_final * len(spec_dict["arms"])
    assert set(trials["status"]) == {"completed"}
    epochs = store.epochs()
    assert not epochs.duplicated(["trial_id", "epoch"]).any()
    counts = epochs.groupby("trial_id").size()
    assert (counts == spec_dict["task"]["epochs"]).all() and len(counts) == len(trials)
    # one Optuna study per searched arm, each with exactly the budget, best == trials.parquet's best
    storage = journal_storage(run_dir / "optuna.journal")
    names = sorted(s.study_name for s in optuna.get_all_study_summaries(storage))
    assert names == sorted(f"{spec_dict['name']}/{a}" for a in SEARCHED)
    for arm in SEARCHED:
        study = optuna.load_study(study_name=f"{spec_dict['name']}/{arm}", storage=storage)
        assert len(study.trials) == budget
        search = trials[(trials["arm"] == arm) & (trials["phase"] == "search")]
        best_row = search.loc[search["objective"].idxmin()]
        assert int(best_row["optuna_number"]) == study.best_trial.number
        assert best_row["objective"] == pytest.approx(study.best_value)
        final = trials[(trials["arm"] == arm) & (trials["phase"] == "final")]
        for name, value in study.best_trial.params.items():
            assert (final[f"param_{name}"] == value).all()
    return store


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):

    tmp = tmp_path_factory.mktemp("study")
    shared_ray()
    spec = load_spec(write_spec(tmp))
    store = run_study(spec, out=tmp / "runs", log=lambda m: None)
    return Path(store.path), spec


def test_three_arm_study_completes_with_every_row_once(finished_run):
    run_dir, _ = finished_run
    store = check_complete(run_dir)
    trials = store.trials()
    derived = trials[trials["arm"] == "derived"]
    assert (derived["phase"] == "final").all() and derived["k_hat"].notna().all()
    assert (derived["derived_lr"] > 0).all()
    epochs = store.epochs("derived")
    # the derived arm trains at exactly its derived rate
    for _, row in derived.iterrows():
        lrs = epochs[epochs["trial_id"] == row["trial_id"]]["lr"]
        assert lrs.tolist() == pytest.approx([row["derived_lr"]] * len(lrs))
    assert (run_dir / "spec.yaml").exists() and "ray" in store.read_study_info()


def test_default_final_seeds_are_disjoint_from_the_search_seeds(finished_run):
    run_dir, _ = finished_run
    trials = RunStore(run_dir).trials()
    search_seeds = set(trials.loc[trials["phase"] == "search", "seed"])
    final_seeds = set(trials.loc[trials["phase"] == "final", "seed"])
    assert search_seeds == {0}
    assert final_seeds == set(DEFAULT_FINAL_SEEDS) and not final_seeds & search_seeds
    for arm in SEARCHED + ("derived",):
        rows = trials[(trials["arm"] == arm) & (trials["phase"] == "final")]
        assert sorted(rows["seed"]) == DEFAULT_FINAL_SEEDS, arm
    stored = yaml.safe_load((run_dir / "spec.yaml").read_text())
    assert stored["search"]["final_seeds"] == DEFAULT_FINAL_SEEDS
    assert stored["reference"] == "derived"
    assert stored["compare"] == [{"metric": "final_val_loss", "mode": "min"}]


def test_resume_of_a_finished_run_changes_nothing(finished_run):
    run_dir, _ = finished_run
    before = stored_trials(run_dir)
    r = cli("resume", str(run_dir))
    assert r.returncode == 0, r.stderr
    after = stored_trials(run_dir)
    pd.testing.assert_frame_equal(before, after)


def test_status_command(finished_run):
    run_dir, _ = finished_run
    r = cli("status", str(run_dir))
    assert r.returncode == 0, r.stderr
    assert "adam-exponential: search 3/3; final 3/3" in r.stdout
    assert "derived: search 0/0; final 3/3" in r.stdout


@pytest.mark.slow
def test_study_runs_across_two_nodes(tmp_path):
    import ray
    from ray.cluster_utils import Cluster

    own_ray()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False)
    try:
        spec = load_spec(
            write_spec(tmp_path, search={**SPEC["search"], "trials_per_arm": 2}, arms=SPEC["arms"][1:])
        )
        store = run_study(spec, out=tmp_path / "runs", log=lambda m: None)
    finally:
        ray.shutdown()
        cluster.shutdown()
    trials = store.trials()
    nodes = {__import__("json").loads(s)["node_id"] for s in trials["info_json"]}
    assert len(nodes) == 2, nodes
    assert set(trials["status"]) == {"completed"}


@pytest.mark.parametrize(
    "change,needle",
    [
        ({"arms": []}, "arms"),
        ({"arms": [{"name": "x", "optimizer": "lyamm"}]}, "unknown optimizer 'lyamm'"),
        ({"search": {**SPEC["search"], "trials_per_arm": -1}}, "search.trials_per_arm"),
        ({"arms": [{"name": "x", "optimizer": "adam", "space": {"lr": {"low": 0.1, "high": 0.01}}}]}, "low"),
        ({"arms": [{"name": "x", "optimizer": "adam", "space": {"lrr": {"low": 0.1, "high": 1}}}]}, "lrr"),
        ({"serach": {}}, "serach"),
        (
            {"search": {**SPEC["search"], "final_seeds": [0, 1]}},
            "search.final_seeds: final seeds [0, 1] overlap the search seeds [0] (search.seeds) in [0]",
        ),
        (
            {"compare": {"metric": "grad_norm"}},
            "compare.metric: write the final-epoch value as 'final_grad_norm'",
        ),
        ({"reference": "adam"}, "reference: unknown reference arm 'adam'"),
    ],
)
def test_spec_errors_exit_before_ray_starts(tmp_path, change, needle):
    path = write_spec(tmp_path, **change)
    t0 = time.time()
    r = cli("run", str(path), "--out", str(tmp_path / "runs"))
    assert r.returncode == 2
    err = r.stderr.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err and needle in err, err
    assert not (tmp_path / "runs").exists()
    assert time.time() - t0 < 60


def test_dry_run_lists_arms_without_ray(tmp_path):
    r = cli("run", str(write_spec(tmp_path)), "--dry-run")
    assert r.returncode == 0, r.stderr
    assert "lyam: lyam + constant; budget 3" in r.stdout and "lr in [0.0001, 1] log" in r.stdout
    assert "derived: adam + derived-constant; budget 0; no search" in r.stdout


def test_grid_arm_trains_as_a_population_with_single_trial_results(tmp_path):
    import json

    from lyaptune.train import run_trial

    arms = [
        {"name": "adam-grid", "optimizer": "adam", "grid": {"lr": [1e-3, 1e-2, 3e-2], "beta2": [0.99, 0.999]}}
    ]
    spec = load_spec(
        write_spec(
            tmp_path, name="grid", arms=arms, search={**SPEC["search"], "final_seeds": [1]}, population="on"
        )
    )
    shared_ray()
    store = run_study(spec, out=tmp_path / "runs", log=lambda m: None)
    trials = store.trials()
    search = trials[trials["phase"] == "search"]
    assert len(search) == 6 and set(search["status"]) == {"completed"}
    assert {json.loads(s)["population_size"] for s in search["info_json"]} == {6}
    points = {(r.param_lr, r.param_beta2) for r in search.itertuples()}
    assert points == {(a, b) for a in (1e-3, 1e-2, 3e-2) for b in (0.99, 0.999)}
    row = search[(search["param_lr"] == 1e-2) & (search["param_beta2"] == 0.99)].iloc[0]
    alone = run_trial(spec.trial_config("adam-grid", {"lr": 1e-2, "beta2": 0.99}, 0))
    assert row["final_train_loss"] == pytest.approx(alone.records[-1]["train_loss"], rel=1e-4)
    epochs = store.epochs("adam-grid")
    assert not epochs.duplicated(["trial_id", "epoch"]).any() and len(epochs) == 7 * 3


def test_asha_stops_some_runs_and_keeps_their_epochs(tmp_path):

    arms = [{"name": "adam", "optimizer": "adam", "space": {"lr": {"low": 1e-5, "high": 1e-1, "log": True}}}]
    spec = load_spec(
        write_spec(
            tmp_path,
            name="asha",
            arms=arms,
            task={**SPEC["task"], "epochs": 6},
            search={
                "sampler": "random",
                "trials_per_arm": 6,
                "final_seeds": [1],
                "scheduler": "asha",
                "grace_period": 1,
                "reduction_factor": 3,
            },
        )
    )
    shared_ray()
    store = run_study(spec, out=tmp_path / "runs", log=lambda m: None)
    trials = store.trials()
    search = trials[trials["phase"] == "search"]
    assert len(search) == 6 and set(search["status"]) <= {"completed", "stopped"}
    assert (search["status"] == "completed").any()
    stopped = search[search["status"] == "stopped"]
    assert (stopped["epochs_completed"] < 6).all() and (stopped["epochs_completed"] >= 1).all()
    assert (search.loc[search["status"] == "completed", "epochs_completed"] == 6).all()
    epochs = store.epochs()
    counts = epochs.groupby("trial_id").size()
    for row in search.itertuples():
        assert counts[row.trial_id] == row.epochs_completed
    assert (trials["phase"] == "final").sum() == 1


def test_search_repeats_are_independent_studies_and_the_finals_take_the_best_of_all(tmp_path):
    """StudyPlan without Ray: R Optuna studies per sampled arm, each seeded and with the full budget."""
    import json
    import math

    from lyaptune.study.searcher import StudyPlan, repeat_of
    from lyaptune.study.spec import StudySpec

    space = SPEC["arms"][1]["space"]
    spec = StudySpec.from_dict(
        {
            **SPEC,
            "search": {
                "sampler": "random",
                "sampler_seed": 4,
                "trials_per_arm": 4,
                "seeds": [0],
                "repeats": 3,
            },
            "arms": [
                SPEC["arms"][1],
                {"name": "adam-grid", "optimizer": "adam", "grid": {"lr": [1e-3, 1e-2]}},
            ],
        }
    )
    run = tmp_path / "run"
    store = RunStore(run, create=True)
    plan = StudyPlan(spec, store, run / "optuna.journal")

    def loss(params):  # a synthetic objective with its minimum at lr = 10**-2.5, gamma = 0.9
        return (math.log10(params["lr"]) + 2.5) ** 2 + (params.get("gamma", 0.9) - 0.9) ** 2

    while (job := plan.next_job()) != "FINISHED":
        assert job is not None  # every job is finished before the next is asked for
        v = loss(job.params)
        plan.finish(job, "completed", [{"epoch": 1, "val_loss": v, "train_loss": v}], {}, 0.01)

    trials = store.trials()
    search = trials[(trials["phase"] == "search") & (trials["arm"] == "adam-exponential")]
    assert len(search) == 12 and trials["trial_id"].is_unique
    assert sorted(search["trial_id"]) == sorted(
        f"adam-exponential-search-{f'r{r}-' if r else ''}{n:04d}-s0" for r in range(3) for n in range(4)
    )
    repeats = [repeat_of(t) for t in search["trial_id"]]
    assert sorted(repeats) == [0] * 4 + [1] * 4 + [2] * 4
    if "repeat" in trials.columns:  # the store carries the repeat column
        assert list(search["repeat"]) == repeats
    # the grid arm runs its grid once, in repeat 0
    grid = trials[(trials["phase"] == "search") & (trials["arm"] == "adam-grid")]
    assert sorted(grid["param_lr"]) == [1e-3, 1e-2] and {repeat_of(t) for t in grid["trial_id"]} == {0}

    # each repeat is its own Optuna study; trial k of repeat r is the draw of a random sampler seeded
    # trial_seed(4, arm, r, k) (one sampler per ask: issue 21), whatever was asked before it
    from lyaptune.study.spaces import trial_seed

    storage = journal_storage(run / "optuna.journal")
    names = sorted(s.study_name for s in optuna.get_all_study_summaries(storage))
    assert names == [
        "tiny/adam-exponential",
        "tiny/adam-exponential/r1",
        "tiny/adam-exponential/r2",
        "tiny/adam-grid",
    ]
    for r in range(3):
        expected = []
        for k in range(4):
            seed = trial_seed(4, "adam-exponential", r, k)
            reference = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
            t = reference.ask()
            lr = t.suggest_float("lr", space["lr"]["low"], space["lr"]["high"], log=True)
            gamma = t.suggest_float("gamma", space["gamma"]["low"], space["gamma"]["high"])
            expected.append((lr, gamma))
            reference.tell(t, 0.0)
        rows = search[[repeat_of(t) == r for t in search["trial_id"]]].sort_values("optuna_number")
        assert list(rows["param_lr"]) == pytest.approx([e[0] for e in expected])
        assert list(rows["param_gamma"]) == pytest.approx([e[1] for e in expected])

    # the final runs re-run the best configuration over all repeats, on fresh seeds
    values = [loss({"lr": a, "gamma": b}) for a, b in zip(search["param_lr"], search["param_gamma"])]
    best = search.iloc[min(range(len(values)), key=values.__getitem__)]
    final = trials[(trials["phase"] == "final") & (trials["arm"] == "adam-exponential")]
    assert sorted(final["seed"]) == [1, 2, 3]
    assert (final["param_lr"] == best["param_lr"]).all() and (
        final["param_gamma"] == best["param_gamma"]
    ).all()
    assert {json.loads(c)["seed"] for c in final["config_json"]} == {1, 2, 3}
    progress = plan.progress()["adam-exponential"]
    assert (progress["search"], progress["budget"], progress["final"]) == (12, 12, 3)


def test_search_repeats_resume_after_a_killed_driver(tmp_path):
    """A new StudyPlan on the same journal and store finishes every repeat exactly once."""
    from lyaptune.study.searcher import StudyPlan
    from lyaptune.study.spec import StudySpec

    spec = StudySpec.from_dict(
        {
            **SPEC,
            "search": {"sampler": "tpe", "trials_per_arm": 3, "seeds": [0, 1], "repeats": 2},
            "arms": [SPEC["arms"][1]],
        }
    )
    run = tmp_path / "run"

    def finish(plan, job):
        v = (job.params["lr"] - 0.01) ** 2 + job.seed
        plan.finish(job, "completed", [{"epoch": 1, "val_loss": v}], {}, 0.01)

    store = RunStore(run, create=True)
    store.write_spec(spec.to_dict())
    first = StudyPlan(spec, store, run / "optuna.journal")
    started = [first.next_job() for _ in range(7)]  # the repeats take turns: trials 0 and 1 of each ...
    assert [j.repeat for j in started] == [0, 0, 1, 1, 0, 0, 1]
    for job in started[:4]:  # ... and only trial 0 of each finishes before the driver dies
        finish(first, job)
    second = StudyPlan(spec, RunStore(run), run / "optuna.journal")
    while (job := second.next_job()) != "FINISHED":
        assert job is not None
        finish(second, job)
    trials = RunStore(run).trials()
    search = trials[trials["phase"] == "search"]
    assert len(search) == 2 * 3 * 2 and search["trial_id"].is_unique  # repeats x trials x seeds
    storage = journal_storage(run / "optuna.journal")
    for name in ("tiny/adam-exponential", "tiny/adam-exponential/r1"):
        study = optuna.load_study(study_name=name, storage=storage)
        assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 3, name
    assert sorted(trials.loc[trials["phase"] == "final", "seed"]) == [2, 3, 4]
