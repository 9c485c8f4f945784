"""tokenizer.json through the `tokenizers` library, with the special-token rules of transformers.

The file holds the whole pipeline (normaliser, pre-tokeniser, model, post-processor, decoder),
and transformers runs the same library on it. What transformers adds on top, from
tokenizer_config.json, is done here the same way:
- special tokens named in the config but missing from the file's added tokens are added
  (matched whole in text, skipped when decoding);
- where the config says `add_bos_token` or `add_eos_token`, or the file has no post-processor,
  the post-processor becomes "[BOS] $A [EOS]" as those flags say; otherwise the file's own one
  (GPT-2: nothing added; LLaMA-3: BOS) stands;
- decode skips special tokens, as generated text is shown; `clean_up_tokenization_spaces`
  applies to non-BPE models only, as in transformers 5.

Where transformers 5 replaces the file's pipeline with its class's own (LLaMA, T5), the
class's pipeline is used here too (hf_pipelines.py).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from .decode_stream import DecodeStream
from .errors import TokenizerError
from .hf_pipelines import CLASS_CONVENTIONS, Convention, rebuild, t5_post_processor
from .hf_tokenizer_config import TokenizerConfig, clean_up_tokenization, read_json_text

JSON_FILE = "tokenizer.json"
# Gemma's tokenizer.json, among the largest real ones, is 34 MB.
MAX_JSON_BYTES = 256 << 20


def _add_config_tokens(tok, config: TokenizerConfig) -> None:
    """What transformers adds from tokenizer_config.json: its added tokens where the file lacks
    them (or flags them otherwise), then every named special token not yet an added token."""
    from tokenizers import AddedToken

    have = {t.content: t for t in tok.get_added_tokens_decoder().values()}
    for _, entry in sorted(config.added.items()):
        old = have.get(entry.content)
        if old is None or old.special != entry.special:
            tok.add_tokens([AddedToken(entry.content, single_word=entry.single_word, lstrip=entry.lstrip,
                                       rstrip=entry.rstrip, normalized=entry.normalized, special=entry.special)])
    have = {t.content for t in tok.get_added_tokens_decoder().values()}
    missing = [t for t in [*config.specials.values(), *config.extra_specials] if t not in have]
    if missing:
        tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in dict.fromkeys(missing)])


class JsonTokenizer:
    """A tokenizer.json tokenizer; encode() gives the prompt ids transformers' tokenizer(prompt) gives."""

    def __init__(self, path: Path, config: TokenizerConfig | None = None):
        from tokenizers import Tokenizer, processors

        self.source = str(path)
        text, data = read_json_text(path, "tokenizer", MAX_JSON_BYTES)  # JSON errors with line and column first
        tok = self._call(Tokenizer.from_str, text, doing="is not a tokenizers file")
        # transformers' tokenizer(prompt) pads and truncates nothing, whatever the file says
        # (and a file's fixed padding length of 10**12 would exhaust memory at the first encode)
        tok.no_padding()
        tok.no_truncation()
        config = config or TokenizerConfig()
        self.config = config
        convention = CLASS_CONVENTIONS.get(config.tokenizer_class or "")
        if convention is not None:
            self._call(rebuild, tok, data, convention, config, doing=f"cannot take {config.tokenizer_class}'s pipeline")
        self._call(_add_config_tokens, tok, config, doing="cannot take the config's added tokens")
        for i, entry in config.added.items():
            if tok.token_to_id(entry.content) != i:
                raise TokenizerError(f"{config.files[0] if config.files else path}: added_tokens_decoder gives "
                                     f"{entry.content!r} id {i}, but {path} gives it {tok.token_to_id(entry.content)}")
        self.bos_id = self._id("bos_token", tok)
        self.eos_id = self._id("eos_token", tok)
        self.pad_id = self._id("pad_token", tok)
        self.unk_id = self._id("unk_token", tok)
        if convention is Convention.T5 and self.eos_id is not None:
            tok.post_processor = t5_post_processor(config.special("eos_token"), self.eos_id)
        elif config.add_bos_token is not None or config.add_eos_token is not None or tok.post_processor is None:
            tok.post_processor = self._template(processors)
        vocab = tok.get_vocab(with_added_tokens=True)
        self.vocab_size = max(vocab.values(), default=-1) + 1
        self._cleanup = config.clean_up_tokenization_spaces and type(tok.model).__name__ != "BPE"
        self._tok = tok
        self.groups_byte_runs = convention is Convention.LLAMA or "ByteFallback" in json.dumps(data.get("decoder"))
        self._special = {i for i, t in tok.get_added_tokens_decoder().items() if t.special}

    def _call(self, fn, *args, doing: str, **kwargs):
        """fn(*args) from the tokenizers library, whose failures (a plain Exception, or a Rust panic,
        which is not an Exception) become a one-line TokenizerError naming the file."""
        try:
            return fn(*args, **kwargs)
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as err:
            reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise TokenizerError(f"tokenizer {self.source} {doing} ({reason[:200]})") from None

    def _template(self, processors):
        """transformers' update_post_processor: "[BOS] $A [EOS]" as add_bos_token and add_eos_token say."""
        bos = (self.config.special("bos_token"), self.bos_id) if self.config.add_bos_token and self.bos_id is not None else None
        eos = (self.config.special("eos_token"), self.eos_id) if self.config.add_eos_token and self.eos_id is not None else None
        single = " ".join([*([f"{bos[0]}:0"] if bos else []), "$A:0", *([f"{eos[0]}:0"] if eos else [])])
        pair = " ".join([single, *([f"{bos[0]}:1"] if bos else []), "$B:1", *([f"{eos[0]}:1"] if eos else [])])
        return processors.TemplateProcessing(single=single, pair=pair, special_tokens=[t for t in (bos, eos) if t])

    def _id(self, name: str, tok) -> int | None:
        content = self.config.special(name)
        return None if content is None else tok.token_to_id(content)

    @property
    def stop_ids(self) -> tuple[int, ...]:
        """The ids that end generation: generation_config.json's eos_token_id, else the EOS token."""
        return self.config.stop_ids or ((self.eos_id,) if self.eos_id is not None else ())

    def __len__(self) -> int:
        return self.vocab_size

    def token_id(self, piece: str) -> int | None:
        return self._tok.token_to_id(piece)

    def piece(self, token_id: int) -> str:
        self.check_ids([token_id])
        return self._tok.id_to_token(int(token_id)) or ""

    def encode(self, text: str, *, add_special_tokens: bool = True) -> list[int]:
        if not isinstance(text, str):
            raise TypeError(f"encode takes a str, not {type(text).__name__}")
        return self._call(self._tok.encode, text, add_special_tokens=add_special_tokens, doing="cannot encode the text").ids

    def decode(self, ids: Iterable[int]) -> str:
        ids = [int(i) for i in ids]
        self.check_ids(ids)
        text = self._call(self._tok.decode, ids, skip_special_tokens=True, doing="cannot decode the ids")
        return clean_up_tokenization(text) if self._cleanup else text

    def check_ids(self, ids: Iterable[int]) -> None:
        for i in ids:
            if not 0 <= int(i) < self.vocab_size or self._tok.id_to_token(int(i)) is None:
                raise TokenizerError(f"token id {int(i)} is outside the vocabulary of {self.source} (0..{self.vocab_size - 1})")

    def is_special(self, token_id: int) -> bool:
        return int(token_id) in self._special

    def decode_stream(self) -> DecodeStream:
        return DecodeStream(self)

    def __repr__(self) -> str:
        return f"JsonTokenizer({self.vocab_size} ids from {self.source})"
