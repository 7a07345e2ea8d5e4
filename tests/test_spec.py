"""The study spec (lyaptune.study.spec) and the Optuna search spaces (lyaptune.study.spaces).

Fast, no Ray: specs are parsed from dicts and files written by the tests, spaces are sampled by a real
in-memory Optuna study.
"""

from __future__ import annotations

import copy
import importlib.util
import itertools
import math
import pickle
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml

from lyaptune.errors import ConfigError
from lyaptune.optim import get_optimizer_info, get_schedule_info
from lyaptune.study.check import check_study
from lyaptune.study.spaces import enqueue_grid, grid_search_space, make_sampler, suggest
from lyaptune.study.spec import (
    ArmSpec,
    ParamSpec,
    SearchSpec,
    StudySpec,
    TaskSpec,
    load_spec,
    resolve_spec_file,
)
from lyaptune.train import TrialConfig

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "experiments" / "quickstart.yaml"

optuna.logging.set_verbosity(optuna.logging.WARNING)


def base() -> dict[str, Any]:
    """The issue's quickstart spec, as the dict yaml.safe_load makes of it."""
    return {
        "name": "quickstart",
        "task": {
            "dataset": "digits",
            "model": "fc",
            "model_args": {"depth": 2, "width": 128},
            "epochs": 20,
            "batch_size": "full",
            "validation_fraction": 0.1,
        },
        "objective": {"metric": "val_loss", "mode": "min", "at": "final"},
        "search": {
            "sampler": "tpe",
            "trials_per_arm": 12,
            "seeds": [0],
            "final_seeds": [1, 2, 3],
            "scheduler": "none",
        },
        "resources": {"cpu": 1, "gpu": 0},
        "max_concurrent": 2,
        "arms": [
            {
                "name": "derived",
                "optimizer": "adam",
                "schedule": "derived-constant",
                "lipschitz": {"samples": 5},
            },
            {
                "name": "adam-exponential",
                "optimizer": "adam",
                "schedule": "exponential",
                "space": {
                    "lr": {"low": 1.0e-5, "high": 1.0e-1, "log": True},
                    "gamma": {"low": 0.8, "high": 0.999},
                },
            },
            {"name": "lyam", "optimizer": "lyam", "space": "default"},
        ],
    }


def with_arm(arm: dict[str, Any], **top: Any) -> StudySpec:
    d = base()
    d["arms"] = [arm]
    d.update(top)
    return check_study(StudySpec.from_dict(d))


# --------------------------------------------------------------------------------------------------
# Loading, round trip, defaults.


def test_quickstart_loads() -> None:
    spec = load_spec(QUICKSTART)
    assert spec.name == "quickstart"
    assert [a.name for a in spec.arms] == ["derived", "adam-exponential", "lyam"]
    assert spec.task.dataset == "digits" and spec.task.model == "fc"
    assert spec.objective.metric == "val_loss" and spec.objective.mode == "min"
    assert spec.search.final_seeds == (1, 2, 3)
    assert [spec.budget(a) for a in spec.arms] == [0, spec.search.trials_per_arm, spec.search.trials_per_arm]
    assert not spec.arms[0].is_searched and spec.arms[1].is_searched
    assert spec.arms[0].needs_lipschitz


def test_issue_spec_parses_as_written() -> None:
    spec = StudySpec.from_dict(base())
    adam_exp = spec.arm("adam-exponential")
    assert adam_exp.space["lr"] == ParamSpec.range(1e-5, 1e-1, log=True)
    assert adam_exp.space["gamma"] == ParamSpec.range(0.8, 0.999)
    assert spec.budget("adam-exponential") == 12 and spec.budget("derived") == 0


def test_round_trip_to_dict_from_dict_and_yaml() -> None:
    spec = StudySpec.from_dict(base())
    assert StudySpec.from_dict(spec.to_dict()) == spec
    again = StudySpec.from_dict(yaml.safe_load(spec.to_yaml()))
    assert again == spec
    assert again.to_dict() == spec.to_dict()
    # the resolved spec has no 'default' left in it
    assert isinstance(spec.to_dict()["arms"][2]["space"], dict)


def test_round_trip_through_a_file(tmp_path: Path) -> None:
    spec = load_spec(QUICKSTART)
    out = tmp_path / "spec.yaml"
    out.write_text(spec.to_yaml())
    assert load_spec(out) == spec


# Loading a stored spec is pure; the registry step is explicit (issue 14 item 2).
PURE_LOAD = """
import json, sys, types
import lyaptune
study = types.ModuleType("lyaptune.study")  # the spec modules without the package's __init__
study.__path__ = [sys.argv[1]]
sys.modules["lyaptune.study"] = study
from lyaptune.study.spec import load_spec
spec = load_spec(sys.argv[2])
heavy = ("torch", "torch.optim", "lyaptune.optim", "lyaptune.data", "lyaptune.models", "lyaptune.train")
print(json.dumps({"spec": spec.to_dict(), "heavy": sorted(m for m in heavy if m in sys.modules)}))
"""


def test_loading_a_stored_spec_imports_no_torch_and_builds_nothing(tmp_path: Path) -> None:
    """The spec modules on their own (lyaptune/study/__init__.py imports the runner, hence torch)."""
    import json
    import subprocess
    import sys

    spec = load_spec(QUICKSTART)
    stored = tmp_path / "spec.yaml"
    stored.write_text(spec.to_yaml())
    study_dir = REPO / "lyaptune" / "study"
    r = subprocess.run(
        [sys.executable, "-c", PURE_LOAD, str(study_dir), str(stored)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["heavy"] == []
    assert out["spec"] == json.loads(json.dumps(spec.to_dict()))


@pytest.mark.parametrize(
    ("arm", "path", "fragment"),
    [
        ({"name": "a", "optimizer": "adamm"}, "arms[0].optimizer", "did you mean 'adam'"),
        (
            {"name": "a", "optimizer": "adam", "space": {"betaa1": {"low": 0.8, "high": 0.99}}},
            "arms[0].space.betaa1",
            "did you mean 'beta1'",
        ),
        (
            {"name": "a", "optimizer": "adam", "space": {"lr": {"low": -1.0, "high": 0.1}}},
            "arms[0].space.lr",
            "bound -1.0 rejected",
        ),
    ],
)
def test_building_is_pure_and_check_is_the_registry_step(
    arm: dict[str, Any], path: str, fragment: str
) -> None:
    d = base()
    d["arms"] = [arm]
    d["reference"] = "none"
    spec = StudySpec.from_dict(d)  # shapes and values only: accepted
    with pytest.raises(ConfigError) as info:
        check_study(spec)
    message = str(info.value)
    assert message.startswith(path + ": ") and fragment in message, message


def test_spec_pickles_with_the_standard_library() -> None:
    spec = StudySpec.from_dict(base())
    assert pickle.loads(pickle.dumps(spec)) == spec


def test_default_space_for_lyam_is_the_registry_range() -> None:
    spec = StudySpec.from_dict(base())
    lyam = spec.arm("lyam")
    reg = get_optimizer_info("lyam").space
    assert "lr" in lyam.space
    lr = lyam.space["lr"]
    assert (lr.low, lr.high, lr.log) == (reg["lr"]["low"], reg["lr"]["high"], bool(reg["lr"].get("log")))
    # constant schedule: no rate constants, so exactly the optimizer's registry space
    assert set(lyam.space) == set(reg)


def test_default_space_of_a_derived_arm_has_no_lr() -> None:
    spec = with_arm({"name": "d", "optimizer": "adam", "schedule": "derived-constant", "space": "default"})
    arm = spec.arms[0]
    assert "lr" not in arm.space
    expected = (set(get_optimizer_info("adam").space) - {"lr"}) | set(
        get_schedule_info("derived-constant").space
    )
    assert set(arm.space) == expected
    assert "multiplier" in arm.space


def test_default_space_leaves_out_fixed_hyperparameters() -> None:
    spec = with_arm({"name": "l", "optimizer": "lyam", "optimizer_args": {"beta2": 0.99}, "space": "default"})
    assert "beta2" not in spec.arms[0].space and "beta1" in spec.arms[0].space
    spec = with_arm(
        {"name": "l", "optimizer": "lyam", "optimizer_args": {"betas": [0.9, 0.99]}, "space": "default"}
    )
    assert not {"beta1", "beta2"} & set(spec.arms[0].space)


def test_default_space_qualifies_a_name_both_take() -> None:
    # rlo-lifted's gamma (its lift) and the exponential schedule's gamma
    spec = with_arm({"name": "r", "optimizer": "rlo-lifted", "schedule": "exponential", "space": "default"})
    space = spec.arms[0].space
    assert "optimizer.gamma" in space and "schedule.gamma" in space and "gamma" not in space
    opt, sched = spec.arms[0].split_params({"optimizer.gamma": 2.0, "schedule.gamma": 0.95})
    assert opt["gamma"] == 2.0 and sched["gamma"] == 0.95


def test_fixed_values_in_a_space_move_to_the_args() -> None:
    spec = with_arm(
        {
            "name": "a",
            "optimizer": "adam",
            "schedule": "exponential",
            "space": {"lr": {"low": 1.0e-4, "high": 1.0e-2, "log": True}, "eps": 1.0e-7, "gamma": 0.9},
        }
    )
    arm = spec.arms[0]
    assert set(arm.space) == {"lr"}
    assert dict(arm.optimizer_args) == {"eps": 1e-7}
    assert dict(arm.schedule_args) == {"gamma": 0.9}


def test_lipschitz_multiplier_goes_to_schedule_args() -> None:
    spec = with_arm(
        {
            "name": "d2",
            "optimizer": "adam",
            "schedule": "derived-constant",
            "lipschitz": {"samples": 3, "multiplier": 2.0},
        }
    )
    arm = spec.arms[0]
    assert dict(arm.schedule_args) == {"multiplier": 2.0}
    assert dict(arm.lipschitz) == {"samples": 3}
    cfg = spec.trial_config(arm, {}, seed=1)
    assert dict(cfg.schedule_args) == {"multiplier": 2.0} and dict(cfg.lipschitz) == {"samples": 3}


def test_objective_mode_defaults_by_metric() -> None:
    d = base()
    d["objective"] = {"metric": "val_acc"}
    assert StudySpec.from_dict(d).objective.mode == "max"
    d["objective"] = {"metric": "grad_norm", "at": "best"}
    spec = StudySpec.from_dict(d)
    assert (spec.objective.mode, spec.objective.at) == ("min", "best")


def test_yaml_exponent_without_a_dot_reads_as_a_number(tmp_path: Path) -> None:
    text = QUICKSTART.read_text().replace("1.0e-5", "1e-5").replace("1.0e-1", "1e-1")
    assert "1e-5" in text
    path = tmp_path / "q.yaml"
    path.write_text(text)
    lr = load_spec(path).arm("adam-exponential").space["lr"]
    assert (lr.low, lr.high) == (1e-5, 0.1)


# --------------------------------------------------------------------------------------------------
# Arms: routing, grids, budgets, trial configs.


def test_split_params_routes_and_folds_nothing() -> None:
    arm = ArmSpec(name="a", optimizer="adam", schedule="exponential", optimizer_args={"eps": 1e-7})
    opt, sched = arm.split_params({"lr": 0.01, "gamma": 0.95, "beta2": 0.99})
    assert opt == {"eps": 1e-7, "lr": 0.01, "beta2": 0.99}
    assert sched == {"gamma": 0.95}
    assert "betas" not in opt
    # the fixed args of the arm are not changed by a split
    assert dict(arm.optimizer_args) == {"eps": 1e-7}


def test_split_params_rejects_unknown_names() -> None:
    arm = ArmSpec(name="a", optimizer="adam", schedule="exponential")
    with pytest.raises(ConfigError, match=r"params\.gama: .*did you mean 'gamma'"):
        arm.split_params({"gama": 0.9})


def test_grid_points_cartesian_order() -> None:
    arm = ArmSpec(name="g", optimizer="lyam", grid={"lr": [1e-3, 1e-2], "beta2": [0.9, 0.99, 0.999]})
    expected = [
        {"lr": 1e-3, "beta2": 0.9},
        {"lr": 1e-3, "beta2": 0.99},
        {"lr": 1e-3, "beta2": 0.999},
        {"lr": 1e-2, "beta2": 0.9},
        {"lr": 1e-2, "beta2": 0.99},
        {"lr": 1e-2, "beta2": 0.999},
    ]
    assert arm.grid_points() == expected
    assert arm.is_searched and arm.is_grid


def test_budget_of_each_kind_of_arm() -> None:
    d = base()
    d["arms"].append(
        {"name": "sweep", "optimizer": "lyam", "grid": {"lr": [1e-3, 1e-2, 1e-1], "beta2": [0.9, 0.99]}}
    )
    spec = StudySpec.from_dict(d)
    assert [spec.budget(a) for a in spec.arms] == [0, 12, 12, 6]


def test_grid_sampler_over_an_all_choices_space() -> None:
    d = base()
    d["search"]["sampler"] = "grid"
    d["arms"] = [
        {"name": "derived", "optimizer": "adam", "schedule": "derived-constant"},
        {
            "name": "c",
            "optimizer": "adam",
            "space": {"lr": {"choices": [1e-3, 1e-2]}, "amsgrad": {"choices": [True, False]}},
        },
    ]
    spec = StudySpec.from_dict(d)
    assert spec.budget("c") == 4 and spec.budget("derived") == 0
    assert grid_search_space(spec.arm("c")) == {"lr": [1e-3, 1e-2], "amsgrad": [True, False]}
    # a grid is enqueued in product order under a plain seeded sampler (spaces.enqueue_grid)
    study = optuna.create_study(sampler=make_sampler(spec.search, spec.arm("c")))
    assert enqueue_grid(study, spec.arm("c")) == 4
    expected = [{"lr": lr, "amsgrad": a} for lr in (1e-3, 1e-2) for a in (True, False)]
    got = []
    for _ in range(spec.budget("c")):
        trial = study.ask()
        got.append(suggest(trial, spec.arm("c").resolved_space()))
        study.tell(trial, 0.0)
    assert got == expected


def test_trial_config_merges_task_arm_and_params() -> None:
    d = base()
    d["arms"][1]["task"] = {"batch_size": 64, "init": "orthogonal"}
    d["arms"][1]["optimizer_args"] = {"eps": 1e-7}
    spec = StudySpec.from_dict(d)
    cfg = spec.trial_config("adam-exponential", {"lr": 0.003, "gamma": 0.95}, seed=7)
    assert isinstance(cfg, TrialConfig)
    assert (cfg.dataset, cfg.model, cfg.epochs, cfg.validation_fraction) == ("digits", "fc", 20, 0.1)
    assert dict(cfg.model_args) == {"depth": 2, "width": 128}
    assert (cfg.batch_size, cfg.init, cfg.seed) == (64, "orthogonal", 7)
    assert (cfg.optimizer, cfg.schedule, cfg.schedule_per) == ("adam", "exponential", "epoch")
    assert dict(cfg.optimizer_args) == {"eps": 1e-7, "lr": 0.003}
    assert dict(cfg.schedule_args) == {"gamma": 0.95}
    # the other arms keep the study's task
    other = spec.trial_config("lyam", {"lr": 0.01}, seed=0)
    assert (other.batch_size, other.init) == ("full", None)
    derived = spec.trial_config("derived", {}, seed=2)
    assert dict(derived.lipschitz) == {"samples": 5} and derived.schedule == "derived-constant"


def test_smoke_shrinks_the_study() -> None:
    d = base()
    d["search"]["final_seeds"] = [5, 6, 7]
    d["search"]["seeds"] = [3, 4]
    d["arms"].append(
        {"name": "sweep", "optimizer": "lyam", "grid": {"lr": [1e-3, 1e-2, 1e-1], "beta2": [0.9, 0.99]}}
    )
    spec = StudySpec.from_dict(d)
    small = spec.smoke()
    assert small.search.trials_per_arm == 2
    assert small.task.epochs == 2
    assert small.search.final_seeds == (5,)
    assert small.search.seeds == (3,)
    assert small.arm("sweep").grid_points() == spec.arm("sweep").grid_points()[:2]
    assert [small.budget(a) for a in small.arms] == [0, 2, 2, 2]
    assert small.arm("derived").lipschitz["samples"] == 2
    # what is not shrunk stays
    assert small.arm("adam-exponential").space == spec.arm("adam-exponential").space
    assert small.task.model_args == spec.task.model_args and small.name == spec.name
    # no final seeds -> the seed after the (cut) search seed 3, never a search seed
    d["search"]["final_seeds"] = []
    assert StudySpec.from_dict(d).smoke().search.final_seeds == (4,)


def test_smoke_cuts_a_grid_whose_last_list_has_one_value() -> None:
    arm = {"name": "g", "optimizer": "lyam", "grid": {"lr": [1e-3, 1e-2, 1e-1], "beta2": [0.99]}}
    spec = with_arm(arm)
    assert spec.smoke().arms[0].grid_points() == [{"lr": 1e-3, "beta2": 0.99}, {"lr": 1e-2, "beta2": 0.99}]


def test_task_spec_direct_construction() -> None:
    task = TaskSpec(dataset="digits", model="fc", epochs=3)
    assert (task.batch_size, task.validation_fraction, task.device) == ("full", 0.1, "auto")
    with pytest.raises(ConfigError, match=r"^task\.epochs: must be an integer >= 1, got 0$"):
        task.replace(epochs=0)


# --------------------------------------------------------------------------------------------------
# Malformed specs: each error starts with the field path, is one line, and names the bad value.


def _set(path: str, value: Any):
    """A mutation setting ``path`` (dots and [i]) in the base dict; value ``...`` deletes it."""

    def mutate(d: dict[str, Any]) -> None:
        keys: list[Any] = []
        for part in path.split("."):
            name, _, rest = part.partition("[")
            if name:
                keys.append(name)
            if rest:
                keys.append(int(rest.rstrip("]")))
        obj = d
        for k in keys[:-1]:
            obj = obj[k]
        if value is ...:
            del obj[keys[-1]]
        else:
            obj[keys[-1]] = value

    return mutate


BAD_SPECS = [
    # (id, mutation, field path, a fragment of the message)
    (
        "unknown-optimizer",
        _set("arms[2].optimizer", "lyamm"),
        "arms[2].optimizer",
        "unknown optimizer 'lyamm'; did you mean 'lyam'?",
    ),
    (
        "unknown-schedule",
        _set("arms[1].schedule", "exponentail"),
        "arms[1].schedule",
        "did you mean 'exponential'?",
    ),
    (
        "unknown-hyperparameter-in-space",
        _set("arms[1].space.lrr", {"low": 1.0e-4, "high": 1.0e-2}),
        "arms[1].space.lrr",
        "arm 'adam-exponential'",
    ),
    (
        "unknown-hyperparameter-fixed",
        _set("arms[2].optimizer_args", {"beta4": 0.9}),
        "arms[2].optimizer_args.beta4",
        "optimizer 'lyam'",
    ),
    (
        "unknown-schedule-parameter",
        _set("arms[1].schedule_args", {"k": 0.1}),
        "arms[1].schedule_args.k",
        "schedule 'exponential'",
    ),
    (
        "low-above-high",
        _set("arms[1].space.lr", {"low": 0.1, "high": 0.01}),
        "arms[1].space.lr",
        "low (0.1) > high (0.01)",
    ),
    (
        "log-with-zero-low",
        _set("arms[1].space.lr", {"low": 0.0, "high": 0.1, "log": True}),
        "arms[1].space.lr.low",
        "must be > 0 with log: true, got 0.0",
    ),
    (
        "log-with-negative-low",
        _set("arms[1].space.lr", {"low": -1.0, "high": 0.1, "log": True}),
        "arms[1].space.lr.low",
        "got -1.0",
    ),
    (
        "range-key-misspelt",
        _set("arms[1].space.lr", {"low": 1.0e-4, "hgih": 0.1}),
        "arms[1].space.lr.hgih",
        "did you mean 'high'?",
    ),
    (
        "range-bound-a-string",
        _set("arms[1].space.lr", {"low": "1e-4", "high": 0.1}),
        "arms[1].space.lr.low",
        "write it with a dot",
    ),
    (
        "empty-choices",
        _set("arms[2].space", {"lr": {"choices": []}}),
        "arms[2].space.lr.choices",
        "must be a non-empty list",
    ),
    (
        "choices-of-lists",
        _set("arms[2].space", {"betas": {"choices": [[0.9, 0.99]]}}),
        "arms[2].space.betas.choices[0]",
        "beta1, beta2",
    ),
    ("space-not-default", _set("arms[2].space", "defualt"), "arms[2].space", "'default' or a mapping"),
    ("empty-arm-list", _set("arms", []), "arms", "must be a non-empty list"),
    ("no-arms", _set("arms", ...), "arms", "must be a non-empty list"),
    ("duplicate-arm-names", _set("arms[2].name", "derived"), "arms[2].name", "duplicate arm name 'derived'"),
    ("bad-arm-name", _set("arms[1].name", "adam exp!"), "arms[1].name", "[A-Za-z0-9_.-]+"),
    ("arm-name-dots", _set("arms[1].name", ".."), "arms[1].name", "only dots"),
    ("bad-study-name", _set("name", "../escape"), "name", "'../escape'"),
    ("missing-optimizer", _set("arms[1].optimizer", ...), "arms[1].optimizer", "required"),
    (
        "negative-budget",
        _set("search.trials_per_arm", -3),
        "search.trials_per_arm",
        "must be an integer >= 1, got -3",
    ),
    ("budget-a-float", _set("search.trials_per_arm", 2.5), "search.trials_per_arm", "got 2.5"),
    ("misspelt-top-level-key", _set("max_concurent", 2), "max_concurent", "did you mean 'max_concurrent'?"),
    ("misspelt-task-key", _set("task.epoch", 5), "task.epoch", "did you mean 'epochs'?"),
    ("misspelt-arm-key", _set("arms[1].shedule", "cosine"), "arms[1].shedule", "did you mean 'schedule'?"),
    ("misspelt-search-key", _set("search.trials", 5), "search.trials", "unknown search key 'trials'"),
    (
        "bad-sampler",
        _set("search.sampler", "tpee"),
        "search.sampler",
        "unknown sampler 'tpee'; did you mean 'tpe'?",
    ),
    ("bad-scheduler", _set("search.scheduler", "hyperband"), "search.scheduler", "choices: none, asha"),
    (
        "test-metric-objective",
        _set("objective.metric", "test_acc"),
        "objective.metric",
        "tuning never looks at test",
    ),
    ("unknown-metric", _set("objective.metric", "val_los"), "objective.metric", "did you mean 'val_loss'?"),
    ("bad-mode", _set("objective.mode", "minimize"), "objective.mode", "unknown mode 'minimize'"),
    ("mode-against-metric", _set("objective.mode", "max"), "objective.mode", "worst configuration"),
    ("bad-at", _set("objective.at", "last"), "objective.at", "choices: final, best"),
    ("epochs-zero", _set("task.epochs", 0), "task.epochs", "must be an integer >= 1, got 0"),
    ("batch-size-zero", _set("task.batch_size", 0), "task.batch_size", "got 0"),
    (
        "batch-size-huge",
        _set("task.batch_size", "huge"),
        "task.batch_size",
        "a positive integer or 'full', got 'huge'",
    ),
    (
        "validation-fraction",
        _set("task.validation_fraction", 1.5),
        "task.validation_fraction",
        "[0, 1), got 1.5",
    ),
    (
        "no-validation-for-val-objective",
        _set("task.validation_fraction", 0.0),
        "task.validation_fraction",
        "needs a validation split",
    ),
    ("unknown-dataset", _set("task.dataset", "digit"), "task.dataset", "did you mean 'digits'?"),
    ("unknown-model", _set("task.model", "fcc"), "task.model", "'fcc'"),
    (
        "unknown-model-arg",
        _set("task.model_args", {"depht": 2}),
        "task.model_args.depht",
        "did you mean 'depth'?",
    ),
    ("bad-device", _set("task.device", "gpu"), "task.device", "got 'gpu'"),
    ("cuda-without-gpu", _set("task.device", "cuda"), "task.device", "resources.gpu > 0"),
    ("task-not-mapping", _set("task", [1, 2]), "task", "must be a mapping"),
    ("task-missing-dataset", _set("task.dataset", ...), "task.dataset", "required"),
    ("cpu-zero", _set("resources.cpu", 0), "resources.cpu", "must be a positive number, got 0"),
    ("gpu-negative", _set("resources.gpu", -1), "resources.gpu", "must be a number >= 0, got -1"),
    ("gpu-fraction-above-one", _set("resources.gpu", 1.5), "resources.gpu", "whole number"),
    ("max-concurrent-zero", _set("max_concurrent", 0), "max_concurrent", "must be an integer >= 1, got 0"),
    ("checkpoint-every-negative", _set("checkpoint_every", -1), "checkpoint_every", "got -1"),
    ("max-failures-negative", _set("max_failures", -2), "max_failures", "got -2"),
    (
        "lipschitz-on-non-derived",
        _set("arms[1].lipschitz", {"samples": 3}),
        "arms[1].lipschitz",
        "only for a schedule",
    ),
    (
        "lipschitz-key-misspelt",
        _set("arms[0].lipschitz", {"samplez": 3}),
        "arms[0].lipschitz.samplez",
        "did you mean 'samples'?",
    ),
    (
        "lipschitz-samples-zero",
        _set("arms[0].lipschitz", {"samples": 0}),
        "arms[0].lipschitz.samples",
        "got 0",
    ),
    (
        "lipschitz-bad-weights",
        _set("arms[0].lipschitz", {"weights": "gauss"}),
        "arms[0].lipschitz.weights",
        "normal, init, uniform",
    ),
    (
        "derived-searching-lr",
        _set("arms[0].space", {"lr": {"low": 1.0e-4, "high": 0.1, "log": True}}),
        "arms[0].space.lr",
        "computes lr",
    ),
    (
        "derived-fixing-lr",
        _set("arms[0].optimizer_args", {"lr": 0.01}),
        "arms[0].optimizer_args.lr",
        "computes lr",
    ),
    (
        "final-seeds-not-a-list",
        _set("search.final_seeds", 3),
        "search.final_seeds",
        "must be a list of integers, got 3",
    ),
    ("seeds-empty", _set("search.seeds", []), "search.seeds", "non-empty list"),
    ("seeds-repeated", _set("search.seeds", [1, 1]), "search.seeds", "distinct"),
    ("seed-not-int", _set("search.seeds", [0, "one"]), "search.seeds[1]", "got 'one'"),
    (
        "bound-rejected-by-optimizer",
        _set("arms[1].space.beta2", {"low": 0.9, "high": 1.5}),
        "arms[1].space.beta2",
        "bound 1.5 rejected by optimizer 'adam'",
    ),
    (
        "bound-rejected-by-schedule",
        _set("arms[1].space.gamma", {"low": 0.8, "high": 1.5}),
        "arms[1].space.gamma",
        "bound 1.5 rejected: schedule 'exponential': gamma must be in (0, 1]",
    ),
    (
        "fixed-value-rejected",
        _set("arms[2].optimizer_args", {"lr": -1.0}),
        "arms[2].optimizer_args",
        "rejected by optimizer 'lyam'",
    ),
    (
        "fixed-and-searched",
        _set("arms[1].optimizer_args", {"lr": 0.01}),
        "arms[1].space.lr",
        "also fixed in optimizer_args",
    ),
    ("arm-task-override-bad", _set("arms[1].task", {"batch_size": 0}), "arms[1].task.batch_size", "got 0"),
    (
        "arm-task-override-unknown",
        _set("arms[1].task", {"epoch": 3}),
        "arms[1].task.epoch",
        "did you mean 'epochs'?",
    ),
    ("grid-sampler-on-a-range", _set("search.sampler", "grid"), "arms[1].space.lr", "sampler 'grid'"),
    ("grid-empty-list", _set("arms[2].grid", {"lr": []}), "arms[2].grid.lr", "non-empty list"),
    ("space-and-grid", _set("arms[1].grid", {"lr": [0.1]}), "arms[1]", "both a space and a grid"),
    ("schedule-per", _set("arms[1].schedule_per", "batch"), "arms[1].schedule_per", "choices: epoch, step"),
    (
        "ambiguous-name",
        _set(
            "arms[1]",
            {
                "name": "r",
                "optimizer": "rlo",
                "schedule": "step",
                "space": {"gamma": {"low": 0.1, "high": 0.5}},
            },
        ),
        "arms[1].space.gamma",
        "write optimizer.gamma or schedule.gamma",
    ),
]


BAD_SPECS += [
    (
        "final-seeds-overlap-search-seeds",
        _set("search.final_seeds", [0, 1, 2]),
        "search.final_seeds",
        "final seeds [0, 1, 2] overlap the search seeds [0] (search.seeds) in [0]",
    ),
    (
        "final-seeds-overlap-several",
        lambda d: d["search"].update(seeds=[3, 4], final_seeds=[4, 5, 6, 3]),
        "search.final_seeds",
        "final seeds [4, 5, 6, 3] overlap the search seeds [3, 4] (search.seeds) in [3, 4]",
    ),
    ("repeats-zero", _set("search.repeats", 0), "search.repeats", "integer >= 1, got 0"),
    (
        "compare-unknown-metric",
        _set("compare", {"metric": "final_acc"}),
        "compare.metric",
        "unknown compare metric 'final_acc'; did you mean 'final_val_acc'? choices: final_train_loss, "
        "final_train_acc, final_grad_norm, final_val_loss, final_val_acc, final_test_loss, final_test_acc",
    ),
    (
        "compare-bare-field-name",
        _set("compare", [{"metric": "final_grad_norm"}, {"metric": "test_acc"}]),
        "compare[1].metric",
        "write the final-epoch value as 'final_test_acc', got 'test_acc'",
    ),
    (
        "compare-mode-against-metric",
        _set("compare", {"metric": "final_test_acc", "mode": "min"}),
        "compare.mode",
        "'min' with metric 'final_test_acc' would rank the worst arm first; use 'max'",
    ),
    (
        "compare-bad-mode",
        _set("compare", {"metric": "final_grad_norm", "mode": "low"}),
        "compare.mode",
        "min, max",
    ),
    ("compare-no-metric", _set("compare", {"mode": "min"}), "compare.metric", "required"),
    (
        "compare-unknown-key",
        _set("compare", {"metric": "final_grad_norm", "at": "final"}),
        "compare.at",
        "metric",
    ),
    ("compare-empty-list", _set("compare", []), "compare", "non-empty list"),
    (
        "compare-twice",
        _set("compare", [{"metric": "final_grad_norm"}, {"metric": "final_grad_norm", "mode": "min"}]),
        "compare[1].metric",
        "listed twice",
    ),
    (
        "reference-unknown-arm",
        _set("reference", "lyamm"),
        "reference",
        "unknown reference arm 'lyamm'; did you mean 'lyam'? choices: derived, adam-exponential, lyam, none",
    ),
]


def test_bad_spec_table_is_large_enough() -> None:
    assert len(BAD_SPECS) >= 25
    assert len({case[0] for case in BAD_SPECS}) == len(BAD_SPECS)


@pytest.mark.parametrize(
    ("mutate", "path", "fragment"), [c[1:] for c in BAD_SPECS], ids=[c[0] for c in BAD_SPECS]
)
def test_bad_spec(mutate, path: str, fragment: str) -> None:
    d = copy.deepcopy(base())
    mutate(d)
    with pytest.raises(ConfigError) as info:
        check_study(StudySpec.from_dict(d))
    message = str(info.value)
    assert message.startswith(path + ": "), message
    assert fragment in message, message
    assert "\n" not in message


def test_spec_not_a_mapping() -> None:
    with pytest.raises(ConfigError, match="must be a mapping"):
        StudySpec.from_dict([1, 2, 3])


@pytest.mark.skipif(importlib.util.find_spec("cmaes") is not None, reason="cmaes is installed here")
def test_cmaes_without_the_package_says_how_to_install() -> None:
    d = base()
    d["search"]["sampler"] = "cmaes"
    with pytest.raises(ConfigError, match=r"^search\.sampler: .*pip install cmaes"):
        StudySpec.from_dict(d)


# --------------------------------------------------------------------------------------------------
# Files.


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match="no such spec file") as info:
        load_spec(path)
    assert str(path) in str(info.value)


def test_yaml_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("name: x\ntask: {dataset: digits, model: fc\narms: []\n")
    with pytest.raises(ConfigError) as info:
        load_spec(path)
    message = str(info.value)
    assert message.startswith(f"{path}: YAML syntax error at line ")
    assert "\n" not in message


def test_not_a_mapping_file(tmp_path: Path) -> None:
    path = tmp_path / "list.yaml"
    path.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match=r"must be a YAML mapping .* got list") as info:
        load_spec(path)
    assert str(info.value).startswith(str(path))


def test_duplicate_key_in_file(tmp_path: Path) -> None:
    path = tmp_path / "dup.yaml"
    path.write_text(QUICKSTART.read_text() + "max_concurrent: 4\n")
    with pytest.raises(ConfigError, match=r"duplicate key 'max_concurrent'"):
        load_spec(path)


def test_directory_instead_of_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is a directory"):
        load_spec(tmp_path)


def test_yaml_python_tags_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.yaml"
    path.write_text("name: !!python/object/apply:os.system ['true']\n")
    with pytest.raises(ConfigError, match="YAML syntax error"):
        load_spec(path)


# --------------------------------------------------------------------------------------------------
# Search spaces with a real Optuna study.


def test_param_spec_forms() -> None:
    assert ParamSpec.parse({"low": 1, "high": 8, "type": "int", "step": 1}) == ParamSpec.range(
        1, 8, type="int", step=1
    )
    assert ParamSpec.parse({"choices": ["sign", "tanh"]}).choices == ("sign", "tanh")
    fixed = ParamSpec.parse([0.9, 0.99])
    assert fixed.kind == "fixed" and fixed.value == (0.9, 0.99) and fixed.to_yaml() == [0.9, 0.99]
    assert ParamSpec.parse(ParamSpec.range(0.1, 0.2).to_yaml()) == ParamSpec.range(0.1, 0.2)
    with pytest.raises(ConfigError, match=r"^param\.low: must be an integer, got 1.5$"):
        ParamSpec.range(1.5, 3, type="int")


def test_suggest_values_in_range_and_of_the_right_type() -> None:
    space = {
        "lr": ParamSpec.range(1e-5, 1e-1, log=True),
        "gamma": ParamSpec.range(0.8, 0.999),
        "width": ParamSpec.range(16, 128, type="int", step=16),
        "k": ParamSpec.range(1, 1000, type="int", log=True),
        "q": ParamSpec.range(0.0, 1.0, step=0.25),
        "direction": ParamSpec.categorical(["sign", "tanh"]),
        "eps": ParamSpec.fixed(1e-8),
    }
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen_dirs = set()
    for _ in range(40):
        trial = study.ask()
        p = suggest(trial, space)
        assert list(p) == list(space)
        assert isinstance(p["lr"], float) and 1e-5 <= p["lr"] <= 1e-1
        assert isinstance(p["gamma"], float) and 0.8 <= p["gamma"] <= 0.999
        assert type(p["width"]) is int and 16 <= p["width"] <= 128 and p["width"] % 16 == 0
        assert type(p["k"]) is int and 1 <= p["k"] <= 1000
        assert p["q"] in (0.0, 0.25, 0.5, 0.75, 1.0)
        assert p["direction"] in ("sign", "tanh")
        seen_dirs.add(p["direction"])
        assert p["eps"] == 1e-8
        # a fixed value is not a suggestion
        assert set(trial.params) == set(space) - {"eps"}
        study.tell(trial, p["lr"])
    assert seen_dirs == {"sign", "tanh"}
    # log scale: about half of 40 log-uniform draws in [1e-5, 1e-1] fall below the geometric mean 1e-3
    below = sum(t.params["lr"] < 1e-3 for t in study.trials)
    assert 8 <= below <= 32
    dist = study.trials[0].distributions
    assert isinstance(dist["lr"], optuna.distributions.FloatDistribution) and dist["lr"].log
    assert isinstance(dist["width"], optuna.distributions.IntDistribution) and dist["width"].step == 16


def test_grid_sampler_enumerates_exactly_the_grid() -> None:
    d = base()
    d["arms"].append(
        {"name": "sweep", "optimizer": "lyam", "grid": {"lr": [1e-3, 1e-2, 1e-1], "beta2": [0.9, 0.99]}}
    )
    spec = StudySpec.from_dict(d)
    arm = spec.arm("sweep")
    study = optuna.create_study(sampler=make_sampler(spec.search, arm))
    assert enqueue_grid(study, arm) == 6
    got = []
    for _ in range(spec.budget(arm)):
        trial = study.ask()
        p = suggest(trial, arm.resolved_space())
        got.append((p["lr"], p["beta2"]))
        study.tell(trial, 0.0)
    expected = list(itertools.product([1e-3, 1e-2, 1e-1], [0.9, 0.99]))
    assert got == expected  # in product order, the last name varying fastest


@pytest.mark.parametrize(
    ("sampler", "cls"),
    [
        ("tpe", optuna.samplers.TPESampler),
        ("random", optuna.samplers.RandomSampler),
        ("gp", optuna.samplers.GPSampler),
        ("qmc", optuna.samplers.QMCSampler),
    ],
)
def test_make_sampler_is_seeded(sampler: str, cls: type) -> None:
    search = SearchSpec(sampler=sampler, sampler_seed=3)
    arm = ArmSpec(
        name="a",
        optimizer="adam",
        schedule="exponential",
        space={"lr": {"low": 1e-4, "high": 1e-1, "log": True}, "gamma": {"low": 0.8, "high": 0.99}},
    )

    def run() -> list[tuple[float, float]]:
        s = make_sampler(search, arm)
        assert isinstance(s, cls)
        study = optuna.create_study(sampler=s)
        out = []
        for _ in range(3):
            trial = study.ask()
            p = suggest(trial, arm.resolved_space())
            assert 1e-4 <= p["lr"] <= 1e-1 and 0.8 <= p["gamma"] <= 0.99
            out.append((p["lr"], p["gamma"]))
            study.tell(trial, math.log(p["lr"]))
        return out

    first = run()
    assert run() == first
    assert len(set(first)) == 3


def test_grid_enqueued_again_on_resume_adds_nothing() -> None:
    arm = ArmSpec(name="g", optimizer="lyam", grid={"lr": [1e-3, 1e-2], "beta2": [0.9, 0.99]})
    study = optuna.create_study(sampler=make_sampler(SearchSpec(), arm))
    assert enqueue_grid(study, arm) == 4 and enqueue_grid(study, arm) == 4
    study.optimize(lambda t: suggest(t, arm.resolved_space())["lr"], n_trials=4)
    assert len(study.trials) == 4
    assert {(t.params["lr"], t.params["beta2"]) for t in study.trials} == set(
        itertools.product([1e-3, 1e-2], [0.9, 0.99])
    )


def test_yaml_anchors_and_merge_keys(tmp_path: Path) -> None:
    path = tmp_path / "anchors.yaml"
    path.write_text(
        "name: anchors\n"
        "task: {dataset: digits, model: fc, epochs: 3}\n"
        "arms:\n"
        "  - &adam {name: a, optimizer: adam, space: {lr: {low: 1.0e-4, high: 1.0e-1, log: true}}}\n"
        "  - {<<: *adam, name: b, schedule: cosine}\n"
    )
    spec = load_spec(path)
    assert [(a.name, a.schedule) for a in spec.arms] == [("a", "constant"), ("b", "cosine")]
    assert spec.arms[1].space == spec.arms[0].space


def test_param_spec_str_for_listings() -> None:
    assert str(ParamSpec.range(1e-5, 0.1, log=True)) == "[1e-05, 0.1] log"
    assert str(ParamSpec.range(16, 128, type="int", step=16)) == "[16, 128] step 16 int"
    assert str(ParamSpec.categorical(["sign", "tanh"])) == "{sign, tanh}"
    assert str(ParamSpec.fixed(0.9)) == "= 0.9"


# --------------------------------------------------------------------------------------------------
# Honest comparisons (METHODS.md section 8): fresh final seeds, compare metrics, reference arm, repeats.


@pytest.mark.parametrize(
    ("seeds", "expected"), [([0], (1, 2, 3)), ([0, 1, 2], (3, 4, 5)), ([7, 2], (8, 9, 10))]
)
def test_default_final_seeds_start_after_the_largest_search_seed(seeds, expected) -> None:
    d = base()
    d["search"]["seeds"] = seeds
    del d["search"]["final_seeds"]
    spec = StudySpec.from_dict(d)
    assert spec.search.final_seeds == expected
    assert not set(spec.search.final_seeds) & set(seeds)
    assert SearchSpec(seeds=tuple(seeds)).final_seeds == expected
    # the stored spec carries the resolved seeds and loads back equal
    assert spec.to_dict()["search"]["final_seeds"] == list(expected)
    assert StudySpec.from_dict(spec.to_dict()) == spec


def test_empty_final_seeds_stay_empty() -> None:
    assert SearchSpec(seeds=(0,), final_seeds=()).final_seeds == ()


def test_every_experiment_has_fresh_final_seeds() -> None:
    for path in sorted((REPO / "experiments").glob("*.yaml")):
        spec = load_spec(path)
        assert not set(spec.search.final_seeds) & set(spec.search.seeds), path.name
        small = spec.smoke()
        assert not set(small.search.final_seeds) & set(small.search.seeds), path.name


def test_compare_defaults_to_the_objective_at_the_final_epoch() -> None:
    spec = StudySpec.from_dict(base())
    assert [c.to_dict() for c in spec.compare] == [{"metric": "final_val_loss", "mode": "min"}]
    d = base()
    d["objective"] = {"metric": "val_acc"}
    assert StudySpec.from_dict(d).primary_metric.to_dict() == {"metric": "final_val_acc", "mode": "max"}


def test_compare_one_mapping_or_a_list_with_modes_resolved() -> None:
    d = base()
    d["compare"] = {"metric": "final_test_acc"}
    assert [c.to_dict() for c in StudySpec.from_dict(d).compare] == [
        {"metric": "final_test_acc", "mode": "max"}
    ]
    d["compare"] = [{"metric": "final_grad_norm", "mode": "min"}, {"metric": "final_train_loss"}]
    spec = StudySpec.from_dict(d)
    assert spec.to_dict()["compare"] == [
        {"metric": "final_grad_norm", "mode": "min"},
        {"metric": "final_train_loss", "mode": "min"},
    ]
    assert spec.primary_metric.metric == "final_grad_norm"
    assert StudySpec.from_dict(spec.to_dict()) == spec
    assert StudySpec.from_dict(yaml.safe_load(spec.to_yaml())) == spec


def test_reference_defaults_to_the_derived_arm_else_none() -> None:
    assert StudySpec.from_dict(base()).reference == "derived"
    d = base()
    d["arms"][0]["name"] = "adam-derived"  # a derived arm not called "derived" is still the derived arm
    assert StudySpec.from_dict(d).reference == "adam-derived"
    d = base()
    del d["arms"][0]
    spec = StudySpec.from_dict(d)
    assert spec.reference == "none" and spec.to_dict()["reference"] == "none"
    d["reference"] = "lyam"
    assert StudySpec.from_dict(d).reference == "lyam"
    d = base()
    d["reference"] = "none"
    assert StudySpec.from_dict(d).reference == "none"


def test_every_experiment_names_its_papers_primary_metric() -> None:
    primary = {
        "000": ("final_test_acc", "max"),
        "001": ("final_test_acc", "max"),
        "002": ("final_train_loss", "min"),
        "003": ("final_grad_norm", "min"),
    }
    for path in sorted((REPO / "experiments").glob("*.yaml")):
        raw = resolve_spec_file(path)
        assert "compare" in raw, f"{path.name}: no compare: field"
        spec = load_spec(path)
        paper = path.stem[:3]
        if paper in primary:
            assert (spec.primary_metric.metric, spec.primary_metric.mode) == primary[paper], path.name
        if paper == "003":
            assert [c.metric for c in spec.compare] == ["final_grad_norm", "final_train_loss"], path.name
        assert spec.reference in [a.name for a in spec.arms] + ["none"]
        if any(a.name == "derived" for a in spec.arms):
            assert spec.reference == "derived", path.name
        stored = yaml.safe_load(spec.to_yaml())
        assert stored["compare"][0] == {
            "metric": spec.primary_metric.metric,
            "mode": spec.primary_metric.mode,
        }
        assert stored["reference"] == spec.reference


def test_repeats_multiply_the_budget_of_sampled_arms_only() -> None:
    d = base()
    d["search"]["repeats"] = 3
    d["arms"].append(
        {"name": "sweep", "optimizer": "lyam", "grid": {"lr": [1e-3, 1e-2], "beta2": [0.9, 0.99]}}
    )
    spec = StudySpec.from_dict(d)
    assert [spec.repeats(a) for a in spec.arms] == [1, 3, 3, 1]
    assert [spec.budget(a) for a in spec.arms] == [0, 36, 36, 4]
    assert spec.to_dict()["search"]["repeats"] == 3
    assert spec.smoke().search.repeats == 1
    d["search"]["sampler"] = "grid"
    d["arms"] = [{"name": "c", "optimizer": "lyam", "space": {"lr": {"choices": [1e-3, 1e-2]}}}]
    grid = StudySpec.from_dict(d)
    assert grid.repeats("c") == 1 and grid.budget("c") == 2


def test_sampler_of_repeat_r_draws_as_an_independent_seed() -> None:
    arm = ArmSpec(name="a", optimizer="adam", space={"lr": {"low": 1e-4, "high": 1e-1, "log": True}})

    def draws(sampler: optuna.samplers.BaseSampler) -> list[float]:
        study = optuna.create_study(sampler=sampler)
        return [suggest(study.ask(), arm.resolved_space())["lr"] for _ in range(4)]

    search = SearchSpec(sampler="random", sampler_seed=5)
    r0, r1, r2 = (draws(make_sampler(search, arm, repeat=r)) for r in range(3))
    assert r0 != r1 and r1 != r2 and r0 != r2
    assert r2 == draws(optuna.samplers.RandomSampler(seed=7))
    with pytest.raises(ConfigError, match="repeat must be an integer >= 0, got -1"):
        make_sampler(search, arm, repeat=-1)


# --------------------------------------------------------------------------------------------------
# A study never holds two arms that are the same update (METHODS.md section 2).


@pytest.mark.parametrize(
    "twin",
    [
        {"name": "adam-exp-2", "optimizer": "adam", "schedule": "exponential"},
        # Adam's own defaults written out: betas (0.9, 0.999) per component, eps 1e-8, weight decay 0
        {
            "name": "adam-exp-2",
            "optimizer": "adam",
            "schedule": "exponential",
            "optimizer_args": {"beta1": 0.9, "beta2": 0.999, "eps": 1.0e-8, "weight_decay": 0.0},
        },
        {
            "name": "adam-exp-2",
            "optimizer": "adam",
            "schedule": "exponential",
            "optimizer_args": {"betas": [0.9, 0.999]},
            "schedule_per": "epoch",
        },
    ],
)
def test_two_arms_with_the_same_update_are_rejected_naming_both(twin) -> None:
    d = base()
    d["arms"][1] = {
        "name": "adam-exp",
        "optimizer": "adam",
        "schedule": "exponential",
        "space": {"lr": {"low": 1.0e-5, "high": 1.0e-1, "log": True}, "gamma": {"low": 0.8, "high": 0.999}},
    }
    d["arms"].append({**twin, "space": copy.deepcopy(d["arms"][1]["space"])})
    with pytest.raises(ConfigError) as info:
        check_study(StudySpec.from_dict(d))
    message = str(info.value)
    assert message.startswith(
        "arms[3]: arms 'adam-exp' (arms[1]) and 'adam-exp-2' (arms[3]) are the same update"
    )
    assert "\n" not in message


@pytest.mark.parametrize(
    "change",
    [
        {"optimizer_args": {"beta2": 0.99}},
        {"optimizer": "adamw"},
        {"schedule": "cosine", "space": {"lr": {"low": 1.0e-5, "high": 1.0e-1, "log": True}}},
        {"schedule_per": "step"},
        {"space": {"lr": {"low": 1.0e-4, "high": 1.0e-1, "log": True}, "gamma": {"low": 0.8, "high": 0.999}}},
        {"task": {"batch_size": 32}},
    ],
)
def test_arms_that_differ_in_one_part_are_distinct(change) -> None:
    d = base()
    twin = {**copy.deepcopy(d["arms"][1]), "name": "other", **change}
    d["arms"].append(twin)
    assert [a.name for a in StudySpec.from_dict(d).arms][-1] == "other"


def test_derived_arms_differ_by_their_lipschitz_settings() -> None:
    d = base()
    d["arms"].append(
        {**copy.deepcopy(d["arms"][0]), "name": "derived-init", "lipschitz": {"weights": "init"}}
    )
    assert len(check_study(StudySpec.from_dict(d)).arms) == 4
    d["arms"][-1]["lipschitz"] = {"samples": 5}
    with pytest.raises(ConfigError, match=r"arms 'derived' \(arms\[0\]\) and 'derived-init' \(arms\[3\]\)"):
        check_study(StudySpec.from_dict(d))


# --------------------------------------------------------------------------------------------------
# Composition: extends.


def _write(path: Path, data: dict[str, Any] | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False))
    return path


def test_extends_deep_merges_with_arms_by_name(tmp_path: Path) -> None:
    d = base()
    del d["name"]
    _write(tmp_path / "shared" / "base.yaml", d)
    child = _write(
        tmp_path / "child.yaml",
        """\
name: child
extends: shared/base
task: {epochs: 7, model_args: {width: 64}}
search: {trials_per_arm: 5}
reference: null
arms:
  - {name: derived, lipschitz: {sigma: 0.04}}
  - name: adam-exponential
    space: {lr: {low: 1.0e-4, high: 1.0e-2, log: true}}
  - {name: adamw, optimizer: adamw, space: default}
""",
    )
    raw = resolve_spec_file(child)
    assert "extends" not in raw and raw["name"] == "child"
    # mappings merge key by key
    assert raw["task"]["model_args"] == {"depth": 2, "width": 64} and raw["task"]["epochs"] == 7
    assert raw["task"]["dataset"] == "digits"
    assert raw["search"] == {**base()["search"], "trials_per_arm": 5}
    # arms: merged by name (an arm's mappings merge too), new ones appended
    assert [a["name"] for a in raw["arms"]] == ["derived", "adam-exponential", "lyam", "adamw"]
    assert raw["arms"][0]["lipschitz"] == {"samples": 5, "sigma": 0.04}
    assert raw["arms"][1]["space"] == {
        "lr": {"low": 1.0e-4, "high": 1.0e-2, "log": True},
        "gamma": {"low": 0.8, "high": 0.999},
    }
    spec = load_spec(child)
    assert spec.search.trials_per_arm == 5 and spec.task.epochs == 7
    # what a run stores is the resolved spec, which loads back equal without the base
    stored = spec.to_dict()
    assert "extends" not in stored
    assert load_spec(_write(tmp_path / "elsewhere" / "spec.yaml", spec.to_yaml())) == spec


def test_extends_null_removes_a_key_and_lists_replace(tmp_path: Path) -> None:
    d = base()
    d["compare"] = [{"metric": "final_grad_norm"}, {"metric": "final_train_loss"}]
    _write(tmp_path / "base.yaml", d)
    child = _write(
        tmp_path / "child.yaml",
        {
            "extends": "base.yaml",
            "compare": [{"metric": "final_test_acc"}],
            "search": {"final_seeds": None},
            "arms": [{"name": "derived", "lipschitz": None}],
        },
    )
    spec = load_spec(child)
    assert [c.metric for c in spec.compare] == ["final_test_acc"]
    assert spec.search.final_seeds == (1, 2, 3)  # back to the default after seed 0
    assert dict(spec.arm("derived").lipschitz) == {}


def test_extends_chain_and_lookup_in_experiments(tmp_path: Path) -> None:
    _write(tmp_path / "a.yaml", {**base(), "name": "a"})
    _write(tmp_path / "b.yaml", {"extends": "a", "name": "b", "max_concurrent": 3})
    c = load_spec(
        _write(tmp_path / "c.yaml", {"extends": "b", "name": "c", "max_concurrent": 4, "population": "off"})
    )
    assert (c.name, c.max_concurrent, c.population) == ("c", 4, "off")
    # a name not next to the spec is looked up in experiments/
    q = load_spec(_write(tmp_path / "q.yaml", {"extends": "quickstart", "name": "q", "max_concurrent": 1}))
    assert q.arms == load_spec(QUICKSTART).arms and q.max_concurrent == 1


@pytest.mark.parametrize(
    ("files", "fragment"),
    [
        ({"s.yaml": {"extends": "nowhere", "name": "s"}}, "extends: no spec file 'nowhere' in "),
        ({"s.yaml": {"extends": 3, "name": "s"}}, "extends: must be the path or name of a spec file, got 3"),
        ({"s.yaml": {"extends": "t"}, "t.yaml": {"extends": "s"}}, "extends: a cycle ("),
        ({"s.yaml": {"extends": "s"}}, "extends: a cycle ("),
        ({"s.yaml": {"extends": "t"}, "t.yaml": "name: [unclosed\n"}, "t.yaml: YAML syntax error"),
    ],
)
def test_extends_errors_name_the_file(tmp_path: Path, files: dict[str, Any], fragment: str) -> None:
    for name, data in files.items():
        _write(tmp_path / name, data)
    with pytest.raises(ConfigError) as info:
        load_spec(tmp_path / "s.yaml")
    message = str(info.value)
    assert fragment in message and "\n" not in message, message


def test_extends_only_in_a_file() -> None:
    d = base()
    d["extends"] = "quickstart"
    with pytest.raises(ConfigError, match="^extends: only a spec file can extend another"):
        StudySpec.from_dict(d)


# --------------------------------------------------------------------------------------------------
# Claims as data.

CLAIM = {
    "id": "003-fig1-gradnorm",
    "text": "the derived step reaches the lowest final gradient norm",
    "metric": "final_grad_norm",
    "arm": "derived",
    "than": "all",
    "direction": "lower",
    "source": "extension",
}
#: the keys a claim's to_dict fills in when the spec leaves them out
CLAIM_DEFAULTS = {"paper": None, "place": None, "quantifier": "each", "grid": "best", "margin": None}
CLAIM_DEFAULTS |= {"factor": None, "target": None, "of": None}


def test_claims_validate_and_round_trip() -> None:
    d = base()
    c2 = {
        **CLAIM,
        "id": "c2",
        "metric": "final_test_acc",
        "than": "lyam",
        "direction": "higher",
        "margin": 0.01,
    }
    d["claims"] = [CLAIM, c2]
    spec = StudySpec.from_dict(d)
    assert [c.to_dict() for c in spec.claims] == [{**CLAIM_DEFAULTS, **CLAIM}, {**CLAIM_DEFAULTS, **c2}]
    assert StudySpec.from_dict(yaml.safe_load(spec.to_yaml())) == spec
    assert StudySpec.from_dict(base()).claims == ()


@pytest.mark.parametrize(
    ("change", "path", "fragment"),
    [
        ({"arm": "derivd"}, "claims[0].arm", "unknown arm 'derivd'; did you mean 'derived'?"),
        ({"than": "lyamm"}, "claims[0].than", "choices: derived, adam-exponential, lyam, all"),
        ({"than": "derived"}, "claims[0].than", "must differ from arm 'derived'"),
        ({"metric": "max_grad_norm"}, "claims[0].metric", "unknown claim metric 'max_grad_norm'"),
        ({"source": "paper"}, "claims[0].paper", "required for source: paper"),
        ({"margin": 0.1}, "claims[0].margin", "compared on the log scale: state the gap as factor"),
        ({"direction": "less"}, "claims[0].direction", "choices: lower, higher"),
        ({"margin": -0.1}, "claims[0].margin", "must be a number >= 0, got -0.1"),
        ({"id": "has space"}, "claims[0].id", "must match [A-Za-z0-9_.-]+"),
        ({"text": ""}, "claims[0].text", "must be the claim in words"),
        ({"epoch": "final"}, "claims[0].epoch", "unknown claim key 'epoch'"),
        ({"metric": None}, "claims[0].metric", "required"),
    ],
)
def test_bad_claims_name_the_field(change: dict[str, Any], path: str, fragment: str) -> None:
    d = base()
    d["claims"] = [{**CLAIM, **change}]
    with pytest.raises(ConfigError) as info:
        StudySpec.from_dict(d)
    message = str(info.value)
    assert message.startswith(path + ": ") and fragment in message and "\n" not in message, message


def test_duplicate_claim_ids_are_rejected() -> None:
    d = base()
    d["claims"] = [CLAIM, {**CLAIM, "than": "lyam"}]
    with pytest.raises(ConfigError, match=r"^claims\[1\]\.id: duplicate claim id '003-fig1-gradnorm'"):
        StudySpec.from_dict(d)


def test_every_experiment_states_a_claim_of_its_paper() -> None:
    for path in sorted((REPO / "experiments").glob("*.yaml")):
        spec = load_spec(path)
        assert spec.claims, f"{path.name}: no claims"
        metrics = {c.metric for c in spec.compare}
        for claim in spec.claims:
            # a final-epoch claim is on a compared metric; whole-run metrics and run columns need not be
            if claim.metric is None or not claim.metric.startswith("final_"):
                continue
            assert claim.metric in metrics, (
                f"{path.name}: claim {claim.id} is on {claim.metric}, not compared"
            )
        assert yaml.safe_load(spec.to_yaml())["claims"][0]["id"] == spec.claims[0].id


def test_a_stored_spec_with_overlapping_seeds_stays_readable_but_a_new_one_is_refused():
    # a study run before final seeds had to be fresh: its spec.yaml is read back (the report warns),
    # while the same spec as a new study is refused; every other field is still validated
    data = base()
    data["search"]["final_seeds"] = [0, 1, 2]
    with pytest.raises(ConfigError, match="overlap the search seeds"):
        StudySpec.from_dict(data)
    stored = StudySpec.from_stored(data)
    assert stored.search.final_seeds == (0, 1, 2) and stored.search.seeds == (0,)
    with pytest.raises(ConfigError, match="overlap the search seeds"):
        StudySpec.from_dict(data)  # the relaxation does not outlive from_stored
    data["task"]["epochs"] = 0
    with pytest.raises(ConfigError, match=r"task\.epochs: must be an integer >= 1, got 0"):
        StudySpec.from_stored(data)
