"""Graph -> one readable, torch-only `model.py`.

Each scope of the graph becomes a module; layers with identical bodies share one class.
Values one scope reads from another travel as keyword arguments and return values, bound
to names in Model.forward; nothing is stashed on a shared context. The reference ops a model
calls (taxonc.kernels.reference) are copied in, and only those. Every value is computed
here; the template only lays the text out. Nothing from the spec reaches the output except
through `repr` (strings) or as validated numbers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields
from typing import Any

from taxonc.kernels.reference.masks import Mask

from ...ir.attrs import Activation, AttentionFn, NormFn, PosTable, RelativeBias, Role, RotaryPairing
from ...ir.graph import Graph, Node
from ...ir.ops import Op
from ...ir.printer import layer_groups
from ...spec.derive import derive
from ...spec.kinds import PositionKind
from ...spec.model import ModelSpec
from ..templating import render
from .defs import needed_defs, reference_defs
from .dims import LEGEND, Sizes

_LAYER = re.compile(r"^(layers|encoder_layers)\.(\d+)$")
# what a value read across scopes is called in Model.forward and in the blocks' arguments
_SHARED = {"xl_uw": "xl_biases", "latents": "media_latents", "encoded": "neighbours_encoded"}
# keyword arguments of blocks, in the order signatures list them
_ARG_ORDER = ("offset", "prefix_len", "rope", "cache", "embedding", "memory", "media_latents", "rel_table",
              "xl_biases", "neighbours", "neighbours_encoded")
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


@dataclass
class ScopeCode:
    scope: str
    init: list[str] = field(default_factory=list)
    forward: list[str] = field(default_factory=list)
    needs: list[str] = field(default_factory=list)    # keyword arguments the forward reads
    exports: list[str] = field(default_factory=list)  # values it returns beside its result
    main_input: str = "x"
    result: str = "x"


def shared_name(graph: Graph, value: str) -> str:
    """What a value read across scopes is called in Model.forward and in block arguments."""
    if value in graph.inputs:
        return value
    if value == graph.meta.get("memory"):
        return "memory"  # the encoder's output, whichever op produced it
    local = value.rpartition(".")[2]
    return _SHARED.get(local, local)


def mask_expr(mask: Mask) -> str:
    """The Mask as source text of the emitted module (which carries Mask and MaskKind)."""
    sizes = "".join(f", {f.name}={getattr(mask, f.name)!r}" for f in fields(mask)[1:]
                    if getattr(mask, f.name) != f.default)
    return f"Mask(MaskKind.{mask.kind.name}{sizes})"


def activation_call(kind: Activation, arg: str) -> str:
    if kind is Activation.RELU:
        return f"F.relu({arg})"
    if kind in (Activation.GELU, Activation.GEGLU):
        return f"F.gelu({arg})"
    if kind in (Activation.GELU_TANH, Activation.GEGLU_TANH):
        return f'F.gelu({arg}, approximate="tanh")'
    if kind is Activation.SWIGLU:
        return f"F.silu({arg})"
    return f"{arg} * torch.softmax({arg}, dim=-1)"  # SoLU; its LayerNorm follows


class ScopeEmitter:
    def __init__(self, graph: Graph, spec: ModelSpec, scope: str, sizes: Sizes) -> None:
        self.g, self.spec, self.scope, self.sizes = graph, spec, scope, sizes
        self.code = ScopeCode(scope)
        self.residual_in = graph.meta.get("residual_in", {}).get(scope)

    # names ---------------------------------------------------------------------------
    def need(self, name: str) -> str:
        if name not in self.code.needs:
            self.code.needs.append(name)
        return name

    def shared_name(self, value: str) -> str:
        return shared_name(self.g, value)

    def ref(self, value: str) -> str:
        if value == self.residual_in:
            return "x"
        if value.startswith(self.scope + "."):
            return value[len(self.scope) + 1:]
        if value == self.code.main_input:
            return value
        return self.need(self.shared_name(value))

    def out(self, node: Node, i: int = 0) -> str:
        return node.outputs[i][len(self.scope) + 1:]

    def line(self, node: Node, text: str, outputs: list[str] | None = None) -> None:
        shapes = ", ".join(self.sizes.shape(self.g, v) for v in (outputs or node.outputs))
        self.code.forward.append(f"{text}  # {shapes}")
        residual_in = self.g.meta.get("residual_in", {})
        for value in outputs or node.outputs:
            # returned to Model.forward when another scope reads it (other than as its residual input)
            if any(c.scope != self.scope and residual_in.get(c.scope) != value for c in self.g.consumers(value)):
                self.code.exports.append(value)

    def emit(self) -> ScopeCode:
        nodes = self.g.in_scope(self.scope)
        first_inputs = [v for v in nodes[0].inputs if v in self.g.inputs]
        if self.residual_in is None and first_inputs:
            self.code.main_input = first_inputs[0]
        for node in nodes:
            getattr(self, f"op_{node.op.value}")(node)
        result = self.g.meta.get("residual_out", {}).get(self.scope) or nodes[-1].outputs[0]
        self.code.result = self.ref(result)
        return self.code

    def layer_key(self, suffix: str) -> str:
        return f"self.layer + {suffix!r}"

    # ops -----------------------------------------------------------------------------
    def norm_ctor(self, kind: NormFn, width: str, eps: float, bias: bool) -> str:
        if kind is NormFn.RMSNORM:
            return f"RMSNorm({width}, eps={eps!r}, **kw)"
        return f"nn.LayerNorm({width}, eps={eps!r}, bias={bias}, **kw)"

    def node_norm(self, node: Node) -> str:
        width = node.params["weight"][0]
        # SoLU's norm is MLP-wide; a per-head QK-norm is one head wide
        name = next((n for n in ("d_model", "d_ff", "d_head") if width == self.sizes.values[n]), "d_model")
        return self.norm_ctor(node.attrs.kind, self.sizes.field(width, name).code, node.attrs.eps, node.attrs.bias)

    def norm_call(self, node: Node, src: str, call: str) -> str:
        """`call` of `src`, where the norm covers a whole row, or of each head's slice (per-head QK-norm)."""
        heads = getattr(node.attrs, "heads", 1)
        if heads == 1:
            return call.format(src)
        name = "n_heads" if heads == self.sizes.values["n_heads"] else "n_kv_heads"
        return call.format(f"{src}.unflatten(-1, ({self.sizes.field(heads, name).code}, -1))") + ".flatten(-2)"

    def own_or_tied(self, node: Node, ctor: str, tied_fn: str, suffix: str = "") -> None:
        """A module of its own, or a function of the token embedding it is tied to."""
        src = self.ref(node.inputs[0])
        if node.attrs.tied_to:
            self.line(node, f"{self.out(node)} = {tied_fn}({src}, {self.need('embedding')}){suffix}  # tied to the token embedding")
            return
        self.code.init.append(f"self.{node.name} = {ctor}")
        self.line(node, f"{self.out(node)} = self.{node.name}({src}){suffix}")

    def op_token_embed(self, node: Node) -> None:
        vocab, dim = node.params.get("weight", (0, 0))
        ctor = f"nn.Embedding({self.sizes.field(vocab, 'vocab_size').code}, {self.sizes.field(dim, 'd_model').code}, **kw)"
        self.own_or_tied(node, ctor, "F.embedding")

    def positions(self, src: str) -> str:
        if self.scope.startswith("encoder"):
            return f"torch.arange({src}.shape[1], device={src}.device)"
        return self.need("positions")

    def op_pos_embed(self, node: Node) -> None:
        a, src = node.attrs, self.ref(node.inputs[0])
        if a.kind is PosTable.LEARNED:
            rows, dim = node.params["weight"]
            named = rows == self.spec.dims.context + a.offset
            rows_code = ("CONFIG.context" + (f" + {a.offset}" if a.offset else "")) if named else str(rows)
            self.code.init.append(f"self.{node.name} = nn.Embedding({rows_code}, {self.sizes.field(dim, 'd_model').code}, **kw)")
            offset = f" + {a.offset}" if a.offset else ""
            self.line(node, f"{self.out(node)} = {src} + self.{node.name}({self.positions(src)}{offset})")
        elif a.kind is PosTable.SINUSOIDAL:
            self.line(node, f"{self.out(node)} = {src} + sinusoidal_table({self.positions(src)}, "
                            f"{self.sizes.field(a.d_model, 'd_model').code}, {src}.dtype)")
        elif a.kind is PosTable.RELATIVE_BIAS:
            rows, heads = node.params["weight"]
            self.code.init.append(f"self.{node.name} = nn.Embedding({rows}, {heads}, **kw)  # bucket x head biases, shared by all layers")
            self.line(node, f"{self.out(node)} = self.{node.name}.weight")
        else:
            h, k = node.params["u"]
            self.code.init.append(f"self.{node.name} = nn.ParameterDict({{'u': nn.Parameter(torch.empty({h}, {k}, **kw)), "
                                  f"'w': nn.Parameter(torch.empty({h}, {k}, **kw))}})")
            self.line(node, f"{self.out(node)} = torch.stack([self.{node.name}['u'], self.{node.name}['w']])")

    def op_norm(self, node: Node) -> None:
        self.code.init.append(f"self.{node.name} = {self.node_norm(node)}")
        self.line(node, f"{self.out(node)} = {self.norm_call(node, self.ref(node.inputs[0]), f'self.{node.name}({{}})')}")

    def linear_ctor(self, node: Node) -> str:
        d_out, d_in = node.params["weight"]
        packs = node.attrs.packs
        note = f"  # fused: {' + '.join(p.source.rsplit('.', 1)[-1] for p in packs)}" if len(packs) > 1 else ""
        size_in = self.sizes.projection_in(d_in, packs).code
        size_out = self.sizes.projection_out(packs).code if len(packs) > 1 else self.sizes.pack_rows(packs[0]).code
        return f"nn.Linear({size_in}, {size_out}, bias={node.attrs.bias}, **kw){note}"

    def per_sequence(self, value: str) -> bool:
        """The encoder output and the media are fixed for a sequence."""
        return value == self.g.meta.get("memory") or value.startswith("media.")

    def op_linear(self, node: Node) -> None:
        self.code.init.append(f"self.{node.name} = {self.linear_ctor(node)}")
        source = self.ref(node.inputs[0])
        call = f"self.{node.name}({source})"
        if self.per_sequence(node.inputs[0]):
            call = f"once({self.need('cache')}, {self.layer_key('.' + node.name)}, lambda: {call})"
        if node.attrs.epilogue:
            call = activation_call(node.attrs.epilogue, call)
        self.line(node, f"{self.out(node)} = {call}")

    def op_split(self, node: Node) -> None:
        outs = ", ".join(self.out(node, i) for i in range(len(node.outputs)))
        source = self.g.producer_of(node.inputs[0])
        sizes = [str(s) for s in node.attrs.sizes]
        if source is not None and source.op == Op.LINEAR and len(source.attrs.packs) == len(sizes):
            sizes = [self.sizes.pack_rows(p).code for p in source.attrs.packs]
        self.line(node, f"{outs} = {self.ref(node.inputs[0])}.split([{', '.join(sizes)}], dim=-1)")

    def op_rotary(self, node: Node) -> None:
        a = node.attrs
        q, k = (self.ref(v) for v in node.inputs)
        rope = self.need("rope")
        calls = [f"rotary_flat({x}, {n}, *{rope})" for x, n in ((q, a.n_heads), (k, a.n_kv_heads))]
        if a.pairing is RotaryPairing.INTERLEAVED:  # rotated in halves, returned in their interleaved order
            calls = [f"halves_to_pairs(rotary_flat(pairs_to_halves({x}, {n}, {a.rot_dims}), {n}, *{rope}), {n}, {a.rot_dims})"
                     for x, n in ((q, a.n_heads), (k, a.n_kv_heads))]
        self.line(node, f"{self.out(node, 0)}, {self.out(node, 1)} = {calls[0]}, {calls[1]}")

    def rotary_inputs(self, node: Node, q: str, k: str) -> tuple[str, str]:
        """q and k as the attention helpers rotate them: interleaved pairs are gathered into halves first."""
        a = node.attrs
        if a.rotary is None or a.rotary.pairing is not RotaryPairing.INTERLEAVED:
            return q, k
        heads, kv = (h.partition("=")[2] for h in self.heads(node))
        return (f"pairs_to_halves({q}, {heads}, CONFIG.rot_dims)", f"pairs_to_halves({k}, {kv}, CONFIG.rot_dims)")

    def heads(self, node: Node) -> list[str]:
        a, values = node.attrs, self.sizes.values
        heads = "CONFIG.n_heads" if a.n_heads == values["n_heads"] else str(a.n_heads)
        kv = "CONFIG.n_kv_heads" if a.n_kv_heads == values["n_kv_heads"] else str(a.n_kv_heads)
        return [f"n_heads={heads}", f"n_kv_heads={kv}"]

    def attention_kwargs(self, node: Node, offset: bool) -> list[str]:
        """Keyword arguments every attention helper takes the same way: positions, cache, band, scale."""
        a = node.attrs
        args = [f"offset={self.need('offset')}"] if offset else []
        if a.mask.reads_prefix:
            args.append(f"prefix_len={self.need('prefix_len')}")
        if a.rotary:
            args.append(f"rope={self.need('rope')}")
        if a.alibi:
            args.append("alibi=True")
        if a.cached:
            args += [f"cache={self.need('cache')}", "layer=self.layer"]
        if a.window:
            args.append(f"window={a.window}")
        if a.scale is not None:
            args.append(f"scale={a.scale!r}")  # muP: 1/d_head; T5: 1
        return args

    def attention_call(self, node: Node) -> str:
        """The reference helper for this attention block, with keyword arguments."""
        a = node.attrs
        qkv = [self.ref(x) for x in node.inputs[:3]]
        qkv[:2] = self.rotary_inputs(node, *qkv[:2])
        shared = self.ref(node.inputs[3]) if len(node.inputs) > 3 else None
        fn = a.fn
        args = list(qkv)
        if fn in (AttentionFn.MASKED, AttentionFn.RELATIVE_BIAS, AttentionFn.XL):
            args.append(mask_expr(a.mask))
        if fn is AttentionFn.RELATIVE_BIAS:
            rel: RelativeBias = a.relative
            args += [shared or f"self.{node.name}['rel_bias']", f"n_buckets={rel.n_buckets}",
                     f"max_distance={rel.max_distance}", f"bidirectional={rel.bidirectional}"]
        if fn is AttentionFn.XL:
            u, w = (f"{shared}[0]", f"{shared}[1]") if shared else (f"self.{node.name}['u']", f"self.{node.name}['w']")
            args += [f"self.{node.name}['r_proj']", u, w]
        args += self.heads(node) + self.attention_kwargs(node, offset=a.cached and fn is not AttentionFn.CAUSAL)
        return f"{fn.value}({', '.join(args)})"

    def op_attention(self, node: Node) -> None:
        if node.params:
            tensors = ", ".join(f"'{name}': nn.Parameter(torch.empty({', '.join(map(str, shape))}, **kw))"
                                for name, shape in node.params.items())
            self.code.init.append(f"self.{node.name} = nn.ParameterDict({{{tensors}}})")
        self.line(node, f"{self.out(node)} = {self.attention_call(node)}")

    def op_activation(self, node: Node) -> None:
        self.line(node, f"{self.out(node)} = {activation_call(node.attrs.kind, self.ref(node.inputs[0]))}")

    def op_glu(self, node: Node) -> None:
        gate, up = (self.ref(v) for v in node.inputs)
        self.line(node, f"{self.out(node)} = {activation_call(node.attrs.kind, gate)} * {up}")

    def _sum(self, node: Node) -> str:
        terms = [self.ref(v) for v in node.inputs]
        if node.attrs.residual_scale != 1.0:
            terms[0] = f"{node.attrs.residual_scale!r} * {terms[0]}"  # DeepNorm: the residual is scaled by alpha
        return " + ".join(terms)

    def op_add(self, node: Node) -> None:
        self.line(node, f"{self.out(node)} = {self._sum(node)}")

    def op_add_norm(self, node: Node) -> None:
        self.code.init.append(f"self.{node.name} = {self.node_norm(node)}")
        total, normed = self.out(node, 0), self.out(node, 1)
        self.line(node, f"{total} = {self._sum(node)}", [node.outputs[0]])
        self.line(node, f"{normed} = self.{node.name}({total})", [node.outputs[1]])

    def moe_ctor(self, node: Node) -> str:
        a, d_model = node.attrs, node.params["router.weight"][1]
        capped = f", inference_capacity_factor={a.inference_capacity_factor!r}" if a.inference_capacity_factor else ""
        return (f"MoE({self.sizes.field(d_model, 'd_model').code}, {a.d_ff}, {a.n_experts}, {a.top_k}, {a.capacity_factor!r}, "
                f"{a.router.value!r}, {a.activation.value!r}, {'b_in' in node.params}, {'b_out' in node.params}{capped}, **kw)")

    def op_moe(self, node: Node) -> None:
        a = node.attrs
        self.code.init.append(f"self.{node.name} = {self.moe_ctor(node)}")
        if a.activation is Activation.SOLU:
            ctor = self.norm_ctor(a.norm_kind, str(a.d_ff), a.eps, "solu_norm.bias" in node.params)
            self.code.init.append(f"self.{node.name}.solu_norm = {ctor}")
        self.line(node, f"{self.out(node)} = self.{node.name}({self.ref(node.inputs[0])})")

    def op_gate(self, node: Node) -> None:
        self.code.init.append(f"self.{node.name} = TanhGate(**kw)")
        self.line(node, f"{self.out(node)} = self.{node.name}({self.ref(node.inputs[0])})")

    def norm_factory(self, node: Node) -> str:
        a = node.attrs
        return f"norm=lambda width, **kw: {self.norm_ctor(a.norm_kind, 'width', a.eps, a.bias)}"

    def op_resampler(self, node: Node) -> None:
        a = node.attrs
        self.code.init.append(f"self.{node.name} = PerceiverResampler({a.dim}, {a.n_latents}, {a.n_layers}, {a.n_heads}, "
                              f"{self.norm_factory(node)}, **kw)")
        self.line(node, f"{self.out(node)} = self.{node.name}({self.ref(node.inputs[0])})")

    def op_neighbour_encoder(self, node: Node) -> None:
        a = node.attrs
        d_model = self.sizes.field(node.params["proj_in.weight"][1], "d_model").code
        self.code.init.append(f"self.{node.name} = NeighbourEncoder({d_model}, {a.dim}, {a.n_layers}, {a.n_heads}, "
                              f"{self.norm_factory(node)}, **kw)")
        states = f"history({self.need('cache')}, {self.layer_key('.retro')}, {self.ref(node.inputs[1])})"
        self.line(node, f"{self.out(node)} = encode_neighbours(self.{node.name}, {self.need('embedding')}, "
                        f"{self.ref(node.inputs[0])}, {states}, {a.chunk})")

    def op_chunked_xattn(self, node: Node) -> None:
        a = node.attrs
        q_out, d = node.params["q_proj.weight"]
        kv_out, e = node.params["kv_proj.weight"]
        bias = "q_proj.bias" in node.params
        self.code.init.append(f"self.{node.name} = nn.ModuleDict({{'q_proj': nn.Linear({d}, {q_out}, bias={bias}, **kw), "
                              f"'kv_proj': nn.Linear({e}, {kv_out}, bias={bias}, **kw)}})")
        h, enc = (self.ref(v) for v in node.inputs)
        states = f"history({self.need('cache')}, {self.layer_key('.cca')}, {h})"
        self.line(node, f"{self.out(node)} = chunked_cross_attention(self.{node.name}['q_proj'], self.{node.name}['kv_proj'], "
                        f"{states}, {enc}, {a.chunk}, {a.n_heads}, {a.n_kv_heads}, {a.d_head})[:, -{h}.shape[1]:]")

    def op_lm_head(self, node: Node) -> None:
        vocab, dim = node.params.get("weight", (0, 0))
        ctor = (f"nn.Linear({self.sizes.field(dim, 'd_model').code}, {self.sizes.field(vocab, 'vocab_size').code}, "
                f"bias={node.attrs.bias}, **kw)")
        scale = node.attrs.logit_scale
        self.own_or_tied(node, ctor, "F.linear", f" * {scale!r}" if scale else "")


# the whole file -------------------------------------------------------------------------

def _class_name(scope: str) -> str:
    return {"embed": "Embed", "head": "Head", "encoder_embed": "EncoderEmbed", "encoder_final": "EncoderFinal",
            "media": "MediaResampler"}[scope]


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


def _ordered(names: set[str] | list[str]) -> list[str]:
    return sorted(set(names), key=lambda n: (_ARG_ORDER.index(n) if n in _ARG_ORDER else len(_ARG_ORDER), n))


def _signature(main: str, needs: list[str]) -> str:
    return ", ".join([main] + ([f"*, {', '.join(needs)}"] if needs else []))


class _Stack:
    """The classes of one layer stack and the keyword arguments they share."""

    def __init__(self) -> None:
        self.needs: set[str] = set()
        self.exports: set[str] = set()
        self.scope_class: dict[str, str] = {}
        self.deepnorm_scaled = False  # some layer has rows DeepNorm's beta scales

    @property
    def carried(self) -> list[str]:
        """Values one layer produces and a later one reads (RETRO's encoded neighbours)."""
        return _ordered(self.needs & self.exports)


def _call(target: str, main: str, names: list[str]) -> str:
    return f"{target}({', '.join([main] + [f'{n}={n}' for n in names])})"


_ASSIGN = re.compile(r"^self\.(\w+) = (.*?)(  # .*)?$")
# scopes whose code Model holds itself, as module dicts, rather than in a class of their own
_INLINE = ("embed", "head", "encoder_embed", "encoder_final")


@dataclass
class _Inline:
    """A scope written into Model: its modules as one ModuleDict, its statements in Model's methods."""

    init: list[str]
    forward: list[str]
    needs: list[str]


def _inline(graph: Graph, code: ScopeCode, target: str) -> _Inline:
    entries = []
    names = []
    for line in code.init:
        name, ctor, comment = _ASSIGN.match(line).groups()
        names.append(name)
        entries.append((name, ctor, comment or ""))
    init = []
    if len(entries) == 1:
        name, ctor, comment = entries[0]
        init.append(f"self.{code.scope} = nn.ModuleDict({{{name!r}: {ctor}}}){comment}")
    elif entries:
        init.append(f"self.{code.scope} = nn.ModuleDict({{")
        init += [f"    {name!r}: {ctor},{comment}" for name, ctor, comment in entries]
        init.append("})")
    own = re.compile(r"\bself\.(" + "|".join(map(re.escape, names)) + r")\b") if names else None
    body = [own.sub(lambda m: f"self.{code.scope}.{m.group(1)}", line) if own else line for line in code.forward]
    if body and body[-1].startswith(f"{code.result} = ") and code.result != target:
        body[-1] = f"{target} = " + body[-1][len(code.result) + 3:]
    elif code.result != target:
        body.append(f"{target} = {code.result}")
    for value in code.exports:
        local, name = value[len(code.scope) + 1:], shared_name(graph, value)
        if local != name:
            body.append(f"{name} = {local}")
    return _Inline(init, body, code.needs)


def _stack_init(stack: str, classes: list[str]) -> list[str]:
    """The ModuleList of a layer stack: a comprehension over the classes' repeating pattern."""
    n = len(classes)
    period = next(p for p in range(1, n + 1) if n % p == 0 and classes == classes[:p] * (n // p))
    if period == 1:
        count = "CONFIG.n_layers" if stack == "layers" else str(n)
        return [f"self.{stack} = nn.ModuleList([{classes[0]}(f\"{stack}.{{i}}\", **kw) for i in range({count})])"]
    pattern = f"[{', '.join(classes[:period])}] * {n // period}" if period < n else f"[{', '.join(classes)}]"
    return [f"self.{stack} = nn.ModuleList([cls(f\"{stack}.{{i}}\", **kw) for i, cls in enumerate({pattern})])"]


def emit_model(graph: Graph, spec: ModelSpec, header: dict[str, Any], emitter: type[ScopeEmitter] | None = None,
               extra_defs: dict[str, str] | None = None, imports: list[str] | None = None) -> str:
    """The whole model.py. A kernel backend passes its own scope emitter, definitions and imports."""
    emitter = emitter or ScopeEmitter
    sizes = Sizes(spec)
    arch = derive(spec)
    classes: list[dict[str, Any]] = []
    stacks: dict[str, _Stack] = {"layers": _Stack(), "encoder_layers": _Stack()}
    groups = layer_groups(graph)
    counters: dict[str, int] = {}
    layer_code: list[tuple[dict[str, Any], ScopeCode, str]] = []
    for stack, indices, _body in groups:
        base = "Block" if stack == "layers" else "EncoderBlock"
        n_kinds = sum(1 for s, _, _ in groups if s == stack)
        counters[base] = counters.get(base, -1) + 1
        name = base if n_kinds == 1 else f"{base}{counters[base]}"
        code = emitter(graph, spec, f"{stack}.{indices[0]}", sizes).emit()
        what = ""
        if stack == "layers":
            layer = arch.layers[indices[0]]
            bits = [f"{layer.attention_name} attention"] + (["mixture of experts"] if layer.moe else []) + (
                [f"{layer.cross_attention.value} cross-attention"] if layer.cross_attention else []) + (
                ["no rotary embedding (NoPE)"] if spec.position.kind is PositionKind.ROTARY and not layer.rotary else [])
            what = "; " + ", ".join(bits)
        s = stacks[stack]
        s.needs.update(code.needs)
        s.exports.update(shared_name(graph, v) for v in code.exports)
        scaled = deepnorm_rows(graph, f"{stack}.{indices[0]}") if header.get("deepnorm_beta", 1.0) != 1.0 else []
        s.deepnorm_scaled = s.deepnorm_scaled or bool(scaled)
        cls = {"name": name, "doc": f"Layers {_listing(indices)}{what}.", "init": code.init, "layer_arg": True,
               "deepnorm_rows": scaled}
        layer_code.append((cls, code, stack))
        classes.append(cls)
        for i in indices:
            s.scope_class[f"{stack}.{i}"] = name
    for cls, code, stack in layer_code:
        s = stacks[stack]
        local = {shared_name(graph, v): v[len(code.scope) + 1:] for v in code.exports}
        returns = [code.result] + [local.get(n, n) for n in s.carried]
        cls["signature"] = _signature("x", _ordered(s.needs))
        cls["forward"] = code.forward + [f"return {', '.join(returns)}"]
    inline: dict[str, _Inline] = {}
    model_init = ["super().__init__()", "kw = dict(device=device, dtype=dtype)"]
    for scope in [s for s in graph.scopes() if not _LAYER.match(s)]:
        code = emitter(graph, spec, scope, sizes).emit()
        if scope in _INLINE:
            inline[scope] = _inline(graph, code, "logits" if scope == "head" else "x")
            model_init += inline[scope].init
            continue
        classes.append({"name": _class_name(scope), "doc": f"The {scope.replace('_', ' ')} of the model.",
                        "init": code.init, "forward": code.forward + [f"return {code.result}"],
                        "signature": _signature(code.main_input, _ordered(code.needs)), "layer_arg": False,
                        "deepnorm_rows": []})
        model_init.append(f"self.{scope} = {_class_name(scope)}(**kw)")
    for stack in ("encoder_layers", "layers"):
        scopes = [s for s in graph.scopes() if s.startswith(stack + ".")]
        if scopes:
            model_init += _stack_init(stack, [stacks[stack].scope_class[s] for s in scopes])
    forward, encode = _model_forward(graph, inline, stacks, scaled=getattr(spec.position, "scaling", None) is not None)
    body_text = "\n".join(line for c in classes for line in c["init"] + c["forward"])
    body_text += "\n".join(model_init + forward + encode) + " KVCache"
    defs = {**reference_defs(), **(extra_defs or {})}
    needed = needed_defs(body_text, defs)
    chosen = "\n".join(defs[n] for n in needed)
    extra_inputs = [name for name in graph.inputs if name != "input_ids"]
    config = [(name, value) for name, value in header["config"] if name != "load_balance_weight" or spec.moe]
    if spec.position.kind is PositionKind.ROTARY:
        config += [("rot_dims", ("int", arch.rotary_dims)), ("rope_base", ("float", repr(spec.position.base)))]
        if spec.position.scaling is not None:  # (name, number) pairs: frozen, and the model file needs no taxonc type
            scaling = tuple((k, v) for k, v in spec.position.scaling.model_dump(mode="json").items() if v is not None)
            config.append(("rope_scaling", ("tuple", repr(scaling))))
    # the shape comments are written by now: the legend lists the letters they use
    legend = ", ".join(f"{k} {v}" for k, v in LEGEND.items() if k in sizes.used)
    params = {"spec": spec, "header": header, "config": config, "classes": classes, "prelude": [defs[n] for n in needed],
              "model_init": model_init, "forward": forward, "encode": encode, "extra_inputs": extra_inputs,
              "input_docs": [_INPUT_DOCS[n] for n in extra_inputs], "legend": legend,
              "example_lines": [_EXAMPLE[n](spec) for n in extra_inputs],
              "uses_math": bool(re.search(r"\bmath\.", chosen)), "uses_replace": bool(re.search(r"\breplace\(", chosen)),
              "uses_enum": "MaskKind" in needed, "has_moe": spec.moe is not None,
              "deepnorm_stacks": [name for name, s in stacks.items() if s.deepnorm_scaled],
              "zero_readout": [name for name, role in graph.param_roles().items()
                               if role is Role.LM_HEAD] if header.get("zero_readout") else [],
              "imports": imports or []}
    return render("model.py.j2", **params)


def _model_forward(graph: Graph, inline: dict[str, _Inline], stacks: dict[str, _Stack],
                   scaled: bool = False) -> tuple[list[str], list[str]]:
    """Model.forward's body and, for encoder-decoders, Model.encode's body (8-space indent)."""
    scopes = graph.scopes()
    needs = set(stacks["layers"].needs) | {n for s in ("embed", "head") if s in inline for n in inline[s].needs}
    lines: list[str] = []
    if needs & {"offset", "positions", "rope"}:
        lines.append("offset = cache.length if cache is not None else 0")
    if needs & {"positions", "rope"}:
        lines.append("positions = torch.arange(offset, offset + input_ids.shape[1], device=input_ids.device)")
    if "prefix_len" in needs:
        lines += ["if cache is not None:  # the prefix given with the first call holds for the whole sequence",
                  "    prefix_len = cache.prefix_len = prefix_len if cache.prefix_len is None else cache.prefix_len"]
    if "rope" in needs:
        lines.append(_rope_line(scaled))
    if "embedding" in needs:
        lines.append("embedding = self.embed.tok.weight")
    encode: list[str] = []
    if "encoder_embed" in scopes:
        lines.append("memory = once(cache, 'memory', lambda: self.encode(encoder_ids))  # encoded once per sequence")
        enc_needs = set(stacks["encoder_layers"].needs) | {n for s in ("encoder_embed", "encoder_final") if s in inline
                                                            for n in inline[s].needs}
        if "rope" in enc_needs:
            encode.append("positions = torch.arange(encoder_ids.shape[1], device=encoder_ids.device)")
            encode.append(_rope_line(scaled))
        if "embedding" in enc_needs:
            encode.append("embedding = self.embed.tok.weight")
        encode += inline["encoder_embed"].forward + _stack_loop(stacks["encoder_layers"], "self.encoder_layers")
        if "encoder_final" in inline:
            encode += inline["encoder_final"].forward
        encode.append("return x")
    if "media" in scopes:
        lines.append("media_latents = once(cache, 'media_latents', lambda: self.media(media))")
    lines += inline["embed"].forward + _stack_loop(stacks["layers"], "self.layers") + inline["head"].forward
    lines += ["if cache is not None:", "    cache.length += input_ids.shape[1]", "return logits"]
    return lines, encode


def _rope_line(scaled: bool) -> str:
    if scaled:
        return ("rope = scaled_rotary_tables(positions, CONFIG.rot_dims, CONFIG.rope_base, self.embed.tok.weight.dtype, "
                "dict(CONFIG.rope_scaling))")
    return "rope = rotary_tables(positions, CONFIG.rot_dims, CONFIG.rope_base, self.embed.tok.weight.dtype)"


def _stack_loop(stack: _Stack, modules: str) -> list[str]:
    if not stack.scope_class:
        return []
    carried = stack.carried
    target = ", ".join(["x"] + carried)
    return [f"{name} = None" for name in carried] + [
        f"for block in {modules}:", f"    {target} = {_call('block', 'x', _ordered(stack.needs))}"]
