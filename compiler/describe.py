"""Plain-words summaries of a resolved spec, in the review's vocabulary."""

from __future__ import annotations

from .spec.derive import derive
from .spec.model import ModelSpec
from .spec.kinds import NormKind, PositionKind


def human(n: float | None, unit: str = "") -> str:
    if n is None:
        return "-"
    for size, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")):
        if abs(n) >= size:
            return f"{n / size:.4g}{suffix}{unit}"
    return f"{n:.4g}{unit}"


def attention_words(spec: ModelSpec) -> str:
    arch = derive(spec)
    kind = spec.attention.kind
    text = {
        "multi-head": f"multi-head attention ({spec.dims.n_heads} heads of {arch.d_head})",
        "multi-query": f"multi-query attention ({spec.dims.n_heads} query heads of {arch.d_head}, one shared key/value head)",
        "grouped-query": f"grouped-query attention ({spec.dims.n_heads} query heads of {arch.d_head}, {arch.n_kv_heads} key/value heads)",
    }[kind]
    sparse = spec.attention.sparse
    if sparse is not None:
        n_sparse = sum(layer.sparse is not None for layer in arch.layers)
        detail = {"strided": f"stride {getattr(sparse, 'stride', 0)}", "fixed": f"block {getattr(sparse, 'block', 0)}", "locally-banded": f"window {getattr(sparse, 'window', 0)}"}[sparse.kind]
        text += f"; {sparse.kind} sparse attention ({detail}) on {n_sparse} of {len(arch.layers)} layers"
    if spec.attention.score_scale is not None:
        text += f"; scores scaled by {spec.attention.score_scale:g}"
    if spec.attention.qk_norm == "per-head":
        text += "; queries and keys normed per head before rotary (QK-norm)"
    elif spec.attention.qk_norm == "full-width":
        text += "; queries and keys normed over the whole projection before rotary (QK-norm)"
    return text


def placement_words(spec: ModelSpec) -> str:
    """pre-norm, post-norm, or OLMo-2's norm of the sublayer output inside the residual."""
    if spec.norm.placement == "sublayer-output":
        return "sublayer-output norm (x + norm(f(x)))"
    return f"{spec.norm.placement}-norm"


def position_words(spec: ModelSpec) -> str:
    p = spec.position
    return {
        "learned": "learned absolute positions" + (f" (offset {getattr(p, 'offset', 0)})" if getattr(p, "offset", 0) else ""),
        "sinusoidal": "sinusoidal absolute positions",
        "rotary": f"rotary embeddings on {getattr(p, 'fraction', 1) * 100:g}% of each head (base {getattr(p, 'base', 0):g})"
        + (", interleaved pairs" if getattr(p, "pairing", None) == "interleaved" else ""),
        PositionKind.ALIBI: "ALiBi linear attention biases",
        "relative-xl": "Transformer-XL relative positions",
        "relative-bias": "T5-style bucketed relative position biases",
        "none": "no positional information",
    }[p.kind]


def summary_lines(spec: ModelSpec) -> list[str]:
    arch = derive(spec)
    d = spec.dims
    structure = {
        "decoder": "Decoder-only causal language model",
        "encoder-decoder": f"Encoder-decoder model ({spec.encoder.n_layers if spec.encoder else 0} encoder layers)",
        "prefix-lm": "Prefix language model (bidirectional over the prefix, causal after it)",
    }[spec.model.structure]
    lines = [
        f"{structure}: {d.n_layers} layers, width {d.d_model}, MLP width {arch.d_ff}, vocabulary {d.vocab_size}, context {d.context}.",
        f"Attention: {attention_words(spec)}.",
        f"Positions: {position_words(spec)}.",
    ]
    norm = {NormKind.LAYERNORM: "LayerNorm", NormKind.RMSNORM: "RMSNorm", NormKind.DEEPNORM: f"DeepNorm (alpha {arch.deepnorm_alpha:.3g}, beta {arch.deepnorm_beta:.3g})"}[spec.norm.kind]
    extras = [w for w, on in (("final norm", spec.norm.final), ("embedding norm", spec.norm.embedding)) if on]
    lines.append(f"Norm: {norm}, {placement_words(spec)}" + (f", with {' and '.join(extras)}" if extras else "") + ".")
    wiring = "parallel attention and MLP" if spec.block.wiring == "parallel" else "sequential attention then MLP"
    tied = "tied" if spec.block.tied_embeddings else "untied"
    biased = [k for k, v in spec.bias.model_dump().items() if v]
    scaled = " (logits times d_model^-0.5)" if spec.block.logit_scale == "inverse-sqrt-d-model" else ""
    lines.append(f"Block: {wiring}, {spec.mlp.activation} activation, {tied} input/output embeddings{scaled}, biases on {', '.join(biased) or 'nothing'}.")
    if spec.moe:
        m = spec.moe
        lines.append(f"Mixture of experts: {m.n_experts} experts, top-{m.top_k} ({m.router} router), on {arch.n_moe_layers} of {d.n_layers} layers, capacity factor {m.capacity_factor:g}.")
    if spec.cross_attention:
        x = spec.cross_attention
        n = sum(layer.cross_attention is not None for layer in arch.layers)
        what = "gated cross-attention to Perceiver-resampled media" if x.kind == "gated" else "chunked cross-attention to retrieved neighbours"
        lines.append(f"Cross-attention: {what} on {n} layers.")
    tok = spec.tokenizer
    tok_name = "byte-level BPE" if tok.kind == "bpe" else f"SentencePiece ({tok.algorithm})"
    lines.append(f"Tokenizer: {tok_name}.")
    if spec.lineage and spec.lineage.stages:
        lines.append(f"Derived from {spec.lineage.base} by " + " then ".join(s.method for s in spec.lineage.stages) + ".")
    if not spec.disclosed:
        lines.append("UNDISCLOSED: the architecture is not published; every figure here is an assumption.")
    return lines
