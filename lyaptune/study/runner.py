"""Run a study: every arm tuned with an equal Optuna budget through one Ray Tune experiment, then each
arm's best configuration re-run on fresh seeds; everything stored as Parquet in the run directory.

The same code runs on this machine's CPUs (a local Ray is started, dashboard off) and on a Ray cluster
(``address="auto"``, ``ray://host:10001`` or ``RAY_ADDRESS``), with fractional GPUs per trial.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import math
import os
import platform
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lyaptune.errors import UserError
from lyaptune.store import RunStore
from lyaptune.study.searcher import Job, StudyPlan
from lyaptune.study.spec import StudySpec

__all__ = ["run_study", "resume_study", "run_dir_for", "JOURNAL_FILE"]

JOURNAL_FILE = "optuna.journal"

# Tune's default CSV/JSON/TensorBoard loggers duplicate what the store keeps and cost time per result;
# without them Tune's ResultGrid (unused: the store is the result) warns that it found no metrics.
os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.ERROR)


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


def _check_reachable(address: str) -> None:
    """Fail fast (seconds, not Ray's minutes of retries) when a ``host:port`` address does not answer."""
    if address in ("auto", "local"):
        return
    hostport = address.split("://", 1)[-1].rstrip("/")
    host, _, port = hostport.rpartition(":")
    try:
        socket.create_connection((host or "127.0.0.1", int(port)), timeout=5).close()
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot reach Ray at {address!r}: {exc}; is the cluster up (`ray status`)?") from exc


def _preflight_datasets(spec: StudySpec) -> None:
    """Load every dataset the study uses once in the driver, so a missing file fails before Ray starts."""
    from lyaptune.train import load_task_data

    seen = set()
    for arm in spec.arms:
        config = spec.trial_config(arm, {}, spec.search.seeds[0])
        key = (config.dataset, config.dataset_args, config.data_root, config.validation_fraction)
        if key not in seen:
            seen.add(key)
            load_task_data(config)


def _init_ray(address: str | None) -> bool:
    """Connect to (or start) Ray; returns True if this call started it."""
    import ray

    if ray.is_initialized():
        return False
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        _check_reachable(address)
    try:
        if address:
            ray.init(address=address, log_to_driver=False, configure_logging=False)
        else:
            ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False)
    except (ConnectionError, TimeoutError, RuntimeError, ValueError) as exc:
        where = address or "a local Ray"
        raise UserError(f"cannot connect to Ray at {where!r}: {str(exc).splitlines()[0]}") from exc
    return True


class _Progress:
    """Compact one-line progress per finished run (not Ray's full table)."""

    def __init__(self, plan: StudyPlan, total: int, log: Callable[[str], None]) -> None:
        self.plan, self.total, self.log, self.count = plan, total, log, 0
        self.t0 = time.perf_counter()

    def __call__(self, job: Job, status: str, value: float) -> None:
        self.count += 1
        parts = []
        for name, p in self.plan.progress().items():
            best = "" if p["best"] is None else f" best {p['best']:.4g}"
            search = f"{p['search']}/{p['budget']}" if p["budget"] else "-"
            parts.append(f"{name} {search} final {p['final']}/{p['finals']}{best}")
        val = "" if not math.isfinite(value) else f" {value:.4g}"
        self.log(
            f"[{self.count}/{self.total} {time.perf_counter() - self.t0:6.1f}s] {job.trial_id} {status}{val}"
            f"  | " + " | ".join(parts)
        )


def _make_searcher(spec: StudySpec, plan: StudyPlan, progress: _Progress):
    from ray.tune.search import Searcher

    arms = {a.name: a for a in spec.arms}

    class StudySearcher(Searcher):
        """Ray Tune searcher adapter around :class:`StudyPlan` (Optuna decides the configurations).

        It lives in the driver only; Tune pickles searchers for its experiment state, so the plan (an
        Optuna storage and a lock) is left out of the pickled state: lyaptune resumes from its own store
        and journal, not from Tune's searcher snapshot.
        """

        def __init__(self) -> None:
            super().__init__()
            self.jobs: dict[str, Job] = {}
            self.records: dict[str, dict[int, dict[str, Any]]] = {}
            self.errors: dict[str, str] = {}
            self.failed: dict[str, tuple[Job, list[dict[str, Any]], str]] = {}

        def finish_failed(self, trial_id: str, message: str = "") -> None:
            job, records, reported = self.failed.pop(trial_id)
            message = message or reported or "the trial failed without a message (its worker was lost?)"
            if job.members is not None:
                for member, status, value in plan.finish_population(job, None, message):
                    progress(member, status, value)
                return
            value = plan.finish(job, "errored", records, {}, math.nan, message)
            progress(job, "errored", value)

        def flush_failed(self) -> None:
            for trial_id in list(self.failed):
                self.finish_failed(trial_id)

        def __reduce__(self):
            return (Searcher, ())

        def suggest(self, trial_id: str):
            job = plan.next_job()
            if job == "FINISHED":
                return Searcher.FINISHED
            if job is None:
                return None
            self.jobs[trial_id] = job
            return {"job": job.payload(spec, arms[job.arm])}

        def on_trial_result(self, trial_id: str, result: dict) -> None:
            if "lyaptune_record" in result:
                rec = json.loads(result["lyaptune_record"])
                self.records.setdefault(trial_id, {})[int(rec["epoch"])] = rec
            if "lyaptune_error" in result:
                self.errors[trial_id] = result["lyaptune_error"]

        def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
            job = self.jobs.pop(trial_id, None)
            if job is None:
                return
            if result and "lyaptune_record" in result:
                # a scheduler's STOP hands the deciding result to on_trial_complete, not on_trial_result
                self.on_trial_result(trial_id, result)
            partial = [r for _, r in sorted(self.records.pop(trial_id, {}).items())]
            message = self.errors.pop(trial_id, "")
            if job.members is not None and not error:
                results = None
                if result and result.get("lyaptune_final"):
                    results = json.loads(result["lyaptune_payload"])["results"]
                else:
                    message = message or "the population ended without results"
                for member, status, value in plan.finish_population(job, results, message):
                    progress(member, status, value)
                return
            if not error and result and result.get("lyaptune_final"):
                p = json.loads(result["lyaptune_payload"])
                info = {**p["info"], "resumed_from_epoch": p.get("resumed_from_epoch", 0)}
                status, records, wall, message = p["status"], p["records"], p["wall_s"], p["message"]
            elif error:
                # Tune tells the searcher before its callbacks, which know the exception: the row is
                # written by `_ErrorCallback.on_trial_error` (or `flush_failed` after the run).
                self.failed[trial_id] = (job, partial, message)
                return
            else:
                status, records, info, wall = "stopped", partial, {}, math.nan
                message = "stopped early by the ASHA scheduler"
            value = plan.finish(job, status, records, info, wall, message)
            progress(job, status, value)

    return StudySearcher()


def _error_message(trial: Any) -> str:
    """The exception line of a failed Tune trial (from its error file), or ''."""
    try:
        text = Path(trial.error_file).read_text() if trial.error_file else ""
    except OSError:
        return ""
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1][:500] if lines else ""


def _error_callback(searcher: Any):
    from ray import tune

    class _ErrorCallback(tune.Callback):
        """Writes an errored run with the exception Tune recorded (after the last retry)."""

        def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            if trial.trial_id in searcher.failed:
                searcher.finish_failed(trial.trial_id, _error_message(trial))

    return _ErrorCallback()


def _total_runs(spec: StudySpec) -> int:
    n_seeds = len(spec.search.seeds)
    return sum(spec.budget(a) * n_seeds + len(spec.search.final_seeds) for a in spec.arms)


def run_study(
    spec: StudySpec,
    *,
    out: str | os.PathLike = "runs",
    storage: str | None = None,
    address: str | None = None,
    max_concurrent: int | None = None,
    resume: bool = False,
    run_dir: str | None = None,
    log: Callable[[str], None] = print,
) -> RunStore:
    """Run (or resume) a study and return its store.

    Args:
      spec: the validated study.
      out: parent directory of the run directory ``<out>/<spec.name>``.
      storage: a local path or a pyarrow URI (s3://, gs://, an NFS path) used instead of ``out`` for the
        run directory and Ray's ``storage_path``.
      address: a Ray cluster address (``auto``, ``ray://host:10001``); default ``RAY_ADDRESS`` or a new
        local Ray.
      max_concurrent: overrides ``spec.max_concurrent``.
      resume: continue an existing run directory: completed runs are kept and never run again, runs
        left open by a killed driver are re-queued.
      run_dir: the run directory to use (``resume``); default ``<out>/<spec.name>``.
      log: where progress lines go.

    Returns:
      The :class:`lyaptune.store.RunStore` of the run directory.
    """
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    root = run_dir or run_dir_for(spec, out, storage)
    if not (address or os.environ.get("RAY_ADDRESS")):
        _preflight_datasets(spec)  # on a cluster the files may live on the workers only
    if resume:
        store = RunStore(root)
    else:
        local = None if _has_scheme(root) else Path(root.removeprefix("file://"))
        if local is not None and (local / "spec.yaml").exists():
            raise UserError(
                f"run directory {root} already exists; continue it with `lyaptune resume {root}` "
                "or choose another --out"
            )
        store = RunStore(root, create=True)
        store.write_spec(spec.to_dict())
        store.write_study_info(started=_now(), **_versions())
    journal_dir = Path(root.removeprefix("file://")) if not _has_scheme(root) else Path(out) / spec.name
    journal_dir.mkdir(parents=True, exist_ok=True)
    plan = StudyPlan(spec, store, journal_dir / JOURNAL_FILE, log=log)
    total = _total_runs(spec)
    already = len(plan.done)
    if resume:
        log(f"resuming {root}: {already} of {total} runs already recorded")
    progress = _Progress(plan, total, log)
    progress.count = already

    started_ray = _init_ray(address)
    try:
        import ray

        if not resume:
            store.write_study_info(ray_resources=ray.cluster_resources())
        mode = spec.objective.mode
        scheduler = None
        max_epochs = max(arm.task_for(spec.task).epochs for arm in spec.arms)
        if spec.search.scheduler == "asha":
            # max_t one past the last epoch: ASHA stops every trial that reaches max_t, and a run that
            # trained all its epochs must end with its own final report (status completed)
            scheduler = ASHAScheduler(
                time_attr="epoch",
                max_t=max_epochs + 1,
                grace_period=min(spec.search.grace_period, max_epochs),
                reduction_factor=spec.search.reduction_factor,
            )
        trainable = tune.with_resources(_trainable(), {"cpu": spec.resources.cpu, "gpu": spec.resources.gpu})
        storage_path = (
            root if _has_scheme(root) else str(Path(root.removeprefix("file://")).resolve())
        ) + "/ray"
        searcher = _make_searcher(spec, plan, progress)
        tuner = tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(
                metric="objective",
                mode=mode,
                search_alg=searcher,
                scheduler=scheduler,
                num_samples=-1,
                max_concurrent_trials=max_concurrent or spec.max_concurrent,
                reuse_actors=True,
                trial_name_creator=_trial_name,
                trial_dirname_creator=_trial_name,
            ),
            run_config=tune.RunConfig(
                name="tune-" + _dt.datetime.now().strftime("%Y%m%d-%H%M%S-%f"),
                storage_path=storage_path,
                failure_config=tune.FailureConfig(max_failures=spec.max_failures),
                checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
                callbacks=[_error_callback(searcher)],
                verbose=0,
            ),
        )
        log(f"study {spec.name}: {len(spec.arms)} arms, {total} runs, results in {root}")
        tuner.fit()
        searcher.flush_failed()
    finally:
        if started_ray:
            import ray

            ray.shutdown()
    store.write_study_info(finished=_now())
    trials = store.trials()
    counts = trials["status"].value_counts().to_dict() if len(trials) else {}
    log(
        f"done: {len(trials)} runs ({', '.join(f'{k} {v}' for k, v in sorted(counts.items()))}); "
        f"results in {root} (trials.parquet, epochs/, {JOURNAL_FILE})"
    )
    return store


def _trial_name(trial: Any) -> str:
    job = trial.config.get("job", {})
    return f"{job.get('trial_id', 'trial')}-{trial.trial_id}"


def _trainable():
    from lyaptune.study.trainable import train_job

    return train_job


def resume_study(
    run_dir: str,
    *,
    address: str | None = None,
    max_concurrent: int | None = None,
    log: Callable[[str], None] = print,
) -> RunStore:
    """Continue a run directory from its saved spec; completed runs are never run again."""
    store = RunStore(run_dir)
    spec = StudySpec.from_dict(store.read_spec())
    out = str(Path(run_dir).parent) if not _has_scheme(run_dir) else "runs"
    return run_study(
        spec, out=out, address=address, max_concurrent=max_concurrent, resume=True, run_dir=run_dir, log=log
    )
