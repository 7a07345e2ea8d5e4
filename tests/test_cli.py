"""The real CLI in a subprocess: one trial, bad input as one clear line."""

import json
import os
import subprocess
import sys

import pytest


def lyaptune(*args, timeout=240):
    return subprocess.run(
        [sys.executable, "-m", "lyaptune.cli", *args], capture_output=True, text=True, timeout=timeout
    )


def test_trial_on_digits_prints_one_line_per_epoch():
    r = lyaptune(
        "trial",
        "--dataset",
        "digits",
        "--model",
        "fc",
        "--optimizer",
        "adam",
        "--lr",
        "1e-3",
        "--epochs",
        "5",
        "--device",
        "cpu",
    )
    assert r.returncode == 0, r.stderr
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("epoch=")]
    assert [ln.split()[0] for ln in lines] == [f"epoch={i}" for i in range(1, 6)]
    assert "status=completed" in r.stdout


@pytest.mark.parametrize(
    "args,needle",
    [
        (["--dataset", "digitz"], "unknown dataset 'digitz'; did you mean 'digits'?"),
        (["--model", "fcc"], "unknown model 'fcc'"),
        (["--optimizer", "lyamm"], "unknown optimizer 'lyamm'; did you mean 'lyam'?"),
        (["--schedule", "cosin"], "unknown schedule 'cosin'"),
        (["--epochs", "-2"], "epochs: must be an integer >= 1, got -2"),
        (["--batch-size", "0"], "batch_size: must be a positive integer or 'full', got 0"),
        (["--opt", "betaa=0.9"], "unknown hyperparameter for optimizer 'adam': 'betaa'"),
        (["--lr", "-1"], "-1"),
        (["--dataset", "mnist", "--data-root", "/nonexistent/lyaptune"], "/nonexistent/lyaptune"),
    ],
)
def test_bad_input_is_one_line_without_traceback(args, needle):
    r = lyaptune("trial", "--epochs", "1", *args) if "--epochs" not in args else lyaptune("trial", *args)
    assert r.returncode == 2, (r.stdout, r.stderr)
    err = r.stderr.strip()
    assert "Traceback" not in err
    assert len(err.splitlines()) == 1, err
    assert err.startswith("lyaptune: error:")
    assert needle in err


def test_debug_flag_shows_the_traceback():
    r = lyaptune("--debug", "trial", "--dataset", "digitz", "--epochs", "1")
    assert r.returncode != 0 and "Traceback" in r.stderr


def test_list_commands():
    r = lyaptune("list", "optimizers")
    assert r.returncode == 0
    for name in ("adam", "lyam", "rlo", "rlo-lambda", "rlo-lifted", "expdecay-gradnorm", "lion"):
        assert f"\n{name} " in "\n" + r.stdout


@pytest.mark.parametrize("command", ["run", "resume"])
def test_bad_resources_override_is_one_line_before_anything_runs(tmp_path, command):
    target = tmp_path / ("spec.yaml" if command == "run" else "run-dir")
    if command == "run":
        target.write_text("name: x\ntask: {dataset: digits, model: fc}\narms: [{name: a, optimizer: adam}]\n")
    r = lyaptune(command, str(target), "--resources", "cpu=0,gpu=0")
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert r.stderr.strip() == "lyaptune: error: --resources: cpu must be a number > 0, got '0'"
    assert r.stdout == ""


def test_run_help_names_the_resources_override():
    r = lyaptune("run", "--help")
    assert r.returncode == 0
    assert "--resources cpu=N,gpu=G" in r.stdout


# ------------------------------------------------------------------------------------------- --dry-run
DRY_SPEC = """\
name: dry
task: {dataset: DATASET, model: fc, model_args: {depth: 1, width: 8}, epochs: 2, device: cpu}
search: {sampler: random, trials_per_arm: 2, final_seeds: [1]}
resources: RESOURCES
arms: [{name: a, optimizer: adam, space: {lr: {low: 1.0e-3, high: 1.0e-1, log: true}}}]
"""


def dry_run(tmp_path, dataset="digits", resources="{cpu: 1, gpu: 0}", *extra, data_root=None):
    spec = tmp_path / "dry.yaml"
    spec.write_text(DRY_SPEC.replace("DATASET", dataset).replace("RESOURCES", resources))
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "LYAPTUNE_DATA_ROOT")}
    env["LYAPTUNE_DATA_ROOT"] = str(data_root or tmp_path / "no-data")
    return subprocess.run(
        [sys.executable, "-m", "lyaptune.cli", "run", str(spec), "--dry-run", *extra],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=tmp_path,
    )


def test_dry_run_says_what_it_checked_and_what_it_did_not(tmp_path):
    r = dry_run(tmp_path)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    checked = out[out.index("checked:\n") : out.index("not checked:\n")]
    assert "  spec: fields and registry names" in checked
    assert "  data: digits is bundled or generated (no files to read)" in checked
    cpus = os.cpu_count()
    assert f"  resources: one trial's cpu=1, gpu=0 fits this machine (cpu={cpus}," in checked
    assert "that the data files read correctly, and that training runs" in out[out.index("not checked:") :]
    assert not (tmp_path / "runs").exists()


def test_dry_run_refuses_missing_data_in_one_line(tmp_path):
    r = dry_run(tmp_path, dataset="mnist")
    assert r.returncode == 2, (r.stdout, r.stderr)
    err = r.stderr.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert err.startswith(
        "lyaptune: error: dataset 'mnist' (arm 'a'): missing MNIST/raw/train-images-idx3-ubyte, "
        "MNIST/raw/train-labels-idx1-ubyte, MNIST/raw/t10k-images-idx3-ubyte, "
        f"MNIST/raw/t10k-labels-idx1-ubyte in data directory {tmp_path / 'no-data'}; "
    )


def test_dry_run_finds_present_data_and_leaves_a_cluster_unchecked(tmp_path):
    root = tmp_path / "data"
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    names = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte"]
    for name in names:
        (raw / name).write_bytes(b"")
    (raw / "t10k-labels-idx1-ubyte.gz").write_bytes(b"")  # the archive the loader unpacks counts
    r = dry_run(tmp_path, "mnist", "{cpu: 1, gpu: 0}", data_root=root)
    assert r.returncode == 0, r.stderr
    assert f"data: the 4 files of mnist are present in {root}" in " ".join(r.stdout.split())
    # on a cluster, resources are checked against its nodes when the study starts, not here
    r = dry_run(tmp_path, "digits", "{cpu: 1, gpu: 64}", "--address", "127.0.0.1:1", data_root=root)
    assert r.returncode == 0, r.stderr
    tail = " ".join(r.stdout[r.stdout.index("not checked:") :].split())
    assert (
        "resources: cpu=1, gpu=64 per trial on the cluster at 127.0.0.1:1 (checked against its nodes" in tail
    )


def test_dry_run_refuses_resources_this_machine_never_has(tmp_path):
    r = dry_run(tmp_path, "digits", "{cpu: 1, gpu: 64}")
    assert r.returncode == 2, (r.stdout, r.stderr)
    err = r.stderr.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert err.startswith(
        "lyaptune: error: resources: each trial asks for cpu=1, gpu=64, but this machine has"
    )
    assert "--resources cpu=1,gpu=" in err


# ------------------------------------------------------------------------------- 100 columns at most
def test_compare_of_two_runs_and_status_print_no_line_wider_than_100(tmp_path, capsys, monkeypatch):
    """Two real run directories (RunStore's Parquet files of a 4-arm study, 6 final seeds each):
    ``compare A B`` was about 600 characters wide before issue 24; now every line fits 100, and the
    numbers are still there (the derived arm's geometric mean by numpy), as is every arm in every block."""
    import numpy as np
    from test_analysis import DERIVED, build_run

    from lyaptune.cli import main

    monkeypatch.delenv("COLUMNS", raising=False)
    a = build_run(tmp_path / "runs" / "synth")
    b = build_run(tmp_path / "again" / "synth", shuffle=False)
    csv = tmp_path / "table.csv"
    assert main(["compare", str(a), str(b), "--out", str(tmp_path / "cmp"), "--csv", str(csv)]) == 0
    out = capsys.readouterr().out
    widths = [len(line) for line in out.splitlines()]
    assert max(widths) <= 100, max(widths)
    gmean = float(np.exp(np.mean(np.log(DERIVED["final_grad_norm"]))))
    assert f"{gmean:.4g} [" in out
    # each block of the outcome table names its rows: the two studies' four arms
    first = out[: out.index("\n\n")]
    assert first.count("derived (ref)") == 2 and first.count("adam-cosine") == 2
    # the full table, every column, is in the CSV
    import pandas as pd

    assert len(pd.read_csv(csv)) == 8
    info = json.loads((a / "study.json").read_text())  # the budgets the runner records
    info["search_budget"] = {"derived": 0, "adam-cosine": 8, "dead": 8, "lyam-grid": 4}
    (a / "study.json").write_text(json.dumps(info))
    assert main(["status", str(a)]) == 0
    status = capsys.readouterr().out
    assert max(len(line) for line in status.splitlines()) <= 100
    assert "adam-cosine: search 8/8 (diverged 1); final 6/6; best val_loss 0.22" in status
