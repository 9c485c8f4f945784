"""spec.lock.json, read as a typed record: every field the runtime uses, checked before it is used.

The lock holds the resolved spec and its sha256. The spec must still hash to that value (the
compiler hashes the same canonical JSON), so an edited context, vocabulary or structure is
refused rather than believed; the types of the fields the runtime reads are checked as well, so
a null or a string where a number belongs is a one-line error naming the key, not a traceback.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .errors import ArtifactError
from .files import why_not_regular

LOCK = "spec.lock.json"
LOCK_MAX_BYTES = 16 << 20  # a resolved spec is a few KB; a per-layer list of 1024 layers stays far below


class _Open(BaseModel):
    # the lock carries every spec field; only those the runtime reads are typed here
    model_config = ConfigDict(extra="allow", strict=True)


class LockIdentity(_Open):
    name: str = Field(min_length=1)
    structure: str


class LockDims(_Open):
    vocab_size: int = Field(ge=1)
    context: int = Field(ge=1)


class LockFim(_Open):
    mode: str = "psm"


class LockTraining(_Open):
    fim: LockFim | None = None


class LockTokenizer(_Open):
    decoder_start_id: int | None = Field(default=None, ge=0)


class LockCrossAttention(_Open):
    kind: str
    media_dim: int | None = Field(default=None, ge=1)
    chunk_size: int | None = Field(default=None, ge=1)
    n_neighbours: int | None = Field(default=None, ge=1)
    neighbour_len: int | None = Field(default=None, ge=1)


class LockSpec(_Open):
    model: LockIdentity
    dims: LockDims
    training: LockTraining
    tokenizer: LockTokenizer = Field(default_factory=LockTokenizer)
    encoder: dict[str, Any] | None = None
    cross_attention: LockCrossAttention | None = None


class LockSummary(_Open):
    params: int = Field(ge=0)


class SpecLock(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    taxonc_version: str
    source: str
    scale: str
    backend: Literal["torch", "triton", "mlir"]
    spec_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    summary: LockSummary
    spec: LockSpec
    # written by taxonc import: the checkpoint's dtype (kept at load) and where it came from
    weights_dtype: Literal["float32", "float16", "bfloat16", "float64"] | None = None
    imported_from: dict[str, str] | None = None


# compiler/spec/load.py's LATER_FIELDS (the runtime never imports the compiler; a test keeps them equal):
# fields added to the spec schema after digests were first written, left out of the digest at the default
# that leaves a model as it was, so artifacts compiled before them still load.
LATER_FIELDS: dict[tuple[str, str], Any] = {
    ("attention", "qk_norm"): "none",
}


def spec_sha256(spec: dict[str, Any]) -> str:
    """The compiler's spec digest: sha256 of the canonical JSON of the resolved spec (LATER_FIELDS left out
    at their defaults)."""
    data = dict(spec)
    for (table, key), default in LATER_FIELDS.items():
        section = data.get(table)
        if isinstance(section, dict) and section.get(key, default) == default and key in section:
            data[table] = {k: v for k, v in section.items() if k != key}
    return hashlib.sha256(json.dumps(data, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _first_problem(exc: ValidationError) -> str:
    first = exc.errors()[0]
    key = ".".join(str(part) for part in first["loc"]) or "<file>"
    got = first.get("input")
    shown = "" if first["type"] == "missing" else f", got {json.dumps(got)[:60] if _jsonable(got) else type(got).__name__}"
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"{key}: {first['msg'].lower()}{shown}{more}"


def _jsonable(value: Any) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True


def read_lock(directory: Path) -> dict[str, Any]:
    """The lock of the artifact in `directory` as a plain dict, after checking its types and its spec hash."""
    path = directory / LOCK
    reason = why_not_regular(path)
    if reason == "does not exist":
        raise ArtifactError(f"{directory}: no {LOCK} (compile the spec with taxonc compile)")
    if reason is not None:
        raise ArtifactError(f"{path}: {reason}")
    if path.stat().st_size > LOCK_MAX_BYTES:
        raise ArtifactError(f"{path}: larger than {LOCK_MAX_BYTES >> 20} MiB, not a spec lock")
    try:
        raw = json.loads(path.read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise ArtifactError(f"{path}: damaged ({type(exc).__name__}: {str(exc)[:120]})") from None
    if not isinstance(raw, dict):
        raise ArtifactError(f"{path}: <file>: expected a JSON object, got {type(raw).__name__}")
    try:
        SpecLock.model_validate(raw)
    except ValidationError as exc:
        raise ArtifactError(f"{path}: {_first_problem(exc)}") from None
    if spec_sha256(raw["spec"]) != raw["spec_sha256"]:
        raise ArtifactError(f"{path}: spec: does not hash to spec_sha256 {raw['spec_sha256'][:12]}; the lock was "
                            "edited after compiling (compile the spec again instead)")
    return raw
