"""Full-dataset loss and gradient, accumulated over chunks that fit in memory.

``data`` is either one ``(x, y)`` pair of tensors (split into chunks of ``chunk_size``) or an
iterable of ``(x, y)`` batches. The loss function must return the *mean* loss of a batch; chunk
results are weighted by chunk size, so the result equals the loss of one pass over all the data.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Union

import torch
from torch import nn

Data = Union[tuple[torch.Tensor, torch.Tensor], Iterable[tuple[torch.Tensor, torch.Tensor]]]  # noqa: UP007
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

__all__ = ["Data", "LossFn", "iter_chunks", "full_loss", "full_loss_and_grad"]


def iter_chunks(
    data: Data, chunk_size: int | None = None, device: torch.device | str | None = None
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield ``(x, y)`` chunks of ``data`` (moved to ``device`` if given)."""
    if isinstance(data, tuple) and len(data) == 2 and isinstance(data[0], torch.Tensor):
        x, y = data
        n = x.shape[0]
        step = n if not chunk_size else int(chunk_size)
        for i in range(0, n, step):
            xb, yb = x[i : i + step], y[i : i + step]
            yield (xb.to(device), yb.to(device)) if device is not None else (xb, yb)
    else:
        for xb, yb in data:
            yield (xb.to(device), yb.to(device)) if device is not None else (xb, yb)


def full_loss(
    model: nn.Module, loss_fn: LossFn, data: Data, chunk_size: int | None = None
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Mean loss and number of correct predictions over all of ``data``, without gradients.

    Returns:
      ``(mean_loss, correct, n)`` with ``mean_loss`` and ``correct`` as 0-d tensors on the model's
      device (no host synchronisation), ``n`` the number of examples.
    """
    total = None
    correct = None
    n = 0
    with torch.no_grad():
        for xb, yb in iter_chunks(data, chunk_size):
            out = model(xb)
            b = xb.shape[0]
            loss = loss_fn(out, yb).detach() * b
            hit = (out.argmax(dim=1) == yb).sum() if out.dim() == 2 else torch.zeros((), device=out.device)
            total = loss if total is None else total + loss
            correct = hit if correct is None else correct + hit
            n += b
    if total is None:
        raise ValueError("full_loss: the data is empty")
    return total / n, correct, n


def full_loss_and_grad(
    model: nn.Module, loss_fn: LossFn, data: Data, chunk_size: int | None = None
) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]:
    """Mean loss over all of ``data``, its gradient w.r.t. the trainable parameters, and the number of
    correct predictions (a 0-d tensor), from one forward and backward pass.

    The gradient is accumulated in fresh tensors (``.grad`` is left untouched).
    """
    params = [p for p in model.parameters() if p.requires_grad]
    n_total = 0
    chunks = list(iter_chunks(data, chunk_size)) if not isinstance(data, tuple) else None
    sizes = [c[0].shape[0] for c in chunks] if chunks is not None else None
    n_total = sum(sizes) if sizes is not None else data[0].shape[0]
    grads = [torch.zeros_like(p) for p in params]
    total = torch.zeros((), device=params[0].device if params else None)
    correct = torch.zeros((), device=total.device, dtype=torch.long)
    for xb, yb in chunks if chunks is not None else iter_chunks(data, chunk_size):
        w = xb.shape[0] / n_total
        out = model(xb)
        loss = loss_fn(out, yb) * w
        if out.dim() == 2:
            correct = correct + (out.detach().argmax(dim=1) == yb).sum()
        gs = torch.autograd.grad(loss, params, allow_unused=True)
        for acc, g in zip(grads, gs):
            if g is not None:
                acc.add_(g)
        total = total + loss.detach()
    return total, grads, correct
