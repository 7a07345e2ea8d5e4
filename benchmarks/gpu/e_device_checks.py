"""Part e: the device run agrees with the CPU run of the same seed, within stated tolerances.

Checks (each on the CPU and on ``--against``, default ``cuda``; FC 3x200 on mini-MNIST, full batch,
4 epochs; toy: FC 2x32, 3 epochs):
  single model     ``run_trial`` (Adam): every epoch's train/val/test loss, gradient norm, accuracies
  population       ``run_population`` of three step sizes (vmapped): the same, per member
  checkpoint       on the device: a run resumed from its epoch-2 checkpoint (saved through torch.save)
                   against the uninterrupted device run (tolerance of the device against itself)
  derived step     ``derived-constant`` (papers/003): K_hat, the derived alpha and the records
  optimizers       5 steps of each of lyam, rlo, rlo-lambda, rlo-lifted, expdecay-gradnorm, lion and
                   adam on the same random parameters and gradients: the parameters after them
AMP: lyaptune offers no mixed-precision option (no autocast in its engines), so there is none to check.

A value ``d`` (device) agrees with ``c`` (CPU) when ``|d - c| <= atol + rtol * |c|`` (numpy.isclose);
each check's tolerance is in the JSON. With no CUDA device (and ``--against cuda``) the part says
``no CUDA device: skipped`` and gives no figures. ``--against cpu`` runs every check CPU against CPU:
the machinery's self-check (everything must agree exactly).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from benchmarks.gpu.common import NO_CUDA, Part, arguments, data_root

RECORD_KEYS = ("train_loss", "grad_norm", "val_loss", "val_acc", "test_loss", "test_acc")
# float32 reductions run in another order on the device: losses agree to ~1e-5 relative after a few
# epochs of Adam; the gradient norm (a difference of nearly equal terms late in training) more loosely;
# an accuracy may flip a prediction or two of 1,000 test images.
TOL = {
    "train_loss": (1e-3, 1e-6),
    "val_loss": (1e-3, 1e-6),
    "test_loss": (1e-3, 1e-6),
    "grad_norm": (1e-2, 1e-6),
    "val_acc": (0.0, 5e-3),
    "test_acc": (0.0, 5e-3),
    "k_hat": (1e-3, 0.0),
    "derived_lr": (1e-3, 0.0),
    "params": (1e-4, 1e-6),
}
RESUME_TOL = (1e-5, 1e-7)
OPTIMIZERS = ("adam", "lyam", "rlo", "rlo-lambda", "rlo-lifted", "expdecay-gradnorm", "lion")


def compare(
    name: str, key: str, cpu: Sequence[float], dev: Sequence[float], tol: tuple[float, float]
) -> dict:
    """One check's row: the largest differences and whether every value agrees within ``tol``."""
    c, d = np.asarray(cpu, dtype=float), np.asarray(dev, dtype=float)
    rtol, atol = tol
    same_shape = c.shape == d.shape
    if same_shape and c.size:
        diff = np.abs(d - c)
        agree = bool(np.all(np.isclose(d, c, rtol=rtol, atol=atol)))
        max_abs = float(diff.max())
        max_rel = float((diff / np.maximum(np.abs(c), 1e-30)).max())
    else:
        agree, max_abs, max_rel = False, float("nan"), float("nan")
    return {
        "check": name,
        "quantity": key,
        "n": int(c.size),
        "max_abs_diff": max_abs,
        "max_rel_diff": max_rel,
        "rtol": rtol,
        "atol": atol,
        "agree": agree,
    }


def record_rows(name: str, cpu: list[dict], dev: list[dict], tol: dict | None = None) -> list[dict]:
    rows = []
    for k in RECORD_KEYS:
        c = [r[k] for r in cpu if r.get(k) is not None]
        d = [r[k] for r in dev if r.get(k) is not None]
        rows.append(compare(name, k, c, d, (tol or TOL)[k]))
    return rows


def optimizer_params(name: str, device: torch.device) -> list[np.ndarray]:
    """Parameters after 5 steps of ``name`` from seeded (CPU-drawn) parameters and gradients."""
    from lyaptune.optim import create_optimizer

    g = torch.Generator().manual_seed(0)
    shapes = [(64, 32), (32,), (10, 64), (10,)]
    params = [torch.nn.Parameter(torch.randn(s, generator=g).to(device)) for s in shapes]
    grads = [[0.1 * torch.randn(s, generator=g).to(device) for s in shapes] for _ in range(5)]
    opt = create_optimizer(name, params)
    for step in grads:
        for p, gr in zip(params, step, strict=True):
            p.grad = gr
        opt.step()
    return [p.detach().cpu().numpy().ravel() for p in params]


def main(argv: Sequence[str] | None = None) -> None:
    args = arguments(
        __doc__,
        argv,
        lambda ap: ap.add_argument("--against", default="cuda", help="device compared with the CPU"),
    )
    with Part("e_device_checks", args.out, args.budget, args.toy) as part:
        part.note("AMP: lyaptune offers no mixed-precision option, so there is none to check")
        if args.against.startswith("cuda") and not torch.cuda.is_available():
            part.skip(NO_CUDA)
            print(f"e_device_checks: {NO_CUDA}")
            return
        from lyaptune.population import run_population
        from lyaptune.train import TrialConfig, run_trial

        dev = args.against
        depth, width, epochs = (2, 32, 3) if args.toy else (3, 200, 4)
        task = dict(
            dataset="mini-mnist",
            data_root=data_root(),
            model="fc",
            model_args={"depth": depth, "width": width},
            epochs=epochs,
            batch_size="full",
            validation_fraction=0.1,
            seed=0,
        )
        part.details.update(against=dev, task=task, tolerances={k: list(v) for k, v in TOL.items()})
        checks: list[dict[str, Any]] = []

        def add(rows: list[dict]) -> None:
            checks.extend(rows)
            part.details["checks"] = checks
            part.figure("checks_total", len(checks))
            part.figure("checks_agreeing", sum(r["agree"] for r in checks))

        def trial(device: str, **kw: Any) -> Any:
            return run_trial(TrialConfig(**task, device=device, **kw))

        adam = {"optimizer": "adam", "optimizer_args": {"lr": 1e-3}}
        cpu_run, dev_run = trial("cpu", **adam), trial(dev, **adam)
        add(record_rows("single model", cpu_run.records, dev_run.records))

        part.check(5, "population check")
        lrs = (1e-3, 3e-3, 1e-2)

        def population(device: str) -> list:
            cfgs = [
                TrialConfig(**task, device=device, optimizer="adam", optimizer_args={"lr": lr}) for lr in lrs
            ]
            return run_population(cfgs)

        for i, (c, d) in enumerate(zip(population("cpu"), population(dev), strict=True)):
            add(record_rows(f"population member {i} (lr {lrs[i]:g})", c.records, d.records))

        part.check(5, "checkpoint / resume check")
        saved: dict[int, bytes] = {}

        def keep(state: dict) -> None:
            buf = io.BytesIO()
            torch.save(state, buf)
            saved[int(state["epoch"])] = buf.getvalue()

        full = run_trial(TrialConfig(**task, device=dev, **adam), on_checkpoint=keep, checkpoint_every=2)
        state = torch.load(io.BytesIO(saved[2]), weights_only=False)
        resumed = run_trial(TrialConfig(**task, device=dev, **adam), resume_from=state)
        tail = [r for r in full.records if r["epoch"] > 2]
        tail_resumed = [r for r in resumed.records if r["epoch"] > 2]
        add(record_rows(f"checkpoint / resume on {dev}", tail, tail_resumed, {k: RESUME_TOL for k in TOL}))

        part.check(5, "derived step check")
        derived = {**adam, "schedule": "derived-constant", "lipschitz": {"samples": 2 if args.toy else 3}}
        c, d = trial("cpu", **derived), trial(dev, **derived)
        add([compare("derived step", k, [c.info[k]], [d.info[k]], TOL[k]) for k in ("k_hat", "derived_lr")])
        add(record_rows("derived step", c.records, d.records))

        part.check(3, "optimizer checks")
        for name in OPTIMIZERS:
            c_p = np.concatenate(optimizer_params(name, torch.device("cpu")))
            d_p = np.concatenate(optimizer_params(name, torch.device(dev)))
            add([compare(f"optimizer {name}, 5 steps", "params", c_p, d_p, TOL["params"])])

        bad = [f"{r['check']}: {r['quantity']}" for r in checks if not r["agree"]]
        for r in checks:
            print(
                f"{r['check']:34s} {r['quantity']:11s} max |d| {r['max_abs_diff']:.3g} "
                f"(rel {r['max_rel_diff']:.3g}) {'agrees' if r['agree'] else 'DISAGREES'}"
            )
        part.data["message"] = f"{len(checks) - len(bad)} of {len(checks)} agree" + (
            f"; disagree: {', '.join(bad)}" if bad else ""
        )


if __name__ == "__main__":
    main()
