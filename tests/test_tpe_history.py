"""TPE over a window of its history (``search.tpe_history``, issue 22: a study's TPE time grew with the
square of its trials).

Checked against Optuna's own ``TPESampler``: with no more finished trials than the window the
proposals are Optuna's, step for step; beyond it, the proposal for trial k equals the one Optuna's TPE
makes, with the same seed, on a separate study that holds only the window's trials (copied).
"""

from __future__ import annotations

import math

import optuna
import pytest

from lyaptune.errors import ConfigError
from lyaptune.study.spaces import RecentHistoryTPESampler, make_sampler
from lyaptune.study.spec import StudySpec

optuna.logging.set_verbosity(optuna.logging.WARNING)

DISTS = {
    "lr": optuna.distributions.FloatDistribution(1e-4, 1e-1, log=True),
    "beta2": optuna.distributions.FloatDistribution(0.9, 0.9999),
    "width": optuna.distributions.IntDistribution(8, 64),
}


def objective(params: dict) -> float:
    return (math.log10(params["lr"]) + 2.5) ** 2 + (params["beta2"] - 0.99) ** 2 + params["width"] / 640


def run(study: optuna.Study, sampler_for, n: int) -> list[dict]:
    out = []
    for k in range(n):
        study.sampler = sampler_for(k)
        trial = study.ask(fixed_distributions=DISTS)
        study.tell(trial, objective(trial.params))
        out.append(trial.params)
    return out


def test_within_the_window_the_proposals_are_optunas():
    ours = run(optuna.create_study(), lambda k: RecentHistoryTPESampler(history=40, seed=k), 40)
    theirs = run(optuna.create_study(), lambda k: optuna.samplers.TPESampler(seed=k), 40)
    assert ours == theirs


def test_beyond_the_window_tpe_sees_only_the_last_trials():
    study = optuna.create_study()
    run(study, lambda k: RecentHistoryTPESampler(history=15, seed=k), 50)  # the window filled long ago
    for seed in (1, 2, 3):
        study.sampler = RecentHistoryTPESampler(history=15, seed=seed)
        ours = study.ask(fixed_distributions=DISTS)
        # Optuna's TPE on a study of the last 15 finished trials alone (copies, renumbered from 0)
        recent = optuna.create_study()
        for t in study.get_trials(states=[optuna.trial.TrialState.COMPLETE])[-15:]:
            recent.add_trial(
                optuna.trial.create_trial(params=t.params, distributions=t.distributions, value=t.value)
            )
        recent.sampler = optuna.samplers.TPESampler(seed=seed)
        theirs = recent.ask(fixed_distributions=DISTS)
        assert ours.params == theirs.params
        study.tell(ours, objective(ours.params))
    # and the full history would have proposed something else (the window matters)
    study.sampler = optuna.samplers.TPESampler(seed=4)
    full = study.ask(fixed_distributions=DISTS).params
    study.sampler = RecentHistoryTPESampler(history=15, seed=4)
    assert study.ask(fixed_distributions=DISTS).params != full


SPEC = {
    "name": "w",
    "task": {"dataset": "digits", "model": "fc", "epochs": 1},
    "arms": [
        {"name": "adam", "optimizer": "adam", "space": {"lr": {"low": 1e-4, "high": 1e-1, "log": True}}}
    ],
}


def test_the_spec_field_its_default_and_its_check():
    spec = StudySpec.from_dict(SPEC)
    assert spec.search.tpe_history == 1000
    sampler = make_sampler(spec.search, spec.arm("adam"), trial=3)
    assert isinstance(sampler, RecentHistoryTPESampler) and sampler._history == 1000
    every = StudySpec.from_dict({**SPEC, "search": {"tpe_history": None}})
    plain = make_sampler(every.search, every.arm("adam"), trial=3)
    assert type(plain) is optuna.samplers.TPESampler
    assert StudySpec.from_dict({**SPEC, "search": {"tpe_history": 10}}).search.tpe_history == 10
    for bad in (5, 2.5, "all", True):
        with pytest.raises(
            ConfigError, match=rf"^search\.tpe_history: must be an integer >= 10, got {bad!r}$"
        ):
            StudySpec.from_dict({**SPEC, "search": {"tpe_history": bad}})
