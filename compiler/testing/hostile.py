"""Hypothesis strategies for hostile input: spec files, lock files and safetensors files damaged
the way careless users and attackers damage them.

Each strategy starts from a real, valid input and mutates it, so most of the damage gets past
the first parser and reaches the checks behind it. The known nasty cases of past bug reports
(10 KB header lines, deep nesting, huge sizes, names with newlines, rich markup, targets that
are not files) are part of every pool, so a regression of any of them is found in a few
examples.

    from taxonc.testing.hostile import hostile_spec_files, hostile_locks, hostile_safetensors
"""

from __future__ import annotations

import json
import math
import re
import struct
import tomllib
from collections.abc import Sequence
from datetime import date
from typing import Any

from hypothesis import strategies as st

from taxonc.compiler.spec.dump import toml_string

MAIN = "fuzz.toml"  # the mutated spec file hostile_spec_files always writes
BASE = "fuzz-base.toml"  # a second mutated file, which MAIN may extend
# Names of odd things a test may create beside MAIN (a symlink loop, a link to /dev/zero, a FIFO,
# a directory named like a spec), so that `extends` can point at them.
ODD_TARGETS = ("loop", "zero", "fifo", "folder")

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")

# Lines that broke the loader before: cubic regex backtracking, recursion, huge sizes, names
# that were not slugs, rich markup, a table written twice, a byte-order mark.
NASTY_LINES: tuple[str, ...] = (
    "[" + " " * 10_000,
    "[[" + " " * 10_000,
    "[a" + " " * 10_000 + "] x",
    "a." * 5_000 + "a = 1",
    "x = " + "[" * 500 + "]" * 500,
    "x = " + "{a = " * 300 + "1" + "}" * 300,
    "[" + ".".join(["a"] * 500) + "]",
    "x = " + "[" * 33 + "]" * 33,
    'name = "tiny\\n"',
    'name = "' + "a" * 300 + '"',
    'title = "[/] [bold]x[/bold] [red"',
    "n_layers = 1000000000",
    "d_model = -64",
    "context = 0",
    "ff_ratio = nan",
    "eps = inf",
    "[model]",
    "[dims]",
    "[[dims]]",
    "[moe]\nn_experts = 100000\ntop_k = 2",
    'extends = "/"',
    'extends = ""',
    "extends = []",
    'abstract = "yes"',
    "released = 1979-05-27T07:32:00Z",
    "x = 99999999999999999999",
    'x = """',
    "x = '''",
    'x = "\\uD800"',
    "\ufeff",
    "\x00",
    "\r",
    "#" * 10_000,
)

# Targets for `extends`: good ones, missing ones, odd files, a cycle, paths that are not names.
EXTENDS_TARGETS: tuple[Any, ...] = (
    "recipes/gpt", "llama", "gpt3", "fuzz-base", "fuzz", "nowhere", "", ".", "..", "/", "/dev/zero",
    "/etc/passwd", "recipes", "recipes/", "../" * 40 + "x", "a" * 300, "a/" * 300 + "b", "x\x00y", "é/ü",
    "~/x", "$HOME", "C:\\x", "specs/../llama", "./llama.toml", "llama.toml/x", *ODD_TARGETS,
    1, 1.5, True, [], [1], {"a": 1}, ["recipes/gpt", "recipes/gpt"], ["llama", "gpt3"], ["fuzz-base", "nowhere"],
)

_ODD_TEXT = ("", "x", "[/]", "tiny\n", "a" * 300, "\x00", "\x1b[31mred", "\u202eevil", "rope", "RMSNorm", "gqa",
             "rmsnorm", "rotary", "swiglu", "grouped-query", "decoder", "nan", "1e9")
_ODD_NUMBERS = (0, -1, 1, 3, 7, 2**31, 2**63 - 1, -(2**63), 10**9, 1 << 20, 1 << 30, float("nan"), float("inf"),
                float("-inf"), -0.0, 1e308, 5e-324, 0.5, 1.0, 1e12)


# ----------------------------------------------------------------------------- TOML writing

def _key(key: str) -> str:
    return key if _BARE_KEY.fullmatch(key) else toml_string(key)


def toml_value(value: Any) -> str:
    """A value as TOML, including what the canonical writer refuses (nan, inf, dates, odd keys)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return toml_string(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{_key(str(k))} = {toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"cannot write {type(value).__name__} as TOML")


def to_toml(data: dict[str, Any]) -> str:
    """Tables as [headers], arrays of tables as [[headers]], everything else as key = value."""
    lines: list[str] = []

    def table(path: str, node: dict[str, Any]) -> None:
        for key, value in node.items():
            if not isinstance(value, dict) and not _is_table_array(value):
                lines.append(f"{_key(str(key))} = {toml_value(value)}")
        for key, value in node.items():
            sub = f"{path}.{_key(str(key))}" if path else _key(str(key))
            if isinstance(value, dict):
                lines.append(f"[{sub}]")
                table(sub, value)
            elif _is_table_array(value):
                for item in value:
                    lines.append(f"[[{sub}]]")
                    table(sub, item)

    table("", data)
    return "\n".join(lines) + "\n"


def _is_table_array(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)


# ----------------------------------------------------------------------------- values and paths

def _keys(known: Sequence[str]) -> st.SearchStrategy[str]:
    return st.one_of(st.sampled_from(list(known)), st.text(max_size=12), st.sampled_from(["", " ", "a.b", "\n", "kind"]))


def hostile_values(known_keys: Sequence[str] = ("kind", "name")) -> st.SearchStrategy[Any]:
    """TOML-representable values of every type: odd numbers, odd text, dates, lists, tables."""
    scalars = st.one_of(
        st.sampled_from(_ODD_NUMBERS), st.sampled_from(_ODD_TEXT), st.booleans(),
        st.integers(-(2**63), 2**63 - 1), st.floats(), st.text(max_size=20), st.dates(),
    )
    return st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                        | st.dictionaries(_keys(known_keys), inner, max_size=3), max_leaves=6)


def _paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    """Every path into nested dicts and lists, tables and leaves alike."""
    out = [prefix] if prefix else []
    if isinstance(node, dict):
        for key, value in node.items():
            out.extend(_paths(value, prefix + (key,)))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            out.extend(_paths(value, prefix + (index,)))
    return out


def _parent(data: Any, path: tuple) -> Any:
    for part in path[:-1]:
        data = data[part]
    return data


def _delete(data: Any, path: tuple) -> None:
    parent = _parent(data, path)
    del parent[path[-1]]


def _replace(data: Any, path: tuple, value: Any) -> None:
    _parent(data, path)[path[-1]] = value


def _ensure(data: dict, path: tuple[str, ...], value: Any) -> None:
    """Set data[path] = value, making tables on the way and replacing scalars in the way."""
    node = data
    for part in path[:-1]:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    node[path[-1]] = value


@st.composite
def _mutated_data(draw: st.DrawFn, data: Any, known_paths: Sequence[tuple[str, ...]], values: st.SearchStrategy[Any],
                  max_steps: int = 3) -> Any:
    """`data` (parsed JSON or TOML) after 1..max_steps structural mutations."""
    for _ in range(draw(st.integers(1, max_steps))):
        paths = _paths(data)
        op = draw(st.sampled_from(["delete", "replace", "set-known", "swap-type"]))
        if op == "set-known" and isinstance(data, dict) and known_paths:
            _ensure(data, draw(st.sampled_from(list(known_paths))), draw(values))
        elif op == "swap-type" and paths:  # a table where a value was, or the other way round
            path = draw(st.sampled_from(paths))
            old = _parent(data, path)[path[-1]]
            _replace(data, path, [old] if not isinstance(old, (dict, list)) else draw(st.sampled_from([0, "x", True, None])))
        elif op == "delete" and paths:
            _delete(data, draw(st.sampled_from(paths)))
        elif paths:
            _replace(data, draw(st.sampled_from(paths)), draw(values))
    return data


def _drop_none(value: Any) -> Any:
    """TOML has no null: a None left by a type swap becomes an empty table."""
    if value is None:
        return {}
    if isinstance(value, dict):
        return {k: _drop_none(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_drop_none(v) for v in value]
    return value


# ----------------------------------------------------------------------------- text and bytes

@st.composite
def _mutated_text(draw: st.DrawFn, text: str, lines: Sequence[str], max_steps: int = 2) -> bytes:
    """`text` after 0..max_steps line- and byte-level edits; the result may not be UTF-8."""
    rows = text.split("\n")
    for _ in range(draw(st.integers(0, max_steps))):
        op = draw(st.sampled_from(["insert-line", "delete-line", "duplicate-line", "swap-lines", "truncate",
                                   "insert-bytes", "replace-char", "oversize"]))
        at = draw(st.integers(0, max(len(rows) - 1, 0)))
        if op == "insert-line":
            rows.insert(at, draw(st.sampled_from(list(lines))))
        elif op == "delete-line" and rows:
            del rows[at]
        elif op == "duplicate-line" and rows:
            rows.insert(at, rows[at])
        elif op == "swap-lines" and len(rows) > 1:
            other = draw(st.integers(0, len(rows) - 1))
            rows[at], rows[other] = rows[other], rows[at]
        elif op == "replace-char" and rows and rows[at]:
            i = draw(st.integers(0, len(rows[at]) - 1))
            rows[at] = rows[at][:i] + draw(st.sampled_from(list("[]{}=\"'#.\\\n\x00 ,"))) + rows[at][i + 1:]
        elif op == "oversize":  # just past the 1 MiB a spec file may hold
            rows.append("#" + "x" * (1 << 20))
        else:
            raw = "\n".join(rows).encode("utf-8", "surrogateescape")
            cut = draw(st.integers(0, len(raw)))
            raw = raw[:cut] if op == "truncate" else raw[:cut] + draw(st.binary(min_size=1, max_size=8)) + raw[cut:]
            rows = raw.decode("utf-8", "surrogateescape").split("\n")
    return "\n".join(rows).encode("utf-8", "surrogateescape")


# ----------------------------------------------------------------------------- spec files

def _leaf_paths(data: dict[str, Any], prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out: list[tuple[str, ...]] = []
    for key, value in data.items():
        if isinstance(value, dict):
            out.extend(_leaf_paths(value, prefix + (key,)))
        else:
            out.append(prefix + (key,))
    return out


# Free text that reaches generated code (docstrings, the config, the header): quotes, escapes,
# template syntax, code, control and bidi characters.
INJECTIONS: tuple[str, ...] = (
    '"""', "'''", "\\", "\\n", "{{ 7 * 7 }}", "{% if true %}x{% endif %}", "{#", "\nimport os\nos.system('x')\n",
    "\x00", "\r", "\u2028", "\u202e", "\x1b[2J", "# -*- coding: latin-1 -*-", "[/]", "a" * 5000, "\ud7ff\ue000\U0010ffff",
)
_FREE_TEXT_KEYS = ("title", "notes", "source", "paper", "organization", "family", "data", "deviation", "released", "method", "base")


def _free_text_paths(data: Any) -> list[tuple]:
    return [path for path in _paths(data) if path[-1] in _FREE_TEXT_KEYS and isinstance(_parent(data, path)[path[-1]], str)]


@st.composite
def _hostile_spec_text(draw: st.DrawFn, bases: Sequence[str], known: Sequence[tuple[str, ...]]) -> bytes:
    text = draw(st.sampled_from(list(bases)))
    structural, retarget, retext = draw(st.booleans()), draw(st.integers(0, 2)) == 0, draw(st.integers(0, 2)) == 0
    if structural or retarget or retext:  # parse, mutate the tables, write TOML again
        data = tomllib.loads(text)
        if retext and _free_text_paths(data):  # the spec stays valid, so its text reaches the emitted code
            path = draw(st.sampled_from(_free_text_paths(data)))
            _replace(data, path, draw(st.one_of(st.sampled_from(INJECTIONS), st.text(max_size=30))))
        if structural:
            key_names = sorted({part for path in known for part in path})
            data = _drop_none(draw(_mutated_data(data, known, hostile_values(key_names))))
        if retarget:
            data["extends"] = draw(st.sampled_from(EXTENDS_TARGETS))
        text = to_toml(data)
    return draw(_mutated_text(text, NASTY_LINES))


def hostile_spec_files(bases: Sequence[str]) -> st.SearchStrategy[dict[str, bytes]]:
    """{MAIN: bytes} or {MAIN: bytes, BASE: bytes}: real specs (`bases`, TOML texts) mutated.

    Write the files beside the specs they came from (their `extends` stay resolvable) and load
    MAIN. Mutations: deleted, replaced and added keys and tables (known keys from every base put
    anywhere), values of the wrong type (nan, inf, huge and negative numbers, dates, control and
    bidi characters, markup), bad `extends` targets (missing, cycles, ODD_TARGETS, non-strings),
    inserted NASTY_LINES, duplicated and swapped lines, truncation, random bytes, and files just
    over the size cap. MAIN extends BASE in some draws, so damage also arrives by inheritance.
    """
    known = sorted({path for text in bases for path in _leaf_paths(tomllib.loads(text))})

    @st.composite
    def files(draw: st.DrawFn) -> dict[str, bytes]:
        main = draw(_hostile_spec_text(bases, known))
        if not draw(st.integers(0, 4)) == 0:
            return {MAIN: main}
        base = draw(_hostile_spec_text(bases, known))
        return {MAIN: b'extends = "fuzz-base"\n' + main, BASE: base}

    return files()


# ----------------------------------------------------------------------------- lock files

_JSON_ODD = (None, 0, -1, 10**30, 1e308, float("nan"), float("inf"), "", "x", "0" * 64, [], {}, [None], {"": None}, True)


def _json_values() -> st.SearchStrategy[Any]:
    scalars = st.one_of(st.sampled_from(_JSON_ODD), st.integers(), st.floats(), st.text(max_size=20), st.booleans(), st.none())
    return st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
                        max_leaves=6)


def hostile_locks(lock: dict[str, Any]) -> st.SearchStrategy[bytes]:
    """A spec.lock.json (`lock`, parsed) damaged: null, missing and wrong-typed fields, a changed
    structure, a raised context or vocabulary, another hash, or broken JSON text and bytes."""
    known = [("spec", "dims", "context"), ("spec", "dims", "vocab_size"), ("spec", "model", "name"), ("spec", "training", "fim"),
             ("spec", "model", "structure"), ("spec_sha256",), ("summary", "context"), ("backend",), ("scale",)]

    @st.composite
    def locks(draw: st.DrawFn) -> bytes:
        data: Any = json.loads(json.dumps(lock))
        choice = draw(st.integers(0, 9))
        if choice == 0:  # a raised context or vocabulary: the lock promises more than the model holds
            key = draw(st.sampled_from(["context", "vocab_size"]))
            data["spec"]["dims"][key] = data["spec"]["dims"][key] * draw(st.sampled_from([2, 1000, 10**9]))
        elif choice == 1:
            data = draw(st.sampled_from([[data], None, "spec", 0, [], {}]))
        else:
            data = draw(_mutated_data(data, known, _json_values()))
        text = json.dumps(data, indent=2, sort_keys=True, allow_nan=True)
        return draw(_mutated_text(text, ('{', '}', '"spec": null,', "NaN", "\x00"), max_steps=1 if choice > 7 else 0))

    return locks()


# ----------------------------------------------------------------------------- safetensors files

_DTYPE_CODES = ("F32", "F16", "BF16", "F64", "I8", "I16", "I32", "I64", "U8", "BOOL", "F8_E4M3", "f32", "", "X" * 50, 3, None, ["F32"])


def split_safetensors(data: bytes) -> tuple[dict[str, Any], bytes]:
    """(header, tensor bytes) of a safetensors file: an 8-byte little-endian header length, a JSON header, data."""
    (size,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8:8 + size]), data[8 + size:]


def join_safetensors(header: Any, body: bytes, length: int | None = None) -> bytes:
    """The file for `header` and `body`; `length` overrides the header length the prefix states."""
    text = json.dumps(header, separators=(",", ":"), allow_nan=True).encode()
    text += b" " * (-len(text) % 8)  # the format pads its header to 8 bytes with spaces
    return struct.pack("<Q", len(text) if length is None else length) + text + body


def _offsets() -> st.SearchStrategy[Any]:
    return st.one_of(st.tuples(st.integers(-(2**63), 2**64), st.integers(-(2**63), 2**64)).map(list),
                     st.sampled_from([[], [0], [0, 0, 0], "0,4", [0.0, 4.0], None, [-4, 0]]))


def _is_span(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 2 and all(type(v) is int for v in value)


def _shapes() -> st.SearchStrategy[Any]:
    return st.one_of(st.lists(st.integers(-(2**63), 2**64), max_size=5), st.sampled_from([[0], [2**62, 2**62], [-1], ["8"], [8.0], None, 8]))


# bytes per element of the codes a file may be relabelled with, keeping its data
_SIZES = {"F64": 8, "I64": 8, "F32": 4, "I32": 4, "F16": 2, "BF16": 2, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}


def _layout(tensors: list[tuple[str, str, list[int], bytes]], metadata: Any) -> bytes:
    """A well-formed file: the tensors' bytes back to back, offsets that cover them exactly."""
    header: dict[str, Any] = {} if metadata is None else {"__metadata__": metadata}
    body, at = b"", 0
    for name, dtype, shape, data in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [at, at + len(data)]}
        body, at = body + data, at + len(data)
    return join_safetensors(header, body)


@st.composite
def _well_formed(draw: st.DrawFn, header: dict[str, Any], body: bytes, names: list[str]) -> bytes:
    """A file safetensors itself reads, wrong only for the model: another dtype over the same bytes,
    another shape of the same size, tensors dropped, added or renamed, other metadata."""
    tensors = [(n, header[n]["dtype"], list(header[n]["shape"]), body[slice(*header[n]["data_offsets"])]) for n in names]
    metadata: Any = dict(header.get("__metadata__") or {})
    digest = metadata.get("taxonc.spec_sha256", "")
    for _ in range(draw(st.integers(1, 2))):
        i = draw(st.integers(0, len(tensors) - 1))
        name, dtype, shape, data = tensors[i]
        op = draw(st.sampled_from(["relabel", "reshape", "drop", "add", "rename", "swap-names", "metadata"]))
        if op == "relabel":  # the same bytes read as another type (a header rewritten from F32 to I32)
            code = draw(st.sampled_from(sorted(_SIZES)))
            numel = len(data) // _SIZES[code]
            if numel * _SIZES[code] == len(data):
                tensors[i] = (name, code, shape if _SIZES[code] == _SIZES.get(dtype) else [numel], data)
        elif op == "reshape":
            numel = math.prod(shape)
            tensors[i] = (name, dtype, draw(st.sampled_from([[numel], [1, numel], list(reversed(shape)), [numel, 1], []])), data)
        elif op == "drop" and len(tensors) > 1:
            del tensors[i]
        elif op == "add":
            tensors.append((draw(st.sampled_from([name + ".extra", "extra", name.upper()])), dtype, shape, data))
        elif op == "rename":
            tensors[i] = (draw(st.sampled_from([name.upper(), name + "\n", "x" * 200, "", "module." + name])), dtype, shape, data)
        elif op == "swap-names":  # undetectable without content hashes when the shapes agree
            j = draw(st.integers(0, len(tensors) - 1))
            other = tensors[j]
            tensors[i], tensors[j] = (other[0], dtype, shape, data), (name, other[1], other[2], other[3])
        else:
            metadata = draw(st.one_of(
                st.dictionaries(st.sampled_from(["taxonc.spec_sha256", "taxonc.spec_name", "format"]),
                                st.one_of(st.text(max_size=70), st.sampled_from(["0" * 64, digest])),
                                max_size=3),
                st.none()))
    if len({t[0] for t in tensors}) != len(tensors):
        tensors = list({t[0]: t for t in tensors}.values())  # a JSON object holds each name once
    return _layout(tensors, metadata)


def hostile_safetensors(data: bytes) -> st.SearchStrategy[bytes]:
    """A safetensors file (`data`) damaged: tensor dtypes, shapes and offsets (overlapping, out of
    range, swapped), renamed, duplicated, dropped and added tensors, metadata, the stated header
    length, JSON damage, short or overlong data, and random bytes."""
    header, body = split_safetensors(data)
    names = sorted(k for k in header if k != "__metadata__")

    @st.composite
    def files(draw: st.DrawFn) -> bytes:
        if draw(st.booleans()):
            return draw(_well_formed(header, body, names))
        head: Any = json.loads(json.dumps(header))
        tail, length = body, None
        for _ in range(draw(st.integers(1, 3))):
            name = draw(st.sampled_from(names))
            entry = head.get(name) if isinstance(head, dict) else None
            op = draw(st.sampled_from(["dtype", "shape", "offsets", "overlap", "swap", "rename", "duplicate", "drop",
                                       "metadata", "length", "body", "json", "entry"]))
            if op == "dtype" and isinstance(entry, dict):
                entry["dtype"] = draw(st.sampled_from(_DTYPE_CODES))
            elif op == "shape" and isinstance(entry, dict):
                entry["shape"] = draw(_shapes())
            elif op == "offsets" and isinstance(entry, dict):
                entry["data_offsets"] = draw(_offsets())
            elif op == "overlap" and isinstance(entry, dict) and _is_span(entry.get("data_offsets")):
                start, end = entry["data_offsets"]  # shifted: two tensors read some of the same bytes
                shift = draw(st.sampled_from([-4, 4, -(end - start) // 2]))
                entry["data_offsets"] = [start + shift, end + shift]
            elif op == "swap" and isinstance(head, dict):  # same-sized tensors trade places
                other = draw(st.sampled_from(names))
                if isinstance(head.get(other), dict) and isinstance(entry, dict):
                    entry["data_offsets"], head[other]["data_offsets"] = head[other].get("data_offsets"), entry.get("data_offsets")
            elif op == "rename" and isinstance(head, dict) and name in head:
                head[draw(st.one_of(st.text(max_size=20), st.sampled_from(["", "__metadata__", "x" * 10_000, name + "\n"])))] = head.pop(name)
            elif op == "duplicate" and isinstance(head, dict) and isinstance(entry, dict):
                head[name + ".copy"] = dict(entry)
            elif op == "drop" and isinstance(head, dict):
                head.pop(name, None)
            elif op == "metadata" and isinstance(head, dict):
                head["__metadata__"] = draw(st.one_of(
                    st.dictionaries(st.sampled_from(["taxonc.spec_sha256", "taxonc.spec_name", "format", ""]),
                                    st.one_of(st.text(max_size=70), st.integers(), st.none()), max_size=3),
                    st.sampled_from([None, [], "x", 0])))
            elif op == "length":
                length = draw(st.sampled_from([0, 1, 7, 8, 2**32, 2**63, 2**64 - 1, 100 << 20, len(data)]))
            elif op == "body":
                cut = draw(st.integers(0, len(tail)))
                tail = draw(st.sampled_from([tail[:cut], tail + b"\x00" * 8, tail[:cut] + b"\xff" + tail[cut + 1:]]))
            elif op == "entry" and isinstance(head, dict):
                head[name] = draw(_json_values())
            elif op == "json":
                head = draw(st.sampled_from([[head], None, "x", 0, {}]))
        out = join_safetensors(head, tail, length)
        if draw(st.integers(0, 9)) == 0:  # raw damage anywhere, the length prefix included
            cut = draw(st.integers(0, len(out)))
            out = draw(st.sampled_from([out[:cut], out[:cut] + draw(st.binary(min_size=1, max_size=8)) + out[cut:]]))
        return out

    return files()
