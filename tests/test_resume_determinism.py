"""An interrupted study, resumed, proposes what the uninterrupted one proposes (issue 21).

The fast tests drive :class:`StudyPlan` without Ray: a "driver" is a plan built on the run directory's
store and Optuna journal; a killed driver is a plan dropped with jobs asked but not finished, and a
resume is a new plan on the same files. The objective is a closed-form function of the parameters, so
the tables compare exactly. The slow tests (real drivers, real Ray, SIGKILL at known points of the
fault-injection hook) are in tests/test_resume_e2e.py.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import optuna
import pytest

from lyaptune.store import RunStore
from lyaptune.study.searcher import StudyPlan, journal_storage
from lyaptune.study.spaces import make_sampler, trial_seed
from lyaptune.study.spec import StudySpec

SPEC = {
    "name": "det",
    "task": {
        "dataset": "synthetic",
        "dataset_args": {"n_train": 60, "n_test": 20, "input_shape": [1, 2, 2], "num_classes": 2},
        "model": "fc",
        "epochs": 1,
        "device": "cpu",
    },
    "search": {"sampler": "tpe", "trials_per_arm": 14, "seeds": [0], "final_seeds": [1, 2]},
    "max_concurrent": 1,
    "arms": [
        {
            "name": "adam-exponential",
            "optimizer": "adam",
            "schedule": "exponential",
            "space": {"lr": {"low": 1e-4, "high": 1e-1, "log": True}, "gamma": {"low": 0.8, "high": 0.999}},
        },
        {"name": "lyam", "optimizer": "lyam", "space": "default"},
        {"name": "grid", "optimizer": "adam", "grid": {"lr": [1e-3, 1e-2, 1e-1]}},
    ],
}


def loss(params: dict) -> float:
    """A closed-form objective: minimum at lr = 10**-2.5 (and gamma = 0.9, beta1 = 0.9)."""
    v = (math.log10(params["lr"]) + 2.5) ** 2
    return v + (params.get("gamma", 0.9) - 0.9) ** 2 + (params.get("beta1", 0.9) - 0.9) ** 2


def finish(plan: StudyPlan, job) -> None:
    v = loss(job.params) + 0.01 * job.seed
    plan.finish(job, "completed", [{"epoch": 1, "val_loss": v, "train_loss": v}], {}, 0.01)


def plan_for(spec: StudySpec, run: Path) -> StudyPlan:
    store = RunStore(run, create=not (run / "spec.yaml").exists())
    if not (run / "spec.yaml").exists():
        store.write_spec(spec.to_dict())
    return StudyPlan(spec, store, run / "optuna.journal")


def drive(plan: StudyPlan, stop_after: int | None = None, leave_open: int = 0) -> bool:
    """Run jobs one at a time (max_concurrent 1). After ``stop_after`` finished jobs, ask for
    ``leave_open`` more without finishing them (in flight when the driver dies) and return False."""
    done = 0
    while True:
        if stop_after is not None and done == stop_after:
            for _ in range(leave_open):
                assert plan.next_job() not in (None, "FINISHED")
            return False
        job = plan.next_job()
        if job == "FINISHED":
            return True
        assert job is not None
        finish(plan, job)
        done += 1


def table(run: Path):
    t = RunStore(run).trials()
    cols = ["trial_id", "arm", "phase", "seed", "params_json", "objective", "status"]
    return t[cols].sort_values("trial_id").reset_index(drop=True)


@pytest.mark.parametrize("sampler", ["tpe", "random", "qmc"])
def test_a_resumed_plan_proposes_what_the_uninterrupted_one_proposes(tmp_path, sampler):
    spec = StudySpec.from_dict({**SPEC, "search": {**SPEC["search"], "sampler": sampler}})
    ref = tmp_path / "ref"
    assert drive(plan_for(spec, ref))
    expected = table(ref)
    # 14 TPE trials per sampled arm (10 random start-up trials, then TPE), 3 grid points, 2 finals each
    assert len(expected) == 14 + 14 + 3 + 3 * 2

    # killed three times: after 0 runs with one asked, after 9 with one asked (the random start-up
    # phase), after 25 with none asked (in TPE's model phase); each kill drops the driver's plan
    run = tmp_path / "killed"
    for stop, leave in ((0, 1), (9, 1), (16, 0)):
        assert not drive(plan_for(spec, run), stop_after=stop, leave_open=leave)
    assert drive(plan_for(spec, run))
    got = table(run)
    assert got.equals(expected), got.compare(expected) if got.shape == expected.shape else got
    search = got[got["phase"] == "search"]
    assert not search.duplicated(["arm", "params_json"]).any()


def test_a_trial_asked_but_not_told_is_rerun_with_its_parameters(tmp_path):
    spec = StudySpec.from_dict(SPEC)
    run = tmp_path / "run"
    plan = plan_for(spec, run)
    first = plan.next_job()
    assert first is not None and first != "FINISHED"
    asked = dict(first.params)
    # the driver dies: a new one re-runs that job (same id, same parameters) before asking anything
    again = plan_for(spec, run).next_job()
    assert again.trial_id == first.trial_id and again.params == asked
    study = optuna.load_study(study_name=f"det/{first.arm}", storage=journal_storage(run / "optuna.journal"))
    assert len(study.trials) == 1  # not asked again


def test_a_grid_never_runs_a_point_twice_across_drivers(tmp_path):
    spec = StudySpec.from_dict({**SPEC, "arms": [SPEC["arms"][2]]})
    run = tmp_path / "run"
    for stop in (0, 1, 2):
        drive(plan_for(spec, run), stop_after=stop, leave_open=1)
    assert drive(plan_for(spec, run))
    t = table(run)
    search = t[t["phase"] == "search"]
    lrs = sorted(json.loads(p)["lr"] for p in search["params_json"])
    assert lrs == [1e-3, 1e-2, 1e-1]


def test_trial_seed_is_sha256_of_its_arguments():
    import hashlib

    # hand-computed from the definition (sha256 of the text "3/lyam/1/7", first 4 bytes big-endian)
    digest = hashlib.sha256(b"3/lyam/1/7").hexdigest()
    assert trial_seed(3, "lyam", 1, 7) == int(digest[:8], 16)
    assert len({trial_seed(0, "a", 0, k) for k in range(100)}) == 100


@pytest.mark.parametrize("sampler", ["tpe", "random", "gp"])
def test_a_fresh_sampler_per_ask_depends_only_on_the_trials_told(sampler):
    """Asking trial k with ``make_sampler(..., trial=k)`` on a study rebuilt from the same told trials
    gives the same configuration as on the original study (what a resumed driver does). (QMC keeps
    its position in the study's own attributes, so it is checked on a real journal above.)"""
    spec = StudySpec.from_dict({**SPEC, "search": {**SPEC["search"], "sampler": sampler}})
    arm = spec.arm("adam-exponential")
    storage = optuna.storages.InMemoryStorage()
    study = optuna.create_study(study_name="a", storage=storage)
    from lyaptune.study.spaces import ask

    for k in range(12):
        study.sampler = make_sampler(spec.search, arm, trial=k)
        trial, params = ask(study, arm.resolved_space())
        study.tell(trial, loss(params))
    # a second study holding only the first 11 trials (copied): trial 11 is proposed identically
    other = optuna.create_study(study_name="b", storage=storage)
    for t in study.trials[:11]:
        other.add_trial(t)
    other.sampler = make_sampler(spec.search, arm, trial=11)
    _, params = ask(other, arm.resolved_space())
    assert params == study.trials[11].params
    assert len({tuple(sorted(t.params.items())) for t in study.trials}) == 12
