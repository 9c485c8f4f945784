"""`taxonc run --weights DIR`: an imported artifact, or a Hugging Face directory imported on the fly
into $XDG_CACHE_HOME/taxonc/imports (keyed by content), decoding the tokens transformers decodes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers")

from typer.testing import CliRunner  # noqa: E402

from taxonc.compiler.cli import app  # noqa: E402
from taxonc.compiler.interop.hf_pairs import Dims  # noqa: E402
from taxonc.runtime.tokenizer import default_tokenizer_path  # noqa: E402

from .hf_checkpoints import random_hf, save  # noqa: E402

runner = CliRunner()
N_NEW = 32
# the shipped SentencePiece model has 512 pieces; the checkpoint embeds exactly that many
DIMS = Dims(vocab_size=512)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> tuple[torch.nn.Module, Path]:
    root = tmp_path_factory.mktemp("run-weights")
    hf = random_hf("llama", DIMS)
    src = save(hf, root / "hf-llama")
    shutil.copyfile(default_tokenizer_path(), src / "tokenizer.model")
    return hf, src


def _run(*args: str) -> dict:
    result = runner.invoke(app, ["run", *args, "--prompt", "The compiler", "--max-new-tokens", str(N_NEW), "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_run_hf_directory_decodes_what_transformers_generates(checkpoint, tmp_path, monkeypatch):
    hf, src = checkpoint
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    report = _run("--weights", str(src))
    with torch.inference_mode():
        theirs = hf.generate(torch.tensor([report["prompt_ids"]]), max_new_tokens=N_NEW, do_sample=False,
                             pad_token_id=0, eos_token_id=None)[0, len(report["prompt_ids"]):].tolist()
    ours = report["ids"]
    assert ours == theirs[:len(ours)] and (len(ours) == N_NEW or report["stopped"] == "eos"), (ours, theirs)
    cached = list((tmp_path / "cache" / "taxonc" / "imports").iterdir())
    assert len(cached) == 1 and (cached[0] / "spec.lock.json").is_file() and (cached[0] / "tokenizer.model").is_file()

    stamp = (cached[0] / "weights.safetensors").stat().st_mtime_ns
    assert _run("--weights", str(src))["ids"] == ours  # the second run reuses the cached import
    assert (cached[0] / "weights.safetensors").stat().st_mtime_ns == stamp


def test_run_imported_artifact(checkpoint, tmp_path, monkeypatch):
    _, src = checkpoint
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    art = tmp_path / "art"
    assert runner.invoke(app, ["import", str(src), "-o", str(art)]).exit_code == 0
    assert _run("--weights", str(art))["ids"] == _run(str(art))["ids"] == _run("--weights", str(src))["ids"]


def test_changed_checkpoint_is_a_new_cache_entry(checkpoint, tmp_path, monkeypatch):
    from taxonc.compiler.interop.hf_import import cache_root, content_key

    _, src = checkpoint
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert cache_root() == tmp_path / "cache" / "taxonc" / "imports"
    copy = Path(shutil.copytree(src, tmp_path / "copy"))
    assert content_key(copy) == content_key(src)
    config = json.loads((copy / "config.json").read_text())
    config["rms_norm_eps"] = 1e-6
    (copy / "config.json").write_text(json.dumps(config))
    assert content_key(copy) != content_key(src)


def test_weights_directory_and_a_target_is_a_usage_error(checkpoint, tmp_path):
    _, src = checkpoint
    result = runner.invoke(app, ["run", "specs/llama.toml", "--weights", str(src), "--prompt", "x"])
    assert result.exit_code == 2 and "is a directory" in result.output


def test_run_without_a_model_is_a_usage_error():
    result = runner.invoke(app, ["run", "--prompt", "x"])
    assert result.exit_code == 2 and "--weights DIR" in result.output


def test_run_hf_directory_with_its_tokenizer_json(tmp_path, monkeypatch):
    """A checkpoint with a real tokenizer.json: the prompt's ids are AutoTokenizer's, the greedy
    tokens transformers' generate."""
    from taxonc.testing.hf_tokenizers import build

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    hf = random_hf("llama", DIMS)
    src = save(hf, tmp_path / "hf-llama")
    build("llama3", src)  # a byte-level BPE tokenizer.json with tokenizer_config.json, 400 ids
    report = _run("--weights", str(src))
    expected = transformers.AutoTokenizer.from_pretrained(src)("The compiler").input_ids
    assert report["prompt_ids"] == expected
    with torch.inference_mode():
        theirs = hf.generate(torch.tensor([expected]), max_new_tokens=N_NEW, do_sample=False, pad_token_id=0,
                             eos_token_id=None)[0, len(expected):].tolist()
    assert report["ids"] == theirs[:len(report["ids"])] and report["ids"], (report["ids"], theirs)


def test_imported_checkpoint_without_a_tokenizer_needs_one(tmp_path, monkeypatch):
    """The shipped tokenizer would print other text for the checkpoint's ids: refused, not guessed."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    src = save(random_hf("llama", DIMS), tmp_path / "hf-llama")
    result = runner.invoke(app, ["run", "--weights", str(src), "--prompt", "x"])
    assert result.exit_code == 2 and "without tokenizer files" in result.output and "--tokenizer" in result.output
    result = runner.invoke(app, ["run", "--weights", str(src), "--prompt", "x", "--max-new-tokens", "2",
                                 "--tokenizer", str(default_tokenizer_path())])
    assert result.exit_code == 0, result.output
