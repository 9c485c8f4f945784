"""A Hugging Face directory's tokenizer files: which they are, and how many tokens they define.

They are copied into the artifact verbatim (loading them is the runtime tokenizer's job). Here
they are only counted: a tokenizer with an id at or past the embedding's rows would index out
of the table at the first such token, so the import refuses it.
"""

from __future__ import annotations

import json
from pathlib import Path

from taxonc.runtime.files import why_not_regular

from .hf_keys import ImportRefused

# files that belong to a tokenizer in the transformers layout, copied when present
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json", "special_tokens_map.json",
                   "added_tokens.json", "vocab.json", "merges.txt", "generation_config.json")
MAX_TOKENIZER_BYTES = 256 << 20  # the largest real tokenizer.json files are tens of MB


def tokenizer_files(directory: Path) -> dict[str, Path]:
    found = {}
    for name in TOKENIZER_FILES:
        path = directory / name
        if not (path.exists() or path.is_symlink()):
            continue
        reason = why_not_regular(path)
        if reason is not None:
            raise ImportRefused(f"{path}: {reason}; tokenizer files are regular files")
        if path.stat().st_size > MAX_TOKENIZER_BYTES:
            raise ImportRefused(f"{path}: larger than {MAX_TOKENIZER_BYTES >> 20} MiB; not a tokenizer file")
        found[name] = path
    return found


def _json(path: Path) -> object:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ImportRefused(f"{path}: not valid JSON ({str(exc).splitlines()[0]})") from None


def _ids_of(vocab: object) -> list[int]:
    if isinstance(vocab, dict):
        return [v for v in vocab.values() if isinstance(v, int)]
    if isinstance(vocab, list):  # Unigram: [[piece, score], ...], ids are positions
        return [len(vocab) - 1] if vocab else []
    return []


def token_count(files: dict[str, Path]) -> tuple[int, str] | None:
    """(number of token ids, the file that says so), or None when there is no tokenizer."""
    if "tokenizer.json" in files:
        path = files["tokenizer.json"]
        data = _json(path)
        if not isinstance(data, dict):
            raise ImportRefused(f"{path}: must hold a JSON object")
        model = data.get("model") if isinstance(data.get("model"), dict) else {}
        ids = _ids_of(model.get("vocab"))
        ids += [t["id"] for t in data.get("added_tokens") or [] if isinstance(t, dict) and isinstance(t.get("id"), int)]
        return (max(ids) + 1 if ids else 0), "tokenizer.json"
    if "tokenizer.model" in files:
        import sentencepiece

        path = files["tokenizer.model"]
        processor = sentencepiece.SentencePieceProcessor()
        try:
            processor.Load(str(path))
        except (OSError, RuntimeError) as exc:
            raise ImportRefused(f"{path}: not a SentencePiece model ({str(exc).splitlines()[0]})") from None
        return processor.GetPieceSize(), "tokenizer.model"
    if "vocab.json" in files:
        ids = _ids_of(_json(files["vocab.json"]))
        return (max(ids) + 1 if ids else 0), "vocab.json"
    return None


def check_fits(files: dict[str, Path], vocab_size: int, directory: Path) -> tuple[int, str] | None:
    counted = token_count(files)
    if counted is not None and counted[0] > vocab_size:
        count, name = counted
        raise ImportRefused(f"{directory / name}: the tokenizer has {count} token ids but config.json: vocab_size "
                            f"is {vocab_size}; the embedding needs a row for every token id")
    return counted
