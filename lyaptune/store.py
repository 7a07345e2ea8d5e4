"""A study's run directory: the Parquet schema, its writer and its reader.

Layout of ``<out>/<name>/`` (a local path or any URI that :mod:`pyarrow.fs` understands)::

    spec.yaml                        the resolved spec (``yaml.safe_dump``)
    study.json                       versions, host, device, start / end (merge-updated)
    trials/<trial_id>.parquet        a run's own file: its row of the trials table (:data:`TRIALS_SCHEMA`)
    trials/@part-<n>.parquet         a compacted part: the rows of many finished runs
    epochs/arm=<arm>/<trial_id>.parquet   one row per epoch of one run (hive-partitioned by arm)
    epochs/arm=<arm>/@part-<n>.parquet    a compacted part: the epochs of many finished runs of that arm
    _compaction.json                 the compaction in progress (its manifest), while one runs
    .lyaptune.lock                   the writer's lock (:func:`lock_run_dir`), while a driver runs

Write cost does not grow with the study: recording a run writes its own two files and reads at most its
own earlier trials file, never the other runs' (``benchmarks/store.py`` measures it). Every file is
written to a hidden temporary name in its own directory (a leading ``.``, which pyarrow.dataset, pandas,
DuckDB and Polars skip; the name does not end in ``.parquet``, so globs skip it too) and then renamed
over the target, so a reader of a study in progress sees either the previous or the new version of a
file, never a partial one. A run is recorded epochs first, then its row, so a row never points at
missing epochs; recording a run again (a retry, a resume, a status update) replaces its own files.
The trials files are not partitioned by arm: a run that changes arm is still one atomic rename, and
``arm`` is a plain column.

Compaction (:meth:`RunStore.compact`; the writer runs it every :data:`COMPACT_EVERY` finished runs, and
``lyaptune compact RUN_DIR``) folds the finished runs' own files into parts, so that reading a
100,000-run study reads a hundred files, not 200,000. Its steps: write the manifest
(:data:`COMPACTION_FILE`, naming the parts and the files they replace), the epochs parts, the trials
part, then delete the replaced files and the manifest. Between two steps a run may have two identical
copies, and a run recorded again after its compaction has its newer own files beside the part's older
copy until the next compaction drops it; readers keep each run's newest copy (the trials row with the
latest ``updated_at``, the epochs of the run's newest file: its own file, else the latest part), so a
reader at any moment sees each run exactly once. A compaction killed between two steps is finished by
the next writer (forward when all its parts were written, else back): nothing is lost and nothing stays
twice. :meth:`RunStore.trials` and :meth:`RunStore.epochs` read each table as one pyarrow dataset.

Every trials file has exactly :data:`TRIALS_SCHEMA`, so each tool reads the whole table in one line,
while a study runs too (keeping each run's newest copy)::

    pd.read_parquet(run + "/trials").sort_values("updated_at").drop_duplicates("trial_id", keep="last")
    duckdb.sql(f"SELECT * FROM '{run}/trials/*.parquet' "
               "QUALIFY row_number() OVER (PARTITION BY trial_id ORDER BY updated_at DESC) = 1")
    polars.read_parquet(run + "/trials/*.parquet").sort("updated_at").unique("trial_id", keep="last")

The searched hyperparameters are in ``params_json`` (a JSON object; their set differs between arms, so
they cannot be columns of a fixed schema); :meth:`RunStore.trials` expands them into ``param_<name>``
columns (float64 when every value is a number, else string). Epochs:
``pyarrow.dataset.dataset(run / "epochs", partitioning="hive")`` gives the ``arm`` column from the
directory names. pyarrow.dataset takes the schema of the *first* file it finds, so optimizer diagnostic
columns that only some arms have are dropped unless a schema is passed (``schema=store.epochs_schema()``);
:meth:`RunStore.epochs` unifies them. An epochs file whose run has no row yet (a driver killed between
the two writes) is skipped by :meth:`RunStore.epochs` and replaced when the run is recorded.

Earlier versions kept the trials table in one ``trials.parquet`` rewritten on every record (its cost
grew with the square of the number of runs). Such a run directory still reads and resumes: its rows are
read from ``trials.parquet`` (``param_<name>`` columns folded into ``params_json``), and a run recorded
again is written to ``trials/``, whose row then replaces the old one; ``trials.parquet`` is never
rewritten.

One process writes a run directory: ``lyaptune run`` and ``lyaptune resume`` hold
:func:`lock_run_dir` for the life of the study, and a second driver is refused with a line naming the
holder.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import math
import os
import signal
import threading
import uuid
import warnings
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import quote, unquote

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import yaml

from lyaptune._lock import LOCK_FILE, LockHolder, RunDirLock, RunDirLockedError, lock_run_dir
from lyaptune._records import RECORD_FIELDS
from lyaptune.errors import UserError
from lyaptune.metrics import FINAL_FIELDS

__all__ = [
    "RunStore",
    "trial_row",
    "read_parquet_checked",
    "lock_run_dir",
    "RunDirLock",
    "RunDirLockedError",
    "LockHolder",
    "LOCK_FILE",
    "TRIALS_SCHEMA",
    "TRIAL_COLUMNS",
    "TRIALS_DIR",
    "TRIALS_FILE",
    "EPOCH_RECORD_FIELDS",
    "EPOCH_KEY_COLUMNS",
    "STATUSES",
    "PHASES",
    "PARAM_PREFIX",
    "PART_PREFIX",
    "COMPACT_EVERY",
    "COMPACTION_FILE",
    "COMPACTION_STEPS",
    "COMPACTION_FAULT_ENV",
]

#: Trial outcomes. ``running`` marks a trial recorded before it ended.
STATUSES = ("completed", "diverged", "stopped", "errored", "running")
#: ``search``: a trial proposed by Optuna; ``final``: an arm's best configuration re-run on a fresh seed.
PHASES = ("search", "final")
#: Prefix of the per-hyperparameter columns of :meth:`RunStore.trials` (and of a :func:`trial_row`).
PARAM_PREFIX = "param_"

SPEC_FILE = "spec.yaml"
STUDY_FILE = "study.json"
#: The directory of the trials table: one Parquet file per run.
TRIALS_DIR = "trials"
#: The single trials file of run directories written before :data:`TRIALS_DIR` (read, never written).
TRIALS_FILE = "trials.parquet"
EPOCHS_DIR = "epochs"
_ARM_KEY = "arm"
# Leading "." so that every dataset reader skips a file being written.
_TMP_PREFIX = ".lyaptune-tmp-"

_UTC_US = pa.timestamp("us", tz="UTC")
# Files of one run are small (a row, a few hundred epochs): per-file costs dominate, and compression,
# dictionaries and column statistics (which copy whole JSON strings into the footer) only add to them.
_PARQUET_OPTIONS: dict[str, Any] = {"compression": "none", "use_dictionary": False, "write_statistics": False}

#: The columns of every trials file, in order, with their types. ``repeat`` is the search repeat (0
#: without repeats); ``population_wall_s`` / ``population_size`` are set for a run trained inside a vmapped
#: population of P members, whose ``wall_s`` is the population's wall time over P (METHODS.md section 8,
#: "Cost"); ``params_json`` holds the searched hyperparameters; ``created_at`` is when the run was first
#: recorded (it orders :meth:`RunStore.trials`), ``updated_at`` when it was last recorded.
TRIALS_SCHEMA = pa.schema(
    [
        ("study", pa.string()),
        ("arm", pa.string()),
        ("trial_id", pa.string()),
        ("phase", pa.string()),
        ("optimizer", pa.string()),
        ("schedule", pa.string()),
        ("dataset", pa.string()),
        ("model", pa.string()),
        ("seed", pa.int64()),
        ("repeat", pa.int64()),
        ("optuna_number", pa.int64()),
        ("status", pa.string()),
        ("epochs_completed", pa.int64()),
        ("objective", pa.float64()),
        ("final_train_loss", pa.float64()),
        ("final_train_acc", pa.float64()),
        ("final_grad_norm", pa.float64()),
        ("min_grad_norm", pa.float64()),
        ("final_val_loss", pa.float64()),
        ("final_val_acc", pa.float64()),
        ("final_test_loss", pa.float64()),
        ("final_test_acc", pa.float64()),
        ("wall_s", pa.float64()),
        ("population_wall_s", pa.float64()),
        ("population_size", pa.int64()),
        ("derived_lr", pa.float64()),
        ("k_hat", pa.float64()),
        ("initial_loss", pa.float64()),
        ("message", pa.string()),
        ("info_json", pa.string()),
        ("config_json", pa.string()),
        ("params_json", pa.string()),
        ("created_at", _UTC_US),
        ("updated_at", _UTC_US),
    ]
)
TRIAL_COLUMNS = tuple(TRIALS_SCHEMA.names)
# filled by the store from the param_<name> keys of a row
_DERIVED_COLUMNS = frozenset({"params_json"})
# nullable integer columns: pandas Int64 in RunStore.trials()
_NULLABLE_INT_COLUMNS = ("optuna_number", "population_size")

#: The per-epoch record of the trial engine (:data:`lyaptune._records.RECORD_FIELDS`, torch-free so
#: that reading a run does not import torch). ``epoch`` and ``step`` are int64, the rest float64; optimizer
#: diagnostics follow as extra float64 columns.
EPOCH_RECORD_FIELDS = RECORD_FIELDS
_EPOCH_INT_FIELDS = frozenset({"epoch", "step"})
#: Columns stored in every epochs file before the record fields (``arm`` comes from the directory).
EPOCH_KEY_COLUMNS = ("trial_id", "phase", "seed")
_EPOCH_BASE_SCHEMA = pa.schema(
    [("trial_id", pa.string()), ("phase", pa.string()), ("seed", pa.int64())]
    + [(f, pa.int64() if f in _EPOCH_INT_FIELDS else pa.float64()) for f in EPOCH_RECORD_FIELDS]
)

_TRIAL_FINALS = FINAL_FIELDS  # final_<field> column -> record field (lyaptune.metrics)


# -- filesystem helpers -----------------------------------------------------------------------------


def _resolve(path_or_uri: str | os.PathLike[str]) -> tuple[pafs.FileSystem, str, str]:
    """``(filesystem, path inside it, display string)`` for a local path or a pyarrow URI."""
    if isinstance(path_or_uri, os.PathLike) or "://" not in str(path_or_uri):
        local = os.path.abspath(os.path.expanduser(os.fspath(path_or_uri)))
        return pafs.LocalFileSystem(), local, local
    uri = str(path_or_uri)
    try:
        fs, path = pafs.FileSystem.from_uri(uri)
    except (pa.ArrowException, OSError, ValueError) as err:
        raise UserError(f"cannot open {uri}: {_first_line(err)}") from err
    return fs, path.rstrip("/") or "/", uri.rstrip("/")


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _read_table_checked(
    fs: pafs.FileSystem,
    path: str,
    display: str,
    columns: Sequence[str] | None = None,
    *,
    missing_ok: bool = False,
) -> pa.Table | None:
    """Read one Parquet file; a missing, corrupt or truncated file is a :class:`UserError` naming it.

    With ``missing_ok`` a missing file gives ``None``.
    """
    try:
        with fs.open_input_file(path) as f:
            return pq.ParquetFile(f).read(columns=list(columns) if columns else None)
    except FileNotFoundError as err:
        if missing_ok:
            return None
        raise UserError(f"missing Parquet file {display}") from err
    except (pa.ArrowException, OSError) as err:
        raise _corrupt(display, err) from err


def _corrupt(display: str, err: BaseException) -> UserError:
    if isinstance(err, pa.ArrowInvalid) or "parquet" in str(err).lower():
        return UserError(f"cannot read {display}: corrupt or truncated Parquet file ({_first_line(err)})")
    return UserError(f"cannot read {display}: {_first_line(err)}")


def read_parquet_checked(
    path_or_uri: str | os.PathLike[str], *, columns: Sequence[str] | None = None
) -> pd.DataFrame:
    """Read a Parquet file into a DataFrame, failing with one line that names a bad file.

    Args:
      path_or_uri: a local path or a URI pyarrow understands (``file://``, ``s3://``, ``gs://``).
      columns: read only these columns.

    Returns:
      The file's contents.

    Raises:
      UserError: the file is missing, corrupt or truncated (the message names it).
    """
    fs, path, display = _resolve(path_or_uri)
    return _read_table_checked(fs, path, display, columns).to_pandas()


def _quote_name(name: str) -> str:
    """A file or directory name for ``name`` that hive readers decode back and none of them skips."""
    q = quote(name, safe="")
    if q[:1] in (".", "_"):
        q = f"%{ord(q[0]):02X}{q[1:]}"
    return q


# -- values -----------------------------------------------------------------------------------------


def _plain(obj: Any) -> Any:
    """Mappings, tuples and numpy/torch scalars as plain dicts, lists and Python numbers (for YAML)."""
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [_plain(v) for v in obj]
    if isinstance(obj, (str, bool, int, float)) or obj is None:
        return obj
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return _dataclass_dict(obj)
    return _json_default(obj)


def _dataclass_dict(obj: Any) -> dict[str, Any]:
    """A dataclass's fields as plain values (not ``dataclasses.asdict``: it deep-copies, and the frozen
    mappings of a :class:`~lyaptune.train.TrialConfig` cannot be copied)."""
    return {f.name: _plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}


def _json_default(obj: Any) -> Any:
    """``json.dumps`` fallback: numpy/torch values, dates, paths, mappings; anything else as ``str``."""
    if isinstance(obj, Mapping):
        return dict(obj)
    if isinstance(obj, (set, frozenset)):
        return sorted(obj, key=repr)
    tolist = getattr(obj, "tolist", None)  # numpy arrays and scalars, torch tensors
    if callable(tolist):
        return tolist()
    if isinstance(obj, (_dt.datetime, _dt.date)):
        return obj.isoformat()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return _dataclass_dict(obj)
    return str(obj)


def _to_json(obj: Any) -> str:
    """JSON text of ``obj``; non-finite floats are written as ``NaN`` / ``Infinity`` (Python's json)."""
    return json.dumps(obj, default=_json_default, sort_keys=False)


_KINDS = {"int64": "an integer", "double": "a number", "string": "a string"}


def _to_table(rows: Sequence[Mapping[str, Any]], schema: pa.Schema, what: str) -> pa.Table:
    """``rows`` as a table of ``schema``: Arrow infers each column and casts it safely.

    A safe cast is a check: ``1.5`` is not an int64 and ``'low'`` is not a float64 (Arrow's
    ``from_pylist(rows, schema=...)`` would truncate ``1.5`` to ``1``). NaN in an integer column is
    null (a nullable column read back through pandas).

    Raises:
      ValueError: a value that does not fit its column, naming ``what``, the column and the value.
    """
    columns = []
    for field in schema:
        values = [r.get(field.name) for r in rows]
        try:
            inferred = pa.array(values, from_pandas=pa.types.is_integer(field.type))
            columns.append(inferred.cast(field.type, safe=True))
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
            kind = _KINDS.get(str(field.type), str(field.type))
            for v in values:  # the first value that does not convert alone
                try:
                    pa.array([v], from_pandas=pa.types.is_integer(field.type)).cast(field.type, safe=True)
                except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
                    raise ValueError(f"{what}{field.name} must be {kind}, got {v!r}") from None
            raise ValueError(f"{what}{field.name} must be {kind}, got {values!r}") from None
    return pa.Table.from_arrays(columns, schema=schema)


def _trial_table(row: Mapping[str, Any]) -> pa.Table:
    """One trial row (``param_<name>`` keys folded into ``params_json``) as a :data:`TRIALS_SCHEMA` table."""
    unknown = [
        k
        for k in row
        if (k not in TRIALS_SCHEMA.names or k in _DERIVED_COLUMNS) and not k.startswith(PARAM_PREFIX)
    ]
    if unknown:
        raise ValueError(
            f"unknown trial column(s) {', '.join(map(repr, unknown))}; valid: "
            f"{', '.join(c for c in TRIAL_COLUMNS if c not in _DERIVED_COLUMNS)}, "
            f"or '{PARAM_PREFIX}<name>' for a hyperparameter"
        )
    for key in ("trial_id", "arm"):
        if not row.get(key) or not isinstance(row[key], str):
            raise ValueError(f"a trial row needs a non-empty {key}, got {row.get(key)!r}")
    if row.get("phase") not in PHASES:
        raise ValueError(f"phase must be one of {', '.join(PHASES)}; got {row.get('phase')!r}")
    if row.get("status") not in STATUSES:
        raise ValueError(f"status must be one of {', '.join(STATUSES)}; got {row.get('status')!r}")
    full = dict(row)
    full["params_json"] = _to_json(
        {k[len(PARAM_PREFIX) :]: v for k, v in row.items() if k.startswith(PARAM_PREFIX)}
    )
    if full.get("repeat") is None:
        full["repeat"] = 0
    if full.get("updated_at") is None:
        full["updated_at"] = _dt.datetime.now(_dt.timezone.utc)
    return _to_table([full], TRIALS_SCHEMA, "")


def _epochs_table(
    trial_id: str, phase: str, seed: int | None, records: Sequence[Mapping[str, Any]]
) -> pa.Table:
    """One trial's records as a table: key columns, :data:`EPOCH_RECORD_FIELDS`, then diagnostics."""
    recs = [_record_dict(r) for r in records]
    seen: set[Any] = set()
    for i, rec in enumerate(recs):
        e = rec.get("epoch")
        if e is None:
            raise ValueError(f"epoch record {i} of trial {trial_id!r} has no 'epoch'")
        if e in seen:
            raise ValueError(f"trial {trial_id!r} has two records for epoch {e}")
        seen.add(e)
    skip = {_ARM_KEY, *EPOCH_KEY_COLUMNS, *EPOCH_RECORD_FIELDS}
    extras = list(dict.fromkeys(k for rec in recs for k in rec if k not in skip))
    schema = pa.schema([*_EPOCH_BASE_SCHEMA, *(pa.field(str(k), pa.float64()) for k in extras)])
    keys = {"trial_id": trial_id, "phase": phase, "seed": seed}
    return _to_table([{**rec, **keys} for rec in recs], schema, f"trial {trial_id!r}: epoch record field ")


def _record_dict(record: Any) -> Mapping[str, Any]:
    """An epoch record as a mapping (an :class:`~lyaptune._records.EpochRecord` via ``to_dict()``)."""
    if isinstance(record, Mapping):
        return record
    to_dict = getattr(record, "to_dict", None)
    if callable(to_dict):
        return to_dict()
    raise TypeError(f"an epoch record must be a mapping or have to_dict(), got {type(record).__name__}")


def _param_array(values: list[Any]) -> pa.Array:
    """float64 when every present value is a number (not a bool), else string (JSON for non-strings)."""
    present = [v for v in values if v is not None]
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in present):
        return pa.array([None if v is None else float(v) for v in values], type=pa.float64())
    return pa.array([v if v is None or isinstance(v, str) else _to_json(v) for v in values], type=pa.string())


def _expand_params(params_json: pa.ChunkedArray) -> dict[str, pa.Array]:
    """``params_json`` as one :func:`_param_array` per hyperparameter, by ``param_<name>``, sorted."""
    parsed = [json.loads(s) if s else {} for s in params_json.to_pylist()]
    names = sorted({k for p in parsed for k in p})
    return {f"{PARAM_PREFIX}{n}": _param_array([p.get(n) for p in parsed]) for n in names}


def _from_legacy(table: pa.Table) -> pa.Table:
    """A ``trials.parquet`` of an earlier version as a :data:`TRIALS_SCHEMA` table.

    Missing columns are null (``repeat`` 0); the ``param_<name>`` columns become ``params_json`` (the
    non-null values of each row).
    """
    n = table.num_rows
    params = [c for c in table.column_names if c.startswith(PARAM_PREFIX)]
    if params:
        cols = [table.column(p).to_pylist() for p in params]
        names = [p[len(PARAM_PREFIX) :] for p in params]
        params_json = [_to_json({k: v for k, v in zip(names, vals) if v is not None}) for vals in zip(*cols)]
    else:
        params_json = ["{}"] * n
    arrays = []
    for field in TRIALS_SCHEMA:
        if field.name == "params_json":
            arrays.append(pa.array(params_json, pa.string()))
        elif field.name in table.column_names:
            arrays.append(table.column(field.name).cast(field.type))
        else:
            arrays.append(pa.nulls(n, field.type))
    return _fill_defaults(pa.Table.from_arrays(arrays, schema=TRIALS_SCHEMA))


def _fill_defaults(table: pa.Table) -> pa.Table:
    """``repeat`` 0 where it is null (rows written before the column existed)."""
    i = table.schema.get_field_index("repeat")
    if i < 0 or table.column(i).null_count == 0:
        return table
    return table.set_column(i, "repeat", pc.fill_null(table.column(i), 0))


#: Name prefix of a compacted part file (``@`` is escaped in every run's file name, so no run's file
#: starts with it): ``trials/@part-<seq>.parquet`` and ``epochs/arm=<arm>/@part-<seq>.parquet``.
PART_PREFIX = "@part-"
#: A writer compacts after this many finished runs recorded as single files (:meth:`RunStore.compact`).
COMPACT_EVERY = 1000
#: The compaction in progress: written first, removed last (a leading ``_``: dataset readers skip it).
COMPACTION_FILE = "_compaction.json"
#: The points of a compaction at which its fault-injection hook is called, in order: after the
#: manifest is written, after the epochs parts, after the trials part, after the folded trials files are
#: deleted, after every folded file is deleted (only the manifest left).
COMPACTION_STEPS = ("manifest", "epochs_parts", "trials_part", "trials_deleted", "deleted")
#: ``LYAPTUNE_COMPACTION_FAULT=<step>``: the process SIGKILLs itself at that step (tests).
COMPACTION_FAULT_ENV = "LYAPTUNE_COMPACTION_FAULT"
# the rank of a copy of a run: its own file outranks every part, a later part an earlier one
_SMALL_RANK = 2**62
_RANK = "__rank"
_FILENAME = "__filename"
# parts are read whole by every reader: compressed, with dictionaries and statistics
_PART_OPTIONS: dict[str, Any] = {"compression": "zstd"}
_READ_RETRIES = 50


def _part_name(seq: int) -> str:
    return f"{PART_PREFIX}{seq:010d}.parquet"


def _part_seq(base_name: str) -> int | None:
    """The sequence number of a part file's name, or ``None`` for a run's own file."""
    if not (base_name.startswith(PART_PREFIX) and base_name.endswith(".parquet")):
        return None
    digits = base_name[len(PART_PREFIX) : -len(".parquet")]
    return int(digits) if digits.isdigit() else None


def _visible_parquet(info: pafs.FileInfo) -> bool:
    return (
        info.type == pafs.FileType.File
        and info.base_name.endswith(".parquet")
        and not info.base_name.startswith((".", "_"))
    )


def _keep_newest(table: pa.Table) -> pa.Table:
    """One row per ``trial_id``: the newest by ``updated_at``, then by the rank of its file."""
    n = table.num_rows
    if n == 0 or pc.count_distinct(table.column("trial_id")).as_py() == n:
        return table
    # a missing updated_at (a file of an early layout) is the oldest
    oldest = pa.scalar(_dt.datetime(1970, 1, 1, tzinfo=_dt.timezone.utc), _UTC_US)
    key = pc.fill_null(table.column("updated_at"), oldest)
    t = table.append_column("__updated", key).sort_by(
        [("trial_id", "ascending"), ("__updated", "ascending"), (_RANK, "ascending")]
    )
    t = t.drop_columns(["__updated"])
    tid = t.column("trial_id")
    last = pc.not_equal(tid.slice(0, n - 1), tid.slice(1)).combine_chunks()
    return t.filter(pa.concat_arrays([last, pa.array([True])]))


def _keep_newest_source(table: pa.Table) -> pa.Table:
    """Per ``trial_id``, only the rows of its highest-ranked file (epochs: a run's copies are whole)."""
    if table.num_rows == 0:
        return table
    g = table.group_by("trial_id").aggregate([(_RANK, "min"), (_RANK, "max")])
    if pc.all(pc.equal(g.column(f"{_RANK}_min"), g.column(f"{_RANK}_max"))).as_py():
        return table
    best = pc.take(
        g.column(f"{_RANK}_max"), pc.index_in(table.column("trial_id"), value_set=g.column("trial_id"))
    )
    return table.filter(pc.equal(table.column(_RANK), best))


def _order_epoch_columns(names: Iterable[str]) -> list[str]:
    names = list(names)
    head = [_ARM_KEY, *EPOCH_KEY_COLUMNS, *EPOCH_RECORD_FIELDS]
    return [c for c in head if c in names] + [c for c in names if c not in head]


class RunStore:
    """Reader and (single) writer of one study's run directory.

    Args:
      root: the run directory, a local path or a URI pyarrow understands (``file://``, ``s3://``,
        ``gs://``, ...).
      create: make the directory if needed (the writer, i.e. the study driver). Without it the
        directory must already be a run directory (hold ``spec.yaml`` or ``study.json``).

    Raises:
      UserError: ``root`` is not a run directory (``create=False``), or cannot be created or written
        (``create=True``); the message names the path.

    Attributes:
      uri: ``root`` as given for a URI, or the absolute local path.
    """

    def __init__(self, root: str | os.PathLike[str], *, create: bool = False) -> None:
        self._fs, self._root, self.uri = _resolve(root)
        self._lock = threading.RLock()
        # the writer's view of runs it has recorded or looked up: trial_id -> (arm, created_at)
        self._known: dict[str, tuple[str, _dt.datetime, _dt.datetime | None]] = {}
        # the writer's index of compacted runs (see _part_index), read on first need
        self._index: dict[str, tuple[str, _dt.datetime, _dt.datetime]] | None = None
        # finished runs recorded in their own files since the last compaction
        self._uncompacted = 0
        self._needs_recovery = False
        # what this writer wrote to the runs' own files since their last compaction (trial_id -> table),
        # so that a compaction need not read them back
        self._held_rows: dict[str, pa.Table] = {}
        self._held_epochs: dict[str, pa.Table] = {}
        #: compact after this many finished runs in their own files (0: only on :meth:`compact`)
        self.compact_every = COMPACT_EVERY
        #: called with each step of a compaction (:data:`COMPACTION_STEPS`): the fault-injection hook
        self.compaction_hook: Callable[[str], None] | None = None
        # the legacy trials.parquet's runs (trial_id -> (arm, updated_at)), read on first need
        self._legacy: dict[str, tuple[str, _dt.datetime | None]] | None = None
        self._writing = False
        if create:
            self._create()
        else:
            self._check_is_run_dir()

    def __repr__(self) -> str:
        return f"RunStore({self.uri!r})"

    @property
    def path(self) -> str:
        """The run directory's path inside :attr:`filesystem` (for a local run, the absolute path)."""
        return self._root

    @property
    def filesystem(self) -> pafs.FileSystem:
        """The pyarrow filesystem that holds the run directory."""
        return self._fs

    @property
    def is_local(self) -> bool:
        """Whether the run directory is on the local filesystem (a plain path or ``file://``)."""
        return isinstance(self._fs, pafs.LocalFileSystem)

    # -- paths ------------------------------------------------------------------------------------
    def _join(self, *parts: str) -> str:
        return "/".join([self._root.rstrip("/"), *parts])

    def _display(self, path: str) -> str:
        return self.uri + path[len(self._root.rstrip("/")) :]

    def _epoch_dir(self, arm: str) -> str:
        return self._join(EPOCHS_DIR, f"{_ARM_KEY}={_quote_name(arm)}")

    def _epoch_path(self, arm: str, trial_id: str) -> str:
        return f"{self._epoch_dir(arm)}/{_quote_name(trial_id)}.parquet"

    def _trial_path(self, trial_id: str) -> str:
        return self._join(TRIALS_DIR, f"{_quote_name(trial_id)}.parquet")

    def _exists(self, path: str) -> bool:
        return self._fs.get_file_info(path).type == pafs.FileType.File

    def _create(self) -> None:
        info = self._fs.get_file_info(self._root)
        if info.type == pafs.FileType.File:
            raise UserError(f"cannot create run directory {self.uri}: a file of that name exists")
        try:
            self._fs.create_dir(self._root, recursive=True)
            probe = self._join(f"{_TMP_PREFIX}probe-{uuid.uuid4().hex}")
            with self._fs.open_output_stream(probe) as f:
                f.write(b"")
            self._fs.delete_file(probe)
        except (OSError, pa.ArrowException) as err:
            raise UserError(f"cannot write to run directory {self.uri}: {_first_line(err)}") from err

    def _check_is_run_dir(self) -> None:
        try:
            info = self._fs.get_file_info(self._root)
        except (OSError, pa.ArrowException) as err:
            raise UserError(f"cannot open run directory {self.uri}: {_first_line(err)}") from err
        if info.type == pafs.FileType.NotFound:
            raise UserError(f"{self.uri} is not a lyaptune run directory (it does not exist)")
        if info.type != pafs.FileType.Directory:
            raise UserError(f"{self.uri} is not a lyaptune run directory (it is not a directory)")
        if not (self._exists(self._join(SPEC_FILE)) or self._exists(self._join(STUDY_FILE))):
            raise UserError(f"{self.uri} is not a lyaptune run directory (no {SPEC_FILE})")

    # -- atomic writes ----------------------------------------------------------------------------
    def _atomic_write(self, path: str, write: Callable[[str], None]) -> None:
        """Write through ``write(tmp_path)`` to a hidden name beside ``path``, then rename over it."""
        parent, name = path.rsplit("/", 1)
        tmp = f"{parent}/{_TMP_PREFIX}{name}.{uuid.uuid4().hex}"
        try:
            self._fs.create_dir(parent, recursive=True)
            write(tmp)
            self._fs.move(tmp, path)
        except BaseException as err:
            try:
                self._fs.delete_file(tmp)
            except (OSError, pa.ArrowException):
                pass
            if isinstance(err, (OSError, pa.ArrowException)):
                raise UserError(f"cannot write {self._display(path)}: {_first_line(err)}") from err
            raise

    def _write_bytes(self, path: str, data: bytes) -> None:
        def write(tmp: str) -> None:
            with self._fs.open_output_stream(tmp) as f:
                f.write(data)

        self._atomic_write(path, write)

    def _write_parquet(self, path: str, table: pa.Table, options: Mapping[str, Any] | None = None) -> None:
        opts = _PARQUET_OPTIONS if options is None else options
        self._atomic_write(path, lambda tmp: pq.write_table(table, tmp, filesystem=self._fs, **opts))

    def _read_text(self, name: str) -> str | None:
        path = self._join(name)
        if not self._exists(path):
            return None
        try:
            with self._fs.open_input_stream(path) as f:
                return f.read().decode("utf-8")
        except (OSError, pa.ArrowException, UnicodeDecodeError) as err:
            raise UserError(f"cannot read {self._display(path)}: {_first_line(err)}") from err

    # -- spec and study info ----------------------------------------------------------------------
    def write_spec(self, spec: Mapping[str, Any]) -> None:
        """Save the resolved spec as ``spec.yaml`` (keys in the given order)."""
        text = yaml.safe_dump(_plain(spec), sort_keys=False, allow_unicode=True)
        self._write_bytes(self._join(SPEC_FILE), text.encode("utf-8"))

    def read_spec(self) -> dict[str, Any]:
        """The saved spec (``yaml.safe_load``).

        Raises:
          UserError: ``spec.yaml`` is missing or is not valid YAML (the message names the file).
        """
        spec = self._read_mapping(SPEC_FILE, "YAML", yaml.safe_load, yaml.YAMLError)
        if spec is None:
            raise UserError(f"missing {self._display(self._join(SPEC_FILE))}")
        return spec

    def write_study_info(self, **fields: Any) -> None:
        """Merge ``fields`` into ``study.json`` (existing keys not given are kept)."""
        with self._lock:
            info = self.read_study_info()
            info.update(fields)
            text = json.dumps(info, default=_json_default, indent=2)
            self._write_bytes(self._join(STUDY_FILE), text.encode("utf-8"))

    def read_study_info(self) -> dict[str, Any]:
        """The contents of ``study.json`` (``{}`` if it does not exist yet).

        Raises:
          UserError: the file is not valid JSON (the message names it).
        """
        info = self._read_mapping(STUDY_FILE, "JSON", json.loads, json.JSONDecodeError)
        return {} if info is None else info

    def _read_mapping(
        self, name: str, kind: str, parse: Callable[[str], Any], error: type[Exception]
    ) -> dict[str, Any] | None:
        """The mapping file ``name`` holds (``None`` when it does not exist).

        Raises:
          UserError: the file does not parse as ``kind`` or holds no mapping (the message names it).
        """
        text = self._read_text(name)
        if text is None:
            return None
        display = self._display(self._join(name))
        try:
            data = parse(text)
        except error as err:
            raise UserError(f"cannot read {display}: invalid {kind} ({_first_line(err)})") from err
        if not isinstance(data, dict):
            raise UserError(f"cannot read {display}: expected a mapping, got {type(data).__name__}")
        return data

    # -- listing and scanning ---------------------------------------------------------------------
    def _list_trials(self) -> tuple[dict[str, str], dict[str, int]]:
        """``({trial_id: path} of the runs' own files, {path: seq} of the parts})`` in ``trials/``."""
        small: dict[str, str] = {}
        parts: dict[str, int] = {}
        selector = pafs.FileSelector(self._join(TRIALS_DIR), allow_not_found=True)
        for info in self._fs.get_file_info(selector):
            if not _visible_parquet(info):
                continue
            seq = _part_seq(info.base_name)
            if seq is None:
                small[unquote(info.base_name[: -len(".parquet")])] = info.path
            else:
                parts[info.path] = seq
        return small, parts

    def _list_epochs(self, arms: Sequence[str] | None = None) -> list[tuple[str, str, int, str | None]]:
        """``(arm, path, rank, trial_id or None for a part)`` of every visible epochs file, by path."""
        if arms is None:
            selectors = [pafs.FileSelector(self._join(EPOCHS_DIR), recursive=True, allow_not_found=True)]
        else:
            selectors = [
                pafs.FileSelector(self._epoch_dir(a), allow_not_found=True) for a in dict.fromkeys(arms)
            ]
        prefix = self._join(EPOCHS_DIR) + "/"
        out = []
        for selector in selectors:
            for info in self._fs.get_file_info(selector):
                if not _visible_parquet(info):
                    continue
                parts = info.path[len(prefix) :].split("/")
                if (
                    len(parts) != 2
                    or not parts[0].startswith(f"{_ARM_KEY}=")
                    or parts[0].startswith((".", "_"))
                ):
                    continue
                arm = unquote(parts[0][len(_ARM_KEY) + 1 :])
                seq = _part_seq(parts[1])
                if seq is None:
                    out.append((arm, info.path, _SMALL_RANK, unquote(parts[1][: -len(".parquet")])))
                else:
                    out.append((arm, info.path, seq, None))
        return sorted(out, key=lambda t: t[1])

    def _scan(
        self,
        files: Sequence[tuple[str, int]],
        columns: Sequence[str] | None,
        schema: pa.Schema | None,
        *,
        epochs: bool = False,
        keep_path: bool = False,
    ) -> pa.Table:
        """Read ``(path, rank)`` files as one pyarrow dataset: ``columns`` (all if ``None``) plus ``__rank``.

        ``schema`` fixes the dataset's schema (columns a file lacks read as null); ``None`` unifies every
        file's schema. ``epochs`` adds the ``arm`` column from the hive directory names. ``keep_path``
        keeps the ``__filename`` of each row.
        """
        import pyarrow.dataset as ds

        paths = [p for p, _ in files]
        options = (
            ds.FileSystemFactoryOptions(
                partitioning=ds.partitioning(pa.schema([(_ARM_KEY, pa.string())]), flavor="hive"),
                partition_base_dir=self._join(EPOCHS_DIR),
            )
            if epochs
            else ds.FileSystemFactoryOptions()
        )
        factory = ds.FileSystemDatasetFactory(self._fs, paths, ds.ParquetFileFormat(), options)
        if schema is None:
            schema = factory.inspect(promote_options="permissive", fragments=None)
            if epochs and _ARM_KEY not in schema.names:
                schema = schema.append(pa.field(_ARM_KEY, pa.string()))
        names = schema.names if columns is None else [c for c in dict.fromkeys(columns) if c in schema.names]
        if not paths:
            table = pa.schema([schema.field(c) for c in names]).empty_table()
            table = table.append_column(_RANK, pa.array([], pa.int64()))
            return table.append_column(_FILENAME, pa.array([], pa.string())) if keep_path else table
        # the dataset's fragments are the files in the order given: the fragment index picks the rank
        table = factory.finish(schema).to_table(columns=[*names, "__fragment_index"])
        where = table.column("__fragment_index")
        table = table.drop_columns(["__fragment_index"])
        table = table.append_column(_RANK, pc.take(pa.array([r for _, r in files], pa.int64()), where))
        if keep_path:
            table = table.append_column(_FILENAME, pc.take(pa.array(paths, pa.string()), where))
        return table

    def _reading(self, what: str, listing: Callable[[], Any], read: Callable[[Any], pa.Table]) -> pa.Table:
        """``read(listing())``, again on a fresh listing when files changed under the read (a compaction
        deleted what it folded); a file that fails to read while the listing holds still is named."""
        for attempt in range(_READ_RETRIES):
            files = listing()
            try:
                return read(files)
            except (OSError, pa.ArrowException) as err:
                vanished = isinstance(err, FileNotFoundError) or any(
                    m in str(err) for m in ("No such file", "does not exist", "NoSuchKey", "Not Found")
                )
                if attempt + 1 < _READ_RETRIES and (vanished or listing() != files):
                    continue
                raise self._read_error(what, err) from err
        raise AssertionError("unreachable")

    def _read_error(self, what: str, err: BaseException) -> UserError:
        """The :class:`UserError` naming the first file of ``what`` that does not read alone."""
        if what == TRIALS_DIR:
            small, parts = self._list_trials()
            paths = sorted([*small.values(), *parts])
        else:
            paths = [p for _, p, _, _ in self._list_epochs()]
        for path in paths:
            try:
                with self._fs.open_input_file(path) as f:
                    pq.ParquetFile(f).read()
            except FileNotFoundError:
                continue
            except (pa.ArrowException, OSError) as file_err:
                return _corrupt(self._display(path), file_err)
        return UserError(f"cannot read {self._display(self._join(what))}: {_first_line(err)}")

    # -- trials -----------------------------------------------------------------------------------
    def _legacy_table(self, columns: Sequence[str] | None = None) -> pa.Table | None:
        """The ``trials.parquet`` of an earlier version as :data:`TRIALS_SCHEMA`, or ``None``."""
        path = self._join(TRIALS_FILE)
        if not self._exists(path):
            return None
        table = _read_table_checked(self._fs, path, self._display(path))
        missing = [c for c in ("trial_id", "arm", "status") if c not in table.column_names]
        if missing:
            raise UserError(
                f"{self._display(path)} is not a lyaptune trials table (no column {', '.join(missing)})"
            )
        table = _from_legacy(table)
        return table.select(list(columns)) if columns else table

    def _trial_files_table(self, columns: Sequence[str], *, parts_only: bool = False) -> pa.Table:
        """``trials/`` as one table of ``columns`` (plus ``trial_id``, ``updated_at``): one row per run,
        its newest copy (:func:`_keep_newest`). A file of an earlier layout that lacks a column reads
        null there."""
        wanted = list(dict.fromkeys(["trial_id", *columns, "updated_at"]))

        def listing() -> list[tuple[str, int]]:
            small, parts = self._list_trials()
            files = sorted(parts.items()) if parts_only else [(p, _SMALL_RANK) for p in small.values()]
            return files if parts_only else files + sorted(parts.items())

        table = self._reading(TRIALS_DIR, listing, lambda files: self._scan(files, wanted, TRIALS_SCHEMA))
        return _fill_defaults(_keep_newest(table).drop_columns([_RANK]))

    def _trials_table(self, columns: Sequence[str] | None = None) -> pa.Table:
        """The trials table: the rows of ``trials/`` then the legacy rows they do not replace.

        Rows of ``trials/`` are ordered by when their run was first recorded (``created_at``, then
        ``trial_id``); legacy rows come first, in their file's order.
        """
        wanted = list(dict.fromkeys(["trial_id", *columns, "created_at"])) if columns else list(TRIAL_COLUMNS)
        table = self._trial_files_table(wanted).select(wanted)
        table = table.sort_by([("created_at", "ascending"), ("trial_id", "ascending")])
        legacy = self._legacy_table(wanted)
        if legacy is not None:
            if table.num_rows:
                mask = pc.invert(pc.is_in(legacy.column("trial_id"), value_set=table.column("trial_id")))
                legacy = legacy.filter(mask)
            table = pa.concat_tables([legacy.select(table.column_names), table])
        return table.select(list(columns)) if columns else table

    def _part_index(self) -> dict[str, tuple[str, _dt.datetime, _dt.datetime]]:
        """The writer's index of compacted runs: ``trial_id -> (arm, created_at, updated_at)`` of its
        newest copy in a part (read once, again after each compaction)."""
        if self._index is None:
            t = self._trial_files_table(["arm", "created_at"], parts_only=True)
            cols = [t.column(c).to_pylist() for c in ("trial_id", "arm", "created_at", "updated_at")]
            self._index = {tid: (a, c or u, u) for tid, a, c, u in zip(*cols)}
        return self._index

    def _previous(self, trial_id: str) -> tuple[str, _dt.datetime, _dt.datetime | None] | None:
        """``(arm, created_at, updated_at)`` of a recorded run's newest copy (its own file, else a part,
        else the legacy table), or ``None``."""
        known = self._known.get(trial_id)
        if known is not None:
            return known
        path = self._trial_path(trial_id)
        old = _read_table_checked(
            self._fs, path, self._display(path), ["arm", "created_at", "updated_at"], missing_ok=True
        )
        if old is not None and old.num_rows:
            arm, created, updated = (old.column(c)[0].as_py() for c in ("arm", "created_at", "updated_at"))
            return arm, created or updated or _dt.datetime.now(_dt.timezone.utc), updated
        if trial_id in self._part_index():
            return self._part_index()[trial_id]
        if self._legacy is None:
            legacy = self._legacy_table(["trial_id", "arm", "updated_at"])
            self._legacy = (
                {}
                if legacy is None
                else {
                    t: (a, u) for t, a, u in zip(*(legacy.column(c).to_pylist() for c in legacy.column_names))
                }
            )
        if trial_id in self._legacy:
            arm, updated = self._legacy[trial_id]
            return arm, updated or _dt.datetime.now(_dt.timezone.utc), updated
        return None

    def _remove_stale_temp_files(self) -> int:
        """Delete temporary files left by a writer that was killed mid-write; return how many runs'
        own trials files there are (the runs not compacted yet)."""
        selector = pafs.FileSelector(self._root, recursive=True)
        trials_dir = self._join(TRIALS_DIR) + "/"
        small = 0
        for info in self._fs.get_file_info(selector):
            if info.type != pafs.FileType.File:
                continue
            if info.base_name.startswith(_TMP_PREFIX):
                try:
                    self._fs.delete_file(info.path)
                except (OSError, pa.ArrowException):
                    pass
            elif (
                info.path.startswith(trials_dir)
                and _visible_parquet(info)
                and _part_seq(info.base_name) is None
            ):
                small += 1
        return small

    def _start_writing(self) -> None:
        """On the first write of this writer: finish a compaction a killed writer left, clean up."""
        if self._needs_recovery or not self._writing:
            self._finish_compaction()
            self._needs_recovery = False
        if not self._writing:
            self._uncompacted = self._remove_stale_temp_files()
            self._writing = True

    def record_trial(self, row: Mapping[str, Any], epochs: Sequence[Mapping[str, Any]] | None = None) -> None:
        """Insert or replace one run: its epochs file, then its trials file.

        A run recorded again under the same ``trial_id`` (a retry, a resumed run, a status update)
        replaces its earlier row (keeping its ``created_at``, so its place in :meth:`trials`) and, when
        ``epochs`` is given, its whole epochs, so no ``(trial_id, epoch)`` pair is ever read twice. A
        run already compacted into a part gets its own files again, which readers prefer (its
        ``updated_at`` is made later than the part's copy); the next compaction drops the part's copy.
        The cost does not depend on how many runs are stored: two files are written and at most the
        run's own earlier trials file is read; every :data:`COMPACT_EVERY` finished runs the writer
        compacts (:meth:`compact`). Thread-safe; one process should write a run directory
        (:func:`lock_run_dir`).

        Args:
          row: the run's columns (see :func:`trial_row`): the :data:`TRIAL_COLUMNS` (``trial_id``,
            ``arm``, ``phase`` and ``status`` required; ``repeat`` defaults to 0, ``updated_at`` to now;
            ``params_json`` is built by the store) and ``param_<name>`` hyperparameters.
          epochs: the run's per-epoch records (:data:`EPOCH_RECORD_FIELDS` plus numeric diagnostics, as
            mappings or :class:`~lyaptune._records.EpochRecord`); ``None`` leaves any stored epochs as
            they are, an empty sequence removes them.

        Raises:
          ValueError: an unknown column, a missing key, a bad phase / status, a value of the wrong type
            (naming the column and the value), or a repeated epoch.
          UserError: a file could not be read or written (the message names it).
        """
        table = _trial_table(row)
        tid, arm, phase, seed, status = (
            table.column(c)[0].as_py() for c in ("trial_id", "arm", "phase", "seed", "status")
        )
        epochs_table = _epochs_table(tid, phase, seed, epochs) if epochs else None
        with self._lock:
            self._start_writing()
            previous = self._previous(tid)
            old_arm = previous[0] if previous is not None else None
            created = table.column("created_at")[0].as_py()
            if created is None:
                created = previous[1] if previous is not None else table.column("updated_at")[0].as_py()
                i = TRIALS_SCHEMA.get_field_index("created_at")
                table = table.set_column(i, "created_at", pa.array([created], _UTC_US))
            compacted = tid in self._part_index()
            updated = table.column("updated_at")[0].as_py()
            if compacted and previous is not None and previous[2] is not None and updated <= previous[2]:
                # the part keeps its copy until the next compaction: the new one must be the newer
                updated = previous[2] + _dt.timedelta(microseconds=1)
                i = TRIALS_SCHEMA.get_field_index("updated_at")
                table = table.set_column(i, "updated_at", pa.array([updated], _UTC_US))
            path = self._epoch_path(arm, tid)
            old_path = self._epoch_path(old_arm, tid) if old_arm is not None and old_arm != arm else None
            try:
                self._held_rows.pop(tid, None)
                if epochs_table is not None:
                    self._held_epochs.pop(tid, None)
                    self._write_parquet(path, epochs_table)
                    self._held_epochs[tid] = epochs_table
                elif epochs is not None:
                    self._held_epochs.pop(tid, None)
                    if self._exists(path):
                        self._fs.delete_file(path)
                    if compacted:
                        self._purge_epochs([tid])
                elif old_path is not None and self._exists(old_path):
                    # the run moved arm without new epochs: carry its epochs file along
                    self._fs.create_dir(self._epoch_dir(arm), recursive=True)
                    self._fs.move(old_path, path)
                    old_path = None
                elif old_path is not None and compacted:
                    # ... or its copy in a part of its old arm
                    moved = self._epochs_arrow([old_arm], None, include_orphans=True, trial_ids=[tid])
                    if moved.num_rows:
                        moved = moved.drop_columns([_ARM_KEY])
                        moved = moved.select(_order_epoch_columns(moved.column_names))
                        self._write_parquet(path, moved)
                        self._held_epochs[tid] = moved
                self._write_parquet(self._trial_path(tid), table)
                self._held_rows[tid] = table
                self._known[tid] = (arm, created, updated)
                if old_path is not None and self._exists(old_path):
                    self._fs.delete_file(old_path)
            except (OSError, pa.ArrowException) as err:
                raise UserError(f"cannot record trial {tid!r} in {self.uri}: {_first_line(err)}") from err
            if status != "running":
                self._uncompacted += 1
            if self.compact_every and self._uncompacted >= self.compact_every:
                try:
                    self.compact()
                except (UserError, OSError, pa.ArrowException) as err:  # the run is recorded; retried later
                    warnings.warn(f"compaction of {self.uri} failed, retried later: {err}", stacklevel=2)
                    self._uncompacted = 0

    # -- compaction -------------------------------------------------------------------------------
    def _step(self, step: str) -> None:
        """The fault-injection point ``step`` (:data:`COMPACTION_STEPS`)."""
        if self.compaction_hook is not None:
            self.compaction_hook(step)
        if os.environ.get(COMPACTION_FAULT_ENV) == step:
            os.kill(os.getpid(), signal.SIGKILL)

    def _rel(self, path: str) -> str:
        return path[len(self._root.rstrip("/")) + 1 :]

    def _delete_files(self, paths: Sequence[str]) -> None:
        """Delete ``paths`` (already missing ones are fine), a few at a time on an object store."""

        def delete(path: str) -> None:
            try:
                self._fs.delete_file(path)
            except FileNotFoundError:
                pass

        if self.is_local or len(paths) < 2:
            for p in paths:
                delete(p)
            return
        with ThreadPoolExecutor(max_workers=16) as pool:
            list(pool.map(delete, paths))

    def _finish_compaction(self) -> bool:
        """Finish the compaction a killed (or failed) writer left: forward when all its parts were
        written (delete what they fold), else back (delete its parts). ``False`` when there was none."""
        text = self._read_text(COMPACTION_FILE)
        if text is None:
            return False
        try:
            manifest = json.loads(text)
            writes = [self._join(p) for p in manifest["write"]]
            deletes = [self._join(p) for p in manifest["delete"]]
        except (ValueError, KeyError, TypeError) as err:
            raise UserError(f"cannot read {self._display(self._join(COMPACTION_FILE))}: {err}") from err
        if all(self._exists(p) for p in writes):
            self._delete_files(deletes)
        else:
            self._delete_files(writes)
        self._delete_files([self._join(COMPACTION_FILE)])
        self._index = None
        return True

    def _commit(
        self,
        epoch_parts: Mapping[str, pa.Table],
        trial_parts: Mapping[str, pa.Table],
        trial_deletes: Sequence[str],
        epoch_deletes: Sequence[str],
    ) -> None:
        """Write the parts and delete what they replace, as one compaction.

        The steps: the manifest naming both; the epochs parts; the trials parts (a run's row is never
        readable from a part before its epochs are); the replaced trials files; the replaced epochs
        files; the manifest. Each file is written atomically. Until the deletes, every run has two
        identical copies, which readers collapse; :meth:`_finish_compaction` completes or undoes a
        compaction that stopped between two steps.
        """
        manifest = {
            "write": [self._rel(p) for p in [*epoch_parts, *trial_parts]],
            "delete": [self._rel(p) for p in [*trial_deletes, *epoch_deletes]],
        }
        self._write_bytes(self._join(COMPACTION_FILE), json.dumps(manifest).encode("utf-8"))
        self._step("manifest")
        try:
            for path, t in epoch_parts.items():
                self._write_parquet(path, t, _PART_OPTIONS)
            self._step("epochs_parts")
            for path, t in trial_parts.items():
                self._write_parquet(path, t, _PART_OPTIONS)
            self._step("trials_part")
            self._delete_files(trial_deletes)
            self._step("trials_deleted")
            self._delete_files(epoch_deletes)
            self._step("deleted")
            self._delete_files([self._join(COMPACTION_FILE)])
        except Exception:
            try:
                self._finish_compaction()
            except Exception:  # e.g. the object store is unreachable: the next write finishes it
                self._needs_recovery = True
            raise
        finally:
            self._index = None

    def compact(self) -> int:
        """Fold the finished runs' own files into Parquet parts; return how many runs were folded.

        Every run whose status is not ``running`` and that has its own trials file (recorded since the
        last compaction) moves, with its epochs file, into one new part of ``trials/`` and one per arm
        of ``epochs/``; a part that holds an older copy of such a run is rewritten without it. A
        compaction is atomic for every reader: a run is readable from its own files, then from both
        (identical copies, which :meth:`trials` and :meth:`epochs` read once), then from the part; a
        compaction killed at any step leaves a store that reads the same, and the next writer (its
        first :meth:`record_trial` or :meth:`compact`) finishes or undoes it. The writer compacts by
        itself every :data:`COMPACT_EVERY` finished runs; call this at the end of a study, or run
        ``lyaptune compact RUN_DIR`` (which takes the run-directory lock). Only the process that writes
        the run directory may call it.

        Returns:
          The number of runs folded into the new parts (0: nothing to do).

        Raises:
          UserError: a file could not be read or written (the message names it).
        """
        with self._lock:
            self._start_writing()
            self._uncompacted = 0
            small, trial_parts = self._list_trials()
            if not small:
                return 0
            # the runs this writer recorded are in memory as written; the others are read
            held = {t: p for t, p in small.items() if t in self._held_rows}
            rest = [(p, _SMALL_RANK) for t, p in small.items() if t not in held]
            tables = [self._held_rows[t] for t in held]
            if rest:
                read = self._reading(TRIALS_DIR, lambda: rest, lambda f: self._scan(f, None, TRIALS_SCHEMA))
                tables.append(read.drop_columns([_RANK]))
            rows = _fill_defaults(
                pa.concat_tables(tables, promote_options="permissive").select(TRIALS_SCHEMA.names)
            )
            rows = rows.filter(pc.not_equal(rows.column("status"), "running"))
            if not rows.num_rows:
                return 0
            ids = rows.column("trial_id").to_pylist()
            arm_of = dict(zip(ids, rows.column("arm").to_pylist()))
            trial_deletes = sorted(small[t] for t in ids)
            epoch_files = self._list_epochs()
            folded = [(a, p, t) for a, p, r, t in epoch_files if r == _SMALL_RANK and arm_of.get(t) == a]
            seq = 1 + max([*trial_parts.values(), *(r for _, _, r, _ in epoch_files if r != _SMALL_RANK), 0])
            epoch_parts: dict[str, pa.Table] = {}
            for a in sorted({a for a, _, _ in folded}):
                tables = [self._held_epochs[t] for b, _, t in folded if b == a and t in self._held_epochs]
                rest = [(p, _SMALL_RANK) for b, p, t in folded if b == a and t not in self._held_epochs]
                if rest:
                    read = self._reading(
                        EPOCHS_DIR, lambda rest=rest: rest, lambda f: self._scan(f, None, None, epochs=True)
                    )
                    tables.append(read.drop_columns([_RANK, _ARM_KEY]))
                t = pa.concat_tables(tables, promote_options="permissive")
                t = t.sort_by([("trial_id", "ascending"), ("epoch", "ascending")])
                epoch_parts[f"{self._epoch_dir(a)}/{_part_name(seq)}"] = t.select(
                    _order_epoch_columns(t.column_names)
                )
            new_parts = {self._join(TRIALS_DIR, _part_name(seq)): rows}
            seq += 1
            # parts holding older copies of these runs are rewritten without them
            index = self._part_index()
            again = [t for t in ids if t in index]
            epoch_deletes = [p for _, p, _ in folded]
            if again:
                old = self._scan(sorted(trial_parts.items()), None, TRIALS_SCHEMA, keep_path=True)
                seq = self._rewrite_without(
                    old, again, new_parts, trial_deletes, seq, lambda p: p.rsplit("/", 1)[0]
                )
                with_epochs = {t for _, _, t in folded}
                again_epochs = [t for t in again if t in with_epochs]
                if again_epochs:
                    parts = [(p, r) for _, p, r, _ in epoch_files if r != _SMALL_RANK]
                    old = self._scan(parts, None, None, epochs=True, keep_path=True)
                    self._rewrite_without(
                        old, again_epochs, epoch_parts, epoch_deletes, seq, lambda p: p.rsplit("/", 1)[0]
                    )
            self._commit(epoch_parts, new_parts, trial_deletes, epoch_deletes)
            # the index follows the compaction (rewritten parts keep their other rows as they were)
            cols = [rows.column(c).to_pylist() for c in ("arm", "created_at", "updated_at")]
            index.update((t, (a, c or u, u)) for t, a, c, u in zip(ids, *cols))
            self._index = index
            for t in ids:
                self._held_rows.pop(t, None)
                self._held_epochs.pop(t, None)
            return len(ids)

    def _rewrite_without(
        self,
        old: pa.Table,
        drop: Sequence[str],
        writes: dict[str, pa.Table],
        deletes: list[str],
        seq: int,
        parent: Callable[[str], str],
    ) -> int:
        """Plan the rewrite of every part of ``old`` (rows with ``__filename``) that holds a run of
        ``drop``: its other rows into a new part (into ``writes``), the part into ``deletes``."""
        hit = old.filter(pc.is_in(old.column("trial_id"), value_set=pa.array(drop, pa.string())))
        for path in sorted(set(hit.column(_FILENAME).to_pylist())):
            t = old.filter(pc.equal(old.column(_FILENAME), path))
            t = t.filter(pc.invert(pc.is_in(t.column("trial_id"), value_set=pa.array(drop, pa.string()))))
            t = t.drop_columns([_RANK, _FILENAME])
            if path.startswith(self._join(EPOCHS_DIR) + "/"):  # the arm is the part's directory
                t = t.drop_columns([_ARM_KEY])
                t = t.select(_order_epoch_columns(t.column_names))
            if t.num_rows:
                writes[f"{parent(path)}/{_part_name(seq)}"] = t
                seq += 1
            deletes.append(path)
        return seq

    def _purge_epochs(self, trial_ids: Sequence[str]) -> None:
        """Rewrite the epochs parts that hold ``trial_ids`` without them (their epochs were removed)."""
        files = self._list_epochs()
        parts = [(p, r) for _, p, r, _ in files if r != _SMALL_RANK]
        if not parts:
            return
        old = self._scan(parts, None, None, epochs=True, keep_path=True)
        writes: dict[str, pa.Table] = {}
        deletes: list[str] = []
        seq = 1 + max([r for _, r in parts] + list(self._list_trials()[1].values()))
        self._rewrite_without(old, list(trial_ids), writes, deletes, seq, lambda p: p.rsplit("/", 1)[0])
        if writes or deletes:
            self._commit(writes, {}, [], deletes)

    # -- reading the trials table -----------------------------------------------------------------
    def trials(self) -> pd.DataFrame:
        """The trials table as a DataFrame: :data:`TRIAL_COLUMNS`, then one ``param_<name>`` column per
        hyperparameter (sorted by name), typed even when no run is recorded.

        One row per run, its newest copy (the latest ``updated_at``), read from the runs' own files and
        the compacted parts as one pyarrow dataset. Rows are in the order their runs were first
        recorded. ``optuna_number`` and ``population_size`` are nullable integer (``Int64``) columns; a
        ``param_`` column is float64 when every value of it is a number, else string (non-strings as
        JSON).

        Raises:
          UserError: a trials file is corrupt or truncated (the message names it).
        """
        table = self._trials_table()
        df = table.to_pandas()
        for col in _NULLABLE_INT_COLUMNS:
            df[col] = table.column(col).to_pandas(types_mapper={pa.int64(): pd.Int64Dtype()}.get).array
        params = _expand_params(table.column("params_json"))
        if params:
            extra = pd.DataFrame({k: v.to_pandas() for k, v in params.items()}, index=df.index)
            df = pd.concat([df, extra], axis=1)
        return df

    def trial_ids(self, statuses: Collection[str] | None = None) -> set[str]:
        """The recorded trial ids, optionally only those whose status is in ``statuses``."""
        if statuses is not None:
            bad = [s for s in statuses if s not in STATUSES]
            if bad:
                raise ValueError(f"unknown status {bad[0]!r}; choices: {', '.join(STATUSES)}")
        table = self._trials_table(columns=["trial_id", "status"])
        if statuses is not None:
            table = table.filter(
                pc.is_in(table.column("status"), value_set=pa.array(sorted(statuses), pa.string()))
            )
        return set(table.column("trial_id").to_pylist())

    def has_trials(self) -> bool:
        """Whether any run has been recorded (a file in ``trials/``, or a legacy ``trials.parquet``)."""
        if self._exists(self._join(TRIALS_FILE)):
            return True
        selector = pafs.FileSelector(self._join(TRIALS_DIR), allow_not_found=True)
        return any(_visible_parquet(i) for i in self._fs.get_file_info(selector))

    # -- epochs -----------------------------------------------------------------------------------
    def _epochs_arrow(
        self,
        arms: Sequence[str] | None,
        columns: Sequence[str] | None,
        *,
        include_orphans: bool,
        trial_ids: Sequence[str] | None = None,
    ) -> pa.Table:
        """The epochs of ``arms`` (all if ``None``) as one Arrow table, each run's newest copy."""
        head = [_ARM_KEY, *EPOCH_KEY_COLUMNS, "epoch"]
        wanted = None if columns is None else list(dict.fromkeys([*head, *columns]))

        def read(files: list[tuple[str, str, int, str | None]]) -> pa.Table:
            if trial_ids is not None:  # a run's own files by name; parts all
                keep = set(trial_ids)
                files = [f for f in files if f[3] is None or f[3] in keep]
            t = self._scan([(p, r) for _, p, r, _ in files], wanted, None, epochs=True)
            if trial_ids is not None:
                t = t.filter(pc.is_in(t.column("trial_id"), value_set=pa.array(list(trial_ids), pa.string())))
            return t

        table = self._reading(EPOCHS_DIR, lambda: self._list_epochs(arms), read)
        base = pa.schema([pa.field(_ARM_KEY, pa.string()), *_EPOCH_BASE_SCHEMA])
        if columns is not None:
            base = pa.schema([base.field(c) for c in wanted if c in base.names])
        table = pa.concat_tables(
            [base.empty_table().append_column(_RANK, pa.array([], pa.int64())), table],
            promote_options="permissive",
        )
        if columns is not None:
            missing = [c for c in wanted if c not in table.column_names]
            if missing:
                choices = self.epochs_schema().names
                raise ValueError(f"unknown epochs column {missing[0]!r}; choices: {', '.join(choices)}")
        table = _keep_newest_source(table).drop_columns([_RANK])
        if not include_orphans:
            runs = self._trials_table(["trial_id", "arm"])
            where = pc.index_in(table.column("trial_id"), value_set=runs.column("trial_id"))
            same_arm = pc.equal(pc.take(runs.column("arm"), where), table.column(_ARM_KEY))
            table = table.filter(pc.fill_null(same_arm, False))
        return table.select(_order_epoch_columns(table.column_names))

    def epochs(
        self,
        arm: str | Sequence[str] | None = None,
        *,
        include_orphans: bool = False,
        columns: Sequence[str] | None = None,
    ) -> pd.DataFrame:
        """Every stored epoch record, one row per trial and epoch, with an ``arm`` column.

        Read as one pyarrow dataset over the runs' own files and the compacted parts, with the arm
        selection (directories) and the column selection pushed down; a run's newest copy only.

        Args:
          arm: only this arm's trials (or these arms').
          include_orphans: also return epochs files whose run has no trials row
            (left by a driver killed between the two writes of :meth:`record_trial`).
          columns: read only these record fields / diagnostics (``arm``, :data:`EPOCH_KEY_COLUMNS` and
            ``epoch`` always come along); default all.

        Returns:
          Columns ``arm``, :data:`EPOCH_KEY_COLUMNS`, :data:`EPOCH_RECORD_FIELDS`, then any optimizer
          diagnostics (missing values are NaN); by arm, then file (a compacted part is sorted by trial
          and epoch), then the order the run recorded its epochs.

        Raises:
          UserError: an epochs file is corrupt or truncated (the message names it).
          ValueError: a column no epochs file has (naming the choices).
        """
        arms = None if arm is None else [arm] if isinstance(arm, str) else list(arm)
        return self._epochs_arrow(arms, columns, include_orphans=include_orphans).to_pandas()

    def epochs_schema(self) -> pa.Schema:
        """The union of the schemas of all epochs files, with ``arm`` last, for ``pyarrow.dataset``.

        ``pyarrow.dataset.dataset(..., partitioning="hive")`` infers its schema from one file only; pass
        ``schema=store.epochs_schema()`` to keep diagnostic columns that only some arms have.
        """
        import pyarrow.dataset as ds

        def read(files: list[tuple[str, str, int, str | None]]) -> pa.Schema:
            factory = ds.FileSystemDatasetFactory(
                self._fs, [p for _, p, _, _ in files], ds.ParquetFileFormat()
            )
            return factory.inspect(promote_options="permissive", fragments=None)

        found = self._reading(EPOCHS_DIR, self._list_epochs, read)
        schema = pa.unify_schemas([_EPOCH_BASE_SCHEMA, found], promote_options="permissive")
        fields = [schema.field(n) for n in _order_epoch_columns(schema.names) if n != _ARM_KEY]
        return pa.schema([*fields, pa.field(_ARM_KEY, pa.string())])


# -- building a row ---------------------------------------------------------------------------------


def _config_dict(config: Any) -> dict[str, Any]:
    if config is None:
        return {}
    if isinstance(config, Mapping):
        return _plain(config)
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        return _dataclass_dict(config)
    to_dict = getattr(config, "to_dict", None)
    if callable(to_dict):
        return _plain(to_dict())
    raise TypeError(f"config must be a mapping or have to_dict(), got {type(config).__name__}")


def _result_value(result: Any, info: Mapping[str, Any], name: str) -> Any:
    """``result.<name>``, else ``result.info[name]``, else ``None``."""
    value = getattr(result, name, None)
    return info.get(name) if value is None else value


def _finite_min(values: Iterable[Any]) -> float | None:
    vals = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    return min(vals) if vals else None


def trial_row(
    *,
    study: str,
    arm: str,
    trial_id: str,
    phase: str,
    seed: int,
    config: Any,
    result: Any | None,
    status: str | None = None,
    objective: float | None = None,
    optuna_number: int | None = None,
    params: Mapping[str, Any] | None = None,
    message: str = "",
    repeat: int | None = None,
) -> dict[str, Any]:
    """The trials-table row of one run, from its config and :class:`~lyaptune.train.TrialResult`.

    ``final_*`` come from the last epoch record, ``min_grad_norm`` is the smallest ``grad_norm`` over
    all records (NaN entries skipped, so a diverged trial keeps the minimum it reached),
    ``epochs_completed`` is the number of records, and ``derived_lr``, ``k_hat``, ``initial_loss`` come
    from ``result.info`` (null when absent). ``population_wall_s`` and ``population_size`` come from the
    result (an attribute, else ``result.info``; null when the run did not train in a vmapped population:
    then ``wall_s`` is already the population's wall time over its size, METHODS.md section 8 "Cost").

    Args:
      study, arm, trial_id, phase, seed: the trial's identity.
      config: the :class:`~lyaptune.train.TrialConfig` (or its ``to_dict()``), stored as JSON.
      result: the trial's result, or ``None`` for a trial that has not produced one (running, errored).
      status: overrides ``result.status`` (e.g. ``stopped``, ``errored``); default ``result.status``, or
        ``running`` without a result.
      objective: the value the search optimised (computed by the study).
      optuna_number: the trial's number in its arm's Optuna study.
      params: the searched hyperparameters, stored as ``param_<name>`` columns.
      message: why the trial ended early; default ``result.message``.
      repeat: the search repeat index; default the config's ``repeat``, else 0.

    Returns:
      A dict for :meth:`RunStore.record_trial`.
    """
    cfg = _config_dict(config)
    records = [_record_dict(r) for r in result.records] if result is not None else []
    info = dict(result.info) if result is not None else {}
    last = records[-1] if records else {}
    row: dict[str, Any] = {
        "study": study,
        "arm": arm,
        "trial_id": trial_id,
        "phase": phase,
        "optimizer": cfg.get("optimizer"),
        "schedule": cfg.get("schedule"),
        "dataset": cfg.get("dataset"),
        "model": cfg.get("model"),
        "seed": seed,
        "repeat": repeat if repeat is not None else (cfg.get("repeat") or 0),
        "optuna_number": optuna_number,
        "status": status or (result.status if result is not None else "running"),
        "epochs_completed": len(records),
        "objective": objective,
        **{col: last.get(key) for col, key in _TRIAL_FINALS.items()},
        "min_grad_norm": _finite_min(r.get("grad_norm") for r in records),
        "wall_s": result.wall_s if result is not None else None,
        "population_wall_s": _result_value(result, info, "population_wall_s"),
        "population_size": _result_value(result, info, "population_size"),
        "derived_lr": info.get("derived_lr"),
        "k_hat": info.get("k_hat"),
        "initial_loss": info.get("initial_loss"),
        "message": message or (result.message if result is not None else ""),
        "info_json": _to_json(info),
        "config_json": _to_json(cfg),
    }
    row = {k: row[k] for k in TRIAL_COLUMNS if k in row}
    for name, value in (params or {}).items():
        row[f"{PARAM_PREFIX}{name}"] = value
    return row
