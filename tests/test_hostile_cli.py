"""The CLI on hostile input: spec text is printed as text (never as rich markup), and a path with
no spec in it is an error, not a pass."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from taxonc.compiler.cli import app

from .test_spec_errors import VALID

runner = CliRunner()
MARKUP = "[/] [bold]x[/bold] [red"


def _ok(args: list[str], code: int = 0) -> str:
    result = runner.invoke(app, args)
    assert result.exit_code == code, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    return result.output


@pytest.fixture
def marked(tmp_path: Path) -> Path:
    """A valid spec whose free text and file name look like rich markup."""
    folder = tmp_path / "[red]specs"
    folder.mkdir()
    spec = folder / "[b]toy.toml"
    text = VALID.replace('name = "toy"', f'name = "toy"\ntitle = "{MARKUP}"\norganization = "[/]"\nnotes = "[/]"')
    spec.write_text(text)
    return spec


def test_show_prints_markup_as_text(marked: Path) -> None:
    output = _ok(["show", str(marked)])
    assert MARKUP in output and "[b]toy.toml" in output


def test_matrix_prints_markup_as_text(marked: Path) -> None:
    output = _ok(["matrix", str(marked)])
    assert "[/]" in output and "[b]t" in output  # narrow columns cut the rest


def test_diff_prints_markup_as_text(marked: Path, tmp_path: Path) -> None:
    other = tmp_path / "other.toml"
    other.write_text(marked.read_text().replace('organization = "[/]"', 'organization = "[/i] b"')
                     .replace("n_layers = 4", "n_layers = 6"))
    output = _ok(["diff", str(marked), str(other)], code=1)  # 1: the specs differ
    assert "[b]toy.toml" in output and "'[/i] b'" in output


def test_validate_and_params_print_markup_paths_as_text(marked: Path) -> None:
    assert "[b]toy.toml" in _ok(["validate", str(marked)])
    assert "toy" in _ok(["params", str(marked)])


# ----------------------------------------------------------------------------- paths with no spec

def _one_line(args: list[str]) -> str:
    result = runner.invoke(app, args)
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    lines = [line for line in result.output.strip().splitlines() if line]
    assert len(lines) == 1, result.output
    return lines[0]


@pytest.mark.parametrize("command", [["validate"], ["params"], ["params", "--json"], ["check", "--only", "param_count"], ["matrix"], ["tree"]])
def test_an_empty_directory_is_an_error_not_a_pass(tmp_path: Path, command: list[str]) -> None:
    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)
    (empty / "notes.txt").write_text("no spec here\n")
    line = _one_line([*command, str(empty)])
    assert str(empty) in line and "no spec" in line


def test_an_empty_directory_beside_a_spec_is_still_an_error(tmp_path: Path, marked: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    line = _one_line(["validate", str(marked), str(empty)])
    assert str(empty) in line


@pytest.mark.parametrize("command", [["params"], ["params", "--json"], ["check", "--only", "param_count"]])
def test_a_path_holding_only_recipes_is_an_error(tmp_path: Path, command: list[str]) -> None:
    from .conftest import SPECS

    line = _one_line([*command, str(SPECS / "recipes")])
    assert "recipes" in line and "no model spec" in line


# ----------------------------------------------------------------------------- check options

@pytest.mark.parametrize("examples", ["0", "-3"])
def test_check_with_no_examples_is_a_usage_error(examples: str) -> None:
    from .conftest import SPECS

    result = runner.invoke(app, ["check", str(SPECS / "llama.toml"), "--examples", examples])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.strip().splitlines() if line]
    assert len(lines) == 1 and "--examples" in lines[0] and ">= 1" in lines[0], result.output


def test_a_triton_artifact_on_a_cpu_without_the_interpreter_says_what_to_set(tmp_path, monkeypatch) -> None:
    import torch

    from taxonc.compiler.compile import compile_spec, write_artifact
    from taxonc.runtime import load
    from taxonc.runtime.errors import ArtifactError

    from .conftest import SPECS

    if torch.cuda.is_available():
        pytest.skip("a GPU runs Triton kernels natively")
    write_artifact(compile_spec(SPECS / "llama.toml", backend="triton", scale="tiny"), tmp_path)
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(ArtifactError, match="TRITON_INTERPRET=1"):
        load(tmp_path)
