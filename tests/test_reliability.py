"""Reliability: faults keep every result exactly once; bad input is one clear line before any compute."""

import json
import os
import threading
import time
from pathlib import Path

import pytest
import yaml
from _procs import kill_family, wait_for_marker
from _ray import own_ray

from lyaptune.cli import main
from lyaptune.store import RunStore
from lyaptune.study import load_spec, run_study
from lyaptune.train import run_trial

BASE = {
    "name": "rel",
    "task": {
        "dataset": "synthetic",
        "dataset_args": {"n_train": 120, "n_test": 40, "input_shape": [1, 4, 4], "num_classes": 3},
        "model": "fc",
        "model_args": {"depth": 1, "width": 8},
        "epochs": 3,
        "validation_fraction": 0.2,
        "device": "cpu",
    },
    "search": {"sampler": "random", "trials_per_arm": 2, "final_seeds": [1]},
    "max_concurrent": 2,
    "arms": [
        {"name": "adam", "optimizer": "adam", "space": {"lr": {"low": 1e-3, "high": 1e-1, "log": True}}}
    ],
}


def write(tmp_path, spec, name="spec.yaml"):
    path = tmp_path / name
    path.write_text(spec if isinstance(spec, str) else yaml.safe_dump(spec))
    return path


def run_cli(capsys, *args):
    code = main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


def with_(path, value, base=BASE):
    """A deep copy of ``base`` with the dotted ``path`` set to ``value`` (``...`` deletes it)."""
    spec = json.loads(json.dumps(base))
    keys = path.split(".")
    node = spec
    for k in keys[:-1]:
        node = node[int(k)] if isinstance(node, list) else node[k]
    last = keys[-1]
    if value is ...:
        del node[last]
    elif isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return spec


MALFORMED = [
    (with_("name", "bad name!"), "name:"),
    (with_("task", ...), "task"),
    (with_("arms", []), "arms: must be a non-empty list"),
    (
        with_("arms.0.optimizer", "lyamm"),
        "arms[0].optimizer: unknown optimizer 'lyamm'; did you mean 'lyam'?",
    ),
    (with_("arms.0.space.lr", {"low": 0.1, "high": 0.01}), "arms[0].space.lr"),
    (with_("arms.0.space.lr", {"low": 0.0, "high": 0.01, "log": True}), "arms[0].space.lr"),
    (with_("arms.0.space.lrr", {"low": 0.1, "high": 1.0}), "arms[0].space"),
    (with_("arms.0.space.lr", {"choices": []}), "arms[0].space.lr"),
    (with_("arms.0.schedule", "cosin"), "arms[0].schedule: unknown schedule 'cosin'"),
    (with_("arms.0.lipschitz", {"samples": 3}), "arms[0].lipschitz"),
    (with_("arms.0.name", "a/b"), "arms[0].name"),
    (with_("arms", [BASE["arms"][0], BASE["arms"][0]]), "arms[1].name: duplicate arm name"),
    (with_("search.trials_per_arm", -3), "search.trials_per_arm"),
    (with_("search.sampler", "bayes"), "search.sampler"),
    (with_("search.scheduler", "hyperband"), "search.scheduler"),
    (with_("search.final_seeds", 3), "search.final_seeds"),
    (with_("serach", {}), "serach"),
    (with_("task.epochs", 0), "task.epochs"),
    (with_("task.batch_size", 0), "task.batch_size"),
    (with_("task.batch_size", "huge"), "task.batch_size"),
    (with_("task.validation_fraction", 1.5), "task.validation_fraction"),
    (with_("task.dataset", "cifar11"), "task.dataset: unknown dataset 'cifar11'"),
    (with_("task.model", "resnet19"), "task.model"),
    (with_("task.modle", "fc"), "task.modle"),
    (with_("objective", {"metric": "test_acc"}), "objective.metric"),
    (with_("objective", {"metric": "val_loss", "mode": "down"}), "objective.mode"),
    (with_("resources", {"cpu": 0}), "resources.cpu"),
    (with_("resources", {"cpu": 1, "gpu": -1}), "resources.gpu"),
    (with_("max_concurrent", 0), "max_concurrent"),
    (with_("population", "sometimes"), "population"),
    ("name: [unclosed", "spec.yaml"),
    ("- just\n- a list\n", "mapping"),
]


@pytest.mark.parametrize("spec,needle", MALFORMED, ids=[f"spec{i}" for i in range(len(MALFORMED))])
def test_malformed_specs_exit_2_with_one_line(tmp_path, capsys, spec, needle):
    code, out, err = run_cli(capsys, "run", write(tmp_path, spec), "--out", tmp_path / "runs")
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and err.startswith("lyaptune: error: "), err
    assert needle in err, err
    assert not (tmp_path / "runs").exists()


def test_missing_spec_file(tmp_path, capsys):
    code, _, err = run_cli(capsys, "run", tmp_path / "nope.yaml")
    assert code == 2 and "nope.yaml" in err


def test_missing_dataset_files_fail_before_ray_with_the_path(tmp_path, capsys):
    spec = with_(
        "task",
        {
            "dataset": "mnist",
            "data_root": str(tmp_path / "empty"),
            "model": "fc",
            "epochs": 2,
            "validation_fraction": 0.1,
        },
    )
    code, _, err = run_cli(capsys, "run", write(tmp_path, spec), "--out", tmp_path / "runs")
    assert code == 2 and str(tmp_path / "empty") in err and len(err.strip().splitlines()) == 1


def test_unreachable_ray_address_is_one_line_within_seconds(tmp_path, capsys):
    t0 = time.time()
    code, _, err = run_cli(
        capsys, "run", write(tmp_path, BASE), "--out", tmp_path / "runs", "--address", "127.0.0.1:1"
    )
    assert code == 2 and "cannot reach Ray at '127.0.0.1:1'" in err
    assert time.time() - t0 < 30


def test_unwritable_output_directory(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    code, _, err = run_cli(capsys, "run", write(tmp_path, BASE), "--out", blocker / "runs")
    assert code == 2 and str(blocker) in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("command", ["status", "resume", "report", "compare"])
def test_a_directory_that_is_not_a_run(tmp_path, capsys, command):
    code, _, err = run_cli(capsys, command, tmp_path)
    assert code == 2 and str(tmp_path) in err and len(err.strip().splitlines()) == 1


def _store_with_one_trial(tmp_path) -> Path:
    from lyaptune.store import trial_row
    from lyaptune.study.spec import StudySpec

    spec = StudySpec.from_dict(BASE)
    store = RunStore(tmp_path / "run", create=True)
    store.write_spec(spec.to_dict())
    config = spec.trial_config("adam", {"lr": 0.01}, 0)
    result = run_trial(config)
    store.record_trial(
        trial_row(
            study="rel",
            arm="adam",
            trial_id="adam-final-s0",
            phase="final",
            seed=0,
            config=config,
            result=result,
            objective=0.5,
        ),
        result.records,
    )
    return Path(store.path)


def test_resume_checks_the_stored_spec_against_the_registries(tmp_path, capsys):
    """Loading a stored spec is pure; ``resume`` checks its names before Ray starts (one line)."""
    run = tmp_path / "run"
    store = RunStore(run, create=True)
    store.write_spec(with_("arms.0.optimizer_args", {"bogus": 1}))  # an edited spec.yaml
    code, _, err = run_cli(capsys, "resume", run)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "arms[0].optimizer_args.bogus: unknown hyperparameter (optimizer 'adam')" in err


@pytest.mark.parametrize("victim", ["trials", "epochs"])
def test_corrupt_or_truncated_parquet_is_named(tmp_path, capsys, victim):
    run = _store_with_one_trial(tmp_path)
    target = next((run / victim).rglob("*.parquet"))  # the run's row, or its epochs
    data = target.read_bytes()
    target.write_bytes(data[: len(data) // 2])  # truncated
    for command in (["report", run, "--out", tmp_path / "rep"], ["status", run]):
        code, _, err = run_cli(capsys, *command)
        if victim == "epochs" and command[0] == "status":
            continue  # status reads only the trials table
        assert code == 2 and target.name in err and len(err.strip().splitlines()) == 1, (command, err)


def test_debug_flag_shows_a_traceback(tmp_path, capsys):
    from lyaptune.errors import UserError

    with pytest.raises(UserError, match="not a lyaptune run directory"):
        main(["--debug", "status", str(tmp_path)])


@pytest.mark.integration
def test_diverging_and_failing_trials_do_not_stop_the_study(tmp_path):
    """A NaN run is `diverged`; a run that raises is retried up to max_failures, then `errored` with
    its message kept; Optuna is told FAIL for both; the study completes."""
    import optuna
    import ray

    from lyaptune.study.searcher import journal_storage

    spec_dict = with_(
        "arms",
        [
            {"name": "sgd", "optimizer": "sgd", "grid": {"lr": [1e12, 0.1, 0.2]}},
        ],
    )
    spec_dict = {**spec_dict, "max_failures": 1, "population": "off"}
    spec = load_spec(write(tmp_path, spec_dict))
    marker = tmp_path / "faults"
    fault = {"match": "sgd-search-0002", "times": 5, "dir": str(marker)}  # always fails: errored
    retry = {"match": "sgd-search-0001", "times": 1, "dir": str(marker)}  # fails once: retried, completes
    os.environ["LYAPTUNE_FAULT_INJECTION"] = json.dumps(fault)
    own_ray()  # this test's Ray carries the fault in its runtime_env
    try:
        ray.init(
            num_cpus=2,
            include_dashboard=False,
            log_to_driver=False,
            runtime_env={"env_vars": {"LYAPTUNE_FAULT_INJECTION": json.dumps(fault)}},
        )
        store = run_study(spec, out=tmp_path / "runs", log=lambda m: None)
        ray.shutdown()
        trials = store.trials().set_index("trial_id")
        assert trials.loc["sgd-search-0000-s0", "status"] == "diverged"
        assert trials.loc["sgd-search-0002-s0", "status"] == "errored"
        assert "injected fault" in trials.loc["sgd-search-0002-s0", "message"]
        assert len(list(marker.glob("sgd-search-0002-s0.*"))) == 2  # first try + max_failures retries
        assert trials.loc["sgd-search-0001-s0", "status"] == "completed"
        assert trials.loc["sgd-final-s1", "status"] == "completed"
        assert trials.loc["sgd-final-s1", "param_lr"] == 0.1
        study = optuna.load_study(
            study_name="rel/sgd", storage=journal_storage(Path(store.path) / "optuna.journal")
        )
        states = sorted(t.state.name for t in study.trials)
        assert states == ["COMPLETE", "FAIL", "FAIL"]
        # the retry case: a run that fails once and then succeeds
        os.environ["LYAPTUNE_FAULT_INJECTION"] = json.dumps(retry)
        ray.init(
            num_cpus=2,
            include_dashboard=False,
            log_to_driver=False,
            runtime_env={"env_vars": {"LYAPTUNE_FAULT_INJECTION": json.dumps(retry)}},
        )
        store2 = run_study(spec, out=tmp_path / "runs2", log=lambda m: None)
        t2 = store2.trials().set_index("trial_id")
        assert t2.loc["sgd-search-0001-s0", "status"] == "completed"
        assert len(list(marker.glob("sgd-search-0001-s0.*"))) == 2
    finally:
        os.environ.pop("LYAPTUNE_FAULT_INJECTION", None)
        ray.shutdown()


@pytest.mark.slow
def test_worker_node_killed_mid_study_resumes_trials_from_checkpoints(tmp_path):
    """The worker node is killed once the second search run has stored its first checkpoint (the
    fault-injection hook blocks it there and writes a marker: a known point, no polling of the store);
    Tune retries the run on a replacement node, where it continues from that checkpoint (the hook
    blocks a run once) and follows the trajectory of an uninterrupted run."""
    import ray
    from ray.cluster_utils import Cluster

    spec_dict = {
        **BASE,
        "name": "nodekill",
        "task": {
            **BASE["task"],
            "dataset_args": {"n_train": 300, "n_test": 60, "input_shape": [1, 8, 8], "num_classes": 4},
            "model_args": {"depth": 2, "width": 32},
            "epochs": 6,
        },
        "search": {"sampler": "random", "trials_per_arm": 2, "final_seeds": [1]},
        "checkpoint_every": 2,
        "max_failures": 3,
    }
    spec = load_spec(write(tmp_path, spec_dict))
    marks = tmp_path / "marks"
    fault = {"match": "adam-search-0001", "block": "checkpoint", "dir": str(marks)}
    # the head runs the driver only (0 CPUs), so every run trains on the worker node
    own_ray()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    worker = cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    ray.init(
        address=cluster.address,
        log_to_driver=False,
        runtime_env={"env_vars": {"LYAPTUNE_FAULT_INJECTION": json.dumps(fault)}},
    )
    out = tmp_path / "runs"
    result = {}
    thread = threading.Thread(
        target=lambda: result.setdefault("store", run_study(spec, out=out, log=lambda m: None))
    )
    try:
        thread.start()
        marker = marks / "adam-search-0001-s0.blocked"
        wait_for_marker(marker, thread.is_alive, lambda: "the study ended before the known point")
        cluster.remove_node(worker, allow_graceful=False)  # SIGKILL the worker node's raylet and workers
        cluster.add_node(num_cpus=1)  # a replacement node, where the killed run continues
        thread.join(600)
        assert not thread.is_alive()
    finally:
        ray.shutdown()
        cluster.shutdown()
    store = result["store"]
    trials = store.trials()
    assert trials["trial_id"].is_unique and len(trials) == 3
    assert set(trials["status"]) == {"completed"}
    epochs = store.epochs()
    assert not epochs.duplicated(["trial_id", "epoch"]).any()
    assert (epochs.groupby("trial_id").size() == 6).all()
    resumed = [json.loads(s).get("resumed_from_epoch", 0) for s in trials["info_json"]]
    by_id = dict(zip(trials["trial_id"], resumed))
    assert by_id == {"adam-search-0000-s0": 0, "adam-search-0001-s0": 2, "adam-final-s1": 0}, by_id
    # the resumed run follows exactly the trajectory of an uninterrupted run; Ray runs a 1-CPU trial with
    # one intra-op thread, and float sums depend on the thread count, so the reference does too
    import torch

    row = trials.iloc[[i for i, r in enumerate(resumed) if r > 0][0]]
    config = spec.trial_config("adam", {"lr": float(row["param_lr"])}, int(row["seed"]))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        alone = run_trial(config)
    finally:
        torch.set_num_threads(threads)
    mine = epochs[epochs["trial_id"] == row["trial_id"]].sort_values("epoch")
    assert mine["train_loss"].tolist() == [r["train_loss"] for r in alone.records]


@pytest.mark.slow
def test_driver_killed_at_a_known_point_then_resume_completes_only_what_is_missing(tmp_path):
    """The driver is SIGKILLed once the third search run has stored its first checkpoint (the
    fault-injection hook blocks that run there and writes a marker: no polling of the store, no timing);
    `lyaptune resume` keeps the two stored runs, continues the third from its checkpoint and runs the
    rest, each exactly once."""
    import subprocess
    import sys

    spec = {
        **BASE,
        "name": "killed",
        "task": {**BASE["task"], "epochs": 6},
        "search": {"sampler": "random", "trials_per_arm": 4, "final_seeds": [1]},
        "max_concurrent": 1,  # one run at a time: runs 0 and 1 are stored before run 2 starts
        "checkpoint_every": 2,
    }
    out = tmp_path / "runs"
    run_dir = out / "killed"
    marks = tmp_path / "marks"
    fault = {"match": "adam-search-0002", "block": "checkpoint", "dir": str(marks)}
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "lyaptune.cli", "run", str(write(tmp_path, spec)), "--out", str(out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**env, "LYAPTUNE_FAULT_INJECTION": json.dumps(fault)},
        start_new_session=True,
    )
    try:
        marker = marks / "adam-search-0002-s0.blocked"
        wait_for_marker(
            marker, lambda: proc.poll() is None, lambda: "the driver ended before the known point"
        )
    finally:
        kill_family(proc)  # the driver and everything below it, its local Ray included
    before = RunStore(run_dir).trials()
    assert sorted(before["trial_id"]) == ["adam-search-0000-s0", "adam-search-0001-s0"]
    r = subprocess.run(
        [sys.executable, "-m", "lyaptune.cli", "resume", str(run_dir)],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )
    assert r.returncode == 0, (r.stdout, r.stderr)
    store = RunStore(run_dir)
    after = store.trials().set_index("trial_id")
    assert after.index.is_unique
    assert sorted(after.index) == [
        "adam-final-s1",
        "adam-search-0000-s0",
        "adam-search-0001-s0",
        "adam-search-0002-s0",
        "adam-search-0003-s0",
    ]
    not_completed = after.loc[after["status"] != "completed", ["status", "message"]].to_dict("index")
    assert not not_completed, (not_completed, r.stdout[-2000:], r.stderr[-2000:])
    for _, row in before.iterrows():  # stored before the kill: never run again
        assert after.loc[row["trial_id"], "updated_at"] == row["updated_at"]
    resumed = {t: json.loads(s).get("resumed_from_epoch", 0) for t, s in after["info_json"].items()}
    assert resumed["adam-search-0002-s0"] == 2  # continued from the checkpoint it stored at epoch 2
    assert resumed["adam-search-0003-s0"] == 0 and resumed["adam-final-s1"] == 0
    epochs = store.epochs()
    assert not epochs.duplicated(["trial_id", "epoch"]).any()
    assert (epochs.groupby("trial_id").size() == 6).all()
