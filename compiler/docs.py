"""Generated documentation: the model table, the spec reference and the family tree, in docs/.

`taxonc docs` (or `python -m taxonc.compiler.docs`) rewrites the generated sections of
docs/models.md and docs/spec-reference.md in place, and docs/tree.dot whole (`taxonc tree`'s
DOT text); `--check` exits 1 when one is stale (a test runs the check).
A generated section sits between `<!-- generated:NAME -->` and `<!-- /generated:NAME -->`;
the prose around it is written by hand. The MLIR support table (docs/mlir-support.md) is
generated the same way by benchmarks/mlir_support_table.py, which needs torch-mlir and IREE.
"""

from __future__ import annotations

import sys
import types
import typing
from enum import Enum
from pathlib import Path
from typing import Any, Callable, get_args, get_origin

from pydantic import BaseModel

from .analysis import params_report, within_tolerance
from .describe import human
from .spec import is_abstract, load_spec
from .spec.identity import IDENTITY_FIELDS
from .spec.model import ModelSpec
from .spec.schema_walk import union_members
from .tree import family_tree, to_dot

# Each generated file under the repository root, and the sections this module writes into it.
GENERATED: dict[str, tuple[str, ...]] = {
    "docs/models.md": ("models",),
    "docs/spec-reference.md": ("reference",),
}


# Whole files under the repository root that are generated from the specs, and what writes each.
GENERATED_FILES: dict[str, Callable[[Path], str]] = {
    "docs/tree.dot": lambda root: to_dot(family_tree(root / "specs")),
}


def models_table(specs_dir: Path) -> str:
    rows = ["| spec | model | computed | published | deviation | active | source of the published count |",
            "|---|---|---:|---:|---:|---:|---|"]
    notes = []
    for path in sorted(specs_dir.glob("*.toml")):
        if is_abstract(path):
            continue
        resolved = load_spec(path)
        r = params_report(resolved)
        spec = resolved.spec
        dev = "-" if r["params_deviation"] is None else f"{r['params_deviation'] * 100:+.2f}%"
        if r["params_deviation"] is not None and not within_tolerance(r):
            dev += " *"
            notes.append(f"- `{spec.model.name}`: {spec.published.deviation}")
        title = (spec.model.title or spec.model.name) + ("" if spec.disclosed else " (undisclosed: assumed)")
        active = human(r["params_active"]) if spec.moe else "-"
        rows.append(f"| `{path.name}` | {title} | {human(r['params'])} | {human(r['params_published'])} | {dev} | "
                    f"{active} | {spec.published.source or '-'} |")
    text = "\n".join(rows)
    if notes:
        text += "\n\n\\* Published dimensions cannot reach the published count within 2%; the spec says why:\n\n" + "\n".join(notes)
    return text


def _type_name(annotation: Any) -> str:
    origin = get_origin(annotation)
    if origin is typing.Annotated:
        return _type_name(get_args(annotation)[0])
    if origin is typing.Literal:
        return " \\| ".join(f"`{a}`" for a in get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        members = union_members(annotation)
        if members:
            return "table, `kind` = " + " \\| ".join(f"`{k}`" for k in members)
        return " or ".join(_type_name(a) for a in get_args(annotation) if a is not type(None))
    if origin is list:
        return f"list of {_type_name(get_args(annotation)[0])}"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "table"
    if isinstance(annotation, type) and issubclass(annotation, Enum):
        return " \\| ".join(f"`{member.value}`" for member in annotation)
    return getattr(annotation, "__name__", str(annotation))


def _default(field: Any) -> str:
    if field.is_required():
        return "required"
    if field.default_factory is not None:
        value = field.default_factory()
        if isinstance(value, BaseModel):
            return "(table defaults)"
        return f"`{value!r}`"
    if isinstance(field.default, Enum):
        return f"`{field.default.value!r}`"
    return "-" if field.default is None else f"`{field.default!r}`"


def _table_rows(model: type[BaseModel], prefix: str, rows: list[str], seen: set[str]) -> None:
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        rows.append(f"| `{key}` | {_type_name(field.annotation)} | {_default(field)} | {(field.description or '').replace('|', '/')} |")
        members = union_members(field.annotation)
        nested = list(members.values())
        ann = field.annotation
        for arg in [ann, *get_args(ann)]:
            for inner in [arg, *get_args(arg)]:
                if isinstance(inner, type) and issubclass(inner, BaseModel) and inner not in nested:
                    nested.append(inner)
        for sub in nested:
            label = f"{key}[{sub.__name__}]" if members else key
            if label in seen:
                continue
            seen.add(label)
            if members:
                rows.append(f"| *{key}, kind = {', '.join(repr(str(k)) for k, v in members.items() if v is sub)}* | | | {sub.__doc__ or ''} |".replace("\n", " "))
            _table_rows(sub, key + ".", rows, seen)


def spec_reference() -> str:
    rows = ["| key | type | default | meaning |", "|---|---|---|---|",
            "| `extends` | string or list of strings | - | Spec(s) this file inherits from, as paths relative to it (`.toml` optional). Bases must agree on every value the file does not set. |",
            "| `abstract` | bool | `false` | A recipe: a partial spec other specs extend. |",
            "| `inherits` | list of " + " \\| ".join(f"`{f}`" for f in IDENTITY_FIELDS) + " | `[]` | Identity fields this spec "
            "takes from the model spec it extends, saying the base's value is true of it too. A spec that extends a model "
            "spec (not a recipe) writes each identity field its base sets or lists it here; see "
            "[usage](usage.md#identity-what-extends-does-not-copy-silently). |"]
    _table_rows(ModelSpec, "", rows, set())
    return "\n".join(rows)


def _generate(section: str, root: Path) -> str:
    return models_table(root / "specs") if section == "models" else spec_reference()


def replace_section(text: str, section: str, body: str, where: str = "the file") -> str:
    """`text` with the body between the section's markers replaced by `body`."""
    start, end = f"<!-- generated:{section} -->", f"<!-- /generated:{section} -->"
    if start not in text or end not in text:
        raise SystemExit(f"{where} lacks the {start} ... {end} markers")
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{start}\n{body.rstrip(chr(10))}\n{end}{tail}"


def section_body(text: str, section: str) -> str:
    """What stands between the section's markers (without the newline after the opening one)."""
    start, end = f"<!-- generated:{section} -->\n", f"<!-- /generated:{section} -->"
    return text.split(start, 1)[1].split(end, 1)[0]


def update_docs(root: Path, check: bool = False) -> list[Path]:
    """Rewrite (or, with check, only compare) every generated section; returns the files that were stale."""
    stale = []
    for name, sections in GENERATED.items():
        path = root / name
        text = path.read_text()
        new = text
        for section in sections:
            new = replace_section(new, section, _generate(section, root), name)
        if new != text:
            stale.append(path)
            if not check:
                path.write_text(new)
    for name, generate in GENERATED_FILES.items():
        path = root / name
        new = generate(root)
        if not path.is_file() or path.read_text() != new:
            stale.append(path)
            if not check:
                path.write_text(new)
    return stale


def checkout_root() -> Path:
    """The repository checkout this module runs from (compiler/ sits at its top level in an editable install)."""
    return Path(__file__).resolve().parent.parent


def main() -> None:
    root = checkout_root()
    if "--root" in sys.argv:
        root = Path(sys.argv[sys.argv.index("--root") + 1])
    if "--check" in sys.argv:
        stale = update_docs(root, check=True)
        for path in stale:
            print(f"{path.relative_to(root)}: generated sections are stale: run python -m taxonc.compiler.docs")
        if stale:
            raise SystemExit(1)
        print("generated docs are current: " + ", ".join([*GENERATED, *GENERATED_FILES]))
        return
    stale = update_docs(root)
    print("rewrote " + (", ".join(str(p.relative_to(root)) for p in stale) if stale else "nothing (all current)"))


if __name__ == "__main__":
    main()
