"""Every study spec in experiments/ validates, and runs in miniature (``--smoke``) through the real runner.

The smoke runs share ONE local Ray (``num_cpus=2``) and call :func:`lyaptune.study.run_study` in-process
on ``smoke_stand_ins(spec)``: 2 trials per searched arm, 2 epochs, 1 final seed, every dataset swapped
for synthetic data of its shape (the data root is an empty directory, so the swap happens whatever is
installed), CPU resources and CPU-sized models.
"""

from __future__ import annotations

import math
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lyaptune.data import get_dataset_info
from lyaptune.store import RunStore
from lyaptune.study import load_spec, run_study
from lyaptune.study.check import check_study
from lyaptune.study.spec import StudySpec, resolve_spec_file
from lyaptune.study.standin import (
    CPU_LIPSCHITZ_ITERS,
    CPU_VGG_DIVISOR,
    STAND_IN_MAX_SIDE,
    STAND_IN_N_TEST,
    STAND_IN_N_TRAIN,
    dataset_available,
    fit_to_cpu,
    missing_dataset_files,
    smoke_stand_ins,
    swap_missing_datasets,
)

REPO = Path(__file__).resolve().parents[1]
EXPERIMENTS = REPO / "experiments"
SPECS = sorted(EXPERIMENTS.glob("*.yaml"))

# Smoke runs of these take 10-60 s each on 2 cores even with CPU-sized models (VGG-9/16, ViT-Tiny and
# ResNet-10-T on 64 synthetic images, up to 36 runs per spec), or repeat a fast spec at another depth;
# the fast set keeps at least one spec per paper (000_cifar10_resnet50, 001_cifar10_resnet18,
# 002_expdecay_mnist, the 003 FC / LeNet studies, every sensitivity study) and stays near 3 minutes.
SLOW = {
    "000_adaptive_scaling_ablation",
    "000_beta2_ablation",
    "000_bias_correction_ablation",
    "000_cifar100_resnet50",
    "000_cifar100_vgg16",
    "000_cifar10_vgg16",
    "000_grad_noise",
    "000_gtsrb_vitb16",
    "000_label_noise",
    "000_poison_cifar10_mnist",
    "000_tinyimagenet_vitb16",
    "003_increasing_batch_growing",
    "001_direction_norm_ablation",
    "001_imagenet_resnet50",
    "001_imagenet_vitb16",
    "001_rlo_lifted_eta_sweep",
    "001_vits16_rlo_lambda_vs_lifted",
    "003_fc_fullbatch_constant_steps_d1",
    "003_fc_fullbatch_constant_steps_d5",
    "003_fc_fullbatch_schedulers_d1",
    "003_fc_fullbatch_schedulers_d5",
    "003_increasing_batch",
    "003_mini_cifar10_fullbatch",
    "003_width_variations",
    "003_vgg9_cifar10_constant_steps",
    "003_vgg9_cifar10_schedulers",
}


def _raw(path: Path) -> dict:
    """The spec file's mapping with its ``extends:`` chain merged in (what the runs are counted from)."""
    return resolve_spec_file(path)


def _smoke_search_runs(raw: dict) -> int:
    """Search runs of the smoke miniature, counted from the YAML by the smoke rules.

    A searched arm runs 2 trials; a grid arm its first 2 grid points (1 if every list has one value);
    an arm with neither runs none.
    """
    search = 0
    for arm in raw["arms"]:
        if "grid" in arm:
            search += 2 if any(len(v) >= 2 for v in arm["grid"].values()) else 1
        elif arm.get("space"):
            search += 2
    return search


def _full_runs(raw: dict) -> int:
    """Runs of the full study from the YAML: grid size, or budget x repeats, per arm x seeds + finals."""
    s = raw["search"]
    n = 0
    for arm in raw["arms"]:
        if "grid" in arm:
            n += math.prod(len(v) for v in arm["grid"].values()) * len(s["seeds"])
        elif arm.get("space"):
            n += s["trials_per_arm"] * s.get("repeats", 1) * len(s["seeds"])
    return n + len(s["final_seeds"]) * len(raw["arms"])


def _datasets(raw: dict) -> tuple[set[str], set[str]]:
    """The datasets a spec reads: (task datasets incl. arm overrides, poison sources)."""
    tasks = [raw["task"]] + [{**raw["task"], **a.get("task", {})} for a in raw["arms"]]
    main = {t["dataset"] for t in tasks}
    poison = {t.get("dataset_args", {}).get("poison") for t in tasks} - {None}
    return main, poison


# ------------------------------------------------------------------------------------------ specs


def test_every_spec_validates_with_a_header_that_states_its_run_count():
    assert len(SPECS) >= 30
    names = set()
    for path in SPECS:
        spec = check_study(load_spec(path))
        assert spec.name == path.stem, f"{path.name}: name {spec.name!r} differs from the file name"
        names.add(spec.name)
        text = path.read_text()
        if path.stem == "quickstart":
            continue
        header = "".join(line for line in text.splitlines(keepends=True) if line.startswith("#"))
        assert re.search(r"papers/00[0-3]|Sensitivity", header), f"{path.name}: header names no paper"
        assert re.search(r"claim|expect|question", header, re.I), f"{path.name}: states no expectation"
        found = re.search(r"Runs: (\d+)", header)
        assert found, f"{path.name}: header states no run count"
        assert int(found.group(1)) == _full_runs(_raw(path)), f"{path.name}: run count in header is stale"
        assert spec.task.data_root is None, f"{path.name}: data_root must be left to the user"
        assert spec.objective.metric.startswith("val_"), f"{path.name}: tune on validation"
    assert len(names) == len(SPECS)


def _blocks(lines: list[str], size: int) -> set[tuple[str, ...]]:
    return {tuple(lines[i : i + size]) for i in range(len(lines) - size + 1)}


def test_no_block_of_20_identical_lines_in_two_files():
    """Shared definitions live in one file (``extends:``), not in copies (a fix would mean N edits)."""
    files = sorted(EXPERIMENTS.rglob("*.yaml"))
    assert (EXPERIMENTS / "_base" / "003_schedulers.yaml") in files
    blocks = {f: _blocks([line.rstrip() for line in f.read_text().splitlines()], 20) for f in files}
    for i, a in enumerate(files):
        for b in files[i + 1 :]:
            shared = blocks[a] & blocks[b]
            assert not shared, (
                f"{a.name} and {b.name} share {len(shared)} blocks of 20 lines, e.g. {next(iter(shared))}"
            )


def test_the_003_scheduler_studies_share_one_baseline_definition():
    base = resolve_spec_file(EXPERIMENTS / "_base" / "003_schedulers.yaml")
    extending = [p for p in SPECS if yaml.safe_load(p.read_text()).get("extends") == "_base/003_schedulers"]
    assert len(extending) == 8
    for path in extending:
        spec = load_spec(path)
        assert [a.name for a in spec.arms][: len(base["arms"])] == [a["name"] for a in base["arms"]], (
            path.name
        )
        for arm in base["arms"][1:]:  # the baselines, exactly as the base defines them
            assert (
                spec.arm(arm["name"]).to_dict()
                == StudySpec.from_dict(
                    {"name": "x", "task": {**base["task"], **_raw(path)["task"]}, "arms": [arm]}
                )
                .arms[0]
                .to_dict()
            )


def test_fast_smoke_set_keeps_a_spec_per_paper():
    assert SLOW <= {p.stem for p in SPECS}
    for prefix in ("000_", "001_", "002_", "003_", "sensitivity_"):
        assert any(p.stem.startswith(prefix) and p.stem not in SLOW for p in SPECS), prefix


def test_paper_settings_of_003():
    for path in EXPERIMENTS.glob("003_*.yaml"):
        raw = _raw(path)
        assert raw["task"]["epochs"] == 100, path.name
        assert raw["task"]["validation_fraction"] == 0.1, path.name
        for arm in raw["arms"]:
            task = {**raw["task"], **arm.get("task", {})}
            assert task["epochs"] == 100
            if arm["name"] == "adam-constant":
                assert arm["grid"] == {"lr": [1.0e-2, 1.0e-3, 1.0e-4, 1.0e-5]}, path.name
            if arm["name"].startswith("adam-") and not arm["name"].endswith("-tuned") and "grid" not in arm:
                assert arm["optimizer_args"] == {"lr": 0.01}, f"{path.name}: {arm['name']} not at lr 0.01"
    schedulers = _raw(EXPERIMENTS / "003_fc_fullbatch_schedulers_d3.yaml")
    fixed = {a["schedule"] for a in schedulers["arms"] if "optimizer_args" in a}
    tuned = {a["schedule"] for a in schedulers["arms"] if a["name"].endswith("-tuned")}
    expected = {"step", "linear", "exponential", "one-cycle", "sqrt", "inverse-time", "exp-decay", "cosine"}
    assert fixed == tuned == expected


@pytest.mark.integration
def test_cli_smoke_dry_run_prints_the_stand_ins(tmp_path):
    env = {"LYAPTUNE_DATA_ROOT": str(tmp_path), "PATH": "/usr/bin:/bin", "CUDA_VISIBLE_DEVICES": ""}
    spec = EXPERIMENTS / "003_vgg9_cifar10_schedulers.yaml"
    out = subprocess.run(
        [sys.executable, "-m", "lyaptune.cli", "run", str(spec), "--smoke", "--dry-run"],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert out.returncode == 0, out.stderr
    assert f"stand-in: cifar10 files not found under {tmp_path}; using synthetic (3, 32, 32), 10 classes" in (
        out.stdout
    )
    assert "stand-in: resources {cpu: 2, gpu: 0.5} -> {cpu: 1, gpu: 0}" in out.stdout
    assert "study 003_vgg9_cifar10_schedulers: dataset=synthetic model=vgg9" in out.stdout
    assert "epochs=2" in out.stdout
    assert out.stdout.count("; budget 2;") == 8  # the eight tuned schedules
    assert out.stdout.count("; budget 0;") == 9  # derived + the eight at the authors' values


# --------------------------------------------------------------------------------------- stand-ins


def _spec(task: dict, arms: list[dict] | None = None) -> StudySpec:
    base = {"epochs": 3, "batch_size": "full", "validation_fraction": 0.1, "model": "fc"}
    return StudySpec.from_dict(
        {
            "name": "standin",
            "task": {**base, **task},
            "resources": {"cpu": 2, "gpu": 0.25},
            "arms": arms or [{"name": "adam", "optimizer": "adam", "optimizer_args": {"lr": 1e-3}}],
        }
    )


def test_missing_cifar10_becomes_synthetic_of_its_shape(tmp_path):
    spec = _spec({"dataset": "cifar10", "model": "lenet"})
    assert missing_dataset_files("cifar10", tmp_path) == list(get_dataset_info("cifar10").files)
    swapped, messages = swap_missing_datasets(spec, default_root=tmp_path)
    assert messages == [
        f"stand-in: cifar10 files not found under {tmp_path}; using synthetic (3, 32, 32), 10 classes "
        f"({STAND_IN_N_TRAIN} train / {STAND_IN_N_TEST} test examples)"
    ]
    task = swapped.task
    assert task.dataset == "synthetic"
    assert dict(task.dataset_args) == {
        "n_train": STAND_IN_N_TRAIN,
        "n_test": STAND_IN_N_TEST,
        "input_shape": (3, 32, 32),
        "num_classes": 10,
        "stand_in_for": "cifar10",
    }
    # everything else as in the spec
    assert (task.model, task.epochs, task.validation_fraction) == ("lenet", 3, 0.1)
    assert swapped.resources == spec.resources

    from lyaptune.data import load_dataset

    data = load_dataset(task.dataset, validation_fraction=0.1, **dict(task.dataset_args))
    assert data.input_shape == (3, 32, 32) and data.num_classes == 10
    assert (len(data.train), len(data.val), len(data.test)) == (29, 3, 16)  # 32 images, 10% (3) held out
    assert data.info["stand_in_for"] == "cifar10"


def test_image_size_label_noise_and_poison_survive_the_swap(tmp_path):
    spec = _spec(
        {"dataset": "gtsrb", "dataset_args": {"image_size": 48, "label_noise": 0.2}, "model": "lenet"},
        arms=[
            {"name": "a", "optimizer": "adam", "optimizer_args": {"lr": 1e-3}},
            {
                "name": "poisoned",
                "optimizer": "adam",
                "optimizer_args": {"lr": 1e-3},
                "task": {"dataset": "cifar100", "dataset_args": {"poison": "mnist", "poison_fraction": 0.3}},
            },
        ],
    )
    swapped, messages = swap_missing_datasets(spec, default_root=tmp_path)
    assert dict(swapped.task.dataset_args) == {
        "label_noise": 0.2,
        "n_train": STAND_IN_N_TRAIN,
        "n_test": STAND_IN_N_TEST,
        "input_shape": (3, 48, 48),
        "num_classes": 43,
        "stand_in_for": "gtsrb",
    }
    arm = swapped.arm("poisoned")
    assert arm.task["dataset"] == "synthetic"
    assert dict(arm.task["dataset_args"]) == {
        "poison": "digits",
        "poison_fraction": 0.3,
        "n_train": STAND_IN_N_TRAIN,
        "n_test": STAND_IN_N_TEST,
        "input_shape": (3, 32, 32),
        "num_classes": 100,
        "stand_in_for": "cifar100",
    }
    assert swapped.arm("a").task == {}  # inherits the study's stand-in
    assert any(
        m.startswith("stand-in: gtsrb files not found") and "(3, 48, 48), 43 classes" in m for m in messages
    )
    assert any(m.startswith("stand-in: cifar100 files not found") and "100 classes" in m for m in messages)
    assert any(m.startswith("stand-in: poison source mnist files not found") for m in messages)
    assert len(messages) == 3


def test_imagenet_stand_in_is_small_images_of_its_class_count(tmp_path):
    """ImageNet's 224 px become STAND_IN_MAX_SIDE = 64 px (what the smoke run costs is pixels), its
    1,000 classes stay; where a model pins its input size (``img_size``) the data keeps its shape."""
    spec = _spec({"dataset": "imagenet", "model": "vit-b16"})
    swapped, messages = swap_missing_datasets(spec, default_root=tmp_path)
    assert STAND_IN_MAX_SIDE == 64
    assert dict(swapped.task.dataset_args) == {
        "n_train": STAND_IN_N_TRAIN,
        "n_test": STAND_IN_N_TEST,
        "input_shape": (3, 64, 64),
        "num_classes": 1000,
        "stand_in_for": "imagenet",
    }
    assert messages == [
        f"stand-in: imagenet files not found under {tmp_path}; using synthetic (3, 64, 64) (its "
        "(3, 224, 224) images shrunk), 1000 classes "
        f"({STAND_IN_N_TRAIN} train / {STAND_IN_N_TEST} test examples)"
    ]
    from lyaptune.data import load_dataset
    from lyaptune.models import create_model

    fitted, _ = fit_to_cpu(swapped)  # ViT-B/16 -> ViT-Tiny/16, which takes the data's 64 px
    data = load_dataset("synthetic", validation_fraction=0.1, **dict(fitted.task.dataset_args))
    model = create_model(
        fitted.task.model,
        input_shape=data.input_shape,
        num_classes=data.num_classes,
        **dict(fitted.task.model_args),
    )
    x = data.train.x[:2]
    assert x.shape == (2, 3, 64, 64) and model(x).shape == (2, 1000)
    pinned = _spec({"dataset": "imagenet", "model": "vit", "model_args": {"img_size": 224}})
    kept, _ = swap_missing_datasets(pinned, default_root=tmp_path)
    assert kept.task.dataset_args["input_shape"] == (3, 224, 224)
    # 32 px (CIFAR) and 64 px (TinyImageNet) are already small: unchanged
    for name, side in (("cifar10", 32), ("tinyimagenet", 64)):
        small, _ = swap_missing_datasets(_spec({"dataset": name}), default_root=tmp_path)
        assert small.task.dataset_args["input_shape"] == (3, side, side)


def test_digits_and_synthetic_never_swap(tmp_path):
    for task in (
        {"dataset": "digits"},
        {"dataset": "synthetic", "dataset_args": {"input_shape": [1, 4, 4], "num_classes": 3}},
    ):
        spec = _spec(task)
        swapped, messages = swap_missing_datasets(spec, default_root=tmp_path)
        assert swapped is spec and messages == []
    assert dataset_available("digits", tmp_path) and dataset_available("synthetic", tmp_path)


def test_mini_mnist_is_not_swapped_where_its_files_are(mnist_root):
    spec = _spec({"dataset": "mini-mnist", "data_root": str(mnist_root)})
    assert dataset_available("mini-mnist", mnist_root)
    swapped, messages = swap_missing_datasets(spec)
    assert swapped is spec and messages == []
    # the same spec with the files elsewhere: the task's data_root wins over default_root
    swapped, _ = swap_missing_datasets(spec, default_root="/nonexistent")
    assert swapped is spec
    unset = _spec({"dataset": "mini-mnist"})
    assert swap_missing_datasets(unset, default_root=mnist_root)[1] == []
    assert swap_missing_datasets(unset, default_root=mnist_root.parent / "no-such-dir")[0].task.dataset == (
        "synthetic"
    )


def test_fit_to_cpu_drops_gpus_and_shrinks_big_models():
    spec = _spec(
        {"dataset": "synthetic", "dataset_args": {"input_shape": [3, 32, 32]}, "model": "resnet50"},
        arms=[
            {"name": "a", "optimizer": "adam", "optimizer_args": {"lr": 1e-3}},
            {
                "name": "vit",
                "optimizer": "adam",
                "optimizer_args": {"lr": 1e-3},
                "task": {"model": "vit-b16"},
            },
            {
                "name": "derived",
                "optimizer": "adam",
                "schedule": "derived-constant",
                "lipschitz": {"samples": 3},
            },
        ],
    )
    fitted, messages = fit_to_cpu(spec)
    assert (fitted.resources.cpu, fitted.resources.gpu) == (1, 0)
    assert fitted.task.model == "timm:resnet10t" and dict(fitted.task.model_args) == {}
    vit = fitted.arm("vit").task_for(fitted.task)
    assert vit.model == "vit" and dict(vit.model_args) == {
        "variant": "tiny",
        "patch_size": 16,
        "img_size": None,
    }
    cut = {"samples": 3, "iters": CPU_LIPSCHITZ_ITERS, "num_batches": 1}
    assert dict(fitted.arm("derived").lipschitz) == cut
    assert "stand-in: resources {cpu: 2, gpu: 0.25} -> {cpu: 1, gpu: 0} (no CUDA device here)" in messages
    assert any(
        m.startswith(f"stand-in: K_hat estimates cut to {CPU_LIPSCHITZ_ITERS} power iterations and 1 batch")
        for m in messages
    )
    assert any(m.startswith("stand-in: model resnet50 -> timm:resnet10t") for m in messages)
    assert any(
        m.startswith("stand-in: model vit-b16 -> vit {variant: tiny, patch_size: 16}") for m in messages
    )
    small = _spec({"dataset": "digits"})
    small = StudySpec.from_dict({**small.to_dict(), "resources": {"cpu": 1, "gpu": 0}})
    assert fit_to_cpu(small) == (small, [])


def test_fit_to_cpu_narrows_every_vgg():
    spec = _spec(
        {"dataset": "synthetic", "dataset_args": {"input_shape": [3, 32, 32]}, "model": "vgg16"},
        arms=[
            {"name": "a", "optimizer": "adam", "optimizer_args": {"lr": 1e-3}},
            {
                "name": "ll",
                "optimizer": "adam",
                "optimizer_args": {"lr": 1e-3},
                "task": {"model": "vgg9", "model_args": {"layout": "loss-landscape"}},
            },
        ],
    )
    fitted, messages = fit_to_cpu(spec)
    assert fitted.task.model == "vgg9"
    assert dict(fitted.task.model_args) == {"batch_norm": True, "width_divisor": CPU_VGG_DIVISOR}
    ll = fitted.arm("ll").task_for(fitted.task)
    assert ll.model == "vgg9"
    assert dict(ll.model_args) == {"layout": "loss-landscape", "width_divisor": CPU_VGG_DIVISOR}
    assert any(
        m.startswith("stand-in: model vgg16 -> vgg9 {batch_norm: True, width_divisor: 8}") for m in messages
    )
    assert fit_to_cpu(fitted)[0] == fitted  # already narrowed: nothing left to change


def test_fit_to_cpu_scales_fc_widths_so_width_arms_stay_distinct():
    """Widest FC -> CPU_FC_WIDTH = 1000, others in ratio: 500/1000/2000/3000 -> 167/333/667/1000 (by hand)."""
    arms = [
        {
            "name": f"h{w}",
            "optimizer": "adam",
            "optimizer_args": {"lr": 1e-3},
            "task": {"model_args": {"width": w}},
        }
        for w in (500, 1000, 2000, 3000)
    ]
    spec = _spec({"dataset": "digits", "model": "fc", "model_args": {"depth": 1, "width": 1000}}, arms=arms)
    fitted, _ = fit_to_cpu(spec)
    widths = {a.name: a.task_for(fitted.task).model_args["width"] for a in fitted.arms}
    assert widths == {"h500": 167, "h1000": 333, "h2000": 667, "h3000": 1000}
    assert fitted.task.model_args["width"] == 333


# ----------------------------------------------------------------------------------- smoke runs


@pytest.fixture(scope="module")
def empty_data_root(tmp_path_factory):
    return tmp_path_factory.mktemp("no-data")


#: Smoke runs: the fast set in the integration tier, the rest in the slow tier (README "Development").
SMOKE_PARAMS = [
    pytest.param(p, id=p.stem, marks=[pytest.mark.slow if p.stem in SLOW else pytest.mark.integration])
    for p in SPECS
]

#: run directories of the smoke runs made in this session (spec stem -> run dir), reused by the reports
_SMOKE_RUNS: dict[str, Path] = {}


def _smoke_run(path: Path, data_root: Path, out: Path, log=None):
    """The ``--smoke`` miniature of ``path`` through the real runner: ``(spec, messages, store)``."""
    spec, messages = smoke_stand_ins(load_spec(path), cpu=True, default_root=data_root)
    store = run_study(spec, out=out, log=log or (lambda m: None))
    _SMOKE_RUNS[path.stem] = Path(store.path)
    return spec, messages, store


@pytest.mark.parametrize("path", SMOKE_PARAMS)
def test_spec_runs_in_miniature(path, local_ray, empty_data_root, tmp_path):
    raw = _raw(path)
    lines: list[str] = []
    spec, messages, store = _smoke_run(path, empty_data_root, tmp_path / "runs", lines.append)
    main, poison = _datasets(raw)
    for what, names in (("", main), ("poison source ", poison)):
        for name in names:
            if get_dataset_info(name).files:
                expected = f"stand-in: {what}{name} files not found under {empty_data_root}"
                assert any(m.startswith(expected) for m in messages), messages
    trials = store.trials()
    assert (trials["phase"] == "search").sum() == _smoke_search_runs(raw), lines
    # every arm runs once on the final seed, unless all its search trials diverged (nothing to re-run)
    search = trials[trials["phase"] == "search"]
    n_final = sum(
        1
        for arm in raw["arms"]
        if not (arm.get("space") or arm.get("grid"))
        or (search[search["arm"] == arm["name"]]["status"] == "completed").any()
    )
    assert (trials["phase"] == "final").sum() == n_final, lines
    assert trials["trial_id"].is_unique
    # final runs only on fresh seeds (METHODS.md section 8)
    assert not set(trials.loc[trials["phase"] == "final", "seed"]) & set(spec.search.seeds)
    bad = trials[~trials["status"].isin(["completed", "diverged"])]
    assert bad.empty, bad[["trial_id", "status"]].to_string() + "\n" + "\n".join(lines[-5:])
    epochs = store.epochs()
    assert not epochs.duplicated(["trial_id", "epoch"]).any()
    rows = epochs.groupby("trial_id").size().reindex(trials["trial_id"], fill_value=0)
    assert (rows.to_numpy() == trials["epochs_completed"].to_numpy()).all()
    assert (trials.loc[trials["status"] == "completed", "epochs_completed"] == 2).all()
    if any(get_dataset_info(d).files for d in main):
        assert "synthetic" in set(trials["dataset"])


#: Specs whose smoke report is drawn with its figures (one per paper, a constant-step and a scheduler
#: study of papers/003 for its Figures 2 and 1, a sensitivity study); the others' reports are written
#: with ``--no-figures`` (tables, claims, CSV, JSON), the figures being most of a report's time.
FIGURE_REPORTS = {
    "quickstart": (),
    "000_cifar10_resnet50": (),
    "001_cifar10_resnet18": (),
    "002_expdecay_mnist": (),
    "003_fc_fullbatch_constant_steps_d3": ("constant_steps",),
    "003_lenet_fullbatch_schedulers": ("gradnorm_vs_schedulers",),
    "sensitivity_lyam": (),
}


def test_figure_reports_are_specs_of_the_fast_set():
    assert set(FIGURE_REPORTS) <= {p.stem for p in SPECS} - SLOW


@pytest.mark.slow
@pytest.mark.parametrize("path", [pytest.param(p, id=p.stem) for p in SPECS])
def test_report_and_compare_work_on_the_smoke_run(
    path, local_ray, empty_data_root, tmp_path, monkeypatch, capsys
):
    """``lyaptune report`` and ``lyaptune compare`` on the ``--smoke`` run of every spec.

    The :data:`FIGURE_REPORTS` specs go through the console command in a subprocess, figures drawn;
    the rest through the same entry point (:func:`lyaptune.cli.main`) in this process with
    ``--no-figures``: a fresh interpreter importing torch, scipy and pandas costs more than such a
    report, twice per spec.
    """
    import json

    from lyaptune.cli import main

    run_dir = _SMOKE_RUNS.get(path.stem)
    if run_dir is None or not (run_dir / "spec.yaml").exists():  # run alone: make the smoke run here
        run_dir = Path(_smoke_run(path, empty_data_root, tmp_path / "runs")[2].path)
    env = {
        "LYAPTUNE_DATA_ROOT": str(empty_data_root),
        "PATH": "/usr/bin:/bin",
        "CUDA_VISIBLE_DEVICES": "",
        "MPLBACKEND": "Agg",
    }
    out = tmp_path / "report"
    figures = path.stem in FIGURE_REPORTS

    def lyaptune(*args: str) -> tuple[int, str, str]:
        if figures:
            r = subprocess.run(
                [sys.executable, "-m", "lyaptune.cli", *args],
                capture_output=True,
                text=True,
                timeout=600,
                env=env,
            )
            return r.returncode, r.stdout, r.stderr
        monkeypatch.setenv("LYAPTUNE_DATA_ROOT", str(empty_data_root))
        code = main(list(args))
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    code, stdout, stderr = lyaptune(
        "report", str(run_dir), "--out", str(out), *([] if figures else ["--no-figures"])
    )
    assert code == 0, stderr[-3000:]
    for name in ("report.md", "report.html", "compare.csv", "compare.json"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, f"{name} missing: {stdout[-2000:]}"
    json.loads((out / "compare.json").read_text())
    report_md = (out / "report.md").read_text()
    assert "## Claims" in report_md  # every spec states at least one claim
    assert "This spec states no claims." not in report_md
    assert "Claims:" in stdout
    drawn = {p.stem for p in (out / "figures").glob("*.png")}
    if not figures:
        assert not drawn and "![" not in report_md
    else:
        assert "curves" in drawn and "](figures/curves.png)" in report_md
        for stem in FIGURE_REPORTS[path.stem]:  # papers/003's figure, linked with its caption
            assert stem in drawn and f"](figures/{stem}.png)" in report_md, sorted(drawn)
        if "constant_steps" in FIGURE_REPORTS[path.stem]:
            # the saved figure's legend (each SVG text is also a comment): every grid point of the
            # smoke run's adam-constant arm, counted from its stored search runs, and the derived step
            trials = RunStore(run_dir).trials()
            search = trials[(trials["arm"] == "adam-constant") & (trials["phase"] == "search")]
            points = {f"lr={json.loads(p)['lr']:g}" for p in search["params_json"]}
            svg = (out / "figures" / "constant_steps.svg").read_text()
            legend = re.findall(r"<!-- ((?:derived|adam-constant) [^>]*\((?:\d+ seeds?), \w+\)) -->", svg)
            assert len(points) >= 2 and len(legend) == len(points) + 1, legend
            assert {x.split(" ")[1] for x in legend if x.startswith("adam-constant ")} == points
            assert sum(x.startswith("derived ") for x in legend) == 1
    code, stdout, stderr = lyaptune("compare", str(run_dir))
    assert code == 0, stderr[-3000:]
    assert stdout.strip(), "compare printed nothing"
