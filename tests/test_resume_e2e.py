"""An interrupted study, resumed, gives the answer the uninterrupted one gives (issue 21): real drivers
(the CLI in subprocesses), real local Ray, the driver and everything below it SIGKILLed at known points
of the fault-injection hook (a run blocked at its start; the driver blocked right after it stored a run
and before it told Optuna), never after a guessed delay."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from _procs import kill_family, wait_for_marker

from lyaptune.store import RunStore

TASK = {
    "dataset": "synthetic",
    "dataset_args": {"n_train": 120, "n_test": 40, "input_shape": [1, 4, 4], "num_classes": 3},
    "model": "fc",
    "model_args": {"depth": 1, "width": 8},
    "epochs": 2,
    "validation_fraction": 0.2,
    "device": "cpu",
}
ARMS = [
    {"name": "adam", "optimizer": "adam", "space": {"lr": {"low": 1e-3, "high": 1e-1, "log": True}}},
    {"name": "lyam", "optimizer": "lyam", "space": "default"},
]
# the columns that must be equal to the last bit (timestamps, wall times and info are not)
COMPARED = [
    "trial_id",
    "arm",
    "phase",
    "seed",
    "optuna_number",
    "status",
    "epochs_completed",
    "params_json",
    "objective",
    "final_train_loss",
    "final_train_acc",
    "final_grad_norm",
    "min_grad_norm",
    "final_val_loss",
    "final_val_acc",
    "final_test_loss",
    "final_test_acc",
    "initial_loss",
]


def _env(**extra: str) -> dict[str, str]:
    drop = ("RAY_ADDRESS", "LYAPTUNE_FAULT_INJECTION", "LYAPTUNE_DATA_ROOT")
    return {**{k: v for k, v in os.environ.items() if k not in drop}, **extra}


def _cli(*args: object) -> list[str]:
    return [sys.executable, "-m", "lyaptune.cli", *map(str, args)]


def _spec_file(tmp_path: Path, spec: dict) -> Path:
    path = tmp_path / f"{spec['name']}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def _killed_at(args: list[str], fault: dict, marker: Path, cwd: Path | None = None, **env: str) -> None:
    """Start a driver with the fault hook, wait for its known point, SIGKILL it and its family."""
    proc = subprocess.Popen(
        args,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=_env(LYAPTUNE_FAULT_INJECTION=json.dumps(fault), **env),
        cwd=cwd,
        start_new_session=True,
    )
    try:
        wait_for_marker(
            marker,
            lambda: proc.poll() is None,
            lambda: f"the driver ended before the known point: {proc.stderr.read().decode()[-2000:]}",
        )
    finally:
        kill_family(proc)


def _status(run_dir: Path) -> subprocess.CompletedProcess:
    return subprocess.run(_cli("status", run_dir), capture_output=True, text=True, env=_env(), timeout=120)


def _table(run_dir: Path):
    t = RunStore(run_dir).trials()
    return t[COMPARED].sort_values("trial_id").reset_index(drop=True)


@pytest.mark.slow
def test_killed_twice_and_resumed_twice_gives_the_uninterrupted_table(tmp_path):
    """TPE, 11 trials per arm (10 random start-up trials, then TPE's model), max_concurrent 1: killed
    once at the start of a run in the random phase and once between storing a run of the model phase
    and telling Optuna, resumed twice: the same trials table as an uninterrupted run, floats equal."""
    spec = {
        "name": "det",
        "task": TASK,
        "search": {"sampler": "tpe", "trials_per_arm": 11, "seeds": [0], "final_seeds": [1]},
        "max_concurrent": 1,
        "arms": ARMS,
    }
    path = _spec_file(tmp_path, spec)
    ref = subprocess.run(
        _cli("run", path, "--out", tmp_path / "ref"), capture_output=True, text=True, env=_env(), timeout=1500
    )
    assert ref.returncode == 0, ref.stderr[-3000:]
    out, marks = tmp_path / "killed", tmp_path / "marks"
    run_dir = out / "det"
    first = {"match": "adam-search-0003-s0", "block": "start", "dir": str(marks / "1")}
    _killed_at(_cli("run", path, "--out", out), first, marks / "1" / "adam-search-0003-s0.blocked")
    stored = set(RunStore(run_dir).trial_ids())
    assert "adam-search-0002-s0" in stored and "adam-search-0003-s0" not in stored
    second = {"match": "lyam-search-0010-s0", "block": "recorded", "dir": str(marks / "2")}
    _killed_at(_cli("resume", run_dir), second, marks / "2" / "lyam-search-0010-s0.recorded")
    assert "lyam-search-0010-s0" in set(RunStore(run_dir).trial_ids())  # stored; Optuna not told
    r = subprocess.run(_cli("resume", run_dir), capture_output=True, text=True, env=_env(), timeout=1500)
    assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-2000:])
    expected, got = _table(tmp_path / "ref" / "det"), _table(run_dir)
    assert len(expected) == 2 * 11 + 2 and set(expected["status"]) == {"completed"}
    assert list(got["trial_id"]) == list(expected["trial_id"])
    assert got.equals(expected), got.compare(expected)
    search = got[got["phase"] == "search"]
    assert not search.duplicated(["arm", "params_json"]).any()
    epochs = RunStore(run_dir).epochs()
    assert not epochs.duplicated(["trial_id", "epoch"]).any()


@pytest.mark.slow
def test_two_at_once_killed_and_resumed_never_repeats_a_configuration(tmp_path):
    """Random search, max_concurrent 2, killed while a run is blocked at its start (the other slot
    busy or asked): no arm has two search runs with the same parameters, budgets are exact."""
    spec = {
        "name": "two",
        "task": TASK,
        "search": {"sampler": "random", "trials_per_arm": 5, "seeds": [0], "final_seeds": [1]},
        "max_concurrent": 2,
        "arms": ARMS,
    }
    path = _spec_file(tmp_path, spec)
    out, marks = tmp_path / "runs", tmp_path / "marks"
    run_dir = out / "two"
    for i, target in enumerate(("adam-search-0001-s0", "lyam-search-0003-s0")):
        fault = {"match": target, "block": "start", "dir": str(marks / str(i))}
        args = _cli("run", path, "--out", out) if i == 0 else _cli("resume", run_dir)
        _killed_at(args, fault, marks / str(i) / f"{target}.blocked")
    r = subprocess.run(_cli("resume", run_dir), capture_output=True, text=True, env=_env(), timeout=1500)
    assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-2000:])
    trials = RunStore(run_dir).trials()
    assert trials["trial_id"].is_unique and set(trials["status"]) == {"completed"}
    search = trials[trials["phase"] == "search"]
    assert search.groupby("arm").size().to_dict() == {"adam": 5, "lyam": 5}
    assert not search.duplicated(["arm", "params_json"]).any()
    assert sorted(search[search["arm"] == "adam"]["optuna_number"]) == [0, 1, 2, 3, 4]
    assert (trials["phase"] == "final").sum() == 2


@pytest.mark.slow
def test_data_root_from_the_environment_status_and_a_finished_resume(tmp_path, mnist_root):
    """``LYAPTUNE_DATA_ROOT=... lyaptune run``, killed; ``lyaptune status`` says running while the
    driver lives (pid and host), interrupted once it is killed; ``lyaptune resume`` in another directory
    without the variable completes (the data root is in study.json); status then says finished, a
    second resume says so without starting Ray, and ray.log holds no metric-fetch warning."""
    spec = {
        "name": "envroot",
        "task": {
            "dataset": "mini-mnist",
            "dataset_args": {"train_per_class": 4, "test_per_class": 2},
            "model": "fc",
            "model_args": {"depth": 1, "width": 8},
            "epochs": 1,
            "validation_fraction": 0.25,
            "device": "cpu",
        },
        "search": {"sampler": "random", "trials_per_arm": 2, "seeds": [0], "final_seeds": [1]},
        "max_concurrent": 1,
        "arms": [ARMS[0]],
    }
    path = _spec_file(tmp_path, spec)
    out, marks = tmp_path / "runs", tmp_path / "marks"
    run_dir = out / "envroot"
    fault = {"match": "adam-search-0001-s0", "block": "start", "dir": str(marks)}
    proc = subprocess.Popen(
        _cli("run", path, "--out", out),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=_env(LYAPTUNE_FAULT_INJECTION=json.dumps(fault), LYAPTUNE_DATA_ROOT=str(mnist_root)),
        start_new_session=True,
    )
    try:
        wait_for_marker(
            marks / "adam-search-0001-s0.blocked",
            lambda: proc.poll() is None,
            lambda: f"the driver ended before the known point: {proc.stderr.read().decode()[-2000:]}",
        )
        live = _status(run_dir)
        assert live.returncode == 0, live.stderr
        assert f"(running (pid {proc.pid} on host {socket.gethostname()} since " in live.stdout, live.stdout
    finally:
        kill_family(proc)
    info = RunStore(run_dir).read_study_info()
    assert info["data_roots"] == {"adam": str(mnist_root)}
    dead = _status(run_dir)
    assert f"(interrupted (its driver, pid {proc.pid} on host " in dead.stdout, dead.stdout
    assert f"continue with: lyaptune resume {run_dir}" in dead.stdout
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    r = subprocess.run(
        _cli("resume", run_dir), capture_output=True, text=True, env=_env(), cwd=elsewhere, timeout=1500
    )
    assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-2000:])
    trials = RunStore(run_dir).trials()
    assert sorted(trials["trial_id"]) == ["adam-final-s1", "adam-search-0000-s0", "adam-search-0001-s0"]
    assert set(trials["status"]) == {"completed"}
    done = _status(run_dir)
    assert "study envroot (finished; started " in done.stdout, done.stdout
    experiments = sorted(p.name for p in (run_dir / "ray").iterdir())
    again = subprocess.run(_cli("resume", run_dir), capture_output=True, text=True, env=_env(), timeout=300)
    assert again.returncode == 0 and "is finished" in again.stdout and "nothing to resume" in again.stdout
    assert sorted(p.name for p in (run_dir / "ray").iterdir()) == experiments  # no Tune experiment
    log = (run_dir / "ray.log").read_text()
    assert "Failed to fetch metrics" not in log


@pytest.mark.slow
def test_an_unreadable_checkpoint_left_by_a_killed_driver_does_not_error_the_resumed_run(tmp_path):
    """The driver is killed right after run 1 stored its checkpoint at epoch 2; the checkpoint file is
    then overwritten, at its size, with bytes that are neither a zip nor a tar archive (what a damaged
    or foreign file can hold). Before issue 21 ``torch.load`` raised ``pickle.UnpicklingError``, which
    escaped ``read_checkpoint``: the resumed run failed on every retry and was stored ``errored``
    (checked against the previous commit). Now it starts over and completes, equal to the uninterrupted
    run's."""
    spec = {
        "name": "zeroed",
        "task": {**TASK, "epochs": 4},
        "search": {"sampler": "random", "trials_per_arm": 2, "seeds": [0], "final_seeds": [1]},
        "max_concurrent": 1,
        "checkpoint_every": 2,
        "arms": [ARMS[0]],
    }
    path = _spec_file(tmp_path, spec)
    out, marks = tmp_path / "runs", tmp_path / "marks"
    run_dir = out / "zeroed"
    fault = {"match": "adam-search-0001-s0", "block": "checkpoint", "dir": str(marks)}
    _killed_at(_cli("run", path, "--out", out), fault, marks / "adam-search-0001-s0.blocked")
    (ckpt,) = [p for p in (run_dir / "ray").rglob("trial.pt") if "adam-search-0001-s0-" in str(p)]
    ckpt.write_bytes(b"x" * ckpt.stat().st_size)
    r = subprocess.run(_cli("resume", run_dir), capture_output=True, text=True, env=_env(), timeout=1500)
    assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-2000:])
    trials = RunStore(run_dir).trials().set_index("trial_id")
    assert dict(trials["status"]) == {
        "adam-search-0000-s0": "completed",
        "adam-search-0001-s0": "completed",
        "adam-final-s1": "completed",
    }, trials["message"].to_dict()
    assert json.loads(trials.loc["adam-search-0001-s0", "info_json"])["resumed_from_epoch"] == 0
    ref = subprocess.run(
        _cli("run", path, "--out", tmp_path / "ref"), capture_output=True, text=True, env=_env(), timeout=1500
    )
    assert ref.returncode == 0, ref.stderr[-3000:]
    assert _table(run_dir).equals(_table(tmp_path / "ref" / "zeroed"))
