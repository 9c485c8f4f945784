"""Fusion passes. Each separates legality (can it fuse, or why not) from the rewrite.

Merged projections keep a `packs` attribute listing the projections they replace, in
order, so weights of an unfused model map onto the fused one (see weights.py). Fused nodes
that own a norm keep the norm's name, so its parameter names do not change.
"""

from __future__ import annotations

from ..ir.graph import Graph, Node
from ..ir.ops import Op
from .manager import PassLog, register_pass


class Refusal(Exception):
    pass


def _producer(g: Graph, value: str) -> Node | None:
    node_id = g.producer.get(value)
    return g.node(node_id) if node_id else None


def _local(value: str, scope: str) -> str:
    return value[len(scope) + 1:]


def _place(g: Graph, new_ids: list[str], index: int) -> None:
    for offset, node_id in enumerate(new_ids):
        g._order.remove(node_id)
        g._order.insert(index + offset, node_id)


def merge_linears(g: Graph, nodes: list[Node], name: str, out_local: str) -> Node:
    """Replace several projections of one input by one projection and a split."""
    scope = nodes[0].scope
    index = min(g._order.index(n.id) for n in nodes)
    source = nodes[0].inputs[0]
    sizes = [n.params["weight"][0] for n in nodes]
    d_in = nodes[0].params["weight"][1]
    bias = nodes[0].attrs["bias"]
    packs = [p for n in nodes for p in n.attrs["packs"]]
    outs = {_local(n.outputs[0], scope): g.values[n.outputs[0]] for n in nodes}
    for n in nodes:
        g.remove(n.id)
    params = {"weight": (sum(sizes), d_in)}
    if bias:
        params["bias"] = (sum(sizes),)
    shape = g.values[source][:-1] + (sum(sizes),)
    lin = g.add(Op.LINEAR, scope, name, [source], {out_local: shape}, {"bias": bias, "epilogue": None, "packs": packs}, params)
    split = g.add(Op.SPLIT, scope, f"{name}_split", [lin.outputs[0]], outs, {"sizes": sizes})
    _place(g, [lin.id, split.id], index)
    return lin


def _linear(g: Graph, scope: str, name: str) -> Node | None:
    node_id = f"{scope}.{name}"
    if node_id in g.g and g.node(node_id).op == Op.LINEAR:
        return g.node(node_id)
    return None


def _check_same_input(nodes: list[Node]) -> None:
    if len({n.inputs[0] for n in nodes}) != 1:
        raise Refusal("the projections read different inputs")
    if len({n.attrs["bias"] for n in nodes}) != 1:
        raise Refusal("some projections have a bias and some do not")
    if any(n.attrs.get("epilogue") for n in nodes):
        raise Refusal("a projection already has an epilogue")


@register_pass("fuse_qkv")
def fuse_qkv(g: Graph, log: PassLog) -> Graph:
    for scope in g.scopes():
        for prefix in ("", "cross_", "xattn_"):
            q, k, v = (_linear(g, scope, f"{prefix}{r}") for r in "qkv")
            if not (q and k and v):
                continue
            try:
                _check_same_input([q, k, v])
                merge_linears(g, [q, k, v], f"{prefix}qkv", f"{prefix}qkv")
                log.apply("fuse_qkv", f"{scope}.{prefix}qkv")
                continue
            except Refusal as why:
                log.refuse("fuse_qkv", f"{scope}.{prefix}qkv", f"{why} (queries read the stream, keys/values the memory)")
            try:
                _check_same_input([k, v])
                merge_linears(g, [k, v], f"{prefix}kv", f"{prefix}kv")
                log.apply("fuse_qkv", f"{scope}.{prefix}kv")
            except Refusal as why:
                log.refuse("fuse_qkv", f"{scope}.{prefix}kv", str(why))
    return g


@register_pass("fuse_glu")
def fuse_glu(g: Graph, log: PassLog) -> Graph:
    for scope in g.scopes():
        gate, up = _linear(g, scope, "mlp_gate"), _linear(g, scope, "mlp_up")
        if not (gate and up):
            continue
        try:
            _check_same_input([gate, up])
            merge_linears(g, [gate, up], "mlp_gate_up", "gate_up")
            log.apply("fuse_glu", f"{scope}.mlp_gate_up")
        except Refusal as why:
            log.refuse("fuse_glu", f"{scope}.mlp_gate_up", str(why))
    return g


@register_pass("fuse_parallel_in")
def fuse_parallel_in(g: Graph, log: PassLog) -> Graph:
    for scope in g.scopes():
        add = f"{scope}.add"
        if add not in g.g or len(g.node(add).inputs) != 3:
            continue  # not a parallel block
        where = f"{scope}.attn_mlp_in"
        try:
            qkv = _linear(g, scope, "qkv")
            mlp = _linear(g, scope, "mlp_gate_up") or _linear(g, scope, "mlp_in")
            if qkv is None:
                raise Refusal("q, k and v are not one projection yet")
            if mlp is None:
                raise Refusal("the MLP has no single input projection (mixture of experts or unfused gate)")
            if qkv.inputs[0] != mlp.inputs[0]:
                raise Refusal("attention and MLP read separately normed inputs")
            if qkv.attrs["bias"] != mlp.attrs["bias"]:
                raise Refusal("one input projection has a bias and the other does not")
            splits = [g.node(f"{scope}.{n.name}_split") for n in (qkv, mlp) if f"{scope}.{n.name}_split" in g.g]
            pieces = []
            for n in (qkv, mlp):
                split = f"{scope}.{n.name}_split"
                if split in g.g:
                    pieces.extend(g.node(split).outputs)
                else:
                    pieces.append(n.outputs[0])
            index = min(g._order.index(n.id) for n in (qkv, mlp))
            sizes = [g.values[p][-1] for p in pieces]
            packs = qkv.attrs["packs"] + mlp.attrs["packs"]
            source, bias, d_in = qkv.inputs[0], qkv.attrs["bias"], qkv.params["weight"][1]
            shapes = {_local(p, scope): g.values[p] for p in pieces}
            for node in splits + [qkv, mlp]:
                g.remove(node.id)
            params = {"weight": (sum(sizes), d_in)}
            if bias:
                params["bias"] = (sum(sizes),)
            lin = g.add(Op.LINEAR, scope, "attn_mlp_in", [source], {"attn_mlp_in": g.values[source][:-1] + (sum(sizes),)},
                        {"bias": bias, "epilogue": None, "packs": packs}, params)
            split = g.add(Op.SPLIT, scope, "attn_mlp_in_split", [lin.outputs[0]], shapes, {"sizes": sizes})
            _place(g, [lin.id, split.id], index)
            log.apply("fuse_parallel_in", where)
        except Refusal as why:
            log.refuse("fuse_parallel_in", where, str(why))
    return g


@register_pass("fuse_bias_act")
def fuse_bias_act(g: Graph, log: PassLog) -> Graph:
    for node in list(g.nodes()):
        if node.op != Op.ACTIVATION:
            continue
        try:
            if node.attrs["kind"] == "solu":
                raise Refusal("SoLU needs a row-wise softmax, not an elementwise epilogue")
            lin = _producer(g, node.inputs[0])
            if lin is None or lin.op != Op.LINEAR:
                raise Refusal("the input does not come straight from a projection")
            if len(g.consumers(lin.outputs[0])) != 1:
                raise Refusal("the projection's output has other readers")
            lin.attrs["epilogue"] = node.attrs["kind"]
            out = node.outputs[0]
            g.remove(node.id)
            g.rewire(out, lin.outputs[0])
            log.apply("fuse_bias_act", lin.id)
        except Refusal as why:
            log.refuse("fuse_bias_act", node.id, str(why))
    return g


@register_pass("fuse_add_norm")
def fuse_add_norm(g: Graph, log: PassLog) -> Graph:
    for add in list(g.nodes()):
        if add.op != Op.ADD:
            continue
        norms = [c for c in g.consumers(add.outputs[0]) if c.op == Op.NORM]
        if not norms:
            continue
        norm = norms[0]
        if norm.scope != add.scope:
            log.refuse("fuse_add_norm", add.id, "the norm is in the next block; blocks stay separate modules")
            continue
        scope = add.scope
        index = g._order.index(add.id)
        sum_value, normed_value = add.outputs[0], norm.outputs[0]
        shapes = {_local(sum_value, scope): g.values[sum_value], _local(normed_value, scope): g.values[normed_value]}
        attrs = dict(norm.attrs)
        attrs["residual_scale"] = add.attrs["residual_scale"]
        params, inputs, name = dict(norm.params), list(add.inputs), norm.name
        g.remove(norm.id)
        g.remove(add.id)
        fused = g.add(Op.ADD_NORM, scope, name, inputs, shapes, attrs, params)
        _place(g, [fused.id], index)
        log.apply("fuse_add_norm", fused.id)
    return g


@register_pass("fold_rope")
def fold_rope(g: Graph, log: PassLog) -> Graph:
    for rope in list(g.nodes()):
        if rope.op != Op.ROTARY:
            continue
        attn = g.consumers(rope.outputs[0])
        if len(attn) != 1 or attn[0].op != Op.ATTENTION:
            log.refuse("fold_rope", rope.id, "rotated values have readers other than one attention")
            continue
        attn = attn[0]
        attn.attrs["rotary"] = {"dims": rope.attrs["rot_dims"], "base": rope.attrs["base"]}  # positions follow attn's "cached"
        q_rot, k_rot = rope.outputs
        q, k = rope.inputs
        g.remove(rope.id)
        g.rewire(q_rot, q)
        g.rewire(k_rot, k)
        log.apply("fold_rope", attn.id)
    return g
