"""LyAm against the rule of METHODS.md section 1, written out in numpy."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from lyaptune.optim import create_optimizer, get_optimizer_info
from lyaptune.optim.lyam import LyAm

GRADS = [  # a fixed gradient sequence for two tensors of shapes (3,) and (2, 2)
    (np.array([2.0, -1.0, 0.0]), np.array([[0.5, -3.0], [1.5, 0.25]])),
    (np.array([-0.5, 4.0, 1.0]), np.array([[1.0, 2.0], [-2.0, 0.0]])),
    (np.array([1.0, 1.0, -2.0]), np.array([[-0.75, 0.5], [3.0, -1.0]])),
    (np.array([0.1, -0.2, 0.3]), np.array([[2.0, -1.0], [0.5, 1.5]])),
]
P0 = (np.array([1.0, -2.0, 0.5]), np.array([[0.3, -0.7], [1.1, 2.0]]))


def reference(p0, grads, *, lr, b1=0.9, b2=0.999, wd=0.0, bc=True):
    """LyAm by hand: returns (p, m, v) after len(grads) steps; t counts from 1."""
    p, m, v = p0.copy(), np.zeros_like(p0), np.zeros_like(p0)
    for t, g in enumerate(grads, start=1):
        p = p * (1.0 - lr * wd)
        m = b1 * m + (1.0 - b1) * g
        v = b2 * v + (1.0 - b2) * g * g
        m_hat = m / (1.0 - b1**t) if bc else m
        v_hat = v / (1.0 - b2**t) if bc else v
        p = p - lr / (1.0 + v_hat) * m_hat
    return p, m, v


def make_params():
    return [torch.nn.Parameter(torch.tensor(a, dtype=torch.float64)) for a in P0]


def run(opt, params, grads):
    for step_grads in grads:
        for p, g in zip(params, step_grads, strict=True):
            p.grad = None if g is None else torch.tensor(g, dtype=torch.float64)
        opt.step()


def test_first_step_by_hand():
    # t = 1: m_hat = g and v_hat = g^2, so p1 = p0 - lr * g / (1 + g^2).
    p = torch.nn.Parameter(torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64))
    opt = LyAm([p], lr=0.1)
    p.grad = torch.tensor([2.0, -1.0, 0.0], dtype=torch.float64)
    opt.step()
    torch.testing.assert_close(p.detach(), torch.tensor([0.96, -1.95, 0.5], dtype=torch.float64))


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("bias_correction", [True, False])
@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_matches_numpy(foreach, bias_correction, weight_decay):
    params = make_params()
    opt = LyAm(
        params,
        lr=0.05,
        betas=(0.8, 0.95),
        weight_decay=weight_decay,
        bias_correction=bias_correction,
        foreach=foreach,
    )
    run(opt, params, GRADS)
    for i, p in enumerate(params):
        ref_p, ref_m, ref_v = reference(
            P0[i], [g[i] for g in GRADS], lr=0.05, b1=0.8, b2=0.95, wd=weight_decay, bc=bias_correction
        )
        state = opt.state[p]
        np.testing.assert_allclose(p.detach().numpy(), ref_p, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(state["exp_avg"].numpy(), ref_m, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(state["exp_avg_sq"].numpy(), ref_v, rtol=1e-12, atol=1e-14)
        assert float(state["step"]) == len(GRADS)


@pytest.mark.parametrize("foreach", [False, True])
def test_two_groups_different_lr(foreach):
    params = make_params()
    opt = LyAm(
        [{"params": [params[0]], "lr": 0.3}, {"params": [params[1]], "lr": 0.02, "betas": (0.5, 0.9)}],
        foreach=foreach,
    )
    run(opt, params, GRADS)
    ref0, _, _ = reference(P0[0], [g[0] for g in GRADS], lr=0.3)
    ref1, _, _ = reference(P0[1], [g[1] for g in GRADS], lr=0.02, b1=0.5, b2=0.9)
    np.testing.assert_allclose(params[0].detach().numpy(), ref0, rtol=1e-12)
    np.testing.assert_allclose(params[1].detach().numpy(), ref1, rtol=1e-12)


@pytest.mark.parametrize("foreach", [False, True])
def test_per_parameter_step_count(foreach):
    # The second tensor gets no gradient at step 2: its own t runs 1, 2, 3 over steps 1, 3, 4, and the
    # count survives a state_dict round trip (the bias corrections use it).
    grads = [GRADS[0], (GRADS[1][0], None), GRADS[2], GRADS[3]]
    params = make_params()
    opt = LyAm(params, lr=0.1, foreach=foreach)
    run(opt, params, grads[:2])
    saved = copy.deepcopy(opt.state_dict())
    params2 = [torch.nn.Parameter(p.detach().clone()) for p in params]
    opt2 = LyAm(params2, lr=0.1, foreach=foreach)
    opt2.load_state_dict(saved)
    run(opt2, params2, grads[2:])
    ref0, _, _ = reference(P0[0], [g[0] for g in grads], lr=0.1)
    ref1, _, _ = reference(P0[1], [g[1] for g in grads if g[1] is not None], lr=0.1)
    np.testing.assert_allclose(params2[0].detach().numpy(), ref0, rtol=1e-12)
    np.testing.assert_allclose(params2[1].detach().numpy(), ref1, rtol=1e-12)
    assert [float(opt2.state[p]["step"]) for p in params2] == [4.0, 3.0]


@pytest.mark.parametrize("foreach", [False, True])
def test_tensor_lr_matches_float_lr(foreach):
    params = make_params()
    opt = LyAm(params, lr=torch.tensor(0.05, dtype=torch.float64), weight_decay=0.1, foreach=foreach)
    run(opt, params, GRADS)
    for i, p in enumerate(params):
        ref, _, _ = reference(P0[i], [g[i] for g in GRADS], lr=0.05, wd=0.1)
        np.testing.assert_allclose(p.detach().numpy(), ref, rtol=1e-12)


def test_small_gradients_act_like_sgd_momentum():
    # With |g| << 1, 1 + v_hat ~ 1 and the step is lr * m_hat: on a constant gradient m_hat = g exactly.
    p = torch.nn.Parameter(torch.zeros(4, dtype=torch.float64))
    opt = LyAm([p], lr=0.5)
    g = torch.full((4,), 1e-4, dtype=torch.float64)
    for _ in range(3):
        p.grad = g.clone()
        opt.step()
    torch.testing.assert_close(p.detach(), -3 * 0.5 * g, rtol=1e-7, atol=0.0)


def test_closure_returns_loss():
    p = torch.nn.Parameter(torch.tensor([3.0], dtype=torch.float64))
    opt = LyAm([p], lr=0.1)

    def closure():
        opt.zero_grad()
        loss = (p**2).sum()
        loss.backward()
        return loss

    loss = opt.step(closure)
    assert loss.item() == 9.0
    # g = 6: p1 = 3 - 0.1 * 6 / 37
    assert p.item() == pytest.approx(3.0 - 0.6 / 37.0, rel=1e-14)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"lr": -0.1}, "Invalid learning rate: -0.1"),
        ({"betas": (1.0, 0.999)}, "Invalid beta parameter at index 0: 1.0"),
        ({"betas": (0.9, -0.5)}, "Invalid beta parameter at index 1: -0.5"),
        ({"weight_decay": -1e-3}, "Invalid weight_decay value: -0.001"),
    ],
)
def test_invalid_hyperparameters(kwargs, message):
    with pytest.raises(ValueError, match=message):
        LyAm([torch.nn.Parameter(torch.zeros(2))], **kwargs)


def test_registry_entry():
    info = get_optimizer_info("lyam")
    assert info.cls is LyAm
    assert dict(info.defaults) == {
        "lr": 1e-2,
        "betas": (0.9, 0.999),
        "weight_decay": 0.0,
        "bias_correction": True,
    }
    assert info.space["lr"]["low"] == 1e-4 and info.space["lr"]["high"] == 1.0 and info.space["lr"]["log"]
    opt = create_optimizer("lyam", [torch.nn.Parameter(torch.zeros(2))], beta2=0.99, bias_correction=False)
    assert opt.param_groups[0]["betas"] == (0.9, 0.99)
    assert opt.param_groups[0]["bias_correction"] is False


@pytest.mark.slow
@pytest.mark.parametrize("foreach", [False, True])
def test_torch_compile_matches_numpy(foreach):
    # Traced steps take the bias corrections from the step tensors (the Python mirror would be baked
    # into the graph); eager steps after them pick the count up again from the tensors.
    params = make_params()
    opt = LyAm(params, lr=0.05, weight_decay=0.1, foreach=foreach)
    compiled_step = torch.compile(opt.step)
    for t, step_grads in enumerate(GRADS):
        for p, g in zip(params, step_grads, strict=True):
            p.grad = torch.tensor(g, dtype=torch.float64)
        if t < 2:
            compiled_step()
        else:
            opt.step()
    for i, p in enumerate(params):
        ref, _, _ = reference(P0[i], [g[i] for g in GRADS], lr=0.05, wd=0.1)
        np.testing.assert_allclose(p.detach().numpy(), ref, rtol=1e-12)
