"""Deterministic text form of a graph. Identical layers fold into one listing."""

from __future__ import annotations

import dataclasses
import json
import re
from enum import Enum
from typing import Any

from .graph import Graph, Node

_LAYER = re.compile(r"^(layers|encoder_layers)\.(\d+)$")


def _plain(value: Any) -> Any:
    """Attribute values as JSON-able data: enums by value, dataclasses as dicts without defaults."""
    if isinstance(value, Enum):
        return value.value
    if dataclasses.is_dataclass(value):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)
                if getattr(value, f.name) != f.default}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _fmt_attr(value: Any) -> str:
    return json.dumps(_plain(value), sort_keys=True, separators=(",", ":"))


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
    fields = {f.name: getattr(node.attrs, f.name) for f in dataclasses.fields(node.attrs)
              if f.metadata.get("print_default", True) or getattr(node.attrs, f.name) != f.default}
    attrs = ", ".join(f"{k}={_fmt_attr(v)}" for k, v in sorted(fields.items()) if v not in (None, False) and k != "packs")
    packs = fields.get("packs", ())
    if len(packs) > 1:
        attrs += (", " if attrs else "") + "packs=" + "+".join(_local(p.source, scope) for p in packs)
    if node.kernel is not None:
        attrs += (", " if attrs else "") + f"kernel={node.kernel.value}"
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
