"""Verdicts that agree with their own intervals (issue 20; METHODS.md section 8).

A seeded simulation of 2,000 synthetic studies (3 arms + a reference, n in {3, 5, 6, 7, 10} seeds,
normal and lognormal seed noise, shifts 0 to 1.5 SD of the paired difference) checks the table's
verdict function against an independent computation (scipy's paired t-test, Holm written out): the
label is "better" / "worse" exactly when the Holm-adjusted t p < 0.05, in the direction of the
interval's midpoint; power never drops by more than 2 binomial SE from n to n + 1; the family-wise
error at shift 0 stays within 0.05 + 2 SE. Then each example of the issue, through the real store
(``RunStore``), the real ``compare`` and, for two runs of one spec, the real CLI in a subprocess.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from lyaptune.analysis import compare, load_study, probability_of_improvement
from lyaptune.analysis.compare import paired_comparisons
from lyaptune.analysis.stats import paired_t_p, paired_test
from tests.test_protocol import L0, arm, row, spec_of, write_study

ALPHA = 0.05
NS = (3, 5, 6, 7, 10)
SHIFTS = (0.0, 0.5, 1.0, 1.5)
NOISES = ("normal", "lognormal")
PER_CELL = 50  # 5 n x 2 noises x 4 shifts x 50 = 2,000 studies


def holm(p: list[float]) -> list[float]:
    """Holm's step-down adjustment written out (independent of the package's)."""
    order = sorted(range(len(p)), key=lambda i: p[i])
    out, running = [0.0] * len(p), 0.0
    for rank, i in enumerate(order):
        running = max(running, (len(p) - rank) * p[i])
        out[i] = min(1.0, running)
    return out


def draw_study(rng: np.random.Generator, n: int, noise: str, shift: float) -> dict[str, pd.Series]:
    """A reference and three arms on n seeds; every arm shifted by ``shift`` SD of the paired difference
    toward "better". Normal noise: an accuracy-like linear metric (higher is better). Lognormal: a
    gradient-norm-like log metric (lower is better), the shift on the log scale."""
    seeds = pd.Index(range(1, n + 1))
    seed_effect = rng.normal(0.0, 2.0, n)  # shared by all arms of a seed: pairing removes it
    sd = 1.0 / math.sqrt(2.0)  # each arm's own noise: the paired difference has sd 1
    if noise == "normal":
        base = 10.0 + seed_effect
        out = {"ref": pd.Series(base + rng.normal(0.0, sd, n), index=seeds)}
        for a in ("a1", "a2", "a3"):
            out[a] = pd.Series(base + shift + rng.normal(0.0, sd, n), index=seeds)
        return out
    base = -3.0 + 0.5 * seed_effect
    out = {"ref": pd.Series(np.exp(base + rng.normal(0.0, sd, n)), index=seeds)}
    for a in ("a1", "a2", "a3"):
        out[a] = pd.Series(np.exp(base - shift + rng.normal(0.0, sd, n)), index=seeds)
    return out


@pytest.fixture(scope="module")
def simulation() -> pd.DataFrame:
    rng = np.random.default_rng(20261205)
    recs = []
    for n in NS:
        for noise in NOISES:
            scale, mode = ("linear", "max") if noise == "normal" else ("log", "min")
            for shift in SHIFTS:
                for rep in range(PER_CELL):
                    values = draw_study(rng, n, noise, shift)
                    table = paired_comparisons(values, "ref", scale=scale, mode=mode)
                    # the independent computation: scipy's paired t on the tested scale, Holm by hand
                    f = np.log if scale == "log" else (lambda v: v)
                    ref = f(values["ref"].to_numpy())
                    raw = [stats.ttest_rel(f(values[a].to_numpy()), ref).pvalue for a in ("a1", "a2", "a3")]
                    adj = holm(raw)
                    for i, a in enumerate(("a1", "a2", "a3")):
                        r = table.iloc[i + 1]
                        recs.append(
                            {
                                "n": n,
                                "noise": noise,
                                "shift": shift,
                                "study": rep,
                                "arm": a,
                                "mode": mode,
                                "verdict": r["verdict"],
                                "p_adj": r["p_adj"],
                                "p_adj_hand": adj[i],
                                "mid": (r["diff_ci_low"] + r["diff_ci_high"]) / 2,
                            }
                        )
    return pd.DataFrame(recs)


@pytest.mark.integration
def test_simulation_label_iff_holm_t_rejects_with_the_interval_direction(simulation):
    s = simulation
    assert s[["n", "noise", "shift", "study"]].drop_duplicates().shape[0] == 2000
    assert np.allclose(s["p_adj"], s["p_adj_hand"], rtol=1e-9)
    labelled = s["verdict"].isin(["better", "worse"])
    rejects = s["p_adj_hand"] < ALPHA
    assert (labelled == rejects).all()
    assert set(s.loc[~labelled, "verdict"]) == {"no significant difference"}
    # direction: "better" exactly when the interval's midpoint lies on the better side
    better_side = np.where(s["mode"] == "max", s["mid"] > 0, s["mid"] < 0)
    lab = s[labelled]
    assert ((lab["verdict"] == "better") == better_side[labelled.to_numpy()]).all()


@pytest.mark.integration
def test_simulation_power_never_drops_with_a_seed_and_fwer_holds(simulation):
    s = simulation
    one_sd = s[s["shift"] == 1.0]
    power = one_sd.groupby("n")["verdict"].apply(lambda v: float((v == "better").mean()))
    count = one_sd.groupby("n").size()
    for lo, hi in zip(NS, NS[1:]):
        se = math.sqrt(power[lo] * (1 - power[lo]) / count[lo] + power[hi] * (1 - power[hi]) / count[hi])
        assert power[hi] >= power[lo] - 2 * se, (lo, hi, power.to_dict())
    assert power[10] > power[3]
    null = s[s["shift"] == 0.0]
    fwer = null.groupby(["n", "noise", "study"])["verdict"].apply(lambda v: v.isin(["better", "worse"]).any())
    se = math.sqrt(0.05 * 0.95 / fwer.size)
    assert fwer.mean() <= 0.05 + 2 * se, fwer.mean()


# -- the examples -------------------------------------------------------------------------------


def test_three_identical_differences_give_the_exact_sign_flip_p():
    # three seeds, each 2 test images (of 100) apart: no spread, so t is undefined; p = 2 / 2^3
    d = paired_test([0.82, 0.85, 0.80], [0.80, 0.83, 0.78])
    assert d["p"] == pytest.approx(0.25) and d["p_ttest"] == pytest.approx(0.25)
    assert d["p_signflip"] == pytest.approx(0.25) and d["test"] == "t"
    assert paired_t_p([0.02, 0.02, 0.02]) == pytest.approx(0.25)


def _acc_study(root: Path, diffs: dict[str, np.ndarray], base: np.ndarray) -> pd.DataFrame:
    names = ["ref", *diffs]
    spec = spec_of(
        [arm(a) for a in names],
        compare={"metric": "final_test_acc", "mode": "max"},
        reference="ref",
    )
    spec["search"]["final_seeds"] = list(range(1, base.size + 1))
    rows = [row("ref", f"ref-f{s}", "final", s, final_test_acc=float(v)) for s, v in enumerate(base, 1)]
    for a, d in diffs.items():
        rows += [row(a, f"{a}-f{s}", "final", s, final_test_acc=float(v)) for s, v in enumerate(base + d, 1)]
    return compare(load_study(write_study(root, spec, rows))).set_index("arm")


def test_n6_arm_whose_interval_excludes_zero_is_better(tmp_path):
    # six differences with mean 0.01135 and t interval (0.0078, 0.0149): every one positive, so the
    # exact Wilcoxon p is 2/64 and Holm over three arms would lift it to 0.094; the t-test decides
    z = np.array([-1.4, -0.6, -0.1, 0.3, 0.7, 1.1])
    z = (z - z.mean()) / z.std(ddof=1)
    s = 0.00355 * math.sqrt(6) / stats.t.ppf(0.975, 5)
    target = 0.01135 + s * z
    rng = np.random.default_rng(6)
    base = np.array([0.80, 0.81, 0.79, 0.82, 0.80, 0.81])
    t = _acc_study(
        tmp_path / "n6",
        {"a": target, "b": rng.normal(0.0, 0.01, 6), "c": rng.normal(0.0, 0.01, 6)},
        base,
    )
    r = t.loc["a"]
    assert (r["final_test_acc_diff_ci_low"], r["final_test_acc_diff_ci_high"]) == pytest.approx(
        (0.0078, 0.0149), abs=1e-6
    )
    assert r["final_test_acc_p_ttest"] == pytest.approx(stats.ttest_1samp(target, 0.0).pvalue, rel=1e-6)
    assert r["final_test_acc_p_ttest"] < 1e-3
    assert r["final_test_acc_p_wilcoxon"] == pytest.approx(2 / 64)
    assert r["final_test_acc_verdict"] == "better"


def test_12_seed_outlier_is_flagged_not_decided_by_wilcoxon(tmp_path):
    # eleven small gains and one large loss: Wilcoxon is significant for "b better", the mean
    # difference is negative and its t interval spans zero. The table says so and flags it.
    d = np.array([0.010, 0.011, 0.012, 0.013, 0.014, 0.015, 0.016, 0.017, 0.018, 0.019, 0.020, -0.40])
    base = np.full(12, 0.80) + np.linspace(-0.02, 0.02, 12)
    t = _acc_study(tmp_path / "o12", {"b": d}, base)
    r = t.loc["b"]
    assert stats.wilcoxon(d).pvalue < 0.05 and d.mean() < 0
    assert r["final_test_acc_p_wilcoxon"] == pytest.approx(stats.wilcoxon(d).pvalue)
    assert r["final_test_acc_diff_ci_low"] < 0 < r["final_test_acc_diff_ci_high"]
    assert r["final_test_acc_verdict"] == "no significant difference"
    assert bool(r["final_test_acc_disagree"])


def _gradnorm_study(root: Path, arms: dict[str, list[dict]], n: int) -> pd.DataFrame:
    spec = spec_of(
        [arm(a) for a in arms], compare={"metric": "final_grad_norm", "mode": "min"}, reference="ref"
    )
    spec["search"]["final_seeds"] = list(range(1, n + 1))
    rows = []
    for a, runs in arms.items():
        for s, extra in enumerate(runs, 1):
            rows.append(row(a, f"{a}-f{s}", "final", s, **extra))
    return compare(load_study(write_study(root, spec, rows))).set_index("arm")


def test_collapsed_and_diverged_arms_are_decided_outside_holm(tmp_path):
    rng = np.random.default_rng(5)
    n = 10
    g = np.exp(rng.normal(-4.0, 0.3, n))

    def ok(values):
        return [{"final_grad_norm": float(v), "min_grad_norm": float(v)} for v in values]

    dead = [
        {"final_grad_norm": 1e-9, "min_grad_norm": 1e-9, "final_train_loss": L0, "final_test_acc": 0.1}
    ] * n
    diverged = ok(g * 0.5)
    for i in range(4):
        diverged[i] = {"status": "diverged", "final_grad_norm": float("nan")}
    arms = {
        "ref": ok(g),
        "half": ok(g * 0.5 * np.exp(rng.normal(0.0, 0.2, n))),
        "same": ok(g * np.exp(rng.normal(0.0, 0.2, n))),
        "dead": dead,
        "div": diverged,
    }
    t = _gradnorm_study(tmp_path / "c", arms, n)
    m = "final_grad_norm"
    assert t.loc["dead", f"{m}_verdict"] == "worse (collapsed 10 of 10)"
    assert t.loc["div", f"{m}_verdict"] == "not tested (collapsed 0 of 10, failed 4 of 10)"
    for a in ("dead", "div"):
        assert not t.loc[a, f"{m}_tested"] and math.isnan(t.loc[a, f"{m}_p_adj"])
    # the Holm family is the two valid arms only, on log differences
    raw = [
        stats.ttest_rel(np.log(t_vals), np.log(g)).pvalue
        for t_vals in (
            [r["final_grad_norm"] for r in arms["half"]],
            [r["final_grad_norm"] for r in arms["same"]],
        )
    ]
    adj = holm(raw)
    assert t.loc["half", f"{m}_p_adj"] == pytest.approx(adj[0], rel=1e-9)
    assert t.loc["same", f"{m}_p_adj"] == pytest.approx(adj[1], rel=1e-9)
    assert t.loc["half", f"{m}_verdict"] == "better"
    assert t.loc["half", f"{m}_ratio"] == pytest.approx(
        math.exp(np.mean(np.log([r["final_grad_norm"] for r in arms["half"]]) - np.log(g)))
    )


def test_five_of_five_collapsed_arm_is_worse_and_a_collapsed_reference_loses(tmp_path):
    g = np.exp(np.random.default_rng(1).normal(-4.0, 0.3, 5))
    ok = [{"final_grad_norm": float(v)} for v in g]
    dead = [{"final_grad_norm": 1e-9, "final_train_loss": L0, "final_test_acc": 0.1}] * 5
    t = _gradnorm_study(tmp_path / "d", {"ref": ok, "other": ok[::-1], "dead": dead}, 5)
    assert t.loc["dead", "final_grad_norm_verdict"] == "worse (collapsed 5 of 5)"
    assert t.loc["dead", "final_grad_norm_ratio"] < 1e-5  # its tiny gradient norm is shown, not rewarded
    assert pd.isna(t.loc["dead", "rank"])
    # the same runs with the dead arm as the reference: the valid arms are better than it
    spec = spec_of([arm(a) for a in ("ref", "dead")], compare={"metric": "final_grad_norm", "mode": "min"})
    spec["reference"] = "dead"
    spec["search"]["final_seeds"] = [1, 2, 3]
    rows = [row("ref", f"r{s}", "final", s, **ok[s - 1]) for s in (1, 2, 3)]
    rows += [row("dead", f"d{s}", "final", s, **dead[0]) for s in (1, 2, 3)]
    t2 = compare(load_study(write_study(tmp_path / "d2", spec, rows))).set_index("arm")
    assert t2.loc["ref", "final_grad_norm_verdict"] == "better (reference collapsed 3 of 3)"


def test_collapse_boundaries_are_treated_alike():
    from lyaptune.analysis import LabelStats, classify_collapse

    stats_ = LabelStats(label_entropy=2.0, majority_rate=0.10, num_classes=10, source="labels", note="")
    t = pd.DataFrame(
        {
            "status": ["completed"] * 3,
            "final_train_loss": [0.5, 0.5, 0.5],
            "initial_loss": [L0] * 3,
            "final_test_acc": [0.12, 0.08, 0.1201],
        }
    )
    out = classify_collapse(t, labels=stats_)
    # |0.12 - 0.10| and |0.08 - 0.10| are 2 points up to float rounding: both on the boundary
    assert out["collapsed_acc"].tolist() == [True, True, False]


def test_probability_of_improvement_counts_collapsed_runs_as_losses():
    # A collapses in 2 of 3 studies (NaN runs): those studies count, A losing every pair there
    a = [[0.9, 0.91, 0.92], [np.nan] * 3, [np.nan] * 3]
    b = [[0.8, 0.81, 0.82], [0.7, 0.71, 0.72], [0.6, 0.61, 0.62]]
    p, lo, hi = probability_of_improvement(a, b, mode="max", n_resamples=200)
    assert p == pytest.approx(1 / 3)
    assert p != 1.0 and hi < 1.0
    # two collapsed runs tie (1/2)
    p2, _, _ = probability_of_improvement([[np.nan]], [[np.nan]], mode="min", n_resamples=10)
    assert p2 == pytest.approx(0.5)


def _same_spec_run(root: Path, seed_offset: float) -> Path:
    spec = spec_of([arm("x"), arm("y")], compare={"metric": "final_test_acc", "mode": "max"}, reference="x")
    spec["search"]["final_seeds"] = [1, 2, 3]
    rows = []
    for s in (1, 2, 3):
        rows.append(row("x", f"x-{s}", "final", s, final_test_acc=0.80 + seed_offset + 0.01 * s))
        rows.append(row("y", f"y-{s}", "final", s, final_test_acc=0.90 + seed_offset + 0.005 * s))
    for a in ("x", "y"):
        rows.append(row(a, f"{a}-search-0", "search", 0, optuna_number=0))
    return write_study(root, spec, rows)


@pytest.mark.slow
def test_compare_of_two_runs_of_one_spec(tmp_path):
    r1 = _same_spec_run(tmp_path / "run-a", 0.0)
    r2 = _same_spec_run(tmp_path / "run-b", 0.02)
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    res = subprocess.run(
        [sys.executable, "-m", "lyaptune.cli", "compare", str(r1), str(r2)],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr
    assert "run-a" in res.stdout and "run-b" in res.stdout  # a study column tells them apart
    out = tmp_path / "run-a-compare"  # beside the first run, not the current directory
    assert not any(cwd.iterdir())
    prof = pd.read_csv(out / "profiles.csv")
    assert prof["fraction"].between(0.0, 1.0).all() and prof["fraction"].max() == 1.0
    assert (prof["n_studies"] == 2).all()
    scores = pd.read_csv(out / "scores.csv")
    assert sorted(scores["study"].unique()) == ["run-a", "run-b"]
    # error rates: y's 1 - acc is the smaller one, so y is the best arm of each study (ratio 1)
    assert scores["profile_metric"].iloc[0].startswith("error rate")
    y = prof[prof["arm"] == "y"]
    assert y["fraction"].iloc[0] == 1.0
    x_err = 1 - np.mean([0.81, 0.82, 0.83])
    y_err = 1 - np.mean([0.905, 0.91, 0.915])
    x = prof[prof["arm"] == "x"]
    below = x[x["tau"] < x_err / y_err - 1e-9]
    assert (below["fraction"] == 0.0).all()
    imp = json.loads((out / "cross_study.json").read_text())["improvement"]
    assert all(r["rough"] for r in imp)  # 3 runs per study < 5
    # y beats x on every run of both studies: P(y > x) = 1, printed with its rough-interval mark
    y_x = next(r for r in imp if r["arm_a"] == "y" and r["arm_b"] == "x")
    assert y_x["p_a_beats_b"] == 1.0 and y_x["n_studies"] == 2
    assert "rough: 3 runs per study (< 5)" in res.stdout


def test_cross_study_keeps_the_studies_where_an_arm_collapsed(tmp_path):
    from lyaptune.analysis.report import write_cross_study

    roots = []
    for i in range(3):
        spec = spec_of(
            [arm("x"), arm("y")], compare={"metric": "final_test_acc", "mode": "max"}, reference="y"
        )
        spec["name"] = f"study-{i}"
        spec["search"]["final_seeds"] = [1, 2, 3]
        rows = []
        for s in (1, 2, 3):
            dead = {"final_train_loss": L0, "final_test_acc": 0.1} if i > 0 else {}
            rows.append(row("x", f"x-{s}", "final", s, **{"final_test_acc": 0.95 + 0.001 * s, **dead}))
            rows.append(row("y", f"y-{s}", "final", s, final_test_acc=0.85 + 0.001 * s))
        roots.append(write_study(tmp_path / f"s{i}", spec, rows))
    studies = [load_study(r) for r in roots]
    table = compare(studies)
    assert (table.loc[table["arm"] == "x", "n_collapsed"].tolist()) == [0, 3, 3]
    write_cross_study(studies, table, tmp_path / "cross", n_resamples=200)
    imp = pd.read_csv(tmp_path / "cross" / "improvement.csv")
    x_y = imp[(imp["arm_a"] == "x") & (imp["arm_b"] == "y")].iloc[0]
    # x wins every pair in study 0 and loses every pair in the two studies where it collapsed
    assert x_y["p_a_beats_b"] == pytest.approx(1 / 3) and x_y["n_studies"] == 3
    assert x_y["high"] < 1.0
    prof = pd.read_csv(tmp_path / "cross" / "profiles.csv")
    assert prof["fraction"].between(0.0, 1.0).all()
    # x is best (smallest error rate) in study 0 only: at tau = 1 its fraction is 1/3
    assert prof[(prof["arm"] == "x")]["fraction"].iloc[0] == pytest.approx(1 / 3)
