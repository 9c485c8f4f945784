"""Every example in examples/ runs as its docstring says, with the current interpreter."""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib

import pytest

from taxonc.compiler.spec import load_spec

from .conftest import ROOT

EXAMPLES = ROOT / "examples"
SPEC = EXAMPLES / "llama2-70b.toml"


def _run(*args: str) -> str:
    result = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"{' '.join(args)} exited {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result.stdout


def test_example_spec_extends_llama_and_changes_what_it_writes() -> None:
    resolved = load_spec(SPEC)
    assert resolved.spec.attention.kind == "grouped-query" and resolved.spec.attention.n_kv_heads == 8
    assert resolved.origins["attention.kind"].describe().startswith("written")
    # not written in the example: comes from LLaMA 65B, unchanged
    assert resolved.spec.dims.n_layers == 80 and resolved.spec.norm.kind == "rmsnorm"
    assert resolved.origins["dims.n_layers"].describe() == "inherited (specs/llama.toml)"


def test_compile_and_run() -> None:
    out = _run(str(EXAMPLES / "compile_and_run.py"))
    assert "llama2-70b at tiny scale" in out and "2 kv heads" in out
    assert "generated 8 tokens with the KV cache" in out


def test_diff_architectures() -> None:
    out = _run(str(EXAMPLES / "diff_architectures.py"))
    assert "multi-head → grouped-query" in out
    assert "KV cache per token (bf16): 2,621,440 -> 327,680 bytes" in out  # 8 kv heads of 64
    assert "| attention | `attention.kind` |" in out


def test_property_tests_of_the_example_spec_pass() -> None:
    out = _run("-m", "pytest", str(EXAMPLES / "test_llama2_70b.py"), "-p", "no:cacheprovider")
    assert "5 passed" in out


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.py")), ids=lambda p: p.name)
def test_each_example_says_what_it_shows_and_how_to_run_it(path) -> None:
    doc = ast.get_docstring(ast.parse(path.read_text()))
    assert doc and f"examples/{path.name}" in doc, f"{path.name}: the docstring should show how to run it"


def test_default_collection_stays_in_tests() -> None:
    """`pytest` with no arguments collects tests/ only; the examples' own tests run above, once."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    assert config["testpaths"] == ["tests"]
    assert not (EXAMPLES / "__init__.py").exists() and not (EXAMPLES / "conftest.py").exists()


@pytest.mark.slow  # four tiny training runs in a subprocess: ~20-40 s
def test_ablate_blocks_quick(tmp_path) -> None:
    out = _run(str(EXAMPLES / "ablate_blocks.py"), "--quick", "-o", str(tmp_path))
    for name in ("gpt3", "palm", "llama", "gopher"):
        assert f"| {name} |" in out
    assert "tokens matched (1,024)" in out
