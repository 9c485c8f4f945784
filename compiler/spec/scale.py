"""Derive small variants of a spec that keep its structure.

`tiny` keeps every kind, the query/key-value head ratio, the d_ff/d_model and
heads*d_head/d_model ratios, sparse patterns, expert routing and per-layer placement,
with widths and lengths small enough for a CPU forward pass in milliseconds.
"""

from __future__ import annotations

from typing import Any

from ..errors import UsageError
from .derive import derive
from .model import LayerSelector, ModelSpec

SCALES = ("full", "tiny")
TINY_HEAD = 16
TINY_CONTEXT = 64
TINY_VOCAB = 512  # the size of the tokenizer taxonc ships, so tiny models can run text


def _layers_needed(sel: LayerSelector | None, n_layers: int) -> int:
    """Depth that keeps a selector's pattern visible: selected and unselected layers both appear."""
    if sel is None:
        return 0
    if sel.every is not None:
        return min(n_layers, sel.start + 2 * sel.every if sel.every > 1 else sel.start + 2)
    if sel.first is not None:
        return min(n_layers, sel.first + 1)
    return min(n_layers, max(sel.indices or [0]) + 1)


def _tiny_selector(sel: dict[str, Any] | None, n_layers: int) -> dict[str, Any] | None:
    if sel is None or sel.get("indices") is None:
        return sel
    kept = [i for i in sel["indices"] if i < n_layers]
    return {"indices": kept or [n_layers - 1]}


def scale_spec(spec: ModelSpec, scale: str) -> ModelSpec:
    if scale == "full":
        return spec
    if scale != "tiny":
        raise UsageError(f"unknown scale {scale!r}; scales are: {', '.join(SCALES)}")
    arch = derive(spec)
    data = spec.model_dump(mode="python", exclude_none=True)
    dims = spec.dims
    ratio = dims.n_heads // arch.n_kv_heads
    n_kv = 1 if arch.n_kv_heads == 1 else 2 if arch.n_kv_heads > 1 and ratio < dims.n_heads else min(arch.n_kv_heads, 4)
    n_heads = n_kv * min(ratio, 4) if arch.n_kv_heads != dims.n_heads else min(dims.n_heads, 4)
    if spec.attention.kind == "multi-head":
        n_kv = n_heads
    width_ratio = dims.d_model / (dims.n_heads * arch.d_head)
    d_model = max(8, int(round(n_heads * TINY_HEAD * width_ratio / 8)) * 8)
    needed = [4]
    needed.append(_layers_needed(spec.attention.sparse_layers, dims.n_layers))
    if spec.moe:
        needed.append(_layers_needed(spec.moe.layers, dims.n_layers))
    if spec.cross_attention:
        needed.append(_layers_needed(spec.cross_attention.layers, dims.n_layers))
    nope = getattr(spec.position, "nope_layers", None)
    if nope is not None:
        needed.append(_layers_needed(nope, dims.n_layers))
    n_layers = min(dims.n_layers, max(needed))
    d = data["dims"]
    d.update(n_layers=n_layers, d_model=d_model, n_heads=n_heads, d_head=TINY_HEAD,
             d_ff=max(8, int(round(arch.d_ff / dims.d_model * d_model))), ff_multiple_of=1,
             vocab_size=min(dims.vocab_size, TINY_VOCAB), context=min(dims.context, TINY_CONTEXT))
    if dims.d_embed:
        d["d_embed"] = max(8, d_model // 2)
    context = d["context"]
    attention = data["attention"]
    if spec.attention.kind == "grouped-query":
        attention["n_kv_heads"] = n_kv
    sparse = attention.get("sparse")
    if sparse:
        for key in ("window", "stride", "block"):
            if key in sparse:
                sparse[key] = max(2, min(sparse[key], context // 4))
        if "summary" in sparse:
            sparse["summary"] = max(1, min(sparse["summary"], sparse["block"] // 2))
    attention["sparse_layers"] = _tiny_selector(attention.get("sparse_layers"), n_layers)
    position = data["position"]
    if position["kind"] == "relative-bias":
        position.update(n_buckets=8, max_distance=16)
    if position["kind"] == "rotary":
        dims_rot = position["fraction"] * TINY_HEAD
        if dims_rot != int(dims_rot) or int(dims_rot) % 2:
            position["fraction"] = 0.5
        if nope is not None:
            # the full model's NoPE layers that a tiny stack keeps; at least one, never all of them
            kept = [i for i, on in enumerate(nope.resolve(dims.n_layers)) if on and i < n_layers]
            position["nope_layers"] = {"indices": kept if 0 < len(kept) < n_layers else [n_layers - 1]}
        scaling = position.get("scaling")
        if scaling and scaling.get("original_context"):
            # the pre-training context shrinks with the context, so tiny sequences still run past it
            scaling["original_context"] = max(2, scaling["original_context"] * context // dims.context)
    if "tokenizer" in data and data["tokenizer"].get("vocab_size"):
        data["tokenizer"]["vocab_size"] = min(data["tokenizer"]["vocab_size"], d["vocab_size"])
    if spec.encoder:
        data["encoder"].update(n_layers=min(spec.encoder.n_layers, 2), context=min(spec.encoder.context, 32))
        if spec.encoder.d_ff:
            data["encoder"]["d_ff"] = max(8, int(round(arch.encoder_d_ff / dims.d_model * d_model)))
    if spec.moe:
        moe = data["moe"]
        moe["n_experts"] = min(spec.moe.n_experts, 4)
        moe["top_k"] = min(spec.moe.top_k, moe["n_experts"])
        moe["layers"] = _tiny_selector(moe["layers"], n_layers)
        if spec.moe.d_ff:
            moe["d_ff"] = max(8, int(round(spec.moe.d_ff / dims.d_model * d_model)))
        if spec.moe.encoder_layers is not None and spec.encoder:
            moe["encoder_layers"] = _tiny_selector(moe["encoder_layers"], data["encoder"]["n_layers"])
    x = data.get("cross_attention")
    if x:
        x["layers"] = _tiny_selector(x["layers"], n_layers)
        if x["kind"] == "gated":
            x.update(media_dim=32, n_latents=4, resampler_layers=1, resampler_heads=2)
            x.pop("n_heads", None)
        else:
            chunk = 8
            x.update(chunk_size=chunk, neighbour_len=2 * chunk, encoder_layers=1, encoder_d_model=32, encoder_n_heads=2)
    training = data["training"]
    mup = training.get("mup") or {}
    if mup.get("base_d_model"):  # keep muP's width multiplier, not the absolute base width
        mup["base_d_model"] = max(1, round(mup["base_d_model"] * d_model / dims.d_model))
    if training.get("fim") is None:
        training.pop("fim", None)
    return ModelSpec.model_validate(data, strict=False)


def apply_scale_check(spec: ModelSpec) -> None:
    """The tiny variant must still satisfy every cross-field rule."""
    from .rules import check_rules

    problems = check_rules(spec)
    if problems:
        raise UsageError("scaled spec breaks a rule: " + "; ".join(f"{k}: {m}" for k, m, _ in problems))


__all__ = ["SCALES", "apply_scale_check", "scale_spec"]
