"""The CLI's sharp edges: usage errors exit 2 with a suggestion, `--set` keys that cannot be nested are refused,
`validate` and `show` speak JSON, and `run --threads` is bounds-checked and defaults to one thread for small models."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from taxonc.compiler.cli import app
from taxonc.compiler.running import SMALL_MODEL_PARAMS, choose_threads

from .conftest import SPECS
from .test_spec_errors import VALID

runner = CliRunner()
LLAMA = str(SPECS / "llama.toml")


def _line(args: list[str], code: int) -> str:
    """Run the CLI; it must exit with `code` and print exactly one line, with no traceback."""
    result = runner.invoke(app, args)
    assert result.exit_code == code, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    lines = [line for line in result.output.strip().splitlines() if line]
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    return lines[0]


def _run(*extra: str) -> list[str]:
    return ["run", LLAMA, "--scale", "tiny", "--prompt", "x", "--max-new-tokens", "1", *extra]


# ----------------------------------------------------------------------------- --sampler

@pytest.mark.parametrize(("given", "meant"), [("topk", "top-k"), ("Top_P", "top-p"), ("nucleus", "top-p"),
                                              ("beam-search", "beam"), ("tfs", "tail-free")])
def test_an_unknown_sampler_is_a_usage_error_with_a_suggestion(given: str, meant: str) -> None:
    line = _line(_run("--sampler", given), code=2)
    assert line.startswith(f"--sampler {given!r} is not a sampler") and line.endswith(f"did you mean {meant!r}?")
    assert "greedy, temperature, top-k, top-p, tail-free, beam" in line


def test_a_sampler_nothing_resembles_gets_the_list_only() -> None:
    line = _line(_run("--sampler", "zzzzzz"), code=2)
    assert "samplers are:" in line and "did you mean" not in line


# ----------------------------------------------------------------------------- --backend lists

@pytest.mark.parametrize("command", [["compile", "--help"], ["check", "--help"]])
def test_backend_help_lists_every_backend(command: list[str]) -> None:
    result = runner.invoke(app, command, env={"COLUMNS": "200"})
    assert result.exit_code == 0
    assert "torch, triton, mlir" in " ".join(result.output.split())


# ----------------------------------------------------------------------------- --set

@pytest.mark.parametrize(("sets", "says"), [
    (["dims.n_layers=2", "dims.n_layers.x=1"], "--set dims.n_layers.x: dims.n_layers is already set to a value, not a table"),
    (["dims.n_layers.x=1", "dims.n_layers=2"], "--set dims.n_layers: already set as a table"),
    (["dims..n_layers=2"], "--set key 'dims..n_layers' has an empty part"),
    ([".=2"], "has an empty part"),
    ([".".join(["a"] * 2000) + "=1"], "has 2000 parts; spec keys have at most 3"),
    (["a.b.c.d.e.f.g.h.i=1"], "has 9 parts"),
    (["model.notes=" + "[" * 5000 + "]" * 5000], "--set model.notes: the value is nested too deeply"),
])
def test_set_keys_that_cannot_be_nested_are_usage_errors(tmp_path: Path, sets: list[str], says: str) -> None:
    args = ["compile", LLAMA, "--scale", "tiny", "-q", "-o", str(tmp_path / "out")]
    for item in sets:
        args += ["--set", item]
    assert says in _line(args, code=2)
    assert not (tmp_path / "out").exists()


def test_a_deep_but_bounded_set_key_is_an_unknown_key(tmp_path: Path) -> None:
    line = _line(["compile", LLAMA, "--scale", "tiny", "-q", "-o", str(tmp_path / "out"), "--set", "dims.a.b.c=1"], code=1)
    assert line.startswith("--set: dims.a: unknown key")


# ----------------------------------------------------------------------------- --json

def test_validate_json_reports_problems_with_file_key_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(VALID.replace('"gelu"', '"SwiGLU"').replace("n_heads = 4", "n_heads = 5"))
    result = runner.invoke(app, ["validate", "--json", str(bad), str(SPECS / "llama.toml")])
    assert result.exit_code == 1
    reports = json.loads(result.stdout)
    assert [r["ok"] for r in reports] == [False, True] and reports[1]["name"] == "llama"
    problems = {p["key"]: p for p in reports[0]["problems"]}
    assert problems["mlp.activation"]["line"] == 22 and problems["mlp.activation"]["hint"] == "did you mean 'swiglu'?"
    assert problems["dims.n_heads"]["file"].endswith("bad.toml") and "4" in problems["dims.n_heads"]["allowed"]


def test_validate_json_of_one_valid_spec_is_one_object() -> None:
    result = runner.invoke(app, ["validate", "--json", str(SPECS / "recipes" / "gpt.toml")])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"file": str(SPECS / "recipes" / "gpt.toml"), "ok": True, "name": None,
                                         "recipe": True, "problems": []}


def test_show_json_gives_every_value_with_its_origin() -> None:
    result = runner.invoke(app, ["show", "--json", str(SPECS / "gpt3-125m.toml")])
    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)
    assert shown["name"] == "gpt3-125m" and len(shown["sha256"]) == 64
    assert shown["chain"][-1].endswith("gpt3-125m.toml") and shown["chain"][0].endswith("recipes/gpt.toml")
    values = shown["values"]
    assert values["dims.n_layers"] == {"value": 12, "origin": "written", "file": shown["chain"][-1], "assumed": False}
    assert values["model.paper"]["origin"] == "inherited" and values["model.paper"]["file"].endswith("specs/gpt3.toml")
    assert values["norm.eps"]["origin"] in ("inherited", "default")


def test_show_json_of_a_recipe_names_no_model() -> None:
    shown = json.loads(runner.invoke(app, ["show", "--json", str(SPECS / "recipes" / "gpt.toml")]).stdout)
    assert shown["recipe"] is True and shown["name"] is None


def test_show_json_marks_assumed_values_of_undisclosed_models() -> None:
    shown = json.loads(runner.invoke(app, ["show", "--json", str(SPECS / "gpt4.toml")]).stdout)
    assert shown["values"]["dims.n_layers"]["assumed"] is True and shown["values"]["model.name"]["assumed"] is False


def test_show_json_of_a_bad_spec_is_the_one_line_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[model\n")
    assert "malformed TOML" in _line(["show", "--json", str(bad)], code=1)


# ----------------------------------------------------------------------------- --threads

def test_small_models_decode_on_one_thread_by_default() -> None:
    assert choose_threads(SMALL_MODEL_PARAMS - 1, None) == 1
    assert choose_threads(SMALL_MODEL_PARAMS, None) is None  # torch's default
    assert choose_threads(10, 3) == 3 and choose_threads(10**12, 1) == 1


@pytest.mark.parametrize("threads", ["0", "-1", "1025"])
def test_threads_out_of_range_is_a_usage_error(threads: str) -> None:
    line = _line(_run("--threads", threads), code=2)
    assert line == f"--threads must be a whole number from 1 to 1024, got {int(threads)}"


def test_threads_not_a_number_is_a_usage_error() -> None:
    result = runner.invoke(app, _run("--threads", "two"))
    assert result.exit_code == 2 and "--threads" in result.output


@pytest.mark.parametrize(("given", "used"), [(None, 1), ("2", 2)])
def test_run_reports_the_threads_it_used(given: str | None, used: int) -> None:
    import torch

    before = torch.get_num_threads()
    try:
        result = runner.invoke(app, _run("--json", *(["--threads", given] if given else [])))
        assert result.exit_code == 0, result.output
        report = json.loads(result.stdout)
        assert report["threads"] == used and 0 < report["params"] < SMALL_MODEL_PARAMS
    finally:
        torch.set_num_threads(before)


# ----------------------------------------------------------------------------- leftovers and defaults

def test_check_leaves_no_temporary_directory(tmp_path: Path) -> None:
    """In its own process, as a user runs it: what the process removes at exit counts as removed."""
    import os
    import subprocess
    import sys

    from .conftest import ROOT

    scratch = tmp_path / "tmp"
    scratch.mkdir()
    done = subprocess.run([sys.executable, "-m", "taxonc.compiler.cli", "check", LLAMA, "--only", "save_load,toml_round_trip",
                           "--examples", "1"], capture_output=True, text=True, timeout=300, cwd=ROOT,
                          env={**os.environ, "TMPDIR": str(scratch)})
    assert done.returncode == 0, done.stdout + done.stderr
    assert list(scratch.iterdir()) == []


def test_saved_weights_get_the_usual_permissions_not_0600(tmp_path: Path) -> None:
    """The umask decides, as for any file a command writes; mkstemp's 0600 does not leak through."""
    import os
    import stat

    out = tmp_path / "art"
    result = runner.invoke(app, ["compile", LLAMA, "--scale", "tiny", "-q", "-o", str(out), "--init-weights"])
    assert result.exit_code == 0, result.output
    umask = os.umask(0)
    os.umask(umask)
    for name in ("weights.safetensors", "model.py"):
        assert stat.S_IMODE((out / name).stat().st_mode) == 0o666 & ~umask, name


def test_run_of_a_triton_artifact_on_a_cpu_without_the_interpreter_says_what_to_set(tmp_path: Path,
                                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU runs Triton kernels natively")
    out = tmp_path / "triton"
    result = runner.invoke(app, ["compile", LLAMA, "--scale", "tiny", "-q", "-o", str(out), "--backend", "triton"])
    assert result.exit_code == 0, result.output
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    line = _line(["run", str(out), "--prompt", "x", "--max-new-tokens", "1"], code=1)
    assert "TRITON_INTERPRET=1" in line
