"""Part d: the papers/003 study (``experiments/003_fc_fullbatch_constant_steps_d3.yaml``), cut to fit.

The spec is read as committed and cut (every cut is listed in the JSON's ``details.cuts``):
  GPU: K_hat from 10 weight samples instead of 100; 2 final seeds (3, 4) instead of 5; the rest as
       committed (FC 3x1000, 100 full-batch epochs, search seeds 0-2, the four constant steps);
  toy: FC 2x32, 3 epochs, K_hat from 2 samples, search seed 0, final seed 1, constant steps 1e-2 and
       1e-3, 1 CPU and no GPU per trial, 2 at a time.
Then ``lyaptune run`` and ``lyaptune report`` (both in a subprocess, as a user runs them), and from the
run directory: K_hat and the derived step alpha (each derived run's info), and per arm and phase the
median final gradient norm, training loss, test accuracy and the collapsed runs (METHODS.md section 8).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from benchmarks.gpu.common import REPO, Part, arguments, data_root, run_command

SPEC = REPO / "experiments" / "003_fc_fullbatch_constant_steps_d3.yaml"


def cut_spec(spec: dict[str, Any], toy: bool, root: str) -> tuple[dict[str, Any], list[str]]:
    """The spec cut to fit the suite, and one line per cut."""
    s = json.loads(json.dumps(spec))
    cuts = []
    s["name"] = f"{spec['name']}_suite"
    s["task"]["data_root"] = root
    if s.pop("claims", None):
        cuts.append("claims left out (the suite reports the figures; the claims' verdicts need all seeds)")
    derived = [a for a in s["arms"] if a.get("schedule") == "derived-constant"]
    grid = [a for a in s["arms"] if "grid" in a]

    def lipschitz(samples: int) -> None:
        for a in derived:
            was = a.setdefault("lipschitz", {}).get("samples")
            a["lipschitz"]["samples"] = samples
            cuts.append(f"arm {a['name']}: K_hat from {samples} weight samples instead of {was}")

    if not toy:
        lipschitz(10)
        was = s["search"]["final_seeds"]
        s["search"]["final_seeds"] = was[:2]
        cuts.append(f"final seeds {was[:2]} instead of {was}")
        return s, cuts
    s["task"]["model_args"] = {"depth": 2, "width": 32}
    cuts.append(f"model_args {{depth: 2, width: 32}} instead of {spec['task'].get('model_args')}")
    s["task"]["epochs"] = 3
    cuts.append(f"3 epochs instead of {spec['task']['epochs']}")
    lipschitz(2)
    s["search"]["seeds"], s["search"]["final_seeds"] = [0], [1]
    cuts.append(
        f"search seeds [0] and final seeds [1] instead of {spec['search'].get('seeds')} and "
        f"{spec['search']['final_seeds']}"
    )
    for a in grid:
        was = a["grid"]["lr"]
        a["grid"]["lr"] = was[:2]
        cuts.append(f"arm {a['name']}: lr grid {was[:2]} instead of {was}")
    s["resources"], s["max_concurrent"] = {"cpu": 1, "gpu": 0}, 2
    cuts.append("1 CPU and no GPU per trial, 2 at a time")
    return s, cuts


def results(run_dir: Path) -> dict[str, Any]:
    """K_hat, alpha and per arm / phase medians and collapse counts from the run directory."""
    import pandas as pd

    from lyaptune.analysis.collapse import classify_collapse
    from lyaptune.analysis.load import parse_json_column
    from lyaptune.store import RunStore

    trials = RunStore(str(run_dir)).trials()
    trials = classify_collapse(trials)
    infos = parse_json_column(trials["info_json"])
    k_hat = [i["k_hat"] for i in infos if "k_hat" in i]
    alpha = [i["derived_lr"] for i in infos if "derived_lr" in i]
    arms = []
    for (arm, phase), g in trials.groupby(["arm", "phase"], sort=True):
        done = g[g["status"] == "completed"]
        row = {"arm": arm, "phase": phase, "runs": len(g), "completed": len(done)}
        for col in ("final_grad_norm", "final_train_loss", "final_test_acc"):
            row[col] = float(pd.to_numeric(done[col], errors="coerce").median()) if len(done) else None
        row["collapsed"] = int(done["collapsed"].sum())
        row["collapse_reasons"] = sorted({r for r in done["collapse_reason"] if r})
        arms.append(row)
    return {"k_hat": k_hat, "alpha": alpha, "arms": arms, "runs": len(trials)}


def main(argv: Sequence[str] | None = None) -> None:
    args = arguments(__doc__, argv)
    with Part("d_paper003", args.out, args.budget, args.toy) as part:
        spec, cuts = cut_spec(yaml.safe_load(SPEC.read_text()), args.toy, data_root())
        work = Path(args.out) / "d_runs"
        work.mkdir(parents=True, exist_ok=True)
        path = work / "spec.yaml"
        path.write_text(yaml.safe_dump(spec, sort_keys=False))
        part.details.update(spec=str(SPEC.relative_to(REPO)), cuts=cuts)
        for c in cuts:
            print(f"cut: {c}")

        t0 = time.perf_counter()
        cmd = [sys.executable, "-m", "lyaptune.cli", "run", str(path), "--out", str(work)]
        run_s = run_command(cmd, part.remaining() - 30, work / "run.log")
        part.figure("study_wall_s", run_s)
        run_dir = work / spec["name"]
        r = results(run_dir)
        part.details.update(r)
        part.figure("runs", r["runs"])
        if r["k_hat"]:
            part.figure("k_hat", max(r["k_hat"]))
            part.figure("alpha", max(r["alpha"]))
        for row in r["arms"]:
            key = f"{row['arm']}_{row['phase']}".replace("-", "_")
            for col in ("final_grad_norm", "final_train_loss", "final_test_acc"):
                if row[col] is not None:
                    part.figure(f"{key}_{col}", row[col])
            print(
                f"{row['arm']:14s} {row['phase']:7s} {row['completed']}/{row['runs']} runs  grad norm "
                f"{row['final_grad_norm']:.4g}  train loss {row['final_train_loss']:.4g}  test acc "
                f"{row['final_test_acc']:.4g}  collapsed {row['collapsed']}"
            )

        part.check(10, "lyaptune report")
        cmd = [sys.executable, "-m", "lyaptune.cli", "report", str(run_dir), "--format", "md"]
        report_s = run_command(cmd, part.remaining() - 2, work / "report.log")
        part.figure("report_s", report_s)
        part.figure("wall_s", time.perf_counter() - t0)
        md = sorted(Path(run_dir, "report").glob("*.md"))
        part.details["report"] = [str(p) for p in md]


if __name__ == "__main__":
    main()
