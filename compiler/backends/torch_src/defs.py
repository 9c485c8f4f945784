"""The reference definitions an emitted model needs, as source text to copy into it.

The torch backend's `model.py` depends on torch alone, so instead of importing
taxonc.kernels.reference it carries the definitions it calls, verbatim, and nothing else.
"""

from __future__ import annotations

import ast
import inspect
import re
from functools import lru_cache
from types import ModuleType

from taxonc.kernels.reference import attention, blocks, masks, norms, positions

# in an order where every definition comes after those it uses at import time
REFERENCE_MODULES = (masks, norms, positions, attention, blocks)


def module_defs(module: ModuleType) -> dict[str, str]:
    """Top-level function and class definitions of a module, by name, as source text (with decorators)."""
    source = inspect.getsource(module)
    lines = source.splitlines()
    tree = ast.parse(source)
    return {n.name: "\n".join(lines[min([n.lineno] + [d.lineno for d in n.decorator_list]) - 1: n.end_lineno])
            for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}


@lru_cache(maxsize=1)
def reference_defs() -> dict[str, str]:
    return {name: text for module in REFERENCE_MODULES for name, text in module_defs(module).items()}


def _names_in(source: str) -> set[str]:
    """Names a definition's code reads (not words of its docstrings or comments)."""
    return {n.id for n in ast.walk(ast.parse(source)) if isinstance(n, ast.Name)}


def needed_defs(text: str, defs: dict[str, str]) -> list[str]:
    """Definitions the code lines `text` use, with everything they use, in definition order."""
    code = re.sub(r"#[^\n]*", "", text)
    chosen: set[str] = set()
    frontier = [name for name in defs if re.search(rf"(?<![\w.]){name}\b", code)]  # not an attribute like self.name
    while frontier:
        name = frontier.pop()
        if name in chosen:
            continue
        chosen.add(name)
        frontier.extend(other for other in _names_in(defs[name]) if other in defs and other not in chosen)
    return [name for name in defs if name in chosen]
