"""The Riemannian Lyapunov Optimizer family: ``rlo``, ``rlo-lambda`` and ``rlo-lifted``.

One rule, :class:`RLO`, with the options of METHODS.md section 2; the three registered presets differ
only in their defaults. Per step ``t`` (counted from 1), for every parameter with a gradient ``g``,
with the slow momentum ``m`` (starts at 0), the optional second moment ``s`` (starts at 0) and, for
the lifted variant, the velocity ``v`` (starts at 0)::

    c      = b1*m + (1-b1)*g                                   # interpolated momentum (Lion)
    s      = b3*s + (1-b3)*g*g ;  s_hat = s / (1 - b3^t)       # only with precondition=True
    Psi(c) = c  |  c / (sqrt(s_hat) + eps)                     # precondition False | True
    d      = Phi(Psi(c)),  Phi = sign(x) | tanh(gamma*x)       # direction "sign" | "tanh"
    delta  = g - m ;  b = lam_b * delta / max(||delta||_2, eps)   # belief term, norm per tensor
    u      = d + b                                             # eta None ("rlo", "rlo-lambda")
    v = (1-eta)*v + eta*(d + b) ;  u = v                       # eta in (0, 1] ("rlo-lifted")
    u     *= sqrt(D) / ||u||_2                                 # only with global_norm=True
    p     *= 1 - lr*weight_decay                               # decoupled weight decay
    p     -= lr * u
    m      = b2*m + (1-b2)*g                                   # after the update

Choices this module makes where METHODS.md leaves room:
  * The global normalisation rescales the applied step ``u`` (``d + b``, or the lifted velocity),
    as METHODS.md section 2 says, not ``d``: with ``Phi = sign``, ``||sign(x)||_2`` is already
    ``sqrt(D)``, so normalising ``d`` would be the identity, while ``||d + b||`` and the velocity's
    norm (sign flips average out) do move. ``D`` and ``||u||_2`` run over every parameter with a
    gradient in every group whose ``global_norm`` is on (groups with it off are neither counted nor
    rescaled). An all-zero ``u`` stays zero (the norm is floored at the dtype's smallest normal number).
  * The velocity state ``v`` is the un-normalised average of the targets ``d + b``; only the step
    taken from it is rescaled. So ``eta = 1`` gives ``v = d + b`` and the lifted rule equals the
    direct one with or without normalisation.
  * ``m``, ``s`` and ``v`` all start at 0, so the first step has ``c = (1-b1)*g`` and ``b`` along ``g``.
  * With ``direction="sign"`` the preconditioner does not change ``d`` (it divides by a positive
    number); it matters only for "tanh".
  * ``rlo-lifted`` uses the ``rlo-lambda`` target (tanh, preconditioned, globally normalised) with
    ``eta=0.3``; with ``eta=1`` it is exactly the non-lifted rule (``v = d + b``).

Special cases: ``belief=0``, sign, no preconditioner, no normalisation and ``eta`` None or 1 is Lion
(Chen et al. 2023); with ``b1=0`` as well it is signSGD.

Diagnostics (:meth:`RLO.diagnostics`, the NAIM "tube" of papers/001): for groups with a velocity, the
step keeps three device scalars, ``||v - d_t||^2``, ``||v||^2`` and ``||d_t||^2`` summed over all
such parameters, where ``v`` is the velocity after the step and ``d_t = d + b`` that step's target
(so the residual is ``(1-eta) * ||v_prev - d_t||``). They live in ``optimizer.state["rlo_tube"]``
and so survive ``state_dict``; nothing is copied to the host until ``diagnostics()`` is called
(once per epoch by the trainer). No parameter-sized buffer is kept for them.

References:
  papers/001 (Riemannian Lyapunov Optimizer, arXiv:2601.22284); METHODS.md section 2.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer

from lyaptune._registry import unknown_choice
from lyaptune.optim._registry import register_optimizer
from lyaptune.optim.lyam import _default_foreach

__all__ = ["RLO", "RLOLambda", "RLOLifted", "DIRECTIONS"]

DIRECTIONS: tuple[str, ...] = ("sign", "tanh")
"""The direction fields ``Phi``: ``sign(x)`` and ``tanh(gamma * x)``."""

_BETAS = (0.9, 0.99, 0.999)
# Key of the tube sums in ``self.state``, beside the per-parameter entries: torch's state_dict and
# load_state_dict carry non-parameter keys through unchanged, so a resumed run keeps its diagnostics.
_TUBE = "rlo_tube"


def _validate(
    lr: float,
    betas: tuple[float, float, float],
    direction: str,
    gamma: float,
    precondition: bool,
    global_norm: bool,
    belief: float,
    eta: float | None,
    eps: float,
    weight_decay: float,
) -> None:
    """Raise ``ValueError`` naming the first invalid hyperparameter and its value."""
    if not 0.0 <= lr:
        raise ValueError(f"Invalid learning rate lr: {lr} (must be >= 0)")
    if len(betas) != 3:
        raise ValueError(f"Invalid betas: {tuple(betas)!r} (expected 3 values: beta1, beta2, beta3)")
    for i, beta in enumerate(betas):
        if not 0.0 <= beta < 1.0:
            raise ValueError(f"Invalid beta parameter at index {i}: {beta} (must be in [0, 1))")
    if direction not in DIRECTIONS:
        raise unknown_choice("direction", direction, list(DIRECTIONS))
    if not 0.0 < gamma:
        raise ValueError(f"Invalid gamma (tanh sharpness): {gamma} (must be > 0)")
    for name, flag in (("precondition", precondition), ("global_norm", global_norm)):
        if not isinstance(flag, bool):
            raise ValueError(f"Invalid {name}: {flag!r} (must be True or False)")
    if not 0.0 <= belief:
        raise ValueError(f"Invalid belief (lam_b): {belief} (must be >= 0)")
    if eta is not None and not 0.0 < eta <= 1.0:
        raise ValueError(f"Invalid eta (velocity lift): {eta} (must be in (0, 1], or None for no lift)")
    if not 0.0 < eps:
        raise ValueError(f"Invalid epsilon value eps: {eps} (must be > 0)")
    if not 0.0 <= weight_decay:
        raise ValueError(f"Invalid weight_decay value: {weight_decay} (must be >= 0)")


def _step_dtype(p: Tensor) -> torch.dtype:
    # float64 parameters get a float64 counter so b3**t matches a float64 reference exactly.
    return torch.float64 if p.dtype == torch.float64 else torch.float32


def _sum_of_squares(tensors: list[Tensor]) -> Tensor:
    """``sum_i ||x_i||_2^2`` over a list, on the first tensor's device (no host sync).

    Low-precision tensors are reduced in float32; mixed dtypes promote to the widest.
    """
    device = tensors[0].device
    total: Tensor | None = None
    grouped = Optimizer._group_tensors_by_device_and_dtype([tensors])
    for (_, dtype), ((group,), _) in grouped.items():
        acc = dtype if dtype in (torch.float32, torch.float64) else torch.float32
        norms = torch._foreach_norm(group, 2, dtype=acc)
        part = torch.stack(norms).square().sum().to(device)
        total = part if total is None else total + part
    assert total is not None
    return total


def _global_norm_scale(steps: list[Tensor]) -> Tensor:
    """The factor ``sqrt(D) / ||u||_2`` of the global normalisation, ``D`` the total element count."""
    numel = sum(u.numel() for u in steps)
    norm = _sum_of_squares(steps).sqrt()
    return math.sqrt(numel) / norm.clamp_min(torch.finfo(norm.dtype).tiny)


def _tube_sums(velocities: list[Tensor], targets: list[Tensor]) -> Tensor:
    """``[||v - d_t||^2, ||v||^2, ||d_t||^2]`` summed over the lists, as one device tensor."""
    residuals = torch._foreach_sub(velocities, targets)
    return torch.stack([_sum_of_squares(residuals), _sum_of_squares(velocities), _sum_of_squares(targets)])


def _single_tensor_rlo_direction(
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    state_steps: list[Tensor],
    *,
    beta1: float,
    beta3: float,
    direction: str,
    gamma: float,
    precondition: bool,
    eps: float,
) -> list[Tensor]:
    """Advance the step counters (and ``s``) and return the target directions ``d = Phi(Psi(c))``.

    ``exp_avgs`` (``m``) is only read; ``exp_avg_sqs`` may be empty when ``precondition`` is off.
    The returned tensors are new (not normalised; see :func:`_global_norm_scale`).
    """
    directions = []
    for i, grad in enumerate(grads):
        step_t = state_steps[i]
        step_t += 1
        c = exp_avgs[i].lerp(grad, 1 - beta1)
        if precondition:
            s = exp_avg_sqs[i]
            s.mul_(beta3).addcmul_(grad, grad, value=1 - beta3)
            bias_correction = 1 - beta3**step_t
            c.div_((s / bias_correction).sqrt_().add_(eps))
        if direction == "sign":
            c.sign_()
        else:
            c.mul_(gamma).tanh_()
        directions.append(c)
    return directions


def _multi_tensor_rlo_direction(
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    state_steps: list[Tensor],
    *,
    beta1: float,
    beta3: float,
    direction: str,
    gamma: float,
    precondition: bool,
    eps: float,
) -> list[Tensor]:
    """:func:`_single_tensor_rlo_direction` with ``torch._foreach_*`` ops, per device and dtype."""
    directions: list[Tensor | None] = [None] * len(grads)
    grouped = Optimizer._group_tensors_by_device_and_dtype(
        [grads, exp_avgs, exp_avg_sqs, state_steps], with_indices=True
    )
    for (g_list, m_list, s_list, steps), indices in grouped.values():
        torch._foreach_add_(steps, 1)
        c = torch._foreach_lerp(m_list, g_list, 1 - beta1)
        if precondition:
            torch._foreach_mul_(s_list, beta3)
            torch._foreach_addcmul_(s_list, g_list, g_list, value=1 - beta3)
            bias_corrections = torch._foreach_pow(beta3, steps)
            torch._foreach_neg_(bias_corrections)
            torch._foreach_add_(bias_corrections, 1)
            denom = torch._foreach_div(s_list, bias_corrections)
            torch._foreach_sqrt_(denom)
            torch._foreach_add_(denom, eps)
            torch._foreach_div_(c, denom)
        if direction == "sign":
            torch._foreach_sign_(c)
        else:
            torch._foreach_mul_(c, gamma)
            torch._foreach_tanh_(c)
        for i, d in zip(indices, c):
            directions[i] = d
    return directions  # type: ignore[return-value]


def _single_tensor_rlo_steps(
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    velocities: list[Tensor],
    directions: list[Tensor],
    *,
    belief: float,
    eta: float | None,
    eps: float,
) -> tuple[list[Tensor], list[Tensor]]:
    """Add the belief term and advance the velocity; return ``(targets d + b, steps u)``.

    The targets are the ``directions`` tensors, changed in place. The step ``u`` is the target itself
    (``eta`` None) or the velocity ``v = (1-eta)*v + eta*(d + b)`` (``velocities``, updated in place),
    before any global normalisation (see :func:`_global_norm_scale`).
    """
    for i, grad in enumerate(grads):
        target = directions[i]
        if belief != 0.0:
            delta = grad - exp_avgs[i]
            coef = torch.linalg.vector_norm(delta).clamp_min_(eps).reciprocal_().mul_(belief)
            target.add_(delta.mul_(coef))
        if eta is not None:
            velocities[i].lerp_(target, eta)
    return directions, (directions if eta is None else velocities)


def _multi_tensor_rlo_steps(
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    velocities: list[Tensor],
    directions: list[Tensor],
    *,
    belief: float,
    eta: float | None,
    eps: float,
) -> tuple[list[Tensor], list[Tensor]]:
    """:func:`_single_tensor_rlo_steps` with ``torch._foreach_*`` ops, per device and dtype."""
    grouped = Optimizer._group_tensors_by_device_and_dtype([grads, exp_avgs, velocities, directions])
    for (_, _), ((g_list, m_list, v_list, targets), _) in grouped.items():
        if belief != 0.0:
            deltas = torch._foreach_sub(g_list, m_list)
            coefs = torch._foreach_norm(deltas)
            torch._foreach_clamp_min_(coefs, eps)
            torch._foreach_reciprocal_(coefs)
            torch._foreach_mul_(coefs, belief)
            torch._foreach_mul_(deltas, coefs)
            torch._foreach_add_(targets, deltas)
        if eta is not None:
            torch._foreach_lerp_(v_list, targets, eta)
    return directions, (directions if eta is None else velocities)


def _single_tensor_rlo_apply(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    steps: list[Tensor],
    scale: Tensor | None,
    *,
    lr: float,
    beta2: float,
    weight_decay: float,
) -> None:
    """``p *= 1 - lr*wd ;  p -= lr * scale * u ;  m = b2*m + (1-b2)*g`` (``scale`` None: 1).

    ``steps`` (``u``) is left unchanged (it may be the velocity state).
    """
    for i, param in enumerate(params):
        step = steps[i]
        if weight_decay != 0.0:
            param.mul_(1 - lr * weight_decay)
        if scale is None:
            param.add_(step, alpha=-lr)
        else:
            param.add_(step * scale.to(device=step.device, dtype=step.dtype), alpha=-lr)
        exp_avgs[i].lerp_(grads[i], 1 - beta2)


def _multi_tensor_rlo_apply(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    steps: list[Tensor],
    scale: Tensor | None,
    *,
    lr: float,
    beta2: float,
    weight_decay: float,
) -> None:
    """:func:`_single_tensor_rlo_apply` with ``torch._foreach_*`` ops, per device and dtype."""
    grouped = Optimizer._group_tensors_by_device_and_dtype([params, grads, exp_avgs, steps])
    for (device, dtype), ((p_list, g_list, m_list, u_list), _) in grouped.items():
        if weight_decay != 0.0:
            torch._foreach_mul_(p_list, 1 - lr * weight_decay)
        if scale is None:
            torch._foreach_add_(p_list, u_list, alpha=-lr)
        else:
            scaled = torch._foreach_mul(u_list, scale.to(device=device, dtype=dtype))
            torch._foreach_add_(p_list, scaled, alpha=-lr)
        torch._foreach_lerp_(m_list, g_list, 1 - beta2)


class RLO(Optimizer):
    r"""Riemannian Lyapunov Optimizer (the ``rlo`` preset: Lion-like sign step plus a belief term).

    .. math::
        c = \beta_1 m + (1-\beta_1) g, \quad d = \Phi(\Psi(c)), \quad
        b = \lambda_b \frac{g - m}{\max(\|g - m\|_2, \epsilon)}, \quad u = d + b
        \;[\cdot \sqrt{D}/\|u\|_2], \quad
        \theta \leftarrow \theta - \eta_{lr} u, \quad m \leftarrow \beta_2 m + (1-\beta_2) g

    with ``Phi`` sign or ``tanh(gamma x)``, ``Psi`` the identity or ``x / (sqrt(s_hat) + eps)``, and
    with ``eta`` set the lifted velocity ``v <- (1-eta) v + eta (d + b)``, ``u = v``.
    The module docstring lists the full rule and the choices made.

    Args:
      params: parameters or parameter groups.
      lr: step size (>= 0).
      betas: ``(b1, b2, b3)``: interpolation of the direction, decay of the momentum ``m``, decay of
        the second moment ``s`` (used only with ``precondition``); each in [0, 1).
      direction: the direction field ``Phi``, one of :data:`DIRECTIONS` ("sign", "tanh").
      gamma: sharpness of ``tanh(gamma * x)`` (> 0; unused for "sign").
      precondition: divide ``c`` by ``sqrt(s_hat) + eps`` (the Adam-like ``Psi``).
      global_norm: rescale the applied step ``u`` to norm ``sqrt(D)`` over all parameters of all
        such groups.
      belief: ``lam_b`` (>= 0), the length of the belief term ``b`` per tensor.
      eta: velocity lift in (0, 1], or None for the direct update.
      eps: floor of ``||g - m||`` and the preconditioner's additive constant (> 0).
      weight_decay: decoupled weight decay, ``p *= 1 - lr * weight_decay`` before the update.
      foreach: use the ``torch._foreach_*`` implementation; None picks it whenever the tensors allow
        (also on CPU; tensor subclasses and sparse tensors do not).

    References:
      papers/001 (Riemannian Lyapunov Optimizer); METHODS.md section 2; Chen et al. 2023 (Lion).
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-4,
        betas: tuple[float, float, float] = _BETAS,
        *,
        direction: str = "sign",
        gamma: float = 5.0,
        precondition: bool = False,
        global_norm: bool = False,
        belief: float = 0.1,
        eta: float | None = None,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        foreach: bool | None = None,
    ) -> None:
        betas = tuple(betas)  # type: ignore[assignment]
        _validate(lr, betas, direction, gamma, precondition, global_norm, belief, eta, eps, weight_decay)
        defaults = {
            "lr": lr,
            "betas": betas,
            "direction": direction,
            "gamma": gamma,
            "precondition": precondition,
            "global_norm": global_norm,
            "belief": belief,
            "eta": eta,
            "eps": eps,
            "weight_decay": weight_decay,
            "foreach": foreach,
        }
        super().__init__(params, defaults)
        for group in self.param_groups:  # per-group overrides are checked too
            _validate(
                group["lr"],
                tuple(group["betas"]),
                group["direction"],
                group["gamma"],
                group["precondition"],
                group["global_norm"],
                group["belief"],
                group["eta"],
                group["eps"],
                group["weight_decay"],
            )

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        for group in self.param_groups:
            group.setdefault("foreach", None)

    def _init_group(
        self,
        group: dict[str, Any],
        params: list[Tensor],
        grads: list[Tensor],
        exp_avgs: list[Tensor],
        exp_avg_sqs: list[Tensor],
        velocities: list[Tensor],
        state_steps: list[Tensor],
    ) -> None:
        """Collect the group's tensors with gradients, creating missing state lazily."""
        for p in group["params"]:
            if p.grad is None:
                continue
            if p.grad.is_sparse:
                raise RuntimeError("RLO does not support sparse gradients")
            if torch.is_complex(p):
                raise RuntimeError("RLO does not support complex parameters")
            state = self.state[p]
            if "step" not in state:
                state["step"] = torch.zeros((), dtype=_step_dtype(p), device=p.device)
            elif state["step"].device != p.device:  # e.g. a state_dict loaded from another device
                state["step"] = state["step"].to(p.device)
            if "exp_avg" not in state:
                state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            params.append(p)
            grads.append(p.grad)
            exp_avgs.append(state["exp_avg"])
            state_steps.append(state["step"])
            if group["precondition"]:
                if "exp_avg_sq" not in state:
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                exp_avg_sqs.append(state["exp_avg_sq"])
            if group["eta"] is not None:
                if "velocity" not in state:
                    state["velocity"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                velocities.append(state["velocity"])

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        """Perform one optimisation step.

        Args:
          closure: optional callable that re-evaluates the model and returns the loss.

        Returns:
          The closure's loss, or None.
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()

        # Pass 1: directions of every group (the global norm needs every step before any update).
        pending = []
        for group in self.param_groups:
            params: list[Tensor] = []
            grads: list[Tensor] = []
            exp_avgs: list[Tensor] = []
            exp_avg_sqs: list[Tensor] = []
            velocities: list[Tensor] = []
            state_steps: list[Tensor] = []
            self._init_group(group, params, grads, exp_avgs, exp_avg_sqs, velocities, state_steps)
            if not params:
                continue
            foreach = group["foreach"] if group["foreach"] is not None else _default_foreach(params)
            direction_fn = _multi_tensor_rlo_direction if foreach else _single_tensor_rlo_direction
            beta1, _, beta3 = group["betas"]
            directions = direction_fn(
                grads,
                exp_avgs,
                exp_avg_sqs,
                state_steps,
                beta1=beta1,
                beta3=beta3,
                direction=group["direction"],
                gamma=group["gamma"],
                precondition=group["precondition"],
                eps=group["eps"],
            )
            pending.append((group, foreach, params, grads, exp_avgs, velocities, directions))

        # Pass 2: belief terms and velocities, giving each group's applied step u (d + b, or v).
        applied = []
        tube_parts = []
        for group, foreach, _, grads, exp_avgs, velocities, directions in pending:
            steps_fn = _multi_tensor_rlo_steps if foreach else _single_tensor_rlo_steps
            targets, steps = steps_fn(
                grads,
                exp_avgs,
                velocities,
                directions,
                belief=group["belief"],
                eta=group["eta"],
                eps=group["eps"],
            )
            applied.append(steps)
            if group["eta"] is not None:
                tube_parts.append(_tube_sums(velocities, targets))

        # The global normalisation of u spans every parameter of every group that has it on.
        normalised = [u for item, steps in zip(pending, applied) if item[0]["global_norm"] for u in steps]
        scale = _global_norm_scale(normalised) if normalised else None

        # Pass 3: the updates.
        for (group, foreach, params, grads, exp_avgs, _, _), steps in zip(pending, applied):
            apply_fn = _multi_tensor_rlo_apply if foreach else _single_tensor_rlo_apply
            apply_fn(
                params,
                grads,
                exp_avgs,
                steps,
                scale if group["global_norm"] else None,
                lr=group["lr"],
                beta2=group["betas"][1],
                weight_decay=group["weight_decay"],
            )
        if tube_parts:
            device = tube_parts[0].device
            self.state[_TUBE] = torch.stack([part.to(device) for part in tube_parts]).sum(dim=0)
        return loss

    def diagnostics(self) -> dict[str, float]:
        """The NAIM tube of the last step: how far the velocity is from its target.

        With ``v`` the velocity after the last step and ``d_t = d + b`` that step's target, global
        over every parameter of the lifted groups:

        - ``tube_residual``: ``||v - d_t||_2``;
        - ``tube_relative_residual``: ``||v - d_t||_2 / ||d_t||_2``;
        - ``tube_cosine``: ``<v, d_t> / (||v||_2 ||d_t||_2)``.

        Returns:
          The three values (NaN before the first step), or an empty dict when no group is lifted
          (``eta`` None everywhere). Copies three scalars to the host: call it rarely (per epoch).
        """
        if all(group["eta"] is None for group in self.param_groups):
            return {}
        tube = self.state.get(_TUBE)
        if tube is None:
            return {"tube_residual": math.nan, "tube_relative_residual": math.nan, "tube_cosine": math.nan}
        r2, v2, t2 = (float(x) for x in tube.tolist())
        norm_v, norm_t = math.sqrt(v2), math.sqrt(t2)
        residual = math.sqrt(r2)
        # <v, d_t> from the three squared norms: ||v - d_t||^2 = ||v||^2 + ||d_t||^2 - 2 <v, d_t>.
        cosine = (v2 + t2 - r2) / (2.0 * norm_v * norm_t) if norm_v > 0 and norm_t > 0 else math.nan
        return {
            "tube_residual": residual,
            "tube_relative_residual": residual / norm_t if norm_t > 0 else math.nan,
            "tube_cosine": min(1.0, max(-1.0, cosine)) if not math.isnan(cosine) else math.nan,
        }


class RLOLambda(RLO):
    """RLO-Lambda (the ``rlo-lambda`` preset): :class:`RLO` with ``direction="tanh"``,
    ``precondition=True`` and ``global_norm=True`` by default (direct update, no velocity).

    Args: as :class:`RLO`.

    References:
      papers/001 (RLO-Lambda, the variant of its ImageNet results); METHODS.md section 2.
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-4,
        betas: tuple[float, float, float] = _BETAS,
        *,
        direction: str = "tanh",
        gamma: float = 5.0,
        precondition: bool = True,
        global_norm: bool = True,
        belief: float = 0.1,
        eta: float | None = None,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        foreach: bool | None = None,
    ) -> None:
        super().__init__(
            params,
            lr,
            betas,
            direction=direction,
            gamma=gamma,
            precondition=precondition,
            global_norm=global_norm,
            belief=belief,
            eta=eta,
            eps=eps,
            weight_decay=weight_decay,
            foreach=foreach,
        )


class RLOLifted(RLO):
    """RLO-Lifted (the ``rlo-lifted`` preset): the RLO-Lambda target tracked by a velocity,
    ``v = (1-eta) v + eta (d + b)``, ``p -= lr v``, with ``eta=0.3`` by default.

    Args: as :class:`RLO` (defaults: direction "tanh", precondition and global_norm on, eta 0.3).

    References:
      papers/001 (RLO-Lifted, the backstepping velocity lift); METHODS.md section 2.
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-4,
        betas: tuple[float, float, float] = _BETAS,
        *,
        direction: str = "tanh",
        gamma: float = 5.0,
        precondition: bool = True,
        global_norm: bool = True,
        belief: float = 0.1,
        eta: float | None = 0.3,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        foreach: bool | None = None,
    ) -> None:
        super().__init__(
            params,
            lr,
            betas,
            direction=direction,
            gamma=gamma,
            precondition=precondition,
            global_norm=global_norm,
            belief=belief,
            eta=eta,
            eps=eps,
            weight_decay=weight_decay,
            foreach=foreach,
        )


_LR = {"low": 1e-5, "high": 1e-2, "log": True}
_SPACE = {
    "lr": _LR,
    "beta1": {"low": 0.8, "high": 0.99},
    "beta2": {"low": 0.9, "high": 0.999},
    "belief": {"low": 0.0, "high": 0.5},
    "direction": {"choices": list(DIRECTIONS)},
}
_GAMMA = {"low": 1.0, "high": 10.0}
_ETA = {"low": 0.05, "high": 1.0}
_TUPLES = {"betas": ("beta1", "beta2", "beta3")}
_COMMON = {"lr": 1e-4, "betas": _BETAS, "belief": 0.1}

register_optimizer(
    "rlo",
    defaults={**_COMMON, "direction": "sign", "precondition": False, "global_norm": False, "eta": None},
    space=_SPACE,
    tuple_params=_TUPLES,
    description="RLO: sign of the Lion momentum plus a belief term (no preconditioner, no normalisation)",
    reference="papers/001 (RLO, standard); METHODS.md section 2",
)(RLO)
register_optimizer(
    "rlo-lambda",
    defaults={**_COMMON, "direction": "tanh", "precondition": True, "global_norm": True, "eta": None},
    space={**_SPACE, "gamma": _GAMMA},
    tuple_params=_TUPLES,
    description="RLO-Lambda: tanh of the preconditioned momentum, globally normalised, direct update",
    reference="papers/001 (RLO-Lambda); METHODS.md section 2",
)(RLOLambda)
register_optimizer(
    "rlo-lifted",
    defaults={**_COMMON, "direction": "tanh", "precondition": True, "global_norm": True, "eta": 0.3},
    space={**_SPACE, "gamma": _GAMMA, "eta": _ETA},
    tuple_params=_TUPLES,
    description="RLO-Lifted: the RLO-Lambda target tracked by a velocity with lift eta",
    reference="papers/001 (RLO-Lifted); METHODS.md section 2",
)(RLOLifted)
