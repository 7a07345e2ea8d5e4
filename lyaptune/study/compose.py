"""Reading a study spec file: YAML (1.2 numbers, no duplicate keys) and ``extends:`` composition.

:func:`resolve_spec_file` returns the merged mapping, not yet validated;
:func:`lyaptune.study.spec.load_spec` validates it into a :class:`~lyaptune.study.spec.StudySpec`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from lyaptune._fields import _join
from lyaptune.errors import ConfigError

__all__ = ["EXPERIMENTS_DIR", "resolve_spec_file"]


class _SpecLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that reads ``1e-5`` as a float (YAML 1.2) and rejects duplicate keys."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *anchor` may be overridden; not a duplicate
                continue
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, str) and key in seen:
                mark = key_node.start_mark
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


_SpecLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


EXPERIMENTS_DIR = Path(__file__).resolve().parents[2] / "experiments"
"""Where ``extends:`` also looks for a base spec (after the extending spec's own directory)."""


def _read_mapping(path: Path) -> dict[str, Any]:
    """The YAML mapping of one spec file (no ``extends`` resolution)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such spec file") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory, not a spec file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the spec file ({exc})") from None
    try:
        data = yaml.load(text, Loader=_SpecLoader)  # noqa: S506  (a SafeLoader subclass)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{path}: YAML syntax error{where}: {problem}") from None
    if not isinstance(data, Mapping):
        raise ConfigError(
            f"{path}: a study spec must be a YAML mapping (name, task, arms, ...), got {type(data).__name__}"
        )
    return dict(data)


def _find_base(path: Path, ref: Any) -> Path:
    if not isinstance(ref, str) or not ref.strip():
        raise ConfigError(f"{path}: extends: must be the path or name of a spec file, got {ref!r}")
    names = [ref] if ref.endswith((".yaml", ".yml")) else [ref + ".yaml", ref]
    roots = [path.parent, EXPERIMENTS_DIR]
    for root in roots:
        for name in names:
            candidate = root / name
            if candidate.is_file():
                return candidate.resolve()
    where = " or ".join(str(r) for r in dict.fromkeys(roots))
    raise ConfigError(f"{path}: extends: no spec file {ref!r} in {where}")


def _merge(base: Mapping[str, Any], over: Mapping[str, Any], where: str) -> dict[str, Any]:
    """``over`` deep-merged onto ``base``: mappings merge key by key, ``null`` removes a key, anything
    else (a list, a value) replaces; the top-level ``arms`` merge by name (see :func:`resolve_spec_file`)."""
    out = dict(base)
    for key, value in over.items():
        if value is None:
            out.pop(key, None)
        elif where == "" and key == "arms":
            out[key] = _merge_arms(base.get("arms"), value)
        elif isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(out[key], value, _join(where, key))
        else:
            out[key] = value
    return out


def _merge_arms(base: Any, over: Any) -> Any:
    if not isinstance(base, list) or not isinstance(over, list):
        return over  # not both lists: the override replaces, and validation names what is wrong
    arms = [dict(a) if isinstance(a, Mapping) else a for a in base]
    index = {a.get("name"): i for i, a in enumerate(arms) if isinstance(a, Mapping)}
    for arm in over:
        name = arm.get("name") if isinstance(arm, Mapping) else None
        if name is not None and name in index:
            arms[index[name]] = _merge(arms[index[name]], arm, f"arms[{index[name]}]")
        else:
            arms.append(arm)
    return arms


def resolve_spec_file(path: str | Path) -> dict[str, Any]:
    """A spec file's mapping with its ``extends:`` chain merged in, not yet validated.

    ``extends: <path or name>`` names a base spec file, looked up relative to the extending file's
    directory, then in :data:`EXPERIMENTS_DIR` (``.yaml`` may be left out). A base may be partial (a
    shared ``task`` and ``arms``, no ``name``) and may extend another. The extending file's keys are
    deep-merged onto the base: mappings (``task``, ``search``, an arm's ``lipschitz`` ...) merge key by
    key, ``null`` removes a key (back to its default), lists and values replace, and ``arms`` merge by
    name: an arm with a base arm's name is merged onto it, others are appended in order.

    Raises:
      ConfigError: an unreadable file, a missing base, or a cycle of ``extends``.
    """
    return _resolve_file(Path(path), ())


def _resolve_file(path: Path, chain: tuple[Path, ...]) -> dict[str, Any]:
    data = _read_mapping(path)
    if "extends" not in data:
        return data
    base_path = _find_base(path, data.pop("extends"))
    here = path.resolve()
    if base_path in (*chain, here):
        cycle = " -> ".join(str(p) for p in (*chain, here, base_path))
        raise ConfigError(f"{path}: extends: a cycle ({cycle})")
    return _merge(_resolve_file(base_path, (*chain, here)), data, "")
