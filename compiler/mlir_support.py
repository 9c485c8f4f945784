"""Which specs export to which MLIR dialect: the markdown support table.

For every spec at tiny scale and every dialect (torch, linalg, stablehlo, tosa): export the
emitted model with backends.mlir_export (fp32, batch 1, 8 tokens by default), parse the text
back and count its matmuls (mlir_verify). For linalg, also compile with IREE (llvm-cpu), run,
and compare with the torch logits: max abs diff <= 1e-4 or the cell fails.

Specs whose tiny models have the same structure (the same graph up to the model name and norm
epsilons) export the same ops, so each such group is exported once and every member gets its
result; every_spec exports each spec on its own. A cell is "ok" (linalg: with the IREE
difference), or a footnote number pointing at the one-line error. Needs torch-mlir and IREE
(the `mlir` extra). A test checks that the published table is current; print it with

    python -m taxonc.compiler.mlir_support [--write FILE] [--specs llama,t5] [--dialects torch,linalg]
                                           [--batch 1] [--seq 8] [--no-iree] [--every-spec]
"""

from __future__ import annotations

import argparse
import hashlib
import re
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Callable

import torch

from taxonc.runtime.artifact import load_source

from .backends.mlir_export import DIALECTS, MlirExportError, export_mlir_many
from .backends.mlir_verify import verify_mlir
from .compile import compile_spec
from .errors import TaxoncError
from .spec import is_abstract

TOL = 1e-4
SPECS_DIR = Path(__file__).resolve().parent.parent / "specs"  # the repo's specs/, in a checkout


def structure_key(graph_txt: str) -> str:
    """The graph without its name line and with norm epsilons blanked: equal keys export alike."""
    body = "\n".join(graph_txt.splitlines()[1:])
    return hashlib.sha256(re.sub(r"eps=[0-9.e+-]+", "eps=*", body).encode()).hexdigest()[:12]


def run_group(source: str, name: str, dialects: list[str], batch: int, seq: int, iree: bool) -> dict[str, dict]:
    """Export one model to every dialect: {dialect: {"ok": bool, "text": cell or error, "s": seconds}}."""
    module = load_source(source, name)
    torch.manual_seed(0)
    model = module.build(dtype=torch.float32).eval()
    ids, extra = module.example_inputs(batch=batch, seq=min(seq, module.CONFIG.context), dtype=torch.float32)
    with torch.no_grad():
        reference = model(ids, **extra)
    results: dict[str, dict] = {}
    start = time.perf_counter()
    exported = export_mlir_many(model, (ids,), extra, dialects)
    per_export = (time.perf_counter() - start) / len(dialects)
    for dialect in dialects:
        start = time.perf_counter()
        text = exported[dialect]
        try:
            if isinstance(text, MlirExportError):
                raise text
            counts = verify_mlir(text)
            cell = f"ok ({counts['matmul']} mm)"
            if dialect == "linalg" and iree:
                from .backends.mlir_iree import run_linalg

                logits = run_linalg(text, ids, **extra)
                if tuple(logits.shape) != tuple(reference.shape):
                    raise TaxoncError(f"IREE logits have shape {tuple(logits.shape)}, torch {tuple(reference.shape)}")
                diff = (logits.to(reference.dtype) - reference).abs().max().item()
                if not diff <= TOL:
                    raise TaxoncError(f"IREE logits differ from torch by {diff:.2e} (> {TOL:.0e})")
                cell = f"ok ({counts['matmul']} mm, IREE ok)"  # the difference itself varies by CPU
            results[dialect] = {"ok": True, "text": cell}
        except MlirExportError as exc:
            results[dialect] = {"ok": False, "text": exc.reason}
        except TaxoncError as exc:
            results[dialect] = {"ok": False, "text": f"{dialect}: {exc}"}
        except Exception as exc:  # noqa: BLE001 - an unexpected failure is a table cell too
            first = (str(exc).strip().splitlines() or [""])[0]
            results[dialect] = {"ok": False, "text": f"{dialect}: unexpected {type(exc).__name__}: {first[:300]}"}
        results[dialect]["s"] = per_export + time.perf_counter() - start
    return results


def spec_paths(specs_dir: Path, names: list[str] | None = None) -> list[Path]:
    """The named specs in specs_dir, or every concrete one (recipes with `abstract = true` are skipped)."""
    if names:
        return [specs_dir / f"{n.removesuffix('.toml')}.toml" for n in names]
    return [p for p in sorted(specs_dir.glob("*.toml")) if not is_abstract(p)]


def build_table(paths: list[Path], dialects: list[str], batch: int, seq: int, iree: bool, every_spec: bool,
                log: Callable[[str], None] | None = None) -> tuple[str, dict]:
    """The markdown table (and footnotes) for `paths` x `dialects`, and a summary dict
    {"totals": {dialect: specs ok}, "elapsed_s", "groups"}. `log` gets one progress line per
    exported structure (default: stderr)."""
    log = log or (lambda line: print(line, file=sys.stderr))
    groups: dict[str, list[tuple[str, str]]] = defaultdict(list)  # key -> [(spec name, model source)]
    for path in paths:
        compiled = compile_spec(path, scale="tiny")
        key = path.stem if every_spec else structure_key(compiled.files["graph.txt"])
        groups[key].append((path.stem, compiled.files["model.py"]))

    by_spec: dict[str, dict] = {}
    representative: dict[str, str] = {}
    started = time.perf_counter()
    for members in groups.values():
        first, source = members[0]
        t0 = time.perf_counter()
        results = run_group(source, first, dialects, batch, seq, iree)
        summary = ", ".join(f"{d} {'ok' if r['ok'] else 'FAIL'} {r['s']:.1f}s" for d, r in results.items())
        log(f"{first} (+{len(members) - 1} alike): {summary}; {time.perf_counter() - t0:.1f}s")
        for name, _ in members:
            by_spec[name] = results
            representative[name] = first
    elapsed = time.perf_counter() - started

    notes: dict[str, int] = {}
    header = "| spec | exported as | " + " | ".join(dialects) + " |"
    lines = [header, "|" + " --- |" * (len(dialects) + 2)]
    for path in paths:
        name = path.stem
        cells = []
        for dialect in dialects:
            r = by_spec[name][dialect]
            if r["ok"]:
                cells.append(r["text"])
            else:
                number = notes.setdefault(r["text"], len(notes) + 1)
                cells.append(f"error [{number}]")
        alias = representative[name] if representative[name] != name else ""
        lines.append(f"| {name} | {alias} | " + " | ".join(cells) + " |")
    totals = {d: sum(by_spec[p.stem][d]["ok"] for p in paths) for d in dialects}
    lines.append("| **specs ok** | | " + " | ".join(f"**{totals[d]}/{len(paths)}**" for d in dialects) + " |")
    out = [
        f"MLIR export of every spec at tiny scale (fp32, batch {batch}, {seq} tokens; torch {torch.__version__}, "
        f"{_versions()}). \"mm\" counts matmul ops in the parsed module"
        + (f"; linalg cells also ran under IREE (llvm-cpu) against the torch logits (max abs diff <= {TOL:.0e})." if iree else "."),
        f"{len(groups)} distinct structures exported; \"exported as\" names the spec whose export stands for a spec of the same structure.",
        "",
        *lines,
    ]
    if notes:
        out += ["", "Errors:", ""]
        out += [f"{number}. {text}" for text, number in notes.items()]
    return "\n".join(out) + "\n", {"totals": totals, "elapsed_s": elapsed, "groups": len(groups)}


def _versions() -> str:
    from importlib.metadata import PackageNotFoundError, version

    parts = []
    for dist in ("torch-mlir", "iree-base-compiler", "iree-base-runtime"):
        try:
            parts.append(f"{dist} {version(dist)}")
        except PackageNotFoundError:
            parts.append(f"{dist} missing")
    return ", ".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--update-docs", action="store_true", help="rewrite the table in docs/mlir-support.md")
    parser.add_argument("--write", type=Path, help="also write the markdown table to this file")
    parser.add_argument("--specs-dir", type=Path, default=SPECS_DIR, help="where the spec files are (default: the repo's specs/)")
    parser.add_argument("--specs", help="comma-separated spec names (default: every spec in the specs folder)")
    parser.add_argument("--dialects", default=",".join(DIALECTS), help="comma-separated, from: " + ", ".join(DIALECTS))
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--seq", type=int, default=8)
    parser.add_argument("--no-iree", action="store_true", help="skip compiling and running linalg with IREE")
    parser.add_argument("--every-spec", action="store_true", help="export every spec, not one per structure")
    args = parser.parse_args(argv)
    dialects = [d.strip() for d in args.dialects.split(",") if d.strip()]
    unknown = [d for d in dialects if d not in DIALECTS]
    if unknown:
        parser.error(f"unknown dialects {unknown}; choose from {', '.join(DIALECTS)}")
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    table, _ = build_table(spec_paths(args.specs_dir, args.specs.split(",") if args.specs else None), dialects,
                           args.batch, args.seq, not args.no_iree, args.every_spec)
    print(table, end="")
    if args.write:
        args.write.parent.mkdir(parents=True, exist_ok=True)
        args.write.write_text(table)
    if args.update_docs:
        from .docs import replace_section

        doc = SPECS_DIR.parent / "docs" / "mlir-support.md"
        doc.write_text(replace_section(doc.read_text(), "mlir", table, "docs/mlir-support.md"))
        print("rewrote docs/mlir-support.md", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
