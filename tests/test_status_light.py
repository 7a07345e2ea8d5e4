"""Reading a stored run is pure and cheap (issue 14): `lyaptune status` and `load_study` build no
optimizer and import neither torch nor the registries: the typed spec is built from the stored
`spec.yaml` without them; a real study's run directory."""

import os
import subprocess
import sys

import pytest
from test_reliability import BASE, write

PROBE = """
import sys
from lyaptune.cli import main
code = main(["status", sys.argv[1]])
from lyaptune.analysis.load import load_study
study = load_study(sys.argv[1])
typed = (study.primary_metrics, study.is_grid("adam"), study.sampler_of("adam"), study.task["model"])
print("TYPED", typed)
names = ("torch", "torch.optim", "lyaptune.optim", "ray")
heavy = sorted(m for m in names if m in sys.modules)
print("HEAVY", heavy, "ARMS", study.arms, "CODE", code)
"""


ENV = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "COLUMNS")}


@pytest.fixture(scope="module")
def light_run(tmp_path_factory):
    """A real study's run directory (the real CLI, a local Ray, one arm, 2 search + 1 final run)."""
    tmp_path = tmp_path_factory.mktemp("light")
    spec = {**BASE, "name": "light", "search": {"sampler": "random", "trials_per_arm": 2, "final_seeds": [1]}}
    out = tmp_path / "runs"
    run = subprocess.run(
        [sys.executable, "-m", "lyaptune.cli", "run", str(write(tmp_path, spec)), "--out", str(out)],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr
    return out / "light"


@pytest.mark.slow
def test_status_and_load_study_read_a_real_run_without_torch(light_run):
    r = subprocess.run(
        [sys.executable, "-c", PROBE, str(light_run)],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    assert "study light (finished;" in r.stdout
    # 2 random search trials on search seed 0, 1 final seed: the budget recorded by the runner
    assert "adam: search 2/2; final 1/1; best val_loss" in r.stdout
    assert "HEAVY [] ARMS ['adam'] CODE 0" in r.stdout, r.stdout
    # read from the typed spec: compare defaults to the objective at the final epoch; random sampler
    assert "TYPED ([{'metric': 'final_val_loss', 'mode': 'min'}], False, 'random', 'fc')" in r.stdout


@pytest.mark.slow
def test_compare_a_b_and_status_of_real_runs_fit_100_columns(light_run, tmp_path):
    """``lyaptune compare A B`` and ``lyaptune status A`` on real run directories (B: a copy of A, a
    second study of the same spec): no line wider than 100 characters (issue 24)."""
    import shutil

    other = tmp_path / "again" / "light"
    shutil.copytree(light_run, other)

    def cli(*args):
        r = subprocess.run(
            [sys.executable, "-m", "lyaptune.cli", *map(str, args)],
            capture_output=True,
            text=True,
            env=ENV,
            timeout=300,
        )
        assert r.returncode == 0, r.stderr
        return r.stdout

    compared = cli("compare", light_run, other, "--out", tmp_path / "cmp")
    status = cli("status", light_run)
    for text in (compared, status):
        assert max(len(line) for line in text.splitlines()) <= 100, text
    assert "adam: search 2/2; final 1/1; best val_loss" in status
    # both studies' rows in the outcome table (two runs of one spec are told apart by study)
    first = compared[: compared.index("\n\n")]
    assert first.count("\nlight") == 2 and "light#1" in first and first.count("  adam") == 2, first
