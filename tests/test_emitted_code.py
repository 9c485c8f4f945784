"""Emitted models a reviewer would merge: minimal, named, explicit.

The emitted LLaMA stays short, every top-level definition of an emitted module is used, sizes
are Config fields, shape comments use letters, and blocks take explicit arguments.
"""

from __future__ import annotations

import ast
import re

import pytest

from taxonc.compiler.compile import compile_spec

from .conftest import SPECS
from .spec_sets import MODEL_FILES, spec_params

LLAMA_MAX_LINES = 220


def unused_top_level_defs(source: str) -> list[str]:
    """Top-level functions and classes that nothing else in the module names."""
    tree = ast.parse(source)
    defined = [n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))]
    used = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    return [name for name in defined if name not in used]


def test_the_checker_finds_an_unused_helper() -> None:
    source = "def used():\n    return 1\n\n\ndef unused():\n    return 2\n\n\nprint(used())\n"
    assert unused_top_level_defs(source) == ["unused"]


def test_emitted_llama_is_short_and_named() -> None:
    source = compile_spec(SPECS / "llama.toml", scale="tiny").files["model.py"]
    assert len(source.splitlines()) <= LLAMA_MAX_LINES
    assert unused_top_level_defs(source) == []
    # sizes are Config fields, not numbers
    assert not re.search(r"nn\.(Linear|Embedding)\(\d", source)
    assert "RMSNorm(CONFIG.d_model" in source
    # shape comments use letters
    shapes = re.findall(r"# (\[[^\]]*\])", source)
    assert shapes and all(not re.search(r"\d", s.replace("2*", "")) for s in shapes), shapes
    # no variant it does not use
    for absent in ("alibi_slopes", "relative_buckets", "xl_attention", "flex_attention", "masked_attention", "ctx"):
        assert absent not in source


@pytest.mark.parametrize("path", spec_params(MODEL_FILES))
def test_every_top_level_definition_is_used(path) -> None:
    source = compile_spec(path, scale="tiny").files["model.py"]
    assert unused_top_level_defs(source) == []
    assert not re.search(r"\bctx\b", source), "values pass as arguments, not through a context object"


def test_attention_is_specialised_per_block_kind() -> None:
    calls = {}
    for name in ("llama", "gpt3", "t5", "gopher", "bloom"):
        source = compile_spec(SPECS / f"{name}.toml", scale="tiny").files["model.py"]
        calls[name] = set(re.findall(r"= (\w+_attention)\(", source))
    assert calls["llama"] == {"causal_attention"}
    assert calls["gpt3"] == {"causal_attention", "masked_attention"}  # dense and locally banded layers
    assert calls["t5"] == {"relative_bias_attention", "full_attention"}
    assert calls["gopher"] == {"xl_attention"}
    assert calls["bloom"] == {"masked_attention"}  # ALiBi


def test_emission_is_deterministic() -> None:
    a = compile_spec(SPECS / "t5.toml", scale="tiny").files["model.py"]
    b = compile_spec(SPECS / "t5.toml", scale="tiny").files["model.py"]
    assert a == b
