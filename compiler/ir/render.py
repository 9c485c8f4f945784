"""Graph pictures: text (the printer), Graphviz dot and Mermaid, one box per distinct layer."""

from __future__ import annotations

from ..errors import UsageError
from .graph import Graph
from .printer import layer_groups, print_graph

FORMATS = ("text", "dot", "mermaid")


def _units(graph: Graph) -> list[tuple[str, list[str]]]:
    """(label, op lines) for each scope, with identical layers folded into one unit."""
    units: list[tuple[str, list[str]]] = []
    folded: set[str] = set()
    groups = layer_groups(graph)
    for scope in graph.scopes():
        if scope in folded:
            continue
        label, members = scope, [scope]
        for stack, indices, _ in groups:
            names = [f"{stack}.{i}" for i in indices]
            if scope in names:
                label = f"{stack}[{indices[0]}..{indices[-1]}] x{len(indices)}" if len(indices) > 1 else scope
                members = names
        folded.update(members)
        ops = [f"{n.op.value} {n.name}" for n in graph.in_scope(scope)]
        units.append((label, ops))
    return units


def render_graph(graph: Graph, fmt: str) -> str:
    if fmt == "text":
        return print_graph(graph)
    if fmt not in FORMATS:
        raise UsageError(f"unknown format {fmt!r}; formats are: {', '.join(FORMATS)}")
    units = _units(graph)
    if fmt == "dot":
        lines = [f"digraph {graph.name.replace('-', '_').replace('.', '_')} {{", "  rankdir=TB; node [shape=box, fontname=monospace];"]
        for i, (label, ops) in enumerate(units):
            text = "\\l".join([label] + [f"  {op}" for op in ops]) + "\\l"
            lines.append(f'  u{i} [label="{text}"];')
            if i:
                lines.append(f"  u{i - 1} -> u{i};")
        lines.append("}")
        return "\n".join(lines) + "\n"
    lines = ["flowchart TD"]
    for i, (label, ops) in enumerate(units):
        body = "<br/>".join([f"<b>{label}</b>"] + ops)
        lines.append(f'  u{i}["{body}"]')
        if i:
            lines.append(f"  u{i - 1} --> u{i}")
    return "\n".join(lines) + "\n"
