"""Building blocks the Triton backend adds to emitted models.

Copied verbatim into `model.py` like the torch prelude; names from the torch prelude
(rotary_tables, alibi_slopes) are copied along with them.
"""

import torch

from taxonc.kernels.attention import flash_attention
from taxonc.kernels.rotary import rotary as rotary_kernel

from ..torch_src.prelude import alibi_slopes, shared_rotary_tables


def kernel_attention(q_BTF, k_BSF, v_BSF, n_heads, n_kv_heads, mask, ctx=None, layer=None, rotary=None, alibi=False,
                     window=None, scale=None):
    """attention_core on kernels: rotary and flash attention in Triton, the same cache handling."""
    T = q_BTF.shape[1]
    q = q_BTF.unflatten(-1, (n_heads, -1))  # B T H K, the rotary kernel's layout
    k = k_BSF.unflatten(-1, (n_kv_heads, -1))
    v = v_BSF.unflatten(-1, (n_kv_heads, -1))
    cached = ctx is not None and layer is not None
    offset = ctx.offset if cached else 0
    if rotary is not None:
        tables = shared_rotary_tables(ctx, rotary, T, cached, q.dtype, q.device)
        q, k = rotary_kernel(q, *tables), rotary_kernel(k, *tables)
    q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
    kv_offset = offset
    if cached:
        if ctx.cache is not None:
            k, v, kv_offset = ctx.cache.update(layer, k, v, window)
        if mask.reads_prefix:
            mask = mask.with_prefix(ctx.prefix_len)
    slopes = alibi_slopes(n_heads).to(device=q.device, dtype=torch.float32) if alibi else None
    out = flash_attention(q, k, v, mask, offset, kv_offset, slopes, scale)
    return out.transpose(1, 2).flatten(2)
