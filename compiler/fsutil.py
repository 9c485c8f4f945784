"""Atomic file writes: a crash mid-write never leaves a half-written output."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; outputs get the usual permissions
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def write_directory(out_dir: Path, entries: dict[str, "str | bytes | Path | Callable[[BinaryIO], None]"]) -> None:
    """Write a whole directory or nothing: every entry goes into a hidden sibling folder, which is
    renamed to `out_dir` only after the last byte is on disk.

    An entry is text, bytes, a file to copy verbatim, or a function that streams into an open
    binary handle (weights converted tensor by tensor). `out_dir` must not exist or be empty; an
    exception anywhere removes the sibling and leaves `out_dir` as it was.
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
            target = staging / name
            with open(target, "wb") as handle:
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
            os.chmod(target, 0o666 & ~_umask())
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
