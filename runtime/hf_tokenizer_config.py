"""What a Hugging Face model directory says about its tokenizer, read as transformers reads it.

tokenizer_config.json names the class, the special tokens (BOS, EOS, UNK, PAD and extra ones),
whether a prompt gets BOS/EOS (`add_bos_token`, `add_eos_token`) and the added tokens by id
(`added_tokens_decoder`). special_tokens_map.json is the older place for the special tokens:
transformers reads it only when tokenizer_config.json has no `added_tokens_decoder`, and then its
values win. generation_config.json gives the ids that end generation (`eos_token_id`, one id or
a list). Every file is optional; each one present must be a small regular JSON file whose keys
have the types below, or the error names the file, the key and what is allowed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import TokenizerError
from .files import present, why_not_regular

CONFIG_FILE = "tokenizer_config.json"
SPECIAL_TOKENS_FILE = "special_tokens_map.json"
GENERATION_FILE = "generation_config.json"
# A real tokenizer_config.json with a chat template is about 50 KB; these files hold no vocabulary.
MAX_CONFIG_BYTES = 16 << 20
NAMED_SPECIALS = ("bos_token", "eos_token", "unk_token", "pad_token")


@dataclass(frozen=True)
class AddedToken:
    """A token matched whole in text before the model splits the rest (transformers' AddedToken)."""

    content: str
    special: bool = True  # skipped when decoding for display
    lstrip: bool = False  # swallows the whitespace on its left
    rstrip: bool = False  # ... and on its right
    single_word: bool = False
    normalized: bool = False


@dataclass(frozen=True)
class TokenizerConfig:
    tokenizer_class: str | None = None
    specials: dict[str, str] = field(default_factory=dict)  # "bos_token" -> "<s>", ...
    extra_specials: tuple[str, ...] = ()
    added: dict[int, AddedToken] = field(default_factory=dict)
    add_bos_token: bool | None = None  # None: the file does not say
    add_eos_token: bool | None = None
    legacy: bool | None = None
    add_prefix_space: bool | None = None
    clean_up_tokenization_spaces: bool = False
    stop_ids: tuple[int, ...] = ()  # generation_config.json eos_token_id
    files: tuple[str, ...] = ()  # the files read, for messages

    def special(self, name: str) -> str | None:
        return self.specials.get(name)


def _size(n: int) -> str:
    return f"{n >> 20} MiB" if n >= 1 << 20 else f"{n} bytes"


def read_json_text(path: Path, what: str = "file", limit: int = MAX_CONFIG_BYTES) -> tuple[str, dict[str, Any]]:
    """The text and the JSON object of a regular file of at most `limit` bytes, or a one-line
    TokenizerError naming the file (and the line, for a syntax error)."""
    reason = why_not_regular(path)
    if reason is not None:
        raise TokenizerError(f"{what} {path} {reason}")
    try:
        with path.open("rb") as f:
            data = f.read(limit + 1)
    except OSError as err:
        raise TokenizerError(f"cannot read {what} {path}: {err.strerror}") from None
    if len(data) > limit:
        raise TokenizerError(f"{what} {path} is larger than {_size(limit)}, the most taxonc reads for it")
    try:
        text = data.decode("utf-8")
        value = json.loads(text)
    except UnicodeDecodeError as err:
        raise TokenizerError(f"{what} {path} is not UTF-8 (bad byte at offset {err.start})") from None
    except json.JSONDecodeError as err:
        raise TokenizerError(f"{what} {path} is not valid JSON (line {err.lineno}, column {err.colno}: {err.msg})") from None
    except RecursionError:
        raise TokenizerError(f"{what} {path} nests too deeply to read") from None
    if not isinstance(value, dict):
        raise TokenizerError(f"{what} {path} must hold a JSON object, not {type(value).__name__}")
    return text, value


def read_json(path: Path, what: str = "file", limit: int = MAX_CONFIG_BYTES) -> dict[str, Any]:
    return read_json_text(path, what, limit)[1]


def _bool(data: dict, key: str, path: Path) -> bool | None:
    value = data.get(key)
    if value is not None and not isinstance(value, bool):
        raise TokenizerError(f"{path}: {key} must be true or false, not {value!r}")
    return value


def _token(value: Any, key: str, path: Path) -> str | None:
    """A special token written as a string or as an AddedToken object {"content": ...}."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("content"), str):
        return value["content"]
    raise TokenizerError(f"{path}: {key} must be a string, an object with a string \"content\", or null")


def _token_list(value: Any, key: str, path: Path) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, dict):  # v5 extra_special_tokens may map names to tokens
        value = list(value.values())
    if not isinstance(value, list):
        raise TokenizerError(f"{path}: {key} must be a list of tokens")
    return tuple(t for i, v in enumerate(value) if (t := _token(v, f"{key}[{i}]", path)) is not None)


def _added_tokens(value: Any, path: Path) -> dict[int, AddedToken]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise TokenizerError(f"{path}: added_tokens_decoder must be an object of id -> token")
    out: dict[int, AddedToken] = {}
    for key, entry in value.items():
        where = f"added_tokens_decoder.{key}"
        if not (key.isascii() and key.isdigit()) or int(key) >= 1 << 31:
            raise TokenizerError(f"{path}: {where}: the key must be a token id (a non-negative integer)")
        if not isinstance(entry, dict) or not isinstance(entry.get("content"), str) or not entry["content"]:
            raise TokenizerError(f"{path}: {where} must be an object with a non-empty string \"content\"")
        flags = {}
        for flag in ("special", "lstrip", "rstrip", "single_word", "normalized"):
            if flag in entry:
                flags[flag] = _bool(entry, flag, path)
        out[int(key)] = AddedToken(entry["content"], **{k: v for k, v in flags.items() if v is not None})
    return out


def _stop_ids(path: Path) -> tuple[int, ...]:
    data = read_json(path, "generation config")
    value = data.get("eos_token_id")
    values = value if isinstance(value, list) else [value] if value is not None else []
    if not all(type(v) is int and v >= 0 for v in values):
        raise TokenizerError(f"{path}: eos_token_id must be a token id or a list of token ids, not {value!r}")
    return tuple(values)


def read_tokenizer_config(directory: Path) -> TokenizerConfig | None:
    """The HF tokenizer settings in `directory`, or None where it holds none of the three files."""
    config_path, map_path, gen_path = (directory / n for n in (CONFIG_FILE, SPECIAL_TOKENS_FILE, GENERATION_FILE))
    if not any(present(p) for p in (config_path, map_path, gen_path)):
        return None
    data = read_json(config_path, "tokenizer config") if present(config_path) else {}
    cls = data.get("tokenizer_class")
    if cls is not None and not isinstance(cls, str):
        raise TokenizerError(f"{config_path}: tokenizer_class must be a string, not {cls!r}")
    specials = {k: t for k in NAMED_SPECIALS if (t := _token(data.get(k), k, config_path)) is not None}
    extra = _token_list(data.get("additional_special_tokens"), "additional_special_tokens", config_path)
    extra += _token_list(data.get("extra_special_tokens"), "extra_special_tokens", config_path)
    added = _added_tokens(data.get("added_tokens_decoder"), config_path)
    if present(map_path) and not added:  # transformers' legacy path: the map's values win
        mapping = read_json(map_path, "special tokens map")
        specials.update({k: t for k in NAMED_SPECIALS if (t := _token(mapping.get(k), k, map_path)) is not None})
        extra += _token_list(mapping.get("additional_special_tokens"), "additional_special_tokens", map_path)
    return TokenizerConfig(
        tokenizer_class=cls, specials=specials, extra_specials=tuple(dict.fromkeys(extra)), added=added,
        add_bos_token=_bool(data, "add_bos_token", config_path), add_eos_token=_bool(data, "add_eos_token", config_path),
        legacy=_bool(data, "legacy", config_path), add_prefix_space=_bool(data, "add_prefix_space", config_path),
        clean_up_tokenization_spaces=bool(_bool(data, "clean_up_tokenization_spaces", config_path)),
        stop_ids=_stop_ids(gen_path) if present(gen_path) else (),
        files=tuple(str(p) for p in (config_path, map_path, gen_path) if present(p)),
    )


def clean_up_tokenization(text: str) -> str:
    """transformers' clean_up_tokenization: drop the space a word-piece decoder leaves before
    punctuation and English contractions (it applies this only to non-BPE models)."""
    for before, after in ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"),
                          (" 'm", "'m"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re")):
        text = text.replace(before, after)
    return text
