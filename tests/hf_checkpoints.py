"""Random transformers checkpoints on disk, as `save_pretrained` writes them (nothing downloaded).

Weights are drawn with std 0.2, where the tiny configs' logits reach about 5-7 in magnitude: a
wrong convention (eps, rotary base or fraction, head layout) then moves them by far more than
the relative tolerance of the agreement tests.
"""

from __future__ import annotations

from pathlib import Path

import torch

from taxonc.compiler.interop.hf import TINY, Dims, hf_model, randomize_
from taxonc.compiler.interop.hf_families import FAMILIES

STD = 0.2
REL_TOL = 1e-5  # fp32, relative to the largest logit
# model_type -> the key of interop.hf's weight and config tables
FAMILY_ARCH = {model_type: family.arch for model_type, family in FAMILIES.items()}
MODEL_TYPES = tuple(FAMILY_ARCH)


def _mistral(dims: Dims):
    """Mistral at a tiny size: grouped-query attention (4 query heads, 2 key/value heads) and a
    16-token sliding window, shorter than the test sequences so that the window matters."""
    from transformers import MistralConfig

    return MistralConfig(
        vocab_size=dims.vocab_size, hidden_size=dims.d_model, intermediate_size=dims.ff("llama"),
        num_hidden_layers=dims.n_layers, num_attention_heads=dims.n_heads, num_key_value_heads=dims.n_heads // 2,
        max_position_embeddings=dims.context, rms_norm_eps=1e-5, sliding_window=16, tie_word_embeddings=False,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
    )


# families whose transformers config interop.hf does not build (it builds one per weight table)
CONFIGS = {"mistral": _mistral}


def random_hf(model_type: str, dims: Dims = TINY, seed: int = 0) -> torch.nn.Module:
    if model_type in CONFIGS:
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_config(CONFIGS[model_type](dims), attn_implementation="eager",
                                                 dtype=torch.float32)
    else:
        model = hf_model(FAMILY_ARCH[model_type], dims, attn_implementation="eager", seed=seed)
    randomize_(model, seed, std=STD)
    return model.eval()


def save(model: torch.nn.Module, directory: Path, shard: bool = False) -> Path:
    """save_pretrained; with `shard`, small shards and an index (model-0000x-of-0000y.safetensors)."""
    kwargs = {"max_shard_size": "40KB"} if shard else {}
    model.save_pretrained(directory, **kwargs)
    return directory


def relative_error(got: torch.Tensor, ref: torch.Tensor) -> float:
    return ((got - ref).abs().max() / ref.abs().max()).item()


def ids(batch: int, length: int, vocab: int = TINY.vocab_size, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, vocab, (batch, length), generator=torch.Generator().manual_seed(seed))
