"""tokenizer.model of a Hugging Face directory: SentencePiece pieces, transformers' conventions.

transformers 5 never runs SentencePiece on these files; it builds its class's pipeline
(hf_pipelines.py: LLaMA or T5) around the pieces. SentencePiece still gives the pieces here;
this module does what the class does around them:

LLAMA  the model with identity normalisation and no dummy prefix is given the text with " " as
       "▁" and the class's one "▁" prefix; BOS/EOS as `add_bos_token`/`add_eos_token` say.
T5     the model's own normalisation, then a split on Unicode whitespace (as transformers'
       WhitespaceSplit) and one "▁" per word; EOS always appended.

Added tokens (tokenizer_config.json's added_tokens_decoder, and the named special tokens) are
matched whole in the raw text first, longest first, and each stretch between them is encoded
on its own, as transformers does. Decoding skips special tokens and uses the class's decoder.
Other classes are refused by name: guessing a convention would give a silently different prompt.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

import sentencepiece as spm

from .decode_stream import DecodeStream
from .errors import TokenizerError
from .hf_pipelines import CLASS_CONVENTIONS, SPACE, Convention, decoder, prepend_scheme
from .hf_tokenizer_config import AddedToken, TokenizerConfig, clean_up_tokenization
from .tokenizer import Tokenizer, _proto_fields, _read_varint


# Unicode White_Space (Rust's char::is_whitespace, which transformers' T5 WhitespaceSplit uses);
# Python's str.split() also splits on \x1c-\x1f, which are not White_Space.
_WHITESPACE = re.compile("[\t\n\v\f\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]+")
# NormalizerSpec (sentencepiece_model.proto): ModelProto field 3; its name, charsmap, dummy
# prefix and whitespace-collapsing fields.
_NORMALIZER, _NAME, _CHARSMAP, _DUMMY_PREFIX, _COLLAPSE = 3, 1, 2, 3, 4


def _field(number: int, wire: int, payload: bytes) -> bytes:
    key = number << 3 | wire
    out = bytearray()
    for value in (key, len(payload)) if wire == 2 else (key,):
        while value > 0x7F:
            out.append(value & 0x7F | 0x80)
            value >>= 7
        out.append(value)
    return bytes(out) + payload


def _raw_fields(buf: bytes) -> list[tuple[int, bytes, bytes]]:
    """(field number, whole encoded field, payload) for each field of a message, in order."""
    out, pos = [], 0
    for number, value in _proto_fields(buf):  # validates; the raw bytes are re-sliced below
        start = pos
        key, pos = _read_varint(buf, pos)
        if key & 7 == 0:
            _, pos = _read_varint(buf, pos)
        elif key & 7 == 2:
            size, pos = _read_varint(buf, pos)
            pos += size
        else:
            pos += 8 if key & 7 == 1 else 4
        out.append((number, buf[start:pos], value if isinstance(value, bytes) else b""))
    return out


def raw_pieces_model(data: bytes) -> bytes:
    """The same model with identity normalisation, no dummy prefix and whitespace kept: it then
    turns exactly the "▁"-escaped text it is given into pieces, as transformers' LLaMA class does."""
    fields = _raw_fields(data)
    spec = next((payload for number, _, payload in fields if number == _NORMALIZER), b"")
    kept = b"".join(raw for number, raw, _ in _raw_fields(spec) if number not in (_NAME, _CHARSMAP, _DUMMY_PREFIX, _COLLAPSE))
    spec = _field(_NAME, 2, b"identity") + kept + _field(_DUMMY_PREFIX, 0, b"\x00") + _field(_COLLAPSE, 0, b"\x00")
    return b"".join(_field(_NORMALIZER, 2, spec) if number == _NORMALIZER else raw for number, raw, _ in fields)


class HFSentencePieceTokenizer:
    """A tokenizer.model with the tokenizer_config.json beside it; encode() gives what
    transformers' AutoTokenizer gives for the prompt, decode() what it shows for generated ids."""

    def __init__(self, path: Path, config: TokenizerConfig):
        cls = config.tokenizer_class
        where = config.files[0] if config.files else str(path)
        if cls not in CLASS_CONVENTIONS:
            raise TokenizerError(f"{where}: tokenizer_class {cls!r} is not one taxonc can run from a tokenizer.model; "
                                 f"supported: {', '.join(CLASS_CONVENTIONS)} (or give a tokenizer.json)")
        self.convention = CLASS_CONVENTIONS[cls]
        self.config = config
        self.source = str(path)
        self._sp = Tokenizer.load(path)  # regular file, size and format checks
        self._raw = self._raw_processor() if self.convention is Convention.LLAMA else None
        self._added = self._added_tokens(config)
        self.vocab_size = max(self._sp.vocab_size, max(self._added.values(), default=-1) + 1)
        self._by_id = {i: t for t, i in self._added.items()}
        named = {*config.specials.values(), *config.extra_specials}
        self._special = {i for t, i in self._added.items() if t in named or self._flags(t).special}
        self.bos_id, self.eos_id, self.pad_id, self.unk_id = (
            self._added.get(config.special(n)) for n in ("bos_token", "eos_token", "pad_token", "unk_token"))
        add_bos = bool(config.add_bos_token) and self.bos_id is not None
        add_eos = self.convention is Convention.T5 or bool(config.add_eos_token)
        self._head = [self.bos_id] if add_bos and self.convention is Convention.LLAMA else []
        self._tail = [self.eos_id] if add_eos and self.eos_id is not None else []
        self._prefix = prepend_scheme(config)
        self._matched = sorted(self._added, key=lambda t: (-len(t), t))  # longest first: leftmost-longest
        alternatives = (f"(?P<t{n}>{self._pattern(t)})" for n, t in enumerate(self._matched))
        self._split = re.compile("|".join(alternatives)) if self._matched else None
        self._decoder = decoder(self.convention, config)
        self.groups_byte_runs = self.convention is Convention.LLAMA  # its decoder is ByteFallback
        self._cleanup = config.clean_up_tokenization_spaces and self._sp.type != "bpe"

    def _raw_processor(self) -> spm.SentencePieceProcessor:
        try:
            return spm.SentencePieceProcessor(model_proto=raw_pieces_model(self._sp.processor.serialized_model_proto()))
        except (ValueError, RuntimeError, OSError) as err:
            reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise TokenizerError(f"tokenizer {self.source}: its normaliser cannot be set as LLaMA's ({reason})") from None

    # --- vocabulary

    def _added_tokens(self, config: TokenizerConfig) -> dict[str, int]:
        """content -> id of every token matched whole: the config's added tokens and the named
        special tokens (a special token the model lacks gets the next free id, as transformers gives it)."""
        added = {t.content: i for i, t in sorted(config.added.items())}
        size = max(self._sp.vocab_size, max(added.values(), default=-1) + 1)
        for token in [*config.specials.values(), *config.extra_specials]:
            if token in added:
                continue
            known = self._sp.token_id(token)
            added[token] = known if known is not None else size
            size += known is None
        for token, i in added.items():
            known = self._sp.token_id(token)
            if i < self._sp.vocab_size and known != i:
                raise TokenizerError(f"{config.files[0] if config.files else self.source}: added token {token!r} has id {i}, "
                                     f"but {self.source} has {'it at ' + str(known) if known is not None else 'no such piece'}")
        return added

    def _flags(self, content: str) -> AddedToken:
        for i, entry in self.config.added.items():
            if entry.content == content:
                return entry
        return AddedToken(content)

    def _pattern(self, content: str) -> str:
        flags = self._flags(content)
        core = re.escape(content)
        if flags.single_word:
            core = rf"(?<!\w){core}(?!\w)"
        left, right = (r"\s*" if flags.lstrip else ""), (r"\s*" if flags.rstrip else "")
        return left + core + right

    @property
    def stop_ids(self) -> tuple[int, ...]:
        return self.config.stop_ids or ((self.eos_id,) if self.eos_id is not None else ())

    def __len__(self) -> int:
        return self.vocab_size

    def token_id(self, piece: str) -> int | None:
        return self._added[piece] if piece in self._added else self._sp.token_id(piece)

    def piece(self, token_id: int) -> str:
        self.check_ids([token_id])
        return self._by_id.get(int(token_id)) or self._sp.piece(int(token_id))

    # --- text

    def _stretch(self, text: str, at_start: bool) -> list[int]:
        if self.convention is Convention.T5:  # normalised, then split on White_Space; each word gets its "▁"
            normalized = self._sp.processor.normalize(text).replace(SPACE, " ")
            return self._sp.encode(" ".join(w for w in _WHITESPACE.split(normalized) if w))
        text = text.replace(" ", SPACE)
        wanted = self._prefix == "always" or (self._prefix == "first" and at_start)
        if wanted and text and not text.startswith(SPACE):
            text = SPACE + text
        return self._raw.encode(text) if text else []

    def encode(self, text: str, *, add_special_tokens: bool = True) -> list[int]:
        if not isinstance(text, str):
            raise TypeError(f"encode takes a str, not {type(text).__name__}")
        ids: list[int] = []
        pos = 0
        for match in self._split.finditer(text) if self._split else ():
            ids += self._stretch(text[pos : match.start()], pos == 0)
            ids.append(self._added[self._matched[int(match.lastgroup[1:])]])
            pos = match.end()
        ids += self._stretch(text[pos:], pos == 0)
        return [*self._head, *ids, *self._tail] if add_special_tokens else ids

    def decode(self, ids: Iterable[int]) -> str:
        ids = [int(i) for i in ids]
        self.check_ids(ids)
        tokens = [self._by_id.get(i) or self._sp.processor.id_to_piece(i) for i in ids if i not in self._special]
        text = self._decoder.decode(tokens)
        return clean_up_tokenization(text) if self._cleanup else text

    def check_ids(self, ids: Iterable[int]) -> None:
        for i in ids:
            i = int(i)
            if not (0 <= i < self._sp.vocab_size or i in self._by_id):
                raise TokenizerError(f"token id {i} is outside the vocabulary of {self.source} (0..{self.vocab_size - 1})")

    def is_special(self, token_id: int) -> bool:
        return int(token_id) in self._special

    def decode_stream(self) -> DecodeStream:
        return DecodeStream(self)

    def __repr__(self) -> str:
        return f"HFSentencePieceTokenizer({self.convention.value}, {self.vocab_size} ids from {self.source})"
