"""Map dotted TOML keys to the line and column where they are written.

tomllib keeps no positions, so we scan the text. The scan understands table headers,
arrays of tables, dotted and quoted keys, one level of inline tables, and multi-line
strings; anything it cannot place falls back to the nearest written parent key.
"""

from __future__ import annotations

import re

_KEY = re.compile(r'^(\s*)((?:[A-Za-z0-9_-]+|"[^"]*"|\'[^\']*\')(?:\s*\.\s*(?:[A-Za-z0-9_-]+|"[^"]*"|\'[^\']*\'))*)\s*=')
_INLINE_KEY = re.compile(r'(?:^|[{,])\s*([A-Za-z0-9_-]+)\s*=')


def _header(line: str) -> tuple[str, str, int] | None:
    """A table header `[a.b]` or `[[a.b]]`, trailing comment allowed: (bracket, key text, column).

    A linear scan: the regex it replaces (`\\s*([^\\]]+?)\\s*\\]`) backtracked cubically on a
    long line of `[` and spaces.
    """
    body = line.lstrip()
    if not body.startswith("["):
        return None
    column = len(line) - len(body) + 1
    bracket = "[[" if body.startswith("[[") else "["
    rest = body[len(bracket):]
    close = rest.find("]")
    key = rest[:close].strip() if close != -1 else ""
    if not key:
        return None
    after = rest[close + 1:]
    if after.startswith("]"):
        after = after[1:]
    after = after.lstrip()
    if after and not after.startswith("#"):
        return None
    return bracket, key, column


def _split_key(raw: str) -> list[str]:
    parts = re.findall(r'"([^"]*)"|\'([^\']*)\'|([A-Za-z0-9_-]+)', raw)
    return [a or b or c for a, b, c in parts]


def locate_keys(text: str) -> dict[str, tuple[int, int]]:
    """Return {dotted.key: (line, column)}, both 1-based."""
    where: dict[str, tuple[int, int]] = {}
    table: list[str] = []
    array_counts: dict[str, int] = {}
    in_multiline: str | None = None
    for lineno, line in enumerate(text.splitlines(), start=1):
        if in_multiline:
            if in_multiline in line:
                in_multiline = None
            continue
        header = _header(line)
        if header and "=" not in line.split("]")[0]:
            bracket, raw, column = header
            parts = _split_key(raw)
            path = ".".join(parts)
            if bracket == "[[":
                index = array_counts.get(path, 0)
                array_counts[path] = index + 1
                parts = parts + [str(index)]
            table = parts
            where.setdefault(".".join(parts), (lineno, column))
            continue
        key = _KEY.match(line)
        if not key:
            continue
        full = table + _split_key(key.group(2))
        column = len(key.group(1)) + 1
        where[".".join(full)] = (lineno, column)
        value = line[key.end():]
        for quote in ('"""', "'''"):
            if value.count(quote) == 1:
                in_multiline = quote
        brace = value.find("{")
        if brace != -1 and value.lstrip().startswith("{"):
            inner_start = key.end() + brace
            for m in _INLINE_KEY.finditer(value[brace:]):
                sub = full + [m.group(1)]
                where[".".join(sub)] = (lineno, inner_start + m.start(1) + 1)
    return where


def find_position(where: dict[str, tuple[int, int]], dotted: str) -> tuple[int, int] | None:
    """The position of `dotted`, or of its nearest written parent."""
    parts = dotted.split(".") if dotted else []
    while parts:
        hit = where.get(".".join(parts))
        if hit:
            return hit
        parts.pop()
    return None
