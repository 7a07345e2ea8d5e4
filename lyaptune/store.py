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

import datetime as _dt
import json
import os
import threading
import uuid
import warnings
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import yaml

from lyaptune._lock import LOCK_FILE, LockHolder, RunDirLock, RunDirLockedError, lock_run_dir
from lyaptune._store_compaction import (
    _RANK,
    _SMALL_RANK,
    COMPACT_EVERY,
    COMPACTION_FILE,
    PART_PREFIX,
    _keep_newest,
    _keep_newest_source,
    _PartsMixin,
    _visible_parquet,
)
from lyaptune._store_tables import (
    _ARM_KEY,
    _EPOCH_BASE_SCHEMA,
    _NULLABLE_INT_COLUMNS,
    _PARQUET_OPTIONS,
    _TMP_PREFIX,
    _UTC_US,
    EPOCH_KEY_COLUMNS,
    EPOCH_RECORD_FIELDS,
    EPOCHS_DIR,
    PARAM_PREFIX,
    PHASES,
    SPEC_FILE,
    STATUSES,
    STUDY_FILE,
    TRIAL_COLUMNS,
    TRIALS_DIR,
    TRIALS_FILE,
    TRIALS_SCHEMA,
    _epochs_table,
    _expand_params,
    _fill_defaults,
    _first_line,
    _from_legacy,
    _json_default,
    _order_epoch_columns,
    _plain,
    _quote_name,
    _read_table_checked,
    _resolve,
    _trial_table,
    read_parquet_checked,
    trial_row,
)
from lyaptune.errors import UserError
from lyaptune.faults import COMPACTION_FAULT_ENV, COMPACTION_STEPS

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


class RunStore(_PartsMixin):
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
        #: called with each step of a compaction (:data:`lyaptune.faults.COMPACTION_STEPS`): the
        #: fault-injection hook of in-process tests
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

    # -- reading the trials table -----------------------------------------------------------------
    def trials(self, columns: Sequence[str] | None = None) -> pd.DataFrame:
        """The trials table as a DataFrame: :data:`TRIAL_COLUMNS`, then one ``param_<name>`` column per
        hyperparameter (sorted by name), typed even when no run is recorded.

        One row per run, its newest copy (the latest ``updated_at``), read from the runs' own files and
        the compacted parts as one pyarrow dataset. Rows are in the order their runs were first
        recorded. ``optuna_number`` and ``population_size`` are nullable integer (``Int64``) columns; a
        ``param_`` column is float64 when every value of it is a number, else string (non-strings as
        JSON).

        Args:
          columns: read only these columns of :data:`TRIAL_COLUMNS`, in this order, and no ``param_``
            column (pushed down to the Parquet reader: ``lyaptune status`` of a 100,000-run study need
            not read every run's config and info JSON); default every column.

        Raises:
          UserError: a trials file is corrupt or truncated (the message names it).
          ValueError: ``columns`` names a column that is not in :data:`TRIAL_COLUMNS`.
        """
        if columns is not None:
            bad = [c for c in columns if c not in TRIAL_COLUMNS]
            if bad:
                raise ValueError(f"unknown trials column {bad[0]!r}; choices: {', '.join(TRIAL_COLUMNS)}")
        table = self._trials_table(list(columns) if columns is not None else None)
        df = table.to_pandas()
        for col in _NULLABLE_INT_COLUMNS:
            if col in table.column_names:
                df[col] = table.column(col).to_pandas(types_mapper={pa.int64(): pd.Int64Dtype()}.get).array
        if columns is not None:
            return df
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
