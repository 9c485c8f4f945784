"""Building blocks of emitted models, written once.

This file has two users. The torch backend copies the definitions a spec needs, verbatim,
into the `model.py` it emits (so that file depends on torch alone), and the graph
interpreter calls them directly. Both therefore share one implementation of every op.
Keep each definition self-contained: it may use torch, math, and definitions above it.

Shape suffixes: B batch, T query positions, S key positions, D model width, H query heads,
G key/value heads, K head width, F hidden width, E experts, V vocabulary.
"""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from taxonc.kernels.reference.masks import MaskKind, allowed_keys


def rms_norm(x, weight, eps):
    # normalise in float32 at least, as low precision loses the mean square
    xf = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
    xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
    return xf.to(x.dtype) * weight


class RMSNorm(nn.Module):
    def __init__(self, dim, eps=1e-6, device=None, dtype=None):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim, device=device, dtype=dtype))

    def forward(self, x):
        return rms_norm(x, self.weight, self.eps)


def activate(x_BTF, kind):
    if kind == "relu":
        return F.relu(x_BTF)
    if kind == "gelu":
        return F.gelu(x_BTF, approximate="tanh")
    if kind == "solu":
        return x_BTF * torch.softmax(x_BTF, dim=-1)
    raise ValueError(kind)


def glu(gate_BTF, up_BTF, kind):
    if kind == "swiglu":
        return F.silu(gate_BTF) * up_BTF
    return F.gelu(gate_BTF, approximate="tanh") * up_BTF  # geglu


def sinusoidal_table(positions_T, dim, dtype):
    inv = torch.exp(torch.arange(0, dim, 2, device=positions_T.device, dtype=torch.float64) * (-math.log(10000.0) / dim))
    angles = positions_T.to(torch.float64)[:, None] * inv[None, :]
    # sin in the even columns, cos in the odd ones, interleaved by stack + flatten: slice
    # assignment (table[:, 0::2] = ...) has no StableHLO lowering in torch-mlir
    return torch.stack([torch.sin(angles), torch.cos(angles)], dim=-1).flatten(1).to(dtype)


def rotary_tables(positions_T, rot_dims, base, dtype):
    # fp32 angles (as HF computes them) unless the model runs in fp64; under torch.compile
    # fp64 here turns into a slow per-layer kernel
    work = torch.float64 if dtype == torch.float64 else torch.float32
    inv = 1.0 / (base ** (torch.arange(0, rot_dims, 2, device=positions_T.device, dtype=work) / rot_dims))
    angles = positions_T.to(work)[:, None] * inv[None, :]
    angles = torch.cat([angles, angles], dim=-1)
    return angles.cos().to(dtype), angles.sin().to(dtype)


def apply_rotary(x_BHTK, cos_TR, sin_TR):
    # rotate-half convention on the first R dims of each head; the rest pass through
    rot = cos_TR.shape[-1]
    x_rot, x_pass = x_BHTK[..., :rot], x_BHTK[..., rot:]
    x1, x2 = x_rot[..., : rot // 2], x_rot[..., rot // 2 :]
    rotated = torch.cat([-x2, x1], dim=-1)
    return torch.cat([x_rot * cos_TR + rotated * sin_TR, x_pass], dim=-1)


def rotary_flat(q_BTF, k_BTF, positions_T, n_heads, n_kv_heads, rot_dims, base):
    """Rotary embedding on projections whose heads are still flattened into the last dim."""
    cos, sin = rotary_tables(positions_T, rot_dims, base, q_BTF.dtype)
    q = apply_rotary(q_BTF.unflatten(-1, (n_heads, -1)).transpose(1, 2), cos, sin)
    k = apply_rotary(k_BTF.unflatten(-1, (n_kv_heads, -1)).transpose(1, 2), cos, sin)
    return q.transpose(1, 2).flatten(2), k.transpose(1, 2).flatten(2)


def alibi_slopes(n_heads):
    # geometric slopes for the nearest power of two, then every other slope of the next one
    def powers(n):
        start = 2.0 ** (-8.0 / n)
        return [start ** (i + 1) for i in range(n)]

    closest = 2 ** math.floor(math.log2(n_heads))
    slopes = powers(closest)
    if closest < n_heads:
        slopes += powers(2 * closest)[0::2][: n_heads - closest]
    return torch.tensor(slopes, dtype=torch.float64)


def relative_buckets(rel_TS, n_buckets, max_distance, bidirectional):
    # T5's log-spaced buckets of (key position - query position)
    buckets = torch.zeros_like(rel_TS)
    if bidirectional:
        n_buckets //= 2
        buckets = buckets + (rel_TS > 0).long() * n_buckets
        distance = rel_TS.abs()
    else:
        distance = (-rel_TS).clamp(min=0)
    exact = n_buckets // 2
    is_small = distance < exact
    log_ratio = torch.log(distance.float().clamp(min=1) / exact) / math.log(max_distance / exact)
    large = exact + (log_ratio * (n_buckets - exact)).long()
    large = large.clamp(max=n_buckets - 1)
    return buckets + torch.where(is_small, distance, large)


def score_bias(q_idx, kv_idx, h, alibi_H=None, rel_table_NH=None, rel_cfg=None):
    """Additive score bias from ALiBi or T5 relative buckets (0 when neither is used)."""
    bias = torch.zeros((), dtype=torch.float32, device=q_idx.device)
    if alibi_H is not None:
        bias = bias - alibi_H[h] * (q_idx - kv_idx)
    if rel_table_NH is not None:
        buckets = relative_buckets(kv_idx - q_idx, *rel_cfg)  # (n_buckets, max_distance, bidirectional)
        bias = bias + rel_table_NH[buckets, h]
    return bias


def attend(q_BHTK, k_BGSK, v_BGSK, mask, q_offset=0, kv_offset=0, alibi_H=None, rel_table_NH=None, rel_cfg=None,
           scale=None, memo=None):
    """Scaled dot-product attention with every mask and bias a spec can ask for.

    Plain causal or full masks go straight to scaled_dot_product_attention. Sparse, prefix and
    biased variants use FlexAttention on accelerators, and an explicit mask on CPU, where
    FlexAttention has no fused kernel to gain from.
    """
    B, H, T, K = q_BHTK.shape
    S = k_BGSK.shape[2]
    G = k_BGSK.shape[1]
    simple = alibi_H is None and rel_table_NH is None and mask.kind in (MaskKind.CAUSAL, MaskKind.FULL)
    if simple and (mask.kind is MaskKind.FULL or (q_offset == kv_offset and T == S)):
        return F.scaled_dot_product_attention(
            q_BHTK, k_BGSK, v_BGSK, is_causal=mask.kind is MaskKind.CAUSAL, scale=scale, enable_gqa=G != H
        )
    if q_BHTK.is_cuda and not torch.compiler.is_exporting():  # FlexAttention has no MLIR lowering
        from torch.nn.attention.flex_attention import create_block_mask, flex_attention

        def mask_mod(b, h, q_idx, kv_idx):
            return allowed_keys(q_idx + q_offset, kv_idx + kv_offset, mask)

        def score_mod(score, b, h, q_idx, kv_idx):
            return score + score_bias(q_idx + q_offset, kv_idx + kv_offset, h, alibi_H, rel_table_NH, rel_cfg).to(score.dtype)

        block_mask = create_block_mask(mask_mod, None, None, T, S, device=q_BHTK.device)
        return flex_attention(q_BHTK, k_BGSK, v_BGSK, score_mod=score_mod, block_mask=block_mask, scale=scale, enable_gqa=G != H)
    q_idx = torch.arange(T, device=q_BHTK.device)[:, None] + q_offset
    kv_idx = torch.arange(S, device=q_BHTK.device)[None, :] + kv_offset
    h = torch.arange(H, device=q_BHTK.device)[:, None, None]
    # the mask and ALiBi part are the same in every layer of one call: build them once
    key = ("bias", mask, T, S, q_offset, kv_offset, q_BHTK.dtype, alibi_H is not None)
    bias_HTS = memo.get(key) if memo is not None else None
    if bias_HTS is None:
        bias_HTS = torch.where(allowed_keys(q_idx, kv_idx, mask), 0.0, float("-inf")).to(q_BHTK.dtype)
        if alibi_H is not None:
            bias_HTS = bias_HTS + score_bias(q_idx, kv_idx, h, alibi_H).to(q_BHTK.dtype)
        if memo is not None:
            memo[key] = bias_HTS
    if rel_table_NH is not None:
        bias_HTS = bias_HTS + score_bias(q_idx, kv_idx, h, None, rel_table_NH, rel_cfg).to(q_BHTK.dtype)
    return F.scaled_dot_product_attention(q_BHTK, k_BGSK, v_BGSK, attn_mask=bias_HTS, scale=scale, enable_gqa=G != H)


def attend_relative_xl(q_BHTK, k_BHSK, v_BHSK, r_DHK, u_HK, w_HK, mask, q_offset=0, kv_offset=0, scale=None):
    """Transformer-XL attention: content term (q + u)k plus position term (q + w)r[i - j].

    r_DHK holds the projected sinusoid for each distance. The score matrix is explicit, since
    the position term depends on the query and no fused kernel covers it.
    """
    B, H, T, K = q_BHTK.shape
    S = k_BHSK.shape[2]
    content = torch.einsum("bhtk,bhsk->bhts", q_BHTK + u_HK[None, :, None, :], k_BHSK)
    by_distance = torch.einsum("bhtk,dhk->bhtd", q_BHTK + w_HK[None, :, None, :], r_DHK)
    q_idx = torch.arange(T, device=q_BHTK.device)[:, None] + q_offset
    kv_idx = torch.arange(S, device=q_BHTK.device)[None, :] + kv_offset
    distance = (q_idx - kv_idx).clamp(min=0, max=r_DHK.shape[0] - 1).expand(B, H, T, S)
    scores = (content + torch.gather(by_distance, 3, distance)) * (K**-0.5 if scale is None else scale)
    scores = scores.masked_fill(~allowed_keys(q_idx, kv_idx, mask), float("-inf"))
    # softmax in at least fp32; float64 stays float64
    probs = torch.softmax(scores if scores.dtype == torch.float64 else scores.float(), dim=-1)
    return probs.to(v_BHSK.dtype) @ v_BHSK


class KVCache:
    """Keys and values of past positions, per attention layer.

    Banded layers keep only the last window-1 positions: that is all a future query reads.
    Grouped and multi-query layers store their few key/value heads, so the cache is smaller
    by the head ratio.
    """

    def __init__(self):
        self.length = 0
        self.keys, self.values, self.starts = {}, {}, {}
        self.static = {}  # per-sequence values computed once (encoder memory, cross-attention keys)
        self.prefix_len = None

    def update(self, layer, k_BGTK, v_BGTK, window=None):
        if layer in self.keys:
            k = torch.cat([self.keys[layer], k_BGTK], dim=2)
            v = torch.cat([self.values[layer], v_BGTK], dim=2)
            start = self.starts[layer]
        else:
            k, v, start = k_BGTK, v_BGTK, self.length
        full = (k, v, start)
        if window is not None and k.shape[2] > window - 1:
            drop = k.shape[2] - (window - 1)
            k, v, start = k[:, :, drop:], v[:, :, drop:], start + drop
        self.keys[layer], self.values[layer], self.starts[layer] = k, v, start
        return full

    def nbytes(self):
        """Bytes of cached self-attention keys and values."""
        return sum(t.numel() * t.element_size() for t in list(self.keys.values()) + list(self.values.values()))

    def reorder(self, index_B):
        """Keep (and repeat) batch rows, e.g. to follow the surviving beams of a beam search."""
        for store in (self.keys, self.values):
            for name, t in store.items():
                store[name] = t.index_select(0, index_B)
        for name, t in self.static.items():
            if isinstance(t, torch.Tensor) and t.dim() > 0:
                self.static[name] = t.index_select(0, index_B)


class Context:
    """Per-call state the blocks share: positions, the prefix length, the cache, cross-block values."""

    def __init__(self, n_new, device, cache=None, prefix_len=0):
        self.cache = cache
        start = cache.length if cache is not None else 0
        self.offset = start
        self.positions = torch.arange(start, start + n_new, device=device)
        self.memo = {}  # tables every layer would otherwise rebuild: rotary angles, ALiBi slopes
        if cache is not None:
            if cache.prefix_len is None:
                cache.prefix_len = prefix_len
            prefix_len = cache.prefix_len
        self.prefix_len = prefix_len

    def once(self, key, compute):
        """A value fixed for the whole sequence (projected encoder output, media): computed once per cache."""
        if self.cache is None:
            return compute()
        if key not in self.cache.static:
            self.cache.static[key] = compute()
        return self.cache.static[key]

    def history(self, key, new_BTD):
        """Every position's value so far, for ops that read whole chunks (RETRO)."""
        if self.cache is None:
            return new_BTD
        past = self.cache.static.get(key)
        full = new_BTD if past is None else torch.cat([past, new_BTD], dim=1)
        self.cache.static[key] = full
        return full


def shared_rotary_tables(ctx, rotary, n_positions, cached, dtype, device):
    """cos/sin for this call's positions, built once per call and shared by every layer."""
    positions = ctx.positions if cached else torch.arange(n_positions, device=device)
    key = ("rotary", rotary, dtype, cached)
    tables = ctx.memo.get(key) if ctx is not None else None
    if tables is None or tables[0].shape[0] != positions.shape[0]:
        tables = rotary_tables(positions, *rotary, dtype)  # rotary: (rotated dims, base)
        if ctx is not None:
            ctx.memo[key] = tables
    return tables


def attention_core(q_BTF, k_BSF, v_BSF, n_heads, n_kv_heads, mask, ctx=None, layer=None, rotary=None, alibi=False,
                   relative=None, rel_table_NH=None, xl=None, window=None, scale=None):
    """Split heads, apply positions, read and extend the cache, attend, merge heads."""
    q = q_BTF.unflatten(-1, (n_heads, -1)).transpose(1, 2)
    k = k_BSF.unflatten(-1, (n_kv_heads, -1)).transpose(1, 2)
    v = v_BSF.unflatten(-1, (n_kv_heads, -1)).transpose(1, 2)
    # layer names a cached decoder self-attention: positions continue from the cache. Without it
    # (encoder self-attention, cross-attention) positions start at 0 and nothing is cached.
    self_attention = ctx is not None and layer is not None
    q_offset = kv_offset = ctx.offset if self_attention else 0
    if rotary is not None:
        tables = shared_rotary_tables(ctx, rotary, q.shape[2], self_attention, q.dtype, q.device)
        q, k = apply_rotary(q, *tables), apply_rotary(k, *tables)
    if self_attention:
        if ctx.cache is not None:
            k, v, kv_offset = ctx.cache.update(layer, k, v, window)
        if mask.reads_prefix:
            mask = mask.with_prefix(ctx.prefix_len)
    if xl is not None:
        r_proj, u_HK, w_HK = xl
        if n_kv_heads != n_heads:
            k = k.repeat_interleave(n_heads // n_kv_heads, dim=1)
            v = v.repeat_interleave(n_heads // n_kv_heads, dim=1)
        max_distance = q_offset + q.shape[2] - kv_offset
        sinusoid = sinusoidal_table(torch.arange(max_distance, device=q.device), r_proj.shape[1], q.dtype)
        r_DHK = F.linear(sinusoid, r_proj).unflatten(-1, (n_heads, -1))
        out = attend_relative_xl(q, k, v, r_DHK, u_HK, w_HK, mask, q_offset, kv_offset, scale)
    else:
        alibi_H = alibi_slopes(n_heads).to(q.device) if alibi else None
        out = attend(q, k, v, mask, q_offset, kv_offset, alibi_H, rel_table_NH, relative, scale,
                     memo=ctx.memo if ctx is not None else None)
    return out.transpose(1, 2).flatten(2)


class MoE(nn.Module):
    """Token-choice mixture of experts with capacity-limited dispatch.

    Tokens are sorted by expert; in training each expert keeps at most `capacity` of them in
    arrival order and the rest are dropped (their expert output is zero, the residual carries
    them on). At inference nothing is dropped.
    The load-balancing loss of the last call is kept in `aux_loss`.
    """

    def __init__(self, d_model, d_ff, n_experts, top_k, capacity_factor, router, activation, bias_in, bias_out, device=None, dtype=None):
        super().__init__()
        self.top_k, self.capacity_factor, self.router_kind, self.activation = top_k, capacity_factor, router, activation
        gated = activation in ("swiglu", "geglu")
        self.router = nn.Linear(d_model, n_experts, bias=False, device=device, dtype=dtype)
        self.w_in = nn.Parameter(torch.empty(n_experts, (2 if gated else 1) * d_ff, d_model, device=device, dtype=dtype))
        self.w_out = nn.Parameter(torch.empty(n_experts, d_model, d_ff, device=device, dtype=dtype))
        self.b_in = nn.Parameter(torch.zeros(n_experts, (2 if gated else 1) * d_ff, device=device, dtype=dtype)) if bias_in else None
        self.b_out = nn.Parameter(torch.zeros(n_experts, d_model, device=device, dtype=dtype)) if bias_out else None
        self.solu_norm = None
        self.aux_loss = None

    def expert(self, e, x_ND):
        h = x_ND @ self.w_in[e].t()
        if self.b_in is not None:
            h = h + self.b_in[e]
        if self.activation in ("swiglu", "geglu"):
            gate, up = h.chunk(2, dim=-1)
            h = glu(gate, up, self.activation)
        else:
            h = activate(h, self.activation)
            if self.solu_norm is not None:
                h = self.solu_norm(h)
        y = h @ self.w_out[e].t()
        return y + self.b_out[e] if self.b_out is not None else y

    def gathered(self, x_ND, weight_NK, expert_NK):
        """Every token through its top-k experts, weights gathered per token: static shapes for
        graph export (torch.export, MLIR). Equal to the dispatch below when nothing is dropped."""
        h = torch.einsum("nd,nkfd->nkf", x_ND, self.w_in[expert_NK])
        if self.b_in is not None:
            h = h + self.b_in[expert_NK]
        if self.activation in ("swiglu", "geglu"):
            gate, up = h.chunk(2, dim=-1)
            h = glu(gate, up, self.activation)
        else:
            h = activate(h, self.activation)
            if self.solu_norm is not None:
                h = self.solu_norm(h)
        y = torch.einsum("nkf,nkdf->nkd", h, self.w_out[expert_NK])
        if self.b_out is not None:
            y = y + self.b_out[expert_NK]
        return (y * weight_NK[..., None].to(y.dtype)).sum(1)

    def forward(self, x_BTD):
        B, T, D = x_BTD.shape
        x_ND = x_BTD.reshape(-1, D)
        n_tokens, n_experts = x_ND.shape[0], self.w_in.shape[0]
        router_logits = self.router(x_ND)
        probs_NE = torch.softmax(router_logits if router_logits.dtype == torch.float64 else router_logits.float(), dim=-1)
        weight_NK, expert_NK = probs_NE.topk(self.top_k, dim=-1)
        if self.router_kind == "softmax-top-k" and self.top_k > 1:
            weight_NK = weight_NK / weight_NK.sum(-1, keepdim=True)
        if torch.compiler.is_exporting() and not self.training:
            # the dispatch below sizes expert batches from the data (bincount().tolist()), which
            # torch.export cannot trace; at inference nothing is dropped, so gathering is equal
            return self.gathered(x_ND, weight_NK, expert_NK).reshape(B, T, D)
        # capacity limits (and token dropping) apply in training; at inference every token reaches
        # its experts, so a cached decode step computes what the full forward computes
        capacity = max(1, math.ceil(self.capacity_factor * n_tokens * self.top_k / n_experts)) if self.training else n_tokens * self.top_k
        # load balancing: experts' share of tokens times their mean router probability
        share_E = torch.zeros(n_experts, device=x_ND.device).index_add_(0, expert_NK[:, 0], torch.ones(n_tokens, device=x_ND.device)) / n_tokens
        self.aux_loss = n_experts * (share_E * probs_NE.mean(0)).sum()
        flat_expert = expert_NK.reshape(-1)
        flat_token = torch.arange(n_tokens, device=x_ND.device).repeat_interleave(self.top_k)
        flat_weight = weight_NK.reshape(-1)
        # choice rank k first, so a token's first choice claims capacity before anyone's second
        order = torch.argsort(flat_expert * (self.top_k * n_tokens) + torch.arange(self.top_k, device=x_ND.device).repeat(n_tokens) * n_tokens + flat_token, stable=True)
        out_ND = torch.zeros_like(x_ND)
        counts = torch.bincount(flat_expert, minlength=n_experts).tolist()
        start = 0
        for e, count in enumerate(counts):
            chosen = order[start : start + min(count, capacity)]
            start += count
            if chosen.numel() == 0:
                continue
            tokens = flat_token[chosen]
            y = self.expert(e, x_ND[tokens])
            out_ND.index_add_(0, tokens, y * flat_weight[chosen, None].to(y.dtype))
        return out_ND.reshape(B, T, D)


class TanhGate(nn.Module):
    """Flamingo's gate: tanh(alpha) * x, with alpha starting at 0 so the frozen LM is unchanged."""

    def __init__(self, device=None, dtype=None):
        super().__init__()
        self.alpha = nn.Parameter(torch.zeros(1, device=device, dtype=dtype))

    def forward(self, x):
        return torch.tanh(self.alpha) * x


def make_norm(kind, dim, eps, bias, device=None, dtype=None):
    if kind == "rmsnorm":
        return RMSNorm(dim, eps, device=device, dtype=dtype)
    return nn.LayerNorm(dim, eps=eps, bias=bias, device=device, dtype=dtype)


class PerceiverResampler(nn.Module):
    """Maps any number of media features to a fixed set of latent tokens (Flamingo)."""

    def __init__(self, dim, n_latents, n_layers, n_heads, norm_kind, eps, bias, device=None, dtype=None):
        super().__init__()
        self.n_heads = n_heads
        self.latents = nn.Parameter(torch.empty(n_latents, dim, device=device, dtype=dtype))
        kw = dict(device=device, dtype=dtype)
        self.layers = nn.ModuleList()
        for _ in range(n_layers):
            layer = nn.Module()
            layer.norm_media = make_norm(norm_kind, dim, eps, bias, **kw)
            layer.norm_latents = make_norm(norm_kind, dim, eps, bias, **kw)
            layer.q = nn.Linear(dim, dim, bias=False, **kw)
            layer.kv = nn.Linear(dim, 2 * dim, bias=False, **kw)
            layer.out = nn.Linear(dim, dim, bias=False, **kw)
            layer.norm_ff = make_norm(norm_kind, dim, eps, bias, **kw)
            layer.ff_in = nn.Linear(dim, 4 * dim, bias=False, **kw)
            layer.ff_out = nn.Linear(4 * dim, dim, bias=False, **kw)
            self.layers.append(layer)
        self.norm_out = make_norm(norm_kind, dim, eps, bias, **kw)

    def forward(self, media_BMC):
        B, _, C = media_BMC.shape
        lat = self.latents.expand(B, -1, -1)
        for layer in self.layers:
            media, x = layer.norm_media(media_BMC), layer.norm_latents(lat)
            kv_input = torch.cat([media, x], dim=1)  # latents attend to media and to themselves
            q = layer.q(x).unflatten(-1, (self.n_heads, -1)).transpose(1, 2)
            k, v = layer.kv(kv_input).chunk(2, dim=-1)
            k = k.unflatten(-1, (self.n_heads, -1)).transpose(1, 2)
            v = v.unflatten(-1, (self.n_heads, -1)).transpose(1, 2)
            a = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).flatten(2)
            lat = lat + layer.out(a)
            lat = lat + layer.ff_out(F.gelu(layer.ff_in(layer.norm_ff(lat))))
        return self.norm_out(lat)


class NeighbourEncoder(nn.Module):
    """RETRO's encoder of retrieved neighbours, conditioned on the chunk that retrieved them."""

    def __init__(self, d_model, dim, n_layers, n_heads, norm_kind, eps, bias, device=None, dtype=None):
        super().__init__()
        kw = dict(device=device, dtype=dtype)
        self.n_heads = n_heads
        self.proj_in = nn.Linear(d_model, dim, bias=False, **kw)
        self.layers = nn.ModuleList()
        for _ in range(n_layers):
            layer = nn.Module()
            layer.norm_self = make_norm(norm_kind, dim, eps, bias, **kw)
            layer.qkv = nn.Linear(dim, 3 * dim, bias=False, **kw)
            layer.out = nn.Linear(dim, dim, bias=False, **kw)
            layer.norm_cross = make_norm(norm_kind, dim, eps, bias, **kw)
            layer.q = nn.Linear(dim, dim, bias=False, **kw)
            layer.kv = nn.Linear(d_model, 2 * dim, bias=False, **kw)
            layer.cross_out = nn.Linear(dim, dim, bias=False, **kw)
            layer.norm_ff = make_norm(norm_kind, dim, eps, bias, **kw)
            layer.ff_in = nn.Linear(dim, 4 * dim, bias=False, **kw)
            layer.ff_out = nn.Linear(4 * dim, dim, bias=False, **kw)
            self.layers.append(layer)
        self.norm_out = make_norm(norm_kind, dim, eps, bias, **kw)

    def heads(self, x):
        return x.unflatten(-1, (self.n_heads, -1)).transpose(1, 2)

    def forward(self, neighbours_XRD, chunk_XMD):
        # X = batch x chunks x neighbours rows; R neighbour tokens; M chunk tokens
        x = self.proj_in(neighbours_XRD)
        for layer in self.layers:
            q, k, v = layer.qkv(layer.norm_self(x)).chunk(3, dim=-1)
            a = F.scaled_dot_product_attention(self.heads(q), self.heads(k), self.heads(v))
            x = x + layer.out(a.transpose(1, 2).flatten(2))
            k, v = layer.kv(chunk_XMD).chunk(2, dim=-1)
            a = F.scaled_dot_product_attention(self.heads(layer.q(layer.norm_cross(x))), self.heads(k), self.heads(v))
            x = x + layer.cross_out(a.transpose(1, 2).flatten(2))
            x = x + layer.ff_out(F.gelu(layer.ff_in(layer.norm_ff(x))))
        return self.norm_out(x)


def encode_neighbours(encoder, embedding_VD, neighbours_BLNR, h_BTD, chunk):
    """Embed retrieved neighbours and encode each with the decoder states of its chunk."""
    B, L, N, R = neighbours_BLNR.shape
    D = h_BTD.shape[-1]
    states = F.pad(h_BTD, (0, 0, 0, L * chunk - h_BTD.shape[1]))[:, : L * chunk].reshape(B, L, 1, chunk, D)
    states = states.expand(B, L, N, chunk, D).reshape(B * L * N, chunk, D)
    tokens = F.embedding(neighbours_BLNR.reshape(B * L * N, R), embedding_VD)
    return encoder(tokens, states).reshape(B, L, N, R, -1)


def chunked_cross_attention(q_proj, kv_proj, h_BTD, encoded_BLNRE, chunk, n_heads, n_kv_heads, d_head):
    """RETRO CCA: the tokens from the last of chunk u up to before the last of chunk u+1 attend
    to chunk u's neighbours, so no token sees neighbours retrieved with tokens after it."""
    B, T, D = h_BTD.shape
    L = encoded_BLNRE.shape[1]
    shift = chunk - 1
    padded = F.pad(h_BTD, (0, 0, 0, L * chunk - (T - shift)))[:, shift:] if T > shift else h_BTD[:, :0]
    n = padded.shape[1] // chunk
    if n == 0:
        return torch.zeros(B, T, n_heads * d_head, device=h_BTD.device, dtype=h_BTD.dtype)
    q = q_proj(padded[:, : n * chunk]).reshape(B * n, chunk, n_heads, -1).transpose(1, 2)
    mem = encoded_BLNRE[:, :n].flatten(2, 3).reshape(B * n, -1, encoded_BLNRE.shape[-1])
    k, v = kv_proj(mem).chunk(2, dim=-1)
    k = k.unflatten(-1, (n_kv_heads, -1)).transpose(1, 2)
    v = v.unflatten(-1, (n_kv_heads, -1)).transpose(1, 2)
    a = F.scaled_dot_product_attention(q, k, v, enable_gqa=n_kv_heads != n_heads)
    a = a.transpose(1, 2).reshape(B, n * chunk, -1)
    out = torch.zeros(B, T, a.shape[-1], device=h_BTD.device, dtype=h_BTD.dtype)
    keep = min(n * chunk, T - shift)
    out[:, shift : shift + keep] = a[:, :keep]
    return out
