"""Write a resolved spec back out as TOML (no dependency beyond the standard library).

The output is canonical: tables in schema order, no None values, and every string
escaped, so `load(dump(spec)) == spec` for any valid spec.
"""

from __future__ import annotations

import math
from typing import Any

from .model import ModelSpec

_ESCAPES = {"\\": "\\\\", '"': '\\"', "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}


def toml_string(text: str) -> str:
    out = []
    for ch in text:
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04X}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError("specs hold finite numbers only")
        return repr(value)
    if isinstance(value, str):
        return toml_string(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"cannot write {type(value).__name__} as TOML")


def _drop_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_none(v) for v in value]
    return value


def _emit_table(lines: list[str], path: str, table: dict[str, Any]) -> None:
    scalars = {k: v for k, v in table.items() if not isinstance(v, dict) and not _is_table_array(v)}
    if path:
        lines.append(f"\n[{path}]")
    for key, value in scalars.items():
        lines.append(f"{key} = {toml_value(value)}")
    for key, value in table.items():
        sub = f"{path}.{key}" if path else key
        if isinstance(value, dict):
            _emit_table(lines, sub, value)
        elif _is_table_array(value):
            for item in value:
                lines.append(f"\n[[{sub}]]")
                for k, v in item.items():
                    lines.append(f"{k} = {toml_value(v)}")


def _is_table_array(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)


def dump_spec(spec: ModelSpec) -> str:
    data = _drop_none(spec.model_dump(mode="json"))
    lines: list[str] = [f"# Resolved spec {spec.model.name}: every value written out, no extends."]
    _emit_table(lines, "", data)
    return "\n".join(lines).strip() + "\n"
