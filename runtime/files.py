"""Paths the runtime reads: regular files only, never a silent fallback."""

from __future__ import annotations

import os
import stat
from pathlib import Path

__all__ = ["default_file_mode", "present", "why_not_regular"]


def present(path: Path) -> bool:
    """Whether anything sits at `path`: a file, a directory, a device, or a symlink, dangling or not.

    Where a file is optional (DIR/weights.safetensors, DIR/tokenizer.model), what is present is
    read and checked; only a path holding nothing at all falls back to the default.
    """
    return os.path.lexists(path)


def why_not_regular(path: Path) -> str | None:
    """Why `path` cannot be read as a regular file ("is a directory", ...), or None when it can."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return "is a dangling symlink" if path.is_symlink() else "does not exist"
    except OSError as exc:  # a symlink loop, a permission, a name too long
        return f"cannot be read ({exc.strerror or type(exc).__name__})"
    if stat.S_ISDIR(mode):
        return "is a directory, not a file"
    if not stat.S_ISREG(mode):
        return "is not a regular file (a device, FIFO or socket)"
    return None


def default_file_mode() -> int:
    """0666 minus the umask: the mode open() gives a new file, for files made another way.

    mkstemp and safetensors' writer create 0600 files; outputs the user asked for get the mode
    any file they write gets. The umask can only be read by setting it, so it is set back at once.
    """
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask
