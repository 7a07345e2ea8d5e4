"""The Ray Tune trainable: a thin adapter from a job payload to :func:`lyaptune.train.run_trial`.

Reports to Tune only what Tune needs: one final report with the whole result as a JSON payload
(the driver writes it to the store), plus, where the spec asks for them, a report per epoch for the
ASHA scheduler and a checkpoint every ``checkpoint_every`` epochs. Datasets are cached per worker
process by :func:`lyaptune.data.load_dataset`, so a reused actor does not load them again.

Testing hook: ``LYAPTUNE_FAULT_INJECTION='{"match": "<trial id substring>", "times": N, "dir": "<dir>"}'``
in the workers' environment makes matching runs raise ``RuntimeError("injected fault ...")`` on their
first N attempts (attempts are counted with marker files ``<trial id>.<attempt>`` in ``dir``). With
``"block": "start"`` a matching run instead stops before training, and with ``"block": "checkpoint"``
right after its first checkpoint is stored, writes ``<trial id>.blocked`` in ``dir`` and waits there
until it is stopped: tests interrupt or kill the driver at that known point, never after a guessed
delay. The reliability and cluster tests use it.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
import traceback
from typing import Any

import torch
from ray import tune

from lyaptune.train import TrialConfig, run_trial

__all__ = ["train_job", "CHECKPOINT_FILE"]

CHECKPOINT_FILE = "trial.pt"


def _load_checkpoint() -> dict[str, Any] | None:
    ckpt = tune.get_checkpoint()
    if ckpt is None:
        return None
    with ckpt.as_directory() as d:
        return torch.load(os.path.join(d, CHECKPOINT_FILE), weights_only=True, map_location="cpu")


def _fault(trial_id: str) -> dict[str, Any] | None:
    """The fault-injection settings that apply to ``trial_id`` (see the module docstring), or None."""
    spec = os.environ.get("LYAPTUNE_FAULT_INJECTION")
    if not spec:
        return None
    fault = json.loads(spec)
    return fault if fault["match"] in trial_id else None


def _block_here(fault: dict[str, Any] | None, trial_id: str, where: str) -> None:
    """Write ``<trial id>.blocked`` and wait until the run is stopped (fault injection, ``block``)."""
    if fault is None or fault.get("block") != where:
        return
    os.makedirs(fault["dir"], exist_ok=True)
    marker = os.path.join(fault["dir"], f"{trial_id}.blocked")
    with open(marker + ".tmp", "w") as f:
        f.write(str(os.getpid()))
    os.replace(marker + ".tmp", marker)
    while True:  # ended by the driver stopping the trial, or by a kill
        time.sleep(0.2)


def _maybe_inject_fault(trial_id: str) -> None:
    fault = _fault(trial_id)
    if fault is None:
        return
    _block_here(fault, trial_id, "start")
    if "block" in fault:
        return
    os.makedirs(fault["dir"], exist_ok=True)
    attempt = len([f for f in os.listdir(fault["dir"]) if f.startswith(trial_id + ".")]) + 1
    with open(os.path.join(fault["dir"], f"{trial_id}.{attempt}"), "w"):
        pass
    if attempt <= int(fault["times"]):
        raise RuntimeError(f"injected fault (attempt {attempt} of {trial_id})")


def _report_error(base: dict[str, Any], exc: BaseException) -> None:
    """Tell the driver why the run failed (its message is kept in the run's row); the metric key is
    present (None) because Tune rejects a result without the experiment's metric."""
    msg = f"{type(exc).__name__}: {exc}".splitlines()[0]
    trace = traceback.format_exc()[-4000:]
    tune.report({**base, "objective": None, "lyaptune_error": msg, "lyaptune_traceback": trace})


def _where() -> dict[str, Any]:
    """The Ray node and process a run trained on (recorded in the run's info)."""
    try:
        import ray

        node = ray.get_runtime_context().get_node_id()
    except Exception:  # outside a Ray worker
        node = None
    return {"node_id": node, "pid": os.getpid()}


def _train_population(job: dict[str, Any]) -> None:
    """Train the member jobs of a population together (:func:`lyaptune.population.run_population`)."""
    from lyaptune.population import run_population

    base = {"lyaptune_trial_id": job["trial_id"]}
    configs = [TrialConfig.from_dict(m["trial_config"]) for m in job["population"]]
    try:
        results = run_population(configs)
    except Exception as exc:
        _report_error(base, exc)
        raise
    where = _where()
    payload = {
        "results": [
            {
                "status": r.status,
                "records": r.records,
                "info": {**r.info, **where},
                "wall_s": r.wall_s,
                "message": r.message,
            }
            for r in results
        ]
    }
    tune.report(
        {
            **base,
            "objective": None,
            "epoch": configs[0].epochs,
            "lyaptune_final": True,
            "lyaptune_payload": json.dumps(payload),
        }
    )


def train_job(config: dict[str, Any]) -> None:
    """Ray Tune function trainable running one job (``config["job"]``, see ``StudyPlan``)."""
    job = config["job"]
    if "population" in job:
        return _train_population(job)
    trial_config = TrialConfig.from_dict(job["trial_config"])
    metric = job["metric"]
    every = int(job["checkpoint_every"] or 0)
    per_epoch = bool(job["report_every_epoch"])
    base = {"lyaptune_trial_id": job["trial_id"]}
    state = _load_checkpoint()
    if state is None and job.get("checkpoint"):
        # left by a driver that was killed (``lyaptune resume``): continue where that attempt stopped;
        # a checkpoint cut short by the kill is ignored and the run starts over
        try:
            state = torch.load(job["checkpoint"], weights_only=True, map_location="cpu")
        except (OSError, RuntimeError, EOFError):
            state = None
    _maybe_inject_fault(job["trial_id"])
    fault = _fault(job["trial_id"])

    def on_epoch(rec: dict[str, Any]) -> None:
        if per_epoch and not (every and rec["epoch"] % every == 0):
            tune.report(
                {
                    **base,
                    "objective": rec.get(metric),
                    "epoch": rec["epoch"],
                    "lyaptune_record": json.dumps(rec),
                }
            )

    last: dict[str, Any] = {}

    def on_checkpoint(trial_state: dict[str, Any]) -> None:
        rec = trial_state["records"][-1]
        with tempfile.TemporaryDirectory() as d:
            torch.save(trial_state, os.path.join(d, CHECKPOINT_FILE))
            tune.report(
                {
                    **base,
                    "objective": rec.get(metric),
                    "epoch": rec["epoch"],
                    "lyaptune_record": json.dumps(rec),
                },
                checkpoint=tune.Checkpoint.from_directory(d),
            )
        last["epoch"] = rec["epoch"]
        _block_here(fault, job["trial_id"], "checkpoint")

    try:
        result = run_trial(
            trial_config, on_epoch, resume_from=state, on_checkpoint=on_checkpoint, checkpoint_every=every
        )
    except Exception as exc:  # reported so the driver keeps the message, then re-raised for Tune's retries
        _report_error(base, exc)
        raise
    payload = {
        "status": result.status,
        "records": result.records,
        "info": {**result.info, **_where()},
        "wall_s": result.wall_s,
        "message": result.message,
        "resumed_from_epoch": int(state["epoch"]) if state else 0,
    }
    final = result.records[-1] if result.records else {}
    tune.report(
        {
            **base,
            "objective": final.get(metric),
            "epoch": final.get("epoch", 0),
            "lyaptune_final": True,
            "lyaptune_payload": json.dumps(payload),
        }
    )
