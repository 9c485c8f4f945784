"""Hostile spec files: each is a clean error (exit 1, file and key named) or a correct result, never a hang."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import ROOT

# Lines that made the key locator's regexes backtrack: each must be scanned in linear time.
HOSTILE_LINES = [
    "[" + " " * 10_000,
    "[[" + " " * 10_000,
    "[" + " " * 10_000 + "x",
    "[a" + " " * 10_000 + "] x",
    "a" * 10_000,
    "a." * 5_000,
    "a ." * 3_000,
    "x = {" + " ," * 5_000,
    '"' * 10_000,
]
LIMIT_S = 20  # generous: a linear scan takes milliseconds; a regression fails instead of hanging


def _python(code: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=LIMIT_S, cwd=ROOT)


def test_the_key_locator_is_linear_on_hostile_lines() -> None:
    code = ("import json, sys\nfrom taxonc.compiler.spec.locate import locate_keys\n"
            "for line in json.loads(sys.argv[1]): locate_keys(line + '\\n' + 'x = 1')\n")
    done = _python(code, json.dumps(HOSTILE_LINES))
    assert done.returncode == 0, done.stderr[-2000:]


def test_validate_of_a_hostile_line_is_a_prompt_clean_error(tmp_path: Path) -> None:
    spec = tmp_path / "hostile.toml"
    spec.write_text('[model]\nname = "x"\n' + "[" + " " * 10_000 + "\n")
    done = subprocess.run([sys.executable, "-m", "taxonc.compiler.cli", "validate", str(spec)], capture_output=True,
                          text=True, timeout=LIMIT_S, cwd=ROOT)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "hostile.toml" in done.stderr and "Traceback" not in done.stderr


def test_header_positions_are_unchanged() -> None:
    from taxonc.compiler.spec.locate import locate_keys

    text = '[model]\n  [[ layers ]] # c\nx = 1\n[[layers]]\n[ "a.b" . c ]\n[d]]\n[e] x\n'
    where = locate_keys(text)
    assert where["model"] == (1, 1) and where["layers.0"] == (2, 3) and where["layers.0.x"] == (3, 1)
    assert where["layers.1"] == (4, 1) and where["a.b.c"] == (5, 1) and where["d"] == (6, 1)
    assert "e" not in where
