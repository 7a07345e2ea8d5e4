"""The local Ray the in-process integration tests share (one start per test session, not per module).

Tests that run a study in this process request the ``local_ray`` fixture (``conftest.py``), which calls
:func:`shared_ray`. A test that needs a Ray of its own (a ``runtime_env``, a multi-node
``ray.cluster_utils.Cluster``) calls :func:`own_ray` first; the next ``local_ray`` user starts the
shared one again. Drivers started as subprocesses (the CLI) start their own local Ray: a Ray started
by ``ray.init()`` here writes no ``ray_current_cluster`` file, so they never connect to this one.
"""

from __future__ import annotations


def shared_ray() -> None:
    """Start the shared local Ray (2 CPUs, no dashboard) unless it is running."""
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)


def own_ray() -> None:
    """Stop the shared local Ray (if running), before a test starts a Ray of its own."""
    import sys

    if "ray" in sys.modules and sys.modules["ray"].is_initialized():
        sys.modules["ray"].shutdown()
