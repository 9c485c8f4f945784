"""Graph passes: pure functions Graph -> Graph, registered by name, run in one ordered list."""

from __future__ import annotations

from .manager import PassLog, PASSES, PIPELINE, register_pass, run_pipeline
from . import fusions as _fusions  # noqa: F401  (registers the fusion passes)
from . import select_kernels as _select_kernels  # noqa: F401  (registers select_kernels, which backends name)

__all__ = ["PASSES", "PIPELINE", "PassLog", "register_pass", "run_pipeline"]
