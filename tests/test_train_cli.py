"""`taxonc train`: a tiny run end to end, its artifact, and its one-line errors."""

from __future__ import annotations

import errno
import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from taxonc.compiler.cli import app
from taxonc.runtime import load
from taxonc.runtime.train.metrics import read_metrics

from .conftest import SPECS
from .train_helpers import LLAMA, SHIPPED_TOKENIZER, stdlib_corpus, tiny_args

runner = CliRunner()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return stdlib_corpus(tmp_path_factory.mktemp("corpus"), max_files=12)


@pytest.fixture(scope="module")
def finished(tmp_path_factory, corpus) -> Path:
    out = tmp_path_factory.mktemp("run")
    result = runner.invoke(app, tiny_args(LLAMA, corpus, out, "--tokens", "1536", "--eval-every", "3"))
    assert result.exit_code == 0, result.output
    return out


def test_a_run_writes_metrics_plots_and_an_artifact_taxonc_run_loads(finished: Path) -> None:
    records = read_metrics(finished / "metrics.jsonl")
    steps = [r for r in records if "loss" in r]
    assert [r["step"] for r in steps] == list(range(1, 7))
    assert [r["tokens"] for r in steps] == [256 * i for i in range(1, 7)]
    assert all(r["batch_tokens"] == 256 for r in steps)
    assert [r["step"] for r in records if "val_loss" in r] == [3, 6]
    assert (finished / "training.png").read_bytes()[:4] == b"\x89PNG"
    artifact = load(finished / "model")
    assert artifact.weights is not None and (finished / "model" / "tokenizer.model").is_file()
    result = runner.invoke(app, ["run", str(finished / "model"), "--prompt", "def ", "--max-new-tokens", "4", "--json"])
    assert result.exit_code == 0, result.output
    assert len(json.loads(result.output.strip().splitlines()[-1])["ids"]) == 4


def test_the_exported_weights_are_the_trained_ones(finished: Path) -> None:
    """The artifact's weights differ from the initialisation: training moved them, export kept that."""
    from taxonc.runtime.train.init import materialize

    artifact = load(finished / "model")
    fresh = artifact.module.build(device="meta")
    materialize(fresh, artifact.module.build, seed=0)
    trained = artifact.model.state_dict()
    moved = [n for n, p in fresh.state_dict().items() if not torch.equal(p, trained[n])]
    assert len(moved) == len(trained)


def test_data_shorter_than_one_batch(tmp_path: Path) -> None:
    small = tmp_path / "small.txt"
    small.write_text("x = 1\n" * 30)
    result = runner.invoke(app, tiny_args(LLAMA, small, tmp_path / "run", "--tokens", "10000", "--batch-tokens", "4096"))
    assert result.exit_code == 1
    assert "shorter than one batch" in result.output and "--batch-tokens" in result.output
    assert "Traceback" not in result.output


def test_a_spec_without_a_recipe_names_the_fields(tmp_path: Path, corpus: Path) -> None:
    result = runner.invoke(app, tiny_args(SPECS / "gato.toml", corpus, tmp_path / "run"))
    assert result.exit_code == 1
    assert "training.lr" in result.output and "training.tokens (or --tokens)" in result.output
    assert "Traceback" not in result.output


def test_a_tokenizer_larger_than_the_embedding(tmp_path: Path, corpus: Path) -> None:
    result = runner.invoke(app, tiny_args(LLAMA, corpus, tmp_path / "run", "--tokens", "512", "--set", "dims.vocab_size=300",
                                           "--set", "tokenizer.vocab_size=300"))
    assert result.exit_code == 1
    assert "512 pieces" in result.output and "dims.vocab_size = 300" in result.output


def test_a_full_disk_is_one_line(tmp_path: Path, corpus: Path, monkeypatch) -> None:
    import torch.distributed.checkpoint as dcp

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(dcp, "save", full)
    result = runner.invoke(app, tiny_args(LLAMA, corpus, tmp_path / "run", "--tokens", "256"))
    assert result.exit_code == 1
    assert "disk full" in result.output and "checkpoint" in result.output
    assert not list((tmp_path / "run" / "checkpoints").glob("step-*"))  # nothing that looks complete


@pytest.mark.parametrize("name", ["t5", "switch"])
def test_encoder_decoders_train_with_span_corruption(tmp_path: Path, corpus: Path, name: str) -> None:
    args = tiny_args(SPECS / f"{name}.toml", corpus, tmp_path / "run", "--tokens", "512", "--set", "training.lr=1e-3")
    at = args.index("--tokenizer")
    del args[at : at + 2]  # the shipped tokenizer has no sentinels; one is trained with them
    del args[args.index("--seq-len") : args.index("--seq-len") + 2]  # default: the encoder's context
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    records = read_metrics(tmp_path / "run" / "metrics.jsonl")
    assert [r["step"] for r in records if "loss" in r] == [1, 2] and records[-1]["val_loss"] > 0
    shipped = runner.invoke(app, tiny_args(SPECS / f"{name}.toml", corpus, tmp_path / "other", "--tokens", "512",
                                           "--set", "training.lr=1e-3"))
    assert shipped.exit_code == 1 and "<extra_id_0>" in shipped.output


def test_alphacode_trains_with_seq2seq(tmp_path: Path, corpus: Path) -> None:
    """The encoder reads the first part of each window, the decoder predicts the rest."""
    result = runner.invoke(app, tiny_args(SPECS / "alphacode.toml", corpus, tmp_path / "run", "--tokens", "512",
                                          "--set", "training.lr=1e-3"))
    assert result.exit_code == 0, result.output
    assert "seq2seq: the encoder reads 11 of each window's 32 tokens, the decoder predicts 21" in result.output
    records = read_metrics(tmp_path / "run" / "metrics.jsonl")
    assert [r["step"] for r in records if "loss" in r] == [1, 2] and records[-1]["val_loss"] > 0
    assert load(tmp_path / "run" / "model").model is not None
    too_long = runner.invoke(app, [*tiny_args(SPECS / "alphacode.toml", corpus, tmp_path / "other", "--tokens", "512"),
                                   "--seq-len", "200"])
    assert too_long.exit_code == 2 and "encoder.context" in too_long.output


def test_bad_numbers_are_usage_errors(tmp_path: Path, corpus: Path) -> None:
    result = runner.invoke(app, tiny_args(LLAMA, corpus, tmp_path / "run", "--micro-batch", "0"))
    assert result.exit_code == 2 and "--micro-batch must be >= 1" in result.output
    assert SHIPPED_TOKENIZER.is_file()


def test_sft_starts_from_the_base_model_and_learns_responses_only(tmp_path: Path, corpus: Path) -> None:
    from safetensors.torch import load_file

    base = tmp_path / "base"
    result = runner.invoke(app, tiny_args(SPECS / "gpt3.toml", corpus, base, "--tokens", "512"))
    assert result.exit_code == 0, result.output
    pairs = tmp_path / "sft.jsonl"
    pairs.write_text("".join(json.dumps({"prompt": f"Q: {i} + 1?\nA:", "response": f" {i + 1}\n"}) + "\n" for i in range(200)))
    sft = tmp_path / "sft"
    args = tiny_args(SPECS / "instructgpt.toml", pairs, sft, "--tokens", "256", "--set", "training.lr=1e-5")
    no_base = runner.invoke(app, args)
    assert no_base.exit_code == 2 and "--init-from" in no_base.output and "'gpt3'" in no_base.output
    result = runner.invoke(app, [*args, "--init-from", str(base / "model")])
    assert result.exit_code == 0, result.output
    assert load_prepared_masked(sft)
    before, after = load_file(base / "model" / "weights.safetensors"), load_file(sft / "model" / "weights.safetensors")
    assert set(before) == set(after)
    drift = max(float((before[n] - after[n]).abs().max()) for n in before)
    assert 0 < drift < 1e-3  # one small step away from the base, not from a fresh init
    assert load(sft / "model").lock["spec"]["model"]["name"] == "instructgpt"


def load_prepared_masked(run: Path) -> bool:
    from taxonc.runtime.train.data import load_prepared

    prepared = load_prepared(run / "data")
    return prepared is not None and prepared.masked and 0 < int(prepared.mask("train").sum()) < prepared.train_tokens


def test_feedback_conditioning_needs_a_scorer_and_uses_it(tmp_path: Path, corpus: Path, monkeypatch) -> None:
    (tmp_path / "my_scores.py").write_text("def by_length(text):\n    return len(text)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    sets = ["--set", "training.feedback_conditioning.threshold=5000"]
    missing = runner.invoke(app, tiny_args(LLAMA, corpus, tmp_path / "a", "--tokens", "256", *sets))
    assert missing.exit_code == 2 and "--scorer MODULE:FUNCTION" in missing.output
    result = runner.invoke(app, tiny_args(LLAMA, corpus, tmp_path / "b", "--tokens", "256", *sets,
                                          "--scorer", "my_scores:by_length"))
    assert result.exit_code == 0, result.output
    from taxonc.runtime.conditioning import control_token_ids
    from taxonc.runtime.tokenizer import Tokenizer
    from taxonc.runtime.train.data import load_prepared

    good, bad = control_token_ids(Tokenizer.load(SHIPPED_TOKENIZER))
    prepared = load_prepared(tmp_path / "b" / "data")
    tokens = prepared.tokens("train").tolist() + prepared.tokens("val").tolist()  # few files: the val split is the tail
    labels = [t for t in tokens if t in (good, bad)]
    assert labels == [good if len(f.read_text()) >= 5000 else bad for f in sorted(corpus.iterdir())]
    assert good in labels and bad in labels


def test_glm_trains_with_blank_infilling(tmp_path: Path, corpus: Path) -> None:
    glm = SPECS / "glm-130b.toml"
    args = tiny_args(glm, corpus, tmp_path / "a", "--tokens", "512", "--set", "training.lr=1e-3")
    shipped = runner.invoke(app, args)  # the shipped tokenizer has no [MASK] pieces
    assert shipped.exit_code == 1 and "blank infilling needs the pieces [MASK], [gMASK], <sop>, <eop>" in shipped.output
    at = args.index("--tokenizer")
    del args[at : at + 2]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    records = read_metrics(tmp_path / "a" / "metrics.jsonl")
    assert [r["step"] for r in records if "loss" in r] == [1, 2] and records[-1]["val_loss"] > 0
    short = runner.invoke(app, [*args, "--seq-len", "3"])
    assert short.exit_code == 2 and "--seq-len 3: blank infilling needs at least 4 tokens" in short.output


def test_a_prefix_lm_trains_with_the_prefix_objective(tmp_path: Path, corpus: Path) -> None:
    glm = SPECS / "glm-130b.toml"
    result = runner.invoke(app, tiny_args(glm, corpus, tmp_path / "b", "--tokens", "512", "--set", "training.lr=1e-3",
                                          "--set", "training.objective=prefix-lm"))
    assert result.exit_code == 0, result.output
    assert len([r for r in read_metrics(tmp_path / "b" / "metrics.jsonl") if "loss" in r]) == 2


def test_the_progress_bar_shows_loss_lr_and_throughput(tmp_path: Path, corpus: Path) -> None:
    args = [a for a in tiny_args(LLAMA, corpus, tmp_path, "--tokens", "512") if a != "--no-progress"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "loss" in result.output and "lr " in result.output and "tok/s" in result.output and "512/512" in result.output
