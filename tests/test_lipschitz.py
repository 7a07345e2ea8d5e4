"""Tests of lyaptune.lipschitz against independently computed spectra (dense Hessians, closed forms)."""

from __future__ import annotations

import functools
import math
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn
from torch.func import functional_call
from torch.nn import functional as F

from lyaptune.errors import ConfigError, UserError
from lyaptune.lipschitz import (
    METHODS,
    LipschitzEstimate,
    LipschitzProgress,
    NonFiniteHessianError,
    derived_step_size,
    estimate_lipschitz,
    hessian_spectral_norm,
    initial_loss,
)

DUMMY = (torch.zeros(1, 1), torch.zeros(1))


def _out(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return out


class Quadratic(nn.Module):
    """0.5 w^T A w, independent of the data."""

    def __init__(self, a: torch.Tensor, seed: int = 0) -> None:
        super().__init__()
        self.register_buffer("A", a)
        g = torch.Generator().manual_seed(seed)
        self.w = nn.Parameter(torch.randn(a.shape[0], generator=g, dtype=a.dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 0.5 * self.w @ self.A @ self.w


def _sym(eigs: list[float], seed: int = 0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((len(eigs), len(eigs))))
    return torch.tensor(q @ np.diag(eigs) @ q.T, dtype=torch.float64)


def _mlp(act: type[nn.Module] = nn.Tanh, dtype: torch.dtype = torch.float64, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    # 4*12+12 + 12*12+12 + 12*3+3 = 255 parameters
    return nn.Sequential(nn.Linear(4, 12), act(), nn.Linear(12, 12), act(), nn.Linear(12, 3)).to(dtype)


def _data(
    n: int = 50, dtype: torch.dtype = torch.float64, seed: int = 1
) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 4, generator=g, dtype=dtype), torch.randint(0, 3, (n,), generator=g)


def _dense_spectrum(model: nn.Module, loss_fn, data: tuple[torch.Tensor, torch.Tensor]) -> np.ndarray:
    """Eigenvalues of the dense Hessian of the mean loss over the flattened parameters."""
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for _, p in model.named_parameters()]
    sizes = [p.numel() for _, p in model.named_parameters()]
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    x, y = data
    model.eval()

    def f(theta: torch.Tensor) -> torch.Tensor:
        ps = {n: t.reshape(s) for n, t, s in zip(names, torch.split(theta, sizes), shapes)}
        return loss_fn(functional_call(model, ps, (x,)), y)

    h = torch.autograd.functional.hessian(f, flat, vectorize=True)
    return torch.linalg.eigvalsh(0.5 * (h + h.T)).numpy()


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# -- power iteration on known spectra ----------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize(
    "eigs",
    [
        [10.0, 3.0, -2.0, 1.0, 0.5, 0.1],  # dominant positive
        [-7.0, 3.0, 2.5, 1.0, -0.5, 0.2, 0.0],  # dominant negative
        [5.0, 4.99, 1.0, -1.0, 0.3],  # near-degenerate top pair
        [-5.0, -4.99, 1.0, 2.0, 0.3],  # near-degenerate negative pair
    ],
)
def test_quadratic_known_spectrum(eigs: list[float], method: str) -> None:
    model = Quadratic(_sym(eigs, seed=len(eigs)))
    sn = hessian_spectral_norm(model, _out, DUMMY, iters=500, tol=1e-6, generator=_gen(), method=method)
    top = max(eigs, key=abs)
    assert sn.value == pytest.approx(abs(top), rel=1e-3)
    assert sn.eigenvalue == pytest.approx(top, rel=1e-3)
    assert sn.converged and 2 <= sn.iterations <= 500


@pytest.mark.parametrize("method", METHODS)
def test_quadratic_opposite_sign_near_tie_norm_is_robust(method: str) -> None:
    # +5 and -4.999: the Rayleigh quotient moves very slowly, but ||Hv|| is within 1e-3 of 5 once the
    # small eigenvalues have decayed.
    model = Quadratic(_sym([5.0, -4.999, 1.0, 0.5, -0.2], seed=3))
    sn = hessian_spectral_norm(model, _out, DUMMY, iters=100, tol=1e-8, generator=_gen(), method=method)
    assert sn.value == pytest.approx(5.0, rel=1e-3)
    assert abs(sn.eigenvalue) <= sn.value + 1e-12


def test_quadratic_default_tolerance_and_iterations_reported() -> None:
    model = Quadratic(_sym([10.0, 3.0, -2.0, 1.0, 0.5], seed=5))
    sn = hessian_spectral_norm(model, _out, DUMMY, generator=_gen())
    assert sn.value == pytest.approx(10.0, rel=1e-2)
    assert sn.converged and 2 <= sn.iterations < 100
    capped = hessian_spectral_norm(model, _out, DUMMY, iters=1, generator=_gen())
    assert capped.iterations == 1 and not capped.converged


def test_start_vector_is_seeded() -> None:
    model = Quadratic(_sym([2.0, 1.9, 1.0], seed=1))
    a = hessian_spectral_norm(model, _out, DUMMY, iters=3, generator=_gen(5))
    b = hessian_spectral_norm(model, _out, DUMMY, iters=3, generator=_gen(5))
    c = hessian_spectral_norm(model, _out, DUMMY, iters=3, generator=_gen(6))
    assert a == b
    assert a.value != c.value


# -- MLP vs the dense Hessian ------------------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize(("act", "seed"), [(nn.Tanh, 3), (nn.Softplus, 7), (nn.ReLU, 1)])
def test_mlp_matches_dense_hessian(act: type[nn.Module], seed: int, method: str) -> None:
    model, data = _mlp(act, seed=seed), _data()
    spectrum = _dense_spectrum(model, F.cross_entropy, data)
    top = spectrum[np.argmax(np.abs(spectrum))]
    model.train()
    sn = hessian_spectral_norm(
        model, F.cross_entropy, data, iters=5000, tol=1e-6, generator=_gen(), method=method
    )
    assert sn.converged
    assert sn.value == pytest.approx(abs(top), rel=1e-3)
    assert sn.eigenvalue == pytest.approx(top, rel=1e-3)
    # default tolerance: within about 1e-2
    loose = hessian_spectral_norm(
        model, F.cross_entropy, data, iters=1000, tol=1e-3, generator=_gen(), method=method
    )
    assert loose.value == pytest.approx(abs(top), rel=1e-2)
    assert loose.iterations <= sn.iterations


@pytest.mark.parametrize("method", METHODS)
def test_chunked_equals_unchunked(method: str) -> None:
    model, data = _mlp(nn.Tanh, seed=3), _data(50)
    whole = hessian_spectral_norm(model, F.cross_entropy, data, iters=15, generator=_gen(), method=method)
    chunked = hessian_spectral_norm(
        model, F.cross_entropy, data, iters=15, generator=_gen(), chunk_size=7, method=method
    )
    assert chunked.value == pytest.approx(whole.value, rel=1e-10)
    assert chunked.eigenvalue == pytest.approx(whole.eigenvalue, rel=1e-10)
    assert chunked.iterations == whole.iterations
    # an iterable of uneven batches (a one-shot generator too) gives the same Hessian
    x, y = data
    batches = [(x[:20], y[:20]), (x[20:23], y[20:23]), (x[23:], y[23:])]
    listed = hessian_spectral_norm(model, F.cross_entropy, batches, iters=15, generator=_gen(), method=method)
    once = hessian_spectral_norm(
        model, F.cross_entropy, iter(batches), iters=15, generator=_gen(), method=method
    )
    assert listed.value == pytest.approx(whole.value, rel=1e-10)
    assert once.value == pytest.approx(whole.value, rel=1e-10)


def test_methods_agree_in_float32() -> None:
    model, data = _mlp(nn.Softplus, dtype=torch.float32, seed=4), _data(40, dtype=torch.float32)
    db = hessian_spectral_norm(
        model, F.cross_entropy, data, iters=30, generator=_gen(), method="double-backward"
    )
    fr = hessian_spectral_norm(
        model, F.cross_entropy, data, iters=30, generator=_gen(), method="forward-over-reverse"
    )
    assert db.value == pytest.approx(fr.value, rel=1e-4)
    assert db.eigenvalue == pytest.approx(fr.eigenvalue, rel=1e-4)


def test_eval_mode_restored_and_no_grads_left() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Dropout(0.5), nn.Linear(16, 3)).double()
    data = _data(30)
    # active dropout would make the Hessian random between HVPs: eval mode makes it match the dense one
    spectrum = _dense_spectrum(model, F.cross_entropy, data)
    model.train()
    model[1].eval()  # a submodule frozen in eval mode stays so
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    sn = hessian_spectral_norm(model, F.cross_entropy, data, iters=3000, tol=1e-7, generator=_gen())
    assert sn.value == pytest.approx(np.abs(spectrum).max(), rel=1e-3)
    assert model.training and model[2].training and not model[1].training
    assert all(p.grad is None for p in model.parameters())


def test_works_under_no_grad_and_with_frozen_parameters() -> None:
    model, data = _mlp(nn.Tanh, seed=5), _data(30)
    model[0].weight.requires_grad_(False)
    model[0].bias.requires_grad_(False)
    # Hessian w.r.t. the trainable parameters only: the dense Hessian of the remaining block
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    shapes = [p.shape for p in model.parameters() if p.requires_grad]
    sizes = [p.numel() for p in model.parameters() if p.requires_grad]
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters() if p.requires_grad])

    def f(theta: torch.Tensor) -> torch.Tensor:
        ps = {n: t.reshape(s) for n, t, s in zip(names, torch.split(theta, sizes), shapes)}
        return F.cross_entropy(functional_call(model, ps, (data[0],)), data[1])

    eig = torch.linalg.eigvalsh(torch.autograd.functional.hessian(f, flat, vectorize=True)).abs().max().item()
    for method in METHODS:
        with torch.no_grad():
            sn = hessian_spectral_norm(
                model, F.cross_entropy, data, iters=3000, tol=1e-7, generator=_gen(), method=method
            )
        assert sn.value == pytest.approx(eig, rel=1e-3)


def test_non_finite_raises() -> None:
    model, data = _mlp(nn.Tanh, dtype=torch.float32), _data(10, dtype=torch.float32)
    with torch.no_grad():
        model[0].weight.fill_(float("nan"))
    with pytest.raises(NonFiniteHessianError, match="not finite"):
        hessian_spectral_norm(model, F.cross_entropy, data, generator=_gen())


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"iters": 0}, "iters"),
        ({"tol": 0.0}, "tol"),
        ({"tol": float("nan")}, "tol"),
        ({"method": "double-backwards"}, "did you mean 'double-backward'.*forward-over-reverse"),
        ({"chunk_size": 0}, "chunk_size"),
    ],
)
def test_power_iteration_bad_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        hessian_spectral_norm(_mlp(), F.cross_entropy, _data(5), **kwargs)


# -- derived step size and initial loss --------------------------------------------------------------


def test_derived_step_size_formula() -> None:
    assert derived_step_size(2.3, 50.0, 100) == pytest.approx(math.sqrt(2 * 2.3 / (50 * 100)), rel=1e-15)
    assert derived_step_size(2.3, 50.0, 100) == pytest.approx(0.030331501776206, rel=1e-12)
    assert derived_step_size(2.3, 50.0, 100, multiplier=2.0) == pytest.approx(0.060663003552412, rel=1e-12)
    assert derived_step_size(0.7, 3.0, 1, multiplier=0.5) == pytest.approx(
        0.5 * math.sqrt(1.4 / 3.0), rel=1e-15
    )


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ((0.0, 1.0, 10), "initial_loss"),
        ((float("nan"), 1.0, 10), "initial_loss"),
        ((1.0, 0.0, 10), "k_hat"),
        ((1.0, float("inf"), 10), "k_hat"),
        ((1.0, 1.0, 0), "total_steps"),
        ((1.0, 1.0, 2.5), "total_steps"),
        ((1.0, 1.0, 10, -1.0), "multiplier"),
    ],
)
def test_derived_step_size_validation(args: tuple, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        derived_step_size(*args)


def test_initial_loss_eval_mode_mean_over_chunks() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Dropout(0.5), nn.Linear(16, 3)).double()
    x, y = _data(23)
    with torch.no_grad():
        expected = np.mean(
            [F.cross_entropy(model.eval()(x[i : i + 1]), y[i : i + 1]).item() for i in range(23)]
        )
    model.train()
    assert initial_loss(model, F.cross_entropy, (x, y), chunk_size=5) == pytest.approx(expected, rel=1e-12)
    assert initial_loss(model, F.cross_entropy, [(x[:4], y[:4]), (x[4:], y[4:])]) == pytest.approx(
        expected, rel=1e-12
    )
    assert model.training


# -- Algorithm 2 -------------------------------------------------------------------------------------


def _factory(act: type[nn.Module] = nn.Tanh):
    def build() -> nn.Module:
        return nn.Sequential(nn.Linear(4, 16), act(), nn.Linear(16, 3)).double()

    return build


def test_estimate_deterministic_and_max() -> None:
    data = _data(30)
    kw = dict(samples=4, weights="normal", sigma=0.3, iters=50)
    e1 = estimate_lipschitz(_factory(), F.cross_entropy, data, seed=7, **kw)
    e2 = estimate_lipschitz(_factory(), F.cross_entropy, data, seed=7, **kw)
    e3 = estimate_lipschitz(_factory(), F.cross_entropy, data, seed=8, **kw)
    assert isinstance(e1, LipschitzEstimate)
    assert e1.values == e2.values and e1.k_hat == e2.k_hat
    assert e3.k_hat != e1.k_hat
    assert len(e1.values) == len(e1.eigenvalues) == len(e1.iterations) == len(e1.converged) == 4
    assert e1.k_hat == max(e1.values)
    assert len(set(e1.values)) == 4  # independent samples
    assert e1.samples == 4 and e1.skipped == () and e1.sigma == 0.3 and e1.a is None and e1.batch == "full"
    assert e1.seconds > 0
    d = e1.to_dict()
    assert d["k_hat"] == e1.k_hat and d["values"] == list(e1.values) and d["weights"] == "normal"


def test_estimate_values_are_dense_hessian_norms_at_the_sampled_weights() -> None:
    data = _data(30)
    models: list[nn.Module] = []

    def build() -> nn.Module:
        m = _factory(nn.Softplus)()
        models.append(m)
        return m

    seen: list[LipschitzProgress] = []
    est = estimate_lipschitz(
        build,
        F.cross_entropy,
        data,
        samples=3,
        sigma=0.5,
        iters=3000,
        tol=1e-7,
        progress=seen.append,
    )
    assert [(p.sample, p.samples) for p in seen] == [(1, 3), (2, 3), (3, 3)]
    assert [p.result.value for p in seen] == list(est.values)
    assert [p.k_hat for p in seen] == list(np.maximum.accumulate(est.values))
    assert seen[1].line().startswith(f"K_hat sample 2/3: |lambda_max|={est.values[1]:.6g} ")
    dense = [np.abs(_dense_spectrum(m, F.cross_entropy, data)).max() for m in models]
    np.testing.assert_allclose(est.values, dense, rtol=1e-3)
    assert est.k_hat == pytest.approx(max(dense), rel=1e-3)
    # biases are 0 under W = normal, weights have standard deviation sigma
    w = torch.cat([m[0].weight.reshape(-1) for m in models] + [m[2].weight.reshape(-1) for m in models])
    assert all(float(m[0].bias.detach().abs().max()) == 0.0 for m in models)
    assert w.std().item() == pytest.approx(0.5, rel=0.1)


def test_sigma_is_used() -> None:
    data = _data(40)
    k = [
        estimate_lipschitz(_factory(nn.ReLU), F.cross_entropy, data, samples=3, sigma=s, iters=50).k_hat
        for s in (0.05, 0.5, 3.0)
    ]
    assert k[0] < k[1] < k[2]


def test_uniform_and_init_weights() -> None:
    data = _data(20)
    u = estimate_lipschitz(_factory(), F.cross_entropy, data, samples=2, weights="uniform", a=0.2, iters=30)
    assert u.weights == "uniform" and u.a == 0.2 and u.sigma is None
    i = estimate_lipschitz(_factory(), F.cross_entropy, data, samples=2, weights="init", sigma=0.1, iters=30)
    assert i.weights == "init" and i.sigma is None and i.a is None and i.k_hat > 0


class ExpModel(nn.Module):
    """loss = exp(c * w) for one scalar weight: Hessian c^2 exp(c w), overflowing float32 for large w."""

    C = 60.0

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.exp(self.C * self.w).sum()


def test_non_finite_samples_are_skipped() -> None:
    models: list[nn.Module] = []

    def build() -> nn.Module:
        models.append(ExpModel())
        return models[-1]

    seen: list[LipschitzProgress] = []
    est = estimate_lipschitz(build, _out, DUMMY, samples=30, sigma=1.0, seed=0, progress=seen.append)
    # one progress call per sample, skipped ones included
    assert [p.sample for p in seen] == list(range(1, 31))
    assert [p.sample - 1 for p in seen if p.result is None] == [j for j, _ in est.skipped]
    assert all("skipped (" in p.line() for p in seen if p.result is None)
    w = np.array([float(m.w.detach()) for m in models], dtype=np.float64)
    hess = ExpModel.C**2 * np.exp(ExpModel.C * w)
    overflow = hess > np.finfo(np.float32).max
    assert 0 < overflow.sum() < 30, "seed must give some overflowing samples"
    assert [j for j, _ in est.skipped] == list(np.flatnonzero(overflow))
    assert all("not finite" in reason for _, reason in est.skipped)
    kept, values = hess[~overflow], np.array(est.values)
    normal = kept > 1e-30  # float32 flushes smaller ones to (nearly) zero
    np.testing.assert_allclose(values[normal], kept[normal], rtol=1e-4)
    assert np.all(values[~normal] < 1e-30)
    assert math.isfinite(est.k_hat) and est.k_hat == max(est.values)
    assert est.samples == 30 and len(est.values) + len(est.skipped) == 30


def test_all_samples_non_finite_is_a_user_error() -> None:
    factory = _factory(nn.ReLU)
    data = _data(10, dtype=torch.float32)

    def build() -> nn.Module:
        return factory().float()

    with pytest.raises(
        UserError, match=r"all 3 weight samples gave non-finite Hessian products; reduce sigma"
    ):
        estimate_lipschitz(build, F.cross_entropy, data, samples=3, sigma=1e30)


class LinearSquare(nn.Module):
    """Per-example loss 0.5 (x . w)^2: the batch Hessian is mean_i x_i x_i^T."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(3, 1, bias=False, dtype=torch.float64)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x).squeeze(-1)


def _half_square(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return 0.5 * (out**2).mean()


def test_mini_batch_is_max_over_batch_hessians() -> None:
    # x_i = s_i e_i with s = 1, 2, 3. Batch {i, j} has Hessian diag with s_i^2/2, s_j^2/2: norms
    # {1,2} -> 2, {1,3} -> 4.5, {2,3} -> 4.5; the full batch gives 9/3 = 3.
    x = torch.diag(torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64))
    data = (x, torch.zeros(3))
    full = estimate_lipschitz(LinearSquare, _half_square, data, samples=2, sigma=1.0, tol=1e-12, iters=500)
    assert full.values == pytest.approx([3.0, 3.0], rel=1e-9)
    one = estimate_lipschitz(
        LinearSquare, _half_square, data, samples=12, sigma=1.0, tol=1e-12, iters=500, batch=2, seed=1
    )
    assert set(np.round(one.values, 9)) == {2.0, 4.5}  # each sample sees one random pair
    many = estimate_lipschitz(
        LinearSquare, _half_square, data, samples=3, sigma=1.0, tol=1e-12, iters=500, batch=2, num_batches=8
    )
    assert many.values == pytest.approx([4.5] * 3, rel=1e-9)
    assert many.batch == 2 and many.num_batches == 8
    # batch >= n uses all the examples: the full-batch Hessian
    big = estimate_lipschitz(
        LinearSquare,
        _half_square,
        [(x[:1], data[1][:1]), (x[1:], data[1][1:])],
        samples=1,
        sigma=1.0,
        tol=1e-12,
        iters=500,
        batch=10,
    )
    assert big.k_hat == pytest.approx(3.0, rel=1e-9)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"samples": 0}, "samples"),
        ({"weights": "gaussian"}, "weights.*choices: normal, uniform, init"),
        ({"weights": "normal", "sigma": None}, "sigma"),
        ({"weights": "normal", "sigma": -1.0}, "sigma"),
        ({"weights": "uniform", "a": None}, r"\ba\b"),
        ({"batch": "half"}, "batch"),
        ({"batch": 0}, "batch"),
        ({"num_batches": 0}, "num_batches"),
        ({"iters": 0}, "iters"),
        ({"tol": -1e-3}, "tol"),
        ({"method": "fwd"}, "method.*double-backward, forward-over-reverse"),
    ],
)
def test_estimate_bad_arguments(kwargs: dict, match: str) -> None:
    args = {"sigma": 0.1, **kwargs}
    with pytest.raises(ConfigError, match=match):
        estimate_lipschitz(_factory(), F.cross_entropy, _data(5), **args)


# ---------------------------------------------------------------------------------------------------
# W = init: each sample drawn with the task's own initialiser (papers/003 Section 5.1, init study)
# ---------------------------------------------------------------------------------------------------

INIT_STUDY = ("kaiming-uniform", "kaiming-normal", "xavier", "orthogonal")


def _textbook_std(scheme: str, fan_out: int, fan_in: int) -> float:
    """Weight standard deviation of a (fan_out, fan_in) Linear weight under each scheme, by hand."""
    if scheme == "kaiming-uniform":  # U(-b, b), b = gain * sqrt(3 / fan_in), gain = sqrt(2 / (1 + 5))
        return 1.0 / math.sqrt(3.0 * fan_in)
    if scheme == "kaiming-normal":  # He et al. 2015, ReLU gain sqrt(2)
        return math.sqrt(2.0 / fan_in)
    if scheme == "xavier":  # Glorot & Bengio 2010, U(-b, b), b = sqrt(6 / (fan_in + fan_out))
        return math.sqrt(2.0 / (fan_in + fan_out))
    if scheme == "orthogonal":  # orthonormal rows/columns: ||W||_F^2 = min(fan_in, fan_out)
        return math.sqrt(min(fan_in, fan_out) / (fan_in * fan_out))
    raise AssertionError(scheme)


def _fc_factory(init: str | None, built: list[nn.Module] | None = None):
    from lyaptune.models import create_model

    def build() -> nn.Module:
        m = create_model(
            "fc",
            input_shape=(64,),
            num_classes=10,
            init=init,
            generator=torch.Generator().manual_seed(0),
            depth=1,
            width=300,
        )
        if built is not None:
            built.append(m)
        return m

    return build


def _digits_pair(n: int = 200) -> tuple[torch.Tensor, torch.Tensor]:
    from lyaptune.data import load_dataset

    d = load_dataset("digits", seed=0)
    return d.train.x[:n], d.train.y[:n]


@pytest.mark.parametrize("scheme", INIT_STUDY)
def test_weights_init_draws_with_the_task_initialiser(scheme: str) -> None:
    built: list[nn.Module] = []
    est = estimate_lipschitz(
        _fc_factory(scheme, built), F.cross_entropy, _digits_pair(50), samples=2, weights="init", iters=3
    )
    assert est.weights == "init" and est.init == scheme
    for m in built:
        linears = [mod for mod in m.modules() if isinstance(mod, nn.Linear)]
        assert len(linears) == 2
        for lin in linears:
            w = lin.weight.detach().double()
            expected = _textbook_std(scheme, *w.shape)
            assert float(w.std()) == pytest.approx(expected, rel=0.05), (scheme, tuple(w.shape))
            bias = lin.bias.detach()
            if scheme == "kaiming-uniform":  # PyTorch's default: U(-1/sqrt(fan_in), 1/sqrt(fan_in))
                assert 0 < float(bias.abs().max()) <= 1 / math.sqrt(w.shape[1])
            else:
                assert float(bias.abs().max()) == 0.0
    # a fresh draw per sample, not the factory's fixed weights
    first = [p.detach().clone() for p in built[0].parameters()]
    second = [p.detach().clone() for p in built[1].parameters()]
    assert not torch.equal(first[0], second[0])
    ref = _fc_factory(scheme)()
    assert not torch.equal(first[0], next(ref.parameters()).detach())


def test_init_study_initialisers_give_distinct_k_hat() -> None:
    data = _digits_pair()
    k = {
        s: estimate_lipschitz(
            _fc_factory(s), F.cross_entropy, data, samples=2, weights="init", iters=15, seed=3
        ).k_hat
        for s in INIT_STUDY
    }
    assert len(set(k.values())) == 4, k
    # the weight scale orders the curvature: kaiming-normal (std sqrt(2/fan_in)) is the widest
    assert k["kaiming-normal"] > k["kaiming-uniform"], k


def test_explicit_init_overrides_and_matches_the_model_tag() -> None:
    data = _digits_pair(60)
    tagged = estimate_lipschitz(
        _fc_factory("xavier"), F.cross_entropy, data, samples=2, weights="init", iters=5
    )
    explicit = estimate_lipschitz(
        _fc_factory(None), F.cross_entropy, data, samples=2, weights="init", init="xavier", iters=5
    )
    assert explicit.init == "xavier" and explicit.values == tagged.values
    own = estimate_lipschitz(_fc_factory(None), F.cross_entropy, data, samples=2, weights="init", iters=5)
    assert own.init == "init" and own.values != tagged.values
    with pytest.raises(ConfigError, match=r"init 'normal' for weights='init': give its sigma"):
        estimate_lipschitz(_fc_factory(None), F.cross_entropy, data, weights="init", init="normal")
    with pytest.raises(ConfigError, match=r"unknown init 'xavir'; did you mean 'xavier'"):
        estimate_lipschitz(_fc_factory(None), F.cross_entropy, data, weights="init", init="xavir")


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "lyaptune.cli", *args], capture_output=True, text=True, timeout=240
    )


@functools.cache
def _cli_k_hat(init: str) -> tuple[float, list[str]]:
    r = _cli(
        "lipschitz", "--dataset", "digits", "--model", "fc", "--depth", "1", "--width", "64",
        "--samples", "3", "--iters", "10", "--device", "cpu", "--weights", "init", "--init", init,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    k_hat = [float(line.split()[0].split("=")[1]) for line in lines if line.startswith("K_hat=")]
    return k_hat[0], lines


@pytest.mark.integration
def test_cli_weights_init_follows_the_init_option_and_reports_progress() -> None:
    k_xavier, lines = _cli_k_hat("xavier")
    k_kaiming, _ = _cli_k_hat("kaiming-normal")
    assert k_xavier != k_kaiming
    assert "weights=init(xavier)" in lines[0]
    progress = [line.strip() for line in lines if "K_hat sample" in line]
    assert [p.split(":")[0] for p in progress] == [f"K_hat sample {i}/3" for i in (1, 2, 3)]
    per_sample = [float(p.split("|lambda_max|=")[1].split()[0]) for p in progress]
    assert k_xavier == pytest.approx(max(per_sample), rel=1e-5)


@pytest.mark.integration
def test_cli_unknown_init_is_one_line() -> None:
    r = _cli("lipschitz", "--samples", "1", "--device", "cpu", "--weights", "init", "--init", "xavir")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip() == (
        "lyaptune: error: unknown init 'xavir'; did you mean 'xavier'? choices: kaiming-uniform, "
        "kaiming-normal, xavier, xavier-normal, orthogonal, normal, uniform, init, normal(sigma), uniform(a)"
    )


@pytest.mark.integration
def test_cli_trial_reports_k_hat_progress_and_uses_the_task_initialiser() -> None:
    r = _cli(
        "trial", "--dataset", "digits", "--model", "fc", "--depth", "1", "--width", "64",
        "--schedule", "derived-constant", "--lipschitz", "samples=3", "--lipschitz", "weights=init",
        "--lipschitz", "iters=10", "--init", "xavier", "--epochs", "1", "--device", "cpu",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    progress = [line for line in lines if line.startswith("K_hat sample")]
    assert [p.split(":")[0] for p in progress] == [f"K_hat sample {i}/3" for i in (1, 2, 3)]
    first_epoch = next(i for i, line in enumerate(lines) if line.startswith("epoch=1"))
    assert lines.index(progress[-1]) < first_epoch  # shown while the estimate runs, before training
    # the same samples as `lyaptune lipschitz --weights init --init xavier` (same seed, same draws)
    k_cli, _ = _cli_k_hat("xavier")
    per_sample = [float(p.split("|lambda_max|=")[1].split()[0]) for p in progress]
    assert max(per_sample) == pytest.approx(k_cli, rel=1e-5)


def test_init_study_arms_through_the_trainer_give_distinct_k_hat_and_alpha() -> None:
    # experiments/003_init_study.yaml's `derived-<init>-w-init` arms: task init x W = init
    from lyaptune.train import TrialConfig, run_trial

    k_hat, alpha = {}, {}
    for scheme in INIT_STUDY:
        config = TrialConfig(
            dataset="digits",
            model="fc",
            model_args={"depth": 1, "width": 64},
            init=scheme,
            schedule="derived-constant",
            lipschitz={"samples": 2, "weights": "init", "iters": 8},
            epochs=1,
            device="cpu",
        )
        info = run_trial(config).info
        k_hat[scheme], alpha[scheme] = info["k_hat"], info["derived_lr"]
        # alpha = sqrt(2 L(w0) / (K_hat T)) with T = 1 full-batch step
        assert alpha[scheme] == pytest.approx(math.sqrt(2 * info["initial_loss"] / info["k_hat"]), rel=1e-12)
    assert len(set(k_hat.values())) == 4, k_hat
    assert len(set(alpha.values())) == 4, alpha
