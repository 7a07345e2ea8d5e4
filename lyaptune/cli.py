"""The ``lyaptune`` command line.

Every user error (a :class:`lyaptune.errors.UserError` or a ``ValueError`` from validation) is printed
as one line on stderr and exits with status 2; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from typing import Any

import yaml

from lyaptune.errors import UserError

__all__ = ["main", "build_parser"]


def _kv(text: str) -> tuple[str, Any]:
    """Parse ``key=value`` with the value read as YAML (``1e-3`` -> float, ``[0.9, 0.99]`` -> list)."""
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected key=value, got {text!r}")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        value = raw
    if isinstance(value, str):
        try:
            value = float(value) if any(ch in value for ch in ".eE") else value
        except ValueError:
            pass
    return key.strip(), value


def _batch_size(text: str) -> int | str:
    if text == "full":
        return "full"
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"batch size must be a positive integer or 'full', got {text!r}"
        ) from None


#: The ``fc`` model's registry defaults (``lyaptune list models``; tests/test_cli_help.py holds them equal):
#: 3 hidden ReLU layers of width 1000, papers/003's network, about 2.08M parameters on 8x8 digits.
_FC_DEPTH, _FC_WIDTH = 3, 1000


def _add_task_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("task")
    g.add_argument(
        "--dataset", default="digits", help="dataset registry name (default: %(default)s, embedded)"
    )
    g.add_argument(
        "--data-root",
        default=None,
        help="directory of dataset files (default: env LYAPTUNE_DATA_ROOT, else ./data)",
    )
    g.add_argument(
        "--download",
        action="store_true",
        help="let torchvision download missing files (default: off, nothing is downloaded)",
    )
    g.add_argument(
        "--data-arg",
        action="append",
        type=_kv,
        default=[],
        metavar="K=V",
        help="dataset option, repeatable (default: none)",
    )
    g.add_argument(
        "--model",
        default="fc",
        help=f"model registry name or timm:<name> (default: %(default)s, {_FC_DEPTH} hidden ReLU layers "
        f"of width {_FC_WIDTH}: about 2.08M parameters on digits, papers/003's network; "
        "smaller with --depth/--width)",
    )
    g.add_argument(
        "--depth", type=int, default=None, help=f"fc: number of hidden layers (default: {_FC_DEPTH})"
    )
    g.add_argument("--width", type=int, default=None, help=f"fc: hidden width h (default: {_FC_WIDTH})")
    g.add_argument(
        "--model-arg",
        action="append",
        type=_kv,
        default=[],
        metavar="K=V",
        help="model argument, repeatable (default: none)",
    )
    g.add_argument(
        "--init",
        default=None,
        help="initialisation scheme: kaiming-uniform, xavier, ... (default: each module's own)",
    )
    g.add_argument("--epochs", type=int, default=10, help="training epochs (default: %(default)s)")
    g.add_argument(
        "--batch-size",
        type=_batch_size,
        default="full",
        help="an integer or 'full', the whole training set (default: %(default)s)",
    )
    g.add_argument(
        "--validation-fraction",
        type=float,
        default=0.0,
        help="fraction of the training set held out for val_* metrics (default: %(default)s, none)",
    )
    g.add_argument(
        "--seed",
        type=int,
        default=0,
        help="training seed: initial weights, batch order, noise (default: %(default)s)",
    )
    g.add_argument(
        "--device",
        default="auto",
        help="auto (CUDA when present), cpu, cuda, cuda:N (default: %(default)s)",
    )


def _model_args(args: argparse.Namespace) -> dict[str, Any]:
    out = dict(args.model_arg)
    if args.depth is not None:
        out["depth"] = args.depth
    if args.width is not None:
        out["width"] = args.width
    return out


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(
        prog="lyaptune",
        description="Hyperparameter studies of Lyapunov-style optimizer step sizes: one training run "
        "(trial), a study (run, resume, status) and its analysis (report, compare).",
        epilog="A user error prints one line and exits with status 2; 'lyaptune COMMAND --help' describes "
        "each command.",
    )
    parser.add_argument(
        "--debug", action="store_true", help="show tracebacks for errors (default: one line per error)"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser(
        "trial",
        help="train one configuration and print one line per epoch",
        description="Train one configuration and print one line per epoch. The default network is fc: "
        f"{_FC_DEPTH} hidden ReLU layers of width {_FC_WIDTH} (papers/003), about 2.08M parameters on "
        "digits; pass --depth 2 --width 128 for the quickstart's network.",
    )
    _add_task_args(p)
    p.add_argument(
        "--optimizer",
        default="adam",
        help="optimizer registry name (default: %(default)s; lyaptune list optimizers)",
    )
    p.add_argument("--lr", type=float, default=None, help="learning rate (default: the registry's)")
    p.add_argument(
        "--opt",
        action="append",
        type=_kv,
        default=[],
        metavar="K=V",
        help="optimizer hyperparameter, repeatable, e.g. beta2=0.99 (default: the registry's)",
    )
    p.add_argument(
        "--schedule",
        default="constant",
        help="step-size schedule registry name (default: %(default)s; lyaptune list schedules)",
    )
    p.add_argument(
        "--sched",
        action="append",
        type=_kv,
        default=[],
        metavar="K=V",
        help="schedule parameter, repeatable (default: the registry's)",
    )
    p.add_argument(
        "--schedule-per",
        default="epoch",
        choices=["epoch", "step"],
        help="advance the schedule once per epoch or per optimizer step (default: %(default)s)",
    )
    p.add_argument(
        "--lipschitz",
        action="append",
        type=_kv,
        default=[],
        metavar="K=V",
        help="K_hat estimate setting for derived-constant, repeatable: samples, weights, sigma, batch, ... "
        "(default: the estimator's)",
    )
    p.add_argument(
        "--grad-noise",
        type=float,
        default=0.0,
        help="std of Gaussian noise added to every gradient (default: %(default)s, none)",
    )
    p.set_defaults(func=_cmd_trial)

    p = sub.add_parser("lipschitz", help="estimate K_hat (papers/003 Algorithm 2) and the derived step size")
    _add_task_args(p)
    p.add_argument("--samples", type=int, default=10, help="weight samples N (default: %(default)s)")
    p.add_argument(
        "--weights",
        default="normal",
        help="weight distribution W: normal, uniform, init (default: %(default)s)",
    )
    p.add_argument("--sigma", type=float, default=None, help="std of W=normal (default: per model)")
    p.add_argument(
        "--a", type=float, default=None, help="half-width of W=uniform, required there (default: none)"
    )
    p.add_argument(
        "--lipschitz-batch",
        type=_batch_size,
        default="full",
        help="'full' or a batch size for the Hessian-vector products (default: %(default)s)",
    )
    p.add_argument(
        "--iters",
        type=int,
        default=100,
        help="power iterations per weight sample at most (default: %(default)s)",
    )
    p.add_argument(
        "--tol",
        type=float,
        default=1e-3,
        help="relative change that ends the power iteration (default: %(default)s)",
    )
    p.add_argument(
        "--multiplier", type=float, default=1.0, help="factor on the derived step size (default: %(default)s)"
    )
    p.set_defaults(func=_cmd_lipschitz)

    p = sub.add_parser("list", help="list registered optimizers, schedules, datasets or models")
    p.add_argument(
        "what", choices=["optimizers", "schedules", "datasets", "models"], help="the registry to list"
    )
    p.set_defaults(func=_cmd_list)

    from lyaptune import _cli_analysis, _cli_store, _cli_study

    _cli_study.add_commands(sub)
    _cli_analysis.add_commands(sub)
    _cli_store.add_commands(sub)
    return parser


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.4g}"
    return str(v)


def _trial_config(args: argparse.Namespace, **fields: Any) -> Any:
    """The :class:`~lyaptune.train.TrialConfig` of the task options (validated by the one config model)."""
    from lyaptune.train import TrialConfig

    return TrialConfig(
        dataset=args.dataset,
        dataset_args=dict(args.data_arg),
        data_root=args.data_root,
        download=args.download,
        model=args.model,
        model_args=_model_args(args),
        init=args.init,
        epochs=args.epochs,
        batch_size=args.batch_size,
        seed=args.seed,
        device=args.device,
        **fields,
    )


def _cmd_trial(args: argparse.Namespace) -> int:
    from lyaptune.train import RECORD_FIELDS, run_trial

    opt = dict(args.opt)
    if args.lr is not None:
        opt["lr"] = args.lr
    config = _trial_config(
        args,
        validation_fraction=args.validation_fraction,
        optimizer=args.optimizer,
        optimizer_args=opt,
        schedule=args.schedule,
        schedule_args=dict(args.sched),
        schedule_per=args.schedule_per,
        lipschitz=dict(args.lipschitz),
        grad_noise=args.grad_noise,
    )
    cols = ["epoch", "train_loss", "grad_norm", "val_acc", "test_loss", "test_acc", "lr", "time_s"]

    def show(rec: dict[str, Any]) -> None:
        extra = {k: v for k, v in rec.items() if k not in RECORD_FIELDS}
        items = [f"{k}={_fmt(rec[k])}" for k in cols if not (k.startswith("val") and math.isnan(rec[k]))]
        items += [f"{k}={_fmt(v)}" for k, v in extra.items()]
        print("  ".join(items), flush=True)

    def say(line: str) -> None:  # the K_hat estimate of derived-constant: a line per weight sample
        print(line, flush=True)

    result = run_trial(config, on_epoch=show, progress=say)
    info = result.info
    if "derived_lr" in info:
        print(
            f"derived step size: alpha={info['derived_lr']:.6g} (L(w0)={info['initial_loss']:.4g}, "
            f"K_hat={info['k_hat']:.4g}, T={info['total_steps']})"
        )
    print(
        f"status={result.status}  epochs={result.epochs_completed}  wall_s={result.wall_s:.2f}  "
        f"params={info['num_params']}  device={info['device']}"
        + (f"  ({result.message})" if result.message else "")
    )
    return 0 if result.status == "completed" else 1


def _cmd_lipschitz(args: argparse.Namespace) -> int:
    import torch
    from torch.nn import functional as F

    from lyaptune.batching import epoch_steps
    from lyaptune.engines import build_model
    from lyaptune.lipschitz import LipschitzProgress, derived_step_size, estimate_lipschitz, initial_loss
    from lyaptune.models import lipschitz_sigma
    from lyaptune.train import load_task_data, resolve_device

    config = _trial_config(args)
    device = resolve_device(config.device)
    data = load_task_data(config, device)
    margs = dict(config.model_args)

    def build():
        return build_model(config, data, device)

    train = (data.train.x, data.train.y)
    n = len(data.train)
    steps = epoch_steps(config.batch_size, config.epochs, n)
    total = sum(steps)
    steps_per_epoch = steps[0] if len(set(steps)) == 1 else "varying"
    torch.manual_seed(args.seed)
    l0 = initial_loss(build(), F.cross_entropy, train)
    sigma = lipschitz_sigma(args.model, args.weights, args.sigma)
    w_desc = (
        f"init({args.init or 'each module reset_parameters'})" if args.weights == "init" else args.weights
    )
    print(
        f"dataset={args.dataset} (n={n})  model={args.model} {margs}  weights={w_desc}"
        f"{f'(sigma={sigma})' if sigma is not None else ''}  samples={args.samples}  device={device}",
        flush=True,
    )

    def progress(p: LipschitzProgress) -> None:
        print(f"  {p.line()}", flush=True)

    est = estimate_lipschitz(
        build,
        F.cross_entropy,
        train,
        samples=args.samples,
        weights=args.weights,
        sigma=sigma,
        a=args.a,
        batch=args.lipschitz_batch,
        seed=args.seed,
        iters=args.iters,
        tol=args.tol,
        device=device,
        init=args.init if args.weights == "init" else None,
        progress=progress,
    )
    alpha = derived_step_size(l0, est.k_hat, total, multiplier=args.multiplier)
    print(
        f"K_hat={est.k_hat:.6g}  per-sample=[{', '.join(f'{v:.4g}' for v in est.values)}]  "
        f"seconds={est.seconds:.2f}"
    )
    print(
        f"L(w0)={l0:.6g}  T={total} ({args.epochs} epochs x {steps_per_epoch} steps)  "
        f"alpha=sqrt(2 L(w0) / (K_hat T)){'' if args.multiplier == 1 else f' x {args.multiplier}'}"
        f"={alpha:.6g}"
    )
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    if args.what == "optimizers":
        from lyaptune.optim import get_optimizer_info, list_optimizers

        for name in list_optimizers():
            print(f"{name:20s} {get_optimizer_info(name).description}")
    elif args.what == "schedules":
        from lyaptune.optim import get_schedule_info, list_schedules

        for name in list_schedules():
            print(f"{name:20s} {get_schedule_info(name).description}")
    elif args.what == "datasets":
        from lyaptune.data import get_dataset_info, list_datasets

        for name in list_datasets():
            print(f"{name:20s} {get_dataset_info(name).description}")
    else:
        from lyaptune.models import get_model_info, list_models

        for name in list_models():
            print(f"{name:20s} {get_model_info(name).description}")
    return 0


def _check_run_dirs(args: argparse.Namespace) -> None:
    """A local ``RUN_DIR`` argument that is the parent of run directories (a ``--out`` folder) is refused
    with the run directories it holds, before the command starts anything.

    Raises:
      UserError: ``runs2 is not a run directory; it holds 1 (an --out folder): did you mean
        'runs2/quickstart'?``
    """
    import os

    given = getattr(args, "run_dirs", None) or [getattr(args, "run_dir", None)]
    for path in [p for p in given if p]:
        local = path.removeprefix("file://")
        if "://" in local or not os.path.isdir(local) or os.path.exists(os.path.join(local, "spec.yaml")):
            continue
        with os.scandir(local) as entries:
            inside = sorted(e.name for e in entries if os.path.isfile(os.path.join(e.path, "spec.yaml")))
        if inside:
            runs = ", ".join(f"'{os.path.join(path, name)}'" for name in inside[:5])
            more = f" (and {len(inside) - 5} more)" if len(inside) > 5 else ""
            one = "did you mean" if len(inside) == 1 else "did you mean one of"
            raise UserError(
                f"{path} is not a run directory; it holds {len(inside)} (an --out folder): "
                f"{one} {runs}{more}?"
            )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``lyaptune`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        _check_run_dirs(args)
        return int(args.func(args) or 0)
    except BrokenPipeError:  # output piped into a reader that stopped (| head): not an error
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        print("lyaptune: interrupted", file=sys.stderr)
        return 130
    except (UserError, ValueError) as exc:
        if args.debug:
            raise
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"lyaptune: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
