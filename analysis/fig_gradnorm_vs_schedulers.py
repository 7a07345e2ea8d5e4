"""papers/003 Figures 1, 3, 6, 7 and 10: the derived constant step size against the step-size schedules.

Three panels per run, as in the paper: gradient norm (log scale), training loss and test accuracy
against epoch, one curve for every schedule arm (not only the best one) beside the derived step in
black; an arm that is a grid (e.g. a schedule at several base lrs) gets one curve per grid point, as
``fig_constant_steps.py`` draws the constant steps. Each curve is the mean over its seeds with a min-max
band: final runs for an arm with a fixed or tuned configuration, search runs for a grid point.

    python analysis/fig_gradnorm_vs_schedulers.py runs/003_fc_fullbatch_schedulers_d1 [--out figures/]

Writes ``gradnorm_vs_schedulers.png`` and ``.svg`` and prints their paths. The drawing is
:func:`lyaptune.analysis.paper_figures.schedulers_figure`, the one ``lyaptune report`` uses.
"""

from __future__ import annotations

import argparse
import os
import sys

from lyaptune.analysis import load_study, save_figure
from lyaptune.analysis.paper_figures import schedulers_figure
from lyaptune.errors import UserError


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run_dir")
    p.add_argument("--out", default=".", help="output directory (default: .)")
    p.add_argument(
        "--arms", nargs="*", default=None, help="arms to draw (default: every non-constant schedule)"
    )
    args = p.parse_args(argv)
    try:
        fig = schedulers_figure(load_study(args.run_dir), args.arms)
        for path in save_figure(fig, os.path.join(args.out, "gradnorm_vs_schedulers")):
            print(path)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
