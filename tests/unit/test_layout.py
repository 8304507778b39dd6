"""The layout holds: layers import only downwards, no import cycle, modules of a readable size,
function_app.py wiring only, and each phase's steps listed in one place."""

from __future__ import annotations

import ast
from pathlib import Path

from handlers.phases import post, pre
from handlers.phases.steps import Scope

ROOT = Path(__file__).resolve().parents[2]
HANDLERS = ROOT / "handlers"
# Lowest first: a module may import from its own layer and the ones before it.
LAYERS = ("core", "ledger", "adapters", "runtime", "phases", "edge")
RANK = {"core": 0, "ledger": 1, "adapters": 1, "runtime": 2, "phases": 3, "edge": 4}
MAX_LINES = 310


def _module(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """handlers modules this module imports (at run time; TYPE_CHECKING blocks left out)."""
    tree = ast.parse(path.read_text())
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                continue
            if isinstance(child, ast.ImportFrom) and child.module and child.module.startswith("handlers"):
                found.add(child.module)
            elif isinstance(child, ast.Import):
                found.update(a.name for a in child.names if a.name.startswith("handlers"))
            visit(child)

    visit(tree)
    return found


def _layer(module: str) -> str:
    return module.split(".")[1] if module.count(".") >= 1 else ""


GRAPH = {_module(p): _imports(p) for p in HANDLERS.rglob("*.py")}


def test_every_module_is_in_a_layer() -> None:
    assert {_layer(m) for m in GRAPH if m != "handlers"} <= set(LAYERS)


def test_a_lower_layer_never_imports_a_higher_one() -> None:
    upward = [f"{m} imports {i}" for m, imports in GRAPH.items() if m != "handlers"
              for i in imports if RANK[_layer(i)] > RANK[_layer(m)]]
    assert upward == []


def test_there_is_no_import_cycle() -> None:
    def resolve(name: str) -> str:
        return name if name in GRAPH else name.rsplit(".", 1)[0]

    state: dict[str, int] = {}
    cycles: list[str] = []

    def walk(node: str, path: list[str]) -> None:
        state[node] = 1
        for target in sorted(resolve(i) for i in GRAPH.get(node, ())):
            if target == node:
                continue
            if state.get(target) == 1:
                cycles.append(" -> ".join(path[path.index(target):] + [target]))
            elif target not in state:
                walk(target, [*path, target])
        state[node] = 2

    for module in sorted(GRAPH):
        if module not in state:
            walk(module, [module])
    assert cycles == []


def test_no_module_is_longer_than_a_reader_holds() -> None:
    sizes = {str(p.relative_to(ROOT)): len(p.read_text().splitlines()) for p in HANDLERS.rglob("*.py")}
    long = {name: lines for name, lines in sizes.items() if lines > MAX_LINES}
    assert long == {}


def test_function_app_is_wiring_only() -> None:
    tree = ast.parse((ROOT / "function_app.py").read_text())
    top_level = {n.module for n in tree.body if isinstance(n, ast.ImportFrom) and n.module}
    assert top_level <= {"__future__", "handlers.core.events", "handlers.core.settings"}
    functions = [n for n in tree.body if isinstance(n, ast.FunctionDef)]
    assert functions and all(len(f.body) <= 4 for f in functions), "each function only hands its input to a handler"


def test_each_phase_lists_named_steps_once() -> None:
    for steps, phase in ((pre.STEPS, "pre"), (post.STEPS, "post")):
        names = [step.name for step in steps]
        assert len(names) == len(set(names)) and all(step.phase == phase for step in steps)
        assert all(step.summary for step in steps)
        assert all(step.preview is None or step.changes for step in steps), "a preview only for a step that changes"
    # Every scope of the pre phase ends with the verdict and the cancel, but the groups of a split run.
    for scope in (Scope.WHOLE, Scope.VERDICT):
        assert [s.name for s in pre.STEPS if scope in s.scopes][-3:] == ["checks", "verdict", "cancel"]
    assert not any(Scope.GROUP in s.scopes for s in pre.STEPS if s.name in ("checks", "verdict", "cancel"))


def test_the_readme_lists_each_phase_s_steps_in_order() -> None:
    rows = [line.split("|") for line in (ROOT / "README.md").read_text().splitlines()
            if line.startswith(("| pre | `", "| post | `"))]
    listed = [(cells[1].strip(), cells[2].strip().strip("`")) for cells in rows]
    assert listed == [("pre", s.name) for s in pre.STEPS] + [("post", s.name) for s in post.STEPS]


def test_every_thread_under_handlers_carries_its_invocation() -> None:
    """A pool or thread of its own loses the invocation's telemetry context (the step's span, the
    run's attributes, the Functions invocation id): handlers start theirs through
    handlers/core/telemetry.py (`InvocationPool`, `telemetry.thread`), which carries it."""
    own = HANDLERS / "core" / "telemetry.py"
    found = []
    for path in HANDLERS.rglob("*.py"):
        if path == own:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            name = node.attr if isinstance(node, ast.Attribute) else node.id if isinstance(node, ast.Name) else ""
            if name in ("ThreadPoolExecutor", "ProcessPoolExecutor", "Thread", "Timer"):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {name}")
    assert found == []
