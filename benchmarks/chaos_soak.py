"""Chaos soak: a study whose driver is SIGKILLed at random known points, resumed each time, must end with
the store an uninterrupted run of the same spec gives (issue 21).

    python benchmarks/chaos_soak.py                                  # quickstart, 20 kill points
    python benchmarks/chaos_soak.py --kills 5 --spec SPEC.yaml       # another spec
    python benchmarks/chaos_soak.py --cycles 30 --kills 1 --small    # the kill-and-resume loop
    python benchmarks/chaos_soak.py --load 2 ...                     # with 2 busy loops pinning cores

One cycle: an uninterrupted reference run (``lyaptune run SPEC --max-concurrent 1``), then the same spec
run by a driver that is SIGKILLed (with every process below it, its local Ray included) at a known point,
``lyaptune resume RUN_DIR`` (in an environment without the fault hook's variable), killed again, ... N
times, and a last resume that completes. The known points are those of the fault-injection hook
(``lyaptune.faults``, ``LYAPTUNE_FAULT_INJECTION``): a run blocked at its start, right after its first
checkpoint is stored (with ``--checkpoint-every``), or the driver blocked right after it stored a run
and before it told Optuna (``recorded``). The hook writes a marker file there; the driver is killed
once the marker exists (no timing). Each kill point is a run of the reference not yet stored, among
the next few in order.

Then the two trials tables are compared: the same trial ids; per run the same status, parameters,
objective and final metrics (floats equal to the last bit: same machine, one thread per trial), and
counted: lost (in the reference, not in the killed run), duplicated (a trial id or an epoch stored twice),
errored, repeated configurations (two search runs of one arm with the same parameters) and differing
runs. Every non-completed run is printed with its message and the tail of each driver's ray.log is kept.
Exit status 0 when all counts are 0.

``--max-concurrent 1`` (the default) is what makes the tables comparable to the last bit: with more
runs at once, which trials are told before trial k is asked depends on timing (the soak then still
counts lost, duplicated, errored and repeated, and reports differing runs without failing on them).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
from _procs import kill_family  # noqa: E402  (the tests' process helpers: one copy of them)

COMPARED = [
    "arm",
    "phase",
    "seed",
    "repeat",
    "optuna_number",
    "status",
    "epochs_completed",
    "params_json",
    "objective",
    "final_train_loss",
    "final_train_acc",
    "final_grad_norm",
    "min_grad_norm",
    "final_val_loss",
    "final_val_acc",
    "final_test_loss",
    "final_test_acc",
    "derived_lr",
    "k_hat",
    "initial_loss",
]
SMALL = {
    "name": "soak",
    "task": {
        "dataset": "synthetic",
        "dataset_args": {"n_train": 120, "n_test": 40, "input_shape": [1, 4, 4], "num_classes": 3},
        "model": "fc",
        "model_args": {"depth": 1, "width": 8},
        "epochs": 4,
        "validation_fraction": 0.2,
        "device": "cpu",
    },
    "search": {"sampler": "tpe", "trials_per_arm": 4, "seeds": [0], "final_seeds": [1]},
    "max_concurrent": 1,
    "arms": [
        {"name": "adam", "optimizer": "adam", "space": {"lr": {"low": 1e-3, "high": 1e-1, "log": True}}},
        {"name": "lyam", "optimizer": "lyam", "space": "default"},
    ],
}


def _env() -> dict[str, str]:
    return {
        k: v
        for k, v in os.environ.items()
        if k not in ("RAY_ADDRESS", "LYAPTUNE_FAULT_INJECTION", "LYAPTUNE_DATA_ROOT")
    }


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "lyaptune.cli", *args]


def _trials(run_dir: Path) -> pd.DataFrame:
    from lyaptune.store import RunStore

    return RunStore(run_dir).trials()


def _ray_log_tail(run_dir: Path, n: int = 15) -> str:
    path = run_dir / "ray.log"
    if not path.exists():
        return ""
    lines = path.read_text(errors="replace").splitlines()
    return "\n".join(lines[-n:])


def reference(spec_path: Path, out: Path, max_concurrent: int) -> tuple[Path, float]:
    """Run the spec uninterrupted; returns the run directory and the wall time."""
    t0 = time.perf_counter()
    r = subprocess.run(
        _cli("run", str(spec_path), "--out", str(out), "--max-concurrent", str(max_concurrent)),
        capture_output=True,
        text=True,
        env=_env(),
    )
    name = yaml.safe_load(spec_path.read_text())["name"]
    if r.returncode != 0:
        raise SystemExit(
            f"the reference run failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
        )
    return out / name, time.perf_counter() - t0


def killed_run(
    spec_path: Path,
    out: Path,
    order: list[str],
    kills: int,
    rng: random.Random,
    where: list[str],
    max_concurrent: int,
    window: int,
    log,
) -> tuple[Path, list[dict], float]:
    """Run the spec, killing the driver at ``kills`` known points, resuming each time; then complete."""
    name = yaml.safe_load(spec_path.read_text())["name"]
    run_dir = out / name
    marks = out / "marks"
    events: list[dict] = []
    t0 = time.perf_counter()
    first = True
    for i in range(kills):
        stored = set(_trials(run_dir)["trial_id"]) if (run_dir / "spec.yaml").exists() else set()
        remaining = [t for t in order if t not in stored]
        if not remaining:
            log(f"kill {i + 1}: nothing left to run; stopping the kills here")
            break
        target = rng.choice(remaining[:window])
        point = rng.choice(where)
        fault = {"match": target, "block": point, "dir": str(marks / f"k{i}")}
        args = (
            _cli("run", str(spec_path), "--out", str(out), "--max-concurrent", str(max_concurrent))
            if first
            else _cli("resume", str(run_dir))
        )
        proc = subprocess.Popen(
            args,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env={**_env(), "LYAPTUNE_FAULT_INJECTION": json.dumps(fault)},
            start_new_session=True,
        )
        suffix = "recorded" if point == "recorded" else "blocked"
        marker = marks / f"k{i}" / f"{target}.{suffix}"
        while not marker.exists() and proc.poll() is None:
            time.sleep(0.1)
        reached = marker.exists()
        kill_family(proc)
        err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
        first = False
        n = len(_trials(run_dir)) if (run_dir / "spec.yaml").exists() else 0
        events.append({"kill": i + 1, "target": target, "point": point, "reached": reached, "stored": n})
        log(
            f"kill {i + 1:2d}: {target} at {point}: "
            + (f"SIGKILL, {n} runs stored" if reached else f"the driver ended first (rc {proc.returncode})")
        )
        if not reached and err.strip():
            log("  " + err.strip().splitlines()[-1])
    r = subprocess.run(_cli("resume", str(run_dir)), capture_output=True, text=True, env=_env())
    log(f"final resume: exit {r.returncode}; {r.stdout.strip().splitlines()[-1] if r.stdout.strip() else ''}")
    if r.returncode != 0:
        log(r.stderr[-2000:])
    return run_dir, events, time.perf_counter() - t0


def _same(a, b) -> bool:
    """Equal, to the last bit for floats, or both missing."""
    if pd.isna(a) or pd.isna(b):
        return bool(pd.isna(a) and pd.isna(b))
    return bool(a == b)


def compare(ref_dir: Path, run_dir: Path) -> dict:
    """Counts of lost, duplicated, errored, repeated and differing runs (see the module docstring)."""
    from lyaptune.store import RunStore

    ref, got = _trials(ref_dir), _trials(run_dir)
    epochs = RunStore(run_dir).epochs()
    lost = sorted(set(ref["trial_id"]) - set(got["trial_id"]))
    extra = sorted(set(got["trial_id"]) - set(ref["trial_id"]))
    dup_ids = int(got["trial_id"].duplicated().sum())
    dup_epochs = int(epochs.duplicated(["trial_id", "epoch"]).sum()) if len(epochs) else 0
    bad = got[got["status"] != "completed"]
    search = got[got["phase"] == "search"]
    repeated = int(search.duplicated(["arm", "params_json"]).sum())
    a = ref.set_index("trial_id").sort_index()
    b = got.drop_duplicates("trial_id", keep="last").set_index("trial_id").sort_index()
    common = a.index.intersection(b.index)
    cols = [c for c in COMPARED if c in a.columns and c in b.columns]
    differing = []
    for tid in common:
        x, y = a.loc[tid, cols], b.loc[tid, cols]
        diff = [c for c in cols if not _same(x[c], y[c])]
        if diff:
            differing.append((tid, diff))
    return {
        "runs": len(ref),
        "lost": lost,
        "extra": extra,
        "duplicated": dup_ids + dup_epochs,
        "errored": int((got["status"] == "errored").sum()),
        "not_completed": bad[["trial_id", "status", "message"]].to_dict("records"),
        "repeated": repeated,
        "differing": differing,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--spec", type=Path, default=REPO / "experiments" / "quickstart.yaml")
    p.add_argument("--small", action="store_true", help="a 2-arm synthetic spec (10 runs) instead of --spec")
    p.add_argument("--kills", type=int, default=20, help="kill points per cycle (default 20)")
    p.add_argument("--cycles", type=int, default=1, help="repeat the whole soak (default 1)")
    p.add_argument("--seed", type=int, default=0, help="seed of the kill points")
    p.add_argument("--max-concurrent", type=int, default=1)
    p.add_argument(
        "--points",
        default="start,recorded",
        help="kill points to draw from: start, checkpoint (needs --checkpoint-every), recorded",
    )
    p.add_argument("--checkpoint-every", type=int, default=None, help="set the spec's checkpoint_every")
    p.add_argument("--window", type=int, default=3, help="draw each kill point among the next N runs")
    p.add_argument("--load", type=int, default=0, help="busy loops pinning cores while it runs")
    p.add_argument("--out", type=Path, default=None, help="work directory (default: a temporary one)")
    args = p.parse_args(argv)
    where = [w.strip() for w in args.points.split(",") if w.strip()]
    if "checkpoint" in where and not args.checkpoint_every:
        p.error("--points checkpoint needs --checkpoint-every")
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.load)]
    work = args.out or Path(tempfile.mkdtemp(prefix="lyaptune-soak-"))
    work.mkdir(parents=True, exist_ok=True)
    spec = SMALL if args.small else yaml.safe_load(args.spec.read_text())
    if args.checkpoint_every:
        spec = {**spec, "checkpoint_every": args.checkpoint_every}
    spec_path = work / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(spec, sort_keys=False))
    rng = random.Random(args.seed)
    failed = 0
    totals = {"lost": 0, "duplicated": 0, "errored": 0, "repeated": 0, "differing": 0, "kills": 0}

    def log(msg: str) -> None:
        print(msg, flush=True)

    try:
        for cycle in range(args.cycles):
            cdir = work / f"cycle{cycle}"
            ref_dir, ref_s = reference(spec_path, cdir / "ref", args.max_concurrent)
            ref = _trials(ref_dir)
            order = list(ref.sort_values("created_at")["trial_id"])
            log(f"cycle {cycle + 1}: reference {len(ref)} runs in {ref_s:.0f} s ({ref_dir})")
            run_dir, events, run_s = killed_run(
                spec_path,
                cdir / "killed",
                order,
                args.kills,
                rng,
                where,
                args.max_concurrent,
                args.window,
                log,
            )
            c = compare(ref_dir, run_dir)
            kills = sum(e["reached"] for e in events)
            totals["kills"] += kills
            for key in ("duplicated", "errored", "repeated"):
                totals[key] += c[key]
            totals["lost"] += len(c["lost"])
            totals["differing"] += len(c["differing"])
            log(
                f"cycle {cycle + 1}: {kills} kills, {len(events) - kills} points not reached; "
                f"{c['runs']} runs: lost {len(c['lost'])}, duplicated {c['duplicated']}, "
                f"errored {c['errored']}, "
                f"repeated configurations {c['repeated']}, differing from the reference {len(c['differing'])}"
                f" ({run_s:.0f} s)"
            )
            for row in c["not_completed"]:
                log(f"  not completed: {row['trial_id']} {row['status']}: {row['message']}")
            for tid, cols in c["differing"][:10]:
                log(f"  differs: {tid}: {', '.join(cols)}")
            if c["extra"]:
                log(f"  not in the reference: {c['extra']}")
            if c["not_completed"]:
                log("  ray.log tail:\n" + _ray_log_tail(run_dir))
            exact = args.max_concurrent == 1
            if c["lost"] or c["duplicated"] or c["errored"] or c["repeated"] or (exact and c["differing"]):
                failed += 1
    finally:
        for b in busy:
            b.kill()
            b.wait()
    log(
        f"soak: {args.cycles} cycle(s), {totals['kills']} kills; lost {totals['lost']}, duplicated "
        f"{totals['duplicated']}, errored {totals['errored']}, repeated configurations {totals['repeated']}, "
        f"differing runs {totals['differing']}; {failed} cycle(s) failed; work directory {work}"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
