"""Store subcommands of the CLI: ``lyaptune compact RUN_DIR``."""

from __future__ import annotations

import argparse
import contextlib
import time

__all__ = ["add_commands"]


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register the store subcommands (``compact``) on the ``lyaptune`` parser."""
    p = sub.add_parser(
        "compact",
        help="fold a run directory's finished runs into Parquet parts (fast reads of a large study)",
        description="Fold every finished run's own trials and epochs files into Parquet parts, atomically "
        "(readers see each run once throughout; a killed compaction is finished by the next writer). A local "
        "run directory is locked for the compaction, so a running driver refuses it; for a remote URI make "
        "sure no driver writes the study.",
    )
    p.add_argument("run_dir", help="the run directory (a local path or a pyarrow URI)")
    p.set_defaults(func=_cmd_compact)


def _cmd_compact(args: argparse.Namespace) -> int:
    from lyaptune.store import RunStore, lock_run_dir

    store = RunStore(args.run_dir)  # not a run directory: one line, before any lock file is made
    lock = lock_run_dir(store.path) if store.is_local else contextlib.nullcontext()
    t0 = time.perf_counter()
    with lock:
        folded = store.compact()
    print(f"{store.uri}: {folded} runs folded into parts ({time.perf_counter() - t0:.2f} s)")
    return 0
