"""Streaming decode: the text each new token completes, for any tokenizer with decode()."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Protocol

# A byte-fallback piece (LLaMA, SentencePiece): one UTF-8 byte of a character the vocabulary lacks.
_BYTE_PIECE = re.compile(r"<0x[0-9A-Fa-f]{2}>")


class Decoding(Protocol):
    def decode(self, ids: Iterable[int]) -> str: ...

    def check_ids(self, ids: Iterable[int]) -> None: ...

    def piece(self, token_id: int) -> str: ...

    # True where decode() turns a whole run of byte-fallback pieces into U+FFFDs when the run is
    # not valid UTF-8 (the tokenizers library's ByteFallback); SentencePiece replaces byte by byte.
    groups_byte_runs: bool

    def is_special(self, token_id: int) -> bool: ...  # skipped by decode(); needed where groups_byte_runs


class DecodeStream:
    """Turns ids that arrive one at a time into the text to print for each.

    Decoding each id on its own goes wrong three ways: a character spans several ids (an
    emoji is four <0xNN> byte-fallback pieces, or up to four byte-level BPE pieces); decoders
    drop the space marker of whichever piece comes first in a decode call (SentencePiece,
    LLaMA's Strip, T5's Metaspace); and a run of byte-fallback pieces decodes as one group,
    all U+FFFD when the run is not valid UTF-8, so a byte must not be shown before its run
    ends. So each step decodes a short window that begins at an id already printed: that first
    piece is treated the same way in the old and the new decode, and the new text is what the
    new decode adds. A step that ends in a byte-fallback piece, or whose text ends in U+FFFD (an
    unfinished UTF-8 sequence), prints nothing until a later id completes it, or until flush().
    Joining every push() and the final flush() gives exactly decode(ids).
    """

    def __init__(self, tokenizer: Decoding):
        self._tok = tokenizer
        self._ids: list[int] = []
        self._start = 0  # window start: the first id printed by the last step that printed
        self._printed = 0  # ids[:_printed] are printed

    @property
    def ids(self) -> list[int]:
        return list(self._ids)

    def push(self, token_id: int) -> str:
        """Add one id; return the text it completes ("" while a character is unfinished)."""
        self._tok.check_ids([token_id])
        self._ids.append(int(token_id))
        return self._step(final=False)

    def flush(self) -> str:
        """Return whatever is still held back, even an unfinished character (as U+FFFD)."""
        return self._step(final=True)

    def _in_byte_run(self) -> bool:
        """Whether the last shown piece is a byte-fallback piece whose run a later id may extend
        (skipped special tokens do not end a run: decode() drops them before grouping)."""
        if not getattr(self._tok, "groups_byte_runs", False):
            return False
        for token in reversed(self._ids):
            if not self._tok.is_special(token):
                return _BYTE_PIECE.fullmatch(self._tok.piece(token)) is not None
        return False

    def _step(self, final: bool) -> str:
        old = self._tok.decode(self._ids[self._start : self._printed])
        new = self._tok.decode(self._ids[self._start :])
        if not final and (len(new) <= len(old) or new.endswith("\ufffd") or self._in_byte_run()):
            return ""
        self._start, self._printed = self._printed, len(self._ids)
        return new[len(old) :]
