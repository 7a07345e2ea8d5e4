"""papers/003 Figures 2, 4, 8, 9 and 11: the derived constant step size against fixed step sizes.

The same three panels as ``fig_gradnorm_vs_schedulers.py`` (gradient norm on a log scale, training
loss, test accuracy against epoch) for the arms with a ``constant`` schedule (e.g. the grid
{1e-2, 1e-3, 1e-4, 1e-5}) and the derived-constant arm.

    python analysis/fig_constant_steps.py runs/fc3-constant [--out figures/]
"""

from __future__ import annotations

import argparse
import sys

from lyaptune.analysis import load_study, resolve_reference, save_figure, study_curves_figure
from lyaptune.errors import UserError


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run_dir")
    p.add_argument("--out", default=".", help="output directory (default: .)")
    p.add_argument("--reference", default="derived")
    p.add_argument(
        "--arms", nargs="*", default=None, help="arms to draw (default: constant and derived-constant)"
    )
    args = p.parse_args(argv)
    try:
        study = load_study(args.run_dir)
        ref = resolve_reference(study, args.reference)
        arms = args.arms or study.arms_by_schedule(include=("constant", "derived-constant"))
        fig = study_curves_figure(study, arms=arms, reference=ref)
        for path in save_figure(fig, f"{args.out.rstrip('/')}/constant_steps"):
            print(path)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
