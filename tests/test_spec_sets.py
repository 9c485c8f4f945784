"""The default per-spec set (tests/spec_sets.py): one spec per tiny-scale structure, and sound.

Soundness, that specs sharing a structure key emit the same tiny model.py up to numbers, names
and descriptions, is checked per non-representative spec, so it runs with --all-specs (or
-m all_specs), the mode that also runs those specs everywhere else.
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

import pytest

from taxonc.compiler.compile import compile_spec

from .spec_sets import MODEL_FILES, representatives, spec_params, structure_classes


def test_representatives_are_the_first_spec_by_name_of_each_structure() -> None:
    classes = structure_classes()
    members = [p for group in classes for p in group]
    assert sorted(members) == sorted(MODEL_FILES)  # every spec in exactly one class
    assert representatives() == [group[0] for group in classes]
    assert all(group == sorted(group, key=lambda p: p.stem) for group in classes)
    assert representatives() == representatives()  # deterministic
    assert len(representatives()) < len(MODEL_FILES)
    unmarked = [p.values[0] for p in spec_params() if not p.marks]
    assert unmarked == [p for p in MODEL_FILES if p in set(representatives())]


def _shape(source: str) -> str:
    """The emitted module without comments, docstrings, the Config class (names, titles,
    notes) and numeric constants."""
    tree = ast.parse(source)
    tree.body = [n for n in tree.body if not (isinstance(n, ast.ClassDef) and n.name == "Config")]
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                and isinstance(body[0].value.value, str):
            node.body = body[1:] or [ast.Pass()]
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
            node.value = 0
    return ast.dump(tree)


@cache
def _tiny_shape(path: Path) -> str:
    return _shape(compile_spec(path, scale="tiny").files["model.py"])


REPRESENTATIVE_OF = {p: group[0] for group in structure_classes() for p in group}


@pytest.mark.parametrize("path", [p for p in spec_params() if p.marks])
def test_a_spec_emits_its_representatives_model_up_to_numbers(path: Path) -> None:
    assert _tiny_shape(path) == _tiny_shape(REPRESENTATIVE_OF[path]), (
        f"{path.stem} and {REPRESENTATIVE_OF[path].stem} share a structure key but emit different code; "
        "add the field that differs to structure_key in tests/spec_sets.py")
