"""The real CLI in a subprocess: one trial, bad input as one clear line."""

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
