"""Hessian-vector products and the power iteration on them (the inner step of papers/003 Algorithm 2).

Private to :mod:`lyaptune.lipschitz` (which re-exports :class:`SpectralNorm` and
:class:`NonFiniteHessianError`): the data as re-iterable chunks on the model's device, the two HVP
methods (double backward; forward-over-reverse with ``torch.func``), the random unit start vector, and
the power iteration that turns HVPs into a :class:`SpectralNorm`. Nothing here materialises a Hessian.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from lyaptune._fullbatch import Data, LossFn, iter_chunks
from lyaptune.errors import UserError

__all__ = ["NonFiniteHessianError", "SpectralNorm"]


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
