"""The Optuna journal of a run directory, with an index of its unfinished trials.

Optuna's ``Study.ask`` looks for an enqueued trial on every ask by asking the storage for the study's
``WAITING`` trials, and Optuna's ``JournalStorage`` answers by passing over every trial of the study: at
10,000 trials that pass was a third of the driver's time (issue 22). :class:`IndexedJournalStorage` keeps,
per study, the ids of the trials not yet finished (``WAITING`` and ``RUNNING``) as the journal is
replayed, so a query for unfinished states reads only those; every other query is Optuna's own. The
journal file and its format are Optuna's (``optuna-dashboard`` opens it).
"""

from __future__ import annotations

from collections.abc import Container
from pathlib import Path
from typing import Any

from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock
from optuna.storages.journal._storage import JournalStorageReplayResult
from optuna.trial import FrozenTrial, TrialState

__all__ = ["IndexedJournalStorage", "journal_storage"]

_FINISHED = tuple(s for s in TrialState if s.is_finished())


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


def journal_storage(path: Path | str) -> JournalStorage:
    """The Optuna journal of a run directory (``optuna-dashboard <path>`` opens it)."""
    return IndexedJournalStorage(JournalFileBackend(str(path), lock_obj=JournalFileOpenLock(str(path))))
