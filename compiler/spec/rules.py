"""Cross-field rules: constraints between keys that no single field can check.

Each rule yields (dotted key, message, allowed values). All are gathered, never the first only.
"""

from __future__ import annotations

from typing import Callable, Iterator

from .kinds import (AttentionKind, CrossAttentionKind, LogitScale, NormKind, NormPlacement, PositionKind, QkNorm,
                    RopeScalingKind, SparseKind, Structure, Wiring)
from .model import LayerSelector, ModelSpec

Violation = tuple[str, str, tuple[str, ...]]


def _divisors(n: int) -> tuple[str, ...]:
    return tuple(str(d) for d in range(1, n + 1) if n % d == 0)[:24]


def _selector(key: str, sel: LayerSelector | None, n_layers: int) -> Iterator[Violation]:
    if sel is None:
        return
    if sel.indices is not None:
        bad = [i for i in sel.indices if i >= n_layers]
        if bad:
            yield f"{key}.indices", f"layer indices {bad} are past the last layer ({n_layers - 1})", ()
        if len(set(sel.indices)) != len(sel.indices):
            yield f"{key}.indices", "layer indices repeat", ()
    if sel.every is not None and sel.start >= n_layers:
        yield f"{key}.start", f"starts at layer {sel.start} but there are only {n_layers} layers", ()
    if sel.first is not None and sel.first > n_layers:
        yield f"{key}.first", f"first {sel.first} layers asked for, but there are only {n_layers}", ()
    if not any(sel.resolve(n_layers)):
        yield key, "selects no layer", ()


def _dims(spec: ModelSpec) -> Iterator[Violation]:
    d = spec.dims
    if d.d_head is None and d.d_model % d.n_heads:
        yield "dims.n_heads", f"must divide d_model ({d.d_model}) unless dims.d_head is given", _divisors(d.d_model)
    if d.d_embed is not None and d.d_embed == d.d_model:
        yield "dims.d_embed", f"equals d_model ({d.d_model}); leave it out instead", ()
    if d.d_ff is not None and d.ff_multiple_of != 1 and d.d_ff % d.ff_multiple_of:
        yield "dims.d_ff", f"{d.d_ff} is not a multiple of ff_multiple_of ({d.ff_multiple_of})", ()


def _attention(spec: ModelSpec) -> Iterator[Violation]:
    a, d = spec.attention, spec.dims
    if a.kind is AttentionKind.GROUPED_QUERY and a.n_kv_heads and d.n_heads % a.n_kv_heads:
        yield "attention.n_kv_heads", f"must divide n_heads ({d.n_heads})", _divisors(d.n_heads)
    sparse = a.sparse
    if sparse is not None:
        size = {"strided": "stride", "fixed": "block", "locally-banded": "window"}[sparse.kind]
        value = getattr(sparse, size)
        if value >= d.context:
            yield f"attention.sparse.{size}", f"{value} must be shorter than the context ({d.context})", ()
        if sparse.kind is SparseKind.FIXED and sparse.summary > sparse.block:
            yield "attention.sparse.summary", f"{sparse.summary} summary positions exceed the block ({sparse.block})", ()
    yield from _selector("attention.sparse_layers", a.sparse_layers, d.n_layers)
    if a.score_scale is not None and spec.training.mup.enabled:
        # muP fixes the scale at 1/d_head; two sources for one number would silently disagree
        yield "attention.score_scale", "muP (training.mup.enabled) already sets the score scale to 1/d_head; give one or the other", ()


def _position(spec: ModelSpec) -> Iterator[Violation]:
    p, d = spec.position, spec.dims
    d_head = d.d_head or d.d_model // d.n_heads
    if p.kind is PositionKind.ROTARY:
        dims = p.fraction * d_head
        if abs(dims - round(dims)) > 1e-9 or round(dims) % 2:
            yield "position.fraction", f"{p.fraction} of d_head ({d_head}) gives {dims:g} rotary dims; it must be an even whole number", ()
        if p.scaling is not None:
            yield from _rope_scaling(p.scaling, d.context)
        yield from _selector("position.nope_layers", p.nope_layers, d.n_layers)
        if p.nope_layers is not None and all(p.nope_layers.resolve(d.n_layers)):
            yield ("position.nope_layers", "selects every layer; a model without positions says "
                   "position.kind = \"none\"", ())
    if p.kind is PositionKind.SINUSOIDAL and d.d_model % 2:
        yield "dims.d_model", f"sinusoidal positions pair sin and cos, so d_model ({d.d_model}) must be even", ()


_SCALING_FIELDS = {RopeScalingKind.LINEAR: set(), RopeScalingKind.DYNAMIC: set(),
                   RopeScalingKind.YARN: {"original_context", "beta_fast", "beta_slow", "attention_factor"},
                   RopeScalingKind.LLAMA3: {"original_context", "low_freq_factor", "high_freq_factor"}}
_SCALING_NEEDS = {RopeScalingKind.YARN: ("original_context",),
                  RopeScalingKind.LLAMA3: ("original_context", "low_freq_factor", "high_freq_factor")}
_ALLOWED_SCALING = tuple(k.value for k in RopeScalingKind if k is not RopeScalingKind.DYNAMIC)


def _rope_scaling(s, context: int) -> Iterator[Violation]:
    key = "position.scaling"
    if s.kind is RopeScalingKind.DYNAMIC:
        # transformers recomputes the frequencies from the longest position seen so far; keys already in a KV
        # cache keep their old rotation, so cached decoding could not equal the full forward pass
        yield f"{key}.kind", ("dynamic NTK scaling changes every frequency with the running sequence length, which "
                              "keys already in the KV cache cannot follow; it is not supported"), _ALLOWED_SCALING
        return
    for name in sorted(set(_SCALING_FIELDS[RopeScalingKind.YARN] | _SCALING_FIELDS[RopeScalingKind.LLAMA3])
                       - _SCALING_FIELDS[s.kind]):
        if getattr(s, name) is not None:
            yield f"{key}.{name}", f"{name} does not apply to {s.kind} scaling", ()
    for name in _SCALING_NEEDS.get(s.kind, ()):
        if getattr(s, name) is None:
            yield f"{key}.{name}", f"{s.kind} scaling needs {name}", ()
    if s.original_context is not None and s.original_context > context:
        yield (f"{key}.original_context", f"{s.original_context} exceeds dims.context ({context}); scaling extends "
               "a shorter pre-training context", ())
    if s.low_freq_factor is not None and s.high_freq_factor is not None and s.high_freq_factor <= s.low_freq_factor:
        yield f"{key}.high_freq_factor", f"{s.high_freq_factor} must exceed low_freq_factor ({s.low_freq_factor})", ()


def _norm_and_block(spec: ModelSpec) -> Iterator[Violation]:
    if spec.norm.kind is NormKind.DEEPNORM and spec.norm.placement is not NormPlacement.POST:
        yield "norm.placement", "DeepNorm is a post-norm scheme", ("post",)
    if spec.block.wiring is Wiring.PARALLEL and spec.norm.placement is not NormPlacement.PRE:
        yield "block.wiring", (f"a parallel block needs pre-norm: both branches read the same normed input; norm.placement is "
                               f"{spec.norm.placement}"), ("sequential",)
    if spec.block.logit_scale is not LogitScale.NONE and not spec.block.tied_embeddings:
        # T5 and Switch rescale because the output reuses the embedding; an untied head learns its own scale
        yield "block.logit_scale", f"{spec.block.logit_scale} applies to a tied output projection; block.tied_embeddings is false", (LogitScale.NONE.value,)


def _qk_norm(spec: ModelSpec) -> Iterator[Violation]:
    if spec.attention.qk_norm is QkNorm.NONE:
        return
    none = (QkNorm.NONE.value,)
    if spec.norm.kind is NormKind.DEEPNORM:
        yield "attention.qk_norm", "no surveyed DeepNorm model normalises queries and keys; use norm.kind rmsnorm or layernorm", none
    # lowered for self-attention only: a cross-attention without it would be a silently different model
    if spec.model.structure is Structure.ENCODER_DECODER:
        yield "attention.qk_norm", "covers self-attention only, and an encoder-decoder's decoder also cross-attends", none
    if spec.cross_attention is not None:
        yield "attention.qk_norm", "covers self-attention only, and [cross_attention] adds another attention", none


def _structure(spec: ModelSpec) -> Iterator[Violation]:
    s = spec.model.structure
    if s is Structure.ENCODER_DECODER and spec.encoder is None:
        yield "encoder", "an encoder-decoder model needs an [encoder] table", ()
    if s is not Structure.ENCODER_DECODER and spec.encoder is not None:
        yield "encoder", f"only encoder-decoder models have an encoder; this one is {s!r}", ("encoder-decoder",)
    if s is Structure.ENCODER_DECODER and spec.block.wiring is Wiring.PARALLEL:
        yield "block.wiring", "parallel blocks have no place for the decoder's cross-attention; no surveyed encoder-decoder uses them", ("sequential",)
    if s is Structure.ENCODER_DECODER and spec.cross_attention is not None:
        yield "cross_attention", "encoder-decoder decoders already cross-attend to the encoder", ()


def _moe(spec: ModelSpec) -> Iterator[Violation]:
    m = spec.moe
    if m is None:
        return
    if m.top_k > m.n_experts:
        yield "moe.top_k", f"{m.top_k} exceeds the number of experts ({m.n_experts})", tuple(str(k) for k in range(1, min(m.n_experts, 8) + 1))
    yield from _selector("moe.layers", m.layers, spec.dims.n_layers)
    if m.encoder_layers is not None:
        if spec.encoder is None:
            yield "moe.encoder_layers", "only encoder-decoder models have encoder layers", ()
        else:
            yield from _selector("moe.encoder_layers", m.encoder_layers, spec.encoder.n_layers)


def _cross_attention(spec: ModelSpec) -> Iterator[Violation]:
    x = spec.cross_attention
    if x is None:
        return
    yield from _selector("cross_attention.layers", x.layers, spec.dims.n_layers)
    if x.kind is CrossAttentionKind.CHUNKED:
        if spec.block.wiring is Wiring.PARALLEL:
            # RETRO's chunked cross-attention sits between attention and MLP: a parallel block has no such point
            yield "block.wiring", "chunked cross-attention needs sequential blocks", (Wiring.SEQUENTIAL.value,)
        if spec.dims.context % x.chunk_size:
            yield "cross_attention.chunk_size", f"must divide the context ({spec.dims.context})", _divisors(spec.dims.context)
        if x.neighbour_len < x.chunk_size:
            yield "cross_attention.neighbour_len", f"a neighbour ({x.neighbour_len}) is shorter than a chunk ({x.chunk_size})", ()
        if x.encoder_d_model % x.encoder_n_heads:
            yield "cross_attention.encoder_n_heads", f"must divide encoder_d_model ({x.encoder_d_model})", _divisors(x.encoder_d_model)
    else:
        heads = x.n_heads or spec.dims.n_heads
        if spec.dims.d_model % heads:
            yield "cross_attention.n_heads", f"must divide d_model ({spec.dims.d_model})", _divisors(spec.dims.d_model)
        if x.media_dim % x.resampler_heads:
            yield "cross_attention.resampler_heads", f"must divide media_dim ({x.media_dim})", _divisors(x.media_dim)


def _tokenizer_and_training(spec: ModelSpec) -> Iterator[Violation]:
    t = spec.tokenizer
    if t.vocab_size is not None and t.vocab_size > spec.dims.vocab_size:
        yield "tokenizer.vocab_size", f"{t.vocab_size} tokens do not fit the embedding's {spec.dims.vocab_size} rows", ()
    if t.kind == "bpe" and t.algorithm != "bpe":
        yield "tokenizer.algorithm", "only SentencePiece tokenizers choose an algorithm", ("bpe",)
    if t.decoder_start_id is not None:
        structure = spec.model.structure
        if structure is not Structure.ENCODER_DECODER:
            # a decoder-only or prefix LM continues its prompt; it has no separate decoder to start
            yield ("tokenizer.decoder_start_id", f"only an encoder-decoder model starts its decoder from a token; "
                   f"this one is {structure.value!r}", (Structure.ENCODER_DECODER.value,))
        elif t.decoder_start_id >= spec.dims.vocab_size:
            yield ("tokenizer.decoder_start_id", f"id {t.decoder_start_id} is not a row of the embedding's "
                   f"{spec.dims.vocab_size} rows", (f"0..{spec.dims.vocab_size - 1}",))
    tr = spec.training
    if tr.batch_ramp and tr.batch_tokens and tr.batch_ramp.start_tokens > tr.batch_tokens:
        yield "training.batch_ramp.start_tokens", f"ramp starts above the final batch ({tr.batch_tokens:g} tokens)", ()
    if tr.fim and spec.model.structure is Structure.ENCODER_DECODER:
        yield "training.fim", "fill-in-the-middle is a decoder-only data transform", ()
    if spec.lineage and spec.lineage.stages and not spec.lineage.base:
        yield "lineage.base", "post-training stages need the base model they start from", ()


# Each rule with the top-level sections it reads. When the schema layer rejects a section, the rules that read it
# are skipped (they would judge a value that is not there) and every other rule still runs, so one `validate`
# lists schema and rule problems together.
RULES: tuple[tuple[Callable[[ModelSpec], Iterator[Violation]], frozenset[str]], ...] = tuple(
    (rule, frozenset(sections)) for rule, sections in (
        (_dims, ("dims",)),
        (_attention, ("attention", "dims", "training")),
        (_position, ("position", "dims")),
        (_norm_and_block, ("norm", "block")),
        (_qk_norm, ("attention", "norm", "model", "cross_attention")),
        (_structure, ("model", "encoder", "block", "cross_attention")),
        (_moe, ("moe", "dims", "encoder")),
        (_cross_attention, ("cross_attention", "block", "dims")),
        (_tokenizer_and_training, ("tokenizer", "dims", "training", "model", "lineage")),
    )
)


def check_rules(spec: ModelSpec, skip: frozenset[str] = frozenset()) -> list[Violation]:
    """Every violation of every rule that reads none of the sections in `skip`."""
    return [violation for rule, sections in RULES if not sections & skip for violation in rule(spec)]
