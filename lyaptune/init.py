"""Weight initialisation schemes and weight distributions W.

One module serves two purposes: the ``init`` option of a model (papers/003 shows the derived step
size does not depend on it) and the weight distribution W from which Algorithm 2 of papers/003 draws
the samples ``w_j`` whose Hessian spectral norms estimate the Lipschitz smoothness K.

Rules (METHODS.md section 4): biases are set to 0 and normalisation-layer weights to 1 for every scheme
except ``kaiming-uniform`` / ``init``, which reproduce PyTorch's own ``reset_parameters`` (whose biases
are uniform in +-1/sqrt(fan_in)).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from lyaptune._registry import unknown_choice

__all__ = ["INIT_ATTR", "SCHEMES", "initialize"]

SCHEMES = (
    "kaiming-uniform",
    "kaiming-normal",
    "xavier",
    "xavier-normal",
    "orthogonal",
    "normal",
    "uniform",
    "init",
)

INIT_ATTR = "lyaptune_init"
"""Attribute :func:`lyaptune.models.create_model` sets on a model built with an ``init``: the resolved
``(scheme, sigma, a)``, so that Algorithm 2's ``weights="init"`` redraws with the task's initialiser."""

_NORM_TYPES = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm, nn.LocalResponseNorm)


def _fan_in(w: torch.Tensor) -> int:
    return w.shape[1] * (w[0][0].numel() if w.dim() > 2 else 1)


@torch.no_grad()
def initialize(
    model: nn.Module,
    scheme: str = "kaiming-uniform",
    *,
    sigma: float | None = None,
    a: float | None = None,
    generator: torch.Generator | None = None,
) -> nn.Module:
    """Re-initialise every parameter of ``model`` in place and return it.

    Args:
      model: any module.
      scheme: one of :data:`SCHEMES`. ``normal`` draws each weight tensor from N(0, sigma^2);
        ``uniform`` from U(-a, a); ``init`` calls each submodule's own ``reset_parameters`` (under
        a seed drawn from ``generator``), ``kaiming-uniform`` is PyTorch's default for Linear/Conv.
      sigma: standard deviation for ``normal`` (required).
      a: half-width for ``uniform`` (required).
      generator: source of randomness; the same generator state gives the same weights.

    Returns:
      ``model``, re-initialised.

    References:
      Algorithm 2 and Section 5 of papers/003 (weights sampled from a distribution W).
    """
    if scheme not in SCHEMES:
        raise unknown_choice("init scheme", scheme, list(SCHEMES))
    if scheme == "normal" and (sigma is None or not sigma > 0):
        raise ValueError(f"Invalid sigma for init 'normal': {sigma} (must be > 0)")
    if scheme == "uniform" and (a is None or not a > 0):
        raise ValueError(f"Invalid a for init 'uniform': {a} (must be > 0)")
    g = generator

    if scheme == "init":
        seed = int(torch.randint(0, 2**62, (1,), generator=g).item()) if g is not None else None
        devices = [p.device for p in model.parameters() if p.device.type == "cuda"]
        with torch.random.fork_rng(devices=devices[:1]):
            if seed is not None:
                torch.manual_seed(seed)
            for m in model.modules():
                if hasattr(m, "reset_parameters"):
                    m.reset_parameters()
        return model

    for module in model.modules():
        params = dict(module.named_parameters(recurse=False))
        if not params:
            continue
        if isinstance(module, _NORM_TYPES):
            for name, p in params.items():
                p.fill_(1.0 if name == "weight" else 0.0)
            continue
        weight = params.get("weight")
        for name, p in params.items():
            if name == "bias" or name.endswith("_bias"):
                if scheme == "kaiming-uniform" and weight is not None and weight.dim() >= 2:
                    bound = 1.0 / math.sqrt(_fan_in(weight)) if _fan_in(weight) > 0 else 0.0
                    p.uniform_(-bound, bound, generator=g)
                else:
                    p.zero_()
                continue
            _init_weight(p, scheme, sigma=sigma, a=a, generator=g)
    return model


def _init_weight(
    p: torch.Tensor, scheme: str, *, sigma: float | None, a: float | None, generator: torch.Generator | None
) -> None:
    g = generator
    if scheme == "normal":
        p.normal_(0.0, float(sigma), generator=g)
    elif scheme == "uniform":
        p.uniform_(-float(a), float(a), generator=g)
    elif p.dim() < 2:
        # fan-based schemes are undefined for vectors (e.g. a ViT class token): small normal.
        p.normal_(0.0, 0.02, generator=g)
    elif scheme == "kaiming-uniform":
        nn.init.kaiming_uniform_(p, a=math.sqrt(5), generator=g)
    elif scheme == "kaiming-normal":
        nn.init.kaiming_normal_(p, nonlinearity="relu", generator=g)
    elif scheme == "xavier":
        nn.init.xavier_uniform_(p, generator=g)
    elif scheme == "xavier-normal":
        nn.init.xavier_normal_(p, generator=g)
    elif scheme == "orthogonal":
        nn.init.orthogonal_(p, generator=g)
