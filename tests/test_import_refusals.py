"""Bad checkpoints for `taxonc import`: each is one line naming the file and the cause, exit 1, nothing written.

Also `taxonc export` of what no transformers class expresses, and `taxonc run --weights DIR`.
"""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers")

from typer.testing import CliRunner  # noqa: E402

from taxonc.compiler.cli import app  # noqa: E402

from .conftest import SPECS  # noqa: E402
from .hf_checkpoints import random_hf, save  # noqa: E402

runner = CliRunner()


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("refusals")
    hf = random_hf("llama")
    return {"single": save(hf, root / "single"), "sharded": save(hf, root / "sharded", shard=True)}


@pytest.fixture
def checkpoint(saved, tmp_path) -> Path:
    return Path(shutil.copytree(saved["single"], tmp_path / "ckpt"))


@pytest.fixture
def sharded(saved, tmp_path) -> Path:
    return Path(shutil.copytree(saved["sharded"], tmp_path / "ckpt"))


def _refused(src: Path, tmp_path: Path) -> str:
    out = tmp_path / "out"
    result = runner.invoke(app, ["import", str(src), "-o", str(out)])
    assert result.exit_code == 1, result.output
    assert not out.exists(), "a refused import must write nothing"
    assert [p for p in tmp_path.iterdir() if p.name.startswith(".out.")] == [], "no staging folder left behind"
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    return lines[0]


def _edit_config(src: Path, **changes) -> None:
    config = json.loads((src / "config.json").read_text())
    config.update(changes)
    (src / "config.json").write_text(json.dumps(config))


def test_unsupported_keys_are_named_together(checkpoint, tmp_path):
    _edit_config(checkpoint, sliding_window_pattern=4, rope_scaling={"type": "dynamic", "factor": 2.0},
                 attention_bias=True)
    line = _refused(checkpoint, tmp_path)
    assert "config.json" in line and "3 key(s)" in line
    for key in ("sliding_window_pattern", "rope_scaling", "attention_bias"):
        assert key in line, line


def test_unknown_model_type(checkpoint, tmp_path):
    _edit_config(checkpoint, model_type="mamba")
    assert 'model_type "mamba" is not supported' in _refused(checkpoint, tmp_path)


def test_missing_shard(sharded, tmp_path):
    shard = sorted(sharded.glob("model-*.safetensors"))[-1]
    shard.unlink()
    line = _refused(sharded, tmp_path)
    assert "model.safetensors.index.json" in line and shard.name in line and "does not exist" in line


def test_shape_mismatch(checkpoint, tmp_path):
    _edit_config(checkpoint, intermediate_size=512)
    line = _refused(checkpoint, tmp_path)
    assert "shape mismatch" in line and "mlp.gate_proj" in line, line


def test_pickled_checkpoint_is_refused_never_unpickled(checkpoint, tmp_path):
    marker = tmp_path / "unpickled"

    class Trap:
        def __reduce__(self):
            return (Path.touch, (marker,))

    (checkpoint / "model.safetensors").unlink()
    (checkpoint / "pytorch_model.bin").write_bytes(pickle.dumps(Trap()))
    line = _refused(checkpoint, tmp_path)
    assert "pytorch_model.bin" in line and "never unpickles" in line and "safe_serialization=True" in line
    assert not marker.exists()


def test_tokenizer_larger_than_embedding(checkpoint, tmp_path):
    vocab = {f"t{i}": i for i in range(200)}  # the model embeds 128 tokens
    (checkpoint / "tokenizer.json").write_text(json.dumps({"model": {"type": "BPE", "vocab": vocab, "merges": []},
                                                           "added_tokens": []}))
    line = _refused(checkpoint, tmp_path)
    assert "tokenizer.json" in line and "200 token ids" in line and "vocab_size is 128" in line


def test_missing_config(checkpoint, tmp_path):
    (checkpoint / "config.json").unlink()
    assert "no config.json" in _refused(checkpoint, tmp_path)


def test_not_a_directory(checkpoint, tmp_path):
    assert "not a directory" in _refused(checkpoint / "model.safetensors", tmp_path)


def test_tensor_the_config_does_not_explain(checkpoint, tmp_path):
    from safetensors.torch import load_file, save_file

    tensors = load_file(checkpoint / "model.safetensors")
    tensors["model.layers.0.self_attn.extra_gate.weight"] = torch.zeros(4)
    save_file(tensors, checkpoint / "model.safetensors", metadata={"format": "pt"})
    assert "extra_gate" in _refused(checkpoint, tmp_path)


def test_export_refuses_a_spec_no_transformers_class_expresses(tmp_path):
    art = tmp_path / "gpt3"
    result = runner.invoke(app, ["compile", str(SPECS / "gpt3.toml"), "--scale", "tiny", "-o", str(art), "-q",
                                 "--init-weights"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["export", str(art), "--format", "hf", "-o", str(tmp_path / "hf")])
    assert result.exit_code == 1, result.output
    assert "no transformers class expresses this spec" in result.output and len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "hf").exists()


def test_export_unknown_format_is_a_usage_error(checkpoint, tmp_path):
    result = runner.invoke(app, ["export", str(checkpoint), "--format", "gguf", "-o", str(tmp_path / "x")])
    assert result.exit_code == 2 and "formats are: hf" in result.output


def test_config_the_spec_rules_refuse(checkpoint, tmp_path):
    _edit_config(checkpoint, num_key_value_heads=3)  # 4 query heads cannot share 3 key/value heads
    line = _refused(checkpoint, tmp_path)
    assert "config.json" in line and "spec language refuses" in line and "n_kv_heads" in line, line


def test_config_that_is_a_fifo_is_refused_without_blocking(checkpoint, tmp_path):
    import os

    (checkpoint / "config.json").unlink()
    os.mkfifo(checkpoint / "config.json")
    assert "not a regular file" in _refused(checkpoint, tmp_path)
