"""Compaction of a run directory (lyaptune.store.RunStore.compact): real Parquet files, a reader in
another process driven at the compaction's known points, a compaction stopped (raised from its
fault-injection hook) or SIGKILLed at each of its steps, and the ``lyaptune compact`` CLI."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from lyaptune.store import COMPACTION_FAULT_ENV, COMPACTION_FILE, COMPACTION_STEPS, RunStore

ARMS = ("adam", "rlo", "sgd")
T0 = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)


class Killed(BaseException):
    """Stands for the process dying at a compaction step: nothing of the writer runs after it."""


def _row(
    i: int, *, status: str = "completed", objective: float | None = None, arm: str | None = None
) -> dict:
    return {
        "study": "s",
        "arm": arm or ARMS[i % 3],
        "trial_id": f"t{i:03d}",
        "phase": "search",
        "seed": i % 2,
        "status": status,
        "objective": float(i) if objective is None else objective,
        "updated_at": T0 + dt.timedelta(seconds=i),
        "param_lr": 10.0 ** -(i % 4),
    }


def _records(i: int) -> list[dict]:
    """``1 + i % 4`` epochs whose train_loss is ``i + epoch / 10``; the rlo arm adds a diagnostic."""
    out = []
    for e in range(1, 2 + i % 4):
        rec = {"epoch": e, "train_loss": i + e / 10, "lr": 0.1, "step": 10 * e}
        if ARMS[i % 3] == "rlo":
            rec["lyap_v"] = -float(e)
        out.append(rec)
    return out


def _fill(root: Path, n: int, *, running: tuple[int, ...] = ()) -> RunStore:
    store = RunStore(root, create=True)
    store.compact_every = 0  # compactions only where a test calls them
    store.write_spec({"name": "s"})
    for i in range(n):
        store.record_trial(_row(i, status="running" if i in running else "completed"), _records(i))
    return store


def _expected(n: int, *, running: tuple[int, ...] = (), objective: dict[int, float] | None = None) -> dict:
    """What a reader must see, built from the recipe above (not read back from the store)."""
    trials = {f"t{i:03d}": (objective or {}).get(i, float(i)) for i in range(n)}
    epochs = {(f"t{i:03d}", e): i + e / 10 for i in range(n) for e in range(1, 2 + i % 4)}
    status = {f"t{i:03d}": "running" if i in running else "completed" for i in range(n)}
    return {"trials": trials, "epochs": epochs, "status": status}


def _seen(store: RunStore) -> dict:
    """What RunStore's readers give, in the form of :func:`_expected`; fails on any duplicate."""
    t = store.trials()
    assert t["trial_id"].is_unique, t["trial_id"].tolist()
    e = store.epochs()
    assert not e.duplicated(["trial_id", "epoch"]).any()
    return {
        "trials": dict(zip(t["trial_id"], t["objective"])),
        "epochs": {(r.trial_id, r.epoch): r.train_loss for r in e.itertuples()},
        "status": dict(zip(t["trial_id"], t["status"])),
    }


def _copies_on_disk(root: Path) -> dict[str, int]:
    """How many stored copies of each run's row there are, over every visible trials file."""
    counts: dict[str, int] = {}
    for path in (root / "trials").glob("*.parquet"):
        for tid in pq.read_table(path, columns=["trial_id"]).column("trial_id").to_pylist():
            counts[tid] = counts.get(tid, 0) + 1
    return counts


def _epoch_copies_on_disk(root: Path) -> dict[tuple[str, int], int]:
    counts: dict[tuple[str, int], int] = {}
    for path in (root / "epochs").rglob("*.parquet"):
        t = pq.read_table(path, columns=["trial_id", "epoch"])
        for key in zip(t.column("trial_id").to_pylist(), t.column("epoch").to_pylist()):
            counts[key] = counts.get(key, 0) + 1
    return counts


def test_compaction_folds_finished_runs_into_parts(tmp_path: Path):
    root = tmp_path / "run"
    store = _fill(root, 12, running=(4,))
    assert store.compact() == 11
    assert sorted(p.name for p in (root / "trials").iterdir()) == ["@part-0000000001.parquet", "t004.parquet"]
    for arm in ARMS:  # one part per arm, plus the running run's own epochs file in its arm
        names = sorted(p.name for p in (root / "epochs" / f"arm={arm}").iterdir())
        assert names == ["@part-0000000001.parquet", *(["t004.parquet"] if arm == "rlo" else [])]
    assert not (root / COMPACTION_FILE).exists()
    assert _seen(RunStore(root)) == _expected(12, running=(4,))
    assert set(_copies_on_disk(root).values()) == {1}
    assert set(_epoch_copies_on_disk(root).values()) == {1}
    # the diagnostic of one arm survives in its part; other arms read NaN there
    e = RunStore(root).epochs()
    rlo = e[e["arm"] == "rlo"]
    assert dict(zip(zip(rlo["trial_id"], rlo["epoch"]), rlo["lyap_v"])) == {
        (f"t{i:03d}", k): -float(k) for i in range(12) if i % 3 == 1 for k in range(1, 2 + i % 4)
    }
    assert e.loc[e["arm"] != "rlo", "lyap_v"].isna().all()
    assert store.compact() == 0  # only the running run is left in its own file


def test_arm_and_column_selection(tmp_path: Path):
    root = tmp_path / "run"
    store = _fill(root, 9)
    store.compact()
    store.record_trial(_row(9), _records(9))  # one run in its own file
    got = RunStore(root).epochs("adam", columns=["train_loss"])
    assert got.columns.tolist() == ["arm", "trial_id", "phase", "seed", "epoch", "train_loss"]
    want = {(f"t{i:03d}", e): i + e / 10 for i in (0, 3, 6, 9) for e in range(1, 2 + i % 4)}
    assert {(r.trial_id, r.epoch): r.train_loss for r in got.itertuples()} == want
    two = RunStore(root).epochs(["adam", "sgd"], columns=["lr"])
    assert set(two["arm"]) == {"adam", "sgd"} and len(two) == sum(1 + i % 4 for i in range(10) if i % 3 != 1)
    with pytest.raises(ValueError, match="unknown epochs column 'nope'; choices: .*train_loss"):
        RunStore(root).epochs(columns=["nope"])


def test_a_run_recorded_again_after_its_compaction_keeps_the_newest(tmp_path: Path):
    root = tmp_path / "run"
    store = _fill(root, 6)
    store.compact()
    # a retry with an older (equal) updated_at still wins: the store makes it newer than the part's copy
    store.record_trial(_row(1, objective=-1.0), [{"epoch": 1, "train_loss": 7.5}])
    # moved to another arm without new epochs: its compacted epochs move with it
    store.record_trial(_row(2, objective=-2.0, arm="adam"))
    # its epochs removed
    store.record_trial(_row(3, objective=-3.0), [])
    want = _expected(6, objective={1: -1.0, 2: -2.0, 3: -3.0})
    want["epochs"] = {k: v for k, v in want["epochs"].items() if k[0] not in ("t001", "t003")}
    want["epochs"][("t001", 1)] = 7.5
    for reader in (RunStore(root), RunStore(root)):
        assert _seen(reader) == want
    e = RunStore(root).epochs()
    assert set(e.loc[e["trial_id"] == "t002", "arm"]) == {"adam"}
    assert store.compact() == 3  # t001, t002 and t003 had their own files again
    assert _seen(RunStore(root)) == want
    assert set(_copies_on_disk(root).values()) == {1}
    assert set(_epoch_copies_on_disk(root).values()) == {1}
    t = RunStore(root).trials().set_index("trial_id")
    assert t.loc["t001", "updated_at"] > t.loc["t000", "updated_at"] and t.loc["t001", "arm"] == "rlo"


def test_the_writer_compacts_every_n_finished_runs(tmp_path: Path):
    root = tmp_path / "run"
    store = RunStore(root, create=True)
    store.write_spec({"name": "s"})
    store.compact_every = 4
    for i in range(10):
        store.record_trial(_row(i, status="running"), _records(i))
        store.record_trial(_row(i), _records(i))
    parts = sorted(p.name for p in (root / "trials").glob("@part-*"))
    assert parts == ["@part-0000000001.parquet", "@part-0000000002.parquet"]
    assert sorted(p.name for p in (root / "trials").glob("t*")) == ["t008.parquet", "t009.parquet"]
    assert _seen(RunStore(root)) == _expected(10)


@pytest.mark.parametrize("step", COMPACTION_STEPS)
def test_a_compaction_stopped_at_each_step_reads_the_same_and_the_next_writer_finishes_it(
    tmp_path: Path, step: str
):
    root = tmp_path / "run"
    store = _fill(root, 10, running=(7,))
    store.compact()  # a first part, so that the second compaction also rewrites it
    store.record_trial(_row(2, objective=-2.0), _records(2))  # t002 again: its part is rewritten
    for i in range(10, 16):
        store.record_trial(_row(i), _records(i))
    want = _expected(16, running=(7,), objective={2: -2.0})
    assert _seen(RunStore(root)) == want

    def hook(at: str) -> None:
        if at == step:
            raise Killed(at)

    store.compaction_hook = hook
    with pytest.raises(Killed):
        store.compact()
    assert (root / COMPACTION_FILE).exists()
    assert _seen(RunStore(root)) == want  # a reader now, before anyone finishes it
    for reader in ("pandas", "duckdb", "polars"):
        from test_store import one_line_table

        rows = one_line_table(reader, str(root)).to_pylist()
        assert {r["trial_id"]: r["objective"] for r in rows} == want["trials"]
    writer = RunStore(root, create=True)  # the next driver
    writer.record_trial(_row(16), _records(16))
    assert not (root / COMPACTION_FILE).exists()
    want = _expected(17, running=(7,), objective={2: -2.0})
    assert _seen(RunStore(root)) == want
    writer.compact()
    assert _seen(RunStore(root)) == want
    assert set(_copies_on_disk(root).values()) == {1}
    assert set(_epoch_copies_on_disk(root).values()) == {1}
    assert sorted(p.name for p in (root / "trials").glob("t*")) == ["t007.parquet"]


_KILLED_WRITER = textwrap.dedent(
    """
    import sys
    from lyaptune.store import RunStore
    RunStore(sys.argv[1], create=True).compact()
    """
)


@pytest.mark.parametrize("step", COMPACTION_STEPS)
def test_a_compaction_sigkilled_at_each_step_loses_nothing(tmp_path: Path, step: str):
    root = tmp_path / "run"
    _fill(root, 9)
    want = _expected(9)
    env = {**os.environ, COMPACTION_FAULT_ENV: step}
    r = subprocess.run(
        [sys.executable, "-c", _KILLED_WRITER, str(root)], env=env, capture_output=True, text=True
    )
    assert r.returncode == -9, r.stderr
    assert _seen(RunStore(root)) == want
    assert RunStore(root, create=True).compact() in (0, 9)  # 0: it went forward, nothing left to fold
    assert _seen(RunStore(root)) == want
    assert not (root / COMPACTION_FILE).exists()
    assert not list((root / "trials").glob("t*"))
    assert set(_copies_on_disk(root).values()) == {1} and len(_copies_on_disk(root)) == 9
    assert set(_epoch_copies_on_disk(root).values()) == {1}


_READER = textwrap.dedent(
    """
    import json, sys
    sys.path.insert(0, sys.argv[2])
    from lyaptune.store import RunStore
    from test_store import one_line_table
    for line in sys.stdin:
        store = RunStore(sys.argv[1])
        t = store.trials()
        e = store.epochs()
        out = {
            "trials": t["trial_id"].tolist(),
            "objective": dict(zip(t["trial_id"], t["objective"])),
            "epochs": [[a, b] for a, b in zip(e["trial_id"], e["epoch"])],
            "one_line": {r: sorted(x["trial_id"] for x in one_line_table(r, sys.argv[1]).to_pylist())
                         for r in ("pandas", "duckdb", "polars")},
        }
        print(json.dumps(out), flush=True)
    """
)


def test_a_reader_process_sees_each_run_once_at_every_step_of_a_compaction(tmp_path: Path):
    root = tmp_path / "run"
    store = _fill(root, 8)
    store.compact()
    store.record_trial(_row(3, objective=-3.0), _records(3))
    for i in range(8, 14):
        store.record_trial(_row(i), _records(i))
    reader = subprocess.Popen(
        [sys.executable, "-c", _READER, str(root), str(Path(__file__).parent)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    want = _expected(14, objective={3: -3.0})
    want_epochs = sorted([list(k) for k in want["epochs"]])
    seen_at: list[str] = []

    def read(at: str) -> None:
        reader.stdin.write(at + "\n")
        reader.stdin.flush()
        line = reader.stdout.readline()
        assert line, f"the reader failed at {at}"
        got = json.loads(line)
        assert sorted(got["trials"]) == sorted(want["trials"]) and len(got["trials"]) == 14, at
        assert got["objective"] == want["trials"], at
        assert sorted(got["epochs"]) == want_epochs, at
        assert all(ids == sorted(want["trials"]) for ids in got["one_line"].values()), (at, got["one_line"])
        seen_at.append(at)

    try:
        read("before")
        store.compaction_hook = read
        assert store.compact() == 7
        read("after")
    finally:
        reader.stdin.close()
        reader.wait(timeout=60)
    assert seen_at == ["before", *COMPACTION_STEPS, "after"]
    assert reader.returncode == 0


def test_compact_cli(tmp_path: Path):
    root = tmp_path / "run"
    _fill(root, 5)
    r = subprocess.run(
        [sys.executable, "-m", "lyaptune.cli", "compact", str(root)], capture_output=True, text=True
    )
    assert r.returncode == 0, r.stderr
    assert "5 runs folded" in r.stdout
    assert [p.name for p in (root / "trials").iterdir()] == ["@part-0000000001.parquet"]
    assert _seen(RunStore(root)) == _expected(5)
    bad = subprocess.run(
        [sys.executable, "-m", "lyaptune.cli", "compact", str(tmp_path / "nope")],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1
    assert "not a lyaptune run directory" in bad.stderr


def test_compact_cli_is_refused_while_a_driver_holds_the_run(tmp_path: Path):
    from lyaptune.store import lock_run_dir

    root = tmp_path / "run"
    _fill(root, 3)
    with lock_run_dir(root):
        r = subprocess.run(
            [sys.executable, "-m", "lyaptune.cli", "compact", str(root)], capture_output=True, text=True
        )
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert f"pid {os.getpid()}" in r.stderr
    assert len(list((root / "trials").glob("t*"))) == 3
    assert pd.read_parquet(root / "trials").shape[0] == 3


def test_load_study_reads_the_compacted_layout(tmp_path: Path):
    from lyaptune.analysis.load import load_study

    root = tmp_path / "run"
    store = _fill(root, 7)
    store.compact()
    store.record_trial(_row(5, objective=-5.0), _records(5))  # a retry after its compaction
    st = load_study(root, epoch_columns=["train_loss"])
    want = _expected(7, objective={5: -5.0})
    assert dict(zip(st.trials["trial_id"], st.trials["objective"])) == want["trials"]
    assert st.epochs.columns.tolist() == ["arm", "trial_id", "phase", "seed", "epoch", "train_loss"]
    assert {(r.trial_id, r.epoch): r.train_loss for r in st.epochs.itertuples()} == want["epochs"]
