"""SentencePiece tokenizers: train (quietly, atomically), load, encode, decode, stream.

Specs name a tokenizer in their [tokenizer] table (kind, algorithm, vocab_size, byte_fallback,
special_tokens). This module trains and loads the SentencePiece side of that: BPE or unigram,
with byte fallback so any text encodes, and with special tokens (FIM sentinels, feedback
control tokens) as user-defined symbols, which SentencePiece always keeps as one piece.

Round trip. We train with the "identity" normalisation rule and keep runs of whitespace, so
decode(encode(s)) == s for every string s without U+2581 ("▁"). That one character is
SentencePiece's own space marker and decodes as a space (in any model that escapes whitespace).
The identity rule also keeps the model small: the default NFKC rule embeds a ~240 KB table.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import tempfile
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Literal, TypeVar

import sentencepiece as spm

from .decode_stream import DecodeStream
from .errors import TokenizerError
from .files import why_not_regular

_T = TypeVar("_T")
ModelType = Literal["bpe", "unigram"]
MODEL_TYPES: tuple[str, ...] = ("bpe", "unigram")

# Fill-in-the-middle sentinels (Bavarian et al. 2022) and pretraining-with-human-feedback
# control tokens (Korbak et al. 2023), spelled as the specs spell them.
FIM_PREFIX = "<|fim_prefix|>"
FIM_MIDDLE = "<|fim_middle|>"
FIM_SUFFIX = "<|fim_suffix|>"
PHF_GOOD = "<|good|>"
PHF_BAD = "<|bad|>"
DEFAULT_SPECIAL_TOKENS: tuple[str, ...] = (FIM_PREFIX, FIM_MIDDLE, FIM_SUFFIX, PHF_GOOD, PHF_BAD)

# Real SentencePiece models are a few MB (LLaMA's 0.5 MB, Gemma's 4 MB); the cap stops a
# mislabelled multi-GB file from being read into memory whole.
MAX_MODEL_BYTES = 64 << 20
_META_PIECES = ("<unk>", "<s>", "</s>")  # SentencePiece's defaults: unk=0, bos=1, eos=2, no pad
_BYTE_PIECES = 256
# TrainerSpec.model_type in sentencepiece_model.proto.
_PROTO_MODEL_TYPES = {1: "unigram", 2: "bpe", 3: "word", 4: "char"}


def default_tokenizer_path() -> Path:
    """The small BPE tokenizer shipped in the package (see data/make_tokenizer.py)."""
    return Path(__file__).resolve().parent / "data" / "taxonc-sp.model"


# --------------------------------------------------------------------------- training


def train_tokenizer(
    input_path: str | os.PathLike | Sequence[str | os.PathLike],
    vocab_size: int,
    model_type: ModelType,
    output_path: str | os.PathLike,
    special_tokens: Iterable[str] = (),
    byte_fallback: bool = True,
    *,
    add_dummy_prefix: bool = False,
    num_threads: int | None = None,
) -> Path:
    """Train a SentencePiece model on UTF-8 text and write it to `output_path`.

    `input_path` is one text file or a list of them; each non-blank line is one training
    sentence. When the text is too small for `vocab_size`, the model comes out smaller
    (hard_vocab_limit is off); read Tokenizer.vocab_size for the real size. Nothing is
    printed. The file is written to a temporary name beside `output_path` and renamed over
    it, so a failed run leaves any earlier model in place.

    No dummy prefix by default (SentencePiece's own default puts one "▁" before every
    input, as Llama does): then decode(encode(a) + encode(b)) == a + b, which FIM relies on
    when it encodes prefix, middle and suffix apart, and text that starts with a special
    token encodes to that token alone. GPT-2's byte-level BPE behaves the same way.

    The file records `num_threads`, and unigram pieces depend on it (its EM sums run in
    parallel); BPE pieces do not. Pass num_threads=1 for a byte-reproducible file.
    """
    paths = [Path(input_path)] if isinstance(input_path, (str, os.PathLike)) else [Path(p) for p in input_path]
    if not paths:
        raise TokenizerError("no training text given")
    if model_type not in MODEL_TYPES:
        raise TokenizerError(f"model_type must be one of {', '.join(MODEL_TYPES)}, not {model_type!r}")
    specials = _check_special_tokens(special_tokens)
    floor = len(_META_PIECES) + len(specials) + (_BYTE_PIECES if byte_fallback else 0) + 1
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < floor:
        raise TokenizerError(
            f"vocab_size must be an integer of at least {floor} (meta pieces, special tokens"
            f"{', 256 bytes' if byte_fallback else ''} and one character), not {vocab_size!r}"
        )
    if num_threads is not None and (type(num_threads) is not int or num_threads < 1):
        raise TokenizerError(f"num_threads must be a positive integer, not {num_threads!r}")
    out = Path(output_path)
    if out.is_dir():
        raise TokenizerError(f"output {out} is a directory; give a file name such as {out / 'tokenizer.model'}")

    sentences = _read_sentences(paths)
    options = dict(
        model_type=model_type,
        vocab_size=vocab_size,
        byte_fallback=byte_fallback,
        normalization_rule_name="identity",  # exact round trip; see the module docstring
        remove_extra_whitespaces=False,  # likewise: runs of spaces and newlines survive
        allow_whitespace_only_pieces=True,  # indentation runs can become single pieces
        add_dummy_prefix=add_dummy_prefix,
        hard_vocab_limit=False,  # a small corpus yields a smaller vocabulary, not an error
        minloglevel=2,  # SentencePiece logs every step to stderr; keep only what we raise
        num_threads=num_threads or max(1, min(8, os.cpu_count() or 1)),
    )
    if specials:
        options["user_defined_symbols"] = list(specials)
    buf = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(sentence_iterator=iter(sentences), model_writer=buf, **options)
    except (RuntimeError, OSError, ValueError) as err:
        raise TokenizerError(_explain_training_error(err, vocab_size)) from None
    data = buf.getvalue()
    Tokenizer.from_bytes(data, source="the trained model")  # never install a model we cannot load
    _write_atomic(out, data)
    return out


def _check_special_tokens(tokens: Iterable[str]) -> tuple[str, ...]:
    seen: list[str] = []
    for tok in tokens:
        if not isinstance(tok, str) or not tok:
            raise TokenizerError(f"special tokens must be non-empty strings, not {tok!r}")
        if any(ch.isspace() for ch in tok):
            # Spaces become U+2581 before matching, so such a symbol could never be found.
            raise TokenizerError(f"special token {tok!r} contains whitespace")
        if tok in _META_PIECES or re.fullmatch(r"<0x[0-9A-F]{2}>", tok):
            raise TokenizerError(f"special token {tok!r} clashes with a SentencePiece meta or byte piece")
        if tok in seen:
            raise TokenizerError(f"special token {tok!r} is listed twice")
        seen.append(tok)
    return tuple(seen)


def _read(path: Path, what: str, read: Callable[[Path], _T], expected: str = "a file") -> _T:
    """read(path), with a TokenizerError that names the file as `what` (and says it should be
    `expected` where it is a directory) when it is missing, a directory, unreadable or not UTF-8."""
    try:
        return read(path)
    except FileNotFoundError:
        raise TokenizerError(f"{what} {path} does not exist") from None
    except IsADirectoryError:
        raise TokenizerError(f"{what} {path} is a directory, not {expected}") from None
    except UnicodeDecodeError as err:
        raise TokenizerError(f"{what} {path} is not UTF-8 (bad byte at offset {err.start})") from None
    except OSError as err:
        raise TokenizerError(f"cannot read {what} {path}: {err.strerror}") from None


def _read_sentences(paths: Sequence[Path]) -> list[str]:
    # Read here rather than letting SentencePiece open the files: we get clear errors for
    # missing or non-UTF-8 files, and file names with commas need no escaping.
    sentences: list[str] = []
    for path in paths:
        text = _read(path, "training text", lambda p: p.read_text(encoding="utf-8"))
        sentences.extend(line for line in text.splitlines() if line.strip())
    if not sentences:
        names = ", ".join(str(p) for p in paths)
        raise TokenizerError(f"training text {names} has no non-blank lines to train on")
    return sentences


def _explain_training_error(err: Exception, vocab_size: int) -> str:
    msg = str(err)
    m = re.search(r"smaller than required_chars\. (\d+) vs (\d+)", msg)
    if m:
        return (
            f"vocab_size {vocab_size} is too small for this text: it needs at least {m.group(2)} "
            "pieces (meta, special and byte pieces plus every character kept)"
        )
    m = re.search(r"Vocabulary size too high \((\d+)\)\. Please set it to a value <= (\d+)", msg)
    if m:
        return f"vocab_size {vocab_size} is too large for this text; at most {m.group(2)} is possible"
    lines = msg.strip().splitlines()
    first = lines[0] if lines else ""
    # Drop SentencePiece's "INTERNAL: src/file.cc(123) [check] " prefix; keep the reason.
    first = re.sub(r"^[A-Z_]+: (src/\S+\(\d+\) \[.*?\] ?)?", "", first).strip()
    return f"SentencePiece training failed: {first or type(err).__name__}"


def _write_atomic(path: Path, data: bytes) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as err:
        raise TokenizerError(f"cannot write {path}: {err.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; a shipped model must be readable by all
        os.replace(tmp, path)
    except BaseException as err:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(err, OSError):
            raise TokenizerError(f"cannot write {path}: {err.strerror}") from None
        raise


# --------------------------------------------------------------------------- loading


def _read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise ValueError("truncated or overlong varint")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, pos


def _proto_fields(buf: bytes):
    """Yield (field number, value) for a protobuf message; value is int or bytes."""
    pos = 0
    while pos < len(buf):
        key, pos = _read_varint(buf, pos)
        field, wire = key >> 3, key & 7
        if field == 0:
            raise ValueError("field number 0")
        if wire == 0:
            value, pos = _read_varint(buf, pos)
        elif wire == 2:
            size, pos = _read_varint(buf, pos)
            if pos + size > len(buf):
                raise ValueError("truncated field")
            value, pos = buf[pos : pos + size], pos + size
        elif wire in (1, 5):
            size = 8 if wire == 1 else 4
            if pos + size > len(buf):
                raise ValueError("truncated field")
            value, pos = buf[pos : pos + size], pos + size
        else:
            raise ValueError(f"unknown wire type {wire}")
        yield field, value


def _inspect_model(data: bytes) -> tuple[int, str]:
    """(number of pieces, model type) from a serialized ModelProto.

    The protobuf package is not a dependency, and SentencePiece accepts an empty message
    (then complains on stderr at first use), so we read the two fields we need ourselves.
    """
    pieces, model_type = 0, "unigram"  # proto default
    for field, value in _proto_fields(data):
        if field == 1:
            pieces += 1
        elif field == 2 and isinstance(value, bytes):
            for sub, v in _proto_fields(value):
                if sub == 3 and isinstance(v, int):
                    model_type = _PROTO_MODEL_TYPES.get(v, f"type {v}")
    if pieces == 0:
        raise ValueError("no pieces")
    return pieces, model_type


def _meta_id(piece: str) -> property:
    """The read-only property `<piece>_id` of Tokenizer: the id of that meta piece, or None
    where SentencePiece says -1 (the model has it disabled)."""

    def get(self: Tokenizer) -> int | None:
        i = getattr(self._sp, f"{piece}_id")()
        return None if i < 0 else i

    return property(get, doc=f"The id of the {piece} meta piece, or None if the model has none.")


class Tokenizer:
    """A loaded SentencePiece model (BPE or unigram)."""

    def __init__(self, processor: spm.SentencePieceProcessor, model_type: str, source: str = ""):
        self._sp = processor
        self.type: str = model_type
        self.source = source
        self._size = processor.get_piece_size()

    @classmethod
    def load(cls, path: str | os.PathLike) -> Tokenizer:
        path = Path(path)
        reason = why_not_regular(path)  # a FIFO or /dev/zero would block or read forever
        if reason is not None and reason != "does not exist":
            raise TokenizerError(f"tokenizer {path} {reason}; a tokenizer is a SentencePiece .model file")
        if reason is None and path.stat().st_size > MAX_MODEL_BYTES:
            raise TokenizerError(f"tokenizer {path} is larger than {MAX_MODEL_BYTES >> 20 or 1} MiB, "
                                 "the most taxonc reads for a SentencePiece model")
        return cls.from_bytes(_read(path, "tokenizer", Path.read_bytes, "a .model file"), source=str(path))

    @classmethod
    def from_bytes(cls, data: bytes, source: str = "<bytes>") -> Tokenizer:
        if not data:
            raise TokenizerError(f"tokenizer {source} is empty")
        try:
            _, model_type = _inspect_model(data)
            processor = spm.SentencePieceProcessor(model_proto=data)
        except (ValueError, RuntimeError, OSError) as err:
            reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise TokenizerError(f"tokenizer {source} is not a SentencePiece model ({reason})") from None
        if model_type not in MODEL_TYPES:
            raise TokenizerError(f"tokenizer {source} is a {model_type} model; taxonc supports bpe and unigram")
        return cls(processor, model_type, source)

    @classmethod
    def default(cls) -> Tokenizer:
        return cls.load(default_tokenizer_path())

    @property
    def processor(self) -> spm.SentencePieceProcessor:
        """The SentencePiece processor itself (its normaliser and pieces, for HF conventions)."""
        return self._sp

    # --- vocabulary

    @property
    def vocab_size(self) -> int:
        return self._size

    def __len__(self) -> int:
        return self._size

    bos_id = _meta_id("bos")
    eos_id = _meta_id("eos")
    pad_id = _meta_id("pad")
    unk_id = _meta_id("unk")

    def token_id(self, piece: str) -> int | None:
        """The id of `piece`, or None if the vocabulary lacks it (not the unknown id)."""
        i = self._sp.piece_to_id(piece)
        if i == self._sp.unk_id() and piece != self._sp.id_to_piece(i):
            return None
        return i

    def piece(self, token_id: int) -> str:
        self.check_ids([token_id])
        return self._sp.id_to_piece(int(token_id))

    # --- text

    @property
    def stop_ids(self) -> tuple[int, ...]:
        """The ids that end generation: the EOS piece, where the model has one."""
        return () if self.eos_id is None else (self.eos_id,)

    def encode(self, text: str, *, bos: bool = False, eos: bool = False, add_special_tokens: bool = True) -> list[int]:
        """The ids of `text`; BOS and EOS only where asked for (a spec-trained model's prompts have
        neither, so `add_special_tokens`, which asks for what the tokenizer adds to a prompt, adds nothing)."""
        if not isinstance(text, str):
            raise TypeError(f"encode takes a str, not {type(text).__name__}")
        return self._sp.encode(text, add_bos=bos, add_eos=eos)

    def decode(self, ids: Iterable[int]) -> str:
        ids = [int(i) for i in ids]
        try:
            return self._sp.decode(ids)
        except IndexError:
            self.check_ids(ids)
            raise

    def check_ids(self, ids: Iterable[int]) -> None:
        """TokenizerError unless every id is in the vocabulary."""
        for i in ids:
            if not 0 <= int(i) < self._size:
                raise TokenizerError(f"token id {int(i)} is outside the vocabulary (0..{self._size - 1})")

    def decode_stream(self) -> DecodeStream:
        return DecodeStream(self)

    def __repr__(self) -> str:
        where = f" from {self.source}" if self.source else ""
        return f"Tokenizer({self.type}, {self._size} pieces{where})"
