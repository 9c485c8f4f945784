"""Hostile weights and tokenizer files: each is a one-line error with exit code 1, never a silent load.

Weights are bound to their spec (the lock's sha256 in the safetensors metadata) and to the model's
parameter names, shapes and dtypes; a path that is not a regular file is refused, not replaced by
random weights or the shipped tokenizer.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import struct
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from taxonc.compiler.cli import app
from taxonc.runtime.weights import NAME_KEY, SPEC_KEY

from .conftest import SPECS

runner = CliRunner()
LLAMA = SPECS / "llama.toml"


def _compile(out: Path, *extra: str) -> Path:
    result = runner.invoke(app, ["compile", str(LLAMA), "--scale", "tiny", "-o", str(out), "-q", *extra])
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hostile-weights")
    # the same shapes under a different spec: only the spec hash tells them apart
    return {"llama": _compile(root / "llama", "--init-weights"),
            "variant": _compile(root / "variant", "--init-weights", "--set", "position.base=500000")}


@pytest.fixture
def artifact(built: dict[str, Path], tmp_path: Path) -> Path:
    return Path(shutil.copytree(built["llama"], tmp_path / "llama-tiny"))


def _error(args: list[str], timeout: int = 120) -> str:
    """Run the CLI in-process under an alarm (a hang fails instead of blocking) and return its one line."""
    def hang(signum, frame):
        raise TimeoutError(f"taxonc {' '.join(args)} did not finish in {timeout} s")

    previous = signal.signal(signal.SIGALRM, hang)
    signal.alarm(timeout)
    try:
        result = runner.invoke(app, args)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    assert not isinstance(result.exception, TimeoutError), result.exception
    assert result.exit_code == 1, result.output
    lines = [line for line in result.output.strip().splitlines() if line]
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    return lines[0]


def _run(directory: Path, *extra: str) -> str:
    return _error(["run", str(directory), "--prompt", "x", "--max-new-tokens", "1", *extra])


def test_the_saved_file_carries_the_lock_hash(artifact: Path) -> None:
    from safetensors import safe_open

    lock = json.loads((artifact / "spec.lock.json").read_text())
    with safe_open(str(artifact / "weights.safetensors"), framework="pt") as handle:
        meta = handle.metadata()
    assert meta[SPEC_KEY] == lock["spec_sha256"] and meta[NAME_KEY] == "llama"
    ok = runner.invoke(app, ["run", str(artifact), "--prompt", "x", "--max-new-tokens", "1", "--json"])
    assert ok.exit_code == 0, ok.output


def test_weights_copied_from_another_compile_are_refused(artifact: Path, built: dict[str, Path]) -> None:
    shutil.copy(built["variant"] / "weights.safetensors", artifact / "weights.safetensors")
    line = _run(artifact)
    assert "weights.safetensors" in line and "llama" in line
    assert _digest(built["variant"])[:12] in line and _digest(artifact)[:12] in line


def test_a_recompiled_changed_spec_does_not_inherit_the_old_weights(artifact: Path) -> None:
    before = {p.name: p.read_bytes() for p in artifact.iterdir()}
    # without --init-weights the old weights would not fit the new spec: refused, the old artifact kept
    line = _error(["compile", str(LLAMA), "--scale", "tiny", "-o", str(artifact), "-q", "--set", "position.base=500000"])
    assert "weights.safetensors" in line and _digest(artifact)[:12] in line and "--init-weights" in line
    assert {p.name: p.read_bytes() for p in artifact.iterdir()} == before
    _compile(artifact, "--init-weights", "--set", "position.base=500000")
    assert runner.invoke(app, ["run", str(artifact), "--prompt", "x", "--max-new-tokens", "1"]).exit_code == 0


def test_weights_option_from_another_spec_is_refused(artifact: Path, built: dict[str, Path]) -> None:
    line = _run(artifact, "--weights", str(built["variant"] / "weights.safetensors"))
    assert "variant" in line and _digest(built["variant"])[:12] in line and _digest(artifact)[:12] in line


def _digest(directory: Path) -> str:
    return json.loads((directory / "spec.lock.json").read_text())["spec_sha256"]


def _resave(artifact: Path, change) -> Path:
    path = artifact / "weights.safetensors"
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        meta = handle.metadata()
    state = load_file(str(path))
    change(state)
    save_file(state, str(path), metadata=meta)
    _reseal(artifact)
    return path


def _reseal(artifact: Path) -> None:
    """Rewrite manifest.json for the files as they now are: the weights checks must hold on their own."""
    from taxonc.runtime.manifest import MANIFEST, seal

    (artifact / MANIFEST).unlink()
    seal(artifact)


@pytest.mark.parametrize("dtype", [torch.int32, torch.bool, torch.float16, torch.float64])
def test_a_tensor_of_another_dtype_is_refused_not_cast(artifact: Path, dtype: torch.dtype) -> None:
    name = "head.ln_f.weight"

    def change(state):
        state[name] = state[name].to(dtype)

    _resave(artifact, change)
    line = _run(artifact)
    assert name in line and "float32" in line and str(dtype).removeprefix("torch.") in line


def test_a_header_rewritten_from_f32_to_i32_is_refused(artifact: Path) -> None:
    path = artifact / "weights.safetensors"
    data = path.read_bytes()
    (size,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + size])
    name = "head.ln_f.weight"
    assert header[name]["dtype"] == "F32"
    header[name]["dtype"] = "I32"  # same byte size, so the file stays well formed
    text = json.dumps(header, separators=(",", ":")).encode()
    assert len(text) <= size
    text = text.ljust(size)  # safetensors pads its header with spaces
    path.write_bytes(data[:8] + text + data[8 + size:])
    _reseal(artifact)
    line = _run(artifact)
    assert name in line and "int32" in line


def test_weights_without_a_spec_hash_are_refused(artifact: Path) -> None:
    path = artifact / "weights.safetensors"
    save_file(load_file(str(path)), str(path))
    _reseal(artifact)
    line = _run(artifact)
    assert "weights.safetensors" in line and "spec" in line


@pytest.mark.parametrize("kind", ["directory", "dangling symlink", "/dev/zero"])
def test_a_weights_path_that_is_not_a_regular_file_is_an_error(artifact: Path, tmp_path: Path, kind: str) -> None:
    target = tmp_path / "w"
    if kind == "directory":
        target.mkdir()
    elif kind == "dangling symlink":
        target.symlink_to(tmp_path / "nowhere.safetensors")
    else:
        target = Path("/dev/zero")
    line = _run(artifact, "--weights", str(target))
    assert str(target) in line


def _not_a_regular_file(path: Path, kind: str) -> None:
    if kind == "directory":
        path.mkdir()
    elif kind == "dangling symlink":
        path.symlink_to(path.parent / f"nowhere{path.suffix}")
    else:
        path.symlink_to("/dev/zero")


@pytest.mark.parametrize("kind", ["directory", "dangling symlink", "symlink to /dev/zero"])
@pytest.mark.parametrize("name", ["weights.safetensors", "tokenizer.model"])
def test_an_artifact_file_that_is_not_a_regular_file_is_an_error(artifact: Path, name: str, kind: str) -> None:
    path = artifact / name
    path.unlink(missing_ok=True)
    _not_a_regular_file(path, kind)
    line = _run(artifact)
    assert name in line


@pytest.mark.parametrize("kind", ["directory", "/dev/zero", "fifo"])
def test_a_tokenizer_option_that_is_not_a_regular_file_is_an_error(artifact: Path, tmp_path: Path, kind: str) -> None:
    target = tmp_path / "t.model"
    if kind == "directory":
        target.mkdir()
    elif kind == "fifo":
        os.mkfifo(target)
    else:
        target = Path("/dev/zero")
    line = _run(artifact, "--tokenizer", str(target))
    assert str(target) in line


def test_init_weights_replaces_another_specs_weights(artifact: Path, built: dict[str, Path]) -> None:
    shutil.copy(built["variant"] / "weights.safetensors", artifact / "weights.safetensors")
    _compile(artifact, "--init-weights")
    ok = runner.invoke(app, ["run", str(artifact), "--prompt", "x", "--max-new-tokens", "1", "--json"])
    assert ok.exit_code == 0, ok.output


# ----------------------------------------------------------------------------- generation options

def _usage(args: list[str]) -> str:
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.strip().splitlines() if line]
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    return lines[0]


@pytest.mark.parametrize(("option", "allowed"), [
    (["--max-new-tokens", "-1"], ">= 0"),
    (["--sampler", "beam", "--num-beams", "1000000"], "at most 64"),
    (["--sampler", "beam", "--num-beams", "4", "--length-penalty", "2000"], "-10 and 10"),
    (["--sampler", "beam", "--num-beams", "4", "--length-penalty", "-2000"], "-10 and 10"),
    (["--sampler", "top-p", "--top-p", "2"], "(0, 1]"),
])
def test_a_generation_option_out_of_range_is_a_usage_error(artifact: Path, option: list[str], allowed: str) -> None:
    line = _usage(["run", str(artifact), "--prompt", "x", *option])
    assert option[-2] in line and allowed in line


@pytest.mark.parametrize("flag", ["--prompt", "--fim-suffix"])
def test_a_prompt_that_is_not_utf8_is_a_usage_error(artifact: Path, flag: str) -> None:
    # undecodable bytes in argv reach Python as surrogate escapes
    args = ["run", str(artifact), "--prompt", "x", "--max-new-tokens", "1", flag, "ab\udcff"]
    line = _usage(args)
    assert flag in line and "UTF-8" in line


def test_nan_weights_are_an_error_naming_the_step(artifact: Path) -> None:
    def change(state):
        state["head.ln_f.weight"][0] = float("nan")

    _resave(artifact, change)
    line = _run(artifact)
    assert "NaN" in line and "step 1" in line


class _Cache:
    def reorder(self, index: torch.Tensor) -> None:
        pass


def _broken_model(bad: float, at_step: int, vocab: int = 8):
    """A fake model whose next-token logits hold `bad` from decoding step `at_step` (1 = the prefill's) on."""
    calls = [0]

    def model(tokens: torch.Tensor, cache=None, prefix_len: int = 0, **kw) -> torch.Tensor:
        calls[0] += 1
        logits = torch.arange(vocab, dtype=torch.float32).repeat(tokens.shape[0], tokens.shape[1], 1)
        if calls[0] >= at_step:
            logits[..., 3] = bad
        return logits

    return model


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
@pytest.mark.parametrize("sampler", [dict(kind="greedy"), dict(kind="temperature", temperature=0.7),
                                     dict(kind="top-k", top_k=3), dict(kind="beam", num_beams=3)])
def test_non_finite_logits_are_an_error_naming_the_step(bad: float, sampler: dict) -> None:
    from taxonc.runtime.errors import RuntimeFailure
    from taxonc.runtime.generate import generate
    from taxonc.runtime.sampling import SamplerConfig

    spec = {"dims": {"context": 64, "vocab_size": 8}, "model": {"structure": "decoder"}}
    with pytest.raises(RuntimeFailure) as info:
        generate(_broken_model(bad, at_step=3), _Cache, spec, [1, 2], SamplerConfig(**sampler), 6)
    message = str(info.value)
    assert "\n" not in message and "step 3" in message
    assert ("NaN" if bad != bad else "inf") in message


def test_all_minus_inf_logits_are_an_error() -> None:
    from taxonc.runtime.errors import RuntimeFailure
    from taxonc.runtime.generate import generate
    from taxonc.runtime.sampling import SamplerConfig

    def model(tokens, cache=None, prefix_len=0, **kw):
        return torch.full((tokens.shape[0], tokens.shape[1], 8), -math.inf)

    spec = {"dims": {"context": 64, "vocab_size": 8}, "model": {"structure": "decoder"}}
    with pytest.raises(RuntimeFailure, match="step 1"):
        generate(model, _Cache, spec, [1], SamplerConfig("temperature"), 4)


def test_minus_inf_logits_for_some_tokens_are_fine() -> None:
    from taxonc.runtime.generate import generate
    from taxonc.runtime.sampling import SamplerConfig

    spec = {"dims": {"context": 64, "vocab_size": 8}, "model": {"structure": "decoder"}}
    out = generate(_broken_model(-math.inf, at_step=1), _Cache, spec, [1], SamplerConfig("temperature"), 4)
    assert len(out.new_ids) == 4 and 3 not in out.new_ids


def test_a_damaged_file_is_reported_without_its_control_characters(tmp_path: Path) -> None:
    """safetensors quotes the bad tensor's name in its error; an ESC in that name reached the terminal (found by the fuzzer)."""
    from taxonc.runtime.errors import WeightsError
    from taxonc.runtime.weights import load_weights

    name = "\x1b[2J\x1b]0;owned\x07w\nx"
    tensors = {"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},
               name: {"dtype": "F32", "shape": [1], "data_offsets": [8, 12]}}  # a gap: an invalid offset for `name`
    header = json.dumps(tensors).encode()
    header += b" " * (-len(header) % 8)
    path = tmp_path / "odd.safetensors"
    path.write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 12)
    with pytest.raises(WeightsError) as info:
        load_weights(torch.nn.Linear(1, 1), path)
    message = str(info.value)
    assert message.startswith(str(path)) and "not a readable safetensors file" in message
    assert message.isprintable(), repr(message)
