"""Deterministic text form of a graph. Identical layers fold into one listing."""

from __future__ import annotations

import json
import re
from typing import Any

from .graph import Graph, Node

_LAYER = re.compile(r"^(layers|encoder_layers)\.(\d+)$")


def _fmt_attr(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _local(value: str, scope: str, residual_in: str | None = None) -> str:
    if value == residual_in:
        return "x_in"  # the previous layer's output, so identical layers print identically
    return value[len(scope) + 1:] if value.startswith(scope + ".") else value


def _shape(shape: tuple) -> str:
    return "[" + ",".join(str(s) for s in shape) + "]"


def node_line(graph: Graph, node: Node, scope: str) -> str:
    outs = ", ".join(f"%{_local(v, scope)}{_shape(graph.values[v])}" for v in node.outputs)
    residual_in = graph.meta.get("residual_in", {}).get(scope)
    ins = ", ".join(f"%{_local(v, scope, residual_in)}" for v in node.inputs)
    attrs = ", ".join(f"{k}={_fmt_attr(v)}" for k, v in sorted(node.attrs.items()) if v not in (None, False) and k != "packs")
    packs = node.attrs.get("packs")
    if packs and len(packs) > 1:
        attrs += (", " if attrs else "") + "packs=" + "+".join(_local(p, scope) for p in packs)
    params = " ".join(f"{k}{_shape(s)}" for k, s in sorted(node.params.items()))
    text = f"  {outs} = {node.op.value} {node.name}({ins})"
    if attrs:
        text += " {" + attrs + "}"
    if params:
        text += " params: " + params
    return text


def _ranges(indices: list[int]) -> str:
    if len(indices) == 1:
        return str(indices[0])
    step = indices[1] - indices[0]
    if all(b - a == step for a, b in zip(indices, indices[1:])):
        return f"{indices[0]}..{indices[-1]}" + (f" step {step}" if step != 1 else "")
    return ",".join(str(i) for i in indices)


def layer_groups(graph: Graph) -> list[tuple[str, list[int], str]]:
    """(stack, layer indices, body text) for each distinct layer body, in first-seen order."""
    bodies: dict[tuple[str, str], list[int]] = {}
    for scope in graph.scopes():
        match = _LAYER.match(scope)
        if not match:
            continue
        stack, index = match.group(1), int(match.group(2))
        body = "\n".join(node_line(graph, n, scope) for n in graph.in_scope(scope))
        bodies.setdefault((stack, body), []).append(index)
    return [(stack, idx, body) for (stack, body), idx in bodies.items()]


def print_graph(graph: Graph) -> str:
    lines = [f"graph {graph.name}"]
    lines.append("  inputs: " + ", ".join(f"%{k}{_shape(v)}" for k, v in graph.inputs.items()))
    lines.append("  outputs: " + ", ".join(f"%{v}" for v in graph.outputs))
    groups = {(stack, tuple(idx)): body for stack, idx, body in layer_groups(graph)}
    printed_groups: set[tuple[str, tuple[int, ...]]] = set()
    for scope in graph.scopes():
        match = _LAYER.match(scope)
        if match:
            stack, index = match.group(1), int(match.group(2))
            for (g_stack, idx), body in groups.items():
                if g_stack == stack and index in idx and (g_stack, idx) not in printed_groups:
                    printed_groups.add((g_stack, idx))
                    lines.append(f"{stack}[{_ranges(list(idx))}]: ({len(idx)} layer{'s' if len(idx) > 1 else ''})")
                    lines.append(body)
            continue
        lines.append(f"{scope}:")
        lines.extend(node_line(graph, n, scope) for n in graph.in_scope(scope))
    return "\n".join(lines) + "\n"
