"""The architecture's rules, checked on the source: layering without package-level import circles, and
the run folder's layout spelled out in one module only."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "workbench"

#: the layers, lowest first: a package may import its own layer and the ones below, never above
LAYERS: list[set[str]] = [
    {"errors", "dist"},
    {"io", "config", "device", "models"},
    {"results", "data"},
    {"views", "losses"},
    {"methods"},
    {"train"},
    {"evaluate"},
    {"runs"},
    {"analysis", "explain", "benchmark", "viz"},
    {"demo", "comparison", "multiview"},
    {"widgets", "cli"},
]


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> list[str]:
    """``workbench.*`` modules imported anywhere in the file (function-level too), except under TYPE_CHECKING."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skipped = {id(n) for node in ast.walk(tree)
               if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test) for n in ast.walk(node)}
    me = _module_name(path).split(".")
    if path.name != "__init__.py":
        me = me[:-1]  # the package the module is in
    found = []
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = me[: len(me) - node.level + 1]
                found.append(".".join(base + ([node.module] if node.module else [])))
            elif node.module:
                found.append(node.module)
    return [m for m in found if m == "workbench" or m.startswith("workbench.")]


def _package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def package_graph() -> dict[str, dict[str, list[str]]]:
    """``{package: {imported package: [importing module -> imported module, ...]}}`` inside workbench."""
    graph: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for path in sorted(PACKAGE.rglob("*.py")):
        src = _module_name(path)
        for target in _imports(path):
            a, b = _package(src), _package(target)
            if a and b and a != b:
                graph[a][b].append(f"{src} -> {target}")
    return graph


def _cycles(graph: dict[str, dict[str, list[str]]]) -> list[list[str]]:
    """Strongly connected components with more than one package (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, {}):
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

    for v in sorted(set(graph) | {w for e in graph.values() for w in e}):
        if v not in index:
            visit(v)
    return found


def test_the_cycle_finder_finds_a_circle_of_two_packages():
    assert _cycles({"a": {"b": []}, "b": {"a": []}}) == [["a", "b"]]
    assert _cycles({"a": {"b": []}, "b": {}}) == []


def test_no_package_level_import_circle():
    cycles = _cycles(package_graph())
    graph = package_graph()
    detail = [f"{a} -> {b}: {graph[a][b][0]}" for c in cycles for a in c for b in graph.get(a, {}) if b in c]
    assert not cycles, f"import circles between packages: {cycles}\n" + "\n".join(detail)


def test_packages_import_only_their_layer_and_below():
    layer = {pkg: i for i, group in enumerate(LAYERS) for pkg in group}
    packages = {p.stem if p.is_file() else p.name for p in PACKAGE.iterdir()
                if (p.suffix == ".py" and p.stem != "__init__") or (p.is_dir() and (p / "__init__.py").is_file())}
    assert packages <= set(layer), f"place these in LAYERS: {sorted(packages - set(layer))}"
    upward = [f"{a} (layer {layer[a]}) imports {b} (layer {layer[b]}): {how[0]}"
              for a, edges in package_graph().items() for b, how in edges.items() if layer[b] > layer[a]]
    assert not upward, "\n".join(upward)


def test_trainer_imports_nothing_above_methods():
    graph = package_graph()
    allowed = set().union(*LAYERS[:5])
    assert set(graph.get("train", {})) <= allowed, dict(graph["train"])


#: names of the run folder's parts; only workbench/runs/layout.py joins them to a path
_LAYOUT_NAMES = {"checkpoints", "analysis", "embeddings", "tensorboard", "metrics.jsonl", "metrics.previous.jsonl",
                 "config.json", ".lock", "last.safetensors"}


def _layout_uses(tree: ast.AST) -> list[tuple[int, str]]:
    """``x / "checkpoints"``-style path joins and checkpoint file names spelled out in code (help texts and
    docstrings may mention them)."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
            for side in (node.left, node.right):
                if isinstance(side, ast.Constant) and side.value in _LAYOUT_NAMES:
                    found.append((node.lineno, side.value))
                if isinstance(side, ast.JoinedStr) and side.values and isinstance(side.values[0], ast.Constant) \
                        and str(side.values[0].value).startswith(("epoch-", "last")):
                    found.append((node.lineno, ast.unparse(side)))
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.startswith(
                ("epoch-*", "last.safetensors", "checkpoints/")):
            found.append((node.lineno, node.value))
    return found


def test_the_layout_check_finds_path_joins():
    tree = ast.parse('p = run / "checkpoints" / "last.safetensors"\nq = d / f"epoch-{e:04d}.safetensors"\n'
                     'help = "saved in RUN/analysis/"\n')
    assert {v for _, v in _layout_uses(tree)} == {"checkpoints", "last.safetensors", "f'epoch-{e:04d}.safetensors'"}


def test_the_run_layout_is_spelled_out_in_one_module():
    offenders = [f"{path.relative_to(PACKAGE.parent)}:{line}: {what}"
                 for path in sorted(PACKAGE.rglob("*.py")) if path != PACKAGE / "runs" / "layout.py"
                 for line, what in _layout_uses(ast.parse(path.read_text(encoding="utf-8")))]
    assert not offenders, "use workbench.runs.RunFolder instead:\n" + "\n".join(offenders)
