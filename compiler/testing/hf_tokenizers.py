"""Real tokenizers built locally, saved in the Hugging Face layout, for tests that need one.

Nothing is downloaded: each builder trains on Python standard-library source (the same text on
every machine with the same Python) and writes what a Hub model directory holds for that style:

    byte_level_bpe(dir, "gpt2")     tokenizer.json: GPT-2 (and OPT's merges) byte-level BPE, no BOS
    byte_level_bpe(dir, "neox")     tokenizer.json: GPT-NeoX/Pythia: NFC first, <|endoftext|>=0, <|padding|>=1
    byte_level_bpe(dir, "llama3")   tokenizer.json: LLaMA-3 split regex, byte level, BOS added
    metaspace_bpe(dir)              tokenizer.json: LLaMA/Mistral-style "▁" BPE with byte fallback
    metaspace_bpe(dir, legacy=True) tokenizer.json as LLaMA-2's: the "▁" prefix as a normaliser
                                    (transformers 5 replaces that pipeline with its own)
    sentencepiece_bpe(dir)          tokenizer.model: LLaMA-style SentencePiece BPE, byte fallback
    sentencepiece_unigram(dir)      tokenizer.model: T5-style SentencePiece unigram, EOS appended
    sentencepiece_unigram(dir, json=True)  the same plus the tokenizer.json converted from it, as
                                    T5's and Switch's folders hold (the .json is read first)

plus tokenizer_config.json naming the class transformers' AutoTokenizer builds for it, and the
special tokens. The pipelines written here are the ones transformers' own class rebuilds from
these files, so tokenizer.json and AutoTokenizer agree (tests/test_runtime_hf_tokenizer.py checks
that against transformers). `vocab_size` is the trained size before special tokens are added.
"""

from __future__ import annotations

import functools
import io
import json
import sysconfig
from pathlib import Path
from typing import Literal

ByteLevelStyle = Literal["gpt2", "neox", "llama3"]
BUILDERS = ("gpt2", "neox", "llama3", "metaspace", "llama2", "sp-bpe", "sp-unigram", "t5-json")
# Trained pieces before special tokens: every builder's tokenizer then fits a tiny-scale model's
# 512-row embedding (the largest has 404 ids).
VOCAB_SIZE = 400

# The stdlib modules whose source is the training text: prose (docstrings), code and indentation.
_CORPUS_MODULES = ("textwrap.py", "json/decoder.py", "argparse.py", "difflib.py", "string.py", "html/parser.py")
# Extra lines so byte-level and byte-fallback pieces for non-ASCII text appear in every vocabulary.
_UNICODE_LINES = ("naïve café façade — “quotes” 中文字符 日本語 😀 🧪 Ελληνικά русский", "tab\tand  double  spaces")

# The LLaMA-3 pre-tokenizer pattern (Meta's tokenizer.json, "pre_tokenizer": Split): contractions,
# letters, 1-3 digit groups, punctuation runs, newlines, whitespace.
LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)


@functools.cache
def corpus_lines(max_chars: int = 200_000) -> tuple[str, ...]:
    """Non-blank lines of a few standard-library modules, at most `max_chars` characters in all."""
    root = Path(sysconfig.get_paths()["stdlib"])
    lines: list[str] = list(_UNICODE_LINES)
    total = 0
    for name in _CORPUS_MODULES:
        for line in (root / name).read_text(encoding="utf-8").splitlines():
            if line.strip() and total < max_chars:
                lines.append(line)
                total += len(line)
    return tuple(lines)


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _added(content: str, special: bool = True) -> dict:
    return {"content": content, "lstrip": False, "normalized": False, "rstrip": False, "single_word": False,
            "special": special}


def _config(tokenizer_class: str, ids: dict[str, int], **extra) -> dict:
    """tokenizer_config.json as transformers writes it: the class, the added tokens by id, extras."""
    return {"tokenizer_class": tokenizer_class,
            "added_tokens_decoder": {str(i): _added(tok) for tok, i in sorted(ids.items(), key=lambda kv: kv[1])},
            "clean_up_tokenization_spaces": False, "model_max_length": 2048, **extra}


# --------------------------------------------------------------------------- tokenizers library


def byte_level_bpe(out: Path, style: ByteLevelStyle = "gpt2", vocab_size: int = VOCAB_SIZE) -> Path:
    """A GPT-2 (also OPT's merges), GPT-NeoX or LLaMA-3 style byte-level BPE in `out`."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    if style == "gpt2":
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        specials = ["<|endoftext|>"]
    elif style == "neox":
        tok.normalizer = normalizers.NFC()
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True)
        specials = ["<|endoftext|>", "<|padding|>"]
    else:
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(LLAMA3_SPLIT), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ])
        specials = ["<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>"]
    tok.decoder = decoders.ByteLevel()
    first = specials if style == "neox" else []  # GPT-NeoX numbers its special tokens first
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, show_progress=False, special_tokens=first,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus_lines(), trainer)
    ids = {t: (n if first else tok.get_vocab_size() + n) for n, t in enumerate(specials)}
    tok.add_special_tokens(specials)
    out.mkdir(parents=True, exist_ok=True)
    if style == "neox":
        tok.post_processor = processors.ByteLevel(trim_offsets=True)
        config = _config("GPTNeoXTokenizer", ids, bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                         unk_token="<|endoftext|>", pad_token="<|padding|>", add_bos_token=False, add_eos_token=False,
                         add_prefix_space=False)
    elif style == "gpt2":
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
        config = _config("GPT2Tokenizer", ids, bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                         unk_token="<|endoftext|>", add_prefix_space=False)
    else:
        bos = "<|begin_of_text|>"
        tok.post_processor = processors.TemplateProcessing(single=f"{bos} $A", pair=f"{bos} $A {bos} $B",
                                                           special_tokens=[(bos, ids[bos])])
        config = _config("PreTrainedTokenizerFast", ids, bos_token=bos, eos_token="<|end_of_text|>")
    tok.save(str(out / "tokenizer.json"))
    _write_json(out / "tokenizer_config.json", config)
    return out


def metaspace_bpe(out: Path, vocab_size: int = VOCAB_SIZE, legacy: bool = False) -> Path:
    """A LLaMA/Mistral-style tokenizer.json: "▁" for spaces, one prefix "▁", byte fallback, BOS.

    legacy=True writes the pipeline of LLaMA-2's and Mistral-7B-v0.1's files: a normaliser that
    prepends "▁" to every stretch between added tokens and no pre-tokeniser."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    meta = ["<unk>", "<s>", "</s>"]
    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    if legacy:
        tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    else:
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=False)
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(" ", 1, 0)])
    byte_pieces = [f"<0x{b:02X}>" for b in range(256)]
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, show_progress=False, special_tokens=meta + byte_pieces)
    tok.train_from_iterator(corpus_lines(), trainer)
    tok.add_special_tokens(meta)
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                                       special_tokens=[("<s>", 1)])
    out.mkdir(parents=True, exist_ok=True)
    # The trainer keeps its special tokens as added tokens too; byte pieces are ordinary pieces
    # in a LLaMA vocabulary (matched by byte fallback, shown when decoding), so only the meta
    # pieces stay added.
    data = json.loads(tok.to_str())
    data["added_tokens"] = [t for t in data["added_tokens"] if t["content"] in meta]
    _write_json(out / "tokenizer.json", data)
    _write_json(out / "tokenizer_config.json", _config(
        "LlamaTokenizerFast", {t: i for i, t in enumerate(meta)}, bos_token="<s>", eos_token="</s>",
        unk_token="<unk>", add_bos_token=True, add_eos_token=False, legacy=False))
    return out


# --------------------------------------------------------------------------- sentencepiece


def _train_sentencepiece(**options) -> bytes:
    import sentencepiece as spm

    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(corpus_lines()), model_writer=buf, minloglevel=2,
                                   num_threads=1, hard_vocab_limit=False, **options)
    return buf.getvalue()


def sentencepiece_bpe(out: Path, vocab_size: int = VOCAB_SIZE) -> Path:
    """A LLaMA-style tokenizer.model: BPE, byte fallback, identity normalisation, one dummy prefix."""
    data = _train_sentencepiece(model_type="bpe", vocab_size=vocab_size, byte_fallback=True,
                                normalization_rule_name="identity", remove_extra_whitespaces=False,
                                allow_whitespace_only_pieces=True, split_digits=True)
    out.mkdir(parents=True, exist_ok=True)
    (out / "tokenizer.model").write_bytes(data)
    _write_json(out / "tokenizer_config.json", _config(
        "LlamaTokenizer", {"<unk>": 0, "<s>": 1, "</s>": 2}, bos_token="<s>", eos_token="</s>",
        unk_token="<unk>", add_bos_token=True, add_eos_token=False, legacy=False))
    return out


def sentencepiece_unigram(out: Path, vocab_size: int = VOCAB_SIZE, extra_ids: int = 4, json: bool = False) -> Path:
    """A T5-style tokenizer.model: unigram, NFKC, pad=0 eos=1 unk=2, no BOS, `extra_ids` sentinels
    <extra_id_N> added after the pieces (in reverse, as T5 numbers them), EOS appended; with
    json=True also its tokenizer.json."""
    data = _train_sentencepiece(model_type="unigram", vocab_size=vocab_size, pad_id=0, eos_id=1, unk_id=2,
                                bos_id=-1)
    out.mkdir(parents=True, exist_ok=True)
    (out / "tokenizer.model").write_bytes(data)
    import sentencepiece as spm

    size = spm.SentencePieceProcessor(model_proto=data).get_piece_size()
    ids = {"<pad>": 0, "</s>": 1, "<unk>": 2}
    sentinels = [f"<extra_id_{n}>" for n in range(extra_ids)]
    ids.update({tok: size + extra_ids - 1 - n for n, tok in enumerate(sentinels)})
    _write_json(out / "tokenizer_config.json", _config(
        "T5Tokenizer", ids, eos_token="</s>", unk_token="<unk>", pad_token="<pad>", extra_ids=extra_ids,
        additional_special_tokens=sentinels))
    if json:
        _t5_tokenizer_json(out, data, ids)
    return out


def _t5_tokenizer_json(out: Path, data: bytes, ids: dict[str, int]) -> None:
    """tokenizer.json for a T5 SentencePiece model, laid out as transformers' converter wrote T5's:
    the model's character map then runs of spaces collapsed, a "▁" before every word, EOS after."""
    import sentencepiece as spm
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    from taxonc.runtime.tokenizer import _proto_fields

    sp = spm.SentencePieceProcessor(model_proto=data)
    spec = next(v for f, v in _proto_fields(data) if f == 3)  # NormalizerSpec
    charsmap = next(v for f, v in _proto_fields(spec) if f == 2)  # its precompiled_charsmap
    vocab = [(sp.id_to_piece(i), sp.get_score(i)) for i in range(sp.get_piece_size())]
    tok = Tokenizer(models.Unigram(vocab, unk_id=ids["<unk>"], byte_fallback=False))
    tok.normalizer = normalizers.Sequence([normalizers.Precompiled(charsmap), normalizers.Replace(Regex(" {2,}"), " ")])
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    for token, _ in sorted(ids.items(), key=lambda kv: kv[1]):
        tok.add_special_tokens([AddedToken(token, special=True, normalized=False)])
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", pair="$A </s> $B </s>",
                                                       special_tokens=[("</s>", ids["</s>"])])
    tok.save(str(out / "tokenizer.json"))


def build(kind: str, out: Path, vocab_size: int = VOCAB_SIZE) -> Path:
    """One of BUILDERS into `out` (made if missing); returns `out`."""
    makers = {"gpt2": lambda: byte_level_bpe(out, "gpt2", vocab_size), "neox": lambda: byte_level_bpe(out, "neox", vocab_size),
              "llama3": lambda: byte_level_bpe(out, "llama3", vocab_size),
              "metaspace": lambda: metaspace_bpe(out, vocab_size), "llama2": lambda: metaspace_bpe(out, vocab_size, True),
              "sp-bpe": lambda: sentencepiece_bpe(out, vocab_size),
              "sp-unigram": lambda: sentencepiece_unigram(out, vocab_size),
              "t5-json": lambda: sentencepiece_unigram(out, vocab_size, json=True)}
    if kind not in makers:
        raise ValueError(f"tokenizer kind must be one of {', '.join(BUILDERS)}, not {kind!r}")
    return makers[kind]()
