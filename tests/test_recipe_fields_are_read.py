"""No recipe key is silently ignored: every field of the recipe schema is read somewhere in hfpipe.

A static check (the source's attribute reads), so that a key added to the schema and never wired up,
or one whose last reader was removed, fails here rather than doing nothing in a user's run.
"""

import ast
import dataclasses
from pathlib import Path

import hfpipe.recipes as recipes

SCHEMA = Path(recipes.__file__).parent  # the hfpipe.recipes package
PACKAGE = SCHEMA.parent
# The loader applies the smoke overrides itself.
READ_BY_THE_SCHEMA = {"smoke"}


def _names_read(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Load):
            names.add(node.attr)
        elif isinstance(node, ast.Call) and getattr(node.func, "id", None) == "getattr" and len(node.args) > 1 \
                and isinstance(node.args[1], ast.Constant):
            names.add(node.args[1].value)
    return names


def _read_by_recipes_py() -> set[str]:
    """Fields hfpipe.recipes itself acts on: those to_training_arguments_kwargs hands to transformers by
    name, and those check_machine reads (validation alone does not count as use)."""
    trees = [ast.parse(p.read_text(encoding="utf-8")) for p in SCHEMA.rglob("*.py")]
    functions = [n for tree in trees for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)
                 and n.name in ("to_training_arguments_kwargs", "check_machine")]
    return {n.value for f in functions for n in ast.walk(f) if isinstance(n, ast.Constant) and isinstance(n.value, str)} | \
        {n.attr for f in functions for n in ast.walk(f) if isinstance(n, ast.Attribute)}


def _sections() -> list[type]:
    return [cls for cls in vars(recipes).values()
            if dataclasses.is_dataclass(cls) and isinstance(cls, type) and (cls.__name__.endswith("Section")
                                                                              or cls is recipes.Recipe)]


def test_every_recipe_field_is_read_outside_the_schema():
    read = set().union(*(_names_read(p) for p in PACKAGE.rglob("*.py") if SCHEMA not in p.parents))
    read |= _read_by_recipes_py() | READ_BY_THE_SCHEMA
    unread = [f"{cls.__name__}.{field.name}" for cls in _sections() for field in dataclasses.fields(cls)
              if field.name not in read]
    assert unread == []
