"""The spec schema: one pydantic model per TOML table.

Every architectural behaviour is an explicit field; nothing downstream looks at a model's
name. Field descriptions double as the spec reference (docs/spec-reference.md is generated
from them).
"""

from __future__ import annotations

import re
from typing import Annotated, Literal, TypeVar, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .kinds import (Activation, AttentionKind, CrossAttentionKind, DeepnormScaling, LogitScale, NormKind, NormPlacement,
                    ParallelNorms, PositionKind, QkNorm, RopeScalingKind, RotaryPairing, Router, SparseKind, Structure,
                    Wiring)

PosInt = Annotated[int, Field(gt=0)]

# Upper bounds on sizes, far above every published model, so that a typo or a hostile spec is refused
# at validation instead of exhausting memory while per-layer or per-row data is built.
MAX_LAYERS = 1024
MAX_WIDTH = 1 << 17         # d_model, d_head, d_embed and other widths: 131072
MAX_FF = 1 << 20            # MLP hidden widths: 1048576
MAX_HEADS = 4096
MAX_VOCAB = 1 << 22         # 4194304
MAX_CONTEXT = 1 << 22       # 4194304 tokens
MAX_EXPERTS = 4096
MAX_FF_RATIO = 64
Layers = Annotated[int, Field(gt=0, le=MAX_LAYERS)]
Width = Annotated[int, Field(gt=0, le=MAX_WIDTH)]
FFWidth = Annotated[int, Field(gt=0, le=MAX_FF)]
Heads = Annotated[int, Field(gt=0, le=MAX_HEADS)]
Vocab = Annotated[int, Field(gt=0, le=MAX_VOCAB)]
Tokens = Annotated[int, Field(gt=0, le=MAX_CONTEXT)]
NonNegInt = Annotated[int, Field(ge=0)]
PosFloat = Annotated[float, Field(gt=0, allow_inf_nan=False)]
Fraction = Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)]
# Token counts and parameter counts are often written as floats (300e9) in TOML.
Count = Annotated[float, Field(gt=0, allow_inf_nan=False)]

E = TypeVar("E")
# Enum fields take their TOML spelling (a string) although the model is strict otherwise
Choice = Annotated[E, Field(strict=False)]

# Use NAME_RE.fullmatch: with match() and `$`, "tiny\n" would pass (`$` matches before a final newline).
NAME_RE = re.compile(r"[a-z0-9][a-z0-9._-]*")
# A name becomes a directory (out/<name>-tiny) and a module name; file systems cap a name at 255 bytes.
MAX_NAME = 100


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class LayerSelector(Section):
    """Which layers of a stack a feature applies to (0-based indices)."""

    every: PosInt | None = Field(None, description="Every Nth layer, counting from `start`.")
    start: NonNegInt = Field(0, description="First layer index for `every`.")
    first: NonNegInt | None = Field(None, description="The first K layers.")
    indices: list[NonNegInt] | None = Field(None, description="An explicit list of layer indices.")

    @model_validator(mode="after")
    def _one_form(self) -> "LayerSelector":
        forms = [self.every is not None, self.first is not None, self.indices is not None]
        if sum(forms) != 1:
            raise ValueError("give exactly one of every, first or indices")
        if self.start and self.every is None:
            raise ValueError("start only applies together with every")
        return self

    def resolve(self, n_layers: int) -> list[bool]:
        if self.every is not None:
            return [i >= self.start and (i - self.start) % self.every == 0 for i in range(n_layers)]
        if self.first is not None:
            return [i < self.first for i in range(n_layers)]
        chosen = set(self.indices or [])
        return [i in chosen for i in range(n_layers)]


ALL_LAYERS = LayerSelector(every=1)


class ModelInfo(Section):
    name: str = Field(description="Slug naming the spec (lowercase letters, digits, '.', '_', '-'; at most 100 characters).")
    title: str = Field("", description="Human-readable name, e.g. 'GPT-3 175B'.")
    family: str = Field("", description="Model family this spec belongs to, e.g. 'gpt3'.")
    organization: str = Field("", description="Who built it.")
    released: str = Field("", description="Release date, YYYY-MM.")
    paper: str = Field("", description="Primary source (paper or report URL).")
    structure: Choice[Structure] = Field(
        Structure.DECODER,
        description="decoder: causal LM. encoder-decoder: bidirectional encoder plus causal decoder "
        "with cross-attention. prefix-lm: one stack, bidirectional over a prefix, causal after it.",
    )
    modalities: list[Literal["text", "image", "video", "actions", "proprioception", "code"]] = Field(
        default_factory=lambda: ["text"], description="Input modalities."
    )
    notes: str = Field("", description="Free text; never reaches generated code except as a quoted string.")

    @field_validator("name")
    @classmethod
    def _slug(cls, v: str) -> str:
        if not NAME_RE.fullmatch(v):
            raise ValueError(
                "must be a slug: lowercase letters, digits, '.', '_' or '-', starting with a letter or digit"
            )
        if len(v) > MAX_NAME:
            raise ValueError(f"is {len(v)} characters long; a name has at most {MAX_NAME} characters")
        return v

    @field_validator("released")
    @classmethod
    def _date(cls, v: str) -> str:
        if v and not re.match(r"^\d{4}-(0[1-9]|1[0-2])$", v):
            raise ValueError("must be YYYY-MM")
        return v


class Published(Section):
    params: Count | None = Field(None, description="Total parameters as the source prints them.")
    active_params: Count | None = Field(None, description="Parameters used per token (mixture-of-experts).")
    non_embedding_params: Count | None = Field(None, description="Non-embedding parameters, if printed.")
    source: str = Field("", description="Where the published figures are printed (paper and table).")
    deviation: str = Field(
        "",
        description="Why the count computed from the published dimensions cannot match the published "
        "count within 2%. Required when it does not.",
    )


class Dims(Section):
    n_layers: Layers = Field(description="Decoder (or only) stack depth.")
    d_model: Width = Field(description="Residual stream width.")
    n_heads: Heads = Field(description="Query heads per attention layer.")
    d_head: Width | None = Field(None, description="Per-head width; defaults to d_model / n_heads.")
    d_ff: FFWidth | None = Field(None, description="MLP hidden width; defaults to ff_ratio * d_model.")
    ff_ratio: Annotated[float, Field(gt=0, le=MAX_FF_RATIO, allow_inf_nan=False)] = Field(
        4.0, description="MLP width as a multiple of d_model, used when d_ff is not given."
    )
    ff_multiple_of: Width = Field(
        1, description="Round a ratio-derived d_ff up to a multiple of this (LLaMA uses 256)."
    )
    vocab_size: Vocab = Field(description="Rows of the token embedding (padded size, if padded).")
    d_embed: Width | None = Field(
        None,
        description="Token-embedding width when it differs from d_model; bias-free projections map it in and "
        "out of the residual stream (OPT-350M).",
    )
    context: Tokens = Field(description="Training context length in tokens (decoder side).")
    source: str = Field("", description="Where the dimensions come from.")


class Encoder(Section):
    n_layers: Layers = Field(description="Encoder depth.")
    context: Tokens = Field(description="Encoder input length in tokens.")
    d_ff: FFWidth | None = Field(None, description="Encoder MLP width; defaults to the decoder's.")
    source: str = Field("", description="Where the encoder figures come from.")


class StridedSparsity(Section):
    kind: Literal[SparseKind.STRIDED]
    stride: Tokens = Field(description="Attend to the previous `stride` tokens and every stride-th token before.")


class FixedSparsity(Section):
    kind: Literal[SparseKind.FIXED]
    block: Tokens = Field(description="Block length; each token attends within its block.")
    summary: Tokens = Field(1, description="Last `summary` positions of each block are visible to all later tokens.")


class BandedSparsity(Section):
    kind: Literal[SparseKind.LOCALLY_BANDED]
    window: Tokens = Field(description="Each token attends to itself and the window-1 tokens before it.")


Sparsity = Annotated[Union[StridedSparsity, FixedSparsity, BandedSparsity], Field(discriminator="kind")]


class Attention(Section):
    kind: Choice[AttentionKind] = Field(
        AttentionKind.MULTI_HEAD, description="How keys and values are shared across query heads."
    )
    n_kv_heads: Heads | None = Field(None, description="Key/value heads (grouped-query only).")
    sparse: Sparsity | None = Field(None, description="Sparse pattern used on `sparse_layers`; dense elsewhere.")
    sparse_layers: LayerSelector | None = Field(
        None, description="Layers that use the sparse pattern (default: all layers)."
    )
    score_scale: PosFloat | None = Field(
        None,
        description="Factor on the query-key dot products; absent means 1/sqrt(d_head). T5 and Switch use 1 "
        "(their init folds the scale into the query weights).",
    )
    qk_norm: Choice[QkNorm] = Field(
        QkNorm.NONE,
        description="A norm (norm.kind, norm.eps) on the projected queries and keys, before rotary. per-head: one "
        "scale of width d_head shared by every head (Qwen3); full-width: one scale over all heads' queries and one over "
        "all keys (OLMo-2).",
    )
    source: str = Field("", description="Where the attention facts come from.")

    @model_validator(mode="after")
    def _kv(self) -> "Attention":
        if self.kind is AttentionKind.GROUPED_QUERY and self.n_kv_heads is None:
            raise ValueError("grouped-query attention needs n_kv_heads")
        if self.kind is not AttentionKind.GROUPED_QUERY and self.n_kv_heads is not None:
            raise ValueError(f"n_kv_heads only applies to grouped-query attention, not {self.kind}")
        if self.sparse_layers is not None and self.sparse is None:
            raise ValueError("sparse_layers given without a sparse pattern")
        return self


class LearnedPosition(Section):
    kind: Literal[PositionKind.LEARNED]
    offset: NonNegInt = Field(0, description="Extra rows before position 0 (OPT uses 2).")


class SinusoidalPosition(Section):
    kind: Literal[PositionKind.SINUSOIDAL]


class RopeScaling(Section):
    """Rotary frequencies stretched for contexts longer than pre-training saw (transformers' rope_parameters)."""

    kind: Choice[RopeScalingKind] = Field(
        description="linear: every frequency over `factor`; yarn: a ramp between interpolated and kept "
        "frequencies, with cos/sin scaled; llama3: wavelengths beyond original_context/low_freq_factor over "
        "`factor`, below original_context/high_freq_factor kept, smooth between. dynamic (NTK) is refused: "
        "its frequencies follow the running sequence length, which a KV cache cannot honour.")
    factor: Annotated[float, Field(ge=1, allow_inf_nan=False)] = Field(description="How many times longer the context gets.")
    original_context: Tokens | None = Field(
        None, description="Context of pre-training (transformers' original_max_position_embeddings); yarn and llama3.")
    low_freq_factor: PosFloat | None = Field(None, description="llama3 only: wavelengths beyond original_context / this are scaled.")
    high_freq_factor: PosFloat | None = Field(None, description="llama3 only: wavelengths below original_context / this are kept.")
    beta_fast: PosFloat | None = Field(None, description="yarn only: rotations where the ramp stops extrapolating (default 32).")
    beta_slow: PosFloat | None = Field(None, description="yarn only: rotations where the ramp starts interpolating (default 1).")
    attention_factor: PosFloat | None = Field(
        None, description="yarn only: factor on cos and sin; absent means 0.1 ln(factor) + 1.")


class RotaryPosition(Section):
    kind: Literal[PositionKind.ROTARY]
    fraction: Annotated[float, Field(gt=0, le=1, allow_inf_nan=False)] = Field(1.0, description="Share of each head's dims rotated.")
    base: PosFloat = Field(10000.0, description="Frequency base.")
    pairing: Choice[RotaryPairing] = Field(
        RotaryPairing.HALF,
        description="Which dims rotate together. half: dim i with dim i + R/2 (GPT-NeoX, HF LLaMA's rotate_half); "
        "interleaved: dims 2i and 2i+1 (GPT-J, RoFormer).",
    )
    scaling: RopeScaling | None = Field(None, description="Frequency scaling for long contexts; absent means none.")
    nope_layers: LayerSelector | None = Field(
        None, description="Decoder layers that skip rotary embedding (NoPE): their attention sees positions only "
        "through the causal mask. Absent means every layer rotates.")


class AlibiPosition(Section):
    kind: Literal[PositionKind.ALIBI]


class RelativeXLPosition(Section):
    kind: Literal[PositionKind.RELATIVE_XL]
    shared_biases: bool = Field(
        False, description="Share the content and position biases (u, v) across layers."
    )


class RelativeBiasPosition(Section):
    kind: Literal[PositionKind.RELATIVE_BIAS]
    n_buckets: Tokens = Field(32, description="Log-spaced distance buckets (T5).")
    max_distance: Tokens = Field(128, description="Distance at which buckets saturate.")
    per_layer: bool = Field(False, description="One bias table per layer; T5 shares the first layer's.")


class NoPosition(Section):
    kind: Literal[PositionKind.NONE]


Position = Annotated[
    Union[
        LearnedPosition,
        SinusoidalPosition,
        RotaryPosition,
        AlibiPosition,
        RelativeXLPosition,
        RelativeBiasPosition,
        NoPosition,
    ],
    Field(discriminator="kind"),
]


class Norm(Section):
    kind: Choice[NormKind] = Field(
        NormKind.LAYERNORM,
        description="deepnorm is post-LN LayerNorm with the residual scaled by alpha and the sublayer "
        "init scaled by beta, both derived from depth.",
    )
    placement: Choice[NormPlacement] = Field(
        NormPlacement.PRE,
        description="Norm before each sublayer (pre), after the residual add (post), or on the sublayer's output "
        "inside the residual, x + norm(f(x)), with no norm on its input (sublayer-output: OLMo-2).",
    )
    eps: PosFloat = Field(1e-5, description="Epsilon inside the norm.")
    deepnorm_scaling: Choice[DeepnormScaling] = Field(
        DeepnormScaling.DEEPNET,
        description="deepnorm only. deepnet: alpha=(2N)^(1/4), beta=(8N)^(-1/4) (Wang et al. 2022, decoder-only); "
        "sqrt-2n: alpha=(2N)^(1/2), beta=(2N)^(-1/2) (the rule GLM-130B reports). N is the layer count.",
    )
    final: bool = Field(True, description="A norm after the last layer (pre-norm models).")
    embedding: bool = Field(False, description="A LayerNorm right after the token embedding (BLOOM).")
    source: str = Field("", description="Where the norm facts come from.")


class Mlp(Section):
    activation: Choice[Activation] = Field(
        Activation.GELU,
        description="gelu is the exact erf GELU, gelu-tanh its tanh approximation (likewise geglu, geglu-tanh); GLU "
        "variants use two input matrices; solu is x*softmax(x) followed by a LayerNorm.",
    )
    source: str = Field("", description="Where the MLP facts come from.")


class Block(Section):
    wiring: Choice[Wiring] = Field(
        Wiring.SEQUENTIAL, description="parallel: attention and MLP read the same input and add to the residual together."
    )
    parallel_norms: Choice[ParallelNorms] = Field(
        ParallelNorms.SHARED, description="Parallel blocks only: one norm feeding both branches (GPT-J, PaLM) or one each (GPT-NeoX)."
    )
    tied_embeddings: bool = Field(True, description="The output projection reuses the token embedding.")
    logit_scale: Choice[LogitScale] = Field(
        LogitScale.NONE,
        description="none, or inverse-sqrt-d-model: the tied output multiplies the final hidden state by "
        "d_model^-0.5 (T5, Switch).",
    )
    source: str = Field("", description="Where the block facts come from.")


class Bias(Section):
    qkv: bool = Field(True, description="Bias on the query/key/value projections.")
    attn_out: bool = Field(True, description="Bias on the attention output projection.")
    mlp_in: bool = Field(True, description="Bias on the MLP input projection(s).")
    mlp_out: bool = Field(True, description="Bias on the MLP output projection.")
    norm: bool = Field(True, description="LayerNorm has a bias (beta); RMSNorm never does.")
    lm_head: bool = Field(False, description="Bias on an untied output projection.")


class Moe(Section):
    n_experts: Annotated[int, Field(gt=0, le=MAX_EXPERTS)] = Field(description="Experts per MoE layer.")
    top_k: Annotated[int, Field(gt=0, le=MAX_EXPERTS)] = Field(description="Experts each token is routed to.")
    layers: LayerSelector = Field(ALL_LAYERS, description="Decoder layers whose MLP is a mixture of experts.")
    encoder_layers: LayerSelector | None = Field(
        None, description="Encoder layers whose MLP is a mixture of experts (encoder-decoder only)."
    )
    capacity_factor: PosFloat = Field(
        1.25, description="Training: expert capacity = factor * tokens * top_k / n_experts; overflow is dropped."
    )
    inference_capacity_factor: PosFloat | None = Field(
        None,
        description="The same cap at inference (eval mode), over the tokens of one call; absent means no cap: every "
        "token reaches its experts, and a cached decode step computes what the full forward computes.",
    )
    router: Choice[Router] = Field(
        Router.SOFTMAX_TOP_K, description="softmax-top-k: GShard/GLaM gating renormalised over the chosen experts; switch: top-1 with the raw softmax weight."
    )
    load_balance_weight: Annotated[float, Field(ge=0, allow_inf_nan=False)] = Field(0.01, description="Weight of the auxiliary load-balancing loss.")
    d_ff: FFWidth | None = Field(None, description="Expert hidden width; defaults to the dense d_ff.")
    activation: Choice[Activation] | None = Field(
        None, description="Expert activation when it differs from the dense MLP's (GLaM: GeGLU dense layers, GeLU experts)."
    )
    source: str = Field("", description="Where the MoE facts come from.")

    @model_validator(mode="after")
    def _topk(self) -> "Moe":
        if self.router is Router.SWITCH and self.top_k != 1:
            raise ValueError(f"the switch router routes to one expert; top_k is {self.top_k}")
        return self


class GatedCrossAttention(Section):
    """Flamingo: tanh-gated cross-attention to Perceiver-resampled media tokens."""

    kind: Literal[CrossAttentionKind.GATED]
    layers: LayerSelector = Field(description="Decoder layers preceded by a gated cross-attention block.")
    media_dim: Width = Field(description="Width of the vision encoder's features (an input tensor).")
    n_latents: Tokens = Field(64, description="Latent queries of the Perceiver resampler (visual tokens per image).")
    resampler_layers: Layers = Field(6, description="Depth of the Perceiver resampler.")
    resampler_heads: Heads = Field(8, description="Heads in the resampler's attention.")
    n_heads: Heads | None = Field(None, description="Heads in the cross-attention (default: the decoder's).")
    ff_ratio: Annotated[float, Field(gt=0, le=MAX_FF_RATIO, allow_inf_nan=False)] = Field(
        4.0, description="MLP width multiple inside each gated block."
    )
    source: str = Field("", description="Where the cross-attention facts come from.")


class ChunkedCrossAttention(Section):
    """RETRO: chunked cross-attention to encoded retrieved neighbours."""

    kind: Literal[CrossAttentionKind.CHUNKED]
    layers: LayerSelector = Field(description="Decoder layers with chunked cross-attention.")
    chunk_size: Tokens = Field(64, description="Tokens per chunk; each chunk retrieves its own neighbours.")
    n_neighbours: Tokens = Field(2, description="Neighbours retrieved per chunk.")
    neighbour_len: Tokens = Field(128, description="Tokens per neighbour (chunk plus continuation).")
    encoder_layers: Layers = Field(2, description="Depth of the neighbour encoder.")
    encoder_d_model: Width = Field(description="Width of the neighbour encoder.")
    encoder_n_heads: Heads = Field(description="Heads of the neighbour encoder.")
    source: str = Field("", description="Where the cross-attention facts come from.")


CrossAttention = Annotated[Union[GatedCrossAttention, ChunkedCrossAttention], Field(discriminator="kind")]


class Tokenizer(Section):
    kind: Literal["bpe", "sentencepiece"] = Field("bpe", description="Byte-level BPE (GPT-2 style) or SentencePiece.")
    algorithm: Literal["bpe", "unigram"] = Field("bpe", description="SentencePiece model type.")
    vocab_size: Vocab | None = Field(None, description="Real tokens; may be below dims.vocab_size when the embedding is padded.")
    byte_fallback: bool = Field(True, description="Unknown characters fall back to bytes, so any text encodes.")
    special_tokens: list[str] = Field(default_factory=list, description="Extra tokens the model was trained with.")
    decoder_start_id: NonNegInt | None = Field(
        None,
        description="Encoder-decoder only: the token id the decoder reads first when it generates (transformers' "
        "decoder_start_token_id; T5 and Switch start from the pad id, 0). Below dims.vocab_size. Left out, "
        "`taxonc run` starts from the tokenizer's pad id, else its BOS id.",
    )
    source: str = Field("", description="Where the tokenizer facts come from.")


class BatchRamp(Section):
    start_tokens: Count = Field(description="Batch size (tokens) at the start of the ramp.")
    ramp_tokens: Count = Field(description="Training tokens over which the batch grows to training.batch_tokens.")


class BatchStep(Section):
    batch_tokens: Count = Field(description="Batch size in tokens for this stage.")
    until_tokens: Count = Field(description="Training tokens at which this stage ends.")


class Mup(Section):
    enabled: bool = Field(False, description="Maximal Update Parametrisation: 1/d_head attention scale, width-scaled init and learning rates.")
    base_d_model: Width | None = Field(None, description="Width at which hyperparameters were tuned.")


class FillInTheMiddle(Section):
    rate: Fraction = Field(description="Share of documents transformed.")
    mode: Literal["psm", "spm", "psm+spm"] = Field("psm", description="Prefix-suffix-middle, suffix-prefix-middle, or both.")
    split: Literal["character", "token"] = Field("character", description="Where the middle span is cut.")


class HumanFeedbackConditioning(Section):
    good_token: str = Field("<|good|>", description="Control token prepended to samples above the reward threshold.")
    bad_token: str = Field("<|bad|>", description="Control token for the rest.")
    threshold: Annotated[float, Field(allow_inf_nan=False)] | None = Field(None, description="Reward threshold splitting good from bad.")


class Training(Section):
    objective: Literal["causal-lm", "prefix-lm", "blank-infilling", "span-corruption", "seq2seq"] = Field(
        "causal-lm", description="Pretraining objective."
    )
    tokens: Count | None = Field(None, description="Pretraining tokens.")
    data: str = Field("", description="Pretraining data, in words.")
    batch_tokens: Count | None = Field(None, description="Batch size in tokens (after any ramp).")
    batch_ramp: BatchRamp | None = Field(None, description="Linear batch-size warmup.")
    batch_steps: list[BatchStep] = Field(
        default_factory=list, description="Stepwise batch schedule (PaLM); the last stage runs to the end."
    )
    optimizer: Literal["adam", "adamw", "adafactor", "sgd"] = Field("adam", description="Optimizer.")
    lr: PosFloat | None = Field(None, description="Peak learning rate.")
    beta1: Fraction = Field(0.9, description="Adam beta1.")
    beta2: Fraction = Field(0.95, description="Adam beta2.")
    adam_eps: PosFloat = Field(
        1e-8, description="Adam epsilon, added to the root of the second moment (GPT-3: 1e-8, Brown et al. 2020, "
        "appendix B; Llama 2: 1e-5, Touvron et al. 2023b, section 2.2). Unused by Adafactor and SGD."
    )
    weight_decay: Annotated[float, Field(ge=0, allow_inf_nan=False)] = Field(0.1, description="Weight decay.")
    grad_clip: PosFloat | None = Field(1.0, description="Global gradient-norm clip.")
    z_loss: Annotated[float, Field(ge=0, allow_inf_nan=False)] = Field(
        0.0, description="Weight of the auxiliary z-loss, z_loss * log(Z)^2 per token, which keeps the softmax "
        "normaliser log Z near 0 (PaLM: 1e-4, Chowdhery et al. 2022, section 5)."
    )
    warmup_tokens: Count | None = Field(None, description="Learning-rate warmup, in tokens.")
    warmup_steps: PosInt | None = Field(None, description="Learning-rate warmup, in steps (when the source gives steps).")
    schedule: Literal["cosine", "linear", "inverse-sqrt", "constant"] = Field("cosine", description="Decay after warmup.")
    decay_tokens: Count | None = Field(None, description="Tokens over which the schedule decays.")
    final_lr_fraction: Fraction = Field(0.1, description="Final learning rate as a share of the peak.")
    dropout: Fraction = Field(0.0, description="Dropout probability.")
    init_std: PosFloat = Field(0.02, description="Standard deviation of the normal weight init.")
    dtype: Literal["fp32", "fp16", "bf16"] = Field("bf16", description="Training precision.")
    mup: Mup = Field(default_factory=Mup, description="muP settings.")
    fim: FillInTheMiddle | None = Field(None, description="Fill-in-the-middle data transform.")
    feedback_conditioning: HumanFeedbackConditioning | None = Field(
        None, description="Pretraining with human feedback: conditioning tokens."
    )
    source: str = Field("", description="Where the training figures come from.")

    @model_validator(mode="after")
    def _warmup(self) -> "Training":
        if self.warmup_tokens is not None and self.warmup_steps is not None:
            raise ValueError("give warmup_tokens or warmup_steps, not both")
        return self


class LineageStage(Section):
    method: Literal[
        "sft",
        "feedme",
        "rlhf-ppo",
        "reward-model",
        "constitutional",
        "instruction-tuning",
        "code-finetune",
        "math-finetune",
        "science-finetune",
        "cot-finetune",
        "dialog-finetune",
        "tool-use",
        "rule-rewards",
    ] = Field(description="Post-training method.")
    data: str = Field("", description="What it was trained on.")
    tokens: Count | None = Field(None, description="Tokens of post-training, if published.")
    source: str = Field("", description="Where this stage is described.")


class Lineage(Section):
    base: str = Field("", description="The pretrained model this one derives from.")
    stages: list[LineageStage] = Field(default_factory=list, description="Post-training stages, in order.")


class ModelSpec(Section):
    """A fully resolved spec (after `extends` and defaults)."""

    disclosed: bool = Field(True, description="False when the architecture is undisclosed; every figure is then an assumption.")
    model: ModelInfo = Field(description="Identity and provenance of the model.")
    published: Published = Field(default_factory=Published, description="Figures as the source prints them.")
    dims: Dims = Field(description="Sizes of the decoder (or only) stack.")
    encoder: Encoder | None = Field(None, description="Encoder stack (encoder-decoder only).")
    attention: Attention = Field(default_factory=Attention, description="Self-attention: head sharing and sparsity.")
    position: Position = Field(default_factory=lambda: LearnedPosition(kind="learned"), description="Positional scheme.")
    norm: Norm = Field(default_factory=Norm, description="Normalisation kind and placement.")
    mlp: Mlp = Field(default_factory=Mlp, description="The feed-forward block.")
    block: Block = Field(default_factory=Block, description="How attention and MLP are wired, and embedding tying.")
    bias: Bias = Field(default_factory=Bias, description="Which projections and norms carry biases.")
    moe: Moe | None = Field(None, description="Mixture-of-experts MLPs.")
    cross_attention: CrossAttention | None = Field(None, description="Cross-attention to an extra input.")
    tokenizer: Tokenizer = Field(default_factory=Tokenizer, description="Tokenizer family and vocabulary.")
    training: Training = Field(default_factory=Training, description="Pretraining recipe and data-side techniques.")
    lineage: Lineage | None = Field(None, description="Post-training derivation from a base model.")
