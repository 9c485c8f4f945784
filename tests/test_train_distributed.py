"""The same command under torchrun: 2 CPU processes (gloo), FSDP2 per block, equal to one process.

The FSDP equality runs by default (issue 12: CI proves it), one torchrun launch of a tiny model
with one thread per rank (about 20 s); the data-error and tensor-parallel launches stay slow."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from taxonc.compiler.cli import app
from taxonc.runtime import load
from taxonc.runtime.train.metrics import read_metrics

from .conftest import ROOT
from .train_helpers import LLAMA, stdlib_corpus, tiny_args

STEPS = 20


def run_args(corpus: Path, out: Path, micro_batch: int) -> list[str]:
    # the global batch is 2 x 4 sequences of 32 either way: one process of micro-batch 8 or two of 4
    # --eval-every 0: evaluate once, at the end; the test compares the training losses
    return [*tiny_args(LLAMA, corpus, out, "--tokens", str(256 * STEPS), "--eval-every", "0",
                       "--set", "training.lr=3e-3"), "--micro-batch", str(micro_batch)]


def losses(run: Path) -> list[float]:
    return [r["loss"] for r in read_metrics(run / "metrics.jsonl") if "loss" in r]


def test_two_processes_with_fsdp_equal_one(tmp_path: Path) -> None:
    corpus = stdlib_corpus(tmp_path / "corpus", max_files=6)
    single = CliRunner().invoke(app, run_args(corpus, tmp_path / "one", micro_batch=8))
    assert single.exit_code == 0, single.output
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "taxonc.compiler.cli", *run_args(corpus, tmp_path / "two", micro_batch=4)]
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    (marker,) = (tmp_path / "two" / "checkpoints").glob("step-*/COMPLETE")
    assert json.loads(marker.read_text())["world"] == 2  # it really ran as two ranks
    one, two = losses(tmp_path / "one"), losses(tmp_path / "two")
    assert len(one) == len(two) == STEPS
    assert two == pytest.approx(one, rel=1e-5, abs=1e-5)
    a, b = load(tmp_path / "one" / "model").model.state_dict(), load(tmp_path / "two" / "model").model.state_dict()
    for name in a:
        assert (a[name] - b[name]).abs().max() < 1e-4, name


@pytest.mark.slow
def test_a_data_error_on_rank_0_stops_every_rank(tmp_path: Path) -> None:
    """Rank 0 tokenizes; when that fails, rank 1 must fail with it rather than wait in a barrier."""
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"txt": "typo"}\n')
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "taxonc.compiler.cli", *tiny_args(LLAMA, bad, tmp_path / "run", "--tokens", "512")]
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode != 0
    output = done.stdout + done.stderr
    assert "bad.jsonl:1: key 'text' is missing" in output and "rank 0 failed" in output


@pytest.mark.slow
def test_tensor_parallel_two_processes_equal_one(tmp_path: Path) -> None:
    """--tp 2: attention and MLP projections split across 2 processes (DTensor), the same rows
    on both; equal to one process of the same (unfused) model."""
    corpus = stdlib_corpus(tmp_path / "corpus", max_files=12)
    single = CliRunner().invoke(app, [*run_args(corpus, tmp_path / "one", micro_batch=8), "--no-fusion"])
    assert single.exit_code == 0, single.output
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "taxonc.compiler.cli", *run_args(corpus, tmp_path / "two", micro_batch=8), "--tp", "2"]
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    (marker,) = (tmp_path / "two" / "checkpoints").glob("step-*/COMPLETE")
    saved = json.loads(marker.read_text())
    assert saved["world"] == 2 and saved["run"]["--tp"] == 2
    one, two = losses(tmp_path / "one"), losses(tmp_path / "two")
    assert len(one) == len(two) == STEPS
    assert two == pytest.approx(one, rel=1e-5, abs=1e-5)
    a, b = load(tmp_path / "one" / "model").model.state_dict(), load(tmp_path / "two" / "model").model.state_dict()
    assert set(a) == set(b) and "layers.0.q.weight" in a  # unfused on both sides
    for name in a:
        assert (a[name] - b[name]).abs().max() < 1e-4, name


def test_tp_without_torchrun_is_an_error(tmp_path: Path) -> None:
    corpus = stdlib_corpus(tmp_path / "corpus", max_files=3)
    result = CliRunner().invoke(app, [*run_args(corpus, tmp_path / "run", micro_batch=4), "--tp", "2"])
    assert result.exit_code == 1 and "launch with torchrun" in result.output
    result = CliRunner().invoke(app, [*run_args(corpus, tmp_path / "run", micro_batch=4), "--tp", "3"])
    assert result.exit_code == 2 and "--tp 3 does not divide dims.n_heads (4)" in result.output
