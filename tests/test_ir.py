"""Graph IR: the verifier catches broken graphs; the printer is deterministic and folds layers."""

from __future__ import annotations

import pytest

from taxonc.compiler.ir import IRVerifyError, Op, build_graph, print_graph, verify
from taxonc.compiler.ir.render import render_graph
from taxonc.compiler.spec import load_spec

from .conftest import SPECS


def _graph(name: str = "gopher"):
    return build_graph(load_spec(SPECS / f"{name}.toml").spec)


def test_printer_folds_identical_layers() -> None:
    text = print_graph(_graph("gopher"))
    assert "layers[0..79]: (80 layers)" in text
    assert text.count("= attention attn(") == 1
    assert print_graph(_graph("gopher")) == text


def test_printer_keeps_distinct_layer_kinds_apart() -> None:
    text = print_graph(_graph("gpt3"))  # dense and locally banded layers alternate
    assert "layers[0..94 step 2]: (48 layers)" in text and "layers[1..95 step 2]: (48 layers)" in text
    text = print_graph(_graph("glam"))  # mixture of experts every other layer
    assert text.count("= moe moe(") == 1 and "layers[1..63 step 2]" in text


def test_verifier_rejects_undefined_values() -> None:
    g = _graph("gpt3-125m")
    g.node("layers.0.q").inputs = ["layers.0.nowhere"]
    with pytest.raises(IRVerifyError, match="undefined value layers.0.nowhere"):
        verify(g)


def test_verifier_rejects_wrong_arity() -> None:
    g = _graph("gpt3-125m")
    g.node("layers.0.attn").inputs.pop()
    with pytest.raises(IRVerifyError, match="attention takes 3..4 inputs, has 2"):
        verify(g)


def test_verifier_rejects_non_topological_order() -> None:
    g = _graph("gpt3-125m")
    order = g._order
    i, j = order.index("layers.0.q"), order.index("layers.0.attn")
    order[i], order[j] = order[j], order[i]
    with pytest.raises(IRVerifyError, match="before it is produced"):
        verify(g)


def test_verifier_rejects_cycles() -> None:
    g = _graph("gpt3-125m")
    g.g.add_edge("layers.0.attn", "layers.0.ln_attn")
    with pytest.raises(IRVerifyError, match="cycle"):
        verify(g)


def test_dot_and_mermaid_renderings() -> None:
    g = _graph("palm")
    dot = render_graph(g, "dot")
    assert dot.startswith("digraph palm {") and "layers[0..117] x118" in dot
    mermaid = render_graph(g, "mermaid")
    assert mermaid.startswith("flowchart TD") and mermaid.count("-->") == 2


def test_every_op_kind_is_lowered_by_some_spec() -> None:
    seen = set()
    for name in ("gopher", "palm", "glam", "retro", "flamingo", "t5", "bloom", "glm-130b", "opt-350m", "llama", "gpt3"):
        seen |= {n.op for n in build_graph(load_spec(SPECS / f"{name}.toml").spec).nodes()}
    # ADD_NORM and SPLIT only appear after fusion passes
    assert set(Op) - seen == {Op.ADD_NORM, Op.SPLIT}
