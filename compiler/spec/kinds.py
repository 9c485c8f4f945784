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
    # x + norm(f(x)): the sublayer's output is normed inside the residual branch and nothing normalises
    # the sublayer's input (OLMo-2)
    SUBLAYER_OUTPUT = "sublayer-output"


class QkNorm(StrEnum):
    """Where queries and keys are normalised after their projections, before rotary."""

    NONE = "none"
    PER_HEAD = "per-head"      # one norm of width d_head, shared by every head (Qwen3)
    FULL_WIDTH = "full-width"  # one norm over all heads' queries, one over all keys (OLMo-2)


class DeepnormScaling(StrEnum):
    DEEPNET = "deepnet"
    SQRT_2N = "sqrt-2n"


class RotaryPairing(StrEnum):
    """Which dims of a head rotary embedding rotates together."""

    HALF = "half"                # dim i with dim i + R/2 (GPT-NeoX, HF LLaMA: rotate_half)
    INTERLEAVED = "interleaved"  # dims 2i and 2i+1 (GPT-J, RoFormer, Meta's LLaMA checkpoints)


class RopeScalingKind(StrEnum):
    """How rotary frequencies are stretched past the context a model was pre-trained on."""

    LINEAR = "linear"    # position interpolation: every frequency divided by the factor (Chen et al. 2023)
    DYNAMIC = "dynamic"  # dynamic NTK: the base grows with the running sequence length
    YARN = "yarn"        # YaRN: interpolate low frequencies, keep high ones, scale cos/sin (Peng et al. 2023)
    LLAMA3 = "llama3"    # Llama 3.1: wavelength bands, smooth in between (Llama 3 paper, Meta's reference code)


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


# Spellings people bring from papers and other codebases (HF configs, Megatron, litgpt), mapped to ours. Only
# suggestions: a spec must still use the canonical name. Keys are written normalised (see `normalise_choice`), and
# a synonym is offered only for a field whose allowed values include its target, so "fixed" (a sparse pattern) is
# never turned into a position scheme.
CHOICE_SYNONYMS: dict[str, str] = {
    # attention
    "mha": AttentionKind.MULTI_HEAD, "mqa": AttentionKind.MULTI_QUERY, "gqa": AttentionKind.GROUPED_QUERY,
    "local": SparseKind.LOCALLY_BANDED, "sliding-window": SparseKind.LOCALLY_BANDED, "banded": SparseKind.LOCALLY_BANDED,
    # positions
    "rope": PositionKind.ROTARY, "rotary-embedding": PositionKind.ROTARY, "absolute": PositionKind.LEARNED,
    "learned-absolute": PositionKind.LEARNED, "sinusoid": PositionKind.SINUSOIDAL, "sin-cos": PositionKind.SINUSOIDAL,
    "transformer-xl": PositionKind.RELATIVE_XL, "t5": PositionKind.RELATIVE_BIAS, "t5-bias": PositionKind.RELATIVE_BIAS,
    "nope": PositionKind.NONE, "position-interpolation": RopeScalingKind.LINEAR, "pi": RopeScalingKind.LINEAR,
    "dynamic-ntk": RopeScalingKind.DYNAMIC, "ntk": RopeScalingKind.DYNAMIC, "llama-3": RopeScalingKind.LLAMA3,
    # norms and their placement
    "ln": NormKind.LAYERNORM, "layer-norm": NormKind.LAYERNORM, "rms": NormKind.RMSNORM, "rms-norm": NormKind.RMSNORM,
    "deep-norm": NormKind.DEEPNORM, "post-ln": NormPlacement.POST, "post-norm": NormPlacement.POST,
    "pre-ln": NormPlacement.PRE, "pre-norm": NormPlacement.PRE, "output": NormPlacement.SUBLAYER_OUTPUT,
    "reordered": NormPlacement.SUBLAYER_OUTPUT, "per-head-qk-norm": QkNorm.PER_HEAD,
    # activations
    "swish-glu": Activation.SWIGLU, "silu-glu": Activation.SWIGLU, "gelu-glu": Activation.GEGLU,
    # HF's names for the tanh approximation (hidden_act / dense_act_fn) and T5 v1.1's gated one
    "gelu-new": Activation.GELU_TANH, "gelu-pytorch-tanh": Activation.GELU_TANH, "gelu-fast": Activation.GELU_TANH,
    "gated-gelu": Activation.GEGLU_TANH, "rotate-half": RotaryPairing.HALF, "gptj": RotaryPairing.INTERLEAVED,
    # structure and wiring
    "decoder-only": Structure.DECODER, "causal": Structure.DECODER, "causal-lm": Structure.DECODER,
    "enc-dec": Structure.ENCODER_DECODER, "seq2seq": Structure.ENCODER_DECODER,
    "serial": Wiring.SEQUENTIAL,
    # routers
    "top-k": Router.SOFTMAX_TOP_K, "gshard": Router.SOFTMAX_TOP_K, "top-1": Router.SWITCH,
}


def normalise_choice(value: str) -> str:
    """Case, surrounding space and '_' versus '-' never matter to a suggestion: 'Layer_Norm' -> 'layer-norm'."""
    return value.strip().lower().replace("_", "-").replace(" ", "-")


def suggest_choice(value: object, allowed: tuple[str, ...] | list[str], synonyms: dict[str, str] | None = None) -> str | None:
    """The allowed value a mistyped choice most likely means, or None.

    Tried in order: the same word up to case and separators ('RMSNorm' -> 'rmsnorm', 'grouped_query'), a known
    synonym ('rope' -> 'rotary'), then the closest spelling (difflib).
    """
    import difflib

    table = CHOICE_SYNONYMS if synonyms is None else synonyms
    word = normalise_choice(str(value))
    bare = {a.replace("-", "").replace("_", ""): a for a in allowed}
    if word in allowed:
        return word
    if word.replace("-", "") in bare:
        return bare[word.replace("-", "")]
    target = next((table[w] for w in (word, word.replace("-", "_"), word.replace("-", "")) if w in table), None)
    if target is not None and str(target) in allowed:
        return str(target)
    close = difflib.get_close_matches(word, list(allowed), n=1)
    return close[0] if close else None
