"""Exact parameter counts, read off the parameter shapes of the spec's lowered graph.

The layout of every weight is written once, in the lowering (`compiler/ir/build.py`); the
module the torch backend emits mirrors the graph's parameters, and a test compares these
counts with `numel` of that module on the meta device. Here each state-dict name is only
sorted into a component, keyed by dotted names so that `taxonc params` can show where the
parameters sit.

"Embedding" parameters are the token embedding, every positional parameter (learned tables,
Transformer-XL projections and biases, relative-bias tables) and an untied output projection:
the parameters whose count does not scale with depth x width^2. This matches how Gopher
reports 260B non-embedding parameters of 280B.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from functools import lru_cache

from ..ir import Graph, Node, Op, build_graph
from ..spec.model import ModelSpec

EMBEDDING_PREFIXES = ("embedding.", "lm_head", "position")

# Parameters an attention node holds for relative positions, by local name.
_POSITION_PARAMS = {"rel_bias": "position.relative_bias", "r_proj": "position.relative_projection",
                    "u": "position.content_position_biases", "w": "position.content_position_biases"}
# Position nodes of an embedding scope, by node name.
_POSITION_NODES = {"rel_bias": "position.relative_bias", "xl_bias": "position.content_position_biases"}
# Nodes outside the layers, by (scope, node name).
_OUTER_NODES = {
    ("embed", "tok"): "embedding.tokens",
    ("embed", "pos"): "embedding.positions",
    ("encoder_embed", "pos"): "embedding.encoder_positions",
    ("embed", "norm"): "embedding.norm",
    ("encoder_embed", "norm"): "embedding.norm",
    ("embed", "proj_in"): "embedding.projection",
    ("head", "proj_out"): "embedding.projection",
    ("head", "ln_f"): "final_norm",
    ("head", "lm_head"): "lm_head",
    ("encoder_final", "ln_f"): "encoder.final_norm",
    ("media", "resampler"): "cross_attention.resampler",
}
# Nodes of a decoder layer, by node name (an encoder layer is all "encoder.layers").
_DECODER_LAYER_NODES = {
    **dict.fromkeys(("q", "k", "v", "attn_out"), "layers.attention"),
    **dict.fromkeys(("ln", "ln_attn", "ln_mlp", "ln_cross"), "layers.norms"),
    # QK-norm scales: not matmul weights (the FLOP count skips every "norm" component)
    **dict.fromkeys(("q_norm", "k_norm"), "layers.qk_norms"),
    **dict.fromkeys(("cross_q", "cross_k", "cross_v", "cross_out"), "layers.cross_attention"),
    **dict.fromkeys(("mlp_in", "mlp_gate", "mlp_up", "mlp_out", "ln_solu"), "layers.mlp"),
    **dict.fromkeys(("xattn_norm", "xattn_q", "xattn_k", "xattn_v", "xattn_out", "xattn_gate",
                     "xff_norm", "xff_in", "xff_out", "xff_gate"), "cross_attention.gated"),
    **dict.fromkeys(("ln_cca", "cca", "cca_out"), "cross_attention.chunked"),
}


@dataclass(frozen=True)
class ParamCount:
    components: dict[str, int]
    active_components: dict[str, int]  # what one token touches (mixture-of-experts: top_k experts)
    total: int
    embedding: int
    active: int

    @property
    def non_embedding(self) -> int:
        return self.total - self.embedding


def _moe_sizes(node: Node) -> tuple[int, int]:
    """(n_experts, top_k) of a mixture-of-experts node: the one place that reads node attributes."""
    return node.attrs.n_experts, node.attrs.top_k


def _component(node: Node, local: str) -> str:
    """The component one parameter of `node` (its local name `local`) counts towards."""
    stack, _, index = node.scope.rpartition(".")
    return _classify(node.op, stack if index.isdigit() else node.scope, node.name, local)


@lru_cache(maxsize=1024)
def _classify(op: Op, scope: str, name: str, local: str) -> str:
    """Component of parameter `local` of node `name` in `scope` (a layer's scope without its index)."""
    if op is Op.ATTENTION and local in _POSITION_PARAMS:
        return _POSITION_PARAMS[local]
    if op is Op.POS_EMBED and name in _POSITION_NODES:
        return _POSITION_NODES[name]
    if op is Op.NEIGHBOUR_ENCODER:
        return "cross_attention.neighbour_encoder"
    if (scope, name) in _OUTER_NODES:
        return _OUTER_NODES[scope, name]
    if op is Op.MOE and scope in ("layers", "encoder_layers"):
        prefix = "layers" if scope == "layers" else "encoder"
        return f"{prefix}.moe.router" if local.startswith("router.") else f"{prefix}.moe.experts"
    if scope == "encoder_layers":
        return "encoder.layers"
    if scope == "layers" and name in _DECODER_LAYER_NODES:
        return _DECODER_LAYER_NODES[name]
    raise ValueError(f"parameter {local} of node {name} in scope {scope} belongs to no known component")


def _inactive(node: Node, shape: tuple[int, ...]) -> int:
    """Weights of this parameter one token does not touch: the experts the router does not pick.

    Expert weights are stacked along a leading n_experts axis; the router and weights all
    experts share (a SoLU mixture's one norm) are 1-D or the router, and always active.
    """
    n_experts, top_k = _moe_sizes(node)
    if len(shape) < 2 or shape[0] != n_experts:
        return 0
    return math.prod(shape) // n_experts * (n_experts - top_k)


def count_graph_params(graph: Graph) -> ParamCount:
    owner = {node.param_name(local): (node, local) for node in graph.nodes() for local in node.params}
    c: dict[str, int] = defaultdict(int)
    inactive: dict[str, int] = defaultdict(int)  # per component: experts a token does not use
    for name, shape in graph.param_shapes().items():
        node, local = owner[name]
        key = _component(node, local)
        c[key] += math.prod(shape)
        if node.op is Op.MOE and key.endswith(".moe.experts"):
            inactive[key] += _inactive(node, shape)
    components = {k: v for k, v in sorted(c.items()) if v}
    active_components = {k: v - inactive.get(k, 0) for k, v in components.items()}
    total = sum(components.values())
    embedding = sum(v for k, v in components.items() if k.startswith(EMBEDDING_PREFIXES))
    return ParamCount(components, active_components, total, embedding, sum(active_components.values()))


_CACHE: dict[str, ParamCount] = {}
_CACHE_SIZE = 256


def count_params(spec: ModelSpec) -> ParamCount:
    """Parameter counts of the spec's unfused graph (fusion passes do not change them).

    Cached per spec value (its JSON dump): lowering a full-size spec takes milliseconds, and
    reports, diffs, the matrix and the FLOPs count all ask for the same spec's counts.
    """
    key = spec.model_dump_json()
    counts = _CACHE.get(key)
    if counts is None:
        counts = count_graph_params(build_graph(spec))
        if len(_CACHE) >= _CACHE_SIZE:
            _CACHE.pop(next(iter(_CACHE)))
        _CACHE[key] = counts
    return ParamCount(dict(counts.components), dict(counts.active_components), counts.total, counts.embedding,
                      counts.active)
