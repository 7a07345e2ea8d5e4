"""The run directory's Optuna journal with an index of unfinished trials (lyaptune.study.journal).

Every query is compared with Optuna's own ``JournalStorage`` replaying the same journal file.
"""

from __future__ import annotations

import itertools
import math

import optuna
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from lyaptune.study.journal import IndexedJournalStorage, journal_storage, recent_window
from lyaptune.study.spaces import RecentHistoryTPESampler

optuna.logging.set_verbosity(optuna.logging.WARNING)

_STATES = [None] + [tuple(c) for r in (1, 2) for c in itertools.combinations(list(TrialState), r)]


def _same(indexed: JournalStorage, plain: JournalStorage, study_id: int) -> None:
    for states in _STATES:
        got = indexed.get_all_trials(study_id, deepcopy=False, states=states)
        want = plain.get_all_trials(study_id, deepcopy=False, states=states)
        assert [(t.number, t.state, t.params, t.values) for t in got] == [
            (t.number, t.state, t.params, t.values) for t in want
        ], states


def _two_studies(path):
    """Two studies in one journal: enqueued, running (``held``), failed, pruned, late-told trials."""
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
    return storage, a, b, held


def test_unfinished_queries_agree_with_optunas_journal_storage(tmp_path):
    path = tmp_path / "optuna.journal"
    storage, a, b, held = _two_studies(path)
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


def _count_reads(study, monkeypatch) -> list[int]:
    """The ids of the trials the study's journal replay reads from now on (a counting dict)."""
    replay = study._storage._replay_result
    seen: list[int] = []

    class Counting(dict):
        def __getitem__(self, key):
            seen.append(key)
            return super().__getitem__(key)

    monkeypatch.setattr(replay, "_trials", Counting(replay._trials))
    return seen


def test_the_look_for_enqueued_trials_does_not_read_the_finished_ones(tmp_path, monkeypatch):
    study = optuna.create_study(study_name="s", storage=journal_storage(tmp_path / "j"))
    dist = {"x": optuna.distributions.FloatDistribution(0.0, 1.0)}
    study.add_trials([optuna.trial.create_trial(params={"x": 0.5}, distributions=dist, value=1.0)] * 500)
    seen = _count_reads(study, monkeypatch)
    assert study._pop_waiting_trial_id() is None
    assert seen == []  # Optuna's own JournalStorage reads all 500 trials here
    study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    assert len(seen) == 500  # a query for finished states is Optuna's own


def test_recent_window_by_hand():
    c, r, f, w = TrialState.COMPLETE, TrialState.RUNNING, TrialState.FAIL, TrialState.WAITING
    trials = [optuna.trial.FrozenTrial(n, st, None, None, None, {}, {}, {}, {}, {}, n) for n, st in
              enumerate([c, r, c, f, r, c, w, c])]  # fmt: skip
    numbers = lambda h: [t.number for t in recent_window(trials, h)]  # noqa: E731
    assert numbers(2) == [1, 4, 6, 7]  # the last two not running (6: waiting, 7) and both running ones
    assert numbers(4) == [1, 3, 4, 5, 6, 7]
    assert numbers(6) == numbers(100) == list(range(8))


def test_tpes_window_read_from_the_end_agrees_with_the_whole_study(tmp_path):
    path = tmp_path / "optuna.journal"
    storage, a, b, held = _two_studies(path)
    plain = JournalStorage(JournalFileBackend(str(path)))
    fresh = journal_storage(path)  # a resume's replay
    for study, states, history in itertools.product((a, b), _STATES, (1, 2, 5, 12, 100)):
        want = recent_window(plain.get_all_trials(study._study_id, states=states), history)
        for got in (
            storage.get_recent_trials(study._study_id, history, states),
            fresh.get_recent_trials(study._study_id, history, states, deepcopy=False),
        ):
            assert [(t.number, t.state) for t in got] == [(t.number, t.state) for t in want]


def test_tpes_window_reads_the_window_not_the_study(tmp_path, monkeypatch):
    study = optuna.create_study(study_name="s", storage=journal_storage(tmp_path / "j"))
    dist = {"x": optuna.distributions.FloatDistribution(0.0, 1.0)}
    running = study.ask(fixed_distributions=dist)  # left RUNNING, the study's first trial
    study.add_trials([optuna.trial.create_trial(params={"x": 0.5}, distributions=dist, value=1.0)] * 500)
    seen = _count_reads(study, monkeypatch)
    got = study._storage.get_recent_trials(study._study_id, 20, (TrialState.COMPLETE, TrialState.RUNNING))
    assert [t.number for t in got] == [running.number] + list(range(481, 501))
    assert len(seen) == 21  # the 20 newest and the running one, of 501


def test_tpe_on_the_journal_proposes_what_it_proposes_in_memory(tmp_path):
    dist = {
        "x": optuna.distributions.FloatDistribution(0.0, 1.0),
        "y": optuna.distributions.FloatDistribution(1e-3, 1.0, log=True),
    }
    studies = [
        optuna.create_study(study_name="s", storage=journal_storage(tmp_path / "j")),
        optuna.create_study(),
    ]
    proposals: list[list[dict]] = [[], []]
    for study, out in zip(studies, proposals):
        held = []
        for k in range(60):
            study.sampler = RecentHistoryTPESampler(history=12, seed=k)
            trial = study.ask(fixed_distributions=dist)
            out.append(trial.params)
            if k % 9 == 4:
                held.append(trial)  # running while later trials are asked
            else:
                study.tell(trial, (trial.params["x"] - 0.3) ** 2 + abs(math.log10(trial.params["y"]) + 1))
            if len(held) > 2:
                study.tell(held.pop(0), state=TrialState.FAIL)
    assert proposals[0] == proposals[1]
