"""The GPU suite (benchmarks/gpu_suite.sh) at toy size on the CPU, end to end, and its parts' pieces.

The suite is run as a user runs it (bash, in a subprocess): every part's JSON must exist, parse, carry
the common keys, and every figure must be a positive finite number; the device part, with no CUDA
device, must say so and give no figures; summary.md must name every part. The device checks'
machinery is run CPU against CPU, where every value must agree exactly.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from benchmarks.gpu.common import KEYS, NO_CUDA, PARTS, STATUSES, Cut, Part, fallback, run_command
from benchmarks.gpu.d_paper003 import cut_spec
from benchmarks.gpu.e_device_checks import compare

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
needs_mnist = pytest.mark.skipif(not (DATA / "MNIST" / "raw").is_dir(), reason=f"mini-MNIST not under {DATA}")

# figures each part must give at toy size (besides any others)
EXPECTED = {
    "a_optimizer_step": {
        "parameters_M",
        "copy_bandwidth_GBps",
        "adam_fused_ms",
        "adam_foreach_ms",
        "lyam_ms",
        "rlo_ms",
        "rlo_lambda_ms",
        "rlo_lifted_ms",
        "expdecay_gradnorm_ms",
        "lion_ms",
        "lyam_floor_ms",
        "lyam_x_fused_adam",
    },
    "b_study_throughput": {
        "bare_s_4",
        "lyaptune_s_4",
        "population_s_4",
        "lyaptune_x_bare_4",
        "population_speedup_4",
    },
    "c_khat": {"khat_s", "k_hat", "hvps"},
    "d_paper003": {
        "study_wall_s",
        "report_s",
        "runs",
        "k_hat",
        "alpha",
        "derived_final_final_grad_norm",
        "adam_constant_search_final_train_loss",
        "adam_constant_final_final_test_acc",
    },
}


@pytest.mark.slow
@needs_mnist
def test_toy_suite_writes_every_part_and_the_summary(tmp_path: Path) -> None:
    out = tmp_path / "suite"
    env = {**os.environ, "PYTHON": sys.executable, "LYAPTUNE_SUITE_DATA": str(DATA)}
    r = subprocess.run(
        ["bash", str(REPO / "benchmarks" / "gpu_suite.sh"), "--toy", "--out", str(out)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    cuda = torch.cuda.is_available()
    for name in PARTS:
        data = json.loads((out / f"{name}.json").read_text())
        assert set(KEYS) <= set(data), (name, set(KEYS) - set(data))
        assert data["part"] == name and data["toy"] is True
        assert data["status"] in STATUSES
        for fig, value in data["figures"].items():
            assert isinstance(value, float) and math.isfinite(value) and value > 0, (name, fig, value)
        if name == "e_device_checks" and not cuda:
            assert data["status"] == "skipped" and data["message"] == NO_CUDA
            assert data["figures"] == {} and data["goals"] == []
            continue
        assert data["status"] == "ok", (name, data["message"])
        assert EXPECTED.get(name, set()) <= set(data["figures"]), (
            name,
            EXPECTED[name] - set(data["figures"]),
        )
        for goal in data["goals"]:
            assert goal["value"] == data["figures"][goal["figure"]]
    a = json.loads((out / "a_optimizer_step.json").read_text())
    for row in a["details"]["rows"]:  # the bandwidth floor: the step's compulsory bytes over the copy rate
        floor = row["bytes_per_step"] / (a["figures"]["copy_bandwidth_GBps"] * 1e9) * 1e3
        assert row["floor_ms"] == pytest.approx(floor, rel=1e-9)
        assert row["bytes_per_step"] == a["details"]["parameters"] * 4 * (3 + 2 * row["state_tensors"])
    d = json.loads((out / "d_paper003.json").read_text())
    assert any("3 epochs instead of 100" in c for c in d["details"]["cuts"])
    assert {(row["arm"], row["phase"]) for row in d["details"]["arms"]} >= {("derived", "final")}
    assert (Path(d["details"]["report"][0])).is_file()
    summary = (out / "summary.md").read_text()
    for title in PARTS.values():
        assert title in summary
    assert NO_CUDA in summary or cuda


@pytest.mark.slow
@needs_mnist
def test_device_checks_cpu_against_cpu_agree_exactly(tmp_path: Path) -> None:
    env = {**os.environ, "LYAPTUNE_SUITE_DATA": str(DATA)}
    cmd = [sys.executable, "-m", "benchmarks.gpu.e_device_checks", "--out", str(tmp_path), "--budget", "120"]
    r = subprocess.run([*cmd, "--toy", "--against", "cpu"], cwd=REPO, env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    data = json.loads((tmp_path / "e_device_checks.json").read_text())
    assert data["status"] == "ok", data["message"]
    checks = data["details"]["checks"]
    groups = {c["check"].split(" (")[0].split(",")[0] for c in checks}
    assert {"single model", "population member 0", "derived step", "optimizer lyam"} <= groups
    assert any(c["check"].startswith("checkpoint / resume") for c in checks)
    for c in checks:  # the same seed on the same device: identical values, every one of them compared
        assert c["n"] >= 1 and c["agree"] and c["max_abs_diff"] == 0.0, c
    assert data["figures"] == {"checks_total": float(len(checks)), "checks_agreeing": float(len(checks))}


def test_compare_applies_the_stated_tolerance() -> None:
    # |d - c| <= atol + rtol |c|: 1.0005 vs 1 is inside rtol 1e-3, 1.002 is not
    assert compare("x", "train_loss", [1.0, 2.0], [1.0005, 2.0], (1e-3, 0.0))["agree"]
    row = compare("x", "train_loss", [1.0, 2.0], [1.002, 2.0], (1e-3, 0.0))
    assert not row["agree"] and row["max_abs_diff"] == pytest.approx(0.002)
    assert row["max_rel_diff"] == pytest.approx(0.002)
    assert not compare("x", "test_acc", [0.5, 0.6], [0.5], (0.0, 0.1))["agree"]  # a missing epoch


def test_cut_spec_lists_every_cut_and_keeps_the_rest() -> None:
    import yaml

    spec = yaml.safe_load((REPO / "experiments" / "003_fc_fullbatch_constant_steps_d3.yaml").read_text())
    full, cuts = cut_spec(spec, toy=False, root="/data")
    assert full["task"]["epochs"] == 100 and full["task"]["model_args"] == {"depth": 3, "width": 1000}
    assert full["search"]["final_seeds"] == [3, 4] and full["search"]["seeds"] == [0, 1, 2]
    assert [a["lipschitz"]["samples"] for a in full["arms"] if "lipschitz" in a] == [10]
    assert full["arms"][1]["grid"]["lr"] == [0.01, 0.001, 1e-4, 1e-5]
    assert any("10 weight samples instead of 100" in c for c in cuts)
    assert any("[3, 4] instead of [3, 4, 5, 6, 7]" in c for c in cuts)
    toy, toy_cuts = cut_spec(spec, toy=True, root="/data")
    assert toy["task"]["epochs"] == 3 and toy["resources"] == {"cpu": 1, "gpu": 0}
    assert len(toy_cuts) > len(cuts)
    assert spec["task"]["epochs"] == 100  # the committed spec is not changed


def test_fallback_marks_a_killed_part_cut(tmp_path: Path) -> None:
    (tmp_path / "c_khat.json").write_text(json.dumps({"part": "c_khat", "status": "running", "figures": {}}))
    fallback(["--out", str(tmp_path), "--part", "c_khat", "--rc", "124", "--budget", "25"])
    data = json.loads((tmp_path / "c_khat.json").read_text())
    assert data["status"] == "cut" and "25 s budget" in data["message"]
    fallback(["--out", str(tmp_path), "--part", "a_optimizer_step", "--rc", "1"])
    data = json.loads((tmp_path / "a_optimizer_step.json").read_text())
    assert data["status"] == "failed" and set(KEYS) <= set(data)


def test_a_part_out_of_budget_is_cut_and_an_error_fails(tmp_path: Path) -> None:
    with Part("c_khat", tmp_path, 0.0, toy=True) as part:
        part.figure("khat_s", 1.5)
        part.check(10, "the estimate")
        part.figure("k_hat", 2.0)  # never reached
    data = json.loads((tmp_path / "c_khat.json").read_text())
    assert data["status"] == "cut" and data["message"].startswith("the estimate left out")
    assert data["figures"] == {"khat_s": 1.5}  # what was measured before the cut is kept
    with Part("a_optimizer_step", tmp_path, 60.0, toy=True):
        raise ValueError("no kernel")
    data = json.loads((tmp_path / "a_optimizer_step.json").read_text())
    assert data["status"] == "failed" and data["message"] == "ValueError: no kernel"


def test_a_command_past_its_limit_is_stopped_and_cuts(tmp_path: Path) -> None:
    with pytest.raises(Cut, match="stopped after 1 s"):
        run_command([sys.executable, "-c", "import time; time.sleep(120)"], 1.0, tmp_path / "log")
    with pytest.raises(RuntimeError, match="exited 3"):
        run_command([sys.executable, "-c", "raise SystemExit(3)"], 60.0, tmp_path / "log")
