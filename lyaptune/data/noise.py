"""Training-set noise of papers/000: label flips and data poisoning by another dataset's images.

Both act on the training split only (validation and test are never noised) and select exactly
``round(fraction * N)`` examples. Gradient noise is applied by the trainer, not here.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from lyaptune.errors import ConfigError

__all__ = ["choose_indices", "flip_labels", "match_channels", "resize_images", "fit_images"]


def choose_indices(n: int, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Sorted indices of exactly ``round(fraction * n)`` distinct examples out of ``n``."""
    count = round(fraction * n)
    return np.sort(rng.choice(n, size=count, replace=False)).astype(np.int64)


def flip_labels(
    labels: torch.Tensor, index: np.ndarray, num_classes: int, rng: np.random.Generator
) -> torch.Tensor:
    """Change each label at ``index`` to a different class, uniformly among the other classes.

    ``y_i <- (y_i + k_i) mod K`` with ``k_i`` uniform in ``{1, ..., K-1}``, so every selected label
    changes and the new class is uniform over the ``K - 1`` wrong ones.

    Args:
      labels: ``int64`` labels ``(N,)`` (not modified).
      index: the examples to flip (e.g. from :func:`choose_indices`).
      num_classes: ``K >= 2``.
      rng: source of randomness.

    Returns:
      A new label tensor.

    References:
      papers/000, Section 3.1.1 (noisy training data).
    """
    if num_classes < 2:
        raise ConfigError(f"label_noise needs at least 2 classes, got num_classes={num_classes}")
    out = labels.clone()
    if len(index) == 0:
        return out
    idx = torch.as_tensor(index, dtype=torch.int64)
    shift = torch.as_tensor(rng.integers(1, num_classes, size=len(index)), dtype=torch.int64)
    out[idx] = (labels[idx].cpu() + shift).remainder(num_classes).to(labels.device)
    return out


def match_channels(images: torch.Tensor, channels: int) -> torch.Tensor:
    """Convert ``(N, C, H, W)`` images to ``channels``: grey -> repeated to RGB, RGB -> channel mean."""
    have = images.shape[1]
    if have == channels:
        return images
    if have == 1:
        return images.expand(-1, channels, -1, -1).contiguous()
    if channels == 1:
        return images.mean(dim=1, keepdim=True)
    raise ConfigError(f"poison: cannot convert images with {have} channels to {channels} channels")


def resize_images(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resize ``(N, C, H, W)`` float images in [0, 1] to ``size`` (bilinear, antialiased when shrinking)."""
    if tuple(images.shape[-2:]) == tuple(size):
        return images
    out = F.interpolate(images, size=tuple(size), mode="bilinear", align_corners=False, antialias=True)
    return out.clamp_(0.0, 1.0)


def fit_images(images: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """Make float images in [0, 1] fit ``shape = (C, H, W)``: resize, then match channels.

    References:
      papers/000, Section 3.1.1 (CIFAR images replaced by MNIST images).
    """
    if len(shape) != 3:
        raise ConfigError(f"poison needs image data with input_shape (C, H, W), got input_shape={shape}")
    return match_channels(resize_images(images.float(), shape[1:]), shape[0])
