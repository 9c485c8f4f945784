"""Composite blocks: mixture of experts, Flamingo's gate and resampler, RETRO's neighbour
encoder and chunked cross-attention.

Shape suffixes: B batch, T positions, D model width, F hidden width, E experts, N tokens,
M media tokens, L chunks, R neighbour tokens.
"""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .norms import activate, glu


class MoE(nn.Module):
    """Token-choice mixture of experts with capacity-limited dispatch.

    Tokens are sorted by expert; in training each expert keeps at most `capacity` of them in
    arrival order and the rest are dropped (their expert output is zero, the residual carries
    them on). At inference nothing is dropped unless `inference_capacity_factor` is given; then
    the same rule holds with that factor, over the tokens of each call.
    The load-balancing loss of the last call is kept in `aux_loss`.
    """

    def __init__(self, d_model, d_ff, n_experts, top_k, capacity_factor, router, activation, bias_in, bias_out,
                 inference_capacity_factor=None, device=None, dtype=None):
        super().__init__()
        self.top_k, self.capacity_factor, self.router_kind, self.activation = top_k, capacity_factor, router, activation
        self.inference_capacity_factor = inference_capacity_factor
        gated = activation in ("swiglu", "geglu", "geglu-tanh")
        self.router = nn.Linear(d_model, n_experts, bias=False, device=device, dtype=dtype)
        self.w_in = nn.Parameter(torch.empty(n_experts, (2 if gated else 1) * d_ff, d_model, device=device, dtype=dtype))
        self.w_out = nn.Parameter(torch.empty(n_experts, d_model, d_ff, device=device, dtype=dtype))
        self.b_in = nn.Parameter(torch.zeros(n_experts, (2 if gated else 1) * d_ff, device=device, dtype=dtype)) if bias_in else None
        self.b_out = nn.Parameter(torch.zeros(n_experts, d_model, device=device, dtype=dtype)) if bias_out else None
        self.solu_norm = None
        self.aux_loss = None

    def hidden(self, h):
        """The experts' activation of their first projection (GLU for swiglu/geglu)."""
        if self.activation in ("swiglu", "geglu", "geglu-tanh"):
            gate, up = h.chunk(2, dim=-1)
            return glu(gate, up, self.activation)
        h = activate(h, self.activation)
        return self.solu_norm(h) if self.solu_norm is not None else h

    def expert(self, e, x_ND):
        h = x_ND @ self.w_in[e].t()
        if self.b_in is not None:
            h = h + self.b_in[e]
        y = self.hidden(h) @ self.w_out[e].t()
        return y + self.b_out[e] if self.b_out is not None else y

    def gathered(self, x_ND, weight_NK, expert_NK):
        """Every token through its top-k experts, weights gathered per token: static shapes for
        graph export (torch.export, MLIR). Equal to the dispatch below when nothing is dropped."""
        h = torch.einsum("nd,nkfd->nkf", x_ND, self.w_in[expert_NK])
        if self.b_in is not None:
            h = h + self.b_in[expert_NK]
        y = torch.einsum("nkf,nkdf->nkd", self.hidden(h), self.w_out[expert_NK])
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
        factor = self.capacity_factor if self.training else self.inference_capacity_factor
        if torch.compiler.is_exporting() and factor is None:
            # the dispatch below sizes expert batches from the data (bincount().tolist()), which
            # torch.export cannot trace; at inference nothing is dropped, so gathering is equal
            return self.gathered(x_ND, weight_NK, expert_NK).reshape(B, T, D)
        # capacity limits (and token dropping) apply in training; at inference, without an inference
        # factor, every token reaches its experts, so a cached decode step computes what the full forward computes
        capacity = n_tokens * self.top_k if factor is None else max(1, math.ceil(factor * n_tokens * self.top_k / n_experts))
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


def encoder_stack(n_layers, dim, norm, attention, device=None, dtype=None):
    """The layers of a small pre-norm encoder (Flamingo's resampler, RETRO's neighbour
    encoder) and its final norm: each layer holds the `attention` sublayers, in order (name ->
    None for a norm of width `dim`, or (in, out) for a Linear without bias), then norm_ff,
    ff_in and ff_out, a GELU feed-forward of width 4 * dim."""
    kw = dict(device=device, dtype=dtype)
    layers = nn.ModuleList()
    for _ in range(n_layers):
        layer = nn.Module()
        for name, shape in attention.items():
            setattr(layer, name, norm(dim, **kw) if shape is None else nn.Linear(*shape, bias=False, **kw))
        layer.norm_ff = norm(dim, **kw)
        layer.ff_in = nn.Linear(dim, 4 * dim, bias=False, **kw)
        layer.ff_out = nn.Linear(4 * dim, dim, bias=False, **kw)
        layers.append(layer)
    return layers, norm(dim, **kw)


class PerceiverResampler(nn.Module):
    """Maps any number of media features to a fixed set of latent tokens (Flamingo)."""

    def __init__(self, dim, n_latents, n_layers, n_heads, norm, device=None, dtype=None):
        # norm(width, device=, dtype=) builds the model's norm
        super().__init__()
        self.n_heads = n_heads
        self.latents = nn.Parameter(torch.empty(n_latents, dim, device=device, dtype=dtype))
        attention = dict(norm_media=None, norm_latents=None, q=(dim, dim), kv=(dim, 2 * dim), out=(dim, dim))
        self.layers, self.norm_out = encoder_stack(n_layers, dim, norm, attention, device, dtype)

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

    def __init__(self, d_model, dim, n_layers, n_heads, norm, device=None, dtype=None):
        # norm(width, device=, dtype=) builds the model's norm
        super().__init__()
        self.n_heads = n_heads
        self.proj_in = nn.Linear(d_model, dim, bias=False, device=device, dtype=dtype)
        attention = dict(norm_self=None, qkv=(dim, 3 * dim), out=(dim, dim),
                         norm_cross=None, q=(dim, dim), kv=(d_model, 2 * dim), cross_out=(dim, dim))
        self.layers, self.norm_out = encoder_stack(n_layers, dim, norm, attention, device, dtype)

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
