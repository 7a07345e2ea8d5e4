"""expdecay-gradnorm against the rule of METHODS.md section 3, written out in numpy."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch

from lyaptune.errors import ConfigError
from lyaptune.optim import create_optimizer, get_optimizer_info
from lyaptune.optim.expdecay import ExpDecayGradNorm, global_grad_norm

GRADS = [  # a fixed gradient sequence for two tensors of shapes (3,) and (2, 2)
    (np.array([2.0, -1.0, 0.0]), np.array([[0.5, -3.0], [1.5, 0.25]])),
    (np.array([-0.5, 4.0, 1.0]), np.array([[1.0, 2.0], [-2.0, 0.0]])),
    (np.array([1.0, 1.0, -2.0]), np.array([[-0.75, 0.5], [3.0, -1.0]])),
    (np.array([0.1, -0.2, 0.3]), np.array([[2.0, -1.0], [0.5, 1.5]])),
]
P0 = (np.array([1.0, -2.0, 0.5]), np.array([[0.3, -0.7], [1.1, 2.0]]))


def reference(p0, grads, ks, *, lrs, decay, momentum=0.0, wd=0.0):
    """The rule by hand over several tensors (one lr each): ks[t] is the decay exponent k of step t."""
    ps = [p.copy() for p in p0]
    bufs = [np.zeros_like(p) for p in p0]
    alphas, norms = [], []
    for k, gs in zip(ks, grads, strict=True):
        norm = math.sqrt(sum(float(np.sum(g * g)) for g in gs))  # global over all tensors
        for i, g in enumerate(gs):
            alpha = lrs[i] * math.exp(-decay * k)
            ps[i] = ps[i] * (1.0 - alpha * wd)
            bufs[i] = momentum * bufs[i] + g / (1.0 + norm)
            ps[i] = ps[i] - alpha * bufs[i]
        alphas.append(lrs[0] * math.exp(-decay * k))
        norms.append(norm)
    return ps, alphas, norms


def make_params():
    return [torch.nn.Parameter(torch.tensor(a, dtype=torch.float64)) for a in P0]


def set_grads(params, grads):
    for p, g in zip(params, grads, strict=True):
        p.grad = torch.tensor(g, dtype=torch.float64)


def test_first_steps_by_hand():
    # ||g|| = ||(3, 0, 4)|| = 5 across both tensors; step 1 uses alpha0 = 0.6: p -= 0.6 * g / 6.
    a = torch.nn.Parameter(torch.tensor([1.0, 1.0], dtype=torch.float64))
    b = torch.nn.Parameter(torch.tensor([1.0], dtype=torch.float64))
    opt = ExpDecayGradNorm([a, b], lr=0.6, decay=0.5, decay_per="step")
    a.grad = torch.tensor([3.0, 0.0], dtype=torch.float64)
    b.grad = torch.tensor([4.0], dtype=torch.float64)
    opt.step()
    torch.testing.assert_close(a.detach(), torch.tensor([0.7, 1.0], dtype=torch.float64))
    torch.testing.assert_close(b.detach(), torch.tensor([0.6], dtype=torch.float64))
    # step 2 (k = 1): alpha = 0.6 * e^-0.5, same gradients.
    opt.step()
    expected_b = 0.6 - 0.6 * math.exp(-0.5) * 4.0 / 6.0
    assert b.item() == pytest.approx(expected_b, rel=1e-14)


@pytest.mark.parametrize("foreach", [False, True])
def test_decay_per_epoch(foreach):
    params = make_params()
    opt = ExpDecayGradNorm(params, lr=0.5, decay=0.3, decay_per="epoch", foreach=foreach)
    # step, step, | step, | | step  ->  k = 0, 0, 1, 3
    for t, gs in enumerate(GRADS):
        set_grads(params, gs)
        opt.step()
        if t == 1:
            opt.epoch_end()
        if t == 2:
            opt.epoch_end()
            opt.epoch_end()
    ref, _, _ = reference(P0, GRADS, [0, 0, 1, 3], lrs=[0.5, 0.5], decay=0.3)
    for p, r in zip(params, ref, strict=True):
        np.testing.assert_allclose(p.detach().numpy(), r, rtol=1e-12, atol=1e-14)
    assert opt.epochs_completed == 3 and opt.steps_taken == 4


@pytest.mark.parametrize("foreach", [False, True])
def test_decay_per_step_ignores_epochs(foreach):
    params = make_params()
    opt = ExpDecayGradNorm(params, lr=0.5, decay=0.3, decay_per="step", foreach=foreach)
    for gs in GRADS:
        set_grads(params, gs)
        opt.step()
        opt.epoch_end()
    ref, _, _ = reference(P0, GRADS, [0, 1, 2, 3], lrs=[0.5, 0.5], decay=0.3)
    for p, r in zip(params, ref, strict=True):
        np.testing.assert_allclose(p.detach().numpy(), r, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize(("momentum", "wd"), [(0.0, 0.2), (0.7, 0.0), (0.7, 0.2)])
def test_momentum_and_weight_decay(foreach, momentum, wd):
    params = make_params()
    opt = ExpDecayGradNorm(
        params, lr=0.4, decay=0.2, decay_per="step", momentum=momentum, weight_decay=wd, foreach=foreach
    )
    for gs in GRADS:
        set_grads(params, gs)
        opt.step()
    ref, _, _ = reference(P0, GRADS, [0, 1, 2, 3], lrs=[0.4, 0.4], decay=0.2, momentum=momentum, wd=wd)
    for p, r in zip(params, ref, strict=True):
        np.testing.assert_allclose(p.detach().numpy(), r, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("foreach", [False, True])
def test_two_groups_share_the_global_norm(foreach):
    params = make_params()
    opt = ExpDecayGradNorm(
        [{"params": [params[0]], "lr": 0.9}, {"params": [params[1]], "lr": 0.05}],
        decay=0.1,
        decay_per="step",
        foreach=foreach,
    )
    for gs in GRADS:
        set_grads(params, gs)
        opt.step()
    ref, alphas, norms = reference(P0, GRADS, [0, 1, 2, 3], lrs=[0.9, 0.05], decay=0.1)
    for p, r in zip(params, ref, strict=True):
        np.testing.assert_allclose(p.detach().numpy(), r, rtol=1e-12, atol=1e-14)
    diag = opt.diagnostics()
    assert diag["expdecay_alpha"] == pytest.approx(alphas[-1], rel=1e-14)
    assert diag["expdecay_grad_norm"] == pytest.approx(norms[-1], rel=1e-12)
    assert diag["expdecay_step_size"] == pytest.approx(alphas[-1] / (1 + norms[-1]), rel=1e-12)


def test_diagnostics_before_first_step_are_nan():
    opt = ExpDecayGradNorm([torch.nn.Parameter(torch.zeros(2))])
    assert set(opt.diagnostics()) == {"expdecay_alpha", "expdecay_grad_norm", "expdecay_step_size"}
    assert all(math.isnan(v) for v in opt.diagnostics().values())


@pytest.mark.parametrize("foreach", [False, True])
def test_tensor_lr_matches_float_lr(foreach):
    params = make_params()
    opt = ExpDecayGradNorm(
        params,
        lr=torch.tensor(0.4, dtype=torch.float64),
        decay=0.2,
        decay_per="step",
        momentum=0.5,
        weight_decay=0.1,
        foreach=foreach,
    )
    for gs in GRADS:
        set_grads(params, gs)
        opt.step()
    ref, _, _ = reference(P0, GRADS, [0, 1, 2, 3], lrs=[0.4, 0.4], decay=0.2, momentum=0.5, wd=0.1)
    for p, r in zip(params, ref, strict=True):
        np.testing.assert_allclose(p.detach().numpy(), r, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("foreach", [False, True, None])
def test_global_grad_norm_mixed_dtypes(foreach):
    a = np.array([1.0, -2.0, 2.0])
    b = np.arange(6.0).reshape(2, 3)
    grads = [torch.tensor(a, dtype=torch.float32), torch.tensor(b, dtype=torch.float64), torch.tensor(0.5)]
    norm = global_grad_norm(grads, foreach=foreach)
    assert norm.dtype == torch.float64 and norm.dim() == 0
    expected = math.sqrt(float(np.sum(a * a) + np.sum(b * b)) + 0.25)
    assert norm.item() == pytest.approx(expected, rel=1e-7)


def test_counters_round_trip_through_state_dict():
    params = make_params()
    opt = ExpDecayGradNorm(params, lr=0.5, decay=0.3)
    set_grads(params, GRADS[0])
    opt.step()
    opt.epoch_end()
    saved = copy.deepcopy(opt.state_dict())
    snapshot = opt.state_dict()
    opt.epoch_end()  # must not change a state_dict taken before
    assert snapshot["state"]["counters"] == {"steps": 1, "epochs": 1}

    params2 = [torch.nn.Parameter(p.detach().clone()) for p in params]
    opt2 = ExpDecayGradNorm(params2, lr=0.5, decay=0.3)
    opt2.load_state_dict(saved)
    assert (opt2.steps_taken, opt2.epochs_completed) == (1, 1)
    assert opt2.alpha() == pytest.approx(0.5 * math.exp(-0.3), rel=1e-15)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"lr": -0.1}, "Invalid learning rate: -0.1"),
        ({"decay": -0.5}, "Invalid decay value: -0.5"),
        ({"momentum": 1.0}, "Invalid momentum value: 1.0"),
        ({"weight_decay": -2.0}, "Invalid weight_decay value: -2.0"),
    ],
)
def test_invalid_hyperparameters(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ExpDecayGradNorm([torch.nn.Parameter(torch.zeros(2))], **kwargs)


def test_invalid_decay_per_names_choices():
    with pytest.raises(ConfigError, match=r"'epochs'; did you mean 'epoch'\? choices: epoch, step"):
        ExpDecayGradNorm([torch.nn.Parameter(torch.zeros(2))], decay_per="epochs")


def test_registry_entry():
    info = get_optimizer_info("expdecay-gradnorm")
    assert info.cls is ExpDecayGradNorm
    assert dict(info.defaults) == {
        "lr": 0.1,
        "decay": 0.05,
        "decay_per": "epoch",
        "momentum": 0.0,
        "weight_decay": 0.0,
    }
    assert dict(info.space["decay"]) == {"low": 1e-4, "high": 0.5, "log": True}
    opt = create_optimizer("expdecay-gradnorm", [torch.nn.Parameter(torch.zeros(2))], decay_per="step")
    assert opt.param_groups[0]["decay_per"] == "step"


def test_torch_compile_runs_the_step_eagerly():
    # The rate depends on host counters, so a compiled step must not bake them into a graph.
    params = make_params()
    opt = ExpDecayGradNorm(params, lr=0.5, decay=0.3, decay_per="step")
    compiled_step = torch.compile(opt.step)
    for gs in GRADS:
        set_grads(params, gs)
        compiled_step()
    ref, _, _ = reference(P0, GRADS, [0, 1, 2, 3], lrs=[0.5, 0.5], decay=0.3)
    for p, r in zip(params, ref, strict=True):
        np.testing.assert_allclose(p.detach().numpy(), r, rtol=1e-12, atol=1e-14)
