"""Study subcommands of the CLI: run, resume, status."""

from __future__ import annotations

import argparse
import math
from typing import Any

__all__ = ["add_commands"]


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register the study subcommands on the ``lyaptune`` parser."""
    p = sub.add_parser("run", help="run a study spec (YAML): search every arm, then final seeds")
    p.add_argument("spec", help="path of the study spec (YAML)")
    p.add_argument("--out", default="runs", help="parent of the run directory (default: runs)")
    p.add_argument(
        "--address",
        default=None,
        help="Ray cluster address (auto, ray://host:10001); default RAY_ADDRESS or a local Ray",
    )
    p.add_argument(
        "--storage",
        default=None,
        help="local path or URI (s3://, gs://, NFS) for results, in place of --out (default: --out)",
    )
    p.add_argument(
        "--max-concurrent", type=int, default=None, help="trials at once (default: the spec's max_concurrent)"
    )
    p.add_argument("--smoke", action="store_true", help="2 trials per arm, 2 epochs, 1 final seed")
    _add_resources(p)
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="check the spec, the data files and (on a local Ray) the resources, list arms, budgets and "
        "spaces and what was not checked; start nothing",
    )
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser("resume", help="continue an interrupted run directory")
    p.add_argument("run_dir", help="the run directory (RUN_DIR/spec.yaml; a local path or a pyarrow URI)")
    p.add_argument(
        "--address",
        default=None,
        help="Ray cluster address (auto, ray://host:10001); default RAY_ADDRESS or a local Ray",
    )
    p.add_argument(
        "--max-concurrent",
        type=int,
        default=None,
        help="trials at once (default: the --max-concurrent the study ran with, else the spec's)",
    )
    _add_resources(p, resume=True)
    p.set_defaults(func=_cmd_resume)

    p = sub.add_parser(
        "status",
        help="running / interrupted / finished, runs done / failed per arm and the best objective so far",
    )
    p.add_argument("run_dir", help="the run directory (a local path or a pyarrow URI)")
    p.set_defaults(func=_cmd_status)


def _add_resources(p: argparse.ArgumentParser, resume: bool = False) -> None:
    default = "the --resources the study ran with, else the spec's" if resume else "the spec's resources"
    p.add_argument(
        "--resources",
        default=None,
        metavar="cpu=N,gpu=G",
        help=f"per-trial resources, e.g. cpu=1,gpu=0 to run a GPU spec on CPUs (default: {default})",
    )


def _resources(args: argparse.Namespace) -> dict[str, float] | None:
    if args.resources is None:
        return None
    from lyaptune.study.runner import parse_resources

    return parse_resources(args.resources)


def _interrupted(exc: Any) -> int:
    """Exit status of a study stopped by a signal (its message was printed by the study)."""
    return 128 + int(exc.signum)


def _describe_space(space: dict[str, Any]) -> str:
    return ", ".join(f"{name} in {ps}" for name, ps in space.items())


def _cmd_run(args: argparse.Namespace) -> int:
    if args.dry_run:
        return _run_checked(args, None)
    from lyaptune.study.progress import ProgressDisplay

    # the progress line from the start: checking the spec imports torch (seconds)
    with ProgressDisplay.for_stream() as display:
        display.status("checking the spec")
        return _run_checked(args, display)


def _run_checked(args: argparse.Namespace, display: Any) -> int:
    """``run`` after its progress display started (None: ``--dry-run``)."""
    from lyaptune.errors import ConfigError
    from lyaptune.study.check import check_study
    from lyaptune.study.spec import load_spec

    resources = _resources(args)  # a bad flag is reported before the spec is read
    spec = check_study(load_spec(args.spec))  # loading is pure; the registries are checked here
    if args.smoke:
        from lyaptune.study.standin import smoke_stand_ins

        spec, swaps = smoke_stand_ins(spec)
        for line in swaps:
            (display.log if display is not None else print)(line)
    if args.max_concurrent is not None and args.max_concurrent < 1:
        raise ConfigError(f"--max-concurrent must be >= 1, got {args.max_concurrent}")
    if args.dry_run:
        t = spec.task
        print(
            f"study {spec.name}: dataset={t.dataset} model={t.model} {dict(t.model_args)} epochs={t.epochs} "
            f"batch_size={t.batch_size}; objective {spec.objective.metric} ({spec.objective.mode}, "
            f"{spec.objective.at}); sampler {spec.search.sampler}; "
            f"final seeds {list(spec.search.final_seeds)}"
        )
        for arm in spec.arms:
            space = arm.resolved_space()
            what = (
                f"grid of {len(arm.grid_points())} points over {', '.join(arm.grid)}"
                if arm.grid
                else (_describe_space(space) if space else "no search (runs on the final seeds only)")
            )
            print(f"  {arm.name}: {arm.optimizer} + {arm.schedule}; budget {spec.budget(arm)}; {what}")
        from lyaptune._cli_dryrun import dry_run_checks

        for line in dry_run_checks(spec, resources=resources, address=args.address):
            print(line)
        return 0
    from lyaptune.study.runner import StudyInterrupted, run_study

    try:
        store = run_study(
            spec,
            out=args.out,
            storage=args.storage,
            address=args.address,
            max_concurrent=args.max_concurrent,
            resources=resources,
            display=display,
        )
    except StudyInterrupted as exc:
        return _interrupted(exc)
    return 1 if store.trial_ids({"errored"}) else 0  # two columns read, not every run's JSON


def _cmd_resume(args: argparse.Namespace) -> int:
    from lyaptune.study.progress import ProgressDisplay
    from lyaptune.study.runner import StudyInterrupted, resume_study

    resources = _resources(args)
    with ProgressDisplay.for_stream() as display:
        try:
            resume_study(
                args.run_dir,
                address=args.address,
                max_concurrent=args.max_concurrent,
                resources=resources,
                display=display,
            )
        except StudyInterrupted as exc:
            return _interrupted(exc)
    return 0


def _stored_budget(store: Any, info: dict[str, Any]) -> dict[str, int]:
    """Search runs per arm as the study recorded them (``study.json``); runs stored by versions that did
    not record them rebuild the stored spec (pure: it builds no optimizer)."""
    if "search_budget" in info:
        return {str(k): int(v) for k, v in info["search_budget"].items()}
    from lyaptune.study.spec import StudySpec

    spec = StudySpec.from_dict(store.read_spec())
    return {a.name: spec.budget(a) * len(spec.search.seeds) for a in spec.arms}


def _cmd_status(args: argparse.Namespace) -> int:
    """Print a run directory's progress from its stored files only (no optimizer is built); every line
    fits 100 columns (a longer one wraps, indented)."""
    from lyaptune._termtable import fill
    from lyaptune.store import RunStore

    store = RunStore(args.run_dir)
    spec = store.read_spec()
    info = store.read_study_info()
    trials = store.trials(columns=["arm", "phase", "status", "objective"])  # pushed down: no JSON read
    from lyaptune._lock import run_state

    state = run_state(args.run_dir, info)
    print(fill(f"study {spec.get('name', '?')} ({state.describe()}; started {info.get('started', '?')})"))
    if state.state == "interrupted":
        print(f"  continue with: lyaptune resume {args.run_dir}")  # one line: copied as it is
    cluster = info.get("cluster")
    if cluster:
        nodes = cluster.get("nodes", [])
        per_node = ", ".join(f"{n.get('host') or '?'} cpu={n['cpu']:g} gpu={n['gpu']:g}" for n in nodes)
        line = (
            f"cluster: {len(nodes)} node{'s' if len(nodes) != 1 else ''} ({per_node}); "
            f"Ray {cluster.get('ray', '?')}, torch {cluster.get('torch', '?')}"
        )
        print(fill(line, indent="  ", more="    "))
    if info.get("resources_override"):
        res = info["resources_override"]
        line = f"resources per trial: {', '.join(f'{k}={v:g}' for k, v in res.items())} (--resources)"
        print(fill(line, indent="  ", more="    "))
    objective = spec.get("objective") or {}
    metric, better_min = objective.get("metric", "objective"), objective.get("mode", "min") == "min"
    budgets = _stored_budget(store, info)
    n_final = len((spec.get("search") or {}).get("final_seeds") or [])
    for arm in [a["name"] for a in spec.get("arms", [])]:
        rows = trials[trials["arm"] == arm] if len(trials) else trials
        search = rows[rows["phase"] == "search"] if len(rows) else rows
        final = rows[rows["phase"] == "final"] if len(rows) else rows
        counts = search["status"].value_counts().to_dict() if len(search) else {}
        ok = search[search["status"] == "completed"] if len(search) else search
        best = ""
        if len(ok):
            vals = ok["objective"].astype(float)
            v = vals.min() if better_min else vals.max()
            best = f"; best {metric} {v:.4g}" if math.isfinite(v) else ""
        fails = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()) if k != "completed")
        line = (
            f"{arm}: search {len(search)}/{budgets.get(arm, '?')}"
            f"{f' ({fails})' if fails else ''}; final {len(final)}/{n_final}{best}"
        )
        print(fill(line, indent="  ", more="    "))
    return 0
