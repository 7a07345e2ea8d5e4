"""Run-directory store: per-record write time and full-read time at 1,000, 10,000 and 100,000 runs.

    python benchmarks/store.py                          # sizes 1000 10000 100000 (a few minutes at 100k)
    python benchmarks/store.py --sizes 1000 10000       # smaller
    python benchmarks/store.py --baseline 5b6ddbc --sizes 1000 5000   # also the store of that commit

For each size N a fresh run directory is filled with N synthetic runs through
:meth:`lyaptune.store.RunStore.record_trial`, as a study's driver records them: a row as
:func:`lyaptune.store.trial_row` builds it (4 arms, 3 hyperparameters each, a config and an info JSON of
realistic size) and ``--epochs`` epoch records with one optimizer diagnostic. Each call is timed.

Prints, per size:
  write/rec   mean seconds of one ``record_trial`` over the last 1,000 runs recorded (the cost of a record
              when the store already holds about N runs), and over all N runs;
  ratio       write/rec at N over write/rec at the smallest size (goal: within 2x at 100,000 vs 1,000);
  read        seconds to read everything back: ``RunStore.trials()`` (the trials table with its
              ``param_`` columns), ``RunStore.epochs()``, and ``pandas.read_parquet(run + "/trials")``
              (up to ``--pandas-max`` runs).

Timings are wall clock on whatever machine runs this; the store under test writes to ``--dir``
(default: a temporary directory, removed afterwards).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType, SimpleNamespace

import numpy as np

REPO = Path(__file__).resolve().parents[1]
ARMS = {
    "adam": ("lr", "beta2", "weight_decay"),
    "lyam": ("lr", "beta2", "alpha"),
    "rlo": ("lr", "eta", "direction"),
    "sgd-cosine": ("lr", "momentum", "warmup"),
}
LAST = 1000


def _config(arm: str, seed: int) -> dict:
    """A trial config of the size a real one has (``TrialConfig.to_dict()``)."""
    return {
        "dataset": "mini-mnist",
        "dataset_args": {"label_noise": 0.0, "normalize": True, "n_train": 5500},
        "model": "fc",
        "model_args": {"depth": 3, "width": 1000, "activation": "relu"},
        "optimizer": arm.split("-")[0],
        "optimizer_args": {"lr": 0.001, "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0.0},
        "schedule": "cosine" if "cosine" in arm else "constant",
        "schedule_args": {"warmup_epochs": 0},
        "epochs": 20,
        "batch_size": 128,
        "seed": seed,
        "device": "cpu",
        "validation_fraction": 0.1,
        "loss": "cross_entropy",
        "grad_noise": 0.0,
        "checkpoint_every": 0,
    }


def _run(store_mod: ModuleType, i: int, n_epochs: int, rng: np.random.Generator) -> tuple[dict, list[dict]]:
    """Run ``i``: its trial row and its epoch records."""
    arm = list(ARMS)[i % len(ARMS)]
    seed = i % 3
    params = {p: float(rng.uniform(1e-4, 1.0)) for p in ARMS[arm]}
    if arm == "rlo":
        params["direction"] = ["sign", "tanh", "identity"][i % 3]
    records = []
    loss = 2.3
    for e in range(1, n_epochs + 1):
        loss *= float(rng.uniform(0.6, 0.95))
        records.append(
            {
                "epoch": e,
                "train_loss": loss,
                "train_acc": 1.0 - loss / 2.3,
                "grad_norm": float(rng.uniform(0.01, 5.0)),
                "val_loss": loss * 1.1,
                "val_acc": 0.9 - loss / 3,
                "test_loss": loss * 1.12,
                "test_acc": 0.89 - loss / 3,
                "lr": params["lr"],
                "lyapunov_drift": -loss * 0.1,
                "step": 43 * e,
                "time_s": 0.8 * e,
                "update_norm": float(rng.uniform(0.0, 1.0)),
            }
        )
    info = {
        "initial_loss": 2.302585,
        "initial_grad_norm": 1.7,
        "num_params": 2_797_010,
        "device": "cpu",
        "steps_per_epoch": 43,
        "total_steps": 43 * n_epochs,
    }
    result = SimpleNamespace(
        status="completed", records=records, info=info, wall_s=0.8 * n_epochs, message=""
    )
    row = store_mod.trial_row(
        study="bench",
        arm=arm,
        trial_id=f"{arm}-search-{i // len(ARMS)}-s{seed}",
        phase="search",
        seed=seed,
        config=_config(arm, seed),
        result=result,
        objective=records[-1]["val_loss"],
        optuna_number=i // len(ARMS),
        params=params,
    )
    return row, records


def _load_store(rev: str | None) -> ModuleType:
    """``lyaptune.store`` as it is, or as it was at git revision ``rev`` (for a before/after figure)."""
    if rev is None:
        import lyaptune.store

        return lyaptune.store
    src = subprocess.run(
        ["git", "show", f"{rev}:lyaptune/store.py"], cwd=REPO, check=True, capture_output=True, text=True
    ).stdout
    path = Path(tempfile.mkdtemp()) / f"store_{rev}.py"
    path.write_text(src)
    spec = importlib.util.spec_from_file_location(f"store_{rev}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def measure(
    store_mod: ModuleType, sizes: list[int], n_epochs: int, where: Path, pandas_max: int = 20_000
) -> Iterator[dict[str, float]]:
    """Record runs into one fresh run directory under ``where``, timing each; at each size, read it back.

    The store grows once through all ``sizes`` (sorted); at each size the write time is the mean over the
    last 1,000 records before it, in wall-clock and in CPU seconds of this process (the CPU figure moves
    less when other processes load the machine), and then every reader reads the whole store.
    """
    root = where / "run"
    shutil.rmtree(root, ignore_errors=True)
    store = store_mod.RunStore(root, create=True)
    store.write_spec({"name": "bench"})
    rng = np.random.default_rng(0)
    n_max = max(sizes)
    wall = np.empty(n_max)
    cpu = np.empty(n_max)
    for i in range(n_max):
        row, records = _run(store_mod, i, n_epochs, rng)  # built outside the timed call
        c0, t0 = time.process_time(), time.perf_counter()
        store.record_trial(row, records)
        wall[i], cpu[i] = time.perf_counter() - t0, time.process_time() - c0
        n = i + 1
        if n % 10_000 == 0 and n not in sizes:
            print(f"  ... {n} runs, last {LAST}: {wall[n - LAST : n].mean() * 1e3:.2f} ms/rec", flush=True)
        if n in sizes:
            k = min(LAST, n)
            out = {
                "n": n,
                "write_last_ms": wall[n - k : n].mean() * 1e3,
                "write_last_cpu_ms": cpu[n - k : n].mean() * 1e3,
                "write_all_ms": wall[:n].mean() * 1e3,
            }
            # the end of a study: fold what the writer has not compacted yet (a store without compaction
            # reads its one file per run)
            t0 = time.perf_counter()
            if hasattr(store, "compact"):
                store.compact()
            out["compact_s"] = time.perf_counter() - t0
            out.update(_read_back(store_mod, root, n, n_epochs, pandas_max))
            yield out
    shutil.rmtree(root, ignore_errors=True)


# The peak is this process's VmHWM (/proc/self/status), not getrusage's ru_maxrss: Linux keeps the
# largest ru_maxrss across fork and exec, so a child of the benchmark process (which holds the whole
# store it just read) reported the parent's peak (1.36 to 1.6 GB at 100,000 runs, against about 0.5 GB
# of its own).
_ONE_LINE = """
import sys, time
import pandas as pd
t0 = time.perf_counter()
df = pd.read_parquet(sys.argv[1]).sort_values("updated_at").drop_duplicates("trial_id", keep="last")
hwm = next(line for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(len(df), time.perf_counter() - t0, int(hwm.split()[1]) / 1024)
"""


def _read_back(store_mod: ModuleType, root: Path, n: int, n_epochs: int, pandas_max: int) -> dict[str, float]:
    """Seconds to read the whole store with each reader; checks that each sees every run.

    README's one-line pandas read runs in a fresh process, which also reports its peak resident memory.
    """
    out: dict[str, float] = {}
    reader = store_mod.RunStore(root)
    t0 = time.perf_counter()
    trials = reader.trials()
    out["read_trials_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    epochs = reader.epochs()
    out["read_epochs_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    one_arm = reader.epochs("adam")
    out["read_epochs_arm_s"] = time.perf_counter() - t0
    trials_path = root / ("trials" if (root / "trials").is_dir() else "trials.parquet")
    assert len(trials) == n, (len(trials), n)
    assert len(one_arm) == len(epochs[epochs["arm"] == "adam"])
    out["read_pandas_s"] = out["pandas_peak_mb"] = math.nan
    if n <= pandas_max:
        r = subprocess.run(
            [sys.executable, "-c", _ONE_LINE, str(trials_path)], check=True, capture_output=True, text=True
        )
        rows, seconds, peak = r.stdout.split()
        assert int(rows) == n, (rows, n)
        out["read_pandas_s"], out["pandas_peak_mb"] = float(seconds), float(peak)
    assert len(epochs) == n * n_epochs, (len(epochs), n * n_epochs)
    assert {f"param_{p}" for ps in ARMS.values() for p in ps} <= set(trials.columns)
    out["disk_mb"] = sum(p.stat().st_size for p in root.rglob("*") if p.is_file()) / 2**20
    out["files"] = sum(1 for p in root.rglob("*.parquet"))
    return out


def replicated_reads(n: int, n_epochs: int, where: Path) -> dict[str, float]:
    """Read figures of an ``n``-run store in the layout compaction leaves, without recording ``n`` runs.

    1,000 runs are recorded through ``record_trial`` and compacted; their parts are then copied
    ``n / 1000`` times with fresh trial ids (``<id>-c<k>``), as the parts of 1,000 compacted runs each.
    """
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    import lyaptune.store as store_mod

    root = where / "run"
    shutil.rmtree(root, ignore_errors=True)
    store = store_mod.RunStore(root, create=True)
    store.write_spec({"name": "bench"})
    rng = np.random.default_rng(0)
    for i in range(1000):
        store.record_trial(*_run(store_mod, i, n_epochs, rng))
    store.compact()
    parts = sorted(root.rglob("@part-*.parquet"))
    tables = {p: pq.read_table(p) for p in parts}
    for p in parts:
        p.unlink()
    for k in range(n // 1000):
        for p, t in tables.items():
            ids = pc.binary_join_element_wise(t.column("trial_id"), pa.scalar(f"c{k}"), "-")
            t2 = t.set_column(t.schema.get_field_index("trial_id"), "trial_id", ids)
            pq.write_table(t2, p.with_name(f"@part-{k + 1:010d}.parquet"), compression="zstd")
    out = {"n": n, "write_last_ms": math.nan, "write_last_cpu_ms": math.nan, "write_all_ms": math.nan}
    out["compact_s"] = math.nan
    out.update(_read_back(store_mod, root, n, n_epochs, 10**9))
    shutil.rmtree(root, ignore_errors=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 10_000, 100_000])
    ap.add_argument("--epochs", type=int, default=5, help="epoch records per run")
    ap.add_argument("--dir", default=None, help="where the run directory goes (default: a temporary one)")
    ap.add_argument("--baseline", default=None, help="also measure lyaptune/store.py of this git revision")
    ap.add_argument("--json", default=None, help="also write the figures to this JSON file")
    ap.add_argument(
        "--pandas-max",
        type=int,
        default=1_000_000,
        help="skip the one-line pandas read above this many runs (a store without compaction: its "
        "pyarrow.dataset scan of many small files peaked at about 120 kB of memory per file)",
    )
    ap.add_argument(
        "--replicated",
        type=int,
        default=None,
        metavar="N",
        help="only the read figures of an N-run compacted store built by copying the parts of 1,000 runs",
    )
    args = ap.parse_args()
    if any(n < 1 for n in args.sizes):
        sys.exit(f"error: --sizes must be positive integers, got {args.sizes}")

    where = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="lyaptune-bench-store-"))
    where.mkdir(parents=True, exist_ok=True)
    if args.replicated:
        try:
            r = replicated_reads(args.replicated, args.epochs, where)
        finally:
            if not args.dir:
                shutil.rmtree(where, ignore_errors=True)
        print(
            f"{r['n']} runs (replicated parts): trials() {r['read_trials_s']:.2f}s, epochs() "
            f"{r['read_epochs_s']:.2f}s, epochs(one arm) {r['read_epochs_arm_s']:.2f}s, pandas one-line "
            f"{r['read_pandas_s']:.2f}s (peak {r['pandas_peak_mb']:.0f} MB), {r['files']:.0f} files, "
            f"{r['disk_mb']:.0f} MB",
            flush=True,
        )
        return
    versions = [("current", None)] + ([(args.baseline, args.baseline)] if args.baseline else [])
    results = {}
    try:
        for label, rev in versions:
            store_mod = _load_store(rev)
            print(f"store: {label} ({store_mod.__file__}), {args.epochs} epochs per run", flush=True)
            print(
                f"{'runs':>8} {'write/rec last 1k':>18} {'cpu':>8} {'all':>8} {'ratio':>6} "
                f"{'compact':>8} {'trials()':>9} {'epochs()':>9} {'1 arm':>7} {'pandas 1-line':>14} "
                f"{'peak':>7} {'files':>7} {'disk':>6}",
                flush=True,
            )
            rows: list[dict[str, float]] = []
            for r in measure(store_mod, sorted(set(args.sizes)), args.epochs, where, args.pandas_max):
                rows.append(r)
                ratio = r["write_last_ms"] / rows[0]["write_last_ms"]
                print(
                    f"{r['n']:>8} {r['write_last_ms']:>15.2f} ms {r['write_last_cpu_ms']:>5.2f} ms "
                    f"{r['write_all_ms']:>5.2f} ms {ratio:>5.2f}x "
                    f"{r['compact_s']:>7.2f}s {r['read_trials_s']:>8.2f}s {r['read_epochs_s']:>8.2f}s "
                    f"{r['read_epochs_arm_s']:>6.2f}s {r['read_pandas_s']:>13.2f}s "
                    f"{r['pandas_peak_mb']:>5.0f}MB "
                    f"{r['files']:>7.0f} {r['disk_mb']:>4.0f}MB",
                    flush=True,
                )
            results[label] = rows
    finally:
        if not args.dir:
            shutil.rmtree(where, ignore_errors=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
