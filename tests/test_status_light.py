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


@pytest.mark.slow
def test_status_and_load_study_read_a_real_run_without_torch(tmp_path):
    spec = {**BASE, "name": "light", "search": {"sampler": "random", "trials_per_arm": 2, "final_seeds": [1]}}
    out = tmp_path / "runs"
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    run = subprocess.run(
        [sys.executable, "-m", "lyaptune.cli", "run", str(write(tmp_path, spec)), "--out", str(out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr
    r = subprocess.run(
        [sys.executable, "-c", PROBE, str(out / "light")],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    assert "study light (finished;" in r.stdout
    # 2 random search trials on search seed 0, 1 final seed: the budget recorded by the runner
    assert "adam: search 2/2; final 1/1; best val_loss" in r.stdout
    assert "HEAVY [] ARMS ['adam'] CODE 0" in r.stdout, r.stdout
    # read from the typed spec: compare defaults to the objective at the final epoch; random sampler
    assert "TYPED ([{'metric': 'final_val_loss', 'mode': 'min'}], False, 'random', 'fc')" in r.stdout
