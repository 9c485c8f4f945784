"""Typed attributes of graph ops: one frozen dataclass per op kind, and the IR's own enums.

Passes and backends read `node.attrs.<field>`; a misspelt field is an AttributeError, and the
verifier checks that each node carries the attribute class of its op. Choices made by the
spec (activation, router) reuse the spec's enums; choices the IR makes itself (which norm
function, which position table, which kernel, which role a parameter plays) live here.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from enum import StrEnum

from taxonc.kernels.reference.masks import Mask, MaskKind

from ..spec.kinds import Activation, NormKind, RopeScalingKind, RotaryPairing, Router
from .ops import Op


class NormFn(StrEnum):
    """The function a norm op computes (DeepNorm computes a LayerNorm)."""

    LAYERNORM = "layernorm"
    RMSNORM = "rmsnorm"

    @staticmethod
    def of(kind: NormKind) -> "NormFn":
        return NormFn.RMSNORM if kind is NormKind.RMSNORM else NormFn.LAYERNORM


class PosTable(StrEnum):
    """What a POS_EMBED op adds or provides."""

    LEARNED = "learned"              # x + table[positions]
    SINUSOIDAL = "sinusoidal"        # x + fixed sinusoid
    RELATIVE_BIAS = "relative-bias"  # a bucket x head bias table shared by every layer (T5)
    XL_BIASES = "xl-biases"          # Transformer-XL's u and w, shared by every layer


class Kernel(StrEnum):
    """Fused kernels the Triton backend can call for a node (set by select_kernels)."""

    RMS_NORM = "rms_norm"
    LAYER_NORM = "layer_norm"
    RMS_NORM_RESIDUAL = "rms_norm+residual"
    LAYER_NORM_RESIDUAL = "layer_norm+residual"
    BIAS_ACT = "bias_act"
    GLU = "glu"
    FLASH_ATTENTION = "flash_attention"
    FLASH_ATTENTION_ROTARY = "flash_attention+rotary"
    MOE = "moe"
    SOLU_LAYER_NORM = "solu_layer_norm"
    SOLU_LAYER_NORM_CONSUMED = "solu_layer_norm(fused)"  # the norm whose work the SoLU kernel does


class Role(StrEnum):
    """What a parameter (or a row block of a packed projection) is for; init and import key on it."""

    EMBED = "embed"
    POSITION = "position"
    NORM_SCALE = "norm_scale"
    NORM_BIAS = "norm_bias"
    Q = "q"
    K = "k"
    V = "v"
    ATTN_OUT = "attn_out"
    MLP_IN = "mlp_in"
    MLP_GATE = "mlp_gate"
    MLP_UP = "mlp_up"
    MLP_OUT = "mlp_out"
    ROUTER = "router"
    EXPERT_IN = "expert_in"
    EXPERT_OUT = "expert_out"
    BIAS = "bias"
    PROJECTION = "projection"  # width changes outside attention and MLP (embedding factorisation)
    GATE = "gate"              # Flamingo's tanh gate
    MODULE = "module"          # parameters inside a composite op (resampler, neighbour encoder)
    LM_HEAD = "lm_head"

    @property
    def deepnorm_scaled(self) -> bool:
        """DeepNet scales the init of values, attention outputs and the MLP by beta (Wang et al. 2022)."""
        return self in (Role.V, Role.ATTN_OUT, Role.MLP_IN, Role.MLP_GATE, Role.MLP_UP, Role.MLP_OUT,
                        Role.EXPERT_IN, Role.EXPERT_OUT)


@dataclass(frozen=True)
class Pack:
    """One projection of the unfused graph inside a (possibly merged) projection: `rows` rows from `source`."""

    source: str  # parameter prefix of the projection in the lowered graph, e.g. "layers.0.q"
    role: Role
    rows: int


@dataclass(frozen=True)
class TokenEmbedAttrs:
    vocab: int
    tied_to: str | None = None  # the parameter an encoder embedding shares


@dataclass(frozen=True)
class PosEmbedAttrs:
    kind: PosTable
    offset: int = 0
    d_model: int = 0


@dataclass(frozen=True)
class NormAttrs:
    kind: NormFn
    eps: float
    bias: bool
    # >1: each of `heads` equal slices of the last dim is normed alone with one shared scale (per-head QK-norm);
    # left out of printed graphs at 1, so graphs without QK-norm print as before
    heads: int = field(default=1, metadata={"print_default": False})


@dataclass(frozen=True)
class LinearAttrs:
    bias: bool
    packs: tuple[Pack, ...]
    epilogue: Activation | None = None

    @property
    def role(self) -> Role:
        return self.packs[0].role if len(self.packs) == 1 else Role.PROJECTION


@dataclass(frozen=True)
class SplitAttrs:
    sizes: tuple[int, ...]


@dataclass(frozen=True)
class RopeScalingAttrs:
    """Long-context frequency scaling; as_dict() is the plain form the reference tables read."""

    kind: RopeScalingKind
    factor: float
    original_context: int | None = None
    low_freq_factor: float | None = None
    high_freq_factor: float | None = None
    beta_fast: float | None = None
    beta_slow: float | None = None
    attention_factor: float | None = None

    def as_dict(self) -> dict[str, str | float | int]:
        return {f.name: (v.value if isinstance(v, RopeScalingKind) else v)
                for f in dataclasses.fields(self) if (v := getattr(self, f.name)) is not None}


@dataclass(frozen=True)
class Rotary:
    dims: int
    base: float
    pairing: RotaryPairing = RotaryPairing.HALF
    scaling: RopeScalingAttrs | None = None


@dataclass(frozen=True)
class RotaryAttrs:
    n_heads: int
    n_kv_heads: int
    d_head: int
    rot_dims: int
    base: float
    cached: bool
    pairing: RotaryPairing = RotaryPairing.HALF
    scaling: RopeScalingAttrs | None = None


@dataclass(frozen=True)
class RelativeBias:
    """T5 relative position buckets; the table is a parameter of the node or a shared input."""

    n_buckets: int
    max_distance: int
    bidirectional: bool


@dataclass(frozen=True)
class RelativeXL:
    """Transformer-XL relative positions: a projected sinusoid per distance plus biases u and w."""

    d_model: int


class AttentionFn(StrEnum):
    """Which reference helper computes an attention node (kernels/reference/attention.py)."""

    CAUSAL = "causal_attention"
    MASKED = "masked_attention"
    RELATIVE_BIAS = "relative_bias_attention"
    XL = "xl_attention"
    FULL = "full_attention"


@dataclass(frozen=True)
class AttentionAttrs:
    n_heads: int
    n_kv_heads: int
    d_head: int
    mask: Mask
    self: bool              # self-attention (False: cross-attention to a memory)
    cached: bool            # positions continue from, and keys go to, the KV cache
    alibi: bool = False
    relative: RelativeBias | RelativeXL | None = None
    rotary: Rotary | None = None  # set by fold_rope
    window: int | None = None      # banded layers keep only this many cached keys
    scale: float | None = None     # None: 1/sqrt(d_head); muP 1/d_head; T5 1

    @property
    def fn(self) -> AttentionFn:
        if isinstance(self.relative, RelativeXL):
            return AttentionFn.XL
        if isinstance(self.relative, RelativeBias):
            return AttentionFn.RELATIVE_BIAS
        if self.alibi:
            return AttentionFn.MASKED
        if self.mask == Mask(MaskKind.FULL):
            return AttentionFn.FULL
        if self.mask == Mask(MaskKind.CAUSAL):
            return AttentionFn.CAUSAL
        return AttentionFn.MASKED


@dataclass(frozen=True)
class ActivationAttrs:
    kind: Activation


@dataclass(frozen=True)
class GluAttrs:
    kind: Activation


@dataclass(frozen=True)
class AddAttrs:
    residual_scale: float = 1.0  # DeepNorm's alpha on the residual stream


@dataclass(frozen=True)
class AddNormAttrs(NormAttrs):
    """A residual add (scaled by DeepNorm's alpha) and the norm of its sum."""

    residual_scale: float = 1.0


@dataclass(frozen=True)
class MoeAttrs:
    n_experts: int
    top_k: int
    capacity_factor: float
    router: Router
    activation: Activation
    d_ff: int
    load_balance_weight: float
    norm_kind: NormFn
    eps: float
    inference_capacity_factor: float | None = None  # None: no cap in eval mode


@dataclass(frozen=True)
class GateAttrs:
    pass


@dataclass(frozen=True)
class ResamplerAttrs:
    n_latents: int
    n_layers: int
    n_heads: int
    dim: int
    norm_kind: NormFn
    eps: float
    bias: bool


@dataclass(frozen=True)
class NeighbourEncoderAttrs:
    dim: int
    n_layers: int
    n_heads: int
    chunk: int
    norm_kind: NormFn
    eps: float
    bias: bool
    embedding: str  # the token embedding parameter neighbours are embedded with


@dataclass(frozen=True)
class ChunkedXattnAttrs:
    chunk: int
    n_heads: int
    n_kv_heads: int
    d_head: int


@dataclass(frozen=True)
class LmHeadAttrs:
    bias: bool
    tied_to: str | None = None
    logit_scale: float | None = None  # muP divides logits by the width multiplier; T5 multiplies by d_model^-0.5


ATTRS: dict[Op, type] = {
    Op.TOKEN_EMBED: TokenEmbedAttrs,
    Op.POS_EMBED: PosEmbedAttrs,
    Op.NORM: NormAttrs,
    Op.LINEAR: LinearAttrs,
    Op.SPLIT: SplitAttrs,
    Op.ROTARY: RotaryAttrs,
    Op.ATTENTION: AttentionAttrs,
    Op.ACTIVATION: ActivationAttrs,
    Op.GLU: GluAttrs,
    Op.ADD: AddAttrs,
    Op.ADD_NORM: AddNormAttrs,
    Op.MOE: MoeAttrs,
    Op.GATE: GateAttrs,
    Op.RESAMPLER: ResamplerAttrs,
    Op.NEIGHBOUR_ENCODER: NeighbourEncoderAttrs,
    Op.CHUNKED_XATTN: ChunkedXattnAttrs,
    Op.LM_HEAD: LmHeadAttrs,
}

Attrs = (TokenEmbedAttrs | PosEmbedAttrs | NormAttrs | LinearAttrs | SplitAttrs | RotaryAttrs | AttentionAttrs
         | ActivationAttrs | GluAttrs | AddAttrs | AddNormAttrs | MoeAttrs | GateAttrs | ResamplerAttrs
         | NeighbourEncoderAttrs | ChunkedXattnAttrs | LmHeadAttrs)
