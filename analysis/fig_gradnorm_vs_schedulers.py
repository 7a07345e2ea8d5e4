"""papers/003 Figures 1, 3, 6, 7 and 10: the derived constant step size against the step-size schedules.

Three panels per run, as in the paper: gradient norm (log scale), training loss and test accuracy
against epoch, one curve for every schedule arm (not only the best one) beside the derived step in
black; an arm that is a grid (e.g. a schedule at several base lrs) gets one curve per grid point, as
``fig_constant_steps.py`` draws the constant steps. Each curve is the mean over its seeds with a min-max
band: final runs for an arm with a fixed or tuned configuration, search runs for a grid point.

    python analysis/fig_gradnorm_vs_schedulers.py runs/003_fc_fullbatch_schedulers_d1 [--out figures/]

Writes ``gradnorm_vs_schedulers.png`` and ``.svg`` and prints their paths.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import matplotlib.pyplot as plt  # noqa: E402
from fig_constant_steps import curves_figure, grid_point_curves, save  # noqa: E402

from lyaptune.analysis import Study, load_study  # noqa: E402
from lyaptune.errors import UserError  # noqa: E402


def schedulers_figure(study: Study, arms: Sequence[str] | None = None) -> plt.Figure:
    """papers/003 Figure 1: every step-size schedule arm and the derived step.

    Args:
      study: a loaded study (:func:`lyaptune.analysis.load_study`).
      arms: the arms to draw (default: every arm whose schedule is not a plain ``constant``, the
        derived step included).

    Returns:
      The figure, one line per arm (per grid point for a grid arm) in each panel.
    """
    arms = list(arms) if arms else study.arms_by_schedule(exclude=("constant",))
    curves = grid_point_curves(study, arms)
    return curves_figure(curves, f"{study.name}: derived constant step vs step-size schedules")


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
        for path in save(fig, args.out, "gradnorm_vs_schedulers"):
            print(path)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
