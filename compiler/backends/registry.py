"""The backends, named once. `compile_spec` and every `--backend` option of the CLI read this table.

A backend is a name, the passes it runs after the shared pipeline (by pass name: the passes
package does not know about backends), the emitter that writes its model.py (imported when
first called, so that reading the table imports no torch), and what the CLI writes beside
model.py. Adding a backend is one entry in BACKENDS.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Callable, Mapping

from ..errors import UsageError

if TYPE_CHECKING:
    from ..ir import Graph
    from ..spec.model import ModelSpec

# graph after the passes, the spec, the header compile.py builds -> the text of model.py
Emitter = Callable[["Graph", "ModelSpec", dict[str, Any]], str]


def _emit_torch(graph: Graph, spec: ModelSpec, header: dict[str, Any]) -> str:
    from .torch_src.emit import emit_model

    return emit_model(graph, spec, header)


def _emit_triton(graph: Graph, spec: ModelSpec, header: dict[str, Any]) -> str:
    from .triton_src.emit import emit_triton_model

    return emit_triton_model(graph, spec, header)


@dataclass(frozen=True)
class Backend:
    name: str
    description: str  # one line, for --help and docs
    emit: Emitter  # writes model.py
    passes: tuple[str, ...] = ()  # registered pass names, run after the shared pipeline
    exports_mlir: bool = False  # the CLI also exports model.py with torch-mlir to DIR/model.mlir


BACKENDS: Mapping[str, Backend] = MappingProxyType({b.name: b for b in (
    Backend("torch", "model.py in plain PyTorch, importing torch alone", _emit_torch),
    Backend("triton", "the torch model.py with kernel-marked ops calling taxonc.kernels", _emit_triton,
            passes=("select_kernels",)),
    Backend("mlir", "the torch model.py, exported by torch-mlir to model.mlir", _emit_torch, exports_mlir=True),
)})


def backend_names() -> str:
    """'torch, triton, mlir': for help texts and error messages."""
    return ", ".join(BACKENDS)


def get_backend(name: str) -> Backend:
    """The registered backend called `name`; a UsageError naming the allowed ones otherwise."""
    try:
        return BACKENDS[name]
    except (KeyError, TypeError):
        raise UsageError(f"unknown backend {name!r}; backends are: {backend_names()}") from None
