"""Output files and folders the CLI writes: atomic, and every file-system failure a one-line error."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

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
