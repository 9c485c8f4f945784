"""Compiled directories are written whole or not at all, and read only when whole.

Every writer (`taxonc compile`, `--init-weights`, importers, a training run's export) goes through
ArtifactWriter:

    with ArtifactWriter(Path("out/llama")) as staging:
        staging.write_text("model.py", source)
        save_weights(model, staging.file("weights.safetensors"), digest, name)

The files go into a sibling directory `.<name>.taxonc-staging-<random>`; leaving the block seals it
with manifest.json (every file's size and sha256, written last) and renames it over the target.
A flock on the sibling `.<name>.taxonc-lock` keeps a second writer out, so any staging directory
found while holding the lock was left by a killed writer and is removed. An exception,
KeyboardInterrupt included, removes the staging directory and leaves the old artifact as it was.

Replacing an existing directory uses renameat2(RENAME_EXCHANGE): the target path holds the old
complete artifact until, in one step, it holds the new one, so a reader never finds it missing or
mixed. Where the call or the file system lacks it, two renames are used (old aside, new in); a
reader between them finds no artifact and refuses, which is still never a mix.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import hashlib
import json
import os
import re
import secrets
import shutil
import stat
import time
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .errors import ArtifactError
from .files import why_not_regular

MANIFEST = "manifest.json"
MANIFEST_FORMAT = "taxonc-artifact/1"
STAGING_MARK = ".taxonc-staging-"
LOCK_SUFFIX = ".taxonc-lock"
MANIFEST_MAX_BYTES = 1 << 20
# files the runtime reads by name: present in a directory, they must be part of its manifest
REQUIRED = ("model.py", "spec.lock.json")
READ_IF_PRESENT = ("weights.safetensors", "tokenizer.model")
# what taxonc wrote into a directory before manifests existed, and the temp names of its file-by-file writes
_LEGACY = ("model.py", "spec.lock.json", "graph.txt", "model.mlir", "weights.safetensors", "tokenizer.model")
_LEGACY_TEMP = re.compile(r"\.(" + "|".join(re.escape(n) for n in _LEGACY) + r")\.\w+(\.tmp)?")
_FILE_NAME = r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}"  # a plain name: no path separators, no "..", not hidden

_RENAME_EXCHANGE = 2  # linux/fs.h
_AT_FDCWD = -100


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


def _reason(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__


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
        if not re.fullmatch(_FILE_NAME, name) or name == MANIFEST:
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
        if not re.fullmatch(_FILE_NAME, path.name) or not path.is_file() or path.is_symlink():
            raise ArtifactError(f"{path}: an artifact holds regular files with plain names only")
        with open(path, "rb") as handle:
            os.fsync(handle.fileno())
            files[path.name] = FileEntry(size=os.fstat(handle.fileno()).st_size,
                                         sha256=hashlib.file_digest(handle, "sha256").hexdigest())
    manifest = Manifest(format=MANIFEST_FORMAT, files=files)
    _write_new(directory / MANIFEST, (json.dumps(manifest.model_dump(), indent=2, sort_keys=True) + "\n").encode())
    _fsync_dir(directory)
    return manifest


def _write_new(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the umask applies, as for any new file
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one step (renameat2 RENAME_EXCHANGE); False where the system cannot."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):  # not glibc >= 2.28, or not Linux
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):  # a file system without exchange
        return False
    raise OSError(code, os.strerror(code), str(b))


class Staging:
    """The directory a writer fills.

    `replaced` names the files of the directory it will replace; `previous` is that directory's
    manifest, None for an artifact written before manifests existed (or none at all).
    """

    def __init__(self, path: Path, target: Path, previous: Manifest | None, replaced: frozenset[str]) -> None:
        self.path, self.target, self.previous, self.replaced = path, target, previous, replaced

    def file(self, name: str) -> Path:
        """Where to write `name` (for writers that open files themselves, such as save_weights)."""
        if not re.fullmatch(_FILE_NAME, name) or name == MANIFEST:
            raise ArtifactError(f"{name!r}: not a file name an artifact may hold")
        return self.path / name

    def write_bytes(self, name: str, data: bytes) -> None:
        _write_new(self.file(name), data)

    def write_text(self, name: str, text: str) -> None:
        self.write_bytes(name, text.encode("utf-8"))

    def carry(self, name: str) -> None:
        """Keep `name` from the artifact being replaced, after checking it against that artifact's manifest."""
        if name not in self.replaced:
            raise ArtifactError(f"{self.target / name}: not part of the artifact being replaced")
        if self.previous is not None:
            check_file(self.target, self.previous, name)
        elif (reason := why_not_regular(self.target / name)) is not None:  # an old artifact: the load checks it
            raise ArtifactError(f"{self.target / name}: {reason}")
        try:
            os.link(self.target / name, self.file(name))  # same file system, so no copy of a large file
        except OSError:
            shutil.copyfile(self.target / name, self.file(name))


class ArtifactWriter:
    """Context manager: stage an artifact beside `target`, then seal it and rename it into place.

    `wait_s` is how long to wait for another writer of the same target; by default a busy
    target is an error at once, never a silent wait.
    """

    def __init__(self, target: str | Path, *, wait_s: float = 0.0) -> None:
        self.target = _resolve(Path(target))
        self.wait_s = wait_s
        self._lock_fd: int | None = None
        self._staging: Path | None = None

    # -- lock

    @property
    def lock_path(self) -> Path:
        return self.target.parent / f".{self.target.name}{LOCK_SUFFIX}"

    def _lock(self) -> None:
        deadline = time.monotonic() + self.wait_s
        while True:
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                if time.monotonic() >= deadline:
                    raise ArtifactError(f"{self.target}: another taxonc process is writing this artifact "
                                        f"(it holds {self.lock_path}); run again when it has finished") from None
                time.sleep(0.05)
                continue
            # the holder before us unlinks the file when it is done: a lock on an unlinked file guards nothing
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(self.lock_path))
            except FileNotFoundError:
                same = False
            if same:
                self._lock_fd = fd
                return
            os.close(fd)

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            try:
                self.lock_path.unlink(missing_ok=True)  # while still held, so a waiter sees it go and retries
            finally:
                os.close(self._lock_fd)
                self._lock_fd = None

    # -- enter and leave

    def __enter__(self) -> Staging:
        parent, name = self.target.parent, self.target.name
        _check_reachable(parent, self.target)
        try:
            parent.mkdir(parents=True, exist_ok=True)
            self._lock()
        except OSError as exc:
            raise ArtifactError(f"{self.target}: cannot write here ({_reason(exc)})") from None
        try:
            for stale in parent.iterdir():  # we hold the lock, so whoever made these was killed
                if stale.name.startswith(f".{name}{STAGING_MARK}"):
                    shutil.rmtree(stale, ignore_errors=True)
            previous, replaced = self._replaceable()
            self._staging = parent / f".{name}{STAGING_MARK}{secrets.token_hex(6)}"
            os.mkdir(self._staging, 0o777)  # the umask applies, as for any directory the user makes
            return Staging(self._staging, self.target, previous, replaced)
        except OSError as exc:
            self._cleanup()
            raise ArtifactError(f"{self.target}: cannot write here ({_reason(exc)})") from None
        except BaseException:
            self._cleanup()
            raise

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:
                assert self._staging is not None
                try:
                    seal(self._staging)
                    self._move_into_place(self._staging)
                except OSError as err:
                    raise ArtifactError(f"{self.target}: cannot write here ({_reason(err)})") from None
        finally:
            self._cleanup()

    def _cleanup(self) -> None:
        try:
            if self._staging is not None:
                shutil.rmtree(self._staging, ignore_errors=True)  # after an exchange it holds the old artifact
                self._staging = None
        finally:
            self._unlock()

    def _replaceable(self) -> tuple[Manifest | None, frozenset[str]]:
        """Refuse to replace anything but an artifact (or an empty directory); return its manifest and file names."""
        target = self.target
        if not os.path.lexists(target):
            return None, frozenset()
        if not target.is_dir() or target.is_symlink():
            raise ArtifactError(f"{target}: exists and is not a directory; give -o a new or artifact directory")
        entries = sorted(p.name for p in target.iterdir())
        if not entries:
            return None, frozenset()
        if MANIFEST in entries:
            try:
                manifest = read_manifest(target)
            except ArtifactError:
                manifest = None  # a damaged artifact is replaced like an old one: by its file names
            known = set(manifest.files) if manifest else set(_LEGACY)
        else:
            manifest, known = None, set(_LEGACY)
        foreign = [e for e in entries if e != MANIFEST and e not in known and not _LEGACY_TEMP.fullmatch(e)]
        if foreign or ("model.py" not in entries and "spec.lock.json" not in entries):
            what = f"holds {foreign[0]!r}, which is" if foreign else "is"
            raise ArtifactError(f"{target}: {what} not part of a taxonc artifact; refusing to replace it "
                                "(give -o a new, empty or artifact directory)")
        return manifest, frozenset(e for e in entries if e in known)

    def _move_into_place(self, staging: Path) -> None:
        target = self.target
        if not os.path.lexists(target):
            os.rename(staging, target)
        elif not _exchange(staging, target):
            aside = target.parent / f"{staging.name}-old"
            os.rename(target, aside)
            try:
                os.rename(staging, target)
            except BaseException:
                os.rename(aside, target)
                raise
            os.rename(aside, staging)  # removed with the staging directory
        _fsync_dir(target.parent)


def _resolve(target: Path) -> Path:
    """The real path to write: symlinks in it are followed (a link to an artifact replaces what it points at)."""
    try:
        return Path(os.path.realpath(target, strict=False)) if not os.path.lexists(target) else target.resolve(strict=True)
    except (OSError, RuntimeError) as exc:  # a symlink loop, a dangling link, a component that is a file
        reason = _reason(exc) if isinstance(exc, OSError) else "a symlink loop"
        raise ArtifactError(f"{target}: cannot be used as an output directory ({reason})") from None


def _check_reachable(parent: Path, target: Path) -> None:
    """The nearest existing folder above the target is a folder (not a file, not a symlink loop)."""
    probe = parent
    while not os.path.lexists(probe) and probe != probe.parent:
        probe = probe.parent
    try:
        is_dir = stat.S_ISDIR(os.stat(probe).st_mode)
    except OSError as exc:
        raise ArtifactError(f"{target}: cannot write here ({probe}: {_reason(exc)})") from None
    if not is_dir:
        raise ArtifactError(f"{target}: cannot write here ({probe} is a file, not a directory)")
