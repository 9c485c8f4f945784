"""Values that follow from a validated spec, computed once here and nowhere else."""

from __future__ import annotations

import math
from dataclasses import dataclass

from .kinds import AttentionKind, CrossAttentionKind, DeepnormScaling, NormKind, PositionKind, SparseKind
from .model import ModelSpec


@dataclass(frozen=True)
class LayerPlan:
    """What one decoder layer contains, after every per-layer selector is resolved."""

    index: int
    sparse: SparseKind | None  # None: dense attention
    moe: bool
    cross_attention: CrossAttentionKind | None
    rotary: bool = True  # False on a NoPE layer of a rotary model (position.nope_layers)

    @property
    def attention_name(self) -> str:
        return self.sparse.value if self.sparse else "dense"


@dataclass(frozen=True)
class Arch:
    d_head: int
    n_kv_heads: int
    d_ff: int
    expert_d_ff: int
    encoder_d_ff: int
    rotary_dims: int
    deepnorm_alpha: float
    deepnorm_beta: float
    layers: tuple[LayerPlan, ...]
    encoder_moe: tuple[bool, ...]

    @property
    def n_moe_layers(self) -> int:
        return sum(layer.moe for layer in self.layers)


def ratio_width(ratio: float, d_model: int, multiple_of: int) -> int:
    width = ratio * d_model
    if abs(width - round(width)) < 1e-6:
        width = round(width)
    return int(math.ceil(width / multiple_of) * multiple_of)


def deepnorm_constants(spec: ModelSpec) -> tuple[float, float]:
    if spec.norm.kind is not NormKind.DEEPNORM:
        return 1.0, 1.0
    n = spec.dims.n_layers
    if spec.norm.deepnorm_scaling is DeepnormScaling.SQRT_2N:
        return (2 * n) ** 0.5, (2 * n) ** -0.5
    return (2 * n) ** 0.25, (8 * n) ** -0.25


def _resolve_layers(spec: ModelSpec) -> tuple[LayerPlan, ...]:
    n = spec.dims.n_layers
    attention = spec.attention
    if attention.sparse is None:
        sparse = [False] * n
    else:
        sparse = attention.sparse_layers.resolve(n) if attention.sparse_layers else [True] * n
    moe = spec.moe.layers.resolve(n) if spec.moe else [False] * n
    xattn = spec.cross_attention.layers.resolve(n) if spec.cross_attention else [False] * n
    nope = getattr(spec.position, "nope_layers", None)
    skips = nope.resolve(n) if nope is not None else [False] * n
    return tuple(
        LayerPlan(
            index=i,
            sparse=attention.sparse.kind if sparse[i] else None,
            moe=moe[i],
            cross_attention=spec.cross_attention.kind if xattn[i] else None,
            rotary=not skips[i],
        )
        for i in range(n)
    )


def _encoder_moe(spec: ModelSpec) -> tuple[bool, ...]:
    if spec.encoder is None:
        return ()
    if spec.moe is None or spec.moe.encoder_layers is None:
        return (False,) * spec.encoder.n_layers
    return tuple(spec.moe.encoder_layers.resolve(spec.encoder.n_layers))


def derive(spec: ModelSpec) -> Arch:
    dims = spec.dims
    d_head = dims.d_head or dims.d_model // dims.n_heads
    kv = {AttentionKind.MULTI_HEAD: dims.n_heads, AttentionKind.MULTI_QUERY: 1}.get(spec.attention.kind, spec.attention.n_kv_heads)
    d_ff = dims.d_ff or ratio_width(dims.ff_ratio, dims.d_model, dims.ff_multiple_of)
    rotary = 0
    if spec.position.kind is PositionKind.ROTARY:
        rotary = int(round(spec.position.fraction * d_head))
    alpha, beta = deepnorm_constants(spec)
    return Arch(
        d_head=d_head,
        n_kv_heads=kv,
        d_ff=d_ff,
        expert_d_ff=(spec.moe.d_ff if spec.moe and spec.moe.d_ff else d_ff),
        encoder_d_ff=(spec.encoder.d_ff if spec.encoder and spec.encoder.d_ff else d_ff),
        rotary_dims=rotary,
        deepnorm_alpha=alpha,
        deepnorm_beta=beta,
        layers=_resolve_layers(spec),
        encoder_moe=_encoder_moe(spec),
    )
