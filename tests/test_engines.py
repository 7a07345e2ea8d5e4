"""The one training loop over both engines: per-epoch metrics, cost sharing, checkpoints, passes."""

import math

import pytest
import torch
from _hand_training import hand_full_batch_sgd, synthetic_config

from lyaptune.engines import SingleModel, VmappedPopulation
from lyaptune.loop import register_epoch_metric, run_epochs, unregister_epoch_metric
from lyaptune.population import run_population
from lyaptune.train import RECORD_FIELDS, run_trial

SYN = {"n_train": 100, "n_test": 30, "input_shape": (1, 4, 4), "num_classes": 3}


def cfg(**kw):
    return synthetic_config(SYN, **kw)


def weight_norm(view):
    return torch.linalg.vector_norm(torch.stack([p.double().norm() for p in view.params.values()]))


def grad_max(view):
    return max(float(g.abs().max()) for g in view.grads.values())


@pytest.fixture
def registered():
    register_epoch_metric("weight_norm", weight_norm)
    try:
        yield
    finally:
        unregister_epoch_metric("weight_norm")


SGD_MEMBERS = [
    cfg(optimizer_args={"lr": 0.5}),
    cfg(optimizer_args={"lr": 0.1}, seed=1),
    cfg(optimizer_args={"lr": 0.3}, seed=2),
]


def test_a_registered_metric_is_in_a_single_run_and_in_every_population_member(registered):
    single = run_trial(SGD_MEMBERS[0], metrics={"grad_max": grad_max})
    population = run_population(SGD_MEMBERS, metrics={"grad_max": grad_max})
    for config, result in [(SGD_MEMBERS[0], single), *zip(SGD_MEMBERS, population)]:
        assert result.status == "completed"
        hand = hand_full_batch_sgd(config)
        assert len(result.records) == len(hand) == 3
        for rec, want in zip(result.records, hand):
            assert list(rec)[: len(RECORD_FIELDS)] == list(RECORD_FIELDS)
            assert rec["weight_norm"] == pytest.approx(want["weight_norm"], rel=1e-5)
            assert rec["grad_max"] == pytest.approx(want["grad_max"], rel=1e-3)
    # only registered metrics travel to other runs: the per-call one is gone
    assert "grad_max" not in run_trial(cfg(epochs=1)).records[0]


def test_metric_names_must_not_shadow_record_fields_or_repeat(registered):
    with pytest.raises(ValueError, match="would replace a record field"):
        register_epoch_metric("grad_norm", weight_norm)
    with pytest.raises(ValueError, match="already registered"):
        register_epoch_metric("weight_norm", weight_norm)
    with pytest.raises(ValueError, match="given twice"):
        run_trial(cfg(epochs=1), metrics={"weight_norm": weight_norm})
    with pytest.raises(ValueError, match="no epoch metric 'nope'"):
        unregister_epoch_metric("nope")


def test_population_members_are_charged_an_equal_share_of_its_wall_time():
    import time

    t0 = time.perf_counter()
    results = run_population(SGD_MEMBERS)
    outside = time.perf_counter() - t0
    P = len(SGD_MEMBERS)
    walls = {r.population_wall_s for r in results}
    assert len(walls) == 1
    wall = walls.pop()
    assert 0 < wall <= outside
    for r in results:
        assert r.population_size == P and r.info["population_size"] == P
        assert r.info["population_wall_s"] == wall
        assert r.wall_s == pytest.approx(wall / P, rel=1e-12)
        times = [rec["time_s"] for rec in r.records]
        assert times == sorted(times) and 0 < times[-1] <= r.wall_s
    # every member is charged the same share at every epoch
    assert len({tuple(rec["time_s"] for rec in r.records) for r in results}) == 1
    alone = run_trial(SGD_MEMBERS[0])
    assert alone.population_wall_s is None and alone.population_size is None
    assert "population_wall_s" not in alone.info


def _strip(records):
    """Records without the time, as text: repr is exact for floats and NaN equals NaN."""
    return repr([{k: v for k, v in r.items() if k not in ("time_s", "eval_time_s")} for r in records])


def test_population_checkpoint_resume_is_bit_exact():
    members = [
        cfg(optimizer="adam", optimizer_args={"lr": 1e-2}, epochs=4),
        cfg(optimizer="sgd", optimizer_args={"lr": 0.1}, grad_noise=0.05, seed=3, epochs=4),
        cfg(optimizer="lyam", optimizer_args={"lr": 0.05}, schedule="exponential", epochs=4),
        cfg(optimizer="sgd", optimizer_args={"lr": 1e9}, epochs=4),  # diverges before the checkpoint
    ]
    full = run_population(members)
    saved = []
    run_population(members, on_checkpoint=saved.append, checkpoint_every=2)
    assert [s["epoch"] for s in saved] == [2, 4]
    assert [m["status"] for m in saved[0]["members"]] == ["completed"] * 3 + ["diverged"]
    resumed = run_population(members, resume_from=saved[0])
    for a, b in zip(full, resumed):
        assert a.status == b.status
        assert _strip(a.records) == _strip(b.records)
    assert [r.status for r in full] == ["completed"] * 3 + ["diverged"]


def _count_train_set_passes(engine, n_train):
    """Hooks counting forward passes over the whole training set, with and without autograd."""
    counts = {"grad": 0, "no_grad": 0}

    def hook(_module, args, _out):
        if args[0].shape[0] == n_train:
            counts["grad" if torch.is_grad_enabled() else "no_grad"] += 1

    module = engine.model if isinstance(engine, SingleModel) else engine.base
    module.register_forward_hook(hook)
    return counts


@pytest.mark.parametrize("kind", ["single-fused", "single-unfused", "population"])
def test_full_batch_epoch_costs_one_forward_and_backward(kind):
    epochs = 5
    if kind == "population":
        engine = VmappedPopulation([cfg(epochs=epochs), cfg(epochs=epochs, seed=1)])
    else:
        engine = SingleModel(cfg(epochs=epochs))
        engine.fused = kind == "single-fused"
    # counted from here: L(w0) was measured when the engine was built
    n_train = len(engine.data.train)
    counts = _count_train_set_passes(engine, n_train)
    (first, *_) = run_epochs(engine)
    assert len(first.records) == epochs
    if engine.fused:
        # one pass per epoch's update, whose loss and gradient also end the previous epoch, + the last
        assert counts == {"grad": epochs + 1, "no_grad": 0}
    else:
        assert counts == {"grad": 2 * epochs, "no_grad": 0}


def test_derived_step_reports_progress_per_k_hat_sample():
    lines = []
    result = run_trial(
        cfg(
            optimizer="adam",
            optimizer_args={},
            schedule="derived-constant",
            lipschitz={"samples": 3, "iters": 30},
            epochs=2,
        ),
        progress=lines.append,
    )
    assert result.status == "completed"
    assert lines[0].startswith("estimating K_hat") and "3 weight samples" in lines[0]
    samples = [ln for ln in lines if ln.startswith("K_hat sample")]
    assert [ln.split(":")[0] for ln in samples] == [f"K_hat sample {j}/3" for j in (1, 2, 3)]
    assert lines[-1].startswith("K_hat = ") and "derived step alpha" in lines[-1]
    assert float(lines[-1].split()[2].rstrip(";")) == pytest.approx(result.info["k_hat"], rel=1e-5)
    # alpha = sqrt(2 L(w0) / (K_hat T)), T = epochs x 1 step (full batch)
    alpha = math.sqrt(2 * result.info["initial_loss"] / (result.info["k_hat"] * 2))
    assert result.records[0]["lr"] == pytest.approx(alpha, rel=1e-12)


def _saved_and_loaded(state, path):
    """A checkpoint as the Ray trainable keeps it: torch.save, then torch.load(weights_only=True)."""
    torch.save(state, path)
    return torch.load(path, weights_only=True, map_location="cpu")


def test_checkpoints_survive_a_file_round_trip_with_weights_only(tmp_path):
    single = cfg(
        optimizer="rlo-lifted",
        optimizer_args={"lr": 1e-2},
        schedule="cosine",
        batch_size=16,
        grad_noise=0.02,
        epochs=4,
    )
    saved = []
    full = run_trial(single, on_checkpoint=saved.append, checkpoint_every=2)
    assert saved[0]["records"] == saved[0]["members"][0]["records"]  # what the trainable reports
    state = _saved_and_loaded(saved[0], tmp_path / "single.pt")
    resumed = run_trial(single, resume_from=state)
    assert _strip(resumed.records) == _strip(full.records)

    members = [
        cfg(optimizer="adam", optimizer_args={"lr": 1e-2}, schedule="one-cycle", epochs=4),
        cfg(optimizer="expdecay-gradnorm", optimizer_args={"lr": 0.5, "decay": 0.1}, seed=1, epochs=4),
    ]
    saved = []
    full_pop = run_population(members, on_checkpoint=saved.append, checkpoint_every=3)
    state = _saved_and_loaded(saved[0], tmp_path / "population.pt")
    for a, b in zip(full_pop, run_population(members, resume_from=state)):
        assert _strip(a.records) == _strip(b.records)


def test_a_foreign_checkpoint_is_refused_with_what_is_missing():
    old_layout = {"model": {}, "optimizer": {}, "epoch": 2, "records": []}  # lyaptune before run_epochs
    with pytest.raises(ValueError, match="not a checkpoint of lyaptune.loop.run_epochs .no engine, step"):
        run_trial(cfg(epochs=1), resume_from=old_layout)
    state = []
    run_population(SGD_MEMBERS, on_checkpoint=state.append, checkpoint_every=1)
    with pytest.raises(ValueError, match="the checkpoint holds 3 members, this engine 2"):
        run_population(SGD_MEMBERS[:2], resume_from=state[0])
