"""Every error a user can cause. The CLI turns these into messages and exit code 1."""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass, field

# Unicode categories never printed raw: control characters (newline, NUL, ESC) and line and paragraph separators
_ESCAPED = frozenset({"Cc", "Zl", "Zp"})


def one_line(text: str) -> str:
    """`text` with control characters and line separators escaped as \\n, \\x1b, \\u2028.

    Keys, paths and values quoted from a spec file then print as one line of plain text: they cannot
    split an error in two, or move the cursor and colour the terminal with escape sequences.
    """
    return "".join(c.encode("unicode_escape").decode("ascii") if unicodedata.category(c) in _ESCAPED else c for c in text)


class TaxoncError(Exception):
    """Base class: a problem with the user's input, never a bug in taxonc."""


@dataclass(frozen=True)
class Problem:
    """One mistake in one spec file, located as precisely as we can."""

    file: str
    key: str  # dotted TOML path, "" for the whole file
    message: str
    line: int | None = None
    column: int | None = None
    allowed: tuple[str, ...] = ()
    hint: str = ""

    def to_json(self) -> dict[str, object]:
        return {"file": self.file, "key": self.key, "line": self.line, "column": self.column, "message": self.message,
                "allowed": list(self.allowed), "hint": self.hint}

    def render(self) -> str:
        where = self.file
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        text = f"{where}: {self.key or '<file>'}: {self.message}"
        if self.allowed:
            text += f" (allowed: {', '.join(self.allowed)})"
        if self.hint:
            text += f"; {self.hint}"
        return one_line(text)


@dataclass
class SpecError(TaxoncError):
    """All problems found in one spec, reported together."""

    problems: list[Problem] = field(default_factory=list)

    def __post_init__(self) -> None:
        super().__init__(self.render())

    def render(self) -> str:
        return "\n".join(p.render() for p in self.problems)


class UsageError(TaxoncError):
    """A bad command-line request (exit code 2)."""
