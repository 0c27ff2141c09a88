"""The package's layout: layers that import only downwards, no import cycles, short functions, modules of a size."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "finsent"
# bottom to top; a module may import its own subpackage, or any subpackage of a lower layer
LAYERS = (
    ("core",),
    ("data",),
    ("runs",),
    ("models",),
    ("inference",),
    ("training",),
    ("export", "documents", "monitoring"),
    ("apps",),
)
MAX_FUNCTION_LINES = 80
MAX_MODULE_LINES = 500


def _rank(module: str) -> int | None:
    parts = module.split(".")
    if len(parts) < 2:
        return None
    for rank, layer in enumerate(LAYERS):
        if parts[1] in layer:
            return rank
    return None


def _modules() -> dict[str, ast.Module]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        name = ".".join(("finsent", *path.relative_to(PACKAGE).with_suffix("").parts)).removesuffix(".__init__")
        out[name] = ast.parse(path.read_text(encoding="utf-8"))
    return out


def _imports(tree: ast.Module) -> set[str]:
    """Every finsent module a file imports, at the top or inside functions."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("finsent") and not node.level:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("finsent"))
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    graph = {}
    for name, tree in modules.items():
        targets = set()
        for imp in _imports(tree):
            while imp and imp not in modules:
                imp = imp.rpartition(".")[0]
            if imp and imp != name and not name.startswith(imp + "."):
                targets.add(imp)
        graph[name] = targets
    return graph


def test_every_subpackage_belongs_to_a_layer():
    subpackages = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}
    assert subpackages <= {name for layer in LAYERS for name in layer}, subpackages
    loose = sorted(p.name for p in PACKAGE.glob("*.py") if p.name not in ("__init__.py", "__main__.py"))
    assert loose == [], f"modules outside every layer: {loose}"


def test_imports_only_go_down():
    upward = []
    for source, targets in _graph().items():
        for target in targets:
            rs, rt = _rank(source), _rank(target)
            if rs is None or rt is None:
                continue
            same_package = source.split(".")[1] == target.split(".")[1]
            if rt > rs or (rt == rs and not same_package):
                upward.append(f"{source} -> {target}")
    assert upward == []


def test_no_import_cycle():
    graph = _graph()
    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join(path[path.index(nxt) :] + [nxt]))
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert cycles == []


@pytest.mark.parametrize("limit", [MAX_FUNCTION_LINES])
def test_functions_are_short(limit):
    long = []
    for name, tree in _modules().items():
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > limit:
                    long.append(f"{name}.{node.name}: {length} lines")
    assert long == []


def test_modules_are_of_a_size():
    big = [
        f"{p.relative_to(PACKAGE)}: {n} lines"
        for p in PACKAGE.rglob("*.py")
        if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES
    ]
    assert big == []


def test_the_cli_starts_without_the_heavy_libraries():
    """`finsent ...` imports torch, transformers and scikit-learn only when a command needs them: a file scored in 20 s
    should not spend a second of it importing what the scoring path never calls."""
    import subprocess
    import sys

    code = "import sys, finsent.apps.cli; print(sorted({'torch', 'transformers', 'sklearn'} & set(sys.modules)))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert loaded == "[]"
