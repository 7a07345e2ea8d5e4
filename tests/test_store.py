"""Tests for lyaptune.store: real Parquet files on disk, read back with pandas and pyarrow."""

from __future__ import annotations

import json
import math
import os
import threading
from pathlib import Path
from types import MappingProxyType

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from lyaptune.errors import UserError
from lyaptune.store import (
    EPOCH_RECORD_FIELDS,
    TRIAL_COLUMNS,
    TRIALS_SCHEMA,
    RunStore,
    read_parquet_checked,
    trial_row,
)


def _records(n: int, *, scale: float = 1.0, **extra: float) -> list[dict]:
    """``n`` epoch records whose values encode (scale, epoch), so the test knows what to expect."""
    out = []
    for e in range(1, n + 1):
        rec = {
            "epoch": e,
            "train_loss": scale / e,
            "train_acc": 0.1 * e,
            "grad_norm": scale * 10.0 / e,
            "val_loss": scale / e + 0.5,
            "val_acc": 0.05 * e,
            "test_loss": scale / e + 0.25,
            "test_acc": 0.04 * e,
            "lr": 1e-3,
            "lyapunov_drift": -scale / (e * (e + 1)),
            "step": 10 * e,
            "time_s": 0.5 * e,
        }
        rec.update({k: v * e for k, v in extra.items()})
        out.append(rec)
    return out


def _row(trial_id: str, arm: str, *, status: str = "completed", phase: str = "search", **cols) -> dict:
    return {
        "study": "s",
        "arm": arm,
        "trial_id": trial_id,
        "phase": phase,
        "seed": 0,
        "status": status,
        **cols,
    }


@pytest.fixture
def store(tmp_path: Path) -> RunStore:
    s = RunStore(tmp_path / "run", create=True)
    s.write_spec({"name": "s"})
    return s


def _visible_and_hidden(root: Path) -> tuple[list[Path], list[Path]]:
    files = [p for p in root.rglob("*") if p.is_file()]
    hidden = [p for p in files if any(part.startswith((".", "_")) for part in p.relative_to(root).parts)]
    return files, hidden


def test_record_fields_match_trial_engine():
    from lyaptune.train import RECORD_FIELDS

    assert EPOCH_RECORD_FIELDS == RECORD_FIELDS


def test_empty_store_has_the_fixed_schema(store: RunStore):
    df = store.trials()
    assert list(df.columns) == list(TRIAL_COLUMNS)
    assert len(df) == 0
    assert df["seed"].dtype == np.int64
    assert df["repeat"].dtype == np.int64
    assert df["epochs_completed"].dtype == np.int64
    assert df["optuna_number"].dtype == pd.Int64Dtype()
    assert df["population_size"].dtype == pd.Int64Dtype()
    for col in ("objective", "min_grad_norm", "final_test_acc", "k_hat", "wall_s", "population_wall_s"):
        assert df[col].dtype == np.float64, col
    for col in ("updated_at", "created_at"):
        assert isinstance(df[col].dtype, pd.DatetimeTZDtype)
        assert str(df[col].dtype.tz) == "UTC"
    ep = store.epochs()
    assert list(ep.columns) == ["arm", "trial_id", "phase", "seed", *EPOCH_RECORD_FIELDS]
    assert len(ep) == 0
    assert store.trial_ids() == set()


def test_partial_table_keeps_arrow_types(store: RunStore):
    store.record_trial(_row("t0", "a", status="running"))  # only the required columns
    schema = pq.read_schema(Path(store.path) / "trials" / "t0.parquet")
    assert schema.names == list(TRIAL_COLUMNS)
    assert schema.field("seed").type == pa.int64()
    assert schema.field("repeat").type == pa.int64()
    assert schema.field("optuna_number").type == pa.int64()
    assert schema.field("population_size").type == pa.int64()
    assert schema.field("objective").type == pa.float64()
    assert schema.field("population_wall_s").type == pa.float64()
    assert schema.field("initial_loss").type == pa.float64()
    assert schema.field("info_json").type == pa.string()
    assert schema.field("params_json").type == pa.string()
    assert schema.field("updated_at").type == pa.timestamp("us", tz="UTC")
    assert schema.field("created_at").type == pa.timestamp("us", tz="UTC")
    stored = pq.read_table(Path(store.path) / "trials" / "t0.parquet").to_pylist()[0]
    assert stored["repeat"] == 0 and stored["params_json"] == "{}"
    assert stored["population_size"] is None and stored["population_wall_s"] is None
    assert stored["created_at"] == stored["updated_at"]  # first recorded now
    df = store.trials()
    assert df["optuna_number"].isna().all() and math.isnan(df["objective"].iloc[0])
    assert df["population_size"].isna().all() and df["repeat"].tolist() == [0]


def test_retry_replaces_row_and_epochs(store: RunStore):
    store.record_trial(_row("t1", "a", objective=1.0), _records(5))
    store.record_trial(_row("t2", "a", objective=2.0), _records(4))
    store.record_trial(_row("t3", "b", objective=3.0), _records(2))
    # t1 retried: fewer epochs, other values
    store.record_trial(_row("t1", "a", objective=7.0, status="diverged"), _records(3, scale=2.0))

    df = store.trials()
    assert sorted(df["trial_id"]) == ["t1", "t2", "t3"]
    assert df["trial_id"].is_unique
    t1 = df.set_index("trial_id").loc["t1"]
    assert t1["objective"] == 7.0 and t1["status"] == "diverged"

    ep = store.epochs()
    assert not ep.duplicated(["trial_id", "epoch"]).any()
    assert ep.groupby("trial_id").size().to_dict() == {"t1": 3, "t2": 4, "t3": 2}
    e1 = ep[ep.trial_id == "t1"].sort_values("epoch")
    assert e1["epoch"].tolist() == [1, 2, 3]
    assert e1["train_loss"].tolist() == [2.0, 1.0, 2.0 / 3.0]
    assert e1["grad_norm"].tolist() == [20.0, 10.0, 20.0 / 3.0]
    assert ep.set_index("trial_id").loc["t3", "arm"].tolist() == ["b", "b"]
    assert store.trial_ids() == {"t1", "t2", "t3"}
    assert store.trial_ids({"completed"}) == {"t2", "t3"}
    assert store.trial_ids(["diverged", "errored"]) == {"t1"}
    assert len(store.epochs("a")) == 7 and set(store.epochs("a")["arm"]) == {"a"}
    assert len(store.epochs("missing-arm")) == 0


def test_epochs_none_keeps_and_empty_removes(store: RunStore):
    store.record_trial(_row("t1", "a", status="running"), _records(2))
    store.record_trial(_row("t1", "a", status="completed"))  # status update, epochs untouched
    assert len(store.epochs()) == 2
    assert store.trials()["status"].tolist() == ["completed"]
    store.record_trial(_row("t1", "a", status="errored"), [])
    assert len(store.epochs()) == 0
    assert not list((Path(store.path) / "epochs").rglob("*.parquet"))


def test_trial_moving_arm_leaves_no_copy(store: RunStore):
    store.record_trial(_row("t1", "a"), _records(3))
    store.record_trial(_row("t1", "b"), _records(2))
    ep = store.epochs()
    assert ep["arm"].tolist() == ["b", "b"]
    assert len(list((Path(store.path) / "epochs").rglob("*.parquet"))) == 1


def test_param_columns_union_across_arms(store: RunStore):
    store.record_trial(_row("a0", "adam", param_lr=1e-3, param_beta2=0.99))
    store.record_trial(_row("r0", "rlo", param_lr=np.float32(0.5), param_direction="sign", param_eta=2))
    store.record_trial(_row("r1", "rlo", param_lr=0.25, param_direction="tanh", param_precondition=True))
    # every trials file has the one fixed schema; the hyperparameters are a JSON object
    for name in ("a0", "r0", "r1"):
        assert pq.read_schema(Path(store.path) / "trials" / f"{name}.parquet").equals(TRIALS_SCHEMA)
    stored = {
        r["trial_id"]: json.loads(r["params_json"])
        for r in pq.read_table(Path(store.path) / "trials").to_pylist()
    }
    assert stored == {
        "a0": {"lr": 1e-3, "beta2": 0.99},
        "r0": {"lr": 0.5, "direction": "sign", "eta": 2},
        "r1": {"lr": 0.25, "direction": "tanh", "precondition": True},
    }
    full = store.trials()
    assert list(full.columns[: len(TRIAL_COLUMNS)]) == list(TRIAL_COLUMNS)
    params = list(full.columns[len(TRIAL_COLUMNS) :])
    assert params == ["param_beta2", "param_direction", "param_eta", "param_lr", "param_precondition"]
    for col in ("param_lr", "param_beta2", "param_eta"):
        assert full[col].dtype == np.float64, col
    for col in ("param_direction", "param_precondition"):
        assert pd.api.types.is_string_dtype(full[col].dtype), col
    df = full.set_index("trial_id")
    assert df.loc["a0", "param_lr"] == 1e-3 and df.loc["r0", "param_lr"] == 0.5
    assert df.loc["a0", "param_beta2"] == 0.99
    assert pd.isna(df.loc["r0", "param_beta2"]) and pd.isna(df.loc["r1", "param_beta2"])
    assert pd.isna(df.loc["a0", "param_direction"]) and df.loc["r1", "param_direction"] == "tanh"
    assert df.loc["r0", "param_eta"] == 2.0 and pd.isna(df.loc["r1", "param_eta"])
    assert df.loc["r1", "param_precondition"] == "true" and pd.isna(df.loc["r0", "param_precondition"])


def test_param_column_turning_categorical_becomes_string(store: RunStore):
    store.record_trial(_row("t1", "a", param_x=0.5, param_lr=0.1))
    store.record_trial(_row("t2", "a", param_x="auto"))
    store.record_trial(_row("t1", "a", param_x=0.25, param_lr=0.2))  # replaced in place
    df = store.trials()
    assert pd.api.types.is_string_dtype(df["param_x"].dtype)
    assert df["param_lr"].dtype == np.float64
    assert df["trial_id"].tolist() == ["t1", "t2"]  # a replaced row keeps its place
    assert df["param_x"].tolist() == ["0.25", "auto"]
    assert df["param_lr"].iloc[0] == 0.2 and pd.isna(df["param_lr"].iloc[1])


def test_other_readers_see_a_store_in_progress(store: RunStore):
    store.record_trial(_row("t1", "adam-exp"), _records(3))
    store.record_trial(_row("t2", "lyam"), _records(2, rlo_residual=0.5))
    store.record_trial(_row("t3", "lyam"), _records(4, rlo_residual=0.5))
    root = Path(store.path)

    table = ds.dataset(root / "epochs", format="parquet", partitioning="hive").to_table()
    assert table.num_rows == 9
    counts = pd.Series(table.column("arm").to_pylist()).value_counts().to_dict()
    assert counts == {"lyam": 6, "adam-exp": 3}
    tids = table.column("trial_id").to_pylist()
    arms = table.column("arm").to_pylist()
    assert {(t, a) for t, a in zip(tids, arms)} == {("t1", "adam-exp"), ("t2", "lyam"), ("t3", "lyam")}

    # with the unified schema the diagnostics column that only one arm has survives
    full = ds.dataset(root / "epochs", partitioning="hive", schema=store.epochs_schema()).to_table()
    assert "rlo_residual" in full.column_names and full.num_rows == 9
    res = dict(zip(full.column("trial_id").to_pylist(), full.column("rlo_residual").to_pylist()))
    assert res["t1"] is None

    pdf = pd.read_parquet(root / "epochs")
    assert len(pdf) == 9 and set(pdf["arm"].astype(str)) == {"lyam", "adam-exp"}
    assert pq.read_table(root / "trials").num_rows == 3
    trials = pd.read_parquet(root / "trials")  # the whole trials table in one line
    assert sorted(trials["trial_id"]) == ["t1", "t2", "t3"]
    assert dict(zip(trials["trial_id"], trials["arm"])) == {"t1": "adam-exp", "t2": "lyam", "t3": "lyam"}

    ep = store.epochs()
    assert list(ep.columns) == ["arm", "trial_id", "phase", "seed", *EPOCH_RECORD_FIELDS, "rlo_residual"]
    ep = ep.set_index(["trial_id", "epoch"])
    assert math.isnan(ep.loc[("t1", 2), "rlo_residual"])
    assert ep.loc[("t3", 4), "rlo_residual"] == 2.0


def test_arm_names_are_escaped_and_decoded(store: RunStore):
    store.record_trial(_row("_x/1", "adam lr=1e-3/b"), _records(2))
    files, hidden = _visible_and_hidden(Path(store.path))
    assert not hidden
    table = ds.dataset(Path(store.path) / "epochs", partitioning="hive").to_table()
    assert set(table.column("arm").to_pylist()) == {"adam lr=1e-3/b"}
    ep = store.epochs("adam lr=1e-3/b")
    assert set(ep["arm"]) == {"adam lr=1e-3/b"} and set(ep["trial_id"]) == {"_x/1"}


def test_no_temporary_files_remain(store: RunStore):
    root = Path(store.path)
    for i in range(4):
        store.record_trial(_row(f"t{i}", f"arm{i % 2}"), _records(2))
    store.record_trial(_row("t0", "arm0"), _records(1))
    store.write_study_info(start="now")
    store.write_study_info(end="later")
    files, hidden = _visible_and_hidden(root)
    assert not hidden, hidden
    assert {p.relative_to(root).as_posix() for p in files} == {
        "spec.yaml",
        "study.json",
        *(f"trials/t{i}.parquet" for i in range(4)),
        *(f"epochs/arm=arm{i % 2}/t{i}.parquet" for i in range(4)),
    }


def test_stale_temporary_file_is_ignored_and_cleaned(store: RunStore):
    root = Path(store.path)
    store.record_trial(_row("t1", "a"), _records(2))
    stale = root / "epochs" / "arm=a" / ".lyaptune-tmp-t9.parquet.dead"
    stale.write_bytes(b"partial")
    assert len(RunStore(root).epochs()) == 2  # a reader skips it
    writer = RunStore(root, create=True)
    writer.record_trial(_row("t2", "a"), _records(1))
    assert not stale.exists()


def test_readers_never_see_a_partial_file(store: RunStore):
    errors: list[BaseException] = []
    done = threading.Event()
    seen: list[int] = []

    def read() -> None:
        reader = RunStore(store.path)
        while not done.is_set():
            try:
                seen.append(len(reader.trials()))
                reader.epochs()
            except BaseException as err:  # noqa: BLE001 - collected and re-raised in the test body
                errors.append(err)
                return

    thread = threading.Thread(target=read)
    thread.start()
    try:
        for i in range(40):
            store.record_trial(_row(f"t{i % 10}", f"arm{i % 3}"), _records(1 + i % 4))
    finally:
        done.set()
        thread.join()
    assert not errors, errors[0]
    assert seen == sorted(seen)  # rows only ever appear, never vanish
    assert len(store.trials()) == 10


def test_record_trial_is_thread_safe(store: RunStore):
    def work(k: int) -> None:
        for i in range(6):
            store.record_trial(_row(f"w{k}-{i}", f"arm{k}"), _records(2))

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(store.trials()) == 24
    assert len(store.epochs()) == 48


def test_file_uri(tmp_path: Path):
    uri = (tmp_path / "uri-run").as_uri()
    assert uri.startswith("file://")
    writer = RunStore(uri, create=True)
    writer.write_spec({"name": "u"})
    writer.record_trial(_row("t1", "a", objective=0.5), _records(3))
    assert writer.uri == uri
    assert (tmp_path / "uri-run" / "trials" / "t1.parquet").is_file()
    reader = RunStore(uri)
    assert reader.trials()["objective"].tolist() == [0.5]
    assert len(reader.epochs()) == 3
    assert read_parquet_checked(uri + "/trials/t1.parquet")["trial_id"].tolist() == ["t1"]
    assert len(RunStore(tmp_path / "uri-run").trials()) == 1  # the same run as a plain path


def test_not_a_run_directory(tmp_path: Path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UserError, match=r"is not a lyaptune run directory \(no spec.yaml\)") as err:
        RunStore(empty)
    assert str(empty) in str(err.value)
    with pytest.raises(UserError, match="does not exist") as err:
        RunStore(tmp_path / "nowhere")
    assert str(tmp_path / "nowhere") in str(err.value)
    # study.json alone (a driver killed before writing the spec) is still a run directory
    RunStore(tmp_path / "early", create=True).write_study_info(start="t0")
    assert RunStore(tmp_path / "early").read_study_info() == {"start": "t0"}


def test_unwritable_location(tmp_path: Path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    with pytest.raises(UserError) as err:
        RunStore(blocker / "run", create=True)
    assert str(blocker / "run") in str(err.value)
    assert "\n" not in str(err.value)
    with pytest.raises(UserError, match="a file of that name exists"):
        RunStore(blocker, create=True)


def test_corrupt_trials_file_is_named(store: RunStore):
    store.record_trial(_row("t1", "a"), _records(2))
    store.record_trial(_row("t2", "a"), _records(2))
    path = Path(store.path) / "trials" / "t1.parquet"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match="corrupt or truncated") as err:
        store.trials()
    assert str(path) in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(UserError, match=r"trials/t1\.parquet"):
        RunStore(store.path).trial_ids()
    # the writer reads a run's own earlier file only: another run records, this one is refused
    writer = RunStore(store.path, create=True)
    writer.record_trial(_row("t3", "a"))
    with pytest.raises(UserError, match=r"trials/t1\.parquet"):
        writer.record_trial(_row("t1", "a"))


def test_corrupt_legacy_trials_file_is_named(store: RunStore):
    store.record_trial(_row("t1", "a"), _records(2))
    path = Path(store.path) / "trials.parquet"
    path.write_bytes(b"this is not parquet at all")
    with pytest.raises(UserError, match="corrupt or truncated") as err:
        store.trials()
    assert str(path) in str(err.value)
    with pytest.raises(UserError, match="trials.parquet"):
        RunStore(store.path).trial_ids()
    with pytest.raises(UserError, match="trials.parquet"):
        RunStore(store.path, create=True).record_trial(_row("t2", "a"))
    with pytest.raises(UserError) as err:
        read_parquet_checked(path)
    assert str(path) in str(err.value)


def test_truncated_epochs_file_is_named(store: RunStore):
    store.record_trial(_row("t1", "a"), _records(3))
    store.record_trial(_row("t2", "b"), _records(3))
    path = Path(store.path) / "epochs" / "arm=b" / "t2.parquet"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match="corrupt or truncated") as err:
        store.epochs()
    assert str(path) in str(err.value)
    assert len(store.epochs("a")) == 3  # the other arm is still readable
    with pytest.raises(UserError, match="arm=b"):
        store.epochs_schema()


def test_missing_parquet_file_is_named(tmp_path: Path):
    with pytest.raises(UserError, match="missing Parquet file") as err:
        read_parquet_checked(tmp_path / "nope.parquet")
    assert str(tmp_path / "nope.parquet") in str(err.value)


def test_orphan_epochs_are_skipped(store: RunStore):
    store.record_trial(_row("t1", "a"), _records(2))
    # an epochs file written by a driver that died before writing its row
    orphan = Path(store.path) / "epochs" / "arm=a" / "ghost.parquet"
    pq.write_table(pa.table({"trial_id": ["ghost"], "phase": ["search"], "seed": [0], "epoch": [1]}), orphan)
    assert set(store.epochs()["trial_id"]) == {"t1"}
    assert set(store.epochs(include_orphans=True)["trial_id"]) == {"t1", "ghost"}


def test_reopened_store_sees_rows_and_upserts(store: RunStore):
    store.record_trial(_row("t1", "a", objective=1.0, param_lr=0.1), _records(5))
    store.record_trial(_row("t2", "b", objective=2.0, param_gamma=0.9), _records(2))
    again = RunStore(store.path, create=True)
    before = again.trials().set_index("trial_id")
    assert sorted(before.index) == ["t1", "t2"]
    again.record_trial(_row("t1", "a", objective=0.25, param_lr=0.2), _records(3))
    again.record_trial(_row("t3", "b", param_direction="sign"), _records(1))
    df = RunStore(store.path).trials().set_index("trial_id")
    assert sorted(df.index) == ["t1", "t2", "t3"]
    assert df.loc["t1", "objective"] == 0.25 and df.loc["t1", "param_lr"] == 0.2
    assert df.loc["t2", "param_gamma"] == 0.9 and pd.isna(df.loc["t1", "param_gamma"])
    assert df.loc["t2", "updated_at"] == before.loc["t2", "updated_at"]  # untouched rows keep their time
    ep = RunStore(store.path).epochs()
    assert ep.groupby("trial_id").size().to_dict() == {"t1": 3, "t2": 2, "t3": 1}
    assert not ep.duplicated(["trial_id", "epoch"]).any()


def test_spec_and_study_info_round_trip(store: RunStore):
    spec = {
        "name": "q",
        "task": MappingProxyType({"dataset": "digits", "epochs": 20, "batch_size": "full"}),
        "arms": [{"name": "lyam", "space": {"betas": (0.9, 0.999)}}],
    }
    store.write_spec(spec)
    text = (Path(store.path) / "spec.yaml").read_text()
    assert text.startswith("name: q\n")  # keys keep their order
    assert store.read_spec() == {
        "name": "q",
        "task": {"dataset": "digits", "epochs": 20, "batch_size": "full"},
        "arms": [{"name": "lyam", "space": {"betas": [0.9, 0.999]}}],
    }
    store.write_study_info(lyaptune="0.1.0", start="2024-01-01T00:00:00Z", versions={"torch": "2"})
    store.write_study_info(end="2024-01-01T01:00:00Z", start="2024-01-01T00:00:01Z")
    info = json.loads((Path(store.path) / "study.json").read_text())
    assert info == {
        "lyaptune": "0.1.0",
        "start": "2024-01-01T00:00:01Z",
        "versions": {"torch": "2"},
        "end": "2024-01-01T01:00:00Z",
    }
    assert RunStore(store.path).read_study_info() == info


def test_bad_spec_and_study_files_are_named(store: RunStore):
    (Path(store.path) / "spec.yaml").write_text("name: [unclosed\n")
    with pytest.raises(UserError, match="spec.yaml.*invalid YAML"):
        store.read_spec()
    (Path(store.path) / "study.json").write_text("{not json")
    with pytest.raises(UserError, match="study.json.*invalid JSON"):
        store.read_study_info()


@pytest.mark.parametrize(
    ("row", "match"),
    [
        (_row("t", "a", statuss="completed"), r"unknown trial column\(s\) 'statuss'"),
        (_row("t", "a", status="done"), r"status must be one of completed, diverged.*'done'"),
        (_row("t", "a", phase="tune"), r"phase must be one of search, final; got 'tune'"),
        (_row("", "a"), r"non-empty trial_id"),
        (_row("t", "a", seed=1.5), r"seed must be an integer, got 1.5"),
        (_row("t", "a", objective="low"), r"objective must be a number, got 'low'"),
        (_row("t", "a", repeat=0.5), r"repeat must be an integer, got 0.5"),
        (_row("t", "a", population_size="four"), r"population_size must be an integer, got 'four'"),
        (_row("t", "a", population_wall_s="slow"), r"population_wall_s must be a number, got 'slow'"),
        (_row("t", "a", params_json="{}"), r"unknown trial column\(s\) 'params_json'.*'param_<name>'"),
    ],
)
def test_bad_rows_are_rejected(store: RunStore, row: dict, match: str):
    with pytest.raises(ValueError, match=match):
        store.record_trial(row)
    assert not (Path(store.path) / "trials").exists()
    assert not (Path(store.path) / "epochs").exists()


def test_bad_epoch_values_are_rejected(store: RunStore):
    recs = _records(2)
    recs[1]["rlo_residual"] = "big"
    with pytest.raises(ValueError, match=r"trial 't'.*rlo_residual must be a number, got 'big'"):
        store.record_trial(_row("t", "a"), recs)
    recs = _records(2)
    recs[0]["step"] = 2.5
    with pytest.raises(ValueError, match=r"step must be an integer, got 2.5"):
        store.record_trial(_row("t", "a"), recs)
    assert not (Path(store.path) / "trials").exists() and not (Path(store.path) / "epochs").exists()


def test_repeated_epoch_is_rejected(store: RunStore):
    recs = _records(2) + [_records(2)[1]]
    with pytest.raises(ValueError, match="two records for epoch 2"):
        store.record_trial(_row("t", "a"), recs)
    with pytest.raises(ValueError, match="unknown status 'done'"):
        store.trial_ids({"done"})


def test_trial_row_from_a_hand_built_result(store: RunStore):
    from lyaptune.train import TrialConfig, TrialResult

    nan, inf = float("nan"), float("inf")
    recs = [
        {"epoch": 1, "train_loss": 2.0, "grad_norm": 3.0, "val_loss": 2.1, "val_acc": 0.2, "step": 4},
        {"epoch": 2, "train_loss": 1.0, "grad_norm": 0.5, "val_loss": 1.2, "val_acc": 0.5, "step": 8},
        {"epoch": 3, "train_loss": 1.5, "grad_norm": 1.25, "val_loss": 1.4, "val_acc": 0.4, "step": 12},
        {"epoch": 4, "train_loss": inf, "grad_norm": nan, "val_loss": nan, "val_acc": 0.1, "step": 16},
    ]
    for r in recs:
        r.update(test_loss=r["val_loss"] + 1.0, test_acc=r["val_acc"] / 2, lr=0.01, time_s=0.1 * r["epoch"])
    info = {"initial_loss": 2.302585, "k_hat": 40.0, "derived_lr": 0.0125, "k_hat_values": [40.0, 38.5]}
    result = TrialResult(status="diverged", records=recs, info=info, wall_s=3.5, message="non-finite loss")
    config = TrialConfig(
        dataset="digits", model="fc", optimizer="adam", schedule="derived-constant", epochs=4
    )
    row = trial_row(
        study="q",
        arm="derived",
        trial_id="derived-0",
        phase="final",
        seed=2,
        config=config,
        result=result,
        objective=1.4,
        optuna_number=None,
        params={"multiplier": 2.0},
    )
    # by hand: 4 records; the last one is the final; min grad norm over the finite ones is 0.5
    assert row["epochs_completed"] == 4
    assert row["min_grad_norm"] == 0.5
    assert row["final_train_loss"] == inf and math.isnan(row["final_grad_norm"])
    assert math.isnan(row["final_val_loss"]) and row["final_val_acc"] == 0.1
    assert math.isnan(row["final_test_loss"]) and row["final_test_acc"] == 0.05
    assert (row["initial_loss"], row["k_hat"], row["derived_lr"]) == (2.302585, 40.0, 0.0125)
    assert (row["status"], row["message"], row["wall_s"]) == ("diverged", "non-finite loss", 3.5)
    assert (row["optimizer"], row["schedule"], row["dataset"], row["model"]) == (
        "adam",
        "derived-constant",
        "digits",
        "fc",
    )
    assert json.loads(row["info_json"]) == info
    assert TrialConfig.from_dict(json.loads(row["config_json"])) == config
    assert row["param_multiplier"] == 2.0

    store.record_trial(row, recs)
    got = store.trials().iloc[0]
    assert got["min_grad_norm"] == 0.5 and got["final_train_loss"] == inf
    assert got["phase"] == "final" and got["seed"] == 2 and pd.isna(got["optuna_number"])
    assert got["objective"] == 1.4
    ep = store.epochs()
    assert ep["seed"].tolist() == [2, 2, 2, 2] and ep["phase"].tolist() == ["final"] * 4
    assert ep["grad_norm"].tolist()[:3] == [3.0, 0.5, 1.25] and math.isnan(ep["grad_norm"].iloc[3])
    assert math.isnan(ep["train_acc"].iloc[0])  # a field missing from the records is stored as null

    # without a result: a running trial, nothing measured yet
    bare = trial_row(
        study="q", arm="a", trial_id="x", phase="search", seed=0, config={"model": "fc"}, result=None
    )
    assert bare["status"] == "running" and bare["epochs_completed"] == 0 and bare["model"] == "fc"
    assert bare["min_grad_norm"] is None and bare["k_hat"] is None and json.loads(bare["info_json"]) == {}
    override = trial_row(
        study="q",
        arm="a",
        trial_id="y",
        phase="search",
        seed=0,
        config=config,
        result=result,
        status="stopped",
    )
    assert override["status"] == "stopped"


def test_info_json_with_numpy_and_tuples(store: RunStore):
    from lyaptune.train import TrialResult

    info = {"k_hat_values": np.array([1.5, 2.5]), "normalization": {"mean": (0.5,)}, "n": np.int64(7)}
    result = TrialResult(status="completed", records=[], info=info, wall_s=0.0)
    row = trial_row(study="q", arm="a", trial_id="t", phase="search", seed=0, config={}, result=result)
    assert json.loads(row["info_json"]) == {
        "k_hat_values": [1.5, 2.5],
        "normalization": {"mean": [0.5]},
        "n": 7,
    }
    assert row["min_grad_norm"] is None and row["final_train_loss"] is None
    store.record_trial(row, result.records)
    assert store.trials()["epochs_completed"].tolist() == [0]


def test_path_property(store: RunStore, tmp_path: Path):
    assert store.path == os.path.abspath(tmp_path / "run")
    assert store.uri == store.path and store.is_local


# -- the layout of this version: one trials file per run --------------------------------------------

# The trials.parquet of the previous version: its fixed columns (no repeat, population_*, params_json,
# created_at), then param_<name> columns typed float64 or string, written whole by its writer.
_LEGACY_FIXED = [
    f
    for f in TRIALS_SCHEMA
    if f.name not in {"repeat", "population_wall_s", "population_size", "params_json", "created_at"}
]


def _write_legacy_store(root: Path) -> None:
    t0 = pd.Timestamp("2024-01-01T00:00:00Z").to_pydatetime()
    rows = [
        _row("old-a", "adam", objective=0.5, seed=1, updated_at=t0, param_lr=0.01),
        _row("old-b", "rlo", objective=0.75, updated_at=t0 + pd.Timedelta(seconds=1), param_direction="sign"),
    ]
    arrays = [pa.array([r.get(f.name) for r in rows], f.type) for f in _LEGACY_FIXED]
    arrays += [pa.array([0.01, None], pa.float64()), pa.array([None, "sign"], pa.string())]
    names = [f.name for f in _LEGACY_FIXED] + ["param_lr", "param_direction"]
    root.mkdir(parents=True)
    (root / "spec.yaml").write_text("name: s\n")
    pq.write_table(pa.Table.from_arrays(arrays, names=names), root / "trials.parquet")
    for r in rows:
        (root / "epochs" / f"arm={r['arm']}").mkdir(parents=True)
        recs = pa.Table.from_pylist(
            [{"trial_id": r["trial_id"], "phase": "search", "seed": 0, **e} for e in _records(2)]
        )
        pq.write_table(recs, root / "epochs" / f"arm={r['arm']}" / f"{r['trial_id']}.parquet")


def test_a_store_of_the_previous_version_reads_and_resumes(tmp_path: Path):
    root = tmp_path / "old"
    _write_legacy_store(root)
    legacy_bytes = (root / "trials.parquet").read_bytes()
    df = RunStore(root).trials()
    assert df["trial_id"].tolist() == ["old-a", "old-b"]  # the file's order
    assert list(df.columns) == [*TRIAL_COLUMNS, "param_direction", "param_lr"]
    assert df["repeat"].tolist() == [0, 0] and df["population_size"].isna().all()
    assert df["param_lr"].iloc[0] == 0.01 and pd.isna(df["param_lr"].iloc[1])
    assert df["param_direction"].iloc[1] == "sign" and df["seed"].tolist() == [1, 0]
    assert RunStore(root).trial_ids({"completed"}) == {"old-a", "old-b"}
    assert len(RunStore(root).epochs()) == 4

    writer = RunStore(root, create=True)  # a resumed driver
    writer.record_trial(_row("old-b", "rlo", objective=0.25, param_direction="tanh"), _records(3))
    writer.record_trial(_row("new-c", "adam", objective=0.125, param_lr=0.1), _records(1))
    assert (root / "trials.parquet").read_bytes() == legacy_bytes  # never rewritten
    df = RunStore(root).trials().set_index("trial_id")
    assert df.index.tolist() == ["old-a", "old-b", "new-c"]  # a re-recorded run keeps its first time
    assert df.loc["old-b", "objective"] == 0.25 and df.loc["old-b", "param_direction"] == "tanh"
    assert df.loc["old-b", "created_at"] == pd.Timestamp("2024-01-01T00:00:01Z")
    assert df.loc["old-a", "objective"] == 0.5 and df.loc["new-c", "param_lr"] == 0.1
    ep = RunStore(root).epochs()
    assert ep.groupby("trial_id").size().to_dict() == {"old-a": 2, "old-b": 3, "new-c": 1}


def test_recording_a_run_touches_only_its_own_files(store: RunStore):
    root = Path(store.path)
    for i in range(20):
        store.record_trial(_row(f"t{i}", f"arm{i % 3}", objective=float(i)), _records(2))
    # make every other run's files unreadable garbage: a writer that read them (or rewrote a
    # table holding them) would fail or change them
    before = {}
    for path in [*(root / "trials").glob("*.parquet"), *(root / "epochs").rglob("*.parquet")]:
        if path.stem not in {"t5", "new"}:
            path.write_bytes(b"garbage " + path.name.encode())
            before[path] = path.read_bytes()
    writer = RunStore(root, create=True)
    writer.record_trial(_row("new", "arm0", objective=-1.0), _records(3))
    writer.record_trial(_row("t5", "arm2", objective=-5.0), _records(1))
    assert {p: p.read_bytes() for p in before} == before
    got = pq.read_table(root / "trials" / "t5.parquet").to_pylist()[0]
    assert got["objective"] == -5.0
    assert pq.read_table(root / "epochs" / "arm=arm0" / "new.parquet").num_rows == 3


#: README's one-line reads of the trials table (the newest copy of each run: a run re-recorded after
#: its compaction, or one in the middle of a compaction, has two copies until the next one finishes)
ONE_LINERS = {
    "pandas": lambda run: (
        pd.read_parquet(run + "/trials").sort_values("updated_at").drop_duplicates("trial_id", keep="last")
    ),
    "duckdb": lambda run: __import__("duckdb").sql(
        f"SELECT * FROM '{run}/trials/*.parquet' "
        "QUALIFY row_number() OVER (PARTITION BY trial_id ORDER BY updated_at DESC) = 1"
    ),
    "polars": lambda run: (
        __import__("polars")
        .read_parquet(run + "/trials/*.parquet")
        .sort("updated_at")
        .unique("trial_id", keep="last")
    ),
}


def one_line_table(reader: str, run: str) -> pa.Table:
    """The trials table as README's one-line read ``reader`` gives it, as an Arrow table."""
    pytest.importorskip(reader)
    got = ONE_LINERS[reader](run)
    if reader == "pandas":
        return pa.Table.from_pandas(got, preserve_index=False)
    return got.to_arrow_table() if reader == "duckdb" else got.to_arrow()


@pytest.mark.parametrize("compacted", [False, True])
@pytest.mark.parametrize("reader", ["pandas", "duckdb", "polars"])
def test_trials_table_in_one_line_while_a_study_runs(store: RunStore, reader: str, compacted: bool):
    store.record_trial(_row("t1", "adam", objective=0.5, param_lr=0.1), _records(2))
    store.record_trial(_row("t2", "rlo", objective=2.0, param_direction="sign", repeat=1), _records(2))
    if compacted:
        assert store.compact() == 2
        assert sorted(p.name for p in (Path(store.path) / "trials").iterdir()) == ["@part-0000000001.parquet"]
    # a retry of t1 after its compaction: two copies on disk until the next compaction
    store.record_trial(_row("t1", "adam", objective=1.0, param_lr=0.1), _records(2))
    store.record_trial(_row("t3", "rlo", status="running"))
    # a writer killed mid-write leaves a hidden temporary file; no reader may see it
    (Path(store.path) / "trials" / ".lyaptune-tmp-t4.parquet.0123").write_bytes(b"partial")
    table = one_line_table(reader, store.path)
    assert table.column_names == list(TRIAL_COLUMNS)
    rows = {r["trial_id"]: r for r in table.to_pylist()}
    assert len(rows) == table.num_rows == 3
    assert set(rows) == {"t1", "t2", "t3"}
    assert (rows["t1"]["objective"], rows["t2"]["objective"], rows["t3"]["objective"]) == (1.0, 2.0, None)
    assert [rows[t]["repeat"] for t in ("t1", "t2", "t3")] == [0, 1, 0]
    assert json.loads(rows["t2"]["params_json"]) == {"direction": "sign"}
    assert rows["t3"]["status"] == "running"


def test_new_columns_from_trial_row(store: RunStore):
    from lyaptune._records import EpochRecord
    from lyaptune.train import TrialResult

    records = [
        EpochRecord(
            epoch=e,
            train_loss=1.0 / e,
            train_acc=0.5,
            grad_norm=2.0 / e,
            val_loss=1.0,
            val_acc=0.5,
            test_loss=1.0,
            test_acc=0.5,
            lr=0.1,
            lyapunov_drift=-0.1,
            step=3 * e,
            time_s=0.25 * e,
            extra={"rlo_residual": 0.5 * e},
        )
        for e in (1, 2)
    ]
    # a member of a population of 4 whose wall time was 10 s: charged 10 / 4 = 2.5 s
    info = {"population_wall_s": 10.0, "population_size": 4}
    result = TrialResult(status="completed", records=records, info=info, wall_s=2.5)
    row = trial_row(
        study="q",
        arm="a",
        trial_id="p0",
        phase="search",
        seed=3,
        config={"model": "fc"},
        result=result,
        repeat=2,
        params={"lr": 0.1},
    )
    assert (row["population_wall_s"], row["population_size"], row["wall_s"], row["repeat"]) == (
        10.0,
        4,
        2.5,
        2,
    )
    assert row["final_train_loss"] == 0.5 and row["min_grad_norm"] == 1.0 and row["epochs_completed"] == 2
    store.record_trial(row, result.records)
    got = store.trials().iloc[0]
    assert (got["population_wall_s"], got["population_size"], got["repeat"], got["seed"]) == (10.0, 4, 2, 3)
    ep = store.epochs()
    assert ep["step"].tolist() == [3, 6] and ep["rlo_residual"].tolist() == [0.5, 1.0]

    alone = TrialResult(status="completed", records=[], info={}, wall_s=1.0)
    row = trial_row(
        study="q", arm="a", trial_id="s0", phase="search", seed=0, config={"repeat": 1}, result=alone
    )
    assert row["repeat"] == 1  # from the config when the searcher does not pass it
    assert row["population_wall_s"] is None and row["population_size"] is None
    bare = trial_row(study="q", arm="a", trial_id="s1", phase="search", seed=0, config={}, result=None)
    assert bare["repeat"] == 0


def test_readme_one_line_reads_are_correct_after_a_compaction_and_a_retry(store: RunStore):
    import re

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    lines = re.findall(r"`((?:pd|duckdb|polars)\.[^`]*runs/quickstart/trials[^`]*)`", readme)
    assert [line.split(".")[0] for line in lines] == ["pd", "duckdb", "polars"], lines
    duckdb, polars = pytest.importorskip("duckdb"), pytest.importorskip("polars")
    store.record_trial(_row("t1", "adam", objective=1.0), _records(2))
    store.record_trial(_row("t2", "rlo", objective=2.0), _records(2))
    store.compact()
    store.record_trial(_row("t1", "adam", objective=3.0), _records(2))  # a retry: two copies on disk
    for line in lines:
        got = eval(
            line.replace("runs/quickstart", store.path), {"pd": pd, "duckdb": duckdb, "polars": polars}
        )
        if line.startswith("pd"):
            table = pa.Table.from_pandas(got, preserve_index=False)
        else:
            table = got.to_arrow_table() if line.startswith("duckdb") else got.to_arrow()
        assert sorted((r["trial_id"], r["objective"]) for r in table.to_pylist()) == [
            ("t1", 3.0),
            ("t2", 2.0),
        ]


def test_trials_columns_are_pushed_down_with_the_newest_copy(store: RunStore):
    store.record_trial(_row("t1", "a", objective=1.0, optuna_number=0, param_lr=0.1), _records(2))
    store.record_trial(_row("t2", "b", objective=2.0, optuna_number=None), _records(2))
    store.compact()
    store.record_trial(_row("t1", "a", objective=5.0, optuna_number=0, status="diverged"), _records(1))
    some = store.trials(columns=["arm", "status", "objective", "optuna_number"])
    assert list(some.columns) == ["arm", "status", "objective", "optuna_number"]
    assert some.to_dict("records") == [
        {"arm": "a", "status": "diverged", "objective": 5.0, "optuna_number": 0},
        {"arm": "b", "status": "completed", "objective": 2.0, "optuna_number": None},
    ]
    assert str(some["optuna_number"].dtype) == "Int64"
    with pytest.raises(ValueError, match="unknown trials column 'param_lr'; choices: study, arm, trial_id"):
        store.trials(columns=["arm", "param_lr"])
