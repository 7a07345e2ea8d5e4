"""A study's run directory: the Parquet schema, its writer and its reader.

Layout of ``<out>/<name>/`` (a local path or any URI that :mod:`pyarrow.fs` understands)::

    spec.yaml                      the resolved spec (``yaml.safe_dump``)
    study.json                     versions, host, device, start / end (merge-updated)
    trials.parquet                 one row per trial (:data:`TRIALS_SCHEMA` + ``param_<name>`` columns)
    epochs/arm=<arm>/<trial>.parquet   one row per epoch of one trial (hive-partitioned by arm)

Every file is written to a hidden temporary name in its own directory (a leading ``.``, which
pyarrow.dataset, pandas, DuckDB and Polars skip) and then renamed over the target, so a reader of a
study in progress sees either the previous or the new version of a file, never a partial one. A trial
is recorded epochs first, then its row, so a row never points at missing epochs; recording a trial
again (a retry, a resume) replaces its row and its epochs file, so ``(trial_id, epoch)`` stays unique.

The driver process is the only writer: :class:`RunStore` keeps the trials table in memory and rewrites
``trials.parquet`` whole on each :meth:`RunStore.record_trial`.

Reading with other tools: ``pandas.read_parquet(run / "trials.parquet")``;
``pyarrow.dataset.dataset(run / "epochs", partitioning="hive")`` gives the ``arm`` column from the
directory names. pyarrow.dataset takes the schema of the *first* file it finds, so optimizer diagnostic
columns that only some arms have are dropped unless a schema is passed (``schema=store.epochs_schema()``);
:meth:`RunStore.epochs` unifies them. An epochs file whose trial has no row yet (a driver killed
between the two writes) is skipped by :meth:`RunStore.epochs` and replaced when the trial is recorded.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import math
import os
import threading
import uuid
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

from lyaptune._records import RECORD_FIELDS
from lyaptune.errors import UserError

__all__ = [
    "RunStore",
    "trial_row",
    "read_parquet_checked",
    "TRIALS_SCHEMA",
    "TRIAL_COLUMNS",
    "EPOCH_RECORD_FIELDS",
    "EPOCH_KEY_COLUMNS",
    "STATUSES",
    "PHASES",
    "PARAM_PREFIX",
]

#: Trial outcomes. ``running`` marks a trial recorded before it ended.
STATUSES = ("completed", "diverged", "stopped", "errored", "running")
#: ``search``: a trial proposed by Optuna; ``final``: an arm's best configuration re-run on a fresh seed.
PHASES = ("search", "final")
#: Prefix of the per-hyperparameter columns of ``trials.parquet``.
PARAM_PREFIX = "param_"

SPEC_FILE = "spec.yaml"
STUDY_FILE = "study.json"
TRIALS_FILE = "trials.parquet"
EPOCHS_DIR = "epochs"
_ARM_KEY = "arm"
# Leading "." so that every dataset reader skips a file being written.
_TMP_PREFIX = ".lyaptune-tmp-"

_UTC_US = pa.timestamp("us", tz="UTC")

#: The fixed columns of ``trials.parquet``, in order, with their types (an empty table has them too).
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
        ("optuna_number", pa.int64()),
        ("status", pa.string()),
        ("epochs_completed", pa.int64()),
        ("objective", pa.float64()),
        ("final_train_loss", pa.float64()),
        ("final_grad_norm", pa.float64()),
        ("min_grad_norm", pa.float64()),
        ("final_val_loss", pa.float64()),
        ("final_val_acc", pa.float64()),
        ("final_test_loss", pa.float64()),
        ("final_test_acc", pa.float64()),
        ("wall_s", pa.float64()),
        ("derived_lr", pa.float64()),
        ("k_hat", pa.float64()),
        ("initial_loss", pa.float64()),
        ("message", pa.string()),
        ("info_json", pa.string()),
        ("config_json", pa.string()),
        ("updated_at", _UTC_US),
    ]
)
TRIAL_COLUMNS = tuple(TRIALS_SCHEMA.names)
_TRIAL_TYPES = {f.name: f.type for f in TRIALS_SCHEMA}

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

_TRIAL_FINALS = {
    "final_train_loss": "train_loss",
    "final_grad_norm": "grad_norm",
    "final_val_loss": "val_loss",
    "final_val_acc": "val_acc",
    "final_test_loss": "test_loss",
    "final_test_acc": "test_acc",
}


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


def _scalar(v: Any) -> Any:
    item = getattr(v, "item", None)
    if callable(item) and not isinstance(v, (str, bytes)):
        try:
            return item()
        except (TypeError, ValueError):
            return v
    return v


def _as_float(v: Any, field: str) -> float | None:
    v = _scalar(v)
    if v is None:
        return None
    try:
        return float(v)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{field} must be a number, got {v!r}") from err


def _as_int(v: Any, field: str) -> int | None:
    v = _scalar(v)
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v != int(v):
        raise ValueError(f"{field} must be an integer, got {v!r}")
    return int(v)


def _as_str(v: Any, field: str) -> str | None:
    v = _scalar(v)
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    return v if isinstance(v, str) else str(v)


def _as_timestamp(v: Any, field: str) -> _dt.datetime | None:
    if v is None:
        return None
    if isinstance(v, str):
        v = _dt.datetime.fromisoformat(v)
    if not isinstance(v, _dt.datetime):
        raise ValueError(f"{field} must be a datetime, got {v!r}")
    return v.replace(tzinfo=_dt.timezone.utc) if v.tzinfo is None else v.astimezone(_dt.timezone.utc)


def _normalizer(t: pa.DataType) -> Callable[[Any, str], Any]:
    if pa.types.is_string(t):
        return _as_str
    if pa.types.is_int64(t):
        return _as_int
    if pa.types.is_float64(t):
        return _as_float
    return _as_timestamp


_NORMALIZERS = {name: _normalizer(t) for name, t in _TRIAL_TYPES.items()}


def _param_value(v: Any) -> Any:
    v = _scalar(v)
    if v is None or isinstance(v, (str, bool, int, float)):
        return v
    return _to_json(v)


def _normalize_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """Check a trial row and convert its values to the column types (numpy scalars to Python, ...)."""
    unknown = [k for k in row if k not in _TRIAL_TYPES and not str(k).startswith(PARAM_PREFIX)]
    if unknown:
        raise ValueError(
            f"unknown trial column(s) {', '.join(map(repr, unknown))}; valid: "
            f"{', '.join(TRIAL_COLUMNS)}, or '{PARAM_PREFIX}<name>' for a hyperparameter"
        )
    out: dict[str, Any] = {name: _NORMALIZERS[name](row.get(name), name) for name in TRIAL_COLUMNS}
    for key in ("trial_id", "arm"):
        if not out[key]:
            raise ValueError(f"a trial row needs a non-empty {key}, got {row.get(key)!r}")
    if out["phase"] not in PHASES:
        raise ValueError(f"phase must be one of {', '.join(PHASES)}; got {row.get('phase')!r}")
    if out["status"] not in STATUSES:
        raise ValueError(f"status must be one of {', '.join(STATUSES)}; got {row.get('status')!r}")
    if out["updated_at"] is None:
        out["updated_at"] = _dt.datetime.now(_dt.timezone.utc)
    for k, v in row.items():
        if str(k).startswith(PARAM_PREFIX):
            out[str(k)] = _param_value(v)
    return out


def _param_array(values: list[Any]) -> pa.Array:
    """float64 when every present value is a number (not a bool), else string (JSON for non-strings)."""
    present = [v for v in values if v is not None]
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in present):
        return pa.array([None if v is None else float(v) for v in values], type=pa.float64())
    return pa.array([v if v is None or isinstance(v, str) else _to_json(v) for v in values], type=pa.string())


def _trials_table(rows: Sequence[Mapping[str, Any]]) -> pa.Table:
    arrays = [pa.array([r.get(name) for r in rows], type=t) for name, t in _TRIAL_TYPES.items()]
    names = list(TRIAL_COLUMNS)
    params = sorted({k for r in rows for k in r if k.startswith(PARAM_PREFIX)})
    for p in params:
        arrays.append(_param_array([r.get(p) for r in rows]))
        names.append(p)
    return pa.Table.from_arrays(arrays, names=names)


def _conform_trials(table: pa.Table) -> pa.Table:
    """A trials table read from disk with every fixed column in order and type (added as nulls)."""
    fixed = [
        table.column(n).cast(t) if n in table.column_names else pa.nulls(table.num_rows, t)
        for n, t in _TRIAL_TYPES.items()
    ]
    params = sorted(n for n in table.column_names if n.startswith(PARAM_PREFIX))
    return pa.Table.from_arrays(
        [*fixed, *(table.column(p) for p in params)], names=[*TRIAL_COLUMNS, *params]
    ).combine_chunks()


def _upsert(table: pa.Table, pos: int | None, row: Mapping[str, Any]) -> pa.Table:
    """``table`` with row ``pos`` replaced by ``row`` (appended when ``pos`` is None).

    Only the new row is converted from Python; a hyperparameter whose values stop all being numbers
    (a string arrives in a float64 column) makes the whole table rebuild with that column as string.
    """
    new = _trials_table([row])
    parts = [table, new] if pos is None else [table.slice(0, pos), new, table.slice(pos + 1)]
    try:
        merged = pa.concat_tables(parts, promote_options="permissive")
    except (pa.ArrowTypeError, pa.ArrowInvalid):
        rows = table.to_pylist()
        if pos is None:
            rows.append(dict(row))
        else:
            rows[pos] = dict(row)
        merged = _trials_table(rows)
    params = sorted(n for n in merged.column_names if n.startswith(PARAM_PREFIX))
    return merged.select([*TRIAL_COLUMNS, *params]).combine_chunks()


def _epochs_table(
    trial_id: str, phase: str, seed: int | None, records: Sequence[Mapping[str, Any]]
) -> pa.Table:
    """One trial's records as a table: key columns, :data:`EPOCH_RECORD_FIELDS`, then diagnostics."""
    n = len(records)
    seen: set[int] = set()
    epochs: list[int] = []
    for i, rec in enumerate(records):
        e = _as_int(rec.get("epoch"), f"epochs[{i}]['epoch']")
        if e is None:
            raise ValueError(f"epoch record {i} of trial {trial_id!r} has no 'epoch'")
        if e in seen:
            raise ValueError(f"trial {trial_id!r} has two records for epoch {e}")
        seen.add(e)
        epochs.append(e)
    skip = {_ARM_KEY, *EPOCH_KEY_COLUMNS, *EPOCH_RECORD_FIELDS}
    extras = list(dict.fromkeys(k for rec in records for k in rec if k not in skip))
    arrays = [
        pa.array([trial_id] * n, type=pa.string()),
        pa.array([phase] * n, type=pa.string()),
        pa.array([seed] * n, type=pa.int64()),
    ]
    names = list(EPOCH_KEY_COLUMNS)
    for f in EPOCH_RECORD_FIELDS:
        if f == "epoch":
            arrays.append(pa.array(epochs, type=pa.int64()))
        elif f in _EPOCH_INT_FIELDS:
            arrays.append(pa.array([_as_int(r.get(f), f) for r in records], type=pa.int64()))
        else:
            arrays.append(pa.array([_as_float(r.get(f), f) for r in records], type=pa.float64()))
        names.append(f)
    for f in extras:
        arrays.append(pa.array([_as_float(r.get(f), f) for r in records], type=pa.float64()))
        names.append(f)
    return pa.Table.from_arrays(arrays, names=names)


def _order_epoch_columns(names: Iterable[str]) -> list[str]:
    names = list(names)
    head = [_ARM_KEY, *EPOCH_KEY_COLUMNS, *EPOCH_RECORD_FIELDS]
    return [c for c in head if c in names] + [c for c in names if c not in head]


# -- the run directory ------------------------------------------------------------------------------


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
        # the writer's copy of trials.parquet and the row number of each trial in it
        self._table: pa.Table | None = None
        self._index: dict[str, int] = {}
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

    def _write_parquet(self, path: str, table: pa.Table) -> None:
        self._atomic_write(
            path, lambda tmp: pq.write_table(table, tmp, filesystem=self._fs, compression="zstd")
        )

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
        text = self._read_text(SPEC_FILE)
        display = self._display(self._join(SPEC_FILE))
        if text is None:
            raise UserError(f"missing {display}")
        try:
            spec = yaml.safe_load(text)
        except yaml.YAMLError as err:
            raise UserError(f"cannot read {display}: invalid YAML ({_first_line(err)})") from err
        if not isinstance(spec, dict):
            raise UserError(f"cannot read {display}: expected a mapping, got {type(spec).__name__}")
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
        text = self._read_text(STUDY_FILE)
        if text is None:
            return {}
        display = self._display(self._join(STUDY_FILE))
        try:
            info = json.loads(text)
        except json.JSONDecodeError as err:
            raise UserError(f"cannot read {display}: invalid JSON ({err})") from err
        if not isinstance(info, dict):
            raise UserError(f"cannot read {display}: expected a JSON object")
        return info

    # -- trials -----------------------------------------------------------------------------------
    def _read_trials_table(self, columns: Sequence[str] | None = None) -> pa.Table | None:
        path = self._join(TRIALS_FILE)
        if not self._exists(path):
            return None
        table = _read_table_checked(self._fs, path, self._display(path), columns)
        missing = [c for c in (columns or ("trial_id", "arm", "status")) if c not in table.column_names]
        if missing:
            raise UserError(
                f"{self._display(path)} is not a lyaptune trials table (no column {', '.join(missing)})"
            )
        return table

    def _writer_table(self) -> tuple[pa.Table, dict[str, int]]:
        """The writer's copy of ``trials.parquet`` and each trial's row number, loaded on first use."""
        if self._table is None:
            table = self._read_trials_table()
            table = _conform_trials(table) if table is not None else _trials_table([])
            ids = table.column("trial_id").to_pylist()
            index = {t: i for i, t in enumerate(ids)}
            if len(index) != len(ids):  # duplicates written by something else: keep each trial's last row
                rows = {r["trial_id"]: r for r in table.to_pylist()}
                table = _trials_table(list(rows.values()))
                index = {t: i for i, t in enumerate(rows)}
            self._table, self._index = table, index
            self._remove_stale_temp_files()
        return self._table, self._index

    def _remove_stale_temp_files(self) -> None:
        """Delete temporary files left by a writer that was killed mid-write."""
        selector = pafs.FileSelector(self._root, recursive=True)
        for info in self._fs.get_file_info(selector):
            if info.type == pafs.FileType.File and info.base_name.startswith(_TMP_PREFIX):
                try:
                    self._fs.delete_file(info.path)
                except (OSError, pa.ArrowException):
                    pass

    def record_trial(self, row: Mapping[str, Any], epochs: Sequence[Mapping[str, Any]] | None = None) -> None:
        """Insert or replace one trial: its epochs file, then its row of ``trials.parquet``.

        A trial recorded again under the same ``trial_id`` (a retry, a resumed run, a status update)
        replaces its earlier row and, when ``epochs`` is given, its whole epochs file, so no
        ``(trial_id, epoch)`` pair is ever stored twice. Thread-safe; one process should write a run.

        Args:
          row: the trial's columns (see :func:`trial_row`): the :data:`TRIAL_COLUMNS` (``trial_id``,
            ``arm``, ``phase`` and ``status`` required; ``updated_at`` defaults to now) and
            ``param_<name>`` hyperparameters.
          epochs: the trial's per-epoch records (:data:`EPOCH_RECORD_FIELDS` plus numeric diagnostics);
            ``None`` leaves any stored epochs as they are, an empty sequence removes them.

        Raises:
          ValueError: an unknown column, a missing key, a bad phase / status, or a repeated epoch.
          UserError: a file could not be written (the message names it).
        """
        new = _normalize_row(row)
        tid, arm = new["trial_id"], new["arm"]
        epochs_table = _epochs_table(tid, new["phase"], new["seed"], epochs) if epochs else None
        with self._lock:
            table, index = self._writer_table()
            pos = index.get(tid)
            old_arm = table.column("arm")[pos].as_py() if pos is not None else None
            path = self._epoch_path(arm, tid)
            old_path = self._epoch_path(old_arm, tid) if old_arm is not None and old_arm != arm else None
            try:
                if epochs_table is not None:
                    self._write_parquet(path, epochs_table)
                elif epochs is not None and self._exists(path):
                    self._fs.delete_file(path)
                elif old_path is not None and self._exists(old_path):
                    # the trial moved arm without new epochs: carry its epochs file along
                    self._fs.create_dir(self._epoch_dir(arm), recursive=True)
                    self._fs.move(old_path, path)
                    old_path = None
                updated = _upsert(table, pos, new)
                self._write_parquet(self._join(TRIALS_FILE), updated)
                if pos is None:
                    index[tid] = table.num_rows
                self._table = updated
                if old_path is not None and self._exists(old_path):
                    self._fs.delete_file(old_path)
            except (OSError, pa.ArrowException) as err:
                raise UserError(f"cannot record trial {tid!r} in {self.uri}: {_first_line(err)}") from err

    def trials(self) -> pd.DataFrame:
        """``trials.parquet`` as a DataFrame (the fixed columns, typed, even when no trial is recorded).

        ``optuna_number`` is a nullable integer (``Int64``) column.

        Raises:
          UserError: the file is corrupt or truncated (the message names it).
        """
        table = self._read_trials_table()
        if table is None:
            table = TRIALS_SCHEMA.empty_table()
        df = table.to_pandas()
        if "optuna_number" in df:
            df["optuna_number"] = pd.array(table.column("optuna_number").to_pylist(), dtype="Int64")
        return df

    def trial_ids(self, statuses: Collection[str] | None = None) -> set[str]:
        """The recorded trial ids, optionally only those whose status is in ``statuses``."""
        if statuses is not None:
            bad = [s for s in statuses if s not in STATUSES]
            if bad:
                raise ValueError(f"unknown status {bad[0]!r}; choices: {', '.join(STATUSES)}")
        table = self._read_trials_table(columns=["trial_id", "status"])
        if table is None:
            return set()
        ids = table.column("trial_id").to_pylist()
        if statuses is None:
            return set(ids)
        wanted = set(statuses)
        return {t for t, s in zip(ids, table.column("status").to_pylist()) if s in wanted}

    # -- epochs -----------------------------------------------------------------------------------
    def _epoch_files(self, arm: str | None) -> list[tuple[str, str]]:
        """``(arm, path)`` of every visible epochs file, sorted by path."""
        base = self._join(EPOCHS_DIR) if arm is None else self._epoch_dir(arm)
        infos = self._fs.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True))
        prefix = self._join(EPOCHS_DIR) + "/"
        out = []
        for info in infos:
            if info.type != pafs.FileType.File or not info.path.endswith(".parquet"):
                continue
            parts = info.path[len(prefix) :].split("/")
            if len(parts) != 2 or not parts[0].startswith(f"{_ARM_KEY}="):
                continue
            if any(p.startswith((".", "_")) for p in parts):
                continue
            out.append((unquote(parts[0][len(_ARM_KEY) + 1 :]), info.path))
        return sorted(out, key=lambda t: t[1])

    def epochs(self, arm: str | None = None, *, include_orphans: bool = False) -> pd.DataFrame:
        """Every stored epoch record, one row per trial and epoch, with an ``arm`` column.

        Args:
          arm: only this arm's trials.
          include_orphans: also return epochs files whose trial has no row in ``trials.parquet``
            (left by a driver killed between the two writes of :meth:`record_trial`).

        Returns:
          Columns ``arm``, :data:`EPOCH_KEY_COLUMNS`, :data:`EPOCH_RECORD_FIELDS`, then any optimizer
          diagnostics (missing values are NaN).

        Raises:
          UserError: an epochs file is corrupt or truncated (the message names it).
        """
        known = None if include_orphans else self.trial_ids()
        files = self._epoch_files(arm)

        def read(item: tuple[str, str]) -> pa.Table | None:
            a, path = item
            # missing_ok: a file removed since it was listed (its trial re-recorded without epochs)
            t = _read_table_checked(self._fs, path, self._display(path), missing_ok=True)
            if t is None:
                return None
            if _ARM_KEY in t.column_names:
                t = t.drop_columns([_ARM_KEY])
            return t.append_column(_ARM_KEY, pa.array([a] * t.num_rows, type=pa.string()))

        if files:
            with ThreadPoolExecutor(max_workers=min(8, len(files))) as pool:
                tables = [t for t in pool.map(read, files) if t is not None]
        else:
            tables = []
        base = _EPOCH_BASE_SCHEMA.insert(0, pa.field(_ARM_KEY, pa.string()))
        table = pa.concat_tables([base.empty_table(), *tables], promote_options="permissive")
        table = table.select(_order_epoch_columns(table.column_names))
        if known is not None:
            table = table.filter(
                pc.is_in(table.column("trial_id"), value_set=pa.array(sorted(known), pa.string()))
            )
        return table.to_pandas()

    def epochs_schema(self) -> pa.Schema:
        """The union of the schemas of all epochs files, with ``arm`` last, for ``pyarrow.dataset``.

        ``pyarrow.dataset.dataset(..., partitioning="hive")`` infers its schema from one file only; pass
        ``schema=store.epochs_schema()`` to keep diagnostic columns that only some arms have.
        """
        schemas = [_EPOCH_BASE_SCHEMA]
        for _, path in self._epoch_files(None):
            try:
                schemas.append(pq.read_schema(path, filesystem=self._fs))
            except (pa.ArrowException, OSError) as err:
                raise _corrupt(self._display(path), err) from err
        schema = pa.unify_schemas(schemas)
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
) -> dict[str, Any]:
    """The ``trials.parquet`` row of one trial, from its config and :class:`~lyaptune.train.TrialResult`.

    ``final_*`` come from the last epoch record, ``min_grad_norm`` is the smallest ``grad_norm`` over
    all records (NaN entries skipped, so a diverged trial keeps the minimum it reached),
    ``epochs_completed`` is the number of records, and ``derived_lr``, ``k_hat``, ``initial_loss`` come
    from ``result.info`` (null when absent).

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

    Returns:
      A dict for :meth:`RunStore.record_trial`.
    """
    cfg = _config_dict(config)
    records = list(result.records) if result is not None else []
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
        "optuna_number": optuna_number,
        "status": status or (result.status if result is not None else "running"),
        "epochs_completed": len(records),
        "objective": objective,
        **{col: last.get(key) for col, key in _TRIAL_FINALS.items()},
        "min_grad_norm": _finite_min(r.get("grad_norm") for r in records),
        "wall_s": result.wall_s if result is not None else None,
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
