"""The import graph: no cycles in keras_mvs, thin entry points in experiments.

Function-local imports count: a cycle hidden behind one is still a cycle.
"""

import ast
import pathlib

REPO = pathlib.Path(__file__).resolve().parents[1]


def _module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules(package: str) -> dict:
    return {_module_name(path): path
            for path in sorted((REPO / package).rglob("*.py"))}


def _imports(path: pathlib.Path, known: dict) -> set:
    """The modules of `known` that the file at `path` imports anywhere."""
    name = _module_name(path)
    is_package = path.name == "__init__.py"
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".")
                anchor = anchor[:len(anchor) - node.level + is_package]
                base = ".".join(anchor + ([base] if base else []))
            # `from package import submodule` imports the submodule.
            targets = [f"{base}.{alias.name}"
                       if f"{base}.{alias.name}" in known else base
                       for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def _graph(*packages: str) -> dict:
    known = {}
    for package in packages:
        known.update(_modules(package))
    return {name: _imports(path, known) for name, path in known.items()}


def _cycle(graph: dict):
    """One cycle of `graph` as a list of modules, or None."""
    state = {}

    def visit(node, stack):
        state[node] = "open"
        stack.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == "open":
                return stack[stack.index(target):] + [target]
            if target not in state:
                found = visit(target, stack)
                if found:
                    return found
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node, [])
            if found:
                return found
    return None


def _without_package_reexports(graph: dict) -> dict:
    """Drops the edges from a package's __init__ to its own submodules:
    re-exporting them is what an __init__ is for, and Python resolves
    `from package import name` after the package has finished importing."""
    return {name: {target for target in targets
                   if not target.startswith(name + ".")}
            for name, targets in graph.items()}


def test_the_cycle_finder_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [
        "a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_keras_mvs_has_no_import_cycle():
    graph = _without_package_reexports(_graph("keras_mvs"))
    assert len(graph) > 50
    assert "keras_mvs.geometry" in graph["keras_mvs.models.cas_mvsnet"]
    assert _cycle(graph) is None, " -> ".join(_cycle(graph))


def test_entry_points_import_only_the_library_and_their_configs():
    graph = _graph("keras_mvs", "experiments")
    for name, targets in graph.items():
        if not name.startswith("experiments"):
            continue
        strays = {target for target in targets
                  if target.startswith("experiments")
                  and not target.startswith("experiments.configs")}
        assert not strays, f"{name} imports {sorted(strays)}"


def test_the_library_never_imports_the_entry_points():
    graph = _graph("keras_mvs", "experiments")
    for name, targets in graph.items():
        if name.startswith("keras_mvs"):
            assert not any(t.startswith("experiments") for t in targets), name
