"""Seeded, stratified index selection: the mini-* subsets, train/test and validation splits.

All functions take a ``numpy.random.Generator`` and return sorted index arrays, so a subset keeps the
original order of the data and the same generator state always selects the same examples.
"""

from __future__ import annotations

import hashlib

import numpy as np

from lyaptune.errors import ConfigError

__all__ = ["index_digest", "per_class_subset", "rng_for", "stratified_counts", "stratified_split"]

# Independent random streams derived from one seed, so that e.g. changing the label-noise fraction
# does not move the validation split.
STREAMS = {
    "subset-train": 1,
    "subset-test": 2,
    "test-split": 3,
    "validation": 10,
    "label-noise": 11,
    "poison-target": 12,
    "poison-source": 13,
    "synthetic": 20,
}


def rng_for(seed: int, stream: str) -> np.random.Generator:
    """The generator of the named random ``stream`` for ``seed`` (see ``STREAMS``)."""
    return np.random.default_rng([int(seed), STREAMS[stream]])


def index_digest(index: np.ndarray) -> str:
    """A short SHA-256 fingerprint of an index array, recorded so a reproduction can be verified."""
    return hashlib.sha256(np.asarray(index, dtype=np.int64).tobytes()).hexdigest()[:16]


def stratified_counts(labels: np.ndarray, n_take: int, rng: np.random.Generator) -> dict[int, int]:
    """How many examples of each class a stratified sample of exactly ``n_take`` takes.

    Class ``c`` with ``n_c`` of the ``N`` examples gets ``floor(n_take * n_c / N)``; the remaining
    examples go to the classes with the largest remainders (ties broken at random by ``rng``).

    Args:
      labels: integer labels, shape ``(N,)``.
      n_take: total sample size, ``0 <= n_take <= N``.
      rng: source of the tie-breaking.

    Returns:
      ``{class: count}`` for every class present, summing to ``n_take``.
    """
    labels = np.asarray(labels)
    classes, counts = np.unique(labels, return_counts=True)
    if not 0 <= n_take <= labels.shape[0]:
        raise ValueError(f"n_take={n_take} is outside [0, {labels.shape[0]}]")
    quota = n_take * counts / counts.sum()
    base = np.floor(quota).astype(np.int64)
    rest = n_take - int(base.sum())
    order = rng.permutation(classes.shape[0])
    order = order[np.argsort(-(quota - base)[order], kind="stable")]
    base[order[:rest]] += 1
    return {int(c): int(k) for c, k in zip(classes, base)}


def stratified_split(
    labels: np.ndarray, n_take: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Split indices into a stratified sample of exactly ``n_take`` and the rest.

    Args:
      labels: integer labels, shape ``(N,)``.
      n_take: size of the sample (e.g. ``round(fraction * N)`` for a validation set).
      rng: source of randomness.

    Returns:
      ``(taken, rest)``: sorted, disjoint index arrays covering ``range(N)``.
    """
    labels = np.asarray(labels)
    per_class = stratified_counts(labels, n_take, rng)
    taken = [rng.permutation(np.flatnonzero(labels == c))[:k] for c, k in per_class.items()]
    taken_idx = np.sort(np.concatenate(taken)) if taken else np.zeros(0, dtype=np.int64)
    mask = np.ones(labels.shape[0], dtype=bool)
    mask[taken_idx] = False
    return taken_idx.astype(np.int64), np.flatnonzero(mask).astype(np.int64)


def per_class_subset(
    labels: np.ndarray, per_class: int, num_classes: int, rng: np.random.Generator, *, what: str = "subset"
) -> np.ndarray:
    """Sorted indices of ``per_class`` examples drawn without replacement from each of the classes.

    Args:
      labels: integer labels in ``[0, num_classes)``, shape ``(N,)``.
      per_class: examples per class (mini-MNIST: 550 train / 100 test; mini-CIFAR-10: 500 / 100).
      num_classes: number of classes; every class must have at least ``per_class`` examples.
      rng: source of randomness.
      what: the option name, for the error message.

    Returns:
      ``num_classes * per_class`` sorted indices.

    References:
      papers/003, Section 5.1 (mini-MNIST and mini-CIFAR-10).
    """
    labels = np.asarray(labels)
    chosen = []
    for c in range(num_classes):
        idx = np.flatnonzero(labels == c)
        if idx.shape[0] < per_class:
            raise ConfigError(
                f"{what}={per_class} but class {c} has only {idx.shape[0]} examples "
                f"(choose {what} <= {idx.shape[0]})"
            )
        chosen.append(rng.choice(idx, size=per_class, replace=False))
    return np.sort(np.concatenate(chosen)).astype(np.int64)
