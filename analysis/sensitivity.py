"""Sensitivity of tuned arms: objective slices, grid responses, PED-ANOVA / fANOVA importance, and
the divergence rate against lr x K_hat.

    python analysis/sensitivity.py runs/lyam-sensitivity [--arms lyam-grid] [--out figures/]
"""

from __future__ import annotations

import argparse
import re
import sys

from lyaptune.analysis import (
    divergence_figure,
    grid_response_figure,
    importance_figure,
    load_study,
    save_figure,
    sensitivity,
    slices_figure,
    study_k_hat,
)
from lyaptune.errors import UserError


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run_dir")
    p.add_argument("--out", default=".", help="output directory (default: .)")
    p.add_argument("--arms", nargs="*", default=None, help="arms to analyse (default: every tuned arm)")
    p.add_argument("--min-trials", type=int, default=10, help="completed trials needed for importances")
    args = p.parse_args(argv)
    try:
        study = load_study(args.run_dir, epochs=False)
        results = [sensitivity(study, a, min_trials=args.min_trials) for a in (args.arms or study.arms)]
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    out = args.out.rstrip("/")
    for s in results:
        for note in s.notes:
            print(f"note: {note}")
        if s.trials.empty:
            continue
        slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", s.arm)
        figs = {
            "slices": slices_figure(s),
            "grid": grid_response_figure(s),
            "importance": importance_figure(s.importance, title=f"{s.arm}: hyperparameter importance"),
        }
        for kind, fig in figs.items():
            if fig is not None:
                for path in save_figure(fig, f"{out}/{kind}_{slug}"):
                    print(path)
        if not s.importance.empty:
            print(f"\n{s.arm}: importance")
            print(
                s.importance.pivot_table(index="param", columns="evaluator", values="importance").to_string()
            )
    div = {s.arm: s.divergence for s in results}
    fig = divergence_figure(div, k_hat=study_k_hat(study.trials))
    if fig is not None:
        for path in save_figure(fig, f"{out}/divergence"):
            print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
