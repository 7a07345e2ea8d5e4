"""README's cluster section, word for word, on a two-node Ray cluster on 127.0.0.1 with token
authentication on (Ray 2.60): a study through ``--address``, its driver SIGKILLed at a known point,
``lyaptune resume`` completes it exactly once; a driver without the token gets one line saying what to
set.

The README's commands run as written, with only what a test on one shared machine needs added: a free
port for 6379, 127.0.0.1 for HEAD_IP, each node's HOME in a temp dir (so the token never touches the
user's ~/.ray), ``--num-cpus=1 --include-dashboard=false --temp-dir`` and ``--block`` (so each node
is one process the test ends by its pid), a tiny spec for the quickstart, a temp dir for the storage.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml
from _procs import free_port, wait_for_marker

from lyaptune.store import RunStore

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]

SPEC = {
    "name": "auth",
    "task": {
        "dataset": "synthetic",
        "dataset_args": {"n_train": 400, "n_test": 80, "input_shape": [1, 8, 8], "num_classes": 3},
        "model": "fc",
        "model_args": {"depth": 1, "width": 32},
        "epochs": 6,
        "batch_size": "full",
        "validation_fraction": 0.2,
        "device": "cpu",
    },
    "search": {"sampler": "random", "trials_per_arm": 3, "final_seeds": [1]},
    "resources": {"cpu": 1, "gpu": 0},
    "max_concurrent": 2,
    "checkpoint_every": 1,
    "arms": [
        {"name": "adam", "optimizer": "adam", "space": {"lr": {"low": 1e-3, "high": 1e-1, "log": True}}}
    ],
}


def readme_cluster_commands() -> list[str]:
    """The command lines of README's "On a Ray cluster" block, comments dropped."""
    text = (REPO / "README.md").read_text()
    section = text.split("### On a Ray cluster", 1)[1]
    block = section.split("```bash", 1)[1].split("```", 1)[0]
    return [ln.strip() for ln in block.splitlines() if ln.strip() and not ln.strip().startswith("#")]


def clean_env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_AUTH", "RAY_ADDRESS"))}
    env.pop("LYAPTUNE_FAULT_INJECTION", None)
    return {**env, "HOME": str(home), "PATH": f"{Path(sys.executable).parent}:{env.get('PATH', '')}", **extra}


def wait_for_line(proc: subprocess.Popen, needle: str, log: list[str]) -> None:
    """Read the process's output until ``needle`` appears (an event, not a delay)."""
    for line in proc.stdout:
        log.append(line)
        if needle in line:
            return
    raise AssertionError(f"{needle!r} never printed; exit {proc.wait()}:\n{''.join(log)[-4000:]}")


class ReadmeCluster:
    """A head and a worker node started with README's commands (each ended by its pid)."""

    def __init__(self, root: Path) -> None:
        self.commands = readme_cluster_commands()
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.head_home, self.worker_home = root / "head-home", root / "worker-home"
        self.head_home.mkdir()
        self.worker_home.mkdir()
        self.temp_dir = Path(tempfile.mkdtemp(prefix="lt-ray-", dir="/tmp"))  # Ray's socket paths are short
        self.procs: list[subprocess.Popen] = []
        self.log: list[str] = []

    def line(self, prefix: str) -> str:
        (line,) = [c for c in self.commands if c.startswith(prefix)]
        return line.replace("HEAD_IP", "127.0.0.1").replace("6379", str(self.port))

    def start(self) -> None:
        gen = subprocess.run(
            ["bash", "-c", self.line("ray get-auth-token")],
            capture_output=True,
            text=True,
            env=clean_env(self.head_home),
            timeout=120,
        )
        assert gen.returncode == 0, gen.stderr
        token = gen.stdout.strip().splitlines()[-1]
        assert (self.head_home / ".ray" / "auth_token").read_text().strip() == token
        extra = f" --num-cpus=1 --include-dashboard=false --temp-dir={self.temp_dir} --block"
        head = self._popen(self.line("RAY_AUTH_MODE=token ray start --head") + extra, self.head_home)
        wait_for_line(head, "Ray runtime started", self.log)
        worker_script = "\n".join(
            [
                self.line("export RAY_AUTH_MODE=token").replace("TOKEN_FROM_HEAD", token),
                self.line("ray start --address") + " --num-cpus=1 --block",
            ]
        )
        worker = self._popen(worker_script, self.worker_home)
        wait_for_line(worker, "Ray runtime started", self.log)

    def _popen(self, script: str, home: Path) -> subprocess.Popen:
        proc = subprocess.Popen(
            ["bash", "-c", script],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=clean_env(home),
            start_new_session=True,
        )
        self.procs.append(proc)
        return proc

    def driver_command(self, spec_path: Path, storage: Path) -> list[str]:
        line = self.line("lyaptune run")
        line = line.replace("experiments/quickstart.yaml", str(spec_path)).replace(
            "/shared/nfs/runs", str(storage)
        )
        words = line.split()
        assert words[:2] == ["lyaptune", "run"]
        return [sys.executable, "-m", "lyaptune.cli", *words[1:]]

    def stop(self) -> None:
        for proc in reversed(self.procs):  # `ray start --block` stops its node's processes on SIGTERM
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        for pid in _pids_mentioning(str(self.temp_dir)):  # anything left of this cluster, by pid
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        shutil.rmtree(self.temp_dir, ignore_errors=True)


def _pids_mentioning(text: str) -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit() and int(d.name) != os.getpid():
            try:
                if text.encode() in (d / "cmdline").read_bytes():
                    out.append(int(d.name))
            except OSError:
                continue
    return out


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = ReadmeCluster(tmp_path_factory.mktemp("cluster"))
    try:
        c.start()
        yield c
    finally:
        c.stop()


def test_readme_block_has_the_token_steps():
    commands = readme_cluster_commands()
    assert commands[0] == "ray get-auth-token --generate"
    assert any(re.fullmatch(r"RAY_AUTH_MODE=token ray start --head --port=6379", c) for c in commands)
    assert any("RAY_AUTH_TOKEN=" in c for c in commands)


def test_driver_without_the_token_gets_one_line_naming_what_to_set(cluster, tmp_path):
    spec_path = tmp_path / "auth.yaml"
    spec_path.write_text(yaml.safe_dump(SPEC))
    empty_home = tmp_path / "home"
    empty_home.mkdir()
    t0 = time.perf_counter()
    r = subprocess.run(
        [sys.executable, "-m", "lyaptune.cli", "run", str(spec_path), "--address", cluster.address],
        capture_output=True,
        text=True,
        env=clean_env(empty_home),
        cwd=tmp_path,
        timeout=300,
    )
    elapsed = time.perf_counter() - t0
    assert r.returncode == 2, (r.stdout, r.stderr)
    (line,) = r.stderr.strip().splitlines()
    assert line.startswith(
        f"lyaptune: error: Ray at '{cluster.address}' refused this driver: token authentication"
    )
    assert "RAY_AUTH_MODE=token" in line and "RAY_AUTH_TOKEN" in line and "RAY_AUTH_MODE=disabled" in line
    assert not (tmp_path / "runs").exists()
    print(f"unauthenticated driver: one line after {elapsed:.1f} s (CLI start included)")


def test_readme_cluster_runs_a_study_and_resume_after_a_killed_driver(cluster, tmp_path):
    spec_path = tmp_path / "auth.yaml"
    spec_path.write_text(yaml.safe_dump(SPEC))
    storage = tmp_path / "storage"
    marks = tmp_path / "marks"
    fault = {"match": "adam-search-0001", "block": "checkpoint", "dir": str(marks)}
    env = clean_env(cluster.head_home, LYAPTUNE_FAULT_INJECTION=json.dumps(fault))
    driver = subprocess.Popen(
        cluster.driver_command(spec_path, storage),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        cwd=tmp_path,
        start_new_session=True,
    )
    try:
        marker = marks / "adam-search-0001-s0.blocked"
        # the known point: that run stored its first checkpoint and waits
        wait_for_marker(marker, lambda: driver.poll() is None, lambda: driver.communicate()[0])
        os.killpg(driver.pid, signal.SIGKILL)  # the driver and anything it started; the cluster stays
        first = driver.communicate()[0]
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
    run_dir = storage / "auth"
    before = RunStore(run_dir).trials() if (run_dir / "spec.yaml").exists() else None
    done_before = set(before["trial_id"]) if before is not None else set()
    assert "adam-search-0001-s0" not in done_before, first
    r = subprocess.run(
        [sys.executable, "-m", "lyaptune.cli", "resume", str(run_dir), "--address", cluster.address],
        capture_output=True,
        text=True,
        env=clean_env(cluster.head_home),
        cwd=tmp_path,
        timeout=900,
    )
    assert r.returncode == 0, (r.stdout, r.stderr)
    assert "Token authentication" not in r.stdout + r.stderr
    store = RunStore(run_dir)
    trials = store.trials().set_index("trial_id")
    assert trials.index.is_unique
    assert sorted(trials.index) == [
        "adam-final-s1",
        "adam-search-0000-s0",
        "adam-search-0001-s0",
        "adam-search-0002-s0",
    ]
    assert set(trials["status"]) == {"completed"}
    if before is not None:  # runs stored before the kill were never run again
        for _, row in before.iterrows():
            assert trials.loc[row["trial_id"], "updated_at"] == row["updated_at"]
    epochs = store.epochs()
    assert not epochs.duplicated(["trial_id", "epoch"]).any()
    assert (epochs.groupby("trial_id").size() == SPEC["task"]["epochs"]).all()
    resumed = json.loads(trials.loc["adam-search-0001-s0", "info_json"])
    assert resumed["resumed_from_epoch"] >= 1  # continued from the checkpoint it stored before the kill
    info = json.loads((run_dir / "study.json").read_text())
    assert len(info["cluster"]["nodes"]) == 2 and all(n["cpu"] == 1 for n in info["cluster"]["nodes"])
    nodes = {json.loads(s)["node_id"] for s in trials["info_json"]}
    assert nodes <= {n["node_id"] for n in info["cluster"]["nodes"]}


def test_a_node_that_cannot_read_the_data_stops_the_study_naming_node_and_path(cluster, tmp_path):
    missing = tmp_path / "no-data-here"
    spec = {
        **SPEC,
        "name": "nodata",
        "task": {**SPEC["task"], "dataset": "mnist", "data_root": str(missing), "dataset_args": {}},
    }
    spec_path = tmp_path / "nodata.yaml"
    spec_path.write_text(yaml.safe_dump(spec))
    r = subprocess.run(
        [sys.executable, "-m", "lyaptune.cli", "run", str(spec_path), "--address", cluster.address],
        capture_output=True,
        text=True,
        env=clean_env(cluster.head_home),
        cwd=tmp_path,
        timeout=600,
    )
    assert r.returncode == 2, (r.stdout, r.stderr)
    (line,) = r.stderr.strip().splitlines()
    assert line.startswith("lyaptune: error: node ") and "cannot read the task's data" in line, line
    assert str(missing) in line
    assert "Traceback" not in r.stdout
