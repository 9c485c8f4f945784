"""Token shards: tokenize documents once into memory-mapped uint16/uint32 files, then read
fixed-length windows from them.

Layout of a prepared data directory:

    train.bin, val.bin          tokens, little-endian uint16 (vocabulary <= 65536) or uint32
    train.mask, val.mask        SFT only: one byte per token, 1 where the loss counts
    data.json                   written last: dtype, token counts, the inputs' fingerprint

Documents are packed: each is followed by the end-of-sequence token, and windows run across
document boundaries, as GPT-3 trained. Every `val_every`-th document (the last of each run of
`val_every`) is held out for validation; a corpus of fewer documents gives its last tenth of
tokens instead. A directory whose data.json is missing is incomplete and is rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .corpus import Document
from .errors import TrainingError
from .recipe import FimConfig

META = "data.json"
FORMAT = 1


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype("<u2") if vocab_size <= 1 << 16 else np.dtype("<u4")


@dataclass(frozen=True)
class Prepared:
    directory: Path
    dtype: np.dtype
    train_tokens: int
    val_tokens: int
    masked: bool
    documents: int

    def tokens(self, split: str) -> np.ndarray:
        return np.memmap(self.directory / f"{split}.bin", dtype=self.dtype, mode="r")

    def mask(self, split: str) -> np.ndarray | None:
        return np.memmap(self.directory / f"{split}.mask", dtype=np.uint8, mode="r") if self.masked else None


@dataclass(frozen=True)
class Tokenizing:
    """How documents become tokens: the tokenizer's encode, its end-of-sequence id and FIM."""

    encode: Callable[[str], list[int]]
    eos_id: int
    vocab_size: int
    fingerprint: str  # of the tokenizer, so changed pieces rebuild the shards
    fim: FimConfig | None = None
    fim_ids: tuple[int, int, int] | None = None  # prefix, middle, suffix sentinels
    seed: int = 0
    feedback: Feedback | None = None


@dataclass(frozen=True)
class Feedback:
    """Pretraining with human feedback (Korbak et al. 2023): a control token before each document,
    good when score(text) >= threshold. The paper scores sentences or lines; this scores whole
    documents (split a corpus finer to condition finer)."""

    score: Callable[[str], float]
    threshold: float
    good_id: int
    bad_id: int
    name: str  # of the scorer, so another scorer rebuilds the shards


def _doc_tokens(doc: Document, how: Tokenizing, rng: random.Random) -> tuple[list[int], list[int] | None]:
    if doc.response_start is not None:
        prompt = how.encode(doc.text[: doc.response_start])
        response = how.encode(doc.text[doc.response_start :]) + [how.eos_id]
        return prompt + response, [0] * len(prompt) + [1] * len(response)
    if how.fim is not None and how.fim_ids is not None:
        from ..fim import fim_transform_text

        pre, mid, suf = how.fim_ids
        try:
            ids = fim_transform_text(doc.text, rng, how.fim.rate, how.fim.mode.value, how.encode, pre, mid, suf)
        except ValueError as exc:
            raise TrainingError(f"{doc.source}: {exc}") from None
    else:
        ids = how.encode(doc.text)
    if how.feedback is not None:
        from ..conditioning import condition_tokens

        fb = how.feedback
        try:
            score = float(fb.score(doc.text))
            ids = condition_tokens(ids, score, fb.threshold, fb.good_id, fb.bad_id)
        except (TypeError, ValueError) as exc:
            raise TrainingError(f"{doc.source}: the feedback scorer {fb.name} gave no usable score ({exc})") from None
    return ids + [how.eos_id], None


def _fingerprint(docs_key: str, how: Tokenizing, val_every: int) -> str:
    fim = None if how.fim is None else [how.fim.rate, how.fim.mode.value, list(how.fim_ids or ())]
    feedback = None if how.feedback is None else [how.feedback.name, how.feedback.threshold]
    blob = json.dumps([FORMAT, docs_key, how.fingerprint, how.eos_id, fim, how.seed, val_every, feedback])
    return hashlib.sha256(blob.encode()).hexdigest()


def files_key(files: Iterable[Path]) -> str:
    """Names, sizes and modification times of the inputs: changed inputs rebuild the shards."""
    parts = []
    for f in files:
        st = f.stat()
        parts.append(f"{f}\0{st.st_size}\0{st.st_mtime_ns}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def load_prepared(directory: Path, fingerprint: str | None = None) -> Prepared | None:
    """The prepared data in `directory`, or None if it is incomplete or was made from other inputs."""
    try:
        meta = json.loads((directory / META).read_text())
    except (OSError, ValueError):
        return None
    if meta.get("format") != FORMAT or (fingerprint is not None and meta.get("fingerprint") != fingerprint):
        return None
    return Prepared(directory, np.dtype(meta["dtype"]), meta["train_tokens"], meta["val_tokens"], meta["masked"],
                    meta["documents"])


def prepare(documents: Iterable[Document], how: Tokenizing, directory: Path, docs_key: str,
            val_every: int = 20) -> Prepared:
    """Tokenize into `directory` (reusing what is there if it was made from the same inputs)."""
    fingerprint = _fingerprint(docs_key, how, val_every)
    found = load_prepared(directory, fingerprint)
    if found is not None:
        return found
    directory.mkdir(parents=True, exist_ok=True)
    (directory / META).unlink(missing_ok=True)
    dtype = token_dtype(how.vocab_size)
    rng = random.Random(how.seed)
    files = {name: open(directory / name, "wb") for name in ("train.bin", "val.bin", "train.mask", "val.mask")}
    counts = {"train": 0, "val": 0}
    masked = False
    n_docs = 0
    try:
        for i, doc in enumerate(documents):
            ids, mask = _doc_tokens(doc, how, rng)
            if max(ids) >= how.vocab_size:
                raise TrainingError(f"{doc.source}: token id {max(ids)} is outside the vocabulary (0..{how.vocab_size - 1})")
            split = "val" if i % val_every == val_every - 1 else "train"
            files[f"{split}.bin"].write(np.asarray(ids, dtype=dtype).tobytes())
            masked = masked or mask is not None
            files[f"{split}.mask"].write(np.asarray(mask if mask is not None else [1] * len(ids), dtype=np.uint8).tobytes())
            counts[split] += len(ids)
            n_docs += 1
        for f in files.values():
            f.flush()
            os.fsync(f.fileno())
    except OSError as exc:
        raise TrainingError(f"{directory}: cannot write token shards ({exc.strerror})") from None
    finally:
        for f in files.values():
            f.close()
    if n_docs == 0:
        raise TrainingError("the training data holds no documents (every file is empty)")
    if counts["val"] == 0:  # too few documents to hold one out: the last tenth of the tokens instead
        counts = _split_tail(directory, dtype, counts["train"])
    if not masked:
        for split in ("train", "val"):
            (directory / f"{split}.mask").unlink()
    meta = {"format": FORMAT, "dtype": dtype.str, "train_tokens": counts["train"], "val_tokens": counts["val"],
            "masked": masked, "documents": n_docs, "fingerprint": fingerprint, "val_every": val_every}
    tmp = directory / f".{META}.tmp"
    tmp.write_text(json.dumps(meta, indent=2) + "\n")
    os.replace(tmp, directory / META)
    return Prepared(directory, dtype, counts["train"], counts["val"], masked, n_docs)


def _split_tail(directory: Path, dtype: np.dtype, total: int) -> dict[str, int]:
    val = max(1, total // 10)
    for suffix, width in (("bin", dtype.itemsize), ("mask", 1)):
        train_path, val_path = directory / f"train.{suffix}", directory / f"val.{suffix}"
        with open(train_path, "rb+") as f:
            f.seek((total - val) * width)
            tail = f.read()
            f.truncate((total - val) * width)
        val_path.write_bytes(tail)
    return {"train": total - val, "val": val}


class Windows:
    """Windows of seq_len + 1 tokens (inputs and shifted targets) at stride seq_len."""

    def __init__(self, tokens: np.ndarray, mask: np.ndarray | None, seq_len: int):
        self.tokens, self.mask, self.seq_len = tokens, mask, seq_len
        self.count = max(0, (len(tokens) - 1) // seq_len)

    def batch(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(ids [n, T+1] int64, loss mask [n, T] on the targets or None)."""
        T = self.seq_len
        ids = np.stack([np.asarray(self.tokens[i * T : i * T + T + 1], dtype=np.int64) for i in indices])
        if self.mask is None:
            return torch.from_numpy(ids), None
        mask = np.stack([np.asarray(self.mask[i * T + 1 : i * T + T + 1], dtype=np.bool_) for i in indices])
        return torch.from_numpy(ids), torch.from_numpy(mask)


@dataclass
class SamplerState:
    epoch: int = 0
    position: int = 0  # windows of this epoch's order already handed out


class Sampler:
    """Window indices in a seeded random order per epoch; its whole state is two integers.

    The order of epoch e is a permutation drawn from a generator seeded with (seed, e), so a run
    resumed from (epoch, position) continues exactly where it stopped, on any number of ranks.
    """

    def __init__(self, count: int, seed: int, state: SamplerState | None = None):
        if count <= 0:
            raise ValueError("no windows to sample")
        self.count, self.seed = count, seed
        self.state = state or SamplerState()
        self._order_epoch, self._order = -1, None

    def _order_of(self, epoch: int) -> torch.Tensor:
        if epoch != self._order_epoch:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._order, self._order_epoch = torch.randperm(self.count, generator=g), epoch
        return self._order

    def take(self, n: int) -> list[int]:
        out: list[int] = []
        while len(out) < n:
            order = self._order_of(self.state.epoch)
            grab = order[self.state.position : self.state.position + n - len(out)].tolist()
            out.extend(grab)
            self.state.position += len(grab)
            if self.state.position >= self.count:
                self.state = SamplerState(self.state.epoch + 1, 0)
        return out
