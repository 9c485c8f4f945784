"""QK-norm (attention.qk_norm) and the sublayer-output norm placement (OLMo-2) through the compiler:
the graph they lower to, the counts, the emitted model against the graph interpreter, cached
decoding against the full forward pass, and the Triton backend's logged refusal.

Agreement with transformers (Qwen3, OLMo-2) and the mutation tests that drop either feature are in
test_hf_agreement.py, parametrised over the family table."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch

from taxonc.compiler.analysis import count_params
from taxonc.compiler.compile import compile_spec
from taxonc.compiler.ir.interpret import run_graph
from taxonc.compiler.ir.ops import Op
from taxonc.compiler.passes.weights import random_state
from taxonc.runtime.artifact import load_source

from .conftest import ROOT

LLAMA = ROOT / "specs" / "llama-7b.toml"
# LLaMA 7B at tiny scale: 4 layers, d_model 128, 8 heads of 16; two key/value heads, so q and k widths differ
TINY = ["attention.kind=grouped-query", "attention.n_kv_heads=2"]
VARIANTS = list(itertools.product(["none", "per-head", "full-width"], ["pre", "post", "sublayer-output"]))


def _compiled(qk_norm: str, placement: str, backend: str = "torch"):
    return compile_spec(LLAMA, backend=backend, scale="tiny",
                        sets=[*TINY, f"attention.qk_norm={qk_norm}", f"norm.placement={placement}"])


def _model(compiled, name: str):
    module = load_source(compiled.files["model.py"], name)
    torch.manual_seed(0)
    model = module.Model(dtype=torch.float64).eval()
    with torch.no_grad():  # norm scales start at 1; moved, so that a scale applied wrongly shows
        for param in model.parameters():
            param.add_(0.1 * torch.randn_like(param))
    return module, model


def test_defaults_leave_the_graph_without_qk_norm_and_with_pre_norm() -> None:
    compiled = compile_spec(LLAMA, scale="tiny", sets=TINY)
    assert compiled.spec.attention.qk_norm == "none" and compiled.spec.norm.placement == "pre"
    assert not [n for n in compiled.graph.nodes() if n.name in ("q_norm", "k_norm")]


@pytest.mark.parametrize("qk_norm,heads,widths", [("per-head", (8, 2), (16, 16)), ("full-width", (1, 1), (128, 32))])
def test_qk_norm_lowers_to_one_norm_on_queries_and_one_on_keys(qk_norm, heads, widths) -> None:
    graph = _compiled(qk_norm, "pre").graph
    q_norm, k_norm = (next(n for n in graph.nodes() if n.name == name and n.scope == "layers.0") for name in ("q_norm", "k_norm"))
    assert (q_norm.op, k_norm.op) == (Op.NORM, Op.NORM)
    assert (q_norm.attrs.heads, k_norm.attrs.heads) == heads
    assert (q_norm.params["weight"][0], k_norm.params["weight"][0]) == widths
    # before rotary: fold_rope moved rotary into the attention, which reads the normed values
    attention = next(n for n in graph.nodes() if n.op == Op.ATTENTION and n.scope == "layers.0")
    assert attention.attrs.rotary is not None and attention.inputs[:2] == [*q_norm.outputs, *k_norm.outputs]


def test_counts_name_the_qk_norm_scales() -> None:
    per_head = count_params(_compiled("per-head", "pre").spec)
    full = count_params(_compiled("full-width", "pre").spec)
    none = count_params(_compiled("none", "pre").spec)
    assert per_head.components["layers.qk_norms"] == 4 * (16 + 16)   # four layers, d_head each for q and k
    assert full.components["layers.qk_norms"] == 4 * (128 + 32)      # four layers, H*d_head and G*d_head
    assert none.components.get("layers.qk_norms", 0) == 0
    assert per_head.total - none.total == 128 and full.total - none.total == 640


def test_sublayer_output_norms_the_branch_not_the_stream() -> None:
    graph = _compiled("none", "sublayer-output").graph
    ln_attn = next(n for n in graph.nodes() if n.name == "ln_attn" and n.scope == "layers.0")
    producer = graph.producer_of(ln_attn.inputs[0])
    assert producer.op == Op.LINEAR and producer.name == "attn_out"
    add = next(n for n in graph.nodes() if n.name == "attn_add" and n.scope == "layers.0")
    assert ln_attn.outputs[0] in add.inputs


@pytest.mark.parametrize("qk_norm,placement", VARIANTS)
def test_emitted_model_computes_what_the_graph_says(qk_norm: str, placement: str) -> None:
    compiled = _compiled(qk_norm, placement)
    _, model = _model(compiled, f"graph_{qk_norm}_{placement}".replace("-", "_"))
    ids = torch.randint(0, 64, (2, 11), generator=torch.Generator().manual_seed(1))
    state = {k: v.to(torch.float64) for k, v in model.state_dict().items()}
    ref = run_graph(compiled.graph, state, {"input_ids": ids})["head.logits"]
    with torch.inference_mode():
        torch.testing.assert_close(model(ids), ref, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("qk_norm,placement", VARIANTS)
def test_cached_decoding_equals_the_full_forward(qk_norm: str, placement: str) -> None:
    module, model = _model(_compiled(qk_norm, placement), f"cache_{qk_norm}_{placement}".replace("-", "_"))
    ids = torch.randint(0, 64, (1, 12), generator=torch.Generator().manual_seed(2))
    cache = module.KVCache()
    with torch.inference_mode():
        full = model(ids)
        steps = [model(ids[:, :5], cache=cache)] + [model(ids[:, t : t + 1], cache=cache) for t in range(5, 12)]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, rtol=1e-10, atol=1e-10)


def test_a_wrong_variant_changes_the_function() -> None:
    """per-head and full-width norms of the same values differ, even with unit scales."""
    graphs = {q: _compiled(q, "pre").graph for q in ("per-head", "full-width")}
    ids = torch.randint(0, 64, (1, 9), generator=torch.Generator().manual_seed(3))
    out = {}
    for q, graph in graphs.items():
        state = random_state(graph, seed=0)
        for name in [k for k in state if k.endswith(("q_norm.weight", "k_norm.weight"))]:
            state[name] = torch.ones_like(state[name])
        out[q] = run_graph(graph, state, {"input_ids": ids})["head.logits"]
    assert (out["per-head"] - out["full-width"]).abs().max() > 1e-3 * out["full-width"].abs().max()


def test_triton_backend_logs_why_per_head_norms_keep_the_torch_path() -> None:
    log = _compiled("per-head", "pre", backend="triton").log
    reasons = {why for (name, why) in log.refusal_reasons()}
    assert any("per-head QK-norm" in why for why in reasons), reasons
    full = _compiled("full-width", "pre", backend="triton").graph
    assert next(n for n in full.nodes() if n.name == "q_norm").kernel is not None


def test_the_digest_of_a_spec_without_qk_norm_is_what_it_was_before_the_field() -> None:
    """Artifacts bind to the spec digest; a spec that does not use QK-norm keeps the digest it had
    (the goldens pin one); one that uses it gets another."""
    import hashlib
    import json

    from taxonc.compiler.spec import load_spec
    from taxonc.compiler.spec.load import spec_digest

    spec = load_spec(LLAMA).spec
    before = spec.model_dump(mode="json")
    before["attention"].pop("qk_norm")
    assert spec_digest(spec) == hashlib.sha256(json.dumps(before, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    with_qk = load_spec(LLAMA, {"attention": {"qk_norm": "per-head"}}).spec
    assert spec_digest(with_qk) != spec_digest(spec)


def test_compiler_and_runtime_digest_specs_alike() -> None:
    from taxonc.compiler.spec import load_spec
    from taxonc.compiler.spec.load import LATER_FIELDS, spec_digest
    from taxonc.runtime import spec_lock

    assert spec_lock.LATER_FIELDS == LATER_FIELDS
    for qk_norm in ("none", "per-head", "full-width"):
        spec = load_spec(LLAMA, {"attention": {"qk_norm": qk_norm}}).spec
        assert spec_lock.spec_sha256(spec.model_dump(mode="json")) == spec_digest(spec)
