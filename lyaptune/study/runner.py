"""Run a study: every arm tuned with an equal Optuna budget through one Ray Tune experiment, then each
arm's best configuration re-run on fresh seeds; everything stored as Parquet in the run directory.

The same code runs on this machine's CPUs (a local Ray is started, dashboard off) and on a Ray cluster
(``address="auto"``, ``ray://host:10001`` or ``RAY_ADDRESS``), with fractional GPUs per trial.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import os
import platform
import socket
import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from lyaptune.errors import ConfigError, UserError
from lyaptune.store import RunStore, lock_run_dir
from lyaptune.study.check import check_study
from lyaptune.study.interrupt import Interrupt, StudyInterrupted
from lyaptune.study.preflight import (
    _check_before_ray,
    _cluster_info,
    _node_resources,
    _preflight_datasets,
    _preflight_nodes,
    check_resources,
    parse_resources,
    with_resources,
)
from lyaptune.study.progress import ProgressDisplay, StudyProgress
from lyaptune.study.ray_session import _init_ray, _RayQuiet
from lyaptune.study.searcher import Job, StudyPlan, resolve_data_roots
from lyaptune.study.spec import StudySpec

__all__ = [
    "run_study",
    "resume_study",
    "run_dir_for",
    "parse_resources",
    "with_resources",
    "check_resources",
    "StudyInterrupted",
    "JOURNAL_FILE",
    "RAY_LOG_FILE",
]

JOURNAL_FILE = "optuna.journal"
RAY_LOG_FILE = "ray.log"


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _has_scheme(path: str) -> bool:
    return "://" in path and not path.startswith("file://")


def run_dir_for(spec: StudySpec, out: str | os.PathLike, storage: str | None = None) -> str:
    """``<storage or out>/<spec.name>`` (a local path or a pyarrow URI)."""
    base = str(storage or out)
    return base.rstrip("/") + "/" + spec.name


def _versions() -> dict[str, Any]:
    import optuna
    import ray
    import torch

    import lyaptune

    try:
        commit = (
            subprocess.run(
                ["git", "rev-parse", "HEAD"],
                capture_output=True,
                text=True,
                timeout=5,
                cwd=Path(__file__).resolve().parents[2],
            ).stdout.strip()
            or None
        )
    except (OSError, subprocess.SubprocessError):
        commit = None
    return {
        "lyaptune": lyaptune.__version__,
        "torch": torch.__version__,
        "ray": ray.__version__,
        "optuna": optuna.__version__,
        "python": platform.python_version(),
        "git_commit": commit,
        "host": socket.gethostname(),
        "cuda_devices": torch.cuda.device_count(),
    }


# --------------------------------------------------------------------------------------------------
# Resources: what a trial asks for against what the cluster has.


# --------------------------------------------------------------------------------------------------
# Ray's own output: routed to a log file while a study runs.


# --------------------------------------------------------------------------------------------------
# Connecting: token authentication, reachability.


class _RemoteJournal:
    """The Optuna journal of a run directory in an object store (``s3://``, ``gs://``): Optuna writes a
    local file (``<out>/<name>/optuna.journal``), and the store keeps its copy, pulled before the plan
    is built (so ``lyaptune resume URI`` works from any machine) and pushed after every finished run.
    """

    def __init__(self, store: RunStore, local: Path) -> None:
        self.store, self.local = store, local
        self.remote = store.path.rstrip("/") + "/" + JOURNAL_FILE

    def pull(self, resume: bool) -> None:
        import pyarrow.fs as pafs

        fs = self.store.filesystem
        if fs.get_file_info(self.remote).type == pafs.FileType.File:
            with fs.open_input_stream(self.remote) as f:
                self.local.write_bytes(f.read())
        elif not resume and self.local.exists():
            self.local.unlink()  # a journal left here by another study of the same name

    def push(self) -> None:
        if self.local.exists():
            with self.store.filesystem.open_output_stream(self.remote) as f:
                f.write(self.local.read_bytes())


def _arm_runs(spec: StudySpec) -> dict[str, int]:
    """Runs planned per arm: its search budget on every search seed plus its final runs."""
    n_seeds, n_final = len(spec.search.seeds), len(spec.search.final_seeds)
    return {a.name: spec.budget(a) * n_seeds + n_final for a in spec.arms}


def _refuse_existing(root: str, local: Path | None, resume: bool) -> None:
    """A new study never writes into a run directory that holds one already."""
    if not resume and local is not None and (local / "spec.yaml").exists():
        raise UserError(
            f"run directory {root} already exists; continue it with `lyaptune resume {root}` "
            "or choose another --out"
        )


def run_study(
    spec: StudySpec,
    *,
    out: str | os.PathLike = "runs",
    storage: str | None = None,
    address: str | None = None,
    max_concurrent: int | None = None,
    resume: bool = False,
    run_dir: str | None = None,
    resources: Mapping[str, float] | None = None,
    log: Callable[[str], None] = print,
    display: ProgressDisplay | None = None,
) -> RunStore:
    """Run (or resume) a study and return its store.

    Before any trial starts, the per-trial request (``spec.resources``, or ``resources``) is checked
    against the Ray cluster's nodes: on a local Ray a request no node can meet is an error naming the
    ``--resources`` way out; on a remote cluster (which may autoscale) it is a warning. Ray's own log
    lines go to ``ray.log`` in the run directory. SIGINT / SIGTERM stop the study cleanly: completed
    runs stay stored, runs in flight are left for ``lyaptune resume``, and :class:`StudyInterrupted`
    is raised with the resume command.

    Args:
      spec: the validated study.
      out: parent directory of the run directory ``<out>/<spec.name>``.
      storage: a local path or a pyarrow URI (s3://, gs://, an NFS path) used instead of ``out`` for the
        run directory and Ray's ``storage_path``.
      address: a Ray cluster address (``auto``, ``host:6379``, ``ray://host:10001``); default
        ``RAY_ADDRESS`` or a new local Ray. Where ``RAY_AUTH_MODE`` is unset and this machine holds a
        Ray token (``RAY_AUTH_TOKEN``, ``~/.ray/auth_token``), token authentication is used.
      max_concurrent: overrides ``spec.max_concurrent``.
      resume: continue an existing run directory: completed runs are kept and never run again, runs
        left open by a killed driver are re-queued.
      run_dir: the run directory to use (``resume``); default ``<out>/<spec.name>``.
      resources: per-trial ``{"cpu": N, "gpu": G}`` replacing the spec's request (see
        :func:`with_resources`; population mode follows the device used). The spec is stored as written
        and the override in ``study.json`` (``resources_override``), so ``resume`` keeps it.
      log: where messages and plain progress lines go (when ``display`` is None).
      display: the progress display (:mod:`lyaptune.study.progress`); default plain lines through
        ``log``, the first when the study starts, then at most one per 15 s.

    Returns:
      The :class:`lyaptune.store.RunStore` of the run directory.

    Raises:
      UserError: the request cannot be met on a local Ray, Ray cannot be reached or refuses the token,
        the run directory exists already (not ``resume``).
      StudyInterrupted: SIGINT / SIGTERM received (its message names the resume command).
      RunDirLockedError: another live driver holds the run directory (its pid, host and start time);
        a lock left by a dead driver on this host is taken over.
    """
    if display is None:  # plain lines through `log` (the Python API's default)
        with ProgressDisplay(log) as plain:
            kwargs = dict(out=out, storage=storage, address=address, max_concurrent=max_concurrent)
            return run_study(
                spec, **kwargs, resume=resume, run_dir=run_dir, resources=resources, display=plain
            )
    log = display.log
    display.status("checking the spec and the data")
    written = check_study(spec)  # names and arguments against the registries, before anything starts
    spec = with_resources(spec, resources)
    root = run_dir or run_dir_for(spec, out, storage)
    remote = bool(address or os.environ.get("RAY_ADDRESS"))
    local = None if _has_scheme(root) else Path(root.removeprefix("file://"))
    # the data directories as resolved when the study started (study.json), else now: a resume reads its
    # data where the study started, whatever the shell's LYAPTUNE_DATA_ROOT and working directory
    stored = RunStore(root).read_study_info() if resume else {}
    data_roots = {**resolve_data_roots(spec), **(stored.get("data_roots") or {})}
    if not remote:
        _preflight_datasets(spec, data_roots)  # on a cluster the files may live on the workers only
    _refuse_existing(root, local, resume)
    journal_dir = local if local is not None else Path(out) / spec.name
    total = sum(_arm_runs(spec).values())
    request = {"cpu": float(spec.resources.cpu), "gpu": float(spec.resources.gpu)}
    _check_before_ray(request, remote)
    if resume:
        RunStore(root)  # not a run directory: fail before a lock file is created
    # one writer per run directory: a second `run` / `resume` is refused with the holder's name
    # folders made here are removed again if the study stops before writing anything (no empty run
    # directory left behind by, e.g., a cluster that refuses this driver)
    made = [d for d in (journal_dir, *journal_dir.parents) if not d.exists()]
    try:
        journal_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"cannot create run directory {journal_dir}: {err.strerror or err}") from err
    run_lock = lock_run_dir(journal_dir)
    try:
        if run_lock.taken_over is not None:
            holder = run_lock.taken_over.describe()
            log(f"took over the run directory lock of {holder}: it is no longer running")
        _refuse_existing(root, local, resume)
        return _run_locked(
            spec,
            written,
            root,
            journal_dir,
            local,
            remote,
            address,
            resume,
            resources,
            max_concurrent,
            total,
            request,
            display,
            data_roots,
        )
    finally:
        run_lock.release()
        for d in made:  # innermost first; stops at the first folder that holds anything
            try:
                d.rmdir()
            except OSError:
                break


def _run_locked(
    spec: StudySpec,
    written: StudySpec,
    root: str,
    journal_dir: Path,
    local: Path | None,
    remote: bool,
    address: str | None,
    resume: bool,
    resources: Mapping[str, float] | None,
    max_concurrent: int | None,
    total: int,
    request: dict[str, float],
    display: ProgressDisplay,
    data_roots: dict[str, str],
) -> RunStore:
    """The body of :func:`run_study`, run while the run directory's lock is held."""
    interrupt, log = Interrupt(), display.log
    progress = StudyProgress(_arm_runs(spec), display)
    log(f"study {spec.name}: {len(spec.arms)} arms, {total} runs, results in {root}")
    progress.phase = "connecting to Ray" if remote else "starting Ray"
    display.attach(progress.frame)
    with _RayQuiet() as quiet, contextlib.ExitStack() as stack:
        started_ray = _init_ray(address, quiet)
        quiet.reclaim()
        try:
            import ray

            # after ray.init: Ray's core worker installs its own SIGTERM handler there
            stack.enter_context(interrupt.installed())
            nodes = ray.nodes()
            problem = check_resources(
                request, _node_resources(nodes), where="the Ray cluster" if remote else "this machine's Ray"
            )
            if problem and not remote:
                raise ConfigError(problem)
            if problem:
                log(f"warning: {problem} (waiting: the cluster may add nodes)")
            if remote:
                _preflight_nodes(spec, nodes, request, data_roots)
            if resume:
                store = RunStore(root)
            else:
                store = RunStore(root, create=True)
                store.write_spec(written.to_dict())
                store.write_study_info(started=_now(), **_versions())
            # what `lyaptune status` prints against, without rebuilding the spec (no torch)
            store.write_study_info(
                search_budget={a.name: spec.budget(a) * len(spec.search.seeds) for a in spec.arms}
            )
            journal_dir.mkdir(parents=True, exist_ok=True)
            quiet.attach(journal_dir / RAY_LOG_FILE)
            progress.set_phase("preparing the study")
            store.write_study_info(
                ray_resources=ray.cluster_resources(),
                cluster=_cluster_info(nodes),
                resources=request,
                resources_override=dict(resources) if resources else None,
                # what `lyaptune resume` needs besides the spec: it never depends on the shell (issue 21)
                data_roots=data_roots,
                max_concurrent_override=max_concurrent,
            )
            journal = _RemoteJournal(store, journal_dir / JOURNAL_FILE) if local is None else None
            if journal is not None:
                journal.pull(resume)
            from lyaptune.study import tune_adapter

            # checkpoints that killed drivers' Tune experiments left (a local path or an object store)
            checkpoints = (
                tune_adapter.TuneCheckpoints(tune_adapter.tune_storage_path(root)) if resume else None
            )
            plan = StudyPlan(
                spec,
                store,
                journal_dir / JOURNAL_FILE,
                log=log,
                checkpoints=checkpoints,
                data_roots=data_roots,
            )
            if resume:
                log(f"resuming {root}: {len(plan.done)} of {total} runs already recorded")
                rows = store.trials()
                progress.restore(rows[rows["trial_id"].isin(plan.done)].groupby("arm").size().to_dict())
            _fit(spec, root, plan, progress, interrupt, journal, max_concurrent)
            if journal is not None:
                journal.push()
        finally:
            display.detach(keep=sys.exc_info()[0] is None)
            if started_ray:
                import ray

                ray.shutdown()
    trials = store.trials()
    if interrupt.signum is not None:
        message = (
            f"interrupted ({interrupt.name}): {len(trials)} of {total} runs stored in {root}; "
            f"continue with: lyaptune resume {root}"
        )
        log(message)
        raise StudyInterrupted(message, interrupt.signum)
    store.compact()  # the driver holds the run-directory lock: fold the finished runs into parts
    store.write_study_info(finished=_now())
    counts = trials["status"].value_counts().to_dict() if len(trials) else {}
    log(
        f"done: {len(trials)} runs ({', '.join(f'{k} {v}' for k, v in sorted(counts.items()))}); "
        f"results in {root}"  # within 100 columns for a short --out; README "Studies" has the layout
    )
    return store


def _fit(
    spec: StudySpec,
    root: str,
    plan: StudyPlan,
    progress: StudyProgress,
    interrupt: Interrupt,
    journal: _RemoteJournal | None,
    max_concurrent: int | None,
) -> None:
    """Run the plan's jobs through one Tune experiment, until done or interrupted (then at once)."""
    from lyaptune.study import tune_adapter
    from lyaptune.study.trainable import train_job

    def finished(job: Job, status: str, value: float) -> None:
        if journal is not None:
            journal.push()
        progress.finished(job, status, value)

    searcher = tune_adapter.StudySearcher(plan, on_finish=finished, on_start=progress.started)
    interrupt.on_signal = lambda: setattr(searcher, "stopping", True)  # a flag only: no I/O here

    def stop() -> None:  # at Tune's next step after the signal; then `fit` ends at once
        progress.display.log(f"stopping ({interrupt.name}): runs in flight are left for resume")

    if interrupt.signum is None:
        tuner = tune_adapter.make_tuner(
            spec,
            root,
            searcher,
            trainable=train_job,
            stop_all=lambda: interrupt.signum is not None,
            on_stop=stop,
            max_concurrent=max_concurrent,
        )
        progress.set_phase("waiting for Ray to start the first run")
        with contextlib.suppress(tune_adapter.StudyStopped):
            tuner.fit()


def resume_study(
    run_dir: str,
    *,
    address: str | None = None,
    max_concurrent: int | None = None,
    resources: Mapping[str, float] | None = None,
    log: Callable[[str], None] = print,
    display: ProgressDisplay | None = None,
) -> RunStore:
    """Continue a run directory from its saved spec; completed runs are never run again.

    Args:
      run_dir: the run directory (a local path or a URI).
      address, max_concurrent, log, display: as for :func:`run_study`.
      resources: per-trial override; default the one the study was started with (``study.json``).
      max_concurrent: default the ``--max-concurrent`` the study was started (or last resumed) with.

    A finished study (``study.json`` has ``finished``) is said to be finished, without starting Ray.
    The data directories are those the study resolved when it started (``study.json``'s
    ``data_roots``), so the resume does not depend on the shell's ``LYAPTUNE_DATA_ROOT`` or directory.

    Returns:
      The run directory's :class:`lyaptune.store.RunStore`.
    """
    store = RunStore(run_dir)
    info = store.read_study_info()
    log = display.log if display is not None else log
    if info.get("finished"):  # nothing to do: said without starting Ray
        n = len(store.trial_ids())
        name = store.read_spec().get("name", "?")
        log(f"study {name} is finished ({info['finished']}): {n} runs stored in {run_dir}; nothing to resume")
        return store
    # loading is pure; the registries are checked here, before Ray starts (a renamed optimizer, ...)
    spec = check_study(StudySpec.from_dict(store.read_spec()))
    if resources is None:
        resources = info.get("resources_override") or None
    if max_concurrent is None:
        max_concurrent = info.get("max_concurrent_override") or None
    out = str(Path(run_dir).parent) if not _has_scheme(run_dir) else "runs"
    return run_study(
        spec,
        out=out,
        address=address,
        max_concurrent=max_concurrent,
        resume=True,
        run_dir=run_dir,
        resources=resources,
        log=log,
        display=display,
    )
