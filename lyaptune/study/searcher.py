"""The study's search logic: one Optuna study per arm, equal budgets, then a final phase.

:class:`StudyPlan` is framework-free (Optuna + the run store, no Ray): it decides which training run
comes next, records finished runs in the store exactly once, and tells Optuna. The Ray Tune adapter
around it (``Searcher``, error callback, checkpoint lookup) is :mod:`lyaptune.study.tune_adapter`.

Each training run ("job") is one configuration on one seed and has a deterministic id
``<arm>-search-<optuna number>-s<seed>`` (``<arm>-search-r<repeat>-<optuna number>-s<seed>`` in search
repeat ``repeat >= 1``) or ``<arm>-final-s<seed>``, so a retried or resumed run replaces its own rows
and never duplicates them. An Optuna trial's value is the mean objective over the search seeds.

With ``search.repeats: R`` a sampled arm has R independent Optuna studies (``<study>/<arm>`` for repeat 0,
``<study>/<arm>/r<repeat>`` after it), each with the whole ``trials_per_arm`` budget; the final phase
re-runs the best configuration over all repeats.

Proposals are deterministic: each ask uses a sampler seeded from (sampler seed, arm, repeat, trial
number) (:func:`lyaptune.study.spaces.make_sampler` with ``trial``), so trial ``k`` depends on the spec
and the trials told before it, never on how many drivers ran; a trial asked but not told when its driver
died is re-run with its stored parameters, never asked again.

A diverged or errored run makes its Optuna trial FAIL (the sampler then ignores that
configuration; documented in the README); a run stopped early by ASHA makes it PRUNED.
"""

from __future__ import annotations

import math
import re
import threading
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from lyaptune import faults
from lyaptune.errors import ConfigError
from lyaptune.store import TRIAL_COLUMNS, RunStore, trial_row
from lyaptune.study.journal import journal_storage
from lyaptune.study.spaces import _values, ask, enqueue_grid, make_sampler
from lyaptune.study.spec import ArmSpec, StudySpec
from lyaptune.train import TrialResult

__all__ = [
    "Job",
    "StudyPlan",
    "objective_value",
    "journal_storage",
    "repeat_of",
    "resolve_data_roots",
    "TERMINAL",
]

#: statuses of a finished run
TERMINAL = ("completed", "diverged", "stopped", "errored")


@dataclass
class Job:
    """One training run: a configuration of an arm on one seed."""

    trial_id: str
    arm: str
    phase: str
    seed: int
    params: dict[str, Any]
    number: int | None = None  # the Optuna trial number (search phase), within its repeat's study
    repeat: int = 0  # which independent search repeat of the arm (search phase; 0 for final runs)
    members: list[Job] | None = None  # a population: these jobs trained together in one process
    checkpoint: str | None = None  # a checkpoint left by an earlier, interrupted attempt (resume)

    def payload(self, spec: StudySpec, arm: ArmSpec, data_root: str | None = None) -> dict[str, Any]:
        """What the trainable needs (plain, picklable data).

        Args:
          spec, arm: the study and the job's arm.
          data_root: the arm's data directory as the study resolved it when it started
            (:func:`resolve_data_roots`, kept in ``study.json``); default: resolved now.
        """
        if self.members is not None:
            members = [m.payload(spec, arm, data_root) for m in self.members]
            return {"trial_id": self.trial_id, "population": members}
        return {
            "trial_id": self.trial_id,
            "arm": self.arm,
            "phase": self.phase,
            "seed": self.seed,
            "repeat": self.repeat,
            "trial_config": _absolute_data_root(
                spec.trial_config(arm, self.params, self.seed).to_dict(), data_root
            ),
            "metric": spec.objective.metric,
            "report_every_epoch": spec.search.scheduler == "asha",
            "checkpoint_every": spec.checkpoint_every,
            "checkpoint": self.checkpoint,
        }


_REPEAT_RE = re.compile(r"-search-r(\d+)-\d+-s-?\d+$")


def repeat_of(trial_id: str) -> int | None:
    """The search repeat of a search run's trial id (``<arm>-search-r2-0007-s0`` -> 2, no ``r`` -> 0).

    Returns ``None`` for an id that is not a search run's (a final run: repeats only split the search).
    """
    found = _REPEAT_RE.search(trial_id)
    if found:
        return int(found.group(1))
    return 0 if re.search(r"-search-\d+-s-?\d+$", trial_id) else None


def _absolute_data_root(config: dict[str, Any], resolved: str | None = None) -> dict[str, Any]:
    """Resolve ``data_root`` on the driver: Ray workers run in other working directories.

    ``resolved`` (the root the study resolved when it started) wins over resolving now, so a resumed
    study reads its data where it started, whatever the shell's ``LYAPTUNE_DATA_ROOT`` and working
    directory are.
    """
    from lyaptune.data import default_data_root

    root = config.get("data_root")
    if resolved:
        config["data_root"] = resolved
    else:
        config["data_root"] = str(Path(root).expanduser().resolve()) if root else str(default_data_root())
    return config


def resolve_data_roots(spec: StudySpec) -> dict[str, str]:
    """The absolute data directory of every arm, resolved now (issue 21).

    An arm's task ``data_root`` taken from the current working directory when relative, else
    ``$LYAPTUNE_DATA_ROOT``, else ``./data`` (:func:`lyaptune.data.default_data_root`). The runner keeps
    the result in ``study.json`` (``data_roots``) when a study starts, and ``lyaptune resume`` uses it, so
    a resume never depends on the shell it runs in.

    Returns:
      arm name -> absolute path.
    """
    return {
        arm.name: _absolute_data_root(spec.trial_config(arm, {}, spec.search.seeds[0]).to_dict())["data_root"]
        for arm in spec.arms
    }


def objective_value(records: list[Mapping[str, Any]], metric: str, mode: str, at: str) -> float:
    """The objective of one run: ``metric`` at the final epoch, or its best over epochs (NaN if none)."""
    values = [float(r[metric]) for r in records if metric in r]
    if not values:
        return math.nan
    if at == "final":
        return values[-1]
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return math.nan
    return min(finite) if mode == "min" else max(finite)


@dataclass
class _Repeat:
    """One independent Optuna study of an arm (search repeat ``index``)."""

    index: int
    study: optuna.Study
    budget: int
    asked: int = 0
    # trials in the Optuna study (asked, told or enqueued): the next new trial's number, kept here
    # because counting them (``len(study.get_trials())``) is a pass over every trial on each ask
    n_trials: int = 0
    # optuna number -> {seed: objective or None (failed) }, for trials whose seeds are not all done
    open_trials: dict[int, dict[int, float | None]] = field(default_factory=dict)
    open_status: dict[int, str] = field(default_factory=dict)

    @property
    def searching(self) -> bool:
        return self.asked < self.budget

    @property
    def done(self) -> bool:
        return self.asked >= self.budget and not self.open_trials


@dataclass
class _ArmState:
    spec: ArmSpec
    repeats: list[_Repeat]
    finals_queued: bool = False
    population: bool = False

    @property
    def budget(self) -> int:
        return sum(r.budget for r in self.repeats)

    @property
    def asked(self) -> int:
        return sum(r.asked for r in self.repeats)

    @property
    def open_trials(self) -> int:
        return sum(len(r.open_trials) for r in self.repeats)


class StudyPlan:
    """Decides the next job, records finished jobs, and keeps every arm's Optuna study up to date.

    Args:
      spec: the study.
      store: the run directory's store (results are written there, exactly once per job).
      journal: path of the Optuna journal file.
      log: called with one-line progress messages.
      data_roots: arm name -> the data directory the study resolved when it started
        (:func:`resolve_data_roots`); arms left out resolve theirs when a job is handed out.
      checkpoints: asked with a run's trial id for a checkpoint an earlier, interrupted attempt left
        (a local path or a URI, or None); the run then continues from it. Default: none. The Ray
        adapter's :class:`lyaptune.study.tune_adapter.TuneCheckpoints` finds Tune's.
    """

    def __init__(
        self,
        spec: StudySpec,
        store: RunStore,
        journal: Path | str,
        log: Callable[[str], None] | None = None,
        checkpoints: Callable[[str], str | None] | None = None,
        data_roots: Mapping[str, str] | None = None,
    ) -> None:
        self.spec = spec
        self.data_roots: dict[str, str] = dict(data_roots or {})
        self.store = store
        self.log = log or (lambda msg: None)
        self.checkpoints = checkpoints
        self.lock = threading.RLock()
        storage = journal_storage(journal)
        direction = "minimize" if spec.objective.mode == "min" else "maximize"
        self.arms: dict[str, _ArmState] = {}
        done = store.trial_ids(statuses=TERMINAL)
        self.done: set[str] = set(done)
        self.queue: deque[Job] = deque()
        self.running: dict[str, Job] = {}
        self._rr = 0
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        for arm in spec.arms:
            n_repeats = spec.repeats(arm)
            budget = spec.budget(arm) // n_repeats
            repeats = []
            if budget > 0:
                for r in range(n_repeats):
                    study = optuna.create_study(
                        study_name=f"{spec.name}/{arm.name}" + (f"/r{r}" if r else ""),
                        storage=storage,
                        sampler=make_sampler(spec.search, arm, repeat=r),
                        direction=direction,
                        load_if_exists=True,
                    )
                    repeats.append(_Repeat(index=r, study=study, budget=budget))
            state = _ArmState(spec=arm, repeats=repeats, population=self._use_population(arm))
            self.arms[arm.name] = state
            for rep in repeats:
                self._restore_repeat(state, rep)

    def _use_population(self, arm: ArmSpec) -> bool:
        """Whether the grid points of ``arm`` train as vmapped populations (spec ``population``)."""
        if self.spec.population == "off" or not self.spec.is_grid(arm):
            return False
        task = arm.task_for(self.spec.task)
        on_gpu = task.device.startswith("cuda") or (task.device == "auto" and self.spec.resources.gpu > 0)
        if self.spec.population == "auto" and not on_gpu:
            return False  # on CPUs a vmapped population measured slower than one run after another
        from lyaptune.population import population_incompatibility

        points = arm.grid_points() if arm.grid is not None else [{}]
        configs = [self.spec.trial_config(arm, p, s) for p in points[:2] for s in self.spec.search.seeds]
        reason = population_incompatibility(configs)
        if reason and self.spec.population == "on":
            raise ConfigError(f"population: 'on' but arm '{arm.name}' cannot train as a population: {reason}")
        if not reason:
            self.log(f"{arm.name}: its {len(points)} grid points train as vmapped populations")
        return reason is None

    # -- resume ------------------------------------------------------------------------------------
    def _restore_repeat(self, state: _ArmState, rep: _Repeat) -> None:
        """Rebuild one search repeat's progress from its journal and the store (after a restart)."""
        study = rep.study
        if self.spec.is_grid(state.spec):
            # the grid, point by point: the budget is its size; points already enqueued or asked are
            # skipped, so a driver killed while enqueueing leaves no point out and none twice
            enqueue_grid(study, state.spec)
        trials = study.get_trials(deepcopy=False)
        rep.n_trials = len(trials)
        rows = self.store.trials()
        for t in trials:
            if t.state == TrialState.WAITING:
                continue
            rep.asked += 1
            if t.state != TrialState.RUNNING:
                continue
            # an Optuna trial left open by a killed driver: finish it from the store, re-run the rest
            # its parameters as asked; a driver killed between the ask and storing them left Optuna's
            # searched values only, completed with the space's fixed values as the ask did
            stored = t.user_attrs.get("params")
            params = dict(stored) if stored is not None else _values(state.spec.resolved_space(), t.params)
            seeds: dict[int, float | None] = {}
            for seed in self.spec.search.seeds:
                job = self._search_job(state.spec, rep.index, t.number, seed, params)
                if job.trial_id in self.done:
                    row = rows[rows["trial_id"] == job.trial_id].iloc[-1]
                    ok = row["status"] == "completed"
                    seeds[seed] = float(row["objective"]) if ok else None
                    if not ok:
                        rep.open_status[t.number] = str(row["status"])
                else:
                    self.queue.append(job)
            rep.open_trials[t.number] = seeds
            self._maybe_tell(rep, t.number)

    # -- jobs --------------------------------------------------------------------------------------
    def _search_job(self, arm: ArmSpec, repeat: int, number: int, seed: int, params: dict[str, Any]) -> Job:
        tag = f"r{repeat}-" if repeat else ""
        trial_id = f"{arm.name}-search-{tag}{number:04d}-s{seed}"
        return Job(trial_id, arm.name, "search", seed, params, number, repeat=repeat)

    def _ask(self, state: _ArmState, rep: _Repeat) -> list[Job]:
        study = rep.study
        # the sampler of this one ask, seeded from (sampler seed, arm, repeat, trial number): trial k's
        # configuration follows from the trials told before it, however many drivers ran (issue 21);
        # an enqueued grid point is taken as it is (the sampler does not draw)
        number = rep.n_trials
        study.sampler = make_sampler(self.spec.search, state.spec, repeat=rep.index, trial=number)
        trial, params = ask(study, state.spec.resolved_space())
        if trial.number == rep.n_trials:  # a new trial (an enqueued grid point has a smaller number)
            rep.n_trials += 1
        trial.set_user_attr("params", params)
        rep.asked += 1
        rep.open_trials[trial.number] = {}
        return [
            self._search_job(state.spec, rep.index, trial.number, s, params) for s in self.spec.search.seeds
        ]

    def _search_done(self, state: _ArmState) -> bool:
        return all(rep.done for rep in state.repeats)

    def _best_params(self, state: _ArmState) -> dict[str, Any] | None:
        """The best configuration over all the arm's search repeats (None when no trial completed).

        Ties go to the earlier repeat, so one repeat gives exactly Optuna's ``best_trial``.
        """
        best, best_value = None, None
        better = (lambda a, b: a < b) if self.spec.objective.mode == "min" else (lambda a, b: a > b)
        for rep in state.repeats:
            try:
                trial = rep.study.best_trial
            except ValueError:
                continue
            if best is None or better(trial.value, best_value):
                best, best_value = trial, trial.value
        return None if best is None else dict(best.user_attrs.get("params", best.params))

    def _final_jobs(self, state: _ArmState) -> list[Job]:
        params: dict[str, Any] = {}
        if state.repeats:
            best = self._best_params(state)
            if best is None:
                self.log(f"{state.spec.name}: no search trial completed; no final runs")
                return []
            params = best
        jobs = [
            Job(f"{state.spec.name}-final-s{seed}", state.spec.name, "final", seed, params)
            for seed in self.spec.search.final_seeds
        ]
        return [j for j in jobs if j.trial_id not in self.done]

    def next_job(self) -> Job | None | str:
        """The next job to run; ``None`` to wait for running jobs; ``"FINISHED"`` when all is done."""
        with self.lock:
            if self.queue:
                return self._start(self.queue.popleft())
            names = list(self.arms)
            for i in range(len(names)):
                state = self.arms[names[(self._rr + i) % len(names)]]
                # repeats in turn: the one with the fewest trials asked next, so all grow together
                open_reps = [r for r in state.repeats if r.searching]
                if open_reps:
                    rep = min(open_reps, key=lambda r: (r.asked, r.index))
                    self._rr = (self._rr + i + 1) % len(names)
                    jobs = self._ask(state, rep)
                    if state.population:
                        while rep.searching and len(jobs) < self.spec.population_size:
                            jobs.extend(self._ask(state, rep))
                        first = jobs[0]
                        tag = f"r{rep.index}-" if rep.index else ""
                        bundle_id = f"{first.arm}-population-{tag}{first.number:04d}-{jobs[-1].number:04d}"
                        return self._start(
                            Job(bundle_id, first.arm, "search", -1, {}, None, members=jobs, repeat=rep.index)
                        )
                    self.queue.extend(jobs[1:])
                    return self._start(jobs[0])
            for state in self.arms.values():
                if not state.finals_queued and self._search_done(state):
                    state.finals_queued = True
                    self.queue.extend(self._final_jobs(state))
            if self.queue:
                return self._start(self.queue.popleft())
            if not self.running and all(s.finals_queued for s in self.arms.values()):
                return "FINISHED"
            return None

    def _start(self, job: Job) -> Job:
        if job.members is None and job.checkpoint is None and self.checkpoints is not None:
            job.checkpoint = self.checkpoints(job.trial_id)
            if job.checkpoint is not None:
                self.log(
                    f"{job.trial_id}: continues from the checkpoint of an interrupted run ({job.checkpoint})"
                )
        self.running[job.trial_id] = job
        return job

    # -- results -----------------------------------------------------------------------------------
    def finish(
        self,
        job: Job,
        status: str,
        records: list[dict[str, Any]],
        info: dict[str, Any],
        wall_s: float,
        message: str = "",
    ) -> float:
        """Record a finished job in the store (first) and in Optuna (second). Returns its objective."""
        with self.lock:
            self.running.pop(job.trial_id, None)
            obj = self.spec.objective
            value = (
                objective_value(records, obj.metric, obj.mode, obj.at) if status == "completed" else math.nan
            )
            arm = self.arms[job.arm].spec
            result = TrialResult(status=status, records=records, info=info, wall_s=wall_s, message=message)
            row = trial_row(
                study=self.spec.name,
                arm=job.arm,
                trial_id=job.trial_id,
                phase=job.phase,
                seed=job.seed,
                config=self.spec.trial_config(arm, job.params, job.seed),
                result=result,
                status=status,
                objective=value,
                optuna_number=job.number,
                params=job.params,
                message=message,
            )
            if "repeat" in TRIAL_COLUMNS:  # the search repeat of a search run (0 for final runs)
                row["repeat"] = job.repeat
            self.store.record_trial(row, records)
            faults.at_run_point(job.trial_id, "recorded")  # stored, Optuna not yet told
            self.done.add(job.trial_id)
            if job.phase == "search":
                rep = self.arms[job.arm].repeats[job.repeat]
                seeds = rep.open_trials.setdefault(job.number, {})
                ok = status == "completed" and math.isfinite(value)
                seeds[job.seed] = value if ok else None
                if not ok:
                    rep.open_status[job.number] = status
                self._maybe_tell(rep, job.number)
            return value

    def finish_population(
        self, bundle: Job, results: list[TrialResult] | None, message: str = ""
    ) -> Iterator[tuple[Job, str, float]]:
        """Record every member of a population job, one at a time.

        Args:
          bundle: the population job (its ``members``).
          results: one result per member, in order; None when the population failed (every member is
            recorded ``errored`` with ``message``).
          message: why the population failed.

        Yields:
          ``(member job, status, objective)`` after each member is recorded.
        """
        with self.lock:
            self.running.pop(bundle.trial_id, None)
            for i, job in enumerate(bundle.members or []):
                self.running[job.trial_id] = job
                if results is None:
                    status, value = "errored", self.finish(job, "errored", [], {}, math.nan, message)
                else:
                    r = results[i]
                    status = r.status
                    value = self.finish(job, r.status, r.records, r.info, r.wall_s, r.message)
                yield job, status, value

    def _maybe_tell(self, rep: _Repeat, number: int) -> None:
        seeds = rep.open_trials.get(number, {})
        if len(seeds) < len(self.spec.search.seeds):
            return
        status = rep.open_status.pop(number, "completed")
        values = list(seeds.values())
        if status == "completed" and all(v is not None for v in values):
            rep.study.tell(number, sum(values) / len(values))
        elif status == "stopped":
            rep.study.tell(number, state=TrialState.PRUNED)
        else:
            rep.study.tell(number, state=TrialState.FAIL)
        del rep.open_trials[number]

    # -- progress ----------------------------------------------------------------------------------
    def progress(self) -> dict[str, dict[str, Any]]:
        """Per arm: search trials told / budget, final runs done / planned, best value so far."""
        out = {}
        for name, st in self.arms.items():
            best = None
            vals = [
                t.value
                for rep in st.repeats
                for t in rep.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            ]
            if vals:
                best = min(vals) if self.spec.objective.mode == "min" else max(vals)
            told = st.asked - st.open_trials
            finals = sum(1 for s in self.spec.search.final_seeds if f"{name}-final-s{s}" in self.done)
            out[name] = {
                "search": told,
                "budget": st.budget,
                "final": finals,
                "finals": len(self.spec.search.final_seeds),
                "best": best,
            }
        return out
