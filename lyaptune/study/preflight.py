"""What a study checks before it spends compute: the resources a trial asks for against what the
machine or cluster has, and that every node can read the task's data.

``parse_resources`` / ``with_resources`` read and apply ``--resources``; ``check_resources`` compares a
request with nodes' resources; the ``_preflight_*`` checks load each distinct dataset once (in the driver
before Ray starts, and on every node of a cluster).
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from typing import Any

from lyaptune.errors import ConfigError, UserError
from lyaptune.study.ray_session import _ray_initialized
from lyaptune.study.spec import ResourcesSpec, StudySpec


def _fmt_number(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def parse_resources(text: str) -> dict[str, float]:
    """Parse a ``--resources`` value, ``cpu=N,gpu=G`` (either key may be left out), into a dict.

    The rules are those of the spec's ``resources`` (Ray's): ``cpu > 0``, ``gpu >= 0``, a GPU count
    above 1 is a whole number.

    Args:
      text: e.g. ``"cpu=1,gpu=0"`` or ``"gpu=0.25"``.

    Returns:
      ``{"cpu": ..., "gpu": ...}`` with only the keys given.

    Raises:
      ConfigError: one line naming ``--resources``, the bad part and the valid form.
    """
    out: dict[str, float] = {}
    for part in [p.strip() for p in str(text).split(",") if p.strip()]:
        key, sep, raw = part.partition("=")
        key = key.strip().lower()
        if not sep or key not in ("cpu", "gpu"):
            raise ConfigError(f"--resources: expected cpu=N,gpu=G (keys cpu, gpu), got {part!r} in {text!r}")
        try:
            value = float(raw)
        except ValueError:
            raise ConfigError(f"--resources: {key} must be a number, got {raw.strip()!r}") from None
        if not math.isfinite(value) or (key == "cpu" and value <= 0) or (key == "gpu" and value < 0):
            bound = "> 0" if key == "cpu" else ">= 0"
            raise ConfigError(f"--resources: {key} must be a number {bound}, got {raw.strip()!r}")
        if key == "gpu" and value > 1 and not value.is_integer():
            raise ConfigError(
                f"--resources: gpu above 1 must be a whole number (Ray's rule), got {raw.strip()!r}"
            )
        out[key] = value
    if not out:
        raise ConfigError(f"--resources: expected cpu=N,gpu=G, got {text!r}")
    return out


def with_resources(spec: StudySpec, resources: Mapping[str, float] | None) -> StudySpec:
    """``spec`` with its per-trial resource request replaced (keys not given keep the spec's values).

    Everything that follows from the device follows the override: with ``gpu = 0`` trials see no GPU,
    a ``cuda`` task device becomes ``auto`` (so trials run on the CPUs) and ``population: auto`` trains
    one run after another (vmapped populations are used for GPU trials only).

    Args:
      spec: the validated study.
      resources: ``{"cpu": N, "gpu": G}`` (as from :func:`parse_resources`), or None for no change.

    Returns:
      A new, validated :class:`StudySpec` (``spec`` itself when nothing changes).
    """
    if not resources:
        return spec
    cpu = float(resources.get("cpu", spec.resources.cpu))
    gpu = float(resources.get("gpu", spec.resources.gpu))
    if (cpu, gpu) == (float(spec.resources.cpu), float(spec.resources.gpu)):
        return spec
    changes: dict[str, Any] = {"resources": ResourcesSpec(cpu=cpu, gpu=gpu)}
    if gpu == 0 and spec.task.device.startswith("cuda"):
        changes["task"] = dataclasses.replace(spec.task, device="auto")
    return dataclasses.replace(spec, **changes)


def _node_resources(nodes: list[dict[str, Any]]) -> list[dict[str, float]]:
    """CPUs and GPUs of every live node (from ``ray.nodes()``)."""
    out = []
    for node in nodes:
        if node.get("Alive", node.get("alive", True)):
            res = node.get("Resources", {}) or {}
            out.append({"cpu": float(res.get("CPU", 0.0)), "gpu": float(res.get("GPU", 0.0))})
    return out


def check_resources(
    request: Mapping[str, float], nodes: list[dict[str, float]], *, where: str = "this machine's Ray"
) -> str | None:
    """Why a trial's request can never be placed on these nodes, in one line; None when it fits.

    A trial is placed on one node, so the request fits when some node has at least ``cpu`` CPUs and
    ``gpu`` GPUs (Ray's per-trial placement rule).

    Args:
      request: ``{"cpu": N, "gpu": G}`` asked per trial.
      nodes: ``[{"cpu": ..., "gpu": ...}]`` per live node.
      where: how the cluster is named in the message.

    Returns:
      The message (what was asked, what exists, the ``--resources`` way out), or None.
    """
    cpu, gpu = float(request.get("cpu", 1)), float(request.get("gpu", 0))
    if any(n["cpu"] >= cpu and n["gpu"] >= gpu for n in nodes):
        return None
    if not nodes:
        has = "no live node"
        fit_cpu, fit_gpu = cpu, 0.0
    else:
        best = max(nodes, key=lambda n: (n["gpu"], n["cpu"]))
        label = "has" if len(nodes) == 1 else f"has {len(nodes)} nodes, the largest with"
        has = f"{label} cpu={_fmt_number(best['cpu'])}, gpu={_fmt_number(best['gpu'])}"
        fit_cpu = min(cpu, max(n["cpu"] for n in nodes)) or 1.0
        fit_gpu = min(gpu, best["gpu"])
    return (
        f"resources: each trial asks for cpu={_fmt_number(cpu)}, gpu={_fmt_number(gpu)}, but {where} {has}; "
        f"run the spec here with `--resources cpu={_fmt_number(fit_cpu)},gpu={_fmt_number(fit_gpu)}` "
        "or on a cluster that has them with `--address`"
    )


def _local_node() -> dict[str, float] | None:
    """The CPUs and GPUs a new local Ray will find here (Ray's own detection), or None if unknown."""
    try:
        from ray._private.accelerators import get_accelerator_manager_for_resource
        from ray._private.utils import get_num_cpus

        gpus = get_accelerator_manager_for_resource("GPU").get_current_node_num_accelerators()
        return {"cpu": float(get_num_cpus()), "gpu": float(gpus)}
    except Exception:  # a Ray whose private layout moved: the check after ray.init still runs
        return None


def _cluster_info(nodes: list[dict[str, Any]]) -> dict[str, Any]:
    """The cluster a study ran on, for ``study.json``: nodes with CPUs/GPUs, Ray and torch versions."""
    import ray
    import torch

    alive = [n for n in nodes if n.get("Alive", n.get("alive", True))]
    return {
        "nodes": [
            {
                "node_id": n.get("NodeID"),
                "host": n.get("NodeManagerHostname") or n.get("NodeManagerAddress"),
                "address": n.get("NodeManagerAddress"),
                "cpu": float((n.get("Resources") or {}).get("CPU", 0.0)),
                "gpu": float((n.get("Resources") or {}).get("GPU", 0.0)),
            }
            for n in alive
        ],
        "ray": ray.__version__,
        "torch": torch.__version__,
    }


def _dataset_configs(spec: StudySpec, data_roots: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
    """One trial config (as a dict, data root resolved as trials get it) per distinct dataset of the study."""
    from lyaptune.study.searcher import _absolute_data_root

    seen, out = set(), []
    for arm in spec.arms:
        config = spec.trial_config(arm, {}, spec.search.seeds[0]).to_dict()
        config = _absolute_data_root(config, (data_roots or {}).get(arm.name))
        key = json.dumps(
            {k: config.get(k) for k in ("dataset", "dataset_args", "data_root", "validation_fraction")},
            sort_keys=True,
            default=str,
        )
        if key not in seen:
            seen.add(key)
            out.append(config)
    return out


def _check_data(configs: list[dict[str, Any]]) -> str | None:
    """Load each dataset once here; the first error's one-line message, or None."""
    from lyaptune.train import TrialConfig, load_task_data

    for config in configs:
        try:
            load_task_data(TrialConfig.from_dict(config))
        except Exception as exc:
            text = str(exc).strip().splitlines()
            return f"{type(exc).__name__}: {text[0] if text else ''}"
    return None


def _preflight_nodes(
    spec: StudySpec,
    nodes: list[dict[str, Any]],
    request: Mapping[str, float],
    data_roots: Mapping[str, str] | None = None,
) -> None:
    """Every node that can host a trial loads the study's datasets once before any trial starts, so a
    node without the files fails the study at once, naming the node and the path, instead of every trial
    failing on its own."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    configs = _dataset_configs(spec, data_roots)
    check = ray.remote(num_cpus=0, max_retries=0)(_check_data)
    pending = {}
    for node in nodes:
        res = node.get("Resources") or {}
        if not node.get("Alive", True) or float(res.get("CPU", 0)) < float(request["cpu"]):
            continue  # no trial runs there
        if float(res.get("GPU", 0)) < float(request["gpu"]):
            continue
        strategy = NodeAffinitySchedulingStrategy(node_id=node["NodeID"], soft=False)
        pending[node["NodeID"]] = (node, check.options(scheduling_strategy=strategy).remote(configs))
    for node_id, (node, ref) in pending.items():
        problem = ray.get(ref)
        if problem:
            host = node.get("NodeManagerHostname") or node.get("NodeManagerAddress") or "?"
            raise UserError(
                f"node {host} ({node.get('NodeManagerAddress', '?')}, id {node_id[:12]}) cannot read the "
                f"task's data: {problem}"
            )


def _preflight_datasets(spec: StudySpec, data_roots: Mapping[str, str] | None = None) -> None:
    """Load every dataset the study uses once in the driver, so a missing file fails before Ray starts."""
    from lyaptune.train import TrialConfig, load_task_data

    for config in _dataset_configs(spec, data_roots):  # one per distinct dataset
        load_task_data(TrialConfig.from_dict(config))


def _check_before_ray(request: Mapping[str, float], remote: bool) -> None:
    """A request no node of a new local Ray could meet fails before Ray starts (seconds, not minutes)."""
    predicted = None if remote else _local_node()
    if predicted is not None and not _ray_initialized():
        problem = check_resources(request, [predicted])
        if problem:
            raise ConfigError(problem)
