"""experiments/README.md lists every spec with its claims and its departures from the paper (issue 13)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from lyaptune.study.spec import resolve_spec_file

REPO = Path(__file__).resolve().parents[1]
EXPERIMENTS = REPO / "experiments"
SPECS = sorted(EXPERIMENTS.glob("*.yaml"))
SECTION = "## Claims and departures from the papers, spec by spec"


def _rows() -> dict[str, list[str]]:
    """The section's table rows by spec file name: ``[claims cell, departures cell]``."""
    text = (EXPERIMENTS / "README.md").read_text()
    assert SECTION in text, f"experiments/README.md has no section {SECTION!r}"
    section = text.split(SECTION, 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        m = re.match(r"^\| `([^`]+\.yaml)` \|(.*)\|(.*)\|$", line)
        if m:
            assert m.group(1) not in rows, f"{m.group(1)} is listed twice"
            rows[m.group(1)] = [m.group(2).strip(), m.group(3).strip()]
    return rows


def _header(path: Path) -> list[str]:
    lines = path.read_text().splitlines()
    return lines[: next(i for i, x in enumerate(lines) if not x.startswith("#"))]


@pytest.mark.parametrize("path", SPECS, ids=[p.stem for p in SPECS])
def test_every_spec_is_listed_with_each_claim_id_and_its_departures(path: Path) -> None:
    rows = _rows()
    assert path.name in rows, f"experiments/README.md does not list {path.name}"
    claims_cell, departures_cell = rows[path.name]
    ids = [c["id"] for c in resolve_spec_file(path).get("claims") or []]
    assert ids, f"{path.name} states no claim"
    listed = re.findall(r"`([^`]+)`", claims_cell)
    assert listed == ids, f"{path.name}: README lists claims {listed}, the spec {ids}"
    assert len(departures_cell) > 20, f"{path.name}: no departures listed in the README"


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
