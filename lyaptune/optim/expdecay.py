"""Exponentially decaying step with gradient-norm adaptation (papers/002, METHODS.md section 3)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from torch.optim.optimizer import ParamsT

from lyaptune._registry import unknown_choice
from lyaptune.optim._registry import register_optimizer
from lyaptune.optim.lyam import _default_foreach

__all__ = ["ExpDecayGradNorm", "expdecay_gradnorm", "global_grad_norm"]

DECAY_PER = ("epoch", "step")
# Key of the optimizer-wide counters in ``self.state`` (next to the per-parameter entries); torch's
# state_dict / load_state_dict carry non-parameter keys through unchanged. The entry has no "step" key:
# code that scans optimizer state takes a "step" for a per-parameter tensor.
_COUNTERS = "counters"


@register_optimizer(
    "expdecay-gradnorm",
    defaults={"lr": 0.1, "decay": 0.05, "decay_per": "epoch", "momentum": 0.0, "weight_decay": 0.0},
    space={
        "lr": {"low": 1e-3, "high": 1.0, "log": True},
        "decay": {"low": 1e-4, "high": 0.5, "log": True},
    },
    description="alpha0 * exp(-beta k) * g / (1 + ||g||), global gradient norm",
    reference="papers/002 (arXiv:2409.16769); METHODS.md section 3",
)
class ExpDecayGradNorm(torch.optim.Optimizer):
    r"""Exponentially decaying step size scaled by ``1 / (1 + ||g||)``, with ``||g||`` global.

    .. math::
        \alpha_k &= \alpha_0 \, e^{-\beta k} \\
        u_t &= g_t / (1 + \lVert g_t \rVert_2) \\
        b_t &= \mu\, b_{t-1} + u_t \quad (b_0 = 0;\ \text{with } \mu = 0,\ b_t = u_t) \\
        \theta_t &= (1 - \alpha_k \lambda)\,\theta_{t-1} - \alpha_k\, b_t

    ``||g||`` is the Euclidean norm over all parameters of all groups. ``k`` counts completed epochs
    (``decay_per="epoch"``; the trainer calls :meth:`epoch_end` after each epoch) or the steps taken
    before this one (``decay_per="step"``), so the first update uses ``alpha_0 = lr``. The momentum
    ``mu`` is heavy-ball on the norm-scaled gradient ``u`` (the decayed rate multiplies the buffer, so a
    change of ``alpha_k`` acts at once). The weight decay ``lambda`` is decoupled, scaled by the
    current ``alpha_k`` and applied before the update; ``||g||`` is the norm of the raw gradients.

    The norm stays on the device: ``step()`` never synchronises. :meth:`diagnostics` reads the last
    step's values back (once per epoch).

    Args:
      params: parameters or parameter groups.
      lr: initial step size ``alpha_0`` (a float, or a 0-d tensor on the parameters' device).
      decay: decay rate ``beta >= 0``.
      decay_per: ``"epoch"`` or ``"step"``, what ``k`` counts.
      momentum: heavy-ball coefficient ``mu`` in ``[0, 1)``.
      weight_decay: decoupled weight decay ``lambda >= 0``.
      foreach: use the multi-tensor ``torch._foreach_*`` kernels; ``None`` picks them as
        ``torch.optim`` does (plain dense tensors on CUDA or another device with foreach kernels; the
        for-loop on CPU, where it is faster).

    References:
      papers/002: "Super Level Sets and Exponential Decay: A Synergistic Approach to Stable Neural
      Network Training", arXiv:2409.16769. The rule as pinned in METHODS.md section 3.
    """

    def __init__(
        self,
        params: ParamsT,
        lr: float | Tensor = 0.1,
        decay: float = 0.05,
        decay_per: str = "epoch",
        momentum: float = 0.0,
        weight_decay: float = 0.0,
        *,
        foreach: bool | None = None,
    ) -> None:
        if isinstance(lr, Tensor) and lr.numel() != 1:
            raise ValueError(
                f"Invalid learning rate: a tensor lr must have one element, got shape {lr.shape}"
            )
        if not 0.0 <= lr:
            raise ValueError(f"Invalid learning rate: {lr}")
        if not 0.0 <= decay < math.inf:
            raise ValueError(f"Invalid decay value: {decay} (must be a finite number >= 0)")
        if decay_per not in DECAY_PER:
            raise unknown_choice("decay_per", decay_per, list(DECAY_PER))
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"Invalid momentum value: {momentum} (must be in [0, 1))")
        if not 0.0 <= weight_decay:
            raise ValueError(f"Invalid weight_decay value: {weight_decay} (must be >= 0)")
        defaults = {
            "lr": lr,
            "decay": decay,
            "decay_per": decay_per,
            "momentum": momentum,
            "weight_decay": weight_decay,
            "foreach": foreach,
        }
        super().__init__(params, defaults)
        self.state[_COUNTERS] = {"steps": 0, "epochs": 0}
        self._last_alpha: float | Tensor | None = None
        self._last_grad_norm: Tensor | None = None

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        for group in self.param_groups:
            group.setdefault("foreach", None)
        self.state.setdefault(_COUNTERS, {"steps": 0, "epochs": 0})
        self._last_alpha = None
        self._last_grad_norm = None

    @property
    def steps_taken(self) -> int:
        """Optimizer steps taken so far."""
        return self.state[_COUNTERS]["steps"]

    @property
    def epochs_completed(self) -> int:
        """Epochs completed so far (calls of :meth:`epoch_end`)."""
        return self.state[_COUNTERS]["epochs"]

    def epoch_end(self) -> None:
        """Mark the end of an epoch: the next update decays by one more epoch (``decay_per="epoch"``)."""
        # A new dict each time: a state_dict taken earlier keeps its own counters.
        self.state[_COUNTERS] = {**self.state[_COUNTERS], "epochs": self.epochs_completed + 1}

    def alpha(self, group_index: int = 0) -> float | Tensor:
        """The decayed rate ``alpha_k`` the next update of parameter group ``group_index`` uses."""
        group = self.param_groups[group_index]
        k = self.epochs_completed if group["decay_per"] == "epoch" else self.steps_taken
        return group["lr"] * math.exp(-group["decay"] * k)

    def diagnostics(self) -> dict[str, float]:
        """The last step's rate, global gradient norm and effective step size (reads the device).

        Returns:
          ``{"expdecay_alpha": alpha_k, "expdecay_grad_norm": ||g||,
          "expdecay_step_size": alpha_k / (1 + ||g||)}`` for the first parameter group; NaN before the
          first step (also after loading a state_dict, until the next step).
        """
        if self._last_grad_norm is None or self._last_alpha is None:
            nan = float("nan")
            return {"expdecay_alpha": nan, "expdecay_grad_norm": nan, "expdecay_step_size": nan}
        alpha = float(self._last_alpha)
        norm = float(self._last_grad_norm)
        return {
            "expdecay_alpha": alpha,
            "expdecay_grad_norm": norm,
            "expdecay_step_size": alpha / (1.0 + norm),
        }

    def _init_group(
        self,
        group: dict[str, Any],
        params: list[Tensor],
        grads: list[Tensor],
        momentum_buffers: list[Tensor],
    ) -> None:
        """Collect the parameters with gradients and their momentum buffers (created lazily)."""
        for p in group["params"]:
            if p.grad is None:
                continue
            if p.grad.is_sparse:
                raise RuntimeError("ExpDecayGradNorm does not support sparse gradients")
            if torch.is_complex(p):
                raise RuntimeError("ExpDecayGradNorm does not support complex parameters")
            params.append(p)
            grads.append(p.grad)
            if group["momentum"] != 0:
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                momentum_buffers.append(state["momentum_buffer"])

    # The counters are host ints that the rate depends on: a traced step would bake them in, so
    # torch.compile runs this step eagerly (a graph break) rather than wrongly.
    @torch.compiler.disable
    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor | None:
        """Perform one optimization step.

        Args:
          closure: re-evaluates the model and returns the loss (run with gradients enabled).

        Returns:
          The closure's loss, or ``None``.
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()

        collected = []
        for group in self.param_groups:
            params: list[Tensor] = []
            grads: list[Tensor] = []
            bufs: list[Tensor] = []
            self._init_group(group, params, grads, bufs)
            foreach = group["foreach"] if group["foreach"] is not None else _default_foreach(params)
            collected.append((group, params, grads, bufs, foreach))
        all_grads = [g for _, _, grads, _, _ in collected for g in grads]
        if not all_grads:
            return loss
        grad_norm = global_grad_norm(all_grads, foreach=all(c[4] for c in collected))

        for index, (group, params, grads, bufs, foreach) in enumerate(collected):
            alpha = self.alpha(index)
            if index == 0:
                self._last_alpha = alpha
            if not params:
                continue
            expdecay_gradnorm(
                params,
                grads,
                bufs,
                grad_norm=grad_norm,
                alpha=alpha,
                momentum=group["momentum"],
                weight_decay=group["weight_decay"],
                foreach=foreach,
            )
        self._last_grad_norm = grad_norm
        self.state[_COUNTERS] = {**self.state[_COUNTERS], "steps": self.steps_taken + 1}
        return loss


def global_grad_norm(grads: list[Tensor], *, foreach: bool | None = None) -> Tensor:
    """The Euclidean norm of all ``grads`` together, as a 0-d tensor on the first gradient's device.

    Accumulates in float64 when any gradient is float64, else in float32; never synchronises.

    Args:
      grads: the gradient tensors (any shapes, devices, dtypes).
      foreach: per-tensor norms with ``torch._foreach_norm``; ``None`` chooses it when possible.

    Returns:
      ``sqrt(sum_i ||g_i||^2)``.
    """
    device = grads[0].device
    dtype = torch.float64 if any(g.dtype == torch.float64 for g in grads) else torch.float32
    if foreach is None:
        foreach = _default_foreach(grads)
    if foreach:
        norms: list[Tensor | None] = [None] * len(grads)
        grouped = torch.optim.Optimizer._group_tensors_by_device_and_dtype([grads], with_indices=True)
        for [dev_grads], indices in grouped.values():
            for i, n in zip(indices, torch._foreach_norm(dev_grads, 2, dtype=dtype), strict=True):
                norms[i] = n
    else:
        norms = [torch.linalg.vector_norm(g, 2, dtype=dtype) for g in grads]
    return torch.linalg.vector_norm(torch.stack([n.to(device) for n in norms]), 2)


def expdecay_gradnorm(
    params: list[Tensor],
    grads: list[Tensor],
    momentum_buffers: list[Tensor],
    *,
    grad_norm: Tensor,
    alpha: float | Tensor,
    momentum: float,
    weight_decay: float,
    foreach: bool | None = None,
) -> None:
    """Functional update ``p -= alpha * b`` with ``b = mu b + g / (1 + grad_norm)``, in place.

    Args:
      params, grads: aligned lists.
      momentum_buffers: one per parameter when ``momentum != 0``, else empty.
      grad_norm: the global gradient norm (0-d tensor, any device).
      alpha: the decayed rate ``alpha_k`` of this update.
      momentum, weight_decay: as in :class:`ExpDecayGradNorm`.
      foreach: multi-tensor path; ``None`` chooses it when the tensors allow.
    """
    if foreach is None:
        foreach = _default_foreach(params)
    fn = _multi_tensor_expdecay if foreach else _single_tensor_expdecay
    fn(
        params,
        grads,
        momentum_buffers,
        grad_norm=grad_norm,
        alpha=alpha,
        momentum=momentum,
        weight_decay=weight_decay,
    )


def _scales(
    grad_norm: Tensor, alpha: float | Tensor, momentum: float, device: torch.device, dtype: torch.dtype
) -> Tensor:
    """``1 / (1 + ||g||)`` (momentum) or ``-alpha / (1 + ||g||)`` (plain step), as a 0-d device tensor."""
    inv = torch.reciprocal(grad_norm + 1)
    if momentum == 0:
        inv = inv * -alpha
    return inv.to(device=device, dtype=dtype)


def _single_tensor_expdecay(
    params: list[Tensor],
    grads: list[Tensor],
    momentum_buffers: list[Tensor],
    *,
    grad_norm: Tensor,
    alpha: float | Tensor,
    momentum: float,
    weight_decay: float,
) -> None:
    scales: dict[tuple[torch.device, torch.dtype], Tensor] = {}
    for i, param in enumerate(params):
        grad = grads[i]
        key = (param.device, param.dtype)
        if key not in scales:
            scales[key] = _scales(grad_norm, alpha, momentum, *key)
        scale = scales[key]
        if weight_decay != 0:
            param.mul_(1 - alpha * weight_decay)
        if momentum == 0:
            param.add_(grad * scale)  # scale = -alpha / (1 + ||g||)
            continue
        buf = momentum_buffers[i]
        buf.mul_(momentum).add_(grad * scale)  # scale = 1 / (1 + ||g||)
        if isinstance(alpha, Tensor):
            param.sub_(buf * alpha)
        else:
            param.add_(buf, alpha=-alpha)


def _multi_tensor_expdecay(
    params: list[Tensor],
    grads: list[Tensor],
    momentum_buffers: list[Tensor],
    *,
    grad_norm: Tensor,
    alpha: float | Tensor,
    momentum: float,
    weight_decay: float,
) -> None:
    lists = [params, grads] + ([momentum_buffers] if momentum != 0 else [])
    grouped = torch.optim.Optimizer._group_tensors_by_device_and_dtype(lists)
    for (device, dtype), (dev_lists, _) in grouped.items():
        dev_params, dev_grads = dev_lists[0], dev_lists[1]
        scale = _scales(grad_norm, alpha, momentum, device, dtype)
        if weight_decay != 0:
            torch._foreach_mul_(dev_params, 1 - alpha * weight_decay)
        if momentum == 0:
            torch._foreach_add_(dev_params, torch._foreach_mul(dev_grads, scale))
            continue
        dev_bufs = dev_lists[2]
        torch._foreach_mul_(dev_bufs, momentum)
        torch._foreach_add_(dev_bufs, torch._foreach_mul(dev_grads, scale))
        if isinstance(alpha, Tensor):
            torch._foreach_sub_(dev_params, torch._foreach_mul(dev_bufs, alpha))
        else:
            torch._foreach_add_(dev_params, dev_bufs, alpha=-alpha)
