"""End to end: a tiny study through the real runner (``lyaptune run``), then ``lyaptune report``.

The study runs in a subprocess with a real local Ray and real Optuna on a synthetic dataset; the
report is written by the real CLI in another subprocess, every file is checked, the numbers of the
comparison table are recomputed from ``trials.parquet`` with numpy, and the HTML page is opened in
headless Chromium (skipped, with the reason, where Chromium is not installed).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_report_answer import WINDOW, first_screen

from lyaptune.store import RunStore

SPEC = textwrap.dedent(
    """\
    name: tiny-e2e
    task: {dataset: digits, model: fc, model_args: {depth: 2, width: 128}, epochs: 20, batch_size: full,
           validation_fraction: 0.1, device: cpu}
    objective: {metric: val_loss, mode: min, at: final}
    search: {sampler: tpe, trials_per_arm: 2, seeds: [0], final_seeds: [1, 2]}
    resources: {cpu: 1, gpu: 0}
    max_concurrent: 2
    claims:
      - {id: e2e-derived-loss, text: the derived step reaches a lower final training loss than tuned Adam,
         metric: final_train_loss, arm: derived, than: adam-exponential, direction: lower,
         source: extension}
    arms:
      - {name: derived, optimizer: adam, schedule: derived-constant, lipschitz: {samples: 2}}
      - name: adam-exponential
        optimizer: adam
        schedule: exponential
        space: {lr: {low: 1.0e-4, high: 1.0e-1, log: true}}
    """
)
# The quickstart's task (digits, FC 2x128, 20 full-batch epochs) at a smaller budget: there the derived
# constant step is far too large for Adam and its runs collapse (README, "What the quickstart shows").
# The study itself (Ray start-up, 6 runs incl. two K_hat estimates) takes 35-70 s on 2 CPU cores.
pytestmark = pytest.mark.slow

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--enable-logging=stderr",
    "--v=0",
]


def lyaptune(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run(
        [sys.executable, "-m", "lyaptune.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


@pytest.fixture(scope="module")
def reported(tmp_path_factory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("e2e")
    spec = tmp / "tiny.yaml"
    spec.write_text(SPEC)
    r = lyaptune("run", str(spec), "--out", str(tmp / "runs"))
    assert r.returncode == 0, f"lyaptune run failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    run_dir = tmp / "runs" / "tiny-e2e"
    out = tmp / "report"
    r = lyaptune("report", str(run_dir), "--out", str(out), "--format", "md,html")
    assert r.returncode == 0, f"lyaptune report failed ({r.returncode}):\n{r.stdout}\n{r.stderr}"
    (out / "stdout.txt").write_text(r.stdout)
    return run_dir, out


def test_report_writes_every_file(reported):
    run_dir, out = reported
    expected = [
        "report.md",
        "report.html",
        "compare.csv",
        "compare.json",
        "budget.csv",
        "matching.csv",
        "runs.csv",
    ]
    # a derived arm beside a schedule arm: papers/003's scheduler figure (Figure 1) too
    for stem in ("curves", "budget", "slices_adam-exponential", "divergence", "gradnorm_vs_schedulers"):
        expected += [f"figures/{stem}.png", f"figures/{stem}.svg"]
    missing = [f for f in expected if not (out / f).is_file() or (out / f).stat().st_size == 0]
    assert not missing, (
        f"missing or empty: {missing}; have {sorted(str(p.relative_to(out)) for p in out.rglob('*'))}"
    )
    assert (out / "figures" / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert b"<svg" in (out / "figures" / "curves.svg").read_bytes()[:2000]
    html = (out / "report.html").read_text()
    for link in re.findall(r'(?:src|href)="([^"]+)"', html):
        assert (out / link).is_file(), f"report.html links to missing {link}"


def test_report_draws_the_schedulers_figure_with_its_caption(reported):
    _, out = reported
    md = (out / "report.md").read_text()
    link = "![papers/003 Figure 1 (also 3, 6, 7, 10)"
    (line,) = [ln for ln in md.splitlines() if ln.startswith(link)]
    assert line.endswith("](figures/gradnorm_vs_schedulers.png)")
    assert "1 arm (final runs, 2 seeds each)" in line
    assert "the derived step in black (final runs, 2 seeds each)" in line
    assert "band the min-max over them" in line
    # the saved SVG holds one legend entry per arm (matplotlib writes each text as an SVG comment)
    svg = (out / "figures" / "gradnorm_vs_schedulers.svg").read_text()
    legend = re.findall(r"<!-- ((?:derived|adam-exponential) [^>]*\(2 seeds, final\)) -->", svg)
    assert len(legend) == 2 and legend[0].startswith("derived alpha=") and legend[1].startswith("adam-exp")
    # the derived step collapses on this task (see below): marked in its legend entry and the caption
    assert "[collapsed 2/2]" in legend[0] and "[collapsed" not in legend[1]
    assert line.endswith("x markers: 1 curve with collapsed runs.](figures/gradnorm_vs_schedulers.png)")


def test_report_without_figures(reported, tmp_path):
    run_dir, _ = reported
    r = lyaptune("report", str(run_dir), "--out", str(tmp_path / "bare"), "--no-figures")
    assert r.returncode == 0, r.stderr[-3000:]
    assert not list((tmp_path / "bare" / "figures").glob("*")), "figures drawn despite --no-figures"
    md = (tmp_path / "bare" / "report.md").read_text()
    assert "![" not in md and "Figures were not drawn (written with --no-figures)" in md
    assert "| e2e-derived-loss |" in md and (tmp_path / "bare" / "compare.csv").stat().st_size > 0
    assert "<img " not in (tmp_path / "bare" / "report.html").read_text()


def test_report_numbers_match_the_stored_runs(reported):
    run_dir, out = reported
    trials = RunStore(run_dir).trials()
    table = pd.read_csv(out / "compare.csv").set_index("arm")
    assert list(table.index) == ["derived", "adam-exponential"]
    for arm in table.index:
        final = trials[
            (trials["arm"] == arm) & (trials["phase"] == "final") & (trials["status"] == "completed")
        ]
        assert table.loc[arm, "n_completed"] == len(final)
        for m in ("final_test_acc", "final_train_loss", "min_grad_norm"):
            x = final[m].to_numpy(float)
            assert table.loc[arm, f"{m}_mean"] == pytest.approx(x.mean(), rel=1e-9)
    search = trials[(trials["arm"] == "adam-exponential") & (trials["phase"] == "search")]
    assert table.loc["adam-exponential", "search_runs"] == len(search) == 2
    # tuning cost: the search runs' training clocks (evaluation and wall time not counted) + K_hat
    train_s = sum(json.loads(i)["train_s"] for i in search["info_json"])
    assert table.loc["adam-exponential", "search_device_s"] == pytest.approx(train_s, rel=1e-9)
    assert 0 < train_s < search["wall_s"].sum()
    derived = trials[trials["arm"] == "derived"]
    khat_s = sum(json.loads(i)["lipschitz_seconds"] for i in derived["info_json"])
    assert table.loc["derived", "tuning_device_s"] == pytest.approx(khat_s, rel=1e-9)
    assert table.loc["derived", "search_runs"] == 0
    assert bool(table.loc["derived", "is_reference"])
    md = (out / "report.md").read_text()
    assert "Collapsed final-seed runs per arm" in md and "derived (ref)" in md
    assert md.index("## How to read this report") < md.index("## Comparison of the final configurations")


def test_the_collapsed_derived_arm_is_found_and_never_ranked(reported):
    _, out = reported
    table = pd.read_csv(out / "compare.csv").set_index("arm")
    # the derived step collapses on this task (loss near L(w0) / H(y), accuracy near the majority rate)
    assert table.loc["derived", "n_completed"] == 2
    assert table.loc["derived", "n_collapsed"] == 2, table.loc["derived"].filter(like="_mean").to_dict()
    # nothing collapsed is ranked, so nothing collapsed is a win
    assert table.loc[table["n_collapsed"] > 0, "rank"].isna().all()
    assert "derived: 2 of 2 completed final runs collapsed" in (out / "report.md").read_text()
    # the collapsed reference is decided without a test: the valid arm is better on every metric
    for m in ("final_train_loss", "final_grad_norm", "final_test_acc"):
        assert table.loc["adam-exponential", f"{m}_verdict"] == "better (reference collapsed 2 of 2)"
        assert not table.loc["adam-exponential", f"{m}_tested"]
    # a claimed winner that collapsed on most seeds is contradicted, the reason naming the collapse
    (claim,) = json.loads((out / "compare.json").read_text())["claims"]
    assert claim["id"] == "e2e-derived-loss" and claim["verdict"] == "contradicted"
    assert "collapsed" in claim["reason"]
    md = (out / "report.md").read_text()
    heads = [ln for ln in md.splitlines() if ln.startswith("## ")]
    assert heads[:3] == ["## Answer", "## Claims", "## How to read this report"]
    assert "| e2e-derived-loss |" in md
    assert "e2e-derived-loss: CONTRADICTED" in (out / "stdout.txt").read_text()
    runs = pd.read_csv(out / "runs.csv")
    fin = runs[(runs["arm"] == "derived") & (runs["phase"] == "final")]
    assert fin["collapsed"].all() and fin["collapse_reason"].str.len().gt(0).all()


def test_html_report_opens_in_headless_chromium(reported, tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("Chromium is not installed (Debian: apt-get install chromium); CI installs it")
    _, out = reported
    page = (out / "report.html").resolve().as_uri()
    r = subprocess.run(
        [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom", page],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    console = [ln for ln in r.stderr.splitlines() if ":CONSOLE" in ln]
    assert not console, "console messages:\n" + "\n".join(console)
    dom = r.stdout
    assert "<title>lyaptune report: tiny-e2e</title>" in dom
    n_img = len(re.findall(r"<img ", dom))
    assert n_img == len(re.findall(r"<img ", (out / "report.html").read_text())) >= 4
    assert "Comparison of the final configurations" in dom


def test_answer_with_k_hat_and_alpha_on_the_first_screen_in_chromium(reported, tmp_path):
    """The Answer's table, K_hat and alpha in the text a 1400 x 900 window shows, read from the DOM."""
    run_dir, out = reported
    seen = first_screen(out / "report.html", tmp_path)
    assert seen["width"] == WINDOW[0] and 0 < seen["height"] <= WINDOW[1]
    assert seen["table"] is not None and seen["table"]["bottom"] <= seen["height"], seen["table"]
    texts = seen["texts"]
    assert {"Answer", "K_hat", "alpha", "derived (ref)", "adam-exponential"} <= set(texts)
    # K_hat and alpha as the derived arm's final runs stored them: mean (min-max), 3 digits
    trials = RunStore(run_dir).trials()
    fin = trials[(trials["arm"] == "derived") & (trials["phase"] == "final")]
    for col in ("k_hat", "derived_lr"):
        x = fin[col].to_numpy(float)
        g = [f"{v:.3g}" for v in (np.mean(x), x.min(), x.max())]
        cell = g[0] + (f" ({g[1]}-{g[2]})" if g[1] != g[2] else "")
        assert cell in texts, (col, cell)
        assert any(f"= {g[0]}" in t for t in texts if "alpha = sqrt(2 L(w0) / (K_hat T))" in t)
    # the collapsed reference and the verdict the comparison table gave, on the first screen
    table = pd.read_csv(out / "compare.csv").set_index("arm")
    assert f"{table.loc['derived', 'n_collapsed']} / 0 of 2" in texts
    primary = json.loads((out / "compare.json").read_text())["settings"]["primary"][0]["metric"]
    assert table.loc["adam-exponential", f"{primary}_verdict"] in texts
