"""LyAm: Adam's moments with a Lyapunov-style ``1 / (1 + v_hat)`` step (papers/000, METHODS.md section 1).

``scaling="adam"`` swaps the ``1 / (1 + v_hat)`` scaling for Adam's ``1 / (sqrt(v_hat) + eps)``, everything
else equal: papers/000's ablation of the adaptive scaling.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor
from torch.optim.optimizer import (
    ParamsT,
    _foreach_supported_types,
    _get_foreach_kernels_supported_devices,
    _get_scalar_dtype,
)

from lyaptune._registry import unknown_choice
from lyaptune.optim._registry import register_optimizer

__all__ = ["LyAm", "lyam", "SCALINGS"]

SCALINGS: tuple[str, ...] = ("lyapunov", "adam")
"""The second-moment scalings: LyAm's ``1 / (1 + v_hat)`` and Adam's ``1 / (sqrt(v_hat) + eps)``."""


def _default_foreach(tensors: Iterable[Tensor]) -> bool:
    """Whether ``foreach=None`` picks the multi-tensor (``torch._foreach_*``) path for ``tensors``.

    ``torch.optim``'s rule: yes when every tensor is a plain dense tensor on a device with foreach
    kernels (CUDA and the like). On CPU the for-loop wins: the foreach ops there sweep the whole list
    once per op, while the loop does all ops on one tensor while it is in cache (benchmarks/optimizer_step.py
    measured LyAm's for-loop 1.2-1.9x faster on ResNet-18 parameters).
    """
    devices = _get_foreach_kernels_supported_devices()
    return all(
        type(t) in _foreach_supported_types and not t.is_sparse and t.device.type in devices for t in tensors
    )


@register_optimizer(
    "lyam",
    defaults={
        "lr": 1e-2,
        "betas": (0.9, 0.999),
        "weight_decay": 0.0,
        "bias_correction": True,
        "scaling": "lyapunov",
    },
    space={
        # For small gradients 1 + v_hat ~ 1, so lr acts like an SGD-with-momentum rate (METHODS.md s.1).
        "lr": {"low": 1e-4, "high": 1.0, "log": True},
        "beta1": {"low": 0.8, "high": 0.99},
        "beta2": {"low": 0.9, "high": 0.9999},
    },
    tuple_params={"betas": ("beta1", "beta2")},
    description="LyAm: Adam moments, step lr * m_hat / (1 + v_hat) (scaling: lyapunov | adam)",
    reference="papers/000 (Mirzabeigi et al. 2025, arXiv:2507.11262); METHODS.md section 1",
)
class LyAm(torch.optim.Optimizer):
    r"""LyAm: Adam's bias-corrected moments with the Lyapunov step ``lr / (1 + v_hat)``.

    .. math::
        m_t &= \beta_1 m_{t-1} + (1 - \beta_1) g_t, \qquad
        v_t = \beta_2 v_{t-1} + (1 - \beta_2) g_t^2 \\
        \hat m_t &= m_t / (1 - \beta_1^t), \qquad \hat v_t = v_t / (1 - \beta_2^t) \\
        \theta_t &= (1 - \eta\lambda)\,\theta_{t-1} - \eta\,\hat m_t / (1 + \hat v_t)

    elementwise, with ``t`` counting this parameter's steps from 1. With ``scaling="adam"`` (papers/000's
    ablation of the adaptive scaling) the last line is Adam's
    ``theta_t = (1 - eta*lambda) theta_{t-1} - eta * m_hat_t / (sqrt(v_hat_t) + eps)``, all else
    unchanged; ``eps`` is used only there. Without bias correction
    ``m_hat = m`` and ``v_hat = v``. The weight decay ``lambda`` is decoupled (as in AdamW) and applied
    before the update. Since ``1 + v_hat ~ 1`` for small gradients, ``lr`` behaves like an SGD-momentum
    rate rather than an Adam rate.

    The step count is kept per parameter as ``state["step"]`` (a CPU tensor, as in ``torch.optim.Adam``,
    so checkpoints look alike) and mirrored as a Python int, so the bias corrections are host floats
    and ``step()`` never reads a tensor back.

    Args:
      params: parameters or parameter groups.
      lr: learning rate ``eta`` (a float, or a 0-d tensor on the parameters' device).
      betas: ``(beta1, beta2)``, each in ``[0, 1)``.
      weight_decay: decoupled weight decay ``lambda >= 0``.
      bias_correction: divide the moments by ``1 - beta^t`` (the ablation of papers/000 turns it off).
      scaling: ``"lyapunov"`` (default): ``1 / (1 + v_hat)``; ``"adam"``: ``1 / (sqrt(v_hat) + eps)``.
      eps: Adam's denominator term ``> 0``, used only by ``scaling="adam"``.
      foreach: use the multi-tensor ``torch._foreach_*`` kernels; ``None`` picks them as
        ``torch.optim`` does (plain dense tensors on CUDA or another device with foreach kernels; the
        for-loop on CPU, where it is faster).

    References:
      papers/000: Mirzabeigi, Rezaee, Parand, "LyAm: Robust Non-Convex Optimization for Stable Learning
      in Noisy Environments", arXiv:2507.11262 (2025). The rule as pinned in METHODS.md section 1.
    """

    def __init__(
        self,
        params: ParamsT,
        lr: float | Tensor = 1e-2,
        betas: tuple[float, float] = (0.9, 0.999),
        weight_decay: float = 0.0,
        bias_correction: bool = True,
        scaling: str = "lyapunov",
        eps: float = 1e-8,
        *,
        foreach: bool | None = None,
    ) -> None:
        if isinstance(lr, Tensor) and lr.numel() != 1:
            raise ValueError(
                f"Invalid learning rate: a tensor lr must have one element, got shape {lr.shape}"
            )
        if not 0.0 <= lr:
            raise ValueError(f"Invalid learning rate: {lr}")
        if len(betas) != 2:
            raise ValueError(f"Invalid betas: expected 2 values (beta1, beta2), got {betas}")
        for i, beta in enumerate(betas):
            if not 0.0 <= beta < 1.0:
                raise ValueError(f"Invalid beta parameter at index {i}: {beta} (must be in [0, 1))")
        if not 0.0 <= weight_decay:
            raise ValueError(f"Invalid weight_decay value: {weight_decay} (must be >= 0)")
        if scaling not in SCALINGS:
            raise unknown_choice("scaling", scaling, list(SCALINGS))
        if not 0.0 < eps:
            raise ValueError(f"Invalid epsilon value eps: {eps} (must be > 0)")
        defaults = {
            "lr": lr,
            "betas": (float(betas[0]), float(betas[1])),
            "weight_decay": weight_decay,
            "bias_correction": bool(bias_correction),
            "scaling": scaling,
            "eps": float(eps),
            "foreach": foreach,
        }
        super().__init__(params, defaults)
        # Python mirror of state[p]["step"]: bias corrections without reading a tensor in step(). Steps
        # traced by torch.compile use the tensors and clear it; an entry missing for a parameter with
        # state is then read back once from its step tensor.
        self._step_counts: dict[Tensor, int] = {}

    def __setstate__(self, state: dict[str, Any]) -> None:
        # Called by load_state_dict, unpickling and deepcopy: the mirror is rebuilt from the step tensors.
        super().__setstate__(state)
        for group in self.param_groups:
            group.setdefault("bias_correction", True)
            group.setdefault("scaling", "lyapunov")
            group.setdefault("eps", 1e-8)
            group.setdefault("foreach", None)
        self._step_counts = {
            p: int(s["step"]) for p, s in self.state.items() if isinstance(p, Tensor) and "step" in s
        }

    def _init_group(
        self,
        group: dict[str, Any],
        params: list[Tensor],
        grads: list[Tensor],
        exp_avgs: list[Tensor],
        exp_avg_sqs: list[Tensor],
        state_steps: list[Tensor],
        step_counts: list[int] | None,
    ) -> None:
        """Collect the parameters with gradients and their state, creating the state lazily.

        ``step_counts`` receives each parameter's step number ``t`` of this update; pass ``None`` under
        ``torch.compile``, where the bias corrections are computed from the step tensors instead.
        """
        for p in group["params"]:
            if p.grad is None:
                continue
            if p.grad.is_sparse:
                raise RuntimeError("LyAm does not support sparse gradients")
            if torch.is_complex(p):
                raise RuntimeError("LyAm does not support complex parameters")
            state = self.state[p]
            if len(state) == 0:
                state["step"] = torch.tensor(0.0, dtype=_get_scalar_dtype())
                state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                self._step_counts[p] = 0
            if step_counts is not None:
                if p not in self._step_counts:  # once after steps traced by torch.compile
                    self._step_counts[p] = int(state["step"])
                self._step_counts[p] += 1
                step_counts.append(self._step_counts[p])
            params.append(p)
            grads.append(p.grad)
            exp_avgs.append(state["exp_avg"])
            exp_avg_sqs.append(state["exp_avg_sq"])
            state_steps.append(state["step"])

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

        # A traced step must not use the Python mirror (its values would be baked into the graph).
        compiling = torch.compiler.is_compiling()
        for group in self.param_groups:
            params: list[Tensor] = []
            grads: list[Tensor] = []
            exp_avgs: list[Tensor] = []
            exp_avg_sqs: list[Tensor] = []
            state_steps: list[Tensor] = []
            step_counts: list[int] | None = None if compiling else []
            self._init_group(group, params, grads, exp_avgs, exp_avg_sqs, state_steps, step_counts)
            if not params:
                continue
            beta1, beta2 = group["betas"]
            lyam(
                params,
                grads,
                exp_avgs,
                exp_avg_sqs,
                state_steps,
                step_counts,
                lr=group["lr"],
                beta1=beta1,
                beta2=beta2,
                weight_decay=group["weight_decay"],
                bias_correction=group["bias_correction"],
                scaling=group["scaling"],
                eps=group["eps"],
                foreach=group["foreach"],
            )
        if compiling:
            self._step_counts.clear()  # out of date: refilled from the step tensors by the next eager step
        return loss


def lyam(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    state_steps: list[Tensor],
    step_counts: list[int] | None,
    *,
    lr: float | Tensor,
    beta1: float,
    beta2: float,
    weight_decay: float,
    bias_correction: bool,
    scaling: str = "lyapunov",
    eps: float = 1e-8,
    foreach: bool | None = None,
) -> None:
    """Functional LyAm step over lists of tensors, updating params and state in place.

    Args:
      params, grads, exp_avgs, exp_avg_sqs: aligned lists (one entry per parameter).
      state_steps: the per-parameter step tensors, incremented here.
      step_counts: the step number ``t`` of this update per parameter (Python ints, so the bias
        corrections are host floats); ``None`` computes them from ``state_steps`` with tensor ops
        (what ``torch.compile`` needs).
      lr, beta1, beta2, weight_decay, bias_correction, scaling, eps: as in :class:`LyAm`.
      foreach: multi-tensor path; ``None`` chooses it when the tensors allow.
    """
    if foreach is None:
        foreach = _default_foreach(params)
    fn = _multi_tensor_lyam if foreach else _single_tensor_lyam
    fn(
        params,
        grads,
        exp_avgs,
        exp_avg_sqs,
        state_steps,
        step_counts,
        lr=lr,
        beta1=beta1,
        beta2=beta2,
        weight_decay=weight_decay,
        bias_correction=bias_correction,
        scaling=scaling,
        eps=eps,
    )


def _bias_corrections(
    steps: list[int] | list[Tensor], beta1: float, beta2: float, enabled: bool
) -> tuple[list[Any], list[Any]]:
    """``1 - beta^t`` per parameter, from Python ints (floats out) or step tensors (tensors out)."""
    if not enabled:
        ones = [1.0] * len(steps)
        return ones, ones
    if steps and isinstance(steps[0], Tensor):
        steps = [t.to(torch.float64) for t in steps]  # the step tensors are float32
    return [1.0 - beta1**t for t in steps], [1.0 - beta2**t for t in steps]


def _single_tensor_lyam(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    state_steps: list[Tensor],
    step_counts: list[int] | None,
    *,
    lr: float | Tensor,
    beta1: float,
    beta2: float,
    weight_decay: float,
    bias_correction: bool,
    scaling: str,
    eps: float,
) -> None:
    for step_t in state_steps:
        step_t += 1
    bc1s, bc2s = _bias_corrections(
        state_steps if step_counts is None else step_counts, beta1, beta2, bias_correction
    )
    for i, param in enumerate(params):
        grad, exp_avg, exp_avg_sq = grads[i], exp_avgs[i], exp_avg_sqs[i]
        if weight_decay != 0:
            param.mul_(1 - lr * weight_decay)
        exp_avg.lerp_(grad, 1 - beta1)
        exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        v_hat = exp_avg_sq.div(bc2s[i]) if bias_correction else exp_avg_sq.clone()
        # 1 + v_hat, or Adam's sqrt(v_hat) + eps
        denom = v_hat.add_(1) if scaling == "lyapunov" else v_hat.sqrt_().add_(eps)
        if isinstance(lr, Tensor) or step_counts is None:
            # Tensor lr or traced step counts: fold lr / (1 - beta1^t) into the denominator.
            if bias_correction:
                denom.mul_(bc1s[i])
            param.addcdiv_(exp_avg, denom.div_(lr), value=-1)
        else:
            param.addcdiv_(exp_avg, denom, value=-lr / bc1s[i])


def _multi_tensor_lyam(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    state_steps: list[Tensor],
    step_counts: list[int] | None,
    *,
    lr: float | Tensor,
    beta1: float,
    beta2: float,
    weight_decay: float,
    bias_correction: bool,
    scaling: str,
    eps: float,
) -> None:
    grouped = torch.optim.Optimizer._group_tensors_by_device_and_dtype(
        [params, grads, exp_avgs, exp_avg_sqs, state_steps], with_indices=True
    )
    for (dev_params, dev_grads, dev_exp_avgs, dev_exp_avg_sqs, dev_steps), indices in grouped.values():
        torch._foreach_add_(dev_steps, 1)
        counts = dev_steps if step_counts is None else [step_counts[i] for i in indices]
        bc1s, bc2s = _bias_corrections(counts, beta1, beta2, bias_correction)
        if weight_decay != 0:
            torch._foreach_mul_(dev_params, 1 - lr * weight_decay)
        torch._foreach_lerp_(dev_exp_avgs, dev_grads, 1 - beta1)
        torch._foreach_mul_(dev_exp_avg_sqs, beta2)
        torch._foreach_addcmul_(dev_exp_avg_sqs, dev_grads, dev_grads, 1 - beta2)
        # 1 + v_hat, or Adam's sqrt(v_hat) + eps
        if bias_correction:
            denom = torch._foreach_div(dev_exp_avg_sqs, bc2s)
        else:
            denom = torch._foreach_mul(dev_exp_avg_sqs, 1.0)
        if scaling == "lyapunov":
            torch._foreach_add_(denom, 1)
        else:
            torch._foreach_sqrt_(denom)
            torch._foreach_add_(denom, eps)
        if isinstance(lr, Tensor) or step_counts is None:
            # Tensor lr or traced step counts: fold lr / (1 - beta1^t) into the denominator.
            if bias_correction:
                torch._foreach_mul_(denom, bc1s)
            torch._foreach_div_(denom, lr)
            torch._foreach_addcdiv_(dev_params, dev_exp_avgs, denom, -1)
        else:
            torch._foreach_addcdiv_(dev_params, dev_exp_avgs, denom, [-lr / bc for bc in bc1s])
