"""The loop learns: one batch overfits (fast); a tiny LLaMA beats the corpus' unigram entropy (slow)."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from taxonc.compiler.cli import app
from taxonc.compiler.compile import compile_spec
from taxonc.runtime.artifact import load_source
from taxonc.runtime.train.data import Prepared
from taxonc.runtime.train.loop import Job, RunOptions, train
from taxonc.runtime.train.metrics import read_metrics
from taxonc.runtime.train.recipe import BatchSchedule, LrSchedule, OptimizerConfig, OptimizerKind, Recipe, ScheduleKind

from .train_helpers import LLAMA, stdlib_corpus, tiny_args

SEQ, MICRO = 32, 4


def one_batch(directory: Path, seed: int = 0) -> Prepared:
    """Exactly one batch of random tokens (MICRO windows), and the same tokens as validation."""
    tokens = np.random.default_rng(seed).integers(0, 512, MICRO * SEQ + 1).astype(np.uint16)
    for split in ("train", "val"):
        tokens.tofile(directory / f"{split}.bin")
    return Prepared(directory, np.dtype(np.uint16), len(tokens), len(tokens), False, 1)


def test_one_batch_overfits_to_near_zero_loss(tmp_path: Path) -> None:
    build = load_source(compile_spec(LLAMA, scale="tiny").files["model.py"]).build
    steps = 60
    recipe = Recipe(LrSchedule(ScheduleKind.CONSTANT, 1e-2, warmup_tokens=5 * MICRO * SEQ),
                    BatchSchedule(MICRO * SEQ), OptimizerConfig(OptimizerKind.ADAMW, weight_decay=0.0),
                    tokens=steps * MICRO * SEQ)
    options = RunOptions(tmp_path, micro_batch=MICRO, seq_len=SEQ, eval_every=0, progress=False)
    result = train(Job(recipe, options, build, one_batch(tmp_path)))
    first = read_metrics(tmp_path / "metrics.jsonl")[0]["loss"]
    print(f"one batch: loss {first:.3f} -> {result.final_loss:.4f} in {steps} steps")
    assert first > math.log(512) - 0.5  # it starts near chance ...
    assert result.final_loss < 0.05 and result.val_loss < 0.05  # ... and memorises the batch


def unigram_entropy(tokens: np.ndarray) -> float:
    counts = Counter(tokens.tolist())
    total = sum(counts.values())
    return -sum(c / total * math.log(c / total) for c in counts.values())


@pytest.mark.slow
def test_a_tiny_llama_beats_the_unigram_entropy(tmp_path: Path) -> None:
    corpus = stdlib_corpus(tmp_path / "corpus", max_files=60)
    out = tmp_path / "run"
    steps = 300
    result = CliRunner().invoke(app, tiny_args(LLAMA, corpus, out, "--tokens", str(steps * 1024), "--batch-tokens", "1024",
                                               "--seq-len", "64", "--micro-batch", "8", "--eval-every", "100",
                                               "--set", "training.lr=3e-3"))
    assert result.exit_code == 0, result.output
    from taxonc.runtime.train.data import load_prepared

    entropy = unigram_entropy(load_prepared(out / "data").tokens("train"))
    val = [r["val_loss"] for r in read_metrics(out / "metrics.jsonl") if "val_loss" in r][-1]
    print(f"unigram entropy {entropy:.3f} nats/token, validation loss after {steps} steps {val:.3f}")
    assert val < entropy - 1.0
