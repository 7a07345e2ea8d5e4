"""``python3 -m benchmarks.gpu.install WHEEL_DIR``: print the wheels whose distribution is not installed.

The GPU image already holds numpy, scipy, matplotlib, ...: installing the carried copies over them
(``--target`` comes first on ``PYTHONPATH``) would mix versions that were built together, so the
suite's install step installs only what is missing.
"""

from __future__ import annotations

import re
import sys
from importlib import metadata
from pathlib import Path


def normalize(name: str) -> str:
    """PEP 503 normalized distribution name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def missing(wheel_dir: str | Path) -> list[Path]:
    """The wheels in ``wheel_dir`` whose distribution this Python cannot find installed."""
    installed = {normalize(d.metadata["Name"] or "") for d in metadata.distributions()}
    return [
        w for w in sorted(Path(wheel_dir).glob("*.whl")) if normalize(w.name.split("-")[0]) not in installed
    ]


if __name__ == "__main__":
    for w in missing(sys.argv[1]):
        print(w)
