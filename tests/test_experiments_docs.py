"""experiments/README.md lists every spec with its claims, kept apart by provenance (the paper's, with the
place that makes them, and our extensions), and its departures from the paper (issues 13 and 26); every
claim has a source and every paper claim's place is found verbatim in its paper's text."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from lyaptune.study.spec import resolve_spec_file

REPO = Path(__file__).resolve().parents[1]
EXPERIMENTS = REPO / "experiments"
SPECS = sorted(EXPERIMENTS.glob("*.yaml"))
SECTION = "## Claims and departures from the papers, spec by spec"
#: the papers' text: ``../shared/papers`` beside the checkout, or ``shared/papers`` inside it
PAPERS = next(
    (p for p in (REPO.parent / "shared" / "papers", REPO / "shared" / "papers") if p.is_dir()), None
)


def _paper_text(paper: str) -> str:
    """The text of papers/<paper> (``<PAPERS>/<paper>_*.txt``)."""
    if PAPERS is None:
        pytest.skip("the papers' text (../shared/papers) is not beside this checkout")
    (path,) = sorted(PAPERS.glob(f"{paper}_*.txt"))
    return path.read_text()


def _rows() -> dict[str, list[str]]:
    """The section's table rows by spec file name: ``[paper claims, extensions, departures]``."""
    text = (EXPERIMENTS / "README.md").read_text()
    assert SECTION in text, f"experiments/README.md has no section {SECTION!r}"
    section = text.split(SECTION, 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        m = re.match(r"^\| `([^`]+\.yaml)` \|(.*)\|(.*)\|(.*)\|$", line)
        if m:
            assert m.group(1) not in rows, f"{m.group(1)} is listed twice"
            rows[m.group(1)] = [m.group(i).strip() for i in (2, 3, 4)]
    return rows


def _header(path: Path) -> list[str]:
    lines = path.read_text().splitlines()
    return lines[: next(i for i, x in enumerate(lines) if not x.startswith("#"))]


@pytest.mark.parametrize("path", SPECS, ids=[p.stem for p in SPECS])
def test_every_spec_is_listed_with_each_claim_by_provenance_and_its_departures(path: Path) -> None:
    rows = _rows()
    assert path.name in rows, f"experiments/README.md does not list {path.name}"
    paper_cell, extension_cell, departures_cell = rows[path.name]
    claims = resolve_spec_file(path).get("claims") or []
    assert claims, f"{path.name} states no claim"
    paper_ids = [c["id"] for c in claims if c["source"] == "paper"]
    extension_ids = [c["id"] for c in claims if c["source"] == "extension"]
    assert re.findall(r"`([^`]+)`", paper_cell) == paper_ids, (
        f"{path.name}: paper claims differ from the README"
    )
    assert re.findall(r"`([^`]+)`", extension_cell) == extension_ids, f"{path.name}: extensions differ"
    for c in claims:
        if c["source"] == "paper":
            assert f'`{c["id"]}` (papers/{c["paper"]}: "{c["place"]}")' in paper_cell, c["id"]
    assert len(departures_cell) > 20, f"{path.name}: no departures listed in the README"


@pytest.mark.parametrize("path", SPECS, ids=[p.stem for p in SPECS])
def test_every_claim_has_a_source_and_every_paper_place_is_in_the_paper(path: Path) -> None:
    raw = yaml.safe_load(path.read_text())
    resolved = resolve_spec_file(path).get("claims") or []
    own = raw.get("claims")
    if own is None:  # the claims come from the spec it extends: checked there, and resolved here
        own = resolved
    for c in own:
        assert c.get("source") in ("paper", "extension"), f"{path.name}: claim {c['id']} states no source"
    for c in resolved:
        if c["source"] != "paper":
            continue
        text = _paper_text(c["paper"])
        assert c["place"] in text, (
            f"{path.name}: claim {c['id']}: {c['place']!r} is not in papers/{c['paper']}"
        )


def test_the_papers_central_claims_are_stated():
    """Issue 26's examples: each central claim is present, with the right arms, metric and direction."""

    def claims(name: str) -> list[dict]:
        return resolve_spec_file(EXPERIMENTS / f"{name}.yaml")["claims"]

    vits = claims("001_vits16_rlo_lambda_vs_lifted")
    assert any(
        c["source"] == "paper"
        and (c["arm"], c["than"], c["direction"]) == ("rlo-lambda", "rlo-lifted-eta0.7", "higher")
        for c in vits
    )
    ablation = {
        (c["arm"], c.get("than"), c.get("metric"), c["direction"])
        for c in claims("001_direction_norm_ablation")
    }
    assert ("tanh-norm-off", "sign-norm-off", "final_test_acc", "higher") in ablation
    assert ("tanh-norm-off", "sign-norm-off", "final_train_loss", "lower") in ablation
    assert ("sign-norm-off", None, None, "collapses") in ablation
    for name in (
        "003_fc_fullbatch_constant_steps_d1",
        "003_fc_fullbatch_constant_steps_d3",
        "003_fc_fullbatch_constant_steps_d5",
        "003_fc_minibatch_mnist_constant_steps",
        "003_lenet_fullbatch_constant_steps",
        "003_lenet_minibatch_constant_steps",
        "003_vgg9_cifar10_constant_steps",
        "003_width_variations",
    ):
        gn = [c for c in claims(name) if c["metric"] == "final_grad_norm"]
        assert gn and all(c["grid"] == "each" and c["direction"] == "lower" for c in gn), name
        assert all(c["source"] == "paper" for c in gn), name
    init = [c for c in claims("003_init_study") if c["source"] == "paper"]
    assert [(c["metric"], c["direction"]) for c in init] == [("derived_lr", "equivalent")]
    assert all(c["source"] == "extension" for c in claims("002_expdecay_mnist"))
    sweep = resolve_spec_file(EXPERIMENTS / "001_rlo_lifted_eta_sweep.yaml")
    (grid_arm,) = [a for a in sweep["arms"] if "grid" in a]
    assert 1.0 not in grid_arm["grid"]["eta"]  # eta = 1 is RLO-Lambda, the other arm


@pytest.mark.parametrize("path", SPECS, ids=[p.stem for p in SPECS])
def test_every_header_lists_its_departures_from_the_paper(path: Path) -> None:
    header = _header(path)
    starts = [i for i, line in enumerate(header) if line.startswith("# Departures from the paper:")]
    assert len(starts) == 1, f"{path.name}: the header needs one 'Departures from the paper:' list"
    after = header[starts[0]].removeprefix("# Departures from the paper:").strip()
    following = header[starts[0] + 1] if starts[0] + 1 < len(header) else "#"
    assert after or following.startswith("# - "), f"{path.name}: the departures list is empty"


def test_the_readme_lists_no_spec_that_does_not_exist() -> None:
    assert sorted(_rows()) == [p.name for p in SPECS]
