"""The papers' figures as papers/003 draws them (lyaptune.analysis.paper_figures and its scripts).

Figure 2 of papers/003 compares the derived step with every constant step of the grid, so the figure
must hold one curve per grid point plus the derived step: checked on a hand-built study (values
worked out here) and on a real ``--smoke`` run of a constant-step spec through the CLI, where
``lyaptune report`` must draw it too.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lyaptune.analysis import Study, load_study
from lyaptune.analysis import paper_figures as pf

ROOT = Path(__file__).resolve().parents[1]

GRID = [0.01, 0.001, 0.0001]


def _trial(arm: str, phase: str, seed: int, schedule: str, params: dict, **extra) -> dict:
    tid = f"{arm}-{phase}-{json.dumps(params, sort_keys=True)}-s{seed}"
    return {
        "arm": arm,
        "trial_id": tid,
        "phase": phase,
        "seed": seed,
        "schedule": schedule,
        "status": "completed",
        "params_json": json.dumps(params),
        "derived_lr": extra.get("derived_lr", np.nan),
    }


def _hand_study() -> tuple[Study, dict[str, np.ndarray]]:
    """Grid arm: 3 lrs x search seeds {0, 1} plus a final re-run of the best (to be ignored); derived
    and cosine: final seeds {5, 6}. grad_norm of a run at epoch e: base * (e + seed) with a base per
    configuration, so every mean is worked out by hand below."""
    spec = {
        "name": "hand",
        "task": {"dataset": "digits", "model": "fc", "epochs": 3},
        "search": {"sampler": "tpe", "seeds": [0, 1], "final_seeds": [5, 6]},
        "arms": [
            {"name": "derived", "optimizer": "adam", "schedule": "derived-constant"},
            {"name": "adam-constant", "optimizer": "adam", "schedule": "constant", "grid": {"lr": GRID}},
            {"name": "adam-cosine", "optimizer": "adam", "schedule": "cosine"},
        ],
    }
    runs: list[tuple[dict, float]] = []
    for k, lr in enumerate(GRID):
        for seed in (0, 1):
            runs.append((_trial("adam-constant", "search", seed, "constant", {"lr": lr}), 10.0 ** (k + 1)))
    runs.append((_trial("adam-constant", "final", 5, "constant", {"lr": 0.001}), 1e6))  # not drawn
    for seed in (5, 6):
        runs.append((_trial("derived", "final", seed, "derived-constant", {}, derived_lr=0.0123), 0.5))
        runs.append((_trial("adam-cosine", "final", seed, "cosine", {"lr": 0.004}), 3.0))
    rows = []
    for t, base in runs:
        for e in (1, 2, 3):
            value = base * (e + t["seed"])
            rows.append(
                {
                    "arm": t["arm"],
                    "trial_id": t["trial_id"],
                    "phase": t["phase"],
                    "seed": t["seed"],
                    "epoch": e,
                    "grad_norm": value,
                    "train_loss": value / 10,
                    "test_acc": 0.1,
                }
            )
    e = np.array([1.0, 2.0, 3.0])
    expected = {  # mean over seeds of base * (e + seed)
        "adam-constant lr=0.01": 10.0 * (e + 0.5),  # seeds 0, 1
        "adam-constant lr=0.001": 100.0 * (e + 0.5),
        "adam-constant lr=0.0001": 1000.0 * (e + 0.5),
        "derived": 0.5 * (e + 5.5),  # seeds 5, 6
        "adam-cosine": 3.0 * (e + 5.5),
    }
    return Study(trials=pd.DataFrame([t for t, _ in runs]), epochs=pd.DataFrame(rows), spec=spec), expected


def _lines_by_label(ax) -> dict[str, np.ndarray]:
    return {line.get_label(): np.asarray(line.get_ydata(), dtype=float) for line in ax.get_lines()}


def _match(lines: dict[str, np.ndarray], prefix: str) -> np.ndarray:
    hits = [label for label in lines if label.startswith(prefix + " ")]
    assert len(hits) == 1, (prefix, list(lines))
    return lines[hits[0]]


def test_constant_steps_figure_draws_every_grid_point_and_the_derived_step():
    study, expected = _hand_study()
    fig = pf.constant_steps_figure(study)
    axes = fig.get_axes()
    assert len(axes) == 3 and axes[0].get_yscale() == "log"
    # mean losses from 0.5 (1 + 5.5) / 10 = 0.325 (derived) to 1000 (3 + 0.5) / 10 = 350: > 2 decades
    assert axes[1].get_yscale() == "log" and axes[2].get_yscale() == "linear"
    for ax in axes:
        assert len(ax.get_lines()) == len(GRID) + 1
    lines = _lines_by_label(axes[0])
    for prefix in ("adam-constant lr=0.01", "adam-constant lr=0.001", "adam-constant lr=0.0001", "derived"):
        np.testing.assert_allclose(_match(lines, prefix), expected[prefix], rtol=1e-12)
    np.testing.assert_allclose(
        _match(_lines_by_label(axes[1]), "adam-constant lr=0.001"), expected["adam-constant lr=0.001"] / 10
    )
    derived = next(line for line in axes[0].get_lines() if line.get_label().startswith("derived "))
    assert derived.get_color() == "black" and "alpha=0.0123" in derived.get_label()
    assert "(2 seeds, final)" in derived.get_label()
    # the min-max band of lr=0.01 spans seed 0 (10 (e + 0)) to seed 1 (10 (e + 1))
    order = [line.get_label() for line in axes[0].get_lines()]
    at = next(i for i, label in enumerate(order) if label.startswith("adam-constant lr=0.01 "))
    band = axes[0].collections[at].get_paths()[0].vertices  # bands are drawn in the lines' order
    ys = sorted({round(y, 9) for _, y in band})
    assert ys[0] == pytest.approx(10.0) and ys[-1] == pytest.approx(40.0)


def test_collapsed_runs_are_marked():
    study, _ = _hand_study()
    t = study.trials
    dead = set(t.loc[t["params_json"] == json.dumps({"lr": 0.0001}), "trial_id"])
    assert len(dead) == 2  # both search seeds of lr = 1e-4
    (fig,) = [f for f in pf.paper_figures(study, collapsed=dead) if f.stem == "constant_steps"]
    lines = {ln.get_label(): ln for ln in fig.figure.get_axes()[0].get_lines()}
    marked = [label for label in lines if "[collapsed" in label]
    assert marked == ["adam-constant lr=0.0001 [collapsed 2/2] (2 seeds, search)"]
    assert lines[marked[0]].get_marker() == "x" and lines[marked[0]].get_linestyle() == "-"
    assert all(ln.get_marker() in ("None", None, "") for label, ln in lines.items() if label not in marked)
    assert fig.caption.endswith("; x markers: 1 curve with collapsed runs.")


def test_schedulers_figure_draws_every_schedule_arm():
    study, expected = _hand_study()
    fig = pf.schedulers_figure(study)
    assert fig.get_axes()[1].get_yscale() == "linear"  # losses 0.325 .. 2.55: within two decades
    for ax in fig.get_axes():
        assert len(ax.get_lines()) == 2  # derived and cosine: every non-constant arm
    lines = _lines_by_label(fig.get_axes()[0])
    np.testing.assert_allclose(_match(lines, "adam-cosine"), expected["adam-cosine"], rtol=1e-12)
    np.testing.assert_allclose(_match(lines, "derived"), expected["derived"], rtol=1e-12)


def test_paper_figures_picks_the_figures_the_arms_fit():
    study, _ = _hand_study()
    figs = {f.stem: f for f in pf.paper_figures(study)}
    assert list(figs) == ["constant_steps", "gradnorm_vs_schedulers"]
    const = figs["constant_steps"]
    labels = [line.get_label() for line in const.figure.get_axes()[0].get_lines()]
    assert len(labels) == len(GRID) + 1 and sum(x.startswith("derived ") for x in labels) == 1
    assert "Figure 2" in const.caption and "3 grid points of adam-constant" in const.caption
    assert "search runs, 2 seeds each" in const.caption and "min-max" in const.caption
    sched = figs["gradnorm_vs_schedulers"]
    assert [c.arm for c in sched.curves] == ["derived", "adam-cosine"]
    assert "Figure 1" in sched.caption and "final runs, 2 seeds each" in sched.caption
    # no derived arm: nothing to set against; only derived arms: nothing either
    keep = ["adam-constant", "adam-cosine"]
    no_derived = Study(
        trials=study.trials[study.trials["arm"].isin(keep)],
        epochs=study.epochs[study.epochs["arm"].isin(keep)],
        spec={**study.spec, "arms": [a for a in study.spec["arms"] if a["name"] in keep]},
    )
    assert pf.paper_figures(no_derived) == []
    only = Study(
        trials=study.trials[study.trials["arm"] == "derived"],
        epochs=study.epochs[study.epochs["arm"] == "derived"],
        spec={**study.spec, "arms": study.spec["arms"][:1]},
    )
    assert pf.paper_figures(only) == []


def test_two_derived_and_two_grid_arms_are_told_apart_by_line_style():
    """003_width_variations draws a derived arm and a grid per width in one figure."""
    study, _ = _hand_study()
    t, e = study.trials.copy(), study.epochs.copy()
    twins = {"derived": "derived-wide", "adam-constant": "adam-constant-wide"}
    t2, e2 = t[t["arm"].isin(twins)].copy(), e[e["arm"].isin(twins)].copy()
    for frame in (t2, e2):
        frame["trial_id"] = frame["trial_id"] + "-wide"
        frame["arm"] = frame["arm"].map(twins)
    arms = study.spec["arms"] + [
        {**a, "name": twins[a["name"]]} for a in study.spec["arms"] if a["name"] in twins
    ]
    wide = Study(
        trials=pd.concat([t, t2], ignore_index=True),
        epochs=pd.concat([e, e2], ignore_index=True),
        spec={**study.spec, "arms": arms},
    )
    fig = pf.constant_steps_figure(wide)
    lines = fig.get_axes()[0].get_lines()
    assert len(lines) == 2 * (len(GRID) + 1)
    style = {}
    for line in lines:
        style.setdefault(line.get_label().split(" ")[0], set()).add(line.get_linestyle())
    assert all(len(s) == 1 for s in style.values()), style  # one style per arm
    assert style["derived"] != style["derived-wide"] and style["adam-constant"] != style["adam-constant-wide"]
    (paper,) = [f for f in pf.paper_figures(wide) if f.stem == "constant_steps"]
    assert "6 grid points of adam-constant, adam-constant-wide" in paper.caption
    assert "2 derived steps (a line style each) in black" in paper.caption


def test_sixteen_schedule_arms_get_distinct_colours():
    """papers/003's scheduler studies set 16 schedule arms beside the derived step (tab10 would repeat)."""
    study, _ = _hand_study()
    t, e = study.trials, study.epochs
    cos_t, cos_e = t[t["arm"] == "adam-cosine"], e[e["arm"] == "adam-cosine"]
    names = [f"adam-cosine-{i}" for i in range(16)]
    ts, es = [t[t["arm"] != "adam-cosine"]], [e[e["arm"] != "adam-cosine"]]
    for name in names:
        ts.append(cos_t.assign(arm=name, trial_id=cos_t["trial_id"] + name))
        es.append(cos_e.assign(arm=name, trial_id=cos_e["trial_id"] + name))
    cosine = next(a for a in study.spec["arms"] if a["name"] == "adam-cosine")
    arms = [a for a in study.spec["arms"] if a["name"] != "adam-cosine"] + [
        {**cosine, "name": n} for n in names
    ]
    many = Study(trials=pd.concat(ts), epochs=pd.concat(es), spec={**study.spec, "arms": arms})
    lines = pf.schedulers_figure(many).get_axes()[0].get_lines()
    colours = {ln.get_label(): tuple(np.atleast_1d(ln.get_color())) for ln in lines}
    assert len(lines) == 17 and len(set(colours.values())) == 17


def test_unknown_arm_is_one_line(tmp_path):
    study, _ = _hand_study()
    with pytest.raises(Exception, match="unknown arm 'nope'"):
        pf.grid_point_curves(study, ["nope"])


# ----------------------------------------------------------------------------- a real --smoke run


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("fig-smoke")
    env = {**os.environ, "LYAPTUNE_DATA_ROOT": str(base / "no-data")}
    spec = ROOT / "experiments" / "003_fc_fullbatch_constant_steps_d1.yaml"
    r = subprocess.run(
        [sys.executable, "-m", "lyaptune.cli", "run", str(spec), "--smoke", "--out", str(base / "runs")],
        capture_output=True,
        text=True,
        timeout=900,
        env=env,
        cwd=base,
    )
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    return base / "runs" / "003_fc_fullbatch_constant_steps_d1"


@pytest.mark.integration
def test_smoke_constant_steps_figure_has_a_curve_per_grid_point(smoke_run, tmp_path):
    study = load_study(smoke_run)
    grid = study.arm_spec("adam-constant")["grid"]["lr"]
    assert len(grid) >= 2
    fig = pf.constant_steps_figure(study)
    for ax in fig.get_axes():
        labels = [line.get_label() for line in ax.get_lines()]
        assert len(labels) == len(grid) + 1, labels
        assert sum(label.startswith("derived ") for label in labels) == 1
        for lr in grid:
            assert sum(label.startswith(f"adam-constant lr={lr:g} ") for label in labels) == 1
    # each grid point's line is the mean gradient norm of its search runs, grouped here by pandas
    trials, epochs = study.trials, study.epochs
    search = trials[(trials["arm"] == "adam-constant") & (trials["phase"] == "search")]
    lines = _lines_by_label(fig.get_axes()[0])
    for lr in grid:
        ids = [t for t, p in zip(search["trial_id"], search["params_json"]) if json.loads(p)["lr"] == lr]
        assert ids, lr
        want = epochs[epochs["trial_id"].isin(ids)].groupby("epoch")["grad_norm"].mean().to_numpy()
        np.testing.assert_allclose(_match(lines, f"adam-constant lr={lr:g}"), want, rtol=1e-12)
    # the script itself
    r = subprocess.run(
        [
            sys.executable,
            str(ROOT / "analysis" / "fig_constant_steps.py"),
            str(smoke_run),
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == [str(tmp_path / "constant_steps.png"), str(tmp_path / "constant_steps.svg")]
    assert (tmp_path / "constant_steps.png").stat().st_size > 0


@pytest.mark.integration
def test_report_of_the_smoke_run_draws_the_constant_steps_figure(smoke_run, tmp_path):
    """``lyaptune report`` (the real CLI) draws papers/003 Figure 2 into the report, with its caption."""
    out = tmp_path / "report"
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "lyaptune.cli",
            "report",
            str(smoke_run),
            "--out",
            str(out),
            "--no-importance",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "MPLBACKEND": "Agg"},
    )
    assert r.returncode == 0, r.stderr[-3000:]
    for ext in ("png", "svg"):
        assert (out / "figures" / f"constant_steps.{ext}").stat().st_size > 0
    grid = load_study(smoke_run).arm_spec("adam-constant")["grid"]["lr"]
    md = (out / "report.md").read_text()
    (line,) = [ln for ln in md.splitlines() if ln.startswith("![papers/003 Figure 2")]
    assert line.endswith("](figures/constant_steps.png)")
    assert f"{len(grid)} grid points of adam-constant (search runs, 1 seed each)" in line
    assert "the derived step in black (final runs, 1 seed each)" in line and "min-max" in line
    assert 'src="figures/constant_steps.png"' in (out / "report.html").read_text()
    # the saved figure's legend (matplotlib writes each text of an SVG as a comment): one entry per
    # grid point and one for the derived step, nothing else
    svg = (out / "figures" / "constant_steps.svg").read_text()
    legend = re.findall(r"<!-- ((?:derived|adam-constant) [^>]*\(1 seed, (?:search|final)\)) -->", svg)
    # a 2-epoch grid point may have collapsed: marked in its entry, checked below
    shown = sorted(re.sub(r" \[collapsed 1/1\]", "", x) for x in legend[1:])
    assert shown == sorted(f"adam-constant lr={lr:g} (1 seed, search)" for lr in grid), legend
    assert legend[0].startswith("derived alpha=") and len(legend) == len(grid) + 1
    # collapsed runs are marked, as the report's runs.csv classifies them
    runs = pd.read_csv(out / "runs.csv")
    for lr in grid:
        ids = [
            t
            for t, p in zip(runs["trial_id"], runs["params_json"].fillna("{}"))
            if json.loads(p).get("lr") == lr
        ]
        dead = bool(runs.loc[runs["trial_id"].isin(ids) & (runs["phase"] == "search"), "collapsed"].any())
        (entry,) = [x for x in legend if x.startswith(f"adam-constant lr={lr:g} ")]
        assert ("[collapsed" in entry) == dead, (entry, dead)
