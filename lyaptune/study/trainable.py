"""The Ray Tune trainable: a thin adapter from a job payload to :func:`lyaptune.train.run_trial`.

Reports to Tune only what Tune needs: one final report carrying the whole result as a
:class:`lyaptune.study.tune_adapter.RunPayload` (the driver writes it to the store), plus, where the
spec asks for them, a report per epoch for the ASHA scheduler and a checkpoint every
``checkpoint_every`` epochs. Datasets are cached per worker process by
:func:`lyaptune.data.load_dataset`, so a reused actor does not load them again.

Fault-injection points (:mod:`lyaptune.faults`): ``start`` before training (an injected error or a
block) and ``checkpoint`` right after the run's first checkpoint; the reliability and cluster tests
interrupt or kill the driver, or the run's node, there.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from typing import Any

import torch
from ray import tune

from lyaptune import faults
from lyaptune.study.tune_adapter import (
    CHECKPOINT_FILE,
    RunPayload,
    epoch_metrics,
    error_metrics,
    read_checkpoint,
)
from lyaptune.train import TrialConfig, TrialResult, run_trial

__all__ = ["train_job", "CHECKPOINT_FILE"]


def _load_checkpoint() -> dict[str, Any] | None:
    """The checkpoint Tune restores this run from (a retry in the same experiment), or None; one that
    cannot be read is none (the run starts over: :func:`read_checkpoint`)."""
    ckpt = tune.get_checkpoint()
    if ckpt is None:
        return None
    with ckpt.as_directory() as d:
        return read_checkpoint(os.path.join(d, CHECKPOINT_FILE))


def _report_error(trial_id: str, exc: BaseException) -> None:
    """Tell the driver why the run failed (its message is kept in the run's row)."""
    tune.report(error_metrics(trial_id, exc))


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

    configs = [TrialConfig.from_dict(m["trial_config"]) for m in job["population"]]
    try:
        results = run_population(configs)
    except Exception as exc:
        _report_error(job["trial_id"], exc)
        raise
    where = _where()
    payload = RunPayload(tuple(_with_info(r, where) for r in results))
    tune.report(payload.to_metrics(job["trial_id"], None, configs[0].epochs))


def _with_info(result: TrialResult, extra: dict[str, Any]) -> TrialResult:
    """``result`` with ``extra`` added to its info (where it trained)."""
    return dataclasses.replace(result, info={**result.info, **extra})


def train_job(config: dict[str, Any]) -> None:
    """Ray Tune function trainable running one job (``config["job"]``, see ``StudyPlan``)."""
    job = config["job"]
    if "population" in job:
        return _train_population(job)
    trial_id = job["trial_id"]
    trial_config = TrialConfig.from_dict(job["trial_config"])
    metric = job["metric"]
    every = int(job["checkpoint_every"] or 0)
    per_epoch = bool(job["report_every_epoch"])
    state = _load_checkpoint()
    if state is None and job.get("checkpoint"):
        # left by a driver that was killed (``lyaptune resume``), in the run directory or an object
        # store: continue where that attempt stopped; one cut short by the kill is ignored (start over)
        state = read_checkpoint(job["checkpoint"])
    faults.at_run_point(trial_id, "start")

    def on_epoch(rec: dict[str, Any]) -> None:
        if per_epoch and not (every and rec["epoch"] % every == 0):
            tune.report(epoch_metrics(trial_id, rec, metric))

    def on_checkpoint(trial_state: dict[str, Any]) -> None:
        rec = trial_state["records"][-1]
        with tempfile.TemporaryDirectory() as d:
            torch.save(trial_state, os.path.join(d, CHECKPOINT_FILE))
            tune.report(epoch_metrics(trial_id, rec, metric), checkpoint=tune.Checkpoint.from_directory(d))
        faults.at_run_point(trial_id, "checkpoint")

    try:
        result = run_trial(
            trial_config, on_epoch, resume_from=state, on_checkpoint=on_checkpoint, checkpoint_every=every
        )
    except Exception as exc:  # reported so the driver keeps the message, then re-raised for Tune's retries
        _report_error(trial_id, exc)
        raise
    payload = RunPayload(
        (_with_info(result, _where()),), resumed_from_epoch=int(state["epoch"]) if state else 0
    )
    final = result.records[-1] if result.records else {}
    tune.report(payload.to_metrics(trial_id, final.get(metric), final.get("epoch", 0)))
