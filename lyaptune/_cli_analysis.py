"""Analysis subcommands of the CLI: report, compare."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from lyaptune._termtable import fill, fit_markdown_table, fit_table
from lyaptune.errors import UserError

__all__ = ["add_commands"]


def _add_collapse_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--collapse-loss",
        type=float,
        default=0.05,
        metavar="REL",
        help="a run is collapsed if its final train loss is within REL of L(w0) (default: %(default)s)",
    )
    p.add_argument(
        "--collapse-acc",
        type=float,
        default=2.0,
        metavar="POINTS",
        help="... or its test accuracy within POINTS points of the majority-class rate "
        "(default: %(default)s)",
    )
    p.add_argument(
        "--interval",
        default="t",
        choices=["t", "bca"],
        help="interval of means and differences: t (Student-t) or bca (BCa bootstrap, n >= 20) (default: t)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the BCa bootstrap (default: %(default)s)")


_REFERENCE_HELP = (
    "the arm to compare against, or 'none': the best arm on the search runs' validation objective "
    "(default: the spec's 'reference', else the derived arm, else that best arm)"
)


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register the analysis subcommands (``report``, ``compare``) on the ``lyaptune`` parser."""
    p = sub.add_parser("report", help="write a study's report (Markdown / HTML, figures, tables)")
    p.add_argument("run_dir", help="the run directory (a local path or a pyarrow URI)")
    p.add_argument("--out", default=None, help="report directory (default: RUN_DIR/report)")
    p.add_argument("--format", default="md,html", help="comma-separated formats: md, html (default md,html)")
    p.add_argument("--reference", default="auto", help=_REFERENCE_HELP)
    p.add_argument(
        "--no-importance", action="store_true", help="skip PED-ANOVA / fANOVA importances (default: computed)"
    )
    p.add_argument(
        "--no-figures",
        action="store_true",
        help="write the tables, CSV and JSON but draw no figures, most of a small study's report time "
        "(default: figures drawn)",
    )
    _add_collapse_args(p)
    p.set_defaults(func=_cmd_report)

    p = sub.add_parser(
        "compare",
        help="print the comparison table of one or several runs",
        description="Print the comparison table of one or several run directories, at most 100 columns "
        "wide: a wide table is split into blocks of columns, each naming its rows, and long cells wrap. "
        "--csv writes the full table; with several runs, --out gets the cross-study files.",
    )
    p.add_argument(
        "run_dirs", nargs="+", metavar="RUN_DIR", help="run directories (several: one combined table)"
    )
    p.add_argument("--reference", default="auto", help=_REFERENCE_HELP)
    p.add_argument(
        "--csv",
        default=None,
        metavar="FILE",
        help="also write the full table, every column, as CSV (default: not written)",
    )
    p.add_argument(
        "--out",
        default=None,
        metavar="DIR",
        help="with several runs: where the performance profiles and probabilities of improvement go "
        "(CSV, JSON, figure; default: a folder '<first run>-compare' beside the first run directory)",
    )
    p.add_argument(
        "--markdown",
        action="store_true",
        help="print Markdown tables instead of plain text (default: plain text, at most 100 columns wide)",
    )
    _add_collapse_args(p)
    p.set_defaults(func=_cmd_compare)


def _thresholds(args: argparse.Namespace):
    from lyaptune.analysis import CollapseThresholds

    return CollapseThresholds(loss_rel=args.collapse_loss, acc_points=args.collapse_acc)


def _cmd_report(args: argparse.Namespace) -> int:
    from lyaptune.analysis import load_study, write_report
    from lyaptune.analysis.report import REPORT_FORMATS

    formats = [f.strip().lower() for f in args.format.split(",") if f.strip()]
    for f in formats:
        if f not in REPORT_FORMATS:
            raise UserError(f"--format: unknown report format {f!r}; choices: {', '.join(REPORT_FORMATS)}")
    if not formats:
        raise UserError(f"--format: give at least one of {', '.join(REPORT_FORMATS)}")
    thresholds = _thresholds(args)
    out = args.out
    if out is None:
        if "://" in args.run_dir and not args.run_dir.startswith("file://"):
            raise UserError(f"--out is required for a run directory at a URI ({args.run_dir})")
        out = os.path.join(args.run_dir.removeprefix("file://"), "report")
    study = load_study(args.run_dir)
    files = write_report(
        study,
        out,
        formats,
        reference=args.reference,
        thresholds=thresholds,
        method=args.interval,
        seed=args.seed,
        importance=not args.no_importance,
        figures=not args.no_figures,
    )
    main = [str(p) for p in files if p.name.startswith("report.")]
    print(f"report of {study.name}: {len(files)} files in {out}" + (f" ({', '.join(main)})" if main else ""))
    _print_claims(out)
    return 0


def _print_claims(out: str) -> None:
    """Print the report's Claims section (verdict per claim) from the ``compare.json`` just written."""
    import json

    try:
        claims = json.loads((Path(out) / "compare.json").read_text()).get("claims") or []
    except (OSError, ValueError):
        return
    print("\nClaims:")
    if not claims:
        print("  This spec states no claims.")
    paper = [c for c in claims if c.get("source", "paper") != "extension"]
    ours = [c for c in claims if c.get("source", "paper") == "extension"]
    for c in [*paper, *ours]:
        iv = c.get("interval") or {}
        effect = "-"
        other = c.get("compared_with", "")
        ratio = c.get("ratio") if isinstance(c.get("ratio"), dict) else {}
        if ratio.get("value") is not None:
            lo, hi = ratio.get("low"), ratio.get("high")
            ci = f"[{lo:.3g}x, {hi:.3g}x]" if lo is not None and hi is not None else "[-]"
            effect = f"{c['arm']} / {other}: {ratio['value']:.3g}x {ci} (t on logs, n={iv.get('n', 0)})"
        elif c.get("effect") is not None:
            lo, hi = iv.get("low"), iv.get("high")
            ci = f"[{lo:+.4g}, {hi:+.4g}]" if lo is not None and hi is not None else "[-]"
            effect = f"{c['arm']} - {other}: {c['effect']:+.4g} {ci} (t, n={iv.get('n', 0)})"
        tag = "  [extension]" if c.get("source", "paper") == "extension" else ""
        head = f"{c['id']}: {c['verdict'].upper()}  {c['metric']} {effect}{tag}"
        print(fill(head, indent="  ", more="    "))
        if c.get("reason"):
            print(fill(c["reason"], indent="    "))


def _print_improvement(path: Path, render) -> None:
    """Print P(A beats B) per ordered pair of arms from ``improvement.csv``, rough intervals marked."""
    import pandas as pd

    try:
        poi = pd.read_csv(path)
    except (OSError, ValueError):
        return
    if poi.empty:
        return
    rows = []
    for _, r in poi.iterrows():
        ci = f"[{r['low']:.2f}, {r['high']:.2f}]" if pd.notna(r["low"]) else "[-]"
        mark = f" rough: {int(r['min_runs'])} runs per study (< 5)" if bool(r["rough"]) else ""
        p = f"{r['p_a_beats_b']:.2f}" if pd.notna(r["p_a_beats_b"]) else "-"
        rows.append([str(r["arm_a"]), str(r["arm_b"]), f"{p} {ci}{mark}", str(int(r["n_studies"]))])
    print(
        "\n"
        + fill(
            "P(A beats B) over studies (a collapsed or failed run loses to every valid run; every study "
            "counts; stratified bootstrap interval):"
        )
    )
    print(render(["A", "B", "P(A > B) [95% CI]", "studies"], rows, keys=2))


def _cmd_compare(args: argparse.Namespace) -> int:
    from lyaptune.analysis import compare, load_study
    from lyaptune.analysis.report import format_compare_tables, render_markdown_table

    thresholds = _thresholds(args)
    studies = [load_study(d, epochs=False) for d in args.run_dirs]
    table = compare(studies, args.reference, thresholds=thresholds, method=args.interval, seed=args.seed)

    def render(head, rows, keys=None):
        # the columns naming a row (study, dataset, arm) repeat in every block of a table split to fit
        keys = keys or next((i for i, h in enumerate(head) if h not in ("study", "dataset", "arm")), 1)
        if args.markdown:
            return fit_markdown_table(head, rows, render_markdown_table, keys=keys)
        return fit_table(head, rows, keys=keys)

    tabs = format_compare_tables(table)
    titles = {
        "outcomes": "final-seed runs",
        "differences": "against the reference (log-scale metrics: ratio arm / reference of geometric means; "
        "accuracies: difference in points; p: paired t raw / Holm-adjusted, deciding; Wilcoxon and "
        "sign-flip: robustness only)",
        "cost": "tuning cost (device-seconds) and rank by the primary metric at the final epoch",
    }
    for key, (head, rows) in tabs.items():
        if key == "differences" and not table["is_reference"].any():
            continue
        print(("\n" if key != "outcomes" else "") + fill(f"{titles[key]}:"))
        print(render(head, rows))
    print(
        "\n"
        + fill(
            f"collapsed: {thresholds.describe()}. Only arms whose final runs all completed and none "
            "collapsed are t-tested and ranked; the others read 'worse (collapsed k of n)', 'better "
            "(reference collapsed k of n)' or 'not tested (collapsed k of n, failed j of n)'. "
            "'better'/'worse' from the test only at Holm-adjusted p < 0.05.",
        )
    )
    if args.csv:
        try:
            table.to_csv(args.csv, index=False)
        except OSError as err:
            raise UserError(f"--csv: cannot write {args.csv}: {err.strerror or err}") from err
        print(f"full table: {args.csv}")
    if len(studies) > 1:
        from lyaptune.analysis.report import write_cross_study

        out = args.out
        if out is None:
            first = args.run_dirs[0].removeprefix("file://").rstrip("/")
            if "://" in first:
                raise UserError(f"--out is required when the first run directory is a URI ({first})")
            out = os.path.join(os.path.dirname(os.path.abspath(first)), os.path.basename(first) + "-compare")
        files = write_cross_study(studies, table, out, seed=args.seed, thresholds=thresholds)
        _print_improvement(Path(out) / "improvement.csv", render)
        print(f"cross-study answers ({len(studies)} studies):")
        for f in files:
            print(f"  {f}")
    return 0
