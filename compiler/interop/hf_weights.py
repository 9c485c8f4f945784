"""Where each of taxonc's tensors comes from in a transformers checkpoint, and the way back.

A `Move` names one taxonc tensor, the transformers tensors it is made of (concatenated along
rows: separate q/k/v or gate/up projections into taxonc's fused ones), the rows each part
holds, and whether transformers stores the parts interleaved per head (GPT-NeoX, BLOOM). The
moves come from the family's weight-name table (interop/hf.py ARCH); import runs them forwards
and export backwards, one tensor at a time.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from ..spec import derive
from ..spec.model import ModelSpec
from .hf import ARCH, Arch, per_head_qkv_to_stacked

# Buffers some transformers versions saved next to the parameters (rotary tables, causal masks):
# recomputed by every model, never weights.
BUFFERS = re.compile(r".*\.(rotary_emb\.inv_freq|attention\.bias|attention\.masked_bias|attn\.bias|attn\.masked_bias)$")


@dataclass(frozen=True)
class Move:
    ours: str
    theirs: tuple[str, ...]
    rows: tuple[int, ...]  # rows of each part along dim 0 (for export's split)
    per_head: int = 0  # n_heads when transformers interleaves the parts per head, else 0

    def join(self, parts: list[torch.Tensor]) -> torch.Tensor:
        t = parts[0] if len(parts) == 1 else torch.cat(parts, 0)
        return per_head_qkv_to_stacked(t, self.per_head) if self.per_head else t

    def split(self, t: torch.Tensor) -> list[torch.Tensor]:
        if self.per_head:
            t = stacked_to_per_head(t, self.per_head)
        return [p.contiguous() for p in torch.split(t, list(self.rows), 0)] if len(self.theirs) > 1 else [t]


def stacked_to_per_head(t: torch.Tensor, n_heads: int) -> torch.Tensor:
    """The inverse of per_head_qkv_to_stacked: [q; k; v] back to [q_0, k_0, v_0, q_1, ...]."""
    rest = t.shape[1:]
    d_head = t.shape[0] // (3 * n_heads)
    return t.reshape(3, n_heads, d_head, *rest).transpose(0, 1).reshape(3 * n_heads * d_head, *rest).contiguous()


def _rows(arch: Arch, ours: str, n_parts: int, spec: ModelSpec) -> tuple[int, ...]:
    a = derive(spec)
    if ours == "qkv" and n_parts == 3:
        return (spec.dims.n_heads * a.d_head, a.n_kv_heads * a.d_head, a.n_kv_heads * a.d_head)
    if n_parts == 2:
        return (a.d_ff, a.d_ff)
    return (0,) * n_parts  # a single part is never split


def plan(arch_key: str, spec: ModelSpec, ours: dict[str, tuple[int, ...]]) -> list[Move]:
    """The moves that make every tensor in `ours` (taxonc's names and shapes), in its order."""
    arch = ARCH[arch_key]
    moves: dict[str, Move] = {}
    for name, theirs in arch.top.items():
        moves[name] = Move(name, (theirs,), (0,))
    for i in range(spec.dims.n_layers):
        prefix = arch.layer_prefix.format(i=i)
        for suffix in ("weight", "bias"):
            for short, theirs in arch.layer.items():
                names = theirs if isinstance(theirs, tuple) else (theirs,)
                full = tuple(f"{prefix}{n}.{suffix}" for n in names)
                per_head = spec.dims.n_heads if short in arch.per_head else 0
                moves[f"layers.{i}.{short}.{suffix}"] = Move(f"layers.{i}.{short}.{suffix}", full,
                                                             _rows(arch, short, len(full), spec), per_head)
    missing = [name for name in ours if name not in moves]
    if missing:
        raise KeyError(f"the {arch_key} weight table has no source for {missing[:3]}")
    return [moves[name] for name in ours]


def older_name(arch_key: str, name: str) -> str | None:
    return ARCH[arch_key].older_names.get(name)


def tied_copy(arch_key: str, spec: ModelSpec) -> str | None:
    """The transformers name of an output matrix that a tied model does not need (it is the embedding)."""
    arch = ARCH[arch_key]
    if not spec.block.tied_embeddings:
        return None
    return arch.top.get("head.lm_head.weight", "lm_head.weight")
