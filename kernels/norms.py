"""RMSNorm and LayerNorm (optionally fused with the residual add), and SoLU + LayerNorm.

Public ops, each with a plain-torch reference `<op>_ref` of the same signature:

- ``rms_norm(x, weight, eps, residual=None)``
- ``layer_norm(x, weight, bias, eps, residual=None)`` (``bias`` may be None)

  Both normalise the last dimension of ``x`` (any leading shape). With ``residual`` the
  kernel first forms ``s = x + residual`` (rounded to the input dtype, as eager addition
  would) and returns ``(norm(s), s)``: the fused residual add + norm of a pre-norm block.
  Without it they return ``(norm(x), None)``. The output has the input's dtype; the
  statistics and the affine map are computed in fp32. Gradients flow to ``x``,
  ``residual``, ``weight`` and ``bias`` through Triton backward kernels: ``dx`` per row, and
  ``dweight``/``dbias`` as per-program partial sums (a persistent grid of a few programs per
  SM, each looping over rows) that are reduced afterwards in torch. The gradient of
  ``residual`` equals that of ``x``: the gradient of the sum, plus any upstream gradient on
  the returned sum.

- ``solu_layer_norm(x, weight, bias, eps)``: ``LayerNorm(x * softmax(x, -1))`` in one
  forward kernel. Its backward is not a kernel: it recomputes the reference under autograd.

On a CPU tensor without ``TRITON_INTERPRET=1`` (or without Triton installed) the ops run
their references; under the interpreter (tests/conftest.py on CPU-only machines) they run the
kernels on numpy, where only fp32/fp16 give meaningful results.
"""

from __future__ import annotations

import functools
import os

import torch

__all__ = [
    "rms_norm", "rms_norm_ref",
    "layer_norm", "layer_norm_ref",
    "solu_layer_norm", "solu_layer_norm_ref",
]

_MAX_BLOCK = 65536  # one row lives in registers; wider rows would need a two-pass kernel


# --------------------------------------------------------------------------- references

def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """fp32 for low-precision inputs; fp64 stays fp64 (so tests can build fp64 references)."""
    return torch.promote_types(dtype, torch.float32)


def rms_norm_ref(x, weight, eps, residual=None):
    """Plain-torch RMSNorm: ``s * rsqrt(mean(s^2) + eps) * weight`` with ``s = x (+ residual)``."""
    s = x if residual is None else x + residual
    ct = _compute_dtype(s.dtype)
    sf = s.to(ct)
    y = sf * torch.rsqrt(sf.pow(2).mean(-1, keepdim=True) + eps) * weight.to(ct)
    return y.to(s.dtype), (None if residual is None else s)


def layer_norm_ref(x, weight, bias, eps, residual=None):
    """Plain-torch LayerNorm over the last dim (biased variance), ``bias`` optional."""
    s = x if residual is None else x + residual
    ct = _compute_dtype(s.dtype)
    sf = s.to(ct)
    mean = sf.mean(-1, keepdim=True)
    xc = sf - mean
    y = xc * torch.rsqrt(xc.pow(2).mean(-1, keepdim=True) + eps) * weight.to(ct)
    if bias is not None:
        y = y + bias.to(ct)
    return y.to(s.dtype), (None if residual is None else s)


def solu_layer_norm_ref(x, weight, bias, eps):
    """Plain-torch SoLU (``x * softmax(x, -1)``) followed by LayerNorm, math in fp32."""
    ct = _compute_dtype(x.dtype)
    xf = x.to(ct)
    h = xf * torch.softmax(xf, dim=-1)
    mean = h.mean(-1, keepdim=True)
    hc = h - mean
    y = hc * torch.rsqrt(hc.pow(2).mean(-1, keepdim=True) + eps) * weight.to(ct)
    if bias is not None:
        y = y + bias.to(ct)
    return y.to(x.dtype)


# --------------------------------------------------------------------------- kernels

@functools.lru_cache(maxsize=None)
def _build():
    # the jit helper must be a module global: kernels resolve the names they call there
    global _normalize_store
    import triton
    import triton.language as tl

    @triton.jit
    def _normalize_store(xc, N, eps, W, B, y_row, cols, mask, HAS_BIAS: tl.constexpr):
        # y = xc * rstd * w (+ b), rstd = 1 / sqrt(mean(xc^2) + eps), stored at y_row + cols
        # (xc is 0 at masked columns); returns rstd
        var = tl.sum(xc * xc, axis=0) / N
        rstd = 1.0 / tl.sqrt_rn(var + eps)
        w = tl.load(W + cols, mask=mask, other=0.0).to(tl.float32)
        y = xc * rstd * w
        if HAS_BIAS:
            b = tl.load(B + cols, mask=mask, other=0.0).to(tl.float32)
            y = y + b
        tl.store(y_row + cols, y.to(y_row.dtype.element_ty), mask=mask)
        return rstd

    @triton.jit
    def norm_fwd(
        X, R, W, B, Y, S, MEAN, RSTD,
        stride_x, stride_r, stride_y, stride_s, N, eps,
        IS_RMS: tl.constexpr, HAS_RES: tl.constexpr, HAS_BIAS: tl.constexpr,
        BLOCK_N: tl.constexpr,
    ):
        # One row per program.
        row = tl.cast(tl.program_id(0), tl.int64)
        cols = tl.arange(0, BLOCK_N)
        mask = cols < N
        x = tl.load(X + row * stride_x + cols, mask=mask, other=0.0).to(tl.float32)
        if HAS_RES:
            r = tl.load(R + row * stride_r + cols, mask=mask, other=0.0).to(tl.float32)
            s_lo = (x + r).to(S.dtype.element_ty)  # the sum as eager computes it
            tl.store(S + row * stride_s + cols, s_lo, mask=mask)
            x = s_lo.to(tl.float32)
        if IS_RMS:
            xc = x
        else:
            mean = tl.sum(x, axis=0) / N
            xc = tl.where(mask, x - mean, 0.0)
            tl.store(MEAN + row, mean)
        rstd = _normalize_store(xc, N, eps, W, B, Y + row * stride_y, cols, mask, HAS_BIAS)
        tl.store(RSTD + row, rstd)

    @triton.jit
    def norm_bwd(
        DY, DS, S, W, MEAN, RSTD, DX, DW_PART, DB_PART,
        stride_dy, stride_ds, stride_s, stride_dx, n_rows, N,
        IS_RMS: tl.constexpr, HAS_DS: tl.constexpr, COMPUTE_DW: tl.constexpr,
        COMPUTE_DB: tl.constexpr, BLOCK_N: tl.constexpr,
    ):
        # Persistent grid: program `pid` handles rows pid, pid + nprog, ... and keeps its
        # share of dweight / dbias in registers, written once to row `pid` of the partials.
        pid = tl.program_id(0)
        nprog = tl.num_programs(0)
        cols = tl.arange(0, BLOCK_N)
        mask = cols < N
        w = tl.load(W + cols, mask=mask, other=0.0).to(tl.float32)
        dw_acc = tl.zeros([BLOCK_N], dtype=tl.float32)
        db_acc = tl.zeros([BLOCK_N], dtype=tl.float32)
        for row in range(pid, n_rows, nprog):
            r64 = tl.cast(row, tl.int64)
            s = tl.load(S + r64 * stride_s + cols, mask=mask, other=0.0).to(tl.float32)
            dy = tl.load(DY + r64 * stride_dy + cols, mask=mask, other=0.0).to(tl.float32)
            rstd = tl.load(RSTD + r64).to(tl.float32)
            if IS_RMS:
                xhat = s * rstd
            else:
                mean = tl.load(MEAN + r64).to(tl.float32)
                xhat = tl.where(mask, (s - mean) * rstd, 0.0)
            wdy = w * dy
            c1 = tl.sum(xhat * wdy, axis=0) / N
            if IS_RMS:
                dx = (wdy - xhat * c1) * rstd
            else:
                c2 = tl.sum(wdy, axis=0) / N
                dx = (wdy - (xhat * c1 + c2)) * rstd
            if HAS_DS:
                ds = tl.load(DS + r64 * stride_ds + cols, mask=mask, other=0.0).to(tl.float32)
                dx = dx + ds
            tl.store(DX + r64 * stride_dx + cols, dx.to(DX.dtype.element_ty), mask=mask)
            if COMPUTE_DW:
                dw_acc += dy * xhat
            if COMPUTE_DB:
                db_acc += dy
        if COMPUTE_DW:
            tl.store(DW_PART + pid * N + cols, dw_acc, mask=mask)
        if COMPUTE_DB:
            tl.store(DB_PART + pid * N + cols, db_acc, mask=mask)

    @triton.jit
    def solu_ln_fwd(
        X, W, B, Y, stride_x, stride_y, N, eps,
        HAS_BIAS: tl.constexpr, BLOCK_N: tl.constexpr,
    ):
        row = tl.cast(tl.program_id(0), tl.int64)
        cols = tl.arange(0, BLOCK_N)
        mask = cols < N
        x = tl.load(X + row * stride_x + cols, mask=mask, other=0.0).to(tl.float32)
        # SoLU: x * softmax(x)
        m = tl.max(tl.where(mask, x, float("-inf")), axis=0)
        e = tl.where(mask, tl.exp(x - m), 0.0)
        h = x * (e / tl.sum(e, axis=0))
        # LayerNorm of h (masked columns of h are 0)
        mean = tl.sum(h, axis=0) / N
        hc = tl.where(mask, h - mean, 0.0)
        _normalize_store(hc, N, eps, W, B, Y + row * stride_y, cols, mask, HAS_BIAS)

    return triton, norm_fwd, norm_bwd, solu_ln_fwd


# --------------------------------------------------------------------------- launch helpers

def _use_kernel(x: torch.Tensor) -> bool:
    """Kernels on CUDA, or on CPU under the Triton interpreter; the references otherwise."""
    if x.is_cuda:
        return True
    if os.environ.get("TRITON_INTERPRET") == "1":
        try:
            import triton  # noqa: F401
        except ImportError:
            return False
        return True
    return False


def _settings(n: int) -> tuple[int, int]:
    """Block width (one row per block) and num_warps, pinned (no autotune)."""
    triton = _build()[0]
    block = triton.next_power_of_2(n)
    if block > _MAX_BLOCK:
        raise ValueError(f"norm kernels hold one row in registers; last dim {n} > {_MAX_BLOCK}")
    if block >= 32768:
        warps = 32
    elif block >= 8192:
        warps = 16
    elif block >= 2048:
        warps = 8
    else:
        warps = 4
    return block, warps


def _bwd_programs(n_rows: int, device: torch.device) -> int:
    if device.type == "cuda":
        sms = torch.cuda.get_device_properties(device).multi_processor_count
        return max(1, min(n_rows, 2 * sms))
    return max(1, min(n_rows, 8))  # interpreter: few programs, each looping over rows


def _check(x, weight, bias, residual):
    n = x.shape[-1]
    if weight.shape != (n,):
        raise ValueError(f"weight shape {tuple(weight.shape)} != ({n},)")
    if bias is not None and bias.shape != (n,):
        raise ValueError(f"bias shape {tuple(bias.shape)} != ({n},)")
    if residual is not None and (residual.shape != x.shape or residual.dtype != x.dtype):
        raise ValueError("residual must have the shape and dtype of x")


def _forward_operands(x, weight, bias):
    """x as contiguous (rows, n), contiguous weight and bias (or None), and an empty output like x."""
    x2 = x.reshape(-1, x.shape[-1]).contiguous()
    bias_c = bias.contiguous() if bias is not None else None
    return x2, weight.contiguous(), bias_c, torch.empty(x.shape, dtype=x.dtype, device=x.device)


class _NormFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, residual, weight, bias, eps, is_rms):
        _, norm_fwd, _, _ = _build()
        shape, n = x.shape, x.shape[-1]
        x2, weight_c, bias_c, y = _forward_operands(x, weight, bias)
        rows = x2.shape[0]
        rstd = torch.empty(rows, dtype=torch.float32, device=x.device)
        mean = rstd if is_rms else torch.empty(rows, dtype=torch.float32, device=x.device)
        if residual is not None:
            r2 = residual.reshape(-1, n).contiguous()
            s = torch.empty(shape, dtype=x.dtype, device=x.device)
            s2 = s.view(-1, n)
        else:
            r2, s, s2 = x2, None, None
        block, warps = _settings(n)
        if rows > 0:
            norm_fwd[(rows,)](
                x2, r2, weight_c, bias_c if bias_c is not None else weight_c,
                y.view(-1, n), s2 if s2 is not None else y.view(-1, n), mean, rstd,
                x2.stride(0), r2.stride(0), n, n, n, eps,
                IS_RMS=is_rms, HAS_RES=residual is not None, HAS_BIAS=bias is not None,
                BLOCK_N=block, num_warps=warps,
            )
        ctx.set_materialize_grads(False)
        ctx.is_rms = is_rms
        ctx.has_res = residual is not None
        ctx.has_bias = bias is not None
        ctx.shape = shape
        # Save the tensor the norm was taken of: the returned sum, or the input itself.
        ctx.save_for_backward(s if s is not None else x, weight_c, mean, rstd)
        if residual is None:
            return y
        return y, s

    @staticmethod
    def backward(ctx, *grads):
        _, _, norm_bwd, _ = _build()
        dy = grads[0]
        ds = grads[1] if ctx.has_res else None
        src, weight, mean, rstd = ctx.saved_tensors
        n = src.shape[-1]
        s2 = src.reshape(-1, n).contiguous()
        rows = s2.shape[0]
        if dy is None:
            dy2 = torch.zeros_like(s2)
        else:
            dy2 = dy.reshape(-1, n).contiguous()
        ds2 = ds.reshape(-1, n).contiguous() if ds is not None else None
        dx = torch.empty(ctx.shape, dtype=s2.dtype, device=s2.device)
        need_dw = ctx.needs_input_grad[2]
        need_db = ctx.has_bias and ctx.needs_input_grad[3]
        nprog = _bwd_programs(rows, s2.device)
        dw_part = torch.empty((nprog, n), dtype=torch.float32, device=s2.device) if need_dw else rstd
        db_part = torch.empty((nprog, n), dtype=torch.float32, device=s2.device) if need_db else rstd
        block, warps = _settings(n)
        if rows > 0:
            norm_bwd[(nprog,)](
                dy2, ds2 if ds2 is not None else dy2, s2, weight, mean, rstd,
                dx.view(-1, n), dw_part, db_part,
                dy2.stride(0), n, s2.stride(0), n, rows, n,
                IS_RMS=ctx.is_rms, HAS_DS=ds2 is not None, COMPUTE_DW=need_dw,
                COMPUTE_DB=need_db, BLOCK_N=block, num_warps=warps,
            )
        elif need_dw or need_db:
            dw_part = dw_part.zero_() if need_dw else dw_part
            db_part = db_part.zero_() if need_db else db_part
        dw = dw_part.sum(0).to(weight.dtype) if need_dw else None
        db = db_part.sum(0).to(weight.dtype) if need_db else None
        dres = dx if ctx.has_res else None
        return dx, dres, dw, db, None, None


class _SoluLayerNormFn(torch.autograd.Function):
    """Forward: one fused kernel. Backward: autograd through `solu_layer_norm_ref`
    (recomputed in fp32 from the saved inputs), not a kernel."""

    @staticmethod
    def forward(ctx, x, weight, bias, eps):
        _, _, _, solu_ln_fwd = _build()
        n = x.shape[-1]
        x2, weight_c, bias_c, y = _forward_operands(x, weight, bias)
        rows = x2.shape[0]
        block, warps = _settings(n)
        if rows > 0:
            solu_ln_fwd[(rows,)](
                x2, weight_c, bias_c if bias_c is not None else weight_c, y.view(-1, n),
                x2.stride(0), n, n, eps,
                HAS_BIAS=bias is not None, BLOCK_N=block, num_warps=warps,
            )
        ctx.eps = eps
        ctx.save_for_backward(x, weight, bias)
        return y

    @staticmethod
    def backward(ctx, dy):
        x, weight, bias = ctx.saved_tensors
        inputs = [x.detach().requires_grad_(ctx.needs_input_grad[0]),
                  weight.detach().requires_grad_(ctx.needs_input_grad[1])]
        if bias is not None:
            inputs.append(bias.detach().requires_grad_(ctx.needs_input_grad[2]))
        with torch.enable_grad():
            y = solu_layer_norm_ref(inputs[0], inputs[1], inputs[2] if bias is not None else None, ctx.eps)
            wanted = [t for t in inputs if t.requires_grad]
            got = iter(torch.autograd.grad(y, wanted, dy)) if wanted else iter(())
        grads = [next(got) if t.requires_grad else None for t in inputs]
        if bias is None:
            grads.append(None)
        return grads[0], grads[1], grads[2], None


# --------------------------------------------------------------------------- public ops

def rms_norm(x, weight, eps, residual=None):
    """RMSNorm of ``x`` (or of ``s = x + residual``, fused). Returns ``(y, s or None)``."""
    _check(x, weight, None, residual)
    if not _use_kernel(x):
        return rms_norm_ref(x, weight, eps, residual)
    out = _NormFn.apply(x, residual, weight, None, float(eps), True)
    return (out, None) if residual is None else out


def layer_norm(x, weight, bias, eps, residual=None):
    """LayerNorm of ``x`` (or of ``s = x + residual``, fused). Returns ``(y, s or None)``."""
    _check(x, weight, bias, residual)
    if not _use_kernel(x):
        return layer_norm_ref(x, weight, bias, eps, residual)
    out = _NormFn.apply(x, residual, weight, bias, float(eps), False)
    return (out, None) if residual is None else out


def solu_layer_norm(x, weight, bias, eps):
    """``LayerNorm(x * softmax(x, -1))`` with ``bias`` optional.

    The forward is one fused Triton kernel (softmax, product and LayerNorm of a row in
    registers). The backward is NOT a kernel: it falls back to autograd through
    `solu_layer_norm_ref`, recomputed from the saved inputs."""
    _check(x, weight, bias, None)
    if not _use_kernel(x):
        return solu_layer_norm_ref(x, weight, bias, eps)
    return _SoluLayerNormFn.apply(x, weight, bias, float(eps))
