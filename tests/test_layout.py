"""The package's layout keeps its architecture: verbs orchestrate, shared pieces live in their own modules."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "hfpipe"
# One module per CLI verb. demo is the pipeline of verbs (pretrain -> finetune) and may call them.
VERBS = {"pretrain", "finetune", "icl", "perplexity", "generate", "probe", "plan", "prefs"}


def imported_hfpipe_modules(path: Path) -> set[str]:
    """hfpipe modules a file imports, at any depth of the file (function-level imports included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1 and node.module:  # from .x import y (files directly in hfpipe/)
                found.add(node.module.split(".")[0])
            elif node.level == 1:  # from . import x
                found |= {alias.name for alias in node.names}
            elif node.level == 2 and node.module:  # from ..x import y (files in hfpipe/<sub>/)
                found.add(node.module.split(".")[0])
            elif node.module and node.module.startswith("hfpipe."):
                found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("hfpipe.")}
    return found


def test_no_verb_module_imports_another_verb_module():
    offenders = {}
    for verb in sorted(VERBS):
        others = (imported_hfpipe_modules(PACKAGE / f"{verb}.py") & VERBS) - {verb}
        if others:
            offenders[verb] = sorted(others)
    assert offenders == {}, f"verbs import verbs (move the shared piece into its own module): {offenders}"


def test_the_import_scan_sees_function_level_imports():
    assert {"finetune", "pretrain"} <= imported_hfpipe_modules(PACKAGE / "demo.py")


def test_library_modules_never_import_verbs():
    """models/, data/, tasks/, metrics/ and the shared modules sit below the verbs."""
    shared = [p for p in PACKAGE.rglob("*.py")
              if p.stem not in VERBS | {"demo", "cli", "__main__"} and "metrics" not in p.parts]
    offenders = {str(p.relative_to(PACKAGE)): sorted(imported_hfpipe_modules(p) & VERBS) for p in shared}
    assert {k: v for k, v in offenders.items() if v} == {}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """hfpipe module -> the hfpipe modules it imports, at any depth of the file."""
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        edges = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1])
                    stem = f"{base}.{node.module}" if node.module else base
                else:
                    stem = node.module or ""
                names = {f"{stem}.{alias.name}" for alias in node.names}
                # `from . import models` names a submodule: the package itself is its parent, already
                # initialised, not an import that could close a circle
                edges |= names if node.level and not node.module and names <= modules.keys() else {stem} | names
            elif isinstance(node, ast.Import):
                edges |= {alias.name for alias in node.names}
        graph[name] = {target for target in edges if target in modules and target != name}
    return graph


def import_circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index, low, stack, on_stack, circles = {}, {}, [], set(), []

    def visit(module):
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for target in graph[module]:
            if target not in index:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in on_stack:
                low[module] = min(low[module], index[target])
        if low[module] == index[module]:
            component = []
            while not component or component[-1] != module:
                component.append(stack.pop())
                on_stack.discard(component[-1])
            if len(component) > 1:
                circles.append(sorted(component))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return circles


# None left (the rules hand Recipe.from_dict their checks instead of the schema importing them); any
# circle fails.
KNOWN_CIRCLES: list = []


def test_no_new_import_circles():
    assert import_circles(import_graph()) == KNOWN_CIRCLES


def test_the_circle_finder_sees_a_circle():
    assert import_circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_each_objective_is_one_module_of_the_objectives_package():
    import hfpipe  # noqa: F401  (registers them)
    from hfpipe.recipes import OBJECTIVES

    for name, section in OBJECTIVES.items():
        assert section.__module__ == f"hfpipe.objectives.{name}", name
    assert "OBJECTIVES" not in (PACKAGE / "pretrain.py").read_text()  # the driver names no objective
    assert len((PACKAGE / "pretrain.py").read_text().splitlines()) < 120


def test_each_task_is_one_module_of_the_tasks_package():
    import hfpipe  # noqa: F401  (registers them)
    from hfpipe.recipes import TASKS

    for name, section in TASKS.items():
        assert section.__module__.startswith("hfpipe.tasks."), name
    assert {section.__module__ for section in TASKS.values()} == {
        "hfpipe.tasks.glue", "hfpipe.tasks.squad", "hfpipe.tasks.sft", "hfpipe.tasks.tagging", "hfpipe.tasks.dpo"}
    driver = (PACKAGE / "finetune.py").read_text()
    assert not any(f'"{name}"' in driver for name in TASKS)  # the driver names no task
    assert len(driver.splitlines()) < 120


def test_training_internals_live_in_the_training_package():
    top_level = {p.stem for p in PACKAGE.glob("*.py")}
    assert not top_level & {"train", "budget", "accumulation", "training_state"}
    assert {"trainer", "budget", "loss_counts", "loss_curve", "output_dir", "callbacks", "results", "state"} \
        <= {p.stem for p in (PACKAGE / "training").glob("*.py")}


# Lower floors never import higher ones: recipes are validated before anything heavy loads, models
# know nothing of data, data nothing of the objectives and tasks built on it. None is left; any new one
# fails.
FLOORS = {"recipes": 0, "metrics": 0, "models": 1, "data": 2, "objectives": 3, "tasks": 3}
KNOWN_UPWARD: set = set()


def upward_imports(graph: dict[str, set[str]]) -> set[tuple[str, str]]:
    def floor(module):
        parts = module.split(".")
        return FLOORS.get(parts[1]) if len(parts) > 1 else None

    return {(module, target) for module, targets in graph.items() for target in targets
            if floor(module) is not None and floor(target) is not None and floor(target) > floor(module)}


def test_no_new_imports_run_up_the_floors():
    assert upward_imports(import_graph()) == KNOWN_UPWARD
