"""Batch sizes fixed or growing within a run (papers/003 Section 5.3): values, steps, records, resume."""

import math

import pytest
import torch
from _hand_training import synthetic_config

from lyaptune.batching import batch_size_at, check_batch_size, steps_in_epoch
from lyaptune.engines import SingleModel
from lyaptune.errors import ConfigError
from lyaptune.loop import run_epochs

# 100 training examples: 125 less the 20% validation split
SYN = {"n_train": 125, "n_test": 30, "input_shape": (1, 4, 4), "num_classes": 3}
N_TRAIN = 100

GROWING = {"schedule": "list", "sizes": [500, 1000, 2500, 5000], "epochs": [0, 5, 10, 15]}
# on 100 examples: epochs 0-1 at 16 (ceil(100/16) = 7 steps), epoch 2 at 40 (3 steps), epoch 3 on
# the whole set (1 step)
SMALL = {"schedule": "list", "sizes": [16, 40, "full"], "epochs": [0, 2, 3]}


def config(batch_size, **kw):
    """A synthetic CPU trial with ``batch_size``, whatever the form (checked by ``TrialConfig``)."""
    base = dict(validation_fraction=0.2, optimizer="adam", optimizer_args={"lr": 1e-2}, epochs=4)
    base.update(kw)
    return synthetic_config(SYN, batch_size=batch_size, **base)


def test_a_trial_config_holds_a_growing_batch_frozen():
    c = config(SMALL)
    assert c.batch_size == {"schedule": "list", "sizes": (16, 40, "full"), "epochs": (0, 2, 3)}
    with pytest.raises(TypeError):
        c.batch_size["sizes"] = (1,)
    with pytest.raises(ConfigError, match=r"^batch_size\.epochs\[0\]: must be 0"):
        config({**SMALL, "epochs": [1, 2, 3]})


@pytest.mark.parametrize(
    ("epoch", "size"),
    [(0, 500), (4, 500), (5, 1000), (9, 1000), (10, 2500), (14, 2500), (15, 5000), (99, 5000)],
)
def test_batch_size_at_is_the_size_of_the_last_start_epoch_reached(epoch, size):
    assert batch_size_at(GROWING, epoch) == size


def test_a_fixed_batch_size_is_in_force_in_every_epoch():
    assert [batch_size_at(128, e) for e in (0, 1, 50)] == [128, 128, 128]
    assert [batch_size_at("full", e) for e in (0, 7)] == ["full", "full"]
    assert [batch_size_at(SMALL, e) for e in range(5)] == [16, 16, 40, "full", "full"]


def test_steps_in_epoch_are_ceil_of_examples_over_batch():
    # by hand: ceil(100 / 16) = 7, ceil(100 / 40) = 3, a full batch is one step
    assert [steps_in_epoch(SMALL, e, N_TRAIN) for e in range(4)] == [7, 7, 3, 1]
    assert steps_in_epoch(128, 0, N_TRAIN) == 1  # a batch at least the training set: one step
    assert steps_in_epoch(33, 3, N_TRAIN) == 4


def test_the_checked_growing_batch_is_frozen_and_pickles():
    import pickle

    checked = check_batch_size("task.batch_size", GROWING)
    assert checked == {"schedule": "list", "sizes": (500, 1000, 2500, 5000), "epochs": (0, 5, 10, 15)}
    assert pickle.loads(pickle.dumps(checked)) == checked
    hash(checked)
    with pytest.raises(TypeError):
        checked["sizes"] = (1,)
    assert check_batch_size("b", 64) == 64 and check_batch_size("b", "full") == "full"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (
            0,
            r"^task\.batch_size: must be a positive integer or 'full', got 0 \(a batch that grows during "
            r"the run: \{schedule: list, sizes: \[b0, b1, \.\.\.\], epochs: \[0, e1, \.\.\.\]\}\)$",
        ),
        (True, r"^task\.batch_size: must be a positive integer or 'full', got True \(a batch that grows"),
        ("half", r"^task\.batch_size: must be .*, got 'half' \("),
        (2.5, r"^task\.batch_size: must be .*, got 2\.5 \("),
        (
            {**GROWING, "every": 5},
            r"^task\.batch_size: unknown key 'every' .*known keys: schedule, sizes, epochs$",
        ),
        (
            {**GROWING, "schedule": "step"},
            r"^task\.batch_size\.schedule: must be one of list .*, got 'step'$",
        ),
        ({**GROWING, "sizes": []}, r"^task\.batch_size\.sizes: must be a non-empty list, got \[\]$"),
        ({**GROWING, "epochs": [0, 5]}, r"^task\.batch_size: sizes and epochs must have the same length"),
        ({**GROWING, "sizes": [500, 0, 2500, 5000]}, r"^task\.batch_size\.sizes\[1\]: .*got 0$"),
        (
            {**GROWING, "sizes": [500, 1000, 800, 5000]},
            r"^task\.batch_size\.sizes\[2\]: a growing batch never",
        ),
        ({**GROWING, "sizes": ["full", 1000, 2500, 5000]}, r"sizes\[1\]: a growing batch never shrinks"),
        ({**GROWING, "epochs": [1, 5, 10, 15]}, r"^task\.batch_size\.epochs\[0\]: must be 0 .*, got 1$"),
        (
            {**GROWING, "epochs": [0, 5, 5, 15]},
            r"^task\.batch_size\.epochs\[2\]: .*increase strictly: 5 follows 5",
        ),
        ({**GROWING, "epochs": [0, 5, -1, 15]}, r"^task\.batch_size\.epochs\[2\]: must be an epoch index"),
    ],
)
def test_a_bad_batch_size_is_one_line_naming_the_field_the_value_and_the_forms(value, message):
    with pytest.raises(ConfigError, match=message) as err:
        check_batch_size("task.batch_size", value)
    assert "\n" not in str(err.value)


def _count_updates(engine):
    """Record every optimizer step and the size of every training batch, independently of the loop."""
    steps, batches = [0], []
    engine.members[0].optimizer.register_step_post_hook(lambda *_: steps.__setitem__(0, steps[0] + 1))
    engine.model.register_forward_pre_hook(
        lambda module, args: batches.append(args[0].shape[0]) if module.training else None
    )
    return steps, batches


def test_a_growing_batch_takes_ceil_n_over_b_steps_in_each_epoch():
    engine = SingleModel(config(SMALL))
    assert len(engine.data.train) == N_TRAIN
    steps, batches = _count_updates(engine)
    per_epoch, cumulative = [], []

    def on_epoch(_i, rec):
        per_epoch.append(steps[0] - sum(per_epoch))
        cumulative.append(rec["step"])

    (outcome,) = run_epochs(engine, on_epoch=on_epoch)
    assert outcome.status == "completed"
    # by hand: ceil(100/16) = 7 (epochs 0, 1), ceil(100/40) = 3 (epoch 2), 1 full-batch step (epoch 3)
    assert per_epoch == [7, 7, 3, 1]
    assert cumulative == [7, 14, 17, 18]
    assert batches == [16] * 6 + [4] + [16] * 6 + [4] + [40, 40, 20] + [100]
    assert [r["batch_size"] for r in outcome.records] == [16.0, 16.0, 40.0, 100.0]
    assert outcome.info["total_steps"] == 18 and outcome.info["epoch_steps"] == [7, 7, 3, 1]
    assert outcome.info["steps_per_epoch"] is None


def test_a_fixed_batch_keeps_its_records_and_steps():
    engine = SingleModel(config(16, epochs=2))
    steps, batches = _count_updates(engine)
    (outcome,) = run_epochs(engine)
    assert steps[0] == 14 and [r["step"] for r in outcome.records] == [7, 14]
    assert batches == ([16] * 6 + [4]) * 2
    assert "batch_size" not in outcome.records[0]  # only a growing batch adds the field
    assert outcome.info["steps_per_epoch"] == 7 and outcome.info["total_steps"] == 14


def test_the_derived_step_counts_the_steps_of_a_growing_batch():
    c = config(SMALL, schedule="derived-constant", lipschitz={"samples": 1, "iters": 20})
    (outcome,) = run_epochs(SingleModel(c))
    info = outcome.info
    # alpha = sqrt(2 L(w0) / (K_hat T)) with T = 7 + 7 + 3 + 1 = 18 steps
    alpha = math.sqrt(2 * info["initial_loss"] / (info["k_hat"] * 18))
    assert info["derived_lr"] == pytest.approx(alpha, rel=1e-12)
    assert [r["lr"] for r in outcome.records] == pytest.approx([alpha] * 4, rel=1e-12)


def test_a_growing_batch_needs_a_per_epoch_schedule():
    with pytest.raises(
        ConfigError, match=r"schedule_per: a growing batch_size needs schedule_per 'epoch'.*'step'"
    ):
        SingleModel(config(SMALL, schedule="cosine", schedule_per="step"))


def _strip(records):
    return [{k: v for k, v in r.items() if k not in ("time_s", "eval_time_s")} for r in records]


@pytest.mark.parametrize("at", [1, 2, 3])
def test_resume_across_a_batch_change_is_bit_exact(at):
    """Checkpoints after epochs 1, 2, 3: the batch grows 16 -> 40 at epoch 2 and to the full set at 3."""
    c = config(SMALL, schedule="cosine", grad_noise=0.01)
    saved = []
    full_engine = SingleModel(c)
    (full,) = run_epochs(full_engine, on_checkpoint=saved.append, checkpoint_every=1)
    assert [s["epoch"] for s in saved] == [1, 2, 3, 4]

    engine = SingleModel(c)
    steps, batches = _count_updates(engine)
    (resumed,) = run_epochs(engine, resume_from=saved[at - 1])
    assert _strip(resumed.records) == _strip(full.records)
    for name, tensor in full_engine.model.state_dict().items():
        assert torch.equal(engine.model.state_dict()[name], tensor), name
    # only the epochs after the checkpoint ran, at their own batch sizes
    assert steps[0] == [11, 4, 1][at - 1]
    assert batches[: [7, 3, 1][at - 1]] == [[16] * 6 + [4], [40, 40, 20], [100]][at - 1]


def test_the_error_carries_its_path_for_a_parent_to_rebase():
    from lyaptune.batching import BatchSizeError

    with pytest.raises(BatchSizeError) as err:
        check_batch_size("", {**GROWING, "sizes": [500, 1000, 800, 5000]})
    assert err.value.path == "sizes[2]"
    assert str(err.value) == f"sizes[2]: {err.value.detail}"
    assert err.value.detail.startswith("a growing batch never shrinks: 800 follows 1000")
    with pytest.raises(BatchSizeError, match=r"^must be a positive integer or 'full', got -4 \(a batch"):
        check_batch_size("", -4)


def test_a_growing_batch_never_trains_in_a_vmapped_population():
    from lyaptune.population import population_incompatibility

    members = [config(SMALL), config(SMALL, seed=1)]
    assert population_incompatibility(members) == "population mode needs full-batch training"


def test_run_trial_reports_a_growing_batch_per_epoch():
    from lyaptune.train import run_trial

    result = run_trial(config(SMALL, epochs=3))
    assert result.status == "completed"
    assert [r["batch_size"] for r in result.records] == [16.0, 16.0, 40.0]
    assert [r["step"] for r in result.records] == [7, 14, 17]
    assert result.info["total_steps"] == 17


def test_epoch_steps_counts_the_horizon_t_by_hand():
    """T of papers/003's alpha: 100 examples, batch 30 -> ceil(100/30) = 4 steps an epoch; a batch
    growing from 30 to 50 at epoch 2 -> 4, 4, 2; 'full' -> 1 an epoch."""
    from lyaptune.batching import epoch_steps

    assert epoch_steps(30, 3, 100) == [4, 4, 4]
    assert epoch_steps({"schedule": "list", "sizes": [30, 50], "epochs": [0, 2]}, 3, 100) == [4, 4, 2]
    assert sum(epoch_steps("full", 5, 100)) == 5
    assert epoch_steps(500, 2, 100) == [1, 1]
