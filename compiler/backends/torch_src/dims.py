"""Sizes as the emitted model writes them: named Config fields in code, letters in comments.

A size is written as a Config expression only when its role says which one it is (a query
projection is H*K wide, an MLP input F wide) and the number agrees; anything else stays a
number, so the text is never wrong, only sometimes less named.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from ...ir.attrs import Pack, Role
from ...ir.graph import Graph
from ...ir.ops import Op
from ...spec.derive import derive
from ...spec.model import ModelSpec

LEGEND = {"B": "batch", "T": "positions", "S": "encoder positions", "M": "media tokens", "L": "chunks",
          "N": "neighbours", "R": "neighbour tokens", "D": "model width", "H": "heads", "G": "key/value heads",
          "K": "head width", "F": "MLP width", "V": "vocabulary"}


@dataclass(frozen=True)
class Size:
    code: str    # source text: "CONFIG.d_ff" or "172"
    letters: str  # comment text: "F" or "172"


class Sizes:
    """Config-named sizes of one spec."""

    def __init__(self, spec: ModelSpec) -> None:
        arch = derive(spec)
        d = spec.dims
        self.values = {"d_model": d.d_model, "n_heads": d.n_heads, "n_kv_heads": arch.n_kv_heads, "d_head": arch.d_head,
                       "d_ff": arch.d_ff, "vocab_size": d.vocab_size, "context": d.context}
        self._by_role: dict[Role, tuple[str, str, int]] = {
            Role.Q: ("CONFIG.n_heads * CONFIG.d_head", "H*K", d.n_heads * arch.d_head),
            Role.K: ("CONFIG.n_kv_heads * CONFIG.d_head", "G*K", arch.n_kv_heads * arch.d_head),
            Role.V: ("CONFIG.n_kv_heads * CONFIG.d_head", "G*K", arch.n_kv_heads * arch.d_head),
            Role.MLP_IN: ("CONFIG.d_ff", "F", arch.d_ff),
            Role.MLP_GATE: ("CONFIG.d_ff", "F", arch.d_ff),
            Role.MLP_UP: ("CONFIG.d_ff", "F", arch.d_ff),
            Role.ATTN_OUT: ("CONFIG.d_model", "D", d.d_model),
            Role.MLP_OUT: ("CONFIG.d_model", "D", d.d_model),
        }
        self._inputs: dict[Role, tuple[str, str, int]] = {
            **dict.fromkeys((Role.Q, Role.K, Role.V, Role.MLP_IN, Role.MLP_GATE, Role.MLP_UP),
                            ("CONFIG.d_model", "D", d.d_model)),
            Role.ATTN_OUT: ("CONFIG.n_heads * CONFIG.d_head", "H*K", d.n_heads * arch.d_head),
            Role.MLP_OUT: ("CONFIG.d_ff", "F", arch.d_ff),
        }
        self.used: set[str] = set()

    def _named(self, n: int, choice: tuple[str, str, int] | None) -> Size:
        if choice is None or choice[2] != n:
            return Size(str(n), str(n))
        self.used.update(ch for ch in choice[1] if ch.isalpha())
        return Size(choice[0], choice[1])

    def field(self, n: int, name: str) -> Size:
        """A size that is one Config field when the number agrees (d_model, vocab_size, ...)."""
        letter = {"d_model": "D", "d_ff": "F", "vocab_size": "V", "n_heads": "H", "n_kv_heads": "G", "d_head": "K"}.get(name, name)
        return self._named(n, (f"CONFIG.{name}", letter, self.values[name]))

    def pack_rows(self, pack: Pack) -> Size:
        return self._named(pack.rows, self._by_role.get(pack.role))

    def projection_out(self, packs: tuple[Pack, ...]) -> Size:
        parts = [self.pack_rows(p) for p in packs]
        if any(not part.code.startswith("CONFIG") for part in parts):
            total = str(sum(p.rows for p in packs))
            return Size(total, total)
        code = " + ".join(_times(n, c) for c, n in Counter(p.code for p in parts).items())
        letters = " + ".join(_times(n, c, "") for c, n in Counter(p.letters for p in parts).items())
        return Size(code, letters)

    def projection_in(self, n: int, packs: tuple[Pack, ...]) -> Size:
        return self._named(n, self._inputs.get(packs[0].role))

    def dim(self, n: int) -> str:
        """Letters for the last size of a value, when it is the model width (else the number)."""
        return self._named(n, ("CONFIG.d_model", "D", self.values["d_model"])).letters

    def shape(self, graph: Graph, value: str) -> str:
        """Comment text for a value's shape: [B, T, D], [B, T, H*K + 2*G*K]."""
        shape = graph.values[value]
        self.used.update(s for s in shape if isinstance(s, str))
        return "[" + ", ".join([*(str(s) for s in shape[:-1]), self._last(graph, value, shape[-1])]) + "]"

    def _last(self, graph: Graph, value: str, n: int | str) -> str:
        if isinstance(n, str):
            return n
        node = graph.producer_of(value)
        if node is None:
            return str(n)
        if node.op == Op.LINEAR:
            return self.projection_out(node.attrs.packs).letters
        if node.op == Op.SPLIT:
            source = graph.producer_of(node.inputs[0])
            if source is not None and source.op == Op.LINEAR and len(source.attrs.packs) == len(node.outputs):
                return self.pack_rows(source.attrs.packs[node.outputs.index(value)]).letters
        if node.op == Op.ATTENTION:
            return self._named(n, self._inputs[Role.ATTN_OUT]).letters
        if node.op in (Op.GLU, Op.ACTIVATION):
            return self._named(n, self._by_role[Role.MLP_IN]).letters
        if node.op == Op.LM_HEAD:
            return self.field(n, "vocab_size").letters
        if node.op == Op.NORM and node.inputs[0] in graph.values:
            return self._last(graph, node.inputs[0], n)  # a norm keeps its input's width (QK-norm: H*K, G*K)
        return self.dim(n)


def _times(count: int, term: str, space: str = " ") -> str:
    return term if count == 1 else f"{count}{space}*{space}{term}"
