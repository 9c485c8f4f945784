"""Output files and folders the CLI writes: atomic, and every file-system failure a one-line error."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable

from taxonc.runtime.files import default_file_mode

from .errors import TaxoncError


def _reason(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `path` whole or not at all; a folder, a symlink loop or an unwritable place is a TaxoncError."""
    path = Path(path)
    if path.is_dir():
        raise TaxoncError(f"{path}: is a directory; give a file name")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    except OSError as exc:
        raise TaxoncError(f"{path}: cannot write here ({_reason(exc)})") from None
    os.chmod(tmp, default_file_mode())  # mkstemp makes 0600; outputs get the usual permissions
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise TaxoncError(f"{path}: cannot write here ({_reason(exc)})") from None
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def output_directory(path: Path, flag: str) -> Path:
    """Make the folder an option names (--dump-ir); a file, a symlink loop or an unwritable place is a TaxoncError."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise TaxoncError(f"{flag} {path}: exists and is not a directory; give a directory") from None
    except OSError as exc:
        raise TaxoncError(f"{flag} {path}: cannot make this directory ({_reason(exc)})") from None
    if not os.access(path, os.W_OK):
        raise TaxoncError(f"{flag} {path}: cannot write here (not writable)")
    return path


Entry = "str | bytes | Path | Callable[[BinaryIO], None]"


def _write_entry(target: Path, content: "str | bytes | Path | Callable[[BinaryIO], None]") -> None:
    """Write one new file, on disk when this returns: text, bytes, a file copied verbatim, or what a
    function streams into the open binary handle (weights converted tensor by tensor)."""
    import shutil

    with open(target, "xb") as handle:
        if isinstance(content, str):
            handle.write(content.encode("utf-8"))
        elif isinstance(content, bytes):
            handle.write(content)
        elif isinstance(content, Path):
            with open(content, "rb") as source:
                shutil.copyfileobj(source, handle, 1 << 20)
        else:
            content(handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.chmod(target, default_file_mode())


def write_directory(out_dir: Path, entries: dict[str, Entry]) -> None:
    """Write a whole directory or nothing (a plain folder, such as an export for transformers): every
    entry goes into a hidden sibling folder, which is renamed to `out_dir` only after the last byte
    is on disk. `out_dir` must not exist or be empty; an exception anywhere removes the sibling and
    leaves `out_dir` as it was. Artifacts go through write_artifact_files instead.
    """
    import shutil

    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise FileExistsError(f"{out_dir} exists and is not an empty directory")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        os.chmod(staging, 0o777 & ~_umask())
        for name, content in entries.items():
            _write_entry(staging / name, content)
        if out_dir.exists():
            out_dir.rmdir()  # empty, checked above
        os.replace(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_artifact_files(out_dir: Path, entries: dict[str, Entry]) -> None:
    """Write an artifact through taxonc.runtime's ArtifactWriter (staged, sealed by manifest.json,
    swapped in under a lock), with entries as write_directory takes them."""
    from taxonc.runtime.artifact_store import ArtifactWriter

    with ArtifactWriter(out_dir) as staging:
        for name, content in entries.items():
            _write_entry(staging.file(name), content)
