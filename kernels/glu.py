"""Gated linear units and bias + activation, as Triton kernels with plain-torch references.

    glu(gate_up, kind)        gate_up (..., 2F) = [gate | up] -> act(gate) * up, (..., F)
    bias_act(x, bias, kind)   act(x + bias), bias (D,) or None, (..., D)

Both are memory-bound elementwise ops: each kernel reads its inputs once and writes its
output once, in the input dtype, with all arithmetic in fp32. The backward kernels recompute
the activation from the saved inputs (nothing else is saved). The bias gradient is reduced
in fp32 inside the backward kernel: each program owns a block of columns and a slice of the
rows and writes one fp32 partial sum per column; torch adds the few partials.

"gelu"/"geglu" are the exact GELU, 0.5 x (1 + erf(x / sqrt 2)). "gelu-tanh"/"geglu-tanh" are the
tanh approximation, written as x * sigmoid(2u), u = sqrt(2/pi) (x + 0.044715 x^3), which equals
0.5 x (1 + tanh u) and needs only exp (no cancellation near u = 0). SiLU is x * sigmoid(x).
All saturate cleanly: exp overflowing to inf gives 0.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

GLU_KINDS = ("swiglu", "geglu", "geglu-tanh")
ACT_KINDS = ("gelu", "gelu-tanh", "relu")

# Pinned launch configuration (no autotuning): one row block per program.
_BLOCK_COLS = 1024      # columns per program (the row is split over the grid's second axis)
_NUM_WARPS = 4
_BWD_BLOCK_M = 16       # rows per step in the bias_act backward tile
_BWD_ROW_SPLITS = 64    # programs along the rows in the bias_act backward (partials per column)


# --- references ------------------------------------------------------------------------------

def _act_ref(x, kind):
    if kind in ("swiglu", "silu"):
        return F.silu(x)
    if kind in ("geglu", "gelu"):
        return F.gelu(x)
    if kind in ("geglu-tanh", "gelu-tanh"):
        return F.gelu(x, approximate="tanh")
    if kind == "relu":
        return F.relu(x)
    raise ValueError(kind)


def glu_ref(gate_up, kind):
    """act(gate) * up with gate_up = [gate | up] along the last dim (prelude.glu's semantics)."""
    if kind not in GLU_KINDS:
        raise ValueError(f"glu kind must be one of {GLU_KINDS}, got {kind!r}")
    gate, up = gate_up.chunk(2, dim=-1)
    return _act_ref(gate, kind) * up


def bias_act_ref(x, bias, kind):
    """act(x + bias); bias broadcasts over the last dim and may be None."""
    if kind not in ACT_KINDS:
        raise ValueError(f"bias_act kind must be one of {ACT_KINDS}, got {kind!r}")
    return _act_ref(x if bias is None else x + bias, kind)


# --- kernels ---------------------------------------------------------------------------------

_KERNELS = None


def _build():
    """Define the @triton.jit kernels on first use (Triton is imported only here)."""
    # the jit helpers must be module globals: kernels resolve the names they call there
    global _KERNELS, _act_fwd, _act_both, _glu_load
    if _KERNELS is not None:
        return _KERNELS
    import triton
    import triton.language as tl

    # ACT: 0 silu, 1 gelu (tanh), 2 relu, 3 gelu (exact). 0.7978845608028654 = sqrt(2/pi), 0.044715 = GELU's
    # cubic term, 0.7071067811865476 = 1/sqrt(2), 0.3989422804014327 = 1/sqrt(2 pi)

    @triton.jit
    def _act_fwd(z, ACT: tl.constexpr):
        if ACT == 0:
            y = z / (1.0 + tl.exp(-z))
        elif ACT == 1:
            u2 = 2.0 * 0.7978845608028654 * (z + 0.044715 * z * z * z)
            y = z / (1.0 + tl.exp(-u2))
        elif ACT == 3:
            y = 0.5 * z * (1.0 + tl.erf(z * 0.7071067811865476))
        else:
            y = tl.where(z > 0.0, z, 0.0)
        return y

    @triton.jit
    def _act_both(z, ACT: tl.constexpr):
        """(act(z), act'(z))."""
        # s = sigmoid(v) = 1 / (1 + e), e = exp(-v). 1 - s is taken as e * s where s is near 1
        # (1 - s would cancel there) and as 1 - s elsewhere (e * s is inf * 0 when e overflows).
        if ACT == 0:
            e = tl.exp(-z)
            s = 1.0 / (1.0 + e)
            one_minus_s = tl.where(e < 1.0, e * s, 1.0 - s)
            y = z * s
            dy = s * (1.0 + z * one_minus_s)
        elif ACT == 1:
            z2 = z * z
            e = tl.exp(-2.0 * 0.7978845608028654 * (z + 0.044715 * z2 * z))
            s = 1.0 / (1.0 + e)
            one_minus_s = tl.where(e < 1.0, e * s, 1.0 - s)
            y = z * s
            # d/dz 0.5 z (1 + tanh u) = s + z * 2 s (1 - s) * du/dz
            dy = s + z * 2.0 * s * one_minus_s * 0.7978845608028654 * (1.0 + 3.0 * 0.044715 * z2)
        elif ACT == 3:
            # d/dz z Phi(z) = Phi(z) + z phi(z)
            cdf = 0.5 * (1.0 + tl.erf(z * 0.7071067811865476))
            y = z * cdf
            dy = cdf + z * 0.3989422804014327 * tl.exp(-0.5 * z * z)
        else:
            pos = z > 0.0
            y = tl.where(pos, z, 0.0)
            dy = tl.where(pos, 1.0, 0.0)
        return y, dy

    @triton.jit
    def _glu_load(gu_ptr, F_, BLOCK: tl.constexpr):
        # program (row, j): columns [j*BLOCK, (j+1)*BLOCK) of the row's gate and up halves, in fp32
        row = tl.program_id(0).to(tl.int64)
        cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
        mask = cols < F_
        gu_row = gu_ptr + row * 2 * F_
        gate = tl.load(gu_row + cols, mask=mask, other=0.0).to(tl.float32)
        up = tl.load(gu_row + F_ + cols, mask=mask, other=0.0).to(tl.float32)
        return row, cols, mask, gate, up

    @triton.jit
    def glu_fwd_kernel(gu_ptr, out_ptr, F_, BLOCK: tl.constexpr, ACT: tl.constexpr):
        row, cols, mask, gate, up = _glu_load(gu_ptr, F_, BLOCK)
        y = _act_fwd(gate, ACT) * up
        tl.store(out_ptr + row * F_ + cols, y.to(out_ptr.dtype.element_ty), mask=mask)

    @triton.jit
    def glu_bwd_kernel(gu_ptr, gout_ptr, ggu_ptr, F_, BLOCK: tl.constexpr, ACT: tl.constexpr):
        row, cols, mask, gate, up = _glu_load(gu_ptr, F_, BLOCK)
        g = tl.load(gout_ptr + row * F_ + cols, mask=mask, other=0.0).to(tl.float32)
        a, da = _act_both(gate, ACT)
        ggu_row = ggu_ptr + row * 2 * F_
        tl.store(ggu_row + cols, (g * up * da).to(ggu_ptr.dtype.element_ty), mask=mask)
        tl.store(ggu_row + F_ + cols, (g * a).to(ggu_ptr.dtype.element_ty), mask=mask)

    @triton.jit
    def bias_act_fwd_kernel(x_ptr, b_ptr, out_ptr, D, BLOCK: tl.constexpr,
                            HAS_BIAS: tl.constexpr, ACT: tl.constexpr):
        row = tl.program_id(0).to(tl.int64)
        cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
        mask = cols < D
        z = tl.load(x_ptr + row * D + cols, mask=mask, other=0.0).to(tl.float32)
        if HAS_BIAS:
            z += tl.load(b_ptr + cols, mask=mask, other=0.0).to(tl.float32)
        y = _act_fwd(z, ACT)
        tl.store(out_ptr + row * D + cols, y.to(out_ptr.dtype.element_ty), mask=mask)

    @triton.jit
    def bias_act_bwd_kernel(x_ptr, b_ptr, gout_ptr, gx_ptr, gb_part_ptr, M, D, rows_per_prog,
                            BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr,
                            HAS_BIAS: tl.constexpr, ACT: tl.constexpr):
        # program (i, j): columns [i*BLOCK_D, (i+1)*BLOCK_D), rows [j*rows_per_prog, ...)
        pid_d = tl.program_id(0)
        pid_m = tl.program_id(1)
        cols = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
        cmask = cols < D
        if HAS_BIAS:
            b = tl.load(b_ptr + cols, mask=cmask, other=0.0).to(tl.float32)
        acc = tl.zeros((BLOCK_D,), dtype=tl.float32)
        row_start = pid_m * rows_per_prog
        row_end = tl.minimum(row_start + rows_per_prog, M)
        for m0 in range(row_start, row_end, BLOCK_M):
            rows = m0 + tl.arange(0, BLOCK_M)
            mask = (rows < row_end)[:, None] & cmask[None, :]
            offs = rows.to(tl.int64)[:, None] * D + cols[None, :]
            z = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
            if HAS_BIAS:
                z += b[None, :]
            g = tl.load(gout_ptr + offs, mask=mask, other=0.0).to(tl.float32)
            _, dz = _act_both(z, ACT)
            gz = tl.where(mask, g * dz, 0.0)
            tl.store(gx_ptr + offs, gz.to(gx_ptr.dtype.element_ty), mask=mask)
            acc += tl.sum(gz, axis=0)
        if HAS_BIAS:
            tl.store(gb_part_ptr + pid_m * D + cols, acc, mask=cmask)

    _KERNELS = dict(glu_fwd=glu_fwd_kernel, glu_bwd=glu_bwd_kernel,
                    bias_act_fwd=bias_act_fwd_kernel, bias_act_bwd=bias_act_bwd_kernel)
    return _KERNELS


def _cols_block(n):
    return min(_BLOCK_COLS, 1 << max(n - 1, 0).bit_length())


def _act_code(kind):
    return {"swiglu": 0, "geglu-tanh": 1, "gelu-tanh": 1, "relu": 2, "geglu": 3, "gelu": 3}[kind]


# --- autograd wrappers -----------------------------------------------------------------------

def _glu_forward(gu_M2F, act):
    M, F2 = gu_M2F.shape
    F_ = F2 // 2
    out = torch.empty((M, F_), device=gu_M2F.device, dtype=gu_M2F.dtype)
    if out.numel():
        block = _cols_block(F_)
        _build()["glu_fwd"][(M, -(-F_ // block))](gu_M2F, out, F_, BLOCK=block, ACT=act, num_warps=_NUM_WARPS)
    return out


def _glu_backward(gu_M2F, g_MF, act):
    M, F2 = gu_M2F.shape
    F_ = F2 // 2
    grad = torch.empty_like(gu_M2F)
    if grad.numel():
        block = _cols_block(F_)
        _build()["glu_bwd"][(M, -(-F_ // block))](gu_M2F, g_MF, grad, F_, BLOCK=block, ACT=act, num_warps=_NUM_WARPS)
    return grad


class _GLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, gate_up, act):
        gu = gate_up.contiguous()
        ctx.save_for_backward(gu)
        ctx.act = act
        out = _glu_forward(gu.reshape(-1, gu.shape[-1]), act)
        return out.reshape(*gu.shape[:-1], gu.shape[-1] // 2)

    @staticmethod
    def backward(ctx, grad_out):
        (gu,) = ctx.saved_tensors
        g = grad_out.contiguous().reshape(-1, gu.shape[-1] // 2)
        grad = _glu_backward(gu.reshape(-1, gu.shape[-1]), g, ctx.act)
        return grad.reshape(gu.shape), None


def glu(gate_up, kind):
    """act(gate) * up, gate_up (..., 2F) = [gate | up]; returns (..., F). Differentiable in gate_up."""
    if kind not in GLU_KINDS:
        raise ValueError(f"glu kind must be one of {GLU_KINDS}, got {kind!r}")
    if gate_up.shape[-1] % 2:
        raise ValueError(f"glu needs an even last dim ([gate | up]), got {tuple(gate_up.shape)}")
    return _GLU.apply(gate_up, _act_code(kind))


class _BiasAct(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, bias, act):
        xc = x.contiguous()
        bc = None if bias is None else bias.contiguous()
        ctx.save_for_backward(xc, bc)
        ctx.act = act
        D = xc.shape[-1]
        x_MD = xc.reshape(-1, D)
        M = x_MD.shape[0]
        out = torch.empty_like(x_MD)
        if out.numel():
            block = _cols_block(D)
            _build()["bias_act_fwd"][(M, -(-D // block))](
                x_MD, x_MD if bc is None else bc, out, D,
                BLOCK=block, HAS_BIAS=bc is not None, ACT=act, num_warps=_NUM_WARPS)
        return out.reshape(xc.shape)

    @staticmethod
    def backward(ctx, grad_out):
        xc, bc = ctx.saved_tensors
        D = xc.shape[-1]
        x_MD = xc.reshape(-1, D)
        M = x_MD.shape[0]
        g_MD = grad_out.contiguous().reshape(M, D)
        gx = torch.empty_like(x_MD)
        has_bias = bc is not None
        # split the rows over at most _BWD_ROW_SPLITS programs, each a whole number of row blocks
        blocks = max(1, -(-M // _BWD_BLOCK_M))
        rows_per_prog = -(-blocks // min(_BWD_ROW_SPLITS, blocks)) * _BWD_BLOCK_M
        splits = max(1, -(-M // rows_per_prog))
        gb_part = torch.empty((splits, D), device=xc.device, dtype=torch.float32) if has_bias else gx
        if gx.numel():
            block_d = min(128, _cols_block(D))
            _build()["bias_act_bwd"][(-(-D // block_d), splits)](
                x_MD, bc if has_bias else x_MD, g_MD, gx, gb_part, M, D, rows_per_prog,
                BLOCK_M=_BWD_BLOCK_M, BLOCK_D=block_d, HAS_BIAS=has_bias, ACT=ctx.act, num_warps=_NUM_WARPS)
        gb = None
        if has_bias and ctx.needs_input_grad[1]:
            gb = (gb_part.sum(0) if gx.numel() else torch.zeros(D, device=xc.device)).to(bc.dtype)
        return gx.reshape(xc.shape), gb, None


def bias_act(x, bias, kind):
    """act(x + bias) with act "gelu" (exact), "gelu-tanh" or "relu"; x (..., D), bias (D,) or None.

    The output is in x's dtype (the bias is added in fp32); grads go to x and bias.
    """
    if kind not in ACT_KINDS:
        raise ValueError(f"bias_act kind must be one of {ACT_KINDS}, got {kind!r}")
    if bias is not None and (bias.dim() != 1 or bias.shape[0] != x.shape[-1]):
        raise ValueError(f"bias must be ({x.shape[-1]},), got {tuple(bias.shape)}")
    return _BiasAct.apply(x, bias, _act_code(kind))
