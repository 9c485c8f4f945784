"""Weights across passes: map an unfused graph's parameters onto its fused form."""

from __future__ import annotations

import torch

from ..ir.graph import Graph


def fused_sources(fused: Graph) -> dict[str, list[str]]:
    """Each parameter of `fused` -> the lowered graph's parameters it is made of, in order
    (one name for an unfused parameter; a merged projection's packs, stacked along the output dim)."""
    out: dict[str, list[str]] = {}
    for node in fused.nodes():
        packs = getattr(node.attrs, "packs", ())
        for local in node.params:
            name = node.param_name(local)
            out[name] = [f"{p.source}.{local}" for p in packs] if len(packs) > 1 else [name]
    return out


def fuse_state(fused: Graph, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Parameters for `fused`, built from `state` (the parameters of the lowered graph).

    A merged projection's weight is its packs' weights stacked along the output dimension.
    """
    return {name: torch.cat([state[s] for s in sources], dim=0) if len(sources) > 1 else state[sources[0]]
            for name, sources in fused_sources(fused).items()}


def random_state(graph: Graph, seed: int = 0, dtype: torch.dtype = torch.float64) -> dict[str, torch.Tensor]:
    """Test weights: matrices ~ N(0, 1/fan_in), norms near 1, small biases, gates open."""
    gen = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {}
    for name, shape in sorted(graph.param_shapes().items()):
        last = name.rsplit(".", 1)[-1]
        if len(shape) >= 2:
            value = torch.randn(shape, generator=gen, dtype=dtype) / shape[-1] ** 0.5
        elif last == "alpha":
            value = torch.full(shape, 0.5, dtype=dtype)
        elif last == "weight":  # norm scales
            value = 1.0 + 0.1 * torch.randn(shape, generator=gen, dtype=dtype)
        else:
            value = 0.1 * torch.randn(shape, generator=gen, dtype=dtype)
        state[name] = value
    return state
