"""Hugging Face transformers checkpoints and taxonc specs, family by family, as data.

One `Family` per HF `model_type` says three things:

- `keys`: which config.json key gives which spec value (`Key`, both ways), with the HF class
  default used when a config leaves the key out; `derived` and `exported` do the same for the
  few values computed from several keys;
- `fixed` and `requires`: the conventions the HF modelling code hard-wires (written into the
  spec as they are), and the config values under which that holds (a config that differs
  computes another function and must be refused, not imported);
- `weights`: where each parameter of the lowered (unfused) taxonc graph lives in the HF state
  dict (`Take`), per scope. Fused projections are packed afterwards by the compiler itself
  (passes.weights.fuse_state), so the table names q, k and v separately even where HF fuses
  them, and says how HF packs them (`Packing`).

Nothing here imports torch or transformers: interop.hf_config reads and writes configs with this
table, interop.hf_weights moves the tensors, the spec loader validates the result. Adding a
family is adding one entry to FAMILIES.
"""

from __future__ import annotations

from typing import Any

from ..spec.kinds import Activation, LogitScale, RotaryPairing
from .hf_schema import (Config, Family, Key, Packing, Take, Values, attention_values, d_head, dense_activation,
                        gated_activation, head_dim_values, hf_activation, linear_takes, n_kv_heads, norm_takes,
                        qkv_takes, rope_config, rope_scaling_config, rope_scaling_values, rotary_values)


def _sparse_back(selector: dict[str, int] | None, n_layers: int) -> tuple[int, int]:
    """(sparse step, sparse layer count) for a `_sparse_layers` selector."""
    step = (selector or {}).get("every", 1)
    return step, n_layers // step


def _sparse_layers(step: int, n_sparse: int) -> dict[str, int]:
    """SwitchTransformers makes layer i sparse when i % step == 1 (every layer when step == 1)."""
    if n_sparse <= 0:
        raise KeyError("a Switch stack without sparse layers: HF still makes layer 1 sparse; not imported")
    return {"every": 1} if step == 1 else {"every": step, "start": 1}

def _llama_layer(moe: bool = False) -> dict[str, Take]:
    layer = {**norm_takes("ln_attn", "input_layernorm", False), **norm_takes("ln_mlp", "post_attention_layernorm", False),
             **{f"{r}.weight": Take(f"self_attn.{r}_proj.weight") for r in "qkv"},
             **linear_takes("attn_out", "self_attn.o_proj", False)}
    if moe:
        return {**layer, "moe.router.weight": Take("mlp.gate.weight"), "moe.w_in": Take("mlp.experts.gate_up_proj"),
                "moe.w_out": Take("mlp.experts.down_proj")}
    return {**layer, **linear_takes("mlp_gate", "mlp.gate_proj", False), **linear_takes("mlp_up", "mlp.up_proj", False),
            **linear_takes("mlp_out", "mlp.down_proj", False)}


def _t5_stack(sub: str, decoder: bool) -> dict[str, Take]:
    """One T5/Switch block: layer.0 self-attention, (decoder) layer.1 cross-attention, then the FFN."""
    ff = "layer.2" if decoder else "layer.1"
    layer = {**norm_takes("ln_attn", "layer.0.layer_norm", False),
             **{f"{r}.weight": Take(f"layer.0.SelfAttention.{r}.weight") for r in "qkv"},
             "attn_out.weight": Take("layer.0.SelfAttention.o.weight"),
             **norm_takes("ln_mlp", f"{ff}.layer_norm", False),
             # dense FFN: wi (or wi_0 gate, wi_1 up) and wo; T5 calls the module DenseReluDense, Switch mlp
             "mlp_in.weight": Take(f"{ff}.{sub}.wi.weight"), "mlp_gate.weight": Take(f"{ff}.{sub}.wi_0.weight"),
             "mlp_up.weight": Take(f"{ff}.{sub}.wi_1.weight"), "mlp_out.weight": Take(f"{ff}.{sub}.wo.weight"),
             # Switch's sparse FFN: a router and one DenseActDense per expert
             "moe.router.weight": Take(f"{ff}.mlp.router.classifier.weight"),
             "moe.w_in": Take(f"{ff}.mlp.experts.expert_{{e}}.wi.weight"),
             "moe.w_out": Take(f"{ff}.mlp.experts.expert_{{e}}.wo.weight")}
    if decoder:
        layer.update({**norm_takes("ln_cross", "layer.1.layer_norm", False),
                      **{f"cross_{r}.weight": Take(f"layer.1.EncDecAttention.{r}.weight") for r in "qkv"},
                      "cross_out.weight": Take("layer.1.EncDecAttention.o.weight")})
    return layer


def _t5_weights(sub: str) -> dict[str, dict[str, Take]]:
    return {
        "embed": {"tok.weight": Take("shared.weight"),
                  "rel_bias.weight": Take("decoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight")},
        "encoder_embed": {"rel_bias.weight": Take("encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight")},
        "encoder_layers": _t5_stack(sub, decoder=False),
        "encoder_final": {"ln_f.weight": Take("encoder.final_layer_norm.weight")},
        "layers": _t5_stack(sub, decoder=True),
        "head": {"ln_f.weight": Take("decoder.final_layer_norm.weight"), "lm_head.weight": Take("lm_head.weight")},
    }


_T5_PREFIXES = {"embed": "", "encoder_embed": "", "encoder_final": "", "head": "",
                "encoder_layers": "encoder.block.{i}.", "layers": "decoder.block.{i}."}

_DECODER_CAUSAL = {"model.structure": "decoder"}


def _t5_keys(layers: int, d_model: int, heads: int) -> tuple[Key, ...]:
    """T5Config's keys; SwitchTransformersConfig shares them with other defaults."""
    return (
        Key("dims.n_layers", "num_decoder_layers", layers), Key("encoder.n_layers", "num_layers", layers),
        Key("dims.d_model", "d_model", d_model), Key("dims.n_heads", "num_heads", heads), Key("dims.d_head", "d_kv", 64),
        Key("dims.d_ff", "d_ff", 2048), Key("dims.vocab_size", "vocab_size", 32128),
        Key("position.n_buckets", "relative_attention_num_buckets", 32),
        Key("position.max_distance", "relative_attention_max_distance", 128),
        Key("norm.eps", "layer_norm_epsilon", 1e-6),
        # T5 has no position limit; n_positions (512 in the released configs) is the pretraining input length
        Key("dims.context", "n_positions", 512), Key("encoder.context", "n_positions", 512),
        # where generate starts the decoder (the released configs: 0, the pad id); transformers 5's
        # classes have no default, so a config without it leaves the spec without it too
        Key("tokenizer.decoder_start_id", "decoder_start_token_id", None),
    )


_T5_FIXED = {
    "model.structure": "encoder-decoder",
    "position.kind": "relative-bias", "position.per_layer": False,
    "attention.kind": "multi-head", "attention.score_scale": 1.0,  # no 1/sqrt(d_kv): mesh-tensorflow folds it into the init
    "norm.kind": "rmsnorm", "norm.placement": "pre", "norm.final": True,
    "bias.qkv": False, "bias.attn_out": False, "bias.mlp_in": False, "bias.mlp_out": False, "bias.norm": False,
    "bias.lm_head": False, "block.wiring": "sequential",
}


def _t5_output(cfg: Config) -> dict[str, Any]:
    """T5 v1.0 ties the output to the embedding and rescales by d_model^-0.5; v1.1 (scale_decoder_outputs false,
    saved as tie_word_embeddings false) has its own lm_head and no rescale."""
    scaled = cfg.get("scale_decoder_outputs", cfg.get("tie_word_embeddings", True)) is not False
    return {"block.tied_embeddings": scaled,
            "block.logit_scale": (LogitScale.INVERSE_SQRT_D_MODEL if scaled else LogitScale.NONE).value}


# feed_forward_proj for each activation T5Config can express (its "gated-gelu" is the tanh approximation;
# an exact gated GELU has no spelling there)
T5_FEED_FORWARD = {Activation.RELU: "relu", Activation.GELU: "gelu", Activation.GELU_TANH: "gelu_new",
                   Activation.GEGLU_TANH: "gated-gelu", Activation.SWIGLU: "gated-silu"}


def _switch_exported(v: Values) -> Config:
    dec_step, dec_sparse = _sparse_back(v["moe.layers"], v["dims.n_layers"])
    enc_step, enc_sparse = _sparse_back(v.get("moe.encoder_layers"), v["encoder.n_layers"])
    return {"tie_word_embeddings": v["block.tied_embeddings"], "decoder_sparse_step": dec_step,
            "num_sparse_decoder_layers": dec_sparse, "encoder_sparse_step": enc_step,
            "num_sparse_encoder_layers": enc_sparse,
            # HF caps experts per sequence in eval mode too: room for every token of the longest sequence
            "expert_capacity": max(v["dims.context"], v["encoder.context"])}


def _t5_activation(cfg: Config) -> str:
    act = cfg.get("dense_act_fn")
    gated = cfg.get("is_gated_act")
    if act is None:  # older configs: feed_forward_proj only ("relu", "gated-gelu")
        proj = cfg.get("feed_forward_proj", "relu")
        gated, act = proj.startswith("gated-"), proj.removeprefix("gated-")
        act = "gelu_new" if act == "gelu" and gated else act  # HF maps "gated-gelu" to gelu_new
    return gated_activation(act) if gated else dense_activation(act)


FAMILIES: dict[str, Family] = {}


def _add(family: Family) -> None:
    FAMILIES[family.model_type] = family


_add(Family(
    model_type="gpt2", seq2seq=False,
    keys=(Key("dims.n_layers", "n_layer", 12), Key("dims.d_model", "n_embd", 768), Key("dims.n_heads", "n_head", 12),
          Key("dims.vocab_size", "vocab_size", 50257), Key("dims.context", "n_positions", 1024),
          Key("norm.eps", "layer_norm_epsilon", 1e-5),
          Key("mlp.activation", "activation_function", "gelu_new", dense_activation, hf_activation)),
    fixed={**_DECODER_CAUSAL, "position.kind": "learned", "attention.kind": "multi-head", "norm.kind": "layernorm",
           "norm.placement": "pre", "norm.final": True, "block.wiring": "sequential", "block.tied_embeddings": True,
           "bias.qkv": True, "bias.attn_out": True, "bias.mlp_in": True, "bias.mlp_out": True, "bias.norm": True,
           "bias.lm_head": False},
    requires={"scale_attn_weights": True, "scale_attn_by_inverse_layer_idx": False, "add_cross_attention": False,
              "tie_word_embeddings": True},
    derived=lambda cfg: {"dims.d_ff": cfg.get("n_inner") or 4 * cfg.get("n_embd", 768)},
    exported=lambda v: {"n_inner": v["dims.d_ff"]},
    prefixes={"embed": "transformer.", "layers": "transformer.h.{i}.", "head": "transformer."},
    weights={
        "embed": {"tok.weight": Take("wte.weight"), "pos.weight": Take("wpe.weight")},
        "layers": {**norm_takes("ln_attn", "ln_1"), **qkv_takes("attn.c_attn", Packing.STACKED, transpose=True),
                   **linear_takes("attn_out", "attn.c_proj", transpose=True), **norm_takes("ln_mlp", "ln_2"),
                   **linear_takes("mlp_in", "mlp.c_fc", transpose=True), **linear_takes("mlp_out", "mlp.c_proj", transpose=True)},
        "head": norm_takes("ln_f", "ln_f"),
    },
    notes="reorder_and_upcast_attn only changes the precision of the attention product.",
))

_add(Family(
    model_type="gptj", seq2seq=False,
    keys=(Key("dims.n_layers", "n_layer", 28), Key("dims.d_model", "n_embd", 4096), Key("dims.n_heads", "n_head", 16),
          Key("dims.vocab_size", "vocab_size", 50400), Key("dims.context", "n_positions", 2048),
          Key("norm.eps", "layer_norm_epsilon", 1e-5),
          Key("mlp.activation", "activation_function", "gelu_new", dense_activation, hf_activation)),
    fixed={**_DECODER_CAUSAL, "position.kind": "rotary", "position.base": 10000.0,
           # GPT-J rotates adjacent pairs (rotate_every_two)
           "position.pairing": RotaryPairing.INTERLEAVED.value, "attention.kind": "multi-head",
           "norm.kind": "layernorm", "norm.placement": "pre", "norm.final": True,
           "block.wiring": "parallel", "block.parallel_norms": "shared", "block.tied_embeddings": False,
           "bias.qkv": False, "bias.attn_out": False, "bias.mlp_in": True, "bias.mlp_out": True, "bias.norm": True,
           "bias.lm_head": True},
    requires={"tie_word_embeddings": False},
    derived=lambda cfg: {"dims.d_ff": cfg.get("n_inner") or 4 * cfg.get("n_embd", 4096),
                         "position.fraction": (cfg.get("rotary_dim") or cfg.get("n_embd", 4096) // cfg.get("n_head", 16))
                         / (cfg.get("n_embd", 4096) // cfg.get("n_head", 16))},
    exported=lambda v: {"n_inner": v["dims.d_ff"], "rotary_dim": round(v["position.fraction"] * d_head(v))},
    prefixes={"embed": "transformer.", "layers": "transformer.h.{i}.", "head": ""},
    weights={
        "embed": {"tok.weight": Take("wte.weight")},
        "layers": {**norm_takes("ln", "ln_1"), **{f"{r}.weight": Take(f"attn.{r}_proj.weight") for r in "qkv"},
                   **linear_takes("attn_out", "attn.out_proj", False), **linear_takes("mlp_in", "mlp.fc_in"),
                   **linear_takes("mlp_out", "mlp.fc_out")},
        "head": {**norm_takes("ln_f", "transformer.ln_f"), **linear_takes("lm_head", "lm_head")},
    },
))

_add(Family(
    model_type="gpt_neox", seq2seq=False,
    keys=(Key("dims.n_layers", "num_hidden_layers", 44), Key("dims.d_model", "hidden_size", 6144),
          Key("dims.n_heads", "num_attention_heads", 64), Key("dims.d_ff", "intermediate_size", 24576),
          Key("dims.vocab_size", "vocab_size", 50432), Key("dims.context", "max_position_embeddings", 2048),
          Key("norm.eps", "layer_norm_eps", 1e-5), Key("mlp.activation", "hidden_act", "gelu", dense_activation, hf_activation),
          Key("block.tied_embeddings", "tie_word_embeddings", False)),
    fixed={**_DECODER_CAUSAL, "attention.kind": "multi-head", "norm.kind": "layernorm", "norm.placement": "pre",
           "norm.final": True, "bias.mlp_in": True, "bias.mlp_out": True, "bias.norm": True, "bias.lm_head": False},
    requires={},
    derived=lambda cfg: {
        **rotary_values(cfg),
        # use_parallel_residual: attention and MLP read their own norm of x and add together (Pythia, NeoX-20B)
        **({"block.wiring": "parallel", "block.parallel_norms": "separate"} if cfg.get("use_parallel_residual", True)
           else {"block.wiring": "sequential"}),
        "bias.qkv": cfg.get("attention_bias", True), "bias.attn_out": cfg.get("attention_bias", True)},
    exported=lambda v: {**rope_config(v), "use_parallel_residual": v["block.wiring"] == "parallel",
                        "attention_bias": v["bias.qkv"]},
    prefixes={"embed": "gpt_neox.", "layers": "gpt_neox.layers.{i}.", "head": ""},
    weights={
        "embed": {"tok.weight": Take("embed_in.weight")},
        "layers": {**norm_takes("ln_attn", "input_layernorm"), **norm_takes("ln_mlp", "post_attention_layernorm"),
                   **qkv_takes("attention.query_key_value", Packing.PER_HEAD), **linear_takes("attn_out", "attention.dense"),
                   **linear_takes("mlp_in", "mlp.dense_h_to_4h"), **linear_takes("mlp_out", "mlp.dense_4h_to_h")},
        "head": {**norm_takes("ln_f", "gpt_neox.final_layer_norm"), "lm_head.weight": Take("lm_head.weight")},
    },
))

_add(Family(
    model_type="opt", seq2seq=False,
    keys=(Key("dims.n_layers", "num_hidden_layers", 12), Key("dims.d_model", "hidden_size", 768),
          Key("dims.n_heads", "num_attention_heads", 12), Key("dims.d_ff", "ffn_dim", 3072),
          Key("dims.vocab_size", "vocab_size", 50272), Key("dims.context", "max_position_embeddings", 2048),
          Key("mlp.activation", "activation_function", "relu", dense_activation, hf_activation),
          Key("block.tied_embeddings", "tie_word_embeddings", True)),
    # HF's OPTLearnedPositionalEmbedding has max_positions + 2 rows and looks up position + 2
    fixed={**_DECODER_CAUSAL, "position.kind": "learned", "position.offset": 2, "attention.kind": "multi-head",
           "norm.kind": "layernorm", "norm.eps": 1e-5, "block.wiring": "sequential", "bias.lm_head": False},
    requires={"layer_norm_elementwise_affine": True},
    derived=lambda cfg: {
        **{f"bias.{k}": cfg.get("enable_bias", True) for k in ("qkv", "attn_out", "mlp_in", "mlp_out", "norm")},
        # OPT-350M: post-norm, no final norm, and embeddings narrower than the residual stream
        "norm.placement": "pre" if cfg.get("do_layer_norm_before", True) else "post",
        "norm.final": bool(cfg.get("do_layer_norm_before", True) and not cfg.get("_remove_final_layer_norm", False)),
        **({"dims.d_embed": cfg["word_embed_proj_dim"]}
           if cfg.get("word_embed_proj_dim") not in (None, cfg.get("hidden_size", 768)) else {})},
    exported=lambda v: {"enable_bias": v["bias.qkv"], "do_layer_norm_before": v["norm.placement"] == "pre",
                        "_remove_final_layer_norm": v["norm.placement"] == "pre" and not v["norm.final"],
                        "word_embed_proj_dim": v.get("dims.d_embed") or v["dims.d_model"]},
    prefixes={"embed": "model.decoder.", "layers": "model.decoder.layers.{i}.", "head": ""},
    weights={
        "embed": {"tok.weight": Take("embed_tokens.weight"), "pos.weight": Take("embed_positions.weight"),
                  "proj_in.weight": Take("project_in.weight")},
        "layers": {**norm_takes("ln_attn", "self_attn_layer_norm"), **{f"{r}.{wb}": Take(f"self_attn.{r}_proj.{wb}")
                                                                  for r in "qkv" for wb in ("weight", "bias")},
                   **linear_takes("attn_out", "self_attn.out_proj"), **norm_takes("ln_mlp", "final_layer_norm"),
                   **linear_takes("mlp_in", "fc1"), **linear_takes("mlp_out", "fc2")},
        "head": {**norm_takes("ln_f", "model.decoder.final_layer_norm"), "proj_out.weight": Take("model.decoder.project_out.weight"),
                 "lm_head.weight": Take("lm_head.weight")},
    },
))

_add(Family(
    model_type="bloom", seq2seq=False,
    keys=(Key("dims.n_layers", "n_layer", 2), Key("dims.d_model", "hidden_size", 64), Key("dims.n_heads", "n_head", 8),
          Key("dims.vocab_size", "vocab_size", 250880), Key("norm.eps", "layer_norm_epsilon", 1e-5),
          # ALiBi has no position limit; seq_length is the training context where a config gives it
          Key("dims.context", "seq_length", 2048)),
    fixed={**_DECODER_CAUSAL, "position.kind": "alibi", "attention.kind": "multi-head", "norm.kind": "layernorm",
           "norm.placement": "pre", "norm.final": True, "norm.embedding": True,
           # bloom_gelu_forward: the tanh approximation
           "mlp.activation": Activation.GELU_TANH.value, "block.wiring": "sequential", "block.tied_embeddings": True,
           "bias.qkv": True, "bias.attn_out": True, "bias.mlp_in": True, "bias.mlp_out": True, "bias.norm": True,
           "bias.lm_head": False},
    requires={"apply_residual_connection_post_layernorm": False, "tie_word_embeddings": True},
    derived=lambda cfg: {"dims.d_ff": 4 * cfg.get("hidden_size", 64)},
    prefixes={"embed": "transformer.", "layers": "transformer.h.{i}.", "head": "transformer."},
    weights={
        "embed": {"tok.weight": Take("word_embeddings.weight"), **norm_takes("norm", "word_embeddings_layernorm")},
        "layers": {**norm_takes("ln_attn", "input_layernorm"), **qkv_takes("self_attention.query_key_value", Packing.PER_HEAD),
                   **linear_takes("attn_out", "self_attention.dense"), **norm_takes("ln_mlp", "post_attention_layernorm"),
                   **linear_takes("mlp_in", "mlp.dense_h_to_4h"), **linear_takes("mlp_out", "mlp.dense_4h_to_h")},
        "head": norm_takes("ln_f", "ln_f"),
    },
))

_LLAMA_PREFIXES = {"embed": "model.", "layers": "model.layers.{i}.", "head": ""}
_LLAMA_WEIGHTS = {"embed": {"tok.weight": Take("embed_tokens.weight")}, "layers": _llama_layer(),
                  "head": {"ln_f.weight": Take("model.norm.weight"), "lm_head.weight": Take("lm_head.weight")}}
_LLAMA_FIXED = {**_DECODER_CAUSAL, "norm.kind": "rmsnorm", "norm.placement": "pre", "norm.final": True,
                "block.wiring": "sequential", "bias.qkv": False, "bias.attn_out": False, "bias.mlp_in": False,
                "bias.mlp_out": False, "bias.norm": False, "bias.lm_head": False}


def _llama_keys(layers: int, d_model: int, heads: int, kv: int, d_ff: int, context: int, eps: float) -> tuple[Key, ...]:
    return (Key("dims.n_layers", "num_hidden_layers", layers), Key("dims.d_model", "hidden_size", d_model),
            Key("dims.n_heads", "num_attention_heads", heads), Key("dims.d_ff", "intermediate_size", d_ff),
            Key("dims.vocab_size", "vocab_size", 32000), Key("dims.context", "max_position_embeddings", context),
            Key("norm.eps", "rms_norm_eps", eps), Key("mlp.activation", "hidden_act", "silu", gated_activation, hf_activation),
            Key("block.tied_embeddings", "tie_word_embeddings", False))


def _llama_exported(v: Values, windowed: bool = False) -> Config:
    out = {**rope_config(v), "num_key_value_heads": n_kv_heads(v), "head_dim": d_head(v)}
    out["rope_parameters"].pop("partial_rotary_factor")  # LLaMA rotates whole heads; a fraction is not read back
    out["rope_parameters"].update(rope_scaling_config(v))
    if windowed:
        out["sliding_window"] = (v.get("attention.sparse") or {}).get("window")
    return out


def _llama_derived(cfg: Config) -> dict[str, Any]:
    out = {**rotary_values(cfg), **rope_scaling_values(cfg), **attention_values(cfg),
           **head_dim_values(cfg, "hidden_size", "num_attention_heads")}
    window = cfg.get("sliding_window")
    if window and window < cfg.get("max_position_embeddings", 0):
        # Mistral: each token attends to itself and the window - 1 tokens before it, in every layer
        out["attention.sparse"] = {"kind": "locally-banded", "window": window}
    return out


_add(Family(
    model_type="llama", seq2seq=False, keys=_llama_keys(32, 4096, 32, 32, 11008, 2048, 1e-6), fixed=_LLAMA_FIXED,
    requires={"attention_bias": False, "mlp_bias": False, "pretraining_tp": 1},
    derived=_llama_derived, exported=_llama_exported, prefixes=_LLAMA_PREFIXES, weights=_LLAMA_WEIGHTS))

_add(Family(
    model_type="mistral", seq2seq=False, keys=_llama_keys(32, 4096, 32, 8, 14336, 131072, 1e-6), fixed=_LLAMA_FIXED,
    requires={}, derived=_llama_derived, exported=lambda v: _llama_exported(v, windowed=True), prefixes=_LLAMA_PREFIXES,
    weights=_LLAMA_WEIGHTS))

_add(Family(
    model_type="mixtral", seq2seq=False,
    keys=(*_llama_keys(32, 4096, 32, 8, 14336, 131072, 1e-5),
          Key("moe.n_experts", "num_local_experts", 8), Key("moe.top_k", "num_experts_per_tok", 2),
          Key("moe.load_balance_weight", "router_aux_loss_coef", 0.001)),
    # softmax over all experts, top-k, weights renormalised over the chosen ones; no capacity limit
    fixed={**_LLAMA_FIXED, "moe.router": "softmax-top-k", "moe.layers": {"every": 1}},
    requires={}, derived=_llama_derived, exported=lambda v: _llama_exported(v, windowed=True), prefixes=_LLAMA_PREFIXES,
    weights={**_LLAMA_WEIGHTS, "layers": _llama_layer(moe=True)},
    notes="HF's Mixtral never drops tokens; taxonc's training capacity_factor (not used at inference) is left at its default.",
))

def _with_defaults(keys: tuple[Key, ...], **defaults: Any) -> tuple[Key, ...]:
    """`keys` with other HF class defaults, by spec path ('dims.vocab_size' as dims__vocab_size)."""
    return tuple(Key(k.spec, k.hf, defaults[k.spec.replace(".", "__")], k.to_spec, k.to_hf)
                 if k.spec.replace(".", "__") in defaults else k for k in keys)


def _qk_norm_takes() -> dict[str, Take]:
    return {"q_norm.weight": Take("self_attn.q_norm.weight"), "k_norm.weight": Take("self_attn.k_norm.weight")}


def _qwen3_derived(cfg: Config) -> dict[str, Any]:
    # use_sliding_window is required false, so sliding_window (still set in the released configs) is not read
    return {**rotary_values(cfg), **attention_values(cfg), **head_dim_values(cfg, "hidden_size", "num_attention_heads")}


def _olmo2_exported(v: Values) -> Config:
    out = {**rope_config(v), "num_key_value_heads": n_kv_heads(v)}
    out["rope_parameters"].pop("partial_rotary_factor")  # whole heads rotate
    return out


# Qwen3 (dense): LLaMA's layer with an RMSNorm of width head_dim on each head's query and key, before
# rotary (Qwen3Attention: q_norm, k_norm over the head dim)
_add(Family(
    model_type="qwen3", seq2seq=False,
    keys=_with_defaults(_llama_keys(32, 4096, 32, 32, 22016, 32768, 1e-6), dims__vocab_size=151936),
    fixed={**_LLAMA_FIXED, "attention.qk_norm": "per-head"},
    requires={"attention_bias": False, "use_sliding_window": False},
    derived=_qwen3_derived, exported=_llama_exported, prefixes=_LLAMA_PREFIXES,
    weights={**_LLAMA_WEIGHTS, "layers": {**_llama_layer(), **_qk_norm_takes()}},
))

# OLMo-2: no norm on a sublayer's input; its output is normed inside the residual (x + norm(f(x)),
# Olmo2DecoderLayer), and queries and keys are normed over the whole projection (Olmo2Attention)
_add(Family(
    model_type="olmo2", seq2seq=False,
    keys=_with_defaults(_llama_keys(32, 4096, 32, 32, 11008, 2048, 1e-5), dims__vocab_size=50304),
    fixed={**_LLAMA_FIXED, "norm.placement": "sublayer-output", "attention.qk_norm": "full-width"},
    requires={"attention_bias": False},
    derived=lambda cfg: {**rotary_values(cfg), **attention_values(cfg)},
    exported=_olmo2_exported, prefixes=_LLAMA_PREFIXES,
    weights={**_LLAMA_WEIGHTS, "layers": {
        **norm_takes("ln_attn", "post_attention_layernorm", False), **norm_takes("ln_mlp", "post_feedforward_layernorm", False),
        **{f"{r}.weight": Take(f"self_attn.{r}_proj.weight") for r in "qkv"}, **_qk_norm_takes(),
        **linear_takes("attn_out", "self_attn.o_proj", False), **linear_takes("mlp_gate", "mlp.gate_proj", False),
        **linear_takes("mlp_up", "mlp.up_proj", False), **linear_takes("mlp_out", "mlp.down_proj", False)}},
))

_add(Family(
    model_type="falcon", seq2seq=False,
    keys=(Key("dims.n_layers", "num_hidden_layers", 32), Key("dims.d_model", "hidden_size", 4544),
          Key("dims.n_heads", "num_attention_heads", 71), Key("dims.vocab_size", "vocab_size", 65024),
          Key("dims.context", "max_position_embeddings", 2048), Key("norm.eps", "layer_norm_epsilon", 1e-5),
          Key("mlp.activation", "activation", "gelu", dense_activation, hf_activation),
          Key("block.tied_embeddings", "tie_word_embeddings", True)),
    # Falcon-7B: multi-query attention and one shared LayerNorm in a parallel block; rotate_half rotary
    fixed={**_DECODER_CAUSAL, "attention.kind": "multi-query", "norm.kind": "layernorm", "norm.placement": "pre",
           "norm.final": True, "block.wiring": "parallel", "block.parallel_norms": "shared", "bias.norm": True,
           "bias.lm_head": False},
    requires={"multi_query": True, "parallel_attn": True, "new_decoder_architecture": False, "alibi": False},
    derived=lambda cfg: {**rotary_values(cfg),
                         "dims.d_ff": cfg.get("ffn_hidden_size") or 4 * cfg.get("hidden_size", 4544),
                         **{f"bias.{k}": bool(cfg.get("bias", False)) for k in ("qkv", "attn_out", "mlp_in", "mlp_out")}},
    exported=lambda v: {**rope_config(v), "ffn_hidden_size": v["dims.d_ff"], "bias": v["bias.qkv"]},
    prefixes={"embed": "transformer.", "layers": "transformer.h.{i}.", "head": "transformer."},
    weights={
        "embed": {"tok.weight": Take("word_embeddings.weight")},
        "layers": {**norm_takes("ln", "input_layernorm"), **qkv_takes("self_attention.query_key_value", Packing.STACKED),
                   **linear_takes("attn_out", "self_attention.dense"), **linear_takes("mlp_in", "mlp.dense_h_to_4h"),
                   **linear_takes("mlp_out", "mlp.dense_4h_to_h")},
        "head": norm_takes("ln_f", "ln_f"),
    },
    notes="Falcon-40B/180B (new_decoder_architecture: grouped qkv, two norms) and ALiBi Falcons are not covered.",
))

_add(Family(
    model_type="t5", seq2seq=True, keys=_t5_keys(6, 512, 8), fixed=_T5_FIXED, requires={},
    derived=lambda cfg: {**_t5_output(cfg), "mlp.activation": _t5_activation(cfg)},
    exported=lambda v: {"tie_word_embeddings": v["block.tied_embeddings"],
                        "feed_forward_proj": T5_FEED_FORWARD.get(v["mlp.activation"])},
    prefixes=_T5_PREFIXES, weights=_t5_weights("DenseReluDense"),
))

_add(Family(
    model_type="switch_transformers", seq2seq=True,
    keys=(*_t5_keys(12, 768, 12), Key("mlp.activation", "dense_act_fn", "relu", dense_activation, hf_activation),
          Key("moe.n_experts", "num_experts", 8), Key("moe.load_balance_weight", "router_aux_loss_coef", 0.001)),
    fixed={**_T5_FIXED, "moe.top_k": 1, "moe.router": "switch"},
    requires={"router_bias": False},
    derived=lambda cfg: {
        **_t5_output(cfg),
        "moe.layers": _sparse_layers(cfg.get("decoder_sparse_step", 4), cfg.get("num_sparse_decoder_layers", 3)),
        "moe.encoder_layers": _sparse_layers(cfg.get("encoder_sparse_step", 4), cfg.get("num_sparse_encoder_layers", 3))},
    exported=_switch_exported,
    prefixes=_T5_PREFIXES, weights=_t5_weights("mlp"),
    notes="HF caps each expert at expert_capacity tokens per sequence, in eval mode too; the spec language has no "
          "per-sequence count, so the import is exact only while no sequence sends more than expert_capacity "
          "tokens to one expert (always true for sequences of at most expert_capacity tokens).",
))

