"""Graph invariants, checked after lowering and after every pass."""

from __future__ import annotations

import networkx as nx

from ..errors import TaxoncError
from .attrs import ATTRS, Kernel, Role
from .graph import Graph
from .ops import ARITY


class IRVerifyError(TaxoncError):
    def __init__(self, where: str, problems: list[str]) -> None:
        super().__init__(f"IR verification failed after {where}:\n  " + "\n  ".join(problems))
        self.problems = problems


def verify(graph: Graph, where: str = "lowering") -> None:
    problems: list[str] = []
    seen: set[str] = set(graph.inputs)
    for node in graph.nodes():
        lo, hi, n_out = ARITY[node.op]
        if len(node.inputs) < lo or (hi is not None and len(node.inputs) > hi):
            problems.append(f"{node.id}: {node.op.value} takes {lo}..{hi} inputs, has {len(node.inputs)}")
        if n_out is not None and len(node.outputs) != n_out:
            problems.append(f"{node.id}: {node.op.value} gives {n_out} outputs, has {len(node.outputs)}")
        for value in node.inputs:
            if value not in graph.values:
                problems.append(f"{node.id}: reads undefined value {value}")
            elif value not in seen:
                problems.append(f"{node.id}: reads {value} before it is produced (order is not topological)")
        for value in node.outputs:
            shape = graph.values.get(value)
            if shape is None or not shape:
                problems.append(f"{node.id}: output {value} has no shape")
        seen.update(node.outputs)
        expected = ATTRS[node.op]
        if type(node.attrs) is not expected:
            problems.append(f"{node.id}: {node.op.value} carries {type(node.attrs).__name__}, not {expected.__name__}")
        if node.kernel is not None and not isinstance(node.kernel, Kernel):
            problems.append(f"{node.id}: kernel {node.kernel!r} is not a Kernel")
        for name, shape in node.params.items():
            if not all(isinstance(s, int) and s > 0 for s in shape):
                problems.append(f"{node.id}: parameter {name} has a bad shape {shape}")
            if not isinstance(node.roles.get(name), Role):
                problems.append(f"{node.id}: parameter {name} has no role")
        if set(node.roles) - set(node.params):
            problems.append(f"{node.id}: roles for missing parameters {sorted(set(node.roles) - set(node.params))}")
    for value in graph.outputs:
        if value not in seen:
            problems.append(f"graph output {value} is never produced")
    if not nx.is_directed_acyclic_graph(graph.g):
        problems.append("graph has a cycle")
    if problems:
        raise IRVerifyError(where, problems)
