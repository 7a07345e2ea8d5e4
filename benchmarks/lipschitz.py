"""Cost of the Lipschitz estimate (papers/003 Algorithm 2): HVP methods vs one gradient, and total time.

Workloads of papers/003:
- FC 3x1000 (ReLU) on mini-MNIST, full batch (5,500 images; real data from the shared data root when
  present, else random tensors of the same shape; the output says which);
- VGG-9 on CIFAR-10-sized random inputs, mini-batch.

For each, it prints the seconds of one gradient (forward + backward of the mean loss) and the seconds
per Hessian-vector product of each method relative to it, on the data as one chunk and split in two
chunks: the first HVP (for double backward on one chunk it also builds the first-order graph that
later HVPs reuse) and the marginal cost of each further one (minimum over ``--reps`` timings). Then the
total time of ``estimate_lipschitz`` with the faster method and the model's default sigma. On the CPU
times are process CPU seconds (summed over threads), so that other jobs on a shared machine do not
distort them; run with ``--threads 1`` for the cleanest ratios. On an accelerator they are wall-clock.

    python benchmarks/lipschitz.py [--device cpu] [--samples 2] [--quick]

``--quick`` shrinks the workloads for a small CPU: FC on 1,100 of the images, VGG-9 on a batch of 64.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch
from torch.nn import functional as F

from lyaptune.lipschitz import METHODS, estimate_lipschitz, hessian_spectral_norm


def _shared_data_root() -> Path:
    env = os.environ.get("LYAPTUNE_SHARED_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "data"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn, device: torch.device) -> float:
    """Seconds of ``fn()``: process CPU time on the CPU (robust to other jobs on a shared machine),
    wall-clock time on an accelerator."""
    clock = time.process_time if device.type == "cpu" else time.perf_counter
    _sync(device)
    t = clock()
    fn()
    _sync(device)
    return clock() - t


def mnist_data(n: int, device: torch.device) -> tuple[tuple[torch.Tensor, torch.Tensor], str]:
    """mini-MNIST training images via lyaptune.data, or random tensors of the same shape."""
    root = _shared_data_root()
    if (root / "MNIST" / "raw").is_dir():
        from lyaptune.data import load_dataset

        data = load_dataset("mini-mnist", data_root=root, device=device)
        x, y = data.train.x[:n], data.train.y[:n]
        return (x, y), f"mini-MNIST from {root} ({x.shape[0]} images)"
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 1, 28, 28, generator=g).to(device)
    y = torch.randint(0, 10, (n,), generator=g).to(device)
    return (x, y), f"random tensors shaped like mini-MNIST ({n} images; MNIST not found under {root})"


def cifar_like(n: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, 3, 32, 32, generator=g).to(device), torch.randint(0, 10, (n,), generator=g).to(
        device
    )


def measure(
    name: str, build, data, *, batch, samples: int, device: torch.device, extra: int, reps: int
) -> None:
    """Print gradient / HVP costs and the estimate's total time for one workload."""
    from lyaptune.init import initialize
    from lyaptune.models import default_sigma

    model_name = name.split()[0].lower()
    sigma = default_sigma(model_name)
    model = build().to(device)
    initialize(model.cpu(), "normal", sigma=sigma, generator=torch.Generator().manual_seed(0))
    model.to(device).eval()
    params = [p for p in model.parameters() if p.requires_grad]
    x, y = data
    hvp_data = (x, y) if batch == "full" else (x[:batch], y[:batch])
    n = hvp_data[0].shape[0]
    print(f"\n== {name}: {sum(p.numel() for p in params):,} parameters, {n} examples per Hessian ==")

    def grad() -> None:
        torch.autograd.grad(F.cross_entropy(model(hvp_data[0]), hvp_data[1]), params)

    grad()  # warm-up
    t_grad = min(_timed(grad, device) for _ in range(reps + 1))
    print(f"gradient (forward + backward): {t_grad:.3f} s")

    fastest = None
    for method in METHODS:
        for chunks in (1, 2):
            chunk_size = None if chunks == 1 else -(-n // 2)

            def run(k: int, method: str = method, chunk_size: int | None = chunk_size) -> None:
                # tol far below reachable: exactly k HVPs
                hessian_spectral_norm(
                    model,
                    F.cross_entropy,
                    hvp_data,
                    iters=k,
                    tol=1e-12,
                    method=method,
                    chunk_size=chunk_size,
                    generator=torch.Generator().manual_seed(0),
                )

            run(1)  # warm-up (torch.func tracing, allocator)
            t1 = min(_timed(lambda: run(1), device) for _ in range(reps))
            tk = min(_timed(lambda: run(1 + extra), device) for _ in range(reps))
            marginal = max(tk - t1, 0.0) / extra
            label = f"{method}, {chunks} chunk{'s' if chunks > 1 else ''}"
            print(
                f"{label:>32}: first HVP {t1:.3f} s ({t1 / t_grad:.2f} x gradient), "
                f"each further {marginal:.3f} s ({marginal / t_grad:.2f} x gradient)"
            )
            if chunks == 1 and (fastest is None or marginal < fastest[1]):
                fastest = (method, marginal)
    print(f"faster per HVP (one chunk): {fastest[0]}")

    result = {}

    def estimate() -> None:
        result["est"] = estimate_lipschitz(
            build,
            F.cross_entropy,
            data,
            samples=samples,
            weights="normal",
            sigma=sigma,
            batch=batch,
            seed=0,
            device=device,
            method=fastest[0],
        )

    seconds = _timed(estimate, device)
    est = result["est"]
    print(
        f"estimate_lipschitz ({fastest[0]}, samples={samples}, sigma={sigma}, batch={batch}): "
        f"{seconds:.1f} s ({seconds / samples:.1f} s per sample; {est.seconds:.1f} s wall), "
        f"{sum(est.iterations)} HVPs; K_hat={est.k_hat:.4g}, "
        f"iterations={list(est.iterations)}, converged={list(est.converged)}"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--samples", type=int, default=2, help="weight samples of the total-time estimate")
    parser.add_argument("--quick", action="store_true", help="smaller workloads for a small CPU")
    parser.add_argument("--reps", type=int, default=2, help="repetitions per timing (the minimum is kept)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--only", choices=["fc", "vgg9"], default=None, help="run one workload")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    from lyaptune.models import create_model

    print(f"torch {torch.__version__}, device {device}, {torch.get_num_threads()} threads", end="")
    if hasattr(os, "getloadavg"):
        print(f", load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs", end="")
    print(", quick" if args.quick else "")
    print("times: " + ("process CPU seconds" if device.type == "cpu" else "wall-clock seconds"))

    if args.only in (None, "fc"):
        n = 1100 if args.quick else 5500
        data, source = mnist_data(n, device)
        print(f"data: {source}")
        measure(
            "FC 3x1000 full batch",
            lambda: create_model("fc", input_shape=(1, 28, 28), num_classes=10, depth=3, width=1000),
            data,
            batch="full",
            samples=args.samples,
            device=device,
            extra=3,
            reps=args.reps,
        )
    if args.only in (None, "vgg9"):
        batch = 64 if args.quick else 256
        data = cifar_like(4 * batch, device)
        print(f"\ndata: random CIFAR-10-sized inputs ({data[0].shape[0]} images), mini-batch {batch}")
        measure(
            f"VGG9 mini-batch {batch}",
            lambda: create_model("vgg9", input_shape=(3, 32, 32), num_classes=10),
            data,
            batch=batch,
            samples=args.samples,
            device=device,
            extra=2,
            reps=args.reps,
        )


if __name__ == "__main__":
    main()
