"""Budget curves: best validation objective after k search trials, per tuned arm.

Each arm by the estimator its sampler allows (METHODS.md section 8): the expected best of k trials
drawn without replacement from those run (the exact form; Dodge et al. 2019 draw with replacement;
its band the spread of the best of k, not an uncertainty of the curve) for random / quasi-random /
grid search, the best-so-far in trial order averaged over search repeats for adaptive samplers (TPE,
CMA-ES, GP; one repeat: no spread can be shown). The reference arm's (derived step's) mean final
objective as a line; for each baseline the smallest k at which its own curve matches it, an
optimistic number (a selected best against an unselected mean).

    python analysis/budget_curves.py runs/quickstart [--out figures/] [--failed worst|exclude]
"""

from __future__ import annotations

import argparse
import sys

import pandas as pd

from lyaptune.analysis import (
    budget_curve,
    budget_figure,
    load_study,
    matching_budgets,
    resolve_reference,
    save_figure,
)
from lyaptune.analysis.budget import MATCHING_NOTE
from lyaptune.errors import UserError


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run_dir")
    p.add_argument("--out", default=".", help="output directory (default: .)")
    p.add_argument("--reference", default="auto", help="reference arm (default: the spec's, else derived)")
    p.add_argument(
        "--failed",
        default="worst",
        choices=["worst", "exclude"],
        help="failed trials count as the arm's worst value (default) or are left out",
    )
    args = p.parse_args(argv)
    try:
        study = load_study(args.run_dir, epochs=False)
        ref = resolve_reference(study, args.reference)
        curves = {a: budget_curve(study, a, failed=args.failed) for a in study.arms}
        curves = {a: c for a, c in curves.items() if not c.empty}
        match = matching_budgets(study, ref, failed=args.failed) if ref else None
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if not curves:
        print("no arm has completed search trials")
        return 0
    obj = study.objective
    target = float(match["target"].iloc[0]) if match is not None and len(match) else None
    ks = (
        {}
        if match is None
        else {r["arm"]: None if pd.isna(r["k"]) else int(r["k"]) for _, r in match.iterrows()}
    )
    fig = budget_figure(
        curves, metric=obj["metric"], mode=obj["mode"], reference=ref, target=target, matches=ks
    )
    for path in save_figure(fig, f"{args.out.rstrip('/')}/budget_curves"):
        print(path)
    if match is not None and len(match):
        print(f"\ntrials needed to match {ref} (mean final {obj['metric']} {target:.4g}):")
        for _, r in match.iterrows():
            k = "not matched" if pd.isna(r["k"]) else f"k = {int(r['k'])}"
            print(f"  {r['arm']}: {k} of {r['budget']} trials ({r['method']})")
        print(f"  ({MATCHING_NOTE})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
