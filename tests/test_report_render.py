"""The report renderers (Jinja2 templates): HTML escaping, Markdown pipe tables, the terminal table.

The hostile-text test writes a real report of a synthetic run directory (the real store, ``load_study``
and ``write_report``) and reads it back with a parser: :mod:`html.parser` for the HTML (a name that
were not escaped would open an element; escaped, it is a cell's text, byte for byte) and a pipe-table
reader for the Markdown (every row as many cells as its header).
"""

from __future__ import annotations

import re
from html.parser import HTMLParser
from importlib import resources
from pathlib import Path

import pytest
import tomllib
from test_analysis import COSINE, FINAL_SEEDS, build_run, run_row, write_trials

from lyaptune.analysis import load_study, write_report
from lyaptune.analysis.report import render_markdown_table, render_text_table

REPO = Path(__file__).resolve().parents[1]

HOSTILE_ARM = '<script>alert("arm")<b>&amp;'
HOSTILE_MESSAGE = "</td></tr></table><script>alert('message')</script><img src=x onerror=alert(1)> | a\\|b"


class _Page(HTMLParser):
    """Every start tag, and the text of every table cell, by table (header cells, then body rows)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.tables: list[dict] = []
        self._cell: list[str] | None = None
        self._row: list[str] | None = None
        self.title = ""
        self._in_title = False

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        if tag == "table":
            self.tables.append({"head": [], "rows": []})
        elif tag == "tr":
            self._row = []
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "title":
            self._in_title = True

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None and self._row is not None:
            self._row.append("".join(self._cell))
            self._cell = None
        elif tag == "tr" and self._row is not None:
            t = self.tables[-1]
            if t["head"] or not self._row:
                t["rows"].append(self._row)
            else:
                t["head"] = self._row
            self._row = None
        elif tag == "title":
            self._in_title = False

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)
        if self._in_title:
            self.title += data


def _pipe_cells(line: str) -> list[str]:
    """The cells of a GitHub pipe-table line (``\\|`` is a literal pipe), unescaped and stripped."""
    assert line.startswith("|") and line.endswith("|") and not line.endswith("\\|"), line
    parts = re.split(r"(?<!\\)\|", line[1:-1])
    return [p.strip().replace("\\|", "|") for p in parts]


def _pipe_tables(md: str) -> list[list[list[str]]]:
    """Every pipe table of ``md``: its header, then its rows (the delimiter line checked and dropped)."""
    tables, block = [], []
    for line in [*md.splitlines(), ""]:
        if line.startswith("|"):
            block.append(line)
            continue
        if block:
            assert len(block) >= 2, block
            assert re.fullmatch(r"\|(\s*:?-{3,}:?\s*\|)+", block[1]), block[1]
            ncols = block[1].count("|") - 1
            rows = [_pipe_cells(block[0]), *(_pipe_cells(b) for b in block[2:])]
            assert all(len(r) == ncols for r in rows), (ncols, [len(r) for r in rows])
            tables.append(rows)
            block = []
    return tables


@pytest.fixture(scope="module")
def hostile_report(tmp_path_factory) -> Path:
    """A synthetic run with an arm (seen only in the trials) and an error message that are HTML."""
    root = build_run(tmp_path_factory.mktemp("runs") / "synth", shuffle=False)
    rows = []
    for i, s in enumerate(FINAL_SEEDS):
        row = run_row(
            "adam-cosine", f"hostile-final-s{s}", "final", s, values={k: v[i] for k, v in COSINE.items()}
        )
        rows.append({**row, "arm": HOSTILE_ARM})
    failed = run_row("adam-cosine", "hostile-search-0-s0", "search", 0, status="errored", number=0)
    rows.append({**failed, "arm": HOSTILE_ARM, "message": HOSTILE_MESSAGE})
    write_trials(root, rows)
    out = root / "report"
    write_report(load_study(root), out, importance=False, figures=False)
    return out


def test_html_report_escapes_hostile_text(hostile_report):
    page = _Page()
    page.feed((hostile_report / "report.html").read_text(encoding="utf-8"))
    page.close()
    # no text became markup: the page's only elements are the template's own
    assert "script" not in page.tags and "img" not in page.tags and "b" not in page.tags
    cells = [c for t in page.tables for r in [t["head"], *t["rows"]] for c in r]
    assert HOSTILE_ARM in cells  # the arm's name is one cell's text, exactly as stored
    assert any(HOSTILE_MESSAGE in c for c in cells)
    for t in page.tables:  # every row of every table as wide as its header
        assert t["head"] and all(len(r) == len(t["head"]) for r in t["rows"]), t["head"]
    assert page.title == "lyaptune report: synth"


def test_markdown_report_tables_are_pipe_tables(hostile_report):
    md = (hostile_report / "report.md").read_text(encoding="utf-8")
    tables = _pipe_tables(md)
    assert len(tables) >= 4  # claims/outcomes, differences, cost, status at least
    cells = [c for t in tables for r in t for c in r]
    assert HOSTILE_ARM in cells
    assert any(HOSTILE_MESSAGE in c for c in cells)
    assert md.endswith("\n") and not md.endswith("\n\n")


def test_markdown_table_cells_survive_pipes_and_newlines():
    header = ["arm", "note | with pipe"]
    rows = [["a|b", "two\nlines"], ["", "x"]]
    text = render_markdown_table(header, rows)
    lines = text.split("\n")
    assert lines[1] == "|---|---|" and len(lines) == 4
    assert [_pipe_cells(ln) for ln in (lines[0], *lines[2:])] == [
        ["arm", "note | with pipe"],
        ["a|b", "two lines"],
        ["", "x"],
    ]


def test_text_table_aligns_columns():
    text = render_text_table(["arm", "acc"], [["derived", "0.91"], ["sgd", "0.5"]])
    # hand-aligned: column 1 is 7 wide ("derived"), two spaces, column 2 is 4 wide ("0.91")
    assert text == "arm      acc\n-------  ----\nderived  0.91\nsgd      0.5"
    assert render_text_table(["a", "b"], []) == "a  b\n-  -"


def test_templates_are_package_data():
    pkg = resources.files("lyaptune.analysis") / "templates"
    names = sorted(p.name for p in pkg.iterdir() if p.name.endswith(".j2"))
    assert names == ["report.html.j2", "report.md.j2", "table.md.j2"]
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    globs = pyproject["tool"]["setuptools"]["package-data"]["lyaptune.analysis"]
    assert all(any(Path("templates", n).match(g) for g in globs) for n in names), globs


def test_claims_section_puts_the_papers_claims_before_our_extensions():
    import math

    from lyaptune.analysis.claims import ClaimComparison, ClaimResult
    from lyaptune.analysis.report import claims_blocks

    d = [math.log(0.5), math.log(0.6), math.log(0.55)]
    mean = sum(d) / 3
    comp = ClaimComparison(
        other="adam",
        n=3,
        effect=mean,
        ci_low=mean - 0.2,
        ci_high=mean + 0.2,
        ci_method="t",
        bound=0.0,
        p=0.01,
        p_wilcoxon=0.25,
        p_adj=0.01,
        outcome="claimed",
        scale="log",
        ratio=math.exp(mean),
        ratio_low=math.exp(mean - 0.2),
        ratio_high=math.exp(mean + 0.2),
    )
    common = dict(metric="final_grad_norm", arm="derived", than="adam", direction="lower", margin=0.0)
    ours = ClaimResult(id="ours", text="", verdict="inconclusive", reason="", source="extension", **common)
    paper = ClaimResult(
        id="theirs",
        text="",
        verdict="supported",
        reason="",
        comparisons=(comp,),
        source="paper",
        paper="papers/003",
        place="Figure 2",
        **common,
    )
    blocks = claims_blocks([ours, paper])  # given in the other order
    heads = [b[1] for b in blocks if b[0] == "h3"]
    assert heads[:2] == ["The paper's claims", "Our extensions"]
    tables = [b for b in blocks if b[0] == "table"]
    row = tables[0][2][0]
    assert row[0] == "theirs" and row[1] == "papers/003, Figure 2"
    # a log-scale metric: the ratio derived / adam with its interval, 3 significant digits
    assert row[3].startswith(f"derived / adam: {math.exp(mean):.3g}x [{math.exp(mean - 0.2):.3g}x, ")
    assert "(95%, t, n=3)" in row[3]
    assert tables[1][2][0][:2] == ["ours", "extension"]
