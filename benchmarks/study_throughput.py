"""Study throughput: N small trials as a bare loop vs through ``lyaptune run`` (Ray Tune + Optuna),
and in population mode.

    python benchmarks/study_throughput.py                          # GPU defaults: FC 3x1000, 100 epochs, N=32
    python benchmarks/study_throughput.py --width 128 --epochs 20  # a CPU-sized variant

Prints wall seconds and trials per minute for
  (a) a bare sequential loop in one process calling ``run_trial`` (data loaded once),
  (b) ``lyaptune run`` on a grid spec with the same N configurations, population mode off,
  (c) ``lyaptune run`` with population mode on (the grid trains as vmapped populations),
  (d) ``run_population`` called directly (no Ray),
and the ratios (b)/(a), (c)/(a), (a)/(d). (b) and (c) include starting Ray and the CLI, as a user sees it.
Data: mini-MNIST from --data-root when present, else a synthetic stand-in of the same shape (said so).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=32)
    ap.add_argument("--depth", type=int, default=3)
    ap.add_argument("--width", type=int, default=1000)
    ap.add_argument("--epochs", type=int, default=100)
    ap.add_argument("--data-root", default=str(REPO.parent / "shared" / "data"))
    ap.add_argument("--device", default="auto")
    ap.add_argument("--max-concurrent", type=int, default=None, help="default: 4 per GPU, else CPU count")
    ap.add_argument("--gpu-per-trial", type=float, default=0.25)
    ap.add_argument("--population-size", type=int, default=256)
    ap.add_argument("--skip", default="", help="comma list of parts to skip: a,b,c,d")
    args = ap.parse_args()

    from lyaptune.data import load_dataset
    from lyaptune.errors import DataError
    from lyaptune.population import run_population
    from lyaptune.train import TrialConfig, resolve_device, run_trial

    device = resolve_device(args.device)
    dataset, dataset_args, data_root = "mini-mnist", {}, args.data_root
    try:
        load_dataset("mini-mnist", data_root=data_root, validation_fraction=0.1, device=device)
    except DataError:
        dataset, data_root = "synthetic", None
        dataset_args = {"n_train": 5500, "n_test": 1000, "input_shape": [1, 28, 28], "num_classes": 10}
        print(f"mini-MNIST not found under {args.data_root}: using a synthetic stand-in of the same shape")
    lrs = [float(x) for x in np.geomspace(1e-4, 1e-2, args.trials)]
    task = dict(
        dataset=dataset,
        dataset_args=dataset_args,
        data_root=data_root,
        model="fc",
        model_args={"depth": args.depth, "width": args.width},
        epochs=args.epochs,
        batch_size="full",
        validation_fraction=0.1,
        device=args.device,
    )
    configs = [TrialConfig(**task, optimizer="adam", optimizer_args={"lr": lr}) for lr in lrs]
    gpu = device.type == "cuda"
    skip = set(args.skip.split(","))
    print(
        f"device={device}  trials={args.trials}  model=fc {args.depth}x{args.width}  epochs={args.epochs}  "
        f"dataset={dataset}  torch={torch.__version__}"
    )
    times: dict[str, float] = {}

    def show(label: str, seconds: float) -> None:
        print(f"{label:34s} {seconds:8.2f} s  {60 * args.trials / seconds:8.1f} trials/min", flush=True)

    if "a" not in skip:
        run_trial(configs[0])  # warm-up: imports, data cache, CUDA context
        t0 = time.perf_counter()
        for c in configs:
            run_trial(c)
        times["a"] = time.perf_counter() - t0
        show("(a) bare sequential loop", times["a"])

    def study(population: str) -> float:
        mc = args.max_concurrent or (4 * max(torch.cuda.device_count(), 1) if gpu else 2)
        spec = {
            "name": f"throughput-{population}",
            "task": {k: v for k, v in task.items() if v is not None},
            "objective": {"metric": "val_loss", "mode": "min"},
            "search": {"sampler": "grid", "trials_per_arm": 1, "final_seeds": []},
            "resources": {"cpu": 1, "gpu": args.gpu_per_trial if gpu else 0},
            "max_concurrent": mc,
            "population": population,
            "population_size": args.population_size,
            "arms": [{"name": "adam-lr", "optimizer": "adam", "grid": {"lr": lrs}}],
        }
        with tempfile.TemporaryDirectory() as d:
            path = Path(d) / "spec.yaml"
            path.write_text(yaml.safe_dump(spec))
            t0 = time.perf_counter()
            r = subprocess.run(
                [sys.executable, "-m", "lyaptune.cli", "run", str(path), "--out", str(Path(d) / "runs")],
                capture_output=True,
                text=True,
            )
            wall = time.perf_counter() - t0
            if r.returncode != 0:
                sys.exit(f"lyaptune run failed:\n{r.stdout[-2000:]}\n{r.stderr[-4000:]}")
        return wall

    if "b" not in skip:
        times["b"] = study("off")
        show("(b) lyaptune run, one trial each", times["b"])
    if "c" not in skip:
        times["c"] = study("on")
        show("(c) lyaptune run, population", times["c"])
    if "d" not in skip:
        run_population(configs[:2])  # warm-up
        t0 = time.perf_counter()
        for i in range(0, len(configs), args.population_size):
            run_population(configs[i : i + args.population_size])
        times["d"] = time.perf_counter() - t0
        show("(d) run_population, no Ray", times["d"])
    if "a" in times:
        for k, label in (("b", "(b)/(a)"), ("c", "(c)/(a)")):
            if k in times:
                print(f"{label} = {times[k] / times['a']:.2f}")
        if "d" in times:
            print(f"population speed-up (a)/(d) = {times['a'] / times['d']:.2f}x")


if __name__ == "__main__":
    main()
