"""The same small decoder as a Hugging Face transformers model and as a taxonc model.

For each of four architectures (LLaMA, GPT-NeoX, BLOOM, OPT) this module knows:

- the taxonc spec (a standalone TOML, no `extends`, so every behaviour is written out),
- the matching transformers config (random init, nothing downloaded),
- how to map the transformers state dict onto taxonc's fused parameter names.

transformers is imported only by the functions that build its models, never at import time.

taxonc's fused layouts (compiler/passes/fusions.py): `qkv` is [q; k; v] stacked along the
output dim, `mlp_gate_up` is [gate; up]. GPT-NeoX and BLOOM store their fused
`query_key_value` per head ([q_h, k_h, v_h] for each head h), so those rows are reordered.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from taxonc.runtime.artifact import load_source
from ..spec.kinds import NormKind, PositionKind

ARCHS = ("llama", "neox", "bloom", "opt")

# Every projection, norm and embedding is given random values (not HF's zero biases and unit
# norm scales) so that a wrong mapping of any parameter shows up in the logits.
NORM_EPS = 1e-5
ROPE_BASE = 10000.0
NEOX_ROTARY_FRACTION = 0.25
OPT_POS_OFFSET = 2


@dataclass(frozen=True)
class Dims:
    n_layers: int = 2
    d_model: int = 64
    n_heads: int = 4
    vocab_size: int = 128
    context: int = 64
    # MLP width; None means the architecture's own rule (4 x d_model, or LLaMA's SwiGLU width
    # 2/3 x 4 x d_model rounded up to a multiple of 256).
    d_ff: int | None = None

    def ff(self, arch: str) -> int:
        if self.d_ff is not None:
            return self.d_ff
        if arch == "llama":
            raw = int(2 * 4 * self.d_model / 3)
            return -(-raw // 256) * 256
        return 4 * self.d_model


TINY = Dims()


# --------------------------------------------------------------------------------------------
# taxonc side
# --------------------------------------------------------------------------------------------

def spec_toml(arch: str, dims: Dims = TINY) -> str:
    """A standalone taxonc spec for `arch` at `dims`."""
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; known: {ARCHS}")
    d = dims
    common_dims = (
        f"n_layers = {d.n_layers}\nd_model = {d.d_model}\nn_heads = {d.n_heads}\n"
        f"d_ff = {d.ff(arch)}\nvocab_size = {d.vocab_size}\ncontext = {d.context}\n"
    )
    tokenizer = f'[tokenizer]\nkind = "bpe"\nvocab_size = {d.vocab_size}\n'
    if arch == "llama":
        body = f"""
[position]
kind = "rotary"
fraction = 1.0
base = {ROPE_BASE}

[norm]
kind = "{NormKind.RMSNORM}"
placement = "pre"
eps = {NORM_EPS}
final = true

[mlp]
activation = "swiglu"

[block]
wiring = "sequential"
tied_embeddings = false

[bias]
qkv = false
attn_out = false
mlp_in = false
mlp_out = false
norm = false
lm_head = false
"""
    elif arch == "neox":
        body = f"""
[position]
kind = "rotary"
fraction = {NEOX_ROTARY_FRACTION}
base = {ROPE_BASE}

[norm]
kind = "layernorm"
placement = "pre"
eps = {NORM_EPS}
final = true

[mlp]
activation = "gelu"

[block]
wiring = "parallel"
parallel_norms = "separate"
tied_embeddings = false

[bias]
qkv = true
attn_out = true
mlp_in = true
mlp_out = true
norm = true
lm_head = false
"""
    elif arch == "bloom":
        body = f"""
[position]
kind = "{PositionKind.ALIBI}"

[norm]
kind = "layernorm"
placement = "pre"
eps = {NORM_EPS}
final = true
embedding = true

[mlp]
activation = "gelu"

[block]
wiring = "sequential"
tied_embeddings = true

[bias]
qkv = true
attn_out = true
mlp_in = true
mlp_out = true
norm = true
lm_head = false
"""
    else:  # opt
        body = f"""
[position]
kind = "learned"
offset = {OPT_POS_OFFSET}

[norm]
kind = "layernorm"
placement = "pre"
eps = {NORM_EPS}
final = true

[mlp]
activation = "relu"

[block]
wiring = "sequential"
tied_embeddings = true

[bias]
qkv = true
attn_out = true
mlp_in = true
mlp_out = true
norm = true
lm_head = false
"""
    return (
        f'[model]\nname = "hf-{arch}"\nstructure = "decoder"\n\n'
        f"[dims]\n{common_dims}\n"
        f'[attention]\nkind = "multi-head"\n'
        f"{body}\n{tokenizer}"
    )


def compile_taxonc(arch: str, dims: Dims = TINY, workdir: str | Path | None = None):
    """Compile the spec for `arch` and return (compiled, module)."""
    from ..compile import compile_spec

    workdir = Path(workdir or tempfile.mkdtemp(prefix="taxonc_hf_"))
    workdir.mkdir(parents=True, exist_ok=True)
    spec_path = workdir / f"hf-{arch}.toml"
    spec_path.write_text(spec_toml(arch, dims))
    compiled = compile_spec(spec_path, scale="full")
    return compiled, load_source(compiled.files["model.py"], f"hf_{arch}")


# --------------------------------------------------------------------------------------------
# transformers side
# --------------------------------------------------------------------------------------------

def hf_config(arch: str, dims: Dims = TINY, attn_implementation: str = "sdpa"):
    """The transformers config matching spec_toml(arch, dims). BLOOM has one attention
    implementation of its own (baddbmm with the ALiBi bias) and ignores the choice."""
    d = dims
    if arch == "llama":
        from transformers import LlamaConfig

        cfg = LlamaConfig(
            vocab_size=d.vocab_size, hidden_size=d.d_model, intermediate_size=d.ff(arch),
            num_hidden_layers=d.n_layers, num_attention_heads=d.n_heads, num_key_value_heads=d.n_heads,
            max_position_embeddings=d.context, rms_norm_eps=NORM_EPS, hidden_act="silu",
            rope_parameters={"rope_type": "default", "rope_theta": ROPE_BASE},
            tie_word_embeddings=False, attention_bias=False, mlp_bias=False, attention_dropout=0.0,
        )
    elif arch == "neox":
        from transformers import GPTNeoXConfig

        cfg = GPTNeoXConfig(
            vocab_size=d.vocab_size, hidden_size=d.d_model, intermediate_size=d.ff(arch),
            num_hidden_layers=d.n_layers, num_attention_heads=d.n_heads, max_position_embeddings=d.context,
            layer_norm_eps=NORM_EPS, hidden_act="gelu_pytorch_tanh", use_parallel_residual=True,
            rope_parameters={"rope_type": "default", "rope_theta": ROPE_BASE,
                             "partial_rotary_factor": NEOX_ROTARY_FRACTION},
            tie_word_embeddings=False, attention_bias=True, hidden_dropout=0.0, attention_dropout=0.0,
        )
    elif arch == "bloom":
        from transformers import BloomConfig

        if d.ff(arch) != 4 * d.d_model:
            raise ValueError("BLOOM's MLP is fixed at 4 x d_model")
        cfg = BloomConfig(
            vocab_size=d.vocab_size, hidden_size=d.d_model, n_layer=d.n_layers, n_head=d.n_heads,
            layer_norm_epsilon=NORM_EPS, apply_residual_connection_post_layernorm=False,
            tie_word_embeddings=True, hidden_dropout=0.0, attention_dropout=0.0,
        )
    elif arch == "opt":
        from transformers import OPTConfig

        cfg = OPTConfig(
            vocab_size=d.vocab_size, hidden_size=d.d_model, num_hidden_layers=d.n_layers, ffn_dim=d.ff(arch),
            num_attention_heads=d.n_heads, max_position_embeddings=d.context, do_layer_norm_before=True,
            word_embed_proj_dim=d.d_model, activation_function="relu", enable_bias=True,
            layer_norm_elementwise_affine=True, tie_word_embeddings=True, dropout=0.0, attention_dropout=0.0,
            layerdrop=0.0,
        )
    else:
        raise ValueError(f"unknown arch {arch!r}; known: {ARCHS}")
    cfg._attn_implementation = "eager" if arch == "bloom" else attn_implementation
    return cfg


def hf_model(arch: str, dims: Dims = TINY, attn_implementation: str = "sdpa", seed: int = 0):
    """A randomly initialised transformers causal LM (fp32, eval mode), every parameter random."""
    from transformers import AutoModelForCausalLM

    cfg = hf_config(arch, dims, attn_implementation)
    torch.manual_seed(seed)
    impl = "eager" if arch == "bloom" else attn_implementation
    model = AutoModelForCausalLM.from_config(cfg, attn_implementation=impl, dtype=torch.float32)
    randomize_(model, seed)
    return model.eval()


@torch.no_grad()
def randomize_(model: torch.nn.Module, seed: int = 0, std: float = 0.02) -> None:
    """Random matrices and embeddings (std), norm scales near 1, small random biases.

    Shared (tied) parameters are visited once, so ties survive."""
    gen = torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():  # named_parameters yields each tensor once
        noise = torch.randn(p.shape, generator=gen, dtype=torch.float32).to(p.dtype)
        if p.dim() >= 2:
            p.copy_(noise * std)
        elif name.endswith("weight"):  # a 1-D weight is a norm scale
            p.copy_(1.0 + 0.1 * noise)
        else:
            p.copy_(0.1 * noise)


# --------------------------------------------------------------------------------------------
# weight mapping: HF state dict -> taxonc state dict
# --------------------------------------------------------------------------------------------

def per_head_qkv_to_stacked(t: torch.Tensor, n_heads: int) -> torch.Tensor:
    """NeoX/BLOOM `query_key_value` rows are [q_0, k_0, v_0, q_1, k_1, v_1, ...] (per head);
    taxonc wants [q_0..q_{H-1}; k_0..k_{H-1}; v_0..v_{H-1}]. Works for weight and bias."""
    rest = t.shape[1:]
    d_head = t.shape[0] // (3 * n_heads)
    return t.reshape(n_heads, 3, d_head, *rest).transpose(0, 1).reshape(3 * n_heads * d_head, *rest).contiguous()


def map_llama(sd: dict, n_layers: int, n_heads: int) -> dict:
    out = {
        "embed.tok.weight": sd["model.embed_tokens.weight"],
        "head.ln_f.weight": sd["model.norm.weight"],
        "head.lm_head.weight": sd["lm_head.weight"],
    }
    for i in range(n_layers):
        p, q = f"model.layers.{i}.", f"layers.{i}."
        out[q + "ln_attn.weight"] = sd[p + "input_layernorm.weight"]
        out[q + "qkv.weight"] = torch.cat([sd[p + f"self_attn.{r}_proj.weight"] for r in "qkv"], 0)
        out[q + "attn_out.weight"] = sd[p + "self_attn.o_proj.weight"]
        out[q + "ln_mlp.weight"] = sd[p + "post_attention_layernorm.weight"]
        out[q + "mlp_gate_up.weight"] = torch.cat([sd[p + "mlp.gate_proj.weight"], sd[p + "mlp.up_proj.weight"]], 0)
        out[q + "mlp_out.weight"] = sd[p + "mlp.down_proj.weight"]
    return out


def map_neox(sd: dict, n_layers: int, n_heads: int) -> dict:
    out = {
        "embed.tok.weight": sd["gpt_neox.embed_in.weight"],
        "head.ln_f.weight": sd["gpt_neox.final_layer_norm.weight"],
        "head.ln_f.bias": sd["gpt_neox.final_layer_norm.bias"],
        # transformers 5 names the output projection lm_head; 4.x called it embed_out
        "head.lm_head.weight": sd["lm_head.weight"] if "lm_head.weight" in sd else sd["embed_out.weight"],
    }
    for i in range(n_layers):
        p, q = f"gpt_neox.layers.{i}.", f"layers.{i}."
        for wb in ("weight", "bias"):
            out[q + f"ln_attn.{wb}"] = sd[p + f"input_layernorm.{wb}"]
            out[q + f"ln_mlp.{wb}"] = sd[p + f"post_attention_layernorm.{wb}"]
            out[q + f"qkv.{wb}"] = per_head_qkv_to_stacked(sd[p + f"attention.query_key_value.{wb}"], n_heads)
            out[q + f"attn_out.{wb}"] = sd[p + f"attention.dense.{wb}"]
            out[q + f"mlp_in.{wb}"] = sd[p + f"mlp.dense_h_to_4h.{wb}"]
            out[q + f"mlp_out.{wb}"] = sd[p + f"mlp.dense_4h_to_h.{wb}"]
    return out


def _check_tied(sd: dict, embed_key: str) -> None:
    if "lm_head.weight" in sd and not torch.equal(sd["lm_head.weight"], sd[embed_key]):
        raise ValueError("the transformers model's lm_head is not tied to its embedding; taxonc's is")


def map_bloom(sd: dict, n_layers: int, n_heads: int) -> dict:
    _check_tied(sd, "transformer.word_embeddings.weight")
    out = {
        "embed.tok.weight": sd["transformer.word_embeddings.weight"],
        "embed.norm.weight": sd["transformer.word_embeddings_layernorm.weight"],
        "embed.norm.bias": sd["transformer.word_embeddings_layernorm.bias"],
        "head.ln_f.weight": sd["transformer.ln_f.weight"],
        "head.ln_f.bias": sd["transformer.ln_f.bias"],
    }
    for i in range(n_layers):
        p, q = f"transformer.h.{i}.", f"layers.{i}."
        for wb in ("weight", "bias"):
            out[q + f"ln_attn.{wb}"] = sd[p + f"input_layernorm.{wb}"]
            out[q + f"qkv.{wb}"] = per_head_qkv_to_stacked(sd[p + f"self_attention.query_key_value.{wb}"], n_heads)
            out[q + f"attn_out.{wb}"] = sd[p + f"self_attention.dense.{wb}"]
            out[q + f"ln_mlp.{wb}"] = sd[p + f"post_attention_layernorm.{wb}"]
            out[q + f"mlp_in.{wb}"] = sd[p + f"mlp.dense_h_to_4h.{wb}"]
            out[q + f"mlp_out.{wb}"] = sd[p + f"mlp.dense_4h_to_h.{wb}"]
    return out


def map_opt(sd: dict, n_layers: int, n_heads: int) -> dict:
    _check_tied(sd, "model.decoder.embed_tokens.weight")
    # HF's OPTLearnedPositionalEmbedding has max_positions + 2 rows and looks up position + 2,
    # the same table taxonc builds with position.offset = 2 (rows start at the offset).
    out = {
        "embed.tok.weight": sd["model.decoder.embed_tokens.weight"],
        "embed.pos.weight": sd["model.decoder.embed_positions.weight"],
        "head.ln_f.weight": sd["model.decoder.final_layer_norm.weight"],
        "head.ln_f.bias": sd["model.decoder.final_layer_norm.bias"],
    }
    for i in range(n_layers):
        p, q = f"model.decoder.layers.{i}.", f"layers.{i}."
        for wb in ("weight", "bias"):
            out[q + f"ln_attn.{wb}"] = sd[p + f"self_attn_layer_norm.{wb}"]
            out[q + f"qkv.{wb}"] = torch.cat([sd[p + f"self_attn.{r}_proj.{wb}"] for r in "qkv"], 0)
            out[q + f"attn_out.{wb}"] = sd[p + f"self_attn.out_proj.{wb}"]
            out[q + f"ln_mlp.{wb}"] = sd[p + f"final_layer_norm.{wb}"]
            out[q + f"mlp_in.{wb}"] = sd[p + f"fc1.{wb}"]
            out[q + f"mlp_out.{wb}"] = sd[p + f"fc2.{wb}"]
    return out


MAPPERS = {"llama": map_llama, "neox": map_neox, "bloom": map_bloom, "opt": map_opt}


def map_weights(arch: str, hf: torch.nn.Module, dims: Dims = TINY) -> dict:
    return MAPPERS[arch](hf.state_dict(), dims.n_layers, dims.n_heads)


def build_pair(arch: str, dims: Dims = TINY, attn_implementation: str = "sdpa", seed: int = 0,
               workdir: str | Path | None = None):
    """(hf_model, taxonc_model, compiled) with identical fp32 weights, both in eval mode."""
    hf = hf_model(arch, dims, attn_implementation, seed)
    compiled, module = compile_taxonc(arch, dims, workdir)
    ours = module.build(dtype=torch.float32)
    ours.load_state_dict(map_weights(arch, hf, dims), strict=True)
    return hf, ours.eval(), compiled


def hf_logits(hf: torch.nn.Module, input_ids: torch.Tensor) -> torch.Tensor:
    return hf(input_ids=input_ids, use_cache=False).logits
