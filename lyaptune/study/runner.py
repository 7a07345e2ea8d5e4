"""Run a study: every arm tuned with an equal Optuna budget through one Ray Tune experiment, then each
arm's best configuration re-run on fresh seeds; everything stored as Parquet in the run directory.

The same code runs on this machine's CPUs (a local Ray is started, dashboard off) and on a Ray cluster
(``address="auto"``, ``ray://host:10001`` or ``RAY_ADDRESS``), with fractional GPUs per trial.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import json
import logging
import logging.handlers
import math
import os
import platform
import socket
import subprocess
import sys
import warnings
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from lyaptune.errors import ConfigError, UserError
from lyaptune.store import RunStore, lock_run_dir
from lyaptune.study.check import check_study
from lyaptune.study.interrupt import Interrupt, StudyInterrupted
from lyaptune.study.progress import ProgressDisplay, StudyProgress
from lyaptune.study.searcher import Job, StudyPlan, resolve_data_roots
from lyaptune.study.spec import ResourcesSpec, StudySpec

__all__ = [
    "run_study",
    "resume_study",
    "run_dir_for",
    "parse_resources",
    "with_resources",
    "check_resources",
    "StudyInterrupted",
    "JOURNAL_FILE",
    "RAY_LOG_FILE",
]

JOURNAL_FILE = "optuna.journal"
RAY_LOG_FILE = "ray.log"

# Settings a study applies to Ray while it runs (restored afterwards; nothing is changed at import):
# Tune's CSV/JSON/TensorBoard loggers duplicate the store, its new console output prints a configuration
# box, and its SIGINT handler prints a ``Tuner.restore`` hint; lyaptune handles interruptions itself.
_RAY_ENV = {
    "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1",
    "RAY_AIR_NEW_OUTPUT": "0",
    "TUNE_DISABLE_SIGINT_HANDLER": "1",
    "RAY_DEDUP_LOGS": "0",
}


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _has_scheme(path: str) -> bool:
    return "://" in path and not path.startswith("file://")


def run_dir_for(spec: StudySpec, out: str | os.PathLike, storage: str | None = None) -> str:
    """``<storage or out>/<spec.name>`` (a local path or a pyarrow URI)."""
    base = str(storage or out)
    return base.rstrip("/") + "/" + spec.name


def _versions() -> dict[str, Any]:
    import optuna
    import ray
    import torch

    import lyaptune

    try:
        commit = (
            subprocess.run(
                ["git", "rev-parse", "HEAD"],
                capture_output=True,
                text=True,
                timeout=5,
                cwd=Path(__file__).resolve().parents[2],
            ).stdout.strip()
            or None
        )
    except (OSError, subprocess.SubprocessError):
        commit = None
    return {
        "lyaptune": lyaptune.__version__,
        "torch": torch.__version__,
        "ray": ray.__version__,
        "optuna": optuna.__version__,
        "python": platform.python_version(),
        "git_commit": commit,
        "host": socket.gethostname(),
        "cuda_devices": torch.cuda.device_count(),
    }


def _check_reachable(address: str) -> None:
    """Fail fast (seconds, not Ray's minutes of retries) when a ``host:port`` address does not answer."""
    if address in ("auto", "local"):
        return
    hostport = address.split("://", 1)[-1].rstrip("/")
    host, _, port = hostport.rpartition(":")
    try:
        socket.create_connection((host or "127.0.0.1", int(port)), timeout=5).close()
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot reach Ray at {address!r}: {exc}; is the cluster up (`ray status`)?") from exc


# --------------------------------------------------------------------------------------------------
# Resources: what a trial asks for against what the cluster has.


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


# --------------------------------------------------------------------------------------------------
# Ray's own output: routed to a log file while a study runs.


class _RayQuiet:
    """While a study runs: Ray's Python loggers and warnings go to a log file, Tune's console output,
    default loggers and SIGINT handler are off (``_RAY_ENV``); everything is restored on exit.

    Records logged before the run directory exists are buffered and written once :meth:`attach` names
    the file.
    """

    def __init__(self) -> None:
        self._buffer = logging.handlers.MemoryHandler(capacity=100_000, flushLevel=logging.CRITICAL + 1)
        self._buffer.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        self._saved_env: dict[str, str | None] = {}
        self._saved_loggers: dict[str, tuple[list[logging.Handler], bool, int]] = {}
        self._file: logging.Handler | None = None
        self._warnings: Any = None

    def __enter__(self) -> _RayQuiet:
        for key, value in _RAY_ENV.items():
            self._saved_env[key] = os.environ.get(key)
            os.environ[key] = value
        import ray  # noqa: F401  (its import installs the "ray" logger's stderr handler, replaced here)

        names = ["ray"] + [
            n
            for n, lg in logging.root.manager.loggerDict.items()
            if n.startswith("ray.") and isinstance(lg, logging.Logger) and lg.handlers
        ]
        for name in names:
            lg = logging.getLogger(name)
            self._saved_loggers[name] = (list(lg.handlers), lg.propagate, lg.level)
            lg.handlers = [self._buffer] if name == "ray" else []
            lg.propagate = name != "ray"
        logging.getLogger("ray").setLevel(logging.INFO)
        self._warnings = warnings.catch_warnings()
        self._warnings.__enter__()
        self._show_other = warnings.showwarning
        warnings.showwarning = self._showwarning
        return self

    def reclaim(self) -> None:
        """Put the log file handler back on the "ray" logger (``ray.init`` clears that logger's handlers)."""
        ray_logger = logging.getLogger("ray")
        if self._buffer not in ray_logger.handlers:
            ray_logger.addHandler(self._buffer)
        ray_logger.propagate = False

    def set_env(self, key: str, value: str) -> None:
        """Set an environment variable for the study's duration (restored on exit)."""
        if key not in self._saved_env:
            self._saved_env[key] = os.environ.get(key)
        os.environ[key] = value

    def _showwarning(self, message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ANN001
        ray_dir = os.path.dirname(sys.modules["ray"].__file__)
        if not os.path.abspath(str(filename)).startswith(ray_dir):  # not Ray's: shown as usual
            self._show_other(message, category, filename, lineno, file, line)
            return
        name = category.__name__
        logging.getLogger("ray.warnings").warning("%s:%s: %s: %s", filename, lineno, name, message)

    def attach(self, path: Path) -> None:
        """Write Ray's log (so far and from now on) to ``path``."""
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = logging.FileHandler(path, encoding="utf-8")
        self._file.setFormatter(self._buffer.formatter)
        self._buffer.setTarget(self._file)
        self._buffer.flush()

    def __exit__(self, *exc: Any) -> None:
        self._warnings.__exit__(*exc)
        self._buffer.flush()
        for name, (handlers, propagate, level) in self._saved_loggers.items():
            lg = logging.getLogger(name)
            lg.handlers, lg.propagate = handlers, propagate
            lg.setLevel(level)
        self._buffer.close()
        if self._file is not None:
            self._file.close()
        auth_changed = os.environ.get("RAY_AUTH_MODE") != self._saved_env.get("RAY_AUTH_MODE", "")
        for key, value in self._saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        if "RAY_AUTH_MODE" in self._saved_env and auth_changed:
            _refresh_ray_config()


@contextlib.contextmanager
def _stderr_to(path: str | os.PathLike | None) -> Iterator[None]:
    """Send file descriptor 2 to ``path`` (or /dev/null) for a moment: Ray's C++ client logs there."""

    sys.stderr.flush()
    saved = os.dup(2)
    target = os.open(os.fspath(path) if path else os.devnull, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.dup2(target, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(target)


# --------------------------------------------------------------------------------------------------
# Connecting: token authentication, reachability.


def _use_local_token() -> bool:
    """Turn on Ray's token authentication for this process when ``RAY_AUTH_MODE`` is unset and a token
    is at hand (``RAY_AUTH_TOKEN``, ``RAY_AUTH_TOKEN_PATH`` or ``~/.ray/auth_token``), as Ray itself does
    for ``address="auto"`` but not for an explicit address. Returns whether token mode is on."""
    if os.environ.get("RAY_AUTH_MODE") is not None:
        return os.environ["RAY_AUTH_MODE"].lower() == "token"
    try:
        from ray._private.authentication.authentication_token_setup import (
            maybe_enable_token_auth_if_token_available,
        )
    except ImportError:  # a Ray without token authentication
        return False
    return bool(maybe_enable_token_auth_if_token_available(warn_if_disabled=False))


_AUTH_HELP = (
    "set RAY_AUTH_MODE=token and the cluster's token as RAY_AUTH_TOKEN (or the file ~/.ray/auth_token; "
    "`ray get-auth-token` on the head prints it), or start the cluster with RAY_AUTH_MODE=disabled on a "
    "trusted network"
)


def _refresh_ray_config() -> None:
    """Make Ray's C++ side re-read ``RAY_*`` settings (``RAY_AUTH_MODE``) from the environment."""
    try:
        from ray._raylet import Config
    except ImportError:
        return
    Config.initialize("")


def _check_auth(address: str) -> None:
    """Fail in about a second, with what to set, when the cluster refuses this driver's token (Ray's own
    ``ray.init`` retries for about 20 s and then reports only a connection failure)."""
    if address.startswith("ray://") or address in ("auto", "local"):
        return
    try:
        from ray._raylet import GcsClient
        from ray.exceptions import AuthenticationError
    except ImportError:
        return
    try:
        with _stderr_to(None):
            GcsClient(address=address.split("://", 1)[-1])
    except AuthenticationError as exc:
        mode = os.environ.get("RAY_AUTH_MODE", "unset")
        raise UserError(
            f"Ray at {address!r} refused this driver: token authentication failed (RAY_AUTH_MODE is {mode}); "
            + _AUTH_HELP
        ) from exc
    except Exception:  # anything else is left to ray.init, which reports it
        return


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


def _ray_initialized() -> bool:
    import ray

    return ray.is_initialized()


def _preflight_datasets(spec: StudySpec, data_roots: Mapping[str, str] | None = None) -> None:
    """Load every dataset the study uses once in the driver, so a missing file fails before Ray starts."""
    from lyaptune.train import TrialConfig, load_task_data

    seen = set()
    for config in _dataset_configs(spec, data_roots):
        key = json.dumps(
            {k: config.get(k) for k in ("dataset", "dataset_args", "data_root", "validation_fraction")},
            sort_keys=True,
            default=str,
        )
        if key not in seen:
            seen.add(key)
            load_task_data(TrialConfig.from_dict(config))


def _init_ray(address: str | None, quiet: _RayQuiet | None = None) -> bool:
    """Connect to (or start) Ray; returns True if this call started it.

    A local Ray keeps Ray's default, token authentication, set explicitly (``RAY_AUTH_MODE=token``
    unless the user set it) so that Ray does not print its banner about it.
    """
    import ray

    if ray.is_initialized():
        if address:  # an address that does not answer fails even where this process holds a Ray already
            _check_reachable(address)
        return False
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        _check_reachable(address)
        _use_local_token()
        _check_auth(address)
    elif quiet is not None and "RAY_AUTH_MODE" not in os.environ:
        quiet.set_env("RAY_AUTH_MODE", "token")
        _refresh_ray_config()
    # the testing hook of lyaptune.study.trainable reaches a remote cluster's workers this way
    fault = os.environ.get("LYAPTUNE_FAULT_INJECTION")
    runtime_env = {"env_vars": {"LYAPTUNE_FAULT_INJECTION": fault}} if fault else None
    try:
        if address:
            ray.init(address=address, log_to_driver=False, configure_logging=False, runtime_env=runtime_env)
        else:
            ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False)
    except (ConnectionError, TimeoutError, RuntimeError, ValueError) as exc:
        where = address or "a local Ray"
        raise UserError(f"cannot connect to Ray at {where!r}: {str(exc).splitlines()[0]}") from exc
    return True


class _RemoteJournal:
    """The Optuna journal of a run directory in an object store (``s3://``, ``gs://``): Optuna writes a
    local file (``<out>/<name>/optuna.journal``), and the store keeps its copy, pulled before the plan
    is built (so ``lyaptune resume URI`` works from any machine) and pushed after every finished run.
    """

    def __init__(self, store: RunStore, local: Path) -> None:
        self.store, self.local = store, local
        self.remote = store.path.rstrip("/") + "/" + JOURNAL_FILE

    def pull(self, resume: bool) -> None:
        import pyarrow.fs as pafs

        fs = self.store.filesystem
        if fs.get_file_info(self.remote).type == pafs.FileType.File:
            with fs.open_input_stream(self.remote) as f:
                self.local.write_bytes(f.read())
        elif not resume and self.local.exists():
            self.local.unlink()  # a journal left here by another study of the same name

    def push(self) -> None:
        if self.local.exists():
            with self.store.filesystem.open_output_stream(self.remote) as f:
                f.write(self.local.read_bytes())


def _arm_runs(spec: StudySpec) -> dict[str, int]:
    """Runs planned per arm: its search budget on every search seed plus its final runs."""
    n_seeds, n_final = len(spec.search.seeds), len(spec.search.final_seeds)
    return {a.name: spec.budget(a) * n_seeds + n_final for a in spec.arms}


def _refuse_existing(root: str, local: Path | None, resume: bool) -> None:
    """A new study never writes into a run directory that holds one already."""
    if not resume and local is not None and (local / "spec.yaml").exists():
        raise UserError(
            f"run directory {root} already exists; continue it with `lyaptune resume {root}` "
            "or choose another --out"
        )


def _check_before_ray(request: Mapping[str, float], remote: bool) -> None:
    """A request no node of a new local Ray could meet fails before Ray starts (seconds, not minutes)."""
    predicted = None if remote else _local_node()
    if predicted is not None and not _ray_initialized():
        problem = check_resources(request, [predicted])
        if problem:
            raise ConfigError(problem)


def run_study(
    spec: StudySpec,
    *,
    out: str | os.PathLike = "runs",
    storage: str | None = None,
    address: str | None = None,
    max_concurrent: int | None = None,
    resume: bool = False,
    run_dir: str | None = None,
    resources: Mapping[str, float] | None = None,
    log: Callable[[str], None] = print,
    display: ProgressDisplay | None = None,
) -> RunStore:
    """Run (or resume) a study and return its store.

    Before any trial starts, the per-trial request (``spec.resources``, or ``resources``) is checked
    against the Ray cluster's nodes: on a local Ray a request no node can meet is an error naming the
    ``--resources`` way out; on a remote cluster (which may autoscale) it is a warning. Ray's own log
    lines go to ``ray.log`` in the run directory. SIGINT / SIGTERM stop the study cleanly: completed
    runs stay stored, runs in flight are left for ``lyaptune resume``, and :class:`StudyInterrupted`
    is raised with the resume command.

    Args:
      spec: the validated study.
      out: parent directory of the run directory ``<out>/<spec.name>``.
      storage: a local path or a pyarrow URI (s3://, gs://, an NFS path) used instead of ``out`` for the
        run directory and Ray's ``storage_path``.
      address: a Ray cluster address (``auto``, ``host:6379``, ``ray://host:10001``); default
        ``RAY_ADDRESS`` or a new local Ray. Where ``RAY_AUTH_MODE`` is unset and this machine holds a
        Ray token (``RAY_AUTH_TOKEN``, ``~/.ray/auth_token``), token authentication is used.
      max_concurrent: overrides ``spec.max_concurrent``.
      resume: continue an existing run directory: completed runs are kept and never run again, runs
        left open by a killed driver are re-queued.
      run_dir: the run directory to use (``resume``); default ``<out>/<spec.name>``.
      resources: per-trial ``{"cpu": N, "gpu": G}`` replacing the spec's request (see
        :func:`with_resources`; population mode follows the device used). The spec is stored as written
        and the override in ``study.json`` (``resources_override``), so ``resume`` keeps it.
      log: where messages and plain progress lines go (when ``display`` is None).
      display: the progress display (:mod:`lyaptune.study.progress`); default plain lines through
        ``log``, the first when the study starts, then at most one per 15 s.

    Returns:
      The :class:`lyaptune.store.RunStore` of the run directory.

    Raises:
      UserError: the request cannot be met on a local Ray, Ray cannot be reached or refuses the token,
        the run directory exists already (not ``resume``).
      StudyInterrupted: SIGINT / SIGTERM received (its message names the resume command).
      RunDirLockedError: another live driver holds the run directory (its pid, host and start time);
        a lock left by a dead driver on this host is taken over.
    """
    if display is None:  # plain lines through `log` (the Python API's default)
        with ProgressDisplay(log) as plain:
            kwargs = dict(out=out, storage=storage, address=address, max_concurrent=max_concurrent)
            return run_study(
                spec, **kwargs, resume=resume, run_dir=run_dir, resources=resources, display=plain
            )
    log = display.log
    display.status("checking the spec and the data")
    written = check_study(spec)  # names and arguments against the registries, before anything starts
    spec = with_resources(spec, resources)
    root = run_dir or run_dir_for(spec, out, storage)
    remote = bool(address or os.environ.get("RAY_ADDRESS"))
    local = None if _has_scheme(root) else Path(root.removeprefix("file://"))
    # the data directories as resolved when the study started (study.json), else now: a resume reads its
    # data where the study started, whatever the shell's LYAPTUNE_DATA_ROOT and working directory
    stored = RunStore(root).read_study_info() if resume else {}
    data_roots = {**resolve_data_roots(spec), **(stored.get("data_roots") or {})}
    if not remote:
        _preflight_datasets(spec, data_roots)  # on a cluster the files may live on the workers only
    _refuse_existing(root, local, resume)
    journal_dir = local if local is not None else Path(out) / spec.name
    total = sum(_arm_runs(spec).values())
    request = {"cpu": float(spec.resources.cpu), "gpu": float(spec.resources.gpu)}
    _check_before_ray(request, remote)
    if resume:
        RunStore(root)  # not a run directory: fail before a lock file is created
    # one writer per run directory: a second `run` / `resume` is refused with the holder's name
    # folders made here are removed again if the study stops before writing anything (no empty run
    # directory left behind by, e.g., a cluster that refuses this driver)
    made = [d for d in (journal_dir, *journal_dir.parents) if not d.exists()]
    try:
        journal_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"cannot create run directory {journal_dir}: {err.strerror or err}") from err
    run_lock = lock_run_dir(journal_dir)
    try:
        if run_lock.taken_over is not None:
            holder = run_lock.taken_over.describe()
            log(f"took over the run directory lock of {holder}: it is no longer running")
        _refuse_existing(root, local, resume)
        return _run_locked(
            spec,
            written,
            root,
            journal_dir,
            local,
            remote,
            address,
            resume,
            resources,
            max_concurrent,
            total,
            request,
            display,
            data_roots,
        )
    finally:
        run_lock.release()
        for d in made:  # innermost first; stops at the first folder that holds anything
            try:
                d.rmdir()
            except OSError:
                break


def _run_locked(
    spec: StudySpec,
    written: StudySpec,
    root: str,
    journal_dir: Path,
    local: Path | None,
    remote: bool,
    address: str | None,
    resume: bool,
    resources: Mapping[str, float] | None,
    max_concurrent: int | None,
    total: int,
    request: dict[str, float],
    display: ProgressDisplay,
    data_roots: dict[str, str],
) -> RunStore:
    """The body of :func:`run_study`, run while the run directory's lock is held."""
    interrupt, log = Interrupt(), display.log
    progress = StudyProgress(_arm_runs(spec), display)
    log(f"study {spec.name}: {len(spec.arms)} arms, {total} runs, results in {root}")
    progress.phase = "connecting to Ray" if remote else "starting Ray"
    display.attach(progress.frame)
    with _RayQuiet() as quiet, contextlib.ExitStack() as stack:
        started_ray = _init_ray(address, quiet)
        quiet.reclaim()
        try:
            import ray

            # after ray.init: Ray's core worker installs its own SIGTERM handler there
            stack.enter_context(interrupt.installed())
            nodes = ray.nodes()
            problem = check_resources(
                request, _node_resources(nodes), where="the Ray cluster" if remote else "this machine's Ray"
            )
            if problem and not remote:
                raise ConfigError(problem)
            if problem:
                log(f"warning: {problem} (waiting: the cluster may add nodes)")
            if remote:
                _preflight_nodes(spec, nodes, request, data_roots)
            if resume:
                store = RunStore(root)
            else:
                store = RunStore(root, create=True)
                store.write_spec(written.to_dict())
                store.write_study_info(started=_now(), **_versions())
            # what `lyaptune status` prints against, without rebuilding the spec (no torch)
            store.write_study_info(
                search_budget={a.name: spec.budget(a) * len(spec.search.seeds) for a in spec.arms}
            )
            journal_dir.mkdir(parents=True, exist_ok=True)
            quiet.attach(journal_dir / RAY_LOG_FILE)
            progress.set_phase("preparing the study")
            store.write_study_info(
                ray_resources=ray.cluster_resources(),
                cluster=_cluster_info(nodes),
                resources=request,
                resources_override=dict(resources) if resources else None,
                # what `lyaptune resume` needs besides the spec: it never depends on the shell (issue 21)
                data_roots=data_roots,
                max_concurrent_override=max_concurrent,
            )
            journal = _RemoteJournal(store, journal_dir / JOURNAL_FILE) if local is None else None
            if journal is not None:
                journal.pull(resume)
            from lyaptune.study import tune_adapter

            # checkpoints that killed drivers' Tune experiments left (a local path or an object store)
            checkpoints = (
                tune_adapter.TuneCheckpoints(tune_adapter.tune_storage_path(root)) if resume else None
            )
            plan = StudyPlan(
                spec,
                store,
                journal_dir / JOURNAL_FILE,
                log=log,
                checkpoints=checkpoints,
                data_roots=data_roots,
            )
            if resume:
                log(f"resuming {root}: {len(plan.done)} of {total} runs already recorded")
                rows = store.trials()
                progress.restore(rows[rows["trial_id"].isin(plan.done)].groupby("arm").size().to_dict())
            _fit(spec, root, plan, progress, interrupt, journal, max_concurrent)
            if journal is not None:
                journal.push()
        finally:
            display.detach(keep=sys.exc_info()[0] is None)
            if started_ray:
                import ray

                ray.shutdown()
    trials = store.trials()
    if interrupt.signum is not None:
        message = (
            f"interrupted ({interrupt.name}): {len(trials)} of {total} runs stored in {root}; "
            f"continue with: lyaptune resume {root}"
        )
        log(message)
        raise StudyInterrupted(message, interrupt.signum)
    store.compact()  # the driver holds the run-directory lock: fold the finished runs into parts
    store.write_study_info(finished=_now())
    counts = trials["status"].value_counts().to_dict() if len(trials) else {}
    log(
        f"done: {len(trials)} runs ({', '.join(f'{k} {v}' for k, v in sorted(counts.items()))}); "
        f"results in {root} (trials/, epochs/, {JOURNAL_FILE}, {RAY_LOG_FILE})"
    )
    return store


def _fit(
    spec: StudySpec,
    root: str,
    plan: StudyPlan,
    progress: StudyProgress,
    interrupt: Interrupt,
    journal: _RemoteJournal | None,
    max_concurrent: int | None,
) -> None:
    """Run the plan's jobs through one Tune experiment, until done or interrupted (then at once)."""
    from lyaptune.study import tune_adapter
    from lyaptune.study.trainable import train_job

    def finished(job: Job, status: str, value: float) -> None:
        if journal is not None:
            journal.push()
        progress.finished(job, status, value)

    searcher = tune_adapter.StudySearcher(plan, on_finish=finished, on_start=progress.started)
    interrupt.on_signal = lambda: setattr(searcher, "stopping", True)  # a flag only: no I/O here

    def stop() -> None:  # at Tune's next step after the signal; then `fit` ends at once
        progress.display.log(f"stopping ({interrupt.name}): runs in flight are left for resume")

    if interrupt.signum is None:
        tuner = tune_adapter.make_tuner(
            spec,
            root,
            searcher,
            trainable=train_job,
            stop_all=lambda: interrupt.signum is not None,
            on_stop=stop,
            max_concurrent=max_concurrent,
        )
        progress.set_phase("waiting for Ray to start the first run")
        with contextlib.suppress(tune_adapter.StudyStopped):
            tuner.fit()


def resume_study(
    run_dir: str,
    *,
    address: str | None = None,
    max_concurrent: int | None = None,
    resources: Mapping[str, float] | None = None,
    log: Callable[[str], None] = print,
    display: ProgressDisplay | None = None,
) -> RunStore:
    """Continue a run directory from its saved spec; completed runs are never run again.

    Args:
      run_dir: the run directory (a local path or a URI).
      address, max_concurrent, log, display: as for :func:`run_study`.
      resources: per-trial override; default the one the study was started with (``study.json``).
      max_concurrent: default the ``--max-concurrent`` the study was started (or last resumed) with.

    A finished study (``study.json`` has ``finished``) is said to be finished, without starting Ray.
    The data directories are those the study resolved when it started (``study.json``'s
    ``data_roots``), so the resume does not depend on the shell's ``LYAPTUNE_DATA_ROOT`` or directory.

    Returns:
      The run directory's :class:`lyaptune.store.RunStore`.
    """
    store = RunStore(run_dir)
    info = store.read_study_info()
    log = display.log if display is not None else log
    if info.get("finished"):  # nothing to do: said without starting Ray
        n = len(store.trial_ids())
        name = store.read_spec().get("name", "?")
        log(f"study {name} is finished ({info['finished']}): {n} runs stored in {run_dir}; nothing to resume")
        return store
    # loading is pure; the registries are checked here, before Ray starts (a renamed optimizer, ...)
    spec = check_study(StudySpec.from_dict(store.read_spec()))
    if resources is None:
        resources = info.get("resources_override") or None
    if max_concurrent is None:
        max_concurrent = info.get("max_concurrent_override") or None
    out = str(Path(run_dir).parent) if not _has_scheme(run_dir) else "runs"
    return run_study(
        spec,
        out=out,
        address=address,
        max_concurrent=max_concurrent,
        resume=True,
        run_dir=run_dir,
        resources=resources,
        log=log,
        display=display,
    )
