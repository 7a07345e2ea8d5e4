"""The run store's parts: listing a run directory's files, reading them as one dataset, compaction.

Private to :mod:`lyaptune.store` (which re-exports the public names). A run's copies live in its own
files and in compacted parts (:data:`PART_PREFIX`); each file has a rank (a run's own file outranks
every part, a later part an earlier one), and readers keep each run's newest copy
(:func:`_keep_newest`, :func:`_keep_newest_source`). :class:`_PartsMixin` holds the listing and scanning
of those files and the compaction (its manifest, steps, recovery of a killed one) for
:class:`~lyaptune.store.RunStore`, which provides the paths, the atomic writes and the writer's state.
"""

from __future__ import annotations

import datetime as _dt
import json
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import unquote

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from lyaptune import faults
from lyaptune._store_tables import (
    _ARM_KEY,
    _TMP_PREFIX,
    _UTC_US,
    EPOCHS_DIR,
    TRIALS_DIR,
    TRIALS_SCHEMA,
    _corrupt,
    _fill_defaults,
    _first_line,
    _order_epoch_columns,
)
from lyaptune.errors import UserError

#: Name prefix of a compacted part file (``@`` is escaped in every run's file name, so no run's file
#: starts with it): ``trials/@part-<seq>.parquet`` and ``epochs/arm=<arm>/@part-<seq>.parquet``.
PART_PREFIX = "@part-"
#: A writer compacts after this many finished runs recorded as single files (:meth:`RunStore.compact`).
COMPACT_EVERY = 1000
#: The compaction in progress: written first, removed last (a leading ``_``: dataset readers skip it).
COMPACTION_FILE = "_compaction.json"
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


class _PartsMixin:
    """Listing, scanning and compaction of a run directory's files, for :class:`~lyaptune.store.RunStore`.

    The host class provides the filesystem (``_fs``, ``_root``, ``uri``, ``is_local``), the paths
    (``_join``, ``_display``, ``_epoch_dir``, ``_exists``), the atomic writes (``_write_bytes``,
    ``_write_parquet``, ``_read_text``), the writer's lock and state set in its ``__init__``, and
    ``_part_index`` (the writer's index of compacted runs).
    """

    _fs: pafs.FileSystem
    _root: str
    uri: str
    _lock: threading.RLock
    _index: dict[str, tuple[str, _dt.datetime, _dt.datetime]] | None
    _uncompacted: int
    _needs_recovery: bool
    _writing: bool
    _held_rows: dict[str, pa.Table]
    _held_epochs: dict[str, pa.Table]
    compaction_hook: Callable[[str], None] | None

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

    # -- compaction -------------------------------------------------------------------------------
    def _step(self, step: str) -> None:
        """The fault-injection point ``step`` (:data:`lyaptune.faults.COMPACTION_STEPS`): the store's
        ``compaction_hook`` (in-process tests), then :func:`lyaptune.faults.at_compaction_step`."""
        if self.compaction_hook is not None:
            self.compaction_hook(step)
        faults.at_compaction_step(step)

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
