"""Runs as users meet them: resources that fit the machine, interruptions that name `lyaptune resume`,
only lyaptune's lines on the console (issue 16, issue 14's noise item).

Real parts only: the CLI in a subprocess, a real local Ray, real Parquet. Interruptions happen at a known
point (the fault-injection point of ``lyaptune.faults`` writes ``<trial id>.blocked`` and waits),
never after a guessed delay.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from _procs import wait_for_marker

from lyaptune.errors import ConfigError
from lyaptune.store import RunStore
from lyaptune.study.runner import check_resources, parse_resources, with_resources
from lyaptune.study.spec import StudySpec

SPEC = {
    "name": "clu",
    "task": {
        "dataset": "synthetic",
        "dataset_args": {"n_train": 120, "n_test": 40, "input_shape": [1, 4, 4], "num_classes": 3},
        "model": "fc",
        "model_args": {"depth": 1, "width": 8},
        "epochs": 3,
        "batch_size": "full",
        "validation_fraction": 0.2,
    },
    "search": {"sampler": "random", "trials_per_arm": 2, "final_seeds": [1]},
    "resources": {"cpu": 2, "gpu": 0.25},
    "max_concurrent": 2,
    "arms": [
        {"name": "adam", "optimizer": "adam", "space": {"lr": {"low": 1e-3, "high": 1e-1, "log": True}}}
    ],
}

# what Ray and Tune print on their own, none of which a lyaptune user should see
RAY_PHRASES = [
    "Token authentication",
    "RAY_AUTH_MODE",
    "Configuration for experiment",
    "Number of trials",
    "9223372036854775807",
    "save not implemented",
    "Tuner.restore",
    "Resume experiment",
    "View detailed results",
    "Started a local Ray",
    "Trial status",
    "Failed to fetch metrics",
    "ray.init",
    "gcs_client",
    "Traceback",
]


def write(tmp_path: Path, spec: dict, name: str = "spec.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(spec))
    return path


def lyaptune(*args, env=None, timeout=600):
    return subprocess.run(
        [sys.executable, "-m", "lyaptune.cli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def assert_quiet(text: str) -> None:
    for phrase in RAY_PHRASES:
        assert phrase not in text, (phrase, text)


# ---------------------------------------------------------------------------------------------------
# Resources: parsing, overriding, checking (no Ray).


@pytest.mark.parametrize(
    "text,expected",
    [
        ("cpu=1,gpu=0", {"cpu": 1.0, "gpu": 0.0}),
        ("gpu=0.25", {"gpu": 0.25}),
        (" CPU=4 , gpu=2", {"cpu": 4, "gpu": 2}),
    ],
)
def test_parse_resources(text, expected):
    assert parse_resources(text) == expected


@pytest.mark.parametrize(
    "text,needle",
    [
        ("cpu=0", "--resources: cpu must be a number > 0, got '0'"),
        ("gpu=-1", "--resources: gpu must be a number >= 0, got '-1'"),
        ("gpu=1.5", "gpu above 1 must be a whole number"),
        ("tpu=1", "expected cpu=N,gpu=G (keys cpu, gpu), got 'tpu=1'"),
        ("cpu", "expected cpu=N,gpu=G"),
        ("cpu=two", "--resources: cpu must be a number, got 'two'"),
        ("", "expected cpu=N,gpu=G"),
    ],
)
def test_parse_resources_rejects_with_the_field_and_value(text, needle):
    with pytest.raises(ConfigError) as err:
        parse_resources(text)
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_request_fits_when_one_node_has_both():
    # a trial is placed on one node: 2 CPUs + 0.25 GPU fits a node with 4 CPUs and 1 GPU
    assert check_resources({"cpu": 2, "gpu": 0.25}, [{"cpu": 2, "gpu": 0}, {"cpu": 4, "gpu": 1}]) is None
    assert check_resources({"cpu": 1, "gpu": 0}, [{"cpu": 1, "gpu": 0}]) is None


def test_request_split_over_nodes_does_not_fit():
    # 4 CPUs in total, but no single node has 3
    msg = check_resources(
        {"cpu": 3, "gpu": 0}, [{"cpu": 2, "gpu": 0}, {"cpu": 2, "gpu": 0}], where="the cluster"
    )
    assert msg == (
        "resources: each trial asks for cpu=3, gpu=0, but the cluster has 2 nodes, "
        "the largest with cpu=2, gpu=0; "
        "run the spec here with `--resources cpu=2,gpu=0` or on a cluster that has them with `--address`"
    )


def test_gpu_request_on_a_cpu_machine_names_the_way_out():
    msg = check_resources({"cpu": 2, "gpu": 0.25}, [{"cpu": 2, "gpu": 0}])
    assert msg == (
        "resources: each trial asks for cpu=2, gpu=0.25, but this machine's Ray has cpu=2, gpu=0; "
        "run the spec here with `--resources cpu=2,gpu=0` or on a cluster that has them with `--address`"
    )
    # the suggested override fits the same machine
    assert check_resources(parse_resources("cpu=2,gpu=0"), [{"cpu": 2, "gpu": 0}]) is None


def test_override_replaces_the_request_and_the_device_follows():
    spec = StudySpec.from_dict({**SPEC, "task": {**SPEC["task"], "device": "cuda"}})
    assert spec.resources.gpu == 0.25
    cpu_spec = with_resources(spec, {"cpu": 1, "gpu": 0})
    assert (cpu_spec.resources.cpu, cpu_spec.resources.gpu) == (1, 0)
    assert cpu_spec.task.device == "auto"  # a cuda device with gpu 0 would be rejected by the spec
    assert with_resources(spec, None) is spec
    assert with_resources(spec, {"gpu": 0.5}).resources.cpu == 2  # keys not given keep the spec's values


def test_population_mode_follows_the_device_actually_used(tmp_path):
    from lyaptune.study.searcher import StudyPlan

    grid = {
        **SPEC,
        "population": "auto",
        "search": {"sampler": "grid", "final_seeds": [1]},
        "arms": [{"name": "sgd", "optimizer": "sgd", "grid": {"lr": [0.01, 0.1]}}],
    }
    spec = StudySpec.from_dict(grid)
    lines: list[str] = []
    gpu_plan = StudyPlan(
        spec, RunStore(tmp_path / "a", create=True), tmp_path / "a.journal", log=lines.append
    )
    cpu_spec = with_resources(spec, {"cpu": 1, "gpu": 0})
    cpu_plan = StudyPlan(
        cpu_spec, RunStore(tmp_path / "b", create=True), tmp_path / "b.journal", log=lines.append
    )
    assert gpu_plan._use_population(spec.arms[0]) is True  # gpu: 0.25, device auto: a GPU population
    assert cpu_plan._use_population(cpu_spec.arms[0]) is False  # gpu 0: one run after another


# ---------------------------------------------------------------------------------------------------
# The real CLI with a real local Ray.


@pytest.mark.integration
def test_gpu_spec_without_gpus_stops_at_once_with_one_line(tmp_path):
    t0 = time.perf_counter()
    r = lyaptune("run", write(tmp_path, SPEC), "--out", tmp_path / "runs", timeout=300)
    elapsed = time.perf_counter() - t0
    assert r.returncode == 2, (r.stdout, r.stderr)
    err = r.stderr.strip()
    assert err.splitlines() == [
        "lyaptune: error: resources: each trial asks for cpu=2, gpu=0.25, but this machine's Ray has "
        f"cpu={os.cpu_count()}, gpu=0; run the spec here with "
        f"`--resources cpu={min(2, os.cpu_count())},gpu=0` "
        "or on a cluster that has them with `--address`"
    ], err
    assert r.stdout == ""
    assert not (tmp_path / "runs").exists()  # nothing was created: running it again just works
    print(f"GPU spec without GPUs: exit 2 after {elapsed:.1f} s")


@pytest.mark.integration
def test_override_runs_the_gpu_spec_on_cpus_with_only_lyaptune_lines(tmp_path):
    r = lyaptune("run", write(tmp_path, SPEC), "--out", tmp_path / "runs", "--resources", "cpu=1,gpu=0")
    assert r.returncode == 0, (r.stdout, r.stderr)
    assert r.stderr == "", r.stderr
    assert_quiet(r.stdout)
    lines = r.stdout.splitlines()
    assert lines[0] == f"study clu: 1 arms, 3 runs, results in {tmp_path / 'runs' / 'clu'}"
    # progress lines between (issue 24): at the start, then at most one per 15 s, and at the end
    assert all(ln.startswith("[") for ln in lines[1:-1]) and len(lines) >= 4, lines
    assert " 0/3 runs, starting Ray | adam 0/3" in lines[1] and " 3/3 runs | adam 3/3" in lines[-2], lines
    assert lines[-1].startswith("done: 3 runs (completed 3)")
    run_dir = tmp_path / "runs" / "clu"
    trials = RunStore(run_dir).trials()
    assert sorted(trials["trial_id"]) == ["adam-final-s1", "adam-search-0000-s0", "adam-search-0001-s0"]
    info = json.loads((run_dir / "study.json").read_text())
    assert info["resources"] == {"cpu": 1.0, "gpu": 0.0}
    assert info["resources_override"] == {"cpu": 1.0, "gpu": 0.0}
    assert yaml.safe_load((run_dir / "spec.yaml").read_text())["resources"] == {"cpu": 2, "gpu": 0.25}
    (node,) = info["cluster"]["nodes"]
    assert node["cpu"] == os.cpu_count() and node["gpu"] == 0
    import ray
    import torch

    assert (info["cluster"]["ray"], info["cluster"]["torch"]) == (ray.__version__, torch.__version__)
    assert (run_dir / "ray.log").is_file()  # where Ray's own lines went
    status = lyaptune("status", run_dir)
    assert status.returncode == 0, status.stderr
    assert (
        f"  cluster: 1 node ({node['host']} cpu={os.cpu_count()} gpu=0); Ray {ray.__version__}"
        in status.stdout
    )
    assert "  resources per trial: cpu=1, gpu=0 (--resources)" in status.stdout


@pytest.mark.integration
def test_a_run_that_errored_makes_the_study_exit_1_and_is_named(tmp_path):
    """A search run that fails on every attempt (the fault-injection hook raises at its start) is stored
    as ``errored`` with its exception, the rest of the study completes, and ``lyaptune run`` exits 1:
    a script that chains studies sees that one of its runs is missing."""
    spec = {**SPEC, "max_failures": 0, "resources": {"cpu": 1, "gpu": 0}}
    fault = {"match": "adam-search-0001", "times": 5, "dir": str(tmp_path / "faults")}
    r = lyaptune(
        "run",
        write(tmp_path, spec),
        "--out",
        tmp_path / "runs",
        env={"LYAPTUNE_FAULT_INJECTION": json.dumps(fault)},
    )
    assert r.returncode == 1, (r.stdout, r.stderr)
    trials = RunStore(tmp_path / "runs" / "clu").trials().set_index("trial_id")
    assert trials.loc["adam-search-0001-s0", "status"] == "errored"
    assert "injected fault" in trials.loc["adam-search-0001-s0", "message"]
    assert trials.loc["adam-search-0000-s0", "status"] == "completed"
    assert trials.loc["adam-final-s1", "status"] == "completed"  # the finals take the best of the rest
    last = r.stdout.splitlines()[-1]
    assert last.startswith("done: 3 runs") and "errored 1" in last, r.stdout


@pytest.mark.integration
def test_bad_resources_flag_is_one_line(tmp_path):
    r = lyaptune("run", write(tmp_path, SPEC), "--out", tmp_path / "runs", "--resources", "gpu=half")
    assert r.returncode == 2
    assert r.stderr.strip() == "lyaptune: error: --resources: gpu must be a number, got 'half'"


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_prints_the_resume_command_and_resume_completes(tmp_path, sig):
    spec = {**SPEC, "resources": {"cpu": 1, "gpu": 0}, "max_concurrent": 1}
    spec["search"] = {**SPEC["search"], "trials_per_arm": 3}
    out = tmp_path / "runs"
    run_dir = out / "clu"
    marks = tmp_path / "marks"
    fault = {"match": "adam-search-0001", "block": "start", "dir": str(marks)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "lyaptune.cli", "run", str(write(tmp_path, spec)), "--out", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "LYAPTUNE_FAULT_INJECTION": json.dumps(fault)},
        start_new_session=True,
    )
    try:
        marker = marks / "adam-search-0001-s0.blocked"
        # the known point: the second search run started and waits
        wait_for_marker(marker, lambda: proc.poll() is None, proc.communicate)
        proc.send_signal(sig)
        stdout, stderr = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 128 + sig, (stdout, stderr)
    assert_quiet(stdout + stderr)
    stored = len(RunStore(run_dir).trials())
    assert "adam-search-0001-s0" not in set(RunStore(run_dir).trials()["trial_id"])  # left open
    name = signal.Signals(sig).name
    assert stdout.splitlines()[-1] == (
        f"interrupted ({name}): {stored} of 4 runs stored in {run_dir}; "
        f"continue with: lyaptune resume {run_dir}"
    ), stdout
    r = lyaptune("resume", run_dir)
    assert r.returncode == 0, (r.stdout, r.stderr)
    assert_quiet(r.stdout + r.stderr)
    trials = RunStore(run_dir).trials()
    assert trials["trial_id"].is_unique
    assert sorted(trials["trial_id"]) == [
        "adam-final-s1",
        "adam-search-0000-s0",
        "adam-search-0001-s0",
        "adam-search-0002-s0",
    ]
    assert set(trials["status"]) == {"completed"}


def test_kuberay_manifest_keeps_token_auth_and_the_data_volume():
    repo = Path(__file__).resolve().parents[1]
    import ray

    cluster, claim = yaml.safe_load_all((repo / "deploy" / "raycluster.yaml").read_text())
    assert (cluster["apiVersion"], cluster["kind"]) == ("ray.io/v1", "RayCluster")
    assert cluster["spec"]["rayVersion"] == ray.__version__  # the Ray this project is tested with
    groups = {"head": cluster["spec"]["headGroupSpec"]}
    groups.update({g["groupName"]: g for g in cluster["spec"]["workerGroupSpecs"]})
    assert set(groups) == {"head", "cpu", "gpu"}
    for name, group in groups.items():
        pod = group["template"]["spec"]
        (container,) = pod["containers"]
        env = {e["name"]: e for e in container["env"]}
        assert env["RAY_AUTH_MODE"]["value"] == "token", name
        secret = env["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"]
        assert secret == {"name": "ray-auth-token", "key": "token"}
        assert env["LYAPTUNE_DATA_ROOT"]["value"] == "/data"
        assert {"name": "data", "mountPath": "/data"} in container["volumeMounts"], name
        assert pod["volumes"][0]["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
    assert groups["gpu"]["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert groups["gpu"]["rayStartParams"]["num-gpus"] == "1"
    assert "nvidia.com/gpu" not in groups["cpu"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    assert "deploy/raycluster.yaml" in (repo / "README.md").read_text()
