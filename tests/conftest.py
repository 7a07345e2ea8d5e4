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


# ----------------------------------------------------------------------------------- shared Ray
@pytest.fixture
def local_ray():
    """The local Ray (2 CPUs) shared by every in-process study of the session (``tests/_ray.py``)."""
    from _ray import shared_ray

    shared_ray()


def pytest_sessionfinish(session, exitstatus):
    from _ray import own_ray

    own_ray()


# ----------------------------------------------------------------------------------------- tiers
#: The test tiers, cheapest first. A test's tier is its marker: ``slow`` (whole-study smoke runs,
#: cluster, kill-and-resume and GPU-suite tests), ``integration`` (a real local Ray or a short real
#: study), otherwise ``fast`` (unit and in-process CLI tests). README "Development" names them.
TIERS = ("fast", "integration", "slow")
#: A guard against hangs, not a speed goal: the per-test timeout of each tier, in seconds.
TIMEOUT_S = {"fast": 300, "integration": 600, "slow": 900}


def pytest_addoption(parser):
    parser.addoption(
        "--tier",
        action="append",
        choices=(*TIERS, "all"),
        help="run this test tier (repeatable; 'all' runs every tier). Default: 'fast' when no test file "
        "or test id is named; every tier of the files or ids named.",
    )


def tier_of(item) -> str:
    """The tier of a collected test: its ``slow`` or ``integration`` marker, else ``fast``."""
    for tier in ("slow", "integration"):
        if item.get_closest_marker(tier) is not None:
            return tier
    return "fast"


def _chosen_tiers(config) -> set[str]:
    chosen = config.getoption("--tier")
    if chosen:
        return set(TIERS) if "all" in chosen else set(chosen)
    # a named file or test id (not a directory) runs every tier of what it names
    named = [a for a in config.args if a.split("::")[0].endswith(".py")]
    return set(TIERS) if named or config.option.markexpr else {"fast"}


def pytest_collection_modifyitems(config, items):
    chosen = _chosen_tiers(config)
    keep, dropped = [], {}
    for item in items:
        tier = tier_of(item)
        if tier in chosen:
            if item.get_closest_marker("timeout") is None:
                item.add_marker(pytest.mark.timeout(TIMEOUT_S[tier]))
            keep.append(item)
        else:
            dropped[tier] = dropped.get(tier, 0) + 1
    if dropped:
        config.hook.pytest_deselected(items=[i for i in items if tier_of(i) not in chosen])
        items[:] = keep
    config._lyaptune_tiers = (sorted(chosen, key=TIERS.index), dropped)


def pytest_terminal_summary(terminalreporter, config):
    chosen, dropped = getattr(config, "_lyaptune_tiers", ((), {}))
    if dropped:
        left = ", ".join(f"{dropped[t]} {t}" for t in TIERS if t in dropped)
        terminalreporter.write_line(
            f"tiers run: {', '.join(chosen)}; not run: {left} (--tier all runs every tier)"
        )
