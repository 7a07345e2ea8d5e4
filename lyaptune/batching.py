"""Batch sizes, fixed or growing during one run (papers/003 Section 5.3, "increasing batch").

A trial's ``batch_size`` is one of

* a positive integer ``B``: every epoch uses mini-batches of ``B`` examples;
* ``"full"``: every epoch is one full-batch step;
* a growing batch, ``{schedule: list, sizes: [b_0, ..., b_m], epochs: [e_0, ..., e_m]}``: the batch
  size is piecewise constant in the epoch, ``b_i`` from epoch ``e_i`` on,

      B(e) = b_i   for the largest i with e_i <= e,

  with ``e`` the epoch counted from 0 (the number of epochs completed before it), ``e_0 = 0``, the
  ``e_i`` strictly increasing and the ``b_i`` non-decreasing (each a positive integer or ``"full"``,
  which counts as the largest). E.g. ``{schedule: list, sizes: [500, 1000, 2500, 5000], epochs: [0, 5,
  10, 15]}`` trains epochs 0-4 at batch 500, 5-9 at 1,000, 10-14 at 2,500 and every later epoch at
  5,000.

An epoch at batch ``B(e)`` takes ``ceil(n_train / B(e))`` optimizer steps (one when ``B(e)`` is
``"full"`` or at least ``n_train``), so a run of ``E`` epochs takes ``T = sum_e ceil(n_train / B(e))``
steps; that ``T`` is what the derived step size of papers/003 (``alpha = sqrt(2 L(w0) / (K_hat T))``)
uses.

papers/003 Section 5.3 (Figure 5) reports that "increasing batch size will lead to faster
convergence" without saying whether the batch grows within a run or across runs: a study can read it
as separate runs at fixed sizes (``experiments/003_increasing_batch.yaml``) or as one run whose batch
grows (this module's third form).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from typing import Any

from lyaptune._fields import _FieldError
from lyaptune._frozen import FrozenDict
from lyaptune.errors import ConfigError

__all__ = [
    "GROWING_FORM",
    "BatchSizeError",
    "check_batch_size",
    "batch_size_at",
    "is_growing",
    "epoch_steps",
    "steps_in_epoch",
]

#: The growing form of ``batch_size``, as error messages name it beside the fixed ones.
GROWING_FORM = "{schedule: list, sizes: [b0, b1, ...], epochs: [0, e1, ...]}"

_SCHEDULES = ("list",)
_KEYS = ("schedule", "sizes", "epochs")


class BatchSizeError(_FieldError):
    """A bad ``batch_size``: ``path`` is the field (a key inside a growing batch included), ``detail``
    the rest of the one-line message (``"<path>: <detail>"``, or ``detail`` alone for an empty path).

    A field error of the config models (:mod:`lyaptune._fields`), so a model that checks the field
    under an empty path reports it under its own (``task.batch_size.sizes[1]: ...``).
    """


def _sub(path: str, key: str) -> str:
    if not path:
        return key
    return f"{path}{key}" if key.startswith("[") else f"{path}.{key}"


def _fail(path: str, detail: str) -> BatchSizeError:
    return BatchSizeError(path, detail)


def _is_count(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _fixed(value: Any) -> int | str | None:
    """A fixed batch size checked, or ``None`` when ``value`` is not one."""
    if isinstance(value, str):
        if value == "full":
            return "full"
        return None
    if _is_count(value) and value >= 1:
        return int(value)
    return None


def _rank(size: int | str) -> float:
    return math.inf if size == "full" else float(size)


def check_batch_size(path: str, value: Any) -> int | str | Mapping[str, Any]:
    """Validate a ``batch_size`` and return it in canonical form.

    Args:
      path: the field's path, named in errors (e.g. ``task.batch_size`` or ``arms[2].task.batch_size``).
      value: a positive integer, ``"full"``, or a growing batch ``{schedule: list, sizes: [...],
        epochs: [...]}`` (module docstring).

    Returns:
      The integer, ``"full"``, or the growing batch as a read-only mapping (``sizes`` and ``epochs``
      as tuples, hashable and picklable).

    Raises:
      BatchSizeError: (a :class:`~lyaptune.errors.ConfigError`) one line naming ``path`` (and the key
        inside a growing batch), the bad value and the valid forms.

    References:
      papers/003 Section 5.3, Figure 5 (increasing batch sizes).
    """
    if not isinstance(value, Mapping):
        fixed = _fixed(value)
        if fixed is None:
            raise _fail(
                path,
                f"must be a positive integer or 'full', got {value!r} (a batch that grows during the run: "
                f"{GROWING_FORM})",
            )
        return fixed
    unknown = [k for k in value if k not in _KEYS]
    if unknown:
        raise _fail(path, f"unknown key {unknown[0]!r} in a growing batch; known keys: {', '.join(_KEYS)}")
    schedule = value.get("schedule")
    if schedule not in _SCHEDULES:
        raise _fail(
            _sub(path, "schedule"),
            f"must be one of {', '.join(_SCHEDULES)} (sizes from the given epochs on), got {schedule!r}",
        )
    sizes, epochs = value.get("sizes"), value.get("epochs")
    for key, seq in (("sizes", sizes), ("epochs", epochs)):
        if isinstance(seq, (str, bytes)) or not isinstance(seq, Sequence) or len(seq) == 0:
            raise _fail(_sub(path, key), f"must be a non-empty list, got {seq!r}")
    assert isinstance(sizes, Sequence) and isinstance(epochs, Sequence)
    if len(sizes) != len(epochs):
        raise _fail(
            path,
            f"sizes and epochs must have the same length (one start epoch per size), got {len(sizes)} "
            f"sizes {list(sizes)!r} and {len(epochs)} epochs {list(epochs)!r}",
        )
    out_sizes: list[int | str] = []
    for i, s in enumerate(sizes):
        fixed = _fixed(s)
        if fixed is None:
            raise _fail(_sub(path, f"sizes[{i}]"), f"must be a positive integer or 'full', got {s!r}")
        if out_sizes and _rank(fixed) < _rank(out_sizes[-1]):
            raise _fail(
                _sub(path, f"sizes[{i}]"),
                f"a growing batch never shrinks: {fixed!r} follows {out_sizes[-1]!r}; "
                "give sizes in non-decreasing order ('full' is the largest)",
            )
        out_sizes.append(fixed)
    out_epochs: list[int] = []
    for i, e in enumerate(epochs):
        if not _is_count(e) or e < 0:
            raise _fail(_sub(path, f"epochs[{i}]"), f"must be an epoch index (an integer >= 0), got {e!r}")
        if i == 0 and e != 0:
            raise _fail(_sub(path, "epochs[0]"), f"must be 0 (the first size starts the run), got {e!r}")
        if out_epochs and e <= out_epochs[-1]:
            raise _fail(
                _sub(path, f"epochs[{i}]"),
                f"start epochs must increase strictly: {e!r} follows {out_epochs[-1]!r}",
            )
        out_epochs.append(int(e))
    return FrozenDict(schedule=schedule, sizes=tuple(out_sizes), epochs=tuple(out_epochs))


def is_growing(value: Any) -> bool:
    """Whether ``value`` (a checked ``batch_size``) is a growing batch rather than a fixed size."""
    return isinstance(value, Mapping)


def batch_size_at(value: int | str | Mapping[str, Any], epoch: int) -> int | str:
    """The batch size in force in epoch ``epoch`` (counted from 0).

    For a fixed ``value`` (an integer or ``"full"``) that value; for a growing batch
    ``{schedule: list, sizes: [b_0..b_m], epochs: [e_0..e_m]}``

        B(e) = b_i   for the largest i with e_i <= e.

    Args:
      value: a ``batch_size`` as :func:`check_batch_size` accepts it.
      epoch: the epoch, 0 for the first (the number of epochs completed before it).

    Returns:
      A positive integer or ``"full"``.

    Raises:
      ConfigError: ``value`` is not a valid batch size, or ``epoch`` is negative.

    References:
      papers/003 Section 5.3, Figure 5 (increasing batch sizes).
    """
    if not _is_count(epoch) or epoch < 0:
        raise ConfigError(f"epoch: must be an integer >= 0, got {epoch!r}")
    checked = check_batch_size("batch_size", value)
    if not isinstance(checked, Mapping):
        return checked
    current: int | str = checked["sizes"][0]
    for start, size in zip(checked["epochs"], checked["sizes"]):
        if start > epoch:
            break
        current = size
    return current


def steps_in_epoch(value: int | str | Mapping[str, Any], epoch: int, n_train: int) -> int:
    """Optimizer steps of epoch ``epoch`` over ``n_train`` examples: ``ceil(n_train / B(epoch))``.

    One step when the batch is ``"full"`` or at least ``n_train`` (the whole training set as one
    batch; a last, smaller batch is kept, never dropped).

    Args:
      value: a ``batch_size`` (:func:`check_batch_size`).
      epoch: the epoch, counted from 0.
      n_train: examples in the training split (>= 1).

    Returns:
      The number of optimizer steps in that epoch.
    """
    size = batch_size_at(value, epoch)
    if size == "full" or int(size) >= n_train:
        return 1
    return math.ceil(n_train / int(size))


def epoch_steps(value: int | str | Mapping[str, Any], epochs: int, n_train: int) -> list[int]:
    """Optimizer steps of every epoch of a run; their sum is the run's step count T.

    T is the horizon of papers/003's derived step, alpha = sqrt(2 L(w0) / (K_hat T)) (METHODS.md
    section 4): the one place a run, its engine and ``lyaptune lipschitz`` count it.

    Args:
      value: a ``batch_size`` (:func:`check_batch_size`).
      epochs: epochs of the run (>= 1).
      n_train: examples in the training split (>= 1).

    Returns:
      ``[steps_in_epoch(value, e, n_train) for e in range(epochs)]``.
    """
    return [steps_in_epoch(value, e, n_train) for e in range(epochs)]
