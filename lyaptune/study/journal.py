"""The Optuna journal of a run directory, with an index of its unfinished trials.

Optuna's ``Study.ask`` looks for an enqueued trial on every ask by asking the storage for the study's
``WAITING`` trials, and Optuna's ``JournalStorage`` answers by passing over every trial of the study: at
10,000 trials that pass was a third of the driver's time (issue 22). :class:`IndexedJournalStorage` keeps,
per study, the ids of the trials not yet finished (``WAITING`` and ``RUNNING``) as the journal is
replayed, so a query for unfinished states reads only those; every other query is Optuna's own. Its
:meth:`~IndexedJournalStorage.get_recent_trials` answers TPE's window (``search.tpe_history``) from the
end of the study, in time that grows with the window, not with the study. The journal file and its format
are Optuna's (``optuna-dashboard`` opens it).
"""

from __future__ import annotations

import copy
from collections.abc import Container, Sequence
from pathlib import Path
from typing import Any

from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock
from optuna.storages.journal._storage import JournalStorageReplayResult
from optuna.trial import FrozenTrial, TrialState

__all__ = ["IndexedJournalStorage", "journal_storage", "recent_window"]

_FINISHED = tuple(s for s in TrialState if s.is_finished())


def recent_window(trials: Sequence[FrozenTrial], history: int) -> list[FrozenTrial]:
    """The last ``history`` trials of ``trials`` that are not running (by number), and every running one.

    TPE's window of a study (``search.tpe_history``, :class:`lyaptune.study.spaces.RecentHistoryTPESampler`):
    the running trials stay for TPE's constant liar. ``trials`` in number order; the answer keeps it.
    """
    done = [t for t in trials if t.state != TrialState.RUNNING]
    if len(done) <= history:
        return list(trials)
    keep = {t.number for t in done[-history:]}
    return [t for t in trials if t.state == TrialState.RUNNING or t.number in keep]


class _IndexedReplayResult(JournalStorageReplayResult):
    """Optuna's replay of a journal, plus study id -> ids of its unfinished trials (in creation order)."""

    def __init__(self, worker_id_prefix: str) -> None:
        super().__init__(worker_id_prefix)
        self._open: dict[int, dict[int, None]] = {}

    def _apply_create_trial(self, log: dict[str, Any]) -> None:
        ids = self._study_id_to_trial_ids.get(log["study_id"])
        before = len(ids) if ids is not None else 0
        super()._apply_create_trial(log)
        ids = self._study_id_to_trial_ids.get(log["study_id"])
        if ids is not None and len(ids) > before and not self._trials[ids[-1]].state.is_finished():
            self._open.setdefault(log["study_id"], {})[ids[-1]] = None

    def _apply_set_trial_state_values(self, log: dict[str, Any]) -> None:
        super()._apply_set_trial_state_values(log)
        trial_id = log["trial_id"]
        trial = self._trials.get(trial_id)
        if trial is not None and trial.state.is_finished():
            self._open.get(self._trial_id_to_study_id[trial_id], {}).pop(trial_id, None)

    def get_all_trials(self, study_id: int, states: Container[TrialState] | None) -> list[FrozenTrial]:
        if states is None or study_id not in self._studies or any(s in states for s in _FINISHED):
            return super().get_all_trials(study_id, states)
        trials = (self._trials[i] for i in self._open.get(study_id, {}))
        return [t for t in trials if t.state in states]

    def recent_trials(
        self, study_id: int, history: int, states: Container[TrialState] | None
    ) -> list[FrozenTrial]:
        """``recent_window(get_all_trials(study_id, states), history)``, read from the study's end."""
        if study_id not in self._studies:
            return super().get_all_trials(study_id, states)  # Optuna's KeyError
        ids = self._study_id_to_trial_ids[study_id]
        newest: list[FrozenTrial] = []
        done, i = 0, len(ids)
        while i and done < history:
            i -= 1
            trial = self._trials[ids[i]]
            if states is None or trial.state in states:
                newest.append(trial)
                done += trial.state != TrialState.RUNNING
        # before position i only running trials stay: all of them are in the index of unfinished ones
        running: list[FrozenTrial] = []
        if i and (states is None or TrialState.RUNNING in states):
            older = (self._trials[j] for j in self._open.get(study_id, {}) if j < ids[i])
            running = [t for t in older if t.state == TrialState.RUNNING]
        return running + newest[::-1]


class IndexedJournalStorage(JournalStorage):
    """Optuna's ``JournalStorage`` whose queries for unfinished trials (``states`` without a finished
    state, as ``Study.ask``'s look for enqueued trials) read an index of those trials, not every trial.

    Answers are Optuna's own, in the same order (tested against ``JournalStorage`` on the same journal).

    Args:
      log_storage: the journal backend (:func:`journal_storage` gives a run directory's).
    """

    def _sync_with_backend(self) -> None:
        # Optuna's __init__ and __setstate__ make a plain replay result and then sync: an empty one is
        # swapped for the indexed one before the first log is read (a snapshot's stays Optuna's)
        if (
            not isinstance(self._replay_result, _IndexedReplayResult)
            and not self._replay_result.log_number_read
        ):
            self._replay_result = _IndexedReplayResult(self._worker_id_prefix)
        super()._sync_with_backend()

    def get_recent_trials(
        self,
        study_id: int,
        history: int,
        states: Container[TrialState] | None = None,
        deepcopy: bool = True,
    ) -> list[FrozenTrial]:
        """The study's trials in ``states`` cut to TPE's window: :func:`recent_window` of them.

        Reads the study from its end until ``history`` trials that are not running are found, and the
        older running ones from the index: time in the window's size, not the study's.

        Args:
          study_id: the study's storage id.
          history: the window, in trials that are not running.
          states: the states to keep (``None``: all), as ``get_all_trials``'.
          deepcopy: copy the trials (``get_all_trials``' argument).

        Returns:
          The trials in number order, as ``recent_window(get_all_trials(study_id, states=states), history)``.
        """
        with self._thread_lock:
            self._sync_with_backend()
            replay = self._replay_result
            if isinstance(replay, _IndexedReplayResult):
                trials = replay.recent_trials(study_id, history, states)
            else:
                trials = recent_window(replay.get_all_trials(study_id, states), history)
            return copy.deepcopy(trials) if deepcopy else trials


def journal_storage(path: Path | str) -> JournalStorage:
    """The Optuna journal of a run directory (``optuna-dashboard <path>`` opens it)."""
    return IndexedJournalStorage(JournalFileBackend(str(path), lock_obj=JournalFileOpenLock(str(path))))
