"""The package's import graph keeps its layers: no cycle, and nothing generic imports the demo."""

import ast
from pathlib import Path

import rlhf_recipes

PACKAGE_DIR = Path(rlhf_recipes.__file__).parent
# Layers that must work for any task: none of them may import the demo task.
GENERIC = ("artifacts", "config", "data", "models", "stages", "ppo", "pipeline", "report", "tools")


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Module -> the package modules it imports (at the top or inside functions)."""
    paths = {_module_name(path): path for path in PACKAGE_DIR.rglob("*.py")}
    graph = {name: set() for name in paths}
    for name, path in paths.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module
                submodules = {f"{target}.{alias.name}" for alias in node.names} & paths.keys()
                # `from . import x` depends on the submodule x; `from .m import f` on m itself
                graph[name] |= submodules or {target} & paths.keys()
            elif isinstance(node, ast.Import):
                graph[name] |= {alias.name for alias in node.names} & paths.keys()
        graph[name].discard(name)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules, or None."""
    state: dict[str, str] = {}

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = "open"
        for child in sorted(graph[node]):
            if state.get(child) == "open":
                return path[path.index(child) :] + [child]
            if child not in state and (cycle := visit(child, path + [child])):
                return cycle
        state[node] = "done"
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start, [start])):
            return cycle
    return None


def test_the_cycle_finder_finds_a_planted_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_the_package_has_no_import_cycle():
    assert find_cycle(import_graph()) is None


def test_no_generic_layer_imports_the_demo():
    offenders = {
        (module, imported)
        for module, imports in import_graph().items()
        if module.partition(".")[2].split(".")[0] in GENERIC
        for imported in imports
        if imported.startswith("rlhf_recipes.demo")
    }
    assert not offenders
