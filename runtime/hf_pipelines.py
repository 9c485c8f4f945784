"""The pipelines transformers 5 builds in code for some tokenizer classes, whatever the file says.

transformers 5 keeps a tokenizer.json's vocabulary, merges and added tokens but, for a class
with its own constructor, replaces the rest with the class's pipeline. For GPT2Tokenizer and
GPTNeoXTokenizer that pipeline is the one their files already hold. Two differ from real files:

LLAMA (LlamaTokenizer, LlamaTokenizerFast)
    LLaMA-2's and Mistral's files prepend "▁" to every stretch between added tokens, as a
    normaliser. transformers: no normaliser; " " becomes "▁"; one "▁" before the first stretch
    only ("first"; `legacy: true` gives every stretch one, `add_prefix_space: false` none);
    the decoder turns "▁" into spaces, joins byte-fallback pieces and drops one leading space.
T5 (T5Tokenizer, T5TokenizerFast)
    T5's files collapse runs of spaces after the character map. transformers: the character map
    only, then a split on Unicode whitespace, "▁" before every word; EOS after the text always.

The same conventions apply to a bare tokenizer.model of these classes (tokenizer_hf_sp.py).
"""

from __future__ import annotations

import base64
import enum
from typing import Any

from .hf_tokenizer_config import TokenizerConfig

SPACE = "\u2581"  # SentencePiece's space marker


class Convention(enum.Enum):
    LLAMA = "llama"
    T5 = "t5"


CLASS_CONVENTIONS: dict[str, Convention] = {
    "LlamaTokenizer": Convention.LLAMA,
    "LlamaTokenizerFast": Convention.LLAMA,
    "T5Tokenizer": Convention.T5,
    "T5TokenizerFast": Convention.T5,
}


def prepend_scheme(config: TokenizerConfig) -> str:
    """Where LLaMA puts its "▁" prefix: "first" stretch, "always" (legacy) or "never"."""
    if config.add_prefix_space is False:
        return "never"
    return "always" if config.legacy else "first"


def decoder(convention: Convention, config: TokenizerConfig):
    from tokenizers import decoders

    if convention is Convention.T5:
        return decoders.Metaspace(replacement=SPACE, prepend_scheme="always", split=True)
    steps = [decoders.Replace(SPACE, " "), decoders.ByteFallback(), decoders.Fuse()]
    return decoders.Sequence(steps + ([decoders.Strip(" ", 1, 0)] if config.add_prefix_space is not False else []))


def _charsmap(normalizer: Any) -> bytes | None:
    """The SentencePiece character map inside a tokenizer.json normaliser, if any."""
    parts = normalizer.get("normalizers", [normalizer]) if isinstance(normalizer, dict) else []
    for part in parts:
        if isinstance(part, dict) and part.get("type") == "Precompiled" and isinstance(part.get("precompiled_charsmap"), str):
            return base64.b64decode(part["precompiled_charsmap"])
    return None


def rebuild(tok, data: dict[str, Any], convention: Convention, config: TokenizerConfig) -> None:
    """Give a loaded tokenizers.Tokenizer the normaliser, pre-tokeniser and decoder of the class."""
    from tokenizers import normalizers, pre_tokenizers

    if convention is Convention.LLAMA:
        tok.normalizer = None
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement=SPACE, prepend_scheme=prepend_scheme(config), split=False)
    else:
        charsmap = _charsmap(data.get("normalizer"))
        tok.normalizer = normalizers.Precompiled(charsmap) if charsmap else None
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.WhitespaceSplit(),
            pre_tokenizers.Metaspace(replacement=SPACE, prepend_scheme="always", split=True),
        ])
    tok.decoder = decoder(convention, config)


def t5_post_processor(eos: str, eos_id: int):
    """T5's: EOS after every text, whatever add_bos_token and add_eos_token say."""
    from tokenizers import processors

    return processors.TemplateProcessing(single=f"$A {eos}", pair=f"$A {eos} $B {eos}", special_tokens=[(eos, eos_id)])
