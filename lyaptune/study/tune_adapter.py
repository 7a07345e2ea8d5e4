"""The Ray Tune adapter of a study: everything that knows Tune's callback order, metrics and layout.

- :class:`StudySearcher`: a Tune ``Searcher`` around the framework-free
  :class:`lyaptune.study.searcher.StudyPlan` (the plan decides, Optuna samples; the searcher only
  translates Tune's calls), module level and picklable (the plan is left out of its pickled state).
- :class:`StudyErrorCallback`: the one place where a Tune trial that failed after its last retry
  becomes an ``errored`` row (Tune tells the searcher before its callbacks, and only the callback sees
  the exception); :class:`TrimEndedTrial` then drops Tune's copy of what the store holds.
- :class:`RunPayload`: one run's (or one population's) result as it travels in Tune's metrics, written
  by the trainable (:mod:`lyaptune.study.trainable`) and read by the searcher.
- :class:`TuneCheckpoints` and :func:`read_checkpoint`: the checkpoints that earlier, killed drivers'
  Tune experiments left in the run directory, on any pyarrow filesystem (a local path, ``s3://``,
  ``gs://``), so ``lyaptune resume`` continues an interrupted run from its last checkpoint.
- :func:`make_tuner`: the study's ``tune.Tuner`` (ASHA when asked, quiet output, the checkpoint layout
  above).

Reference: Ray's ``OptunaSearch`` (``ray/tune/search/optuna/optuna_search.py``) is the model of a thin
ask/tell searcher.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import io
import json
import math
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow.fs as pafs
from ray import tune
from ray.air.constants import EXPR_RESULT_FILE
from ray.tune.logger import LoggerCallback
from ray.tune.search import Searcher

from lyaptune.train import TrialResult

if TYPE_CHECKING:
    from lyaptune.study.searcher import Job, StudyPlan
    from lyaptune.study.spec import StudySpec

__all__ = [
    "CHECKPOINT_FILE",
    "InterruptCallback",
    "RunPayload",
    "StudyErrorCallback",
    "StudySearcher",
    "StudyStopped",
    "TrimEndedTrial",
    "TuneCheckpoints",
    "epoch_metrics",
    "error_metrics",
    "make_tuner",
    "read_checkpoint",
    "trial_dirname",
    "tune_storage_path",
]

#: the file a run's checkpoint is saved as, inside Tune's ``checkpoint_<n>`` directory
CHECKPOINT_FILE = "trial.pt"

# the metric keys lyaptune adds to Tune's results (JSON text: Tune flattens nested dicts)
_FINAL = "lyaptune_final"
_PAYLOAD = "lyaptune_payload"
_RECORD = "lyaptune_record"
_ERROR = "lyaptune_error"
_TRACEBACK = "lyaptune_traceback"
_TRIAL = "lyaptune_trial_id"
# the bulky ones, which the store keeps: left out of result.json and dropped from ended Tune trials
_BULK = (_PAYLOAD, _RECORD, _TRACEBACK)


# --------------------------------------------------------------------------------------------------
# What travels in Tune's metrics.


def _result_dict(result: TrialResult) -> dict[str, Any]:
    return {
        "status": result.status,
        "records": result.records,
        "info": result.info,
        "wall_s": result.wall_s,
        "message": result.message,
    }


@dataclass(frozen=True)
class RunPayload:
    """The end result of one Tune trial: one run, or every member of a vmapped population.

    Args:
      results: one :class:`lyaptune.train.TrialResult` for a run trained alone, one per member (in the
        order of the job's members) for a population.
      resumed_from_epoch: for a run trained alone, the epoch of the checkpoint it continued from (0 when
        it started from scratch); ``None`` for a population.
    """

    results: tuple[TrialResult, ...]
    resumed_from_epoch: int | None = None

    @property
    def is_population(self) -> bool:
        """Whether this is a population's payload (``resumed_from_epoch`` is None)."""
        return self.resumed_from_epoch is None

    def run_info(self, i: int = 0) -> dict[str, Any]:
        """The info of result ``i`` as stored: a run trained alone also records ``resumed_from_epoch``."""
        info = dict(self.results[i].info)
        if self.resumed_from_epoch is not None:
            info["resumed_from_epoch"] = self.resumed_from_epoch
        return info

    def to_metrics(self, trial_id: str, objective: float | None, epoch: int) -> dict[str, Any]:
        """The final ``tune.report`` of a trial carrying this payload.

        Args:
          trial_id: lyaptune's id of the job.
          objective: the experiment metric Tune requires in every result (``None`` for a population).
          epoch: the last epoch (Tune's ``time_attr`` for ASHA).
        """
        body = {
            "results": [_result_dict(r) for r in self.results],
            "resumed_from_epoch": self.resumed_from_epoch,
        }
        return {
            _TRIAL: trial_id,
            "objective": objective,
            "epoch": epoch,
            _FINAL: True,
            _PAYLOAD: json.dumps(body),
        }

    @classmethod
    def from_metrics(cls, result: Mapping[str, Any] | None) -> RunPayload | None:
        """The payload of a Tune result, or ``None`` when it is not a trial's final report."""
        if not result or not result.get(_FINAL) or _PAYLOAD not in result:
            return None
        body = json.loads(result[_PAYLOAD])
        results = tuple(
            TrialResult(
                status=r["status"],
                records=r["records"],
                info=r["info"],
                wall_s=r["wall_s"],
                message=r["message"],
            )
            for r in body["results"]
        )
        return cls(results=results, resumed_from_epoch=body.get("resumed_from_epoch"))


def epoch_metrics(trial_id: str, record: Mapping[str, Any], metric: str) -> dict[str, Any]:
    """An intermediate ``tune.report`` of one epoch: the objective for ASHA, the record for the store."""
    return {
        _TRIAL: trial_id,
        "objective": record.get(metric),
        "epoch": record["epoch"],
        _RECORD: json.dumps(dict(record)),
    }


def error_metrics(trial_id: str, exc: BaseException) -> dict[str, Any]:
    """The report a failing run makes before it re-raises: its one-line message and traceback tail.

    The experiment's metric is present (``None``): Tune rejects a result without it.
    """
    return {
        _TRIAL: trial_id,
        "objective": None,
        _ERROR: f"{type(exc).__name__}: {exc}".splitlines()[0],
        _TRACEBACK: traceback.format_exc()[-4000:],
    }


# --------------------------------------------------------------------------------------------------
# Checkpoints of earlier drivers.


def tune_storage_path(run_dir: str) -> str:
    """Tune's ``storage_path`` for a run directory: ``<run dir>/ray`` (absolute for a local path)."""
    if "://" in run_dir and not run_dir.startswith("file://"):
        return run_dir.rstrip("/") + "/ray"
    return str(Path(run_dir.removeprefix("file://")).expanduser().resolve() / "ray")


def trial_dirname(trial: Any) -> str:
    """A Tune trial's name and directory: ``<lyaptune trial id>-<Tune trial id>``.

    Tune's ids hold no ``-``, so the lyaptune id is everything before the last ``-``
    (:class:`TuneCheckpoints` relies on it).
    """
    job = trial.config.get("job", {})
    return f"{job.get('trial_id', 'trial')}-{trial.trial_id}"


class TuneCheckpoints:
    """The newest checkpoint that earlier Tune experiments of a run directory kept for each run.

    Tune lays them out as ``<storage_path>/<experiment>/<trial dir>/checkpoint_<n>/trial.pt`` with
    experiments named ``tune-<timestamp>`` (:func:`make_tuner`) and trial directories named by
    :func:`trial_dirname`; the newest of a run is the largest ``(experiment, n)``. The storage is listed
    once, when the object is made (before this driver's experiment starts): the experiments of killed
    drivers do not change afterwards.

    Args:
      storage_path: Tune's storage path, a local absolute path or a pyarrow URI (``s3://...``), as from
        :func:`tune_storage_path`.

    Call it with a run's trial id; it returns the checkpoint file's location (a local path or a URI,
    what :func:`read_checkpoint` reads), or None.
    """

    def __init__(self, storage_path: str) -> None:
        self.storage_path = storage_path.rstrip("/")
        self.newest: dict[str, tuple[tuple[str, int], str]] = {}
        fs, base = pafs.FileSystem.from_uri(self.storage_path)
        base = base.rstrip("/")
        infos = fs.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True))
        for info in infos:
            if info.type != pafs.FileType.File or info.base_name != CHECKPOINT_FILE:
                continue
            parts = info.path[len(base) :].strip("/").split("/")
            if len(parts) != 4 or not parts[2].startswith("checkpoint_"):
                continue
            experiment, trial_dir, ckpt, _ = parts
            try:
                key = (experiment, int(ckpt.removeprefix("checkpoint_")))
            except ValueError:
                continue
            trial_id = trial_dir.rsplit("-", 1)[0]
            if trial_id not in self.newest or key > self.newest[trial_id][0]:
                self.newest[trial_id] = (key, self.storage_path + "/" + "/".join(parts))

    def __call__(self, trial_id: str) -> str | None:
        found = self.newest.get(trial_id)
        return None if found is None else found[1]


def read_checkpoint(location: str) -> dict[str, Any] | None:
    """Load a checkpoint file from a local path or a pyarrow URI; ``None`` if it is missing or cannot be
    read (the run then starts over).

    Unreadable means anything: a file cut short or empty (``EOFError``, ``RuntimeError``), or one whose
    bytes are neither a zip nor a tar archive, which ``torch.load`` rejects with
    ``pickle.UnpicklingError``, not an ``OSError``: before issue 21 that error escaped, and the resumed
    run failed the same way on every retry and was stored ``errored``. A loaded object without an
    ``epoch`` is not a run's state either.
    """
    import torch

    try:
        fs, path = pafs.FileSystem.from_uri(location)
        with fs.open_input_stream(path) as f:
            data = f.read()
        state = torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")
    except Exception:  # noqa: BLE001  (whatever the bytes are, an unreadable checkpoint is no checkpoint)
        return None
    return state if isinstance(state, dict) and "epoch" in state else None


# --------------------------------------------------------------------------------------------------
# The searcher and its error callback.


def _no_progress(job: Job, status: str, value: float) -> None:
    """The default ``on_finish``: nothing."""


class StudySearcher(Searcher):
    """Ray Tune searcher around a :class:`StudyPlan`: Tune asks, the plan decides, results go back.

    ``suggest`` hands Tune the plan's next job (``{"job": payload}``); ``on_trial_complete`` records
    a finished run (its :class:`RunPayload`) or a run stopped early by ASHA (``stopped``, with the
    epochs it reported); a failed run is recorded by :meth:`record_error`, which
    :class:`StudyErrorCallback` calls (give Tune both: :func:`make_tuner` does).

    Tune pickles its searcher with the experiment state; the plan (an Optuna storage, a lock) and the
    runs in flight are left out, so an unpickled searcher suggests nothing: lyaptune resumes from its
    own store and Optuna journal, not from Tune's snapshot.

    Args:
      plan: the study's plan.
      on_finish: called with ``(job, status, objective)`` after each run is recorded (progress).
      on_start: called with each job handed to Tune (progress).
    """

    def __init__(
        self,
        plan: StudyPlan,
        on_finish: Callable[[Job, str, float], None] | None = None,
        on_start: Callable[[Job], None] | None = None,
    ) -> None:
        super().__init__()
        self.plan: StudyPlan | None = plan
        self.on_finish = on_finish or _no_progress
        self.on_start = on_start
        self.jobs: dict[str, Job] = {}
        self.records: dict[str, dict[int, dict[str, Any]]] = {}
        self.errors: dict[str, str] = {}
        self.stopping = False  # set on SIGINT/SIGTERM: trials Tune stops now stay open for resume

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.update(plan=None, on_finish=_no_progress, on_start=None, jobs={}, records={}, errors={})
        return state

    def save(self, checkpoint_path: str) -> None:
        """Nothing to save: lyaptune resumes from its store and Optuna journal."""

    def restore(self, checkpoint_path: str) -> None:
        """Nothing to restore (see :meth:`save`)."""

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        """The next job's config, ``None`` to wait for running jobs, or ``Searcher.FINISHED``."""
        if self.plan is None:
            return Searcher.FINISHED
        job = self.plan.next_job()
        if job == "FINISHED":
            return Searcher.FINISHED
        if job is None:
            return None
        self.jobs[trial_id] = job
        if self.on_start is not None:
            self.on_start(job)
        plan = self.plan
        return {"job": job.payload(plan.spec, plan.arms[job.arm].spec, plan.data_roots.get(job.arm))}

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        """Keep the epoch records and the error message a run reports on its way."""
        if _RECORD in result:
            rec = json.loads(result[_RECORD])
            self.records.setdefault(trial_id, {})[int(rec["epoch"])] = rec
        if _ERROR in result:
            self.errors[trial_id] = result[_ERROR]

    def _take(self, trial_id: str) -> tuple[Job | None, list[dict[str, Any]], str]:
        """Forget a trial: its job, the epoch records it reported (in order), its reported error."""
        partial = [r for _, r in sorted(self.records.pop(trial_id, {}).items())]
        return self.jobs.pop(trial_id, None), partial, self.errors.pop(trial_id, "")

    def on_trial_complete(
        self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False
    ) -> None:
        """Record a run that ended without an error: finished (its payload) or stopped by ASHA."""
        if error or self.plan is None or trial_id not in self.jobs:
            return  # a failed run is recorded by `record_error`, called by the error callback next
        if result and _RECORD in result:
            # a scheduler's STOP hands the deciding result to on_trial_complete, not on_trial_result
            self.on_trial_result(trial_id, result)
        payload = RunPayload.from_metrics(result)
        if payload is None and self.stopping:
            self._take(trial_id)
            return  # stopped by the interruption, not finished: `lyaptune resume` runs it again
        job, partial, message = self._take(trial_id)
        assert job is not None
        if job.members is not None:
            results = list(payload.results) if payload is not None else None
            self._finish_population(job, results, message or "the population ended without results")
        elif payload is not None:
            self._finish(job, dataclasses.replace(payload.results[0], info=payload.run_info()))
        else:
            self._finish(
                job, TrialResult("stopped", partial, {}, math.nan, "stopped early by the ASHA scheduler")
            )

    def record_error(self, trial_id: str, message: str = "") -> None:
        """Record a Tune trial that failed after its last retry: ``errored``, with its message.

        Args:
          trial_id: Tune's trial id.
          message: the exception line Tune recorded; default the one the run reported, else a note that
            the run ended without one (a lost worker).
        """
        job, partial, reported = self._take(trial_id)
        if job is None or self.plan is None:
            return
        message = message or reported or "the trial failed without a message (its worker was lost?)"
        if job.members is not None:
            self._finish_population(job, None, message)
        else:
            self._finish(job, TrialResult("errored", partial, {}, math.nan, message))

    def _finish(self, job: Job, result: TrialResult) -> None:
        assert self.plan is not None
        r = result
        value = self.plan.finish(job, r.status, r.records, r.info, r.wall_s, r.message)
        self.on_finish(job, r.status, value)

    def _finish_population(self, job: Job, results: list[TrialResult] | None, message: str) -> None:
        assert self.plan is not None
        for member, status, value in self.plan.finish_population(job, results, message):
            self.on_finish(member, status, value)


def _error_message(trial: Any) -> str:
    """The exception line of a failed Tune trial (the last line of its error file), or ''."""
    try:
        text = Path(trial.error_file).read_text() if trial.error_file else ""
    except OSError:
        return ""
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1][:500] if lines else ""


class StudyErrorCallback(tune.Callback):
    """Turns a Tune trial that failed after its last retry into an ``errored`` row (with the exception).

    Args:
      searcher: the study's searcher (:meth:`StudySearcher.record_error` writes the row).
    """

    def __init__(self, searcher: StudySearcher) -> None:
        self.searcher = searcher

    def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self.searcher.record_error(trial.trial_id, _error_message(trial))


class TrimEndedTrial(tune.Callback):
    """Drops what Tune keeps of an ended trial that the study's store already holds.

    Tune keeps every trial of an experiment in the driver for the whole study: its last result, with
    lyaptune's final payload (every epoch's record of the run: tens of KB for 100 epochs), and its
    per-metric statistics (``run_metadata.metric_analysis`` and the ``metric_n_steps`` windows, about
    20 KB a trial with lyaptune's metrics), which nothing in Tune reads once the trial has ended. At
    100,000 trials that is gigabytes of the driver's memory (issue 22). Once a trial has ended the
    searcher has stored its run (Tune tells the searcher, then the error callback, before this callback;
    :func:`make_tuner` lists it after :class:`StudyErrorCallback`), so both are dropped; Tune's own keys
    and the objective stay in the last result.
    """

    def _forget(self, trial: Any) -> None:
        result = trial.last_result
        for key in _BULK:
            result.pop(key, None)
        meta = trial.run_metadata
        meta.metric_analysis, meta.metric_n_steps = {}, {}  # its setattr drops its cached JSON

    def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self._forget(trial)

    def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self._forget(trial)


class ResultFileCallback(LoggerCallback):
    """Writes each trial's ``result.json`` (one JSON line per report), without lyaptune's payload.

    The study turns Tune's default loggers off (``TUNE_DISABLE_AUTO_CALLBACK_LOGGERS``: they copy what
    the store keeps). But at the end of ``Tuner.fit`` Tune's ``ExperimentAnalysis`` reads every trial's
    ``result.json`` (or ``progress.csv``), and without either it logged one "Failed to fetch metrics ...
    FileNotFoundError" warning line per trial in ``ray.log``. This callback writes the file it reads, as
    Tune's ``JsonLoggerCallback`` does, keeping Tune's own keys and the objective but leaving out the
    run's payload, epoch records and traceback (the store has them).
    """

    _DROP = (*_BULK, "config")

    def __init__(self) -> None:
        self._files: dict[Any, Any] = {}

    def __getstate__(self) -> dict[str, Any]:
        return {"_files": {}}  # open files stay with this process

    def log_trial_start(self, trial: Any) -> None:
        if trial in self._files:
            self._files[trial].close()
        trial.init_local_path()
        self._files[trial] = Path(trial.local_path, EXPR_RESULT_FILE).open("a", encoding="utf-8")

    def log_trial_result(self, iteration: int, trial: Any, result: dict[str, Any]) -> None:
        if trial not in self._files:
            self.log_trial_start(trial)
        kept = {k: v for k, v in result.items() if k not in self._DROP}
        f = self._files[trial]
        f.write(json.dumps(kept, default=str) + "\n")
        f.flush()

    def log_trial_end(self, trial: Any, failed: bool = False) -> None:
        f = self._files.pop(trial, None)
        if f is not None:
            f.close()


class InterruptStopper(tune.Stopper):
    """Stops the whole experiment once ``stop_all()`` says so (Tune's graceful stop; the study uses
    :class:`InterruptCallback` instead, which does not wait for the trials to stop).

    Args:
      stop_all: asked after every result; left out of the pickled state (Tune's snapshot).
    """

    def __init__(self, stop_all: Callable[[], bool] | None) -> None:
        self._stop_all = stop_all

    def __getstate__(self) -> dict[str, Any]:
        return {"_stop_all": None}

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        return False

    def stop_all(self) -> bool:
        return bool(self._stop_all is not None and self._stop_all())


class StudyStopped(KeyboardInterrupt):
    """Raised out of ``Tuner.fit`` by :class:`InterruptCallback` (a ``BaseException``: Tune's loop
    catches ``Exception`` only, and would then wait for its trials to stop)."""


class InterruptCallback(tune.Callback):
    """Ends ``Tuner.fit`` at the start of Tune's next step (a tenth of a second) once ``stop_all()``
    says so (SIGINT / SIGTERM received), by raising :class:`StudyStopped`.

    Tune's own stop asks each trial's actor to stop, but the actor runs one task at a time and is busy
    in the trial's ``train`` call until the run reports again, which it does only at its end (or at
    a checkpoint): Tune then waits up to 10 s per experiment before it kills the actors, and a run that
    trains for minutes is not stopped sooner. Raising here, between Tune's events (never while a result
    is being stored), leaves the trials in flight to ``ray.shutdown``, which ends their workers at once;
    their runs are not stored and ``lyaptune resume`` runs them again (from their last checkpoint).

    Args:
      stop_all: asked at every step; left out of the pickled state (Tune's snapshot).
      on_stop: called once, just before :class:`StudyStopped` is raised.
    """

    def __init__(
        self, stop_all: Callable[[], bool] | None, on_stop: Callable[[], None] | None = None
    ) -> None:
        self._stop_all, self._on_stop = stop_all, on_stop

    def __getstate__(self) -> dict[str, Any]:
        return {"_stop_all": None, "_on_stop": None}

    def on_step_begin(self, iteration: int, trials: list[Any], **info: Any) -> None:
        if self._stop_all is not None and self._stop_all():
            if self._on_stop is not None:
                self._on_stop()
            raise StudyStopped("interrupted")


class _OpenTrialsFirst:
    """Tune's choice of the next trial to start, over the trials that have not finished.

    Tune's ``FIFOScheduler.choose_trial_to_run`` (which ASHA inherits) passes over every trial the
    experiment ever made, on every step of the controller: a 10,000-trial study spent more time there
    than in its trials. Here each trial is looked at when it first appears (Tune appends new trials to
    its list) and dropped once ``TERMINATED`` (it never runs again in this experiment); the first
    ``PENDING``, else the first ``PAUSED``, of the rest is started, as Tune's rule does. An ``ERROR``ed
    trial stays: Tune may requeue it for a retry.
    """

    _seen = 0
    _open: list[Any] | None = None

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.pop("_open", None)  # Trial objects: rebuilt from the controller's list after a restore
        state.pop("_seen", None)
        return state

    def choose_trial_to_run(self, tune_controller: Any) -> Any:
        from ray.tune.experiment import Trial

        trials = tune_controller.get_trials()
        if self._open is None:
            self._open, self._seen = [], 0
        self._open.extend(trials[self._seen :])
        self._seen = len(trials)
        self._open = [t for t in self._open if t.status != Trial.TERMINATED]
        for status in (Trial.PENDING, Trial.PAUSED):
            for trial in self._open:
                if trial.status == status:
                    return trial
        return None


class StudyFIFOScheduler(_OpenTrialsFirst, tune.schedulers.FIFOScheduler):
    """Tune's FIFO scheduler, choosing among the trials not yet finished (:class:`_OpenTrialsFirst`)."""


class StudyASHAScheduler(_OpenTrialsFirst, tune.schedulers.ASHAScheduler):
    """Tune's ASHA scheduler, choosing among the trials not yet finished (:class:`_OpenTrialsFirst`)."""


def make_tuner(
    spec: StudySpec,
    run_dir: str,
    searcher: StudySearcher,
    *,
    trainable: Callable[[dict[str, Any]], None],
    stop_all: Callable[[], bool] | None = None,
    on_stop: Callable[[], None] | None = None,
    max_concurrent: int | None = None,
) -> tune.Tuner:
    """The Tune experiment of a study: lyaptune's searcher and error callback, ASHA if asked.

    Args:
      spec: the study (resources per trial, scheduler, failures, ``max_concurrent``).
      run_dir: the run directory (local path or URI); Tune's storage is :func:`tune_storage_path` of it.
      searcher: the study's searcher.
      trainable: the function Tune runs per trial (:func:`lyaptune.study.trainable.train_job`; passed
        in, since the trainable imports this module).
      stop_all: when it returns True, ``fit`` raises :class:`StudyStopped` at Tune's next step (an
        interruption; :class:`InterruptCallback`).
      on_stop: called just before.
      max_concurrent: overrides ``spec.max_concurrent``.

    Returns:
      The ``tune.Tuner`` (call ``fit()``).
    """
    scheduler: tune.schedulers.TrialScheduler = StudyFIFOScheduler()
    max_epochs = max(arm.task_for(spec.task).epochs for arm in spec.arms)
    if spec.search.scheduler == "asha":
        # max_t one past the last epoch: ASHA stops every trial that reaches max_t, and a run that
        # trained all its epochs must end with its own final report (status completed)
        scheduler = StudyASHAScheduler(
            time_attr="epoch",
            max_t=max_epochs + 1,
            grace_period=min(spec.search.grace_period, max_epochs),
            reduction_factor=spec.search.reduction_factor,
        )
    trainable = tune.with_resources(trainable, {"cpu": spec.resources.cpu, "gpu": spec.resources.gpu})
    return tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            metric="objective",
            mode=spec.objective.mode,
            search_alg=searcher,
            scheduler=scheduler,
            num_samples=-1,
            max_concurrent_trials=max_concurrent or spec.max_concurrent,
            reuse_actors=True,
            trial_name_creator=trial_dirname,
            trial_dirname_creator=trial_dirname,
        ),
        run_config=tune.RunConfig(
            # sortable by start time: TuneCheckpoints takes the newest experiment's checkpoint
            name="tune-" + _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%d-%H%M%S-%f"),
            storage_path=tune_storage_path(run_dir),
            failure_config=tune.FailureConfig(max_failures=spec.max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
            callbacks=[
                StudyErrorCallback(searcher),
                TrimEndedTrial(),
                ResultFileCallback(),
                InterruptCallback(stop_all, on_stop),
            ],
            verbose=0,
        ),
    )
