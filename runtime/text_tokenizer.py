"""One tokenizer interface, three file formats, chosen by what a directory holds.

| a directory holding                         | gives                    | behaves as                      |
|---------------------------------------------|--------------------------|---------------------------------|
| tokenizer.json (+ tokenizer_config.json)    | JsonTokenizer            | transformers' AutoTokenizer     |
| tokenizer.model + tokenizer_config.json     | HFSentencePieceTokenizer | transformers' AutoTokenizer     |
| tokenizer.model alone                       | Tokenizer                | SentencePiece (taxonc-trained)  |

tokenizer.json wins where both are present, as in transformers. A file that is present is read
and checked, never skipped: a folder or a dangling link named tokenizer.json is an error, not
a fall back to another tokenizer. Every error is one line naming the file.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol, runtime_checkable

from .decode_stream import DecodeStream
from .files import present
from .hf_tokenizer_config import CONFIG_FILE, read_tokenizer_config
from .tokenizer import Tokenizer
from .tokenizer_hf_sp import HFSentencePieceTokenizer
from .tokenizer_json import JSON_FILE, JsonTokenizer

MODEL_FILE = "tokenizer.model"


class TokenizerFormat(enum.Enum):
    TOKENIZERS_JSON = "tokenizer.json"
    HF_SENTENCEPIECE = "tokenizer.model with tokenizer_config.json"
    SENTENCEPIECE = "tokenizer.model"


@runtime_checkable
class TextTokenizer(Protocol):
    """What `taxonc run` needs from a tokenizer.

    encode(prompt) is the prompt as the model saw prompts in training (BOS and EOS as the
    tokenizer's config says); decode(ids) is generated text as shown, special tokens skipped.
    vocab_size is one more than the largest id, to compare with the embedding's rows.
    """

    source: str
    vocab_size: int
    bos_id: int | None
    eos_id: int | None
    pad_id: int | None

    @property
    def stop_ids(self) -> tuple[int, ...]: ...

    def encode(self, text: str, *, add_special_tokens: bool = True) -> list[int]: ...

    def decode(self, ids: Iterable[int]) -> str: ...

    def token_id(self, piece: str) -> int | None: ...

    def check_ids(self, ids: Iterable[int]) -> None: ...

    def decode_stream(self) -> DecodeStream: ...


def decoder_start_fallback(tokenizer: TextTokenizer) -> int | None:
    """Where an encoder-decoder's decoder starts when its spec sets no tokenizer.decoder_start_id.

    The pad id first: T5 and its descendants (Switch, FLAN-T5) start from pad, and so does
    transformers' T5 when a config names no start id. Else BOS, the one id a tokenizer reserves
    for the start of a sequence (taxonc-trained SentencePiece models have BOS and no pad).
    """
    return tokenizer.pad_id if tokenizer.pad_id is not None else tokenizer.bos_id


def format_in(directory: Path) -> TokenizerFormat | None:
    """Which tokenizer `directory` holds, or None where it holds no tokenizer file."""
    if present(directory / JSON_FILE):
        return TokenizerFormat.TOKENIZERS_JSON
    if present(directory / MODEL_FILE):
        return TokenizerFormat.HF_SENTENCEPIECE if present(directory / CONFIG_FILE) else TokenizerFormat.SENTENCEPIECE
    return None


def tokenizer_in(directory: str | Path) -> TextTokenizer | None:
    """The tokenizer an artifact or Hugging Face directory holds, or None where it holds none."""
    directory = Path(directory)
    fmt = format_in(directory)
    if fmt is TokenizerFormat.TOKENIZERS_JSON:
        return JsonTokenizer(directory / JSON_FILE, read_tokenizer_config(directory))
    if fmt is TokenizerFormat.HF_SENTENCEPIECE:
        return HFSentencePieceTokenizer(directory / MODEL_FILE, read_tokenizer_config(directory))
    if fmt is TokenizerFormat.SENTENCEPIECE:
        return Tokenizer.load(directory / MODEL_FILE)
    return None


def load_tokenizer(path: str | Path) -> TextTokenizer:
    """A tokenizer from a directory (as tokenizer_in), a tokenizer.json (its directory's config
    files apply), or a SentencePiece .model (HF conventions where tokenizer_config.json sits beside
    a file named tokenizer.model; otherwise plain SentencePiece)."""
    path = Path(path)
    if path.is_dir():
        found = tokenizer_in(path)
        if found is None:
            from .errors import TokenizerError

            raise TokenizerError(f"tokenizer directory {path} holds neither {JSON_FILE} nor {MODEL_FILE}")
        return found
    if path.suffix == ".json":
        return JsonTokenizer(path, read_tokenizer_config(path.parent))
    if path.name == MODEL_FILE and present(path.parent / CONFIG_FILE):
        return HFSentencePieceTokenizer(path, read_tokenizer_config(path.parent))
    return Tokenizer.load(path)
