"""Read a spec file, resolve `extends`, validate, and remember where every value came from.

Resolution is a deep merge of TOML tables: the child's values win over its bases'. A table
whose `kind` changes replaces the inherited table whole (a rotary child of a learned-position
base must not inherit `offset`). Several bases may be listed; they must agree on every value
the child does not write itself, so the result never depends on their order.
"""

from __future__ import annotations

import copy
import difflib
import errno
import hashlib
import json
import os
import re
import stat
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import ValidationError

from ..errors import Problem, SpecError
from .identity import INHERITS_KEY, REPLACED_TABLES, check_identity, read_inherits
from .kinds import suggest_choice
from .locate import find_position, locate_keys
from .model import ModelSpec
from .schema_walk import KEY_SYNONYMS, allowed_keys, leaf_paths, strip_tags

LOADER_KEYS = ("extends", "abstract", INHERITS_KEY)

# Bounds on what a spec file may hold. Real specs are a few KiB and nest four levels; the bounds keep a hostile
# file from hanging the reader (a FIFO, /dev/zero, a huge file) or exhausting the parser's recursion.
MAX_SPEC_BYTES = 1 << 20
MAX_DEPTH = 32

# Placeholder values that let a recipe (abstract = true) be checked for unknown keys and
# wrong types without pretending it describes a model.
_ABSTRACT_FILLER = {
    "model": {"name": "abstract-recipe"},
    "dims": {"n_layers": 1, "d_model": 1, "n_heads": 1, "vocab_size": 1, "context": 1},
}


@dataclass(frozen=True)
class Origin:
    how: Literal["written", "inherited", "default"]
    file: str | None = None

    def describe(self) -> str:
        if self.how == "default":
            return "default"
        return f"{self.how} ({self.file})"


@dataclass(frozen=True)
class ResolvedSpec:
    spec: ModelSpec
    path: str
    origins: dict[str, Origin]
    chain: tuple[str, ...]
    digest: str
    abstract: bool = False
    positions: dict[str, dict[str, tuple[int, int]]] = field(default_factory=dict, repr=False, compare=False)

    @property
    def name(self) -> str:
        return self.spec.model.name

    def problem(self, key: str, message: str, allowed: tuple[str, ...] = (), hint: str = "") -> Problem:
        """A problem about a resolved value, placed in the file (and at the line) that wrote it."""
        origin = self.origins.get(key)
        file = origin.file if origin is not None and origin.file not in (None, "--set") else self.path
        line, col = find_position(self.positions.get(file, {}), key) or (None, None)
        return Problem(file, key, message, line, col, allowed, hint)


@dataclass
class _Raw:
    data: dict[str, Any]
    origins: dict[str, str]  # dotted leaf -> file that wrote it
    abstract: bool


class _Context:
    def __init__(self) -> None:
        self.problems: list[Problem] = []
        self.deferred: list[Problem] = []
        self.positions: dict[str, dict[str, tuple[int, int]]] = {}
        self.cache: dict[Path, _Raw | None] = {}

    def add(self, file: str, key: str, message: str, allowed: tuple[str, ...] = (), hint: str = "",
            deferred: bool = False) -> None:
        """Record a problem; a deferred one does not stop schema and rule checks, and is reported with them."""
        pos = find_position(self.positions.get(file, {}), key)
        line, col = pos if pos else (None, None)
        (self.deferred if deferred else self.problems).append(Problem(file, key, message, line, col, allowed, hint))


def _resolved(path: Path) -> Path:
    """`path` with symlinks resolved; where a symlink loop makes that impossible, the absolute path
    (reading it then reports the loop)."""
    try:
        return path.resolve()
    except (RuntimeError, OSError):  # Python 3.11 raises RuntimeError for a loop, later versions OSError
        return path.absolute()


def display_path(path: Path) -> str:
    try:
        return str(_resolved(path).relative_to(Path.cwd().resolve()))
    except (ValueError, RuntimeError, OSError):  # RuntimeError: a symlink loop, which resolves nowhere
        return str(path)


def is_symlink_loop(path: Path) -> bool:
    """True when following `path`'s links never ends (ELOOP); Path.is_file() would only say False."""
    try:
        os.stat(path)
    except OSError as exc:
        return exc.errno == errno.ELOOP
    except ValueError:  # a NUL in the name: no such file, which the caller reports
        return False
    return False


SYMLINK_LOOP = "symlink loop: following its links never reaches a file"


def _leaves(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(_leaves(value, dotted + "."))
        else:
            out[dotted] = value
    return out


def _merge(base: _Raw, child: dict[str, Any], child_origins: dict[str, str]) -> _Raw:
    """Deep-merge `child` over `base`; a table whose `kind` changes is replaced whole."""

    def merge(b: dict[str, Any], c: dict[str, Any], prefix: str, origins: dict[str, str]) -> dict[str, Any]:
        out = dict(b)
        for key, value in c.items():
            dotted = f"{prefix}{key}"
            old = b.get(key)
            kind_changes = isinstance(value, dict) and isinstance(old, dict) and "kind" in value and "kind" in old and value["kind"] != old["kind"]
            if isinstance(value, dict) and isinstance(old, dict) and not kind_changes:
                out[key] = merge(old, value, dotted + ".", origins)
            else:
                for leaf in [k for k in origins if k == dotted or k.startswith(dotted + ".")]:
                    del origins[leaf]
                out[key] = value
        return out

    origins = dict(base.origins)
    data = merge(base.data, child, "", origins)
    origins.update(child_origins)
    return _Raw(data, origins, abstract=False)


class SpecFileError(Exception):
    """A spec path that cannot be read as a spec file; the message completes "FILE: "."""


def read_spec_bytes(path: Path) -> bytes:
    """The bytes of a regular file of at most MAX_SPEC_BYTES; anything else raises SpecFileError.

    The file is opened without blocking and checked on the open descriptor, so a FIFO or a device
    is refused instead of read forever, and nothing can be swapped in between the check and the read.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        raise SpecFileError("dangling symlink" if path.is_symlink() else "file not found") from None
    except IsADirectoryError:
        raise SpecFileError("is a directory, not a spec file") from None
    except OSError as exc:
        raise SpecFileError(f"cannot read: {exc.strerror or type(exc).__name__}") from None
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise SpecFileError("is a directory, not a spec file")
        if not stat.S_ISREG(mode):
            raise SpecFileError("is not a regular file (a device, FIFO or socket); a spec must be a regular file")
        with os.fdopen(fd, "rb", closefd=False) as handle:
            data = handle.read(MAX_SPEC_BYTES + 1)
    except OSError as exc:
        raise SpecFileError(f"cannot read: {exc.strerror or type(exc).__name__}") from None
    finally:
        os.close(fd)
    if len(data) > MAX_SPEC_BYTES:
        raise SpecFileError(f"larger than {MAX_SPEC_BYTES >> 20} MiB, the most a spec file may hold")
    return data


def _too_deep_at(text: str, limit: int = MAX_DEPTH) -> tuple[int, int] | None:
    """The (line, column) where arrays, inline tables or dotted keys first nest deeper than `limit`, or None.

    A linear scan that skips strings and comments: it runs before the TOML parser, whose recursion
    a deep enough value would exhaust, and which takes time quadratic in a dotted key's parts.
    Header brackets count too, but they close on their own line. A dotted key is the run of text
    before `=` or a header's `]`; values never hold more than one dot between separators.
    """
    depth, line, start, i, n = 0, 1, 0, 0, len(text)
    dots, over = 0, None  # dots in the current key, and where they first passed the limit
    while i < n:
        c = text[i]
        if c in "\n,[{}":
            dots, over = 0, None
        elif c == ".":
            dots += 1
            if dots == limit + 1:
                over = (line, i - start + 1)
        elif c in "=]" and over is not None:
            return over
        if c == "\n":
            line, start = line + 1, i + 1
        elif c == "#":
            end = text.find("\n", i)
            i = n if end < 0 else end
            continue
        elif c in "\"'":
            quote = c * 3 if text.startswith(c * 3, i) else c
            j = i + len(quote)
            while j < n and not text.startswith(quote, j):
                if c == '"' and text[j] == "\\":
                    j += 1
                elif text[j] == "\n":
                    if len(quote) == 1:
                        break  # an unterminated string: the parser reports it
                    line, start = line + 1, j + 1
                j += 1
            i = j + len(quote)
            continue
        elif c in "[{":
            depth += 1
            if depth > limit:
                return line, i - start + 1
        elif c in "]}":
            depth = max(depth - 1, 0)
        i += 1
    return None


def _deepest_key(data: dict[str, Any], limit: int = MAX_DEPTH) -> str | None:
    """A dotted key nested deeper than `limit` tables (dotted keys and headers nest without brackets), or None."""
    stack: list[tuple[Any, tuple[str, ...]]] = [(data, ())]
    while stack:
        value, parts = stack.pop()
        if len(parts) > limit:
            return ".".join(parts)
        if isinstance(value, dict):
            stack.extend((v, parts + (str(k),)) for k, v in value.items())
        elif isinstance(value, list):
            stack.extend((v, parts + (str(k),)) for k, v in enumerate(value))
    return None


def _parse(path: Path, ctx: _Context, given: Path | None = None) -> dict[str, Any] | None:
    file = display_path(path)
    try:
        text = read_spec_bytes(path).decode("utf-8")
    except SpecFileError as exc:
        if given is not None and given.is_symlink():  # name the path the user gave, and where it leads
            ctx.add(display_path(given), "", f"{exc} (it links to {path})")
        else:
            ctx.add(file, "", str(exc))
        return None
    except UnicodeDecodeError as exc:
        ctx.add(file, "", f"not UTF-8 text ({exc.reason} at byte {exc.start})")
        return None
    too_deep = f"nested too deeply: arrays, inline tables and tables may nest at most {MAX_DEPTH} levels"
    where = _too_deep_at(text)
    if where is not None:
        ctx.problems.append(Problem(file, "", too_deep, *where))
        return None
    ctx.positions[file] = locate_keys(text)
    try:
        data = tomllib.loads(text)
    except RecursionError:  # a nesting the scan above did not see
        ctx.add(file, "", too_deep)
        return None
    except tomllib.TOMLDecodeError as exc:
        match = re.search(r"\(at line (\d+), column (\d+)\)", str(exc))
        message = re.sub(r"\s*\(at line \d+, column \d+\)", "", str(exc))
        line, col = (int(match.group(1)), int(match.group(2))) if match else (None, None)
        ctx.problems.append(Problem(file, "", f"malformed TOML: {message}", line, col))
        return None
    deep = _deepest_key(data)
    if deep is not None:
        shown = deep if len(deep) <= 60 else deep[:60] + "..."
        pos = find_position(ctx.positions[file], deep)
        ctx.problems.append(Problem(file, shown, too_deep, *(pos or (None, None))))
        return None
    return data


def _resolve_target(path: Path, target: str) -> Path | None:
    """The file `target` names, relative to the spec at `path`; None when it names no file.

    "", ".", "/" and ".." name folders: adding ".toml" to them would look outside the spec's
    folder ("" would find "../specs.toml") or fail.
    """
    if Path(target).name in ("", ".", ".."):
        return None
    candidate = (path.parent / target)
    if candidate.suffix != ".toml":
        candidate = candidate.with_name(candidate.name + ".toml")
    return candidate


def _present(path: Path) -> bool:
    """Whether anything is at `path`. What is there but is not a spec file (a folder, a FIFO, a link to
    a device or to itself) is read, and the read says what it is, instead of "no spec"."""
    return os.path.lexists(path)  # False for a name too long or with a NUL byte, not an exception


def _nearby_specs(path: Path, target: str) -> str:
    names = sorted(str(p.relative_to(path.parent).with_suffix("")) for p in path.parent.rglob("*.toml"))
    close = difflib.get_close_matches(target.removesuffix(".toml"), names, n=3)
    return f"did you mean {', '.join(repr(c) for c in close)}?" if close else ""


def _load_raw(path: Path, ctx: _Context, stack: tuple[Path, ...]) -> _Raw | None:
    given = path
    if is_symlink_loop(given):
        ctx.add(display_path(given), "", SYMLINK_LOOP)
        return None
    path = _resolved(path)
    if path in stack:
        cycle = " -> ".join(display_path(p) for p in stack + (path,))
        ctx.add(display_path(stack[-1]), "extends", f"extends cycle: {cycle}")
        return None
    if path in ctx.cache:
        return ctx.cache[path]
    file = display_path(path)
    data = _parse(path, ctx, given)
    if data is None:
        ctx.cache[path] = None
        return None
    extends = data.pop("extends", [])
    inherits_written = INHERITS_KEY in data
    inherits, inherits_problems = read_inherits(data.pop(INHERITS_KEY, []))
    abstract = data.pop("abstract", False)
    if not isinstance(abstract, bool):
        ctx.add(file, "abstract", "must be true or false")
    if isinstance(extends, str):
        extends = [extends]
    if not isinstance(extends, list) or not all(isinstance(e, str) for e in extends):
        ctx.add(file, "extends", "must be a spec path or a list of spec paths")
        extends = []

    bases: list[_Raw] = []
    model_bases: list[tuple[str, dict[str, Any]]] = []  # (file, leaves) of each base that is not a recipe
    for target in extends:
        base_path = _resolve_target(path, target)
        if base_path is None:
            ctx.add(file, "extends", f"no spec {target!r}: it names a folder, not a spec file", hint=_nearby_specs(path, target))
            continue
        if is_symlink_loop(base_path):
            ctx.add(file, "extends", f"{target!r} is a {SYMLINK_LOOP} ({display_path(base_path)})")
            continue
        if not _present(base_path):
            ctx.add(file, "extends", f"no spec {target!r} (looked for {display_path(base_path)})", hint=_nearby_specs(path, target))
            continue
        base = _load_raw(base_path, ctx, stack + (path,))
        if base is not None:
            bases.append(base)
            if not base.abstract:
                model_bases.append((display_path(base_path), _leaves(base.data)))

    own_leaves = _leaves(data)
    own_origins = {leaf: file for leaf in own_leaves}
    merged = _Raw({}, {}, abstract)
    combined: dict[str, Any] = {}
    for base in bases:
        for leaf, value in _leaves(base.data).items():
            if leaf in combined and combined[leaf][0] != value and leaf not in own_leaves:
                ctx.add(
                    file,
                    "extends",
                    f"bases disagree on {leaf}: {combined[leaf][0]!r} ({combined[leaf][1]}) vs {value!r} ({base.origins.get(leaf)})",
                    hint=f"write {leaf} in this file to choose",
                )
            combined.setdefault(leaf, (value, base.origins.get(leaf)))
        merged = _merge(merged, base.data, dict(base.origins))
    for key, message, allowed, hint in inherits_problems + check_identity(own_leaves, inherits, model_bases, inherits_written):
        ctx.add(file, key, message, allowed, hint, deferred=True)
    if model_bases:  # this model's published figures replace its base model's, never merge with them
        for table in REPLACED_TABLES:
            if isinstance(data.get(table), dict):
                merged.data = {k: v for k, v in merged.data.items() if k != table}
                merged.origins = {k: f for k, f in merged.origins.items() if k != table and not k.startswith(table + ".")}
    result = _merge(merged, data, own_origins)
    result.abstract = abstract
    ctx.cache[path] = result
    return result


def _problem_from_error(err: dict[str, Any], raw: _Raw, ctx: _Context, top_file: str) -> None:
    dotted, model_cls = strip_tags(err["loc"])
    file = raw.origins.get(dotted) or next(
        (f for leaf, f in sorted(raw.origins.items()) if leaf.startswith(dotted + ".")), top_file
    )
    kind = err["type"]
    message = err["msg"].removeprefix("Value error, ")
    allowed: tuple[str, ...] = ()
    hint = ""
    if kind == "extra_forbidden":
        options = allowed_keys(model_cls)
        leaf = dotted.rsplit(".", 1)[-1]
        close = suggest_choice(leaf, options, KEY_SYNONYMS)
        message = "unknown key"
        hint = f"did you mean {close!r}?" if close else ""
        allowed = tuple(options)
    elif kind in ("literal_error", "enum"):
        allowed = tuple(re.findall(r"'([^']*)'", err["ctx"]["expected"]))
        close = suggest_choice(err["input"], allowed)
        message = f"{err['input']!r} is not a valid choice"
        hint = f"did you mean {close!r}?" if close else ""
    elif kind == "union_tag_invalid":
        allowed = tuple(re.findall(r"'([^']*)'", err["ctx"]["expected_tags"]))
        close = suggest_choice(err["ctx"]["tag"], allowed)
        dotted = f"{dotted}.kind" if dotted else "kind"
        message = f"{err['ctx']['tag']!r} is not a valid kind"
        hint = f"did you mean {close!r}?" if close else ""
    elif kind == "union_tag_not_found":
        dotted = f"{dotted}.kind"
        message = "missing 'kind'"
    elif kind == "missing":
        message = "required key is missing"
    elif kind == "less_than_equal" and isinstance(err["input"], int):  # a size bound
        message = f"{err['input']!r} is too large: at most {err['ctx']['le']} is allowed"
    elif "input" in err and kind.endswith("_type"):
        message = f"{message}, got {type(err['input']).__name__} {err['input']!r}"
    ctx.add(file, dotted, message, allowed, hint)


def _drop_implied_missing(problems: list[Problem]) -> list[Problem]:
    """A misspelt required key yields 'unknown key' plus 'missing'; keep only the first."""
    suggested = set()
    for p in problems:
        if p.message == "unknown key" and p.hint.startswith("did you mean"):
            parent = p.key.rsplit(".", 1)[0] if "." in p.key else ""
            name = re.search(r"'([^']*)'", p.hint).group(1)
            suggested.add(f"{parent}.{name}" if parent else name)
    return [p for p in problems if not (p.message == "required key is missing" and p.key in suggested)]


def _delete(data: Any, parts: list[str]) -> None:
    """Remove the table entry at a dotted path (list items addressed by index), if it is there."""
    for part in parts[:-1]:
        if isinstance(data, dict):
            data = data.get(part)
        elif isinstance(data, list) and part.isdigit() and int(part) < len(data):
            data = data[int(part)]
        else:
            return
    if isinstance(data, dict):
        data.pop(parts[-1], None)


def _parsed_sections(data: dict[str, Any], errors: list[dict[str, Any]]) -> tuple[ModelSpec | None, frozenset[str]]:
    """The spec as far as the schema accepted it, and the top-level sections it rejected.

    An unknown key means nothing, so it is dropped and its section still counts as parsed. A section with
    a wrong or missing value is rejected: it is replaced by its default (a placeholder where it is
    required), and the caller skips the cross-field rules that read it. None when nothing can be salvaged.
    """
    repaired = copy.deepcopy(data)
    rejected: set[str] = set()
    for err in errors:
        if not err["loc"]:
            return None, frozenset()
        if err["type"] == "extra_forbidden":
            _delete(repaired, strip_tags(err["loc"])[0].split("."))
        else:
            rejected.add(str(err["loc"][0]))
    for section in rejected:
        declared = ModelSpec.model_fields.get(section)
        if declared is None:
            continue
        if declared.is_required():
            repaired[section] = copy.deepcopy(_ABSTRACT_FILLER[section])
        else:
            repaired.pop(section, None)
    try:
        return ModelSpec.model_validate(repaired), frozenset(rejected)
    except (ValidationError, KeyError):
        return None, frozenset()


# Fields added to the schema after digests were first written (spec.lock.json, weights bound to a spec), with
# the default that leaves a model as it was. At that default a field is left out of the digest, so every spec
# written before it keeps its digest and the artifacts compiled from it still load. The runtime checks locks
# with the same table (runtime/spec_lock.py may not import the compiler; a test keeps the two equal).
LATER_FIELDS: dict[tuple[str, str], Any] = {
    ("attention", "qk_norm"): "none",
}


def spec_digest(spec: ModelSpec) -> str:
    data = spec.model_dump(mode="json")
    for (table, key), default in LATER_FIELDS.items():
        if data.get(table, {}).get(key, default) == default:
            data.get(table, {}).pop(key, None)
    return hashlib.sha256(json.dumps(data, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def load_spec(path: str | Path, overrides: dict[str, Any] | None = None) -> ResolvedSpec:
    """Load and validate one spec, raising SpecError with every problem found."""
    from .rules import check_rules

    path = Path(path)
    ctx = _Context()
    raw = _load_raw(path, ctx, ())
    file = display_path(path)
    if raw is None or ctx.problems:
        raise SpecError(ctx.problems + ctx.deferred or [Problem(file, "", "could not be loaded")])
    data = raw.data
    if overrides:
        raw = _merge(raw, overrides, {leaf: "--set" for leaf in _leaves(overrides)})
        data = raw.data
    if raw.abstract:
        data = _merge(_Raw(_ABSTRACT_FILLER, {}, True), data, {}).data
    try:
        spec = ModelSpec.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors()
        for err in errors:
            _problem_from_error(err, raw, ctx, file)
        spec, rejected = _parsed_sections(data, errors)
        if spec is not None and not raw.abstract:  # rules over what did parse: one run lists every problem
            for key, message, allowed in check_rules(spec, skip=rejected):
                ctx.add(raw.origins.get(key, file), key, message, allowed)
        raise SpecError(_drop_implied_missing(ctx.problems) + ctx.deferred) from None
    if not raw.abstract:
        for key, message, allowed in check_rules(spec):
            ctx.add(raw.origins.get(key, file), key, message, allowed)
    if ctx.problems or ctx.deferred:
        raise SpecError(ctx.problems + ctx.deferred)
    origins: dict[str, Origin] = {}
    for leaf in leaf_paths(spec):
        writer = raw.origins.get(leaf) or next(
            (f for k, f in raw.origins.items() if k.startswith(leaf + ".") or leaf.startswith(k + ".")), None
        )
        if writer is None:
            origins[leaf] = Origin("default")
        else:
            origins[leaf] = Origin("written" if writer in (file, "--set") else "inherited", writer)
    chain = tuple(dict.fromkeys(raw.origins.values()))
    return ResolvedSpec(spec, file, origins, chain, spec_digest(spec), raw.abstract, ctx.positions)


def extends_targets(path: str | Path) -> list[Path]:
    """The files a spec's `extends` names directly, in the order written.

    For a spec that load_spec accepted; it is what load_spec follows, one step up (the family tree
    draws these edges).
    """
    path = _resolved(Path(path))
    targets = tomllib.loads(read_spec_bytes(path).decode("utf-8")).get("extends", [])
    targets = [targets] if isinstance(targets, str) else targets
    return [t for t in (_resolve_target(path, target) for target in targets) if t is not None]


def is_abstract(path: str | Path) -> bool:
    """True for recipe files (abstract = true), which describe no model on their own."""
    try:
        text = read_spec_bytes(Path(path)).decode("utf-8")
        if _too_deep_at(text) is not None:
            return False  # load_spec reports it
        return bool(tomllib.loads(text).get("abstract", False))
    except (SpecFileError, UnicodeDecodeError, tomllib.TOMLDecodeError, RecursionError):
        return False
