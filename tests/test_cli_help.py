"""Every ``--help`` reads like a well-kept tool's (issue 24): every option line has text and states its
default, the top-level help has no raw reST markup, ``trial`` states its default network, and a run
directory's parent given as RUN_DIR is answered with the run directory it holds."""

from __future__ import annotations

import argparse
import re
import subprocess
import sys

import pytest

from lyaptune.cli import build_parser, main


def _parsers() -> list[tuple[str, argparse.ArgumentParser]]:
    parser = build_parser()
    subs = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return [("lyaptune", parser), *((f"lyaptune {n}", p) for n, p in subs.choices.items())]


PARSERS = _parsers()
IDS = [name for name, _ in PARSERS]


def _help_of(capsys, monkeypatch, name: str) -> str:
    monkeypatch.setenv("COLUMNS", "80")
    argv = [*name.split()[1:], "--help"]
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 0
    return capsys.readouterr().out


def _options(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [
        a
        for a in parser._actions
        if not isinstance(a, (argparse._HelpAction, argparse._SubParsersAction))
        and a.help != argparse.SUPPRESS
    ]


def test_every_subcommand_is_walked():
    assert set(IDS) >= {
        "lyaptune",
        *(
            f"lyaptune {c}"
            for c in ("trial", "lipschitz", "list", "run", "resume", "status", "report", "compare", "compact")
        ),
    }


@pytest.mark.parametrize("name,parser", PARSERS, ids=IDS)
def test_every_option_line_has_text(capsys, monkeypatch, name, parser):
    """In the rendered help, each option's line (or the line under it) carries its description."""
    text = _help_of(capsys, monkeypatch, name)
    lines = text.splitlines()
    formatter = parser._get_formatter()
    for action in _options(parser):
        invocation = formatter._format_action_invocation(action)
        at = [i for i, ln in enumerate(lines) if ln.startswith("  " + invocation)]
        assert at, f"{name}: {invocation!r} not in its help:\n{text}"
        line = lines[at[0]]
        rest = line[2 + len(invocation) :]
        nxt = lines[at[0] + 1] if at[0] + 1 < len(lines) else ""
        has_text = bool(rest.strip()) or bool(re.match(r"^ {6,}\S", nxt))
        assert has_text, f"{name}: {invocation!r} has no help text:\n{line}\n{nxt}"


@pytest.mark.parametrize("name,parser", PARSERS, ids=IDS)
def test_every_option_states_its_default(name, parser):
    """An option that takes a value says what it is when not given; a positional says what it is."""
    for action in _options(parser):
        assert action.help and action.help.strip(), f"{name}: {action.dest} has no help"
        takes_value = action.option_strings and action.nargs != 0
        if takes_value:
            assert "default" in action.help.lower(), f"{name}: {action.option_strings[0]}: {action.help!r}"


@pytest.mark.parametrize("name", IDS)
def test_no_raw_restructuredtext_in_help(capsys, monkeypatch, name):
    text = _help_of(capsys, monkeypatch, name)
    assert "``" not in text and ":class:" not in text and ":func:" not in text, text
    if name == "lyaptune":
        assert "`" not in text, text


def test_trial_help_states_the_default_network(capsys, monkeypatch):
    from lyaptune.models import get_model_info

    text = " ".join(_help_of(capsys, monkeypatch, "lyaptune trial").split())
    depth, width = get_model_info("fc").args["depth"], get_model_info("fc").args["width"]
    assert (depth, width) == (3, 1000)
    assert f"--depth DEPTH fc: number of hidden layers (default: {depth})" in text
    assert f"--width WIDTH fc: hidden width h (default: {width})" in text
    # digits: 64 inputs, 10 classes; 3 hidden layers of 1000 with biases, by hand
    params = (64 * 1000 + 1000) + 2 * (1000 * 1000 + 1000) + (1000 * 10 + 10)
    assert params == 2_077_010
    assert f"about {params / 1e6:.2f}M parameters on digits" in text
    assert "default: fc, 3 hidden ReLU layers of width 1000" in text


def test_resume_resources_help_reads_plainly(capsys, monkeypatch):
    text = " ".join(_help_of(capsys, monkeypatch, "lyaptune resume").split())
    assert "replacing the override" not in text
    assert (
        "--resources cpu=N,gpu=G per-trial resources, e.g. cpu=1,gpu=0 to run a GPU spec on CPUs "
        "(default: the --resources the study ran with, else the spec's)"
    ) in text


@pytest.mark.parametrize("command", ["resume", "status", "report", "compare", "compact"])
def test_the_parent_of_a_run_directory_suggests_it(tmp_path, command):
    """``lyaptune resume runs2`` (the ``--out`` folder): one line naming ``runs2/quickstart``, exit 2."""
    study = tmp_path / "runs2" / "quickstart"
    study.mkdir(parents=True)
    (study / "spec.yaml").write_text("name: quickstart\n")
    (tmp_path / "runs2" / "quickstart-compare").mkdir()  # a folder without spec.yaml is not suggested
    r = subprocess.run(
        [sys.executable, "-m", "lyaptune.cli", command, "runs2"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert r.stderr.strip() == (
        "lyaptune: error: runs2 is not a run directory; it holds 1 (an --out folder): "
        "did you mean 'runs2/quickstart'?"
    )
    assert r.stdout == ""


def test_the_parent_of_several_run_directories_lists_them(tmp_path, capsys):
    for name in ("b", "a"):
        (tmp_path / "runs" / name).mkdir(parents=True)
        (tmp_path / "runs" / name / "spec.yaml").write_text(f"name: {name}\n")
    parent = str(tmp_path / "runs")
    assert main(["status", parent]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        f"lyaptune: error: {parent} is not a run directory; it holds 2 (an --out folder): did you mean one "
        f"of '{parent}/a', '{parent}/b'?"
    )
