"""A 100,000-run study's `lyaptune status`, `report` and `compare`, timed on a real study scaled up.

    python benchmarks/report_scale.py                    # the quickstart, run here, scaled to 100,000 runs
    python benchmarks/report_scale.py --runs 10000 --base runs/quickstart

A real finished study (the quickstart, run here unless ``--base`` names a finished run directory) is
scaled to about ``--runs`` runs: its search runs are copied, with fresh trial ids and Optuna numbers, as
further search trials of the same arms (the spec's ``trials_per_arm`` and ``study.json``'s search
budget raised to match), their epoch records with them, in the layout a compacting writer leaves for a
study of that size (parts of 1,000 runs). The final runs stay as they are. Then ``lyaptune status``,
``lyaptune report --no-figures``, ``lyaptune report`` and ``lyaptune compare`` (the scaled study against
its base) run on it, each in a fresh process, timed, with the process's peak resident memory (VmHWM).

Goals (issue 22): status <= 2 s; report --no-figures <= 60 s; report with figures <= 120 s.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import yaml

ROOT = Path(__file__).resolve().parents[1]
RUNS_PER_PART = 1000  # as RunStore.compact leaves them (COMPACT_EVERY)

# runs the CLI as `lyaptune ARGS`, then writes the process's peak resident memory (VmHWM) to stderr
_WRAPPER = """
import atexit, runpy, sys
def _hwm():
    line = next(x for x in open("/proc/self/status") if x.startswith("VmHWM:"))
    sys.stderr.write(f"\\n@@hwm {int(line.split()[1]) / 1024:.0f}\\n")
atexit.register(_hwm)
sys.argv = ["lyaptune", *sys.argv[1:]]
runpy.run_module("lyaptune.cli", run_name="__main__")
"""


def timed(*args: str) -> tuple[float, float]:
    """``lyaptune ARGS`` in a fresh process: (wall seconds, peak resident MB)."""
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-c", _WRAPPER, *args], capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"lyaptune {' '.join(args)} failed ({r.returncode}):\n{r.stderr[-4000:]}")
    peaks = [float(x.split()[1]) for x in r.stderr.splitlines() if x.startswith("@@hwm")]
    return wall, peaks[-1] if peaks else math.nan


def _read_parts(directory: Path) -> pa.Table:
    return pa.concat_tables([pq.read_table(f) for f in sorted(directory.glob("*.parquet"))])


def _write_parts(table: pa.Table, directory: Path, rows_per_part: int) -> None:
    for f in directory.glob("*.parquet"):
        f.unlink()
    for seq, start in enumerate(range(0, table.num_rows, rows_per_part), start=1):
        part = table.slice(start, rows_per_part)
        pq.write_table(part, directory / f"@part-{seq:010d}.parquet", compression="zstd")


def _with_column(table: pa.Table, name: str, values: list) -> pa.Table:
    i = table.schema.get_field_index(name)
    return table.set_column(i, name, pa.array(values, table.schema.field(name).type))


def scale(base: Path, out: Path, runs: int) -> dict[str, int]:
    """Copy the finished run directory ``base`` to ``out`` with its search runs replicated to about
    ``runs`` runs in all.

    Returns:
      The number of runs per arm.
    """
    from lyaptune.store import RunStore

    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(base, out, ignore=shutil.ignore_patterns("ray", "ray.log", "report"))
    RunStore(out).compact()  # a run still in its own file joins a part
    trials = _read_parts(out / "trials")
    search = trials.filter(pc.equal(trials.column("phase"), "search"))
    arms, numbers, seeds, ids = (
        search.column(c).to_pylist() for c in ("arm", "optuna_number", "seed", "trial_id")
    )
    per_arm = {a: max(n for n, b in zip(numbers, arms) if b == a) + 1 for a in set(arms)}
    copies = max(1, math.ceil((runs - trials.num_rows) / max(search.num_rows, 1)))
    tables, renames = [trials], {}
    for k in range(1, copies + 1):
        shifted = [n + k * per_arm[a] for a, n in zip(arms, numbers)]
        new_ids = [f"{a}-search-{n:04d}-s{s}" for a, n, s in zip(arms, shifted, seeds)]
        renames[k] = dict(zip(ids, new_ids))
        tables.append(_with_column(_with_column(search, "trial_id", new_ids), "optuna_number", shifted))
    scaled = pa.concat_tables(tables)
    _write_parts(scaled, out / "trials", RUNS_PER_PART)
    for arm_dir in sorted((out / "epochs").iterdir()):
        epochs = _read_parts(arm_dir)
        mine = epochs.filter(pc.is_in(epochs.column("trial_id"), value_set=pa.array(ids, pa.string())))
        if not mine.num_rows:
            continue
        per_run = max(1, round(epochs.num_rows / max(len(set(epochs.column("trial_id").to_pylist())), 1)))
        copied = [epochs]
        for mapping in renames.values():
            copied.append(
                _with_column(mine, "trial_id", [mapping[t] for t in mine.column("trial_id").to_pylist()])
            )
        _write_parts(pa.concat_tables(copied), arm_dir, RUNS_PER_PART * per_run)
    budget = {a: n * (copies + 1) for a, n in per_arm.items()}
    spec = yaml.safe_load((out / "spec.yaml").read_text())
    spec["search"]["trials_per_arm"] = max(budget.values())  # the quickstart's arms share one budget
    (out / "spec.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    study = json.loads((out / "study.json").read_text())
    study["search_budget"] = {a: budget.get(a, 0) for a in study.get("search_budget", {})}
    (out / "study.json").write_text(json.dumps(study, indent=2))
    counts = pc.value_counts(scaled.column("arm")).to_pylist()
    return {c["values"]: c["counts"] for c in counts}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=100_000, help="runs in the scaled study (default: 100000)")
    ap.add_argument("--base", type=Path, help="a finished run directory (default: run the quickstart here)")
    ap.add_argument("--dir", type=Path, help="where the scaled run directory goes (default: a temporary one)")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="lyaptune-scale-")) if args.dir is None else args.dir
    work.mkdir(parents=True, exist_ok=True)
    base = args.base
    if base is None:
        print("running the quickstart (the base study) ...", flush=True)
        cmd = [sys.executable, "-m", "lyaptune.cli", "run", str(ROOT / "experiments/quickstart.yaml")]
        subprocess.run([*cmd, "--out", str(work / "base")], check=True, stdout=subprocess.DEVNULL)
        base = work / "base" / "quickstart"
    t0 = time.perf_counter()
    run_dir = work / "scaled"
    counts = scale(base, run_dir, args.runs)
    files = list(run_dir.rglob("*.parquet"))
    mb = sum(p.stat().st_size for p in files) / 2**20
    arms = ", ".join(f"{a} {n:,}" for a, n in sorted(counts.items()))
    print(f"scaled {base} to {sum(counts.values()):,} runs ({arms}): {len(files)} Parquet files, {mb:.0f} MB")
    print(f"  built in {time.perf_counter() - t0:.1f} s", flush=True)
    print(f"{'command':<22} {'wall':>9} {'peak RSS':>10} {'goal':>8}")
    rows = [
        ("status", ("status", str(run_dir)), 2.0),
        ("report --no-figures", ("report", str(run_dir), "--no-figures", "--out", str(work / "r1")), 60.0),
        ("report", ("report", str(run_dir), "--out", str(work / "r2")), 120.0),
        ("compare (with base)", ("compare", str(run_dir), str(base), "--out", str(work / "c")), math.nan),
    ]
    for name, cli_args, goal in rows:
        wall, peak = timed(*cli_args)
        target = f"{goal:7.0f}s" if math.isfinite(goal) else f"{'-':>8}"
        print(f"{name:<22} {wall:8.2f}s {peak:8.0f}MB {target}", flush=True)
    if args.dir is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
