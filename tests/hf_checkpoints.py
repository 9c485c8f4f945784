"""Random transformers checkpoints on disk, as `save_pretrained` writes them (nothing downloaded).

The models are interop.hf's (weights drawn so that logits are of order 5): a wrong convention
(eps, rotary base or fraction, head layout) then moves them by far more than the relative
tolerance of the agreement tests.
"""

from __future__ import annotations

from pathlib import Path

import torch

from taxonc.compiler.interop.hf import FAMILIES
from taxonc.compiler.interop.hf_pairs import TINY, Dims, hf_model

REL_TOL = 1e-5  # fp32, relative to the largest logit
MODEL_TYPES = tuple(FAMILIES)
SEQ2SEQ = frozenset(name for name, family in FAMILIES.items() if family.seq2seq)


def random_hf(model_type: str, dims: Dims = TINY, seed: int = 0) -> torch.nn.Module:
    """interop.hf's random model of the family: every parameter random, logits of order 5."""
    return hf_model(model_type, dims, attn_implementation="eager", seed=seed)


def save(model: torch.nn.Module, directory: Path, shard: bool = False) -> Path:
    """save_pretrained; with `shard`, small shards and an index (model-0000x-of-0000y.safetensors)."""
    kwargs = {"max_shard_size": "40KB"} if shard else {}
    model.save_pretrained(directory, **kwargs)
    return directory


def relative_error(got: torch.Tensor, ref: torch.Tensor) -> float:
    return ((got - ref).abs().max() / ref.abs().max()).item()


def ids(batch: int, length: int, vocab: int = TINY.vocab_size, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, vocab, (batch, length), generator=torch.Generator().manual_seed(seed))
