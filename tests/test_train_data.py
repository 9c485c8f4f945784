"""Training data: documents, packed token shards, the validation split and the resumable sampler."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from taxonc.runtime.fim import fim_sentinel_ids
from taxonc.runtime.tokenizer import Tokenizer
from taxonc.runtime.train.corpus import Document, read_documents
from taxonc.runtime.train.data import Sampler, SamplerState, Tokenizing, Windows, prepare, token_dtype
from taxonc.runtime.train.errors import TrainingError
from taxonc.runtime.train.recipe import FimConfig, FimMode


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    return Tokenizer.default()


def tokenizing(tok: Tokenizer, **kw) -> Tokenizing:
    return Tokenizing(tok.encode, tok.eos_id, tok.vocab_size, "shipped", **kw)


def docs(n: int) -> list[Document]:
    return [Document(f"doc{i}", f"def f{i}(x):\n    return x * {i}\n") for i in range(n)]


def test_dtype_follows_the_vocabulary() -> None:
    assert token_dtype(512) == np.uint16 and token_dtype(65536) == np.uint16
    assert token_dtype(65537) == np.uint32 and token_dtype(256000) == np.uint32


def test_documents_are_packed_with_eos_and_every_20th_is_held_out(tmp_path: Path, tok: Tokenizer) -> None:
    corpus = docs(45)
    prepared = prepare(corpus, tokenizing(tok), tmp_path, "k")
    train, val = prepared.tokens("train").tolist(), prepared.tokens("val").tolist()
    held = [d for i, d in enumerate(corpus) if i % 20 == 19]
    want_val = [t for d in held for t in tok.encode(d.text) + [tok.eos_id]]
    want_train = [t for d in corpus if d not in held for t in tok.encode(d.text) + [tok.eos_id]]
    assert val == want_val and train == want_train
    assert prepared.masked is False and prepared.documents == 45


def test_few_documents_hold_out_the_last_tenth(tmp_path: Path, tok: Tokenizer) -> None:
    corpus = docs(3)
    prepared = prepare(corpus, tokenizing(tok), tmp_path, "k")
    everything = [t for d in corpus for t in tok.encode(d.text) + [tok.eos_id]]
    assert prepared.tokens("train").tolist() + prepared.tokens("val").tolist() == everything
    assert prepared.val_tokens == len(everything) // 10


def test_prepared_data_is_reused_only_for_the_same_inputs(tmp_path: Path, tok: Tokenizer) -> None:
    prepare(docs(5), tokenizing(tok), tmp_path, "k")
    meta = (tmp_path / "data.json").stat().st_mtime_ns
    prepare(docs(5), tokenizing(tok), tmp_path, "k")
    assert (tmp_path / "data.json").stat().st_mtime_ns == meta
    other = prepare(docs(7), tokenizing(tok), tmp_path, "other inputs")
    assert other.documents == 7


def test_sft_masks_everything_but_the_response(tmp_path: Path, tok: Tokenizer) -> None:
    path = tmp_path / "sft.jsonl"
    path.write_text(json.dumps({"prompt": "Q: two plus two?\nA:", "response": " four"}) + "\n")
    (doc,) = read_documents([path], sft=True)
    prepared = prepare([doc], tokenizing(tok), tmp_path / "data", "k", val_every=1)
    ids, mask = prepared.tokens("val").tolist(), prepared.mask("val").tolist()
    n_prompt = len(tok.encode("Q: two plus two?\nA:"))
    assert ids == tok.encode("Q: two plus two?\nA:") + tok.encode(" four") + [tok.eos_id]
    assert mask == [0] * n_prompt + [1] * (len(ids) - n_prompt)


def test_fim_documents_are_permutations_plus_sentinels(tmp_path: Path, tok: Tokenizer) -> None:
    corpus = docs(40)
    ids = fim_sentinel_ids(tok)
    how = tokenizing(tok, fim=FimConfig(1.0, FimMode.BOTH), fim_ids=ids, seed=3)
    prepared = prepare(corpus, how, tmp_path, "k")
    stream = prepared.tokens("train").tolist()
    pieces, current = [], []
    for t in stream:
        if t == tok.eos_id:
            pieces.append(current)
            current = []
        else:
            current.append(t)
    train_docs = [d for i, d in enumerate(corpus) if i % 20 != 19]
    assert len(pieces) == len(train_docs)
    for piece, doc in zip(pieces, train_docs):
        assert sorted(t for t in piece if t in ids) == sorted(ids)  # each sentinel exactly once
        text = tok.decode([t for t in piece if t not in ids])
        assert Counter(text) == Counter(doc.text)  # the characters, moved around


def test_jsonl_errors_name_file_line_and_key(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "fine"}\n\n{"txt": "typo"}\n')
    with pytest.raises(TrainingError, match=r"bad.jsonl:3: key 'text' is missing"):
        list(read_documents([path]))
    path.write_text('{"prompt": "p", "response": 3}\n')
    with pytest.raises(TrainingError, match=r"bad.jsonl:1: key 'response' is a int"):
        list(read_documents([path], sft=True))
    path.write_text("not json\n")
    with pytest.raises(TrainingError, match=r"bad.jsonl:1: not JSON"):
        list(read_documents([path]))


def test_paths_that_are_not_files_are_refused(tmp_path: Path) -> None:
    with pytest.raises(TrainingError, match="does not exist"):
        list(read_documents([tmp_path / "nothing.txt"]))
    (tmp_path / "empty").mkdir()
    with pytest.raises(TrainingError, match="no training files"):
        list(read_documents([tmp_path / "empty"]))


@given(count=st.integers(1, 50), seed=st.integers(0, 2**31), cuts=st.lists(st.integers(1, 40), min_size=1, max_size=6))
def test_sampler_resumes_exactly_and_each_epoch_is_a_permutation(count, seed, cuts) -> None:
    whole = Sampler(count, seed).take(sum(cuts))
    resumed, state = [], SamplerState()
    for n in cuts:
        s = Sampler(count, seed, SamplerState(state.epoch, state.position))  # a fresh process each time
        resumed.extend(s.take(n))
        state = s.state
    assert resumed == whole
    for start in range(0, len(whole) - count + 1, count):
        assert sorted(whole[start : start + count]) == list(range(count))


def test_windows_are_inputs_and_shifted_targets() -> None:
    tokens = np.arange(20, dtype=np.uint16)
    ids, mask = Windows(tokens, None, 4).batch([0, 2])
    assert ids.tolist() == [[0, 1, 2, 3, 4], [8, 9, 10, 11, 12]] and mask is None
    assert Windows(tokens, None, 4).count == 4


def test_feedback_conditioning_prepends_the_scorers_label(tmp_path: Path, tok: Tokenizer) -> None:
    from taxonc.runtime.conditioning import control_token_ids
    from taxonc.runtime.train.data import Feedback

    good, bad = control_token_ids(tok)
    corpus = [Document(f"d{i}", f"x = {i}\n") for i in range(10)]
    feedback = Feedback(lambda text: len(text) % 2, 0.5, good, bad, "parity")
    prepared = prepare(corpus, tokenizing(tok, feedback=feedback), tmp_path, "k")
    want = [t for d in corpus for t in [good if len(d.text) % 2 else bad, *tok.encode(d.text), tok.eos_id]]
    everything = prepared.tokens("train").tolist() + prepared.tokens("val").tolist()
    assert everything == want
    with pytest.raises(TrainingError, match="d0: the feedback scorer broken gave no usable score"):
        prepare(corpus, tokenizing(tok, feedback=Feedback(lambda text: float("nan"), 0.5, good, bad, "broken")),
                tmp_path / "other", "k")


def test_non_utf8_files_found_in_directories_are_left_out_and_reported(tmp_path: Path) -> None:
    (tmp_path / "good.py").write_text("x = 1\n")
    (tmp_path / "latin1.py").write_bytes("# caf\xe9\n".encode("latin-1"))
    skipped: list[Path] = []
    assert [d.text for d in read_documents([tmp_path], skipped=skipped)] == ["x = 1\n"]
    assert skipped == [tmp_path / "latin1.py"]
    with pytest.raises(TrainingError, match=r"latin1.py: not UTF-8 \(bad byte at offset 5\)"):
        list(read_documents([tmp_path / "latin1.py"], skipped=[]))  # named on the command line: an error
    with pytest.raises(TrainingError, match="not UTF-8"):
        list(read_documents([tmp_path]))  # no list to report into: an error too
