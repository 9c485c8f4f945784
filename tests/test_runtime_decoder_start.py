"""Where an encoder-decoder's decoder starts: the spec's tokenizer.decoder_start_id, else the
tokenizer's pad, else its BOS; never the prompt's own first token.

The agreement with transformers' generate is in test_import_export.py; these tests pin the
choice itself and the errors, with a model that only records what it is given.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from taxonc.runtime.errors import ArtifactError, RuntimeFailure
from taxonc.runtime.generate import decoder_start, generate, generation_inputs
from taxonc.runtime.sampling import SamplerConfig
from taxonc.runtime.spec_lock import read_lock
from taxonc.runtime.text_tokenizer import decoder_start_fallback

VOCAB = 16


def _spec(start: int | None = None, structure: str = "encoder-decoder") -> dict:
    spec = {"model": {"name": "toy", "structure": structure}, "dims": {"context": 64, "vocab_size": VOCAB},
            "tokenizer": {"decoder_start_id": start}, "training": {}}
    if structure == "encoder-decoder":
        spec["encoder"] = {"n_layers": 1, "context": 64}
    return spec


prompts = st.lists(st.integers(0, VOCAB - 1), min_size=1, max_size=12)


@given(prompt=prompts, start=st.integers(0, VOCAB - 1), fallback=st.none() | st.integers(0, VOCAB - 1))
def test_the_encoder_reads_the_prompt_and_the_decoder_starts_from_the_spec_id(prompt, start, fallback) -> None:
    ids = torch.tensor([prompt])
    decoder, kw = generation_inputs(_spec(start), ids, len(prompt) + 4, fallback)
    assert decoder.tolist() == [[start]]  # the spec wins over the tokenizer's fallback
    assert torch.equal(kw["encoder_ids"], ids)


@given(prompt=prompts, fallback=st.integers(0, VOCAB - 1))
def test_without_a_spec_id_the_decoder_starts_from_the_fallback(prompt, fallback) -> None:
    decoder, _ = generation_inputs(_spec(None), torch.tensor([prompt]), len(prompt) + 4, fallback)
    assert decoder.tolist() == [[fallback]]


@given(prompt=prompts, fallback=st.none() | st.integers(0, VOCAB - 1))
def test_a_decoder_only_model_continues_its_prompt(prompt, fallback) -> None:
    decoder, kw = generation_inputs(_spec(None, "decoder"), torch.tensor([prompt]), len(prompt) + 4, fallback)
    assert decoder.tolist() == [prompt] and "encoder_ids" not in kw


def test_no_start_anywhere_is_a_one_line_error_naming_the_key() -> None:
    with pytest.raises(RuntimeFailure) as info:
        decoder_start(_spec(None), None)
    message = str(info.value)
    assert "\n" not in message and "tokenizer.decoder_start_id" in message and "toy" in message


@pytest.mark.parametrize("start,fallback", [(VOCAB, None), (None, VOCAB), (None, -1)])
def test_a_start_outside_the_embedding_is_refused(start, fallback) -> None:
    with pytest.raises(RuntimeFailure, match=f"{VOCAB} rows"):
        decoder_start(_spec(start), fallback)


@pytest.mark.parametrize("pad,bos,expected", [(0, 1, 0), (None, 1, 1), (3, None, 3), (None, None, None)])
def test_the_fallback_is_the_pad_id_else_the_bos_id(pad, bos, expected) -> None:
    # T5's tokenizer has a pad (0) and no BOS; taxonc's SentencePiece models have a BOS and no pad
    assert decoder_start_fallback(SimpleNamespace(pad_id=pad, bos_id=bos)) == expected


class _Cache:
    def reorder(self, parents: torch.Tensor) -> None:  # beam search's hook; the recording model keeps no state
        pass


def _recording_model(seen: list[list[int]]):
    """Greedy picks token 5 every step; the decoder tokens of each call are recorded."""

    def model(tokens, cache=None, prefix_len=0, encoder_ids=None):
        seen.append(tokens[0].tolist())
        logits = torch.zeros(tokens.shape[0], tokens.shape[1], VOCAB)
        logits[..., 5] = 1.0
        return logits

    return model


@pytest.mark.parametrize("sampler", [SamplerConfig(kind="greedy"), SamplerConfig(kind="beam", num_beams=2)])
def test_generate_feeds_the_start_id_not_the_prompt(sampler) -> None:
    seen: list[list[int]] = []
    out = generate(_recording_model(seen), _Cache, _spec(2), [7, 8, 9], sampler, 3, fallback_start_id=4)
    assert seen[0] == [2]  # the spec's id, not the prompt's 7 nor the fallback 4
    assert out.prompt_ids == [7, 8, 9] and out.new_ids == [5, 5, 5]


def test_the_lock_types_the_start_id(tmp_path: Path) -> None:
    from taxonc.compiler.compile import compile_spec

    root = Path(__file__).resolve().parents[1]
    lock = json.loads(compile_spec(root / "specs" / "t5.toml", scale="tiny").files["spec.lock.json"])
    assert lock["spec"]["tokenizer"]["decoder_start_id"] == 0
    lock["spec"]["tokenizer"]["decoder_start_id"] = "0"
    (tmp_path / "spec.lock.json").write_text(json.dumps(lock))
    with pytest.raises(ArtifactError, match=r"spec\.tokenizer\.decoder_start_id"):
        read_lock(tmp_path)
