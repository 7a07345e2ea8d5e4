"""The report's opening Answer block (lyaptune.analysis.answer) and the tuning cost it shows.

A small run directory is written here through the real store (:class:`~lyaptune.store.RunStore`):
a derived arm whose final runs stored K_hat, alpha and K_hat's seconds, a tuned arm whose search runs
stored their training and evaluation clocks, and an arm that collapsed. Every number the Answer
shows is recomputed in the test with numpy / scipy from the values written, never read back from the
analysis code. The HTML is opened in headless Chromium at a 1400 x 900 window and the Answer's table,
K_hat and alpha are looked for in the text of the elements inside the viewport, read from the DOM
(:func:`first_screen`, used by ``test_report_e2e`` on a real study too).
"""

from __future__ import annotations

import html
import json
import math
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from test_analysis import COSINE, DEAD, DERIVED, FINAL_SEEDS, make_spec, run_row, write_trials

from lyaptune.analysis import compare, load_study, write_report
from lyaptune.analysis.answer import answer, derived_steps
from lyaptune.analysis.compare import run_train_seconds
from lyaptune.store import RunStore

# the derived arm's stored K_hat and alpha per final seed (0..5), and each estimate's seconds
K_HATS = [40.0, 42.0, 38.0, 41.0, 39.5, 40.5]
ALPHAS = [0.0050, 0.0049, 0.0051, 0.00495, 0.00505, 0.0050]
KHAT_SECONDS = [0.40, 0.45, 0.38, 0.41, 0.44, 0.42]
# adam-cosine search runs: Optuna number -> (wall_s, train_s or None for a run without the clock, eval_s)
SEARCH = {0: (1.0, 0.6, 0.2), 1: (1.2, 0.7, 0.25), 2: (0.9, 0.5, 0.15), 3: (1.1, None, None)}

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-sync"]
#: The screen the Answer must fit: a laptop's 1400 x 900 window.
WINDOW = (1400, 900)

# Collects, once the page has loaded, the text of every element whose box starts inside the viewport
# (window.innerHeight of a 1400 x 900 window, browser chrome excluded) and the Answer table's box.
_FIRST_SCREEN_JS = """<script>
window.addEventListener("load", function () {
  var H = window.innerHeight, out = [];
  document.querySelectorAll("h1,h2,h3,p,th,td,li").forEach(function (el) {
    var r = el.getBoundingClientRect();
    if (r.top < H && r.bottom > 0 && r.height > 0) out.push(el.innerText);
  });
  var t = document.querySelector("#answer table"), b = t ? t.getBoundingClientRect() : null;
  var n = document.createElement("pre"); n.id = "first-screen";
  n.textContent = JSON.stringify({width: window.innerWidth, height: window.innerHeight, texts: out,
    table: b && {top: b.top, bottom: b.bottom, left: b.left, right: b.right}});
  document.body.appendChild(n);
});
</script>"""


def chromium_or_skip() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.skip("Chromium is not installed (Debian: apt-get install chromium); CI installs it")
    return exe


def first_screen(report_html: Path, tmp: Path) -> dict:
    """What a 1400 x 900 window shows of ``report_html`` without scrolling, read from Chromium's DOM.

    The report is copied beside itself (its relative image links still resolve) with a script that
    records the text of every element inside the viewport; Chromium renders it headless and
    ``--dump-dom`` returns the DOM with the record. The report itself stays script-free.

    Returns:
      ``{"width", "height", "texts", "table"}``: the viewport, the visible elements' texts in document
      order, and the Answer table's box (``None`` when there is none).
    """
    exe = chromium_or_skip()
    copy = report_html.with_name("first_screen_probe.html")
    copy.write_text(report_html.read_text().replace("</body>", _FIRST_SCREEN_JS + "</body>"))
    try:
        r = subprocess.run(
            [
                exe,
                *CHROMIUM_FLAGS,
                f"--user-data-dir={tmp / 'chromium-profile'}",
                f"--window-size={WINDOW[0]},{WINDOW[1]}",
                "--virtual-time-budget=5000",
                "--dump-dom",
                copy.resolve().as_uri(),
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        copy.unlink()
    assert r.returncode == 0, r.stderr[-3000:]
    m = re.search(r'<pre id="first-screen">(.*?)</pre>', r.stdout, re.S)
    assert m, f"the probe did not run; DOM tail:\n{r.stdout[-2000:]}"
    return json.loads(html.unescape(m.group(1)))


# -- a small run directory -------------------------------------------------------------------------


def _with_info(row: dict, **info) -> dict:
    row["info_json"] = json.dumps({**json.loads(row["info_json"]), **info})
    return row


def build_answer_run(root: Path) -> Path:
    spec = make_spec("answer")
    spec["arms"] = [a for a in spec["arms"] if a["name"] in ("derived", "adam-cosine", "dead")]
    RunStore(root, create=True).write_spec(spec)
    (root / "study.json").write_text(json.dumps({"started": "2026-01-01T00:00:00+00:00"}))
    rows = []
    for n, (wall, train, ev) in SEARCH.items():
        r = run_row(
            "adam-cosine",
            f"adam-cosine-search-{n}-s0",
            "search",
            0,
            number=n,
            values={"objective": 0.3 + 0.01 * n, "wall_s": wall},
            params={"lr": 1e-3 * (n + 1)},
        )
        rows.append(_with_info(r, train_s=train, eval_s=ev) if train is not None else r)
    rows.append(
        run_row("dead", "dead-search-0-s0", "search", 0, number=0, values={"objective": 2.3, "wall_s": 0.7})
    )
    for arm, final in (("derived", DERIVED), ("adam-cosine", COSINE), ("dead", DEAD)):
        for i, s in enumerate(FINAL_SEEDS):
            r = run_row(arm, f"{arm}-final-s{s}", "final", s, values={k: final[k][i] for k in final})
            if arm == "derived":
                r["k_hat"], r["derived_lr"] = K_HATS[i], ALPHAS[i]
                r = _with_info(
                    r, k_hat=K_HATS[i], derived_lr=ALPHAS[i], lipschitz_seconds=KHAT_SECONDS[i], train_s=1.0
                )
            rows.append(r)
    write_trials(root, rows)
    return root


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    return build_answer_run(tmp_path_factory.mktemp("answer") / "answer")


@pytest.fixture(scope="module")
def study(run):
    return load_study(run)


@pytest.fixture(scope="module")
def table(study):
    return compare(study)


@pytest.fixture(scope="module")
def ans(study, table):
    return answer(study, table)


def _row(ans, arm: str) -> dict[str, str]:
    (row,) = [r for r in ans.rows if r[0].split(" (")[0] == arm]
    return dict(zip(ans.header, row))


def _g4(v: float) -> str:
    return f"{v:.4g}"


def _g3(v: float) -> str:
    return f"{v:.3g}"


# -- the tuning cost: training + K_hat ---------------------------------------------------------------


def test_tuning_cost_counts_training_and_k_hat_not_evaluation(table):
    t = table.set_index("arm")
    cos = t.loc["adam-cosine"]
    clocked = [tr for _, tr, _ in SEARCH.values() if tr is not None]
    unclocked_wall = [w for w, tr, _ in SEARCH.values() if tr is None]
    # training clocks, plus the wall time of the one run recorded without a clock
    assert cos["search_device_s"] == pytest.approx(sum(clocked) + sum(unclocked_wall))
    assert cos["search_runs_unclocked"] == 1
    assert cos["search_eval_s"] == pytest.approx(sum(e for _, _, e in SEARCH.values() if e is not None))
    assert cos["search_wall_s"] == pytest.approx(sum(w for w, _, _ in SEARCH.values()))
    assert cos["khat_s"] == 0 and cos["tuning_device_s"] == pytest.approx(cos["search_device_s"])
    d = t.loc["derived"]
    # the derived arm: no search, six K_hat estimates (its final runs' training is not tuning)
    assert d["search_runs"] == 0 and d["khat_runs"] == 6
    assert d["khat_s"] == pytest.approx(sum(KHAT_SECONDS))
    assert d["tuning_device_s"] == pytest.approx(sum(KHAT_SECONDS))


def test_run_train_seconds_prefers_the_training_clock(study):
    t = study.trials
    rows = t[(t["arm"] == "adam-cosine") & (t["phase"] == "search")].sort_values("optuna_number")
    secs, clocked = run_train_seconds(rows)
    want = [tr if tr is not None else w for w, tr, _ in SEARCH.values()]
    assert np.allclose(secs, want)
    assert clocked.tolist() == [tr is not None for _, tr, _ in SEARCH.values()]


# -- the Answer's table ------------------------------------------------------------------------------


def test_answer_table_has_one_row_per_arm_with_the_required_columns(ans):
    assert [r[0] for r in ans.rows] == ["derived (ref)", "adam-cosine", "dead"]
    h = ans.header
    assert h[0] == "arm"
    assert h[1] == "val loss (primary): geometric mean [95% CI]"
    assert h[2:] == [
        "test acc: mean",
        "collapsed / failed",
        "verdict vs derived",
        "tuning device-s (1)",
        "K_hat",
        "alpha",
    ]


def test_primary_metric_and_interval_match_numpy(ans):
    # the synthetic spec compares nothing of its own: its primary metric is final_val_loss, which
    # run_row stores as the objective; log scale, so the geometric mean with its t interval on logs
    for arm, final in (("derived", DERIVED), ("adam-cosine", COSINE)):
        lx = np.log(final["objective"])
        n = lx.size
        half = stats.t.ppf(0.975, n - 1) * lx.std(ddof=1) / math.sqrt(n)
        lo, hi = math.exp(lx.mean() - half), math.exp(lx.mean() + half)
        want = f"{_g4(math.exp(lx.mean()))} [{_g4(lo)}, {_g4(hi)}]"
        assert _row(ans, arm)["val loss (primary): geometric mean [95% CI]"] == want


def test_test_accuracy_counts_and_k_hat_alpha(ans):
    for arm, final in (("derived", DERIVED), ("adam-cosine", COSINE), ("dead", DEAD)):
        assert _row(ans, arm)["test acc: mean"] == f"{100 * np.mean(final['final_test_acc']):.2f}%"
    assert _row(ans, "dead")["collapsed / failed"] == "6 / 0 of 6"
    assert _row(ans, "adam-cosine")["collapsed / failed"] == "0 / 0 of 6"
    d = _row(ans, "derived")
    assert d["K_hat"] == f"{_g3(np.mean(K_HATS))} ({_g3(min(K_HATS))}-{_g3(max(K_HATS))})"
    assert d["alpha"] == f"{_g3(np.mean(ALPHAS))} ({_g3(min(ALPHAS))}-{_g3(max(ALPHAS))})"
    assert _row(ans, "adam-cosine")["K_hat"] == "-" and _row(ans, "dead")["alpha"] == "-"
    assert d["tuning device-s (1)"] == f"{_g3(sum(KHAT_SECONDS))} (K_hat, 6 estimates)"
    search = sum(tr if tr is not None else w for w, tr, _ in SEARCH.values())
    assert _row(ans, "adam-cosine")["tuning device-s (1)"] == f"{_g3(search)} (search, 4 trials)"
    # dead's one search run has no training clock: its wall time, 0.7 s
    assert _row(ans, "dead")["tuning device-s (1)"] == "0.7 (search, 1 trial)"


def test_verdicts_are_the_comparison_tables_and_agree_with_a_hand_test(ans, table):
    t = table.set_index("arm")
    m = "final_val_loss"
    for arm in ("adam-cosine", "dead"):
        assert _row(ans, arm)["verdict vs derived"] == t.loc[arm, f"{m}_verdict"]
    # by hand: dead collapsed on all 6 seeds, the reference is valid -> worse, without a test
    assert _row(ans, "dead")["verdict vs derived"] == "worse (collapsed 6 of 6)"
    # adam-cosine against derived: paired t-test on log differences; alone in its Holm family
    p = stats.ttest_rel(np.log(COSINE["objective"]), np.log(DERIVED["objective"])).pvalue
    diff = np.mean(np.log(COSINE["objective"]) - np.log(DERIVED["objective"]))
    want = ("worse" if diff > 0 else "better") if p < 0.05 else "no significant difference"
    assert _row(ans, "adam-cosine")["verdict vs derived"] == want == "worse"
    assert _row(ans, "derived")["verdict vs derived"] == "reference"


def test_sentences_say_collapse_verdicts_and_the_derived_step(ans):
    text = " ".join(ans.sentences)
    assert f"re-run on {len(FINAL_SEEDS)} fresh final seeds" in text
    assert "against the reference arm 'derived'" in text
    dead_acc = f"{100 * np.mean(DEAD['final_test_acc']):.2f}%"
    assert f"'dead' collapsed on 6 of 6 final seeds (test accuracy {dead_acc})" in text
    assert "'adam-cosine' worse; 'dead' worse (collapsed 6 of 6)" in text
    assert "Best arm on val loss among those with no collapsed or failed run: 'derived'." in text
    assert f"alpha = sqrt(2 L(w0) / (K_hat T)) = {_g3(np.mean(ALPHAS))}" in text
    assert f"from K_hat = {_g3(np.mean(K_HATS))}" in text and "mean over 6 final runs" in text
    notes = " ".join(ans.notes)
    assert "training time" in notes and "K_hat estimate" in notes
    assert "Not counted: the search runs' evaluation" in notes
    evals = sum(e for _, _, e in SEARCH.values() if e is not None)
    assert f"({_g3(evals)} device-s in all)" in notes
    # adam-cosine's run 3 and dead's one search run were recorded without a training clock
    unclocked = sum(tr is None for _, tr, _ in SEARCH.values()) + 1
    assert f"{unclocked} search run(s) recorded without a training clock are charged their wall time" in notes


def test_derived_steps_reads_the_stored_runs(study):
    (s,) = derived_steps(study).values()
    assert s.arm == "derived" and s.runs == 6 and s.phase == "final"
    assert s.k_hat == pytest.approx(np.mean(K_HATS)) and s.k_hat_min == min(K_HATS)
    assert s.alpha == pytest.approx(np.mean(ALPHAS)) and s.alpha_max == max(ALPHAS)


# -- the report: Answer first ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def report(study, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("answer-report")
    write_report(study, out, importance=False, figures=False)
    return out


def test_report_opens_with_the_answer_then_claims_then_how_to_read(report):
    md = (report / "report.md").read_text()
    heads = [ln for ln in md.splitlines() if ln.startswith("## ")]
    assert heads[:3] == ["## Answer", "## Claims", "## How to read this report"]
    assert md.index("| arm | val loss (primary)") < md.index("## Claims")
    page = (report / "report.html").read_text()
    section = page[page.index('<section id="answer">') : page.index("</section>")]
    assert "<table>" in section and "<th>K_hat</th>" in section and "<th>alpha</th>" in section
    assert "<script" not in page  # the report stays script-free


def test_answer_on_the_first_screen_in_chromium(report, tmp_path):
    seen = first_screen(report / "report.html", tmp_path)
    assert seen["width"] == WINDOW[0] and 0 < seen["height"] <= WINDOW[1]
    assert seen["table"] is not None and seen["table"]["bottom"] <= seen["height"], seen["table"]
    texts = seen["texts"]
    assert "Answer" in texts and "K_hat" in texts and "alpha" in texts
    assert f"{_g3(np.mean(K_HATS))} ({_g3(min(K_HATS))}-{_g3(max(K_HATS))})" in texts
    assert f"{_g3(np.mean(ALPHAS))} ({_g3(min(ALPHAS))}-{_g3(max(ALPHAS))})" in texts
    assert {"derived (ref)", "adam-cosine", "dead"} <= set(texts)


def test_cost_cell_of_an_arm_with_search_and_k_hat():
    from lyaptune.analysis.answer import _cost

    r = {"search_runs": 3, "search_trials": 3, "search_device_s": 1.5, "khat_runs": 2, "khat_s": 4.25}
    r["tuning_device_s"] = 1.5 + 4.25
    assert _cost(pd.Series(r)) == "5.75 = search 1.5 (3 trials) + K_hat 4.25 (2 estimates)"
    nothing = {**r, "search_runs": 0, "khat_runs": 0, "khat_s": 0.0, "tuning_device_s": 0.0}
    assert _cost(pd.Series(nothing)) == "0 (nothing tuned)"


def test_without_a_reference_there_are_no_verdicts(study):
    a = answer(study, compare(study, reference=None))
    assert a.header[4] == "verdict" and {r[4] for r in a.rows} == {"-"}
    assert "no reference arm, so no verdicts" in a.sentences[0]
    assert not any(s.startswith("Against ") for s in a.sentences)
