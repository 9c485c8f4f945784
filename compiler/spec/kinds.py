"""The closed sets of choices a spec makes, as enums: the one place their spellings live.

Every later stage (lowering, passes, backends, docs) compares against these members, never
against the strings, so a renamed or added choice is a change here plus the code that
handles it, and a typo is an AttributeError instead of a silently dead branch.
"""

from __future__ import annotations

from enum import StrEnum


class Structure(StrEnum):
    DECODER = "decoder"
    ENCODER_DECODER = "encoder-decoder"
    PREFIX_LM = "prefix-lm"


class AttentionKind(StrEnum):
    MULTI_HEAD = "multi-head"
    MULTI_QUERY = "multi-query"
    GROUPED_QUERY = "grouped-query"


class SparseKind(StrEnum):
    STRIDED = "strided"
    FIXED = "fixed"
    LOCALLY_BANDED = "locally-banded"


class PositionKind(StrEnum):
    LEARNED = "learned"
    SINUSOIDAL = "sinusoidal"
    ROTARY = "rotary"
    ALIBI = "alibi"
    RELATIVE_XL = "relative-xl"
    RELATIVE_BIAS = "relative-bias"
    NONE = "none"


class NormKind(StrEnum):
    LAYERNORM = "layernorm"
    RMSNORM = "rmsnorm"
    DEEPNORM = "deepnorm"  # LayerNorm, post-norm, with a scaled residual and scaled init


class NormPlacement(StrEnum):
    PRE = "pre"
    POST = "post"


class DeepnormScaling(StrEnum):
    DEEPNET = "deepnet"
    SQRT_2N = "sqrt-2n"


class RotaryPairing(StrEnum):
    """Which dims of a head rotary embedding rotates together."""

    HALF = "half"                # dim i with dim i + R/2 (GPT-NeoX, HF LLaMA: rotate_half)
    INTERLEAVED = "interleaved"  # dims 2i and 2i+1 (GPT-J, RoFormer, Meta's LLaMA checkpoints)


class LogitScale(StrEnum):
    """A factor on the output logits that a convention fixes."""

    NONE = "none"
    INVERSE_SQRT_D_MODEL = "inverse-sqrt-d-model"  # T5/Switch: tied output scaled by d_model^-0.5


class Activation(StrEnum):
    RELU = "relu"
    GELU = "gelu"              # exact: x * Phi(x), with erf (torch's default, HF "gelu")
    GELU_TANH = "gelu-tanh"    # tanh approximation (HF "gelu_new", "gelu_fast", "gelu_pytorch_tanh")
    GEGLU = "geglu"            # exact GELU gate
    GEGLU_TANH = "geglu-tanh"  # tanh-approximated GELU gate (T5 v1.1 "gated-gelu")
    SWIGLU = "swiglu"
    SOLU = "solu"

    @property
    def gated(self) -> bool:
        """GLU variants: two input projections, act(gate) * up."""
        return self in (Activation.GEGLU, Activation.GEGLU_TANH, Activation.SWIGLU)


class Wiring(StrEnum):
    SEQUENTIAL = "sequential"
    PARALLEL = "parallel"


class ParallelNorms(StrEnum):
    SHARED = "shared"
    SEPARATE = "separate"


class Router(StrEnum):
    SOFTMAX_TOP_K = "softmax-top-k"
    SWITCH = "switch"


class CrossAttentionKind(StrEnum):
    GATED = "gated"      # Flamingo: tanh-gated cross-attention to resampled media
    CHUNKED = "chunked"  # RETRO: chunked cross-attention to retrieved neighbours
