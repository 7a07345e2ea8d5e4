import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def shared_data_root() -> Path:
    """Where ../shared/data lives (real MNIST), or LYAPTUNE_SHARED_DATA."""
    env = os.environ.get("LYAPTUNE_SHARED_DATA")
    return Path(env) if env else REPO.parent / "shared" / "data"


@pytest.fixture
def mnist_root() -> Path:
    root = shared_data_root()
    if (
        not (root / "MNIST" / "raw" / "train-images-idx3-ubyte").exists()
        and not (root / "MNIST" / "raw" / "train-images-idx3-ubyte.gz").exists()
    ):
        pytest.skip(f"real MNIST not found under {root}/MNIST/raw (set LYAPTUNE_SHARED_DATA)")
    return root
