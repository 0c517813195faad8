"""The layout's rules, read from the source: stage packages under tasks/, schemas/ independent of
tasks/, tasks/ independent of flows/, no import circle (imports inside functions count too)."""
from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import PROJECT_ROOT

# the stages in pipeline order, then what a round shares, the lake and the runtime
STAGES = ("prompts", "generation", "scoring", "selection", "training", "evaluation", "rounds", "lake", "runtime")


def modules() -> dict[str, Path]:
    """Dotted module name -> file, for flows/, tasks/ and schemas/."""
    found = {}
    for top in ("flows", "tasks", "schemas"):
        for path in sorted((PROJECT_ROOT / top).rglob("*.py")):
            parts = list(path.relative_to(PROJECT_ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def imports_of(path: Path, known: set[str]) -> set[str]:
    """The project modules a file imports anywhere in it (module level or inside functions)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        out |= {name for name in names if name in known}
    return out


def graph() -> dict[str, set[str]]:
    """Module -> the project modules it imports (a package's __init__ excluded as a target when a
    submodule is named)."""
    found = modules()
    known = set(found)
    edges = {}
    for name, path in found.items():
        targets = imports_of(path, known) - {name}
        # `from tasks.lake import ids` names both the package and its submodule: keep the submodule
        edges[name] = {t for t in targets if not any(o.startswith(t + ".") for o in targets)}
    return edges


def test_tasks_is_one_package_per_stage():
    top = sorted(p.name for p in (PROJECT_ROOT / "tasks").iterdir() if p.is_dir() and p.name != "__pycache__")
    assert top == sorted(STAGES)
    loose = sorted(p.name for p in (PROJECT_ROOT / "tasks").glob("*.py") if p.name != "__init__.py")
    assert loose == []
    for stage in STAGES:
        init = PROJECT_ROOT / "tasks" / stage / "__init__.py"
        assert ast.get_docstring(ast.parse(init.read_text(encoding="utf-8"))), f"{init} says what it holds"


def test_schemas_import_nothing_from_tasks_and_tasks_nothing_from_flows():
    edges = graph()
    wrong = sorted((source, target) for source, targets in edges.items() for target in targets
                   if (source.startswith("schemas") and target.startswith(("tasks", "flows")))
                   or (source.startswith("tasks") and target.startswith("flows")))
    assert wrong == []


def test_no_import_circle():
    edges = graph()
    circles = []
    state: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for target in sorted(edges.get(node, ())):
            if state.get(target) == 1:
                circles.append(stack[stack.index(target):] + [target])
            elif target not in state:
                visit(target, stack + [target])
        state[node] = 2

    for module in sorted(edges):
        if module not in state:
            visit(module, [module])
    assert circles == []


def flow_functions(path: Path) -> set[str]:
    """The names of a module's functions decorated with Prefect's @flow."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {node.name for node in tree.body if isinstance(node, ast.FunctionDef)
            and any((d.func if isinstance(d, ast.Call) else d).id == "flow" for d in node.decorator_list
                    if isinstance(d.func if isinstance(d, ast.Call) else d, ast.Name))}


def test_a_flow_module_takes_only_flows_from_another_to_call_them_as_subflows():
    found = modules()
    wrong = []
    for name, path in found.items():
        if not name.startswith("flows."):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module in found and node.module.startswith("flows.") \
                    and node.module not in (name, "flows.cli"):
                flows = flow_functions(found[node.module])
                wrong += [f"{name} imports {node.module}.{a.name}" for a in node.names if a.name not in flows]
            elif isinstance(node, ast.Import) and any(a.name.startswith("flows.") for a in node.names):
                wrong.append(f"{name} imports a flow module whole")
    assert wrong == []
