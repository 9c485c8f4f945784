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


# ----------------------------------------------------------------------------- deep nesting

def _one_line_validate(spec: Path, code: int = 1) -> str:
    """`taxonc validate` in a fresh process (a RecursionError or a hang cannot hide), its single error line."""
    done = subprocess.run([sys.executable, "-m", "taxonc.compiler.cli", "validate", str(spec)], capture_output=True,
                          text=True, timeout=LIMIT_S, cwd=ROOT)
    assert done.returncode == code, done.stdout + done.stderr
    assert "Traceback" not in done.stderr and "RecursionError" not in done.stderr, done.stderr[-2000:]
    problems = [line for line in done.stderr.splitlines() if line.startswith("  ")]
    assert len(problems) == 1, done.stderr
    return problems[0]


DEEP = 500


@pytest.mark.parametrize("value", [
    "[" * DEEP + "]" * DEEP,
    "{a = " * DEEP + "1" + "}" * DEEP,
    "[{a = " * (DEEP // 2) + "1" + "}]" * (DEEP // 2),
    "[" * 10 * DEEP + "]" * 10 * DEEP,
])
def test_deep_nesting_in_a_value_is_a_clean_error_with_the_line(tmp_path: Path, value: str) -> None:
    from .test_spec_errors import VALID

    spec = tmp_path / "deep.toml"
    spec.write_text(VALID + f"\n[notes]\nx = {value}\n")
    line = _one_line_validate(spec)
    lines = VALID.count("\n") + 3
    assert f"deep.toml:{lines}:" in line and "nested" in line and "at most 32" in line


@pytest.mark.parametrize("key", ["[" + ".".join(["a"] * DEEP) + "]\nx = 1", ".".join(["a"] * 5 * DEEP) + " = 1"])
def test_deep_nesting_in_keys_is_a_clean_error(tmp_path: Path, key: str) -> None:
    from .test_spec_errors import VALID

    spec = tmp_path / "deep.toml"
    spec.write_text(VALID + "\n" + key + "\n")
    line = _one_line_validate(spec)
    assert "deep.toml" in line and "nested" in line and "at most 32" in line


def test_nesting_within_the_maximum_is_parsed(tmp_path: Path) -> None:
    from taxonc.compiler.errors import SpecError
    from taxonc.compiler.spec import load_spec

    from .test_spec_errors import VALID

    spec = tmp_path / "ok.toml"
    spec.write_text(VALID + "\n[notes]\nx = " + "[" * 30 + "]" * 30 + "\n")
    with pytest.raises(SpecError) as info:
        load_spec(spec)
    assert all("nested" not in p.message for p in info.value.problems)


# ----------------------------------------------------------------------------- files that are not regular

@pytest.mark.parametrize("kind", ["fifo", "/dev/zero", "directory", "too large"])
def test_a_spec_path_that_is_not_a_small_regular_file_is_an_error(tmp_path: Path, kind: str) -> None:
    import os

    from .test_spec_errors import VALID

    spec = tmp_path / "odd.toml"
    if kind == "fifo":
        os.mkfifo(spec)
    elif kind == "/dev/zero":
        spec.symlink_to("/dev/zero")
    elif kind == "directory":
        spec.mkdir()  # found by a directory search, but not a file
    else:
        spec.write_text(VALID + "#" * (1 << 20) + "\n")
    line = _one_line_validate(tmp_path if kind == "directory" else spec)
    assert spec.name in line
    assert ("1 MiB" in line) if kind == "too large" else ("regular file" in line or "directory" in line)


def test_a_fifo_in_a_searched_folder_is_an_error_not_a_hang(tmp_path: Path) -> None:
    import os

    from .test_spec_errors import VALID

    (tmp_path / "good.toml").write_text(VALID)
    os.mkfifo(tmp_path / "pipe.toml")
    for command in (["validate"], ["params"]):
        done = subprocess.run([sys.executable, "-m", "taxonc.compiler.cli", *command, str(tmp_path)], capture_output=True,
                              text=True, timeout=LIMIT_S, cwd=ROOT)
        assert done.returncode == 1, done.stdout + done.stderr
        assert "pipe.toml" in done.stderr and "Traceback" not in done.stderr, done.stderr


# ----------------------------------------------------------------------------- sizes

@pytest.mark.parametrize(("key", "value", "maximum"), [
    ("dims.n_layers", 1_000_000_000, 1024),
    ("dims.d_model", 1 << 20, 131072),
    ("dims.vocab_size", 1 << 30, 1 << 22),
    ("dims.context", 1 << 30, 1 << 22),
    ("dims.d_ff", 1 << 30, 1 << 20),
    ("dims.n_heads", 1 << 20, 4096),
])
def test_a_size_above_its_maximum_is_refused_at_validation(tmp_path: Path, key: str, value: int, maximum: int) -> None:
    from .test_spec_errors import VALID

    section, name = key.split(".")
    text = VALID.replace(f"[{section}]\n", f"[{section}]\n{name} = {value}\n", 1)
    if f"\n{name} = " in VALID:
        text = "\n".join(line for line in VALID.splitlines() if not line.startswith(f"{name} = "))
        text = text.replace(f"[{section}]\n", f"[{section}]\n{name} = {value}\n", 1) + "\n"
    spec = tmp_path / "huge.toml"
    spec.write_text(text)
    line = _one_line_validate(spec)
    assert "huge.toml:" in line and key in line and f"at most {maximum}" in line


def test_a_huge_ff_ratio_is_refused(tmp_path: Path) -> None:
    from .test_spec_errors import VALID

    spec = tmp_path / "huge.toml"
    spec.write_text(VALID.replace("d_model = 64", "d_model = 64\nff_ratio = 1e12"))
    line = _one_line_validate(spec)
    assert "dims.ff_ratio" in line and "less than or equal to 64" in line


def test_a_huge_moe_is_refused(tmp_path: Path) -> None:
    from .test_spec_errors import VALID

    spec = tmp_path / "huge.toml"
    spec.write_text(VALID + "\n[moe]\nn_experts = 100000\ntop_k = 2\n")
    line = _one_line_validate(spec)
    assert "moe.n_experts" in line and "at most 4096" in line


@pytest.mark.parametrize("command", [["params"], ["compile", "--scale", "tiny", "-q"], ["compile", "--scale", "tiny", "-q", "--set", "dims.n_layers=2"]])
def test_params_and_compile_of_a_billion_layers_fail_fast(tmp_path: Path, command: list[str]) -> None:
    from .test_spec_errors import VALID

    spec = tmp_path / "huge.toml"
    spec.write_text(VALID.replace("n_layers = 4", "n_layers = 1000000000"))
    extra = ["-o", str(tmp_path / "out")] if command[0] == "compile" else []
    done = subprocess.run([sys.executable, "-m", "taxonc.compiler.cli", command[0], str(spec), *command[1:], *extra],
                          capture_output=True, text=True, timeout=LIMIT_S, cwd=ROOT)
    if "--set" in command:  # the override brings it back in range
        assert done.returncode == 0, done.stderr
        return
    assert done.returncode == 1, done.stdout + done.stderr
    assert "dims.n_layers" in done.stderr and "at most 1024" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------- extends targets (found by tests/test_hostile_fuzz.py)

@pytest.mark.parametrize("target", ["/", "", ".", "..", "recipes/..", "a" * 300, "a/" * 300 + "b"])
def test_an_extends_target_that_names_no_file_is_a_clean_error(tmp_path: Path, target: str) -> None:
    """"/" once raised ValueError and a 300-character name OSError (ENAMETOOLONG); "" and "." looked
    for a sibling of the spec's folder ("../specs.toml")."""
    from .test_spec_errors import VALID

    (tmp_path / "specs.toml").write_text(VALID)  # what "" and "." used to find
    folder = tmp_path / "specs"
    folder.mkdir()
    spec = folder / "child.toml"
    spec.write_text(f'extends = "{target}"\n' + VALID)
    line = _one_line_validate(spec)
    assert "child.toml:1:1: extends:" in line and "no spec" in line


@pytest.mark.parametrize("kind", ["symlink loop", "fifo", "directory", "/dev/zero"])
def test_an_extends_target_that_is_not_a_regular_file_says_what_it_is(tmp_path: Path, kind: str) -> None:
    """A symlink loop raised RuntimeError from Path.resolve(); the others were "no spec ... did you mean" the same name."""
    import os

    from .test_spec_errors import VALID

    base = tmp_path / "base.toml"
    if kind == "symlink loop":
        base.symlink_to("base.toml")
    elif kind == "fifo":
        os.mkfifo(base)
    elif kind == "directory":
        base.mkdir()
    else:
        base.symlink_to("/dev/zero")
    spec = tmp_path / "child.toml"
    spec.write_text('extends = "base"\n' + VALID)
    line = _one_line_validate(spec)
    assert "base.toml" in line and "did you mean" not in line
    assert {"symlink loop": "symlink loop", "fifo": "regular file", "directory": "directory", "/dev/zero": "regular file"}[kind] in line


def test_a_spec_path_that_is_a_symlink_loop_is_a_clean_error(tmp_path: Path) -> None:
    spec = tmp_path / "loop.toml"
    spec.symlink_to("loop.toml")
    line = _one_line_validate(spec)
    assert "loop.toml" in line and "symlink loop" in line


@pytest.mark.parametrize(("line", "shown"), [
    ('extends = "x\\u0000y"', "x\\x00y"),  # the looked-for path held a raw NUL
    ('"a\\nb" = 1', "a\\nb"),  # an unknown key with a newline split the error in two
    ('"\\u001b[31mred" = 1', "\\x1b[31mred"),  # a terminal escape sequence reached the terminal
    ('"a\\u2028b" = 1', "a\\u2028b"),  # a line separator
])
def test_control_characters_from_a_spec_are_printed_escaped(tmp_path: Path, line: str, shown: str) -> None:
    from .test_spec_errors import VALID

    spec = tmp_path / "odd.toml"
    spec.write_text(line + "\n" + VALID)
    done = subprocess.run([sys.executable, "-m", "taxonc.compiler.cli", "validate", str(spec)], capture_output=True,
                          text=True, timeout=LIMIT_S, cwd=ROOT)
    assert done.returncode == 1, done.stdout + done.stderr
    problems = [p for p in done.stderr.split("\n") if p.startswith("  ")]
    assert len(problems) == 1 and shown in problems[0], done.stderr
    assert all(c.isprintable() for c in problems[0]), repr(problems[0])


@pytest.mark.parametrize("key", ["a." * 200_000 + "a = 1", "[" + "a." * 200_000 + "a]", "x = {" + "a." * 200_000 + "a = 1}"])
def test_a_long_dotted_key_is_refused_before_parsing(tmp_path: Path, key: str) -> None:
    """tomllib takes time quadratic in a dotted key's parts (5,000 parts: 1 s; this 400 KB key: half
    an hour), so depth is counted by a linear scan first (found by the fuzzer)."""
    from .test_spec_errors import VALID

    spec = tmp_path / "dotted.toml"
    spec.write_text(VALID + "\n" + key + "\n")
    line = _one_line_validate(spec)
    assert f"dotted.toml:{VALID.count(chr(10)) + 2}:" in line and "nested" in line and "at most 32" in line
