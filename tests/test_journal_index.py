"""The run directory's Optuna journal with an index of unfinished trials (lyaptune.study.journal).

Every query is compared with Optuna's own ``JournalStorage`` replaying the same journal file.
"""

from __future__ import annotations

import itertools

import optuna
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from lyaptune.study.journal import IndexedJournalStorage, journal_storage

optuna.logging.set_verbosity(optuna.logging.WARNING)

_STATES = [None] + [tuple(c) for r in (1, 2) for c in itertools.combinations(list(TrialState), r)]


def _same(indexed: JournalStorage, plain: JournalStorage, study_id: int) -> None:
    for states in _STATES:
        got = indexed.get_all_trials(study_id, deepcopy=False, states=states)
        want = plain.get_all_trials(study_id, deepcopy=False, states=states)
        assert [(t.number, t.state, t.params, t.values) for t in got] == [
            (t.number, t.state, t.params, t.values) for t in want
        ], states


def test_unfinished_queries_agree_with_optunas_journal_storage(tmp_path):
    path = tmp_path / "optuna.journal"
    storage = journal_storage(path)
    assert isinstance(storage, IndexedJournalStorage)
    a = optuna.create_study(study_name="s/a", storage=storage, sampler=optuna.samplers.RandomSampler(0))
    b = optuna.create_study(study_name="s/b", storage=storage, sampler=optuna.samplers.RandomSampler(1))
    for x in (0.1, 0.2, 0.3):
        a.enqueue_trial({"x": x})
    dist = {"x": optuna.distributions.FloatDistribution(0.0, 1.0)}
    held = []
    for k in range(40):
        study = a if k % 3 else b
        trial = study.ask(fixed_distributions=dist)
        if k % 7 == 0:
            held.append((study, trial))  # left RUNNING
        elif k % 5 == 0:
            study.tell(trial, state=TrialState.FAIL)
        elif k % 11 == 0:
            study.tell(trial, state=TrialState.PRUNED)
        else:
            study.tell(trial, trial.params["x"])
    b.enqueue_trial({"x": 0.9})
    held[0][0].tell(held[0][1], 0.5)  # a RUNNING trial finished late
    plain = JournalStorage(JournalFileBackend(str(path)))
    for study in (a, b):
        _same(storage, plain, study._study_id)
    # a new process replaying the journal (a resume) builds the same index
    _same(journal_storage(path), plain, a._study_id)
    # the enqueued trials were popped first and in order; the one enqueued last is still waiting
    waiting = storage.get_all_trials(b._study_id, states=(TrialState.WAITING,))
    assert [t.system_attrs["fixed_params"] for t in waiting] == [{"x": 0.9}]
    firsts = sorted(a.get_trials(deepcopy=False), key=lambda t: t.number)[:3]
    assert [t.params["x"] for t in firsts] == [0.1, 0.2, 0.3]
    # the index holds exactly the unfinished trials
    index = {s: list(ids) for s, ids in storage._replay_result._open.items() if ids}
    want = {
        s._study_id: [t._trial_id for t in plain.get_all_trials(s._study_id) if not t.state.is_finished()]
        for s in (a, b)
    }
    assert index == {s: ids for s, ids in want.items() if ids}
    assert sum(len(ids) for ids in index.values()) == len(held) - 1 + 1  # held less the one told, + waiting


def test_a_writer_in_another_storage_is_seen_by_the_index(tmp_path):
    path = tmp_path / "optuna.journal"
    reader = journal_storage(path)
    writer = journal_storage(path)
    study = optuna.create_study(study_name="s", storage=writer)
    study.enqueue_trial({"x": 1.0})
    sid = optuna.load_study(study_name="s", storage=reader)._study_id
    assert len(reader.get_all_trials(sid, states=(TrialState.WAITING,))) == 1
    trial = study.ask()
    trial.suggest_float("x", 0, 2)
    assert reader.get_all_trials(sid, states=(TrialState.WAITING,)) == []
    assert [t.number for t in reader.get_all_trials(sid, states=(TrialState.RUNNING,))] == [0]
    study.tell(trial, 1.0)
    assert reader.get_all_trials(sid, states=(TrialState.RUNNING, TrialState.WAITING)) == []
    assert [t.value for t in reader.get_all_trials(sid, states=(TrialState.COMPLETE,))] == [1.0]


def test_the_look_for_enqueued_trials_does_not_read_the_finished_ones(tmp_path, monkeypatch):
    study = optuna.create_study(study_name="s", storage=journal_storage(tmp_path / "j"))
    dist = {"x": optuna.distributions.FloatDistribution(0.0, 1.0)}
    study.add_trials([optuna.trial.create_trial(params={"x": 0.5}, distributions=dist, value=1.0)] * 500)
    replay = study._storage._replay_result
    seen: list[int] = []

    class Counting(dict):
        def __getitem__(self, key):
            seen.append(key)
            return super().__getitem__(key)

    monkeypatch.setattr(replay, "_trials", Counting(replay._trials))
    assert study._pop_waiting_trial_id() is None
    assert seen == []  # Optuna's own JournalStorage reads all 500 trials here
    study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    assert len(seen) == 500  # a query for finished states is Optuna's own
