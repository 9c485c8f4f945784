"""Every config.json key an import may meet, accounted for: read, harmless, or accepted only at safe values.

The family tables (interop/hf.py) say how a config becomes a spec: `Key`s, the
`requires` a family's fixed conventions assume, and `derived` functions. This module adds what
an importer needs on top: which other keys the derived functions read (`Read`), which keys do
not change the function computed at inference (`Meta`), and which are safe only at some values
(`Only`, `When`). A key in none of these might change the function, so it stops the import, and
`account` lists every such key at once.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from ..errors import TaxoncError
from .hf import FAMILIES
from .hf_schema import ROPE_SCALING_KEYS, SCALED_ROPE_TYPES

Config = Mapping[str, Any]


class ImportRefused(TaxoncError):
    """A checkpoint (or artifact) taxonc will not convert; the message is one line naming every cause."""


@dataclass(frozen=True)
class Read:
    """Read by the family's `derived` function (its value reaches the spec there)."""


@dataclass(frozen=True)
class Meta:
    """Does not change the function computed at inference."""

    why: str = "metadata"


@dataclass(frozen=True)
class Only:
    """Accepted only at `values`: any other value changes the function in a way the spec cannot say."""

    values: tuple[Any, ...]
    why: str


@dataclass(frozen=True)
class When:
    """Accepted when `ok(value, config)` holds."""

    ok: Callable[[Any, Config], bool]
    needs: str  # what ok checks, in words
    why: str


Rule = Read | Meta | Only | When

DROPOUT = Meta("dropout is off at inference")
TRAINING = Meta("used in training only")
SAME_FUNCTION = Meta("a precision or kernel choice; the function is the same")
OTHER_HEADS = Meta("configures a head for another task, not the language model")

# Keys any transformers config may carry that leave the inference function unchanged. Decoder-only
# generation never reads decoder_start_token_id; the encoder-decoder families read it as a Key.
COMMON: dict[str, Rule] = {
    **{k: Meta() for k in (
        "transformers_version", "architectures", "_name_or_path", "torch_dtype", "dtype", "use_cache",
        "bos_token_id", "eos_token_id", "pad_token_id", "sep_token_id", "unk_token_id", "decoder_start_token_id",
        "output_attentions", "output_hidden_states", "return_dict", "id2label", "label2id", "problem_type",
        "tokenizer_class", "task_specific_params", "finetuning_task", "prefix", "is_decoder", "torchscript",
        "chunk_size_feed_forward", "max_length", "min_length", "do_sample", "num_beams", "temperature", "top_k",
        "top_p", "repetition_penalty", "num_return_sequences", "model_type",
    )},
    **{k: TRAINING for k in ("initializer_range", "init_std", "initializer_factor", "gradient_checkpointing",
                             "router_aux_loss_coef", "router_z_loss_coef", "router_jitter_noise", "output_router_logits",
                             "router_ignore_padding_tokens", "add_router_probs")},
    **{k: DROPOUT for k in (
        "dropout", "attention_dropout", "hidden_dropout", "activation_dropout", "classifier_dropout",
        "resid_pdrop", "embd_pdrop", "attn_pdrop", "layerdrop", "dropout_rate", "summary_first_dropout",
    )},
    "is_encoder_decoder": Meta("the family says whether it is one"),
    "add_cross_attention": Only((False,), "cross-attention in a decoder is not in the family tables"),
    "tie_encoder_decoder": Only((False,), "encoder and decoder weights are separate in the family tables"),
    "pruned_heads": Only(({},), "pruned heads change the shapes layer by layer"),
    "rope_scaling": Only((None,), "RoPE scaling is mapped for the llama family only"),
    **{f"rope_scaling.{k}": Only(("default",), "RoPE scaling is mapped for the llama family only")
       for k in ("rope_type", "type")},
}

# transformers 5 keeps rotary settings in one object, read key by key (older configs: flat keys)
ROPE: dict[str, Rule] = {
    "rope_parameters.rope_type": Only(("default",), "RoPE scaling is mapped for the llama family only"),
    "rope_parameters.rope_theta": Read(), "rope_parameters.partial_rotary_factor": Read(),
    "rope_theta": Read(), "rotary_pct": Read(), "rotary_emb_base": Read(), "partial_rotary_factor": Read(),
}
NESTED = frozenset({"rope_parameters", "rope_scaling"})  # keys whose object values are accounted key by key

# the llama family's position.scaling: rope_parameters (or an older config's rope_scaling) may scale
_SCALED_TYPES = Only(("default", *SCALED_ROPE_TYPES),
                     "dynamic NTK follows the running length, which a KV cache cannot; others are not in the spec language")
SCALED_ROPE: dict[str, Rule] = {
    **{f"{obj}.{k}": Read() for obj in ("rope_parameters", "rope_scaling") for k in ROPE_SCALING_KEYS},
    **{f"{obj}.{k}": _SCALED_TYPES for obj in ("rope_parameters", "rope_scaling") for k in ("rope_type", "type")},
    # transformers' YaRN rounds its ramp ends outwards unless truncate is false
    **{f"{obj}.truncate": Only((True,), "YaRN's ramp ends are rounded in the spec") for obj in ("rope_parameters", "rope_scaling")},
    "rope_scaling.rope_theta": Read(),
}


def _no_overflow(value: Any, config: Config) -> bool:
    return isinstance(value, int) and value >= config.get("n_positions", 512)


_LLAMA = {**ROPE, **SCALED_ROPE, "head_dim": Read(), "num_key_value_heads": Read(), "pretraining_tp": SAME_FUNCTION}
_T5 = {"dense_act_fn": Read(), "feed_forward_proj": Read(), "is_gated_act": Read(), "scale_decoder_outputs": Read(),
       "tie_word_embeddings": Read()}

# per model_type: the keys beyond the family table's Keys and requires
EXTRA: dict[str, dict[str, Rule]] = {
    "gpt2": {"n_inner": Read(), "n_ctx": Meta("unused by transformers; n_positions is the context"),
             "reorder_and_upcast_attn": SAME_FUNCTION,
             **{k: OTHER_HEADS for k in ("summary_activation", "summary_proj_to_labels", "summary_type",
                                         "summary_use_proj")}},
    "gptj": {"n_inner": Read(), "rotary_dim": Read(), "rotary": Only((True,), "GPT-J's attention is rotary"),
             "scale_attn_weights": Meta("GPT-J always scales by 1/sqrt(d_head)")},
    "gpt_neox": {**ROPE, "attention_bias": Read(), "use_parallel_residual": Read()},
    "opt": {"_remove_final_layer_norm": Read(), "do_layer_norm_before": Read(), "enable_bias": Read(),
            "word_embed_proj_dim": Read()},
    "bloom": {"pretraining_tp": SAME_FUNCTION, "slow_but_exact": SAME_FUNCTION,
              "n_embed": Only((lambda c: c.get("hidden_size"),), "an older name of hidden_size"),
              **{k: SAME_FUNCTION for k in ("masked_softmax_fusion", "bias_dropout_fusion", "skip_bias_add",
                                            "skip_bias_add_qkv", "attention_softmax_in_fp32", "offset_alibi")}},
    "llama": _LLAMA,
    "mistral": {**_LLAMA, "sliding_window": Read()},
    "mixtral": {**_LLAMA, "sliding_window": Read()},
    "falcon": {**ROPE, "bias": Read(), "ffn_hidden_size": Read(),
               "num_kv_heads": Meta("unused with multi_query and the old decoder architecture"),
               "num_ln_in_parallel_attn": Meta("used by the new decoder architecture only")},
    # use_sliding_window is required false: Qwen3Attention then reads no window, and every layer is full
    "qwen3": {**_LLAMA, "sliding_window": Meta("unused while use_sliding_window is false"),
              "max_window_layers": Meta("unused while use_sliding_window is false"),
              "layer_types": When(lambda v, _c: all(t == "full_attention" for t in v), "every layer full_attention",
                                  "sliding-window layers mixed with full ones are not in the qwen3 table")},
    "olmo2": _LLAMA,
    "t5": _T5,
    "switch_transformers": {
        **_T5, "decoder_sparse_step": Read(), "encoder_sparse_step": Read(), "num_sparse_decoder_layers": Read(),
        "num_sparse_encoder_layers": Read(), "router_dtype": SAME_FUNCTION,
        # transformers caps each expert at expert_capacity tokens per sequence, in eval mode too; the
        # spec language has no per-sequence cap, so only a cap no sequence can reach is the same function
        "expert_capacity": When(_no_overflow, "at least n_positions",
                                "transformers drops tokens past it at inference; the spec has no such cap"),
    },
}


def rules_for(model_type: str) -> dict[str, Rule]:
    """Every key the importer knows for `model_type`, with its rule."""
    family = FAMILIES[model_type]
    rules: dict[str, Rule] = {**COMMON, **{k.hf: Read() for k in family.keys}}
    rules.update({k: Only((v,), "the family's fixed conventions assume it") for k, v in family.requires.items()})
    rules.update(EXTRA.get(model_type, {}))
    return rules


def flatten(config: Config) -> dict[str, Any]:
    """config.json as dotted keys, the NESTED objects opened one level."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        if key in NESTED and isinstance(value, Mapping):
            flat.update({f"{key}.{sub}": inner for sub, inner in value.items()})
        else:
            flat[key] = value
    return flat


def shown(value: Any) -> str:
    """A value as config.json spells it (null, true, "silu"), cut to fit one line."""
    try:
        text = json.dumps(value, sort_keys=True)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return float(a) == float(b)
    return a == b


def account(model_type: str, config: Config) -> list[str]:
    """Why each refused key of `config` is refused ("key (reason)"); empty when every key is accounted for."""
    rules = rules_for(model_type)
    refusals = []
    for key, value in flatten(config).items():
        rule = rules.get(key)
        if rule is None:
            refusals.append(f"{key} (unknown to taxonc's {model_type} table; it may change the function)")
        elif isinstance(rule, Only):
            allowed = [v(config) if callable(v) else v for v in rule.values]
            if not any(_same(value, a) for a in allowed):
                refusals.append(f"{key} (is {shown(value)}; only {' or '.join(shown(a) for a in allowed)} "
                                f"is supported: {rule.why})")
        elif isinstance(rule, When) and not rule.ok(value, config):
            refusals.append(f"{key} (is {shown(value)}; needs {rule.needs}: {rule.why})")
    return refusals
