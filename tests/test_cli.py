"""The command line: exit codes, JSON output, and no tracebacks on bad input."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from taxonc.compiler.cli import app

from .conftest import SPECS

runner = CliRunner()


def test_validate_ok_exits_zero() -> None:
    result = runner.invoke(app, ["validate", str(SPECS / "gpt3.toml"), str(SPECS / "recipes" / "gpt.toml")])
    assert result.exit_code == 0, result.output
    assert "ok" in result.output and "recipe" in result.output


def test_validate_bad_spec_exits_one_without_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[model]\nname = "x"\n[dims]\nn_layers = "three"\n')
    result = runner.invoke(app, ["validate", str(bad)])
    assert result.exit_code == 1
    assert "dims.n_layers" in result.output and ":4:" in result.output
    assert "Traceback" not in result.output and result.exception is None or isinstance(result.exception, SystemExit)


def test_params_json_has_the_promised_keys() -> None:
    result = runner.invoke(app, ["params", str(SPECS / "gpt3.toml"), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    for key in ("name", "params", "params_published", "params_active", "params_embedding", "flops_per_token",
                "kv_cache_bytes_per_token"):
        assert key in report
    assert report["name"] == "gpt3" and abs(report["params_deviation"]) < 0.02


def test_params_of_invalid_spec_is_one_error_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[model\n")
    result = runner.invoke(app, ["params", str(bad)])
    assert result.exit_code == 1 and "malformed TOML" in result.output and "Traceback" not in result.output


def test_show_prints_origins_and_summary() -> None:
    result = runner.invoke(app, ["show", str(SPECS / "gpt3.toml")])
    assert result.exit_code == 0, result.output
    assert "inherited" in result.output and "recipes/gpt.toml" in result.output
    assert "written" in result.output and "default" in result.output
    assert "Decoder-only causal language model: 96 layers" in result.output


def test_schema_is_json(tmp_path: Path) -> None:
    out = tmp_path / "schema.json"
    result = runner.invoke(app, ["schema", "-o", str(out)])
    assert result.exit_code == 0
    assert json.loads(out.read_text())["title"] == "taxonc model spec"


def test_usage_error_exits_two() -> None:
    result = runner.invoke(app, ["params"])
    assert result.exit_code == 2
    result = runner.invoke(app, ["no-such-command"])
    assert result.exit_code == 2


def test_unknown_backend_is_one_usage_line_naming_the_registry(tmp_path: Path) -> None:
    result = runner.invoke(app, ["compile", str(SPECS / "llama.toml"), "--scale", "tiny", "--backend", "cuda",
                                 "-o", str(tmp_path / "x")])
    assert result.exit_code == 2 and not (tmp_path / "x").exists()
    assert result.output.strip() == "unknown backend 'cuda'; backends are: torch, triton, mlir"
    result = runner.invoke(app, ["check", str(SPECS / "llama.toml"), "--backends", "torch,trtion"])
    assert result.exit_code == 2
    assert result.output.strip() == "unknown backend 'trtion'; backends are: torch, triton, mlir"


def test_backend_help_lists_the_registry() -> None:
    from taxonc.compiler.backends.registry import BACKENDS

    for command in ("compile", "check"):
        result = runner.invoke(app, [command, "--help"])
        assert result.exit_code == 0
        text = " ".join(result.output.split())
        assert ", ".join(BACKENDS) in text, (command, text)


def test_docs_check_passes_on_the_checkout_and_names_stale_files(tmp_path: Path) -> None:
    from taxonc.compiler.docs import GENERATED, replace_section

    from .conftest import ROOT

    result = runner.invoke(app, ["docs", "--check"])
    assert result.exit_code == 0, result.output
    assert "current" in result.output
    (tmp_path / "docs").mkdir()
    (tmp_path / "specs").symlink_to(ROOT / "specs")
    for name, sections in GENERATED.items():
        text = (ROOT / name).read_text()
        for section in sections:
            text = replace_section(text, section, "out of date")
        (tmp_path / name).write_text(text)
    result = runner.invoke(app, ["docs", "--check", "--root", str(tmp_path)])
    assert result.exit_code == 1
    for name in GENERATED:
        assert name in result.output
    assert (tmp_path / "docs" / "models.md").read_text().count("out of date") == 1  # --check writes nothing
    result = runner.invoke(app, ["docs", "--check", "--root", str(tmp_path / "nowhere")])
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1
