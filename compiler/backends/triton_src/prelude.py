"""Building blocks the Triton backend adds to emitted models.

Copied verbatim into `model.py` like the reference ops; names from taxonc.kernels.reference
(alibi_slopes, the KV cache) are copied along with them.
"""

import torch

from taxonc.kernels.attention import flash_attention
from taxonc.kernels.reference.positions import alibi_slopes
from taxonc.kernels.rotary import rotary as rotary_kernel


def kernel_attention(q_BTF, k_BTF, v_BTF, mask, *, n_heads, n_kv_heads, offset=0, prefix_len=0, rope=None, alibi=False,
                     cache=None, layer=None, window=None, scale=None):
    """Self-attention on kernels: rotary and flash attention in Triton, the reference cache handling."""
    q = q_BTF.unflatten(-1, (n_heads, -1))  # B T H K, the rotary kernel's layout
    k = k_BTF.unflatten(-1, (n_kv_heads, -1))
    v = v_BTF.unflatten(-1, (n_kv_heads, -1))
    if rope is not None:
        q, k = rotary_kernel(q, *rope), rotary_kernel(k, *rope)
    q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
    kv_offset = offset
    if cache is not None:
        k, v, kv_offset = cache.update(layer, k, v, window)
    if mask.reads_prefix:
        mask = mask.with_prefix(prefix_len)
    slopes = alibi_slopes(n_heads).to(device=q.device, dtype=torch.float32) if alibi else None
    out = flash_attention(q, k, v, mask, offset, kv_offset, slopes, scale)
    return out.transpose(1, 2).flatten(2)
