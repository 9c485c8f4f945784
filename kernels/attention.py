"""Flash attention (forward): tiled over query and key blocks with an online softmax.

Computes what `attend` in kernels/reference/ computes for every mask a spec
can ask for (full, causal, prefix, locally-banded, strided, fixed), with ALiBi, MQA/GQA and
absolute positions (query i sits at i + q_offset, key j at j + kv_offset, as with a KV cache).
T x S scores are never materialised: each program keeps a running max and sum per query row.

Shapes: B batch, H query heads, G key/value heads (query head h reads kv head h // (H // G)),
T query positions, S key positions, K head width.

Key blocks the mask rules out entirely are never visited: everything above the diagonal for
causal, banded, strided and fixed masks (and above max(diagonal, prefix) for prefix masks), and
for locally-banded masks everything older than the window. Key blocks the mask allows entirely
(below the diagonal for causal, below max(diagonal, prefix) for prefix, inside the band for
locally-banded, all of it for full) skip the mask arithmetic. Strided and fixed masks evaluate
the mask on every visited block.

Decoding (T small, q_offset > 0): when query heads share a kv head (H > G) and T is small, one
program takes the rows of all heads in a group ((H // G) x T of them), so each K/V block is read
once per group instead of once per head. `config={"num_splits": n}` also splits the key range
over n programs (split-KV, as in flash-decoding) and combines the partial results by their
log-sum-exp in torch. It is off by default: on an H100 at B=4, H=32, G=8, S=4096, T=1 the
torch combine's launches made the call 2.7x slower (0.31 ms against 0.11 ms), since a decode
step of this size is bound by launch overhead, not by the GPU.

Forward only: there is no backward kernel. Training goes through the torch path (`attend`).
"""

from __future__ import annotations

import math
import os
from functools import cache

import torch

from .reference.masks import Mask, MaskKind, allowed_keys

# the kernel's MASK_KIND constexpr for each mask kind
MASK_CODES = {MaskKind.FULL: 0, MaskKind.CAUSAL: 1, MaskKind.PREFIX: 2, MaskKind.LOCALLY_BANDED: 3,
              MaskKind.STRIDED: 4, MaskKind.FIXED: 5}
LOG2E = 1.4426950408889634


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def _mask_params(mask):
    """(kind code, first parameter, second parameter) of a Mask."""
    if mask.bidirectional_prefix:
        raise ValueError("the flash kernel has no bidirectional prefix on sparse masks")
    first = {MaskKind.PREFIX: mask.prefix, MaskKind.LOCALLY_BANDED: mask.window, MaskKind.STRIDED: mask.stride,
             MaskKind.FIXED: mask.block}.get(mask.kind, 0)
    return MASK_CODES[mask.kind], int(first), int(mask.summary if mask.kind is MaskKind.FIXED else 0)


def flash_attention_ref(q_BHTK, k_BGSK, v_BGSK, mask, q_offset=0, kv_offset=0, alibi_slopes_H=None, scale=None):
    """Plain torch: explicit mask and softmax in fp32, like `attend`'s CPU path. Returns (B, H, T, K)."""
    B, H, T, K = q_BHTK.shape
    G, S = k_BGSK.shape[1], k_BGSK.shape[2]
    scale = 1.0 / math.sqrt(K) if scale is None else scale
    k = k_BGSK.float().repeat_interleave(H // G, dim=1)  # (B, H, S, K)
    v = v_BGSK.float().repeat_interleave(H // G, dim=1)
    scores_BHTS = q_BHTK.float() @ k.transpose(-1, -2) * scale
    q_idx = torch.arange(T, device=q_BHTK.device)[:, None] + q_offset
    kv_idx = torch.arange(S, device=q_BHTK.device)[None, :] + kv_offset
    if alibi_slopes_H is not None:
        slopes_H = alibi_slopes_H.to(device=q_BHTK.device, dtype=torch.float64)
        scores_BHTS = scores_BHTS - (slopes_H[:, None, None] * (q_idx - kv_idx)).float()
    scores_BHTS = scores_BHTS.masked_fill(~allowed_keys(q_idx, kv_idx, mask), float("-inf"))
    probs_BHTS = torch.softmax(scores_BHTS, dim=-1).nan_to_num(0.0)  # a row with no key gives 0
    return (probs_BHTS @ v).to(q_BHTK.dtype)


@cache
def _build():
    import triton
    import triton.language as tl

    @triton.jit
    def _key_block(acc, l_i, m_i, q, k_base, v_base, stride_ks, stride_kk, stride_vs, stride_vk,
                   start_n, S, kv_offset, q_pos, slope2, qk_scale2, p1, p2, offs_n0, offs_k, K,
                   MASK_KIND: tl.constexpr, MASKED: tl.constexpr, HAS_ALIBI: tl.constexpr,
                   F32DOT: tl.constexpr, EVEN_K: tl.constexpr):
        # one key block of the online softmax; MASKED blocks evaluate the mask and S bound
        offs_n = start_n + offs_n0
        kT_ptrs = k_base + offs_n[None, :] * stride_ks + offs_k[:, None] * stride_kk  # (BLOCK_K, BLOCK_N)
        v_ptrs = v_base + offs_n[:, None] * stride_vs + offs_k[None, :] * stride_vk  # (BLOCK_N, BLOCK_K)
        if MASKED:
            n_ok = offs_n < S
            if EVEN_K:
                kT = tl.load(kT_ptrs, mask=n_ok[None, :], other=0.0)
                v = tl.load(v_ptrs, mask=n_ok[:, None], other=0.0)
            else:
                kT = tl.load(kT_ptrs, mask=n_ok[None, :] & (offs_k[:, None] < K), other=0.0)
                v = tl.load(v_ptrs, mask=n_ok[:, None] & (offs_k[None, :] < K), other=0.0)
        else:
            if EVEN_K:
                kT = tl.load(kT_ptrs)
                v = tl.load(v_ptrs)
            else:
                kT = tl.load(kT_ptrs, mask=offs_k[:, None] < K, other=0.0)
                v = tl.load(v_ptrs, mask=offs_k[None, :] < K, other=0.0)
        if F32DOT:
            kT = kT.to(tl.float32)
            v = v.to(tl.float32)
            qk = tl.dot(q, kT, input_precision="ieee")
        else:
            qk = tl.dot(q, kT)
        qk = qk * qk_scale2  # scores in log2 units
        k_pos = offs_n + kv_offset
        if HAS_ALIBI:
            qk += slope2[:, None] * (k_pos[None, :] - q_pos[:, None]).to(tl.float32)
        if MASKED:
            qp = q_pos[:, None]
            kp = k_pos[None, :]
            if MASK_KIND == 0:
                ok = n_ok[None, :] & (qp >= 0)
            elif MASK_KIND == 1:
                ok = n_ok[None, :] & (kp <= qp)
            elif MASK_KIND == 2:
                ok = n_ok[None, :] & ((kp <= qp) | (kp < p1))
            elif MASK_KIND == 3:
                ok = n_ok[None, :] & (kp <= qp) & (qp - kp < p1)
            elif MASK_KIND == 4:
                ok = n_ok[None, :] & (kp <= qp) & ((qp - kp < p1) | ((qp - kp) % p1 == 0))
            else:
                ok = n_ok[None, :] & (kp <= qp) & (((qp // p1) == (kp // p1)) | ((kp % p1) >= p1 - p2))
            qk = tl.where(ok, qk, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(qk, 1))
            m_use = tl.where(m_new == float("-inf"), 0.0, m_new)  # a row with nothing yet: no NaN
        else:
            m_new = tl.maximum(m_i, tl.max(qk, 1))
            m_use = m_new
        p = tl.math.exp2(qk - m_use[:, None])
        alpha = tl.math.exp2(m_i - m_use)
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None]
        if F32DOT:
            acc += tl.dot(p, v, input_precision="ieee")
        else:
            acc = tl.dot(p.to(v.dtype), v, acc)
        return acc, l_i, m_new

    @triton.jit
    def _flash_fwd(q_ptr, k_ptr, v_ptr, o_ptr, lse_ptr, alibi_ptr,
                   stride_qb, stride_qh, stride_qt, stride_qk,
                   stride_kb, stride_kg, stride_ks, stride_kk,
                   stride_vb, stride_vg, stride_vs, stride_vk,
                   stride_ob, stride_oh, stride_ot, stride_ok,
                   T, S, K, q_offset, kv_offset, qk_scale2, p1, p2, stride_os, stride_lse_split, stride_lse_b, stride_lse_h,
                   NUM_SPLITS: tl.constexpr, HEADS_PER_KV: tl.constexpr, HEADS_PER_PROG: tl.constexpr, PROGS_PER_B: tl.constexpr,
                   MASK_KIND: tl.constexpr, HAS_ALIBI: tl.constexpr, F32DOT: tl.constexpr,
                   BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, EVEN_K: tl.constexpr):
        pid_m = tl.program_id(0)
        pid_bh = tl.program_id(1)
        pid_split = tl.program_id(2)
        b = pid_bh // PROGS_PER_B
        h0 = (pid_bh % PROGS_PER_B) * HEADS_PER_PROG  # first query head of this program
        g = h0 // HEADS_PER_KV
        # rows: (head in this program, query position), HEADS_PER_PROG x T of them
        offs_r = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        row_ok = offs_r < HEADS_PER_PROG * T
        h_row = h0 + offs_r // T
        t_row = offs_r % T
        offs_k = tl.arange(0, BLOCK_K)
        offs_n0 = tl.arange(0, BLOCK_N)
        q_pos = t_row + q_offset

        q_ptrs = q_ptr + b * stride_qb + h_row[:, None] * stride_qh + t_row[:, None] * stride_qt + offs_k[None, :] * stride_qk
        if EVEN_K:
            q = tl.load(q_ptrs, mask=row_ok[:, None], other=0.0)
        else:
            q = tl.load(q_ptrs, mask=row_ok[:, None] & (offs_k[None, :] < K), other=0.0)
        if F32DOT:
            q = q.to(tl.float32)
        if HAS_ALIBI:
            slope2 = tl.load(alibi_ptr + h_row, mask=row_ok, other=0.0).to(tl.float32) * 1.4426950408889634
        else:
            slope2 = tl.zeros([BLOCK_M], dtype=tl.float32)

        # the query positions this block spans
        if HEADS_PER_PROG == 1:
            q_lo = pid_m * BLOCK_M + q_offset
            q_hi = tl.minimum(pid_m * BLOCK_M + BLOCK_M, T) - 1 + q_offset
        else:
            q_lo = q_offset
            q_hi = T - 1 + q_offset
        # key blocks: [lo, a) masked, [a, b) fully allowed, [b, hi) masked; outside [lo, hi) none allowed
        lo = 0
        hi = S
        if MASK_KIND == 2:
            hi = tl.minimum(S, tl.maximum(q_hi - kv_offset + 1, p1 - kv_offset))
        elif MASK_KIND != 0:
            hi = tl.minimum(S, q_hi - kv_offset + 1)
        if MASK_KIND == 3:
            lo = tl.maximum(0, q_lo - p1 + 1 - kv_offset)
            lo = (lo // BLOCK_N) * BLOCK_N
        hi = tl.maximum(hi, lo)
        if MASK_KIND == 0:
            full_hi = S
        elif MASK_KIND == 2:
            full_hi = tl.minimum(S, tl.maximum(q_lo - kv_offset + 1, p1 - kv_offset))
        else:
            full_hi = tl.minimum(S, q_lo - kv_offset + 1)
        a = lo
        if MASK_KIND == 3:
            full_lo = q_hi - p1 + 1 - kv_offset
            a = lo + tl.cdiv(tl.maximum(full_lo - lo, 0), BLOCK_N) * BLOCK_N
            a = tl.minimum(a, hi)
        if MASK_KIND == 4 or MASK_KIND == 5:
            b_ = a
        else:
            b_ = a + (tl.maximum(full_hi - a, 0) // BLOCK_N) * BLOCK_N
        b_ = tl.minimum(b_, hi)

        m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
        l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
        acc = tl.zeros([BLOCK_M, BLOCK_K], dtype=tl.float32)
        k_base = k_ptr + b * stride_kb + g * stride_kg
        v_base = v_ptr + b * stride_vb + g * stride_vg
        if NUM_SPLITS > 1:
            # split-KV (decoding): this program takes one chunk of whole key blocks of [lo, hi)
            chunk = tl.cdiv(tl.cdiv(hi - lo, BLOCK_N), NUM_SPLITS) * BLOCK_N
            c0 = lo + pid_split * chunk
            c1 = tl.minimum(c0 + chunk, hi)
            lo = tl.minimum(c0, hi)
            a = tl.minimum(tl.maximum(a, lo), c1)
            b_ = tl.minimum(tl.maximum(b_, lo), c1)
            hi = c1
        for start_n in range(lo, a, BLOCK_N):
            acc, l_i, m_i = _key_block(acc, l_i, m_i, q, k_base, v_base, stride_ks, stride_kk, stride_vs, stride_vk,
                                       start_n, S, kv_offset, q_pos, slope2, qk_scale2, p1, p2, offs_n0, offs_k, K,
                                       MASK_KIND, True, HAS_ALIBI, F32DOT, EVEN_K)
        for start_n in range(a, b_, BLOCK_N):
            acc, l_i, m_i = _key_block(acc, l_i, m_i, q, k_base, v_base, stride_ks, stride_kk, stride_vs, stride_vk,
                                       start_n, S, kv_offset, q_pos, slope2, qk_scale2, p1, p2, offs_n0, offs_k, K,
                                       MASK_KIND, False, HAS_ALIBI, F32DOT, EVEN_K)
        for start_n in range(b_, hi, BLOCK_N):
            acc, l_i, m_i = _key_block(acc, l_i, m_i, q, k_base, v_base, stride_ks, stride_kk, stride_vs, stride_vk,
                                       start_n, S, kv_offset, q_pos, slope2, qk_scale2, p1, p2, offs_n0, offs_k, K,
                                       MASK_KIND, True, HAS_ALIBI, F32DOT, EVEN_K)

        if NUM_SPLITS > 1:
            # log2-sum-exp of this chunk's scores, for the combine; -inf where it had no key
            lse = tl.where(l_i == 0.0, float("-inf"), m_i + tl.log2(tl.where(l_i == 0.0, 1.0, l_i)))
            tl.store(lse_ptr + pid_split * stride_lse_split + b * stride_lse_b + h_row * stride_lse_h + t_row, lse,
                     mask=row_ok)
            o_ptr += pid_split * stride_os
        l_i = tl.where(l_i == 0.0, 1.0, l_i)  # no allowed key: output 0, not NaN
        out = acc / l_i[:, None]
        o_ptrs = o_ptr + b * stride_ob + h_row[:, None] * stride_oh + t_row[:, None] * stride_ot + offs_k[None, :] * stride_ok
        if EVEN_K:
            tl.store(o_ptrs, out.to(o_ptr.dtype.element_ty), mask=row_ok[:, None])
        else:
            tl.store(o_ptrs, out.to(o_ptr.dtype.element_ty), mask=row_ok[:, None] & (offs_k[None, :] < K))

    # kernels resolve the functions they call among the module's globals, not the closure
    globals()["_key_block"] = _key_block
    return _flash_fwd


def _default_config(T, K, heads_per_prog, dtype):
    """Pinned launch parameters: small blocks under the interpreter, FA2-like tiles on a GPU."""
    rows = heads_per_prog * T
    if _interpreting():
        return {"BLOCK_M": 16, "BLOCK_N": 16, "num_warps": 4, "num_stages": 1}
    if rows <= 16:
        return {"BLOCK_M": 16, "BLOCK_N": 64 if K > 64 or dtype == torch.float32 else 128, "num_warps": 4, "num_stages": 3}
    if rows <= 64:
        return {"BLOCK_M": 64, "BLOCK_N": 64, "num_warps": 4, "num_stages": 3}
    if dtype == torch.float32:
        return {"BLOCK_M": 64, "BLOCK_N": 32, "num_warps": 4, "num_stages": 2}
    # H100, bf16, K=128, T=S=2048: 64/64/4 warps/3 stages beat 128x64 and 128x128 at 8 warps
    # for causal, ALiBi and banded masks alike (benchmarks/gpu_attention.py)
    return {"BLOCK_M": 64, "BLOCK_N": 64, "num_warps": 4, "num_stages": 3}


def flash_attention(q_BHTK, k_BGSK, v_BGSK, mask, q_offset=0, kv_offset=0, alibi_slopes_H=None, scale=None, *,
                    config=None):
    """Attention forward with a Triton kernel; the same result as `flash_attention_ref` / `attend`.

    Returns (B, H, T, K) in q's dtype. `config` (keyword only) overrides the pinned launch
    parameters: a dict with any of BLOCK_M, BLOCK_N, num_warps, num_stages, pack_gqa (one
    program per kv head group) and num_splits (split-KV: each split takes a chunk of the key
    blocks, and the partial outputs are combined by their log-sum-exp).
    """
    B, H, T, K = q_BHTK.shape
    Bk, G, S, Kk = k_BGSK.shape
    if (Bk, Kk) != (B, K) or v_BGSK.shape != k_BGSK.shape:
        raise ValueError(f"shapes q {tuple(q_BHTK.shape)} k {tuple(k_BGSK.shape)} v {tuple(v_BGSK.shape)} do not match")
    if H % G:
        raise ValueError(f"{H} query heads cannot share {G} kv heads")
    if not (q_BHTK.dtype == k_BGSK.dtype == v_BGSK.dtype):
        raise ValueError("q, k and v must have one dtype")
    if q_BHTK.device.type == "cpu" and not _interpreting():
        raise RuntimeError("flash_attention on CPU tensors needs TRITON_INTERPRET=1; use flash_attention_ref")
    kind, p1, p2 = _mask_params(mask)
    if kind in (3, 4, 5) and p1 <= 0:
        raise ValueError(f"mask {mask} needs a positive size")
    scale = 1.0 / math.sqrt(K) if scale is None else float(scale)
    heads_per_kv = H // G
    cfg = dict(config or {})
    pack = cfg.pop("pack_gqa", heads_per_kv > 1 and T <= 16)
    heads_per_prog = heads_per_kv if pack else 1
    rows, progs_per_b = heads_per_prog * T, H // heads_per_prog
    cfg = {**_default_config(T, K, heads_per_prog, q_BHTK.dtype), **cfg}

    num_splits = max(1, int(cfg.get("num_splits", 1)))
    out = torch.empty_like(q_BHTK)
    if B * H * T == 0:
        return out
    if S == 0:
        return out.zero_()
    has_alibi = alibi_slopes_H is not None
    alibi = (alibi_slopes_H.to(device=q_BHTK.device, dtype=torch.float32).contiguous() if has_alibi
             else torch.zeros(1, device=q_BHTK.device, dtype=torch.float32))
    f32dot = q_BHTK.dtype == torch.float32 or _interpreting()
    block_k = max(16, 1 << (K - 1).bit_length())
    grid = (-(-rows // cfg["BLOCK_M"]), B * progs_per_b, num_splits)
    if num_splits > 1:  # per-split outputs and log-sum-exps, combined below
        dest = torch.empty(num_splits, B, H, T, K, device=q_BHTK.device, dtype=torch.float32)
        lse = torch.empty(num_splits, B, H, T, device=q_BHTK.device, dtype=torch.float32)
    else:
        dest, lse = out.unsqueeze(0), alibi  # lse unused
    _build()[grid](
        q_BHTK, k_BGSK, v_BGSK, dest, lse, alibi,
        *q_BHTK.stride(), *k_BGSK.stride(), *v_BGSK.stride(), *dest.stride()[1:],
        T, S, K, int(q_offset), int(kv_offset), scale * LOG2E, p1, p2,
        dest.stride(0), *(lse.stride()[:3] if num_splits > 1 else (0, 0, 0)),
        NUM_SPLITS=num_splits, HEADS_PER_KV=heads_per_kv, HEADS_PER_PROG=heads_per_prog, PROGS_PER_B=progs_per_b,
        MASK_KIND=kind, HAS_ALIBI=has_alibi, F32DOT=f32dot,
        BLOCK_M=cfg["BLOCK_M"], BLOCK_N=cfg["BLOCK_N"], BLOCK_K=block_k, EVEN_K=block_k == K,
        num_warps=cfg["num_warps"], num_stages=cfg["num_stages"],
    )
    if num_splits > 1:
        top = lse.amax(0)
        weight = torch.exp2(lse - torch.where(top == float("-inf"), 0.0, top))  # (splits, B, H, T)
        total = weight.sum(0).clamp_min(torch.finfo(torch.float32).tiny)
        out.copy_((weight[..., None] * dest).sum(0) / total[..., None])
    return out
