"""A study stored in an object store: an S3 endpoint on 127.0.0.1 (moto's server mode, started here),
``--storage s3://bucket/runs``, the driver SIGKILLed at a known point, ``lyaptune resume s3://...`` from a
fresh working directory with no local state: exact budgets, no run twice, the interrupted run continued
from the checkpoint it left in the bucket; ``status`` and ``report`` read the URI directly."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import yaml
from _procs import free_port, kill_family, wait_for_marker

pytestmark = pytest.mark.slow

moto_server = pytest.importorskip("moto.server", reason="needs moto[server]: pip install 'moto[server]'")

SPEC = {
    "name": "s3study",
    "task": {
        "dataset": "synthetic",
        "dataset_args": {"n_train": 120, "n_test": 40, "input_shape": [1, 4, 4], "num_classes": 3},
        "model": "fc",
        "model_args": {"depth": 1, "width": 8},
        "epochs": 4,
        "batch_size": "full",
        "validation_fraction": 0.2,
        "device": "cpu",
    },
    "search": {"sampler": "random", "trials_per_arm": 4, "final_seeds": [1]},
    "resources": {"cpu": 1, "gpu": 0},
    "max_concurrent": 1,
    "checkpoint_every": 2,
    "arms": [
        {"name": "adam", "optimizer": "adam", "space": {"lr": {"low": 1e-3, "high": 1e-1, "log": True}}}
    ],
}


@pytest.fixture
def s3(monkeypatch):
    """A moto S3 server on 127.0.0.1 with an empty bucket; the AWS settings in this process's env."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    env = {
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    try:
        while True:  # until the server accepts connections (an event; it exits on failure)
            assert server.poll() is None, "moto server did not start"
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        import boto3

        boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"]).create_bucket(Bucket="bucket")
        yield env
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=60)


def test_s3_storage_survives_a_killed_driver_and_resumes_from_a_fresh_directory(s3, tmp_path):
    from lyaptune.store import RunStore

    spec_path = tmp_path / "s3study.yaml"
    spec_path.write_text(yaml.safe_dump(SPEC))
    first_cwd, fresh_cwd = tmp_path / "first", tmp_path / "fresh"
    first_cwd.mkdir()
    fresh_cwd.mkdir()
    uri = "s3://bucket/runs/s3study"
    marks = tmp_path / "marks"
    fault = {"match": "adam-search-0002", "block": "checkpoint", "dir": str(marks)}
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "lyaptune.cli", "run", str(spec_path), "--storage", "s3://bucket/runs"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**env, "LYAPTUNE_FAULT_INJECTION": json.dumps(fault)},
        cwd=first_cwd,
        start_new_session=True,
    )
    try:
        marker = marks / "adam-search-0002-s0.blocked"
        # the known point: run 2 stored its first checkpoint and waits
        wait_for_marker(
            marker, lambda: proc.poll() is None, lambda: "the driver ended before the known point"
        )
    finally:
        kill_family(proc)
    before = RunStore(uri).trials()
    assert sorted(before["trial_id"]) == ["adam-search-0000-s0", "adam-search-0001-s0"]
    r = subprocess.run(
        [sys.executable, "-m", "lyaptune.cli", "resume", uri],
        capture_output=True,
        text=True,
        env=env,
        cwd=fresh_cwd,
        timeout=900,
    )
    assert r.returncode == 0, (r.stdout, r.stderr)
    store = RunStore(uri)
    after = store.trials().set_index("trial_id")
    assert after.index.is_unique
    search = after[after["phase"] == "search"]
    final = after[after["phase"] == "final"]
    assert len(search) == 4 and len(final) == 1  # exact budgets: 4 search runs + 1 final seed
    not_completed = after.loc[after["status"] != "completed", ["status", "message"]].to_dict("index")
    assert not not_completed, (not_completed, r.stdout[-2000:], r.stderr[-2000:])
    for _, row in before.iterrows():
        assert after.loc[row["trial_id"], "updated_at"] == row["updated_at"]
    # run 2 continues from the checkpoint it stored in the bucket at epoch 2 (found there by the resumed
    # driver, which has no local state); the others started from scratch
    resumed = {t: json.loads(s).get("resumed_from_epoch", 0) for t, s in after["info_json"].items()}
    assert resumed == {
        "adam-search-0000-s0": 0,
        "adam-search-0001-s0": 0,
        "adam-search-0002-s0": 2,
        "adam-search-0003-s0": 0,
        "adam-final-s1": 0,
    }
    assert (
        "adam-search-0002-s0: continues from the checkpoint of an interrupted run (s3://bucket/runs/s3study/ray/"
        in r.stdout
    )
    epochs = store.epochs()
    assert not epochs.duplicated(["trial_id", "epoch"]).any()
    assert (epochs.groupby("trial_id").size() == 4).all()
    status = subprocess.run(
        [sys.executable, "-m", "lyaptune.cli", "status", uri], capture_output=True, text=True, env=env
    )
    assert status.returncode == 0, status.stderr
    assert "adam: search 4/4; final 1/1" in status.stdout
    rep = subprocess.run(
        [sys.executable, "-m", "lyaptune.cli", "report", uri, "--out", str(tmp_path / "rep")],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert rep.returncode == 0, (rep.stdout, rep.stderr)
    assert (tmp_path / "rep" / "report.md").is_file()


@pytest.mark.parametrize(("step", "left"), [("epochs_parts", 6), ("trials_deleted", 0)])
def test_compaction_in_an_object_store(s3, step, left):
    """Compaction on s3://: stopped at a step it reads the same; the next writer finishes it; the
    parts replace the runs' own objects."""
    import pyarrow.fs as pafs

    from lyaptune.store import COMPACTION_FILE, RunStore

    class Killed(BaseException):
        pass

    uri = "s3://bucket/runs/compact"
    store = RunStore(uri, create=True)
    store.write_spec({"name": "compact"})
    store.compact_every = 0
    for i in range(6):
        row = {
            "study": "compact",
            "arm": ["a", "b"][i % 2],
            "trial_id": f"t{i}",
            "phase": "search",
            "seed": 0,
        }
        store.record_trial(
            {**row, "status": "completed", "objective": float(i)}, [{"epoch": 1, "train_loss": i + 0.5}]
        )
    store.record_trial({**row, "trial_id": "t1", "arm": "b", "status": "completed", "objective": -1.0})

    def seen() -> tuple[dict, dict]:
        reader = RunStore(uri)
        t, e = reader.trials(), reader.epochs()
        assert t["trial_id"].is_unique and not e.duplicated(["trial_id", "epoch"]).any()
        return dict(zip(t["trial_id"], t["objective"])), dict(zip(e["trial_id"], e["train_loss"]))

    want = ({f"t{i}": float(i) for i in range(6)} | {"t1": -1.0}, {f"t{i}": i + 0.5 for i in range(6)})
    assert seen() == want

    def hook(at: str) -> None:
        if at == step:
            raise Killed

    store.compaction_hook = hook
    with pytest.raises(Killed):
        store.compact()
    fs, path = pafs.FileSystem.from_uri(uri)
    assert fs.get_file_info(f"{path}/{COMPACTION_FILE}").type == pafs.FileType.File
    assert seen() == want
    writer = RunStore(uri, create=True)
    # before its trials part was written it goes back (all 6 folded again), after it forward (none left)
    assert writer.compact() == left
    assert seen() == want
    names = sorted(i.base_name for i in fs.get_file_info(pafs.FileSelector(f"{path}/trials")))
    assert names == ["@part-0000000001.parquet"]
    assert fs.get_file_info(f"{path}/{COMPACTION_FILE}").type == pafs.FileType.NotFound
