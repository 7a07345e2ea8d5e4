"""Part a: ms per ``step()`` of lyaptune's optimizers vs torch Adam fused / foreach, on ViT-B/16's shapes.

Parameters and gradients are filled with seeded random numbers in the 152 shapes of ViT-B/16 (86.6M
parameters; toy: ViT-Ti/16's, 5.7M), as ``benchmarks/optimizer_step.py`` builds them (its functions are
imported). Each step is timed with CUDA events (on CUDA; ``time.perf_counter`` after
``torch.cuda.synchronize()`` on the CPU), in interleaved rounds, median kept. The bandwidth floor of
an optimizer is the bytes one step must move,

    bytes = numel * element size * (3 + 2 * state tensors per parameter)
            (read and write the parameters, read the gradients, read and write each state tensor),

over the device's measured copy bandwidth (read + write). Goal: each of ours <= 1.1 x fused Adam.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence

import torch

from benchmarks.gpu.common import Part, arguments
from benchmarks.optimizer_step import (
    copy_bandwidth,
    make_params,
    random_tensors,
    state_tensors_per_param,
    time_interleaved,
)
from lyaptune.optim import create_optimizer, list_optimizers

OURS = ("lyam", "rlo", "rlo-lambda", "rlo-lifted", "expdecay-gradnorm", "lion")
GOAL = 1.1


def vit_shapes(name: str) -> list[torch.Size]:
    """Parameter shapes of the timm model ``name``, built on the meta device (no memory, no download)."""
    import timm

    with torch.device("meta"):
        net = timm.create_model(name, pretrained=False)
    return [p.shape for p in net.parameters()]


def candidates() -> list[tuple[str, Callable[[list[torch.nn.Parameter]], torch.optim.Optimizer]]]:
    """(label, factory): torch Adam fused and foreach first, then ours with foreach kernels where offered."""
    out = [
        ("adam fused", lambda ps: torch.optim.Adam(ps, lr=1e-3, fused=True)),
        ("adam foreach", lambda ps: torch.optim.Adam(ps, lr=1e-3, foreach=True)),
    ]
    registered = set(list_optimizers())
    for name in OURS:
        if name in registered:
            out.append((name, lambda ps, n=name: _create(n, ps)))
    return out


def _create(name: str, params: list[torch.nn.Parameter]) -> torch.optim.Optimizer:
    try:
        return create_optimizer(name, params, foreach=True)
    except (TypeError, ValueError):  # an optimizer without a foreach switch (lion: pytorch-optimizer's)
        return create_optimizer(name, params)


def time_cuda_events(
    fns: Sequence[Callable[[], object]], device: torch.device, *, iters: int, warmup: int
) -> list[float]:
    """Median seconds per call of each of ``fns`` by CUDA events, in ``iters`` interleaved rounds."""
    for fn in fns:
        for _ in range(warmup):
            fn()
    torch.cuda.synchronize(device)
    events = [[] for _ in fns]
    for _ in range(iters):
        for fn, evs in zip(fns, events, strict=True):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            evs.append((start, end))
    torch.cuda.synchronize(device)
    return [statistics.median(s.elapsed_time(e) for s, e in evs) / 1e3 for evs in events]


def main(argv: Sequence[str] | None = None) -> None:
    args = arguments(__doc__, argv)
    with Part("a_optimizer_step", args.out, args.budget, args.toy) as part:
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        gpu = device.type == "cuda"
        model = "vit_tiny_patch16_224" if args.toy else "vit_base_patch16_224"
        iters, warmup = (5, 2) if args.toy else (100, 10)
        if not gpu:
            torch.set_num_threads(1)  # a shared CPU: one thread keeps the timings steady
        shapes = vit_shapes(model)
        numel = sum(s.numel() for s in shapes)
        elsize = 4
        part.details.update(
            model=model,
            tensors=len(shapes),
            parameters=numel,
            dtype="float32",
            iters=iters,
            warmup=warmup,
            timer="CUDA events" if gpu else "perf_counter (CPU, 1 thread)",
        )
        part.figure("parameters_M", numel / 1e6)

        copy_bytes = (1 << 30) if gpu else (1 << 24 if args.toy else 1 << 28)
        bw = copy_bandwidth(device, nbytes=copy_bytes, iters=20 if gpu else 5)
        part.figure("copy_bandwidth_GBps", bw / 1e9)

        part.check(5, "the optimizer steps")
        grads = random_tensors(shapes, device, torch.float32, seed=1, scale=1e-2)
        entries = []
        for label, factory in candidates():
            params = make_params(grads)
            try:
                opt = factory(params)
            except (RuntimeError, ValueError) as exc:  # e.g. fused Adam where there is no kernel
                part.note(f"{label}: unavailable ({exc})")
                continue
            entries.append((label, opt, params))
        steps = [e[1].step for e in entries]
        if gpu:
            seconds = time_cuda_events(steps, device, iters=iters, warmup=warmup)
        else:
            seconds = time_interleaved(steps, device, iters=iters, warmup=warmup)

        baseline = "adam fused" if entries[0][0] == "adam fused" else entries[0][0]
        if baseline != "adam fused":
            part.note(f"fused Adam unavailable here: ratios are to {baseline}")
        base_s = seconds[0]
        rows = []
        for (label, opt, params), sec in zip(entries, seconds, strict=True):
            n_state = state_tensors_per_param(opt, params)
            traffic = numel * elsize * (3 + 2 * n_state)
            floor_s = traffic / bw
            key = label.replace(" ", "_").replace("-", "_")
            part.figure(f"{key}_ms", sec * 1e3)
            part.figure(f"{key}_floor_ms", floor_s * 1e3)
            part.figure(f"{key}_x_fused_adam", sec / base_s)
            rows.append(
                {
                    "optimizer": label,
                    "ms": sec * 1e3,
                    "x_fused_adam": sec / base_s,
                    "state_tensors": n_state,
                    "bytes_per_step": traffic,
                    "floor_ms": floor_s * 1e3,
                    "x_floor": sec / floor_s,
                }
            )
            if label in OURS:
                part.goal(f"{key}_x_fused_adam", f"<= {GOAL} x {baseline}", sec / base_s <= GOAL)
        part.details["rows"] = rows
        for r in rows:
            print(
                f"{r['optimizer']:20s} {r['ms']:9.3f} ms  {r['x_fused_adam']:5.2f} x {baseline}  "
                f"floor {r['floor_ms']:8.3f} ms ({r['state_tensors']} state)"
            )


if __name__ == "__main__":
    main()
