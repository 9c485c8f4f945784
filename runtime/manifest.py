"""manifest.json: which files make up an artifact, each with its size and sha256.

The writer (artifact_store) seals a staged directory with it, last; the loader reads it first and
loads nothing whose files do not match it, so an interrupted or mixed directory is refused, never
trusted. Hashes are streamed sha256: about 0.3 s per 100 MB of weights on a busy 2-core machine.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .errors import ArtifactError
from .files import why_not_regular

MANIFEST = "manifest.json"
MANIFEST_FORMAT = "taxonc-artifact/1"
MANIFEST_MAX_BYTES = 1 << 20
# the writer stages beside its target under this mark; such a directory is never an artifact
STAGING_MARK = ".taxonc-staging-"
# files the runtime reads by name: present in a directory, they must be part of its manifest
REQUIRED = ("model.py", "spec.lock.json")
READ_IF_PRESENT = ("weights.safetensors", "tokenizer.model", "tokenizer.json", "tokenizer_config.json",
                   "special_tokens_map.json", "generation_config.json")
FILE_NAME = r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}"  # a plain name: no path separators, no "..", not hidden


class FileEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)
    size: int = Field(ge=0)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class Manifest(BaseModel):
    """manifest.json: the files that make up one artifact, each with its size and sha256."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)
    format: Literal["taxonc-artifact/1"]
    files: dict[str, FileEntry]


def sha256_file(path: Path) -> str:
    """Streamed, so a weights file of any size is hashed in constant memory."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def is_staging_name(name: str) -> bool:
    return name.startswith(".") and STAGING_MARK in name


# ----------------------------------------------------------------------------- reading


def read_manifest(directory: Path) -> Manifest:
    """The directory's manifest, after checking the directory holds nothing the runtime reads outside it."""
    if is_staging_name(directory.name):
        raise ArtifactError(f"{directory}: a staging directory of an unfinished write, not an artifact; "
                            "load the directory it was meant to replace")
    path = directory / MANIFEST
    if not os.path.lexists(path):
        raise ArtifactError(f"{directory}: no {MANIFEST}, so not a complete artifact (an interrupted write, or "
                            "written by an older taxonc); compile the spec again")
    reason = why_not_regular(path)
    if reason is not None:
        raise ArtifactError(f"{path}: {reason}; the manifest is a JSON file")
    if path.stat().st_size > MANIFEST_MAX_BYTES:
        raise ArtifactError(f"{path}: larger than {MANIFEST_MAX_BYTES} bytes, not a manifest")
    try:
        raw = json.loads(path.read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{path}: damaged ({type(exc).__name__}: {exc})") from None
    try:
        manifest = Manifest.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        key = ".".join(str(part) for part in first["loc"]) or "<file>"
        raise ArtifactError(f"{path}: {key}: {first['msg']} (format {MANIFEST_FORMAT}: "
                            "files maps each file name to its size and sha256)") from None
    for name in manifest.files:
        if not re.fullmatch(FILE_NAME, name) or name == MANIFEST:
            raise ArtifactError(f"{path}: files: {name[:80]!r} is not a plain file name of this directory")
    for name in REQUIRED:
        if name not in manifest.files:
            raise ArtifactError(f"{path}: files: {name} is missing; an artifact holds {' and '.join(REQUIRED)}")
    for name in READ_IF_PRESENT:
        if name not in manifest.files and os.path.lexists(directory / name):
            raise ArtifactError(f"{directory / name}: not in {MANIFEST}, so not part of this artifact; "
                                "pass it with --weights/--tokenizer, or write it with the artifact")
    return manifest


def check_file(directory: Path, manifest: Manifest, name: str) -> None:
    """The file is a regular file of the size and sha256 the manifest gives."""
    entry, path = manifest.files[name], directory / name
    reason = why_not_regular(path)
    if reason is not None:
        raise ArtifactError(f"{path}: {reason}; {MANIFEST} lists it as a file of {entry.size} bytes")
    size = path.stat().st_size
    if size != entry.size:
        raise ArtifactError(f"{path}: {size} bytes, {MANIFEST} says {entry.size}; "
                            "the artifact was changed or not completely written")
    if sha256_file(path) != entry.sha256:
        raise ArtifactError(f"{path}: sha256 differs from {MANIFEST}; the file was changed after the artifact was written")



# ----------------------------------------------------------------------------- writing


def seal(directory: Path) -> Manifest:
    """Write manifest.json for every file in `directory`, after making them durable; the manifest goes last."""
    files: dict[str, FileEntry] = {}
    for path in sorted(directory.iterdir()):
        if path.name == MANIFEST:
            continue
        if not re.fullmatch(FILE_NAME, path.name) or not path.is_file() or path.is_symlink():
            raise ArtifactError(f"{path}: an artifact holds regular files with plain names only")
        with open(path, "rb") as handle:
            os.fsync(handle.fileno())
            files[path.name] = FileEntry(size=os.fstat(handle.fileno()).st_size,
                                         sha256=hashlib.file_digest(handle, "sha256").hexdigest())
    manifest = Manifest(format=MANIFEST_FORMAT, files=files)
    write_new_file(directory / MANIFEST, (json.dumps(manifest.model_dump(), indent=2, sort_keys=True) + "\n").encode())
    fsync_dir(directory)
    return manifest


def write_new_file(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the umask applies, as for any new file
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
