"""Checkpoints are complete or ignored, and a resumed run follows the uninterrupted loss curve."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from taxonc.compiler.cli import app
from taxonc.runtime.train import checkpoint
from taxonc.runtime.train.metrics import read_metrics

from .conftest import ROOT
from .train_helpers import LLAMA, stdlib_corpus, tiny_args

runner = CliRunner()
STEPS = 8


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return stdlib_corpus(tmp_path_factory.mktemp("corpus"), max_files=12)


def losses(run: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in read_metrics(run / "metrics.jsonl") if "loss" in r}


def args(corpus: Path, out: Path, *extra: str) -> list[str]:
    # a cosine schedule with warmup, so a resumed run with a wrong clock would show
    return tiny_args(LLAMA, corpus, out, "--tokens", str(256 * STEPS), "--eval-every", "0",
                     "--set", "training.lr=3e-3", *extra)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, corpus) -> dict[int, float]:
    out = tmp_path_factory.mktemp("whole")
    result = runner.invoke(app, args(corpus, out))
    assert result.exit_code == 0, result.output
    return losses(out)


def test_only_complete_checkpoints_are_found(tmp_path: Path) -> None:
    (tmp_path / ".tmp-step-00000009").mkdir()  # a write that was killed
    (tmp_path / "step-00000007").mkdir()  # renamed but without its marker: never happens, still ignored
    assert checkpoint.latest(tmp_path) is None
    (tmp_path / "step-00000003").mkdir()
    (tmp_path / "step-00000003" / checkpoint.MARKER).write_text("{}")
    assert checkpoint.latest(tmp_path) == tmp_path / "step-00000003"


def test_stop_and_resume_equals_the_uninterrupted_run(tmp_path: Path, corpus: Path, uninterrupted) -> None:
    first = runner.invoke(app, args(corpus, tmp_path, "--max-steps", "3"))
    assert first.exit_code == 0, first.output
    second = runner.invoke(app, args(corpus, tmp_path, "--resume"))
    assert second.exit_code == 0, second.output
    resumed = losses(tmp_path)
    assert sorted(resumed) == list(range(1, STEPS + 1))
    for step, loss in uninterrupted.items():
        assert resumed[step] == pytest.approx(loss, rel=1e-6, abs=1e-7), step


def test_a_resume_without_checkpoints_starts_over(tmp_path: Path, corpus: Path, uninterrupted) -> None:
    result = runner.invoke(app, args(corpus, tmp_path, "--resume", "--max-steps", "2"))
    assert result.exit_code == 0, result.output
    assert losses(tmp_path) == pytest.approx({s: uninterrupted[s] for s in (1, 2)}, rel=1e-6)


@pytest.mark.slow
def test_sigkill_at_a_random_step_then_resume(tmp_path: Path, corpus: Path, uninterrupted) -> None:
    kill_after = random.Random(os.getpid()).randint(2, STEPS - 2)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "taxonc.compiler.cli", *args(corpus, tmp_path, "--checkpoint-every", "2")]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    metrics = tmp_path / "metrics.jsonl"
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if metrics.is_file() and len(losses_or_empty(tmp_path)) >= kill_after:
                break
            time.sleep(0.05)
        assert proc.poll() is None, f"the run ended before the kill: {proc.stderr.read().decode()[-500:]}"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    result = runner.invoke(app, args(corpus, tmp_path, "--checkpoint-every", "2", "--resume"))
    assert result.exit_code == 0, result.output
    resumed = losses(tmp_path)
    assert sorted(resumed) == list(range(1, STEPS + 1)), kill_after
    for step, loss in uninterrupted.items():
        assert resumed[step] == pytest.approx(loss, rel=1e-6, abs=1e-7), (step, kill_after)


def losses_or_empty(run: Path) -> dict[int, float]:
    try:
        return losses(run)
    except ValueError:  # a line being written
        return {}


def test_a_resume_with_other_settings_is_refused(tmp_path: Path, corpus: Path) -> None:
    first = runner.invoke(app, args(corpus, tmp_path, "--max-steps", "1"))
    assert first.exit_code == 0, first.output
    changed = [*args(corpus, tmp_path, "--resume"), "--seq-len", "16"]
    result = runner.invoke(app, changed)
    assert result.exit_code == 1
    assert "written with --seq-len = 32, resumed with 16" in result.output


def test_resuming_a_finished_run_trains_nothing_and_reports_its_loss(tmp_path: Path, corpus: Path) -> None:
    first = runner.invoke(app, args(corpus, tmp_path, "--max-steps", "2", "--tokens", "512"))
    assert first.exit_code == 0, first.output
    before = losses(tmp_path)
    again = runner.invoke(app, [*args(corpus, tmp_path, "--resume"), "--tokens", "512"])
    assert again.exit_code == 0, again.output
    assert losses(tmp_path) == before and "validation loss nan" not in again.output
    assert "2 steps, 512 tokens" in again.output and "no step left to run" in again.output
