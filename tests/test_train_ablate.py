"""`taxonc ablate`: several specs, the same data, seed, tokenizer and tokens; one table, one plot."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from taxonc.compiler.cli import app

from .conftest import SPECS
from .train_helpers import SHIPPED_TOKENIZER, stdlib_corpus


def test_ablation_trains_each_spec_and_reports_params_and_losses(tmp_path: Path) -> None:
    corpus = stdlib_corpus(tmp_path / "corpus", max_files=6)
    specs = [SPECS / "llama.toml", SPECS / "gpt3.toml"]
    result = CliRunner().invoke(app, ["ablate", *map(str, specs), "--data", str(corpus), "--tokens", "512",
                                      "--batch-tokens", "256", "--micro-batch", "4", "--seq-len", "32",
                                      "--tokenizer", str(SHIPPED_TOKENIZER), "--no-progress", "-o", str(tmp_path / "out"),
                                      "--set", "training.lr=1e-3"])
    assert result.exit_code == 0, result.output
    rows = json.loads((tmp_path / "out" / "ablation.json").read_text())
    assert [r["name"] for r in rows] == ["llama", "gpt3"]
    assert all(r["tokens"] == 512 and r["params"] > 0 and r["val_loss"] > 0 for r in rows)
    assert rows[0]["params"] != rows[1]["params"]
    assert "| llama |" in result.output and "tokens matched" in result.output
    assert (tmp_path / "out" / "ablation.png").read_bytes()[:4] == b"\x89PNG"


def test_one_spec_is_a_usage_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["ablate", str(SPECS / "llama.toml"), "--data", str(tmp_path), "--tokens", "1",
                                      "--batch-tokens", "1", "-o", str(tmp_path / "o")])
    assert result.exit_code == 2 and "at least two specs" in result.output
