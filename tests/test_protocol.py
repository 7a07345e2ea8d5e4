"""The comparison protocol of METHODS.md section 8, checked on known answers.

Intervals cover at their nominal rate at 3-10 seeds (simulated), Holm's adjustment and the verdicts
follow hand-worked values, the budget estimator follows the sampler, the collapse rule uses the label
entropy and the majority-class rate, population members are charged wall / P, and the report works on
studies without a derived arm. Studies are written through the real store (``RunStore``) and reported
by the real CLI in a subprocess.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from lyaptune.analysis import (
    LabelStats,
    budget_curve,
    classify_collapse,
    compare,
    holm_adjust,
    label_stats,
    load_study,
    mean_interval,
    paired_interval,
    pairwise_improvement,
    performance_profile,
    probability_of_improvement,
    task_label_stats,
    write_report,
)
from lyaptune.errors import ConfigError, UserError
from lyaptune.store import RunStore

# -- intervals ------------------------------------------------------------------------------------------

DRAWS = 4000


def coverage(sample, truth, interval) -> float:
    rng = np.random.default_rng(20261202)
    hits = 0
    for _ in range(DRAWS):
        lo, hi = interval(sample(rng))
        hits += lo <= truth <= hi
    return hits / DRAWS


@pytest.mark.parametrize("n", [3, 5, 10])
def test_mean_interval_covers_normal_means_at_small_n(n):
    cov = coverage(lambda r: r.normal(2.0, 3.0, n), 2.0, mean_interval)
    assert 0.93 <= cov <= 0.97, cov


def test_mean_interval_on_a_skewed_sample_at_n10():
    # lognormal(0, 1) has mean exp(1/2); the t interval reaches about 84% there (the report says so)
    cov = coverage(lambda r: r.lognormal(0.0, 1.0, 10), math.exp(0.5), mean_interval)
    assert cov >= 0.83, cov


@pytest.mark.parametrize("n", [3, 5, 10])
def test_paired_interval_covers_the_mean_difference(n):
    def sample(r):
        seed_effect = r.normal(0.0, 5.0, n)  # shared by both arms of a seed: pairing removes it
        return seed_effect + 1.5 + r.normal(0.0, 1.0, n), seed_effect + r.normal(0.0, 1.0, n)

    cov = coverage(sample, 1.5, lambda ab: paired_interval(*ab))
    assert 0.93 <= cov <= 0.97, cov


def test_interval_values_and_errors():
    x = [1.0, 2.0, 4.0]
    # by hand: mean 7/3, s^2 = ((4/3)^2 + (1/3)^2 + (5/3)^2) / 2 = 7/3, t_{0.975, 2} = 4.302653
    half = 4.302652729911275 * math.sqrt(7 / 3) / math.sqrt(3)
    assert mean_interval(x) == pytest.approx((7 / 3 - half, 7 / 3 + half), rel=1e-9)
    assert all(math.isnan(v) for v in mean_interval([1.0]))
    assert mean_interval([2.0, 2.0, 2.0]) == (2.0, 2.0)
    with pytest.raises(ConfigError, match=r"method='bca' needs n >= 20 values, got n=5"):
        mean_interval(np.arange(5.0), method="bca")
    with pytest.raises(ConfigError, match=r"interval method='percentile' is unknown; choices: t, bca"):
        mean_interval(x, method="percentile")
    with pytest.raises(ConfigError, match="level"):
        mean_interval(x, level=95)
    y = np.random.default_rng(0).normal(0.0, 1.0, 30)
    lo, hi = mean_interval(y, method="bca")
    ref = stats.bootstrap(
        (y,), np.mean, n_resamples=10_000, method="BCa", random_state=np.random.default_rng(0)
    )
    assert (lo, hi) == pytest.approx((ref.confidence_interval.low, ref.confidence_interval.high))
    with pytest.raises(ValueError, match="same length"):
        paired_interval([1.0, 2.0], [1.0])


def test_holm_by_hand():
    # sorted: 0.005 x 4 = 0.02, 0.01 x 3 = 0.03, 0.03 x 2 = 0.06, 0.04 x 1 -> max(0.06, 0.04) = 0.06
    adj = holm_adjust([0.01, 0.04, 0.03, 0.005, math.nan])
    assert adj[:4].tolist() == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert math.isnan(adj[4])
    assert holm_adjust([0.6, 0.7]).tolist() == pytest.approx([1.0, 1.0])  # capped at 1


# -- a study written through the store ---------------------------------------------------------------

L0 = math.log(10)
STAMP = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)


def spec_of(arms: list[dict], **extra) -> dict:
    return {
        "name": extra.pop("name", "proto"),
        "task": {
            "dataset": "synthetic",
            "dataset_args": {"n_train": 200, "n_test": 100, "num_classes": 10},
            "model": "fc",
            "epochs": 3,
            "batch_size": "full",
            "validation_fraction": 0.25,
        },
        "objective": {"metric": "val_loss", "mode": "min", "at": "final"},
        "search": {"sampler": "tpe", "trials_per_arm": 4, "seeds": [0], "final_seeds": [1, 2, 3, 4, 5]},
        "resources": {"cpu": 1, "gpu": 0},
        "arms": arms,
        **extra,
    }


def arm(name: str, schedule: str = "constant", searched: bool = True) -> dict:
    a = {"name": name, "optimizer": "sgd", "schedule": schedule}
    if searched:
        a["space"] = {"lr": {"low": 1e-3, "high": 1.0, "log": True}}
    return a


def row(arm_name: str, tid: str, phase: str, seed: int, **values) -> dict:
    r = {
        "study": "proto",
        "arm": arm_name,
        "trial_id": tid,
        "phase": phase,
        "optimizer": "sgd",
        "schedule": "constant",
        "dataset": "synthetic",
        "model": "fc",
        "seed": seed,
        "status": "completed",
        "epochs_completed": 3,
        "initial_loss": L0,
        "final_train_loss": 0.4,
        "final_test_acc": 0.8,
        "final_val_loss": 0.5,
        "objective": 0.5,
        "final_grad_norm": 0.01,
        "min_grad_norm": 0.01,
        "wall_s": 1.0,
        "info_json": json.dumps({"dataset_info": {"num_classes": 10}}),
        "config_json": "{}",
        "updated_at": STAMP,
    }
    r.update(values)
    return r


def write_study(root: Path, spec: dict, rows: list[dict]) -> Path:
    store = RunStore(root, create=True)
    store.write_spec(spec)
    for r in rows:
        store.record_trial(r)
    return root


BASE = [0.80, 0.82, 0.79, 0.81, 0.83]
BETTER = [0.90, 0.915, 0.895, 0.905, 0.925]  # +0.10 on every seed, a little noise
SAME = [0.804, 0.817, 0.792, 0.806, 0.831]  # differences +0.004 -0.003 +0.002 -0.004 +0.001


def verdict_study(root: Path) -> Path:
    spec = spec_of(
        [arm("base"), arm("better"), arm("same")],
        compare={"metric": "final_test_acc", "mode": "max"},
        reference="base",
    )
    rows = []
    for name, accs in (("base", BASE), ("better", BETTER), ("same", SAME)):
        for i, acc in enumerate(accs):
            rows.append(row(name, f"{name}-final-s{i + 1}", "final", i + 1, final_test_acc=acc))
        for n in range(4):
            rows.append(
                row(name, f"{name}-search-{n}", "search", 0, optuna_number=n, objective=0.5 + 0.1 * n)
            )
    return write_study(root, spec, rows)


def test_one_better_arm_and_one_equal_arm(tmp_path):
    study = load_study(verdict_study(tmp_path / "v"))
    t = compare(study).set_index("arm")
    assert t["rank_by"].iloc[0] == "final_test_acc"  # the spec's primary metric, at the final epoch
    raw = []
    for accs in (BETTER, SAME):
        raw.append(stats.ttest_rel(accs, BASE).pvalue)
    hand = [min(1.0, 2 * min(raw)), min(1.0, max(2 * min(raw), max(raw)))]  # Holm, m = 2
    if raw[0] > raw[1]:
        hand = hand[::-1]
    assert t.loc["better", "final_test_acc_p_ttest"] == pytest.approx(raw[0], rel=1e-9)
    assert t.loc["better", "final_test_acc_p_adj"] == pytest.approx(hand[0], rel=1e-9)
    assert t.loc["same", "final_test_acc_p_adj"] == pytest.approx(hand[1], rel=1e-9)
    assert t.loc["better", "final_test_acc_verdict"] == "better"
    assert t.loc["same", "final_test_acc_verdict"] == "no significant difference"
    assert t.loc["base", "final_test_acc_verdict"] == "reference"
    assert t.loc["base", "reference_source"] == "spec"
    assert int(t.loc["better", "rank"]) == 1

    out = tmp_path / "rep"
    write_report(study, out, ["md"], importance=False)
    md = (out / "report.md").read_text()
    assert md.index("## How to read this report") < md.index("## Study")
    for phrase in (
        *("Holm-adjusted", "Student-t", "n <= 10", "final epoch", "disjoint", "device-seconds"),
        *("paired t-test at every number of seeds", "Who is tested", "geometric mean", "robustness"),
    ):
        assert phrase in md, phrase
    line = next(ln for ln in md.splitlines() if ln.startswith("| better |") and "p " in ln)
    # accuracy: the difference in points with its t interval, the t p raw / Holm, then the verdict
    d = 100 * (np.array(BETTER) - np.array(BASE))
    assert f"{d.mean():+.2f} pt [" in line and "t n=5" in line and f"/ {hand[0]:.2g} (t)" in line
    assert "; better |" in line.split("|")[2] + "|"
    # every difference positive: the exact sign-flip p is 2/2^5 > 0.05, flagged beside the t verdict
    assert "sign-flip 0.062 DISAGREE with t" in line
    line = next(ln for ln in md.splitlines() if ln.startswith("| same |") and "p " in ln)
    assert "; no significant difference" in line
    assert "t n=5" in md  # every interval says its method and n


def test_a_sign_alone_is_no_verdict(tmp_path):
    # a difference of the same sign on 2 of 3 seeds with a large spread: not significant
    spec = spec_of([arm("a"), arm("b")], compare={"metric": "final_test_acc", "mode": "max"}, reference="a")
    rows = [row("a", f"a-{s}", "final", s, final_test_acc=v) for s, v in zip((1, 2, 3), (0.8, 0.8, 0.8))]
    rows += [row("b", f"b-{s}", "final", s, final_test_acc=v) for s, v in zip((1, 2, 3), (0.85, 0.9, 0.7))]
    t = compare(load_study(write_study(tmp_path / "s", spec, rows))).set_index("arm")
    assert t.loc["b", "final_test_acc_diff"] > 0
    assert t.loc["b", "final_test_acc_verdict"] == "no significant difference"


# -- reference and primary metric ---------------------------------------------------------------------


def test_defaults_without_compare_or_reference(tmp_path):
    spec = spec_of([arm("x"), arm("y")])
    rows = [row("x", f"x-{s}", "final", s, final_val_loss=0.5 + 0.01 * s) for s in (1, 2, 3)]
    rows += [row("y", f"y-{s}", "final", s, final_val_loss=0.4 + 0.01 * s) for s in (1, 2, 3)]
    # the search runs' validation objective names x the best arm (0.30 < 0.35), though y is better on
    # the final seeds: the reference is chosen on the search, never on the seeds it is tested on
    rows += [
        row("x", f"x-search-{n}", "search", 0, optuna_number=n, objective=v) for n, v in enumerate((0.6, 0.3))
    ]
    rows += [
        row("y", f"y-search-{n}", "search", 0, optuna_number=n, objective=v)
        for n, v in enumerate((0.35, 0.9))
    ]
    study = load_study(write_study(tmp_path / "d", spec, rows))
    assert study.primary_metrics == [{"metric": "final_val_loss", "mode": "min"}]
    t = compare(study).set_index("arm")
    # no derived arm, no spec reference: compared with the best arm on the search objective
    assert t.loc["x", "is_reference"] and t.loc["x", "reference_source"] == "best"
    # val loss is a log-scale metric: the difference is of logs, shown as a ratio y / x
    d = np.log([0.41, 0.42, 0.43]) - np.log([0.51, 0.52, 0.53])
    assert t.loc["y", "final_val_loss_diff"] == pytest.approx(d.mean())
    assert t.loc["y", "final_val_loss_ratio"] == pytest.approx(math.exp(d.mean()))
    assert t.loc["y", "final_val_loss_verdict"] == "better"  # t on the log differences, p < 0.05
    with pytest.raises(ConfigError, match=r"unknown reference arm .* 'derived'.* choices: x, y"):
        compare(study, "derived")


# -- budget curves ----------------------------------------------------------------------------------------


def test_budget_csv_method_and_best_so_far_over_repeats(tmp_path):
    spec = spec_of([arm("tpe-arm"), arm("ref", "derived-constant", searched=False)], reference="ref")
    # two search repeats of 3 trials each (objective min): trial order matters
    plan = {0: [0.9, 0.4, 0.6], 1: [0.5, 0.7, 0.3]}
    rows = [
        row("tpe-arm", f"t-r{r}-{n}", "search", 0, optuna_number=n, repeat=r, objective=v)
        for r, vals in plan.items()
        for n, v in enumerate(vals)
    ]
    rows += [
        row("ref", f"ref-{s}", "final", s, objective=0.45, schedule="derived-constant") for s in (1, 2, 3)
    ]
    rows += [row("tpe-arm", f"tf-{s}", "final", s) for s in (1, 2, 3)]
    study = load_study(write_study(tmp_path / "b", spec, rows))
    c = budget_curve(study, "tpe-arm")
    # repeat 0 best-so-far: 0.9, 0.4, 0.4; repeat 1: 0.5, 0.5, 0.3
    assert c["method"].unique().tolist() == ["best-so-far"]
    assert c["best"].tolist() == pytest.approx([0.7, 0.45, 0.35])
    assert c["low"].tolist() == pytest.approx([0.5, 0.4, 0.3])
    assert c["high"].tolist() == pytest.approx([0.9, 0.5, 0.4])
    assert c["sd"].tolist() == pytest.approx(
        [np.std([0.9, 0.5], ddof=1), np.std([0.4, 0.5], ddof=1), np.std([0.4, 0.3], ddof=1)], abs=1e-12
    )
    assert c["n_repeats"].tolist() == [2, 2, 2]
    out = tmp_path / "rep"
    write_report(study, out, ["md"], importance=False)
    budget = pd.read_csv(out / "budget.csv")
    assert "method" in budget and set(budget.loc[budget["arm"] == "tpe-arm", "method"]) == {"best-so-far"}
    match = pd.read_csv(out / "matching.csv").set_index("arm")
    # the arm's own curve first reaches the reference's 0.45 at k = 2
    assert match.loc["tpe-arm", "k"] == 2 and match.loc["tpe-arm", "method"] == "best-so-far"
    md = (out / "report.md").read_text()
    assert "tpe-arm: best-so-far (sampler tpe)" in md
    # the band says what it is; 'trials to match' carries its optimism note
    assert set(budget["band"]) == {"worst to best search repeat"}
    assert match.loc["tpe-arm", "note"].startswith("optimistic for the tuned arm")
    assert "Read with care: these numbers are optimistic for the tuned arm" in md

    # one repeat only: the curve says no spread can be shown
    one = [r for r in rows if r.get("repeat", 0) == 0 or r["phase"] == "final"]
    c1 = budget_curve(load_study(write_study(tmp_path / "b1", spec, one)), "tpe-arm")
    assert set(c1["band"]) == {"one search repeat: no spread can be shown (set search.repeats for one)"}
    assert c1["low"].tolist() == c1["high"].tolist() == c1["best"].tolist()


def test_expected_max_is_named_as_the_without_replacement_form(tmp_path):
    spec = spec_of([arm("rnd"), arm("ref", "derived-constant", searched=False)], reference="ref")
    spec["search"]["sampler"] = "random"
    rows = [
        row("rnd", f"r-{n}", "search", 0, optuna_number=n, objective=v) for n, v in enumerate((0.9, 0.4, 0.6))
    ]
    rows += [
        row("ref", f"ref-{s}", "final", s, objective=0.45, schedule="derived-constant") for s in (1, 2, 3)
    ]
    c = budget_curve(load_study(write_study(tmp_path / "e", spec, rows)), "rnd")
    assert c["method"].iloc[0] == "expected-max"
    assert "drawn without replacement" in c["estimator"].iloc[0] and "Dodge" in c["estimator"].iloc[0]
    assert c["band"].iloc[0].startswith("+-1 sd: the spread of the best of k draws, not an uncertainty")
    # k = 2 of 3 without replacement, by hand: best of each pair {0.9,0.4},{0.9,0.6},{0.4,0.6} (min)
    assert c["best"].iloc[1] == pytest.approx((0.4 + 0.6 + 0.4) / 3)


# -- collapse ---------------------------------------------------------------------------------------------


def test_collapse_on_imbalanced_labels():
    y = np.array([0] * 70 + [1] * 20 + [2] * 10)
    ls = label_stats(y, y)
    h = -(0.7 * math.log(0.7) + 0.2 * math.log(0.2) + 0.1 * math.log(0.1))
    assert ls.label_entropy == pytest.approx(h) and ls.majority_rate == pytest.approx(0.7)
    assert ls.num_classes == 3 and ls.source == "labels"
    runs = pd.DataFrame(
        {
            "status": ["completed"] * 3,
            "initial_loss": [1.10, 1.10, 1.10],
            "final_train_loss": [h * 1.01, 0.30, 0.30],  # the prior's loss, a learning run, ...
            "final_test_acc": [0.70, 0.90, 0.715],  # ... and one at the majority rate + 1.5 points
        }
    )
    c = classify_collapse(runs, labels=ls)
    assert c["collapsed"].tolist() == [True, False, True]
    assert c["collapse_reason"].tolist() == [
        "label entropy + majority-class accuracy",
        "",
        "majority-class accuracy",
    ]
    # the balanced fallback (ln 3, 1/3) misses the prior-predicting run entirely
    uniform = classify_collapse(runs, labels=LabelStats.uniform(3))
    assert uniform["collapsed"].tolist() == [False, False, False]


def test_task_label_stats_reads_the_labels_or_says_why_not(tmp_path):
    from lyaptune.data import load_dataset

    task = {
        "dataset": "synthetic",
        "dataset_args": {"n_train": 90, "n_test": 40, "num_classes": 4},
        "validation_fraction": 0.2,
    }
    ls = task_label_stats(task)
    data = load_dataset("synthetic", validation_fraction=0.2, n_train=90, n_test=40, num_classes=4)
    p = np.bincount(data.train.y.numpy(), minlength=4) / len(data.train.y)
    assert ls.source == "labels" and ls.label_entropy == pytest.approx(stats.entropy(p))
    assert ls.majority_rate == pytest.approx(np.bincount(data.test.y.numpy()).max() / 40)
    missing = task_label_stats({"dataset": "cifar10", "data_root": str(tmp_path / "none")}, 10)
    assert missing.source == "uniform" and "not available at report time" in missing.note
    assert missing.label_entropy == pytest.approx(math.log(10)) and missing.majority_rate == pytest.approx(
        0.1
    )


# -- cost ---------------------------------------------------------------------------------------------


def test_population_members_are_charged_wall_over_p(tmp_path):
    spec = spec_of([arm("grid"), arm("ref", "derived-constant", searched=False)])
    # one population of 4 members trained together for 8 s: each member is charged 2 s
    rows = [
        row(
            "grid",
            f"g-{n}",
            "search",
            0,
            optuna_number=n,
            wall_s=2.0,
            population_wall_s=8.0,
            population_size=4,
        )
        for n in range(4)
    ]
    rows += [
        row(
            "ref",
            f"ref-{s}",
            "final",
            s,
            schedule="derived-constant",
            info_json=json.dumps({"lipschitz_seconds": 3.0}),
        )
        for s in (1, 2)
    ]
    t = compare(load_study(write_study(tmp_path / "p", spec, rows))).set_index("arm")
    assert t.loc["grid", "search_device_s"] == pytest.approx(4 * 8.0 / 4)
    assert t.loc["grid", "population_wall_s"] == pytest.approx(8.0)
    assert t.loc["ref", "tuning_device_s"] == pytest.approx(2 * 3.0)  # K_hat time is the derived cost


# -- cross-study ---------------------------------------------------------------------------------------


def test_probability_of_improvement_by_hand():
    # study 1: x = [1, 3], y = [2]: pairs (1>2? no, 3>2 yes) -> 1/2
    # study 2: x = [2], y = [2, 1]: (2 vs 2 tie 1/2, 2 > 1 yes 1) -> 3/4
    p, lo, hi = probability_of_improvement([[1.0, 3.0], [2.0]], [[2.0], [2.0, 1.0]], mode="max")
    assert p == pytest.approx((0.5 + 0.75) / 2)
    assert 0.0 <= lo <= p <= hi <= 1.0
    p_min, _, _ = probability_of_improvement([[1.0, 3.0], [2.0]], [[2.0], [2.0, 1.0]], mode="min")
    assert p_min == pytest.approx(1 - p)  # no ties in study 1; the tie counts half either way
    table = pairwise_improvement({"s1": {"a": np.array([1.0, 3.0]), "b": np.array([2.0])}}, {"s1": "max"})
    assert table.set_index(["arm_a", "arm_b"]).loc[("a", "b"), "p_a_beats_b"] == pytest.approx(0.5)


def test_performance_profile_by_hand():
    scores = pd.DataFrame(
        {
            "study": ["s1", "s1", "s2", "s2"],
            "arm": ["a", "b", "a", "b"],
            "metric": ["final_grad_norm"] * 4,
            "mode": ["min"] * 4,
            "value": [1.0, 2.0, 3.0, math.nan],  # b collapsed on s2: never within any tau
        }
    )
    prof = performance_profile(scores, taus=[1.0, 1.5, 2.0]).set_index(["arm", "tau"])["fraction"]
    assert prof[("a", 1.0)] == 1.0
    assert prof[("b", 1.0)] == 0.0 and prof[("b", 1.5)] == 0.0 and prof[("b", 2.0)] == 0.5


# -- the CLI ------------------------------------------------------------------------------------------------


def lyaptune(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "lyaptune.cli", *args], capture_output=True, text=True, timeout=300
    )


@pytest.mark.integration
def test_cli_report_without_a_derived_arm_and_compare_across_studies(tmp_path):
    a = verdict_study(tmp_path / "a")
    r = lyaptune("report", str(a), "--out", str(tmp_path / "rep"), "--format", "md", "--no-importance")
    assert r.returncode == 0, r.stderr
    r = lyaptune("report", str(a), "--out", str(tmp_path / "rep2"), "--reference", "nope")
    assert r.returncode != 0 and "Traceback" not in r.stderr
    err = [ln for ln in r.stderr.strip().splitlines() if ln]
    assert len(err) == 1 and "'nope'" in err[0] and "base, better, same" in err[0]
    b = verdict_study(tmp_path / "b")
    spec = RunStore(b).read_spec()
    spec["name"] = "proto-b"
    RunStore(b).write_spec(spec)
    r = lyaptune("compare", str(a), str(b), "--out", str(tmp_path / "x"))
    assert r.returncode == 0, r.stderr
    for f in ("profiles.csv", "improvement.csv", "cross_study.json", "figures/profiles.png"):
        assert (tmp_path / "x" / f).is_file(), f
    poi = pd.read_csv(tmp_path / "x" / "improvement.csv").set_index(["arm_a", "arm_b"])
    # 'better' beats 'base' on every seed of both studies
    assert poi.loc[("better", "base"), "p_a_beats_b"] == pytest.approx(1.0)
    prof = pd.read_csv(tmp_path / "x" / "profiles.csv")
    assert prof[(prof["arm"] == "better") & (prof["tau"] == 1.0)]["fraction"].iloc[0] == 1.0


def test_report_states_the_label_fallback(tmp_path):
    spec = spec_of([arm("a"), arm("b")])
    spec["task"] = {"dataset": "cifar10", "data_root": str(tmp_path / "no-data"), "model": "fc", "epochs": 2}
    rows = [row("a", f"a-{s}", "final", s, final_test_acc=0.105) for s in (1, 2)]  # 1/10 + 0.5 points
    rows += [row("b", f"b-{s}", "final", s, final_test_acc=0.6) for s in (1, 2)]
    study = load_study(write_study(tmp_path / "f", spec, rows))
    write_report(study, tmp_path / "rep", ["md"], importance=False)
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "not available at report time" in md and "ln C and 1/C" in md
    t = pd.read_csv(tmp_path / "rep" / "compare.csv").set_index("arm")
    assert t.loc["a", "n_collapsed"] == 2 and t.loc["b", "n_collapsed"] == 0
    settings = json.loads((tmp_path / "rep" / "compare.json").read_text())["settings"]
    assert settings["label_stats"]["source"] == "uniform"
    assert settings["label_stats"]["majority_rate"] == pytest.approx(0.1)


# -- claims as data (issue 13 item 5) -------------------------------------------------------------------

ADAM_GN = [1.00, 1.20, 0.90, 1.10, 1.05]
DERIVED_GN = [a - 0.5 + e for a, e in zip(ADAM_GN, [0.01, -0.02, 0.015, -0.01, 0.005])]  # planted -0.5
NULL_GN = [a + e for a, e in zip(ADAM_GN, [0.03, -0.04, 0.02, -0.01, 0.005])]  # mean difference +0.001


def claim(cid: str, arm_name: str, than: str, direction: str, **extra) -> dict:
    return {
        "id": cid,
        "text": f"{arm_name} {direction} than {than}",
        "metric": "final_grad_norm",
        "arm": arm_name,
        "than": than,
        "direction": direction,
        **extra,
    }


CLAIMS = [
    claim("true", "derived", "adam", "lower"),
    claim("opposite", "derived", "adam", "higher"),
    claim("null", "null", "adam", "lower"),
    claim("all-live", "derived", "all", "lower"),
    claim("margin-met", "derived", "adam", "lower", factor=1.5),  # gradient norm: a ratio margin
    claim("margin-missed", "derived", "adam", "lower", factor=4),
    claim("vs-dead", "derived", "dead", "lower"),
    claim("vs-lone", "derived", "lone", "lower"),
    claim("vs-absent", "derived", "unrun", "lower"),
]


def claims_study(root: Path, claims: list[dict] = CLAIMS, with_dead: bool = True) -> Path:
    arms = [arm("adam"), arm("derived", "derived-constant", searched=False), arm("null")]
    values = [("adam", ADAM_GN), ("derived", DERIVED_GN), ("null", NULL_GN)]
    if with_dead:
        arms += [arm("dead"), arm("lone"), arm("unrun")]
        values += [("dead", ADAM_GN), ("lone", ADAM_GN[:1])]
    # a stored spec is resolved: the runner writes its reference (the derived arm) into spec.yaml
    compare = {"metric": "final_grad_norm", "mode": "min"}
    spec = spec_of(arms, compare=compare, claims=claims, reference="derived")
    rows = []
    for name, gns in values:
        # 'dead' stays at the initial loss ln 10 on every seed: collapsed
        loss = {"final_train_loss": L0} if name == "dead" else {}
        for i, g in enumerate(gns):
            rows.append(row(name, f"{name}-final-s{i + 1}", "final", i + 1, final_grad_norm=g, **loss))
    return write_study(root, spec, rows)


def test_claims_planted_effect_supported_opposite_contradicted_null_inconclusive(tmp_path):
    from lyaptune.analysis import evaluate_claims

    res = {c.id: c for c in evaluate_claims(load_study(claims_study(tmp_path / "c")))}
    assert [c["id"] for c in CLAIMS] == list(res)
    # the gradient norm is a log-scale metric: paired differences of logs, effect as a ratio
    d = np.log(DERIVED_GN) - np.log(ADAM_GN)
    half = stats.t.ppf(0.975, 4) * d.std(ddof=1) / math.sqrt(5)
    p0 = stats.ttest_1samp(d, 0.0).pvalue  # one comparison: Holm leaves it as is

    true = res["true"]
    assert true.verdict == "supported" and true.reason.startswith("t at 0.05")
    (c,) = true.comparisons
    assert c.other == "adam" and c.n == 5 and c.outcome == "claimed"
    assert c.effect == pytest.approx(d.mean(), abs=1e-12) and c.ratio == pytest.approx(math.exp(d.mean()))
    assert (c.ci_low, c.ci_high) == pytest.approx((d.mean() - half, d.mean() + half), rel=1e-9)
    assert c.p == pytest.approx(p0, rel=1e-9) and c.p_adj == pytest.approx(p0, rel=1e-9)

    assert res["opposite"].verdict == "contradicted"
    assert res["opposite"].comparisons[0].outcome == "opposite"
    assert "against 'adam': t p = " in res["opposite"].reason

    null = res["null"]
    assert null.verdict == "inconclusive" and "against 'adam': t p = " in null.reason
    pn = stats.ttest_1samp(np.log(NULL_GN) - np.log(ADAM_GN), 0.0).pvalue
    assert pn > 0.5 and null.comparisons[0].p == pytest.approx(pn, rel=1e-9)

    # ratio margin: the claimed bound is -ln factor on the log differences
    met, missed = res["margin-met"].comparisons[0], res["margin-missed"].comparisons[0]
    assert res["margin-met"].verdict == "supported" and met.bound == pytest.approx(-math.log(1.5))
    assert met.p == pytest.approx(stats.ttest_1samp(d, -math.log(1.5)).pvalue, rel=1e-9)
    assert res["margin-missed"].verdict == "contradicted"  # about 0.52x is significantly above 0.25x
    assert missed.p == pytest.approx(stats.ttest_1samp(d, -math.log(4)).pvalue, rel=1e-9)

    # than: all -> every other arm; the collapsed arm loses by the collapse rule, the single-seed and
    # unrun arms cannot be tested, so the claim is inconclusive though derived beats adam and null
    every = res["all-live"]
    assert [x.other for x in every.comparisons] == ["adam", "null", "dead", "lone", "unrun"]
    assert every.verdict == "inconclusive"
    assert "against 'lone': 'derived' and 'lone' have 1 common seed(s)" in every.reason
    assert "'unrun' has no final run" in every.reason
    raw = [p0, stats.ttest_1samp(np.log(DERIVED_GN) - np.log(NULL_GN), 0.0).pvalue]
    lo, hi = sorted(raw)
    holm = {lo: 2 * lo, hi: max(2 * lo, hi)}  # m = 2 tested comparisons, by hand
    assert [x.p_adj for x in every.comparisons[:2]] == pytest.approx([holm[raw[0]], holm[raw[1]]], rel=1e-9)
    assert every.comparisons[2].outcome == "claimed" and every.comparisons[2].rule == "collapse"
    assert all(math.isnan(x.p_adj) and x.outcome == "not tested" for x in every.comparisons[3:])

    # an arm that collapsed on 5 of 5 loses to a valid one, without a test (METHODS section 8)
    assert res["vs-dead"].verdict == "supported" and res["vs-dead"].rule == "collapse"
    assert "'dead' collapsed on 5 and failed on 0 of 5" in res["vs-dead"].reason
    assert (
        res["vs-lone"].verdict == "inconclusive" and "2 paired, or 2 each unpaired" in res["vs-lone"].reason
    )
    assert (
        res["vs-absent"].verdict == "inconclusive" and "'unrun' has no final run" in res["vs-absent"].reason
    )


def test_claims_than_all_supported_when_every_arm_is_beaten(tmp_path):
    from lyaptune.analysis import evaluate_claims

    root = claims_study(tmp_path / "c", [claim("all", "derived", "all", "lower")], with_dead=False)
    (res,) = evaluate_claims(load_study(root))
    assert res.verdict == "supported"
    assert [x.other for x in res.comparisons] == ["adam", "null"]
    # the decisive comparison is the one least favourable to the claim: the smaller improvement
    assert res.to_dict()["compared_with"] == "adam"  # the smaller log-ratio improvement


def test_claims_malformed_entry_is_one_clear_error(tmp_path):
    from lyaptune.analysis import evaluate_claims

    bad = [claim("x", "derived", "adam", "smaller")]
    with pytest.raises(
        UserError, match=r"claims\[0\]\.direction: 'smaller' is not valid; choices: lower, higher"
    ):
        evaluate_claims(load_study(claims_study(tmp_path / "c", bad, with_dead=False)))


@pytest.mark.integration
def test_cli_report_opens_with_the_claims_section(tmp_path):
    root = claims_study(tmp_path / "c")
    out = tmp_path / "rep"
    r = lyaptune("report", str(root), "--out", str(out), "--format", "md,html", "--no-importance")
    assert r.returncode == 0, r.stderr
    assert "Claims:" in r.stdout
    assert "true: SUPPORTED" in r.stdout and "opposite: CONTRADICTED" in r.stdout
    assert "null: INCONCLUSIVE" in r.stdout
    md = (out / "report.md").read_text()
    lines = md.splitlines()
    heads = [ln for ln in lines if ln.startswith("## ")]
    assert lines[0].startswith("# ") and heads[:2] == ["## Answer", "## Claims"]  # after the Answer
    assert md.index("## Claims") < md.index("## How to read this report")
    row_true = next(ln for ln in lines if ln.startswith("| true |"))
    # a gradient norm is a log-scale metric: the effect is the ratio derived / adam with its t interval
    assert "| supported" in row_true and "derived / adam: " in row_true and "t, n=5" in row_true
    ratio = math.exp(np.mean(np.log(DERIVED_GN) - np.log(ADAM_GN)))
    assert f"{ratio:.3g}x [" in row_true
    assert "<h2>Claims</h2>" in (out / "report.html").read_text()
    data = json.loads((out / "compare.json").read_text())
    verdicts = {c["id"]: c for c in data["claims"]}
    assert verdicts["true"]["verdict"] == "supported" and verdicts["opposite"]["verdict"] == "contradicted"
    assert verdicts["null"]["verdict"] == "inconclusive"
    assert verdicts["true"]["interval"]["method"] == "t" and verdicts["true"]["interval"]["n"] == 5
    d = np.log(DERIVED_GN) - np.log(ADAM_GN)
    assert verdicts["true"]["effect"] == pytest.approx(d.mean())
    assert verdicts["true"]["ratio"]["value"] == pytest.approx(math.exp(d.mean()))
    assert verdicts["true"]["p_adj"] < 0.05 and len(verdicts["all-live"]["comparisons"]) == 5


def test_report_without_claims_says_so(tmp_path):
    study = load_study(verdict_study(tmp_path / "v"))
    write_report(study, tmp_path / "rep", ["md"], importance=False)
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "## Claims\n\nThis spec states no claims." in md
    assert json.loads((tmp_path / "rep" / "compare.json").read_text())["claims"] == []


# -- reading a stored run stays light (issue 14) --------------------------------------------------------


def test_load_study_imports_no_torch_and_builds_no_optimizer(tmp_path):
    # a fresh interpreter: reading the run, its spec lookups and its claims import neither torch (hence
    # no torch.optim class) nor the registries; the typed spec is built from spec.yaml without them
    root = claims_study(tmp_path / "c")
    code = (
        "import json, sys\n"
        "import lyaptune.analysis as a\n"
        f"s = a.load_study({str(root)!r})\n"
        "assert len(s.trials) == 21 and s.primary_metrics[0]['metric'] == 'final_grad_norm'\n"
        "assert s.arms[:2] == ['adam', 'derived'] and len(a.study_claims(s)) == 9\n"
        "heavy = ('torch', 'torch.optim', 'lyaptune.optim', 'ray', 'lyaptune.train')\n"
        "print(json.dumps([m for m in heavy if m in sys.modules]))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.strip().splitlines()[-1]) == []
