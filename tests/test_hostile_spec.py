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


# ----------------------------------------------------------------------------- model names

def _validate(tmp_path: Path, text: str) -> str:
    from typer.testing import CliRunner

    from taxonc.compiler.cli import app

    from .test_spec_errors import VALID

    spec = tmp_path / "named.toml"
    spec.write_text(VALID.replace('name = "toy"', text))
    result = CliRunner().invoke(app, ["validate", str(spec)])
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output and "named.toml:2:" in result.output, result.output
    return result.output


@pytest.mark.parametrize("name", ["tiny\\n", "tiny\\r\\n", "\\ntiny"])
def test_a_name_with_a_newline_is_refused(tmp_path: Path, name: str) -> None:
    output = _validate(tmp_path, f'name = "{name}"')
    assert "model.name" in output and "slug" in output


def test_a_name_longer_than_the_maximum_is_refused(tmp_path: Path) -> None:
    output = _validate(tmp_path, f'name = "{"a" * 300}"')
    assert "model.name" in output and "at most 100 characters" in output


def test_a_name_of_the_maximum_length_is_accepted(tmp_path: Path) -> None:
    from taxonc.compiler.spec import load_spec

    from .test_spec_errors import VALID

    spec = tmp_path / "long.toml"
    spec.write_text(VALID.replace('name = "toy"', f'name = "{"a" * 100}"'))
    assert load_spec(spec).name == "a" * 100


def test_a_lineage_base_with_a_newline_stays_out_of_the_emitted_docstring(tmp_path: Path) -> None:
    from taxonc.compiler.compile import compile_spec

    from .test_spec_errors import VALID

    spec = tmp_path / "derived.toml"
    spec.write_text(VALID + '\n[lineage]\nbase = "toy\\n"\n')
    source = compile_spec(spec, scale="tiny").files["model.py"]
    assert "Derived from toy" not in source
    compile(source, "model.py", "exec")
