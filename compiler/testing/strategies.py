"""Hypothesis strategies for small valid spec dicts spanning every axis of the schema."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from hypothesis import strategies as st

from taxonc.compiler.spec.kinds import Activation, LogitScale, NormKind, NormPlacement, PositionKind, QkNorm, RotaryPairing

if TYPE_CHECKING:
    from taxonc.compiler.spec.model import ModelSpec


@st.composite
def spec_dicts(draw: st.DrawFn) -> dict[str, Any]:
    n_heads = draw(st.sampled_from([1, 2, 4]))
    d_head = draw(st.sampled_from([8, 16]))
    d_model = n_heads * d_head * draw(st.sampled_from([1, 2]))
    n_layers = draw(st.integers(1, 4))
    context = draw(st.sampled_from([32, 64]))
    structure = draw(st.sampled_from(["decoder", "encoder-decoder", "prefix-lm"]))
    spec: dict[str, Any] = {
        "model": {"name": draw(st.from_regex(r"[a-z][a-z0-9-]{0,8}", fullmatch=True)), "structure": structure,
                  "notes": draw(st.text(max_size=20))},
        "dims": {"n_layers": n_layers, "d_model": d_model, "n_heads": n_heads, "vocab_size": draw(st.integers(16, 300)),
                 "context": context},
    }
    if d_model != n_heads * d_head or draw(st.booleans()):
        spec["dims"]["d_head"] = d_head
    if draw(st.booleans()):
        spec["dims"]["d_ff"] = draw(st.integers(8, 96))
    else:
        spec["dims"]["ff_ratio"] = draw(st.sampled_from([1.0, 2.0, 2.6666666666666665, 4.0]))
    kind = draw(st.sampled_from(["multi-head", "multi-query", "grouped-query"]))
    spec["attention"] = {"kind": kind}
    if kind == "grouped-query":
        spec["attention"]["n_kv_heads"] = draw(st.sampled_from([k for k in (1, 2, 4) if n_heads % k == 0]))
    if draw(st.booleans()):
        sparse = draw(st.sampled_from([
            {"kind": "locally-banded", "window": 8},
            {"kind": "strided", "stride": 4},
            {"kind": "fixed", "block": 8, "summary": 2},
        ]))
        spec["attention"]["sparse"] = sparse
        if draw(st.booleans()):
            spec["attention"]["sparse_layers"] = {"every": 2, "start": draw(st.integers(0, min(1, n_layers - 1)))}
    position = draw(st.sampled_from([k.value for k in PositionKind]))
    spec["position"] = {"kind": position}
    if position == "learned":
        spec["position"]["offset"] = draw(st.sampled_from([0, 2]))
    if position == "rotary":
        spec["position"]["fraction"] = draw(st.sampled_from([0.25, 0.5, 1.0]))
        spec["position"]["pairing"] = draw(st.sampled_from([p.value for p in RotaryPairing]))
    norm = draw(st.sampled_from([k.value for k in NormKind]))
    placement = "post" if norm == NormKind.DEEPNORM else draw(st.sampled_from([p.value for p in NormPlacement]))
    spec["norm"] = {"kind": norm, "placement": placement, "embedding": draw(st.booleans()), "final": draw(st.booleans()),
                    "eps": draw(st.sampled_from([1e-5, 1e-6]))}
    spec["mlp"] = {"activation": draw(st.sampled_from([a.value for a in Activation]))}
    wiring = "sequential" if placement != "pre" or structure == "encoder-decoder" else draw(st.sampled_from(["sequential", "parallel"]))
    spec["block"] = {"wiring": wiring, "parallel_norms": draw(st.sampled_from(["shared", "separate"])),
                     "tied_embeddings": draw(st.booleans())}
    if spec["block"]["tied_embeddings"]:
        spec["block"]["logit_scale"] = draw(st.sampled_from([s.value for s in LogitScale]))
    spec["bias"] = {k: draw(st.booleans()) for k in ("qkv", "attn_out", "mlp_in", "mlp_out", "norm", "lm_head")}
    if structure == "encoder-decoder":
        spec["encoder"] = {"n_layers": draw(st.integers(1, 3)), "context": draw(st.sampled_from([16, 32]))}
    if draw(st.booleans()):
        n_experts = draw(st.integers(1, 4))
        top_k = draw(st.integers(1, n_experts))
        spec["moe"] = {"n_experts": n_experts, "top_k": top_k, "layers": {"every": draw(st.integers(1, 2))},
                       "router": "switch" if top_k == 1 and draw(st.booleans()) else "softmax-top-k"}
    if structure != "encoder-decoder" and draw(st.booleans()):
        if wiring == "parallel" or draw(st.booleans()):  # RETRO's chunked cross-attention needs sequential blocks
            spec["cross_attention"] = {"kind": "gated", "layers": {"every": 2}, "media_dim": 16, "n_latents": 4,
                                       "resampler_layers": 1, "resampler_heads": 2}
        else:
            spec["cross_attention"] = {"kind": "chunked", "layers": {"indices": [n_layers - 1]}, "chunk_size": 16,
                                       "n_neighbours": 2, "neighbour_len": 24, "encoder_layers": 1,
                                       "encoder_d_model": 16, "encoder_n_heads": 2}
    # QK-norm is lowered for self-attention only, so the rules keep it from models with another attention
    if norm != NormKind.DEEPNORM and structure != "encoder-decoder" and "cross_attention" not in spec:
        spec["attention"]["qk_norm"] = draw(st.sampled_from([q.value for q in QkNorm]))
    spec["tokenizer"] = dict(draw(st.sampled_from([{"kind": "bpe"}, {"kind": "sentencepiece", "algorithm": "unigram"},
                                              {"kind": "sentencepiece", "algorithm": "bpe"}])))  # a copy: it may gain a key
    if structure == "encoder-decoder" and draw(st.booleans()):
        spec["tokenizer"]["decoder_start_id"] = draw(st.integers(0, spec["dims"]["vocab_size"] - 1))
    spec["training"] = {"tokens": float(draw(st.integers(1, 10**12))), "lr": draw(st.floats(1e-5, 1e-2)),
                        "mup": {"enabled": draw(st.booleans())}}
    if not spec["training"]["mup"]["enabled"] and draw(st.booleans()):
        spec.setdefault("attention", {})["score_scale"] = 1.0  # T5's unscaled scores
    if structure == "decoder" and draw(st.booleans()):
        spec["training"]["fim"] = {"rate": draw(st.floats(0, 1)), "mode": "psm"}
    return spec


@st.composite
def specs(draw: st.DrawFn) -> "ModelSpec":
    """Valid resolved specs over every axis of the schema, with small dimensions."""
    from taxonc.compiler.spec.model import ModelSpec

    return ModelSpec.model_validate(draw(spec_dicts()))


# (mutation of a valid spec dict, dotted key the error must name, fragment of its message)
_MISTAKES: list[tuple[str, Any, str, str]] = [
    ("dims.n_heads", 3, "dims.n_heads", "must divide d_model"),
    ("dims.n_layers", 0, "dims.n_layers", "greater than 0"),
    ("dims.n_layer", 2, "dims.n_layer", "unknown key"),
    ("mlp.activation", "swiglue", "mlp.activation", "not a valid choice"),
    ("position.kind", "rope", "position.kind", "not a valid kind"),
    ("norm.placement", "middle", "norm.placement", "not a valid choice"),
    ("model.name", "Not A Slug", "model.name", "slug"),
    ("dims.context", "long", "dims.context", "valid integer"),
]


@st.composite
def invalid_specs(draw: st.DrawFn) -> tuple[dict[str, Any], str, str]:
    """A spec dict with one mistake, the key the error must name and part of its message."""
    raw = draw(spec_dicts())
    path, value, key, message = draw(st.sampled_from(_MISTAKES))
    node = raw
    parts = path.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    if path == "dims.n_heads":
        raw["dims"].pop("d_head", None)
        raw["dims"]["d_model"] = 64
        raw.get("attention", {}).pop("n_kv_heads", None)
        raw["attention"]["kind"] = "multi-head"
    if path == "position.kind":
        node.clear()
    node[parts[-1]] = value
    return raw, key, message


def token_batches(spec: "ModelSpec", max_batch: int = 2, max_len: int = 16) -> st.SearchStrategy:
    """Batches of token ids (B, T) valid for `spec`."""
    import torch

    vocab, context = spec.dims.vocab_size, spec.dims.context

    @st.composite
    def batch(draw: st.DrawFn) -> "torch.Tensor":
        b = draw(st.integers(1, max_batch))
        t = draw(st.integers(1, min(max_len, context)))
        ids = draw(st.lists(st.integers(0, vocab - 1), min_size=b * t, max_size=b * t))
        return torch.tensor(ids, dtype=torch.long).reshape(b, t)

    return batch()
