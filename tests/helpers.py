"""Shared test helpers: load emitted modules, build inputs for any spec."""

from __future__ import annotations

import importlib.util
import sys
import tempfile
from pathlib import Path
from types import ModuleType

import torch

from taxonc.compiler.spec.model import ModelSpec

_TMP = Path(tempfile.mkdtemp(prefix="taxonc-tests-"))
_count = 0


def load_module(source: str, name: str = "emitted") -> ModuleType:
    """Import emitted source as a fresh module (never cached under a shared name)."""
    global _count
    _count += 1
    path = _TMP / f"{name.replace('-', '_').replace('.', '_')}_{_count}.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module
    spec.loader.exec_module(module)
    return module


def extra_inputs(spec: ModelSpec, batch: int, seq: int, gen: torch.Generator, dtype=torch.float64) -> dict[str, torch.Tensor]:
    """Keyword inputs beyond input_ids that a spec's model needs."""
    kw: dict[str, torch.Tensor] = {}
    if spec.encoder is not None:
        kw["encoder_ids"] = torch.randint(0, spec.dims.vocab_size, (batch, 12), generator=gen)
    x = spec.cross_attention
    if x is not None and x.kind == "gated":
        kw["media"] = torch.randn(batch, 5, x.media_dim, generator=gen, dtype=dtype)
    if x is not None and x.kind == "chunked":
        chunks = -(-seq // x.chunk_size)
        kw["neighbours"] = torch.randint(0, spec.dims.vocab_size, (batch, chunks, x.n_neighbours, x.neighbour_len), generator=gen)
    return kw
