"""A thin typed wrapper over networkx.DiGraph.

Nodes are ops; values are named tensors with symbolic shapes (B batch, T positions, S
encoder positions, M media tokens, and the neighbour axes L, N, R). Each node belongs to a
scope ("embed", "layers.3", "encoder.1", "head"), and the module the torch backend emits
mirrors the scopes, so parameter names in the graph are state-dict names of the module.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, replace
from typing import Any, Iterator

import networkx as nx

from .attrs import Attrs, Kernel, Role
from .ops import Op

Shape = tuple[int | str, ...]


@dataclass
class Node:
    id: str  # "<scope>.<name>", unique
    op: Op
    scope: str
    name: str
    inputs: list[str]
    outputs: list[str]
    attrs: Attrs
    params: dict[str, Shape] = field(default_factory=dict)  # local param name -> shape
    roles: dict[str, Role] = field(default_factory=dict)    # local param name -> what it is for
    kernel: Kernel | None = None  # a fused kernel chosen for this node (Triton backend)

    def param_name(self, local: str) -> str:
        return f"{self.scope}.{self.name}.{local}" if self.scope else f"{self.name}.{local}"


class Graph:
    def __init__(self, name: str) -> None:
        self.name = name
        self.g = nx.DiGraph()
        self.values: dict[str, Shape] = {}
        self.producer: dict[str, str] = {}
        self.inputs: dict[str, Shape] = {}
        self.outputs: list[str] = []
        self.meta: dict[str, Any] = {}
        self._order: list[str] = []
        self._readers: dict[str, list[str]] = {}  # value -> ids of the nodes that read it

    # construction -------------------------------------------------------------------
    def add_input(self, name: str, shape: Shape) -> str:
        self.inputs[name] = shape
        self.values[name] = shape
        return name

    def add(self, op: Op, scope: str, name: str, inputs: list[str], outputs: dict[str, Shape], attrs: Attrs,
            params: dict[str, Shape] | None = None, roles: dict[str, Role] | None = None) -> Node:
        node_id = f"{scope}.{name}" if scope else name
        if node_id in self.g:
            raise ValueError(f"duplicate node {node_id}")
        out_names = []
        for local, shape in outputs.items():
            value = f"{scope}.{local}" if scope else local
            if value in self.producer:
                raise ValueError(f"value {value} produced twice")
            self.values[value] = shape
            self.producer[value] = node_id
            out_names.append(value)
        node = Node(node_id, op, scope, name, list(inputs), out_names, attrs, dict(params or {}), dict(roles or {}))
        self.g.add_node(node_id, node=node)
        for value in inputs:
            if value in self.producer:
                self.g.add_edge(self.producer[value], node_id)
        # a replacement node may produce values that existing nodes already read
        for value in out_names:
            for reader in self._reader_ids(value):
                self.g.add_edge(node_id, reader)
        for value in inputs:
            self._readers.setdefault(value, []).append(node_id)
        self._order.append(node_id)
        return node

    def remove(self, node_id: str) -> None:
        node = self.node(node_id)
        for value in node.outputs:
            self.producer.pop(value, None)
            self.values.pop(value, None)
        for value in node.inputs:
            self._readers[value].remove(node_id)
        self.g.remove_node(node_id)
        self._order.remove(node_id)

    def position(self, node_id: str) -> int:
        """Index of a node in emission order."""
        return self._order.index(node_id)

    def place(self, node_ids: list[str], index: int) -> None:
        """Move already-added nodes to `index` in emission order, keeping their given order."""
        for offset, node_id in enumerate(node_ids):
            self._order.remove(node_id)
            self._order.insert(index + offset, node_id)

    def set_attrs(self, node_id: str, **changes: Any) -> Node:
        """Replace some attributes of a node (attributes are frozen; nodes are edited only here)."""
        node = self.node(node_id)
        node.attrs = replace(node.attrs, **changes)
        return node

    def set_kernel(self, node_id: str, kernel: Kernel) -> None:
        self.node(node_id).kernel = kernel

    def rewire(self, old_value: str, new_value: str) -> None:
        """Make every consumer of old_value read new_value instead."""
        for node_id in self._reader_ids(old_value):
            node = self.node(node_id)
            node.inputs = [new_value if v == old_value else v for v in node.inputs]
            self._readers[old_value].remove(node_id)
            self._readers.setdefault(new_value, []).append(node_id)
            if new_value in self.producer:
                self.g.add_edge(self.producer[new_value], node_id)
        self.outputs = [new_value if v == old_value else v for v in self.outputs]

    def _reader_ids(self, value: str) -> list[str]:
        return list(self._readers.get(value, []))

    # queries ------------------------------------------------------------------------
    def node(self, node_id: str) -> Node:
        return self.g.nodes[node_id]["node"]

    def nodes(self) -> Iterator[Node]:
        """Nodes in emission order (a topological order; the verifier checks it)."""
        for node_id in self._order:
            yield self.node(node_id)

    def consumers(self, value: str) -> list[Node]:
        return [self.node(i) for i in self._reader_ids(value)]

    def scopes(self) -> list[str]:
        return list(dict.fromkeys(n.scope for n in self.nodes()))

    def in_scope(self, scope: str) -> list[Node]:
        return [n for n in self.nodes() if n.scope == scope]

    def param_shapes(self) -> dict[str, Shape]:
        return {n.param_name(p): shape for n in self.nodes() for p, shape in n.params.items()}

    def param_roles(self) -> dict[str, Role]:
        return {n.param_name(p): role for n in self.nodes() for p, role in n.roles.items()}

    def producer_of(self, value: str) -> Node | None:
        node_id = self.producer.get(value)
        return self.node(node_id) if node_id else None

    def copy(self) -> "Graph":
        return copy.deepcopy(self)
