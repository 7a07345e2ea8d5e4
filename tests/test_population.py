"""Population mode: member i of a vmapped population reproduces its configuration trained alone."""

import pytest
import torch
from _hand_training import synthetic_config

from lyaptune.population import population_incompatibility, run_population
from lyaptune.train import run_trial

SYN = {"n_train": 120, "n_test": 60, "input_shape": (1, 6, 6), "num_classes": 4}


def cfg(**kw):
    base = dict(model_args={"depth": 2, "width": 16}, optimizer="adam", optimizer_args={}, epochs=4)
    base.update(kw)
    return synthetic_config(SYN, **base)


MEMBERS = [
    cfg(optimizer="adam", optimizer_args={"lr": 1e-2}),
    cfg(optimizer="adam", optimizer_args={"lr": 3e-3, "beta2": 0.99}, seed=1),
    cfg(optimizer="sgd", optimizer_args={"lr": 0.3, "momentum": 0.9}, schedule="cosine"),
    cfg(optimizer="lyam", optimizer_args={"lr": 0.05}, schedule="exponential", schedule_args={"gamma": 0.8}),
    cfg(optimizer="rlo-lifted", optimizer_args={"lr": 1e-2, "eta": 0.5}, seed=2),
    cfg(optimizer="expdecay-gradnorm", optimizer_args={"lr": 0.5, "decay": 0.1}),
    cfg(optimizer="sgd", optimizer_args={"lr": 0.1}, grad_noise=0.05, seed=3),
    cfg(optimizer="sgd", optimizer_args={"lr": 1e9}),  # diverges
]


def test_each_member_matches_its_single_trial():
    results = run_population(MEMBERS)
    assert len(results) == len(MEMBERS)
    for config, pop in zip(MEMBERS, results):
        alone = run_trial(config)
        assert pop.status == alone.status, config.optimizer
        assert [r["epoch"] for r in pop.records] == [r["epoch"] for r in alone.records]
        assert pop.info["initial_loss"] == pytest.approx(alone.info["initial_loss"], rel=1e-5)
        for a, b in zip(pop.records, alone.records):
            assert set(a) == set(b)
            for key in ("train_loss", "grad_norm", "val_loss", "test_loss", "lr", "lyapunov_drift"):
                if alone.status == "diverged" and a is pop.records[-1]:
                    continue
                torch.testing.assert_close(
                    a[key], b[key], rtol=2e-4, atol=1e-6, msg=f"{config.optimizer} {key}"
                )
            assert a["step"] == b["step"]


def test_incompatible_populations_say_why():
    assert population_incompatibility(MEMBERS) is None
    assert "epochs" in population_incompatibility([MEMBERS[0], cfg(epochs=5)])
    assert "full-batch" in population_incompatibility([cfg(batch_size=16)])
    assert "Lipschitz" in population_incompatibility([cfg(schedule="derived-constant")])
    with pytest.raises(ValueError, match="cannot train as a population"):
        run_population([MEMBERS[0], cfg(model_args={"depth": 1, "width": 16})])
