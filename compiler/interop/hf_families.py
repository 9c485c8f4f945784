"""Per family, as data: which config.json keys taxonc reads, accepts or refuses, and what each
family fixes in code (its transformers modelling file) rather than in its config.

A new family is one `Family` entry: its `model_type`, the weight-name table in interop/hf.py
(`arch`), the HF class `export` writes, the spec values its modelling code fixes, and a rule for
every config key it may carry. The rules' types are in interop/hf_keys.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..spec.kinds import (
    Activation, AttentionKind, NormKind, NormPlacement, ParallelNorms, PositionKind, SparseKind, Structure, Wiring,
)
from .hf_keys import Config, Meta, Only, Rule, To

DROPOUT = Meta("dropout is off at inference")
SAME_MATMUL = Meta("splits a matmul the same way at any value; the function is unchanged")


@dataclass(frozen=True)
class Family:
    model_type: str
    arch: str  # the key of interop.hf.ARCH: where transformers keeps this family's weights
    hf_class: str  # what export writes as config.json's architectures
    fixed: dict[str, Any]  # spec fields the modelling code fixes, whatever config.json says
    fixed_origin: str  # where `fixed` comes from
    rules: dict[str, Rule]
    nested: frozenset[str] = frozenset()  # keys whose object values are read key by key
    structure: Structure = Structure.DECODER


# Keys every transformers config may carry that do not change the function at inference.
COMMON: dict[str, Rule] = {
    **{k: Meta() for k in (
        "transformers_version", "architectures", "_name_or_path", "torch_dtype", "dtype", "use_cache",
        "bos_token_id", "eos_token_id", "pad_token_id", "sep_token_id", "unk_token_id", "decoder_start_token_id",
        "initializer_range", "init_std", "output_attentions", "output_hidden_states", "return_dict",
        "id2label", "label2id", "problem_type", "tokenizer_class", "task_specific_params", "finetuning_task",
        "prefix", "is_decoder", "torchscript", "chunk_size_feed_forward", "max_length", "min_length",
        "do_sample", "num_beams", "temperature", "top_k", "top_p", "repetition_penalty", "num_return_sequences",
    )},
    **{k: DROPOUT for k in (
        "dropout", "attention_dropout", "hidden_dropout", "activation_dropout", "classifier_dropout",
        "resid_pdrop", "embd_pdrop", "attn_pdrop", "layerdrop",
    )},
    "is_encoder_decoder": Only((False,), "a decoder-only family"),
    "add_cross_attention": Only((False,), "cross-attention layers are not in this family's table"),
    "tie_encoder_decoder": Only((False,), "a decoder-only family"),
    "pruned_heads": Only(({},), "pruned heads change layer shapes per layer"),
    "rope_scaling": Only((None,), "RoPE scaling is not in the spec language yet"),
}

# transformers' activation names -> the spec's. The spec's `gelu` is the tanh approximation;
# transformers' "gelu" is exact (erf), which the spec language cannot express yet.
ACTIVATIONS: dict[str, Activation] = {
    "gelu_new": Activation.GELU, "gelu_pytorch_tanh": Activation.GELU, "gelu_fast": Activation.GELU,
    "relu": Activation.RELU,
}
ACTIVATION_NAMES: dict[Activation, str] = {Activation.GELU: "gelu_new", Activation.RELU: "relu"}


def _activation(value: Any, config: Config) -> Activation:
    if value not in ACTIVATIONS:
        raise ValueError(f"the spec language has no such activation; supported: {', '.join(sorted(ACTIVATIONS))}")
    return ACTIVATIONS[value]


def _heads(config: Config) -> int:
    for key in ("num_attention_heads", "n_head"):
        if key in config:
            return int(config[key])
    raise ValueError("needs num_attention_heads")


def _width(config: Config) -> int:
    for key in ("hidden_size", "n_embed"):
        if key in config:
            return int(config[key])
    raise ValueError("needs hidden_size")


def _kv_heads(value: Any, config: Config) -> dict[str, Any]:
    heads = _heads(config)
    if value == heads:
        return {"attention.kind": AttentionKind.MULTI_HEAD}
    if value == 1:
        return {"attention.kind": AttentionKind.MULTI_QUERY}
    return {"attention.kind": AttentionKind.GROUPED_QUERY, "attention.n_kv_heads": value}


def _kv_heads_back(spec: dict[str, Any]) -> int:
    kind = spec["attention"]["kind"]
    if kind == AttentionKind.MULTI_QUERY:
        return 1
    if kind == AttentionKind.GROUPED_QUERY:
        return spec["attention"]["n_kv_heads"]
    return spec["dims"]["n_heads"]


def _head_dim(value: Any, config: Config) -> dict[str, Any]:
    # written only when it differs from d_model / n_heads, so that imported specs stay canonical
    return {} if value is None or value * _heads(config) == _width(config) else {"dims.d_head": value}


def _head_dim_back(spec: dict[str, Any]) -> int:
    d = spec["dims"]
    return d["d_head"] or d["d_model"] // d["n_heads"]


def _parallel(value: Any, config: Config) -> dict[str, Any]:
    if value:
        return {"block.wiring": Wiring.PARALLEL, "block.parallel_norms": ParallelNorms.SEPARATE}
    return {"block.wiring": Wiring.SEQUENTIAL}


def _same_as(key: str):
    def value(config: Config) -> Any:
        return config.get(key)
    value.__name__ = f"the value of {key}"
    return value


_SAME_AS_WIDTH = _same_as("hidden_size")


def _window(value: Any, config: Config) -> dict[str, Any]:
    """Mistral's sliding window: each token sees itself and the window - 1 before it, as taxonc's
    locally-banded pattern does; a window as long as the context changes nothing."""
    if value is None or value >= config.get("max_position_embeddings", 0):
        return {}
    return {"attention.sparse": {"kind": SparseKind.LOCALLY_BANDED.value, "window": int(value)}}


def _window_back(spec: dict[str, Any]) -> int | None:
    sparse = spec["attention"].get("sparse")
    if sparse and sparse.get("kind") == SparseKind.LOCALLY_BANDED and spec["attention"].get("sparse_layers") is None:
        return sparse["window"]
    return None

_ROPE_V5 = {  # transformers 5 keeps RoPE settings in one object
    "rope_parameters.rope_type": Only(("default",), "only unscaled RoPE is in the spec language"),
    "rope_parameters.rope_theta": To("position.base", convert=lambda v, c: float(v)),
}

_DIMS = {
    "vocab_size": To("dims.vocab_size"),
    "hidden_size": To("dims.d_model"),
    "num_hidden_layers": To("dims.n_layers"),
    "num_attention_heads": To("dims.n_heads"),
    "max_position_embeddings": To("dims.context"),
}

_LLAMA_FIXED = {
    "position.kind": PositionKind.ROTARY, "position.fraction": 1.0, "norm.kind": NormKind.RMSNORM,
    "norm.placement": NormPlacement.PRE, "norm.final": True, "mlp.activation": Activation.SWIGLU,
    "block.wiring": Wiring.SEQUENTIAL, "bias.norm": False, "bias.lm_head": False,
    **{f"bias.{k}": False for k in ("qkv", "attn_out", "mlp_in", "mlp_out")},
}
_LLAMA_RULES: dict[str, Rule] = {
    **COMMON, **_DIMS, **_ROPE_V5,
    "intermediate_size": To("dims.d_ff"),
    "num_key_value_heads": To("", convert=_kv_heads, back=_kv_heads_back, default=_heads),
    "head_dim": To("", convert=_head_dim, back=_head_dim_back, default=None),
    "rms_norm_eps": To("norm.eps", default=1e-6),
    "rope_theta": To("position.base", convert=lambda v, c: float(v), default=10000.0),  # transformers 4
    "hidden_act": Only(("silu",), "the SwiGLU gate is SiLU"),
    "attention_bias": Only((False,), "LLaMA's projections have no bias"),
    "mlp_bias": Only((False,), "LLaMA's projections have no bias"),
    "tie_word_embeddings": To("block.tied_embeddings", default=False),
    "pretraining_tp": SAME_MATMUL,
}

FAMILIES: dict[str, Family] = {
    "llama": Family(
        model_type="llama", arch="llama", hf_class="LlamaForCausalLM",
        fixed=_LLAMA_FIXED, fixed_origin="transformers modeling_llama.py",
        nested=frozenset({"rope_parameters"}), rules=_LLAMA_RULES,
    ),
    # Mistral is LLaMA's layer (same weight names) with grouped-query attention and a sliding window.
    "mistral": Family(
        model_type="mistral", arch="llama", hf_class="MistralForCausalLM",
        fixed=_LLAMA_FIXED, fixed_origin="transformers modeling_mistral.py",
        nested=frozenset({"rope_parameters"}),
        rules={**_LLAMA_RULES, "sliding_window": To("", convert=_window, back=_window_back, default=None)},
    ),
    "gpt_neox": Family(
        model_type="gpt_neox", arch="neox", hf_class="GPTNeoXForCausalLM",
        fixed={"position.kind": PositionKind.ROTARY, "norm.kind": NormKind.LAYERNORM,
               "norm.placement": NormPlacement.PRE, "norm.final": True, "attention.kind": AttentionKind.MULTI_HEAD,
               "block.tied_embeddings": False, "bias.lm_head": False, **{f"bias.{k}": True for k in ("qkv", "attn_out", "mlp_in", "mlp_out", "norm")}},
        fixed_origin="transformers modeling_gpt_neox.py",
        nested=frozenset({"rope_parameters"}),
        rules={
            **COMMON, **_DIMS, **_ROPE_V5,
            "rope_parameters.partial_rotary_factor": To("position.fraction", convert=lambda v, c: float(v)),
            "intermediate_size": To("dims.d_ff"),
            "layer_norm_eps": To("norm.eps", default=1e-5),
            "hidden_act": To("mlp.activation", convert=_activation,
                             back=lambda s: ACTIVATION_NAMES[Activation(s["mlp"]["activation"])]),
            "rotary_pct": To("position.fraction", convert=lambda v, c: float(v), default=0.25),  # transformers 4
            "rotary_emb_base": To("position.base", convert=lambda v, c: float(v), default=10000.0),  # transformers 4
            "use_parallel_residual": To("", convert=_parallel, back=lambda s: s["block"]["wiring"] == Wiring.PARALLEL,
                                        default=True),
            "attention_bias": Only((True,), "GPT-NeoX's projections have biases"),
            "tie_word_embeddings": Only((False,), "GPT-NeoX's output matrix (embed_out) is its own"),
        },
    ),
    "bloom": Family(
        model_type="bloom", arch="bloom", hf_class="BloomForCausalLM",
        fixed={"position.kind": PositionKind.ALIBI, "norm.kind": NormKind.LAYERNORM, "norm.placement": NormPlacement.PRE,
               "norm.final": True, "norm.embedding": True, "mlp.activation": Activation.GELU,
               "attention.kind": AttentionKind.MULTI_HEAD, "block.wiring": Wiring.SEQUENTIAL,
               "block.tied_embeddings": True, "bias.lm_head": False,
               **{f"bias.{k}": True for k in ("qkv", "attn_out", "mlp_in", "mlp_out", "norm")}},
        fixed_origin="transformers modeling_bloom.py",
        rules={
            **COMMON,
            "vocab_size": To("dims.vocab_size"),
            "hidden_size": To("dims.d_model"), "n_embed": To("dims.d_model"),  # n_embed: older configs
            "n_layer": To("dims.n_layers"), "num_hidden_layers": To("dims.n_layers"),
            "n_head": To("dims.n_heads"), "num_attention_heads": To("dims.n_heads"),
            # BLOOM has no position table and so no context key; 2048 is the length it was trained at
            "seq_length": To("dims.context", default=2048,
                             default_origin="BigScience 2022, BLOOM paper Table 3: sequence length 2048 (no key in config.json)"),
            "layer_norm_epsilon": To("norm.eps", default=1e-5),
            "apply_residual_connection_post_layernorm": Only((False,), "the residual is taken before the norm"),
            "tie_word_embeddings": Only((True,), "BLOOM's output matrix is its embedding"),
            "n_inner": Only((None,), "BLOOM's MLP is 4 x d_model"),
            "pretraining_tp": SAME_MATMUL, "slow_but_exact": SAME_MATMUL,
            **{k: Meta("a Megatron kernel choice; the function is unchanged") for k in (
                "masked_softmax_fusion", "bias_dropout_fusion", "skip_bias_add", "skip_bias_add_qkv",
                "attention_softmax_in_fp32", "offset_alibi")},
        },
    ),
    "opt": Family(
        model_type="opt", arch="opt", hf_class="OPTForCausalLM",
        fixed={"position.kind": PositionKind.LEARNED, "position.offset": 2, "norm.kind": NormKind.LAYERNORM,
               "norm.placement": NormPlacement.PRE, "norm.final": True, "norm.eps": 1e-5,
               "attention.kind": AttentionKind.MULTI_HEAD, "block.wiring": Wiring.SEQUENTIAL,
               "block.tied_embeddings": True, "bias.lm_head": False,
               **{f"bias.{k}": True for k in ("qkv", "attn_out", "mlp_in", "mlp_out", "norm")}},
        fixed_origin="transformers modeling_opt.py",  # positions looked up at position + 2; nn.LayerNorm's eps
        rules={
            **COMMON, **_DIMS,
            "ffn_dim": To("dims.d_ff"),
            "activation_function": To("mlp.activation", convert=_activation,
                                      back=lambda s: ACTIVATION_NAMES[Activation(s["mlp"]["activation"])], default="relu"),
            "do_layer_norm_before": Only((True,), "post-LayerNorm OPT (350M) is not in the importer's table"),
            "_remove_final_layer_norm": Only((False,), "the final LayerNorm is part of the model"),
            "word_embed_proj_dim": Only((_SAME_AS_WIDTH,), "embedding projections (OPT-350M) are not in the importer's table"),
            "enable_bias": Only((True,), "OPT's projections have biases"),
            "layer_norm_elementwise_affine": Only((True,), "OPT's LayerNorms have a scale and a bias"),
            "tie_word_embeddings": Only((True,), "OPT's output matrix is its embedding"),
        },
    ),
}


def family_of(model_type: Any) -> Family | None:
    return FAMILIES.get(model_type) if isinstance(model_type, str) else None
