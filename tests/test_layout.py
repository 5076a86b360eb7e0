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
