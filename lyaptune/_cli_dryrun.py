"""What ``lyaptune run --dry-run`` checks beyond the spec: the data files and the resources.

``check_study`` (run before this) checks the spec's fields and registry names and builds each arm's
optimizer and schedule. This module adds the two checks a study would otherwise fail on only after
Ray starts, where they can be made on the driver's machine, and says which it could not make:

- data: each arm's dataset files (:attr:`lyaptune.data.DatasetInfo.files`, or their ``.gz``) under the
  data directory the study would use; bundled and generated datasets need none.
- resources: for a study on a local Ray (no ``--address``, no ``RAY_ADDRESS``), whether this machine
  can place one trial's request (:func:`~lyaptune.study.preflight.check_resources`). A
  cluster's nodes are checked when the study starts, not here.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from lyaptune.errors import UserError

__all__ = ["dry_run_checks"]


def _missing(root: Path, files: tuple[str, ...]) -> list[str]:
    """Files of ``files`` found neither as they are nor as the ``.gz`` archive the loaders unpack."""
    return [f for f in files if not (root / f).exists() and not (root / f"{f}.gz").exists()]


def dry_run_checks(spec: Any, *, resources: dict[str, float] | None, address: str | None) -> list[str]:
    """Check a study's data files and resources where the driver can, and say what was not checked.

    Args:
      spec: the checked :class:`~lyaptune.study.spec.StudySpec` (after ``--smoke`` stand-ins).
      resources: the ``--resources`` override, or None.
      address: the ``--address`` given, or None.

    Returns:
      Lines to print: ``checked:`` and ``not checked:``, each followed by its items (indented, wrapped
      to the terminal's width).

    Raises:
      UserError: a dataset's files are missing on a local study (one line naming the dataset, the
        files and the directory), or this machine can never place one trial's request.
    """
    from lyaptune.data import get_dataset_info
    from lyaptune.study.preflight import _local_node, check_resources, with_resources
    from lyaptune.study.searcher import resolve_data_roots

    cluster = address or os.environ.get("RAY_ADDRESS")
    roots = resolve_data_roots(spec)
    checked = [
        "spec: fields and registry names; each arm's optimizer and schedule built with its fixed values "
        "and every searched bound"
    ]
    unchecked: list[str] = []
    seen: set[tuple[str, str]] = set()
    for arm in spec.arms:
        task = arm.task_for(spec.task)
        root = roots[arm.name]
        if (task.dataset, root) in seen:
            continue
        seen.add((task.dataset, root))
        files = get_dataset_info(task.dataset).files
        if not files:
            checked.append(f"data: {task.dataset} is bundled or generated (no files to read)")
            continue
        missing = _missing(Path(root), files)
        if not missing:
            checked.append(f"data: the {len(files)} files of {task.dataset} are present in {root}")
        elif task.download:
            checked.append(
                f"data: {task.dataset} lacks {len(missing)} files in {root}; task.download fetches them"
            )
        elif cluster:
            unchecked.append(
                f"data: {task.dataset} lacks {', '.join(missing)} in {root} on this machine; the cluster's "
                "nodes are checked when the study starts"
            )
        else:
            raise UserError(
                f"dataset '{task.dataset}' (arm '{arm.name}'): missing {', '.join(missing)} in data "
                f"directory {root}; put the files there, set task.data_root / $LYAPTUNE_DATA_ROOT, or set "
                "task.download: true"
            )
    res = with_resources(spec, resources).resources
    request = {"cpu": float(res.cpu), "gpu": float(res.gpu)}
    if cluster:
        unchecked.append(
            f"resources: cpu={request['cpu']:g}, gpu={request['gpu']:g} per trial on the cluster at "
            f"{cluster} (checked against its nodes when the study starts)"
        )
    else:
        node = _local_node()
        if node is None:
            unchecked.append("resources: this machine's CPUs and GPUs could not be read (Ray's layout)")
        else:
            why = check_resources(request, [node], where="this machine")
            if why:
                raise UserError(why)
            checked.append(
                f"resources: one trial's cpu={request['cpu']:g}, gpu={request['gpu']:g} fits this "
                f"machine (cpu={node['cpu']:g}, gpu={node['gpu']:g})"
            )
    unchecked.append("that the data files read correctly, and that training runs (the first trials do)")
    from lyaptune._termtable import fill

    return [
        "checked:",
        *(fill(c, indent="  ", more="    ") for c in checked),
        "not checked:",
        *(fill(u, indent="  ", more="    ") for u in unchecked),
    ]
