"""No spec in experiments/ holds two arms that are the same update (METHODS.md section 2, issue 13).

For every spec, each arm of its ``--smoke`` miniature (the CLI's pipeline: :meth:`StudySpec.smoke`, the
dataset stand-ins, :func:`fit_to_cpu`) trains for a few optimizer steps from the same initial weights
and data order (seed 0), at a representative point of its search (its first grid point, else each
range's low end and each first choice). Two arms are distinct when, besides that,

* their final parameters differ (or their shapes: another model or width), or
* their step sizes over the *full* study's epochs differ (a ``step`` schedule that first decays at
  epoch 40 trains like ``constant`` for the miniature's 2 epochs, yet is another update), or
* their batch sizes over the full study's epochs differ (a batch that grows at epoch 20), or
* their search spaces differ (the same point of two different spaces is not the same arm).

Arms are trained only for the pairs that none of the cheap criteria (step sizes, batch sizes, search
space, architecture) tells apart. To keep that cheap the synthetic stand-ins hold a few examples
(``N`` = 4 to 12), and each spec's batch sizes keep their order but shrink to divisors of ``N`` (500 <
1,000 < ... become 1 < 2 < ...; one size becomes 2 of 4), ``full`` staying the whole set: arms that
differ in batch size still train on different batches. Under 2 busy cores the whole module took 6
minutes (most of it ResNet-10-T / ViT-Tiny / VGG-9 steps of the 000 and 001 ablations), hence ``slow``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import torch

from lyaptune.batching import batch_size_at, is_growing
from lyaptune.engines import SingleModel
from lyaptune.loop import run_epochs
from lyaptune.optim import create_optimizer, create_schedule, get_schedule_info
from lyaptune.study.spec import StudySpec, load_spec
from lyaptune.study.standin import fit_to_cpu, swap_missing_datasets

REPO = Path(__file__).resolve().parents[1]
SPECS = sorted((REPO / "experiments").glob("*.yaml"))
N_TEST = 2
SEED = 0


def _miniature(spec: StudySpec, data_root: Path, n_train: int) -> StudySpec:
    """What ``lyaptune run --smoke`` trains here (no CUDA), with stand-ins of ``n_train`` examples."""
    small, _ = swap_missing_datasets(spec.smoke(), default_root=data_root, n_train=n_train, n_test=N_TEST)
    small, _ = fit_to_cpu(small)
    return small


def _sizes(spec: StudySpec) -> list[int]:
    """The distinct integer batch sizes of the spec's arms (those of growing batches too), ascending."""
    sizes: set[int] = set()
    for arm in spec.arms:
        b = spec.trial_config(arm, _point(spec, arm), SEED).batch_size
        sizes.update(s for s in (b["sizes"] if is_growing(b) else [b]) if s != "full")
    return sorted(sizes)


def _shrunk(batch_size: Any, shrink: Mapping[int, int]) -> Any:
    """``batch_size`` with each integer size replaced by its small stand-in (``full`` kept)."""
    if is_growing(batch_size):
        sizes = [s if s == "full" else shrink[s] for s in batch_size["sizes"]]
        return {**dict(batch_size), "sizes": sizes, "epochs": list(batch_size["epochs"])}
    return batch_size if batch_size == "full" else shrink[batch_size]


def _batches(config: Any) -> tuple[Any, ...]:
    """The batch size of each epoch of the run ``config`` describes."""
    return tuple(batch_size_at(config.batch_size, e) for e in range(config.epochs))


def _divisors_for(k: int) -> tuple[int, list[int]]:
    """A training-set size ``N`` and ``k`` ascending batch sizes below it that divide it.

    One size: batches of 2 of 4 examples (batch-norm needs 2). More: divisors from 1 (the specs with
    several batch sizes train models without batch-norm).
    """
    if k <= 1:
        return 4, [2][:k]
    for n in (4, 6, 12, 24, 60, 120, 360):
        divisors = [d for d in range(1, n) if n % d == 0]
        if len(divisors) >= k:
            return n, divisors[:k]
    raise AssertionError(f"{k} batch sizes in one spec: extend the list of training-set sizes")


def _point(spec: StudySpec, arm: Any) -> dict[str, Any]:
    """A representative point of the arm's search: its first grid point, else low ends / first choices."""
    if spec.is_grid(arm):
        return dict(arm.grid_points()[0])
    point = {}
    for name, p in arm.resolved_space().items():
        if p.kind == "range":
            point[name] = int(p.low) if p.type == "int" else float(p.low)
        elif p.kind == "choices":
            point[name] = p.choices[0]
        else:
            point[name] = p.value
    return point


def _space(arm: Any) -> tuple[Any, Any]:
    """The arm's search space and grid, comparable with ``==``."""
    grid = {k: list(v) for k, v in arm.grid.items()} if arm.grid is not None else None
    return ({k: str(v) for k, v in arm.resolved_space().items()}, grid)


def _step_sizes(config: Any) -> tuple[Any, ...]:
    """The step size of each epoch of the run ``config`` describes (relative to alpha for the derived
    step, whose alpha the training measures)."""
    if get_schedule_info(config.schedule).needs_lipschitz:
        return ("derived", float(config.schedule_args.get("multiplier", 1.0)), config.epochs)
    weight = torch.zeros(1, requires_grad=True)
    optimizer = create_optimizer(config.optimizer, [weight], **dict(config.optimizer_args))
    schedule = create_schedule(
        config.schedule,
        optimizer,
        epochs=config.epochs,
        steps_per_epoch=1,
        per=config.schedule_per,
        **dict(config.schedule_args),
    )
    lrs = []
    weight.grad = torch.zeros_like(weight)
    for _ in range(config.epochs):
        lrs.append(schedule.current_lr())
        optimizer.step()  # torch's order: the optimizer steps before its scheduler
        schedule.step_end()
        schedule.epoch_end()
    return tuple(lrs)


def _shapes(config: Any) -> dict[str, tuple[int, ...]]:
    """The parameter shapes of the run's model (built without data: its architecture only)."""
    from lyaptune.models import create_model

    args = config.dataset_args
    model = create_model(
        config.model,
        input_shape=tuple(args["input_shape"]),
        num_classes=int(args["num_classes"]),
        **dict(config.model_args),
    )
    return {n: tuple(p.shape) for n, p in model.named_parameters()}


def _trained(config: Any) -> dict[str, torch.Tensor]:
    """The parameters after the few steps of ``config`` (seeded: same weights and batch order)."""
    engine = SingleModel(config)
    (outcome,) = run_epochs(engine)
    assert outcome.status in ("completed", "diverged"), outcome.message
    return {n: p.detach().clone() for n, p in engine.model.named_parameters()}


def _params_equal(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(a[n].shape == b[n].shape and torch.equal(a[n], b[n]) for n in a)


def _as_synthetic(config: Any, n_train: int) -> dict[str, Any]:
    """The changes that train ``config``'s task on ``n_train`` synthetic examples of its shape."""
    from lyaptune.data import get_dataset_info

    if config.dataset == "synthetic":
        return {"dataset_args": {**dict(config.dataset_args), "n_train": n_train, "n_test": N_TEST}}
    info = get_dataset_info(config.dataset)  # digits: bundled, so never a stand-in of its own
    args = {
        "n_train": n_train,
        "n_test": N_TEST,
        "input_shape": list(info.input_shape),
        "num_classes": info.num_classes,
    }
    return {"dataset": "synthetic", "dataset_args": args}


class Fingerprinter:
    """What tells the arms of one spec apart, arm by arm."""

    def __init__(self, path: Path, data_root: Path) -> None:
        self.full = load_spec(path)
        sizes = _sizes(self.full)
        self.n_train, small = _divisors_for(len(sizes))
        self.shrink = dict(zip(sizes, small))
        self.mini = _miniature(self.full, data_root, self.n_train)
        self.trained: list[str] = []  # arms trained so far, in order

    def describe(self, name: str, point: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The arm's full run's step sizes and its search space, and how to train its few steps."""
        arm, whole = self.mini.arm(name), self.full.arm(name)
        point = _point(self.mini, arm) if point is None else point
        config = self.mini.trial_config(arm, point, SEED)
        changes = {
            **_as_synthetic(config, self.n_train),
            "batch_size": _shrunk(config.batch_size, self.shrink),
            "validation_fraction": 0.0,
        }
        config = type(config).from_dict({**config.to_dict(), **changes})
        run = self.full.trial_config(whole, point, SEED)
        return {
            "name": name,
            "config": config,
            "step_sizes": _step_sizes(run),
            "batches": _batches(run),
            "space": _space(whole),
        }

    def shapes(self, described: dict[str, Any]) -> dict[str, tuple[int, ...]]:
        """The arm's parameter shapes (its model built once, when first asked for)."""
        if "shapes" not in described:
            described["shapes"] = _shapes(described["config"])
        return described["shapes"]

    def params(self, described: dict[str, Any]) -> dict[str, torch.Tensor]:
        """The arm's parameters after its few steps (trained once, when first asked for)."""
        if "params" not in described:
            described["params"] = _trained(described["config"])
            self.trained.append(described["name"])
        return described["params"]

    def all(self) -> dict[str, dict[str, Any]]:
        """Every arm described, by name (untrained)."""
        return {arm.name: self.describe(arm.name) for arm in self.full.arms}

    def same_update_pairs(self, described: Mapping[str, dict[str, Any]]) -> list[str]:
        """Every pair of arms that nothing tells apart, named. Arms are trained only for the pairs
        whose architectures, and step sizes, batch sizes and search spaces over the full run, agree
        (the rest differ already)."""
        names = list(described)
        same = []
        for i, a in enumerate(names):
            for b in names[i + 1 :]:
                da, db = described[a], described[b]
                if any(da[k] != db[k] for k in ("step_sizes", "batches", "space")):
                    continue
                if self.shapes(da) != self.shapes(db):
                    continue
                if _params_equal(self.params(da), self.params(db)):
                    same.append(f"arms '{a}' and '{b}' train identically (same parameters after the steps)")
        return same


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty data root: every dataset with files becomes a synthetic stand-in."""
    return tmp_path_factory.mktemp("no-data")


@pytest.mark.slow
@pytest.mark.parametrize("path", SPECS, ids=[p.stem for p in SPECS])
def test_every_pair_of_arms_trains_differently(path: Path, data_root: Path) -> None:
    fp = Fingerprinter(path, data_root)
    described = fp.all()
    assert list(described) == [a.name for a in load_spec(path).arms]
    assert fp.same_update_pairs(described) == [], path.name


def test_two_arms_made_identical_on_purpose_are_found(data_root: Path) -> None:
    """The procedure can fail: an arm described and trained a second time, under another name, is the
    same update; with another step size, it is not."""
    fp = Fingerprinter(REPO / "experiments" / "quickstart.yaml", data_root)
    described = fp.all()
    assert fp.same_update_pairs(described) == []
    name = next(a.name for a in fp.full.arms if a.is_searched and not a.needs_lipschitz)
    twin = {**fp.describe(name), "name": "twin"}
    assert fp.same_update_pairs({**described, "twin": twin}) == [
        f"arms '{name}' and 'twin' train identically (same parameters after the steps)"
    ]
    assert fp.trained == [name, "twin"]  # both trained: nothing else told them apart
    point = _point(fp.mini, fp.mini.arm(name))
    nudged = fp.describe(name, {**point, "lr": point["lr"] * 1.5})
    assert nudged["space"] == twin["space"]
    assert not _params_equal(fp.params(nudged), fp.params(twin))
