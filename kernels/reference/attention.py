"""Attention, one small helper per kind of attention block, and the KV cache they share.

A block calls exactly one helper: `causal_attention` (dense decoder self-attention),
`masked_attention` (any Mask, optionally ALiBi: sparse, banded, prefix-LM, biased encoders),
`relative_bias_attention` (T5 buckets), `xl_attention` (Transformer-XL) or `full_attention`
(cross-attention and plain encoders). Inputs arrive with heads flattened, [B, T, H*K], as the
projections give them, and leave the same way.

Shape suffixes: B batch, T query positions, S key positions, H query heads, G key/value
heads, K head width, F = heads x head width, D model width, N buckets.
"""

import torch
import torch.nn.functional as F

from .masks import MaskKind, allowed_keys
from .positions import alibi_slopes, apply_rotary, relative_buckets, sinusoidal_table


class KVCache:
    """Keys and values of past positions per attention layer (banded ones keep their window), and per-sequence values."""

    def __init__(self):
        self.length, self.prefix_len = 0, None  # positions seen; a prefix LM's prefix length
        self.keys, self.values, self.starts, self.static = {}, {}, {}, {}

    def update(self, layer, k_BGTK, v_BGTK, window=None):
        """Append keys and values; returns all of them so far and the position of the first."""
        k, v, start = k_BGTK, v_BGTK, self.length
        if layer in self.keys:
            k, v = torch.cat([self.keys[layer], k], dim=2), torch.cat([self.values[layer], v], dim=2)
            start = self.starts[layer]
        full = (k, v, start)
        if window is not None and k.shape[2] > window - 1:
            drop = k.shape[2] - (window - 1)
            k, v, start = k[:, :, drop:], v[:, :, drop:], start + drop
        self.keys[layer], self.values[layer], self.starts[layer] = k, v, start
        return full

    def nbytes(self):
        """Bytes of cached self-attention keys and values."""
        return sum(t.numel() * t.element_size() for t in [*self.keys.values(), *self.values.values()])

    def reorder(self, index_B):
        """Keep (and repeat) batch rows, e.g. to follow the surviving beams of a beam search."""
        for store in (self.keys, self.values, self.static):
            for name, t in store.items():
                if isinstance(t, torch.Tensor) and t.dim() > 0:
                    store[name] = t.index_select(0, index_B)


def once(cache, key, compute):
    """A value fixed for the whole sequence (encoder memory, projected media), computed once per cache."""
    if cache is None:
        return compute()
    if key not in cache.static:
        cache.static[key] = compute()
    return cache.static[key]


def history(cache, key, new_BTD):
    """Every position's value so far, for ops that read whole chunks (RETRO)."""
    if cache is None:
        return new_BTD
    past = cache.static.get(key)
    full = new_BTD if past is None else torch.cat([past, new_BTD], dim=1)
    cache.static[key] = full
    return full


def split_heads(x_BTF, n_heads):
    return x_BTF.unflatten(-1, (n_heads, -1)).transpose(1, 2)


def merge_heads(x_BHTK):
    return x_BHTK.transpose(1, 2).flatten(2)


def causal_attention(q_BTF, k_BTF, v_BTF, *, n_heads, n_kv_heads, rope=None, cache=None, layer=None, scale=None):
    """Dense causal self-attention: rotary positions, the KV cache, scaled_dot_product_attention."""
    q, k, v = split_heads(q_BTF, n_heads), split_heads(k_BTF, n_kv_heads), split_heads(v_BTF, n_kv_heads)
    if rope is not None:
        q, k = apply_rotary(q, *rope), apply_rotary(k, *rope)
    if cache is not None:
        k, v, _ = cache.update(layer, k, v)
    T, S = q.shape[2], k.shape[2]  # the queries are the last T of the S positions
    mask = None if T in (1, S) else torch.ones(T, S, dtype=torch.bool, device=q.device).tril(S - T)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=1 < T == S, scale=scale,
                                         enable_gqa=n_kv_heads != n_heads)
    return merge_heads(out)


def full_attention(q_BTF, k_BSF, v_BSF, *, n_heads, n_kv_heads, rope=None, scale=None):
    """Every query sees every key: cross-attention, and encoders without score biases."""
    q, k, v = split_heads(q_BTF, n_heads), split_heads(k_BSF, n_kv_heads), split_heads(v_BSF, n_kv_heads)
    if rope is not None:
        q, k = apply_rotary(q, *rope), apply_rotary(k, *rope)
    out = F.scaled_dot_product_attention(q, k, v, scale=scale, enable_gqa=n_kv_heads != n_heads)
    return merge_heads(out)


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
           scale=None):
    """Attention under any Mask, with ALiBi or relative-bias scores, on heads already split.

    Plain causal or full masks go straight to scaled_dot_product_attention. Other masks and
    biases use FlexAttention on accelerators, and an explicit mask on CPU, where FlexAttention
    has no fused kernel to gain from.
    """
    H, T, S, G = q_BHTK.shape[1], q_BHTK.shape[2], k_BGSK.shape[2], k_BGSK.shape[1]
    simple = alibi_H is None and rel_table_NH is None and mask.kind in (MaskKind.CAUSAL, MaskKind.FULL)
    if simple and (mask.kind is MaskKind.FULL or (q_offset == kv_offset and T == S)):
        return F.scaled_dot_product_attention(q_BHTK, k_BGSK, v_BGSK, is_causal=mask.kind is MaskKind.CAUSAL,
                                              scale=scale, enable_gqa=G != H)
    if q_BHTK.is_cuda and not torch.compiler.is_exporting():  # FlexAttention has no MLIR lowering
        from torch.nn.attention.flex_attention import create_block_mask, flex_attention

        def mask_mod(b, h, q_idx, kv_idx):
            return allowed_keys(q_idx + q_offset, kv_idx + kv_offset, mask)

        def score_mod(score, b, h, q_idx, kv_idx):
            return score + score_bias(q_idx + q_offset, kv_idx + kv_offset, h, alibi_H, rel_table_NH, rel_cfg).to(score.dtype)

        block_mask = create_block_mask(mask_mod, None, None, T, S, device=q_BHTK.device)
        return flex_attention(q_BHTK, k_BGSK, v_BGSK, score_mod=score_mod, block_mask=block_mask, scale=scale,
                              enable_gqa=G != H)
    q_idx = torch.arange(T, device=q_BHTK.device)[:, None] + q_offset
    kv_idx = torch.arange(S, device=q_BHTK.device)[None, :] + kv_offset
    h = torch.arange(H, device=q_BHTK.device)[:, None, None]
    bias_HTS = torch.where(allowed_keys(q_idx, kv_idx, mask), 0.0, float("-inf")).to(q_BHTK.dtype)
    if alibi_H is not None or rel_table_NH is not None:
        bias_HTS = bias_HTS + score_bias(q_idx, kv_idx, h, alibi_H, rel_table_NH, rel_cfg).to(q_BHTK.dtype)
    return F.scaled_dot_product_attention(q_BHTK, k_BGSK, v_BGSK, attn_mask=bias_HTS, scale=scale, enable_gqa=G != H)


def cached_heads(q_BTF, k_BTF, v_BTF, mask, n_heads, n_kv_heads, offset, prefix_len, rope, cache, layer, window):
    """Heads split, rotary applied, keys and values through the cache, the prefix set on the mask.

    Returns q, k, v, the position of the first key, and the mask.
    """
    q, k, v = split_heads(q_BTF, n_heads), split_heads(k_BTF, n_kv_heads), split_heads(v_BTF, n_kv_heads)
    if rope is not None:
        q, k = apply_rotary(q, *rope), apply_rotary(k, *rope)
    kv_offset = offset
    if cache is not None:
        k, v, kv_offset = cache.update(layer, k, v, window)
    return q, k, v, kv_offset, mask.with_prefix(prefix_len) if mask.reads_prefix else mask


def masked_attention(q_BTF, k_BTF, v_BTF, mask, *, n_heads, n_kv_heads, offset=0, prefix_len=0, rope=None,
                     alibi=False, cache=None, layer=None, window=None, scale=None):
    """Self-attention under a sparse, banded, prefix or full Mask, optionally with ALiBi."""
    q, k, v, kv_offset, mask = cached_heads(q_BTF, k_BTF, v_BTF, mask, n_heads, n_kv_heads, offset, prefix_len, rope,
                                            cache, layer, window)
    alibi_H = alibi_slopes(n_heads).to(q.device) if alibi else None
    return merge_heads(attend(q, k, v, mask, offset, kv_offset, alibi_H=alibi_H, scale=scale))


def relative_bias_attention(q_BTF, k_BTF, v_BTF, mask, rel_table_NH, *, n_buckets, max_distance, bidirectional,
                            n_heads, n_kv_heads, offset=0, prefix_len=0, cache=None, layer=None, window=None, scale=None):
    """T5: a learned bias per head for each log-spaced bucket of key-query distance."""
    q, k, v, kv_offset, mask = cached_heads(q_BTF, k_BTF, v_BTF, mask, n_heads, n_kv_heads, offset, prefix_len, None,
                                            cache, layer, window)
    out = attend(q, k, v, mask, offset, kv_offset, rel_table_NH=rel_table_NH,
                 rel_cfg=(n_buckets, max_distance, bidirectional), scale=scale)
    return merge_heads(out)


def xl_attention(q_BTF, k_BTF, v_BTF, mask, r_proj_FD, u_HK, w_HK, *, n_heads, n_kv_heads, offset=0, prefix_len=0,
                 cache=None, layer=None, window=None, scale=None):
    """Transformer-XL: content term (q + u)k plus position term (q + w)r[i - j].

    r is the projected sinusoid of each distance. The score matrix is explicit, since the
    position term depends on the query and no fused kernel covers it.
    """
    q, k, v, kv_offset, mask = cached_heads(q_BTF, k_BTF, v_BTF, mask, n_heads, n_kv_heads, offset, prefix_len, None,
                                            cache, layer, window)
    k = k.repeat_interleave(n_heads // n_kv_heads, dim=1)
    v = v.repeat_interleave(n_heads // n_kv_heads, dim=1)
    B, H, T, K = q.shape
    S = k.shape[2]
    sinusoid = sinusoidal_table(torch.arange(offset + T - kv_offset, device=q.device), r_proj_FD.shape[1], q.dtype)
    r_DHK = F.linear(sinusoid, r_proj_FD).unflatten(-1, (n_heads, -1))
    content = torch.einsum("bhtk,bhsk->bhts", q + u_HK[None, :, None, :], k)
    by_distance = torch.einsum("bhtk,dhk->bhtd", q + w_HK[None, :, None, :], r_DHK)
    q_idx = torch.arange(T, device=q.device)[:, None] + offset
    kv_idx = torch.arange(S, device=q.device)[None, :] + kv_offset
    distance = (q_idx - kv_idx).clamp(min=0, max=r_DHK.shape[0] - 1).expand(B, H, T, S)
    scores = (content + torch.gather(by_distance, 3, distance)) * (K**-0.5 if scale is None else scale)
    scores = scores.masked_fill(~allowed_keys(q_idx, kv_idx, mask), float("-inf"))
    # softmax in at least fp32; float64 stays float64
    probs = torch.softmax(scores if scores.dtype == torch.float64 else scores.float(), dim=-1)
    return merge_heads(probs.to(v.dtype) @ v)
