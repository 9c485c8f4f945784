"""Training documents from files: plain text and code (one document per file) and JSONL.

JSONL lines are objects with a "text" string (pretraining) or "prompt" and "response" strings
(supervised fine-tuning). Directories are walked in sorted order for the suffixes below, so a
corpus is the same list of documents on every machine and every rank.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ..files import why_not_regular
from .errors import TrainingError

TEXT_SUFFIXES = (".txt", ".md", ".rst", ".py")
JSONL_SUFFIX = ".jsonl"


@dataclass(frozen=True)
class Document:
    source: str  # file, or file:line for JSONL
    text: str  # the whole document; for SFT, prompt followed by response
    response_start: int | None = None  # SFT: the character where the response begins


def corpus_files(paths: list[Path]) -> list[Path]:
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.suffix in (*TEXT_SUFFIXES, JSONL_SUFFIX) and p.is_file())
            if not found:
                raise TrainingError(f"{path}: no training files in this directory "
                                    f"(looked for {', '.join((*TEXT_SUFFIXES, JSONL_SUFFIX))})")
            files.extend(found)
            continue
        reason = why_not_regular(path)
        if reason is not None:
            raise TrainingError(f"{path}: {reason}; --data takes text, code or JSONL files, or directories of them")
        files.append(path)
    return files


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise TrainingError(f"{path}: not UTF-8 (bad byte at offset {exc.start}); training text is UTF-8") from None
    except OSError as exc:
        raise TrainingError(f"{path}: cannot be read ({exc.strerror})") from None


def _is_utf8(path: Path) -> bool:
    try:
        path.read_bytes().decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False
    except OSError:
        return True  # unreadable: _read_text reports it


def _jsonl(path: Path, sft: bool) -> Iterator[Document]:
    wanted = '"prompt" and "response" strings' if sft else 'a "text" string'
    for number, line in enumerate(_read_text(path).splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise TrainingError(f"{path}:{number}: not JSON ({exc.msg}); each line is an object with {wanted}") from None
        if not isinstance(record, dict):
            raise TrainingError(f"{path}:{number}: a JSON {type(record).__name__}; each line is an object with {wanted}")
        keys = ("prompt", "response") if sft else ("text",)
        for key in keys:
            if not isinstance(record.get(key), str):
                got = "missing" if key not in record else f"a {type(record[key]).__name__}"
                raise TrainingError(f"{path}:{number}: key {key!r} is {got}; each line is an object with {wanted}")
        if sft:
            yield Document(f"{path}:{number}", record["prompt"] + record["response"], len(record["prompt"]))
        else:
            yield Document(f"{path}:{number}", record["text"])


def read_documents(paths: list[Path], sft: bool = False, skipped: list[Path] | None = None) -> Iterator[Document]:
    """Every document of the corpus, in a fixed order. SFT reads JSONL prompt/response files only.

    A file named on the command line must be UTF-8; one found by walking a directory that is not
    (source trees carry a few on purpose, e.g. CPython's encoding tests) is left out and added
    to `skipped`, so the caller can say so, or refused when `skipped` is None."""
    named = {p for p in paths if not p.is_dir()}
    for path in corpus_files(paths):
        if skipped is not None and path not in named and not _is_utf8(path):
            skipped.append(path)
            continue
        if path.suffix == JSONL_SUFFIX:
            yield from _jsonl(path, sft)
        elif sft:
            raise TrainingError(f"{path}: supervised fine-tuning reads JSONL files of prompt/response objects")
        else:
            text = _read_text(path)
            if text.strip():
                yield Document(str(path), text)
