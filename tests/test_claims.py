"""Claim verdicts (METHODS.md section 8 "Claims", "What a claim may say"; issues 20 and 26): each kind of
claim judged on synthetic stores with planted effects, p-values checked against scipy computed here."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import stats
from test_protocol import L0, arm, row, spec_of, write_study

from lyaptune.analysis import evaluate_claims, load_study
from lyaptune.errors import ConfigError
from lyaptune.store import RunStore
from lyaptune.study.comparison import ClaimSpec

SEEDS = [1, 2, 3, 4, 5]
BASE = np.array([1.00, 1.20, 0.90, 1.10, 1.05])
HALF = BASE * 0.5 * np.exp([0.01, -0.02, 0.015, -0.01, 0.005])  # planted ratio 0.5
NOISE_IUT = np.array([-0.22, -0.163, -0.095, 0.123, 0.313])  # one comparison with raw p = 0.026


def claim(cid: str, arm_name: str, than, direction: str, metric: str | None = "final_grad_norm", **extra):
    c = {"id": cid, "text": cid, "source": "extension", "arm": arm_name, "than": than, "direction": direction}
    if metric is not None:
        c["metric"] = metric
    c.update(extra)
    return c


def study(root: Path, arms: list[dict], values: dict[str, dict[str, list]], claims: list[dict], **rows_extra):
    """A stored study: per arm, per column, one value per final seed (``SEEDS``)."""
    spec = spec_of(
        arms, compare={"metric": "final_grad_norm", "mode": "min"}, claims=claims, reference=arms[0]["name"]
    )
    rows = []
    for name, cols in values.items():
        n = len(next(iter(cols.values())))
        for i in range(n):
            vals = {k: v[i] for k, v in cols.items()}
            rows.append(row(name, f"{name}-final-s{SEEDS[i]}", "final", SEEDS[i], **vals))
    return load_study(write_study(root, spec, rows))


def by_id(results):
    return {r.id: r for r in results}


def test_log_scale_claims_and_ratio_margins(tmp_path):
    s = study(
        tmp_path / "s",
        [arm("adam"), arm("derived", "derived-constant", searched=False)],
        {"adam": {"final_grad_norm": list(BASE)}, "derived": {"final_grad_norm": list(HALF)}},
        [
            claim("lower", "derived", "adam", "lower"),
            claim("higher", "derived", "adam", "higher"),
            claim("1.5x", "derived", "adam", "lower", factor=1.5),
            claim("4x", "derived", "adam", "lower", factor=4),
            claim("paper", "derived", "adam", "lower", source="paper", paper="003", place="Figure 2"),
        ],
    )
    res = by_id(evaluate_claims(s))
    d = np.log(HALF) - np.log(BASE)
    (c,) = res["lower"].comparisons
    assert res["lower"].verdict == "supported" and c.rule == "t" and c.scale == "log"
    assert c.effect == pytest.approx(d.mean()) and c.ratio == pytest.approx(math.exp(d.mean()))
    assert c.p == pytest.approx(stats.ttest_1samp(d, 0.0).pvalue, rel=1e-9)
    half = stats.t.ppf(0.975, 4) * d.std(ddof=1) / math.sqrt(5)
    assert (c.ratio_low, c.ratio_high) == pytest.approx(
        (math.exp(d.mean() - half), math.exp(d.mean() + half))
    )
    assert res["higher"].verdict == "contradicted" and "Holm" in res["higher"].reason
    # "at least 1.5x lower": log differences tested against -ln 1.5; 0.5x is beyond it
    gap = res["1.5x"].comparisons[0]
    assert res["1.5x"].verdict == "supported" and gap.bound == pytest.approx(-math.log(1.5))
    assert gap.p == pytest.approx(stats.ttest_1samp(d, -math.log(1.5)).pvalue, rel=1e-9)
    # "at least 4x lower": 0.5x is significantly short of 0.25x
    assert res["4x"].verdict == "contradicted"
    assert res["4x"].comparisons[0].p == pytest.approx(stats.ttest_1samp(d, -math.log(4)).pvalue, rel=1e-9)
    data = res["1.5x"].to_dict()
    assert data["source"] == "extension" and data["ratio"]["value"] == pytest.approx(math.exp(d.mean()))
    assert data["factor"] == 1.5 and data["scale"] == "log" and data["kind"] == "compare"
    # provenance travels to compare.json, the paper's claims apart from ours
    paper = res["paper"].to_dict()
    assert (paper["source"], paper["paper"], paper["place"]) == ("paper", "003", "Figure 2")


def test_each_is_intersection_union_any_is_holm(tmp_path):
    derived = HALF
    others = {
        # raw p 0.021 to 0.031: each significant alone at 0.05, none after Holm over three
        "c1": derived * np.exp(0.36 + NOISE_IUT),
        "c2": derived * np.exp(0.34 + NOISE_IUT),
        "c3": derived * np.exp(0.35 + NOISE_IUT),
    }
    others["strong"] = derived * 2.0 * np.exp([0.01, 0.0, -0.01, 0.02, -0.02])
    arms = [arm("derived", "derived-constant", searched=False), *(arm(n) for n in others)]
    values = {"derived": {"final_grad_norm": list(derived)}}
    values |= {n: {"final_grad_norm": list(v)} for n, v in others.items()}
    s = study(
        tmp_path / "s",
        arms,
        values,
        [
            claim("each", "derived", ["c1", "c2", "c3"], "lower"),
            claim("all", "derived", ["c1", "c2", "c3", "strong"], "lower"),
            claim("any-c3", "derived", ["c3", "c2"], "lower", quantifier="any"),
            claim("any-strong", "derived", ["c3", "strong"], "lower", quantifier="any"),
        ],
    )
    res = by_id(evaluate_claims(s))
    raw = [stats.ttest_1samp(np.log(derived) - np.log(others[k]), 0.0).pvalue for k in ("c1", "c2", "c3")]
    assert all(0.02 < p < 0.05 for p in raw) and 3 * min(raw) > 0.05
    for cid in ("each", "all"):
        r = res[cid]
        assert r.verdict == "supported" and "intersection-union" in r.reason
        assert [c.other for c in r.comparisons][:3] == ["c1", "c2", "c3"]
        assert [c.p for c in r.comparisons][:3] == pytest.approx(raw, rel=1e-9)
    assert all(c.p_adj > 0.05 for c in res["each"].comparisons)  # Holm would have found none
    assert res["any-strong"].verdict == "supported" and res["any-strong"].reason.startswith("Holm")
    # any: after Holm, and Holm over two finds none either
    assert res["any-c3"].verdict == "inconclusive" and "after Holm" in res["any-c3"].reason


def test_grid_each_compares_every_grid_point(tmp_path):
    grid_arm = {"name": "const", "optimizer": "sgd", "grid": {"lr": [0.01, 0.001, 0.0001]}}
    arms = [arm("derived", "derived-constant", searched=False), grid_arm]
    spec = spec_of(
        arms, claims=[claim("grid", "derived", "const", "lower", grid="each")], reference="derived"
    )
    spec["search"] = {
        "sampler": "grid",
        "trials_per_arm": 3,
        "seeds": [10, 11, 12],
        "final_seeds": [1, 2, 3, 4, 5],
    }
    derived = HALF
    rows = [row("derived", f"d-{s}", "final", s, final_grad_norm=g) for s, g in zip(SEEDS, derived)]
    points = {0.01: [2.0, 2.2, 1.9], 0.001: [0.9, 1.1, 1.0], 0.0001: [3.0, 3.3, 2.9]}
    for lr, gns in points.items():
        for s, g in zip((10, 11, 12), gns):
            rows.append(row("const", f"c-{lr}-{s}", "search", s, final_grad_norm=g, param_lr=lr))
    # the chosen point (0.001) re-run on the final seeds: paired with derived on them
    best_final = BASE * 1.0
    rows += [
        row("const", f"c-final-{s}", "final", s, final_grad_norm=g, param_lr=0.001)
        for s, g in zip(SEEDS, best_final)
    ]
    (r,) = evaluate_claims(load_study(write_study(tmp_path / "g", spec, rows)))
    comps = {c.other: c for c in r.comparisons}
    assert set(comps) == {"const[lr=0.01]", "const[lr=0.001]", "const[lr=0.0001]"}
    paired = comps["const[lr=0.001]"]
    assert paired.rule == "t" and paired.n == 5
    assert paired.p == pytest.approx(
        stats.ttest_1samp(np.log(derived) - np.log(best_final), 0).pvalue, rel=1e-9
    )
    welch = comps["const[lr=0.01]"]
    expect = stats.ttest_ind(np.log(derived), np.log(points[0.01]), equal_var=False).pvalue
    assert welch.rule == "welch" and welch.p == pytest.approx(expect, rel=1e-9)
    assert r.verdict == "supported"


def test_equivalence_by_tost_planted_equal_and_unequal(tmp_path):
    lr = np.array([0.010, 0.012, 0.011, 0.0105, 0.0115])
    same = lr * np.exp([0.01, -0.01, 0.005, 0.0, -0.005])  # ratio ~ 1.0, tight
    double = lr * 2.0 * np.exp([0.01, -0.01, 0.005, 0.0, -0.005])
    noisy = lr * np.exp([0.3, -0.25, 0.2, -0.3, 0.1])  # mean ~ 1.0 but wide
    arms = [
        arm(n, "derived-constant", searched=False)
        for n in ("kaiming", "xavier", "orthogonal", "normal", "dead")
    ]
    values = {
        # alpha is set before training: a run that then collapses still has its alpha (no better direction)
        "dead": {"derived_lr": list(same), "final_train_loss": [L0] * 5},
        "kaiming": {"derived_lr": list(lr)},
        "xavier": {"derived_lr": list(same)},
        "orthogonal": {"derived_lr": list(double)},
        "normal": {"derived_lr": list(noisy)},
    }
    s = study(
        tmp_path / "e",
        arms,
        values,
        [
            claim("eq", "xavier", "kaiming", "equivalent", "derived_lr", factor=1.25),
            claim("neq", "orthogonal", "kaiming", "equivalent", "derived_lr", factor=1.25),
            claim("wide", "normal", "kaiming", "equivalent", "derived_lr", factor=1.25),
            claim("dead", "dead", "kaiming", "equivalent", "derived_lr", factor=1.25),
            claim("acc-dead", "dead", "kaiming", "equivalent", "final_test_acc", margin=0.01),
        ],
    )
    res = by_id(evaluate_claims(s))
    d = np.log(same) - np.log(lr)
    delta = math.log(1.25)
    p_tost = max(
        stats.ttest_1samp(d + delta, 0, alternative="greater").pvalue,
        stats.ttest_1samp(d - delta, 0, alternative="less").pvalue,
    )
    eq = res["eq"]
    assert eq.verdict == "supported" and eq.rule == "TOST" and "TOST" in eq.reason
    assert eq.comparisons[0].p == pytest.approx(p_tost, rel=1e-9) and p_tost < 0.05
    d2 = np.log(double) - np.log(lr)
    assert res["neq"].verdict == "contradicted"
    assert res["neq"].comparisons[0].p_outside == pytest.approx(
        stats.ttest_1samp(d2 - delta, 0).pvalue, rel=1e-9
    )
    assert res["wide"].verdict == "inconclusive"
    assert res["dead"].verdict == "supported" and res["dead"].comparisons[0].p == pytest.approx(
        p_tost, rel=1e-9
    )
    # on a metric with a better direction a dead network is not equivalent to a live one
    assert res["acc-dead"].verdict == "contradicted" and res["acc-dead"].rule == "collapse"


def test_collapse_decides_without_a_test(tmp_path):
    dead = {"final_train_loss": [L0] * 5, "final_grad_norm": [1e-9] * 5}
    one_dead = {"final_train_loss": [L0, 0.4, 0.4, 0.4, 0.4], "final_grad_norm": list(BASE)}
    arms = [arm(n) for n in ("live", "dead", "mixed", "sign")]
    values = {
        "live": {"final_grad_norm": list(BASE)},
        "dead": dead,
        "mixed": one_dead,
        "sign": dead,
    }
    s = study(
        tmp_path / "c",
        arms,
        values,
        [
            claim("dead-wins", "dead", "live", "lower"),  # a dead network's tiny gradient is no win
            claim("beats-dead", "live", "dead", "lower"),
            claim("vs-mixed", "live", "mixed", "lower"),
            claim(
                "dead-worse", "live", "dead", "higher", "final_train_loss"
            ),  # live claimed worse: dead wins
            claim("sign-collapses", "sign", "all", "collapses", None),
            claim("live-collapses", "live", "all", "collapses", None),
            claim("mixed-collapses", "mixed", "all", "collapses", None),
        ],
    )
    res = by_id(evaluate_claims(s))
    r = res["dead-wins"]
    assert r.verdict == "contradicted" and r.rule == "collapse"
    assert "'dead' collapsed on 5 and failed on 0 of 5" in r.reason
    assert res["beats-dead"].verdict == "supported" and res["beats-dead"].rule == "collapse"
    assert res["vs-mixed"].verdict == "inconclusive" and "'mixed' collapsed on 1" in res["vs-mixed"].reason
    # "live has a higher loss than dead" makes 'dead' the claimed winner: it collapsed, so it loses
    assert res["dead-worse"].verdict == "contradicted" and "claimed winner 'dead'" in res["dead-worse"].reason
    assert res["sign-collapses"].verdict == "supported" and "5 of 5" in res["sign-collapses"].reason
    assert res["live-collapses"].verdict == "contradicted"
    assert res["mixed-collapses"].verdict == "inconclusive" and "1 of 5" in res["mixed-collapses"].reason


def _epoch(e: int, loss: float, prev: float, t: float) -> dict:
    return {
        "epoch": e,
        "train_loss": loss,
        "train_acc": 0.5,
        "grad_norm": 0.1,
        "val_loss": loss,
        "val_acc": 0.5,
        "test_loss": loss,
        "test_acc": 0.8,
        "lr": 0.01,
        "lyapunov_drift": loss - prev,
        "step": e,
        "time_s": t,
    }


def test_whole_run_metrics_time_to_target_auc_and_drift(tmp_path):
    # fast: 2.0 -> 1.0, 0.5, 0.3, 0.2, 0.1 (reaches < 0.6 at epoch 2, monotone)
    # slow: 2.0 -> 1.5, 1.6, 1.2, 1.3, 1.0 (never below 0.6: censored at 5 + 1; drift <= 0 on 3 of 5)
    curves = {"fast": [1.0, 0.5, 0.3, 0.2, 0.1], "slow": [1.5, 1.6, 1.2, 1.3, 1.0]}
    jitter = [1.0, 1.05, 0.95, 1.02, 0.98]
    spec = spec_of(
        [arm("fast"), arm("slow")],
        claims=[
            claim(
                "t2t",
                "fast",
                "slow",
                "lower",
                "epochs_to_target",
                target={"field": "train_loss", "below": 0.52},
            ),
            claim(
                "s2t",
                "fast",
                "slow",
                "lower",
                "seconds_to_target",
                target={"field": "train_loss", "below": 0.52},
            ),
            claim("auc", "fast", "slow", "lower", "auc_train_loss"),
            claim("drift", "fast", "slow", "higher", "drift_fraction"),
        ],
        reference="fast",
    )
    root = tmp_path / "w"
    store = RunStore(root, create=True)
    store.write_spec(spec)
    for name, curve in curves.items():
        for i, s in enumerate(SEEDS):
            losses = [x * jitter[i] for x in curve]
            l0 = 2.0
            recs, prev = [], l0
            for e, loss in enumerate(losses, start=1):
                recs.append(_epoch(e, loss, prev, 0.5 * e * jitter[i]))
                prev = loss
            r = row(name, f"{name}-{s}", "final", s, initial_loss=l0, final_train_loss=losses[-1])
            store.record_trial(r, epochs=recs)
    res = by_id(evaluate_claims(load_study(root)))
    # epochs to target (train loss < 0.52): fast at epoch 2, or 3 where 0.5 x 1.05 = 0.525; slow never:
    # censored one epoch past its budget, at 6
    fast = np.array([2, 3, 2, 2, 2])
    d = np.log(fast / 6.0)
    t2t = res["t2t"].comparisons[0]
    assert t2t.effect == pytest.approx(d.mean()) and t2t.p == pytest.approx(stats.ttest_1samp(d, 0).pvalue)
    assert res["t2t"].verdict == "supported"
    # seconds: fast at 0.5 e j s; slow censored at its whole time plus one mean epoch, 0.5 * 5 * j * (1 + 1/5)
    s2t = res["s2t"].comparisons[0]
    assert s2t.effect == pytest.approx(np.mean(np.log(fast / 6.0)))
    # AUC per epoch: trapezoid from L(w0) = 2.0 through the five epochs, divided by 5
    auc = {
        k: [
            np.mean(np.diff(np.r_[2.0, np.array(c) * j]) / 2 + np.r_[2.0, np.array(c) * j][:-1])
            for j in jitter
        ]
        for k, c in curves.items()
    }
    d = np.log(auc["fast"]) - np.log(auc["slow"])
    assert res["auc"].comparisons[0].effect == pytest.approx(d.mean())
    assert res["auc"].verdict == "supported"
    # drift fraction: 1.0 against 3/5 on every seed (drift of slow: -0.5j, +0.1j, -0.4j, +0.1j, -0.3j)
    dr = res["drift"].comparisons[0]
    assert dr.scale == "linear" and dr.effect == pytest.approx(0.4) and dr.p == pytest.approx(2 / 2**5)
    assert res["drift"].verdict == "inconclusive"  # 0.0625 is the least p five identical differences give


def test_claim_spec_errors_are_one_line():
    good = {
        "id": "x",
        "text": "x",
        "source": "paper",
        "paper": "003",
        "place": "Figure 1",
        "metric": "final_grad_norm",
    }
    good |= {"arm": "a", "than": "b", "direction": "lower"}
    assert ClaimSpec.from_dict(good).factor is None
    cases = {
        "source": ({"source": None}, r"claims\[0\]\.source: required"),
        "place": ({"place": None}, r"claims\[0\]\.place: required for source: paper"),
        "margin": ({"margin": 0.1}, r"claims\[0\]\.margin: final_grad_norm is compared on the log scale"),
        "factor": ({"metric": "final_test_acc", "factor": 2}, r"claims\[0\]\.factor: .* as a difference"),
        "equiv": ({"direction": "equivalent"}, r"claims\[0\]\.factor: required \(> 0\) for an equivalence"),
        "target": ({"metric": "epochs_to_target"}, r"claims\[0\]\.target: required for epochs_to_target"),
        "field": (
            {"metric": "epochs_to_target", "target": {"field": "trian_loss", "below": 0.1}},
            r"claims\[0\]\.target\.field: unknown target field 'trian_loss'; did you mean 'train_loss'",
        ),
        "side": (
            {"metric": "epochs_to_target", "target": {"field": "train_loss"}},
            r"claims\[0\]\.target: .*exactly one of below / above",
        ),
        "dir": ({"direction": "smaller"}, r"claims\[0\]\.direction: 'smaller' is not valid; choices: lower"),
        "quant": ({"quantifier": "some"}, r"claims\[0\]\.quantifier: unknown claim quantifier 'some'"),
        "collapses": (
            {"direction": "collapses"},
            r"claims\[0\]\.metric: a 'collapses' claim names no metric",
        ),
    }
    for name, (change, pattern) in cases.items():
        data = {k: v for k, v in {**good, **change}.items() if v is not None}
        with pytest.raises(ConfigError, match=pattern) as err:
            ClaimSpec.from_dict(data, "claims[0]")
        assert "\n" not in str(err.value), name


@pytest.mark.slow
def test_quickstart_claims_are_contradicted_by_the_derived_arms_collapse(tmp_path):
    out = tmp_path / "runs"
    root = Path(__file__).resolve().parents[1]
    run = [
        sys.executable,
        "-m",
        "lyaptune.cli",
        "run",
        str(root / "experiments" / "quickstart.yaml"),
        "--out",
        str(out),
    ]
    r = subprocess.run(run, capture_output=True, text=True, timeout=1800, cwd=root)
    assert r.returncode == 0, r.stderr[-2000:]
    res = evaluate_claims(load_study(out / "quickstart"))
    assert len(res) == 2
    for c in res:
        assert c.verdict == "contradicted" and c.rule == "collapse", c.reason
        assert "claimed winner 'derived' collapsed on 3" in c.reason and c.source == "extension"


def test_drift_fraction_and_max_of_a_diagnostic(tmp_path):
    # stable: the loss falls every epoch (drift <= 0 on 5 of 5); bumpy: k of its 5 epochs go up
    ups = [2, 2, 1, 2, 3]
    peaks = [2.0, 2.4, 1.8, 2.2, 2.1]  # bumpy's largest gradient norm (stable's is 0.5 x 1.0..1.2)
    stable_peaks = [0.5, 0.55, 0.6, 0.5, 0.52]
    spec = spec_of(
        [arm("stable"), arm("bumpy")],
        claims=[
            claim("drift", "stable", "bumpy", "higher", "drift_fraction"),
            claim("max-gn", "stable", "bumpy", "lower", "max_diagnostic", of="grad_norm"),
            claim("max-res", "stable", "bumpy", "lower", "max_diagnostic", of="residual"),
        ],
        reference="stable",
    )
    root = tmp_path / "d"
    store = RunStore(root, create=True)
    store.write_spec(spec)
    for i, s in enumerate(SEEDS):
        for name in ("stable", "bumpy"):
            loss, recs = 2.0, []
            for e in range(1, 6):
                up = name == "bumpy" and e <= ups[i]
                new = loss + 0.1 if up else loss - 0.2
                rec = _epoch(e, new, loss, 0.5 * e)
                peak = peaks[i] if name == "bumpy" else stable_peaks[i]
                rec["grad_norm"] = peak if e == 3 else 0.1
                rec["residual"] = (3.0 if name == "bumpy" else 1.0) + 0.1 * i + 0.01 * e
                recs.append(rec)
                loss = new
            store.record_trial(row(name, f"{name}-{s}", "final", s, initial_loss=2.0), epochs=recs)
    res = by_id(evaluate_claims(load_study(root)))
    d = 1.0 - (5 - np.array(ups)) / 5  # stable's 1.0 minus bumpy's fraction of epochs with drift <= 0
    dr = res["drift"].comparisons[0]
    assert dr.effect == pytest.approx(d.mean()) and dr.p == pytest.approx(stats.ttest_1samp(d, 0).pvalue)
    assert res["drift"].verdict == "supported" and res["drift"].scale == "linear"
    # the max of grad_norm takes the gradient norm's log scale
    g = np.log(stable_peaks) - np.log(peaks)
    mg = res["max-gn"].comparisons[0]
    assert res["max-gn"].scale == "log" and mg.effect == pytest.approx(g.mean())
    assert res["max-gn"].verdict == "supported"
    # an optimizer diagnostic has no known scale: compared as a difference; its max is at epoch 5
    mr = res["max-res"].comparisons[0]
    assert res["max-res"].scale == "linear" and mr.effect == pytest.approx(-2.0)
