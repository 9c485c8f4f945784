"""The `taxonc` command line. Exit codes: 0 ok, 1 invalid input or failed check, 2 usage."""

from __future__ import annotations

from collections import Counter

import json
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from .backends.registry import BACKENDS, backend_names, get_backend
from .errors import SpecError, TaxoncError, UsageError

app = typer.Typer(
    name="taxonc",
    help="A declarative model-spec compiler for the transformer family tree.",
    rich_markup_mode="rich",
    pretty_exceptions_show_locals=False,
    no_args_is_help=True,
    add_completion=False,
)
# Wide by default when piped, so tables stay readable in logs and CI output.
out = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True, highlight=False, soft_wrap=True, width=None if sys.stderr.isatty() else 160)

SpecPaths = Annotated[list[Path], typer.Argument(help="Spec files or directories (searched for *.toml).", show_default=False)]
MLIR_ONLY = " or ".join(b.name for b in BACKENDS.values() if b.exports_mlir) + " only"  # "mlir only"


def expand(paths: list[Path]) -> list[Path]:
    """The spec files named or found under the directories named; a directory with none is an error.

    A check pointed at the wrong folder must fail, not pass after checking nothing.
    """
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            found = sorted(path.rglob("*.toml"))
            if not found:
                fail(TaxoncError(f"{path}: no spec files (*.toml) in this directory"))
            files.extend(found)
        else:
            files.append(path)
    return files


def no_model_spec(paths: list[Path]) -> TaxoncError:
    where = ", ".join(str(p) for p in paths)
    return TaxoncError(f"{where}: no model spec, only recipes (abstract = true), which describe no model on their own")


def cell(value: Any) -> Text:
    """A table cell holding spec text or a path, shown as written: rich markup in it is not interpreted."""
    return Text(str(value))


def fail(exc: TaxoncError) -> None:
    err.print(str(exc), markup=False)
    raise typer.Exit(2 if isinstance(exc, UsageError) else 1)


def load_models(paths: list[Path]) -> list[Any]:
    """Load every non-recipe spec; report all problems of all files at once."""
    from .spec import is_abstract, load_spec

    loaded, problems = [], []
    for path in expand(paths):
        if is_abstract(path):
            continue
        try:
            loaded.append(load_spec(path))
        except SpecError as exc:
            problems.extend(exc.problems)
    if problems:
        fail(SpecError(problems))
    if not loaded:
        fail(no_model_spec(paths))
    return loaded


def check_spec(path: Path) -> tuple[Any, list[Any]]:
    """(the resolved spec or None, every problem): the spec layer's, and the published-count rule's."""
    from .analysis.published import published_problems
    from .spec import load_spec

    try:
        resolved = load_spec(path)
    except SpecError as exc:
        return None, exc.problems
    return resolved, published_problems(resolved)


@app.command()
def validate(
    paths: SpecPaths,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per spec (a list for several): ok, name, problems.")] = False,
) -> None:
    """Check spec files; print every problem with file, key and line."""
    files = expand(paths)
    reports = []
    for path in files:
        resolved, problems = check_spec(path)
        reports.append({"file": str(path), "ok": not problems, "name": resolved.name if resolved and not resolved.abstract else None,
                        "recipe": bool(resolved and resolved.abstract), "problems": [p.to_json() for p in problems]})
        if as_json:
            continue
        if not problems:
            label = "recipe" if resolved.abstract else resolved.name
            out.print(f"[green]ok[/]   {escape(str(path))}  ({escape(label)})")
        else:
            err.print(f"[red]fail[/] {escape(str(path))}")
            for problem in problems:
                err.print("  " + problem.render(), markup=False)
    failed = sum(not r["ok"] for r in reports)
    if as_json:
        print(json.dumps(reports[0] if len(reports) == 1 else reports, indent=2))
    elif failed:
        err.print(f"{failed} of {len(files)} spec(s) invalid")
    if failed:
        raise typer.Exit(1)


@app.command()
def params(
    paths: SpecPaths,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per spec (a list for several).")] = False,
    components: Annotated[bool, typer.Option("--components", help="Show parameters per component.")] = False,
) -> None:
    """Parameters (total, active, embedding), FLOPs per token and KV-cache bytes, vs published."""
    from .analysis import params_report, within_tolerance
    from .describe import human

    reports = [params_report(r) for r in load_models(paths)]
    if as_json:
        payload: Any = reports[0] if len(reports) == 1 else reports
        print(json.dumps(payload, indent=2, sort_keys=True))
        return
    table = Table(title="Parameters and cost per token")
    for col in ("spec", "params", "published", "dev", "active", "embedding", "fwd FLOPs/tok", "KV bytes/tok (bf16)"):
        table.add_column(col, justify="left" if col == "spec" else "right")
    for r in reports:
        dev = r["params_deviation"]
        dev_text = "-" if dev is None else f"{dev * 100:+.2f}%"
        if dev is not None and not within_tolerance(r):
            dev_text = f"[yellow]{dev_text}*[/]"
        name = r["name"] + (" [red](assumed)[/]" if r["assumed"] else "")
        table.add_row(
            name, human(r["params"]), human(r["params_published"]), dev_text, human(r["params_active"]),
            human(r["params_embedding"]), human(r["flops_per_token"]), human(r["kv_cache_bytes_per_token"]["bf16"], "B"),
        )
    out.print(table)
    for r in reports:
        if r["deviation_reason"] and not within_tolerance(r):
            out.print(f"* {r['name']}: {r['deviation_reason']}", markup=False)
        if components:
            out.print(f"{r['name']}:")
            for key, value in r["params_components"].items():
                out.print(f"  {key:40s} {value:>18,d}")


def _origin_json(resolved: Any) -> dict[str, Any]:
    """{dotted key: {value, origin, file, assumed}} for every resolved value, as `show` prints them."""
    s = resolved.spec
    dump = s.model_dump(mode="json")
    values: dict[str, Any] = {}
    for key, origin in resolved.origins.items():
        value: Any = dump
        for part in key.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        assumed = not s.disclosed and origin.how != "default" and not key.startswith(("model.", "published."))
        values[key] = {"value": value, "origin": origin.how, "file": origin.file, "assumed": assumed}
    return values


@app.command()
def show(
    spec: Annotated[Path, typer.Argument(help="A spec file.")],
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object: name, file, sha256, chain, summary, values with origins.")] = False,
) -> None:
    """Print the resolved spec with each value's origin, and a plain-words summary."""
    from .describe import summary_lines
    from .spec import load_spec

    try:
        resolved = load_spec(spec)
    except TaxoncError as exc:
        fail(exc)
    s = resolved.spec
    if as_json:
        print(json.dumps({"name": None if resolved.abstract else s.model.name, "title": s.model.title, "file": resolved.path, "sha256": resolved.digest,
                          "recipe": resolved.abstract, "chain": list(resolved.chain), "summary": summary_lines(s),
                          "values": _origin_json(resolved)}, indent=2))
        return
    out.print(f"[bold]{escape(s.model.title or s.model.name)}[/]  ({escape(str(resolved.path))}, sha256 {resolved.digest[:12]})")
    if len(resolved.chain) > 1:
        out.print("extends chain: " + " <- ".join(reversed(resolved.chain)), markup=False)
    for line in summary_lines(s):
        out.print("  " + line, markup=False)
    table = Table(show_header=True, header_style="bold")
    table.add_column("key")
    table.add_column("value")
    table.add_column("origin")
    for key, entry in _origin_json(resolved).items():
        value, origin = entry["value"], resolved.origins[key]
        if value is None or value == "" or value == []:
            continue
        style = {"written": "green", "inherited": "cyan", "default": "dim"}[origin.how]
        text = value if isinstance(value, str) else json.dumps(value)
        if entry["assumed"]:
            text += "  (assumed)"
        table.add_row(cell(key), cell(text), Text(origin.describe(), style=style))
    out.print(table)


@app.command()
def schema(
    output: Annotated[Optional[Path], typer.Option("-o", "--output", help="Write to this file instead of stdout.")] = None,
) -> None:
    """Write the JSON Schema of spec files (for editors: taplo, Even Better TOML)."""
    from .spec.jsonschema import spec_json_schema

    text = json.dumps(spec_json_schema(), indent=2, sort_keys=True) + "\n"
    if output is None:
        sys.stdout.write(text)
    else:
        from .fsutil import atomic_write_text

        try:
            atomic_write_text(output, text)
        except TaxoncError as exc:
            fail(exc)
        out.print(f"wrote {output}", markup=False)


@app.command("compile")
def compile_cmd(
    spec: Annotated[Path, typer.Argument(help="A spec file.")],
    output: Annotated[Optional[Path], typer.Option("-o", "--output", help="Output directory (default: out/<name>).")] = None,
    backend: Annotated[str, typer.Option("--backend", help=f"One of: {backend_names()}.")] = "torch",
    dialect: Annotated[str, typer.Option("--dialect", help=f"{MLIR_ONLY}: torch, linalg, stablehlo or tosa")] = "torch",
    seq_len: Annotated[Optional[int], typer.Option("--seq-len", help=f"{MLIR_ONLY}: static sequence length (default min(16, context)).")] = None,
    batch: Annotated[int, typer.Option("--batch", help=f"{MLIR_ONLY}: static batch size.")] = 1,
    no_weights: Annotated[bool, typer.Option("--no-weights", help=f"{MLIR_ONLY}: elide weight constants.")] = False,
    scale: Annotated[str, typer.Option("--scale", help="full or tiny")] = "full",
    sets: Annotated[Optional[list[str]], typer.Option("--set", help="Override a key: --set dims.n_layers=4")] = None,
    dump_ir: Annotated[Optional[Path], typer.Option("--dump-ir", help="Write the IR after each pass here.")] = None,
    stop_after: Annotated[Optional[str], typer.Option("--stop-after", help="Stop the pass pipeline after this pass.")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No summary.")] = False,
    init_weights: Annotated[bool, typer.Option("--init-weights", help="Also write DIR/weights.safetensors, initialised as the spec says.")] = False,
    seed: Annotated[int, typer.Option("--seed", help="Seed for --init-weights.")] = 0,
) -> None:
    """Compile a spec to DIR/model.py, DIR/spec.lock.json and DIR/graph.txt."""
    from taxonc.runtime.errors import RuntimeFailure

    from .compile import compile_spec, write_artifact
    from .describe import human
    from .running import check_fits

    try:
        target = get_backend(backend)
        compiled = compile_spec(spec, backend=backend, scale=scale, sets=sets or [], stop_after=stop_after, dump_ir=dump_ir)
        mlir_text = None
        if target.exports_mlir:
            from .backends.mlir_export import export_model_source

            mlir_text = export_model_source(compiled.files["model.py"], dialect, batch, seq_len, no_weights, seed)
        out_dir = output or Path("out") / (compiled.spec.model.name + ("" if scale == "full" else f"-{scale}"))
        if init_weights:
            check_fits(compiled)  # refused before anything is written
        # one artifact, all files or none: a refusal or a crash leaves what was there before
        write_artifact(compiled, out_dir, extra_files={"model.mlir": mlir_text} if mlir_text is not None else None,
                       init_weights_seed=seed if init_weights else None)
    except TaxoncError as exc:
        fail(exc)
    except RuntimeFailure as exc:
        err.print(f"error: {exc}", markup=False)
        raise typer.Exit(1)
    if mlir_text is not None:
        from .backends.mlir_verify import verify_mlir

        counts = verify_mlir(mlir_text)
        out.print(f"  {out_dir}/model.mlir ({dialect}): {counts.get('matmul', 0)} matmuls, {counts.get('ops', 0)} ops", markup=False)
    if quiet:
        return
    summary = compiled.summary()
    from .analysis import forward_flops_per_token

    flops = forward_flops_per_token(compiled.spec).total
    out.print(f"[bold]{escape(summary['name'])}[/] ({escape(scale)}) -> {escape(str(out_dir))}/model.py")
    out.print(f"  params {human(summary['params'])}, forward FLOPs/token {human(flops)}, "
              f"{summary['n_layers']} layers x d_model {summary['d_model']}")
    applied = {k: v for k, v in compiled.log.summary().items() if k not in target.passes}  # the backend's passes select kernels
    out.print("  fusions: " + (", ".join(f"{k} x{v}" for k, v in applied.items()) or "none"))
    for (name, why), count in sorted(compiled.log.refusal_reasons().items()):
        verb = "no kernel" if name in target.passes else "not fused"
        out.print(f"  [dim]{verb} ({escape(name)} x{count}): {escape(why)}[/]")
    kernels = Counter(n.kernel.value for n in compiled.graph.nodes() if n.kernel is not None)
    if kernels:
        out.print("  kernels: " + ", ".join(f"{k} x{v}" for k, v in kernels.items()))


@app.command()
def graph(
    spec: Annotated[Path, typer.Argument(help="A spec file.")],
    fmt: Annotated[str, typer.Option("--format", help="text, dot or mermaid")] = "text",
    scale: Annotated[str, typer.Option("--scale", help="full or tiny")] = "full",
    passes: Annotated[bool, typer.Option("--passes/--no-passes", help="Show the graph after the fusion passes.")] = True,
) -> None:
    """Print the graph IR (identical layers folded) as text, Graphviz dot or Mermaid."""
    from .compile import compile_spec
    from .ir.render import render_graph

    try:
        compiled = compile_spec(spec, backend="torch", scale=scale, passes=None if passes else [])
        sys.stdout.write(render_graph(compiled.graph, fmt))
    except TaxoncError as exc:
        fail(exc)


@app.command()
def diff(
    a: Annotated[Path, typer.Argument(help="First spec.")],
    b: Annotated[Path, typer.Argument(help="Second spec.")],
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object.")] = False,
    markdown: Annotated[bool, typer.Option("--markdown", help="Markdown report.")] = False,
    graph: Annotated[bool, typer.Option("--graph/--no-graph", help="Compare graph ops and fusions too.")] = True,
) -> None:
    """Semantic diff of two resolved specs. Exit 0 when identical, 1 when they differ."""
    from .diff import diff_specs, render_markdown
    from .describe import human
    from .spec import load_spec

    try:
        d = diff_specs(load_spec(a), load_spec(b), graph=graph)
    except TaxoncError as exc:
        fail(exc)
    if as_json:
        print(json.dumps(d.to_json(), indent=2, default=str))
    elif markdown:
        sys.stdout.write(render_markdown(d))
    elif d.identical:
        out.print(f"{a} and {b} resolve to identical specs.", markup=False)
    else:
        out.print(f"[bold]{escape(str(a))}[/] → [bold]{escape(str(b))}[/]")
        for axis, text in d.summary:
            out.print(f"  [cyan]{escape(axis)}[/]: {escape(text)}")
        table = Table(title="derived figures")
        for col in ("figure", "A", "B", "B/A"):
            table.add_column(col, justify="left" if col == "figure" else "right")
        for key, f in d.figures.items():
            table.add_row(cell(key), human(f["a"]), human(f["b"]), f"{f['ratio']:.3g}x" if f["ratio"] else "-")
        out.print(table)
        if d.graph:
            out.print("  graph only in A: " + (", ".join(d.graph["only_a"]) or "nothing"), markup=False)
            out.print("  graph only in B: " + (", ".join(d.graph["only_b"]) or "nothing"), markup=False)
        changes = Table(title="changed values (documentation fields omitted)")
        for col in ("axis", "key", "A", "B", "origin in A", "origin in B"):
            changes.add_column(col)
        from .diff import DOC_SUFFIXES

        for c in d.changes:
            if not c.key.endswith(DOC_SUFFIXES):
                changes.add_row(*(cell(v) for v in (c.axis, c.key, repr(c.a), repr(c.b), c.origin_a, c.origin_b)))
        out.print(changes)
    raise typer.Exit(0 if d.identical else 1)


@app.command()
def tree(
    folder: Annotated[Path, typer.Argument(help="The folder of specs (searched for *.toml; recipes are left out).")],
    output: Annotated[Optional[Path], typer.Option("-o", "--output", help="tree.svg, tree.png or tree.dot (default: DOT on stdout).")] = None,
) -> None:
    """Draw the family tree: every model spec a node, `extends` and lineage edges labelled with what they change."""
    from .tree import family_tree, output_format, to_dot, write_tree

    try:
        if output is not None:
            output_format(output)  # a wrong suffix is refused before any spec is read
        dot = to_dot(family_tree(folder))
        if output is None:
            sys.stdout.write(dot)
            return
        write_tree(dot, output)
    except TaxoncError as exc:
        fail(exc)
    out.print(f"wrote {output}", markup=False)


@app.command()
def matrix(
    paths: SpecPaths,
    fmt: Annotated[str, typer.Option("--format", help="table, markdown or csv")] = "table",
    output: Annotated[Optional[Path], typer.Option("-o", "--output", help="Write to a file.")] = None,
) -> None:
    """The taxonomy as a feature matrix: one row per spec, one column per axis."""
    from .matrix import COLUMNS, rows, taxonomy_doc, to_csv, to_markdown

    files = expand(paths)
    try:
        if fmt == "markdown" and output is not None and len(paths) == 1 and paths[0].is_dir():
            text = taxonomy_doc(paths[0])
        else:
            table = rows(files)
            text = to_markdown(table) if fmt == "markdown" else to_csv(table) if fmt == "csv" else None
    except TaxoncError as exc:
        fail(exc)
    if fmt not in ("table", "markdown", "csv"):
        fail(UsageError(f"unknown format {fmt!r}; formats are: table, markdown, csv"))
    if text is None:
        t = Table(title="taxonomy")
        for col in COLUMNS:
            t.add_column(col)
        for r in table:
            t.add_row(*(cell(r[c]) for c in COLUMNS))
        out.print(t)
        return
    if output is None:
        sys.stdout.write(text)
    else:
        from .fsutil import atomic_write_text

        try:
            atomic_write_text(output, text)
        except TaxoncError as exc:
            fail(exc)


@app.command()
def check(
    paths: SpecPaths,
    backends: Annotated[str, typer.Option("--backends", help=f"Comma-separated backends to compare with the graph, of: {backend_names()}.")] = "torch",
    examples: Annotated[int, typer.Option("--examples", help="Random examples per sampled property.")] = 5,
    only: Annotated[Optional[str], typer.Option("--only", help="Comma-separated property names.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object.")] = False,
) -> None:
    """Property-test specs at tiny scale: causality, KV cache, counts, backends, GQA, MoE, passes, save/load, TOML."""
    from taxonc.testing import PROPERTIES, check_subject, load_subject

    if examples < 1:  # zero examples would check nothing and pass
        fail(UsageError(f"--examples must be >= 1 (random examples per sampled property), got {examples}"))
    try:
        targets = tuple(get_backend(name.strip()).name for name in backends.split(",") if name.strip())
    except UsageError as exc:
        fail(exc)
    names = only.split(",") if only else list(PROPERTIES)
    unknown = [n for n in names if n not in PROPERTIES]
    if unknown:
        fail(UsageError(f"unknown property {unknown[0]!r}; properties are: {', '.join(PROPERTIES)}"))
    from .spec import is_abstract

    results: dict[str, list] = {}
    for path in expand(paths):
        if is_abstract(path):
            continue
        try:
            subject = load_subject(path)
        except TaxoncError as exc:
            fail(exc)
        results[path.stem] = check_subject(subject, examples, targets, names)
    if not results:
        fail(no_model_spec(paths))
    failed = any(r.ok is False for rs in results.values() for r in rs)
    if as_json:
        print(json.dumps({spec: [r.__dict__ for r in rs] for spec, rs in results.items()}, indent=2))
        raise typer.Exit(1 if failed else 0)
    table = Table(title="property checks (tiny scale)")
    table.add_column("spec")
    for name in names:
        table.add_column(name)
    mark = {True: "[green]pass[/]", False: "[red]FAIL[/]", None: "[dim]n/a[/]"}
    for spec, rs in results.items():
        table.add_row(cell(spec), *(mark[r.ok] for r in rs))
    out.print(table)
    for spec, rs in results.items():
        for r in rs:
            if r.ok is False:
                out.print(f"[red]{escape(spec)}: {escape(r.name)} failed[/]: {escape(str(r.detail))}")
                for key, value in r.counterexample.items():
                    out.print(f"    {key}: {value}", markup=False)
    raise typer.Exit(1 if failed else 0)


@app.command("docs")
def docs_cmd(
    check: Annotated[bool, typer.Option("--check", help="Only compare: exit 1 and name the stale files.")] = False,
    root: Annotated[Optional[Path], typer.Option("--root", help="The repository checkout (default: the one taxonc runs from).")] = None,
) -> None:
    """Rewrite the generated parts of docs/ (model table, spec reference, family tree); --check only compares."""
    from .docs import GENERATED, GENERATED_FILES, checkout_root, update_docs

    root = root or checkout_root()
    missing = [name for name in GENERATED if not (root / name).is_file()]
    if missing:
        fail(UsageError(f"{root} is not a taxonc checkout ({missing[0]} is missing); pass --root"))
    stale = update_docs(root, check=check)
    names = ", ".join(str(path.relative_to(root)) for path in stale)
    if check and stale:
        err.print(f"stale generated sections in {names}: run taxonc docs", markup=False)
        raise typer.Exit(1)
    if check:
        out.print("generated docs are current: " + ", ".join([*GENERATED, *GENERATED_FILES]), markup=False)
    else:
        out.print("rewrote " + (names or "nothing (all current)"), markup=False)


@app.command("import")
def import_cmd(
    path: Annotated[Path, typer.Argument(help="A Hugging Face model directory: config.json, safetensors, tokenizer files.")],
    output: Annotated[Optional[Path], typer.Option("-o", "--output", help="Artifact directory (default: out/<name>).")] = None,
    backend: Annotated[str, typer.Option("--backend", help="torch or triton (model.py's backend).")] = "torch",
) -> None:
    """Import a Hugging Face checkpoint: DIR/spec.toml (each value names its origin), model.py, weights, tokenizer."""
    from .interop.hf_import import import_checkpoint, model_name

    out_dir = output or Path("out") / model_name(path)
    try:
        if get_backend(backend).exports_mlir:
            raise UsageError(f"--backend {backend}: import writes a runnable model.py; use torch or triton")
        done = import_checkpoint(path, out_dir, backend=backend)
    except TaxoncError as exc:
        fail(exc)
    out.print(f"{done.spec.model.name} ({done.family.model_type}): {done.n_tensors} tensors, "
              f"{done.weight_bytes / 2**20:.1f} MiB -> {out_dir}/ (spec.toml, model.py, weights.safetensors"
              f"{', ' + done.tokenizer if done.tokenizer else ''})", markup=False)


@app.command()
def export(
    artifact: Annotated[Path, typer.Argument(help="An artifact directory (taxonc import, or compile --init-weights).")],
    fmt: Annotated[str, typer.Option("--format", help="hf: config.json and model.safetensors for transformers")] = "hf",
    output: Annotated[Path, typer.Option("-o", "--output", help="Directory to write.")] = Path("out/export"),
) -> None:
    """Export an artifact with its weights in another format (hf: a transformers model directory)."""
    from .interop.hf_export import ExportFormat, export_hf

    if fmt not in tuple(ExportFormat):
        fail(UsageError(f"unknown format {fmt!r}; formats are: {', '.join(ExportFormat)}"))
    try:
        done = export_hf(artifact, output)
    except TaxoncError as exc:
        fail(exc)
    out.print(f"{done.hf_class}: {done.n_tensors} tensors -> {output}/ (config.json, model.safetensors)", markup=False)


Sampler = Annotated[str, typer.Option("--sampler", help="greedy, temperature, top-k, top-p, tail-free or beam")]


@app.command()
def run(
    target: Annotated[Optional[Path], typer.Argument(help="A spec file, or a directory from taxonc compile; "
                                                     "omit it when --weights names a directory.")] = None,
    prompt: Annotated[str, typer.Option("--prompt", help="Text to continue.")] = ...,
    scale: Annotated[Optional[str], typer.Option("--scale", help="full or tiny (spec files only; default full)")] = None,
    sets: Annotated[Optional[list[str]], typer.Option("--set", help="Override a spec key (spec files only).")] = None,
    weights: Annotated[Optional[Path], typer.Option("--weights", help="A safetensors file for the model; or a directory: "
                                                    "an imported artifact, or a Hugging Face checkpoint (imported into the cache).")] = None,
    tokenizer: Annotated[Optional[Path], typer.Option("--tokenizer", help="A tokenizer.json, a SentencePiece .model, or a folder holding one with its HF config files (default: DIR's own, else the shipped one).")] = None,
    sampler: Sampler = "greedy",
    temperature: Annotated[float, typer.Option("--temperature")] = 1.0,
    top_k: Annotated[Optional[int], typer.Option("--top-k")] = None,
    top_p: Annotated[Optional[float], typer.Option("--top-p")] = None,
    tfs: Annotated[Optional[float], typer.Option("--tfs", help="Tail-free sampling z.")] = None,
    num_beams: Annotated[int, typer.Option("--num-beams")] = 1,
    length_penalty: Annotated[float, typer.Option("--length-penalty")] = 1.0,
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens")] = 32,
    seed: Annotated[int, typer.Option("--seed", help="Seeds the weight init (when no weights are given) and sampling.")] = 0,
    fim_suffix: Annotated[Optional[str], typer.Option("--fim-suffix", help="Fill in the middle between the prompt and this suffix.")] = None,
    condition: Annotated[Optional[str], typer.Option("--condition", help="Prepend a feedback control token: good or bad.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of streaming.")] = False,
    threads: Annotated[Optional[int], typer.Option("--threads", help="CPU threads for decoding (default: 1 below 100M parameters, else torch's default).")] = None,
) -> None:
    """Generate text: load or initialise weights, tokenize, sample, stream."""
    from taxonc.runtime.errors import RuntimeFailure

    from .running import run_generation

    try:
        run_generation(target=target, prompt=prompt, scale=scale, sets=sets or [], weights=weights, tokenizer=tokenizer,
                       sampler=dict(kind=sampler, temperature=temperature, top_k=top_k, top_p=top_p, tfs=tfs,
                                    num_beams=num_beams, length_penalty=length_penalty),
                       max_new_tokens=max_new_tokens, seed=seed, fim_suffix=fim_suffix, condition=condition,
                       as_json=as_json, out=out, err=err, threads=threads)
    except TaxoncError as exc:
        fail(exc)
    except (RuntimeFailure, ValueError) as exc:
        err.print(f"error: {exc}", markup=False)
        raise typer.Exit(1)


@app.command()
def train(
    spec: Annotated[Path, typer.Argument(help="A spec file; its \\[training] table is the recipe.")],
    data: Annotated[list[Path], typer.Option("--data", help="Text, code or JSONL files, or directories of them.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="The run directory (metrics, checkpoints, plots, model/).")],
    scale: Annotated[str, typer.Option("--scale", help="full or tiny")] = "full",
    sets: Annotated[Optional[list[str]], typer.Option("--set", help="Override a spec key: --set training.lr=1e-3")] = None,
    tokens: Annotated[Optional[int], typer.Option("--tokens", help="Token budget (default training.tokens); the recipe's durations scale to it.")] = None,
    batch_tokens: Annotated[Optional[int], typer.Option("--batch-tokens", help="Batch size in tokens (default training.batch_tokens); ramps scale with it.")] = None,
    micro_batch: Annotated[int, typer.Option("--micro-batch", help="Sequences per process per forward pass.")] = 8,
    seq_len: Annotated[Optional[int], typer.Option("--seq-len", help="Tokens per sequence (default dims.context).")] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seeds the init, the data order and FIM.")] = 0,
    tokenizer: Annotated[Optional[Path], typer.Option("--tokenizer", help="A SentencePiece model (default: train one on the data).")] = None,
    eval_every: Annotated[int, typer.Option("--eval-every", help="Validation every N steps (and at the end).")] = 50,
    checkpoint_every: Annotated[int, typer.Option("--checkpoint-every", help="Checkpoint every N steps (and at the end).")] = 0,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from the last complete checkpoint in the run directory.")] = False,
    max_steps: Annotated[Optional[int], typer.Option("--max-steps", help="Stop after N steps (the schedule still spans --tokens).")] = None,
    bf16: Annotated[bool, typer.Option("--bf16", help="bfloat16 autocast.")] = False,
    activation_checkpointing: Annotated[bool, typer.Option("--activation-checkpointing", help="Recompute each block in the backward pass.")] = False,
    compile_model: Annotated[bool, typer.Option("--compile", help="torch.compile the model.")] = False,
    no_progress: Annotated[bool, typer.Option("--no-progress", help="No progress bar.")] = False,
    stage: Annotated[Optional[str], typer.Option("--stage", help="Lineage specs: the post-training stage to train (default: the first).")] = None,
    init_from: Annotated[Optional[Path], typer.Option("--init-from", help="Start from these weights: an artifact directory or a safetensors file.")] = None,
    scorer: Annotated[Optional[str], typer.Option("--scorer", help="Feedback conditioning: MODULE:FUNCTION scoring a document's text.")] = None,
    tp: Annotated[int, typer.Option("--tp", help="Tensor-parallel processes per model replica (under torchrun).")] = 1,
    no_fusion: Annotated[bool, typer.Option("--no-fusion", help="Compile without fusion passes (--tp implies it).")] = False,
) -> None:
    """Train a spec's model as its recipe says; the weights end in RUN_DIR/model (taxonc run loads it).

    Under torchrun --nproc-per-node N the model is sharded with FSDP2 (gloo on CPU)."""
    from taxonc.runtime.errors import RuntimeFailure

    from .training import TrainRequest, run_training

    request = TrainRequest(spec, data, output, scale, tuple(sets or ()), tokens, batch_tokens, micro_batch, seq_len, seed,
                           tokenizer, eval_every, checkpoint_every, resume, not no_progress, bf16,
                           activation_checkpointing, compile_model, max_steps, stage, init_from, scorer, tp,
                           not no_fusion)
    try:
        world, recipe, prepared, result = run_training(request)
    except TaxoncError as exc:
        fail(exc)
    except RuntimeFailure as exc:
        err.print(f"error: {exc}", markup=False)
        raise typer.Exit(1)
    if world.main:
        for note in recipe.notes:
            out.print(f"  {note}", markup=False)
        last = "no step left to run" if result.final_loss != result.final_loss else f"loss {result.final_loss:.4f}"  # NaN
        out.print(f"{result.steps} steps, {result.tokens:,} tokens ({prepared.train_tokens:,} in the training split): "
                  f"{last}, validation loss {result.val_loss:.4f}", markup=False)
        if result.artifact is not None:
            out.print(f"weights: {result.artifact}/weights.safetensors (taxonc run {result.artifact} --prompt ...)", markup=False)


@app.command()
def ablate(
    specs: Annotated[list[Path], typer.Argument(help="Spec files to compare.", show_default=False)],
    data: Annotated[list[Path], typer.Option("--data", help="Text, code or JSONL files, or directories of them.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Directory: one run per spec, ablation.png, ablation.json.")],
    tokens: Annotated[int, typer.Option("--tokens", help="Token budget of every run.")],
    batch_tokens: Annotated[int, typer.Option("--batch-tokens", help="Batch size in tokens of every run.")],
    scale: Annotated[str, typer.Option("--scale", help="full or tiny")] = "tiny",
    sets: Annotated[Optional[list[str]], typer.Option("--set", help="Override a key in every spec: --set training.lr=3e-3")] = None,
    micro_batch: Annotated[int, typer.Option("--micro-batch", help="Sequences per forward pass.")] = 8,
    seq_len: Annotated[Optional[int], typer.Option("--seq-len", help="Tokens per sequence (default dims.context).")] = None,
    seed: Annotated[int, typer.Option("--seed", help="One seed for every run.")] = 0,
    tokenizer: Annotated[Optional[Path], typer.Option("--tokenizer", help="A SentencePiece model (default: trained once, shared).")] = None,
    eval_every: Annotated[int, typer.Option("--eval-every", help="Validation every N steps (and at the end).")] = 50,
    no_progress: Annotated[bool, typer.Option("--no-progress", help="No progress bars.")] = False,
) -> None:
    """Train several specs on the same data, seed, tokenizer, batch and tokens; table and plot of validation loss.

    Tokens are matched; parameters and FLOPs per token are reported, not matched."""
    from taxonc.runtime.errors import RuntimeFailure

    from .ablation import markdown_table, run_ablation
    from .training import TrainRequest

    if len(specs) < 2:
        fail(UsageError("ablate compares at least two specs"))
    template = TrainRequest(specs[0], data, output, scale, tuple(sets or ()), tokens, batch_tokens, micro_batch, seq_len, seed,
                            tokenizer, eval_every, progress=not no_progress)
    try:
        rows, plot = run_ablation(specs, template)
    except TaxoncError as exc:
        fail(exc)
    except RuntimeFailure as exc:
        err.print(f"error: {exc}", markup=False)
        raise typer.Exit(1)
    out.print(markdown_table(rows), markup=False)
    out.print(f"tokens matched ({tokens:,}); parameters and FLOPs/token differ as listed. Plot: {plot}", markup=False)


tokenizer_app = typer.Typer(help="Train SentencePiece tokenizers.", no_args_is_help=True)
app.add_typer(tokenizer_app, name="tokenizer")


@tokenizer_app.command("train")
def tokenizer_train(
    input_path: Annotated[list[Path], typer.Option("--input", help="Text file(s) to train on.")],
    vocab: Annotated[int, typer.Option("--vocab", help="Vocabulary size.")],
    model_type: Annotated[str, typer.Option("--type", help="bpe or unigram")] = "bpe",
    output: Annotated[Path, typer.Option("-o", "--output", help="Where to write the .model file.")] = Path("tokenizer.model"),
) -> None:
    """Train a SentencePiece tokenizer (byte fallback on, FIM and feedback tokens included), quietly."""
    from taxonc.runtime.errors import RuntimeFailure
    from taxonc.runtime.tokenizer import DEFAULT_SPECIAL_TOKENS, Tokenizer, train_tokenizer

    try:
        path = train_tokenizer(input_path, vocab, model_type, output, special_tokens=DEFAULT_SPECIAL_TOKENS)
        out.print(f"wrote {path} ({Tokenizer.load(path).vocab_size} pieces, {model_type})", markup=False)
    except RuntimeFailure as exc:
        err.print(f"error: {exc}", markup=False)
        raise typer.Exit(1)


def main() -> None:
    try:
        app()
    except TaxoncError as exc:  # raised outside a command's own handling
        err.print(str(exc), markup=False)
        sys.exit(2 if isinstance(exc, UsageError) else 1)


if __name__ == "__main__":
    main()
