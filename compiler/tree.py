"""The family tree: every model spec in a folder, joined by `extends` and lineage edges.

Each edge carries the change it makes, in the words of `taxonc diff` (its headline axes, the
first few). Recipes (abstract = true) are not drawn: they are shared defaults, not models, and a
diff against one has no meaning; an `extends` through a recipe is followed to the model specs
above it, so a spec that extends only recipes is a root.
"""

from __future__ import annotations

import shutil
import subprocess
from enum import Enum
from pathlib import Path

import networkx as nx

from .diff import DOC_SUFFIXES, SpecDiff, diff_specs
from .errors import SpecError, TaxoncError, UsageError
from .fsutil import atomic_write_bytes, atomic_write_text
from .spec import ResolvedSpec, is_abstract, load_spec
from .spec.load import extends_targets

MAX_AXES = 3  # label lines per edge; the rest is counted ("+2 more")
MAX_LINE = 56  # characters per label line, so a drawn edge stays readable
RENDER_TIMEOUT_S = 120


class Relation(Enum):
    EXTENDS = "extends"
    LINEAGE = "lineage"  # the child's lineage.base names the parent


class Format(Enum):
    DOT = ".dot"
    SVG = ".svg"
    PNG = ".png"


# How an edge is drawn, by the relations it stands for.
EDGE_STYLE = {
    frozenset({Relation.EXTENDS}): "solid",
    frozenset({Relation.LINEAGE}): "dashed",
    frozenset({Relation.EXTENDS, Relation.LINEAGE}): "bold",
}


def output_format(path: Path) -> Format:
    """The format `-o` asks for, from its suffix; anything else is a usage error naming the allowed ones."""
    try:
        return Format(path.suffix.lower())
    except ValueError:
        allowed = ", ".join(f.value for f in Format)
        raise UsageError(f"-o {path}: unknown output format {path.suffix or '(no suffix)'!r}; allowed: {allowed}") from None


def load_folder(folder: Path) -> dict[Path, ResolvedSpec]:
    """Every model spec under `folder` (resolved file -> spec); every problem of every file at once."""
    if not folder.is_dir():
        raise TaxoncError(f"{folder}: not a folder; give the folder that holds the specs")
    files = sorted(folder.rglob("*.toml"))
    if not files:
        raise TaxoncError(f"{folder}: no spec files (*.toml) in this directory")
    loaded, problems = {}, []
    for path in files:
        if is_abstract(path):
            continue
        try:
            loaded[path.resolve()] = load_spec(path)
        except SpecError as exc:
            problems.extend(exc.problems)
    if problems:
        raise SpecError(problems)
    if not loaded:
        raise TaxoncError(f"{folder}: no model spec, only recipes (abstract = true), which describe no model on their own")
    return loaded


def _model_parents(path: Path, models: dict[Path, ResolvedSpec]) -> list[Path]:
    """The model specs `path` extends, looking through recipes to the model specs above them."""
    out: list[Path] = []
    for target in extends_targets(path):
        target = target.resolve()
        if target in models:
            out.append(target)
        elif target.is_file() and is_abstract(target):
            out.extend(_model_parents(target, models))
    return out


def _shorten(text: str) -> str:
    return text if len(text) <= MAX_LINE else text[: MAX_LINE - 1] + "…"


def edge_label(d: SpecDiff, child: ResolvedSpec, relations: frozenset[Relation]) -> str:
    """The change an edge makes: the diff's headline axes, first ones first, one short line each."""
    by_axis: dict[str, list[str]] = {}
    for axis, phrase in d.summary:
        by_axis.setdefault(axis, []).append(phrase)
    # Axes whose own written values changed lead; the rest only follow from them (a new d_model
    # changes the heads and d_ff the diff reports under attention and activation).
    written = {c.axis for c in d.changes if not c.key.endswith(DOC_SUFFIXES)}
    axes = sorted(by_axis, key=lambda axis: axis not in written)
    lines = [_shorten(f"{axis}: {'; '.join(by_axis[axis])}") for axis in axes]
    if Relation.LINEAGE in relations and child.spec.lineage and child.spec.lineage.stages:
        lines.insert(0, _shorten("post-training: " + ", ".join(s.method for s in child.spec.lineage.stages)))
    if not lines:
        other = sorted({c.axis for c in d.changes if not c.key.endswith(DOC_SUFFIXES)} - {"identity"})
        return "same architecture" + (f"; {', '.join(other)} differ" if other else "")
    more = len(lines) - MAX_AXES
    return "\n".join(lines[:MAX_AXES] + ([f"+{more} more"] if more > 0 else []))


def family_tree(folder: Path) -> nx.DiGraph:
    """The tree of the model specs under `folder`: nodes are named by path (relative, no suffix)."""
    models = load_folder(folder)
    base = folder.resolve()
    node_of = {path: path.relative_to(base).with_suffix("").as_posix() for path in models}
    by_name = {spec.name: path for path, spec in models.items()}
    graph = nx.DiGraph()
    for path, spec in models.items():
        released = spec.spec.model.released
        graph.add_node(node_of[path], label=spec.name + (f"\n{released}" if released else ""))
    relations: dict[tuple[Path, Path], set[Relation]] = {}
    for path, spec in models.items():
        for parent in _model_parents(path, models):
            relations.setdefault((parent, path), set()).add(Relation.EXTENDS)
        lineage = spec.spec.lineage
        parent = by_name.get(lineage.base) if lineage else None  # a base outside the folder draws no edge
        if parent is not None and parent != path:
            relations.setdefault((parent, path), set()).add(Relation.LINEAGE)
    for (parent, child), rels in relations.items():
        kinds = frozenset(rels)
        d = diff_specs(models[parent], models[child], graph=False)
        graph.add_edge(node_of[parent], node_of[child], label=edge_label(d, models[child], kinds),
                       relations=tuple(sorted(r.value for r in kinds)), style=EDGE_STYLE[kinds])
    return graph


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def to_dot(graph: nx.DiGraph) -> str:
    """DOT text of the tree, byte-for-byte the same for the same graph: nodes and edges sorted."""
    lines = ["// generated by `taxonc tree`; do not edit",
             "digraph family_tree {",
             "  rankdir=LR;",
             '  node [shape=box, style=rounded, fontname="Helvetica"];',
             '  edge [fontname="Helvetica", fontsize=9];']
    for node in sorted(graph.nodes):
        lines.append(f"  {_quote(node)} [label={_quote(graph.nodes[node]['label'])}];")
    for a, b in sorted(graph.edges):
        e = graph.edges[a, b]
        lines.append(f"  {_quote(a)} -> {_quote(b)} [label={_quote(e['label'])}, style={e['style']}];")
    return "\n".join(lines + ["}"]) + "\n"


def write_tree(dot: str, out: Path) -> None:
    """Write the tree to `out` in the format its suffix names, whole or not at all.

    SVG and PNG need Graphviz's `dot` program (the python `graphviz` package only calls that same
    program, so it is no fallback). Without it the DOT text is written beside `out` and the error
    says so.
    """
    fmt = output_format(out)
    if fmt is Format.DOT:
        atomic_write_text(out, dot)
        return
    program = shutil.which("dot")
    if program is None:
        fallback = out.with_suffix(Format.DOT.value)
        atomic_write_text(fallback, dot)
        raise TaxoncError(f"{out}: rendering needs Graphviz's `dot` program, which is not on PATH; wrote {fallback} "
                          f"instead (render it with: dot -T{fmt.value[1:]} {fallback} -o {out})")
    try:
        done = subprocess.run([program, f"-T{fmt.value[1:]}"], input=dot.encode("utf-8"), capture_output=True,
                              timeout=RENDER_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise TaxoncError(f"{out}: Graphviz's dot failed to run ({exc})") from None
    if done.returncode != 0 or not done.stdout:
        why = (done.stderr.decode("utf-8", "replace").strip().splitlines() or [f"exit status {done.returncode}"])[0]
        raise TaxoncError(f"{out}: Graphviz's dot failed: {why}")
    atomic_write_bytes(out, done.stdout)
