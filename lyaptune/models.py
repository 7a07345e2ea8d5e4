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
# argument checks


def _check_int(model: str, field: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"Invalid {field} for model '{model}': {value!r} (must be an integer >= {minimum})")
    return value


def _check_bool(model: str, field: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"Invalid {field} for model '{model}': {value!r} (must be true or false)")
    return value


def _check_optional_bool(model: str, field: str, value: Any) -> bool | None:
    return None if value is None else _check_bool(model, field, value)


def _check_choice(model: str, field: str, value: Any, choices: list[str]) -> str:
    if value not in choices:
        raise unknown_choice(f"{field} for model '{model}':", value, choices)
    return value


def _image_shape(model: str, input_shape: tuple[int, ...]) -> tuple[int, int, int]:
    if len(input_shape) != 3:
        raise ConfigError(
            f"Invalid input_shape for model '{model}': {input_shape} (needs images (C, H, W); "
            "use 'fc' for vector inputs)"
        )
    c, h, w = input_shape
    return c, h, w


@torch.no_grad()
def _flat_size(model: str, features: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Number of features ``features`` produces for one input, by a dry forward pass (eval mode)."""
    was_training = features.training
    features.eval()
    try:
        out = features(torch.zeros(1, *input_shape))
    except RuntimeError as exc:
        raise ConfigError(
            f"Invalid input_shape for model '{model}': {input_shape} is too small ({exc})"
        ) from None
    finally:
        features.train(was_training)
    if out.numel() == 0:
        raise ConfigError(f"Invalid input_shape for model '{model}': {input_shape} is too small")
    return out.numel()


# --------------------------------------------------------------------------------------------------
# fc


def _build_fc(*, input_shape: tuple[int, ...], num_classes: int, depth: int, width: int) -> nn.Module:
    """Flatten, ``depth`` hidden ``Linear(width) + ReLU`` layers, then a ``Linear`` classifier."""
    _check_int("fc", "depth", depth, 0)
    _check_int("fc", "width", width, 1)
    layers: list[nn.Module] = [nn.Flatten()]
    fan_in = math.prod(input_shape)
    for _ in range(depth):
        layers += [nn.Linear(fan_in, width), nn.ReLU()]
        fan_in = width
    layers.append(nn.Linear(fan_in, num_classes))
    return nn.Sequential(*layers)


# --------------------------------------------------------------------------------------------------
# LeNet-5


class LeNet5(nn.Module):
    """LeNet-5 with ReLU and max-pooling: conv6 5x5, pool, conv16 5x5, pool, fc120, fc84, fc classes.

    Args:
      input_shape: ``(C, H, W)``.
      num_classes: outputs.
      padding: padding of the first convolution (2 turns a 28x28 MNIST digit into LeNet's 32x32 field).
    """

    def __init__(self, input_shape: tuple[int, int, int], num_classes: int, padding: int) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(input_shape[0], 6, kernel_size=5, padding=padding),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(6, 16, kernel_size=5),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
        )
        flat = _flat_size("lenet", self.features, input_shape)
        self.classifier = nn.Sequential(
            nn.Linear(flat, 120),
            nn.ReLU(),
            nn.Linear(120, 84),
            nn.ReLU(),
            nn.Linear(84, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def _build_lenet(*, input_shape: tuple[int, ...], num_classes: int, padding: int | None) -> nn.Module:
    c, h, w = _image_shape("lenet", input_shape)
    if padding is None:
        padding = 2 if min(h, w) < 32 else 0
    _check_int("lenet", "padding", padding, 0)
    return LeNet5((c, h, w), num_classes, padding)


# --------------------------------------------------------------------------------------------------
# VGG

#: vgg9 "standard": the first seven convolutions of VGG-11's trunk, five pools, then two Linear layers.
VGG9_STANDARD = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, "M")
#: vgg9 "loss-landscape": the VGG-9 of Li et al. (2018), github.com/tomgoldstein/loss-landscape.
VGG9_LOSS_LANDSCAPE = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M")
#: VGG configuration D (VGG-16), as in the CIFAR ports of Simonyan & Zisserman (2014).
VGG16_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")


class VGG(nn.Module):
    """A VGG network: 3x3 conv (+ batch-norm) + ReLU blocks and 2x2 max-pools, then Linear layers.

    Args:
      cfg: channel counts of the 3x3 convolutions, ``"M"`` for a 2x2 max-pool (``ceil_mode``, which is
        plain 2x2 pooling on power-of-two sizes and lets 28x28 inputs through).
      input_shape: ``(C, H, W)``; the first Linear layer's input size comes from a dry forward pass.
      num_classes: outputs.
      hidden: widths of the hidden Linear + ReLU layers before the classifier.
      batch_norm: batch-norm after every convolution and every hidden Linear layer.
      name: registry name, for error messages.
    """

    def __init__(
        self,
        cfg: tuple[int | str, ...],
        input_shape: tuple[int, int, int],
        num_classes: int,
        *,
        hidden: tuple[int, ...] = (),
        batch_norm: bool = False,
        name: str = "vgg",
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = input_shape[0]
        for v in cfg:
            if v == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2, ceil_mode=True))
                continue
            layers.append(nn.Conv2d(channels, int(v), kernel_size=3, padding=1))
            if batch_norm:
                layers.append(nn.BatchNorm2d(int(v)))
            layers.append(nn.ReLU(inplace=True))
            channels = int(v)
        layers.append(nn.Flatten())
        self.features = nn.Sequential(*layers)
        fan_in = _flat_size(name, self.features, input_shape)
        head: list[nn.Module] = []
        for width in hidden:
            head.append(nn.Linear(fan_in, width))
            if batch_norm:
                head.append(nn.BatchNorm1d(width))
            head.append(nn.ReLU(inplace=True))
            fan_in = width
        head.append(nn.Linear(fan_in, num_classes))
        self.classifier = nn.Sequential(*head)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def _build_vgg9(
    *, input_shape: tuple[int, ...], num_classes: int, batch_norm: bool, layout: str
) -> nn.Module:
    shape = _image_shape("vgg9", input_shape)
    _check_bool("vgg9", "batch_norm", batch_norm)
    _check_choice("vgg9", "layout", layout, ["standard", "loss-landscape"])
    if layout == "standard":
        return VGG(VGG9_STANDARD, shape, num_classes, hidden=(512,), batch_norm=batch_norm, name="vgg9")
    return VGG(VGG9_LOSS_LANDSCAPE, shape, num_classes, hidden=(256,), batch_norm=batch_norm, name="vgg9")


def _build_vgg16(*, input_shape: tuple[int, ...], num_classes: int, batch_norm: bool) -> nn.Module:
    shape = _image_shape("vgg16", input_shape)
    _check_bool("vgg16", "batch_norm", batch_norm)
    return VGG(VGG16_CFG, shape, num_classes, batch_norm=batch_norm, name="vgg16")


# --------------------------------------------------------------------------------------------------
# ResNet (torchvision)


def _build_resnet(
    arch: str, *, input_shape: tuple[int, ...], num_classes: int, cifar_stem: bool | None
) -> nn.Module:
    import torchvision

    c, h, w = _image_shape(arch, input_shape)
    _check_optional_bool(arch, "cifar_stem", cifar_stem)
    model = getattr(torchvision.models, arch)(weights=None, num_classes=num_classes)
    small = max(h, w) <= 64 if cifar_stem is None else cifar_stem
    if small:
        model.conv1 = nn.Conv2d(c, 64, kernel_size=3, stride=1, padding=1, bias=False)
        model.maxpool = nn.Identity()
    elif c != 3:
        model.conv1 = nn.Conv2d(c, 64, kernel_size=7, stride=2, padding=3, bias=False)
    if small or c != 3:
        # the initialisation torchvision gives every other convolution of the network
        nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
    return model


# --------------------------------------------------------------------------------------------------
# Vision Transformer (timm)

#: embed_dim, depth, num_heads of the ViT variants (Dosovitskiy et al. 2021; DeiT for "tiny").
VIT_VARIANTS: Mapping[str, tuple[int, int, int]] = {
    "tiny": (192, 12, 3),
    "small": (384, 12, 6),
    "base": (768, 12, 12),
}


def _pair(model: str, field: str, value: Any) -> tuple[int, int]:
    if isinstance(value, (list, tuple)) and len(value) == 2:
        return (_check_int(model, field, value[0], 1), _check_int(model, field, value[1], 1))
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(
            f"Invalid {field} for model '{model}': {value!r} (must be a positive integer or a pair)"
        )
    return (value, value)


def _build_vit(
    *,
    input_shape: tuple[int, ...],
    num_classes: int,
    variant: str,
    img_size: int | tuple[int, int] | None,
    patch_size: int | None,
    name: str = "vit",
) -> nn.Module:
    from timm.models.vision_transformer import VisionTransformer

    c, h, w = _image_shape(name, input_shape)
    _check_choice(name, "variant", variant, list(VIT_VARIANTS))
    size = (h, w) if img_size is None else _pair(name, "img_size", img_size)
    if patch_size is None:
        patch_size = 4 if max(size) <= 32 else 16
    patch = _check_int(name, "patch_size", patch_size, 1)
    if size[0] % patch or size[1] % patch:
        raise ConfigError(
            f"Invalid patch_size for model '{name}': {patch} does not divide the image size "
            f"{size[0]}x{size[1]} (choose a patch_size that divides it, or resize the inputs with img_size)"
        )
    embed_dim, depth, heads = VIT_VARIANTS[variant]
    return VisionTransformer(
        img_size=size,
        patch_size=patch,
        in_chans=c,
        num_classes=num_classes,
        embed_dim=embed_dim,
        depth=depth,
        num_heads=heads,
    )


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
    args={"batch_norm": False, "layout": "standard"},
    description="VGG-9 (7 conv + 2 Linear). layout 'standard': conv64-M-conv128-M-conv256x2-M-conv512x2-M-"
    "conv512-M, Linear(512, 512), Linear(512, classes) on 32x32; 'loss-landscape': Li et al.'s "
    "conv64x2-M-conv128x2-M-conv256x3-M, Linear(256*4*4, 256), Linear(256, classes) (their code uses "
    "batch_norm true). batch_norm off by default (papers/003 uses no regularisation); (C, H, W) images",
    reference="papers/003 Section 5.4 (sigma 0.045); Li et al. 2018, Visualizing the Loss Landscape",
)
register_model(
    "vgg16",
    _build_vgg16,
    default_sigma=GENERIC_SIGMA,
    args={"batch_norm": True},
    description="CIFAR VGG-16 (configuration D, 13 conv with batch-norm, Linear(512, classes) on 32x32); "
    "(C, H, W) images",
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
