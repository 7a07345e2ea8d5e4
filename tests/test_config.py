"""The one config model (issue 14 item 2): the task fields are defined and checked once
(lyaptune.config.TaskConfig) and used by the study spec's task and by a trial's config."""

from __future__ import annotations

import dataclasses
import pickle
import subprocess
import sys

import pytest

from lyaptune.config import TaskConfig
from lyaptune.errors import ConfigError
from lyaptune.population import SHARED_FIELDS
from lyaptune.study.spec import TaskSpec
from lyaptune.train import TrialConfig

TASK_FIELDS = [
    "dataset",
    "dataset_args",
    "data_root",
    "download",
    "model",
    "model_args",
    "init",
    "epochs",
    "batch_size",
    "validation_fraction",
    "data_seed",
    "device",
    "grad_noise",
    "eval_chunk_size",
]


def names(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def test_spec_task_and_trial_config_are_the_one_task_model() -> None:
    assert issubclass(TaskSpec, TaskConfig) and issubclass(TrialConfig, TaskConfig)
    assert names(TaskConfig) == TASK_FIELDS
    assert names(TaskSpec) == TASK_FIELDS
    run_fields = "optimizer optimizer_args schedule schedule_args schedule_per lipschitz seed".split()
    assert names(TrialConfig) == TASK_FIELDS + run_fields


def test_population_shares_every_task_field_but_gradient_noise() -> None:
    assert set(SHARED_FIELDS) == (set(TASK_FIELDS) - {"grad_noise"}) | {"schedule_per"}


def test_study_defaults_differ_from_trial_defaults_only_where_declared() -> None:
    task = TaskSpec(dataset="digits", model="fc", epochs=3)
    trial = TrialConfig(dataset="digits", model="fc", epochs=3)
    assert task.validation_fraction == 0.1 and trial.validation_fraction == 0.0
    assert task.to_dict() == {**trial.task_dict(), "validation_fraction": 0.1}
    with pytest.raises(ConfigError, match=r"^task\.dataset: required \(a dataset name, e\.g\. digits\)$"):
        TaskSpec.from_dict({"model": "fc", "epochs": 3})


GROWS = "(a batch that grows during the run: {schedule: list, sizes: [b0, b1, ...], epochs: [0, e1, ...]})"
BAD = [
    ("epochs", 0, "must be an integer >= 1, got 0"),
    ("epochs", 2.0, "must be an integer >= 1, got 2.0"),
    ("epochs", True, "must be an integer >= 1, got True"),
    ("batch_size", 0, f"must be a positive integer or 'full', got 0 {GROWS}"),
    ("batch_size", "half", f"must be a positive integer or 'full', got 'half' {GROWS}"),
    ("validation_fraction", 1.0, "must be a number in [0, 1), got 1.0"),
    ("validation_fraction", -0.1, "must be a number in [0, 1), got -0.1"),
    ("data_seed", -1, "must be an integer >= 0, got -1"),
    ("device", "tpu", "must be one of auto, cpu, cuda, cuda:N, mps; got 'tpu'"),
    ("grad_noise", -1.0, "must be a number >= 0, got -1.0"),
    (
        "grad_noise",
        "1e-3",
        "must be a number >= 0, got '1e-3' (YAML 1.1 reads 1e-3 as text: write it with a dot, e.g. 1.0e-03)",
    ),
    ("eval_chunk_size", 0, "must be an integer >= 1, got 0"),
    ("download", "yes", "must be true or false, got 'yes'"),
    ("data_root", 3, "must be a path (string), got 3"),
    ("model_args", [1], "must be a mapping, got list [1]"),
]


@pytest.mark.parametrize("name,value,detail", BAD, ids=[f"{n}={v!r}" for n, v, _ in BAD])
def test_one_check_per_field_same_message_in_spec_and_trial(name: str, value: object, detail: str) -> None:
    with pytest.raises(ConfigError) as trial_err:
        TrialConfig(**{name: value})
    assert str(trial_err.value) == f"{name}: {detail}"
    spec = {"dataset": "digits", "model": "fc", "epochs": 3, name: value}
    with pytest.raises(ConfigError) as spec_err:
        TaskSpec.from_dict(spec)
    assert str(spec_err.value) == f"task.{name}: {detail}"


def test_a_batch_that_grows_is_a_task_batch_size() -> None:
    grows = {"schedule": "list", "sizes": [16, 40, "full"], "epochs": [0, 2, 3]}
    task = TaskSpec.from_dict({"dataset": "digits", "model": "fc", "epochs": 4, "batch_size": grows})
    trial = TrialConfig(**task.to_dict())
    assert task.to_dict()["batch_size"] == trial.to_dict()["batch_size"] == grows
    assert pickle.loads(pickle.dumps(trial)) == trial and hash(trial) == hash(TrialConfig(**task.to_dict()))
    assert "batch_size" in SHARED_FIELDS  # members of a population step with one batch


def test_unknown_key_names_the_closest_and_all_choices() -> None:
    with pytest.raises(ConfigError) as err:
        TrialConfig.from_dict({"dataset": "digits", "epoch": 3})
    msg = str(err.value)
    assert msg.startswith("epoch: unknown trial config key 'epoch'; did you mean 'epochs'? choices: dataset,")
    assert msg.endswith("lipschitz, seed") and "\n" not in msg


def test_trial_config_is_frozen_hashable_and_pickles() -> None:
    c = TrialConfig(dataset="digits", optimizer_args={"betas": [0.9, 0.99]}, model_args={"width": 8})
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.epochs = 3  # type: ignore[misc]
    with pytest.raises(TypeError, match="read-only"):
        c.optimizer_args["lr"] = 1.0  # type: ignore[index]
    again = pickle.loads(pickle.dumps(c))
    assert again == c and hash(again) == hash(c) and type(again) is TrialConfig
    assert c.to_dict()["optimizer_args"] == {"betas": [0.9, 0.99]}
    assert TrialConfig.from_dict(c.to_dict()) == c


def test_replace_is_validated() -> None:
    c = TrialConfig(epochs=4)
    assert dataclasses.replace(c, epochs=2).epochs == 2 and c.replace(seed=5).seed == 5
    with pytest.raises(ConfigError, match=r"^epochs: must be an integer >= 1, got 0$"):
        c.replace(epochs=0)
    task = TaskSpec(dataset="digits", model="fc", epochs=3)
    with pytest.raises(ConfigError, match=r"^task\.epochs: must be an integer >= 1, got -2$"):
        task.replace(epochs=-2)


def test_building_a_task_config_imports_no_torch() -> None:
    code = (
        "import sys; from lyaptune.config import TaskConfig; "
        "TaskConfig(dataset='digits', epochs=2, batch_size=8); "
        "print(sorted(m for m in ('torch', 'lyaptune.optim', 'lyaptune.data') if m in sys.modules))"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


def test_lipschitz_options_have_one_check_for_the_trial_and_the_spec():
    """TrialConfig refuses what a spec's arm refuses (it once took ``samplez`` silently), and the
    option names are exactly estimate_lipschitz's keywords that a user sets."""
    import inspect

    from lyaptune.config import LIPSCHITZ_KEYS
    from lyaptune.lipschitz import estimate_lipschitz
    from lyaptune.study.spec import ArmSpec

    set_by_the_run = {"model_factory", "loss_fn", "data", "seed", "chunk_size", "device", "init", "progress"}
    keywords = set(inspect.signature(estimate_lipschitz).parameters) - set_by_the_run
    assert set(LIPSCHITZ_KEYS) == keywords
    bad = (
        ({"samplez": 3}, "lipschitz.samplez: unknown lipschitz key 'samplez'; did you mean 'samples'?"),
        ({"samples": 0}, "lipschitz.samples: must be an integer >= 1, got 0"),
        ({"weights": "uniform"}, "lipschitz.a: required with weights: uniform"),
        ({"batch": "half"}, "lipschitz.batch: must be a positive integer or 'full', got 'half'"),
    )
    for opts, message in bad:
        with pytest.raises(ConfigError) as trial:
            TrialConfig(lipschitz=opts)
        assert str(trial.value).startswith(message), str(trial.value)
        with pytest.raises(ConfigError) as arm:
            ArmSpec.from_dict(
                {"name": "d", "optimizer": "adam", "schedule": "derived-constant", "lipschitz": opts}
            )
        assert str(arm.value).startswith("arm." + message), str(arm.value)
    # the spec alone takes a multiplier (moved to schedule_args); a trial has it in schedule_args
    arm = ArmSpec.from_dict(
        {"name": "d", "optimizer": "adam", "schedule": "derived-constant", "lipschitz": {"multiplier": 2.0}}
    )
    assert arm.schedule_args["multiplier"] == 2.0 and not arm.lipschitz
    with pytest.raises(ConfigError, match="unknown lipschitz key 'multiplier'"):
        TrialConfig(lipschitz={"multiplier": 2.0})
    assert TrialConfig(lipschitz={"samples": 3, "weights": "uniform", "a": 0.5}).lipschitz["a"] == 0.5
