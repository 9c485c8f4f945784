"""Graph -> one readable, torch-only `model.py`.

Each scope of the graph becomes a module; layers with identical bodies share one class.
Every value is computed here; the template only lays the text out. Nothing from the spec
reaches the output except through `repr` (strings) or as validated numbers.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import re
from functools import lru_cache
from dataclasses import dataclass, field
from typing import Any

from taxonc.kernels.reference import masks as mask_defs
from taxonc.kernels.reference.masks import Mask

from ...ir.attrs import Activation, NormFn, PosTable, RelativeBias, RelativeXL
from ...ir.graph import Graph, Node
from ...ir.ops import Op
from ...ir.printer import layer_groups
from ...spec.derive import derive
from ...spec.model import ModelSpec
from ..templating import render
from . import prelude

_LAYER = re.compile(r"^(layers|encoder_layers)\.(\d+)$")
_CTX_NAMES = {"rel_table": "rel_table", "xl_uw": "xl_biases", "latents": "media_latents", "memory": "memory",
              "encoded": "neighbours_encoded"}
_INPUT_DOCS = {
    "encoder_ids": "encoder_ids [B, S]: token ids for the encoder",
    "media": "media [B, M, C]: vision features, e.g. from a frozen image encoder",
    "neighbours": "neighbours [B, L, N, R]: token ids of N retrieved neighbours for each of the L chunks",
}


_EXAMPLE = {
    "encoder_ids": lambda spec: f"extra['encoder_ids'] = torch.randint(0, CONFIG.vocab_size, (batch, {min(spec.encoder.context, 32)}))",
    "media": lambda spec: f"extra['media'] = torch.randn(batch, 4, {spec.cross_attention.media_dim}, dtype=dtype)",
    "neighbours": lambda spec: (
        f"extra['neighbours'] = torch.randint(0, CONFIG.vocab_size, (batch, -(-seq // {spec.cross_attention.chunk_size}), "
        f"{spec.cross_attention.n_neighbours}, {spec.cross_attention.neighbour_len}))"),
}


def _shape(shape: tuple) -> str:
    return "[" + ", ".join(str(s) for s in shape) + "]"


@dataclass
class ScopeCode:
    scope: str
    init: list[str] = field(default_factory=list)
    forward: list[str] = field(default_factory=list)
    main_input: str = "x"


class _ScopeEmitter:
    def __init__(self, graph: Graph, spec: ModelSpec, scope: str) -> None:
        self.g, self.spec, self.scope = graph, spec, scope
        self.code = ScopeCode(scope)
        self.residual_in = graph.meta.get("residual_in", {}).get(scope)
        self.used: set[str] = set()

    def ctx_attr(self, value: str) -> str:
        if value in self.g.inputs:
            return f"ctx.{value}"
        if value == self.g.meta.get("memory"):
            return "ctx.memory"  # the encoder's output, whichever op produced it
        scope, _, local = value.rpartition(".")
        name = _CTX_NAMES.get(local, local)
        if scope.startswith("encoder") and name != "memory":
            name = f"encoder_{name}"
        return f"ctx.{name}"

    def ref(self, value: str) -> str:
        if value == self.residual_in:
            return "x"
        if value.startswith(self.scope + "."):
            return value[len(self.scope) + 1:]
        if value in self.g.inputs and self.g.inputs and self._is_main(value):
            return value
        return self.ctx_attr(value)

    def _is_main(self, value: str) -> bool:
        return self.code.main_input == value

    def out(self, node: Node, i: int = 0) -> str:
        return node.outputs[i][len(self.scope) + 1:]

    def line(self, node: Node, text: str, outputs: list[str] | None = None) -> None:
        shapes = ", ".join(_shape(self.g.values[v]) for v in (outputs or node.outputs))
        self.code.forward.append(f"{text}  # {shapes}")
        residual_in = self.g.meta.get("residual_in", {})
        for value in outputs or node.outputs:
            # values other scopes read go through ctx, except where they are the next block's residual input
            if any(c.scope != self.scope and residual_in.get(c.scope) != value for c in self.g.consumers(value)):
                self.code.forward.append(f"{self.ctx_attr(value)} = {value[len(self.scope) + 1:]}")

    def emit(self) -> ScopeCode:
        nodes = self.g.in_scope(self.scope)
        first_inputs = [v for v in nodes[0].inputs if v in self.g.inputs]
        if self.residual_in is None and first_inputs:
            self.code.main_input = first_inputs[0]
        for node in nodes:
            getattr(self, f"op_{node.op.value}")(node)
        result = self.g.meta.get("residual_out", {}).get(self.scope) or nodes[-1].outputs[0]
        self.code.forward.append(f"return {self.ref(result)}")
        return self.code

    # ops -----------------------------------------------------------------------------
    def norm_ctor(self, node: Node) -> str:
        a, width = node.attrs, node.params["weight"][0]
        if a.kind is NormFn.RMSNORM:
            return f"RMSNorm({width}, eps={a.eps!r}, **kw)"
        return f"nn.LayerNorm({width}, eps={a.eps!r}, bias={a.bias}, **kw)"

    def op_token_embed(self, node: Node) -> None:
        src = self.ref(node.inputs[0])
        if node.attrs.tied_to:
            self.line(node, f"{self.out(node)} = F.embedding({src}, ctx.token_embedding)")
        else:
            vocab, dim = node.params["weight"]
            self.code.init.append(f"self.{node.name} = nn.Embedding({vocab}, {dim}, **kw)")
            self.line(node, f"{self.out(node)} = self.{node.name}({src})")

    def op_pos_embed(self, node: Node) -> None:
        a, src = node.attrs, self.ref(node.inputs[0])
        positions = "ctx.positions" if not self.scope.startswith("encoder") else f"torch.arange({src}.shape[1], device={src}.device)"
        if a.kind is PosTable.LEARNED:
            rows, dim = node.params["weight"]
            self.code.init.append(f"self.{node.name} = nn.Embedding({rows}, {dim}, **kw)")
            offset = f" + {a.offset}" if a.offset else ""
            self.line(node, f"{self.out(node)} = {src} + self.{node.name}({positions}{offset})")
        elif a.kind is PosTable.SINUSOIDAL:
            self.line(node, f"{self.out(node)} = {src} + sinusoidal_table({positions}, {a.d_model}, {src}.dtype)")
        elif a.kind is PosTable.RELATIVE_BIAS:
            rows, heads = node.params["weight"]
            self.code.init.append(f"self.{node.name} = nn.Embedding({rows}, {heads}, **kw)  # bucket x head biases, shared by all layers")
            self.line(node, f"{self.out(node)} = self.{node.name}.weight")
        else:
            h, k = node.params["u"]
            self.code.init.append(f"self.{node.name} = nn.ParameterDict({{'u': nn.Parameter(torch.empty({h}, {k}, **kw)), 'w': nn.Parameter(torch.empty({h}, {k}, **kw))}})")
            self.line(node, f"{self.out(node)} = torch.stack([self.{node.name}['u'], self.{node.name}['w']])")

    def op_norm(self, node: Node) -> None:
        self.code.init.append(f"self.{node.name} = {self.norm_ctor(node)}")
        self.line(node, f"{self.out(node)} = self.{node.name}({self.ref(node.inputs[0])})")

    def op_linear(self, node: Node) -> None:
        d_out, d_in = node.params["weight"]
        packs = node.attrs.packs
        note = f"  # fused: {' + '.join(p.source.rsplit('.', 1)[-1] for p in packs)}" if len(packs) > 1 else ""
        self.code.init.append(f"self.{node.name} = nn.Linear({d_in}, {d_out}, bias={node.attrs.bias}, **kw){note}")
        source = self.ref(node.inputs[0])
        call = f"self.{node.name}({source})"
        if source in ("ctx.memory", "ctx.media_latents"):
            # the encoder output and the media are fixed for a sequence: project them once per cache
            call = f"ctx.once(self.layer + {'.' + node.name!r}, lambda: {call})"
        epilogue = node.attrs.epilogue
        if epilogue:
            call = _activation_call(epilogue, call)
        self.line(node, f"{self.out(node)} = {call}")

    def op_split(self, node: Node) -> None:
        outs = ", ".join(self.out(node, i) for i in range(len(node.outputs)))
        self.line(node, f"{outs} = {self.ref(node.inputs[0])}.split({list(node.attrs.sizes)}, dim=-1)")

    def op_rotary(self, node: Node) -> None:
        a = node.attrs
        q, k = (self.ref(v) for v in node.inputs)
        positions = "ctx.positions" if a.cached else f"torch.arange({q}.shape[1], device={q}.device)"
        self.line(node, f"{self.out(node, 0)}, {self.out(node, 1)} = rotary_flat({q}, {k}, {positions}, {a.n_heads}, {a.n_kv_heads}, {a.rot_dims}, {a.base!r})")

    def attention_args(self, node: Node) -> list[str]:
        """Arguments shared by attention_core and the kernel backend's attention."""
        a = node.attrs
        args = [*(self.ref(x) for x in node.inputs[:3]), str(a.n_heads), str(a.n_kv_heads), mask_expr(a.mask)]
        if a.self:
            args += ["ctx", "self.layer" if a.cached else "None"]
            if a.rotary:
                args.append(f"rotary={(a.rotary.dims, a.rotary.base)!r}")
            if a.alibi:
                args.append("alibi=True")
            if a.window:
                args.append(f"window={a.window}")
        if a.scale is not None:
            args.append(f"scale={a.scale!r}")  # muP: 1/d_head
        return args

    def op_attention(self, node: Node) -> None:
        a = node.attrs
        args = self.attention_args(node)
        rel = a.relative
        shared = self.ref(node.inputs[3]) if len(node.inputs) > 3 else None
        if node.params:
            tensors = ", ".join(f"'{name}': nn.Parameter(torch.empty({', '.join(map(str, shape))}, **kw))" for name, shape in node.params.items())
            self.code.init.append(f"self.{node.name} = nn.ParameterDict({{{tensors}}})")
        if isinstance(rel, RelativeBias):
            args.append(f"relative={(rel.n_buckets, rel.max_distance, rel.bidirectional)!r}")
            args.append(f"rel_table_NH={shared or f'self.{node.name}[' + repr('rel_bias') + ']'}")
        if isinstance(rel, RelativeXL):
            if shared:
                args.append(f"xl=(self.{node.name}['r_proj'], {shared}[0], {shared}[1])")
            else:
                args.append(f"xl=(self.{node.name}['r_proj'], self.{node.name}['u'], self.{node.name}['w'])")
        self.line(node, f"{self.out(node)} = attention_core({', '.join(args)})")

    def op_activation(self, node: Node) -> None:
        self.line(node, f"{self.out(node)} = {_activation_call(node.attrs.kind, self.ref(node.inputs[0]))}")

    def op_glu(self, node: Node) -> None:
        gate, up = (self.ref(v) for v in node.inputs)
        act = "F.silu" if node.attrs.kind is Activation.SWIGLU else "F.gelu"
        extra = "" if node.attrs.kind is Activation.SWIGLU else ', approximate="tanh"'
        self.line(node, f"{self.out(node)} = {act}({gate}{extra}) * {up}")

    def _sum(self, node: Node) -> str:
        terms = [self.ref(v) for v in node.inputs]
        scale = node.attrs.residual_scale
        if scale != 1.0:
            terms[0] = f"{scale!r} * {terms[0]}"  # DeepNorm: the residual is scaled by alpha
        return " + ".join(terms)

    def op_add(self, node: Node) -> None:
        self.line(node, f"{self.out(node)} = {self._sum(node)}")

    def op_add_norm(self, node: Node) -> None:
        self.code.init.append(f"self.{node.name} = {self.norm_ctor(node)}")
        total, normed = self.out(node, 0), self.out(node, 1)
        self.line(node, f"{total} = {self._sum(node)}", [node.outputs[0]])
        self.line(node, f"{normed} = self.{node.name}({total})  # fused with the add above in kernel backends", [node.outputs[1]])

    def op_moe(self, node: Node) -> None:
        a, d_model = node.attrs, node.params["router.weight"][1]
        self.code.init.append(
            f"self.{node.name} = MoE({d_model}, {a.d_ff}, {a.n_experts}, {a.top_k}, {a.capacity_factor!r}, "
            f"{a.router.value!r}, {a.activation.value!r}, {'b_in' in node.params}, {'b_out' in node.params}, **kw)"
        )
        if a.activation is Activation.SOLU:
            self.code.init.append(f"self.{node.name}.solu_norm = make_norm({a.norm_kind.value!r}, {a.d_ff}, {a.eps!r}, {'solu_norm.bias' in node.params}, **kw)")
        self.line(node, f"{self.out(node)} = self.{node.name}({self.ref(node.inputs[0])})")

    def op_gate(self, node: Node) -> None:
        self.code.init.append(f"self.{node.name} = TanhGate(**kw)")
        self.line(node, f"{self.out(node)} = self.{node.name}({self.ref(node.inputs[0])})")

    def op_resampler(self, node: Node) -> None:
        a = node.attrs
        self.code.init.append(f"self.{node.name} = PerceiverResampler({a.dim}, {a.n_latents}, {a.n_layers}, {a.n_heads}, {a.norm_kind.value!r}, {a.eps!r}, {a.bias}, **kw)")
        self.line(node, f"{self.out(node)} = self.{node.name}({self.ref(node.inputs[0])})")

    def op_neighbour_encoder(self, node: Node) -> None:
        a = node.attrs
        d_model = node.params["proj_in.weight"][1]
        self.code.init.append(f"self.{node.name} = NeighbourEncoder({d_model}, {a.dim}, {a.n_layers}, {a.n_heads}, {a.norm_kind.value!r}, {a.eps!r}, {a.bias}, **kw)")
        self.line(node, f"{self.out(node)} = encode_neighbours(self.{node.name}, ctx.token_embedding, ctx.neighbours, ctx.history(self.layer + '.retro', {self.ref(node.inputs[1])}), {a.chunk})")

    def op_chunked_xattn(self, node: Node) -> None:
        a = node.attrs
        q_out, d = node.params["q_proj.weight"]
        kv_out, e = node.params["kv_proj.weight"]
        bias = "q_proj.bias" in node.params
        self.code.init.append(f"self.{node.name} = nn.ModuleDict({{'q_proj': nn.Linear({d}, {q_out}, bias={bias}, **kw), 'kv_proj': nn.Linear({e}, {kv_out}, bias={bias}, **kw)}})")
        h, enc = (self.ref(v) for v in node.inputs)
        self.line(node, f"{self.out(node)} = chunked_cross_attention(self.{node.name}['q_proj'], self.{node.name}['kv_proj'], ctx.history(self.layer + '.cca', {h}), {enc}, {a.chunk}, {a.n_heads}, {a.n_kv_heads}, {a.d_head})[:, -{h}.shape[1]:]")

    def op_lm_head(self, node: Node) -> None:
        src = self.ref(node.inputs[0])
        scale = node.attrs.logit_scale
        suffix = f" * {scale!r}" if scale else ""
        if node.attrs.tied_to:
            self.line(node, f"{self.out(node)} = F.linear({src}, ctx.token_embedding){suffix}  # tied to the token embedding")
        else:
            vocab, dim = node.params["weight"]
            self.code.init.append(f"self.{node.name} = nn.Linear({dim}, {vocab}, bias={node.attrs.bias}, **kw)")
            self.line(node, f"{self.out(node)} = self.{node.name}({src}){suffix}")


def mask_expr(mask: Mask) -> str:
    """The Mask as source text of the emitted module (which carries Mask and MaskKind)."""
    sizes = "".join(f", {f.name}={getattr(mask, f.name)!r}" for f in dataclasses.fields(mask)[1:]
                    if getattr(mask, f.name) != f.default)
    return f"Mask(MaskKind.{mask.kind.name}{sizes})"


def _activation_call(kind: Activation, arg: str) -> str:
    if kind is Activation.RELU:
        return f"F.relu({arg})"
    if kind is Activation.GELU:
        return f'F.gelu({arg}, approximate="tanh")'
    return f"{arg} * torch.softmax({arg}, dim=-1)"  # SoLU; its LayerNorm follows


# prelude selection --------------------------------------------------------------------

def module_defs(module: Any) -> dict[str, str]:
    """Top-level function and class definitions of a prelude module, by name, as source text."""
    source = inspect.getsource(module)
    lines = source.splitlines()
    tree = ast.parse(source)
    return {n.name: "\n".join(lines[min([n.lineno] + [d.lineno for d in n.decorator_list]) - 1: n.end_lineno])
            for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}


@lru_cache(maxsize=1)
def _prelude_defs() -> dict[str, str]:
    return {**module_defs(mask_defs), **module_defs(prelude)}


def _needed(text: str, defs: dict[str, str]) -> list[str]:
    """Prelude definitions the emitted code uses, with everything they use, in prelude order."""
    chosen: set[str] = set()
    frontier = [name for name in defs if re.search(rf"\b{name}\b", text)]
    while frontier:
        name = frontier.pop()
        if name in chosen:
            continue
        chosen.add(name)
        frontier.extend(other for other in defs if other not in chosen and re.search(rf"\b{other}\b", defs[name]))
    return [name for name in defs if name in chosen]


# the whole file -------------------------------------------------------------------------

def _class_name(scope: str) -> str:
    return {"embed": "Embed", "head": "Head", "encoder_embed": "EncoderEmbed", "encoder_final": "EncoderFinal",
            "media": "MediaResampler"}[scope]


def emit_model(graph: Graph, spec: ModelSpec, header: dict[str, Any], emitter: type[_ScopeEmitter] | None = None,
               extra_defs: dict[str, str] | None = None, imports: list[str] | None = None) -> str:
    """The whole model.py. A kernel backend passes its own scope emitter, prelude and imports."""
    emitter = emitter or _ScopeEmitter
    classes: list[dict[str, Any]] = []
    scope_class: dict[str, str] = {}
    groups = layer_groups(graph)
    counters: dict[str, int] = {}
    for stack, indices, _body in groups:
        base = "Block" if stack == "layers" else "EncoderBlock"
        n_kinds = sum(1 for s, _, _ in groups if s == stack)
        counters[base] = counters.get(base, -1) + 1
        name = base if n_kinds == 1 else f"{base}{counters[base]}"
        code = emitter(graph, spec, f"{stack}.{indices[0]}").emit()
        plan = derive(spec).layers
        what = ""
        if stack == "layers":
            layer = plan[indices[0]]
            bits = [f"{layer.attention_name} attention"] + (["mixture of experts"] if layer.moe else []) + (
                [f"{layer.cross_attention} cross-attention"] if layer.cross_attention else [])
            what = "; " + ", ".join(bits)
        scaled = deepnorm_rows(graph, f"{stack}.{indices[0]}") if header.get("deepnorm_beta", 1.0) != 1.0 else []
        classes.append({"name": name, "doc": f"Layers {_listing(indices)}{what}.", "init": code.init,
                        "forward": code.forward, "args": "x, ctx", "layer_arg": True, "deepnorm_rows": scaled})
        for i in indices:
            scope_class[f"{stack}.{i}"] = name
    singles = [s for s in graph.scopes() if not _LAYER.match(s)]
    for scope in singles:
        code = emitter(graph, spec, scope).emit()
        classes.append({"name": _class_name(scope), "doc": f"The {scope.replace('_', ' ')} of the model.",
                        "init": code.init, "forward": code.forward, "args": f"{code.main_input}, ctx", "layer_arg": False,
                        "deepnorm_rows": []})
    body_text = "\n".join(line for c in classes for line in c["init"] + c["forward"])
    defs = {**_prelude_defs(), **(extra_defs or {})}
    needed = _needed(body_text + " Context KVCache", defs)
    steps = _forward_steps(graph, singles)
    extra_inputs = [name for name in graph.inputs if name != "input_ids"]
    params = {"spec": spec, "header": header, "classes": classes, "prelude": [defs[n] for n in needed],
              "layers": [scope_class[s] for s in graph.scopes() if s.startswith("layers.")],
              "encoder_layers": [scope_class[s] for s in graph.scopes() if s.startswith("encoder_layers.")],
              "singles": [(s, _class_name(s)) for s in singles], "steps": steps, "extra_inputs": extra_inputs,
              "input_docs": [_INPUT_DOCS[n] for n in extra_inputs],
              "example_lines": [_EXAMPLE[n](spec) for n in extra_inputs],
              "uses_math": bool(re.search(r"\bmath\.", "\n".join(defs[n] for n in needed))),
              "uses_replace": bool(re.search(r"\breplace\(", "\n".join(defs[n] for n in needed))),
              "uses_enum": "MaskKind" in needed,
              "imports": imports or []}
    return render("model.py.j2", **params)


def deepnorm_rows(graph: Graph, scope: str) -> list[tuple[str, int, int]]:
    """(parameter, first row, end row) that DeepNorm's beta scales in one layer, found by role.

    A fused projection's packs say which rows came from which projection, so a merged qkv
    scales only its v rows.
    """
    rows: list[tuple[str, int, int]] = []
    for node in graph.in_scope(scope):
        packs = getattr(node.attrs, "packs", ())
        if len(packs) > 1:
            start = 0
            for pack in packs:
                if pack.role.deepnorm_scaled and rows and rows[-1][0] == f"{node.name}.weight" and rows[-1][2] == start:
                    rows[-1] = (rows[-1][0], rows[-1][1], start + pack.rows)  # adjacent blocks: one range
                elif pack.role.deepnorm_scaled:
                    rows.append((f"{node.name}.weight", start, start + pack.rows))
                start += pack.rows
            continue
        for local, role in node.roles.items():
            if role.deepnorm_scaled and len(node.params[local]) >= 2:
                rows.append((f"{node.name}.{local}", 0, node.params[local][0]))
    return rows


def _listing(indices: list[int]) -> str:
    if len(indices) > 6:
        step = indices[1] - indices[0]
        if all(b - a == step for a, b in zip(indices, indices[1:])):
            return f"{indices[0]}..{indices[-1]}" + (f" (every {step})" if step > 1 else "")
    return ", ".join(str(i) for i in indices)


def _forward_steps(graph: Graph, singles: list[str]) -> list[str]:
    """Model.forward, one statement per scope group, in graph order (8-space body indent)."""
    nl = "\n        "
    steps: list[str] = []
    scopes = graph.scopes()
    if "encoder_embed" in scopes:
        encoder = ["x = self.encoder_embed(encoder_ids, ctx)", "for block in self.encoder_layers:", "    x = block(x, ctx)"]
        if "encoder_final" in scopes:
            encoder.append("x = self.encoder_final(x, ctx)")
        encoder.append("ctx.memory = x")
        steps.append(nl.join(
            ["if cache is not None and 'memory' in cache.static:", "    ctx.memory = cache.static['memory']  # encoded once per sequence", "else:"]
            + [f"    {line}" for line in encoder]
            + ["    if cache is not None:", "        cache.static['memory'] = ctx.memory"]))
    if "media" in scopes:
        steps.append("ctx.media_latents = ctx.once('media_latents', lambda: self.media(media, ctx))")
    steps.append("x = self.embed(input_ids, ctx)")
    steps.append(nl.join(["for block in self.layers:", "    x = block(x, ctx)"]))
    steps.append("logits = self.head(x, ctx)")
    return steps
