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
    assert df["epochs_completed"].dtype == np.int64
    assert df["optuna_number"].dtype == pd.Int64Dtype()
    for col in ("objective", "min_grad_norm", "final_test_acc", "k_hat", "wall_s"):
        assert df[col].dtype == np.float64, col
    assert isinstance(df["updated_at"].dtype, pd.DatetimeTZDtype)
    assert str(df["updated_at"].dtype.tz) == "UTC"
    ep = store.epochs()
    assert list(ep.columns) == ["arm", "trial_id", "phase", "seed", *EPOCH_RECORD_FIELDS]
    assert len(ep) == 0
    assert store.trial_ids() == set()


def test_partial_table_keeps_arrow_types(store: RunStore):
    store.record_trial(_row("t0", "a", status="running"))  # only the required columns
    schema = pq.read_schema(Path(store.path) / "trials.parquet")
    assert schema.names == list(TRIAL_COLUMNS)
    assert schema.field("seed").type == pa.int64()
    assert schema.field("optuna_number").type == pa.int64()
    assert schema.field("objective").type == pa.float64()
    assert schema.field("initial_loss").type == pa.float64()
    assert schema.field("info_json").type == pa.string()
    assert schema.field("updated_at").type == pa.timestamp("us", tz="UTC")
    df = store.trials()
    assert df["optuna_number"].isna().all() and math.isnan(df["objective"].iloc[0])


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
    schema = pq.read_schema(Path(store.path) / "trials.parquet")
    assert schema.names[: len(TRIAL_COLUMNS)] == list(TRIAL_COLUMNS)
    params = schema.names[len(TRIAL_COLUMNS) :]
    assert params == ["param_beta2", "param_direction", "param_eta", "param_lr", "param_precondition"]
    assert schema.field("param_lr").type == pa.float64()
    assert schema.field("param_beta2").type == pa.float64()
    assert schema.field("param_eta").type == pa.float64()
    assert schema.field("param_direction").type == pa.string()
    assert schema.field("param_precondition").type == pa.string()
    df = store.trials().set_index("trial_id")
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
    schema = pq.read_schema(Path(store.path) / "trials.parquet")
    assert schema.field("param_x").type == pa.string()
    assert schema.field("param_lr").type == pa.float64()
    df = store.trials()
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
    assert pq.read_table(root / "trials.parquet").num_rows == 3
    assert sorted(pd.read_parquet(root / "trials.parquet")["trial_id"]) == ["t1", "t2", "t3"]

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
    assert {p.name for p in files} == {
        "spec.yaml",
        "study.json",
        "trials.parquet",
        "t0.parquet",
        "t1.parquet",
        "t2.parquet",
        "t3.parquet",
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
    assert (tmp_path / "uri-run" / "trials.parquet").is_file()
    reader = RunStore(uri)
    assert reader.trials()["objective"].tolist() == [0.5]
    assert len(reader.epochs()) == 3
    assert read_parquet_checked(uri + "/trials.parquet")["trial_id"].tolist() == ["t1"]
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
    ],
)
def test_bad_rows_are_rejected(store: RunStore, row: dict, match: str):
    with pytest.raises(ValueError, match=match):
        store.record_trial(row)
    assert not (Path(store.path) / "trials.parquet").exists()


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
