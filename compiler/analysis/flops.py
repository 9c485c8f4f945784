"""Forward FLOPs per token and KV-cache bytes per token.

Convention: one multiply-accumulate is 2 FLOPs. "Matmul" FLOPs are 2 x the weights a token
multiplies by (all projections, the active experts and router, the output projection; not
embedding lookups, norms or activations). "Attention" FLOPs are the score and value
products, 2 x 2 x heads x d_head per attended key, averaged over the positions of one full
training sequence: a causal layer attends (T+1)/2 keys on average, a banded layer
min(t+1, window), a sparse layer the keys its pattern allows. Beside the exact figure we
print the usual approximations 2N (forward) and 6N (training) with N the active
non-embedding parameters.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from ..spec.derive import derive
from ..spec.model import ModelSpec
from .params import count_params

DTYPE_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2, "int8": 1}


@lru_cache(maxsize=64)
def mean_keys(kind: str, context: int, size: int = 0, summary: int = 1) -> float:
    """Average number of keys a query attends to over positions 0..context-1."""
    if kind == "dense":
        return (context + 1) / 2
    if kind == "bidirectional":
        return float(context)
    total = 0
    for t in range(context):
        if kind == "locally-banded":
            total += min(t + 1, size)
        elif kind == "strided":
            local = min(t + 1, size)
            total += local + max(0, (t - local) // size + 1) if t >= size else local
        elif kind == "fixed":
            in_block = t % size + 1
            total += in_block + summary * (t // size)
        else:
            raise ValueError(kind)
    return total / context


def _layer_keys(spec: ModelSpec, attention: str) -> float:
    context = spec.dims.context
    sparse = spec.attention.sparse
    if attention == "dense":
        return mean_keys("dense", context)
    if attention == "locally-banded":
        return mean_keys(attention, context, sparse.window)
    if attention == "strided":
        return mean_keys(attention, context, sparse.stride)
    return mean_keys(attention, context, sparse.block, sparse.summary)


@dataclass(frozen=True)
class Flops:
    matmul: float
    attention: float
    encoder_per_token: float

    @property
    def total(self) -> float:
        return self.matmul + self.attention


def forward_flops_per_token(spec: ModelSpec) -> Flops:
    arch = derive(spec)
    active = count_params(spec).active_components
    not_matmul = ("norm", "biases", "relative_bias", "embedding.tokens", "embedding.positions", "embedding.encoder_positions")
    encoder_side = ("encoder.", "cross_attention.neighbour_encoder", "cross_attention.resampler")
    matmul = {k: v for k, v in active.items() if not any(tag in k for tag in not_matmul)}
    decoder_matmul = sum(v for k, v in matmul.items() if not k.startswith(encoder_side))
    encoder_matmul = sum(v for k, v in matmul.items() if k.startswith("encoder."))
    if spec.block.tied_embeddings:
        decoder_matmul += spec.dims.vocab_size * (spec.dims.d_embed or spec.dims.d_model)  # tied output projection
    per_key = 2 * 2 * spec.dims.n_heads * arch.d_head
    attention = sum(per_key * _layer_keys(spec, layer.attention_name) for layer in arch.layers)
    if spec.model.structure == "encoder-decoder":
        attention += per_key * spec.encoder.context * spec.dims.n_layers
    x = spec.cross_attention
    for layer in arch.layers:
        if layer.cross_attention == "gated":
            heads = x.n_heads or spec.dims.n_heads
            attention += 2 * 2 * heads * (spec.dims.d_model // heads) * x.n_latents
        elif layer.cross_attention == "chunked":
            attention += per_key * x.n_neighbours * x.neighbour_len
    encoder = 0.0
    if spec.encoder is not None:
        encoder = 2 * encoder_matmul + spec.encoder.n_layers * per_key * spec.encoder.context
    return Flops(matmul=2 * decoder_matmul, attention=attention, encoder_per_token=encoder)


def kv_cache_bytes_per_token(spec: ModelSpec) -> dict[str, int]:
    """Bytes of self-attention keys and values the decoder caches per generated token."""
    arch = derive(spec)
    elements = 2 * arch.n_kv_heads * arch.d_head * spec.dims.n_layers
    return {dtype: elements * size for dtype, size in DTYPE_BYTES.items()}
