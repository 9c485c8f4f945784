"""Pass registry and the pipeline runner (verify after each pass, dumps, stop-after)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..errors import UsageError
from ..ir.graph import Graph
from ..ir.printer import print_graph
from ..ir.verify import verify


@dataclass(frozen=True)
class Applied:
    pass_name: str
    node: str  # id of the node the rewrite produced or changed
    detail: str = ""


@dataclass(frozen=True)
class Refused:
    pass_name: str
    where: str  # id of the node the pass looked at
    why: str


@dataclass
class PassLog:
    """What each pass did and what it refused, with the reason."""

    applied: list[Applied] = field(default_factory=list)
    refused: list[Refused] = field(default_factory=list)

    def apply(self, pass_name: str, where: str, detail: str = "") -> None:
        self.applied.append(Applied(pass_name, where, detail))

    def refuse(self, pass_name: str, where: str, why: str) -> None:
        self.refused.append(Refused(pass_name, where, why))

    def summary(self) -> dict[str, int]:
        return dict(Counter(a.pass_name for a in self.applied))

    def refusal_reasons(self) -> dict[tuple[str, str], int]:
        return dict(Counter((r.pass_name, r.why) for r in self.refused))


PassFn = Callable[[Graph, PassLog], Graph]
PASSES: dict[str, PassFn] = {}

# The one place that decides pass order. Read top to bottom.
PIPELINE = [
    "fuse_qkv",          # q, k, v projections of one input -> one matmul (MQA/GQA widths included)
    "fuse_glu",          # GLU gate and up projections -> one matmul
    "fuse_parallel_in",  # parallel block: attention and MLP input projections -> one matmul
    "fuse_bias_act",     # bias + relu/gelu as the matmul's epilogue
    "fuse_add_norm",     # residual add followed by a norm -> one op
    "fold_rope",         # rotary embedding -> attention prologue
]


def register_pass(name: str) -> Callable[[PassFn], PassFn]:
    def wrap(fn: PassFn) -> PassFn:
        if name in PASSES:
            raise ValueError(f"pass {name} registered twice")
        PASSES[name] = fn
        return fn

    return wrap


def run_pipeline(graph: Graph, passes: list[str] | None = None, stop_after: str | None = None,
                 dump_dir: Path | None = None, log: PassLog | None = None) -> tuple[Graph, PassLog]:
    names = list(PIPELINE if passes is None else passes)
    unknown = [n for n in names + ([stop_after] if stop_after else []) if n not in PASSES]
    if unknown:
        raise UsageError(f"unknown pass {unknown[0]!r}; passes are: {', '.join(PIPELINE)}")
    log = log or PassLog()
    verify(graph, "lowering" if not log.applied and not log.refused else "previous passes")
    if dump_dir is not None:
        dump_dir.mkdir(parents=True, exist_ok=True)
        (dump_dir / "00_lowered.ir.txt").write_text(print_graph(graph))
    for i, name in enumerate(names, start=1):
        graph = PASSES[name](graph.copy(), log)
        verify(graph, name)
        if dump_dir is not None:
            (dump_dir / f"{i:02d}_{name}.ir.txt").write_text(print_graph(graph))
        if name == stop_after:
            break
    return graph, log
