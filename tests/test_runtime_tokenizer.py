"""Runtime tokenizers, FIM and feedback conditioning.

Round trips are exact because train_tokenizer uses the "identity" normalisation rule and
keeps whitespace runs; the one character no SentencePiece model round-trips is U+2581, its
own space marker, so the text strategy leaves it out.
"""

from __future__ import annotations

import ast
import random
import typing
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from taxonc.runtime.conditioning import condition_tokens, control_token_ids, generation_prefix
from taxonc.runtime.errors import RuntimeFailure, TokenizerError
from taxonc.runtime.fim import (
    FIM_MODES,
    fim_prompt,
    fim_sentinel_ids,
    fim_transform,
    fim_transform_text,
    fim_undo,
)
from taxonc.runtime.tokenizer import (
    DEFAULT_SPECIAL_TOKENS,
    MODEL_TYPES,
    Tokenizer,
    default_tokenizer_path,
    train_tokenizer,
)

RUNTIME = Path(__file__).resolve().parent.parent / "runtime"

# Our own words, so the fixture models need no corpus file from anywhere else.
CORPUS = """\
taxonc reads one TOML spec per model and compiles it to a readable PyTorch module.
The runtime loads the artifact, samples tokens, and streams text back to the terminal.
def attention(q, k, v):
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    return scores.softmax(-1) @ v
Tokenizers split text into pieces; byte fallback keeps every character encodable.
Fill in the middle moves the middle of a document to its end, after sentinel tokens.
"""

# Emoji, CJK, accents, control characters, tabs, runs of spaces and the special tokens.
texts = st.one_of(
    st.text(st.characters(exclude_characters="\u2581", exclude_categories=("Cs",)), max_size=40),
    st.lists(
        st.sampled_from(
            ["😀", "🧪", "中", "文字", "é", "a", "the", " ", "  ", "\n", "\t", "\x00",
             "<|good|>", "<|fim_middle|>"]
        ),
        max_size=20,
    ).map("".join),
)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    path.write_text(CORPUS * 3, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def tokenizers(corpus, tmp_path_factory) -> dict[str, Tokenizer]:
    """bpe and unigram as train_tokenizer makes them, and bpe with SentencePiece's dummy prefix."""
    out = tmp_path_factory.mktemp("models")
    toks = {
        kind: Tokenizer.load(train_tokenizer(corpus, 320, kind, out / f"{kind}.model", DEFAULT_SPECIAL_TOKENS))
        for kind in MODEL_TYPES
    }
    path = train_tokenizer(corpus, 320, "bpe", out / "dummy.model", DEFAULT_SPECIAL_TOKENS, add_dummy_prefix=True)
    toks["bpe+dummy"] = Tokenizer.load(path)
    return toks


@pytest.fixture(scope="module")
def shipped() -> Tokenizer:
    return Tokenizer.load(default_tokenizer_path())


def one_line(err: pytest.ExceptionInfo) -> str:
    msg = str(err.value)
    assert msg and "\n" not in msg, msg
    return msg


# --------------------------------------------------------------------------- training


def test_training_is_quiet(corpus, tmp_path, capfd):
    for kind in MODEL_TYPES:
        train_tokenizer(corpus, 320, kind, tmp_path / f"{kind}.model", DEFAULT_SPECIAL_TOKENS)
        Tokenizer.load(tmp_path / f"{kind}.model").encode("quiet?")
    with pytest.raises(TokenizerError):  # failures are quiet too: the exception says it all
        train_tokenizer(corpus, 261, "bpe", tmp_path / "fail.model")
    out, err = capfd.readouterr()
    assert out == "" and err == ""


def test_both_algorithms_train(tokenizers):
    for name, tok in tokenizers.items():
        assert tok.type == name.split("+")[0]
        assert tok.vocab_size == 320
        assert (tok.bos_id, tok.eos_id) == (1, 2)


@given(text=texts)
def test_round_trip_is_exact(tokenizers, text):
    for tok in tokenizers.values():
        assert tok.decode(tok.encode(text)) == text


def test_small_text_gives_a_smaller_vocabulary(corpus, tmp_path):
    tok = Tokenizer.load(train_tokenizer(corpus, 5000, "bpe", tmp_path / "big.model"))
    assert 260 < tok.vocab_size < 5000


def test_special_tokens_are_single_ids(tokenizers, shipped):
    for tok in [tokenizers["bpe"], tokenizers["unigram"], shipped]:
        for piece in DEFAULT_SPECIAL_TOKENS:
            i = tok.token_id(piece)
            assert i is not None and tok.encode(piece) == [i]
            assert tok.decode([i]) == piece
        assert tok.encode("x<|fim_suffix|>y").count(tok.token_id("<|fim_suffix|>")) == 1
        assert tok.token_id("<|not_a_token|>") is None


def test_failed_training_leaves_the_old_model(corpus, tmp_path):
    out = tmp_path / "model.model"
    train_tokenizer(corpus, 320, "bpe", out)
    before = out.read_bytes()
    many_chars = tmp_path / "cjk.txt"  # 200 distinct characters need more than 300 pieces
    many_chars.write_text("".join(chr(0x4E00 + i) * 3 for i in range(200)), encoding="utf-8")
    with pytest.raises(TokenizerError) as err:
        train_tokenizer(many_chars, 300, "unigram", out)
    assert "too small" in one_line(err)
    assert out.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cjk.txt", "model.model"]  # no temp file left
    train_tokenizer(corpus, 320, "unigram", out)  # success replaces it
    assert Tokenizer.load(out).type == "unigram"


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (dict(input_path="missing.txt"), "does not exist"),
        (dict(input_path="empty.txt"), "no non-blank lines"),
        (dict(input_path="latin1.txt"), "not UTF-8"),
        (dict(vocab_size=100), "at least 260"),
        (dict(vocab_size=300.0), "integer"),
        (dict(model_type="word"), "bpe, unigram"),
        (dict(special_tokens=["<s>"]), "clashes"),
        (dict(special_tokens=["a b"]), "whitespace"),
        (dict(special_tokens=["<x>", "<x>"]), "twice"),
    ],
)
def test_training_errors_are_one_line(corpus, tmp_path, args, words):
    (tmp_path / "empty.txt").write_text("\n  \n")
    (tmp_path / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    kw = dict(input_path=corpus, vocab_size=300, model_type="bpe", output_path=tmp_path / "t.model")
    kw.update(args)
    if not Path(kw["input_path"]).is_absolute():
        kw["input_path"] = tmp_path / kw["input_path"]
    with pytest.raises(TokenizerError) as err:
        train_tokenizer(**kw)
    assert words in one_line(err)
    assert not (tmp_path / "t.model").exists()


# --------------------------------------------------------------------------- loading


def test_shipped_tokenizer(shipped):
    path = default_tokenizer_path()
    assert path.stat().st_size < 100_000
    assert (shipped.type, shipped.vocab_size) == ("bpe", 512)
    text = "taxonc compiles specs.\n    def f(x):  # 中文 😀\n"
    assert shipped.decode(shipped.encode(text)) == text


@given(text=texts)
def test_shipped_round_trip(shipped, text):
    assert shipped.decode(shipped.encode(text)) == text


@pytest.mark.parametrize("content", [None, b"", b"not a model", bytes(range(256)) * 4, "dir"])
def test_bad_model_files(tmp_path, content):
    path = tmp_path / "x.model"
    if content == "dir":
        path.mkdir()
    elif content is not None:
        path.write_bytes(content)
    with pytest.raises(TokenizerError) as err:
        Tokenizer.load(path)
    assert str(path) in one_line(err)
    assert isinstance(err.value, RuntimeFailure)


def test_truncated_model(tmp_path):
    data = default_tokenizer_path().read_bytes()
    path = tmp_path / "cut.model"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(TokenizerError) as err:
        Tokenizer.load(path)
    one_line(err)


def test_out_of_range_ids(shipped):
    with pytest.raises(TokenizerError) as err:
        shipped.decode([5, 512])
    assert "512" in one_line(err)


# --------------------------------------------------------------------------- streaming


def stream(tok: Tokenizer, ids: list[int]) -> str:
    s = tok.decode_stream()
    return "".join(s.push(i) for i in ids) + s.flush()


@given(text=texts)
def test_stream_matches_decode_on_encoded_text(tokenizers, text):
    for tok in tokenizers.values():
        ids = tok.encode(text)
        assert stream(tok, ids) == tok.decode(ids) == text


@given(data=st.data())
def test_stream_matches_decode_on_any_ids(tokenizers, shipped, data):
    # Arbitrary ids include stray UTF-8 bytes, meta pieces and bare space markers; the
    # dummy-prefix model also drops the marker of whichever piece comes first.
    for tok in (shipped, tokenizers["bpe+dummy"]):
        ids = data.draw(st.lists(st.one_of(st.integers(0, tok.vocab_size - 1), st.integers(3, 270)), max_size=16))
        assert stream(tok, ids) == tok.decode(ids)


def test_stream_holds_back_partial_characters(shipped):
    ids = shipped.encode("a😀")
    assert len(ids) == 5  # "a" and the emoji's four UTF-8 bytes
    s = shipped.decode_stream()
    assert [s.push(i) for i in ids] == ["a", "", "", "", "😀"]
    assert s.flush() == ""


# --------------------------------------------------------------------------- FIM

PRE, MID, SUF = 3, 4, 5
documents = st.lists(st.integers(10, 600), max_size=40)


@given(tokens=documents, seed=st.integers(0, 2**32), mode=st.sampled_from(FIM_MODES))
def test_fim_rate_one_is_a_permutation_plus_sentinels(tokens, seed, mode):
    out = fim_transform(tokens, random.Random(seed), 1.0, mode, PRE, MID, SUF)
    assert Counter(out) == Counter(tokens) + Counter([PRE, MID, SUF])
    assert out[0] == PRE
    assert fim_undo(out, PRE, MID, SUF) == tokens
    # The sequence is the inference prompt followed by the middle.
    s, m = out.index(SUF), out.index(MID)
    if mode == "psm":
        assert s > 0 and fim_prompt(out[1:s], out[s + 1 : m], "psm", PRE, MID, SUF) == out[: m + 1]
    if mode == "spm":
        assert s == 1
        suffix, rest = out[2:m], out[m + 1 :]
        assert any(fim_prompt(rest[:k], suffix, "spm", PRE, MID, SUF) + rest[k:] == out for k in range(len(rest) + 1))


@given(tokens=documents, seed=st.integers(0, 2**32), mode=st.sampled_from(FIM_MODES))
def test_fim_rate_zero_is_identity(tokens, seed, mode):
    assert fim_transform(tokens, random.Random(seed), 0.0, mode, PRE, MID, SUF) == tokens


def test_fim_rate_and_mode_mix():
    rng = random.Random(0)
    doc = list(range(10, 210))
    outs = [fim_transform(doc, rng, 0.5, "psm+spm", PRE, MID, SUF) for _ in range(2000)]
    fim = [o for o in outs if o != doc]
    assert 900 < len(fim) < 1100
    spm = sum(o[1] == SUF for o in fim)  # SPM, or PSM with an empty prefix (about 1% here)
    assert 0.4 < spm / len(fim) < 0.6


def test_fim_rejects_bad_arguments():
    with pytest.raises(ValueError):
        fim_transform([10], random.Random(0), 1.5, "psm", PRE, MID, SUF)
    with pytest.raises(ValueError):
        fim_transform([10], random.Random(0), 1.0, "mps", PRE, MID, SUF)
    with pytest.raises(ValueError):
        fim_transform([10, PRE], random.Random(0), 1.0, "psm", PRE, MID, SUF)
    with pytest.raises(ValueError):
        fim_prompt([10], [11], "psm+spm", PRE, MID, SUF)


@given(text=texts, seed=st.integers(0, 2**32))
def test_fim_character_split(shipped, text, seed):
    text = text.replace("<|", "")  # a spelled-out sentinel is not allowed in a document
    pre, mid, suf = fim_sentinel_ids(shipped)
    out = fim_transform_text(text, random.Random(seed), 1.0, "psm", shipped.encode, pre, mid, suf)
    s, m = out.index(suf), out.index(mid)
    # Each part decodes on its own to its text, and the parts rebuild the document.
    assert shipped.decode(out[1:s]) + shipped.decode(out[m + 1 :]) + shipped.decode(out[s + 1 : m]) == text
    unchanged = fim_transform_text(text, random.Random(seed), 0.0, "psm", shipped.encode, pre, mid, suf)
    assert unchanged == shipped.encode(text)


def test_fim_modes_match_the_spec_schema():
    from taxonc.compiler.spec.model import FillInTheMiddle, Tokenizer as TokenizerSection

    assert set(typing.get_args(FillInTheMiddle.model_fields["mode"].annotation)) == set(FIM_MODES)
    assert set(typing.get_args(TokenizerSection.model_fields["algorithm"].annotation)) == set(MODEL_TYPES)


# --------------------------------------------------------------------------- feedback conditioning


def test_conditioning_prepends_the_right_token(shipped):
    good, bad = control_token_ids(shipped)
    assert (shipped.piece(good), shipped.piece(bad)) == ("<|good|>", "<|bad|>")
    doc = shipped.encode("some text")
    assert condition_tokens(doc, 0.9, 0.5, good, bad) == [good, *doc]
    assert condition_tokens(doc, 0.5, 0.5, good, bad) == [good, *doc]  # at the threshold counts as good
    assert condition_tokens(doc, 0.1, 0.5, good, bad) == [bad, *doc]
    assert generation_prefix(good) == [good]
    with pytest.raises(ValueError):
        condition_tokens(doc, float("nan"), 0.5, good, bad)


def test_runtime_does_not_import_the_compiler():
    for path in RUNTIME.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            assert not any(n.startswith("taxonc.compiler") for n in names), path
