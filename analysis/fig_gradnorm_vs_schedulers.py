"""papers/003 Figures 1, 3, 6, 7 and 10: the derived constant step size against the tuned schedules.

Three panels per run, as in the paper: gradient norm (log scale), training loss and test accuracy
against epoch, for every arm whose schedule is not a plain constant (the derived-constant arm
included), each at its best configuration, mean over the final seeds with a min-max band. Arms with
collapsed runs are drawn dashed and grey.

    python analysis/fig_gradnorm_vs_schedulers.py runs/fc3-schedulers [--out figures/]
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
        "--arms", nargs="*", default=None, help="arms to draw (default: every non-constant schedule)"
    )
    args = p.parse_args(argv)
    try:
        study = load_study(args.run_dir)
        ref = resolve_reference(study, args.reference)
        arms = args.arms or study.arms_by_schedule(exclude=("constant",))
        fig = study_curves_figure(study, arms=arms, reference=ref)
        for path in save_figure(fig, f"{args.out.rstrip('/')}/gradnorm_vs_schedulers"):
            print(path)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
