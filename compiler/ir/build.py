"""Lower a resolved spec to a graph: one scope per layer, one node per op.

Masks, ALiBi and relative biases are attention attributes from the start; rotary embedding
is its own op until the fold_rope pass moves it into the attention prologue. Unfused
projections (q, k, v separately; gate and up separately) are the starting point that the
fusion passes improve on.
"""

from __future__ import annotations

from taxonc.kernels.reference.masks import Mask, MaskKind

from ..spec.derive import Arch, LayerPlan, derive
from ..spec.kinds import (Activation, CrossAttentionKind, LogitScale, NormPlacement, ParallelNorms, PositionKind,
                          QkNorm, SparseKind, Structure, Wiring)
from ..spec.model import ModelSpec, RopeScaling
from .attrs import (ActivationAttrs, AddAttrs, AttentionAttrs, ChunkedXattnAttrs, GateAttrs, GluAttrs, LinearAttrs,
                    LmHeadAttrs, MoeAttrs, NeighbourEncoderAttrs, NormAttrs, NormFn, Pack, PosEmbedAttrs, PosTable,
                    RelativeBias, RelativeXL, ResamplerAttrs, Role, RopeScalingAttrs, RotaryAttrs, TokenEmbedAttrs)
from .graph import Graph
from .ops import Op

_SPARSE_MASK = {SparseKind.LOCALLY_BANDED: MaskKind.LOCALLY_BANDED, SparseKind.STRIDED: MaskKind.STRIDED,
                SparseKind.FIXED: MaskKind.FIXED}


def _module_roles(params: dict) -> dict:
    return {name: Role.MODULE for name in params}


class _Lowering:
    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec
        self.arch: Arch = derive(spec)
        self.g = Graph(spec.model.name)
        self.d = spec.dims.d_model
        self.h = spec.dims.n_heads
        self.kv = self.arch.n_kv_heads
        self.dh = self.arch.d_head
        self.norm_fn = NormFn.of(spec.norm.kind)
        # LayerNorm biases; RMSNorm has none
        self.norm_bias = self.norm_fn is NormFn.LAYERNORM and spec.bias.norm

    # small helpers -----------------------------------------------------------------
    def norm(self, scope: str, name: str, x: str, out: str, width: int | None = None, heads: int = 1) -> str:
        """A norm of `x` (whose last dim is `heads` slices of `width`, each normed alone)."""
        width = width or self.d
        params = {"weight": (width,)}
        roles = {"weight": Role.NORM_SCALE}
        if self.norm_bias:
            params["bias"] = (width,)
            roles["bias"] = Role.NORM_BIAS
        shape = self.g.values[x][:-1] + (heads * width,)
        self.g.add(Op.NORM, scope, name, [x], {out: shape}, NormAttrs(self.norm_fn, self.spec.norm.eps, self.norm_bias, heads),
                   params, roles)
        return f"{scope}.{out}"

    def linear(self, scope: str, name: str, x: str, out: str, d_in: int, d_out: int, bias: bool, role: Role) -> str:
        params = {"weight": (d_out, d_in)}
        roles = {"weight": role}
        if bias:
            params["bias"] = (d_out,)
            roles["bias"] = Role.BIAS
        shape = self.g.values[x][:-1] + (d_out,)
        attrs = LinearAttrs(bias=bias, packs=(Pack(f"{scope}.{name}", role, d_out),))
        self.g.add(Op.LINEAR, scope, name, [x], {out: shape}, attrs, params, roles)
        return f"{scope}.{out}"

    def add(self, scope: str, name: str, inputs: list[str], out: str, scale: float = 1.0) -> str:
        self.g.add(Op.ADD, scope, name, inputs, {out: self.g.values[inputs[0]]}, AddAttrs(scale))
        return f"{scope}.{out}"

    def mask(self, plan: LayerPlan | None, bidirectional: bool = False) -> Mask:
        prefix_lm = self.spec.model.structure is Structure.PREFIX_LM
        if bidirectional:
            return Mask(MaskKind.FULL)
        if plan is None or plan.sparse is None:
            return Mask(MaskKind.PREFIX if prefix_lm else MaskKind.CAUSAL)
        sparse = self.spec.attention.sparse
        sizes = {SparseKind.LOCALLY_BANDED: {"window": getattr(sparse, "window", 0)},
                 SparseKind.STRIDED: {"stride": getattr(sparse, "stride", 0)},
                 SparseKind.FIXED: {"block": getattr(sparse, "block", 0), "summary": getattr(sparse, "summary", 0)}}
        # a sparse layer of a prefix LM: the prefix still sees itself whole
        return Mask(_SPARSE_MASK[sparse.kind], **sizes[sparse.kind], bidirectional_prefix=prefix_lm)

    def attention_scale(self, d_head: int | None = None) -> float | None:
        """The spec's score scale (T5: 1), or muP's 1/d_head (Yang et al. 2022); None is 1/sqrt(d_head)."""
        if self.spec.attention.score_scale is not None:
            return self.spec.attention.score_scale
        return 1.0 / (d_head or self.dh) if self.spec.training.mup.enabled else None

    def logit_scale(self) -> float:
        """muP divides the output logits by the width multiplier d_model / base_d_model; T5's tied output
        multiplies them by d_model^-0.5."""
        scale = 1.0
        mup = self.spec.training.mup
        if mup.enabled and mup.base_d_model:
            scale = mup.base_d_model / self.d
        if self.spec.block.logit_scale is LogitScale.INVERSE_SQRT_D_MODEL:
            scale = scale * self.d ** -0.5
        return scale

    # pieces ------------------------------------------------------------------------
    def self_attention(self, scope: str, h: str, plan: LayerPlan | None, encoder: bool, shared_pos: str | None) -> str:
        spec, qkv_bias = self.spec, self.spec.bias.qkv
        q = self.linear(scope, "q", h, "q", self.d, self.h * self.dh, qkv_bias, Role.Q)
        k = self.linear(scope, "k", h, "k", self.d, self.kv * self.dh, qkv_bias, Role.K)
        v = self.linear(scope, "v", h, "v", self.d, self.kv * self.dh, qkv_bias, Role.V)
        if spec.attention.qk_norm is QkNorm.PER_HEAD:  # Qwen3: a d_head-wide norm shared by the heads
            q = self.norm(scope, "q_norm", q, "q_n", self.dh, self.h)
            k = self.norm(scope, "k_norm", k, "k_n", self.dh, self.kv)
        elif spec.attention.qk_norm is QkNorm.FULL_WIDTH:  # OLMo-2: over the whole projection
            q = self.norm(scope, "q_norm", q, "q_n", self.h * self.dh)
            k = self.norm(scope, "k_norm", k, "k_n", self.kv * self.dh)
        pos = spec.position
        if pos.kind is PositionKind.ROTARY and (plan is None or plan.rotary):
            self.g.add(Op.ROTARY, scope, "rope", [q, k], {"q_rot": self.g.values[q], "k_rot": self.g.values[k]},
                       RotaryAttrs(self.h, self.kv, self.dh, self.arch.rotary_dims, pos.base, cached=not encoder,
                                   pairing=pos.pairing, scaling=_scaling(pos.scaling)))
            q, k = f"{scope}.q_rot", f"{scope}.k_rot"
        mask = self.mask(plan, bidirectional=encoder)
        params: dict = {}
        inputs = [q, k, v]
        relative: RelativeBias | RelativeXL | None = None
        if pos.kind is PositionKind.RELATIVE_BIAS:
            relative = RelativeBias(pos.n_buckets, pos.max_distance, bidirectional=encoder)
            if pos.per_layer:
                params["rel_bias"] = (pos.n_buckets, self.h)
            else:
                inputs.append(shared_pos)
        if pos.kind is PositionKind.RELATIVE_XL:
            relative = RelativeXL(self.d)
            params["r_proj"] = (self.h * self.dh, self.d)
            if pos.shared_biases:
                inputs.append(shared_pos)
            else:
                params["u"] = (self.h, self.dh)
                params["w"] = (self.h, self.dh)
        attrs = AttentionAttrs(
            n_heads=self.h, n_kv_heads=self.kv, d_head=self.dh, mask=mask, self=True, cached=not encoder,
            alibi=pos.kind is PositionKind.ALIBI, relative=relative,
            window=mask.window if mask.kind is MaskKind.LOCALLY_BANDED else None, scale=self.attention_scale())
        shape = self.g.values[h][:-1] + (self.h * self.dh,)
        self.g.add(Op.ATTENTION, scope, "attn", inputs, {"a": shape}, attrs, params, {n: Role.POSITION for n in params})
        return self.linear(scope, "attn_out", f"{scope}.a", "o", self.h * self.dh, self.d, spec.bias.attn_out, Role.ATTN_OUT)

    def cross_attention(self, scope: str, prefix: str, h: str, memory: str, d_mem: int, n_heads: int, n_kv: int, d_head: int) -> str:
        b = self.spec.bias.qkv
        q = self.linear(scope, f"{prefix}_q", h, f"{prefix}_q", self.d, n_heads * d_head, b, Role.Q)
        k = self.linear(scope, f"{prefix}_k", memory, f"{prefix}_k", d_mem, n_kv * d_head, b, Role.K)
        v = self.linear(scope, f"{prefix}_v", memory, f"{prefix}_v", d_mem, n_kv * d_head, b, Role.V)
        attrs = AttentionAttrs(n_heads=n_heads, n_kv_heads=n_kv, d_head=d_head, mask=Mask(MaskKind.FULL), self=False,
                               cached=False, scale=self.attention_scale(d_head))
        shape = self.g.values[h][:-1] + (n_heads * d_head,)
        self.g.add(Op.ATTENTION, scope, prefix, [q, k, v], {f"{prefix}_a": shape}, attrs)
        return self.linear(scope, f"{prefix}_out", f"{scope}.{prefix}_a", f"{prefix}_o", n_heads * d_head, self.d,
                           self.spec.bias.attn_out, Role.ATTN_OUT)

    def mlp(self, scope: str, h: str, moe: bool, d_ff: int) -> str:
        spec = self.spec
        act = spec.mlp.activation
        if moe:
            m = spec.moe
            act = m.activation or act
            e_ff = self.arch.expert_d_ff
            width_in = (2 if act.gated else 1) * e_ff
            params = {"router.weight": (m.n_experts, self.d), "w_in": (m.n_experts, width_in, self.d),
                      "w_out": (m.n_experts, self.d, e_ff)}
            roles = {"router.weight": Role.ROUTER, "w_in": Role.EXPERT_IN, "w_out": Role.EXPERT_OUT}
            if spec.bias.mlp_in:
                params["b_in"] = (m.n_experts, width_in)
                roles["b_in"] = Role.BIAS
            if spec.bias.mlp_out:
                params["b_out"] = (m.n_experts, self.d)
                roles["b_out"] = Role.BIAS
            if act is Activation.SOLU:
                params["solu_norm.weight"] = (e_ff,)
                roles["solu_norm.weight"] = Role.NORM_SCALE
                if self.norm_bias:
                    params["solu_norm.bias"] = (e_ff,)
                    roles["solu_norm.bias"] = Role.NORM_BIAS
            attrs = MoeAttrs(n_experts=m.n_experts, top_k=m.top_k, capacity_factor=m.capacity_factor, router=m.router,
                             activation=act, d_ff=e_ff, load_balance_weight=m.load_balance_weight, norm_kind=self.norm_fn,
                             eps=spec.norm.eps, inference_capacity_factor=m.inference_capacity_factor)
            self.g.add(Op.MOE, scope, "moe", [h], {"y": self.g.values[h]}, attrs, params, roles)
            return f"{scope}.y"
        if act.gated:
            gate = self.linear(scope, "mlp_gate", h, "gate", self.d, d_ff, spec.bias.mlp_in, Role.MLP_GATE)
            up = self.linear(scope, "mlp_up", h, "up", self.d, d_ff, spec.bias.mlp_in, Role.MLP_UP)
            self.g.add(Op.GLU, scope, "glu", [gate, up], {"m": self.g.values[up]}, GluAttrs(act))
            m = f"{scope}.m"
        else:
            u = self.linear(scope, "mlp_in", h, "u", self.d, d_ff, spec.bias.mlp_in, Role.MLP_IN)
            self.g.add(Op.ACTIVATION, scope, "act", [u], {"m": self.g.values[u]}, ActivationAttrs(act))
            m = f"{scope}.m"
            if act is Activation.SOLU:
                m = self.norm(scope, "ln_solu", m, "m_normed", d_ff)
        return self.linear(scope, "mlp_out", m, "y", d_ff, self.d, spec.bias.mlp_out, Role.MLP_OUT)

    def gated_cross_attention(self, scope: str, x: str, media: str) -> str:
        xa = self.spec.cross_attention
        heads = xa.n_heads or self.h
        hx = self.norm(scope, "xattn_norm", x, "xattn_h")
        o = self.cross_attention(scope, "xattn", hx, media, xa.media_dim, heads, heads, self.d // heads)
        self.g.add(Op.GATE, scope, "xattn_gate", [o], {"xattn_g": self.g.values[o]}, GateAttrs(), {"alpha": (1,)},
                   {"alpha": Role.GATE})
        x = self.add(scope, "xattn_add", [x, f"{scope}.xattn_g"], "x_xattn")
        hf = self.norm(scope, "xff_norm", x, "xff_h")
        ff = int(xa.ff_ratio * self.d)
        u = self.linear(scope, "xff_in", hf, "xff_u", self.d, ff, self.spec.bias.mlp_in, Role.MLP_IN)
        # Flamingo is written in JAX/Haiku, whose jax.nn.gelu is the tanh approximation by default
        self.g.add(Op.ACTIVATION, scope, "xff_act", [u], {"xff_m": self.g.values[u]}, ActivationAttrs(Activation.GELU_TANH))
        y = self.linear(scope, "xff_out", f"{scope}.xff_m", "xff_y", ff, self.d, self.spec.bias.mlp_out, Role.MLP_OUT)
        self.g.add(Op.GATE, scope, "xff_gate", [y], {"xff_g": self.g.values[y]}, GateAttrs(), {"alpha": (1,)}, {"alpha": Role.GATE})
        return self.add(scope, "xff_add", [x, f"{scope}.xff_g"], "x_xff")

    def layer(self, scope: str, x: str, plan: LayerPlan | None, encoder: bool, shared_pos: str | None,
              memory: str | None, d_ff: int, moe: bool) -> str:
        spec = self.spec
        self.g.meta.setdefault("residual_in", {})[scope] = x
        if plan is not None and plan.cross_attention is CrossAttentionKind.GATED:
            x = self.gated_cross_attention(scope, x, "media.latents")
        post = spec.norm.placement is NormPlacement.POST
        alpha = self.arch.deepnorm_alpha
        if spec.block.wiring is Wiring.PARALLEL:
            h_attn = self.norm(scope, "ln_attn" if spec.block.parallel_norms is ParallelNorms.SEPARATE else "ln", x, "h")
            h_mlp = h_attn
            if spec.block.parallel_norms is ParallelNorms.SEPARATE:
                h_mlp = self.norm(scope, "ln_mlp", x, "h_mlp")
            o = self.self_attention(scope, h_attn, plan, encoder, shared_pos)
            y = self.mlp(scope, h_mlp, moe, d_ff)
            out = self.add(scope, "add", [x, o, y], "x_out")
            self.g.meta.setdefault("residual_out", {})[scope] = out
            return out
        pre = spec.norm.placement is NormPlacement.PRE
        # sublayer-output (OLMo-2): x + norm(f(x)); the norm keeps the name it has under the other placements
        output = spec.norm.placement is NormPlacement.SUBLAYER_OUTPUT
        h = self.norm(scope, "ln_attn", x, "h") if pre else x
        o = self.self_attention(scope, h, plan, encoder, shared_pos)
        if output:
            o = self.norm(scope, "ln_attn", o, "o_n")
        x = self.add(scope, "attn_add", [x, o], "x_attn", alpha)
        if post:
            x = self.norm(scope, "ln_attn", x, "x_attn_n")
        if memory is not None and not encoder:
            hc = self.norm(scope, "ln_cross", x, "h_cross") if pre else x
            o = self.cross_attention(scope, "cross", hc, memory, self.d, self.h, self.kv, self.dh)
            if output:
                o = self.norm(scope, "ln_cross", o, "cross_o_n")
            x = self.add(scope, "cross_add", [x, o], "x_cross", alpha)
            if post:
                x = self.norm(scope, "ln_cross", x, "x_cross_n")
        if plan is not None and plan.cross_attention is CrossAttentionKind.CHUNKED:
            x = self.chunked_cross_attention(scope, x, post, alpha)
        h = self.norm(scope, "ln_mlp", x, "h_mlp") if pre else x
        y = self.mlp(scope, h, moe, d_ff)
        if output:
            y = self.norm(scope, "ln_mlp", y, "y_n")
        x = self.add(scope, "mlp_add", [x, y], "x_out", alpha)
        if post:
            x = self.norm(scope, "ln_mlp", x, "x_out_n")
        self.g.meta.setdefault("residual_out", {})[scope] = x
        return x

    def chunked_cross_attention(self, scope: str, x: str, post: bool, alpha: float) -> str:
        xa = self.spec.cross_attention
        if "retro_encoded" not in self.g.meta:
            e = xa.encoder_d_model
            params = {"proj_in.weight": (e, self.d)}
            per_layer = {"norm_self": e, "qkv": (3 * e, e), "out": (e, e), "norm_cross": e, "q": (e, e),
                         "kv": (2 * e, self.d), "cross_out": (e, e), "norm_ff": e, "ff_in": (4 * e, e),
                         "ff_out": (e, 4 * e)}
            ln_bias = self.norm_bias
            for i in range(xa.encoder_layers):
                for name, shape in per_layer.items():
                    if isinstance(shape, int):
                        params[f"layers.{i}.{name}.weight"] = (shape,)
                        if ln_bias:
                            params[f"layers.{i}.{name}.bias"] = (shape,)
                    else:
                        params[f"layers.{i}.{name}.weight"] = shape
            params["norm_out.weight"] = (e,)
            if ln_bias:
                params["norm_out.bias"] = (e,)
            attrs = NeighbourEncoderAttrs(dim=e, n_layers=xa.encoder_layers, n_heads=xa.encoder_n_heads, chunk=xa.chunk_size,
                                          norm_kind=self.norm_fn, eps=self.spec.norm.eps, bias=ln_bias,
                                          embedding="embed.tok.weight")
            self.g.add(Op.NEIGHBOUR_ENCODER, scope, "retro_encoder", ["neighbours", x],
                       {"encoded": ("B", "L", xa.n_neighbours, xa.neighbour_len, e)}, attrs, params, _module_roles(params))
            self.g.meta["retro_encoded"] = f"{scope}.encoded"
        placement = self.spec.norm.placement
        h = self.norm(scope, "ln_cca", x, "h_cca") if placement is NormPlacement.PRE else x
        b = self.spec.bias.qkv
        params = {"q_proj.weight": (self.h * self.dh, self.d), "kv_proj.weight": (2 * self.kv * self.dh, xa.encoder_d_model)}
        if b:
            params["q_proj.bias"] = (self.h * self.dh,)
            params["kv_proj.bias"] = (2 * self.kv * self.dh,)
        attrs = ChunkedXattnAttrs(chunk=xa.chunk_size, n_heads=self.h, n_kv_heads=self.kv, d_head=self.dh)
        self.g.add(Op.CHUNKED_XATTN, scope, "cca", [h, self.g.meta["retro_encoded"]], {"cca_a": self.g.values[h][:-1] + (self.h * self.dh,)},
                   attrs, params, _module_roles(params))
        o = self.linear(scope, "cca_out", f"{scope}.cca_a", "cca_o", self.h * self.dh, self.d, self.spec.bias.attn_out,
                        Role.ATTN_OUT)
        if placement is NormPlacement.SUBLAYER_OUTPUT:
            o = self.norm(scope, "ln_cca", o, "cca_o_n")
        x = self.add(scope, "cca_add", [x, o], "x_cca", alpha)
        if post:
            x = self.norm(scope, "ln_cca", x, "x_cca_n")
        return x

    def embed(self, scope: str, ids: str, context: int, encoder: bool) -> tuple[str, str | None]:
        spec, g = self.spec, self.g
        d_embed = spec.dims.d_embed or self.d
        shared = not encoder
        attrs = TokenEmbedAttrs(vocab=spec.dims.vocab_size, tied_to=None if shared else "embed.tok.weight")
        params = {"weight": (spec.dims.vocab_size, d_embed)} if shared else {}
        g.add(Op.TOKEN_EMBED, scope, "tok", [ids], {"x_tok": g.values[ids] + (d_embed,)}, attrs, params,
              {n: Role.EMBED for n in params})
        x = f"{scope}.x_tok"
        if d_embed != self.d:
            x = self.linear(scope, "proj_in", x, "x_proj", d_embed, self.d, False, Role.PROJECTION)
        pos = spec.position
        if pos.kind in (PositionKind.LEARNED, PositionKind.SINUSOIDAL):
            learned = pos.kind is PositionKind.LEARNED
            params = {"weight": (context + pos.offset, self.d)} if learned else {}
            attrs = PosEmbedAttrs(PosTable.LEARNED if learned else PosTable.SINUSOIDAL, getattr(pos, "offset", 0), self.d)
            g.add(Op.POS_EMBED, scope, "pos", [x], {"x_pos": g.values[x]}, attrs, params, {n: Role.POSITION for n in params})
            x = f"{scope}.x_pos"
        if spec.norm.embedding:
            x = self.norm(scope, "norm", x, "x_norm")
        shared_pos = None
        if pos.kind is PositionKind.RELATIVE_BIAS and not pos.per_layer:
            g.add(Op.POS_EMBED, scope, "rel_bias", [x], {"rel_table": (pos.n_buckets, self.h)},
                  PosEmbedAttrs(PosTable.RELATIVE_BIAS), {"weight": (pos.n_buckets, self.h)}, {"weight": Role.POSITION})
            shared_pos = f"{scope}.rel_table"
        if pos.kind is PositionKind.RELATIVE_XL and pos.shared_biases:
            g.add(Op.POS_EMBED, scope, "xl_bias", [x], {"xl_uw": (2, self.h, self.dh)}, PosEmbedAttrs(PosTable.XL_BIASES),
                  {"u": (self.h, self.dh), "w": (self.h, self.dh)}, {"u": Role.POSITION, "w": Role.POSITION})
            shared_pos = f"{scope}.xl_uw"
        return x, shared_pos

    def build(self) -> Graph:
        spec, g = self.spec, self.g
        g.meta.update({"spec": spec.model.name, "structure": spec.model.structure, "d_model": self.d})
        ids = g.add_input("input_ids", ("B", "T"))
        memory = None
        if spec.model.structure is Structure.ENCODER_DECODER:
            enc_ids = g.add_input("encoder_ids", ("B", "S"))
            x, shared = self.embed("encoder_embed", enc_ids, spec.encoder.context, encoder=True)
            g.meta.setdefault("residual_out", {})["encoder_embed"] = x
            for i, is_moe in enumerate(self.arch.encoder_moe):
                x = self.layer(f"encoder_layers.{i}", x, None, True, shared, None, self.arch.encoder_d_ff, is_moe)
            if spec.norm.final:
                g.meta["residual_in"]["encoder_final"] = x
                x = self.norm("encoder_final", "ln_f", x, "memory")
            memory = x
            g.meta["memory"] = memory
        if spec.cross_attention is not None and spec.cross_attention.kind is CrossAttentionKind.GATED:
            xa = spec.cross_attention
            media = g.add_input("media", ("B", "M", xa.media_dim))
            ln_bias = self.norm_bias
            params = {"latents": (xa.n_latents, xa.media_dim)}
            names = ["norm_media", "norm_latents", "q", "kv", "out", "norm_ff", "ff_in", "ff_out"]
            m = xa.media_dim
            shapes = {"q": (m, m), "kv": (2 * m, m), "out": (m, m), "ff_in": (4 * m, m), "ff_out": (m, 4 * m)}
            for i in range(xa.resampler_layers):
                for name in names:
                    if name in shapes:
                        params[f"layers.{i}.{name}.weight"] = shapes[name]
                    else:
                        params[f"layers.{i}.{name}.weight"] = (m,)
                        if ln_bias:
                            params[f"layers.{i}.{name}.bias"] = (m,)
            params["norm_out.weight"] = (m,)
            if ln_bias:
                params["norm_out.bias"] = (m,)
            attrs = ResamplerAttrs(n_latents=xa.n_latents, n_layers=xa.resampler_layers, n_heads=xa.resampler_heads, dim=m,
                                   norm_kind=self.norm_fn, eps=spec.norm.eps, bias=ln_bias)
            g.add(Op.RESAMPLER, "media", "resampler", [media], {"latents": ("B", xa.n_latents, m)}, attrs, params,
                  _module_roles(params))
        if spec.cross_attention is not None and spec.cross_attention.kind is CrossAttentionKind.CHUNKED:
            xa = spec.cross_attention
            g.add_input("neighbours", ("B", "L", xa.n_neighbours, xa.neighbour_len))
        x, shared = self.embed("embed", ids, spec.dims.context, encoder=False)
        g.meta.setdefault("residual_out", {})["embed"] = x
        for plan in self.arch.layers:
            x = self.layer(f"layers.{plan.index}", x, plan, False, shared, memory, self.arch.d_ff, plan.moe)
        g.meta.setdefault("residual_in", {})["head"] = x
        if spec.norm.final:
            x = self.norm("head", "ln_f", x, "x_final")
        d_embed = spec.dims.d_embed or self.d
        if d_embed != self.d:
            x = self.linear("head", "proj_out", x, "x_proj", self.d, d_embed, False, Role.PROJECTION)
        tied = spec.block.tied_embeddings
        params, roles = {}, {}
        if not tied:
            params["weight"] = (spec.dims.vocab_size, d_embed)
            roles["weight"] = Role.LM_HEAD
            if spec.bias.lm_head:
                params["bias"] = (spec.dims.vocab_size,)
                roles["bias"] = Role.BIAS
        attrs = LmHeadAttrs(bias=(not tied) and spec.bias.lm_head, tied_to="embed.tok.weight" if tied else None,
                            logit_scale=self.logit_scale() if self.logit_scale() != 1.0 else None)
        g.add(Op.LM_HEAD, "head", "lm_head", [x], {"logits": ("B", "T", spec.dims.vocab_size)}, attrs, params, roles)
        g.outputs = ["head.logits"]
        return g


def build_graph(spec: ModelSpec) -> Graph:
    return _Lowering(spec).build()


def _scaling(scaling: RopeScaling | None) -> RopeScalingAttrs | None:
    return None if scaling is None else RopeScalingAttrs(**scaling.model_dump())
