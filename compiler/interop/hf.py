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
from dataclasses import dataclass, field
from pathlib import Path

import torch

from taxonc.runtime.artifact import load_source
from ..spec.dump import toml_value
from ..spec.kinds import (
    Activation, AttentionKind, NormKind, NormPlacement, ParallelNorms, PositionKind, Structure, Wiring,
)

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
# the four architectures, as data
# --------------------------------------------------------------------------------------------

_BIASED = ("qkv", "attn_out", "mlp_in", "mlp_out", "norm")  # the [bias] keys Arch.biases sets; lm_head is always false


@dataclass(frozen=True)
class Arch:
    """What one architecture chooses in its taxonc spec and where transformers keeps its weights.

    Weight names: `layer` maps a taxonc parameter of layer i (without .weight/.bias) to its
    transformers name under `layer_prefix` (with `{i}`); a tuple of names is concatenated
    along the output dim (separate q/k/v or gate/up projections into taxonc's fused ones).
    `top` maps the parameters outside the layers, full names on both sides.
    """

    position: dict[str, object]  # the spec's [position] table
    norm: NormKind
    activation: Activation
    layer_prefix: str
    layer: dict[str, str | tuple[str, ...]]
    top: dict[str, str]
    biases: bool = True  # every projection and norm has a bias (never the lm_head)
    wiring: Wiring = Wiring.SEQUENTIAL  # PARALLEL means GPT-NeoX's separate norms
    embedding_norm: bool = False  # a norm right after the token embedding (BLOOM)
    # layer entries transformers stores per head ([q_h, k_h, v_h] for each head h)
    per_head: frozenset[str] = frozenset()
    # the transformers embedding the lm_head is tied to; None: untied, the lm_head is in `top`
    tied_to: str | None = None
    # a transformers name -> what older transformers versions called it
    older_names: dict[str, str] = field(default_factory=dict)

    @property
    def suffixes(self) -> tuple[str, ...]:
        return ("weight", "bias") if self.biases else ("weight",)


_ROPE = {"kind": PositionKind.ROTARY, "fraction": 1.0, "base": ROPE_BASE}


def _megatron_layer(attention: str) -> dict[str, str]:
    """GPT-NeoX's and BLOOM's layer names (Megatron's), `attention` being the attention module's."""
    return {
        "ln_attn": "input_layernorm",
        "qkv": f"{attention}.query_key_value",
        "attn_out": f"{attention}.dense",
        "ln_mlp": "post_attention_layernorm",
        "mlp_in": "mlp.dense_h_to_4h",
        "mlp_out": "mlp.dense_4h_to_h",
    }


ARCH = {
    "llama": Arch(
        position=_ROPE, norm=NormKind.RMSNORM, activation=Activation.SWIGLU, biases=False,
        layer_prefix="model.layers.{i}.",
        layer={
            "ln_attn": "input_layernorm",
            "qkv": tuple(f"self_attn.{r}_proj" for r in "qkv"),
            "attn_out": "self_attn.o_proj",
            "ln_mlp": "post_attention_layernorm",
            "mlp_gate_up": ("mlp.gate_proj", "mlp.up_proj"),
            "mlp_out": "mlp.down_proj",
        },
        top={
            "embed.tok.weight": "model.embed_tokens.weight",
            "head.ln_f.weight": "model.norm.weight",
            "head.lm_head.weight": "lm_head.weight",
        },
    ),
    "neox": Arch(
        position={**_ROPE, "fraction": NEOX_ROTARY_FRACTION}, norm=NormKind.LAYERNORM,
        activation=Activation.GELU, wiring=Wiring.PARALLEL,
        layer_prefix="gpt_neox.layers.{i}.",
        layer=_megatron_layer("attention"), per_head=frozenset({"qkv"}),
        top={
            "embed.tok.weight": "gpt_neox.embed_in.weight",
            "head.ln_f.weight": "gpt_neox.final_layer_norm.weight",
            "head.ln_f.bias": "gpt_neox.final_layer_norm.bias",
            "head.lm_head.weight": "lm_head.weight",
        },
        older_names={"lm_head.weight": "embed_out.weight"},  # transformers 4.x
    ),
    "bloom": Arch(
        position={"kind": PositionKind.ALIBI}, norm=NormKind.LAYERNORM, activation=Activation.GELU,
        embedding_norm=True,
        layer_prefix="transformer.h.{i}.",
        layer=_megatron_layer("self_attention"), per_head=frozenset({"qkv"}),
        top={
            "embed.tok.weight": "transformer.word_embeddings.weight",
            "embed.norm.weight": "transformer.word_embeddings_layernorm.weight",
            "embed.norm.bias": "transformer.word_embeddings_layernorm.bias",
            "head.ln_f.weight": "transformer.ln_f.weight",
            "head.ln_f.bias": "transformer.ln_f.bias",
        },
        tied_to="transformer.word_embeddings.weight",
    ),
    "opt": Arch(
        # HF's OPTLearnedPositionalEmbedding has max_positions + 2 rows and looks up position + 2,
        # the same table taxonc builds with position.offset = 2 (rows start at the offset).
        position={"kind": PositionKind.LEARNED, "offset": OPT_POS_OFFSET}, norm=NormKind.LAYERNORM,
        activation=Activation.RELU,
        layer_prefix="model.decoder.layers.{i}.",
        layer={
            "ln_attn": "self_attn_layer_norm",
            "qkv": tuple(f"self_attn.{r}_proj" for r in "qkv"),
            "attn_out": "self_attn.out_proj",
            "ln_mlp": "final_layer_norm",
            "mlp_in": "fc1",
            "mlp_out": "fc2",
        },
        top={
            "embed.tok.weight": "model.decoder.embed_tokens.weight",
            "embed.pos.weight": "model.decoder.embed_positions.weight",
            "head.ln_f.weight": "model.decoder.final_layer_norm.weight",
            "head.ln_f.bias": "model.decoder.final_layer_norm.bias",
        },
        tied_to="model.decoder.embed_tokens.weight",
    ),
}
ARCHS = tuple(ARCH)


def _arch(arch: str) -> Arch:
    if arch not in ARCH:
        raise ValueError(f"unknown arch {arch!r}; known: {ARCHS}")
    return ARCH[arch]


# --------------------------------------------------------------------------------------------
# taxonc side
# --------------------------------------------------------------------------------------------

def spec_tables(arch: str, dims: Dims = TINY) -> dict[str, dict[str, object]]:
    """The taxonc spec for `arch` at `dims` as TOML tables, every behaviour written out."""
    a, d = _arch(arch), dims
    return {
        "model": {"name": f"hf-{arch}", "structure": Structure.DECODER},
        "dims": {"n_layers": d.n_layers, "d_model": d.d_model, "n_heads": d.n_heads, "d_ff": d.ff(arch),
                 "vocab_size": d.vocab_size, "context": d.context},
        "attention": {"kind": AttentionKind.MULTI_HEAD},
        "position": a.position,
        "norm": {"kind": a.norm, "placement": NormPlacement.PRE, "eps": NORM_EPS, "final": True,
                 **({"embedding": True} if a.embedding_norm else {})},
        "mlp": {"activation": a.activation},
        "block": {"wiring": a.wiring,
                  **({"parallel_norms": ParallelNorms.SEPARATE} if a.wiring is Wiring.PARALLEL else {}),
                  "tied_embeddings": a.tied_to is not None},
        "bias": {**dict.fromkeys(_BIASED, a.biases), "lm_head": False},
        "tokenizer": {"kind": "bpe", "vocab_size": d.vocab_size},
    }


def spec_toml(arch: str, dims: Dims = TINY) -> str:
    """A standalone taxonc spec for `arch` at `dims` (no `extends`)."""
    return "\n".join(
        f"[{name}]\n" + "".join(f"{key} = {toml_value(value)}\n" for key, value in table.items())
        for name, table in spec_tables(arch, dims).items()
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
    model = AutoModelForCausalLM.from_config(cfg, attn_implementation=cfg._attn_implementation,
                                             dtype=torch.float32)
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


def map_state_dict(arch: str, sd: dict, n_layers: int, n_heads: int) -> dict:
    """taxonc's state dict from a transformers state dict `sd`, by the table ARCH[arch]."""
    a = _arch(arch)
    if a.tied_to is not None and "lm_head.weight" in sd and not torch.equal(sd["lm_head.weight"], sd[a.tied_to]):
        raise ValueError("the transformers model's lm_head is not tied to its embedding; taxonc's is")

    def get(name: str) -> torch.Tensor:
        return sd[a.older_names[name]] if name not in sd and name in a.older_names else sd[name]

    out = {ours: get(theirs) for ours, theirs in a.top.items()}
    for i in range(n_layers):
        p = a.layer_prefix.format(i=i)
        for wb in a.suffixes:
            for ours, theirs in a.layer.items():
                if isinstance(theirs, tuple):
                    t = torch.cat([sd[f"{p}{name}.{wb}"] for name in theirs], 0)
                else:
                    t = sd[f"{p}{theirs}.{wb}"]
                out[f"layers.{i}.{ours}.{wb}"] = per_head_qkv_to_stacked(t, n_heads) if ours in a.per_head else t
    return out


def map_weights(arch: str, hf: torch.nn.Module, dims: Dims = TINY) -> dict:
    return map_state_dict(arch, hf.state_dict(), dims.n_layers, dims.n_heads)


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
