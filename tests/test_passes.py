"""Every fusion pass preserves outputs, and refusals say why."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from taxonc.compiler.errors import UsageError
from taxonc.compiler.ir import build_graph, print_graph
from taxonc.compiler.ir.interpret import run_graph
from taxonc.compiler.passes import PASSES, PIPELINE, run_pipeline
from taxonc.compiler.passes.weights import fuse_state, random_state
from taxonc.compiler.spec import load_spec
from taxonc.compiler.spec.model import ModelSpec
from taxonc.compiler.spec.scale import scale_spec
from taxonc.runtime.inputs import extra_inputs

from .conftest import SPECS
from .strategies import spec_dicts


def _inputs(spec: ModelSpec, seed: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {"input_ids": torch.randint(0, spec.dims.vocab_size, (2, 16), generator=gen),
            **extra_inputs(spec, 2, 16, generator=gen, dtype=torch.float64)}


@given(spec_dicts(), st.integers(0, 1000))
def test_each_pass_preserves_outputs_on_random_specs(raw: dict[str, Any], seed: int) -> None:
    spec = ModelSpec.model_validate(raw)
    graph = build_graph(spec)
    state = random_state(graph, seed)
    inputs = _inputs(spec, seed)
    reference = run_graph(graph, state, inputs, prefix_len=4)["head.logits"]
    for i in range(1, len(PIPELINE) + 1):
        fused, _ = run_pipeline(graph, PIPELINE[:i])
        out = run_graph(fused, fuse_state(fused, state), inputs, prefix_len=4)["head.logits"]
        assert (out - reference).abs().max() < 1e-10, f"after {PIPELINE[i - 1]}"


def _log(name: str):
    spec = scale_spec(load_spec(SPECS / f"{name}.toml").spec, "tiny")
    return run_pipeline(build_graph(spec))


def test_parallel_block_with_shared_norm_merges_attention_and_mlp_inputs() -> None:
    graph, log = _log("palm")
    assert log.summary()["fuse_parallel_in"] == 4
    text = print_graph(graph)
    assert "attn_mlp_in(%h)" in text and "packs=q+k+v+mlp_gate+mlp_up" in text


def test_refusals_are_logged_with_reasons() -> None:
    _, log = _log("gpt-j")  # one norm, but the MLP has a bias and the attention does not
    assert ("fuse_parallel_in", "one input projection has a bias and the other does not") in log.refusal_reasons()
    _, log = _log("gpt-neox")  # two norms
    assert ("fuse_parallel_in", "attention and MLP read separately normed inputs") in log.refusal_reasons()
    _, log = _log("alphacode")  # cross-attention: queries from the decoder, keys/values from the encoder
    reasons = {why for name, why in log.refusal_reasons() if name == "fuse_qkv"}
    assert any("different inputs" in why for why in reasons)
    assert any(a.node.endswith("cross_kv") for a in log.applied if a.pass_name == "fuse_qkv")


def test_multi_query_fused_projection_has_the_right_width() -> None:
    graph, _ = _log("palm")
    node = graph.node("layers.0.attn_mlp_in")
    d_head = 16
    heads = graph.node("layers.0.attn").attrs.n_heads
    assert [p.source for p in node.attrs.packs[:3]] == ["layers.0.q", "layers.0.k", "layers.0.v"]
    d_ff = graph.node("layers.0.mlp_out").params["weight"][1]
    assert node.params["weight"][0] == heads * d_head + 2 * d_head + 2 * d_ff  # one shared key and value head


def test_solu_refuses_the_elementwise_epilogue() -> None:
    spec = ModelSpec.model_validate({"model": {"name": "s"}, "dims": {"n_layers": 1, "d_model": 16, "n_heads": 2,
                                     "vocab_size": 32, "context": 16}, "mlp": {"activation": "solu"}})
    _, log = run_pipeline(build_graph(spec))
    assert ("fuse_bias_act", "SoLU needs a row-wise softmax, not an elementwise epilogue") in log.refusal_reasons()


def test_unknown_pass_is_a_usage_error() -> None:
    graph = build_graph(load_spec(SPECS / "gpt3-125m.toml").spec)
    with pytest.raises(UsageError, match="unknown pass 'fuse_everything'"):
        run_pipeline(graph, ["fuse_everything"])


def test_dump_ir_and_stop_after(tmp_path) -> None:
    graph = build_graph(scale_spec(load_spec(SPECS / "llama.toml").spec, "tiny"))
    fused, _ = run_pipeline(graph, None, stop_after="fuse_glu", dump_dir=tmp_path)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["00_lowered.ir.txt", "01_fuse_qkv.ir.txt", "02_fuse_glu.ir.txt"]
    assert "rotary" in print_graph(fused)  # fold_rope never ran
    assert set(PASSES) == set(PIPELINE) | {"select_kernels"}


def _renamed(graph):
    """The same graph with every node and value renamed: fusions must find their operands by structure."""
    from taxonc.compiler.ir.graph import Graph

    out = Graph(graph.name)
    out.meta = dict(graph.meta)
    rename: dict[str, str] = {}
    for name, shape in graph.inputs.items():
        out.add_input(name, shape)
        rename[name] = name
    for i, node in enumerate(graph.nodes()):
        outputs = {}
        for value in node.outputs:
            local = f"v{i}_{value.rpartition('.')[2]}"
            outputs[local] = graph.values[value]
            rename[value] = f"{node.scope}.{local}" if node.scope else local
        out.add(node.op, node.scope, f"n{i}", [rename[v] for v in node.inputs], outputs, node.attrs, dict(node.params),
                dict(node.roles))
    out.outputs = [rename[v] for v in graph.outputs]
    for key in ("residual_in", "residual_out"):
        out.meta[key] = {scope: rename[v] for scope, v in graph.meta.get(key, {}).items()}
    if "memory" in graph.meta:
        out.meta["memory"] = rename[graph.meta["memory"]]
    return out


@pytest.mark.parametrize("name", ["llama", "palm", "t5", "gpt-neox", "gopher", "flamingo", "glam"])
def test_renamed_nodes_fuse_the_same_way(name: str) -> None:
    graph = build_graph(scale_spec(load_spec(SPECS / f"{name}.toml").spec, "tiny"))
    renamed = _renamed(graph)
    assert {n.name for n in renamed.nodes()}.isdisjoint({n.name for n in graph.nodes()})
    _, log = run_pipeline(graph)
    _, renamed_log = run_pipeline(renamed)
    assert renamed_log.summary() == log.summary() and log.summary()
    assert renamed_log.refusal_reasons() == log.refusal_reasons()
