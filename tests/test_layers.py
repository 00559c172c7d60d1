"""The architecture stays one-way: layers import only downward, no module cycles, `analysis` reads results only.

The layer order (README, Layout) from the bottom up:
study.core <- study.lm <- study.organism <- study.feedback <- methods <- study.run <- study.cli.
`analysis` stands beside the stack: it imports nothing of the project and no training stack, and only the run layer
and the CLI import it (to write and read the results contract).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("study", "methods", "analysis")
LAYERS = ["study.core", "study.lm", "study.organism", "study.feedback", "methods", "study.run", "study.cli"]
EXTRA = {"study": 0, "study.testing": LAYERS.index("study.run")}  # the package root; the plugin test helper
DEFERRED_LIMIT = 25
MAX_LINES = 450


def _modules() -> dict[str, Path]:
    mods = {}
    for pkg in PACKAGES:
        for f in (ROOT / pkg).rglob("*.py"):
            name = ".".join(f.relative_to(ROOT).with_suffix("").parts)
            mods[name.removesuffix(".__init__")] = f
    return mods


MODULES = _modules()


def _resolve(name: str) -> str | None:
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _imports(name: str, path: Path) -> list[tuple[str, int, bool, str]]:
    """(imported module, line, inside a function, source line) for every import in a module; relative imports
    resolved; `from pkg import sub` resolved to the submodule."""
    source = path.read_text()
    tree = ast.parse(source)
    lines = source.splitlines()
    in_function: set[int] = set()
    for fn in ast.walk(tree):
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            in_function.update(id(n) for n in ast.walk(fn) if isinstance(n, (ast.Import, ast.ImportFrom)))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                pkg = name if path.name == "__init__.py" else name.rpartition(".")[0]
                for _ in range(node.level - 1):
                    pkg = pkg.rpartition(".")[0]
                base = f"{pkg}.{base}" if base else pkg
            targets = [f"{base}.{a.name}" for a in node.names] if base.split(".")[0] in PACKAGES else [base]
        else:
            continue
        for t in targets:
            out.append((t, node.lineno, id(node) in in_function, lines[node.lineno - 1]))
    return out


def _layer(module: str) -> int | None:
    if module in EXTRA:
        return EXTRA[module]
    for i, prefix in reversed(list(enumerate(LAYERS))):
        if module == prefix or module.startswith(prefix + "."):
            return i
    return None


def _edges() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {m: set() for m in MODULES}
    for name, path in MODULES.items():
        for target, *_ in _imports(name, path):
            if target.split(".")[0] in PACKAGES:
                resolved = _resolve(target)
                if resolved and resolved != name:
                    edges[name].add(resolved)
    return edges


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges[v]:
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
                found.append(sorted(comp))

    for v in edges:
        if v not in index:
            visit(v)
    return found


def test_every_module_has_a_layer():
    assert [m for m in MODULES if not m.startswith("analysis") and _layer(m) is None] == []


def test_no_module_cycles():
    assert _cycles(_edges()) == []


def test_layers_import_only_downward():
    upward = []
    for name, targets in _edges().items():
        if name.startswith("analysis"):
            continue
        for t in targets:
            if t.startswith("analysis"):
                if _layer(name) < LAYERS.index("study.run"):
                    upward.append(f"{name} -> {t} (only study.run and the CLI read or write results)")
            elif _layer(t) > _layer(name):
                upward.append(f"{name} ({LAYERS[_layer(name)]}) -> {t} ({LAYERS[_layer(t)]})")
    assert upward == []


@pytest.mark.parametrize("forbidden", ["study", "methods", "torch", "transformers", "trl", "peft"])
def test_analysis_reads_results_only(forbidden):
    hits = [f"{name}:{line}" for name, path in MODULES.items() if name.startswith("analysis")
            for target, line, _, _ in _imports(name, path) if target.split(".")[0] == forbidden]
    assert hits == []


def test_imports_inside_functions_are_few_and_say_why():
    deferred = [(name, line, text.strip()) for name, path in MODULES.items()
                for target, line, inside, text in _imports(name, path)
                if inside and target.split(".")[0] in PACKAGES]
    assert len(deferred) <= DEFERRED_LIMIT
    assert [d for d in deferred if "#" not in d[2]] == []  # each with a one-line reason


def test_no_module_is_too_long():
    long = {name: n for name, path in MODULES.items() if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert long == {}


def test_the_checker_sees_a_planted_cycle_and_an_upward_import():
    """The checks above can fail: a cycle and an upward edge added to the real graph are found."""
    edges = {k: set(v) for k, v in _edges().items()}
    edges["study.core.errors"].add("study.run.cell")  # core -> run: upward, and run -> ... -> core closes a cycle
    assert any("study.core.errors" in c and "study.run.cell" in c for c in _cycles(edges))
    assert _layer("study.core.errors") < _layer("study.run.cell")
