"""Tests of lyaptune.optim.schedules: every schedule against its formula written out here."""

from __future__ import annotations

import io
import math
from collections.abc import Callable

import numpy as np
import pytest
import torch

from lyaptune.errors import ConfigError
from lyaptune.optim.schedules import (
    Schedule,
    create_schedule,
    get_schedule_info,
    list_schedules,
    schedule_parameter_names,
)

LR = 0.01
RTOL = 1e-10


def one_cycle_reference(
    t: np.ndarray,
    total: int,
    max_lr: float,
    pct_start: float = 0.3,
    div_factor: float = 25.0,
    final_div_factor: float = 1e4,
    strategy: str = "cos",
) -> np.ndarray:
    """Two-phase one-cycle lr at step t: max_lr/div -> max_lr over pct_start of the run, then -> min."""
    start = max_lr / div_factor
    low = start / final_div_factor
    peak_at = pct_start * total - 1.0
    last = total - 1.0

    def anneal(a: float, b: float, pct: np.ndarray) -> np.ndarray:
        if strategy == "cos":
            return b + (a - b) * (1.0 + np.cos(np.pi * pct)) / 2.0
        return a + (b - a) * pct

    up = anneal(start, max_lr, t / peak_at)
    down = anneal(max_lr, low, (t - peak_at) / (last - peak_at))
    return np.where(t <= peak_at, up, down)


def _step_size(E: int) -> int:
    return 10 if E == 20 else 20 if E == 50 else 40


def sgdr_reference(e: np.ndarray, lr: float, t0: int = 10, t_mult: int = 2) -> np.ndarray:
    """SGDR with eta_min 0: cycles of t0, t0 * t_mult, ... epochs; lr (1 + cos(pi t_cur / T_i)) / 2."""
    out = np.empty_like(e)
    for j, x in enumerate(e):
        start, length = 0.0, float(t0)
        while x >= start + length:  # walk the cycles until the one holding epoch x
            start, length = start + length, length * t_mult
        out[j] = lr * (1.0 + math.cos(math.pi * (x - start) / length)) / 2.0
    return out


# name -> (parameters, lr at (fractional) epoch e of E for base lr `lr`)
Formula = Callable[[np.ndarray, int, float], np.ndarray]
CASES: dict[str, tuple[dict, Formula]] = {
    "constant": ({}, lambda e, E, lr: np.full_like(e, lr)),
    "step": ({}, lambda e, E, lr: lr * 0.1 ** np.floor(e / _step_size(E))),
    "linear": ({}, lambda e, E, lr: lr * (1.0 - 0.9 * np.minimum(e, E) / E)),
    "exponential": ({}, lambda e, E, lr: lr * 0.9**e),
    "one-cycle": ({}, lambda e, E, lr: one_cycle_reference(e, E, lr)),
    "sqrt": ({}, lambda e, E, lr: lr / np.sqrt(e + 1.0)),
    "inverse-time": ({}, lambda e, E, lr: lr / (1.0 + 0.01 * e)),
    "exp-decay": ({}, lambda e, E, lr: lr * np.exp(-0.01 * e)),
    # METHODS.md: 0.005 + 0.005 (1 + cos(pi e / E)) / 2 for lr = 0.01
    "cosine": ({}, lambda e, E, lr: (lr / 2) + (lr / 2) * (1.0 + np.cos(np.pi * e / E)) / 2.0),
    "cosine-restarts": ({}, lambda e, E, lr: sgdr_reference(e, lr)),
    "derived-constant": ({"lr": 0.0037, "multiplier": 2.0}, lambda e, E, lr: np.full_like(e, 0.0074)),
}

# the same rules with the rate constants moved off their defaults
CASES_NONDEFAULT: dict[str, tuple[dict, Formula]] = {
    "step": ({"gamma": 0.5, "step_size": 7}, lambda e, E, lr: lr * 0.5 ** np.floor(e / 7)),
    "linear": ({"end_factor": 0.3}, lambda e, E, lr: lr * (1.0 - 0.7 * e / E)),
    "exponential": ({"gamma": 0.97}, lambda e, E, lr: lr * 0.97**e),
    "one-cycle": (
        {"pct_start": 0.25, "div_factor": 10.0, "final_div_factor": 100.0, "anneal_strategy": "linear"},
        lambda e, E, lr: one_cycle_reference(e, E, lr, 0.25, 10.0, 100.0, "linear"),
    ),
    "inverse-time": ({"k": 0.2}, lambda e, E, lr: lr / (1.0 + 0.2 * e)),
    "exp-decay": ({"k": 0.05}, lambda e, E, lr: lr * np.exp(-0.05 * e)),
    "cosine": ({"min_factor": 0.1}, lambda e, E, lr: lr * (0.1 + 0.9 * (1.0 + np.cos(np.pi * e / E)) / 2.0)),
    "cosine-restarts": (
        {"T_0": 4, "T_mult": 1},
        lambda e, E, lr: lr * (1.0 + np.cos(np.pi * (e % 4) / 4)) / 2.0,
    ),
    "derived-constant": ({"lr": 0.02, "multiplier": 0.5}, lambda e, E, lr: np.full_like(e, 0.01)),
}


def make_optimizer(*lrs: float, cls: type[torch.optim.Optimizer] = torch.optim.SGD) -> torch.optim.Optimizer:
    groups = [{"params": [torch.nn.Parameter(torch.zeros(3))], "lr": lr} for lr in lrs]
    return cls(groups, lr=lrs[0])


def run(schedule: Schedule, optimizer: torch.optim.Optimizer, n: int, *, per: str = "epoch") -> np.ndarray:
    """The lr of every group used in each of n epochs (or steps): shape (n, groups)."""
    used = []
    for _ in range(n):
        used.append([float(g["lr"]) for g in optimizer.param_groups])
        optimizer.step()  # no gradients: a no-op that keeps torch's call-order check quiet
        if per == "epoch":
            schedule.epoch_end()
        else:
            schedule.step_end()
    return np.array(used, dtype=np.float64)


def test_table_covers_every_schedule():
    assert set(CASES) == set(list_schedules())


@pytest.mark.parametrize("E", [20, 50, 100])
@pytest.mark.parametrize("name", sorted(CASES))
def test_lr_per_epoch_matches_formula(name, E):
    params, formula = CASES[name]
    opt = make_optimizer(LR)
    schedule = create_schedule(name, opt, epochs=E, steps_per_epoch=5, **params)
    used = run(schedule, opt, E)[:, 0]
    np.testing.assert_allclose(used, formula(np.arange(E, dtype=np.float64), E, LR), rtol=RTOL, atol=0)


@pytest.mark.parametrize("name", sorted(CASES_NONDEFAULT))
def test_lr_per_epoch_with_other_rate_constants(name):
    params, formula = CASES_NONDEFAULT[name]
    E = 30
    opt = make_optimizer(LR)
    used = run(create_schedule(name, opt, epochs=E, steps_per_epoch=5, **params), opt, E)[:, 0]
    np.testing.assert_allclose(used, formula(np.arange(E, dtype=np.float64), E, LR), rtol=RTOL, atol=0)


@pytest.mark.parametrize(
    "name",
    ["step", "linear", "exponential", "sqrt", "inverse-time", "exp-decay", "cosine", "cosine-restarts"],
)
def test_per_step_is_continuous_in_epochs(name):
    params, formula = CASES[name]
    E, spe = 20, 7
    opt = make_optimizer(LR)
    schedule = create_schedule(name, opt, epochs=E, steps_per_epoch=spe, per="step", **params)
    used = run(schedule, opt, E * spe, per="step")[:, 0]
    t = np.arange(E * spe, dtype=np.float64)
    if name == "step":  # step_size stays in epochs: drops after 10 epochs = 70 steps
        expected = LR * 0.1 ** (np.arange(E * spe) // (10 * spe))
    else:
        expected = formula(t / spe, E, LR)
    np.testing.assert_allclose(used, expected, rtol=RTOL, atol=0)


def test_per_step_one_cycle_counts_all_steps():
    E, spe = 10, 6
    opt = make_optimizer(LR)
    schedule = create_schedule("one-cycle", opt, epochs=E, steps_per_epoch=spe, per="step")
    used = run(schedule, opt, E * spe, per="step")[:, 0]
    np.testing.assert_allclose(
        used, one_cycle_reference(np.arange(E * spe, dtype=np.float64), E * spe, LR), rtol=RTOL
    )


def test_per_controls_which_hook_advances():
    opt = make_optimizer(LR)
    by_epoch = create_schedule("exponential", opt, epochs=10, steps_per_epoch=4)
    for _ in range(5):
        opt.step()
        by_epoch.step_end()
    assert by_epoch.current_lr() == pytest.approx(LR, rel=1e-15)
    by_epoch.epoch_end()
    assert by_epoch.current_lr() == pytest.approx(LR * 0.9, rel=1e-12)

    opt = make_optimizer(LR)
    by_step = create_schedule("exponential", opt, epochs=10, steps_per_epoch=4, per="step")
    opt.step()
    by_step.epoch_end()
    assert by_step.current_lr() == pytest.approx(LR, rel=1e-15)
    for _ in range(4):
        by_step.step_end()
    assert by_step.current_lr() == pytest.approx(LR * 0.9, rel=1e-12)


@pytest.mark.parametrize("E,drop", [(20, 10), (50, 20), (100, 40), (30, 40)])
def test_step_default_step_size_by_run_length(E, drop):
    opt = make_optimizer(LR)
    used = run(create_schedule("step", opt, epochs=E, steps_per_epoch=1), opt, E)[:, 0]
    first_drop = np.flatnonzero(used < LR * 0.5)
    assert (first_drop[0] if first_drop.size else E) == min(drop, E)


def test_one_cycle_start_peak_and_torch_cross_check():
    E = 50
    opt = make_optimizer(LR)
    schedule = create_schedule("one-cycle", opt, epochs=E, steps_per_epoch=3)
    assert schedule.current_lr() == pytest.approx(LR / 25, rel=1e-15)  # set at construction
    used = run(schedule, opt, E)[:, 0]
    assert used[0] == pytest.approx(LR / 25, rel=1e-15)
    assert used.max() == pytest.approx(LR, rel=1e-12)
    assert int(np.argmax(used)) == 14  # 0.3 * 50 - 1
    assert used[-1] < LR / 25  # anneals below the start, towards max_lr / 25 / 1e4

    ref_opt = make_optimizer(LR)
    ref = torch.optim.lr_scheduler.OneCycleLR(ref_opt, max_lr=LR, total_steps=E)
    ref_used = []
    for _ in range(E):
        ref_used.append(ref_opt.param_groups[0]["lr"])
        ref_opt.step()
        ref.step()
    np.testing.assert_allclose(used, ref_used, rtol=1e-14)


def test_one_cycle_keeps_adams_beta1_by_default():
    # METHODS.md section 5: one-cycle schedules the step size only; beta1 stays 0.9 the whole cycle.
    opt = make_optimizer(LR, cls=torch.optim.Adam)
    schedule = create_schedule("one-cycle", opt, epochs=20, steps_per_epoch=1)
    betas = [opt.param_groups[0]["betas"]]
    used = []
    for _ in range(20):
        used.append(opt.param_groups[0]["lr"])
        opt.step()
        schedule.epoch_end()
        betas.append(opt.param_groups[0]["betas"])
    assert betas == [(0.9, 0.999)] * 21
    assert "momentum" not in opt.param_groups[0]
    # and the step size still follows the two-phase cycle
    np.testing.assert_allclose(used, one_cycle_reference(np.arange(20.0), 20, LR), rtol=RTOL)
    assert get_schedule_info("one-cycle").defaults["cycle_momentum"] is False


def test_one_cycle_momentum_cycling_is_an_option():
    opt = make_optimizer(LR, cls=torch.optim.Adam)
    schedule = create_schedule("one-cycle", opt, epochs=20, steps_per_epoch=1, cycle_momentum=True)
    assert opt.param_groups[0]["betas"] == (0.95, 0.999)  # max_momentum at the start (torch)
    run(schedule, opt, 5)
    assert opt.param_groups[0]["betas"][0] == pytest.approx(0.85, abs=1e-12)  # base_momentum at the peak

    with pytest.raises(ConfigError, match="cycle_momentum"):
        create_schedule(
            "one-cycle",
            make_optimizer(LR, cls=torch.optim.Adagrad),
            epochs=20,
            steps_per_epoch=1,
            cycle_momentum=True,
        )
    opt = make_optimizer(LR, cls=torch.optim.Adagrad)
    used = run(create_schedule("one-cycle", opt, epochs=20, steps_per_epoch=1, cycle_momentum=False), opt, 20)
    np.testing.assert_allclose(used[:, 0], one_cycle_reference(np.arange(20.0), 20, LR), rtol=RTOL)


@pytest.mark.parametrize("name", sorted(CASES))
def test_two_param_groups_scale_their_own_base_lr(name):
    params, formula = CASES[name]
    E = 20
    opt = make_optimizer(0.01, 0.003)
    used = run(create_schedule(name, opt, epochs=E, steps_per_epoch=5, **params), opt, E)
    e = np.arange(E, dtype=np.float64)
    if name == "derived-constant":  # absolute: every group gets lr * multiplier
        expected = np.stack([np.full(E, 0.0074), np.full(E, 0.0074)], axis=1)
    else:
        expected = np.stack([formula(e, E, 0.01), formula(e, E, 0.003)], axis=1)
    np.testing.assert_allclose(used, expected, rtol=RTOL, atol=0)


@pytest.mark.parametrize("per", ["epoch", "step"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_state_dict_round_trip_mid_way(name, per):
    params = {**CASES[name][0], **CASES_NONDEFAULT.get(name, ({}, None))[0]}
    E, spe, cut = 12, 3, 5
    n = E if per == "epoch" else E * spe

    opt = make_optimizer(0.01, 0.002, cls=torch.optim.Adam)
    straight = run(
        create_schedule(name, opt, epochs=E, steps_per_epoch=spe, per=per, **params), opt, n, per=per
    )

    opt = make_optimizer(0.01, 0.002, cls=torch.optim.Adam)
    schedule = create_schedule(name, opt, epochs=E, steps_per_epoch=spe, per=per, **params)
    first = run(schedule, opt, cut, per=per)
    buffer = io.BytesIO()
    torch.save({"optimizer": opt.state_dict(), "schedule": schedule.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)  # plain data only: no pickled functions

    opt2 = make_optimizer(0.01, 0.002, cls=torch.optim.Adam)
    resumed = create_schedule(name, opt2, epochs=E, steps_per_epoch=spe, per=per, **params)
    opt2.load_state_dict(saved["optimizer"])
    resumed.load_state_dict(saved["schedule"])
    rest = run(resumed, opt2, n - cut, per=per)
    np.testing.assert_allclose(np.concatenate([first, rest]), straight, rtol=1e-14, atol=0)


def test_derived_constant_holds_and_requires_lr():
    opt = make_optimizer(0.5, 0.1, cls=torch.optim.Adam)
    schedule = create_schedule("derived-constant", opt, epochs=10, steps_per_epoch=4, per="step", lr=1.5e-3)
    used = run(schedule, opt, 40, per="step")
    assert np.all(used == 1.5e-3)
    assert get_schedule_info("derived-constant").needs_lipschitz
    assert [n for n in list_schedules() if get_schedule_info(n).needs_lipschitz] == ["derived-constant"]
    with pytest.raises(ConfigError, match=r"'derived-constant' needs parameter 'lr'.*lr, multiplier"):
        create_schedule("derived-constant", make_optimizer(LR), epochs=10, steps_per_epoch=1)


def test_derived_constant_overrides_an_earlier_base_lr():
    opt = make_optimizer(LR, 0.004)
    create_schedule("exp-decay", opt, epochs=10, steps_per_epoch=1)  # records initial_lr 0.01 / 0.004
    schedule = create_schedule("derived-constant", opt, epochs=10, steps_per_epoch=1, lr=2e-3, multiplier=1.5)
    assert np.all(run(schedule, opt, 10) == 3e-3)


@pytest.mark.parametrize(
    "name,params,final",
    [("cosine", {"min_factor": 0.2}, 0.2), ("linear", {"end_factor": 0.3}, 0.3)],
)
def test_annealing_holds_its_end_value_after_the_run(name, params, final):
    E = 10
    opt = make_optimizer(LR)
    used = run(create_schedule(name, opt, epochs=E, steps_per_epoch=1, **params), opt, E + 6)[:, 0]
    np.testing.assert_allclose(used[E:], np.full(6, LR * final), rtol=1e-12)


def test_registry_metadata():
    expected_defaults = {
        "constant": {},
        "step": {"gamma": 0.1, "step_size": None},
        "linear": {"end_factor": 0.1},
        "exponential": {"gamma": 0.9},
        "sqrt": {},
        "inverse-time": {"k": 0.01},
        "exp-decay": {"k": 0.01},
        "cosine": {"min_factor": 0.5},
        "cosine-restarts": {"T_0": 10, "T_mult": 2},
        "derived-constant": {"multiplier": 1.0},
    }
    for name, defaults in expected_defaults.items():
        assert dict(get_schedule_info(name).defaults) == defaults
    one_cycle = get_schedule_info("one-cycle").defaults
    assert (one_cycle["pct_start"], one_cycle["div_factor"], one_cycle["final_div_factor"]) == (
        0.3,
        25.0,
        1e4,
    )
    assert schedule_parameter_names("derived-constant") == ["lr", "multiplier"]
    assert schedule_parameter_names("sqrt") == []

    for name in list_schedules():
        info = get_schedule_info(name)
        assert info.name == name and info.description and info.reference
        names = schedule_parameter_names(name)
        for key, rng in info.space.items():
            assert key in names
            default = info.defaults[key]
            if "choices" in rng:
                assert all(isinstance(c, int) and c >= 1 for c in rng["choices"])
            else:
                assert rng["low"] < rng["high"]
                assert rng["low"] <= default <= rng["high"], (name, key)
    for name in ["step", "exponential", "inverse-time", "exp-decay", "linear", "cosine"]:
        assert get_schedule_info(name).space, f"{name} has rate constants to search"


def test_searched_values_build():
    """The ends of every search range are valid values."""
    for name in list_schedules():
        info = get_schedule_info(name)
        extra = {"lr": 1e-3} if info.needs_lipschitz else {}
        for key, rng in info.space.items():
            values = rng["choices"] if "choices" in rng else [rng["low"], rng["high"]]
            for v in values:
                create_schedule(name, make_optimizer(LR), epochs=20, steps_per_epoch=2, **extra, **{key: v})


@pytest.mark.parametrize(
    "name,params,pattern",
    [
        ("step", {"gamma": 0.0}, r"gamma must be in \(0, 1\], got 0\.0"),
        ("step", {"gamma": 1.5}, r"gamma must be in \(0, 1\], got 1\.5"),
        ("step", {"step_size": 0}, r"step_size must be an integer >= 1, got 0"),
        ("step", {"step_size": 2.5}, r"step_size must be an integer >= 1, got 2\.5"),
        ("exponential", {"gamma": -0.1}, r"gamma must be in \(0, 1\], got -0\.1"),
        ("exponential", {"gamma": "0.9"}, r"gamma must be a finite number, got '0\.9'"),
        ("linear", {"end_factor": 1.5}, r"end_factor must be in \[0, 1\], got 1\.5"),
        ("inverse-time", {"k": -1}, r"k must be >= 0, got -1"),
        ("exp-decay", {"k": math.nan}, r"k must be a finite number, got nan"),
        ("cosine", {"min_factor": 2}, r"min_factor must be in \[0, 1\], got 2"),
        ("cosine-restarts", {"T_0": 0}, r"T_0 must be an integer >= 1, got 0"),
        ("cosine-restarts", {"T_mult": 1.5}, r"T_mult must be an integer >= 1, got 1\.5"),
        ("one-cycle", {"pct_start": 1.0}, r"pct_start must be in \(0, 1\), got 1\.0"),
        (
            "one-cycle",
            {"anneal_strategy": "cosine"},
            r"anneal_strategy must be one of cos, linear, got 'cosine'",
        ),
        ("one-cycle", {"div_factor": 0}, r"div_factor must be > 0, got 0"),
        ("one-cycle", {"three_phase": "yes"}, r"three_phase must be true or false, got 'yes'"),
        ("derived-constant", {"lr": -1e-3}, r"lr must be > 0, got -0\.001"),
        ("derived-constant", {"lr": 1e-3, "multiplier": 0}, r"multiplier must be > 0, got 0"),
        ("step", {"gama": 0.5}, r"unknown parameter 'gama' .*did you mean 'gamma'.*gamma, step_size"),
        ("constant", {"gamma": 0.5}, r"unknown parameter 'gamma' for schedule 'constant'.*\(none\)"),
    ],
)
def test_bad_parameters_raise_naming_them(name, params, pattern):
    with pytest.raises(ConfigError, match=pattern) as info:
        create_schedule(name, make_optimizer(LR), epochs=20, steps_per_epoch=2, **params)
    assert isinstance(info.value, ValueError)
    assert f"'{name}'" in str(info.value)


def test_bad_schedule_name_per_and_counts():
    with pytest.raises(ConfigError, match=r"unknown schedule 'cosin'; did you mean 'cosine'\?.*exp-decay"):
        create_schedule("cosin", make_optimizer(LR), epochs=20, steps_per_epoch=2)
    with pytest.raises(
        ConfigError, match=r"unknown value of per 'steps'; did you mean 'step'\? choices: epoch, step"
    ):
        create_schedule("constant", make_optimizer(LR), epochs=20, steps_per_epoch=2, per="steps")
    with pytest.raises(ConfigError, match=r"epochs must be an integer >= 1, got 0"):
        create_schedule("constant", make_optimizer(LR), epochs=0, steps_per_epoch=2)
    with pytest.raises(ConfigError, match=r"steps_per_epoch must be an integer >= 1, got -3"):
        create_schedule("constant", make_optimizer(LR), epochs=10, steps_per_epoch=-3)
    with pytest.raises(ConfigError, match=r"unknown schedule"):
        schedule_parameter_names("nope")
    opt = make_optimizer(LR)
    with pytest.raises(ConfigError, match=r"per 'batch'.*choices: epoch, step"):
        Schedule(torch.optim.lr_scheduler.LambdaLR(opt, lambda e: 1.0), per="batch")


def test_one_cycle_rejects_a_peak_at_the_first_step():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.01, momentum=0.9)
    with pytest.raises(ConfigError, match=r"pct_start=0.5 of 2 steps"):
        create_schedule("one-cycle", opt, epochs=2, steps_per_epoch=1, pct_start=0.5)
