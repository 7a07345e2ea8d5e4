"""Generic tests over every registered optimizer, driven by one table (timm / torch test_optim style)."""

from __future__ import annotations

import copy
import inspect
from dataclasses import dataclass
from typing import Any

import pytest
import torch

from lyaptune.errors import ConfigError
from lyaptune.optim import create_optimizer, get_optimizer_info, hyperparameter_names, list_optimizers


@dataclass(frozen=True)
class Case:
    """Hyperparameters of one optimizer for the generic tests.

    Attributes:
      quadratic: for 100 steps on the convex quadratic (also used by the round-trip tests).
      rosenbrock: for 500 steps on Rosenbrock from (-1.5, 2).
      variants: extra hyperparameters the foreach / state_dict tests run with (our own optimizers).
    """

    quadratic: dict[str, Any]
    rosenbrock: dict[str, Any]
    variants: tuple[dict[str, Any], ...] = ({},)


_WD = {"weight_decay": 0.1}

CASES: dict[str, Case] = {
    "adam": Case({"lr": 0.1}, {"lr": 0.1}),
    "adamw": Case({"lr": 0.1}, {"lr": 0.1}),
    "adagrad": Case({"lr": 1.0}, {"lr": 2.0}),
    "sgd": Case({"lr": 0.1}, {"lr": 1e-3, "momentum": 0.9}),
    "adabelief": Case({"lr": 0.1}, {"lr": 0.1}),
    "adan": Case({"lr": 0.1}, {"lr": 0.03}),
    "lion": Case({"lr": 0.3}, {"lr": 0.01}),
    "lyam": Case(
        {"lr": 1.0},
        {"lr": 1.0},
        variants=({}, {"bias_correction": False, **_WD}, {"lr": 0.3, "betas": (0.5, 0.9)}),
    ),
    "expdecay-gradnorm": Case(
        {"lr": 0.3, "decay": 0.01, "decay_per": "step"},
        {"lr": 0.1, "momentum": 0.5},
        variants=({}, {"decay_per": "epoch", "decay": 0.2}, {"momentum": 0.5, **_WD}),
    ),
    "rlo": Case({"lr": 0.3}, {"lr": 1e-2}, variants=({}, _WD)),
    "rlo-lambda": Case({"lr": 0.1}, {"lr": 1e-2}, variants=({}, _WD)),
    # normalised steps have length lr * sqrt(D) however small the velocity: a small lr, as rlo-lambda
    "rlo-lifted": Case({"lr": 0.1}, {"lr": 1e-2}, variants=({}, _WD)),
}


def _case(name: str) -> Case:
    if name not in list_optimizers():
        pytest.skip(f"optimizer {name!r} is not registered (yet)")
    return CASES[name]


def _is_ours(name: str) -> bool:
    return get_optimizer_info(name).cls.__module__.startswith("lyaptune.optim.")


OURS = [n for n in CASES if n not in list_optimizers() or _is_ours(n)]


# -- problems ------------------------------------------------------------------------------------------


def _quadratic():
    """f(x) = 1/2 x'Ax - b'x - f*, A SPD with eigenvalues in [0.32, 3.2], x in R^10 split in two tensors."""
    gen = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(10, 10, generator=gen, dtype=torch.float64))
    a = q @ torch.diag(torch.logspace(-0.5, 0.5, 10, dtype=torch.float64)) @ q.T
    b = torch.randn(10, generator=gen, dtype=torch.float64)
    f_star = -0.5 * b @ torch.linalg.solve(a, b)
    x0 = 2 * torch.randn(10, generator=gen, dtype=torch.float64)
    params = [torch.nn.Parameter(x0[:4].clone()), torch.nn.Parameter(x0[4:].reshape(2, 3).clone())]

    def loss(ps):
        x = torch.cat([p.reshape(-1) for p in ps])
        return 0.5 * x @ a @ x - b @ x - f_star

    return params, loss


def _rosenbrock():
    params = [torch.nn.Parameter(torch.tensor([-1.5, 2.0], dtype=torch.float64))]

    def loss(ps):
        x, y = ps[0]
        return (1 - x) ** 2 + 100 * (y - x**2) ** 2

    return params, loss


def _descend(opt, params, loss, steps, epoch_every=0):
    for t in range(steps):
        opt.zero_grad()
        loss(params).backward()
        opt.step()
        if epoch_every and (t + 1) % epoch_every == 0 and hasattr(opt, "epoch_end"):
            opt.epoch_end()
    with torch.no_grad():
        return loss(params).item()


# -- the table covers the registry ---------------------------------------------------------------------


def test_every_registered_optimizer_has_a_case():
    assert set(CASES) == set(list_optimizers()), "one Case per registered optimizer"


# -- convergence ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(CASES))
def test_quadratic_loss_decreases(name):
    case = _case(name)
    params, loss = _quadratic()
    with torch.no_grad():
        initial = loss(params).item()
    opt = create_optimizer(name, params, **case.quadratic)
    final = _descend(opt, params, loss, steps=100)
    assert final < 0.1 * initial, f"{name}: {initial:.4g} -> {final:.4g}"


@pytest.mark.parametrize("name", list(CASES))
def test_rosenbrock_loss_decreases(name):
    case = _case(name)
    params, loss = _rosenbrock()
    initial = 12.5  # (1 + 1.5)^2 + 100 (2 - 2.25)^2
    opt = create_optimizer(name, params, **case.rosenbrock)
    final = _descend(opt, params, loss, steps=500)
    assert final < 0.1 * initial, f"{name}: {initial:.4g} -> {final:.4g}"


# -- foreach == for-loop (our own optimizers) ----------------------------------------------------------

SHAPES = [(5,), (3, 4), (2, 3, 2), (), (7, 1)]


def _random_params(dtypes):
    gen = torch.Generator().manual_seed(1)
    return [
        torch.nn.Parameter(torch.randn(s, generator=gen, dtype=torch.float64).to(d))
        for s, d in zip(SHAPES, dtypes, strict=True)
    ]


def _run_random(name, hparams, foreach, dtypes, steps=5):
    params = _random_params(dtypes)
    groups = [{"params": params[:3]}, {"params": params[3:], "lr": 0.5 * hparams["lr"]}]
    opt = create_optimizer(name, groups, **hparams, foreach=foreach)
    gen = torch.Generator().manual_seed(2)
    for t in range(steps):
        for p in params:
            p.grad = torch.randn(p.shape, generator=gen, dtype=torch.float64).to(p.dtype)
        opt.step()
        if t == 1 and hasattr(opt, "epoch_end"):
            opt.epoch_end()
    return params, opt


def _variants(names):
    return [pytest.param(n, i, id=f"{n}-{i}") for n in names for i in range(len(CASES[n].variants))]


@pytest.mark.parametrize(("name", "variant"), _variants(OURS))
def test_foreach_matches_forloop_float64(name, variant):
    case = _case(name)
    hparams = {**case.quadratic, **case.variants[variant]}
    dtypes = [torch.float64] * len(SHAPES)
    p_loop, opt_loop = _run_random(name, hparams, False, dtypes)
    p_each, opt_each = _run_random(name, hparams, True, dtypes)
    for a, b in zip(p_loop, p_each, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-13, atol=1e-15)
    s_loop, s_each = opt_loop.state_dict()["state"], opt_each.state_dict()["state"]
    assert s_loop.keys() == s_each.keys()
    for key in s_loop:
        torch.testing.assert_close(s_loop[key], s_each[key], rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("name", OURS)
def test_foreach_matches_forloop_mixed_dtypes(name):
    case = _case(name)
    dtypes = [torch.float32, torch.float64, torch.float32, torch.float64, torch.float32]
    p_loop, _ = _run_random(name, case.quadratic, False, dtypes)
    p_each, _ = _run_random(name, case.quadratic, True, dtypes)
    for a, b, d in zip(p_loop, p_each, dtypes, strict=True):
        assert a.dtype == b.dtype == d
        torch.testing.assert_close(a, b, rtol=1e-6 if d == torch.float32 else 1e-13, atol=1e-7)


# -- state_dict round trip -----------------------------------------------------------------------------


def _round_trip_params(name):
    params = [(name, i) for i in range(len(CASES[name].variants))] if name in OURS else [(name, None)]
    return [pytest.param(n, i, id=n if i is None else f"{n}-{i}") for n, i in params]


@pytest.mark.parametrize(("name", "variant"), [p for n in CASES for p in _round_trip_params(n)])
def test_state_dict_round_trip(name, variant):
    case = _case(name)
    hparams = {**case.quadratic, **(case.variants[variant] if variant is not None else {})}
    params, loss = _quadratic()
    opt = create_optimizer(name, params, **hparams)
    _descend(opt, params, loss, steps=3, epoch_every=2)
    saved = copy.deepcopy(opt.state_dict())
    at_k = [p.detach().clone() for p in params]
    _descend(opt, params, loss, steps=4, epoch_every=2)

    params2 = [torch.nn.Parameter(p.clone()) for p in at_k]
    opt2 = create_optimizer(name, params2, **hparams)
    opt2.load_state_dict(saved)
    _descend(opt2, params2, loss, steps=4, epoch_every=2)
    for a, b in zip(params, params2, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


# -- configuration errors ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(CASES))
def test_negative_lr_raises_value_error_with_value(name):
    _case(name)
    try:
        create_optimizer(name, [torch.nn.Parameter(torch.zeros(2))], lr=-0.25)
    except Exception as exc:  # noqa: BLE001  (the type is what is checked)
        assert "-0.25" in str(exc), str(exc)
        assert isinstance(exc, ValueError), f"{type(exc).__name__}: {exc}"
    else:
        pytest.fail(f"{name}: lr=-0.25 accepted")


@pytest.mark.parametrize("name", list(CASES))
def test_unknown_hyperparameter_is_named(name):
    _case(name)
    with pytest.raises(ConfigError, match=r"'lrr'.*did you mean 'lr'\?"):
        create_optimizer(name, [torch.nn.Parameter(torch.zeros(2))], lrr=0.1)


WITH_BETAS = [n for n in CASES if n in list_optimizers() and "betas" in get_optimizer_info(n).tuple_params]


@pytest.mark.parametrize("name", WITH_BETAS)
def test_beta_components_fold_into_betas(name):
    case = CASES[name]
    info = get_optimizer_info(name)
    default = info.defaults.get("betas", inspect.signature(info.cls).parameters["betas"].default)
    opt = create_optimizer(name, [torch.nn.Parameter(torch.zeros(2))], lr=case.quadratic["lr"], beta1=0.85)
    betas = tuple(opt.param_groups[0]["betas"])
    assert betas == (0.85, *tuple(default)[1:])
    last = info.tuple_params["betas"][-1]
    opt = create_optimizer(name, [torch.nn.Parameter(torch.zeros(2))], **{last: 0.95})
    assert tuple(opt.param_groups[0]["betas"]) == (*tuple(default)[:-1], 0.95)


def test_table_fields_are_hyperparameters():
    # A typo in the table would otherwise surface as a ConfigError in a convergence test only.
    for name, case in CASES.items():
        if name not in list_optimizers():
            continue
        valid = set(hyperparameter_names(name))
        for hp in [case.quadratic, case.rosenbrock, *case.variants]:
            assert set(hp) <= valid, f"{name}: {set(hp) - valid}"
