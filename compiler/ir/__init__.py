"""Graph IR: ops, the graph wrapper, lowering from specs, verification and printing."""

from .build import build_graph
from .graph import Graph, Node
from .ops import Op
from .printer import print_graph
from .verify import IRVerifyError, verify

__all__ = ["Graph", "IRVerifyError", "Node", "Op", "build_graph", "print_graph", "verify"]
