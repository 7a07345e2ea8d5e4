"""Trivial stationary points are not wins: classifying runs that "converged" by dying.

A network can drive its gradient norm to almost zero by collapsing: the ReLUs switch off, the output
becomes constant, the training loss stays near its starting value (about ln 10 for ten classes) and the
accuracy at chance. papers/003 ranks step sizes by how low they drive the gradient norm, so such a run
would look like the best one; every analysis here classifies runs first and never ranks a collapsed run
as a success.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

from lyaptune.analysis.load import parse_json_column
from lyaptune.errors import ConfigError

__all__ = [
    "BOUNDARY_TOL",
    "CollapseThresholds",
    "LabelStats",
    "classify_collapse",
    "label_stats",
    "num_classes_of",
    "task_label_stats",
]

#: Absolute tolerance of the collapse rule's boundaries (METHODS.md section 8): a distance equal to the
#: threshold up to float rounding is on the boundary, so 0.12 and 0.08 against a 0.10 majority rate
#: with a 2-point threshold are treated alike (both collapsed), whatever their binary representation.
BOUNDARY_TOL = 1e-9


@dataclass(frozen=True, kw_only=True)
class CollapseThresholds:
    r"""When a completed run counts as ``collapsed`` (METHODS.md section 8; stored with every report).

    A run is collapsed when any of these holds:

    .. math::

        |\mathcal{L}_{\text{final}} - \mathcal{L}(w_0)| \le r\, \mathcal{L}(w_0),
        \qquad
        |\mathcal{L}_{\text{final}} - H(y)| \le r\, H(y),
        \qquad
        |\text{acc}_{\text{test}} - \max_k \hat p_k| \le \text{acc\_points} / 100,

    with ``r = loss_rel``, :math:`H(y) = -\sum_k p_k \ln p_k` the label entropy of the training
    set (the cross-entropy of a network that predicts the class prior) and
    :math:`\max_k \hat p_k` the majority-class rate of the test set (the accuracy of predicting
    the most frequent class). On balanced data these are ln C and 1/C; on imbalanced data (GTSRB:
    H(y) 7% below ln 43, majority rate 5.7% against 1/43 = 2.3%) only the label statistics catch a
    network that learned the prior and nothing else. Each boundary is compared with an absolute
    tolerance :data:`BOUNDARY_TOL` (1e-9). A loss far *above* L(w0) is a failure to train
    but not a collapse: such a run has a large gradient norm and cannot pass for a converged one.

    Attributes:
      loss_rel: relative loss threshold (default 0.05, i.e. 5%); in [0, 1).
      acc_points: accuracy threshold in percentage points (default 2); in [0, 100].
    """

    loss_rel: float = 0.05
    acc_points: float = 2.0

    def __post_init__(self) -> None:
        if not isinstance(self.loss_rel, (int, float)) or not 0.0 <= self.loss_rel < 1.0:
            raise ConfigError(f"collapse loss_rel must be a number in [0, 1), got {self.loss_rel!r}")
        if not isinstance(self.acc_points, (int, float)) or not 0.0 <= self.acc_points <= 100.0:
            raise ConfigError(f"collapse acc_points must be a number in [0, 100], got {self.acc_points!r}")

    def to_dict(self) -> dict[str, float]:
        """The thresholds as a plain mapping (for the report)."""
        return {k: float(v) for k, v in asdict(self).items()}

    def describe(self) -> str:
        """One sentence stating the rule with these thresholds."""
        return (
            f"a completed run is collapsed when its final training loss is within {self.loss_rel:.0%} of "
            f"L(w0) or of the training set's label entropy H(y) (the loss of predicting the class "
            f"prior), or its final test accuracy within {self.acc_points:g} points of the test set's "
            "majority-class rate"
        )


@dataclass(frozen=True)
class LabelStats:
    """What a network that learned only the class prior scores on a task.

    Attributes:
      label_entropy: H(y) of the training labels in nats (its cross-entropy loss).
      majority_rate: the most frequent class's share of the test labels (its accuracy).
      num_classes: C.
      source: ``"labels"`` (computed from the dataset's labels) or ``"uniform"`` (ln C and 1/C,
        the fallback when the labels were not available).
      note: why the fallback was used (empty for ``labels``).
    """

    label_entropy: float
    majority_rate: float
    num_classes: int | None
    source: str = "labels"
    note: str = ""

    @classmethod
    def uniform(cls, num_classes: int | None, note: str = "") -> LabelStats:
        """The balanced-data fallback: H(y) = ln C, majority rate = 1/C (NaN when C is unknown)."""
        if num_classes is None or num_classes < 1:
            return cls(math.nan, math.nan, None, "uniform", note)
        return cls(math.log(num_classes), 1.0 / num_classes, int(num_classes), "uniform", note)


def label_stats(
    train_labels: Sequence[int] | np.ndarray,
    test_labels: Sequence[int] | np.ndarray | None = None,
    num_classes: int | None = None,
) -> LabelStats:
    r"""Label entropy of the training labels and majority-class rate of the test labels.

    .. math::

        H(y) = -\sum_k p_k \ln p_k, \quad p_k = n_k / n \text{ (training set)};
        \qquad \text{majority} = \max_k m_k / m \text{ (test set)}.

    Args:
      train_labels: integer class labels of the training set.
      test_labels: those of the test set (default: the training labels).
      num_classes: C (default: the largest label + 1).

    Returns:
      :class:`LabelStats` with ``source="labels"``.
    """
    y = np.asarray(train_labels, dtype=np.int64).ravel()
    yt = y if test_labels is None else np.asarray(test_labels, dtype=np.int64).ravel()
    if y.size == 0 or yt.size == 0:
        raise ValueError("label_stats needs non-empty label vectors")
    c = int(num_classes) if num_classes else int(max(y.max(), yt.max())) + 1
    p = np.bincount(y, minlength=c) / y.size
    p = p[p > 0]
    h = float(-(p * np.log(p)).sum())
    maj = float(np.bincount(yt, minlength=c).max() / yt.size)
    return LabelStats(h, maj, c, "labels", "")


_TASK_LABELS: dict[str, LabelStats] = {}


def task_label_stats(task: Mapping[str, Any], num_classes: int | None = None) -> LabelStats:
    """:func:`label_stats` of a study's task, from its dataset's labels (cached per task).

    The dataset is loaded through :func:`lyaptune.data.load_dataset` with the task's options, as the
    trial engine loads it (training split after the validation split is carved out; the test
    split). Where that fails (files absent at report time, a lazily read dataset), the fallback is
    :meth:`LabelStats.uniform` with a note saying why, which the report states.

    Args:
      task: the spec's ``task`` mapping (``dataset``, ``dataset_args``, ``data_root``,
        ``validation_fraction``, ``data_seed``).
      num_classes: C for the fallback when the dataset cannot be loaded.

    Returns:
      The task's :class:`LabelStats`.
    """
    key = json.dumps(
        {
            k: task.get(k)
            for k in ("dataset", "dataset_args", "data_root", "validation_fraction", "data_seed")
        },
        sort_keys=True,
        default=str,
    )
    if key in _TASK_LABELS:
        return _TASK_LABELS[key]
    name = task.get("dataset")
    try:
        from lyaptune.data import load_dataset

        data = load_dataset(
            str(name),
            data_root=task.get("data_root"),
            download=False,
            validation_fraction=float(task.get("validation_fraction") or 0.0),
            seed=int(task.get("data_seed") or 0),
            normalize=None,
            cache=False,
            **dict(task.get("dataset_args") or {}),
        )
        train_y = _split_labels(data.train)
        test_y = _split_labels(data.test)
        if train_y is None or test_y is None:
            raise LookupError("the dataset is read lazily from image files")
        out = label_stats(train_y, test_y, int(data.num_classes))
    except Exception as err:  # noqa: BLE001 - any failure to read the data means: use the fallback
        c = num_classes
        if c is None:
            c = _registry_num_classes(name)
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        out = LabelStats.uniform(
            c,
            f"labels of dataset {name!r} not available at report time ({reason[:160]}); "
            "H(y) = ln C and majority rate = 1/C assumed (exact only for balanced classes)",
        )
    _TASK_LABELS[key] = out
    return out


def _split_labels(split: Any) -> np.ndarray | None:
    if getattr(split, "y", None) is not None:
        return np.asarray(split.y.cpu().numpy(), dtype=np.int64)
    ds = getattr(split, "dataset", None)
    for attr in ("targets", "labels"):
        y = getattr(ds, attr, None)
        if y is not None:
            return np.asarray(y, dtype=np.int64)
    return None


def _registry_num_classes(dataset: Any) -> int | None:
    if not isinstance(dataset, str) or not dataset:
        return None
    try:
        from lyaptune.data import get_dataset_info
    except ImportError:
        return None
    try:
        return int(get_dataset_info(dataset).num_classes)
    except (ValueError, LookupError, AttributeError, TypeError):
        return None


def num_classes_of(info: Mapping[str, Any], config: Mapping[str, Any]) -> int | None:
    """The number of classes of one run: its recorded dataset info, its dataset options, or the registry.

    Args:
      info: the run's ``info_json`` (``dataset_info.num_classes`` is recorded by the trial engine).
      config: the run's ``config_json`` (``dataset_args.num_classes`` for the synthetic dataset).

    Returns:
      The class count, or ``None`` when nothing says it.
    """
    ds = info.get("dataset_info")
    if isinstance(ds, Mapping) and _positive_int(ds.get("num_classes")):
        return int(ds["num_classes"])
    args = config.get("dataset_args")
    if isinstance(args, Mapping) and _positive_int(args.get("num_classes")):
        return int(args["num_classes"])
    return _registry_num_classes(config.get("dataset"))


def _positive_int(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 1


def classify_collapse(
    trials: pd.DataFrame,
    thresholds: CollapseThresholds | None = None,
    *,
    num_classes: int | None = None,
    labels: LabelStats | None = None,
) -> pd.DataFrame:
    """Classify every completed run as collapsed or not (see :class:`CollapseThresholds`).

    Args:
      trials: rows of ``trials.parquet`` (needs ``status``, ``final_train_loss``, ``initial_loss``,
        ``final_test_acc``; ``info_json`` / ``config_json`` / ``dataset`` give the class count).
      thresholds: the rule's thresholds (default 5% of L(w0) or H(y), 2 points of the majority rate).
      num_classes: the class count for every row, overriding what the rows record (used for the
        balanced fallback ln C, 1/C when ``labels`` is not given).
      labels: the task's label statistics (:func:`task_label_stats`); default: the balanced fallback
        from each row's class count.

    Returns:
      A copy of ``trials`` with ``label_entropy`` (H(y)), ``chance_acc`` (the majority-class rate;
      NaN where unknown), ``collapsed_loss`` (near L(w0)), ``collapsed_entropy`` (near H(y)),
      ``collapsed_acc``, ``collapsed`` (bools; False for runs that did not complete) and
      ``collapse_reason`` (``"loss"``, ``"label entropy"``, ``"majority-class accuracy"``, joined by
      ``" + "``, or ``""``).
    """
    th = thresholds or CollapseThresholds()
    out = trials.copy()
    n = len(out)
    if labels is not None and math.isfinite(labels.label_entropy):
        entropy = np.full(n, float(labels.label_entropy))
        chance = np.full(n, float(labels.majority_rate))
    else:
        if num_classes is not None:
            classes = np.full(n, float(num_classes))
        else:
            infos = parse_json_column(out["info_json"]) if "info_json" in out else [{}] * n
            configs = parse_json_column(out["config_json"]) if "config_json" in out else [{}] * n
            if "dataset" in out:
                configs = [
                    {"dataset": d, **c} if "dataset" not in c else c for c, d in zip(configs, out["dataset"])
                ]
            classes = np.array([num_classes_of(i, c) or np.nan for i, c in zip(infos, configs)], dtype=float)
        chance = 1.0 / classes
        entropy = np.log(classes)
    done = (out["status"] == "completed").to_numpy() if n else np.zeros(0, bool)
    nan = pd.Series(np.nan, index=out.index)
    loss = pd.to_numeric(out.get("final_train_loss", nan), errors="coerce").to_numpy(float)
    l0 = pd.to_numeric(out.get("initial_loss", nan), errors="coerce").to_numpy(float)
    acc = pd.to_numeric(out.get("final_test_acc", nan), errors="coerce").to_numpy(float)
    with np.errstate(invalid="ignore"):
        by_loss = (
            done
            & np.isfinite(loss)
            & np.isfinite(l0)
            & (l0 > 0)
            & (np.abs(loss - l0) <= th.loss_rel * l0 + BOUNDARY_TOL)
        )
        by_h = (
            done
            & np.isfinite(loss)
            & np.isfinite(entropy)
            & (entropy > 0)
            & (np.abs(loss - entropy) <= th.loss_rel * entropy + BOUNDARY_TOL)
        )
        by_acc = (
            done
            & np.isfinite(acc)
            & np.isfinite(chance)
            & (np.abs(acc - chance) <= th.acc_points / 100.0 + BOUNDARY_TOL)
        )
    out["label_entropy"] = entropy
    out["chance_acc"] = chance
    out["collapsed_loss"] = by_loss
    out["collapsed_entropy"] = by_h
    out["collapsed_acc"] = by_acc
    out["collapsed"] = by_loss | by_h | by_acc
    names = ("loss", "label entropy", "majority-class accuracy")
    out["collapse_reason"] = [
        " + ".join(r for r, on in zip(names, flags) if on) for flags in zip(by_loss, by_h, by_acc)
    ]
    return out
