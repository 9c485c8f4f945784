"""Run a graph node by node with plain torch, calling the same building blocks the torch
backend emits. Used to prove that passes preserve outputs (in float64) and that emitted
modules compute what the graph says."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch.func import functional_call

from ..backends.torch_src import prelude as P
from .attrs import Activation, NormFn, PosTable, RelativeBias, RelativeXL
from .graph import Graph, Node
from .ops import Op


def _sub(params: dict[str, torch.Tensor], node: Node) -> dict[str, torch.Tensor]:
    prefix = node.param_name("")
    return {k[len(prefix):]: v for k, v in params.items() if k.startswith(prefix)}


def _norm(node: Node, p: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    if node.attrs.kind is NormFn.RMSNORM:
        return P.rms_norm(x, p["weight"], node.attrs.eps)
    return F.layer_norm(x, (x.shape[-1],), p["weight"], p.get("bias"), node.attrs.eps)


def _linear(node: Node, p: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    y = F.linear(x, p["weight"], p.get("bias"))
    return P.activate(y, node.attrs.epilogue) if node.attrs.epilogue else y


def _attention(node: Node, p: dict[str, torch.Tensor], args: list[torch.Tensor], ctx: P.Context) -> torch.Tensor:
    a = node.attrs
    q, k, v = args[:3]
    shared = args[3] if len(args) > 3 else None
    rel = a.relative
    xl = rel_table = None
    if isinstance(rel, RelativeXL):
        u, w = (shared[0], shared[1]) if shared is not None else (p["u"], p["w"])
        xl = (p["r_proj"], u, w)
    if isinstance(rel, RelativeBias):
        rel_table = shared if shared is not None else p["rel_bias"]
    return P.attention_core(
        q, k, v, a.n_heads, a.n_kv_heads, a.mask, ctx if a.self else None, node.scope if a.cached else None,
        rotary=(a.rotary.dims, a.rotary.base) if a.rotary else None, alibi=a.alibi,
        relative=(rel.n_buckets, rel.max_distance, rel.bidirectional) if isinstance(rel, RelativeBias) else None,
        rel_table_NH=rel_table, xl=xl, window=a.window, scale=a.scale,
    )


def _module(node: Node, p: dict[str, torch.Tensor]) -> torch.nn.Module:
    """The prelude module of a composite op, on the meta device; functional_call supplies weights."""
    a = node.attrs
    with torch.device("meta"):
        if node.op == Op.MOE:
            m = P.MoE(1, a.d_ff, a.n_experts, a.top_k, a.capacity_factor, a.router, a.activation,
                      "b_in" in p, "b_out" in p)
            if a.activation is Activation.SOLU:
                m.solu_norm = P.make_norm(a.norm_kind, a.d_ff, a.eps, "solu_norm.bias" in p)
            return m
        if node.op == Op.RESAMPLER:
            return P.PerceiverResampler(a.dim, a.n_latents, a.n_layers, a.n_heads, a.norm_kind, a.eps, a.bias)
        if node.op == Op.NEIGHBOUR_ENCODER:
            return P.NeighbourEncoder(1, a.dim, a.n_layers, a.n_heads, a.norm_kind, a.eps, a.bias)
    raise ValueError(node.op)


def _call(node: Node, p: dict[str, torch.Tensor], *args: Any) -> torch.Tensor:
    return functional_call(_module(node, p).eval(), p, args, strict=True)  # inference semantics


def run_graph(graph: Graph, params: dict[str, torch.Tensor], inputs: dict[str, torch.Tensor],
              prefix_len: int = 0) -> dict[str, torch.Tensor]:
    """Execute `graph`; returns every value by name."""
    values: dict[str, Any] = dict(inputs)
    ids = inputs["input_ids"]
    ctx = P.Context(ids.shape[1], ids.device, prefix_len=prefix_len)
    for node in graph.nodes():
        p = _sub(params, node)
        args = [values[v] for v in node.inputs]
        a = node.attrs
        op = node.op
        if op == Op.TOKEN_EMBED:
            weight = params[a.tied_to] if a.tied_to else p["weight"]
            out: Any = F.embedding(args[0], weight)
        elif op == Op.POS_EMBED:
            if a.kind is PosTable.LEARNED:
                positions = torch.arange(args[0].shape[1], device=ids.device)
                out = args[0] + p["weight"][positions + a.offset]
            elif a.kind is PosTable.SINUSOIDAL:
                positions = torch.arange(args[0].shape[1], device=ids.device)
                out = args[0] + P.sinusoidal_table(positions, a.d_model, args[0].dtype)
            elif a.kind is PosTable.RELATIVE_BIAS:
                out = p["weight"]
            else:
                out = torch.stack([p["u"], p["w"]])
        elif op == Op.NORM:
            out = _norm(node, p, args[0])
        elif op == Op.LINEAR:
            out = _linear(node, p, args[0])
        elif op == Op.SPLIT:
            out = list(torch.split(args[0], a.sizes, dim=-1))
        elif op == Op.ROTARY:
            positions = ctx.positions if a.cached else torch.arange(args[0].shape[1], device=ids.device)
            out = list(P.rotary_flat(args[0], args[1], positions, a.n_heads, a.n_kv_heads, a.rot_dims, a.base))
        elif op == Op.ATTENTION:
            out = _attention(node, p, args, ctx)
        elif op == Op.ACTIVATION:
            out = P.activate(args[0], a.kind)
        elif op == Op.GLU:
            out = P.glu(args[0], args[1], a.kind)
        elif op in (Op.ADD, Op.ADD_NORM):
            total = args[0] * a.residual_scale if a.residual_scale != 1.0 else args[0]
            for extra in args[1:]:
                total = total + extra
            out = [total, _norm(node, p, total)] if op == Op.ADD_NORM else total
        elif op == Op.MOE:
            out = _call(node, p, args[0])
        elif op == Op.GATE:
            out = torch.tanh(p["alpha"]) * args[0]
        elif op == Op.RESAMPLER:
            out = _call(node, p, args[0])
        elif op == Op.NEIGHBOUR_ENCODER:
            encoder = _module(node, p)
            out = P.encode_neighbours(lambda n, s: functional_call(encoder, p, (n, s)), params[a.embedding],
                                      args[0], args[1], a.chunk)
        elif op == Op.CHUNKED_XATTN:
            out = P.chunked_cross_attention(
                lambda x: F.linear(x, p["q_proj.weight"], p.get("q_proj.bias")),
                lambda x: F.linear(x, p["kv_proj.weight"], p.get("kv_proj.bias")),
                args[0], args[1], a.chunk, a.n_heads, a.n_kv_heads, a.d_head,
            )
        elif op == Op.LM_HEAD:
            weight = params[a.tied_to] if a.tied_to else p["weight"]
            out = F.linear(args[0], weight, p.get("bias"))
            if a.logit_scale:
                out = out * a.logit_scale
        else:  # pragma: no cover - the verifier rejects unknown ops
            raise ValueError(op)
        outs = out if isinstance(out, list) else [out]
        for name, value in zip(node.outputs, outs):
            values[name] = value
    return values
