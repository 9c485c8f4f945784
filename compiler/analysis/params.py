"""Exact parameter counts from a resolved spec.

The counts follow the module the torch backend emits, weight for weight; a test compares
them with `numel` of that module on the meta device. Components are keyed by dotted names
so that `taxonc params` can show where the parameters sit.

"Embedding" parameters are the token embedding, every positional parameter (learned tables,
Transformer-XL projections and biases, relative-bias tables) and an untied output projection:
the parameters whose count does not scale with depth x width^2. This matches how Gopher
reports 260B non-embedding parameters of 280B.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from ..spec.derive import derive
from ..spec.model import ModelSpec

EMBEDDING_PREFIXES = ("embedding.", "lm_head", "position")


def norm_params(spec: ModelSpec, width: int) -> int:
    if spec.norm.kind == "rmsnorm":
        return width
    return 2 * width if spec.bias.norm else width


def attention_params(spec: ModelSpec, d_in: int, d_kv_in: int, n_heads: int, n_kv: int, d_head: int, d_out: int) -> int:
    q = d_in * n_heads * d_head
    kv = 2 * d_kv_in * n_kv * d_head
    out = n_heads * d_head * d_out
    bias = (n_heads + 2 * n_kv) * d_head if spec.bias.qkv else 0
    bias += d_out if spec.bias.attn_out else 0
    return q + kv + out + bias


def mlp_params(spec: ModelSpec, d_model: int, d_ff: int, activation: str | None = None) -> int:
    activation = activation or spec.mlp.activation
    gated = activation in ("geglu", "swiglu")
    n_in = 2 if gated else 1
    weights = n_in * d_model * d_ff + d_ff * d_model
    bias = (n_in * d_ff if spec.bias.mlp_in else 0) + (d_model if spec.bias.mlp_out else 0)
    solu_norm = norm_params(spec, d_ff) if activation == "solu" else 0
    return weights + bias + solu_norm


def _expert_params(spec: ModelSpec, d_model: int, d_ff: int) -> tuple[int, int]:
    """(parameters of one expert, parameters all experts of a layer share).

    A SoLU mixture keeps one LayerNorm after the activation for all its experts.
    """
    activation = spec.moe.activation or spec.mlp.activation
    shared = norm_params(spec, d_ff) if activation == "solu" else 0
    return mlp_params(spec, d_model, d_ff, activation) - shared, shared


def norms_per_layer(spec: ModelSpec, cross: bool) -> int:
    if spec.block.wiring == "parallel":
        base = 1 if spec.block.parallel_norms == "shared" else 2
    else:
        base = 2
    return base + (1 if cross else 0)


@dataclass(frozen=True)
class ParamCount:
    components: dict[str, int]
    active_components: dict[str, int]  # what one token touches (mixture-of-experts: top_k experts)
    total: int
    embedding: int
    active: int

    @property
    def non_embedding(self) -> int:
        return self.total - self.embedding


def count_params(spec: ModelSpec) -> ParamCount:
    arch = derive(spec)
    d = spec.dims.d_model
    h, kv, dh = spec.dims.n_heads, arch.n_kv_heads, arch.d_head
    c: dict[str, int] = defaultdict(int)
    inactive: dict[str, int] = defaultdict(int)  # per component: experts a token does not use

    d_embed = spec.dims.d_embed or d
    c["embedding.tokens"] = spec.dims.vocab_size * d_embed
    if d_embed != d:
        c["embedding.projection"] = 2 * d_embed * d
    pos = spec.position
    if pos.kind == "learned":
        c["embedding.positions"] = (spec.dims.context + pos.offset) * d
    if spec.norm.embedding:
        c["embedding.norm"] = norm_params(spec, d)
    if pos.kind == "relative-xl":
        c["position.relative_projection"] = spec.dims.n_layers * d * h * dh
        c["position.content_position_biases"] = 2 * h * dh * (1 if pos.shared_biases else spec.dims.n_layers)
    if pos.kind == "relative-bias":
        stacks = spec.dims.n_layers if pos.per_layer else 1
        c["position.relative_bias"] = pos.n_buckets * h * stacks
        if spec.encoder is not None:
            c["position.relative_bias"] += pos.n_buckets * h * (spec.encoder.n_layers if pos.per_layer else 1)

    encdec = spec.model.structure == "encoder-decoder"
    for layer in arch.layers:
        c["layers.attention"] += attention_params(spec, d, d, h, kv, dh, d)
        c["layers.norms"] += norms_per_layer(spec, cross=encdec) * norm_params(spec, d)
        if encdec:
            c["layers.cross_attention"] += attention_params(spec, d, d, h, kv, dh, d)
        if layer.moe:
            one_expert, shared = _expert_params(spec, d, arch.expert_d_ff)
            c["layers.moe.router"] += d * spec.moe.n_experts
            c["layers.moe.experts"] += spec.moe.n_experts * one_expert + shared
            inactive["layers.moe.experts"] += (spec.moe.n_experts - spec.moe.top_k) * one_expert
        else:
            c["layers.mlp"] += mlp_params(spec, d, arch.d_ff)
        if layer.cross_attention == "gated":
            c["cross_attention.gated"] += _gated_block_params(spec)
        elif layer.cross_attention == "chunked":
            x = spec.cross_attention
            c["cross_attention.chunked"] += norm_params(spec, d) + attention_params(
                spec, d, x.encoder_d_model, h, kv, dh, d
            )
    if spec.norm.final:
        c["final_norm"] = norm_params(spec, d)
    if not spec.block.tied_embeddings:
        c["lm_head"] = spec.dims.vocab_size * d_embed + (spec.dims.vocab_size if spec.bias.lm_head else 0)

    if spec.encoder is not None:
        enc = spec.encoder
        if pos.kind == "learned":
            c["embedding.encoder_positions"] = (enc.context + pos.offset) * d
        if spec.norm.embedding:
            c["embedding.norm"] += norm_params(spec, d)  # the encoder's embeddings are normed too
        if pos.kind == "relative-xl":
            c["position.relative_projection"] += enc.n_layers * d * h * dh
            if not pos.shared_biases:
                c["position.content_position_biases"] += 2 * h * dh * enc.n_layers
        for is_moe in arch.encoder_moe:
            c["encoder.layers"] += attention_params(spec, d, d, h, kv, dh, d) + 2 * norm_params(spec, d)
            if is_moe:
                one_expert, shared = _expert_params(spec, d, arch.encoder_d_ff)
                c["encoder.moe.router"] += d * spec.moe.n_experts
                c["encoder.moe.experts"] += spec.moe.n_experts * one_expert + shared
                inactive["encoder.moe.experts"] += (spec.moe.n_experts - spec.moe.top_k) * one_expert
            else:
                c["encoder.layers"] += mlp_params(spec, d, arch.encoder_d_ff)
        if spec.norm.final:
            c["encoder.final_norm"] = norm_params(spec, d)

    x = spec.cross_attention
    if x is not None and x.kind == "gated":
        c["cross_attention.resampler"] = _resampler_params(spec)
    if x is not None and x.kind == "chunked":
        c["cross_attention.neighbour_encoder"] = _neighbour_encoder_params(spec)

    components = {k: v for k, v in sorted(c.items()) if v}
    active_components = {k: v - inactive.get(k, 0) for k, v in components.items()}
    total = sum(components.values())
    embedding = sum(v for k, v in components.items() if k.startswith(EMBEDDING_PREFIXES))
    return ParamCount(components, active_components, total, embedding, sum(active_components.values()))


def _gated_block_params(spec: ModelSpec) -> int:
    """Flamingo GATED XATTN-DENSE: norm, cross-attention to media, norm, FFN, two tanh gates."""
    x = spec.cross_attention
    d = spec.dims.d_model
    heads = x.n_heads or spec.dims.n_heads
    dh = d // heads
    attn = attention_params(spec, d, x.media_dim, heads, heads, dh, d)
    ff = int(x.ff_ratio * d)
    ffn = 2 * d * ff + ((ff if spec.bias.mlp_in else 0) + (d if spec.bias.mlp_out else 0))
    return 2 * norm_params(spec, d) + attn + ffn + 2


def _resampler_params(spec: ModelSpec) -> int:
    """Perceiver resampler over media features of width media_dim."""
    x = spec.cross_attention
    m = x.media_dim
    per_layer = 4 * m * m + 2 * m * (4 * m) + 3 * norm_params(spec, m)
    return x.n_latents * m + x.resampler_layers * per_layer + norm_params(spec, m)


def _neighbour_encoder_params(spec: ModelSpec) -> int:
    """RETRO's bidirectional neighbour encoder: self-attention, cross-attention to the chunk, FFN."""
    x = spec.cross_attention
    e, d = x.encoder_d_model, spec.dims.d_model
    self_attn = 4 * e * e
    cross = 2 * e * e + 2 * d * e
    ffn = 2 * e * (4 * e)
    per_layer = self_attn + cross + ffn + 3 * norm_params(spec, e)
    return d * e + x.encoder_layers * per_layer + norm_params(spec, e)
