"""Part b: study throughput, N trials of FC 3x1000 on mini-MNIST, 100 full-batch epochs (Adam, N steps).

For N = 16 and 64 (toy: N = 4, FC 2x32, 3 epochs), the wall seconds of
  bare        a sequential loop in this process calling ``run_trial`` (data loaded once, after a warm-up),
  lyaptune    ``lyaptune run`` on a grid spec of the same N configurations, population mode off,
              0.25 GPU per trial (4 trials per GPU) on CUDA,
  population  ``lyaptune run`` with population mode on (the grid trains as vmapped populations),
as ``benchmarks/study_throughput.py`` measures them; the two ``lyaptune run`` figures include starting
Ray and the CLI, as a user sees them. Goals: lyaptune <= 1.5 x bare; population >= 5 x faster than bare.
An N whose estimated time (scaled from the smaller N) does not fit the budget left is left out and said so.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from benchmarks.gpu.common import Part, arguments, data_root, run_command


def task(toy: bool) -> tuple[dict[str, Any], str | None]:
    """The task of every trial, and a note when mini-MNIST is missing (a synthetic stand-in is used)."""
    from lyaptune.data import load_dataset
    from lyaptune.errors import DataError

    root = data_root()
    out: dict[str, Any] = dict(
        dataset="mini-mnist",
        data_root=root,
        model="fc",
        model_args={"depth": 2, "width": 32} if toy else {"depth": 3, "width": 1000},
        epochs=3 if toy else 100,
        batch_size="full",
        validation_fraction=0.1,
        device="auto",
    )
    try:
        load_dataset("mini-mnist", data_root=root, validation_fraction=0.1, device="cpu")
    except DataError:
        out.update(
            dataset="synthetic",
            data_root=None,
            dataset_args={"n_train": 5500, "n_test": 1000, "input_shape": [1, 28, 28], "num_classes": 10},
        )
        return out, f"mini-MNIST not found under {root}: a synthetic stand-in of the same shape"
    return out, None


def study_spec(name: str, task_: dict[str, Any], lrs: list[float], population: str, gpu: bool) -> dict:
    """A grid spec of one Adam arm over ``lrs``: one trial per step size, no final seeds."""
    return {
        "name": name,
        "task": {k: v for k, v in task_.items() if v is not None},
        "objective": {"metric": "val_loss", "mode": "min"},
        "search": {"sampler": "grid", "trials_per_arm": 1, "final_seeds": []},
        "resources": {"cpu": 1, "gpu": 0.25 if gpu else 0},
        "max_concurrent": 4 * max(torch.cuda.device_count(), 1) if gpu else 2,
        "population": population,
        "population_size": 256,
        "arms": [{"name": "adam-lr", "optimizer": "adam", "grid": {"lr": lrs}}],
    }


def main(argv: Sequence[str] | None = None) -> None:
    args = arguments(__doc__, argv)
    with Part("b_study_throughput", args.out, args.budget, args.toy) as part:
        from lyaptune.train import TrialConfig, run_trial

        gpu = torch.cuda.is_available()
        task_, missing = task(args.toy)
        if missing:
            part.note(missing)
        sizes = (4,) if args.toy else (16, 64)
        part.details.update(task=task_, sizes=list(sizes), trials_per_gpu=4 if gpu else None)
        if args.toy:
            part.note("toy: N = 4 only (each `lyaptune run` starts Ray, ~20 s on a small CPU)")
        work = Path(args.out) / "b_runs"
        work.mkdir(parents=True, exist_ok=True)

        t_warm = time.perf_counter()
        warm = TrialConfig(**task_, optimizer="adam", optimizer_args={"lr": 1e-3})
        run_trial(warm)  # imports, the data cache, CUDA context
        part.details["warmup_s"] = time.perf_counter() - t_warm

        last: dict[str, float] = {}  # wall seconds of each mode at the last N, to size the next N
        last_n = 0
        for n in sizes:
            lrs = [float(x) for x in np.geomspace(1e-4, 1e-2, n)]
            configs = [TrialConfig(**task_, optimizer="adam", optimizer_args={"lr": lr}) for lr in lrs]
            if last:  # scaled from the last N; a `lyaptune run`'s first ~15 s (Ray, CLI) do not scale
                fixed = {k: 0.0 if k == "bare" else min(v, 15.0) for k, v in last.items()}
                need = sum(fixed[k] + (v - fixed[k]) * n / last_n for k, v in last.items())
                part.check(need, f"N = {n} (bare, lyaptune, population)")

            t0 = time.perf_counter()
            for c in configs:
                run_trial(c)
            bare = time.perf_counter() - t0
            part.figure(f"bare_s_{n}", bare)
            part.figure(f"bare_trials_per_min_{n}", 60 * n / bare)

            walls: dict[str, float] = {}
            for mode, population in (("lyaptune", "off"), ("population", "on")):
                spec = study_spec(f"throughput-{mode}-{n}", task_, lrs, population, gpu)
                path = work / f"{mode}_{n}.yaml"
                path.write_text(yaml.safe_dump(spec))
                cmd = [sys.executable, "-m", "lyaptune.cli", "run", str(path), "--out", str(work)]
                walls[mode] = run_command(cmd, part.remaining() - 5, work / f"{mode}_{n}.log")
                part.figure(f"{mode}_s_{n}", walls[mode])
                part.figure(f"{mode}_trials_per_min_{n}", 60 * n / walls[mode])
            ratio = walls["lyaptune"] / bare
            speedup = bare / walls["population"]
            part.figure(f"lyaptune_x_bare_{n}", ratio)
            part.figure(f"population_speedup_{n}", speedup)
            part.goal(f"lyaptune_x_bare_{n}", "<= 1.5", ratio <= 1.5)
            part.goal(f"population_speedup_{n}", ">= 5", speedup >= 5)
            print(
                f"N={n}: bare {bare:.1f} s, lyaptune {walls['lyaptune']:.1f} s ({ratio:.2f} x bare), "
                f"population {walls['population']:.1f} s ({speedup:.2f} x faster than bare)"
            )
            last, last_n = {"bare": bare, **walls}, n


if __name__ == "__main__":
    main()
