"""Rotary position embedding on (B, T, H, K) projections, as a Triton kernel with a reference.

    rotary(x_BTHK, cos_TR, sin_TR) -> (B, T, H, K)

Rotate-half convention on the first R = cos_TR.shape[-1] dims of each head; dims R..K pass
through unchanged. The semantics are those of `apply_rotary` in
kernels/reference/, with heads after positions (the layout a linear
projection produces before the transpose to (B, H, T, K)), so one kernel serves q (H heads)
and k (G heads). cos/sin are the tables `rotary_tables` produces, (T, R), any float dtype.

With x = [x1 | x2 | x_pass] (halves of width R/2) and cos = [c1 | c2], sin = [s1 | s2]:
    forward   y1 = x1 c1 - x2 s1        y2 = x2 c2 + x1 s2
    backward  g1 = d1 c1 + d2 s2        g2 = d2 c2 - d1 s1     (the transpose)
For rotary_tables' half-duplicated tables (c1 = c2, s1 = s2) the backward is the rotation by
-theta. The kernel reads both halves of each table, so it matches apply_rotary for any table.

x may be a strided view (for example q split off a fused qkv projection) as long as its last
dim is contiguous; the output is contiguous. One program handles one (b, t) and a block of
heads; arithmetic is in fp32, the output is in x's dtype. Gradients flow to x through the
kernel; gradients to cos/sin (rarely wanted: the tables are constants) are computed in torch.
"""

from __future__ import annotations

import torch

# Pinned launch configuration (no autotuning).
_BLOCK_H = 16   # heads per program (R/2 x BLOCK_H elements per half tile)
_NUM_WARPS = 4


# --- reference -------------------------------------------------------------------------------

def rotary_ref(x_BTHK, cos_TR, sin_TR):
    """prelude.apply_rotary on the (B, T, H, K) layout: cos/sin broadcast over batch and heads."""
    rot = cos_TR.shape[-1]
    cos, sin = cos_TR[:, None, :], sin_TR[:, None, :]  # (T, 1, R)
    x_rot, x_pass = x_BTHK[..., :rot], x_BTHK[..., rot:]
    x1, x2 = x_rot[..., : rot // 2], x_rot[..., rot // 2:]
    rotated = torch.cat([-x2, x1], dim=-1)
    return torch.cat([x_rot * cos + rotated * sin, x_pass], dim=-1)


# --- kernel ----------------------------------------------------------------------------------

_KERNEL = None


def _build():
    """Define the @triton.jit kernel on first use (Triton is imported only here)."""
    global _KERNEL
    if _KERNEL is not None:
        return _KERNEL
    import triton
    import triton.language as tl

    @triton.jit
    def rotary_kernel(x_ptr, cos_ptr, sin_ptr, out_ptr,
                      T, H, K, R,
                      stride_xb, stride_xt, stride_xh, stride_ct, stride_st,
                      BLOCK_H: tl.constexpr, BLOCK_HALF: tl.constexpr, BLOCK_PASS: tl.constexpr,
                      HAS_PASS: tl.constexpr, BACKWARD: tl.constexpr):
        pid = tl.program_id(0).to(tl.int64)  # one (b, t)
        b = pid // T
        t = pid % T
        heads = tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H)
        hmask = heads < H
        half = R // 2
        j = tl.arange(0, BLOCK_HALF)
        jmask = j < half

        cos_row = cos_ptr + t * stride_ct
        sin_row = sin_ptr + t * stride_st
        c1 = tl.load(cos_row + j, mask=jmask, other=0.0).to(tl.float32)[None, :]
        c2 = tl.load(cos_row + half + j, mask=jmask, other=0.0).to(tl.float32)[None, :]
        s1 = tl.load(sin_row + j, mask=jmask, other=0.0).to(tl.float32)[None, :]
        s2 = tl.load(sin_row + half + j, mask=jmask, other=0.0).to(tl.float32)[None, :]

        x_base = x_ptr + b * stride_xb + t * stride_xt + heads.to(tl.int64)[:, None] * stride_xh
        o_base = out_ptr + pid * H * K + heads.to(tl.int64)[:, None] * K
        mask = hmask[:, None] & jmask[None, :]
        x1 = tl.load(x_base + j[None, :], mask=mask, other=0.0).to(tl.float32)
        x2 = tl.load(x_base + half + j[None, :], mask=mask, other=0.0).to(tl.float32)
        if BACKWARD:
            y1 = x1 * c1 + x2 * s2
            y2 = x2 * c2 - x1 * s1
        else:
            y1 = x1 * c1 - x2 * s1
            y2 = x2 * c2 + x1 * s2
        tl.store(o_base + j[None, :], y1.to(out_ptr.dtype.element_ty), mask=mask)
        tl.store(o_base + half + j[None, :], y2.to(out_ptr.dtype.element_ty), mask=mask)

        if HAS_PASS:
            p = R + tl.arange(0, BLOCK_PASS)
            pmask = hmask[:, None] & (p < K)[None, :]
            xp = tl.load(x_base + p[None, :], mask=pmask, other=0.0).to(tl.float32)
            tl.store(o_base + p[None, :], xp.to(out_ptr.dtype.element_ty), mask=pmask)

    _KERNEL = rotary_kernel
    return _KERNEL


def _pow2(n):
    return 1 << max(n - 1, 0).bit_length()


def _launch(x, cos, sin, backward):
    B, T, H, K = x.shape
    R = cos.shape[-1]
    if x.stride(-1) != 1:
        x = x.contiguous()
    out = torch.empty((B, T, H, K), device=x.device, dtype=x.dtype)
    if out.numel() == 0:
        return out
    block_h = min(_BLOCK_H, _pow2(H))
    grid = (B * T, -(-H // block_h))
    _build()[grid](
        x, cos, sin, out, T, H, K, R,
        x.stride(0), x.stride(1), x.stride(2), cos.stride(0), sin.stride(0),
        BLOCK_H=block_h, BLOCK_HALF=_pow2(R // 2), BLOCK_PASS=_pow2(K - R),
        HAS_PASS=K > R, BACKWARD=backward, num_warps=_NUM_WARPS)
    return out


class _Rotary(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, cos, sin):
        cos_c, sin_c = cos.contiguous(), sin.contiguous()
        needs_table_grad = ctx.needs_input_grad[1] or ctx.needs_input_grad[2]
        ctx.save_for_backward(cos_c, sin_c, x if needs_table_grad else None)
        return _launch(x, cos_c, sin_c, backward=False)

    @staticmethod
    def backward(ctx, grad_out):
        cos, sin, x = ctx.saved_tensors
        grad_x = _launch(grad_out, cos, sin, backward=True) if ctx.needs_input_grad[0] else None
        grad_cos = grad_sin = None
        if x is not None:
            # d/dcos, d/dsin of x_rot * cos + rotated * sin, summed over batch and heads
            R = cos.shape[-1]
            g = grad_out[..., :R].float()
            xr = x[..., :R].float()
            rotated = torch.cat([-xr[..., R // 2:], xr[..., : R // 2]], dim=-1)
            if ctx.needs_input_grad[1]:
                grad_cos = (g * xr).sum(dim=(0, 2)).to(cos.dtype)
            if ctx.needs_input_grad[2]:
                grad_sin = (g * rotated).sum(dim=(0, 2)).to(sin.dtype)
        return grad_x, grad_cos, grad_sin


def rotary(x_BTHK, cos_TR, sin_TR):
    """Rotate-half rotary embedding of the first R dims of each head; x (B, T, H, K), cos/sin (T, R)."""
    if x_BTHK.dim() != 4:
        raise ValueError(f"rotary expects x of shape (B, T, H, K), got {tuple(x_BTHK.shape)}")
    B, T, H, K = x_BTHK.shape
    if cos_TR.dim() != 2 or cos_TR.shape != sin_TR.shape or cos_TR.shape[0] != T:
        raise ValueError(f"cos/sin must both be (T={T}, R), got {tuple(cos_TR.shape)} and {tuple(sin_TR.shape)}")
    R = cos_TR.shape[-1]
    if R % 2 or R > K or R == 0:
        raise ValueError(f"rotary dims R={R} must be even, positive and <= K={K}")
    return _Rotary.apply(x_BTHK, cos_TR, sin_TR)
