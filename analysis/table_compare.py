"""The comparison table of one or several runs (e.g. the same study on several datasets).

Per arm over the final seeds: mean, sd and a 95% Student-t interval (with its n) of the spec's primary
metric(s) and of final test accuracy, final training loss, final and minimum gradient norm and wall
time; the paired difference to the reference arm with its t interval, the paired t-test's raw and
Holm-adjusted p and the verdict (better / worse / no significant difference at adjusted p < 0.05);
the tuning cost in device-seconds; collapsed runs; the rank by the primary metric at the final epoch
(collapsed arms unranked).

    python analysis/table_compare.py runs/fc1 runs/fc3 runs/fc5 [--csv table.csv] [--markdown]
"""

from __future__ import annotations

import argparse
import sys

from lyaptune.analysis import compare, format_compare_tables, load_study
from lyaptune.analysis.report import render_markdown_table, render_text_table
from lyaptune.errors import UserError


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    p.add_argument("--reference", default="auto", help="reference arm (default: the spec's, else derived)")
    p.add_argument("--csv", default=None, help="write the full table as CSV")
    p.add_argument("--markdown", action="store_true")
    args = p.parse_args(argv)
    try:
        table = compare([load_study(d, epochs=False) for d in args.run_dirs], args.reference)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    render = render_markdown_table if args.markdown else render_text_table
    for name, (head, rows) in format_compare_tables(table).items():
        print(f"\n{name}:")
        print(render(head, rows))
    if args.csv:
        table.to_csv(args.csv, index=False)
        print(f"\nfull table: {args.csv}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
