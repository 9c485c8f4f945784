"""Checkpoint tensors to taxonc's and back, one tensor at a time, by the family tables.

The family table (interop/hf.py) says where each parameter of the *lowered* taxonc
graph lives in a transformers model (`locate`, `take_tensor`); the compiler says which lowered
parameters each *fused* parameter packs (passes.weights.fused_sources). Import composes the
two per fused tensor and reads only the checkpoint tensors that one needs; export runs them
backwards. Every check runs first on meta tensors built from the safetensors headers, so a bad
checkpoint is refused before a byte is written.

transformers 5 keeps a few tensors in memory under other names or layouts than it saves
(`ON_DISK`): the table names the in-memory form, and the reader rebuilds it from the saved one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Iterator

import torch

from ..ir import build_graph
from ..passes.weights import fused_sources
from ..spec.model import ModelSpec
from .hf_config import locate
from .hf_schema import Family, Packing, Take
from .hf_keys import ImportRefused
from .hf_weights import take_tensor
from .safetensors_stream import Entry, read_tensor

# Buffers some transformers versions saved next to the parameters (rotary tables, causal masks):
# recomputed by every model, never weights.
BUFFERS = re.compile(r".*\.(rotary_emb\.inv_freq|attention\.bias|attention\.masked_bias|attn\.bias|attn\.masked_bias)$")


@dataclass(frozen=True)
class OnDisk:
    """An in-memory tensor (`memory`, a pattern with group p) saved as `parts` ({p}, {e} for each expert):
    per expert the parts are stacked along rows, then the experts along a new first dim."""

    memory: str
    parts: tuple[str, ...]
    per_expert: bool = False


_MIXTRAL_LAYER = r"(?P<p>model\.layers\.\d+\.)"
ON_DISK: dict[str, tuple[OnDisk, ...]] = {
    "gpt_neox": (OnDisk(r"lm_head\.weight", ("embed_out.weight",)),),
    "mixtral": (
        OnDisk(_MIXTRAL_LAYER + r"mlp\.gate\.weight", ("{p}block_sparse_moe.gate.weight",)),
        OnDisk(_MIXTRAL_LAYER + r"mlp\.experts\.gate_up_proj",
               ("{p}block_sparse_moe.experts.{e}.w1.weight", "{p}block_sparse_moe.experts.{e}.w3.weight"), True),
        OnDisk(_MIXTRAL_LAYER + r"mlp\.experts\.down_proj", ("{p}block_sparse_moe.experts.{e}.w2.weight",), True),
    ),
}


class Missing(KeyError):
    """A tensor the table needs is not in the checkpoint."""


class Reader:
    """get(name) for the family table: a checkpoint tensor by its in-memory name, read on demand
    (or, with meta=True, an empty tensor of its header's shape and dtype); records what it read."""

    def __init__(self, entries: dict[str, Entry], family: Family, n_experts: int, meta: bool) -> None:
        self.entries, self.family, self.n_experts, self.meta = entries, family, n_experts, meta
        self.used: set[str] = set()
        self._last: tuple[str, torch.Tensor] | None = None  # q, k and v often come from one fused tensor

    def _disk(self, name: str) -> torch.Tensor:
        entry = self.entries.get(name)
        if entry is None or entry.dtype is None:
            raise Missing(name)
        self.used.add(name)
        if self.meta:
            return torch.empty(entry.shape, dtype=entry.dtype, device="meta")
        if self._last is None or self._last[0] != name:
            self._last = (name, read_tensor(entry))
        return self._last[1]

    def __call__(self, name: str) -> torch.Tensor:
        if name in self.entries:
            return self._disk(name)
        for alias in ON_DISK.get(self.family.model_type, ()):
            match = re.fullmatch(alias.memory, name)
            if match is None:
                continue
            prefix = match.groupdict().get("p", "")
            if not alias.per_expert:
                return torch.cat([self._disk(part.format(p=prefix)) for part in alias.parts], 0)
            return torch.stack([torch.cat([self._disk(part.format(p=prefix, e=e)) for part in alias.parts], 0)
                                for e in range(self.n_experts)])
        raise Missing(name)


@dataclass
class ImportPlan:
    """What to write: each fused taxonc tensor, the lowered parameters it packs, its shape; the dtype."""

    sources: dict[str, list[str]]
    shapes: dict[str, tuple[int, ...]]
    dtype: torch.dtype
    spec: ModelSpec
    family: Family

    def tensors(self, entries: dict[str, Entry]) -> Iterator[tuple[str, torch.Tensor]]:
        get = Reader(entries, self.family, self.spec.moe.n_experts if self.spec.moe else 0, meta=False)
        for name, parts in self.sources.items():
            tensors = [_take(self.family, self.spec, get, part) for part in parts]
            yield name, (tensors[0] if len(tensors) == 1 else torch.cat(tensors, 0))


def _take(family: Family, spec: ModelSpec, get: Callable[[str], torch.Tensor], name: str) -> torch.Tensor:
    where = locate(family.model_type, name)
    return take_tensor(get, where.take, where.hf_name, spec)


def plan_import(src: str, family: Family, spec: ModelSpec, fused, model_shapes: dict[str, tuple[int, ...]],
                entries: dict[str, Entry]) -> ImportPlan:
    """Pair every taxonc tensor with its checkpoint tensors and check names, shapes and dtypes from headers."""
    lowered = build_graph(spec).param_shapes()
    n_experts = spec.moe.n_experts if spec.moe else 0
    meta = Reader(entries, family, n_experts, meta=True)
    missing: list[str] = []
    for name, shape in lowered.items():
        try:
            where = locate(family.model_type, name)
        except KeyError:
            raise ImportRefused(f"{src}: taxonc's {name} has no source in the {family.model_type} table") from None
        try:
            t = take_tensor(meta, where.take, where.hf_name, spec)
        except Missing as exc:
            missing.append(str(exc.args[0]))
            continue
        except (RuntimeError, ValueError, IndexError):
            t = None
        if t is None or tuple(t.shape) != tuple(shape):
            entry = entries.get(where.hf_name.format(e=0))
            have = list(entry.shape) if entry is not None else "?"
            raise ImportRefused(f"{src}: shape mismatch: {where.hf_name} is {have}, but config.json implies "
                                f"{list(shape)} for taxonc's {name}")
    if missing:
        raise ImportRefused(f"{src}: the checkpoint lacks {len(missing)} tensor(s) config.json implies, e.g. {missing[0]}")
    tied = _tied_head(family) if spec.block.tied_embeddings else None
    extra = sorted(n for n in entries if n not in meta.used and n != tied and not BUFFERS.fullmatch(n))
    if extra:
        raise ImportRefused(f"{src}: {len(extra)} tensor(s) that a {family.model_type} model with this config.json "
                            f"does not have, e.g. {extra[0]}")
    codes = {entries[n].code for n in meta.used}
    if len(codes) != 1 or next(iter(codes)) not in ("F32", "F16", "BF16", "F64"):
        raise ImportRefused(f"{src}: tensors of dtypes {sorted(codes)}; taxonc imports checkpoints of one floating dtype")
    sources = fused_sources(fused)
    if set(sources) != set(model_shapes):
        raise ImportRefused(f"{src}: the compiled model's parameters are not the graph's "
                            f"({sorted(set(sources) ^ set(model_shapes))[:3]}); this is a taxonc bug")
    for name, parts in sources.items():
        rows = sum(lowered[p][0] for p in parts)
        if (rows, *lowered[parts[0]][1:]) != tuple(model_shapes[name]):
            raise ImportRefused(f"{src}: taxonc's {name} packs {parts} into {list(model_shapes[name])}; this is a taxonc bug")
    dtype = next(iter(entries[n] for n in meta.used)).dtype
    order = {name: i for i, name in enumerate(model_shapes)}
    ordered = dict(sorted(sources.items(), key=lambda kv: order[kv[0]]))
    return ImportPlan(ordered, {k: tuple(model_shapes[k]) for k in ordered}, dtype, spec, family)


def _tied_head(family: Family) -> str | None:
    head = family.weights.get("head", {}).get("lm_head.weight")
    return family.prefixes["head"] + head.hf if head is not None else None


def check_tied(family: Family, spec: ModelSpec, entries: dict[str, Entry]) -> None:
    """A tied spec needs the checkpoint's output matrix, if it saved one, to equal the embedding."""
    head = _tied_head(family)
    if not spec.block.tied_embeddings or head is None or head not in entries:
        return
    embed = family.prefixes["embed"] + family.weights["embed"]["tok.weight"].hf
    if embed in entries and not torch.equal(read_tensor(entries[head]), read_tensor(entries[embed])):
        raise ImportRefused(f"{entries[head].file}: {head} differs from the token embedding {embed}, "
                            "but config.json ties them")


# --------------------------------------------------------------------------------------------
# export: taxonc's tensors -> transformers' in-memory names and layouts
# --------------------------------------------------------------------------------------------

def _assemble(take: Take, parts: dict[str, torch.Tensor], n_heads: int) -> torch.Tensor:
    """The transformers tensor that `take`'s q, k and v parts were cut from (rows of the output dim)."""
    q, k, v = parts["q"], parts["k"], parts["v"]
    if take.packing is Packing.STACKED:
        return torch.cat([q, k, v], 0)
    rest = q.shape[1:]
    d_head = q.shape[0] // n_heads
    return torch.stack([t.reshape(n_heads, d_head, *rest) for t in (q, k, v)], 1).reshape(3 * n_heads * d_head, *rest)


def export_tensors(family: Family, spec: ModelSpec, fused, get_fused: Callable[[str], torch.Tensor]
                   ) -> Iterator[tuple[str, torch.Tensor]]:
    """(transformers name, tensor) for every tensor of the exported checkpoint, one at a time."""
    lowered = build_graph(spec).param_shapes()
    packed_in: dict[str, tuple[str, int, int]] = {}  # lowered name -> (fused name, first row, rows)
    for name, parts in fused_sources(fused).items():
        row = 0
        for part in parts:
            packed_in[part] = (name, row, lowered[part][0])
            row += lowered[part][0]

    def lowered_tensor(name: str) -> torch.Tensor:
        fused_name, start, rows = packed_in[name]
        return get_fused(fused_name)[start:start + rows]

    groups: dict[str, list[tuple[str, Take]]] = {}  # transformers name -> the lowered parameters it holds
    for name in lowered:
        where = locate(family.model_type, name)
        groups.setdefault(where.hf_name, []).append((name, where.take))
    n_experts = spec.moe.n_experts if spec.moe else 0
    for hf_name, members in groups.items():
        take = members[0][1]
        if take.part is not None:
            t = _assemble(take, {m.part: lowered_tensor(n) for n, m in members}, spec.dims.n_heads)
        else:
            t = lowered_tensor(members[0][0])
        if take.transpose:
            t = t.t()
        if "{e}" in hf_name:
            for e in range(n_experts):
                yield hf_name.format(e=e), t[e].contiguous()
        else:
            yield hf_name, t.contiguous()

