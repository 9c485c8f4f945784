"""Compare the blocks of GPT-3, PaLM, LLaMA and Gopher at about 10M parameters, trained alike.

    python examples/ablate_blocks.py --tokens 65536 -o out/ablate-blocks   # ~10M params each, CPU: tens of minutes
    python examples/ablate_blocks.py --quick -o out/ablate-quick            # tiny scale, seconds (what the tests run)

Every spec is compiled at the same size (6 layers, width 384, 6 heads of 64, MLP width 1536,
vocabulary 512) and trained by `taxonc ablate` on the same text (a bounded subset of the
Python standard library's own source), with the same tokenizer, seed, batch, token budget,
optimizer (AdamW), peak learning rate and cosine schedule. What differs is each paper's block:
norms, activation, positions, attention sharing, parallel or sequential wiring, biases, tied
embeddings, and what the recipe keeps of its own (warmup share, GPT-3's batch ramp, PaLM's
batch stages and z-loss). examples/ablation.md has the result.
"""

from __future__ import annotations

import argparse
import shutil
import sysconfig
from pathlib import Path

from typer.testing import CliRunner

from taxonc.compiler.cli import app

ROOT = Path(__file__).resolve().parent.parent
SPECS = [ROOT / "specs" / f"{name}.toml" for name in ("gpt3", "palm", "llama", "gopher")]
TEN_MILLION = ["dims.n_layers=6", "dims.d_model=384", "dims.n_heads=6", "dims.d_head=64", "dims.d_ff=1536",
               "dims.vocab_size=512", "tokenizer.vocab_size=512", "dims.context=512"]
SAME_RECIPE = ["training.optimizer=adamw", "training.lr=1e-3", "training.schedule=cosine", "training.weight_decay=0.1"]


def corpus(dest: Path, files: int = 60) -> Path:
    """The first `files` standard-library modules of 2-12 KB, in sorted order: text every machine has."""
    dest.mkdir(parents=True, exist_ok=True)
    taken = 0
    for path in sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py")):
        if taken < files and 2_000 <= path.stat().st_size <= 12_000:
            shutil.copy(path, dest / path.name)
            taken += 1
    return dest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", type=Path, default=Path("out/ablate-blocks"))
    parser.add_argument("--tokens", type=int, default=65536)
    parser.add_argument("--quick", action="store_true", help="tiny scale and 1024 tokens (a smoke test)")
    args = parser.parse_args()
    data = corpus(args.output / "corpus", files=8 if args.quick else 60)
    size = ["--scale", "tiny", "--seq-len", "32", "--micro-batch", "4"] if args.quick else \
        ["--scale", "full", "--seq-len", "128", "--micro-batch", "8"] + [a for s in TEN_MILLION for a in ("--set", s)]
    tokens = 1024 if args.quick else args.tokens
    command = ["ablate", *map(str, SPECS), "--data", str(data), "--tokens", str(tokens), "--batch-tokens",
               "256" if args.quick else "1024", "--tokenizer", str(ROOT / "runtime" / "data" / "taxonc-sp.model"),
               "--eval-every", "16", "--no-progress", "-o", str(args.output), *size,
               *(a for s in SAME_RECIPE for a in ("--set", s))]
    result = CliRunner().invoke(app, command)
    print(result.output, end="")
    raise SystemExit(result.exit_code)


if __name__ == "__main__":
    main()
