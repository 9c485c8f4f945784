"""Hugging Face tokenizers (tokenizer.json and tokenizer.model) agree with transformers.

Each tokenizer is trained here on standard-library source (taxonc.testing.hf_tokenizers) and
saved in the Hugging Face layout; the reference is transformers' AutoTokenizer on that folder:
`encode(prompt) == AutoTokenizer(prompt).input_ids`, and `decode(ids)` equals its
`decode(ids, skip_special_tokens=True)`, the text shown for generated ids.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from taxonc.runtime.errors import RuntimeFailure, TokenizerError
from taxonc.runtime.text_tokenizer import TextTokenizer, TokenizerFormat, format_in, load_tokenizer, tokenizer_in
from taxonc.runtime.tokenizer import Tokenizer
from taxonc.testing.hf_tokenizers import BUILDERS, build

transformers = pytest.importorskip("transformers")
# transformers 5 reads a tokenizer.model through protobuf; without it only tokenizer.json is compared
HAS_PROTOBUF = __import__("importlib.util").util.find_spec("google.protobuf") is not None
needs_protobuf = pytest.mark.skipif(not HAS_PROTOBUF, reason="transformers needs protobuf to read tokenizer.model")

SPECIAL_STRINGS = ["<s>", "</s>", "<unk>", "<pad>", "<|endoftext|>", "<|begin_of_text|>", "<|eot_id|>",
                   "<extra_id_0>", "<extra_id_3>", "<0x41>", "\u2581"]
texts = st.one_of(
    st.text(st.characters(exclude_categories=("Cs",)), max_size=40),
    st.lists(
        st.sampled_from(["😀", "中", "文字", "é", "naïve", "a", "the", "def", " ", "  ", "   ", "\n", "\t", "\r\n",
                         "\u3000", "\xa0", "x=1", "'s", " .", *SPECIAL_STRINGS]),
        max_size=20,
    ).map("".join),
)


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hf-tokenizers")
    return {kind: build(kind, root / kind) for kind in BUILDERS}


def _reads_model(kind: str) -> bool:
    return kind.startswith("sp-") or kind == "t5-json"  # transformers reads tokenizer.model too


def _kinds() -> list:
    return [pytest.param(k, marks=needs_protobuf) if _reads_model(k) else k for k in BUILDERS]


@pytest.fixture(scope="module")
def pairs(folders) -> dict[str, tuple[TextTokenizer, object]]:
    """kind -> (ours, transformers'), for the kinds transformers can read here."""
    from transformers import AutoTokenizer

    return {kind: (load_tokenizer(path), AutoTokenizer.from_pretrained(path))
            for kind, path in folders.items() if HAS_PROTOBUF or not _reads_model(kind)}


@pytest.mark.parametrize("kind", _kinds())
def test_each_folder_loads_as_its_format(folders, pairs, kind):
    ours, theirs = pairs[kind]
    expected = TokenizerFormat.HF_SENTENCEPIECE if kind.startswith("sp-") else TokenizerFormat.TOKENIZERS_JSON
    if kind == "t5-json":  # both files, as T5's folders hold: tokenizer.json wins
        assert (folders[kind] / "tokenizer.model").is_file()
    assert format_in(folders[kind]) is expected
    assert isinstance(ours, TextTokenizer)
    assert ours.vocab_size == len(theirs)
    assert (ours.bos_id, ours.eos_id) == (theirs.bos_token_id, theirs.eos_token_id)


@pytest.mark.parametrize("kind", _kinds())
@given(text=texts)
def test_encode_matches_transformers(pairs, kind, text):
    ours, theirs = pairs[kind]
    assert ours.encode(text) == theirs(text).input_ids


@pytest.mark.parametrize("kind", _kinds())
@given(text=texts)
def test_decode_matches_transformers(pairs, kind, text):
    ours, theirs = pairs[kind]
    ids = theirs(text).input_ids
    assert ours.decode(ids) == theirs.decode(ids, skip_special_tokens=True)


@pytest.mark.parametrize("kind", _kinds())
@given(data=st.data())
def test_decode_and_stream_match_transformers_on_any_ids(pairs, kind, data):
    # Arbitrary ids: stray UTF-8 bytes (byte-level and byte-fallback pieces cut mid-character),
    # special tokens between pieces, bare space markers.
    ours, theirs = pairs[kind]
    ids = data.draw(st.lists(st.integers(0, ours.vocab_size - 1), max_size=16))
    expected = theirs.decode(ids, skip_special_tokens=True)
    assert ours.decode(ids) == expected
    stream = ours.decode_stream()
    assert "".join(stream.push(i) for i in ids) + stream.flush() == expected


@pytest.mark.parametrize("kind", _kinds())
def test_a_multibyte_character_streams_once_complete(pairs, kind):
    ours, _ = pairs[kind]
    ids = ours.encode("a 😀 b", add_special_tokens=False)
    stream = ours.decode_stream()
    pieces = [stream.push(i) for i in ids]
    assert "".join(pieces) + stream.flush() == ours.decode(ids)
    assert "\ufffd" not in "".join(pieces)
    if kind not in ("sp-unigram", "t5-json"):  # T5 has no byte fallback: the emoji is <unk>
        assert any("😀" in p for p in pieces)


def test_bos_and_eos_follow_the_config(folders, tmp_path):
    # gpt2 adds nothing, llama3 and LLaMA-style BOS, T5-style EOS
    assert load_tokenizer(folders["gpt2"]).encode("x") == load_tokenizer(folders["gpt2"]).encode("x", add_special_tokens=False)
    for kind, first in (("llama3", "<|begin_of_text|>"), ("metaspace", "<s>"), ("sp-bpe", "<s>")):
        tok = load_tokenizer(folders[kind])
        assert tok.encode("x")[0] == tok.token_id(first) == tok.bos_id
    t5 = load_tokenizer(folders["sp-unigram"])
    assert t5.encode("x")[-1] == t5.eos_id == t5.token_id("</s>") and t5.bos_id is None
    # add_eos_token in tokenizer_config.json rewrites the post-processor, as in transformers
    copy = shutil.copytree(folders["metaspace"], tmp_path / "eos")
    config = json.loads((copy / "tokenizer_config.json").read_text())
    (copy / "tokenizer_config.json").write_text(json.dumps({**config, "add_bos_token": False, "add_eos_token": True}))
    tok = load_tokenizer(copy)
    assert tok.encode("x")[-1] == tok.eos_id and tok.bos_id not in tok.encode("x")


@needs_protobuf
@pytest.mark.parametrize(("kind", "edit"), [
    ("sp-bpe", {"legacy": True}),  # a "▁" before every stretch between added tokens
    ("sp-bpe", {"add_prefix_space": False}),
    ("sp-bpe", {"add_bos_token": False, "add_eos_token": True}),
    ("sp-unigram", {"clean_up_tokenization_spaces": True}),
    ("metaspace", {"clean_up_tokenization_spaces": True}),  # BPE: transformers 5 ignores it
])
def test_config_variants_match_transformers(folders, tmp_path, kind, edit):
    from transformers import AutoTokenizer

    folder = shutil.copytree(folders[kind], tmp_path / "dir")
    config = json.loads((folder / "tokenizer_config.json").read_text())
    (folder / "tokenizer_config.json").write_text(json.dumps({**config, **edit}))
    ours, theirs = load_tokenizer(folder), AutoTokenizer.from_pretrained(folder)
    for text in ["Hello world", " two  spaces", "a<s>b </s> c", "<s> x", "don 't stop , ok .", "😀\n\tend"]:
        ids = theirs(text).input_ids
        assert ours.encode(text) == ids, text
        assert ours.decode(ids) == theirs.decode(ids, skip_special_tokens=True), text


def test_generation_config_sets_the_stop_ids(folders, tmp_path):
    copy = shutil.copytree(folders["llama3"], tmp_path / "l3")
    tok = load_tokenizer(copy)
    assert tok.stop_ids == (tok.token_id("<|end_of_text|>"),)
    (copy / "generation_config.json").write_text(json.dumps({"eos_token_id": [601, 602]}))
    assert load_tokenizer(copy).stop_ids == (601, 602)


def test_tokenizer_json_wins_over_tokenizer_model(folders, tmp_path):
    both = shutil.copytree(folders["metaspace"], tmp_path / "both")
    shutil.copy(folders["sp-bpe"] / "tokenizer.model", both / "tokenizer.model")
    assert format_in(both) is TokenizerFormat.TOKENIZERS_JSON
    (both / "tokenizer.json").unlink()
    assert format_in(both) is TokenizerFormat.HF_SENTENCEPIECE
    (both / "tokenizer_config.json").unlink()
    plain = tokenizer_in(both)
    assert format_in(both) is TokenizerFormat.SENTENCEPIECE and isinstance(plain, Tokenizer)
    assert isinstance(plain, TextTokenizer) and plain.encode("x y") == plain.encode("x y", add_special_tokens=False)
    assert tokenizer_in(tmp_path / "nothing-here") is None


# --------------------------------------------------------------------------- hostile files


def one_line(err: pytest.ExceptionInfo) -> str:
    msg = str(err.value)
    assert msg and "\n" not in msg, msg
    assert isinstance(err.value, RuntimeFailure)
    return msg


def _damage(folder: Path, name: str, how: str) -> Path:
    path = folder / name
    path.unlink()
    if how == "truncated":
        data = (folder.parent / "src" / name).read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif how == "not json":
        path.write_text("{\"model\": [1, 2,\n")
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "directory":
        path.mkdir()
    elif how == "dangling symlink":
        path.symlink_to(folder / "nowhere")
    elif how == "fifo":
        os.mkfifo(path)
    elif how == "a list":
        path.write_text("[]")
    elif how == "not a tokenizer":
        path.write_text(json.dumps({"model": {"type": "NoSuchModel"}}))
    return path


@pytest.mark.parametrize("how", ["truncated", "not json", "empty", "directory", "dangling symlink", "fifo", "not a tokenizer"])
@pytest.mark.parametrize(("kind", "name"), [("gpt2", "tokenizer.json"), ("sp-bpe", "tokenizer.model"),
                                            ("metaspace", "tokenizer_config.json")])
def test_a_damaged_file_is_a_one_line_error_naming_it(folders, tmp_path, kind, name, how):
    if (name, how) == ("tokenizer_config.json", "not a tokenizer"):
        how = "a list"  # any JSON object is a config; a list is not
    shutil.copytree(folders[kind], tmp_path / "src")
    folder = shutil.copytree(folders[kind], tmp_path / "dir")
    path = _damage(folder, name, how)
    with pytest.raises(TokenizerError) as err:
        tokenizer_in(folder)
    assert str(path) in one_line(err)


@pytest.mark.parametrize(("edit", "says"), [
    # padding and truncation are off for prompts, as in transformers: a fixed padding length of
    # 10**12 would otherwise abort the process when allocating
    ({"padding": {"strategy": {"Fixed": 10**12}, "direction": "Right", "pad_to_multiple_of": None, "pad_id": 0,
                  "pad_type_id": 0, "pad_token": "<unk>"}}, None),
    ({"truncation": {"max_length": 1, "stride": 0, "strategy": "LongestFirst", "direction": "Right"}}, None),
    ({"model": {"type": "Unigram", "unk_id": None, "vocab": []}}, "cannot encode"),
    ({"model": {"type": "BPE", "vocab": {"a": -1}, "merges": []}}, "not a tokenizers file"),
    ({"pre_tokenizer": {"type": "Split", "pattern": {"Regex": "("}, "behavior": "Isolated", "invert": False}},
     "not a tokenizers file"),
])
def test_a_hostile_tokenizer_json_is_refused_or_harmless(folders, tmp_path, edit, says):
    folder = shutil.copytree(folders["metaspace"], tmp_path / "dir")
    data = json.loads((folder / "tokenizer.json").read_text())
    (folder / "tokenizer.json").write_text(json.dumps({**data, **edit}))
    if says is None:
        assert tokenizer_in(folder).encode("hello world") == tokenizer_in(folders["metaspace"]).encode("hello world")
        return
    with pytest.raises(TokenizerError) as err:
        tokenizer_in(folder).encode("hello world")
    assert str(folder / "tokenizer.json") in one_line(err) and says in one_line(err)


def test_an_oversized_tokenizer_is_refused_unread(folders, tmp_path, monkeypatch):
    from taxonc.runtime import tokenizer, tokenizer_json

    monkeypatch.setattr(tokenizer_json, "MAX_JSON_BYTES", 1000)
    monkeypatch.setattr(tokenizer, "MAX_MODEL_BYTES", 1000)
    for kind, name in (("gpt2", "tokenizer.json"), ("sp-bpe", "tokenizer.model")):
        with pytest.raises(TokenizerError) as err:
            tokenizer_in(folders[kind])
        assert str(folders[kind] / name) in one_line(err) and "larger than" in one_line(err)


@pytest.mark.parametrize(("edit", "says"), [
    ({"add_bos_token": "yes"}, "add_bos_token must be true or false"),
    ({"bos_token": 7}, "bos_token must be a string"),
    ({"added_tokens_decoder": {"x": {"content": "a"}}}, "added_tokens_decoder.x"),
    ({"added_tokens_decoder": {"1": {"content": "<not-there>", "special": True}}}, "id 1"),
    ({"tokenizer_class": "XLNetTokenizer"}, "LlamaTokenizer"),
])
def test_bad_config_values_name_the_key(folders, tmp_path, edit, says):
    folder = shutil.copytree(folders["sp-bpe"], tmp_path / "dir")
    config = json.loads((folder / "tokenizer_config.json").read_text())
    (folder / "tokenizer_config.json").write_text(json.dumps({**config, **edit}))
    with pytest.raises(TokenizerError) as err:
        tokenizer_in(folder)
    msg = one_line(err)
    assert "tokenizer_config.json" in msg and says in msg


@pytest.mark.parametrize("value", ["</s>", [1, "2"], -3, True])
def test_a_bad_generation_config_names_its_key(folders, tmp_path, value):
    folder = shutil.copytree(folders["gpt2"], tmp_path / "dir")
    (folder / "generation_config.json").write_text(json.dumps({"eos_token_id": value}))
    with pytest.raises(TokenizerError) as err:
        tokenizer_in(folder)
    assert "generation_config.json: eos_token_id must be a token id" in one_line(err)


def test_out_of_range_ids_name_the_file(folders):
    tok = load_tokenizer(folders["gpt2"])
    with pytest.raises(TokenizerError) as err:
        tok.decode([0, tok.vocab_size])
    assert "tokenizer.json" in one_line(err) and str(tok.vocab_size) in one_line(err)


# --------------------------------------------------------------------------- taxonc run


@pytest.fixture(scope="module")
def tiny_artifact(tmp_path_factory) -> Path:
    from typer.testing import CliRunner

    from taxonc.compiler.cli import app

    from .conftest import SPECS

    out = tmp_path_factory.mktemp("run") / "llama-tiny"
    result = CliRunner().invoke(app, ["compile", str(SPECS / "llama.toml"), "--scale", "tiny", "-o", str(out), "-q",
                                      "--init-weights"])
    assert result.exit_code == 0, result.output
    return out


def _with_tokenizer(artifact: Path, folder: Path, dest: Path) -> Path:
    out = shutil.copytree(artifact, dest)
    for path in folder.iterdir():
        shutil.copy(path, out / path.name)
    return out


def _run(*args: str) -> tuple[int, str]:
    from typer.testing import CliRunner

    from taxonc.compiler.cli import app

    result = CliRunner().invoke(app, ["run", *args])
    return result.exit_code, result.output


@pytest.mark.parametrize("kind", _kinds())
def test_run_uses_the_artifacts_own_tokenizer(folders, pairs, tiny_artifact, tmp_path, kind):
    ours, theirs = pairs[kind]
    art = _with_tokenizer(tiny_artifact, folders[kind], tmp_path / "art")
    prompt = "Hello <s> world\n  😀 <|endoftext|>"
    code, output = _run(str(art), "--prompt", prompt, "--max-new-tokens", "6", "--json")
    assert code == 0, output
    report = json.loads(output.strip().splitlines()[-1])
    assert report["tokenizer"] == str(art / ("tokenizer.model" if kind.startswith("sp-") else "tokenizer.json"))
    assert report["prompt_ids"] == theirs(prompt).input_ids
    assert report["text"] == theirs.decode(report["ids"], skip_special_tokens=True)
    code, streamed = _run(str(art), "--prompt", prompt, "--max-new-tokens", "6")  # same seed, same tokens
    stats = re.search(r"\d+ tokens \(\w+\), [^\n]* ms\n", streamed)  # stderr, interleaved by the test runner
    assert code == 0 and stats, streamed
    assert streamed.replace(stats.group(), "") == report["text"] + "\n"


def test_run_takes_a_tokenizer_folder(folders, tiny_artifact):
    code, output = _run(str(tiny_artifact), "--tokenizer", str(folders["llama3"]), "--prompt", "hi", "--max-new-tokens", "2",
                        "--json")
    assert code == 0, output
    report = json.loads(output.strip().splitlines()[-1])
    assert report["prompt_ids"][0] == load_tokenizer(folders["llama3"]).bos_id
    assert report["tokenizer"] == str(folders["llama3"] / "tokenizer.json")


@pytest.mark.parametrize("kind", ["gpt2", "sp-bpe"])
def test_a_vocabulary_larger_than_the_embedding_is_refused(tiny_artifact, tmp_path, kind):
    big = build(kind, tmp_path / "big", vocab_size=600)  # the tiny model embeds 512 tokens
    art = _with_tokenizer(tiny_artifact, big, tmp_path / "art")
    code, output = _run(str(art), "--prompt", "hi", "--max-new-tokens", "2")
    lines = output.strip().splitlines()
    assert code == 1 and len(lines) == 1 and "Traceback" not in output, output
    assert str(art / ("tokenizer.model" if kind == "sp-bpe" else "tokenizer.json")) in lines[0] and "512" in lines[0]


@pytest.mark.parametrize("name", ["tokenizer.json", "tokenizer_config.json"])
def test_run_refuses_a_damaged_artifact_tokenizer(folders, tiny_artifact, tmp_path, name):
    art = _with_tokenizer(tiny_artifact, folders["metaspace"], tmp_path / "art")
    (art / name).write_text("{")
    code, output = _run(str(art), "--prompt", "hi", "--max-new-tokens", "2")
    lines = output.strip().splitlines()
    assert code == 1 and len(lines) == 1 and str(art / name) in lines[0] and "line 1" in lines[0], output


def test_a_weights_folder_brings_its_tokenizer_first(folders, tmp_path):
    from taxonc.compiler.running import _tokenizer

    target = shutil.copytree(folders["gpt2"], tmp_path / "target")
    assert _tokenizer(None, folders["llama3"], target).source == str(folders["llama3"] / "tokenizer.json")
    assert _tokenizer(None, tmp_path / "weights.safetensors", target).source == str(target / "tokenizer.json")
    assert _tokenizer(folders["sp-bpe"], folders["llama3"], target).source == str(folders["sp-bpe"] / "tokenizer.model")
    assert isinstance(_tokenizer(None, None, tmp_path / "spec.toml"), Tokenizer)  # the shipped one
