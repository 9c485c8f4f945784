"""Spec -> graph -> passes -> backend files. The one driver behind `taxonc compile`."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import __version__
from .analysis import count_params
from .backends.registry import get_backend
from .describe import summary_lines
from .errors import TaxoncError, UsageError
from .fsutil import output_directory
from .ir import Graph, build_graph, print_graph
from .passes import PassLog, run_pipeline
from .spec import ResolvedSpec, derive, load_spec
from .spec.load import spec_digest
from .spec.model import NAME_RE, ModelSpec
from .spec.scale import apply_scale_check, scale_spec
from .spec.kinds import NormKind


# Emitted models with more fp32 weight bytes than this check free memory when run as a script.
SCRIPT_SIZE_GUARD_BYTES = 1 << 30


@dataclass
class Compiled:
    spec: ModelSpec
    source: str
    graph: Graph
    log: PassLog
    files: dict[str, str]
    digest: str
    scale: str

    def summary(self) -> dict[str, Any]:
        arch = derive(self.spec)
        d = self.spec.dims
        return {
            "name": self.spec.model.name, "scale": self.scale, "structure": self.spec.model.structure,
            "n_layers": d.n_layers, "d_model": d.d_model, "n_heads": d.n_heads, "n_kv_heads": arch.n_kv_heads,
            "d_head": arch.d_head, "d_ff": arch.d_ff, "vocab_size": d.vocab_size, "context": d.context,
            "params": count_params(self.spec).total,
        }


# The deepest spec key has three parts (training.batch_ramp.start_tokens); a few more still get "unknown key",
# and anything deeper is refused before it is nested, so a hostile key cannot exhaust recursion later.
MAX_SET_PARTS = 8


def parse_sets(items: list[str]) -> dict[str, Any]:
    """--set dims.n_layers=4 --set model.notes="x" -> nested overrides, values parsed as TOML."""
    import tomllib

    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise UsageError(f"--set wants key=value, got {item!r}")
        parts = key.split(".")
        if len(parts) > MAX_SET_PARTS:
            raise UsageError(f"--set key {key[:60]!r}{'...' if len(key) > 60 else ''} has {len(parts)} parts; "
                             f"spec keys have at most 3 (at most {MAX_SET_PARTS} are accepted)")
        if any(not part.strip() for part in parts):
            raise UsageError(f"--set key {key!r} has an empty part; write dotted keys like dims.n_layers")
        try:
            value = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw  # a bare word is a string
        except RecursionError:
            raise UsageError(f"--set {key}: the value is nested too deeply") from None
        node = out
        for depth, part in enumerate(parts[:-1]):
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise UsageError(f"--set {key}: {'.'.join(parts[:depth + 1])} is already set to a value, not a table")
        if isinstance(node.get(parts[-1]), dict):
            raise UsageError(f"--set {key}: already set as a table by another --set {key}.*")
        node[parts[-1]] = value
    return out


def _hidden_std(spec: ModelSpec) -> float:
    """muP keeps the per-unit update size fixed across widths: hidden init shrinks as sqrt(base / d)."""
    mup = spec.training.mup
    if mup.enabled and mup.base_d_model:
        return spec.training.init_std * (mup.base_d_model / spec.dims.d_model) ** 0.5
    return spec.training.init_std


def _header(spec: ModelSpec, source: str, digest: str, scale: str) -> dict[str, Any]:
    arch = derive(spec)
    d = spec.dims
    title = spec.model.title or spec.model.name
    config = [
        ("name", ("str", repr(spec.model.name))), ("title", ("str", repr(title))), ("scale", ("str", repr(scale))),
        ("structure", ("str", repr(spec.model.structure.value))), ("n_layers", ("int", d.n_layers)),
        ("d_model", ("int", d.d_model)), ("n_heads", ("int", d.n_heads)), ("n_kv_heads", ("int", arch.n_kv_heads)),
        ("d_head", ("int", arch.d_head)), ("d_ff", ("int", arch.d_ff)), ("vocab_size", ("int", d.vocab_size)),
        ("context", ("int", d.context)), ("init_std", ("float", repr(spec.training.init_std))),
        ("load_balance_weight", ("float", repr(spec.moe.load_balance_weight if spec.moe else 0.0))),
        ("notes", ("str", repr(spec.model.notes))),
    ]
    summary = [line for line in summary_lines(spec) if not line.startswith("Derived from")]
    if spec.lineage and NAME_RE.fullmatch(spec.lineage.base):  # free text stays out of the docstring
        methods = " then ".join(stage.method for stage in spec.lineage.stages)
        summary.append(f"Derived from {spec.lineage.base}" + (f" by {methods}." if methods else "."))
    return {
        "title_line": f"Model {spec.model.name} ({scale} scale)",  # the name is a validated slug
        "doc_title": f"{spec.model.name}: {spec.model.structure} transformer ({scale} scale).",
        "version": __version__, "source_repr": repr(source), "digest": digest, "summary": summary,
        "config": config, "init_std": repr(_hidden_std(spec)),
        # run as a script, a model too big for the machine refuses instead of allocating until killed
        "size_guard": count_params(spec).total * 4 > SCRIPT_SIZE_GUARD_BYTES,
        "zero_readout": spec.training.mup.enabled and not spec.block.tied_embeddings, "deepnorm_beta": repr(arch.deepnorm_beta) if spec.norm.kind is NormKind.DEEPNORM else 1.0,
    }


def compile_spec(path: str | Path, *, backend: str = "torch", scale: str = "full", sets: list[str] | None = None,
                 passes: list[str] | None = None, stop_after: str | None = None, dump_ir: Path | None = None,
                 source_label: str | None = None) -> Compiled:
    """Load, scale, lower and emit one spec for a backend named in backends.registry.BACKENDS.

    `source_label` replaces the spec's path in the outputs when the spec was read from a
    temporary place (taxonc import writes spec.toml next to model.py)."""
    target = get_backend(backend)
    resolved: ResolvedSpec = load_spec(path, parse_sets(sets or []) or None)
    spec = scale_spec(resolved.spec, scale)
    apply_scale_check(spec)
    digest = spec_digest(spec)
    graph = build_graph(spec)
    if dump_ir is not None:
        output_directory(dump_ir, "--dump-ir")
    graph, log = run_pipeline(graph, passes, stop_after, dump_ir)
    if target.passes:
        graph, log = run_pipeline(graph, list(target.passes), log=log)
    source = source_label or resolved.path
    header = _header(spec, source, digest, scale)
    header["backend"] = backend
    model_py = target.emit(graph, spec, header)
    compiled = Compiled(spec, source, graph, log, {}, digest, scale)
    lock = {"taxonc_version": __version__, "source": source, "scale": scale, "backend": backend, "spec_sha256": digest,
            "summary": compiled.summary(), "spec": spec.model_dump(mode="json")}
    compiled.files = {"model.py": model_py, "spec.lock.json": json.dumps(lock, indent=2, sort_keys=True) + "\n",
                      "graph.txt": print_graph(graph)}
    return compiled


def write_artifact(compiled: Compiled, out_dir: Path, *, extra_files: dict[str, str] | None = None,
                   init_weights_seed: int | None = None) -> None:
    """Write the artifact whole or not at all, through taxonc.runtime.artifact_store.

    The directory gets model.py, spec.lock.json, graph.txt and `extra_files`. Weights are
    initialised with `init_weights_seed`; without it, weights of the artifact being replaced are
    kept when they were saved for this same spec and refused otherwise (they would not load, and
    dropping them silently could lose a trained model). Tokenizer files are kept: they do not
    depend on the architecture, and `run` checks their vocabulary against the model.
    """
    from taxonc.runtime.artifact_store import ArtifactWriter

    with ArtifactWriter(out_dir) as staging:
        for name, text in {**compiled.files, **(extra_files or {})}.items():
            staging.write_text(name, text)
        if init_weights_seed is not None:
            from .running import init_weights_file

            init_weights_file(compiled, staging.path, init_weights_seed)
        elif WEIGHTS in staging.replaced:
            _keep_weights_of_the_same_spec(staging, compiled)
        for name in sorted(staging.replaced):
            if name.startswith("tokenizer"):
                staging.carry(name)


WEIGHTS = "weights.safetensors"


def _keep_weights_of_the_same_spec(staging, compiled: Compiled) -> None:
    from taxonc.runtime.weights import saved_for

    digest, name = saved_for(staging.target / WEIGHTS)
    if digest != compiled.digest:
        raise TaxoncError(
            f"{staging.target / WEIGHTS}: saved for spec {name or '?'} (sha256 {(digest or '?')[:12]}), not for "
            f"{compiled.spec.model.name} (sha256 {compiled.digest[:12]}) being compiled; pass --init-weights to "
            "replace them, or -o another directory")
    staging.carry(WEIGHTS)
