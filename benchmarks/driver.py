"""The study driver at scale: Optuna journal open time and per-trial ask / tell / record overhead.

    python benchmarks/driver.py   # random sampler and TPE (its default window), 1,000 and 10,000 trials
    python benchmarks/driver.py --runner --sampler random   # the real runner, Ray Tune included
    python benchmarks/driver.py --sampler random --sizes 1000 10000 100000
    python benchmarks/driver.py --sampler tpe --sizes 500 1000 2000

One arm, a no-op objective: each trial is what the driver does around a training run, with the parts
the searcher uses (lyaptune.study.searcher): the journal storage of a run directory
(``journal_storage``: ``JournalFileBackend`` with its file lock), a sampler made afresh for each ask and
seeded per trial (``make_sampler(..., trial=k)``), ``ask`` over the arm's resolved space,
``study.tell``, and the store's ``record_trial`` of a row as ``trial_row`` builds it (20 epochs). Ray
Tune's bookkeeping is not in these figures.

Prints, per size N (the trials in the arm's study when measured):
  ask / tell / record   mean milliseconds of each over the last ``--window`` trials before N;
  per trial             their sum, and its ratio to the smallest size (goal: within 1.5x at 10,000 vs 1,000);
  open                  seconds for a new process's driver to open the journal and read the study back
                        (``journal_storage`` + ``optuna.load_study`` + ``get_trials``), as a resume does.

``--runner``: the real runner instead, Ray Tune's bookkeeping included. ``lyaptune run`` (a local Ray,
``max_concurrent: 2``) of one arm with ``max(--sizes)`` search trials of a no-op task (a 1 x 2 FC
network, one epoch of 6 synthetic examples: a few milliseconds of training); the per-trial figure at N
is the mean interval between the driver's recordings of consecutive runs (``created_at``) over the
``--window`` runs before the N-th, the study's throughput limit when the training costs nothing.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

SPEC = {
    "name": "driver",
    "task": {"dataset": "digits", "model": "fc", "epochs": 20, "batch_size": "full", "device": "cpu"},
    "search": {"sampler": "random", "trials_per_arm": 1, "seeds": [0]},
    "arms": [
        {
            "name": "adam",
            "optimizer": "adam",
            "space": {
                "lr": {"low": 1e-4, "high": 1e-1, "log": True},
                "weight_decay": {"low": 1e-6, "high": 1e-2, "log": True},
                "beta2": {"low": 0.9, "high": 0.9999},
            },
        }
    ],
}

_OPEN = """
import sys, time
t0 = time.perf_counter()
import optuna
from lyaptune.study.searcher import journal_storage
optuna.logging.set_verbosity(optuna.logging.WARNING)
t1 = time.perf_counter()
study = optuna.load_study(study_name=sys.argv[2], storage=journal_storage(sys.argv[1]))
n = len(study.get_trials(deepcopy=False))
print(n, time.perf_counter() - t1)
"""


def _records(rng: np.random.Generator, n_epochs: int) -> list[dict]:
    loss = 2.3
    out = []
    for e in range(1, n_epochs + 1):
        loss *= float(rng.uniform(0.6, 0.95))
        out.append(
            {
                "epoch": e,
                "train_loss": loss,
                "train_acc": 1 - loss / 2.3,
                "grad_norm": float(rng.uniform(0.01, 5)),
                "val_loss": loss * 1.1,
                "val_acc": 0.9 - loss / 3,
                "test_loss": loss * 1.12,
                "test_acc": 0.89 - loss / 3,
                "lr": 1e-3,
                "step": 43 * e,
                "time_s": 0.1 * e,
            }
        )
    return out


def measure(sampler: str, sizes: list[int], where: Path, window: int, n_epochs: int) -> list[dict]:
    """Drive one arm's study to each size in turn; time each trial's ask, tell and record."""
    import optuna

    from lyaptune.store import RunStore, trial_row
    from lyaptune.study.searcher import journal_storage
    from lyaptune.study.spaces import ask, make_sampler
    from lyaptune.study.spec import StudySpec

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    spec = StudySpec.from_dict({**SPEC, "search": {**SPEC["search"], "sampler": sampler}})
    arm = spec.arms[0]
    space = arm.resolved_space()
    root = where / "run"
    shutil.rmtree(root, ignore_errors=True)
    store = RunStore(root, create=True)
    store.write_spec({"name": "driver"})
    journal = root / "optuna.journal"
    name = f"{spec.name}/{arm.name}"
    study = optuna.create_study(
        study_name=name,
        storage=journal_storage(journal),
        sampler=make_sampler(spec.search, arm),
        direction="minimize",
    )
    rng = np.random.default_rng(0)
    n_max = max(sizes)
    t_ask, t_tell, t_rec = np.empty(n_max), np.empty(n_max), np.empty(n_max)
    rows = []
    for k in range(n_max):
        records = _records(rng, n_epochs)
        t0 = time.perf_counter()
        study.sampler = make_sampler(spec.search, arm, trial=k)
        trial, params = ask(study, space)
        t1 = time.perf_counter()
        value = records[-1]["val_loss"]
        study.tell(trial.number, value)
        t2 = time.perf_counter()
        result = SimpleNamespace(status="completed", records=records, info={}, wall_s=1.0, message="")
        row = trial_row(
            study=spec.name,
            arm=arm.name,
            trial_id=f"{arm.name}-search-{trial.number:04d}-s0",
            phase="search",
            seed=0,
            config={"optimizer": "adam"},
            result=result,
            objective=value,
            optuna_number=trial.number,
            params=params,
        )
        t3 = time.perf_counter()
        store.record_trial(row, records)
        t4 = time.perf_counter()
        t_ask[k], t_tell[k], t_rec[k] = t1 - t0, t2 - t1, t4 - t3
        n = k + 1
        if n in sizes:
            w = min(window, n)
            r = subprocess.run(
                [sys.executable, "-c", _OPEN, str(journal), name], check=True, capture_output=True, text=True
            )
            count, open_s = r.stdout.split()
            assert int(count) == n, (count, n)
            rows.append(
                {
                    "n": n,
                    "ask_ms": t_ask[n - w : n].mean() * 1e3,
                    "tell_ms": t_tell[n - w : n].mean() * 1e3,
                    "record_ms": t_rec[n - w : n].mean() * 1e3,
                    "total_s": float((t_ask[:n] + t_tell[:n] + t_rec[:n]).sum()),
                    "open_s": float(open_s),
                    "journal_mb": journal.stat().st_size / 2**20,
                }
            )
            yield_row = rows[-1]
            per = yield_row["ask_ms"] + yield_row["tell_ms"] + yield_row["record_ms"]
            base = rows[0]["ask_ms"] + rows[0]["tell_ms"] + rows[0]["record_ms"]
            print(
                f"{sampler:>7} {n:>8} {yield_row['ask_ms']:>8.2f} {yield_row['tell_ms']:>8.2f} "
                f"{yield_row['record_ms']:>8.2f} {per:>9.2f} {per / base:>6.2f}x "
                f"{yield_row['total_s']:>8.1f}s "
                f"{yield_row['open_s']:>7.2f}s {yield_row['journal_mb']:>6.1f}MB",
                flush=True,
            )
        elif n % 1000 == 0:
            last = (t_ask[n - 100 : n] + t_tell[n - 100 : n] + t_rec[n - 100 : n]).mean()
            print(f"  ... {sampler} {n}: per trial {last * 1e3:.2f} ms", flush=True)
    shutil.rmtree(root, ignore_errors=True)
    return rows


_NOOP_TASK = {
    "dataset": "synthetic",
    "dataset_args": {"n_train": 8, "n_test": 4, "input_shape": [1, 2, 2], "num_classes": 2},
    "model": "fc",
    "model_args": {"depth": 1, "width": 2},
    "epochs": 1,
    "batch_size": "full",
    "device": "cpu",
    "validation_fraction": 0.25,
}


def measure_runner(sampler: str, sizes: list[int], where: Path, window: int) -> list[dict]:
    """``lyaptune run`` of a no-op task with ``max(sizes)`` trials; per-trial intervals at each size."""
    import pandas as pd
    import yaml

    from lyaptune.store import RunStore

    n_max = max(sizes)
    spec = {
        "name": "noop",
        "task": _NOOP_TASK,
        "search": {"sampler": sampler, "trials_per_arm": n_max, "seeds": [0], "final_seeds": [1]},
        "resources": {"cpu": 1, "gpu": 0},
        "max_concurrent": 2,
        "arms": [{"name": "adam", "optimizer": "adam", "space": SPEC["arms"][0]["space"]}],
    }
    path = where / "noop.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    t0 = time.perf_counter()
    cmd = [sys.executable, "-m", "lyaptune.cli", "run", str(path), "--out", str(where / "out")]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    t = RunStore(where / "out" / "noop").trials(columns=["phase", "status", "created_at"])
    search = t[t["phase"] == "search"].sort_values("created_at")
    assert len(search) == n_max and (search["status"] == "completed").all(), search["status"].value_counts()
    created = pd.to_datetime(search["created_at"])
    stamps = (created - created.iloc[0]).dt.total_seconds().to_numpy()
    gaps = np.diff(stamps)
    rows = []
    for n in sizes:
        w = min(window, n - 1)
        per = float(gaps[n - 1 - w : n - 1].mean()) * 1e3
        rows.append({"n": n, "per_trial_ms": per, "study_s": float(stamps[n - 1] - stamps[0])})
        print(
            f"{sampler:>7} {n:>8} {per:>9.2f} {per / rows[0]['per_trial_ms']:>6.2f}x "
            f"{rows[-1]['study_s']:>8.1f}s",
            flush=True,
        )
    print(f"  lyaptune run of {n_max + 1} runs: {wall:.1f} s wall (Ray start and final run included)")
    shutil.rmtree(where / "out", ignore_errors=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sampler", choices=["random", "tpe"], nargs="+", default=["random", "tpe"])
    ap.add_argument("--sizes", type=int, nargs="+", default=None, help="default: 1000 10000")
    ap.add_argument("--window", type=int, default=200, help="trials averaged before each size")
    ap.add_argument("--epochs", type=int, default=20, help="epoch records per recorded run")
    ap.add_argument("--json", default=None, help="also write the figures to this JSON file")
    ap.add_argument(
        "--runner", action="store_true", help="the real runner (lyaptune run, Ray Tune) on a no-op task"
    )
    args = ap.parse_args()
    if args.sizes is not None and any(n < 2 for n in args.sizes):
        sys.exit(f"error: --sizes must be integers >= 2, got {args.sizes}")
    if args.runner:
        print(f"{'sampler':>7} {'trials':>8} {'per trial':>9} {'ratio':>7} {'study':>9}", flush=True)
        where = Path(tempfile.mkdtemp(prefix="lyaptune-bench-runner-"))
        try:
            out = {
                s: measure_runner(s, sorted(set(args.sizes or [1000, 10_000])), where, args.window)
                for s in args.sampler
            }
        finally:
            shutil.rmtree(where, ignore_errors=True)
        if args.json:
            Path(args.json).write_text(json.dumps(out, indent=2))
        return
    print(
        f"{'sampler':>7} {'trials':>8} {'ask ms':>8} {'tell ms':>8} {'rec ms':>8} {'per trial':>9} "
        f"{'ratio':>7} {'total':>9} {'open':>8} {'journal':>8}",
        flush=True,
    )
    where = Path(tempfile.mkdtemp(prefix="lyaptune-bench-driver-"))
    out = {}
    try:
        for sampler in args.sampler:
            sizes = args.sizes or [1000, 10_000]
            out[sampler] = measure(sampler, sorted(set(sizes)), where, args.window, args.epochs)
    finally:
        shutil.rmtree(where, ignore_errors=True)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
