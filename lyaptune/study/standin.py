"""Stand-ins that let any study spec run in miniature (``lyaptune run SPEC --smoke``) on a bare machine.

A spec in ``experiments/`` names the papers' datasets and models. A smoke run (CI, a laptop, a quick
check before a cluster run) usually has neither the dataset files nor a GPU, so
:func:`smoke_stand_ins` turns the miniature of :meth:`StudySpec.smoke` into one that runs there, and
says what it changed, one line per change:

- **data** (:func:`swap_missing_datasets`): every dataset whose files are absent under its data root
  becomes ``synthetic`` data of the same class count and input shape, images larger than
  :data:`STAND_IN_MAX_SIDE` pixels shrunk to it (ImageNet's 224 px become 64 px, 12x fewer pixels:
  the smoke run proves the code path; the six trainings of ``001_imagenet_resnet50 --smoke`` took 469 s
  at 224 px and 71 s at 64 px, measured back to back on 2 shared cores), with ``n_train`` /
  ``n_test`` small enough for seconds per epoch; a missing poison source becomes ``digits`` (bundled,
  offline), since a poison source must be an image dataset and synthetic data is not one;
- **CPU** (:func:`fit_to_cpu`, only where no CUDA device is visible): GPU reservations are dropped (a
  trial asking Ray for a GPU would wait forever on a CPU-only Ray), ``device: cuda`` becomes ``cpu``,
  the models too heavy for a 2-core CPU shrink to a small member of their family (ResNet-50 and
  ResNet-18 -> timm's ResNet-10-T, VGG-16 -> VGG-9 and every VGG at 1/:data:`CPU_VGG_DIVISOR` of its
  widths, ViT-B/16 and ViT-S/16 -> ViT-Tiny with patch 16 at
  the same image size, so the model still fits the data's shape; fully connected layers at most
  :data:`CPU_FC_WIDTH` wide), and K_hat estimates are cut to :data:`CPU_LIPSCHITZ_ITERS` power
  iterations and one batch per weight sample. Measured on 2 cores: a 2-epoch run on 64 images takes
  about 5 s with ResNet-18 and 0.4 s with ResNet-10-T (32 px); the K_hat estimate of the 5 x 3,000 MLP (2
  samples x 5 batches, 20 power iterations at most) 2.5 to 5 minutes. The stand-ins were then halved
  (32 training images, 2 power iterations) to keep the smoke runs of every spec in CI's budget: the
  6-arm ``000_cifar10_vgg16 --smoke`` (18 runs of VGG-9) went from 85 s to 28 s and
  ``003_increasing_batch --smoke`` (15 derived-step runs) from 59 s to 41 s (each the whole CLI
  command, Ray's start included, on 2 shared cores). VGG at 1/8 of its widths then took
  ``003_vgg9_cifar10_schedulers --smoke`` from 33 s to 14 s and ``003_mini_cifar10_fullbatch --smoke``
  from 37 s to 15 s (quiet 2 cores).

Nothing here changes a full (non-smoke) run.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from lyaptune.data import default_data_root, get_dataset_info
from lyaptune.study.spec import ArmSpec, StudySpec, TaskSpec

__all__ = [
    "CPU_FC_WIDTH",
    "CPU_LIPSCHITZ_ITERS",
    "CPU_VGG_DIVISOR",
    "SMALL_RESNET",
    "STAND_IN_MAX_SIDE",
    "STAND_IN_N_TEST",
    "STAND_IN_N_TRAIN",
    "dataset_available",
    "fit_to_cpu",
    "missing_dataset_files",
    "smoke_stand_ins",
    "swap_missing_datasets",
]

STAND_IN_N_TRAIN = 32
"""Training examples of a synthetic stand-in (before the validation carve-out)."""

STAND_IN_N_TEST = 16
"""Test examples of a synthetic stand-in."""

STAND_IN_MAX_SIDE = 64
#: VGG's widths on a CPU smoke run are divided by this (VGG-9's 64 ... 512 channels become 8 ... 64).
CPU_VGG_DIVISOR = 8
"""Largest image side of a synthetic stand-in: larger images (ImageNet's 224 px) shrink to it, in ratio."""

POISON_STAND_IN = "digits"
"""Poison source used where the spec's source is absent: bundled with scikit-learn, an image dataset."""

SMALL_RESNET = "timm:resnet10t"
"""The ResNet a CPU smoke run trains instead of ResNet-18 / ResNet-50 (timm's ResNet-10-T, 5M parameters)."""

CPU_LIPSCHITZ_ITERS = 2
"""Most Hessian power iterations per weight sample in a CPU smoke run (the default is 100)."""

CPU_FC_WIDTH = 1000
"""Widest fully connected layer of a CPU smoke run (papers/003's 5 x 3,000 net becomes 5 x 1,000)."""

#: dataset_args keys that ``load_dataset`` takes for every dataset (the rest are dataset-specific).
_GENERIC_DATASET_ARGS = ("label_noise", "poison", "poison_fraction", "normalize")
_TASK_DATA_FIELDS = ("dataset", "dataset_args", "data_root", "download")
_TASK_MODEL_FIELDS = ("model", "model_args")


def _root(data_root: str | Path | None, default_root: str | Path | None) -> Path:
    if data_root is not None:
        return Path(data_root).expanduser().absolute()
    if default_root is not None:
        return Path(default_root).expanduser().absolute()
    return default_data_root()


def missing_dataset_files(name: str, data_root: str | Path | None = None) -> list[str]:
    """The files of dataset ``name`` that are absent under ``data_root`` (relative paths).

    A file counts as present when it exists, or for the MNIST family's ``<Dataset>/raw/<file>`` when
    its downloaded ``.gz`` archive does (the loader unpacks it). Bundled and generated datasets
    (``digits``, ``synthetic``) need no files.

    Args:
      name: a registered dataset name.
      data_root: the directory the dataset is read from; default :func:`lyaptune.data.default_data_root`.

    Returns:
      The missing entries of ``get_dataset_info(name).files``, in their order.
    """
    root = _root(data_root, None)
    missing = []
    for rel in get_dataset_info(name).files:
        path = root / rel
        packed = path.parent.name == "raw" and path.with_name(path.name + ".gz").exists()
        if not path.exists() and not packed:
            missing.append(rel)
    return missing


def dataset_available(name: str, data_root: str | Path | None = None) -> bool:
    """Whether every file dataset ``name`` needs is under ``data_root`` (:func:`missing_dataset_files`)."""
    return not missing_dataset_files(name, data_root)


def _input_shape(name: str, dataset_args: Mapping[str, Any]) -> tuple[int, ...]:
    """The input shape ``name`` loads with ``dataset_args`` (``image_size`` resizes GTSRB / TinyImageNet)."""
    info = get_dataset_info(name)
    shape = tuple(info.input_shape)
    if "image_size" in info.options:
        size = int(dataset_args.get("image_size", info.options["image_size"]))
        shape = (shape[0], size, size)
    return shape


def _fmt_shape(shape: tuple[int, ...]) -> str:
    return "(" + ", ".join(str(s) for s in shape) + ")"


def _shrunk(shape: tuple[int, ...], max_side: int | None) -> tuple[int, ...]:
    """``(C, H, W)`` scaled so the longer side is at most ``max_side`` (other shapes unchanged)."""
    if max_side is None or len(shape) != 3 or max(shape[1:]) <= max_side:
        return shape
    scale = max_side / max(shape[1:])
    return (shape[0], *(max(1, round(side * scale)) for side in shape[1:]))


def _swap_task_data(
    task: TaskSpec,
    default_root: str | Path | None,
    n_train: int,
    n_test: int,
    max_side: int | None = None,
) -> tuple[dict[str, Any], list[str]]:
    """The ``dataset`` / ``dataset_args`` changes that make ``task`` loadable here, and their messages."""
    root = _root(task.data_root, default_root)
    args = dict(task.dataset_args)
    messages: list[str] = []
    changes: dict[str, Any] = {}
    name = task.dataset
    info = get_dataset_info(name)
    if info.files and not task.download and not dataset_available(name, root):
        full = _input_shape(name, args)
        shape = _shrunk(full, max_side)
        kept = {k: v for k, v in args.items() if k in _GENERIC_DATASET_ARGS}
        args = {
            **kept,
            "n_train": n_train,
            "n_test": n_test,
            "input_shape": list(shape),
            "num_classes": info.num_classes,
            "stand_in_for": name,
        }
        changes["dataset"] = "synthetic"
        messages.append(
            f"stand-in: {name} files not found under {root}; using synthetic {_fmt_shape(shape)}"
            + (f" (its {_fmt_shape(full)} images shrunk)" if shape != full else "")
            + f", {info.num_classes} classes ({n_train} train / {n_test} test examples)"
        )
    poison = args.get("poison")
    if poison is not None and get_dataset_info(poison).files and not task.download:
        if not dataset_available(poison, root):
            args["poison"] = POISON_STAND_IN
            messages.append(
                f"stand-in: poison source {poison} files not found under {root}; using {POISON_STAND_IN} "
                "(bundled images, resized and channel-matched like any poison source)"
            )
    if messages:
        changes["dataset_args"] = args
    return changes, messages


def _overrides(arm: ArmSpec, fields: tuple[str, ...]) -> bool:
    return any(f in arm.task for f in fields)


def _apply(
    spec: StudySpec,
    swap: Callable[[TaskSpec], tuple[dict[str, Any], list[str]]],
    fields: tuple[str, ...],
) -> tuple[StudySpec, list[str]]:
    """Apply ``swap(task) -> (changes, messages)`` to the study's task and to arms overriding ``fields``.

    An arm's ``task`` replaces whole fields, so an arm that overrides any of ``fields`` gets the
    changes computed on its own effective task written into its override; the others inherit the
    study's.
    """
    messages: dict[str, None] = {}
    base_changes, base_msgs = swap(spec.task)
    messages.update(dict.fromkeys(base_msgs))
    arms = []
    for arm in spec.arms:
        if arm.task and _overrides(arm, fields):
            changes, msgs = swap(arm.task_for(spec.task))
            messages.update(dict.fromkeys(msgs))
            if changes:
                arm = dataclasses.replace(arm, task={**arm.task, **changes})
        arms.append(arm)
    task = spec.task.replace(**base_changes) if base_changes else spec.task
    if not base_changes and all(a is b for a, b in zip(arms, spec.arms)):
        return spec, list(messages)
    return dataclasses.replace(spec, task=task, arms=tuple(arms)), list(messages)


def swap_missing_datasets(
    spec: StudySpec,
    *,
    default_root: str | Path | None = None,
    n_train: int = STAND_IN_N_TRAIN,
    n_test: int = STAND_IN_N_TEST,
    max_side: int | None = STAND_IN_MAX_SIDE,
) -> tuple[StudySpec, list[str]]:
    """Replace every dataset of ``spec`` whose files are absent by ``synthetic`` data of its shape.

    Looks at the study's task, every arm's task override and every poison source. A dataset is absent
    when any of ``get_dataset_info(name).files`` is missing under the task's ``data_root`` (or
    ``default_root``, else :func:`lyaptune.data.default_data_root`) and the task does not ask to
    download it. It becomes ``synthetic`` with the same ``input_shape`` (``image_size`` included) and
    ``num_classes``, ``n_train`` / ``n_test`` examples and ``stand_in_for`` set (recorded with the
    results), except that images with a side over ``max_side`` shrink in ratio to at most ``max_side``
    (224 x 224 -> 64 x 64; not where a model pins its input with ``img_size``); label noise,
    poisoning and normalisation options are kept, dataset-specific options dropped. An absent poison
    source becomes ``digits``. ``digits`` and ``synthetic`` never swap.

    Args:
      spec: the study.
      default_root: data root of tasks that leave ``data_root`` unset.
      n_train, n_test: sizes of the synthetic stand-ins.
      max_side: largest image side of a stand-in (``None``: the dataset's own shape).

    Returns:
      ``(spec, messages)``: the spec with the stand-ins (``spec`` itself when nothing is missing) and
      one message per swap, e.g. ``stand-in: cifar10 files not found under /x/data; using synthetic
      (3, 32, 32), 10 classes (64 train / 32 test examples)``.
    """
    tasks = [spec.task, *(arm.task_for(spec.task) for arm in spec.arms if arm.task)]
    if any(t.model_args.get("img_size") is not None for t in tasks):
        max_side = None  # a model built for a fixed input size needs the data at that size
    return _apply(
        spec,
        lambda task: _swap_task_data(task, default_root, n_train, n_test, max_side),
        _TASK_DATA_FIELDS,
    )


def _smaller_model(
    model: str, args: Mapping[str, Any], fc_scale: float = 1.0
) -> tuple[str, dict[str, Any]] | None:
    """The CPU-sized member of ``model``'s family with compatible arguments, or None to keep it.

    ``fc_scale`` (<= 1) multiplies fully connected widths: :func:`fit_to_cpu` sets it so the spec's
    widest FC net becomes :data:`CPU_FC_WIDTH` and narrower ones keep their ratio (arms that differ
    only in width stay different updates).
    """
    args = dict(args)
    if model in ("resnet50", "resnet18"):
        return SMALL_RESNET, {}
    if model == "vgg16":
        return "vgg9", {"batch_norm": args.get("batch_norm", True), "width_divisor": CPU_VGG_DIVISOR}
    if model == "vgg9" and args.get("width_divisor", 1) < CPU_VGG_DIVISOR:
        return "vgg9", {**args, "width_divisor": CPU_VGG_DIVISOR}
    if model in ("vit-b16", "vit-s16"):
        return "vit", {"variant": "tiny", "patch_size": 16, "img_size": args.get("img_size")}
    if model == "vit" and args.get("variant", "small") != "tiny":
        return "vit", {**args, "variant": "tiny"}
    if model == "fc" and fc_scale < 1.0:
        return "fc", {**args, "width": max(1, round(args.get("width", 1000) * fc_scale))}
    return None


def _fc_scale(spec: StudySpec) -> float:
    """``CPU_FC_WIDTH / w`` for the widest FC net ``w`` of the study's task and arm overrides, at most 1."""
    tasks = [spec.task, *(arm.task_for(spec.task) for arm in spec.arms if arm.task)]
    widths = [int(t.model_args.get("width", 1000)) for t in tasks if t.model == "fc"]
    return min(1.0, CPU_FC_WIDTH / max(widths)) if widths else 1.0


def _swap_task_model(task: TaskSpec, fc_scale: float = 1.0) -> tuple[dict[str, Any], list[str]]:
    smaller = _smaller_model(task.model, task.model_args, fc_scale)
    if smaller is None:
        return {}, []
    model, args = smaller
    shown = ", ".join(f"{k}: {v}" for k, v in args.items() if v is not None)
    return {"model": model, "model_args": args}, [
        f"stand-in: model {task.model} -> {model}"
        + (f" {{{shown}}}" if shown else "")
        + " (smaller member of the family for a CPU smoke run)"
    ]


def fit_to_cpu(spec: StudySpec) -> tuple[StudySpec, list[str]]:
    """Make ``spec`` runnable on a CPU-only machine: no GPU reservations, CPU-sized models.

    - ``resources.gpu`` -> 0 and ``resources.cpu`` -> at most 1 (a trial that reserves a GPU never
      starts on a Ray without one; one CPU each lets two trials share 2 cores);
    - ``device: cuda[:N]`` -> ``cpu`` (``auto`` already picks the CPU);
    - ResNet-50 / ResNet-18 -> :data:`SMALL_RESNET`, VGG-16 -> VGG-9, every VGG at
      1/:data:`CPU_VGG_DIVISOR` of its widths, ViT-B/16 / ViT-S/16 / ViT-S/B ->
      ViT-Tiny (patch 16 for the /16 models, same image size), in the study's task and in arm
      overrides;
    - fully connected layers narrowed so the widest is :data:`CPU_FC_WIDTH`, the others in proportion
      (1 x 500 ... 1 x 3,000 become 1 x 167 ... 1 x 1,000: arms that differ in width stay distinct);
    - K_hat estimates of derived-step arms cut to :data:`CPU_LIPSCHITZ_ITERS` power iterations and one
      batch per weight sample.

    Returns:
      ``(spec, messages)``, one message per kind of change.
    """
    messages: list[str] = []
    res = spec.resources
    if res.gpu > 0 or res.cpu > 1:
        new = dataclasses.replace(res, gpu=0, cpu=min(res.cpu, 1))
        messages.append(
            f"stand-in: resources {{cpu: {res.cpu:g}, gpu: {res.gpu:g}}} -> {{cpu: {new.cpu:g}, gpu: 0}} "
            "(no CUDA device here)"
        )
        spec = dataclasses.replace(spec, resources=new)
    if spec.task.device.startswith("cuda"):
        messages.append(f"stand-in: device {spec.task.device} -> cpu (no CUDA device here)")
        spec = dataclasses.replace(spec, task=spec.task.replace(device="cpu"))
    scale = _fc_scale(spec)
    spec, model_msgs = _apply(spec, lambda task: _swap_task_model(task, scale), _TASK_MODEL_FIELDS)
    messages += model_msgs
    arms, capped = [], False
    for arm in spec.arms:
        if arm.needs_lipschitz:
            lip = dict(arm.lipschitz)
            cut = {"iters": min(lip.get("iters", 100), CPU_LIPSCHITZ_ITERS), "num_batches": 1}
            if any(lip.get(k, 1 if k == "num_batches" else 100) != v for k, v in cut.items()):
                arm = dataclasses.replace(arm, lipschitz={**lip, **cut})
                capped = True
        arms.append(arm)
    if capped:
        messages.append(
            f"stand-in: K_hat estimates cut to {CPU_LIPSCHITZ_ITERS} power iterations and 1 batch per weight "
            "sample (derived-step arms, CPU smoke run)"
        )
        spec = dataclasses.replace(spec, arms=tuple(arms))
    return spec, messages


def smoke_stand_ins(
    spec: StudySpec, *, cpu: bool | None = None, default_root: str | Path | None = None
) -> tuple[StudySpec, list[str]]:
    """The miniature of ``spec`` that runs here: :meth:`StudySpec.smoke`, then the stand-ins.

    Args:
      spec: the full study.
      cpu: fit it to a CPU-only machine (:func:`fit_to_cpu`); default: when no CUDA device is visible.
      default_root: data root of tasks that leave ``data_root`` unset (default
        :func:`lyaptune.data.default_data_root`).

    Returns:
      ``(spec, messages)``: the runnable miniature and one line per stand-in.
    """
    spec, messages = swap_missing_datasets(spec.smoke(), default_root=default_root)
    if cpu is None:
        import torch

        cpu = not torch.cuda.is_available()
    if cpu:
        spec, more = fit_to_cpu(spec)
        messages += more
    return spec, messages
