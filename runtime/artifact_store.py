"""Writing compiled directories whole or not at all: staged, sealed by manifest.json, renamed into place.

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
import os
import re
import secrets
import shutil
import stat
import time
from pathlib import Path

from .errors import ArtifactError
from .files import why_not_regular
from .manifest import FILE_NAME, MANIFEST, STAGING_MARK, Manifest, fsync_dir, write_new_file, check_file, read_manifest, seal

LOCK_SUFFIX = ".taxonc-lock"
# what taxonc wrote into a directory before manifests existed, and the temp names of its file-by-file writes
_LEGACY = ("model.py", "spec.lock.json", "graph.txt", "model.mlir", "weights.safetensors", "tokenizer.model")
_LEGACY_TEMP = re.compile(r"\.(" + "|".join(re.escape(n) for n in _LEGACY) + r")\.\w+(\.tmp)?")

_RENAME_EXCHANGE = 2  # linux/fs.h
_AT_FDCWD = -100


def _reason(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__


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
        if not re.fullmatch(FILE_NAME, name) or name == MANIFEST:
            raise ArtifactError(f"{name!r}: not a file name an artifact may hold")
        return self.path / name

    def write_bytes(self, name: str, data: bytes) -> None:
        write_new_file(self.file(name), data)

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
        fsync_dir(target.parent)


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
