"""The Ray Tune adapter (lyaptune.study.tune_adapter) and the Optuna-native search spaces, without a Ray
cluster: the real searcher around a real StudyPlan (real Optuna journal, real Parquet store), called as
Tune calls it; checkpoints laid out as Tune lays them out; spaces compared with Optuna used directly.
The adapter inside a real Tune run is tested end to end in test_study, test_reliability and the cluster
tests."""

from __future__ import annotations

import itertools
import json
import math
import pickle
from pathlib import Path

import optuna
import pytest
import torch
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from lyaptune.store import RunStore
from lyaptune.study.searcher import StudyPlan, journal_storage
from lyaptune.study.spaces import ask, distributions, enqueue_grid, make_sampler, suggest
from lyaptune.study.spec import ArmSpec, ParamSpec, SearchSpec, StudySpec
from lyaptune.study.tune_adapter import (
    InterruptStopper,
    RunPayload,
    StudyErrorCallback,
    StudySearcher,
    TrimEndedTrial,
    TuneCheckpoints,
    epoch_metrics,
    error_metrics,
    read_checkpoint,
    tune_storage_path,
)
from lyaptune.train import TrialResult

SPEC = {
    "name": "adapt",
    "task": {
        "dataset": "synthetic",
        "dataset_args": {"n_train": 60, "n_test": 20, "input_shape": [1, 2, 2], "num_classes": 2},
        "model": "fc",
        "model_args": {"depth": 1, "width": 4},
        "epochs": 2,
        "batch_size": "full",
        "validation_fraction": 0.2,
        "device": "cpu",
    },
    "objective": {"metric": "val_loss", "mode": "min", "at": "final"},
    "search": {"sampler": "random", "sampler_seed": 7, "trials_per_arm": 2, "seeds": [0], "final_seeds": [1]},
    "resources": {"cpu": 1, "gpu": 0},
    "population": "off",
    "arms": [
        {"name": "adam", "optimizer": "adam", "space": {"lr": {"low": 1e-3, "high": 1e-1, "log": True}}}
    ],
}


def make_plan(tmp_path: Path, spec_dict: dict | None = None, **kwargs) -> StudyPlan:
    spec = StudySpec.from_dict(spec_dict or SPEC)
    store = RunStore(tmp_path / "run", create=True)
    store.write_spec(spec.to_dict())
    return StudyPlan(spec, store, tmp_path / "run" / "optuna.journal", **kwargs)


def result(status: str, losses: list[float], wall: float = 1.5, message: str = "") -> TrialResult:
    records = [{"epoch": i + 1, "val_loss": v, "train_loss": v} for i, v in enumerate(losses)]
    return TrialResult(status=status, records=records, info={"num_params": 10}, wall_s=wall, message=message)


# ---------------------------------------------------------------------------------------------------
# The payload in Tune's metrics.


def test_run_payload_survives_tunes_result_flattening():
    from ray.tune.utils import flatten_dict

    payload = RunPayload((result("completed", [0.9, 0.4]),), resumed_from_epoch=2)
    metrics = payload.to_metrics("adam-search-0000-s0", 0.4, 2)
    flat = flatten_dict(metrics)  # what Tune hands searchers
    assert flat["objective"] == 0.4 and flat["epoch"] == 2
    back = RunPayload.from_metrics(flat)
    assert back is not None and not back.is_population
    (r,) = back.results
    assert (r.status, r.wall_s, r.message) == ("completed", 1.5, "")
    assert [rec["val_loss"] for rec in r.records] == [0.9, 0.4]
    assert back.run_info() == {"num_params": 10, "resumed_from_epoch": 2}
    # a population: one result per member, no resume epoch in the members' info
    pop = RunPayload((result("completed", [0.5]), result("diverged", [math.nan], message="nan loss")))
    back = RunPayload.from_metrics(flatten_dict(pop.to_metrics("bundle", None, 1)))
    assert back.is_population and [r.status for r in back.results] == ["completed", "diverged"]
    assert math.isnan(back.results[1].records[0]["val_loss"]) and back.results[1].message == "nan loss"
    assert back.run_info(1) == {"num_params": 10}
    # intermediate reports are not payloads
    assert RunPayload.from_metrics(epoch_metrics("t", {"epoch": 1, "val_loss": 0.3}, "val_loss")) is None
    assert RunPayload.from_metrics(None) is None


def test_an_ended_tune_trial_forgets_the_runs_payload_and_metric_statistics():
    from ray.tune.experiment import Trial

    records = [{"epoch": e, "val_loss": 1.0 / e, "train_loss": 2.0 / e} for e in range(1, 101)]
    payload = RunPayload((TrialResult("completed", records, {"num_params": 10}, 1.5, ""),), 0)
    trial = Trial("__fake", stub=True, trial_id="t0")
    trial.update_last_result(
        {**payload.to_metrics("adam-search-0000-s0", 0.01, 100), "training_iteration": 1}
    )
    state = trial.run_metadata.get_json_state()  # Tune's experiment state caches this text
    assert len(state) > 5000 and '"epoch\\": 100' in state  # 100 records, JSON in JSON
    TrimEndedTrial().on_trial_complete(0, [trial], trial)
    assert "lyaptune_payload" not in trial.last_result
    assert trial.last_result["objective"] == 0.01 and trial.last_result["training_iteration"] == 1
    assert trial.last_result["lyaptune_trial_id"] == "adam-search-0000-s0"
    assert trial.run_metadata.metric_analysis == {} == trial.run_metadata.metric_n_steps
    after = trial.run_metadata.get_json_state()
    assert len(after) < len(state) - 5000 and 'epoch\\"' not in after
    # an errored trial's last epoch record and traceback go too
    trial.update_last_result({**epoch_metrics("t", records[0], "val_loss"), "lyaptune_traceback": "tb"})
    TrimEndedTrial().on_trial_error(0, [trial], trial)
    assert not {"lyaptune_record", "lyaptune_traceback"} & set(trial.last_result)
    assert trial.last_result["objective"] == 1.0


def test_error_metrics_carry_one_line_and_the_traceback():
    try:
        raise ValueError("bad thing\nsecond line")
    except ValueError as exc:
        m = error_metrics("t", exc)
    assert m["lyaptune_error"] == "ValueError: bad thing"
    assert "raise ValueError" in m["lyaptune_traceback"] and m["objective"] is None


# ---------------------------------------------------------------------------------------------------
# The searcher, called in Tune's order.


def test_searcher_pickles_without_its_plan(tmp_path):
    import ray.cloudpickle

    plan = make_plan(tmp_path)
    seen = []
    searcher = StudySearcher(plan, on_finish=lambda *a: seen.append(a))
    config = searcher.suggest("tune0")
    assert config["job"]["trial_id"] == "adam-search-0000-s0"
    callback = StudyErrorCallback(searcher)
    stopper = InterruptStopper(lambda: True)
    for dumps, loads in ((pickle.dumps, pickle.loads), (ray.cloudpickle.dumps, ray.cloudpickle.loads)):
        copy = loads(dumps(searcher))
        assert isinstance(copy, StudySearcher) and copy.plan is None and copy.jobs == {}
        assert copy.suggest("tune1") == StudySearcher.FINISHED  # a snapshot decides nothing
        cb = loads(dumps(callback))
        assert isinstance(cb.searcher, StudySearcher) and cb.searcher.plan is None
        assert loads(dumps(stopper)).stop_all() is False
    assert stopper.stop_all() is True
    # the original is untouched by pickling
    assert searcher.plan is plan and "tune0" in searcher.jobs


def test_searcher_records_completed_stopped_and_errored_runs_once(tmp_path):
    spec = {**SPEC, "search": {**SPEC["search"], "trials_per_arm": 3}}
    plan = make_plan(tmp_path, spec)
    finished = []
    searcher = StudySearcher(
        plan, on_finish=lambda job, status, value: finished.append((job.trial_id, status))
    )
    ids = {t: searcher.suggest(t)["job"]["trial_id"] for t in ("t0", "t1", "t2")}
    assert ids == {"t0": "adam-search-0000-s0", "t1": "adam-search-0001-s0", "t2": "adam-search-0002-s0"}
    # t0 completes: its payload's result is stored, the objective is val_loss at the final epoch
    searcher.on_trial_result("t0", epoch_metrics("x", {"epoch": 1, "val_loss": 0.9}, "val_loss"))
    final = RunPayload((result("completed", [0.9, 0.25]),), resumed_from_epoch=0)
    searcher.on_trial_complete("t0", result=final.to_metrics("x", 0.25, 2))
    # t1 is stopped by ASHA after epoch 1: its reported epochs are kept, status stopped
    searcher.on_trial_result("t1", epoch_metrics("x", {"epoch": 1, "val_loss": 0.7}, "val_loss"))
    searcher.on_trial_complete("t1", result=epoch_metrics("x", {"epoch": 1, "val_loss": 0.7}, "val_loss"))
    # t2 fails after its last retry: Tune tells the searcher first (nothing is written yet) ...
    try:
        raise RuntimeError("boom")
    except RuntimeError as exc:
        searcher.on_trial_result("t2", error_metrics("x", exc))
    searcher.on_trial_complete("t2", error=True)
    assert [f[0] for f in finished] == ["adam-search-0000-s0", "adam-search-0001-s0"]
    # ... then its callbacks, with the exception line from Tune's error file
    searcher.record_error("t2", "RuntimeError: boom (from the error file)")
    searcher.record_error("t2", "again")  # a second call for the same trial writes nothing
    assert finished == [
        ("adam-search-0000-s0", "completed"),
        ("adam-search-0001-s0", "stopped"),
        ("adam-search-0002-s0", "errored"),
    ]
    trials = plan.store.trials().set_index("trial_id")
    assert trials.index.is_unique and len(trials) == 3
    assert trials.loc["adam-search-0000-s0", "objective"] == 0.25
    assert json.loads(trials.loc["adam-search-0000-s0", "info_json"])["resumed_from_epoch"] == 0
    assert trials.loc["adam-search-0001-s0", "status"] == "stopped"
    assert trials.loc["adam-search-0002-s0", "message"] == "RuntimeError: boom (from the error file)"
    epochs = plan.store.epochs()
    assert sorted(epochs.loc[epochs["trial_id"] == "adam-search-0001-s0", "epoch"]) == [1]
    study = optuna.load_study(
        study_name="adapt/adam", storage=journal_storage(tmp_path / "run" / "optuna.journal")
    )
    assert [t.state for t in study.trials] == [TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL]
    assert study.trials[0].value == 0.25


def test_an_error_without_a_message_names_the_lost_worker_and_the_reported_one_wins(tmp_path):
    spec = {**SPEC, "search": {**SPEC["search"], "trials_per_arm": 2}}
    plan = make_plan(tmp_path, spec)
    searcher = StudySearcher(plan)
    searcher.suggest("a")
    searcher.suggest("b")
    try:
        raise OSError("disk gone")
    except OSError as exc:
        searcher.on_trial_result("a", error_metrics("x", exc))
    searcher.on_trial_complete("a", error=True)
    searcher.record_error("a")
    searcher.on_trial_complete("b", error=True)
    searcher.record_error("b")
    msgs = plan.store.trials().set_index("trial_id")["message"]
    assert msgs["adam-search-0000-s0"] == "OSError: disk gone"
    assert "without a message" in msgs["adam-search-0001-s0"]


def test_runs_stopped_by_an_interruption_stay_open_for_resume(tmp_path):
    plan = make_plan(tmp_path)
    searcher = StudySearcher(plan)
    searcher.suggest("a")
    searcher.stopping = True
    searcher.on_trial_complete("a", result=epoch_metrics("x", {"epoch": 1, "val_loss": 0.5}, "val_loss"))
    assert len(plan.store.trials()) == 0 and "adam-search-0000-s0" in plan.running


# ---------------------------------------------------------------------------------------------------
# Checkpoints of earlier drivers.


def _save(path: Path, epoch: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"epoch": epoch, "records": []}, path)


def test_checkpoints_of_earlier_experiments_newest_first(tmp_path):
    storage = tune_storage_path(str(tmp_path / "run"))
    assert storage == str((tmp_path / "run" / "ray").resolve())
    root = Path(storage)
    _save(root / "tune-20260101-000000-000001/adam-search-0002-s0-ab12c_00002/checkpoint_000000/trial.pt", 2)
    _save(root / "tune-20260102-000000-000001/adam-search-0002-s0-cd34e_00000/checkpoint_000001/trial.pt", 4)
    _save(root / "tune-20260102-000000-000001/adam-search-0002-s0-cd34e_00000/checkpoint_000000/trial.pt", 3)
    # another run whose id extends this one's: never taken for it
    _save(root / "tune-20260103-000000-000001/adam-search-0002-s01-ef56a_00001/checkpoint_000009/trial.pt", 9)
    (root / "tune-20260103-000000-000001/adam-search-0002-s01-ef56a_00001/result.json").write_text("{}")
    found = TuneCheckpoints(storage)
    newest = found("adam-search-0002-s0")
    assert newest == str(
        root / "tune-20260102-000000-000001/adam-search-0002-s0-cd34e_00000/checkpoint_000001/trial.pt"
    )
    assert read_checkpoint(newest)["epoch"] == 4
    assert read_checkpoint(found("adam-search-0002-s01"))["epoch"] == 9
    assert found("adam-search-0003-s0") is None
    assert TuneCheckpoints(str(tmp_path / "nothing-here"))("adam-search-0002-s0") is None
    # a checkpoint cut short by a kill is no checkpoint: the run starts over
    data = Path(newest).read_bytes()
    Path(newest).write_bytes(data[: len(data) // 3])
    assert read_checkpoint(newest) is None
    assert read_checkpoint(str(tmp_path / "missing.pt")) is None


@pytest.mark.parametrize("fill", [b"\0", b"\xff", b"x"])
def test_a_checkpoint_that_torch_cannot_unpickle_is_no_checkpoint(tmp_path, fill):
    """An errored-after-resume path of issue 21: a checkpoint file holding bytes that are neither a zip
    nor a tar archive made ``torch.load`` raise ``pickle.UnpicklingError``, which escaped
    ``read_checkpoint``: the resumed run failed on every retry and was stored ``errored``. It is read
    as no checkpoint (the run starts over); so is a loaded object that is not a run's state."""
    import io
    import pickle

    path = tmp_path / "trial.pt"
    _save(path, 2)
    size = len(path.read_bytes())
    path.write_bytes(fill * size)
    with pytest.raises(pickle.UnpicklingError):  # torch on these bytes, read as read_checkpoint reads
        torch.load(io.BytesIO(path.read_bytes()), weights_only=True)
    assert read_checkpoint(str(path)) is None
    torch.save({"records": []}, path)  # loads, but is not a run's state (no epoch)
    assert read_checkpoint(str(path)) is None


def test_the_plan_asks_for_earlier_checkpoints_of_single_runs(tmp_path):
    asked = []

    def lookup(trial_id):
        asked.append(trial_id)
        return "s3://bucket/x/trial.pt" if trial_id.endswith("0001-s0") else None

    plan = make_plan(tmp_path, checkpoints=lookup)
    jobs = [plan.next_job(), plan.next_job()]
    assert [j.checkpoint for j in jobs] == [None, "s3://bucket/x/trial.pt"]
    assert asked == ["adam-search-0000-s0", "adam-search-0001-s0"]
    assert jobs[1].payload(plan.spec, plan.arms["adam"].spec)["checkpoint"] == "s3://bucket/x/trial.pt"


# ---------------------------------------------------------------------------------------------------
# Search spaces as Optuna distributions.

SPACE = {  # one dimension of every kind
    "eta": ParamSpec.range(1e-4, 1.0, log=True),
    "momentum": ParamSpec.range(0.0, 0.99),
    "depth": ParamSpec.range(1, 7, type="int", step=2),
    "batch": ParamSpec.range(8, 512, type="int", log=True),
    "frac": ParamSpec.range(0.0, 1.0, step=0.1),
    "phi": ParamSpec.categorical(["sign", "tanh", "identity"]),
    "wd": ParamSpec.fixed(0.0),
}


def test_distributions_are_optunas_own():
    d = distributions(SPACE)
    assert list(d) == ["eta", "momentum", "depth", "batch", "frac", "phi"]  # fixed values are not searched
    assert d["eta"] == FloatDistribution(1e-4, 1.0, log=True)
    assert d["momentum"] == FloatDistribution(0.0, 0.99)
    assert d["depth"] == IntDistribution(1, 7, step=2)
    assert d["batch"] == IntDistribution(8, 512, log=True)
    assert d["frac"] == FloatDistribution(0.0, 1.0, step=0.1)
    assert d["phi"] == CategoricalDistribution(["sign", "tanh", "identity"])


@pytest.mark.parametrize("sampler", ["random", "tpe"])
def test_ask_draws_what_optuna_draws_define_by_run(sampler):
    """``ask`` (``study.ask(fixed_distributions=...)``) and ``suggest`` draw exactly the values the same
    seeded Optuna sampler gives to hand-written ``trial.suggest_*`` calls."""

    def make(seed=11):
        cls = optuna.samplers.RandomSampler if sampler == "random" else optuna.samplers.TPESampler
        return optuna.create_study(sampler=cls(seed=seed))

    reference, mine, mine_dbr = make(), make(), make()
    for i in range(12):  # past TPE's 10 start-up trials
        t = reference.ask()
        expected = {
            "eta": t.suggest_float("eta", 1e-4, 1.0, log=True),
            "momentum": t.suggest_float("momentum", 0.0, 0.99),
            "depth": t.suggest_int("depth", 1, 7, step=2),
            "batch": t.suggest_int("batch", 8, 512, log=True),
            "frac": t.suggest_float("frac", 0.0, 1.0, step=0.1),
            "phi": t.suggest_categorical("phi", ["sign", "tanh", "identity"]),
            "wd": 0.0,
        }
        trial, got = ask(mine, SPACE)
        t2 = mine_dbr.ask()
        got_dbr = suggest(t2, SPACE)
        assert got == expected and got_dbr == expected, i
        assert list(got) == list(SPACE) and type(got["depth"]) is int
        value = math.log(expected["eta"]) + expected["momentum"]
        reference.tell(t, value)
        mine.tell(trial, value)
        mine_dbr.tell(t2, value)


@pytest.mark.parametrize("how", ["grid", "sampler"])
def test_a_grid_is_enqueued_in_product_order_and_asked_exactly_once_per_point(tmp_path, how):
    lrs, betas = [1e-3, 1e-2, 1e-1], [0.9, 0.99]
    if how == "grid":
        arm = {"name": "g", "optimizer": "lyam", "grid": {"lr": lrs, "beta2": betas}}
        search = {**SPEC["search"]}
    else:  # sampler: grid over a space of choices
        arm = {
            "name": "g",
            "optimizer": "lyam",
            "space": {"lr": {"choices": lrs}, "beta2": {"choices": betas}},
        }
        search = {**SPEC["search"], "sampler": "grid"}
    spec_dict = {**SPEC, "search": search, "arms": [arm]}
    plan = make_plan(tmp_path, spec_dict)
    assert plan.spec.budget("g") == 6
    jobs = []
    while (job := plan.next_job()) not in ("FINISHED", None):
        if job.phase == "search":
            jobs.append(job)
        plan.finish(job, "completed", [{"epoch": 1, "val_loss": job.params["lr"]}], {}, 0.1)
    # the whole Cartesian product, in itertools.product order (last key fastest), each point once, and
    # the last tell of the grid ends nothing early (no GridSampler stopping the study)
    assert [(j.params["lr"], j.params["beta2"]) for j in jobs] == list(itertools.product(lrs, betas))
    assert [j.number for j in jobs] == list(range(6))
    final = plan.store.trials().query("phase == 'final'")
    assert list(final["param_lr"]) == [1e-3]
    study = optuna.load_study(
        study_name="adapt/g", storage=journal_storage(tmp_path / "run" / "optuna.journal")
    )
    assert len(study.trials) == 6 and all(t.state == TrialState.COMPLETE for t in study.trials)
    # enqueueing again (a resumed driver) adds nothing
    assert enqueue_grid(study, plan.spec.arm("g")) == 6 and len(study.trials) == 6


def test_grid_sampler_is_a_plain_seeded_sampler_and_a_range_is_no_grid():
    from lyaptune.errors import ConfigError

    arm = ArmSpec(name="g", optimizer="lyam", grid={"lr": [1e-3, 1e-2]})
    sampler = make_sampler(SearchSpec(sampler_seed=5), arm)
    assert type(sampler) is optuna.samplers.RandomSampler
    ranged = ArmSpec(name="r", optimizer="adam", space={"lr": {"low": 1e-4, "high": 1e-1}})
    with pytest.raises(ConfigError, match="space.lr is a range"):
        make_sampler(SearchSpec(sampler="grid"), ranged)


def test_the_next_trial_is_tunes_choice_without_a_pass_over_finished_trials():
    """StudyFIFOScheduler picks what Tune's FIFOScheduler picks (the first PENDING, else the first
    PAUSED trial) over a random history of new, started, finished, failed and requeued trials, while
    looking at each finished trial once; its pickled state carries no trial."""
    import random

    from ray.tune.experiment import Trial
    from ray.tune.schedulers import FIFOScheduler

    from lyaptune.study.tune_adapter import StudyASHAScheduler, StudyFIFOScheduler

    class T:
        def __init__(self, i: int) -> None:
            self.i, self.status = i, Trial.PENDING

    class Controller:
        def __init__(self) -> None:
            self.trials: list[T] = []

        def get_trials(self) -> list[T]:
            return self.trials

    rng = random.Random(0)
    ours, tunes, ctl = StudyFIFOScheduler(), FIFOScheduler(), Controller()
    for step in range(3000):
        r = rng.random()
        live = [
            t for t in ctl.trials if t.status in (Trial.PENDING, Trial.RUNNING, Trial.PAUSED, Trial.ERROR)
        ]
        if r < 0.3 or not live:
            ctl.trials.append(T(len(ctl.trials)))
        elif r < 0.85:
            t = rng.choice(live)
            t.status = rng.choice(
                [Trial.RUNNING, Trial.TERMINATED, Trial.TERMINATED, Trial.PAUSED, Trial.ERROR]
            )
        else:  # Tune's requeue of a failed trial: back to PENDING, moved to the end of its list
            t = rng.choice(live)
            t.status = Trial.PENDING
            ctl.trials.remove(t)
            ctl.trials.append(t)
        mine, theirs = ours.choose_trial_to_run(ctl), tunes.choose_trial_to_run(ctl)
        assert (mine is None) == (theirs is None), step
        if theirs is not None:
            assert mine.status == theirs.status, step
        assert ours._open is not None and all(t.status != Trial.TERMINATED for t in ours._open)
    finished = sum(t.status == Trial.TERMINATED for t in ctl.trials)
    assert finished > 500 and len(ours._open) < len(ctl.trials) - finished + 1
    state = pickle.loads(pickle.dumps(ours)).__dict__
    assert "_open" not in state and "_seen" not in state
    assert isinstance(StudyASHAScheduler(time_attr="epoch", max_t=3), FIFOScheduler)
