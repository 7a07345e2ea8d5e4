"""The RLO family (METHODS.md section 2) against the rule written out in numpy, Lion and signSGD."""

from __future__ import annotations

import math

import numpy as np
import pytest
import pytorch_optimizer
import torch
from torch import nn

from lyaptune.errors import ConfigError
from lyaptune.optim import create_optimizer, get_optimizer_info, hyperparameter_names, list_optimizers
from lyaptune.optim.rlo import RLO, RLOLambda, RLOLifted

PRESETS = ("rlo", "rlo-lambda", "rlo-lifted")


# --- the rule of METHODS.md section 2, written out independently in numpy float64 -------------------


def np_rlo(
    p0: list[np.ndarray],
    grad_seq: list[list[np.ndarray]],
    *,
    lr: float | list[float],
    betas: tuple[float, float, float] = (0.9, 0.99, 0.999),
    direction: str,
    gamma: float = 5.0,
    precondition: bool,
    global_norm: bool | list[bool],
    belief: float = 0.1,
    eta: float | None = None,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
) -> tuple[list[list[np.ndarray]], list[np.ndarray], list[np.ndarray]]:
    """Parameters after every step, and the last step's velocity and target ``d + b``.

    The velocity is the un-normalised average of the targets; global normalisation rescales only the
    step applied (``u = d + b`` or ``u = v``).

    ``lr`` and ``global_norm`` may be given per tensor (to mimic parameter groups).
    """
    n = len(p0)
    lrs = list(lr) if isinstance(lr, list) else [lr] * n
    norm_on = list(global_norm) if isinstance(global_norm, list) else [global_norm] * n
    b1, b2, b3 = betas
    p = [np.array(x, dtype=np.float64) for x in p0]
    m = [np.zeros_like(x) for x in p]
    s = [np.zeros_like(x) for x in p]
    v = [np.zeros_like(x) for x in p]
    history, targets = [], []
    for t, grads in enumerate(grad_seq, start=1):
        d = []
        for i, g in enumerate(grads):
            c = b1 * m[i] + (1 - b1) * g
            if precondition:
                s[i] = b3 * s[i] + (1 - b3) * g * g
                s_hat = s[i] / (1 - b3**t)
                c = c / (np.sqrt(s_hat) + eps)
            d.append(np.sign(c) if direction == "sign" else np.tanh(gamma * c))
        targets, steps = [], []
        for i, g in enumerate(grads):
            delta = g - m[i]
            b = belief * delta / max(float(np.linalg.norm(delta)), eps)
            targets.append(d[i] + b)
            if eta is None:
                steps.append(targets[i])
            else:
                v[i] = (1 - eta) * v[i] + eta * targets[i]
                steps.append(v[i])
        # global normalisation of the applied step u (d + b, or the velocity), METHODS.md section 2
        on = [i for i in range(n) if norm_on[i]]
        if on:
            big_d = sum(steps[i].size for i in on)
            norm = math.sqrt(sum(float(np.sum(steps[i] ** 2)) for i in on))
            steps = [u * math.sqrt(big_d) / norm if i in on else u for i, u in enumerate(steps)]
        for i, g in enumerate(grads):
            p[i] = p[i] * (1 - lrs[i] * weight_decay)
            p[i] = p[i] - lrs[i] * steps[i]
            m[i] = b2 * m[i] + (1 - b2) * g
        history.append([x.copy() for x in p])
    return history, v, targets


def run_torch(make_opt, p0, grad_seq, groups=None):
    """Feed the given gradients to an optimizer; return the parameters after every step and it."""
    params = [torch.tensor(x, dtype=torch.float64, requires_grad=True) for x in p0]
    opt = make_opt(params if groups is None else groups(params))
    history = []
    for grads in grad_seq:
        for p, g in zip(params, grads):
            p.grad = torch.tensor(g, dtype=torch.float64)
        opt.step()
        history.append([p.detach().numpy().copy() for p in params])
    return history, opt


def _problem(steps: int = 6):
    rng = np.random.default_rng(0)
    p0 = [rng.normal(size=3), rng.normal(size=(2, 2))]
    # different scales per tensor, so per-tensor and global norms differ from a plain sign step
    grads = [[rng.normal(size=3), 10.0 * rng.normal(size=(2, 2))] for _ in range(steps)]
    return p0, grads


def _assert_history(got, want):
    assert len(got) == len(want)
    for step, (g_step, w_step) in enumerate(zip(got, want)):
        for g, w in zip(g_step, w_step):
            np.testing.assert_allclose(g, w, rtol=1e-12, atol=1e-14, err_msg=f"step {step + 1}")


# Each preset with its identity written out here (not read from the registry).
CASES = {
    "rlo": (
        {"lr": 0.05, "weight_decay": 0.1},
        {"lr": 0.05, "weight_decay": 0.1, "direction": "sign", "precondition": False, "global_norm": False},
    ),
    "rlo-lambda": (
        {"lr": 0.05, "gamma": 0.7, "belief": 0.2, "weight_decay": 0.05, "betas": (0.8, 0.95, 0.9)},
        {
            "lr": 0.05,
            "gamma": 0.7,
            "belief": 0.2,
            "weight_decay": 0.05,
            "betas": (0.8, 0.95, 0.9),
            "direction": "tanh",
            "precondition": True,
            "global_norm": True,
        },
    ),
    "rlo-lifted": (
        {"lr": 0.05, "gamma": 0.7, "beta3": 0.9, "weight_decay": 0.05},
        {
            "lr": 0.05,
            "gamma": 0.7,
            "betas": (0.9, 0.99, 0.9),
            "weight_decay": 0.05,
            "direction": "tanh",
            "precondition": True,
            "global_norm": True,
            "eta": 0.3,
        },
    ),
}


@pytest.mark.parametrize("foreach", [True, False])
@pytest.mark.parametrize("name", PRESETS)
def test_presets_match_numpy_rule(name, foreach):
    hparams, ref = CASES[name]
    p0, grads = _problem()
    want, _, _ = np_rlo(p0, grads, **ref)
    got, _ = run_torch(lambda ps: create_optimizer(name, ps, foreach=foreach, **hparams), p0, grads)
    _assert_history(got, want)


def test_hand_worked_two_steps():
    # p0 = (1, 1), lr 0.1, rlo defaults (b1 0.9, b2 0.99, belief 0.1, sign, no Psi, no normalisation).
    # step 1: g = (3, -4), m = 0: c = 0.1 g -> d = (1, -1); b = 0.1 g / 5 = (0.06, -0.08)
    #         p = (1 - 0.106, 1 + 0.108) = (0.894, 1.108); m = 0.01 g = (0.03, -0.04)
    # step 2: g = (0.03, 1): c = 0.9 m + 0.1 g = (0.03, 0.064) -> d = (1, 1); delta = g - m = (0, 1.04)
    #         b = (0, 0.1); p = (0.894 - 0.1, 1.108 - 0.11) = (0.794, 0.998)
    p = torch.tensor([1.0, 1.0], dtype=torch.float64, requires_grad=True)
    opt = create_optimizer("rlo", [p], lr=0.1)
    p.grad = torch.tensor([3.0, -4.0], dtype=torch.float64)
    opt.step()
    torch.testing.assert_close(p.detach(), torch.tensor([0.894, 1.108], dtype=torch.float64))
    torch.testing.assert_close(opt.state[p]["exp_avg"], torch.tensor([0.03, -0.04], dtype=torch.float64))
    p.grad = torch.tensor([0.03, 1.0], dtype=torch.float64)
    opt.step()
    torch.testing.assert_close(p.detach(), torch.tensor([0.794, 0.998], dtype=torch.float64))


@pytest.mark.parametrize("foreach", [True, False])
def test_hand_worked_step_with_global_norm_on_the_applied_step(foreach):
    # p0 = (1, 1), lr 0.1, sign, belief 0.1, global normalisation on, D = 2.
    # step 1: g = (3, -4), m = 0: d = (1, -1); b = 0.1 g / 5 = (0.06, -0.08); u = d + b = (1.06, -1.08)
    #         ||u|| = sqrt(1.06^2 + 1.08^2) = sqrt(2.2900); u *= sqrt(2) / ||u||
    #         p = (1, 1) - 0.1 u.  (Normalising d instead would leave d = (1, -1) unchanged: sqrt(2)/sqrt(2).)
    u = np.array([1.06, -1.08])
    u_hat = u * math.sqrt(2.0) / math.sqrt(1.06**2 + 1.08**2)
    want = np.array([1.0, 1.0]) - 0.1 * u_hat
    p = torch.tensor([1.0, 1.0], dtype=torch.float64, requires_grad=True)
    opt = create_optimizer("rlo", [p], lr=0.1, global_norm=True, foreach=foreach)
    p.grad = torch.tensor([3.0, -4.0], dtype=torch.float64)
    opt.step()
    np.testing.assert_allclose(p.detach().numpy(), want, rtol=1e-14)
    assert float(np.linalg.norm(u_hat)) == pytest.approx(math.sqrt(2.0), rel=1e-14)
    # lifted, eta 0.5: v = 0.5 (d + b) from v = 0, so the normalised step is the same u_hat
    q = torch.tensor([1.0, 1.0], dtype=torch.float64, requires_grad=True)
    lifted = create_optimizer("rlo", [q], lr=0.1, global_norm=True, eta=0.5, foreach=foreach)
    q.grad = torch.tensor([3.0, -4.0], dtype=torch.float64)
    lifted.step()
    np.testing.assert_allclose(q.detach().numpy(), want, rtol=1e-14)
    np.testing.assert_allclose(lifted.state[q]["velocity"].numpy(), 0.5 * u, rtol=1e-14)


@pytest.mark.parametrize("eta", [None, 0.3])
def test_sign_with_and_without_global_norm_are_different_updates(eta):
    # The 001 ablation's sign x {norm on, norm off} cells must be two arms (issue 13).
    trained = []
    for global_norm in (True, False):
        model = _mlp(torch.float64)
        opt = create_optimizer(
            "rlo", model.parameters(), lr=1e-2, direction="sign", global_norm=global_norm, eta=eta
        )
        for x, y in _batches(20, torch.float64):
            _grad_step(model, opt, x, y)
        trained.append(torch.cat([p.detach().reshape(-1) for p in model.parameters()]))
    on, off = trained
    assert not torch.allclose(on, off, rtol=0, atol=1e-6)
    assert float((on - off).abs().max()) > 1e-4


@pytest.mark.parametrize("foreach", [True, False])
def test_global_norm_spans_groups(foreach):
    # Two groups with different lr: one normalisation over both (D = 3 + 4).
    p0, grads = _problem()
    want, _, _ = np_rlo(
        p0, grads, lr=[0.05, 0.01], direction="tanh", gamma=0.7, precondition=True, global_norm=True
    )
    got, _ = run_torch(
        lambda g: create_optimizer("rlo-lambda", g, gamma=0.7, foreach=foreach),
        p0,
        grads,
        groups=lambda ps: [{"params": [ps[0]], "lr": 0.05}, {"params": [ps[1]], "lr": 0.01}],
    )
    _assert_history(got, want)


@pytest.mark.parametrize("foreach", [True, False])
def test_group_without_global_norm_is_left_out_of_it(foreach):
    p0, grads = _problem()
    want, _, _ = np_rlo(
        p0, grads, lr=0.05, direction="tanh", gamma=0.7, precondition=True, global_norm=[True, False]
    )
    got, _ = run_torch(
        lambda g: create_optimizer("rlo-lambda", g, lr=0.05, gamma=0.7, foreach=foreach),
        p0,
        grads,
        groups=lambda ps: [{"params": [ps[0]]}, {"params": [ps[1]], "global_norm": False}],
    )
    _assert_history(got, want)


# --- special cases with real gradients -------------------------------------------------------------


def _mlp(dtype=torch.float32) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 16), nn.Tanh(), nn.Linear(16, 3)).to(dtype)


def _batches(n: int, dtype=torch.float32):
    g = torch.Generator().manual_seed(1)
    return [
        (torch.randn(32, 5, generator=g, dtype=dtype), torch.randn(32, 3, generator=g, dtype=dtype))
        for _ in range(n)
    ]


def _grad_step(model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor) -> None:
    opt.zero_grad()
    nn.functional.mse_loss(model(x), y).backward()
    opt.step()


@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
@pytest.mark.parametrize("eta", [None, 1.0])
@pytest.mark.parametrize("foreach", [True, False])
def test_rlo_without_belief_is_lion(eta, foreach, weight_decay):
    ours_model, lion_model = _mlp(), _mlp()
    ours = create_optimizer(
        "rlo",
        ours_model.parameters(),
        lr=1e-2,
        betas=(0.9, 0.99, 0.999),
        belief=0.0,
        eta=eta,
        weight_decay=weight_decay,
        foreach=foreach,
    )
    lion = pytorch_optimizer.Lion(
        lion_model.parameters(), lr=1e-2, betas=(0.9, 0.99), weight_decay=weight_decay
    )
    for step, (x, y) in enumerate(_batches(20)):
        _grad_step(ours_model, ours, x, y)
        _grad_step(lion_model, lion, x, y)
        for a, b in zip(ours_model.parameters(), lion_model.parameters()):
            torch.testing.assert_close(a, b, msg=lambda m, s=step: f"step {s + 1}: {m}")


@pytest.mark.parametrize("foreach", [True, False])
def test_rlo_with_b1_zero_is_sign_sgd(foreach):
    model, ref = _mlp(), _mlp()
    lr = 1e-2
    opt = create_optimizer("rlo", model.parameters(), lr=lr, beta1=0.0, belief=0.0, foreach=foreach)
    for x, y in _batches(20):
        _grad_step(model, opt, x, y)
        ref.zero_grad()
        nn.functional.mse_loss(ref(x), y).backward()
        with torch.no_grad():
            for p in ref.parameters():
                p -= lr * torch.sign(p.grad)
        for a, b in zip(model.parameters(), ref.parameters()):
            torch.testing.assert_close(a, b)


@pytest.mark.parametrize(
    "target",
    [
        {"direction": "tanh", "precondition": True, "global_norm": True},
        {"direction": "sign", "precondition": False, "global_norm": False},
    ],
)
def test_lifted_with_eta_one_is_the_direct_rule(target):
    lifted_model, direct_model = _mlp(torch.float64), _mlp(torch.float64)
    lifted = create_optimizer("rlo-lifted", lifted_model.parameters(), lr=1e-2, eta=1.0, **target)
    direct = create_optimizer("rlo-lambda", direct_model.parameters(), lr=1e-2, eta=None, **target)
    for x, y in _batches(20, torch.float64):
        _grad_step(lifted_model, lifted, x, y)
        _grad_step(direct_model, direct, x, y)
        for a, b in zip(lifted_model.parameters(), direct_model.parameters()):
            torch.testing.assert_close(a, b, rtol=0.0, atol=0.0)
    assert lifted.diagnostics()["tube_residual"] == 0.0
    assert lifted.diagnostics()["tube_cosine"] == pytest.approx(1.0, abs=1e-12)


def test_foreach_matches_forloop_with_mixed_dtypes():
    # One group holding float32 and float64 tensors: the foreach path groups by dtype.
    results = []
    for foreach in (True, False):
        torch.manual_seed(0)
        a = torch.randn(4, 3, requires_grad=True)
        b = torch.randn(5, dtype=torch.float64, requires_grad=True)
        opt = create_optimizer("rlo-lifted", [a, b], lr=1e-2, foreach=foreach)
        g = torch.Generator().manual_seed(2)
        for _ in range(5):
            a.grad = torch.randn(4, 3, generator=g)
            b.grad = torch.randn(5, generator=g, dtype=torch.float64)
            opt.step()
        results.append((a.detach().clone(), b.detach().clone(), opt.diagnostics()))
    torch.testing.assert_close(results[0][0], results[1][0])
    torch.testing.assert_close(results[0][1], results[1][1])
    for key, value in results[0][2].items():
        assert value == pytest.approx(results[1][2][key], rel=1e-5)


# --- diagnostics -----------------------------------------------------------------------------------


@pytest.mark.parametrize("foreach", [True, False])
def test_lifted_diagnostics_match_hand_computation(foreach):
    hparams, ref = CASES["rlo-lifted"]
    p0, grads = _problem()
    _, v, targets = np_rlo(p0, grads, **ref)
    _, opt = run_torch(lambda ps: create_optimizer("rlo-lifted", ps, foreach=foreach, **hparams), p0, grads)
    v_flat = np.concatenate([x.ravel() for x in v])
    t_flat = np.concatenate([x.ravel() for x in targets])
    residual = np.linalg.norm(v_flat - t_flat)
    want = {
        "tube_residual": residual,
        "tube_relative_residual": residual / np.linalg.norm(t_flat),
        "tube_cosine": v_flat @ t_flat / (np.linalg.norm(v_flat) * np.linalg.norm(t_flat)),
    }
    got = opt.diagnostics()
    assert set(got) == set(want)
    for key in want:
        assert got[key] == pytest.approx(want[key], rel=1e-9), key
    assert 0.0 < got["tube_residual"] and got["tube_cosine"] < 1.0


def test_diagnostics_before_first_step_and_for_direct_variants():
    p = torch.zeros(3, requires_grad=True)
    lifted = create_optimizer("rlo-lifted", [p])
    assert set(lifted.diagnostics()) == {"tube_residual", "tube_relative_residual", "tube_cosine"}
    assert all(math.isnan(v) for v in lifted.diagnostics().values())
    for name in ("rlo", "rlo-lambda"):
        opt = create_optimizer(name, [p])
        p.grad = torch.ones(3)
        opt.step()
        assert opt.diagnostics() == {}


# --- hyperparameters and the registry --------------------------------------------------------------

BAD = [
    ({"lr": -1.0}, r"lr.*-1\.0"),
    ({"betas": (0.9, 1.0, 0.999)}, r"index 1: 1\.0"),
    ({"betas": (0.9, 0.99, -0.1)}, r"index 2: -0\.1"),
    ({"betas": (0.9, 0.99)}, r"betas.*\(0\.9, 0\.99\).*3 values"),
    ({"direction": "sgn"}, r"direction 'sgn'; did you mean 'sign'\? choices: sign, tanh"),
    ({"gamma": 0.0}, r"gamma.*0\.0"),
    ({"eta": 0.0}, r"eta.*0\.0"),
    ({"eta": 1.5}, r"eta.*1\.5"),
    ({"belief": -0.1}, r"belief.*-0\.1"),
    ({"eps": 0.0}, r"eps.*0\.0"),
    ({"weight_decay": -0.01}, r"weight_decay.*-0\.01"),
    ({"precondition": "yes"}, r"precondition.*'yes'"),
    ({"global_norm": 1}, r"global_norm.*1"),
]


@pytest.mark.parametrize("cls", [RLO, RLOLambda, RLOLifted])
@pytest.mark.parametrize(("kwargs", "match"), BAD)
def test_bad_hyperparameters_raise_with_the_value(cls, kwargs, match):
    with pytest.raises(ValueError, match=match):
        cls([torch.zeros(2, requires_grad=True)], **kwargs)


def test_bad_values_rejected_in_groups_and_through_the_registry():
    p = torch.zeros(2, requires_grad=True)
    with pytest.raises(ValueError, match=r"eta.*2\.0"):
        RLO([{"params": [p], "eta": 2.0}])
    with pytest.raises(ConfigError, match="did you mean 'tanh'"):
        create_optimizer("rlo-lambda", [p], direction="tahn")


def test_presets_are_registered_with_their_identity_and_spaces():
    assert set(PRESETS) <= set(list_optimizers("rlo*"))
    identity = {
        "rlo": ("sign", False, False, None),
        "rlo-lambda": ("tanh", True, True, None),
        "rlo-lifted": ("tanh", True, True, 0.3),
    }
    for name, (direction, precondition, global_norm, eta) in identity.items():
        opt = create_optimizer(name, [torch.zeros(2, requires_grad=True)])
        group = opt.param_groups[0]
        assert (group["direction"], group["precondition"], group["global_norm"], group["eta"]) == (
            direction,
            precondition,
            global_norm,
            eta,
        )
        assert (group["lr"], group["betas"], group["belief"], group["gamma"], group["eps"]) == (
            1e-4,
            (0.9, 0.99, 0.999),
            0.1,
            5.0,
            1e-8,
        )
        # constructing the class directly gives the same preset as the registry
        direct = get_optimizer_info(name).cls([torch.zeros(2, requires_grad=True)])
        assert direct.defaults == opt.defaults
        searched = {"lr", "beta1", "beta2", "beta3", "eta", "gamma", "belief", "direction"}
        assert searched <= set(hyperparameter_names(name))
        space = get_optimizer_info(name).space
        assert dict(space["direction"]) == {"choices": ["sign", "tanh"]}
        assert ("gamma" in space) == (name != "rlo")
        assert ("eta" in space) == (name == "rlo-lifted")


def test_registry_overrides_fold_into_betas_and_lift():
    p = torch.zeros(2, requires_grad=True)
    opt = create_optimizer("rlo-lifted", [p], eta=1.0, beta2=0.95, beta3=0.9)
    assert opt.param_groups[0]["eta"] == 1.0
    assert opt.param_groups[0]["betas"] == (0.9, 0.95, 0.9)
    lifted_sign = create_optimizer("rlo", [p], eta=0.5)
    assert lifted_sign.param_groups[0]["eta"] == 0.5


def test_state_dict_round_trip_reproduces_the_lifted_trajectory():
    p0, grads = _problem(8)
    full, _ = run_torch(lambda ps: create_optimizer("rlo-lifted", ps, lr=0.05, gamma=0.7), p0, grads)
    first, opt = run_torch(lambda ps: create_optimizer("rlo-lifted", ps, lr=0.05, gamma=0.7), p0, grads[:4])
    params = [torch.tensor(x, requires_grad=True) for x in first[-1]]
    resumed = create_optimizer("rlo-lifted", params, lr=0.05, gamma=0.7)
    resumed.load_state_dict(opt.state_dict())
    assert resumed.diagnostics() == opt.diagnostics()
    for g_step, want in zip(grads[4:], full[4:]):
        for p, g in zip(params, g_step):
            p.grad = torch.tensor(g)
        resumed.step()
        for p, w in zip(params, want):
            np.testing.assert_allclose(p.detach().numpy(), w, rtol=1e-12, atol=1e-14)


# --- the 001 ablation ------------------------------------------------------------------------------


@pytest.mark.parametrize("global_norm", [True, False])
@pytest.mark.parametrize("direction", ["tanh", "sign"])
def test_ablation_grid_makes_progress_on_a_quadratic(direction, global_norm):
    # f(x) = 0.5 * sum_i a_i x_i^2 with curvatures 1..10, minimum 0 at x = 0.
    a = torch.logspace(0, 1, 10, dtype=torch.float64)
    x = torch.ones(10, dtype=torch.float64, requires_grad=True)
    opt = create_optimizer("rlo-lambda", [x], lr=1e-2, direction=direction, global_norm=global_norm)

    def loss() -> torch.Tensor:
        return 0.5 * (a * x * x).sum()

    initial = loss().item()
    for _ in range(300):
        opt.zero_grad()
        loss().backward()
        opt.step()
    assert loss().item() < 0.01 * initial
