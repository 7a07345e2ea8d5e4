"""Trivial stationary points are not wins: classifying runs that "converged" by dying.

A network can drive its gradient norm to almost zero by collapsing: the ReLUs switch off, the output
becomes constant, the training loss stays near its starting value (about ln 10 for ten classes) and the
accuracy at chance. papers/003 ranks step sizes by how low they drive the gradient norm, so such a run
would look like the best one; every analysis here classifies runs first and never ranks a collapsed run
as a success.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

from lyaptune.analysis.load import parse_json_column
from lyaptune.errors import ConfigError

__all__ = ["CollapseThresholds", "classify_collapse", "num_classes_of"]


@dataclass(frozen=True, kw_only=True)
class CollapseThresholds:
    r"""When a completed run counts as ``collapsed`` (stored with every report).

    A run is collapsed when either holds:

    .. math::

        |\mathcal{L}_{\text{final}} - \mathcal{L}(w_0)| \le \text{loss\_rel}\, \mathcal{L}(w_0)
        \qquad\text{or}\qquad
        |\text{acc}_{\text{test}} - 1/C| \le \text{acc\_points} / 100

    i.e. the training loss ended within ``loss_rel`` of L(w0) (the network learned nothing), or the
    test accuracy ended within ``acc_points`` percentage points of chance ``1/C``, with ``C`` the
    number of classes. A loss far *above* L(w0) is a failure to train but not a collapse: such a run
    has a large gradient norm and cannot pass for a converged one.

    Attributes:
      loss_rel: relative loss threshold (default 0.05, i.e. 5% of L(w0)); in [0, 1).
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
            f"L(w0) or its final test accuracy within {self.acc_points:g} points of chance (1/classes)"
        )


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
) -> pd.DataFrame:
    """Classify every completed run as collapsed or not (see :class:`CollapseThresholds`).

    Args:
      trials: rows of ``trials.parquet`` (needs ``status``, ``final_train_loss``, ``initial_loss``,
        ``final_test_acc``; ``info_json`` / ``config_json`` / ``dataset`` give the class count).
      thresholds: the rule's thresholds (default 5% of L(w0), 2 points above chance).
      num_classes: the class count for every row, overriding what the rows record.

    Returns:
      A copy of ``trials`` with ``chance_acc`` (1/C, NaN where C is unknown), ``collapsed_loss``,
      ``collapsed_acc``, ``collapsed`` (bools; False for runs that did not complete) and
      ``collapse_reason`` (``"loss"``, ``"chance accuracy"``, both joined by ``" + "``, or ``""``).
    """
    th = thresholds or CollapseThresholds()
    out = trials.copy()
    n = len(out)
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
    done = (out["status"] == "completed").to_numpy() if n else np.zeros(0, bool)
    loss = pd.to_numeric(out.get("final_train_loss", pd.Series(np.nan, index=out.index)), errors="coerce")
    l0 = pd.to_numeric(out.get("initial_loss", pd.Series(np.nan, index=out.index)), errors="coerce")
    acc = pd.to_numeric(out.get("final_test_acc", pd.Series(np.nan, index=out.index)), errors="coerce")
    loss, l0, acc = loss.to_numpy(float), l0.to_numpy(float), acc.to_numpy(float)
    with np.errstate(invalid="ignore"):
        near_l0 = np.abs(loss - l0) <= th.loss_rel * l0
        near_chance = np.abs(acc - chance) <= th.acc_points / 100.0
        by_loss = done & np.isfinite(loss) & np.isfinite(l0) & (l0 > 0) & near_l0
        by_acc = done & np.isfinite(acc) & np.isfinite(chance) & near_chance
    out["chance_acc"] = chance
    out["collapsed_loss"] = by_loss
    out["collapsed_acc"] = by_acc
    out["collapsed"] = by_loss | by_acc
    out["collapse_reason"] = [
        " + ".join(r for r, on in (("loss", a), ("chance accuracy", b)) if on)
        for a, b in zip(by_loss, by_acc)
    ]
    return out
