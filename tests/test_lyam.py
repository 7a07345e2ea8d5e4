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


def reference(p0, grads, *, lr, b1=0.9, b2=0.999, wd=0.0, bc=True, scaling="lyapunov", eps=1e-8):
    """LyAm by hand: returns (p, m, v) after len(grads) steps; t counts from 1.

    ``scaling="adam"`` divides by Adam's sqrt(v_hat) + eps instead of 1 + v_hat.
    """
    p, m, v = p0.copy(), np.zeros_like(p0), np.zeros_like(p0)
    for t, g in enumerate(grads, start=1):
        p = p * (1.0 - lr * wd)
        m = b1 * m + (1.0 - b1) * g
        v = b2 * v + (1.0 - b2) * g * g
        m_hat = m / (1.0 - b1**t) if bc else m
        v_hat = v / (1.0 - b2**t) if bc else v
        denom = 1.0 + v_hat if scaling == "lyapunov" else np.sqrt(v_hat) + eps
        p = p - lr * m_hat / denom
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


def test_first_step_by_hand_adam_scaling():
    # t = 1: m_hat = g and sqrt(v_hat) = |g|, so p1 = p0 - lr * g / (|g| + eps): a sign step of size lr
    # (0 where g = 0).
    p = torch.nn.Parameter(torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64))
    opt = LyAm([p], lr=0.1, scaling="adam", eps=1e-8)
    p.grad = torch.tensor([2.0, -1.0, 0.0], dtype=torch.float64)
    opt.step()
    expected = [1.0 - 0.1 * 2.0 / (2.0 + 1e-8), -2.0 + 0.1 * 1.0 / (1.0 + 1e-8), 0.5]
    torch.testing.assert_close(p.detach(), torch.tensor(expected, dtype=torch.float64), rtol=1e-15, atol=0.0)


def test_second_step_by_hand_both_scalings():
    # One scalar, b1 = 0.5, b2 = 0.75, lr = 0.1, no bias correction, g = 2 then g = 4:
    #   m1 = 1, v1 = 1;  m2 = 0.5*1 + 0.5*4 = 2.5,  v2 = 0.75*1 + 0.25*16 = 4.75
    #   lyapunov: p2 = p1 - 0.1 * 2.5 / 5.75           with p1 = 0 - 0.1 * 1 / 2 = -0.05
    #   adam:     p2 = p1 - 0.1 * 2.5 / (sqrt(4.75) + 0.5)  with p1 = 0 - 0.1 * 1 / (1 + 0.5)
    expected = {
        "lyapunov": -0.05 - 0.25 / 5.75,
        "adam": -0.1 / 1.5 - 0.25 / (4.75**0.5 + 0.5),
    }
    for scaling, want in expected.items():
        for foreach in (False, True):
            p = torch.nn.Parameter(torch.zeros(1, dtype=torch.float64))
            opt = LyAm(
                [p],
                lr=0.1,
                betas=(0.5, 0.75),
                bias_correction=False,
                scaling=scaling,
                eps=0.5,
                foreach=foreach,
            )
            for g in (2.0, 4.0):
                p.grad = torch.tensor([g], dtype=torch.float64)
                opt.step()
            assert p.item() == pytest.approx(want, rel=1e-14), (scaling, foreach)


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("bias_correction", [True, False])
@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
@pytest.mark.parametrize("scaling", ["lyapunov", "adam"])
def test_matches_numpy(foreach, bias_correction, weight_decay, scaling):
    params = make_params()
    opt = LyAm(
        params,
        lr=0.05,
        betas=(0.8, 0.95),
        weight_decay=weight_decay,
        bias_correction=bias_correction,
        scaling=scaling,
        eps=1e-3,
        foreach=foreach,
    )
    run(opt, params, GRADS)
    for i, p in enumerate(params):
        ref_p, ref_m, ref_v = reference(
            P0[i],
            [g[i] for g in GRADS],
            lr=0.05,
            b1=0.8,
            b2=0.95,
            wd=weight_decay,
            bc=bias_correction,
            scaling=scaling,
            eps=1e-3,
        )
        state = opt.state[p]
        np.testing.assert_allclose(p.detach().numpy(), ref_p, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(state["exp_avg"].numpy(), ref_m, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(state["exp_avg_sq"].numpy(), ref_v, rtol=1e-12, atol=1e-14)
        assert float(state["step"]) == len(GRADS)


@pytest.mark.parametrize("foreach", [False, True])
def test_adam_scaling_is_torch_adamw(foreach):
    # scaling="adam" with bias correction and decoupled weight decay is AdamW's rule: compare with
    # torch.optim.AdamW (an independent implementation) over the gradient sequence.
    params = make_params()
    ref_params = make_params()
    opt = LyAm(
        params, lr=0.05, betas=(0.8, 0.95), weight_decay=0.1, scaling="adam", eps=1e-3, foreach=foreach
    )
    ref = torch.optim.AdamW(
        ref_params, lr=0.05, betas=(0.8, 0.95), weight_decay=0.1, eps=1e-3, foreach=foreach
    )
    run(opt, params, GRADS)
    run(ref, ref_params, GRADS)
    for p, q in zip(params, ref_params, strict=True):
        torch.testing.assert_close(p.detach(), q.detach(), rtol=1e-12, atol=1e-14)


def test_scalings_differ():
    # The ablation's two arms are different updates: same gradients, different parameters after 4 steps.
    out = {}
    for scaling in ("lyapunov", "adam"):
        params = make_params()
        run(LyAm(params, lr=0.05, scaling=scaling), params, GRADS)
        out[scaling] = np.concatenate([p.detach().numpy().ravel() for p in params])
    assert np.abs(out["lyapunov"] - out["adam"]).max() > 1e-3


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
        ({"eps": 0.0}, "Invalid epsilon value eps: 0.0"),
        ({"scaling": "adamw"}, "unknown scaling 'adamw'; did you mean 'adam'\\? choices: lyapunov, adam"),
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
        "scaling": "lyapunov",
    }
    assert info.space["lr"]["low"] == 1e-4 and info.space["lr"]["high"] == 1.0 and info.space["lr"]["log"]
    opt = create_optimizer("lyam", [torch.nn.Parameter(torch.zeros(2))], beta2=0.99, bias_correction=False)
    assert opt.param_groups[0]["betas"] == (0.9, 0.99)
    assert opt.param_groups[0]["bias_correction"] is False
    assert opt.param_groups[0]["scaling"] == "lyapunov"
    # papers/000's ablation arm sets the scaling as a fixed hyperparameter (optimizer_args in a spec).
    opt = create_optimizer("lyam", [torch.nn.Parameter(torch.zeros(2))], scaling="adam", eps=1e-6)
    assert opt.param_groups[0]["scaling"] == "adam" and opt.param_groups[0]["eps"] == 1e-6
    assert "scaling" not in info.space  # fixed per arm, never searched by `space: default`


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
