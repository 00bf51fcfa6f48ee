"""The package's layers point one way (read from the source, not by importing it).

Bottom to top: **util** (audio, STFT, batching helpers, data sets), **core** (the contracts: backends,
checkpoints, train state, the registry), **score** (the shared score-model core, ``jaxse.diffusion``: SDE,
NCSN++, score models, samplers, the UDiffSE posterior, the NCSN++ checkpoint family base), the **families**
(one package each), and the **tools** (training loop, export, enhancement engine, evaluation, commands).
A module may import its own layer and the layers below, except that the tools reach the score core and the
families only through the registry's lazy lookup, and a family imports no other family. Two command aliases
(``python -m jaxse.convert``, ``jaxse.rvae_convert``) stand above everything and only re-export a command.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "jaxse"
UTIL = {"jaxse", "jaxse.errors", "jaxse.xla_flags", "jaxse.cli", "jaxse.audio", "jaxse.spectral", "jaxse.parallel",
        "jaxse.nmf", "jaxse.pytree",
        "jaxse.logging_utils", "jaxse.data", "jaxse.data.cache", "jaxse.data.files", "jaxse.data.manifest",
        "jaxse.data.pipeline"}
FAMILIES = ("jaxse.prior", "jaxse.rvae", "jaxse.sgmse", "jaxse.av")
# Command names users type (``python -m jaxse.convert``) that alias the command of a lower layer's module: they
# may import that module; nothing imports them.
ALIASES = {"jaxse.convert": "jaxse.diffusion.convert", "jaxse.rvae_convert": "jaxse.rvae.convert"}
MAX_MODULE_LINES = 800
MAX_FUNCTION_LINES = 120


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports_of(name: str, path: Path, known) -> set[str]:
    """The jaxse modules ``name`` imports anywhere in its source (module level or inside functions)."""
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(up + ([node.module] if node.module else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in known:  # "jaxse.diffusion.udiffse.PosteriorConfig" -> the module
                t = t.rpartition(".")[0]
            if t and t.startswith("jaxse") and t != name:
                found.add(t)
    return found


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports_of(name, path, known) for name, path in known.items()}


def layer(name: str) -> str:
    if name in ALIASES:
        return "alias"
    if name in UTIL:
        return "util"
    if name == "jaxse.registry" or name.startswith("jaxse.core"):
        return "core"
    if name == "jaxse.diffusion" or name.startswith("jaxse.diffusion."):
        return "score"
    for fam in FAMILIES:
        if name == fam or name.startswith(fam + "."):
            return fam
    return "tools"


ALLOWED = {
    "util": {"util"},
    "core": {"util", "core"},
    "score": {"util", "core", "score"},
    "tools": {"util", "core", "tools"},
}


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(g.get(v, ())):
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

    for v in sorted(g):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycle():
    assert cycles(graph()) == []


def test_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_imports_point_down():
    wrong = []
    for name, deps in graph().items():
        mine = layer(name)
        if mine == "alias":
            wrong += [f"{name} imports {d} (an alias imports only {ALIASES[name]})" for d in deps if d != ALIASES[name]]
            continue
        allowed = ALLOWED.get(mine, {"util", "core", "score", mine})  # a family: below it, and itself
        wrong += [f"{name} ({mine}) imports {d} ({layer(d)})" for d in sorted(deps) if layer(d) not in allowed]
    assert wrong == []


def test_layer_names():
    assert layer("jaxse.core.backend") == "core" and layer("jaxse.registry") == "core"
    assert layer("jaxse.diffusion.ncsnpp") == "score" and layer("jaxse.rvae.net") == "jaxse.rvae"
    assert layer("jaxse.training") == "tools" and layer("jaxse.evaluation.benchmark") == "tools"


def test_sizes():
    too_long = []
    for name, path in modules().items():
        text = path.read_text()
        lines = text.count("\n") + 1
        if lines > MAX_MODULE_LINES:
            too_long.append(f"{name}: {lines} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    too_long.append(f"{name}.{node.name}: {n} lines")
    assert too_long == []
