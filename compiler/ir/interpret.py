"""Run a graph node by node with plain torch, calling the same reference ops the torch backend
copies into the models it emits (taxonc.kernels.reference). Used to prove that passes preserve
outputs (in float64) and that emitted modules compute what the graph says."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.func import functional_call

from taxonc.kernels.reference import attention as A
from taxonc.kernels.reference import blocks, norms, positions

from .attrs import Activation, AttentionFn, NormFn, PosTable, RelativeBias, RopeScalingAttrs, RotaryPairing
from .graph import Graph, Node
from .ops import Op


def _sub(params: dict[str, torch.Tensor], node: Node) -> dict[str, torch.Tensor]:
    prefix = node.param_name("")
    return {k[len(prefix):]: v for k, v in params.items() if k.startswith(prefix)}


def _norm_factory(kind: NormFn, eps: float, bias: bool):
    if kind is NormFn.RMSNORM:
        return lambda width, **kw: norms.RMSNorm(width, eps, **kw)
    return lambda width, **kw: nn.LayerNorm(width, eps=eps, bias=bias, **kw)


def _norm(node: Node, p: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    heads = getattr(node.attrs, "heads", 1)
    if heads > 1:  # per-head QK-norm: each head's slice alone, one scale shared by the heads
        return _norm_rows(node, p, x.unflatten(-1, (heads, -1))).flatten(-2)
    return _norm_rows(node, p, x)


def _norm_rows(node: Node, p: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    if node.attrs.kind is NormFn.RMSNORM:
        return norms.rms_norm(x, p["weight"], node.attrs.eps)
    return F.layer_norm(x, (x.shape[-1],), p["weight"], p.get("bias"), node.attrs.eps)


def _linear(node: Node, p: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    y = F.linear(x, p["weight"], p.get("bias"))
    return norms.activate(y, node.attrs.epilogue) if node.attrs.epilogue else y


class _Run:
    """Per-call values every attention reads: positions, rotary tables, the prefix length."""

    def __init__(self, n_positions: int, device: torch.device, prefix_len: int) -> None:
        self.positions = torch.arange(n_positions, device=device)
        self.prefix_len = prefix_len
        self.tables: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}

    def rope(self, dims: int, base: float, n: int, dtype: torch.dtype, scaling: RopeScalingAttrs | None = None):
        key = (dims, base, n, dtype, scaling)
        if key not in self.tables:
            at = torch.arange(n, device=self.positions.device)
            self.tables[key] = (positions.rotary_tables(at, dims, base, dtype) if scaling is None else
                                positions.scaled_rotary_tables(at, dims, base, dtype, scaling.as_dict()))
        return self.tables[key]


def _attention(node: Node, p: dict[str, torch.Tensor], args: list[torch.Tensor], run: _Run) -> torch.Tensor:
    a = node.attrs
    q, k, v = args[:3]
    shared = args[3] if len(args) > 3 else None
    heads = {"n_heads": a.n_heads, "n_kv_heads": a.n_kv_heads, "scale": a.scale}
    rope = run.rope(a.rotary.dims, a.rotary.base, q.shape[1], q.dtype, a.rotary.scaling) if a.rotary else None
    if a.rotary and a.rotary.pairing is RotaryPairing.INTERLEAVED:
        q, k = (positions.pairs_to_halves(x, n, a.rotary.dims) for x, n in ((q, a.n_heads), (k, a.n_kv_heads)))
    fn = a.fn
    if fn is AttentionFn.XL:
        u, w = (shared[0], shared[1]) if shared is not None else (p["u"], p["w"])
        return A.xl_attention(q, k, v, a.mask, p["r_proj"], u, w, prefix_len=run.prefix_len, **heads)
    if fn is AttentionFn.RELATIVE_BIAS:
        rel: RelativeBias = a.relative
        table = shared if shared is not None else p["rel_bias"]
        return A.relative_bias_attention(q, k, v, a.mask, table, n_buckets=rel.n_buckets, max_distance=rel.max_distance,
                                         bidirectional=rel.bidirectional, prefix_len=run.prefix_len, **heads)
    if fn is AttentionFn.FULL:
        return A.full_attention(q, k, v, rope=rope, **heads)
    if fn is AttentionFn.CAUSAL:
        return A.causal_attention(q, k, v, rope=rope, **heads)
    return A.masked_attention(q, k, v, a.mask, prefix_len=run.prefix_len, rope=rope, alibi=a.alibi, window=a.window,
                              **heads)


def _module(node: Node) -> torch.nn.Module:
    """The reference module of a composite op, on the meta device; functional_call supplies weights."""
    a = node.attrs
    with torch.device("meta"):
        if node.op == Op.MOE:
            m = blocks.MoE(1, a.d_ff, a.n_experts, a.top_k, a.capacity_factor, a.router.value, a.activation.value,
                           "b_in" in node.params, "b_out" in node.params, a.inference_capacity_factor)
            if a.activation is Activation.SOLU:
                m.solu_norm = _norm_factory(a.norm_kind, a.eps, "solu_norm.bias" in node.params)(a.d_ff)
            return m
        norm = _norm_factory(a.norm_kind, a.eps, a.bias)
        if node.op == Op.RESAMPLER:
            return blocks.PerceiverResampler(a.dim, a.n_latents, a.n_layers, a.n_heads, norm)
        if node.op == Op.NEIGHBOUR_ENCODER:
            return blocks.NeighbourEncoder(1, a.dim, a.n_layers, a.n_heads, norm)
    raise ValueError(node.op)


def _call(node: Node, p: dict[str, torch.Tensor], *args: Any) -> torch.Tensor:
    return functional_call(_module(node).eval(), p, args, strict=True)  # inference semantics


def run_graph(graph: Graph, params: dict[str, torch.Tensor], inputs: dict[str, torch.Tensor],
              prefix_len: int = 0) -> dict[str, torch.Tensor]:
    """Execute `graph`; returns every value by name."""
    values: dict[str, Any] = dict(inputs)
    ids = inputs["input_ids"]
    run = _Run(ids.shape[1], ids.device, prefix_len)
    for node in graph.nodes():
        p = _sub(params, node)
        args = [values[v] for v in node.inputs]
        a = node.attrs
        op = node.op
        if op == Op.TOKEN_EMBED:
            weight = params[a.tied_to] if a.tied_to else p["weight"]
            out: Any = F.embedding(args[0], weight)
        elif op == Op.POS_EMBED:
            where = torch.arange(args[0].shape[1], device=ids.device)
            if a.kind is PosTable.LEARNED:
                out = args[0] + p["weight"][where + a.offset]
            elif a.kind is PosTable.SINUSOIDAL:
                out = args[0] + positions.sinusoidal_table(where, a.d_model, args[0].dtype)
            elif a.kind is PosTable.RELATIVE_BIAS:
                out = p["weight"]
            else:
                out = torch.stack([p["u"], p["w"]])
        elif op == Op.NORM:
            out = _norm(node, p, args[0])
        elif op == Op.LINEAR:
            out = _linear(node, p, args[0])
        elif op == Op.SPLIT:
            out = list(torch.split(args[0], list(a.sizes), dim=-1))
        elif op == Op.ROTARY:
            cos, sin = run.rope(a.rot_dims, a.base, args[0].shape[1], args[0].dtype, a.scaling)
            heads = (a.n_heads, a.n_kv_heads)
            if a.pairing is RotaryPairing.INTERLEAVED:  # the rotated values in their own (interleaved) order
                out = [positions.halves_to_pairs(positions.rotary_flat(positions.pairs_to_halves(x, n, a.rot_dims), n, cos, sin),
                                                 n, a.rot_dims) for x, n in zip(args[:2], heads)]
            else:
                out = [positions.rotary_flat(x, n, cos, sin) for x, n in zip(args[:2], heads)]
        elif op == Op.ATTENTION:
            out = _attention(node, p, args, run)
        elif op == Op.ACTIVATION:
            out = norms.activate(args[0], a.kind)
        elif op == Op.GLU:
            out = norms.glu(args[0], args[1], a.kind)
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
            encoder = _module(node)
            out = blocks.encode_neighbours(lambda n, s: functional_call(encoder, p, (n, s)), params[a.embedding],
                                           args[0], args[1], a.chunk)
        elif op == Op.CHUNKED_XATTN:
            out = blocks.chunked_cross_attention(
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
