"""Training failures a user can cause; one line each, naming the file, key and what is allowed."""

import contextlib
import errno
from collections.abc import Iterator
from pathlib import Path

from ..errors import RuntimeFailure


class TrainingError(RuntimeFailure):
    """Bad training data, a recipe the loop cannot follow, a damaged checkpoint, a full disk."""


@contextlib.contextmanager
def disk_errors(path: Path, what: str) -> Iterator[None]:
    """A full disk or an unwritable folder becomes one line naming `what` and where."""
    try:
        yield
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise TrainingError(f"{path}: disk full while writing the {what} (ENOSPC); free space or write elsewhere with -o") from None
        if exc.errno in (errno.EACCES, errno.EROFS, errno.EDQUOT):
            raise TrainingError(f"{path}: cannot write the {what} ({exc.strerror})") from None
        raise
