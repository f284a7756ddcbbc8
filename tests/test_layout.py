"""The layout's rules, read from the source: imports flow one way (no cycle, lazy imports counted), every package
is installed, and the commands that only read or serve (`gdexp.report`, `gdexp.ui`, `gdexp.server`) import no
training code."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "gdexp"


def module_of(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _nodes(tree: ast.AST, eager: bool) -> list[ast.AST]:
    """The statements that run: not those under `if TYPE_CHECKING:`; `eager`: only those that run when the module
    is imported (not inside a function)."""
    found: list[ast.AST] = []

    def walk(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                continue
            if eager and isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            found.append(child)
            walk(child)

    walk(tree)
    return found


def imports(*, eager: bool = False) -> dict[str, set[str]]:
    """Module -> the gdexp modules it imports: anywhere (a lazy import in a function too), or (`eager`) when it is
    imported itself."""
    modules = {module_of(p): p for p in ROOT.rglob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in _nodes(ast.parse(path.read_text()), eager):
            found: list[str] = []
            if isinstance(node, ast.Import):
                found = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base
                                                                                                    else []))
                found = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            graph[name] |= {m for m in found if m in modules and m != name}
    return graph


def test_no_import_cycle_counting_lazy_imports() -> None:
    graph = imports()
    cycles: list[list[str]] = []

    def visit(node: str, path: list[str]) -> None:
        for nxt in sorted(graph[node]):
            if nxt in path:
                cycles.append([*path[path.index(nxt):], nxt])
            elif len(cycles) < 5:
                visit(nxt, [*path, nxt])

    for start in sorted(graph):
        visit(start, [start])
        if cycles:
            break
    assert cycles == [], " -> ".join(cycles[0])


def test_the_reading_commands_import_no_training_code() -> None:
    """What importing them loads (a function that needs more imports it when it runs, as `validate` does)."""
    graph = imports(eager=True)
    training = {"gdexp.train", "gdexp.nn", "gdexp.optim", "gdexp.data", "gdexp.callbacks", "gdexp.diagnostics"}

    def reach(start: str) -> set[str]:
        seen, todo = set(), [start]
        while todo:
            for nxt in graph[todo.pop()] - seen:
                seen.add(nxt)
                todo.append(nxt)
        return seen

    for command in ("gdexp.report", "gdexp.ui", "gdexp.server"):
        assert not reach(command) & training, (command, sorted(reach(command) & training))


def test_every_package_is_installed() -> None:
    """pyproject.toml names its packages one by one (conf/ is mapped in as gdexp.conf): a package folder left out
    works in the editable install and is missing from a wheel."""
    import tomllib

    listed = set(tomllib.loads((ROOT.parent / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {module_of(p) for p in ROOT.rglob("__init__.py")}
    assert found <= listed, f"not in pyproject.toml's packages: {sorted(found - listed)}"
