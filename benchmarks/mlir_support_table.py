#!/usr/bin/env python
"""Which specs export to which MLIR dialect: a markdown support table.

    python benchmarks/mlir_support_table.py [--write FILE] [--specs llama,t5] [--dialects torch,linalg]
                                            [--batch 1] [--seq 8] [--no-iree] [--every-spec]

For every spec in specs/*.toml (recipes with `abstract = true` are skipped) at tiny scale, and
every dialect (torch, linalg, stablehlo, tosa): export the emitted model with
taxonc.compiler.backends.mlir_export (fp32, batch 1, 8 tokens by default), parse the text back
and count its matmuls (mlir_verify). For linalg, also compile with IREE (llvm-cpu), run, and
compare with the torch logits: max abs diff <= 1e-4 or the cell fails.

Specs whose tiny models have the same structure (the same graph up to the model name and norm
epsilons) export the same ops, so each such group is exported once and every member gets its
result; --every-spec exports each spec on its own. A cell is "ok" (linalg: with the IREE
difference), or a footnote number pointing at the one-line error. Needs torch-mlir and IREE
(pip install torch-mlir iree-base-compiler iree-base-runtime). The same command line as
`python -m taxonc.compiler.mlir_support`, where the table is built. --update-docs rewrites the
generated section of docs/mlir-support.md, which a test compares with a fresh table.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repo root, when run as a script

from taxonc.compiler.mlir_support import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
