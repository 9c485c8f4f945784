"""`taxonc diff` and `taxonc matrix`."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from taxonc.compiler.cli import app
from taxonc.compiler.diff import diff_specs
from taxonc.compiler.matrix import taxonomy_doc
from taxonc.compiler.spec import load_spec

from .conftest import ROOT, SPECS

runner = CliRunner()


def test_gpt3_vs_palm_names_the_review_differences() -> None:
    d = diff_specs(load_spec(SPECS / "gpt3.toml"), load_spec(SPECS / "palm.toml"))
    text = "\n".join(f"{axis}: {phrase}" for axis, phrase in d.summary)
    assert "attention: multi-head → multi-query (heads 96 → 48, kv heads 96 → 1)" in text
    assert "activation: MLP: GeLU (tanh approximation) → SwiGLU (d_ff 49152 → 73728)" in text
    assert "block: sequential → parallel; input/output embeddings tied in both" in text
    assert "positions: learned absolute → rotary" in text
    assert "biases: biases on qkv, attn_out, mlp_in, mlp_out, norm → none" in text
    assert "dims: vocab 50257 → 256000" in text
    assert abs(d.figures["params"]["ratio"] - 540.35 / 174.6) < 0.01
    assert d.figures["flops_per_token"]["ratio"] > 3
    assert "fusion fuse_parallel_in" in d.graph["only_b"] and "mask locally-banded" in d.graph["only_a"]


def test_tying_change_is_named(tmp_path: Path) -> None:
    d = diff_specs(load_spec(SPECS / "llama.toml"), load_spec(SPECS / "palm.toml"))
    assert ("block", "input/output embeddings untied → tied") in d.summary


def test_origins_show_inherited_versus_written() -> None:
    d = diff_specs(load_spec(SPECS / "gpt3.toml"), load_spec(SPECS / "palm.toml"))
    change = next(c for c in d.changes if c.key == "mlp.activation")
    assert change.origin_a.startswith("inherited") and "recipes/gpt.toml" in change.origin_a
    assert change.origin_b.startswith("written")


def test_cli_exit_codes_and_formats() -> None:
    same = runner.invoke(app, ["diff", str(SPECS / "gpt3.toml"), str(SPECS / "gpt3.toml")])
    assert same.exit_code == 0 and "identical" in same.output
    differ = runner.invoke(app, ["diff", str(SPECS / "gpt3.toml"), str(SPECS / "palm.toml"), "--json"])
    assert differ.exit_code == 1
    assert json.loads(differ.output)["identical"] is False
    md = runner.invoke(app, ["diff", str(SPECS / "gpt3.toml"), str(SPECS / "palm.toml"), "--markdown"])
    assert md.exit_code == 1 and md.output.startswith("# ") and "| params |" in md.output


def test_matrix_formats() -> None:
    csv_out = runner.invoke(app, ["matrix", str(SPECS / "palm.toml"), str(SPECS / "bloom.toml"), "--format", "csv"])
    assert csv_out.exit_code == 0
    lines = csv_out.output.strip().splitlines()
    assert lines[0].startswith("spec,model,org") and len(lines) == 3
    assert "MQA" in lines[1] and "alibi" in lines[2] + lines[1]
    md = runner.invoke(app, ["matrix", str(SPECS / "glam.toml"), "--format", "markdown"])
    assert md.exit_code == 0 and "64e top-2 (32/64)" in md.output
    table = runner.invoke(app, ["matrix", str(SPECS / "glam.toml")])  # rich table; wraps to the terminal
    assert table.exit_code == 0 and "glam" in table.output


def test_docs_taxonomy_is_current() -> None:
    assert (ROOT / "docs" / "taxonomy.md").read_text() == taxonomy_doc(SPECS), (
        "regenerate: taxonc matrix specs/ --format markdown -o docs/taxonomy.md")
