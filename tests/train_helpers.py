"""Shared pieces of the training tests: a small local corpus and tiny runs."""

from __future__ import annotations

import shutil
import sysconfig
from pathlib import Path

from .conftest import ROOT

SHIPPED_TOKENIZER = ROOT / "runtime" / "data" / "taxonc-sp.model"
LLAMA = ROOT / "specs" / "llama.toml"


def stdlib_corpus(dest: Path, max_files: int = 40, max_bytes: int = 12_000) -> Path:
    """A bounded, sorted subset of the Python standard library's own source: text every machine has."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    dest.mkdir(parents=True, exist_ok=True)
    taken = 0
    for path in sorted(stdlib.glob("*.py")):
        if taken == max_files:
            break
        if 2_000 <= path.stat().st_size <= max_bytes:
            shutil.copy(path, dest / path.name)
            taken += 1
    return dest


def tiny_args(spec: Path, data: Path, out: Path, *extra: str) -> list[str]:
    return ["train", str(spec), "--scale", "tiny", "--data", str(data), "--tokenizer", str(SHIPPED_TOKENIZER),
            "-o", str(out), "--no-progress", "--seq-len", "32", "--micro-batch", "4", "--batch-tokens", "256", *extra]
