"""Time one ``step()`` of lyaptune's optimizers against ``torch.optim.Adam`` on a real model's parameters.

Builds the parameter shapes of ResNet-18 (torchvision) or ViT-B/16 (timm, 86.6M parameters in 152
tensors), fills parameters and gradients with random numbers, and times ``step()`` of each optimizer:
warm-up, then the median of ``--iters`` steps, taken in interleaved rounds (one step of each optimizer
per round) so that a change of machine load hits all of them alike. Prints ms/step and the ratio to
Adam with the foreach kernels, and the effective memory bandwidth: the compulsory traffic of a step
(read and write the parameters and every parameter-sized state tensor, read the gradients once) over
its time, against a large device copy measured in the same run.

    python benchmarks/optimizer_step.py --threads 1           # CPU, ResNet-18
    python benchmarks/optimizer_step.py --device cuda         # GPU, ViT-B/16 by default
    python benchmarks/optimizer_step.py --compile             # adds torch.compile'd LyAm and Adam steps

A measurement, not a test: nothing is asserted. On a shared CPU use ``--threads 1``; several threads
competing with other processes for few cores make the timings swing by an order of magnitude.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from lyaptune.optim import create_optimizer, list_optimizers

MODELS = ("resnet18", "vit_b16")
OURS = ("lyam", "expdecay-gradnorm", "rlo", "rlo-lambda", "rlo-lifted")

Factory = Callable[[list[torch.nn.Parameter]], torch.optim.Optimizer]


def parameter_shapes(model: str) -> list[torch.Size]:
    """The parameter shapes of ``model``, built on the meta device (no memory, no download)."""
    with torch.device("meta"):
        if model == "resnet18":
            import torchvision

            net = torchvision.models.resnet18()
        elif model == "vit_b16":
            import timm

            net = timm.create_model("vit_base_patch16_224", pretrained=False)
        else:
            raise ValueError(f"unknown --params {model!r}; choices: {', '.join(MODELS)}")
    return [p.shape for p in net.parameters()]


def random_tensors(
    shapes: list[torch.Size], device: torch.device, dtype: torch.dtype, *, seed: int, scale: float
) -> list[torch.Tensor]:
    """Seeded normal tensors, so every optimizer sees the same numbers."""
    gen = torch.Generator(device=device).manual_seed(seed)
    return [scale * torch.randn(s, generator=gen, device=device, dtype=dtype) for s in shapes]


def make_params(grads: list[torch.Tensor]) -> list[torch.nn.Parameter]:
    """Fresh random parameters whose ``.grad`` are the given (shared, never written) gradient tensors."""
    values = random_tensors([g.shape for g in grads], grads[0].device, grads[0].dtype, seed=0, scale=1.0)
    params = [torch.nn.Parameter(v) for v in values]
    for p, g in zip(params, grads, strict=True):
        p.grad = g
    return params


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_once(fn: Callable[[], object], device: torch.device) -> float:
    """Seconds of one call of ``fn``, the device drained before and after."""
    _sync(device)
    t0 = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - t0


def time_interleaved(
    fns: list[Callable[[], object]], device: torch.device, *, iters: int, warmup: int
) -> list[float]:
    """Median seconds per call of each of ``fns``, timed in ``iters`` rounds of one call each."""
    for fn in fns:
        for _ in range(warmup):
            fn()
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(iters):
        for fn, ts in zip(fns, times, strict=True):
            ts.append(time_once(fn, device))
    return [statistics.median(ts) for ts in times]


def copy_bandwidth(device: torch.device, nbytes: int, iters: int) -> float:
    """Bytes per second of ``dst.copy_(src)`` on ``device``, counting the read and the write."""
    src = torch.empty(nbytes // 4, dtype=torch.float32, device=device).uniform_()
    dst = torch.empty_like(src)
    (seconds,) = time_interleaved([lambda: dst.copy_(src)], device, iters=iters, warmup=3)
    return 2 * src.numel() * 4 / seconds


def state_tensors_per_param(opt: torch.optim.Optimizer, params: list[torch.Tensor]) -> int:
    """Parameter-sized tensors the optimizer keeps per parameter (e.g. 2 for Adam)."""
    state = opt.state[params[0]]
    return sum(1 for v in state.values() if isinstance(v, torch.Tensor) and v.shape == params[0].shape)


def candidates(compile_: bool) -> list[tuple[str, Factory, bool]]:
    """(label, factory, compiled) for every optimizer step to time; Adam foreach first (the baseline)."""
    out: list[tuple[str, Factory, bool]] = [
        ("adam foreach", lambda ps: torch.optim.Adam(ps, lr=1e-3, foreach=True), False),
        ("adam for-loop", lambda ps: torch.optim.Adam(ps, lr=1e-3, foreach=False), False),
        ("adam fused", lambda ps: torch.optim.Adam(ps, lr=1e-3, fused=True), False),
    ]
    registered = set(list_optimizers())
    for name in OURS:
        if name not in registered:
            continue
        for foreach in (True, False):
            label = f"{name} {'foreach' if foreach else 'for-loop'}"
            out.append((label, lambda ps, n=name, f=foreach: create_optimizer(n, ps, foreach=f), False))
    if compile_:
        out.append(("adam foreach compiled", lambda ps: torch.optim.Adam(ps, lr=1e-3, foreach=True), True))
        out.append(("lyam foreach compiled", lambda ps: create_optimizer("lyam", ps, foreach=True), True))
        out.append(("lyam for-loop compiled", lambda ps: create_optimizer("lyam", ps, foreach=False), True))
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--params", choices=MODELS, default=None, help="default: resnet18 on CPU, vit_b16 on GPU"
    )
    parser.add_argument("--iters", type=int, default=None, help="timed steps (default 20 on CPU, 100 on GPU)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 3 / 10)")
    parser.add_argument("--dtype", choices=("float32", "bfloat16", "float64"), default="float32")
    parser.add_argument(
        "--compile", action="store_true", help="also time torch.compile(opt.step) of lyam, adam"
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)"
    )
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    device = torch.device(args.device)
    gpu = device.type == "cuda"
    model = args.params or ("vit_b16" if gpu else "resnet18")
    iters = args.iters or (100 if gpu else 20)
    warmup = args.warmup or (10 if gpu else 3)
    dtype = getattr(torch, args.dtype)
    shapes = parameter_shapes(model)
    numel = sum(s.numel() for s in shapes)
    elsize = torch.empty((), dtype=dtype).element_size()

    where = torch.cuda.get_device_name(device) if gpu else f"CPU, {torch.get_num_threads()} threads"
    print(f"torch {torch.__version__} on {where}")
    print(f"{model}: {len(shapes)} tensors, {numel / 1e6:.1f}M parameters, {args.dtype}", end="")
    print(f"; median of {iters} interleaved steps after {warmup}")
    copy_bw = copy_bandwidth(device, nbytes=(1 << 30) if gpu else (1 << 28), iters=20 if gpu else 10)
    print(f"device copy bandwidth (read + write): {copy_bw / 1e9:.1f} GB/s\n")

    grads = random_tensors(shapes, device, dtype, seed=1, scale=1e-2)
    entries = []  # (label, optimizer, params, step, note)
    for label, factory, compiled in candidates(args.compile):
        params = make_params(grads)
        try:
            opt = factory(params)
        except (RuntimeError, ValueError) as exc:  # e.g. fused on a device or dtype without the kernel
            print(f"{label}: unavailable ({exc})")
            continue
        step, note = opt.step, ""
        if compiled:
            step = torch.compile(opt.step)
            note = f"compile + first step {time_once(step, device):.0f} s"
        entries.append((label, opt, params, step, note))
    seconds = time_interleaved([e[3] for e in entries], device, iters=iters, warmup=warmup)

    header = (
        f"{'optimizer':30s} {'ms/step':>9s} {'x adam-foreach':>15s} {'state':>6s} {'GB/s':>7s} {'% copy':>7s}"
    )
    print(header)
    print("-" * len(header))
    baseline = seconds[0]
    for (label, opt, params, _, note), sec in zip(entries, seconds, strict=True):
        n_state = state_tensors_per_param(opt, params)
        traffic = numel * elsize * (3 + 2 * n_state)  # param read + write, grad read, state read + write
        bw = traffic / sec
        print(
            f"{label:30s} {sec * 1e3:9.2f} {sec / baseline:15.2f} {n_state:6d} "
            f"{bw / 1e9:7.1f} {100 * bw / copy_bw:6.0f}%  {note}".rstrip()
        )


if __name__ == "__main__":
    main()
