"""The model registry: the papers' networks (fc, lenet, vgg9, vgg16, resnet18/50, ViT) and any timm model.

Every model is built by :func:`create_model` from the shape of one input (``(C, H, W)`` images or
``(D,)`` vectors) and the number of classes, so the same study spec runs on MNIST (1x28x28), CIFAR
(3x32x32) or TinyImageNet (3x64x64). Each registered model carries a :class:`ModelInfo` with its accepted
arguments and defaults and the ``default_sigma`` of the weight distribution W = normal(0, sigma) that
Algorithm 2 of papers/003 samples to estimate the Lipschitz constant K_hat (METHODS.md section 4).

Input requirements, per model:

- ``fc``: any shape (flattened); a multilayer perceptron.
- ``lenet``: ``(C, H, W)`` with H, W >= 28 after the automatic padding (28x28 and 32x32 are the intended
  sizes).
- ``vgg9``, ``vgg16``: ``(C, H, W)``; pooling uses ``ceil_mode`` so 28x28 works as well as 32x32.
- ``resnet18``, ``resnet50``: ``(C, H, W)``; inputs up to 64 px get the CIFAR stem.
- ``vit``, ``vit-s16``, ``vit-b16``: ``(C, H, W)`` with H and W divisible by the patch size.
- ``timm:<name>``: ``(C, H, W)`` of a size the timm model accepts (pass ``img_size`` for ViT-like ones).
"""

from __future__ import annotations

import difflib
import functools
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

# the built-in architectures; their public classes and configurations stay importable from here
from lyaptune._architectures import VGG as VGG
from lyaptune._architectures import VGG9_LOSS_LANDSCAPE as VGG9_LOSS_LANDSCAPE
from lyaptune._architectures import VGG9_STANDARD as VGG9_STANDARD
from lyaptune._architectures import VGG16_CFG as VGG16_CFG
from lyaptune._architectures import VIT_VARIANTS as VIT_VARIANTS
from lyaptune._architectures import LeNet5 as LeNet5
from lyaptune._architectures import (
    _build_fc,
    _build_lenet,
    _build_resnet,
    _build_vgg9,
    _build_vgg16,
    _build_vit,
    _image_shape,
)
from lyaptune._registry import Registry, unknown_choice
from lyaptune.errors import ConfigError
from lyaptune.init import INIT_ATTR, SCHEMES, initialize

__all__ = [
    "ModelInfo",
    "MODELS",
    "SMALL_MAX_PARAMS",
    "register_model",
    "create_model",
    "list_models",
    "get_model_info",
    "default_sigma",
    "lipschitz_sigma",
    "parse_init",
    "is_small",
]

#: default sigma of W for models without a value from the papers (the usual transformer init std).
GENERIC_SIGMA = 0.02

#: a model with fewer parameters than this (and no batch-norm / active dropout) is "small".
SMALL_MAX_PARAMS = 5_000_000

_TIMM_PREFIX = "timm:"


@dataclass(frozen=True)
class ModelInfo:
    """Metadata of one registered model.

    Attributes:
      name: registry name (``timm:<name>`` for a timm model).
      builder: ``builder(input_shape=..., num_classes=..., **args) -> nn.Module``.
      default_sigma: sigma of the weight distribution W = normal(0, sigma) used by Algorithm 2 of
        papers/003 for this model, and by ``init="normal"`` when no sigma is given.
      args: the model arguments :func:`create_model` accepts, with their defaults (empty for timm
        models, whose arguments timm checks).
      description: what the model is and which inputs it needs.
      reference: where the architecture comes from.
    """

    name: str
    builder: Callable[..., nn.Module]
    default_sigma: float
    args: Mapping[str, Any]
    description: str
    reference: str


MODELS: Registry[ModelInfo] = Registry("model")


def register_model(
    name: str,
    builder: Callable[..., nn.Module],
    *,
    default_sigma: float = GENERIC_SIGMA,
    args: Mapping[str, Any] | None = None,
    description: str = "",
    reference: str = "",
) -> ModelInfo:
    """Register ``builder`` under ``name`` and return its :class:`ModelInfo`.

    Args:
      name: registry name; must not start with ``timm:``.
      builder: called as ``builder(input_shape=..., num_classes=..., **args)``.
      default_sigma: sigma of W = normal(0, sigma) for the Lipschitz estimate of papers/003.
      args: accepted model arguments with their defaults.
      description: one line, including the inputs the model needs.
      reference: paper or code the architecture follows.

    Returns:
      The registered :class:`ModelInfo`.
    """
    if name.startswith(_TIMM_PREFIX):
        raise ValueError(f"model names starting with {_TIMM_PREFIX!r} are reserved for timm models: {name!r}")
    info = ModelInfo(
        name=name,
        builder=builder,
        default_sigma=float(default_sigma),
        args=dict(args or {}),
        description=description,
        reference=reference,
    )
    return MODELS.register(name, info)


# --------------------------------------------------------------------------------------------------
# timm:<name>

_TIMM_RESERVED = (
    "pretrained",
    "pretrained_cfg",
    "pretrained_cfg_overlay",
    "checkpoint_path",
    "num_classes",
    "in_chans",
)


def _check_timm_name(timm_name: str) -> None:
    import timm

    if timm_name and timm.is_model(timm_name):
        return
    names = timm.list_models()
    close = difflib.get_close_matches(timm_name, names, n=5, cutoff=0.6)
    hint = f"; close timm names: {', '.join(close)}" if close else "; no close timm name"
    raise ConfigError(
        f"unknown timm model {timm_name!r} in model 'timm:{timm_name}'{hint} "
        "(list them with lyaptune.models.list_models('timm:*pattern*') or timm.list_models())"
    )


def _build_timm(
    timm_name: str, *, input_shape: tuple[int, ...], num_classes: int, **model_args: Any
) -> nn.Module:
    import timm

    name = _TIMM_PREFIX + timm_name
    c, _, _ = _image_shape(name, input_shape)
    for key in _TIMM_RESERVED:
        if key in model_args:
            raise ConfigError(
                f"Invalid model argument {key!r} for model '{name}': lyaptune sets num_classes and in_chans "
                "from the data and never loads pretrained weights"
            )
    try:
        return timm.create_model(
            timm_name, pretrained=False, num_classes=num_classes, in_chans=c, **model_args
        )
    except TypeError as exc:
        raise ConfigError(
            f"Invalid model argument(s) {sorted(model_args)} for model '{name}': {exc}"
        ) from None


def _timm_info(name: str) -> ModelInfo:
    timm_name = name[len(_TIMM_PREFIX) :]
    _check_timm_name(timm_name)
    return ModelInfo(
        name=name,
        builder=functools.partial(_build_timm, timm_name),
        default_sigma=GENERIC_SIGMA,
        args={},
        description=f"timm model {timm_name!r} (random init, num_classes and in_chans from the data; "
        "other arguments passed to timm.create_model)",
        reference="timm, github.com/huggingface/pytorch-image-models",
    )


# --------------------------------------------------------------------------------------------------
# the registry

register_model(
    "fc",
    _build_fc,
    default_sigma=0.04,
    args={"depth": 3, "width": 1000},
    description="fully connected ReLU network: flatten, `depth` hidden layers of equal `width`, Linear "
    "classifier (depth 0 = multinomial logistic regression); any input shape",
    reference="papers/003 Section 5 (depth 1, 3, 5 with width 1000; sigma 0.04)",
)
register_model(
    "lenet",
    _build_lenet,
    default_sigma=0.1,
    args={"padding": None},
    description="LeNet-5 with ReLU and max-pooling (conv6 5x5, pool, conv16 5x5, pool, fc120, fc84, fc); "
    "(C, H, W) images, padding None = 2 when H or W < 32 (28x28 MNIST) else 0",
    reference="LeCun et al. 1998; papers/003 Section 5.4 (sigma 0.1)",
)
register_model(
    "vgg9",
    _build_vgg9,
    default_sigma=0.045,
    args={"batch_norm": False, "layout": "standard", "width_divisor": 1},
    description="VGG-9 (7 conv + 2 Linear). layout 'standard': conv64-M-conv128-M-conv256x2-M-conv512x2-M-"
    "conv512-M, Linear(512, 512), Linear(512, classes) on 32x32; 'loss-landscape': Li et al.'s "
    "conv64x2-M-conv128x2-M-conv256x3-M, Linear(256*4*4, 256), Linear(256, classes) (their code uses "
    "batch_norm true). batch_norm off by default (papers/003 uses no regularisation); width_divisor "
    "divides every width (the CPU smoke stand-in uses 8); (C, H, W) images",
    reference="papers/003 Section 5.4 (sigma 0.045); Li et al. 2018, Visualizing the Loss Landscape",
)
register_model(
    "vgg16",
    _build_vgg16,
    default_sigma=GENERIC_SIGMA,
    args={"batch_norm": True, "width_divisor": 1},
    description="CIFAR VGG-16 (configuration D, 13 conv with batch-norm, Linear(512, classes) on 32x32); "
    "width_divisor divides every width; (C, H, W) images",
    reference="Simonyan & Zisserman 2015; papers/000 (VGG-16 on CIFAR-10/100)",
)
for _arch in ("resnet18", "resnet50"):
    register_model(
        _arch,
        functools.partial(_build_resnet, _arch),
        default_sigma=GENERIC_SIGMA,
        args={"cifar_stem": None},
        description=f"torchvision {_arch}; cifar_stem None = a 3x3 stride-1 first conv and no max-pool when "
        "H, W <= 64 (the CIFAR adaptation), the ImageNet stem otherwise; (C, H, W) images",
        reference="He et al. 2016; papers/000 and 001 (CIFAR, ImageNet)",
    )
register_model(
    "vit",
    _build_vit,
    default_sigma=GENERIC_SIGMA,
    args={"variant": "small", "img_size": None, "patch_size": None},
    description="timm VisionTransformer, variant tiny/small/base; img_size None = the input's H x W; "
    "patch_size None = 4 for images up to 32 px, else 16; never pretrained; (C, H, W) images",
    reference="Dosovitskiy et al. 2021; papers/000 and 001 (ViT-S/16, ViT-B/16)",
)
for _alias, _variant in (("vit-s16", "small"), ("vit-b16", "base")):
    register_model(
        _alias,
        functools.partial(_build_vit, variant=_variant, patch_size=16, name=_alias),
        default_sigma=GENERIC_SIGMA,
        args={"img_size": None},
        description=f"ViT-{_variant[0].upper()}/16 (timm VisionTransformer, patch 16, never pretrained); "
        "(C, H, W) images with H, W divisible by 16 (or set img_size and resize the data)",
        reference="Dosovitskiy et al. 2021; papers/000 and 001",
    )


# --------------------------------------------------------------------------------------------------
# public functions


def list_models(pattern: str | None = None) -> list[str]:
    """Registered model names, optionally filtered by a glob pattern.

    A pattern starting with ``timm:`` lists timm models instead, prefixed (``list_models("timm:resnet1*")``).
    """
    if pattern is not None and pattern.startswith(_TIMM_PREFIX):
        import timm

        return [_TIMM_PREFIX + n for n in timm.list_models(pattern[len(_TIMM_PREFIX) :])]
    return MODELS.names(pattern)


def get_model_info(name: str) -> ModelInfo:
    """The :class:`ModelInfo` of ``name``; ``timm:<name>`` gives a generic entry for that timm model.

    Raises:
      ConfigError: an unknown name (with the closest registered name, or the close timm names).
    """
    if name.startswith(_TIMM_PREFIX):
        return _timm_info(name)
    try:
        return MODELS.get(name)
    except ConfigError as exc:
        import timm

        if timm.is_model(name):
            raise ConfigError(f"{exc}; {name!r} is a timm model: use '{_TIMM_PREFIX}{name}'") from None
        raise ConfigError(f"{exc}, or any timm model as '{_TIMM_PREFIX}<name>'") from None


def default_sigma(name: str) -> float:
    """The sigma of W = normal(0, sigma) for ``name`` (papers/003's values; 0.02 for other models).

    papers/003 used sigma = 0.04 for its MLPs, 0.045 for VGG-9 and 0.1 for LeNet; every other model,
    timm ones included, gets 0.02, the usual std of a transformer's normal initialisation.
    """
    return get_model_info(name).default_sigma


def lipschitz_sigma(model: str, weights: str = "normal", sigma: float | None = None) -> float | None:
    """The sigma a K_hat estimate samples W = normal(0, sigma) with: the one given, else
    :func:`default_sigma` of ``model``; ``None`` for other weight distributions.

    The one rule for a run's engine and for ``lyaptune lipschitz`` (papers/003 Algorithm 2,
    METHODS.md section 4).
    """
    if sigma is not None or weights != "normal":
        return sigma
    return default_sigma(model)


_INIT_CALL = re.compile(r"^\s*(normal|uniform)\s*\((.*)\)\s*$")
_INIT_CHOICES = [*SCHEMES, "normal(sigma)", "uniform(a)"]


def parse_init(init: str) -> tuple[str, float | None, float | None]:
    """Split an init spec into ``(scheme, sigma, a)``: ``"normal(0.04)"`` -> ``("normal", 0.04, None)``.

    Args:
      init: a scheme of :data:`lyaptune.init.SCHEMES`, or ``normal(sigma)`` / ``uniform(a)``.

    Returns:
      The scheme and the sigma / half-width written in the spec (None when not written).

    Raises:
      ConfigError: an unknown scheme or a value that is not a positive number.
    """
    if not isinstance(init, str):
        raise ConfigError(f"Invalid init: {init!r} (must be a string; choices: {', '.join(_INIT_CHOICES)})")
    m = _INIT_CALL.match(init)
    if m is None:
        if init not in SCHEMES:
            raise unknown_choice("init", init, _INIT_CHOICES)
        return init, None, None
    scheme, text = m.group(1), m.group(2).strip()
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not (math.isfinite(value) and value > 0):
        field = "sigma" if scheme == "normal" else "a"
        raise ConfigError(f"Invalid {field} in init {init!r}: {text!r} (must be a positive number)")
    return (scheme, value, None) if scheme == "normal" else (scheme, None, value)


def _resolve_init(init: str, sigma: float | None, info: ModelInfo) -> tuple[str, float | None, float | None]:
    scheme, spec_sigma, a = parse_init(init)
    if sigma is not None:
        if (
            isinstance(sigma, bool)
            or not isinstance(sigma, (int, float))
            or not (math.isfinite(sigma) and sigma > 0)
        ):
            raise ConfigError(f"Invalid sigma: {sigma!r} (must be a positive number)")
        if spec_sigma is not None and float(sigma) != spec_sigma:
            raise ConfigError(f"Conflicting sigma: init {init!r} and sigma={sigma} (give it once)")
    if scheme == "normal":
        sigma = spec_sigma if spec_sigma is not None else (sigma if sigma is not None else info.default_sigma)
    if scheme == "uniform" and a is None:
        raise ConfigError(f"Invalid init {init!r}: uniform needs its half-width, e.g. init='uniform(0.05)'")
    return scheme, (None if sigma is None else float(sigma)), a


def _check_shape(input_shape: Any) -> tuple[int, ...]:
    try:
        shape = tuple(input_shape)
    except TypeError:
        shape = ()
    if not shape or any(isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in shape):
        raise ConfigError(
            f"Invalid input_shape: {input_shape!r} (must be positive integers, (C, H, W) or (D,))"
        )
    return shape


def create_model(
    name: str,
    *,
    input_shape: tuple[int, ...],
    num_classes: int,
    init: str | None = None,
    sigma: float | None = None,
    generator: torch.Generator | None = None,
    **model_args: Any,
) -> nn.Module:
    """Build the model registered as ``name`` (or ``timm:<name>``) for the given inputs and classes.

    Args:
      name: registry name (see :func:`list_models`) or ``timm:<timm model name>``.
      input_shape: shape of one input, ``(C, H, W)`` or ``(D,)``.
      num_classes: number of outputs.
      init: None keeps the model's own initialisation; otherwise a scheme of
        :data:`lyaptune.init.SCHEMES` applied by :func:`lyaptune.init.initialize`, or ``"normal(sigma)"`` /
        ``"uniform(a)"``. ``"normal"`` without a sigma uses the model's :func:`default_sigma`.
      sigma: standard deviation for ``init="normal"`` (ignored by the other schemes).
      generator: source of randomness. When given, the model is built under a global seed drawn from it
        (the global RNG is left untouched) and ``init`` draws from it, so the same generator state gives
        the same weights, with or without ``init``.
      **model_args: the model's arguments (:attr:`ModelInfo.args` lists them with their defaults).

    Returns:
      The model, in training mode, on the CPU. With an ``init``, its resolved ``(scheme, sigma, a)``
      is kept as the attribute :data:`lyaptune.init.INIT_ATTR` (read by ``weights="init"`` of
      :func:`lyaptune.lipschitz.estimate_lipschitz`).

    Raises:
      ConfigError: an unknown model, model argument or init scheme, or an invalid value.

    References:
      papers/003 Section 5 (the models and the weight distributions of Algorithm 2).
    """
    info = get_model_info(name)
    shape = _check_shape(input_shape)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ConfigError(f"Invalid num_classes: {num_classes!r} (must be an integer >= 1)")
    resolved = None if init is None else _resolve_init(init, sigma, info)
    if name.startswith(_TIMM_PREFIX):
        kwargs = dict(model_args)
    else:
        for key in model_args:
            if key not in info.args:
                accepted = ", ".join(f"{k} (default {v!r})" for k, v in info.args.items()) or "none"
                close = difflib.get_close_matches(key, list(info.args), n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise ConfigError(
                    f"unknown model argument {key!r} for model {name!r}{hint} accepted: {accepted}"
                )
        kwargs = {**info.args, **model_args}

    if generator is None:
        model = info.builder(input_shape=shape, num_classes=num_classes, **kwargs)
    else:
        seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device).item())
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = info.builder(input_shape=shape, num_classes=num_classes, **kwargs)

    if resolved is not None:
        scheme, s, a = resolved
        initialize(model, scheme, sigma=s, a=a, generator=generator)
        # remembered so that W = init of papers/003 Algorithm 2 redraws with this initialiser
        setattr(model, INIT_ATTR, resolved)
    return model


def is_small(model: nn.Module) -> bool:
    """Whether ``model`` can be trained as one member of a vmapped population.

    A model is small when it has fewer than :data:`SMALL_MAX_PARAMS` (5M) parameters and no layer whose
    training-mode output depends on the batch or on fresh randomness: no batch-norm (or other norm
    tracking running statistics) and no dropout / drop-path with a probability above 0 (a dropout of
    p = 0 is the identity and is allowed). ``torch.func.vmap`` over ``functional_call`` handles such a
    model with stacked parameters. Examples: ``fc`` up to depth 5 at width 1000 on MNIST (4.8M) and
    ``lenet`` are small; ``vgg9`` (7.1M) and anything with batch-norm are not.

    Args:
      model: any module.

    Returns:
      True for a small model.
    """
    if sum(p.numel() for p in model.parameters()) >= SMALL_MAX_PARAMS:
        return False
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            return False
        if isinstance(m, nn.modules.batchnorm._NormBase) and m.track_running_stats:
            return False
        if isinstance(m, (nn.modules.dropout._DropoutNd,)) and m.p > 0:
            return False
        drop_prob = getattr(m, "drop_prob", None)  # timm's DropPath / DropBlock
        if isinstance(drop_prob, (int, float)) and drop_prob > 0:
            return False
    return True
