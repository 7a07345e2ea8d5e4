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
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from lyaptune._fullbatch import Data, LossFn, full_loss, iter_chunks
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


class NonFiniteHessianError(UserError, ArithmeticError):
    """The loss or a Hessian-vector product was not finite (e.g. weights so large the network overflows)."""


@dataclass(frozen=True)
class SpectralNorm:
    """Result of power iteration on the Hessian.

    Attributes:
      value: the spectral norm estimate ``||H v||`` for the final unit iterate ``v``, i.e. ``|lambda|``
        of the eigenvalue of largest magnitude. Up to rounding it never exceeds the true norm and is
        never below ``|eigenvalue|``; the two agree at convergence. Power iteration approaches the norm
        from below, so a slowly converging spectrum stopped at ``tol`` is slightly underestimated.
      eigenvalue: the signed Rayleigh quotient ``v^T H v`` (a random-init Hessian may have a dominant
        negative eigenvalue).
      iterations: HVPs computed.
      converged: whether the relative changes fell below ``tol`` before ``iters`` ran out.
    """

    value: float
    eigenvalue: float
    iterations: int
    converged: bool


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


def _trainable(model: nn.Module) -> tuple[list[str], list[torch.Tensor]]:
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if not named:
        raise UserError(f"{type(model).__name__} has no trainable parameters: its Hessian is empty")
    return [n for n, _ in named], [p for _, p in named]


class _ChunkSource:
    """Re-iterable view of ``data`` as ``(x, y)`` chunks on ``device``."""

    def __init__(self, data: Data, chunk_size: int | None, device: torch.device) -> None:
        self.device = device
        if isinstance(data, tuple) and len(data) == 2 and isinstance(data[0], torch.Tensor):
            n = data[0].shape[0]
            if n == 0:
                raise UserError("the data is empty: the Hessian of its mean loss is undefined")
            self.data: Any = data
            self.chunk_size = chunk_size
            self.single = chunk_size is None or chunk_size >= n
        else:
            batches: Iterable = data
            if iter(data) is data:  # a one-shot iterator: keep the batches for the repeated passes
                batches = list(data)
            self.data = batches
            self.chunk_size = None
            self.single = isinstance(batches, (list, tuple)) and len(batches) == 1

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        empty = True
        for xb, yb in iter_chunks(self.data, self.chunk_size, self.device):
            empty = False
            yield xb, yb
        if empty:
            raise UserError("the data is empty: the Hessian of its mean loss is undefined")


# An HVP maps v (one tensor per parameter) to (H v, mean loss as a 0-d tensor).
_HVP = Callable[[list[torch.Tensor]], tuple[list[torch.Tensor], torch.Tensor]]


def _grad_of_dot(
    grads: tuple[torch.Tensor | None, ...], v: list[torch.Tensor], params: list[torch.Tensor], retain: bool
) -> list[torch.Tensor]:
    """``d(g . v)/dw``; parameters the gradient does not depend on contribute zeros."""
    terms = [(g * vi).sum() for g, vi in zip(grads, v) if g is not None and g.requires_grad]
    if not terms:
        return [torch.zeros_like(p) for p in params]
    hv = torch.autograd.grad(torch.stack(terms).sum(), params, retain_graph=retain, allow_unused=True)
    return [torch.zeros_like(p) if h is None else h for p, h in zip(params, hv)]


def _double_backward_hvp(
    model: nn.Module, loss_fn: LossFn, params: list[torch.Tensor], chunks: _ChunkSource
) -> _HVP:
    if chunks.single:
        # One chunk: build the first-order graph once and differentiate it again at every iteration,
        # saving a forward and a backward pass per HVP (the memory is what one HVP needs anyway).
        cache: dict[str, Any] = {}

        def hvp_single(v: list[torch.Tensor]) -> tuple[list[torch.Tensor], torch.Tensor]:
            if not cache:
                (x, y) = next(iter(chunks))
                loss = loss_fn(model(x), y)
                cache["loss"] = loss.detach()
                cache["grads"] = torch.autograd.grad(loss, params, create_graph=True, allow_unused=True)
            return _grad_of_dot(cache["grads"], v, params, retain=True), cache["loss"]

        return hvp_single

    def hvp(v: list[torch.Tensor]) -> tuple[list[torch.Tensor], torch.Tensor]:
        acc = [torch.zeros_like(p) for p in params]
        total = torch.zeros((), dtype=torch.float64, device=params[0].device)
        n = 0
        for x, y in chunks:
            b = x.shape[0]
            loss = loss_fn(model(x), y)
            grads = torch.autograd.grad(loss, params, create_graph=True, allow_unused=True)
            for a, h in zip(acc, _grad_of_dot(grads, v, params, retain=False)):
                a.add_(h, alpha=b)
            total += loss.detach().double() * b
            n += b
        for a in acc:
            a.div_(n)
        return acc, total / n

    return hvp


def _forward_over_reverse_hvp(
    model: nn.Module, loss_fn: LossFn, names: list[str], params: list[torch.Tensor], chunks: _ChunkSource
) -> _HVP:
    from torch.func import functional_call, grad_and_value, jvp

    primals = tuple(p.detach() for p in params)

    def hvp(v: list[torch.Tensor]) -> tuple[list[torch.Tensor], torch.Tensor]:
        acc = [torch.zeros_like(p) for p in params]
        total = torch.zeros((), dtype=torch.float64, device=params[0].device)
        n = 0
        for x, y in chunks:

            def loss_of(
                ps: tuple[torch.Tensor, ...], x: torch.Tensor = x, y: torch.Tensor = y
            ) -> torch.Tensor:
                return loss_fn(functional_call(model, dict(zip(names, ps)), (x,)), y)

            b = x.shape[0]
            (_, loss), (hv, _) = jvp(grad_and_value(loss_of), (primals,), (tuple(v),))
            for a, h in zip(acc, hv):
                a.add_(h, alpha=b)
            total += loss.detach().double() * b
            n += b
        for a in acc:
            a.div_(n)
        return acc, total / n

    return hvp


def _start_vector(params: list[torch.Tensor], generator: torch.Generator | None) -> list[torch.Tensor]:
    gen_device = generator.device if generator is not None else torch.device("cpu")
    v = [
        torch.randn(p.shape, generator=generator, device=gen_device, dtype=torch.float64).to(
            p.device, p.dtype
        )
        for p in params
    ]
    norm = torch.sqrt(sum(vi.double().pow(2).sum() for vi in v))
    return [vi / norm.to(vi.dtype) for vi in v]


def _rel_change(new: float, old: float) -> float:
    scale = max(abs(new), abs(old))
    return 0.0 if scale == 0.0 else abs(new - old) / scale


def _power_iteration(hvp: _HVP, v: list[torch.Tensor], iters: int, tol: float) -> SpectralNorm:
    prev: tuple[float, float] | None = None
    mu = nu = 0.0
    for k in range(1, iters + 1):
        hv, loss = hvp(v)
        rq = sum(torch.dot(vi.reshape(-1).double(), hi.reshape(-1).double()) for vi, hi in zip(v, hv))
        sq = sum(hi.double().pow(2).sum() for hi in hv)
        # One host synchronisation per iteration for all three numbers.
        mu, sq_f, loss_f = torch.stack([rq, sq, loss.double().reshape(())]).tolist()
        if not math.isfinite(loss_f):
            raise NonFiniteHessianError(f"the loss is not finite ({loss_f}) at these weights")
        if not (math.isfinite(mu) and math.isfinite(sq_f)):
            raise NonFiniteHessianError(
                f"a Hessian-vector product is not finite at power iteration {k} (loss {loss_f:.4g})"
            )
        nu = math.sqrt(sq_f)
        if nu == 0.0:  # H v = 0 for a random v: the Hessian is (numerically) zero
            return SpectralNorm(value=0.0, eigenvalue=0.0, iterations=k, converged=True)
        if prev is not None and _rel_change(mu, prev[0]) < tol and _rel_change(nu, prev[1]) < tol:
            return SpectralNorm(value=nu, eigenvalue=mu, iterations=k, converged=True)
        prev = (mu, nu)
        v = [hi / nu for hi in hv]
    return SpectralNorm(value=nu, eigenvalue=mu, iterations=iters, converged=False)


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
    sigma_used = float(sigma) if weights == "normal" else None
    a_used = float(a) if weights == "uniform" else None
    explicit_init = _parse_sample_init(init) if weights == "init" and init is not None else None
    init_used: str | None = None

    batch_data: tuple[torch.Tensor, torch.Tensor] | None = None
    if batch != "full":
        batch_data = _as_tensor_pair(data)

    g = torch.Generator().manual_seed(seed)
    values: list[float] = []
    eigenvalues: list[float] = []
    iterations: list[int] = []
    converged: list[bool] = []
    skipped: list[tuple[int, str]] = []
    start = time.perf_counter()
    for j in range(samples):
        model = model_factory()
        target = torch.device(device) if device is not None else _module_device(model)
        # Draw on the CPU with the one CPU generator: the same seed gives the same weights on any device.
        model.to("cpu")
        if weights == "init":
            scheme, s_init, a_init = explicit_init or getattr(model, INIT_ATTR, None) or ("init", None, None)
            initialize(model, scheme, sigma=s_init, a=a_init, generator=g)
            init_used, sigma_used, a_used = scheme, s_init, a_init
        else:
            initialize(model, weights, sigma=sigma_used, a=a_used, generator=g)
        model.to(target)
        try:
            if batch_data is None:
                sn = hessian_spectral_norm(
                    model,
                    loss_fn,
                    data,
                    iters=iters,
                    tol=tol,
                    generator=g,
                    chunk_size=chunk_size,
                    method=method,
                )
            else:
                sn = _max_over_batches(
                    model, loss_fn, batch_data, int(batch), num_batches, g, iters, tol, chunk_size, method
                )
        except NonFiniteHessianError as err:
            skipped.append((j, str(err)))
            if progress is not None:
                progress(
                    LipschitzProgress(
                        j + 1,
                        samples,
                        None,
                        str(err),
                        max(values, default=math.nan),
                        time.perf_counter() - start,
                    )
                )
            continue
        values.append(sn.value)
        eigenvalues.append(sn.eigenvalue)
        iterations.append(sn.iterations)
        converged.append(sn.converged)
        if progress is not None:
            progress(LipschitzProgress(j + 1, samples, sn, None, max(values), time.perf_counter() - start))
    seconds = time.perf_counter() - start

    if not values:
        fix = {
            "normal": f"reduce sigma (got {sigma_used})",
            "uniform": f"reduce a (got {a_used})",
            "init": "check the model and loss for overflow",
        }[weights]
        raise UserError(
            f"all {samples} weight samples gave non-finite Hessian products; {fix} "
            f"(weights={weights!r}; first reason: {skipped[0][1]})"
        )
    return LipschitzEstimate(
        k_hat=max(values),
        values=tuple(values),
        eigenvalues=tuple(eigenvalues),
        iterations=tuple(iterations),
        converged=tuple(converged),
        seconds=seconds,
        weights=weights,
        sigma=sigma_used,
        a=a_used,
        samples=samples,
        batch=batch,
        skipped=tuple(skipped),
        num_batches=num_batches,
        method=method,
        tol=float(tol),
        max_iters=iters,
        seed=seed,
        init=init_used,
    )


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
