"""`taxonc run` and artifacts: generation for every spec, weights checks, one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from taxonc.compiler.cli import app
from taxonc.compiler.compile import compile_spec, write_artifact
from taxonc.runtime.artifact import load
from taxonc.runtime.errors import WeightsError
from taxonc.runtime.weights import save_weights

from .conftest import SPECS
from .spec_sets import MODEL_FILES, spec_params

runner = CliRunner()


def _run(*args: str) -> dict:
    result = runner.invoke(app, ["run", *args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.output.strip().splitlines()[-1])


@pytest.mark.parametrize("path", spec_params(MODEL_FILES))
def test_every_spec_generates_and_the_same_seed_gives_the_same_text(path: Path) -> None:
    args = [str(path), "--scale", "tiny", "--prompt", "hello", "--max-new-tokens", "8", "--seed", "0"]
    first, second = _run(*args), _run(*args)
    assert len(first["ids"]) == 8 and first["text"] == second["text"] and first["ids"] == second["ids"]


@pytest.mark.parametrize("sampler", [
    ["--sampler", "greedy"], ["--sampler", "temperature", "--temperature", "0.7"], ["--sampler", "top-k", "--top-k", "5"],
    ["--sampler", "top-p", "--top-p", "0.9"], ["--sampler", "tail-free", "--tfs", "0.95"],
    ["--sampler", "beam", "--num-beams", "3", "--length-penalty", "0.8"],
])
def test_each_sampler_runs(sampler: list[str]) -> None:
    out = _run(str(SPECS / "llama.toml"), "--scale", "tiny", "--prompt", "a spec", "--max-new-tokens", "6", *sampler)
    assert 0 < len(out["ids"]) <= 6


def test_streaming_prints_the_text() -> None:
    result = runner.invoke(app, ["run", str(SPECS / "gpt-j.toml"), "--scale", "tiny", "--prompt", "hi", "--max-new-tokens", "5"])
    assert result.exit_code == 0 and "tokens/s" in result.output


def test_fim_and_feedback_conditioning_prompts() -> None:
    out = _run(str(SPECS / "codex.toml"), "--scale", "tiny", "--prompt", "def f(", "--fim-suffix", "return x", "--max-new-tokens", "4")
    plain = _run(str(SPECS / "codex.toml"), "--scale", "tiny", "--prompt", "def f(", "--max-new-tokens", "4")
    from taxonc.runtime.fim import fim_sentinel_ids
    from taxonc.runtime.tokenizer import Tokenizer

    tok = Tokenizer.default()
    pre, mid, suf = fim_sentinel_ids(tok)
    # prefix-suffix-middle: the model is asked to write the middle after <MID>
    assert out["prompt_ids"] == [pre, *plain["prompt_ids"], suf, *tok.encode("return x"), mid]
    good = _run(str(SPECS / "gpt3.toml"), "--scale", "tiny", "--prompt", "hi", "--condition", "good", "--max-new-tokens", "2")
    assert good["prompt_ids"][1:] == _run(str(SPECS / "gpt3.toml"), "--scale", "tiny", "--prompt", "hi", "--max-new-tokens", "2")["prompt_ids"]


@pytest.fixture
def artifact_dir(tmp_path: Path) -> Path:
    out = tmp_path / "llama-tiny"
    result = runner.invoke(app, ["compile", str(SPECS / "llama.toml"), "--scale", "tiny", "-o", str(out), "--init-weights", "-q"])
    assert result.exit_code == 0, result.output
    return out


def test_saved_weights_load_back_to_the_same_logits(artifact_dir: Path) -> None:
    first, second = load(artifact_dir), load(artifact_dir, seed=123)  # weights file wins over the seed
    ids = torch.randint(0, 512, (1, 9))
    with torch.no_grad():
        assert torch.equal(first.model(ids), second.model(ids))
    assert first.weights == artifact_dir / "weights.safetensors"


def _one_line_error(args: list[str]) -> str:
    result = runner.invoke(app, args)
    assert result.exit_code == 1, result.output
    lines = [line for line in result.output.strip().splitlines() if line]
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    return lines[0]


def test_truncated_weights_file_is_a_one_line_error(artifact_dir: Path) -> None:
    weights = artifact_dir / "weights.safetensors"
    data = weights.read_bytes()
    broken = artifact_dir / "broken.safetensors"
    broken.write_bytes(data[: len(data) // 2])
    line = _one_line_error(["run", str(artifact_dir), "--weights", str(broken), "--prompt", "x"])
    assert "broken.safetensors" in line and "not a readable safetensors file" in line
    assert weights.read_bytes() == data  # nothing overwritten


def test_weights_of_another_spec_are_rejected(artifact_dir: Path, tmp_path: Path) -> None:
    other = tmp_path / "palm-tiny"
    assert runner.invoke(app, ["compile", str(SPECS / "palm.toml"), "--scale", "tiny", "-o", str(other), "--init-weights", "-q"]).exit_code == 0
    line = _one_line_error(["run", str(artifact_dir), "--weights", str(other / "weights.safetensors"), "--prompt", "x"])
    assert "do not match this model" in line and "palm" in line


def test_missing_tokenizer_is_a_one_line_error(artifact_dir: Path) -> None:
    line = _one_line_error(["run", str(artifact_dir), "--tokenizer", str(artifact_dir / "nope.model"), "--prompt", "x"])
    assert "nope.model" in line


def test_artifact_with_mismatched_lock_is_rejected(artifact_dir: Path, tmp_path: Path) -> None:
    from taxonc.runtime.manifest import MANIFEST, seal

    other = tmp_path / "variant"
    assert runner.invoke(app, ["compile", str(SPECS / "llama.toml"), "--scale", "tiny", "-o", str(other), "-q",
                               "--set", "position.base=500000"]).exit_code == 0
    (artifact_dir / "spec.lock.json").write_bytes((other / "spec.lock.json").read_bytes())
    line = _one_line_error(["run", str(artifact_dir), "--prompt", "x"])
    assert "spec.lock.json" in line and MANIFEST in line  # not the file the artifact was written with
    (artifact_dir / MANIFEST).unlink()
    seal(artifact_dir)  # a manifest rewritten to match: the lock and model.py still disagree
    line = _one_line_error(["run", str(artifact_dir), "--prompt", "x"])
    assert "different specs" in line


def test_a_crash_mid_save_leaves_the_previous_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    compiled = compile_spec(SPECS / "llama.toml", scale="tiny")
    write_artifact(compiled, tmp_path)
    artifact = load(tmp_path)
    path = tmp_path / "weights.safetensors"
    save_weights(artifact.model, path, compiled.digest, "llama")
    before = path.read_bytes()

    def crash(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr("taxonc.runtime.weights.save_file", crash)
    with pytest.raises(KeyboardInterrupt):
        save_weights(artifact.model, path, compiled.digest, "llama")
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".weights")] == []


def test_load_weights_reports_shape_mismatch(tmp_path: Path) -> None:
    compiled = compile_spec(SPECS / "llama.toml", scale="tiny", sets=["dims.n_layers=2"])
    write_artifact(compiled, tmp_path)
    artifact = load(tmp_path)
    path = tmp_path / "w.safetensors"
    from safetensors.torch import save_file

    state = {k: v.clone() for k, v in artifact.model.state_dict().items()}
    state["head.ln_f.weight"] = torch.ones(3)
    save_file(state, str(path))
    with pytest.raises(WeightsError, match="head.ln_f.weight has shape \\[3\\]"):
        load(tmp_path, weights=path)
