"""The run store's tables: the trials and epochs schemas, rows and records as Arrow tables, JSON.

Private to :mod:`lyaptune.store` (which re-exports the public names): the constants of a run
directory's layout, :data:`TRIALS_SCHEMA`, the conversions of a trial row and of a run's epoch records
to checked Arrow tables (:func:`_to_table` casts safely and names a value that does not fit), the
``params_json`` expansion into ``param_<name>`` columns, the legacy ``trials.parquet`` conversion, the
one-line errors for unreadable Parquet files, and :func:`trial_row`, which builds a run's row. Torch-free.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import quote

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from lyaptune._records import RECORD_FIELDS
from lyaptune.errors import UserError
from lyaptune.metrics import FINAL_FIELDS

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


def _order_epoch_columns(names: Iterable[str]) -> list[str]:
    names = list(names)
    head = [_ARM_KEY, *EPOCH_KEY_COLUMNS, *EPOCH_RECORD_FIELDS]
    return [c for c in head if c in names] + [c for c in names if c not in head]


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
