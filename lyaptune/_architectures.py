"""The built-in architectures of the model registry: fc, LeNet-5, VGG, ResNet (torchvision), ViT (timm).

Private to :mod:`lyaptune.models`, which registers each builder with its defaults and re-exports the
public classes and configurations (:class:`LeNet5`, :class:`VGG`, :data:`VGG9_STANDARD`, ...). A
builder takes ``input_shape``, ``num_classes`` and its model arguments, checks each argument (one line
naming the model, the field, the value and what is valid) and returns an ``nn.Module``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from lyaptune._registry import unknown_choice
from lyaptune.errors import ConfigError

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


def _narrow(cfg: tuple[int | str, ...], divisor: int) -> tuple[int | str, ...]:
    """``cfg`` with every channel count divided by ``divisor`` (at least 1 channel; pools kept)."""
    return tuple(v if v == "M" else max(1, int(v) // divisor) for v in cfg)


def _build_vgg9(
    *, input_shape: tuple[int, ...], num_classes: int, batch_norm: bool, layout: str, width_divisor: int
) -> nn.Module:
    shape = _image_shape("vgg9", input_shape)
    _check_bool("vgg9", "batch_norm", batch_norm)
    _check_choice("vgg9", "layout", layout, ["standard", "loss-landscape"])
    d = _check_int("vgg9", "width_divisor", width_divisor, 1)
    cfg, hidden = (VGG9_STANDARD, 512) if layout == "standard" else (VGG9_LOSS_LANDSCAPE, 256)
    return VGG(
        _narrow(cfg, d), shape, num_classes, hidden=(max(1, hidden // d),), batch_norm=batch_norm, name="vgg9"
    )


def _build_vgg16(
    *, input_shape: tuple[int, ...], num_classes: int, batch_norm: bool, width_divisor: int
) -> nn.Module:
    shape = _image_shape("vgg16", input_shape)
    _check_bool("vgg16", "batch_norm", batch_norm)
    d = _check_int("vgg16", "width_divisor", width_divisor, 1)
    return VGG(_narrow(VGG16_CFG, d), shape, num_classes, batch_norm=batch_norm, name="vgg16")


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
