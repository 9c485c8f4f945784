"""The same small model as a Hugging Face transformers model and as a taxonc model.

For each family of the table in interop.hf (keyed by HF model_type) this module builds a small
transformers config from `Dims` (nothing is downloaded), a random transformers model with
weights drawn so that logits are of order 5, the taxonc spec read from that config through the
family table, and the taxonc model with the transformers weights moved over by the same table
(hf_weights.unfused_state, then the compiler's fuse_state). Tests and benchmarks use it;
transformers is imported only by the functions that build its models.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from taxonc.runtime.artifact import load_source

from ..spec.dump import toml_value
from .hf_config import spec_tables
from .hf import FAMILIES
from .hf_weights import check_tied, unfused_state


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
        if model_type(arch) in ("llama", "mistral", "mixtral", "qwen3", "olmo2"):
            raw = int(2 * 4 * self.d_model / 3)
            return -(-raw // 256) * 256
        return 4 * self.d_model


TINY = Dims()
# the four architectures the CPU benchmarks compare (their names predate the family table)
ARCHS = ("llama", "neox", "bloom", "opt")
ALIASES = {"neox": "gpt_neox"}
FAMILY_NAMES = tuple(FAMILIES)


def model_type(arch: str) -> str:
    name = ALIASES.get(arch, arch)
    if name not in FAMILIES:
        raise ValueError(f"unknown family {arch!r}; known: {', '.join(FAMILY_NAMES)}")
    return name


# --------------------------------------------------------------------------------------------
# transformers side
# --------------------------------------------------------------------------------------------

def hf_config_kwargs(arch: str, dims: Dims = TINY) -> dict[str, Any]:
    """Config arguments of a small model of the family (the family's own conventions otherwise)."""
    d, kind = dims, model_type(arch)
    llama_like = dict(vocab_size=d.vocab_size, hidden_size=d.d_model, intermediate_size=d.ff(arch),
                      num_hidden_layers=d.n_layers, num_attention_heads=d.n_heads, max_position_embeddings=d.context,
                      tie_word_embeddings=False)
    t5_like = dict(vocab_size=d.vocab_size, d_model=d.d_model, d_kv=d.d_model // d.n_heads, d_ff=d.ff(arch),
                   num_layers=d.n_layers, num_decoder_layers=d.n_layers, num_heads=d.n_heads, n_positions=d.context,
                   relative_attention_num_buckets=8, relative_attention_max_distance=16, dropout_rate=0.0,
                   decoder_start_token_id=0)  # the released T5 configs start decoding from pad (0)
    return {
        "gpt2": dict(vocab_size=d.vocab_size, n_embd=d.d_model, n_layer=d.n_layers, n_head=d.n_heads,
                     n_positions=d.context, n_inner=d.ff(arch), resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0),
        "gptj": dict(vocab_size=d.vocab_size, n_embd=d.d_model, n_layer=d.n_layers, n_head=d.n_heads,
                     n_positions=d.context, n_inner=d.ff(arch), rotary_dim=(d.d_model // d.n_heads) // 2,
                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0),
        "gpt_neox": dict(vocab_size=d.vocab_size, hidden_size=d.d_model, intermediate_size=d.ff(arch),
                         num_hidden_layers=d.n_layers, num_attention_heads=d.n_heads, max_position_embeddings=d.context,
                         rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.25}),
        "opt": dict(vocab_size=d.vocab_size, hidden_size=d.d_model, num_hidden_layers=d.n_layers, ffn_dim=d.ff(arch),
                    num_attention_heads=d.n_heads, max_position_embeddings=d.context, word_embed_proj_dim=d.d_model,
                    dropout=0.0),
        "bloom": dict(vocab_size=d.vocab_size, hidden_size=d.d_model, n_layer=d.n_layers, n_head=d.n_heads,
                      seq_length=d.context),
        "llama": dict(llama_like, num_key_value_heads=d.n_heads),
        # Qwen3Config's head_dim defaults to 128 whatever the width; grouped-query as in Qwen3-8B
        "qwen3": dict(llama_like, num_key_value_heads=max(1, d.n_heads // 2), head_dim=d.d_model // d.n_heads),
        "olmo2": dict(llama_like, num_key_value_heads=max(1, d.n_heads // 2)),
        "mistral": dict(llama_like, num_key_value_heads=max(1, d.n_heads // 2), sliding_window=d.context // 4),
        "mixtral": dict(llama_like, num_key_value_heads=max(1, d.n_heads // 2), num_local_experts=4,
                        num_experts_per_tok=2),
        "falcon": dict(vocab_size=d.vocab_size, hidden_size=d.d_model, num_hidden_layers=d.n_layers,
                       num_attention_heads=d.n_heads, max_position_embeddings=d.context, ffn_hidden_size=d.ff(arch)),
        "t5": t5_like,
        # every other layer sparse (layers 1, 3, ...), and capacity for every token of a test sequence
        "switch_transformers": dict(t5_like, num_experts=4, num_sparse_encoder_layers=d.n_layers // 2,
                                    num_sparse_decoder_layers=d.n_layers // 2, expert_capacity=d.context),
    }[kind]


def hf_config(arch: str, dims: Dims = TINY, attn_implementation: str = "sdpa", extra: dict[str, Any] | None = None):
    """The family's small config; `extra` overrides or adds config arguments (rope_parameters, say)."""
    from transformers import AutoConfig

    cfg = AutoConfig.for_model(model_type(arch), **{**hf_config_kwargs(arch, dims), **(extra or {})})
    cfg._attn_implementation = attn_implementation
    return cfg


def hf_model(arch: str, dims: Dims = TINY, attn_implementation: str = "sdpa", seed: int = 0,
             extra: dict[str, Any] | None = None):
    """A random transformers model (fp32, eval mode) whose logits are of order 5."""
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

    cfg = hf_config(arch, dims, attn_implementation, extra)
    auto = AutoModelForSeq2SeqLM if FAMILIES[model_type(arch)].seq2seq else AutoModelForCausalLM
    torch.manual_seed(seed)
    model = auto.from_config(cfg, attn_implementation=attn_implementation, dtype=torch.float32)
    randomize_(model, seed)
    return model.eval()


LOGIT_STD = 3.0  # logits of order 5: std about 3, the largest of a few thousand about 10-20
EMBED_STD = 0.05  # small token embeddings: the first norms see a mean square near 2.5e-3, where eps matters


@torch.no_grad()
def randomize_(model: torch.nn.Module, seed: int = 0) -> None:
    """Every parameter random, so a wrong mapping of any of them shows in the logits.

    Matrices ~ N(0, 1/fan_in) keep activations of order 1 through the layers; norm scales near 1
    and small biases are random too (HF initialises them to 1 and 0). Token embeddings are small
    (EMBED_STD), so that a norm eps of 1e-6 and one of 1e-5 give visibly different logits. The
    logits get a standard deviation near LOGIT_STD from the output side: an untied output
    projection has entries LOGIT_STD / sqrt(d_model); a tied one is the small embedding, so the
    final norm's scale makes up the difference (and T5's d_model^-0.5 on its tied output).
    Tied parameters are visited once (named_parameters yields each tensor once), so ties survive.
    """
    gen = torch.Generator().manual_seed(seed)
    family = FAMILIES[model.config.model_type]
    embed, head = model.get_input_embeddings().weight, model.get_output_embeddings().weight
    d_model = embed.shape[1]
    final_norm = family.prefixes["head"] + family.weights["head"]["ln_f.weight"].hf
    tied_gain = LOGIT_STD / (EMBED_STD * d_model ** 0.5)
    if model.config.model_type in ("t5", "switch_transformers") and getattr(model.config, "scale_decoder_outputs", True):
        tied_gain *= d_model ** 0.5
    for name, p in model.named_parameters():
        noise = torch.randn(p.shape, generator=gen, dtype=torch.float32)
        if p is embed:
            value = noise * EMBED_STD
        elif p is head:
            value = noise * LOGIT_STD * d_model ** -0.5
        elif "relative_attention_bias" in name:
            value = noise
        elif p.dim() >= 2:  # projections, position tables, experts (E, out, in): fan_in is the last dim
            value = noise / p.shape[-1] ** 0.5
        elif name.endswith("weight"):  # a 1-D weight is a norm scale
            value = (1.0 + 0.1 * noise) * (tied_gain if name == final_norm and head is embed else 1.0)
        else:
            value = 0.1 * noise
        p.copy_(value.to(p.dtype))


def hf_logits(hf: torch.nn.Module, input_ids: torch.Tensor, encoder_ids: torch.Tensor | None = None) -> torch.Tensor:
    if encoder_ids is not None:
        return hf(input_ids=encoder_ids, decoder_input_ids=input_ids, use_cache=False).logits
    return hf(input_ids=input_ids, use_cache=False).logits


# --------------------------------------------------------------------------------------------
# taxonc side, from the HF config through the table
# --------------------------------------------------------------------------------------------

def spec_toml(arch: str, config: dict[str, Any], name: str | None = None) -> str:
    """A standalone spec (no `extends`) for an HF config dict, by the family table."""
    tables = spec_tables(model_type(arch), config, name or f"hf-{model_type(arch).replace('_', '-')}")
    lines = []
    for table, values in tables.items():
        lines.append(f"[{table}]")
        lines += [f"{key} = {toml_value(value)}" for key, value in values.items()]
        lines.append("")
    return "\n".join(lines)


def compile_taxonc(arch: str, config: dict[str, Any], workdir: str | Path | None = None, backend: str = "torch",
                   sets: list[str] | None = None):
    """Compile the spec the table reads from `config`; returns (compiled, module)."""
    from ..compile import compile_spec

    workdir = Path(workdir or tempfile.mkdtemp(prefix="taxonc_hf_"))
    workdir.mkdir(parents=True, exist_ok=True)
    spec_path = workdir / f"hf-{model_type(arch)}.toml"
    spec_path.write_text(spec_toml(arch, config))
    compiled = compile_spec(spec_path, scale="full", backend=backend, sets=sets)
    tag = "_".join(s.replace(".", "_").replace("=", "_").replace("-", "_") for s in sets or [])
    return compiled, load_source(compiled.files["model.py"], f"hf_{model_type(arch)}_{backend}_{tag}")


def taxonc_state(arch: str, compiled, hf_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The compiled model's state dict from a transformers state dict, by the family table."""
    from ..ir import build_graph
    from ..passes.weights import fuse_state

    kind = model_type(arch)
    check_tied(kind, compiled.spec, hf_state.__getitem__, set(hf_state))
    return fuse_state(compiled.graph, unfused_state(kind, compiled.spec, build_graph(compiled.spec), hf_state.__getitem__))


def build_pair(arch: str, dims: Dims = TINY, attn_implementation: str = "sdpa", seed: int = 0,
               workdir: str | Path | None = None, backend: str = "torch", sets: list[str] | None = None,
               extra: dict[str, Any] | None = None):
    """(hf_model, taxonc_model, compiled) with identical fp32 weights, both in eval mode."""
    hf = hf_model(arch, dims, attn_implementation, seed, extra)
    compiled, module = compile_taxonc(arch, hf.config.to_dict(), workdir, backend, sets)
    ours = module.build(dtype=torch.float32)
    ours.load_state_dict(taxonc_state(arch, compiled, hf.state_dict()), strict=True)
    return hf, ours.eval(), compiled
