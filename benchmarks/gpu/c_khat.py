"""Part c: K_hat (papers/003 Algorithm 2) of FC 3x1000 on mini-MNIST, full batch, 10 weight samples.

``estimate_lipschitz`` with the model's default sigma, after a one-sample warm-up (CUDA context,
torch.func tracing); the figure is the wall time of the 10-sample estimate, the device drained before
and after. The data is mini-MNIST's training set as ``benchmarks/lipschitz.py`` loads it (its function
is imported). Toy: FC 2x64 on 550 images, 2 samples. Goal: < 5 s.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence

import torch
from torch.nn import functional as F

from benchmarks.gpu.common import Part, arguments, data_root

GOAL_S = 5.0


def main(argv: Sequence[str] | None = None) -> None:
    args = arguments(__doc__, argv)
    with Part("c_khat", args.out, args.budget, args.toy) as part:
        os.environ.setdefault("LYAPTUNE_SHARED_DATA", data_root())
        from benchmarks.lipschitz import mnist_data
        from lyaptune.lipschitz import estimate_lipschitz
        from lyaptune.models import create_model, default_sigma

        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        depth, width, n, samples = (2, 64, 550, 2) if args.toy else (3, 1000, 5500, 10)
        data, source = mnist_data(n, device)
        sigma = default_sigma("fc")

        def build() -> torch.nn.Module:
            return create_model("fc", input_shape=(1, 28, 28), num_classes=10, depth=depth, width=width)

        def estimate(k: int):
            return estimate_lipschitz(
                build, F.cross_entropy, data, samples=k, weights="normal", sigma=sigma, seed=0, device=device
            )

        part.details.update(model=f"fc {depth}x{width}", data=source, samples=samples, sigma=sigma)
        estimate(1)  # warm-up
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        est = estimate(samples)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        wall = time.perf_counter() - t0
        part.figure("khat_s", wall)
        part.figure("khat_s_per_sample", wall / samples)
        part.figure("k_hat", est.k_hat)
        part.figure("hvps", sum(est.iterations))
        part.goal("khat_s", f"< {GOAL_S:g} s", wall < GOAL_S)
        part.details.update(
            values=list(est.values),
            iterations=list(est.iterations),
            converged=list(est.converged),
            skipped=[list(s) for s in est.skipped],
            method=est.method,
        )
        print(f"K_hat = {est.k_hat:.6g} from {samples} samples in {wall:.2f} s ({sum(est.iterations)} HVPs)")


if __name__ == "__main__":
    main()
