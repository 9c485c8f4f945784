"""Training modes as flags: activation checkpointing (exact), bf16 autocast (close), torch.compile (slow)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from taxonc.compiler.compile import compile_spec
from taxonc.runtime.artifact import load_source
from taxonc.runtime.train.data import Prepared
from taxonc.runtime.train.loop import Job, RunOptions, train
from taxonc.runtime.train.metrics import read_metrics
from taxonc.runtime.train.recipe import BatchSchedule, LrSchedule, OptimizerConfig, OptimizerKind, Recipe, ScheduleKind

from .train_helpers import LLAMA

SEQ, MICRO, STEPS = 32, 4, 3


@pytest.fixture(scope="module")
def build():
    return load_source(compile_spec(LLAMA, scale="tiny").files["model.py"]).build


def losses(tmp: Path, build, **flags) -> list[float]:
    run = tmp / "-".join(sorted(flags)) if flags else tmp / "plain"
    run.mkdir()
    tokens = np.random.default_rng(0).integers(0, 512, 8 * SEQ + 1).astype(np.uint16)
    for split in ("train", "val"):
        tokens.tofile(run / f"{split}.bin")
    data = Prepared(run, np.dtype(np.uint16), len(tokens), len(tokens), False, 1)
    recipe = Recipe(LrSchedule(ScheduleKind.CONSTANT, 3e-3), BatchSchedule(2 * MICRO * SEQ),
                    OptimizerConfig(OptimizerKind.ADAMW, weight_decay=0.1), STEPS * 2 * MICRO * SEQ)
    train(Job(recipe, RunOptions(run, micro_batch=MICRO, seq_len=SEQ, eval_every=0, progress=False, **flags), build, data))
    return [r["loss"] for r in read_metrics(run / "metrics.jsonl") if "loss" in r]


def test_activation_checkpointing_changes_nothing_but_memory(tmp_path: Path, build) -> None:
    plain = losses(tmp_path, build)
    assert losses(tmp_path, build, activation_checkpointing=True) == pytest.approx(plain, rel=1e-6)


def test_bf16_autocast_trains_close_to_fp32(tmp_path: Path, build) -> None:
    plain = losses(tmp_path, build)
    half = losses(tmp_path, build, bf16=True)
    assert half == pytest.approx(plain, rel=3e-2) and half != plain


@pytest.mark.slow
def test_compiled_model_trains_like_eager(tmp_path: Path, build) -> None:
    assert losses(tmp_path, build, compile=True) == pytest.approx(losses(tmp_path, build), rel=1e-4)
