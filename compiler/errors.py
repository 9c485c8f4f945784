"""Every error a user can cause. The CLI turns these into messages and exit code 1."""

from __future__ import annotations

from dataclasses import dataclass, field


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
        return text


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
