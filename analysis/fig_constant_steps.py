"""papers/003 Figures 2, 4, 8, 9 and 11: the derived constant step size against every constant step.

As papers/003 Figure 2 draws it: three panels against epoch (gradient norm on a log scale, training
loss, test accuracy) with one curve per constant step of the grid (e.g. {1e-2, 1e-3, 1e-4, 1e-5}),
not only the grid's best, beside the derived step alpha = sqrt(2 L(w0) / (K_hat T)) in black. Each
curve is the mean over that configuration's seeds with a min-max band (a single seed: the run itself):
a grid arm's points come from its search runs, any other arm from its final runs.

    python analysis/fig_constant_steps.py runs/003_fc_fullbatch_constant_steps_d1 [--out figures/]

Writes ``constant_steps.png`` and ``constant_steps.svg`` and prints their paths. The drawing is
:func:`lyaptune.analysis.paper_figures.constant_steps_figure`, the one ``lyaptune report`` uses.
"""

from __future__ import annotations

import argparse
import os
import sys

from lyaptune.analysis import load_study, save_figure
from lyaptune.analysis.paper_figures import constant_steps_figure
from lyaptune.errors import UserError


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run_dir")
    p.add_argument("--out", default=".", help="output directory (default: .)")
    p.add_argument(
        "--arms", nargs="*", default=None, help="arms to draw (default: constant and derived-constant)"
    )
    args = p.parse_args(argv)
    try:
        fig = constant_steps_figure(load_study(args.run_dir), args.arms)
        for path in save_figure(fig, os.path.join(args.out, "constant_steps")):
            print(path)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
