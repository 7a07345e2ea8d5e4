"""The package's import graph: no cycles, and the layers of HOUSE_STYLE ("Layers, no loops").

The graph is read from the source with ``ast`` (module-level and function-level imports alike), so a
lazy import inside a function counts: a loop hidden in a function is still a loop.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "lyaptune"


def _modules() -> dict[str, Path]:
    mods = {}
    for path in PKG.rglob("*.py"):
        rel = path.relative_to(PKG.parent).with_suffix("")
        name = ".".join(rel.parts)
        mods[name.removesuffix(".__init__")] = path
    return mods


def _imports(mods: dict[str, Path]) -> dict[str, set[str]]:
    """Module -> the package modules (and external top-level packages) it imports."""
    edges: dict[str, set[str]] = {m: set() for m in mods}
    for m, path in mods.items():
        is_pkg = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = m.split(".") if is_pkg else m.split(".")[:-1]
                    base = base[: len(base) - (node.level - 1)]
                    b = ".".join([*base, node.module] if node.module else base)
                else:
                    b = node.module or ""
                subs = [f"{b}.{a.name}" for a in node.names if f"{b}.{a.name}" in mods]
                targets = subs or [b]
            else:
                continue
            for t in targets:
                if t.split(".")[0] != "lyaptune":
                    edges[m].add(t.split(".")[0])  # an external package
                    continue
                while t and t not in mods:
                    t = t.rpartition(".")[0]
                if t and t != m and t != "lyaptune":
                    edges[m].add(t)
    return edges


MODS = _modules()
EDGES = _imports(MODS)


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in edges:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def test_the_graph_reader_sees_a_lazy_import_and_a_cycle():
    # the reader itself, on a hand-made graph: a -> b -> a is a cycle, a -> c is not
    assert _cycles({"a": {"b", "c"}, "b": {"a"}, "c": set()}) == [["a", "b"]]
    # and on the package: train imports the engines inside run_trial (a function-level import)
    assert "lyaptune.engines" in EDGES["lyaptune.train"]


def test_no_import_cycle_among_lyaptune_modules():
    assert _cycles(EDGES) == []


def _in(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


TRIAL = ("lyaptune.train", "lyaptune.engines", "lyaptune.loop", "lyaptune.population")
METHODS_ = ("lyaptune.optim", "lyaptune.lipschitz")
STUDY_DRIVER = (
    "lyaptune.study.runner",
    "lyaptune.study.ray_session",
    "lyaptune.study.preflight",
    "lyaptune.study.searcher",
    "lyaptune.study.tune_adapter",
    "lyaptune.study.trainable",
)

LAYER_RULES = [
    # (who, must never import directly (a module imports only from below), why)
    (
        TRIAL,
        ("lyaptune.study", "lyaptune.analysis", "lyaptune.store", "ray", "optuna"),
        "a trial never imports the study",
    ),
    (
        METHODS_,
        (*TRIAL, "lyaptune.study", "lyaptune.analysis", "lyaptune.store", "ray", "optuna"),
        "the methods never import the trainer or the study",
    ),
    (
        ("lyaptune.analysis",),
        (*STUDY_DRIVER, *METHODS_, "ray", "lyaptune.train"),
        "analysis never imports the driver or the methods",
    ),
    (
        ("lyaptune.store",),
        ("lyaptune.study", *METHODS_, "lyaptune.analysis", "torch"),
        "the store never imports the study or the methods",
    ),
    (
        ("lyaptune.config", "lyaptune.metrics", "lyaptune._records", "lyaptune.errors"),
        ("torch", *TRIAL, "lyaptune.study"),
        "configs and records sit below everything",
    ),
    (
        ("lyaptune.faults",),
        ("lyaptune", "torch", "ray", "optuna", "pyarrow"),
        "the fault-injection points import nothing of lyaptune's (every layer calls them)",
    ),
]


@pytest.mark.parametrize("who, forbidden, why", LAYER_RULES, ids=[r[2] for r in LAYER_RULES])
def test_layers(who, forbidden, why):
    bad = []
    for m in sorted(MODS):
        if _in(m, who):
            bad += [f"{m} -> {t}" for t in sorted(EDGES[m]) if _in(t, forbidden)]
    assert not bad, f"{why}: " + "; ".join(bad[:10])
