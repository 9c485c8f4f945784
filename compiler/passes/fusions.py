"""Fusion passes. Each finds its candidates by op kinds and edges, separates legality (can it
fuse, or why not) from the rewrite, and edits the graph only through Graph's methods.

Merged projections keep their `packs`, the unfused projections they replace with each one's
role and rows, so weights of an unfused model map onto the fused one (see weights.py) and
initialisation can treat each row block by its role. Fused nodes that own a norm keep the
norm's name, so its parameter names do not change.
"""

from __future__ import annotations

from ..ir.attrs import Activation, AddNormAttrs, LinearAttrs, NormAttrs, Role, Rotary, SplitAttrs
from ..ir.graph import Graph, Node
from ..ir.ops import Op
from .manager import PassLog, register_pass


class Refusal(Exception):
    pass


def _local(value: str, scope: str) -> str:
    return value[len(scope) + 1:]


def _source_linear(g: Graph, value: str, through: tuple[Op, ...] = ()) -> Node | None:
    """The projection that produces `value`, looking through the given single-input ops (rotary)."""
    node = g.producer_of(value)
    while node is not None and node.op in through:
        index = node.outputs.index(value)
        value = node.inputs[index]
        node = g.producer_of(value)
    return node if node is not None and node.op == Op.LINEAR else None


def _merged_name(nodes: list[Node]) -> str:
    """A name for merged projections: q, k, v -> qkv; cross_k, cross_v -> cross_kv; a, b -> a_b."""
    names = [n.name for n in nodes]
    prefix = names[0][: len(names[0]) - len(names[0].lstrip("_").split("_")[-1])]
    if all(n.startswith(prefix) and len(n) - len(prefix) == 1 for n in names):
        return prefix + "".join(n[len(prefix):] for n in names)
    return "_".join([names[0]] + [n.split("_")[-1] if n.startswith(prefix) else n for n in names[1:]])


def merge_linears(g: Graph, nodes: list[Node], name: str | None = None) -> Node:
    """Replace projections of one input by one projection and a split into the same values."""
    scope = nodes[0].scope
    name = name or _merged_name(nodes)
    index = min(g.position(n.id) for n in nodes)
    source = nodes[0].inputs[0]
    bias = nodes[0].attrs.bias
    packs = tuple(p for n in nodes for p in n.attrs.packs)
    pieces = [out for n in nodes for out in _pieces(g, n)]
    sizes = tuple(g.values[v][-1] for v in pieces)
    shapes = {_local(v, scope): g.values[v] for v in pieces}
    for n in nodes:
        split = _split_of(g, n)
        if split is not None:
            g.remove(split.id)
        g.remove(n.id)
    params = {"weight": (sum(sizes), nodes[0].params["weight"][1])}
    roles = {"weight": Role.PROJECTION}
    if bias:
        params["bias"] = (sum(sizes),)
        roles["bias"] = Role.BIAS
    shape = g.values[source][:-1] + (sum(sizes),)
    lin = g.add(Op.LINEAR, scope, name, [source], {name: shape}, LinearAttrs(bias=bias, packs=packs), params, roles)
    split = g.add(Op.SPLIT, scope, f"{name}_split", [lin.outputs[0]], shapes, SplitAttrs(sizes))
    g.place([lin.id, split.id], index)
    return lin


def _split_of(g: Graph, lin: Node) -> Node | None:
    readers = g.consumers(lin.outputs[0])
    if len(readers) == 1 and readers[0].op == Op.SPLIT:
        return readers[0]
    return None


def _pieces(g: Graph, lin: Node) -> list[str]:
    """The values a projection stands for: its split's outputs, or its own output."""
    split = _split_of(g, lin)
    return list(split.outputs) if split is not None else [lin.outputs[0]]


def _check_mergeable(g: Graph, nodes: list[Node]) -> None:
    if len({n.inputs[0] for n in nodes}) != 1:
        raise Refusal("the projections read different inputs")
    if len({n.attrs.bias for n in nodes}) != 1:
        raise Refusal("some projections have a bias and some do not")
    if any(n.attrs.epilogue for n in nodes):
        raise Refusal("a projection already has an epilogue")
    if any(len(g.consumers(n.outputs[0])) != 1 for n in nodes):
        raise Refusal("a projection's output has several readers")


@register_pass("fuse_qkv")
def fuse_qkv(g: Graph, log: PassLog) -> Graph:
    for attn in [n for n in g.nodes() if n.op == Op.ATTENTION]:
        # through rotary and QK-norm, which each read one projection
        q, k, v = (_source_linear(g, value, through=(Op.ROTARY, Op.NORM)) for value in attn.inputs[:3])
        if not (q and k and v) or len({q.id, k.id, v.id}) != 3:
            log.refuse("fuse_qkv", attn.id, "q, k and v do not come from three separate projections")
            continue
        try:
            _check_mergeable(g, [q, k, v])
            log.apply("fuse_qkv", merge_linears(g, [q, k, v]).id)
            continue
        except Refusal as why:
            log.refuse("fuse_qkv", attn.id, f"q, k, v: {why} (queries read the stream, keys/values the memory)")
        try:
            _check_mergeable(g, [k, v])
            log.apply("fuse_qkv", merge_linears(g, [k, v]).id)
        except Refusal as why:
            log.refuse("fuse_qkv", attn.id, f"k, v: {why}")
    return g


@register_pass("fuse_glu")
def fuse_glu(g: Graph, log: PassLog) -> Graph:
    for glu in [n for n in g.nodes() if n.op == Op.GLU]:
        gate, up = (_source_linear(g, value) for value in glu.inputs)
        try:
            if gate is None or up is None or gate.id == up.id:
                raise Refusal("gate and up do not come from two separate projections")
            _check_mergeable(g, [gate, up])
            log.apply("fuse_glu", merge_linears(g, [gate, up]).id)
        except Refusal as why:
            log.refuse("fuse_glu", glu.id, str(why))
    return g


def _branch_input_projections(g: Graph, normed: str) -> tuple[Node | None, Node | None]:
    """(attention input projection, MLP input projection) among the readers of one normed value."""
    attention = mlp = None
    for reader in g.consumers(normed):
        if reader.op != Op.LINEAR:
            continue
        roles = {p.role for p in reader.attrs.packs}
        if roles & {Role.Q, Role.K, Role.V}:
            attention = reader
        elif roles & {Role.MLP_IN, Role.MLP_GATE, Role.MLP_UP}:
            mlp = reader
    return attention, mlp


@register_pass("fuse_parallel_in")
def fuse_parallel_in(g: Graph, log: PassLog) -> Graph:
    """Parallel blocks (GPT-J, PaLM): the attention and MLP input projections as one matmul."""
    for add in [n for n in g.nodes() if n.op == Op.ADD and len(n.inputs) == 3]:
        where = add.id
        try:
            norms = [n for n in g.nodes() if n.scope == add.scope and n.op == Op.NORM and add.inputs[0] in n.inputs]
            if len(norms) != 1:
                raise Refusal("attention and MLP read separately normed inputs")
            attention, mlp = _branch_input_projections(g, norms[0].outputs[0])
            if attention is None:
                raise Refusal("the attention has no projection of the shared normed input")
            if len(attention.attrs.packs) != 3:
                raise Refusal("q, k and v are not one projection yet")
            if mlp is None:
                raise Refusal("the MLP has no single input projection (mixture of experts or unfused gate)")
            if attention.attrs.bias != mlp.attrs.bias:
                raise Refusal("one input projection has a bias and the other does not")
            if mlp.attrs.epilogue:
                raise Refusal("the MLP projection already has an epilogue")
            log.apply("fuse_parallel_in", merge_linears(g, [attention, mlp], "attn_mlp_in").id)
        except Refusal as why:
            log.refuse("fuse_parallel_in", where, str(why))
    return g


@register_pass("fuse_bias_act")
def fuse_bias_act(g: Graph, log: PassLog) -> Graph:
    for node in [n for n in g.nodes() if n.op == Op.ACTIVATION]:
        try:
            if node.attrs.kind is Activation.SOLU:
                raise Refusal("SoLU needs a row-wise softmax, not an elementwise epilogue")
            lin = g.producer_of(node.inputs[0])
            if lin is None or lin.op != Op.LINEAR:
                raise Refusal("the input does not come straight from a projection")
            if len(g.consumers(lin.outputs[0])) != 1:
                raise Refusal("the projection's output has other readers")
            g.set_attrs(lin.id, epilogue=node.attrs.kind)
            out = node.outputs[0]
            g.remove(node.id)
            g.rewire(out, lin.outputs[0])
            log.apply("fuse_bias_act", lin.id)
        except Refusal as why:
            log.refuse("fuse_bias_act", node.id, str(why))
    return g


@register_pass("fuse_add_norm")
def fuse_add_norm(g: Graph, log: PassLog) -> Graph:
    for add in [n for n in g.nodes() if n.op == Op.ADD]:
        norms = [c for c in g.consumers(add.outputs[0]) if c.op == Op.NORM]
        if not norms:
            continue
        norm = norms[0]
        if norm.scope != add.scope:
            log.refuse("fuse_add_norm", add.id, "the norm is in the next block; blocks stay separate modules")
            continue
        scope = add.scope
        index = g.position(add.id)
        sum_value, normed_value = add.outputs[0], norm.outputs[0]
        shapes = {_local(sum_value, scope): g.values[sum_value], _local(normed_value, scope): g.values[normed_value]}
        n: NormAttrs = norm.attrs
        attrs = AddNormAttrs(n.kind, n.eps, n.bias, n.heads, residual_scale=add.attrs.residual_scale)
        params, roles, inputs, name = dict(norm.params), dict(norm.roles), list(add.inputs), norm.name
        g.remove(norm.id)
        g.remove(add.id)
        fused = g.add(Op.ADD_NORM, scope, name, inputs, shapes, attrs, params, roles)
        g.place([fused.id], index)
        log.apply("fuse_add_norm", fused.id)
    return g


@register_pass("fold_rope")
def fold_rope(g: Graph, log: PassLog) -> Graph:
    for rope in [n for n in g.nodes() if n.op == Op.ROTARY]:
        readers = {c.id: c for value in rope.outputs for c in g.consumers(value)}
        if len(readers) != 1 or next(iter(readers.values())).op != Op.ATTENTION:
            log.refuse("fold_rope", rope.id, "rotated values have readers other than one attention")
            continue
        attn = next(iter(readers.values()))
        # the positions follow the attention's `cached`, which equals the rotary op's
        g.set_attrs(attn.id, rotary=Rotary(rope.attrs.rot_dims, rope.attrs.base, rope.attrs.pairing,
                                              rope.attrs.scaling))
        q_rot, k_rot = rope.outputs
        q, k = rope.inputs
        g.remove(rope.id)
        g.rewire(q_rot, q)
        g.rewire(k_rot, k)
        log.apply("fold_rope", attn.id)
    return g

