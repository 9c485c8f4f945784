"""Compare two architectures: what changed, by axis, and what it does to size and cost.

    python examples/diff_architectures.py                                   # LLaMA 65B vs the example
    python examples/diff_architectures.py specs/gpt3.toml specs/palm.toml

The same report as `taxonc diff A B --markdown`, built with the Python API: load_spec
resolves each file (following `extends`), and diff_specs compares the two resolved specs:
a summary in words per axis, derived figures (parameters, FLOPs and KV-cache bytes per
token), and every changed value with where it came from.
"""

from __future__ import annotations

import sys
from pathlib import Path

from taxonc.compiler.diff import diff_specs, render_markdown
from taxonc.compiler.spec import load_spec

ROOT = Path(__file__).resolve().parent.parent


def main(a: Path, b: Path) -> None:
    d = diff_specs(load_spec(a), load_spec(b))
    if d.identical:
        print(f"{a.name} and {b.name} resolve to the same spec")
        return
    for axis, text in d.summary:
        print(f"{axis:>16}: {text}")
    kv = d.figures["kv_cache_bytes_per_token_bf16"]
    print(f"KV cache per token (bf16): {kv['a']:,.0f} -> {kv['b']:,.0f} bytes")
    print()
    print(render_markdown(d), end="")  # what `taxonc diff --markdown` prints


if __name__ == "__main__":
    args = [Path(p) for p in sys.argv[1:3]] or [ROOT / "specs" / "llama.toml", ROOT / "examples" / "llama2-70b.toml"]
    main(*args)
