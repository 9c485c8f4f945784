"""Move an HF state dict onto a taxonc graph's parameters, by the family table in interop.hf.

`unfused_state` produces the parameters of the lowered graph (q, k, v separate); the
compiler's own `passes.weights.fuse_state` then packs them for the compiled graph. Tensors are
read one at a time through a `get(name)` callable, so a caller can stream them from
memory-mapped safetensors; nothing here imports transformers.
"""

from __future__ import annotations

from typing import Callable

import torch

from ..ir.graph import Graph
from ..spec.derive import derive
from ..spec.model import ModelSpec
from .hf_config import locate
from .hf import FAMILIES
from .hf_schema import Packing, Take

Getter = Callable[[str], torch.Tensor]


def qkv_part(t: torch.Tensor, take: Take, n_heads: int, n_kv_heads: int, d_head: int) -> torch.Tensor:
    """q, k or v out of a fused projection (rows of the output dim; a bias is 1-D)."""
    index = "qkv".index(take.part)
    if take.packing is Packing.STACKED:
        sizes = [n_heads * d_head, n_kv_heads * d_head, n_kv_heads * d_head]
        start = sum(sizes[:index])
        return t[start:start + sizes[index]]
    if n_kv_heads != n_heads:
        raise ValueError("per-head packed q/k/v needs as many key/value heads as query heads")
    rest = t.shape[1:]
    return t.reshape(n_heads, 3, d_head, *rest)[:, index].reshape(n_heads * d_head, *rest)


def take_tensor(get: Getter, take: Take, hf_name: str, spec: ModelSpec) -> torch.Tensor:
    """One taxonc parameter from the HF tensors `get` returns."""
    if "{e}" in hf_name:
        t = torch.stack([get(hf_name.format(e=e)) for e in range(spec.moe.n_experts)])
    else:
        t = get(hf_name)
    if take.transpose:
        t = t.t()
    if take.part is not None:
        arch = derive(spec)
        t = qkv_part(t, take, spec.dims.n_heads, arch.n_kv_heads, arch.d_head)
    return t.contiguous()


def hf_sources(model_type: str, graph: Graph) -> dict[str, str]:
    """taxonc parameter -> the HF tensor name it comes from ({e} stands for every expert)."""
    return {name: locate(model_type, name).hf_name for name in graph.param_shapes()}


def unfused_state(model_type: str, spec: ModelSpec, graph: Graph, get: Getter) -> dict[str, torch.Tensor]:
    """The lowered graph's parameters from an HF state dict, with shapes checked against the graph."""
    if model_type not in FAMILIES:
        raise KeyError(f"no table for HF model_type {model_type!r}; known: {', '.join(sorted(FAMILIES))}")
    state: dict[str, torch.Tensor] = {}
    for name, shape in graph.param_shapes().items():
        where = locate(model_type, name)
        t = take_tensor(get, where.take, where.hf_name, spec)
        if tuple(t.shape) != tuple(shape):
            raise ValueError(f"{where.hf_name} gives {name} the shape {tuple(t.shape)}; the spec needs {tuple(shape)}")
        state[name] = t
    return state


def check_tied(model_type: str, spec: ModelSpec, get: Getter, names: set[str]) -> None:
    """A tied spec needs an HF output layer equal to the embedding (or none in the checkpoint)."""
    family = FAMILIES[model_type]
    head, embed = family.weights.get("head", {}).get("lm_head.weight"), family.weights["embed"]["tok.weight"]
    if not spec.block.tied_embeddings or head is None:
        return
    head_name = family.prefixes["head"] + head.hf
    if head_name in names and not torch.equal(get(head_name), get(family.prefixes["embed"] + embed.hf)):
        raise ValueError(f"{head_name} differs from the token embedding, but the spec ties them")
