"""Semantic diff of two resolved specs, grouped by axis, in the review's own terms."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .analysis import count_params, forward_flops_per_token, kv_cache_bytes_per_token
from .spec.derive import derive
from .spec.load import ResolvedSpec
from .describe import placement_words
from .spec.model import ModelSpec, RopeScaling
from .spec.kinds import NormKind, PositionKind, RopeScalingKind

def _qk_norm(s: ModelSpec) -> str:
    return {"none": "none", "per-head": "per head (width d_head)", "full-width": "over the full projection"}[s.attention.qk_norm]


# Axis of each top-level table, in the order a reader thinks about an architecture.
AXES = [
    ("structure", ("model.structure", "encoder", "model.modalities")),
    ("dims", ("dims",)),
    ("attention", ("attention",)),
    ("positions", ("position",)),
    ("norm", ("norm",)),
    ("activation", ("mlp",)),
    ("block", ("block",)),
    ("biases", ("bias",)),
    ("moe", ("moe",)),
    ("cross-attention", ("cross_attention",)),
    ("tokenizer", ("tokenizer",)),
    ("training", ("training",)),
    ("lineage", ("lineage", "disclosed")),
    ("identity", ("model", "published")),
]
DOC_SUFFIXES = (".source", ".notes", ".deviation", ".data", ".paper", ".title")

NAMES = {
    "multi-head": "multi-head", "multi-query": "multi-query", "grouped-query": "grouped-query",
    "relu": "ReLU", "gelu": "GeLU (exact)", "gelu-tanh": "GeLU (tanh approximation)", "geglu": "GeGLU (exact)",
    "geglu-tanh": "GeGLU (tanh approximation)", "swiglu": "SwiGLU", "solu": "SoLU",
    NormKind.LAYERNORM: "LayerNorm", NormKind.RMSNORM: "RMSNorm", NormKind.DEEPNORM: "DeepNorm",
    "learned": "learned absolute", "sinusoidal": "sinusoidal", "rotary": "rotary", PositionKind.ALIBI: "ALiBi",
    "relative-xl": "Transformer-XL relative", "relative-bias": "T5 relative bias", "none": "none",
}


@dataclass
class Change:
    axis: str
    key: str
    a: Any
    b: Any
    origin_a: str
    origin_b: str


@dataclass
class SpecDiff:
    a: str
    b: str
    changes: list[Change] = field(default_factory=list)
    summary: list[tuple[str, str]] = field(default_factory=list)  # (axis, phrase)
    figures: dict[str, dict[str, float | None]] = field(default_factory=dict)
    graph: dict[str, list[str]] = field(default_factory=dict)

    @property
    def identical(self) -> bool:
        return not self.changes

    def to_json(self) -> dict[str, Any]:
        return {
            "a": self.a, "b": self.b, "identical": self.identical,
            "summary": [{"axis": axis, "change": text} for axis, text in self.summary],
            "changes": [c.__dict__ for c in self.changes],
            "figures": self.figures, "graph": self.graph,
        }


def _axis(key: str) -> str:
    for axis, prefixes in AXES:
        if any(key == p or key.startswith(p + ".") for p in prefixes):
            return axis
    return "other"


def _flat(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict):
        out: dict[str, Any] = {}
        for key, value in data.items():
            out.update(_flat(value, f"{prefix}{key}."))
        return out if out or not prefix else {prefix[:-1]: {}}
    return {prefix[:-1]: data}


def _name(value: Any) -> str:
    return NAMES.get(value, str(value)) if isinstance(value, str) else str(value)


def _scaling(s: RopeScaling | None) -> str:
    if s is None:
        return "none"
    if s.kind is RopeScalingKind.LINEAR:
        return f"linear position interpolation ×{s.factor:g}"
    if s.kind is RopeScalingKind.YARN:
        return f"YaRN ×{s.factor:g} past {s.original_context} pre-training tokens"
    if s.kind is RopeScalingKind.LLAMA3:
        assert s.original_context and s.low_freq_factor and s.high_freq_factor  # the spec's rules require them
        return (f"Llama 3 ×{s.factor:g} past {s.original_context} pre-training tokens (wavelengths over "
                f"{s.original_context / s.low_freq_factor:g} tokens divided, under "
                f"{s.original_context / s.high_freq_factor:g} kept, blended between)")
    return str(s.kind)


def _nope(s: ModelSpec) -> str:
    skipped = [i for i, layer in enumerate(derive(s).layers) if not layer.rotary]
    return f"{len(skipped)}/{s.dims.n_layers} ({', '.join(map(str, skipped[:8]))}{', ...' if len(skipped) > 8 else ''})" if skipped else "none"


def _phrases(a: ModelSpec, b: ModelSpec) -> list[tuple[str, str]]:
    """One line per axis that changed, in the review's vocabulary."""
    da, db = derive(a), derive(b)
    out: list[tuple[str, str]] = []
    if a.model.structure != b.model.structure:
        out.append(("structure", f"{a.model.structure} → {b.model.structure}"))
    if (a.attention.kind, da.n_kv_heads, a.dims.n_heads) != (b.attention.kind, db.n_kv_heads, b.dims.n_heads):
        text = f"{_name(a.attention.kind)} → {_name(b.attention.kind)}" if a.attention.kind != b.attention.kind else _name(a.attention.kind)
        out.append(("attention", f"{text} (heads {a.dims.n_heads} → {b.dims.n_heads}, kv heads {da.n_kv_heads} → {db.n_kv_heads})"))
    sa, sb = a.attention.sparse, b.attention.sparse
    if (sa and sa.model_dump()) != (sb and sb.model_dump()) or a.attention.sparse_layers != b.attention.sparse_layers:
        def sparse(s: ModelSpec) -> str:
            if s.attention.sparse is None:
                return "dense"
            n = sum(layer.sparse is not None for layer in derive(s).layers)
            return f"{s.attention.sparse.kind} on {n}/{s.dims.n_layers} layers"
        out.append(("attention", f"{sparse(a)} → {sparse(b)}"))
    # the rotary base and scaling get lines of their own, so a Llama → Llama 3 diff says what changed
    own = {"base", "scaling", "nope_layers"}
    if a.position.model_dump(exclude=own) != b.position.model_dump(exclude=own):
        def pos(s: ModelSpec) -> str:
            p = s.position
            rotary = f" ({getattr(p, 'fraction', 1) * 100:g}% of head dims, {getattr(p, 'pairing', '')} pairs)"
            extra = {"rotary": rotary, "learned": f" (offset {getattr(p, 'offset', 0)})" if getattr(p, "offset", 0) else ""}.get(p.kind, "")
            return _name(p.kind) + extra
        out.append(("positions", f"{pos(a)} → {pos(b)}"))
    if a.position.kind == b.position.kind == PositionKind.ROTARY:
        if a.position.base != b.position.base:
            out.append(("positions", f"rotary frequency base {a.position.base:g} → {b.position.base:g}"))
        if a.position.scaling != b.position.scaling:
            out.append(("positions", f"rotary scaling {_scaling(a.position.scaling)} → {_scaling(b.position.scaling)}"))
        if a.position.nope_layers != b.position.nope_layers:
            out.append(("positions", f"layers without rotary (NoPE): {_nope(a)} → {_nope(b)}"))
    if a.attention.score_scale != b.attention.score_scale:
        scale = lambda s: "1/sqrt(d_head)" if s.attention.score_scale is None else f"{s.attention.score_scale:g}"  # noqa: E731
        out.append(("attention", f"score scale {scale(a)} → {scale(b)}"))
    if a.attention.qk_norm != b.attention.qk_norm:
        out.append(("attention", f"QK-norm {_qk_norm(a)} → {_qk_norm(b)}"))
    if a.norm.eps != b.norm.eps:
        out.append(("norm", f"eps {a.norm.eps:g} → {b.norm.eps:g}"))
    if (a.norm.kind, a.norm.placement, a.norm.embedding) != (b.norm.kind, b.norm.placement, b.norm.embedding):
        out.append(("norm", f"{_name(a.norm.kind)} {placement_words(a)}{' + embedding norm' if a.norm.embedding else ''} → "
                            f"{_name(b.norm.kind)} {placement_words(b)}{' + embedding norm' if b.norm.embedding else ''}"))
    if a.mlp.activation != b.mlp.activation or da.d_ff != db.d_ff:
        out.append(("activation", f"MLP: {_name(a.mlp.activation)} → {_name(b.mlp.activation)} (d_ff {da.d_ff} → {db.d_ff})"))
    tie = {True: "tied", False: "untied"}
    ta_, tb_ = tie[a.block.tied_embeddings], tie[b.block.tied_embeddings]
    if a.block.wiring != b.block.wiring:
        same = f"; input/output embeddings {ta_} in both" if ta_ == tb_ else ""
        out.append(("block", f"{a.block.wiring} → {b.block.wiring}{same}"))
    if ta_ != tb_:
        out.append(("block", f"input/output embeddings {ta_} → {tb_}"))
    if a.block.logit_scale != b.block.logit_scale:
        out.append(("block", f"output logit scale {a.block.logit_scale} → {b.block.logit_scale}"))
    ba, bb = a.bias.model_dump(), b.bias.model_dump()
    if ba != bb:
        on = lambda d: ", ".join(k for k, v in d.items() if v) or "none"  # noqa: E731
        out.append(("biases", f"biases on {on(ba)} → {on(bb)}"))
    if a.dims.vocab_size != b.dims.vocab_size:
        out.append(("dims", f"vocab {a.dims.vocab_size} → {b.dims.vocab_size}"))
    for key in ("n_layers", "d_model", "context"):
        if getattr(a.dims, key) != getattr(b.dims, key):
            out.append(("dims", f"{key} {getattr(a.dims, key)} → {getattr(b.dims, key)}"))
    if da.d_head != db.d_head:
        out.append(("dims", f"d_head {da.d_head} → {db.d_head}"))
    if (a.moe and a.moe.model_dump()) != (b.moe and b.moe.model_dump()):
        def moe(s: ModelSpec) -> str:
            if s.moe is None:
                return "dense MLPs"
            cap = s.moe.inference_capacity_factor
            return (f"{s.moe.n_experts} experts, top-{s.moe.top_k}, on {derive(s).n_moe_layers} layers"
                    + (f", inference capacity factor {cap:g}" if cap else ""))
        out.append(("moe", f"{moe(a)} → {moe(b)}"))
    xa, xb = a.cross_attention, b.cross_attention
    if (xa and xa.kind) != (xb and xb.kind):
        out.append(("cross-attention", f"{xa.kind if xa else 'none'} → {xb.kind if xb else 'none'}"))
    ta, tb = a.tokenizer, b.tokenizer
    if (ta.kind, ta.algorithm) != (tb.kind, tb.algorithm):
        tok = lambda t: "byte-level BPE" if t.kind == "bpe" else f"SentencePiece {t.algorithm}"  # noqa: E731
        out.append(("tokenizer", f"{tok(ta)} → {tok(tb)}"))
    if a.training.tokens != b.training.tokens and a.training.tokens and b.training.tokens:
        out.append(("training", f"tokens {a.training.tokens:.3g} → {b.training.tokens:.3g}"))
    return out


def _figures(a: ModelSpec, b: ModelSpec) -> dict[str, dict[str, float | None]]:
    def figs(s: ModelSpec) -> dict[str, float]:
        c = count_params(s)
        return {"params": c.total, "params_active": c.active, "flops_per_token": forward_flops_per_token(s).total,
                "kv_cache_bytes_per_token_bf16": kv_cache_bytes_per_token(s)["bf16"], "context": s.dims.context}

    fa, fb = figs(a), figs(b)
    return {k: {"a": fa[k], "b": fb[k], "ratio": (fb[k] / fa[k]) if fa[k] else None} for k in fa}


def _graph_features(s: ModelSpec) -> set[str]:
    from .ir import build_graph
    from .ir.ops import Op
    from .passes import run_pipeline
    from .spec.scale import scale_spec

    graph, log = run_pipeline(build_graph(scale_spec(s, "tiny")))
    ops = {f"op {n.op.value}" for n in graph.nodes()}
    masks = {f"mask {n.attrs.mask.kind.value}" for n in graph.nodes() if n.op is Op.ATTENTION}
    fusions = {f"fusion {a.pass_name}" for a in log.applied}
    return ops | masks | fusions


def diff_specs(a: ResolvedSpec, b: ResolvedSpec, graph: bool = True) -> SpecDiff:
    flat_a = _flat(a.spec.model_dump(mode="json"))
    flat_b = _flat(b.spec.model_dump(mode="json"))
    result = SpecDiff(a.path, b.path)
    for key in sorted(set(flat_a) | set(flat_b), key=lambda k: ([ax for ax, _ in AXES].index(_axis(k)) if _axis(k) != "other" else 99, k)):
        va, vb = flat_a.get(key), flat_b.get(key)
        if va == vb:
            continue
        oa, ob = a.origins.get(key), b.origins.get(key)
        result.changes.append(Change(_axis(key), key, va, vb, oa.describe() if oa else "-", ob.describe() if ob else "-"))
    result.summary = _phrases(a.spec, b.spec)
    result.figures = _figures(a.spec, b.spec)
    if graph and result.changes:
        ga, gb = _graph_features(a.spec), _graph_features(b.spec)
        result.graph = {"only_a": sorted(ga - gb), "only_b": sorted(gb - ga)}
    return result


def render_markdown(d: SpecDiff) -> str:
    lines = [f"# {d.a} vs {d.b}", ""]
    if d.identical:
        return "\n".join(lines + ["The resolved specs are identical."]) + "\n"
    lines += ["## Architecture", ""] + [f"- **{axis}**: {text}" for axis, text in d.summary] + [""]
    lines += ["## Figures", "", "| figure | A | B | B/A |", "|---|---:|---:|---:|"]
    for key, f in d.figures.items():
        ratio = f"{f['ratio']:.3g}x" if f["ratio"] is not None else "-"
        lines.append(f"| {key} | {f['a']:.4g} | {f['b']:.4g} | {ratio} |")
    if d.graph:
        lines += ["", "## Graph", "", f"- only in A: {', '.join(d.graph['only_a']) or 'nothing'}",
                  f"- only in B: {', '.join(d.graph['only_b']) or 'nothing'}"]
    lines += ["", "## Every changed value", "", "| axis | key | A | B | origin in A | origin in B |", "|---|---|---|---|---|---|"]
    for c in d.changes:
        if c.key.endswith(DOC_SUFFIXES):
            continue
        lines.append(f"| {c.axis} | `{c.key}` | {c.a!r} | {c.b!r} | {c.origin_a} | {c.origin_b} |".replace("\n", " "))
    docs = sum(c.key.endswith(DOC_SUFFIXES) for c in d.changes)
    if docs:
        lines.append(f"\n{docs} documentation fields (sources, notes) differ as well.")
    return "\n".join(lines) + "\n"
