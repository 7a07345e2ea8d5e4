"""Lipschitz smoothness estimate of a loss (papers/003 Algorithm 2) and the derived constant step size.

The smoothness constant K of a twice-differentiable loss is the supremum of the Hessian's spectral norm.
Algorithm 2 of papers/003 estimates it by sampling weights ``w_j ~ W`` and taking

    K_hat = max_j || Hessian of L at w_j ||_2 ,

each spectral norm computed by power iteration on Hessian-vector products (HVPs). Adam then runs
with the constant step size

    alpha = sqrt( 2 L(w0) / (K_hat T) )

(METHODS.md section 4). Nothing here materialises a Hessian: every quantity comes from HVPs, either by
double backward (``torch.autograd.grad`` twice) or forward-over-reverse (``torch.func.jvp`` of
``torch.func.grad``).

Cost of each HVP after the first, in gradients (forward + backward), measured with
``benchmarks/lipschitz.py --threads 1`` (process CPU time on the 2-core development CPU):

    workload                          double backward        forward-over-reverse
                                      1 chunk   2 chunks     1 chunk   2 chunks
    FC 3x1000, 5,500 mini-MNIST         1.93      3.14         3.49      3.35
    VGG-9, batch 256 (32x32x3)          1.96      3.26         3.10      3.26

On one chunk double backward builds the first-order graph once and differentiates it again at every
iteration; chunked, both methods redo forward and backward per HVP and cost about the same. Double
backward is therefore the default.
"""

from __future__ import annotations

import math
import numbers
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from lyaptune._fullbatch import Data, LossFn, full_loss, iter_chunks
from lyaptune._hvp import (
    NonFiniteHessianError,
    SpectralNorm,
    _ChunkSource,
    _double_backward_hvp,
    _forward_over_reverse_hvp,
    _power_iteration,
    _start_vector,
    _trainable,
)
from lyaptune._registry import unknown_choice
from lyaptune.errors import ConfigError, UserError
from lyaptune.init import INIT_ATTR, initialize

__all__ = [
    "METHODS",
    "WEIGHTS",
    "NonFiniteHessianError",
    "SpectralNorm",
    "LipschitzEstimate",
    "LipschitzProgress",
    "hessian_spectral_norm",
    "estimate_lipschitz",
    "initial_loss",
    "derived_step_size",
]

METHODS = ("double-backward", "forward-over-reverse")
"""Ways to compute a Hessian-vector product."""

WEIGHTS = ("normal", "uniform", "init")
"""Weight distributions W that Algorithm 2 samples from (see :func:`lyaptune.init.initialize`)."""


@dataclass(frozen=True)
class LipschitzEstimate:
    """Result of :func:`estimate_lipschitz` (papers/003 Algorithm 2).

    Attributes:
      k_hat: ``max_j |lambda_max(H(w_j))|`` over the samples that were not skipped.
      values: ``|lambda_max|`` per kept sample, in sample order.
      eigenvalues: the signed eigenvalue estimate per kept sample.
      iterations: power iterations per kept sample (mini-batch: those of the batch giving the max).
      converged: convergence flag per kept sample (mini-batch: that of the batch giving the max).
      seconds: wall-clock time of the whole estimate.
      weights: the weight distribution W (``normal``, ``uniform`` or ``init``).
      sigma: standard deviation of ``normal`` W, or of the initialiser ``normal(sigma)`` under
        ``weights="init"`` (None otherwise).
      a: half-width of ``uniform`` W, or of the initialiser ``uniform(a)`` (None otherwise).
      samples: number of weight samples drawn (kept + skipped).
      batch: ``"full"`` or the mini-batch size.
      skipped: ``(sample index, reason)`` for samples whose loss or Hessian products were not finite.
      num_batches: batches per sample in mini-batch mode.
      method: how the Hessian-vector products were computed.
      tol: relative tolerance of the power iteration.
      max_iters: iteration cap of the power iteration.
      seed: seed of the generator that drew weights, start vectors and batches.
      init: under ``weights="init"``, the initialiser each sample was drawn with (a scheme of
        :data:`lyaptune.init.SCHEMES`; ``"init"`` means each module's own ``reset_parameters``);
        None for the other distributions.
    """

    k_hat: float
    values: tuple[float, ...]
    eigenvalues: tuple[float, ...]
    iterations: tuple[int, ...]
    converged: tuple[bool, ...]
    seconds: float
    weights: str
    sigma: float | None
    a: float | None
    samples: int
    batch: str | int
    skipped: tuple[tuple[int, str], ...]
    num_batches: int = 1
    method: str = "double-backward"
    tol: float = 1e-3
    max_iters: int = 100
    seed: int = 0
    init: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain ``dict`` (lists instead of tuples) for recording next to the results."""
        d = asdict(self)
        for key in ("values", "eigenvalues", "iterations", "converged"):
            d[key] = list(d[key])
        d["skipped"] = [{"sample": j, "reason": r} for j, r in self.skipped]
        return d


@dataclass(frozen=True)
class LipschitzProgress:
    """One weight sample of :func:`estimate_lipschitz` done, as passed to its ``progress`` callback.

    Attributes:
      sample: 1-based index of the sample just finished.
      samples: N, the number of samples of the estimate.
      result: its spectral norm, or None when the sample was skipped.
      skipped: why the sample was skipped (non-finite loss or Hessian products), else None.
      k_hat: the running ``max_j |lambda_max|`` over the samples kept so far (nan before the first).
      seconds: wall-clock time since the estimate started.
    """

    sample: int
    samples: int
    result: SpectralNorm | None
    skipped: str | None
    k_hat: float
    seconds: float

    def line(self) -> str:
        """The progress line shown to a user: ``K_hat sample i/N: |lambda_max|=..., K_hat so far ...``."""
        head = f"K_hat sample {self.sample}/{self.samples}:"
        if self.result is None:
            return f"{head} skipped ({self.skipped})  [{self.seconds:.1f} s]"
        sn = self.result
        conv = "" if sn.converged else ", not converged"
        return (
            f"{head} |lambda_max|={sn.value:.6g} (eigenvalue {sn.eigenvalue:.6g}, {sn.iterations} "
            f"iterations{conv})  K_hat so far {self.k_hat:.6g}  [{self.seconds:.1f} s]"
        )


# ---------------------------------------------------------------------------------------------------
# Hessian spectral norm
# ---------------------------------------------------------------------------------------------------


def hessian_spectral_norm(
    model: nn.Module,
    loss_fn: LossFn,
    data: Data,
    *,
    iters: int = 100,
    tol: float = 1e-3,
    generator: torch.Generator | None = None,
    chunk_size: int | None = None,
    method: str = "double-backward",
) -> SpectralNorm:
    """Spectral norm of the Hessian of the mean loss over ``data`` by power iteration on HVPs.

    With ``H`` the Hessian w.r.t. all trainable parameters of ``L(w) = (1/n) sum_i l(x_i, y_i; w)``:

        v_0 ~ N(0, I) / ||.||,   mu_k = v_k^T H v_k,   nu_k = ||H v_k||,   v_{k+1} = H v_k / nu_k .

    ``mu_k`` (the Rayleigh quotient) is the signed eigenvalue estimate and ``nu_k`` the norm estimate;
    both converge to the eigenvalue of largest magnitude (``nu_k`` from below, and robustly even when
    eigenvalues of opposite sign nearly tie). Iteration stops once both change by less than ``tol``
    relatively (after at least 2 HVPs) or after ``iters`` HVPs.

    The HVP over the whole data is accumulated over chunks, each weighted by its share of the
    examples, so the result equals the unchunked one. The model is in eval mode during the estimate
    (each submodule's mode is restored afterwards); stale ``.grad`` are cleared first and no gradients
    are left behind.

    Args:
      model: the network; its trainable parameters are the Hessian's variables.
      loss_fn: ``loss_fn(model(x), y)`` -> the *mean* loss of a batch.
      data: an ``(x, y)`` pair of tensors, or an iterable of ``(x, y)`` batches (a one-shot iterator is
        materialised once). Batches are moved to the model's device.
      iters: maximum number of HVPs (>= 1).
      tol: relative tolerance on the change of the estimates (> 0).
      generator: draws the start vector (any device; the vector is moved to the parameters').
      chunk_size: examples per chunk when ``data`` is a tensor pair (None: one chunk). Batches of an
        iterable are used as they come.
      method: ``"double-backward"`` or ``"forward-over-reverse"`` (see :data:`METHODS`).

    Returns:
      A :class:`SpectralNorm`.

    Raises:
      NonFiniteHessianError: the loss or a Hessian-vector product is not finite.
      ConfigError: a bad argument.

    References:
      papers/003 Algorithm 2, step 5 (power method).
    """
    _check_power_args(iters, tol, method, chunk_size)
    names, params = _trainable(model)
    device = params[0].device
    chunks = _ChunkSource(data, chunk_size, device)

    modes = [(m, m.training) for m in model.modules()]
    model.zero_grad(set_to_none=True)
    model.eval()
    try:
        with torch.enable_grad():
            if method == "double-backward":
                hvp = _double_backward_hvp(model, loss_fn, params, chunks)
            else:
                hvp = _forward_over_reverse_hvp(model, loss_fn, names, params, chunks)
            v0 = _start_vector(params, generator)
            return _power_iteration(hvp, v0, iters, tol)
    finally:
        for m, mode in modes:
            m.training = mode
        model.zero_grad(set_to_none=True)


def _check_power_args(iters: int, tol: float, method: str, chunk_size: int | None) -> None:
    if not _is_int(iters) or iters < 1:
        raise ConfigError(f"Invalid iters: {iters!r} (must be an integer >= 1)")
    if not _positive(tol):
        raise ConfigError(f"Invalid tol: {tol!r} (must be a finite number > 0)")
    if method not in METHODS:
        raise unknown_choice("method", method, list(METHODS))
    if chunk_size is not None and (not _is_int(chunk_size) or chunk_size < 1):
        raise ConfigError(f"Invalid chunk_size: {chunk_size!r} (must be None or an integer >= 1)")


# ---------------------------------------------------------------------------------------------------
# Algorithm 2
# ---------------------------------------------------------------------------------------------------


def estimate_lipschitz(
    model_factory: Callable[[], nn.Module],
    loss_fn: LossFn,
    data: Data,
    *,
    samples: int = 10,
    weights: str = "normal",
    sigma: float | None = None,
    a: float | None = None,
    batch: str | int = "full",
    num_batches: int = 1,
    seed: int = 0,
    iters: int = 100,
    tol: float = 1e-3,
    chunk_size: int | None = None,
    method: str = "double-backward",
    device: torch.device | str | None = None,
    init: str | None = None,
    progress: Callable[[LipschitzProgress], None] | None = None,
) -> LipschitzEstimate:
    """Estimate the Lipschitz smoothness of the loss by sampling weights (papers/003 Algorithm 2).

        w_j ~ W  (j = 1..N, i.i.d.),     K_hat = max_j || Hessian of L at w_j ||_2

    Full batch (``batch="full"``): ``L`` is the mean loss over all of ``data``. Mini-batch
    (``batch=B``): each sample's norm is the max over ``num_batches`` random batches of ``B`` examples
    (drawn without replacement; ``B`` >= the number of examples uses them all) of the batch loss
    Hessian's norm. One generator seeded with ``seed`` draws, in order, each sample's weights, batches
    and power-iteration start vectors, so the estimate is deterministic for a seed. Samples whose loss
    or Hessian products are not finite are skipped and reported.

    Args:
      model_factory: builds a fresh model; its parameters are re-drawn from W.
      loss_fn: ``loss_fn(model(x), y)`` -> the mean loss of a batch.
      data: the training data, an ``(x, y)`` tensor pair or an iterable of ``(x, y)`` batches (which
        mini-batch mode concatenates).
      samples: N, the number of weight samples (>= 1).
      weights: W: ``normal`` (N(0, sigma^2) per weight tensor, biases 0, norm-layer weights 1),
        ``uniform`` (U(-a, a)), or ``init``: the task's own initialiser, a fresh draw per sample from
        the seeded generator (kaiming-normal gives weight std sqrt(2 / fan_in), xavier
        sqrt(2 / (fan_in + fan_out)), ...; see :func:`lyaptune.init.initialize`).
      sigma: standard deviation for ``normal`` (required there).
      a: half-width for ``uniform`` (required there).
      batch: ``"full"`` or a mini-batch size (>= 1).
      num_batches: batches per sample in mini-batch mode (>= 1).
      seed: seed of the generator.
      iters: maximum power iterations per Hessian.
      tol: relative tolerance of the power iteration.
      chunk_size: examples per chunk of an HVP (None: all at once).
      method: HVP method, one of :data:`METHODS`.
      device: where to run (default: wherever ``model_factory`` puts the model).
      init: the initialiser of ``weights="init"``: a scheme of :data:`lyaptune.init.SCHEMES` or
        ``normal(sigma)`` / ``uniform(a)``. None: the one :func:`lyaptune.models.create_model` built
        the factory's model with, else each module's own ``reset_parameters``. Ignored by the
        other distributions.
      progress: called after every sample (kept or skipped) with a :class:`LipschitzProgress`;
        ``progress.line()`` is the line to show. None (default): silent.

    Returns:
      A :class:`LipschitzEstimate`.

    Raises:
      ConfigError: a bad argument.
      UserError: every sample gave non-finite Hessian products.

    References:
      papers/003 Algorithm 2 and Theorem 4; METHODS.md section 4.
    """
    _check_estimate_args(samples, weights, sigma, a, batch, num_batches, seed)
    _check_power_args(iters, tol, method, chunk_size)
    sampler = _WeightSampler(weights, sigma, a, init)
    batch_data = None if batch == "full" else _as_tensor_pair(data)

    def norm(model: nn.Module, g: torch.Generator) -> SpectralNorm:
        """One sample's spectral norm: of the full-batch Hessian, else the max over random batches."""
        if batch_data is None:
            return hessian_spectral_norm(
                model, loss_fn, data, iters=iters, tol=tol, generator=g, chunk_size=chunk_size, method=method
            )
        return _max_over_batches(
            model, loss_fn, batch_data, int(batch), num_batches, g, iters, tol, chunk_size, method
        )

    g = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    kept = _sample_norms(model_factory, sampler, norm, samples, g, device, progress)
    seconds = time.perf_counter() - start

    if not kept.values:
        fix = {
            "normal": f"reduce sigma (got {sampler.sigma})",
            "uniform": f"reduce a (got {sampler.a})",
            "init": "check the model and loss for overflow",
        }[weights]
        raise UserError(
            f"all {samples} weight samples gave non-finite Hessian products; {fix} "
            f"(weights={weights!r}; first reason: {kept.skipped[0][1]})"
        )
    return LipschitzEstimate(
        k_hat=max(kept.values),
        values=tuple(kept.values),
        eigenvalues=tuple(kept.eigenvalues),
        iterations=tuple(kept.iterations),
        converged=tuple(kept.converged),
        seconds=seconds,
        weights=weights,
        sigma=sampler.sigma,
        a=sampler.a,
        samples=samples,
        batch=batch,
        skipped=tuple(kept.skipped),
        num_batches=num_batches,
        method=method,
        tol=float(tol),
        max_iters=iters,
        seed=seed,
        init=sampler.init,
    )


class _WeightSampler:
    """Draws each sample's weights from W (Algorithm 2, step 3), remembering what it drew them with.

    Weights are drawn on the CPU with the one CPU generator, so the same seed gives the same weights on
    any device; the model then moves to ``device`` (default: wherever the factory put it). Under
    ``weights="init"`` the initialiser is ``init`` when given, else the one the factory's model was
    built with, else each module's own ``reset_parameters``.
    """

    def __init__(self, weights: str, sigma: float | None, a: float | None, init: str | None) -> None:
        self.weights = weights
        self.sigma = float(sigma) if weights == "normal" and sigma is not None else None
        self.a = float(a) if weights == "uniform" and a is not None else None
        self.init: str | None = None
        self._explicit = _parse_sample_init(init) if weights == "init" and init is not None else None

    def draw(
        self, model_factory: Callable[[], nn.Module], g: torch.Generator, device: torch.device | str | None
    ) -> nn.Module:
        """A fresh model from ``model_factory`` with its weights re-drawn from W with ``g``."""
        model = model_factory()
        target = torch.device(device) if device is not None else _module_device(model)
        model.to("cpu")
        if self.weights == "init":
            scheme, s_init, a_init = self._explicit or getattr(model, INIT_ATTR, None) or ("init", None, None)
            initialize(model, scheme, sigma=s_init, a=a_init, generator=g)
            self.init, self.sigma, self.a = scheme, s_init, a_init
        else:
            initialize(model, self.weights, sigma=self.sigma, a=self.a, generator=g)
        model.to(target)
        return model


@dataclass
class _Samples:
    """The kept samples' results, in sample order, and the skipped samples with their reasons."""

    values: list[float] = field(default_factory=list)
    eigenvalues: list[float] = field(default_factory=list)
    iterations: list[int] = field(default_factory=list)
    converged: list[bool] = field(default_factory=list)
    skipped: list[tuple[int, str]] = field(default_factory=list)

    def keep(self, sn: SpectralNorm) -> None:
        self.values.append(sn.value)
        self.eigenvalues.append(sn.eigenvalue)
        self.iterations.append(sn.iterations)
        self.converged.append(sn.converged)


def _sample_norms(
    model_factory: Callable[[], nn.Module],
    sampler: _WeightSampler,
    norm: Callable[[nn.Module, torch.Generator], SpectralNorm],
    samples: int,
    g: torch.Generator,
    device: torch.device | str | None,
    progress: Callable[[LipschitzProgress], None] | None,
) -> _Samples:
    """The loop of Algorithm 2: ``samples`` weight draws, each one's Hessian norm (``norm``), in order.

    A sample whose loss or Hessian products are not finite is skipped with its reason; ``progress`` is
    called after every sample, kept or skipped.
    """
    out = _Samples()
    start = time.perf_counter()
    for j in range(samples):
        model = sampler.draw(model_factory, g, device)
        try:
            sn = norm(model, g)
        except NonFiniteHessianError as err:
            out.skipped.append((j, str(err)))
            if progress is not None:
                elapsed = time.perf_counter() - start
                k_hat = max(out.values, default=math.nan)
                progress(LipschitzProgress(j + 1, samples, None, str(err), k_hat, elapsed))
            continue
        out.keep(sn)
        if progress is not None:
            progress(
                LipschitzProgress(j + 1, samples, sn, None, max(out.values), time.perf_counter() - start)
            )
    return out


def _parse_sample_init(init: str) -> tuple[str, float | None, float | None]:
    from lyaptune.models import parse_init

    scheme, s, a = parse_init(init)
    if scheme == "normal" and s is None:
        raise ConfigError(f"Invalid init {init!r} for weights='init': give its sigma, e.g. 'normal(0.04)'")
    return scheme, s, a


def _is_int(x: object) -> bool:
    return isinstance(x, numbers.Integral) and not isinstance(x, bool)


def _check_estimate_args(
    samples: int,
    weights: str,
    sigma: float | None,
    a: float | None,
    batch: str | int,
    num_batches: int,
    seed: int,
) -> None:
    if not _is_int(samples) or samples < 1:
        raise ConfigError(f"Invalid samples: {samples!r} (must be an integer >= 1)")
    if weights not in WEIGHTS:
        raise unknown_choice("weights", weights, list(WEIGHTS))
    if weights == "normal" and not _positive(sigma):
        raise ConfigError(
            f"weights='normal' needs sigma > 0 (the weights' standard deviation), got sigma={sigma!r}"
        )
    if weights == "uniform" and not _positive(a):
        raise ConfigError(f"weights='uniform' needs a > 0 (the half-width of U(-a, a)), got a={a!r}")
    if batch != "full" and (not _is_int(batch) or batch < 1):
        raise ConfigError(f"Invalid batch: {batch!r} (must be 'full' or an integer >= 1)")
    if not _is_int(num_batches) or num_batches < 1:
        raise ConfigError(f"Invalid num_batches: {num_batches!r} (must be an integer >= 1)")
    if not _is_int(seed):
        raise ConfigError(f"Invalid seed: {seed!r} (must be an integer)")


def _positive(x: object) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, bool) and math.isfinite(x) and x > 0


def _module_device(model: nn.Module) -> torch.device:
    for t in model.parameters():
        return t.device
    return torch.device("cpu")


def _as_tensor_pair(data: Data) -> tuple[torch.Tensor, torch.Tensor]:
    if isinstance(data, tuple) and len(data) == 2 and isinstance(data[0], torch.Tensor):
        return data
    xs, ys = [], []
    for xb, yb in data:
        xs.append(xb)
        ys.append(yb)
    if not xs:
        raise UserError("the data is empty: the Hessian of its mean loss is undefined")
    return torch.cat(xs), torch.cat(ys)


def _max_over_batches(
    model: nn.Module,
    loss_fn: LossFn,
    data: tuple[torch.Tensor, torch.Tensor],
    batch: int,
    num_batches: int,
    g: torch.Generator,
    iters: int,
    tol: float,
    chunk_size: int | None,
    method: str,
) -> SpectralNorm:
    x, y = data
    n = x.shape[0]
    best: SpectralNorm | None = None
    for _ in range(num_batches):
        idx = torch.randperm(n, generator=g)[: min(batch, n)]
        xb, yb = x[idx.to(x.device)], y[idx.to(y.device)]
        sn = hessian_spectral_norm(
            model, loss_fn, (xb, yb), iters=iters, tol=tol, generator=g, chunk_size=chunk_size, method=method
        )
        if best is None or sn.value > best.value:
            best = sn
    assert best is not None
    return best


# ---------------------------------------------------------------------------------------------------
# The derived step size
# ---------------------------------------------------------------------------------------------------


def initial_loss(model: nn.Module, loss_fn: LossFn, data: Data, *, chunk_size: int | None = None) -> float:
    """``L(w0)``: the mean loss over all of ``data`` at the model's current weights, in eval mode.

    Args:
      model: the network at its initial weights (each submodule's mode is restored afterwards).
      loss_fn: ``loss_fn(model(x), y)`` -> the mean loss of a batch.
      data: an ``(x, y)`` tensor pair or an iterable of batches (moved to the model's device).
      chunk_size: examples per forward pass for a tensor pair (None: all at once).

    Returns:
      The mean loss as a float.

    References:
      papers/003 Section 4 (alpha = sqrt(2 L(w0) / (K T))); METHODS.md section 4.
    """
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        chunks = iter_chunks(data, chunk_size, _module_device(model))
        loss, _, _ = full_loss(model, loss_fn, chunks)
    finally:
        for m, mode in modes:
            m.training = mode
    return float(loss)


def derived_step_size(initial_loss: float, k_hat: float, total_steps: int, multiplier: float = 1.0) -> float:
    """The constant Adam step size of papers/003.

        alpha = multiplier * sqrt( 2 L(w0) / (K_hat T) )

    Args:
      initial_loss: ``L(w0)``, the training loss at the initial weights (> 0).
      k_hat: the Lipschitz smoothness estimate (> 0), e.g. :attr:`LipschitzEstimate.k_hat`.
      total_steps: ``T``, the optimizer steps of the whole run (epochs x steps per epoch; >= 1).
      multiplier: scale of the step (the 003 ablations use 2 and 0.5; > 0).

    Returns:
      ``alpha``.

    References:
      papers/003 Theorem 3 / Section 4; METHODS.md section 4.
    """
    if not _positive(initial_loss):
        raise ConfigError(f"Invalid initial_loss L(w0): {initial_loss!r} (must be finite and > 0)")
    if not _positive(k_hat):
        raise ConfigError(f"Invalid k_hat: {k_hat!r} (the Lipschitz estimate must be finite and > 0)")
    if not _is_int(total_steps) or total_steps < 1:
        raise ConfigError(f"Invalid total_steps T: {total_steps!r} (must be an integer >= 1)")
    if not _positive(multiplier):
        raise ConfigError(f"Invalid multiplier: {multiplier!r} (must be finite and > 0)")
    return float(multiplier) * math.sqrt(2.0 * float(initial_loss) / (float(k_hat) * total_steps))
