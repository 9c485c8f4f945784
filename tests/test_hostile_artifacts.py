"""Artifacts are written whole or not at all, and loaded only when whole.

A writer stages the directory beside its target, seals it with manifest.json and renames it into
place under a lock; the loader checks the manifest before it imports anything. File modes follow
the umask like any file the user writes.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from taxonc.compiler.cli import app

from .conftest import SPECS

runner = CliRunner()
LLAMA = SPECS / "llama.toml"


def _compile(out: Path, *extra: str, spec: Path = LLAMA) -> Path:
    result = runner.invoke(app, ["compile", str(spec), "--scale", "tiny", "-o", str(out), "-q", *extra])
    assert result.exit_code == 0, result.output
    return out


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_every_artifact_file_follows_the_umask(tmp_path: Path, umask: int) -> None:
    previous = os.umask(umask)
    try:
        out = _compile(tmp_path / "llama", "--init-weights")
    finally:
        os.umask(previous)
    assert _mode(out) == 0o777 & ~umask
    modes = {p.name: _mode(p) for p in out.iterdir()}
    assert modes and set(modes.values()) == {0o666 & ~umask}, modes


def test_a_trained_tokenizer_follows_the_umask(tmp_path: Path) -> None:
    previous = os.umask(0o027)
    try:
        result = runner.invoke(app, ["tokenizer", "train", "--input", str(SPECS.parent / "README.md"), "--vocab", "400",
                                     "-o", str(tmp_path / "t.model")])
    finally:
        os.umask(previous)
    assert result.exit_code == 0, result.output
    assert _mode(tmp_path / "t.model") == 0o640
