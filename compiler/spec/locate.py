"""Map dotted TOML keys to the line and column where they are written.

tomllib keeps no positions, so we scan the text. The scan understands table headers,
arrays of tables, dotted and quoted keys, one level of inline tables, and multi-line
strings; anything it cannot place falls back to the nearest written parent key.
"""

from __future__ import annotations

import re

_HEADER = re.compile(r"^\s*(\[\[?)\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
_KEY = re.compile(r'^(\s*)((?:[A-Za-z0-9_-]+|"[^"]*"|\'[^\']*\')(?:\s*\.\s*(?:[A-Za-z0-9_-]+|"[^"]*"|\'[^\']*\'))*)\s*=')
_INLINE_KEY = re.compile(r'(?:^|[{,])\s*([A-Za-z0-9_-]+)\s*=')


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
        header = _HEADER.match(line)
        if header and "=" not in line.split("]")[0]:
            parts = _split_key(header.group(2))
            path = ".".join(parts)
            if header.group(1) == "[[":
                index = array_counts.get(path, 0)
                array_counts[path] = index + 1
                parts = parts + [str(index)]
            table = parts
            where.setdefault(".".join(parts), (lineno, line.index(header.group(1)) + 1))
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
