"""Mixture of experts: routing, and the expert MLPs as two grouped GEMMs in Triton.

Shapes: N tokens (B*T flattened), D model width, F expert hidden width, E experts, K choices
per token (top_k), A kept assignments (token, expert) after capacity dropping, T tiles.

The semantics are those of the reference `MoE` (kernels/reference/):
softmax router in fp32, top-k, weights renormalised over the chosen experts for
"softmax-top-k" with k > 1 ("switch" keeps the raw probability), and in training each expert
keeps at most `capacity` assignments, first choices before second choices, tokens in arrival
order. At inference nothing is dropped, unless an inference capacity factor is given.

Pipeline of `moe_forward`:
1. `route` (plain torch; sort, bincount, cumsum): assignments sorted by expert, with
   dropped ones removed, and per-expert offsets into the sorted order.
2. A tile table (plain torch, no host sync): each expert's segment cut into row blocks of
   BLOCK_M; tile t covers sorted rows [r0, r1) of one expert. The grid is
   (tiles x column blocks); only the last tile of a segment is partial, so nothing is padded
   in memory, and at most E surplus tiles exit at once.
3. `_moe_up_kernel`: h_AF = act(x[tokens] @ w_in[e]^T + b_in[e]), rows gathered from x by
   token id, the activation (and the GLU product gate * up) fused into the epilogue.
4. `_moe_down_kernel`: y_AD = (h_AF @ w_out[e]^T + b_out[e]) * combine weight, fp32 epilogue.
5. The combine (torch): each token gathers its K weighted rows of y_AD and sums them, in
   fp32 for bf16 (torch's sum), rounded once. Deterministic: no scatter-add atomics.

Precision: GEMM operands go to `tl.dot` in their storage dtype (bf16/fp16 use the tensor cores
with fp32 accumulation; fp32 uses input_precision="ieee"); everything else (bias, activation,
combine weight) is cast to fp32 right after its load. h_AF is stored in x's dtype, as the
eager expert keeps it.
"""

from __future__ import annotations

import functools
import math
import os
from dataclasses import dataclass

import torch
import torch.nn.functional as F

ACTIVATIONS = ("relu", "gelu", "gelu-tanh", "swiglu", "geglu", "geglu-tanh")
GATED = ("swiglu", "geglu", "geglu-tanh")
# the Triton epilogue each activation uses (GLUs: the gate's activation)
_EPILOGUE = {"relu": "relu", "gelu": "gelu", "gelu-tanh": "gelu_tanh", "swiglu": "silu", "geglu": "gelu",
             "geglu-tanh": "gelu_tanh"}
ROUTERS = ("softmax-top-k", "switch")


# --------------------------------------------------------------------------------------------
# Routing (torch)
# --------------------------------------------------------------------------------------------


def _choose(router_logits_NE, top_k, router_kind):
    if router_kind not in ROUTERS:
        raise ValueError(f"router_kind must be one of {ROUTERS}, not {router_kind!r}")
    # softmax in at least fp32 (float64 stays float64, as in prelude)
    logits = router_logits_NE if router_logits_NE.dtype == torch.float64 else router_logits_NE.float()
    probs_NE = torch.softmax(logits, dim=-1)
    weight_NK, expert_NK = probs_NE.topk(top_k, dim=-1)
    if router_kind == "softmax-top-k" and top_k > 1:
        weight_NK = weight_NK / weight_NK.sum(-1, keepdim=True)
    return probs_NE, weight_NK, expert_NK


def _dispatch(weight_NK, expert_NK, n_experts, capacity):
    N, K = expert_NK.shape
    dev = expert_NK.device
    flat_expert = expert_NK.reshape(-1)  # index n*K + r
    rank = torch.arange(K, device=dev).repeat(N)
    token = torch.arange(N, device=dev).repeat_interleave(K)
    # keys are unique: expert, then choice rank (first choices claim capacity first), then token
    order = torch.argsort(flat_expert * (K * N) + rank * N + token)
    expert_sorted = flat_expert[order]
    counts_E = torch.bincount(flat_expert, minlength=n_experts)
    if capacity is not None and capacity < N:  # an expert never gets more than N assignments
        starts_E = torch.cumsum(counts_E, 0) - counts_E
        keep = torch.arange(N * K, device=dev) - starts_E[expert_sorted] < capacity
        order, expert_sorted = order[keep], expert_sorted[keep]  # boolean index: one host sync
        counts_E = counts_E.clamp(max=capacity)
    offsets_E1 = torch.zeros(n_experts + 1, dtype=torch.int64, device=dev)
    offsets_E1[1:] = torch.cumsum(counts_E, 0)
    return expert_sorted, token[order], weight_NK.reshape(-1)[order], offsets_E1, order


def route(router_logits_NE, top_k, router_kind, capacity=None):
    """Sort the (token, expert) assignments by expert, dropping those over capacity.

    Returns (expert_A, token_A, weight_A, offsets_E1): expert id, token id and combine weight
    (fp32) of each kept assignment, sorted by expert, then choice rank, then token; expert e's
    segment is [offsets_E1[e], offsets_E1[e+1]). capacity=None keeps everything. Plain torch
    (argsort, bincount, cumsum); on CUDA, bincount syncs with the host, and so does the
    compaction when something is dropped.
    """
    _, weight_NK, expert_NK = _choose(router_logits_NE, top_k, router_kind)
    return _dispatch(weight_NK, expert_NK, router_logits_NE.shape[-1], capacity)[:4]


def _aux_loss(probs_NE, first_N, n_experts):
    # experts' share of first choices times their mean router probability
    share_E = torch.bincount(first_N, minlength=n_experts).float() / first_N.shape[0]
    return n_experts * (share_E * probs_NE.mean(0)).sum()


def _capacity(capacity_factor, n_tokens, top_k, n_experts, training, inference_capacity_factor=None):
    factor = capacity_factor if training else inference_capacity_factor
    return None if factor is None else max(1, math.ceil(factor * n_tokens * top_k / n_experts))


# --------------------------------------------------------------------------------------------
# Triton kernels
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MoEConfig:
    """Block sizes. up/down: (block_n, block_k, num_warps, num_stages) of each GEMM."""

    block_m: int = 128
    up: tuple = (128, 64, 8, 4)
    down: tuple = (128, 64, 8, 4)
    group_m: int = 8


def _interpreting():
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def default_config(dtype, n_assign, n_experts, gated):
    if _interpreting():  # one pinned config: small blocks keep the interpreter quick
        return MoEConfig(block_m=16, up=(16, 16, 1, 1), down=(16, 16, 1, 1), group_m=4)
    # block_m follows the mean segment length, so decode-sized batches do not waste tiles
    per_expert = max(1, n_assign // max(1, n_experts))
    block_m = min(128, max(16, 1 << (per_expert - 1).bit_length()))
    if dtype == torch.float32:
        return MoEConfig(block_m=min(block_m, 64), up=(64, 32, 4, 3), down=(64, 32, 4, 3), group_m=8)
    # picked on an H100 (triton 3.6) from a small sweep at N 4096, E 8 and E 64, top-2 swiglu:
    # gated, two accumulators (gate, up) of block_m x 128, i.e. a block_m x 256 tile of w_in
    up = (128, 64, 8, 3) if gated else (256, 64, 8, 3)
    return MoEConfig(block_m=block_m, up=up, down=(256, 64, 8, 3), group_m=8)


@functools.cache
def _build():
    # module globals, not locals: @triton.jit resolves the names a kernel uses in its globals
    global triton, tl, _sigmoid_mul, _activate, _tile, _tile_block, _load_k_cols, _load_k_rows, _moe_up_kernel, _moe_down_kernel
    import triton
    import triton.language as tl

    @triton.jit
    def _sigmoid_mul(x, z):
        # x * sigmoid(z), with exp only (no libdevice); exp(-z) = inf gives -0 or 0, not nan
        return x / (1.0 + tl.exp(-z))

    @triton.jit
    def _activate(x, ACT: tl.constexpr):
        if ACT == "relu":
            return tl.maximum(x, 0.0)
        elif ACT == "silu":
            return _sigmoid_mul(x, x)
        elif ACT == "gelu":  # exact: 0.5 x (1 + erf(x / sqrt 2))
            return 0.5 * x * (1.0 + tl.erf(x * 0.7071067811865476))
        else:  # tanh-GELU: 0.5 x (1 + tanh(u)) = x * sigmoid(2u), u = sqrt(2/pi) (x + 0.044715 x^3)
            return _sigmoid_mul(x, 1.5957691216057308 * (x + 0.044715 * x * x * x))

    @triton.jit
    def _tile(pid, n_tiles, n_col, GROUP_M: tl.constexpr):
        # GROUP_M consecutive tiles walk one weight column block together, for L2 reuse
        width = GROUP_M * n_col
        first = (pid // width) * GROUP_M
        size = tl.minimum(n_tiles - first, GROUP_M)
        return first + (pid % width) % size, (pid % width) // size

    @triton.jit
    def _tile_block(tile_e_ptr, tile_r0_ptr, tile_r1_ptr, n_tiles, N,
                    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, GROUP_M: tl.constexpr):
        # this program's block of the output: expert e (-1 for a surplus tile), sorted rows from
        # r0 (row_ok: before the tile's r1), columns (col_ok: below N; cols_ld: wrapped into range)
        tile, pid_n = _tile(tl.program_id(0), n_tiles, tl.cdiv(N, BLOCK_N), GROUP_M)
        e = tl.load(tile_e_ptr + tile)
        r0 = tl.load(tile_r0_ptr + tile)
        rows = r0 + tl.arange(0, BLOCK_M)
        row_ok = rows < tl.load(tile_r1_ptr + tile)
        cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        return e, r0, rows, row_ok, cols, cols < N, cols % N

    @triton.jit
    def _load_k_cols(ptrs, k0, ks, K, EVEN_K: tl.constexpr):
        # a (rows, BLOCK_K) operand tile; past K reads zeros
        if EVEN_K:
            return tl.load(ptrs)
        else:
            return tl.load(ptrs, mask=(k0 + ks < K)[None, :], other=0.0)

    @triton.jit
    def _load_k_rows(ptrs, k0, ks, K, EVEN_K: tl.constexpr):
        # a (BLOCK_K, cols) weight tile; past K reads zeros
        if EVEN_K:
            return tl.load(ptrs)
        else:
            return tl.load(ptrs, mask=(k0 + ks < K)[:, None], other=0.0)

    @triton.jit
    def _moe_up_kernel(
        x_ptr, tok_ptr, tile_e_ptr, tile_r0_ptr, tile_r1_ptr, w_ptr, b_ptr, h_ptr,
        n_tiles, F, D,
        stride_xn, stride_xd, stride_we, stride_wf, stride_wd, stride_be, stride_ha, stride_hf,
        ACT: tl.constexpr, GATED: tl.constexpr, HAS_BIAS: tl.constexpr, EVEN_K: tl.constexpr, PRECISION: tl.constexpr,
        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
    ):
        e, _, rows, row_ok, cols, col_ok, cols_ld = _tile_block(
            tile_e_ptr, tile_r0_ptr, tile_r1_ptr, n_tiles, F, BLOCK_M, BLOCK_N, GROUP_M)
        if e < 0:  # surplus tile
            return
        tok = tl.load(tok_ptr + rows, mask=row_ok, other=0).to(tl.int64)  # rows past r1 read token 0
        # cols_ld is in bounds, so the weight loads need no column mask
        ks = tl.arange(0, BLOCK_K)
        x_ptrs = x_ptr + tok[:, None] * stride_xn + ks[None, :] * stride_xd
        w_base = w_ptr + e.to(tl.int64) * stride_we
        wg_ptrs = w_base + cols_ld[None, :] * stride_wf + ks[:, None] * stride_wd  # (BLOCK_K, BLOCK_N)
        wu_ptrs = wg_ptrs + F * stride_wf  # the "up" half of a GLU's w_in
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        acc_up = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for k0 in range(0, D, BLOCK_K):
            a = _load_k_cols(x_ptrs, k0, ks, D, EVEN_K)
            acc = tl.dot(a, _load_k_rows(wg_ptrs, k0, ks, D, EVEN_K), acc, input_precision=PRECISION)
            if GATED:
                acc_up = tl.dot(a, _load_k_rows(wu_ptrs, k0, ks, D, EVEN_K), acc_up, input_precision=PRECISION)
                wu_ptrs += BLOCK_K * stride_wd
            x_ptrs += BLOCK_K * stride_xd
            wg_ptrs += BLOCK_K * stride_wd
        if HAS_BIAS:
            b_ptrs = b_ptr + e.to(tl.int64) * stride_be + cols_ld
            acc += tl.load(b_ptrs).to(tl.float32)[None, :]
            if GATED:
                acc_up += tl.load(b_ptrs + F).to(tl.float32)[None, :]
        h = _activate(acc, ACT)
        if GATED:
            h = h * acc_up
        h_ptrs = h_ptr + rows.to(tl.int64)[:, None] * stride_ha + cols[None, :] * stride_hf
        tl.store(h_ptrs, h.to(h_ptr.dtype.element_ty), mask=row_ok[:, None] & col_ok[None, :])

    @triton.jit
    def _moe_down_kernel(
        h_ptr, wt_ptr, tile_e_ptr, tile_r0_ptr, tile_r1_ptr, w_ptr, b_ptr, y_ptr,
        n_tiles, D, F,
        stride_ha, stride_hf, stride_we, stride_wd, stride_wf, stride_be, stride_ya, stride_yd,
        HAS_BIAS: tl.constexpr, HAS_WEIGHT: tl.constexpr, EVEN_K: tl.constexpr, PRECISION: tl.constexpr,
        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
    ):
        e, r0, rows, row_ok, cols, col_ok, cols_ld = _tile_block(
            tile_e_ptr, tile_r0_ptr, tile_r1_ptr, n_tiles, D, BLOCK_M, BLOCK_N, GROUP_M)
        if e < 0:
            return
        rows_ld = tl.where(row_ok, rows, r0).to(tl.int64)  # rows past r1 re-read row r0
        ks = tl.arange(0, BLOCK_K)
        h_ptrs = h_ptr + rows_ld[:, None] * stride_ha + ks[None, :] * stride_hf
        w_ptrs = w_ptr + e.to(tl.int64) * stride_we + cols_ld[None, :] * stride_wd + ks[:, None] * stride_wf
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for k0 in range(0, F, BLOCK_K):
            acc = tl.dot(_load_k_cols(h_ptrs, k0, ks, F, EVEN_K), _load_k_rows(w_ptrs, k0, ks, F, EVEN_K), acc,
                         input_precision=PRECISION)
            h_ptrs += BLOCK_K * stride_hf
            w_ptrs += BLOCK_K * stride_wf
        if HAS_BIAS:
            acc += tl.load(b_ptr + e.to(tl.int64) * stride_be + cols_ld).to(tl.float32)[None, :]
        if HAS_WEIGHT:
            acc = acc * tl.load(wt_ptr + rows_ld).to(tl.float32)[:, None]
        y_ptrs = y_ptr + rows.to(tl.int64)[:, None] * stride_ya + cols[None, :] * stride_yd
        tl.store(y_ptrs, acc.to(y_ptr.dtype.element_ty), mask=row_ok[:, None] & col_ok[None, :])

    return _moe_up_kernel, _moe_down_kernel


def _tiles(offsets_E1, n_assign, block_m):
    """Tile table: expert id (-1 for surplus tiles) and sorted-row range [r0, r1) per tile."""
    E = offsets_E1.shape[0] - 1
    counts_E = offsets_E1[1:] - offsets_E1[:-1]
    blocks_E = (counts_E + block_m - 1) // block_m
    block_end_E = torch.cumsum(blocks_E, 0)
    # sum_e ceil(c_e / M) <= (A + E (M - 1)) / M, and every tile holds at least one row
    n_tiles = max(1, min(n_assign, (n_assign + E * (block_m - 1)) // block_m))
    t = torch.arange(n_tiles, device=offsets_E1.device)
    e = torch.searchsorted(block_end_E, t, right=True)  # experts with no rows are skipped
    valid = e < E
    e_c = e.clamp(max=E - 1)
    r0 = offsets_E1[e_c] + (t - (block_end_E - blocks_E)[e_c]) * block_m
    r1 = offsets_E1[e_c + 1]
    zero = torch.zeros_like(r0)
    tile_e = torch.where(valid, e_c, -1).to(torch.int32)
    return tile_e, torch.where(valid, r0, zero).to(torch.int32), torch.where(valid, r1, zero).to(torch.int32), n_tiles


def _check_mlp_args(x_ND, w_in, b_in, w_out, b_out, activation):
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {ACTIVATIONS}, not {activation!r}")
    E, F2, D = w_in.shape
    Fh = F2 // 2 if activation in GATED else F2
    if x_ND.shape[-1] != D or tuple(w_out.shape) != (E, D, Fh) or (activation in GATED and F2 % 2):
        raise ValueError(f"shapes do not fit: x {tuple(x_ND.shape)}, w_in {tuple(w_in.shape)}, w_out {tuple(w_out.shape)}, {activation}")
    if b_in is not None and tuple(b_in.shape) != (E, F2) or b_out is not None and tuple(b_out.shape) != (E, D):
        raise ValueError("b_in must be (E, F or 2F) and b_out (E, D)")
    return E, Fh, D


def grouped_expert_mlp(x_ND, sorted_tokens, expert_offsets, w_in, b_in, w_out, b_out, activation, sorted_weights=None, config=None):
    """Expert MLP of every sorted assignment: y_AD[a] = expert_e(x_ND[sorted_tokens[a]]),
    times sorted_weights[a] when given, for a in expert e's segment of expert_offsets.

    w_in (E, F or 2F, D), gate rows first for swiglu/geglu; w_out (E, D, F); b_in (E, F or 2F)
    and b_out (E, D) or None. Returns y_AD in x's dtype.
    """
    E, Fh, D = _check_mlp_args(x_ND, w_in, b_in, w_out, b_out, activation)
    if x_ND.device.type != "cuda" and not _interpreting():
        raise RuntimeError("grouped_expert_mlp runs Triton: CUDA tensors, or TRITON_INTERPRET=1 on CPU; use grouped_expert_mlp_ref")
    A = sorted_tokens.shape[0]
    gated = activation in GATED
    y_AD = torch.empty(A, D, device=x_ND.device, dtype=x_ND.dtype)
    if A == 0:
        return y_AD
    cfg = config or default_config(x_ND.dtype, A, E, gated)
    up_kernel, down_kernel = _build()
    tile_e, tile_r0, tile_r1, n_tiles = _tiles(expert_offsets, A, cfg.block_m)
    precision = "ieee" if x_ND.dtype == torch.float32 else None  # bf16/fp16: the default
    h_AF = torch.empty(A, Fh, device=x_ND.device, dtype=x_ND.dtype)
    bn, bk, warps, stages = cfg.up
    up_kernel[(n_tiles * _cdiv(Fh, bn),)](
        x_ND, sorted_tokens, tile_e, tile_r0, tile_r1, w_in, b_in if b_in is not None else w_in, h_AF,
        n_tiles, Fh, D,
        x_ND.stride(0), x_ND.stride(1), w_in.stride(0), w_in.stride(1), w_in.stride(2),
        b_in.stride(0) if b_in is not None else 0, h_AF.stride(0), h_AF.stride(1),
        ACT=_EPILOGUE[activation],
        GATED=gated, HAS_BIAS=b_in is not None, EVEN_K=D % bk == 0, PRECISION=precision,
        BLOCK_M=cfg.block_m, BLOCK_N=bn, BLOCK_K=bk, GROUP_M=cfg.group_m, num_warps=warps, num_stages=stages,
    )
    bn, bk, warps, stages = cfg.down
    down_kernel[(n_tiles * _cdiv(D, bn),)](
        h_AF, sorted_weights if sorted_weights is not None else h_AF, tile_e, tile_r0, tile_r1,
        w_out, b_out if b_out is not None else w_out, y_AD,
        n_tiles, D, Fh,
        h_AF.stride(0), h_AF.stride(1), w_out.stride(0), w_out.stride(1), w_out.stride(2),
        b_out.stride(0) if b_out is not None else 0, y_AD.stride(0), y_AD.stride(1),
        HAS_BIAS=b_out is not None, HAS_WEIGHT=sorted_weights is not None, EVEN_K=Fh % bk == 0,
        PRECISION=precision, BLOCK_M=cfg.block_m, BLOCK_N=bn, BLOCK_K=bk, GROUP_M=cfg.group_m,
        num_warps=warps, num_stages=stages,
    )
    return y_AD


def _cdiv(a, b):
    return -(-a // b)


def _act(h, activation):
    if activation == "swiglu":
        return F.silu(h)
    if activation == "relu":
        return F.relu(h)
    return F.gelu(h, approximate="tanh" if activation.endswith("-tanh") else "none")


def _expert_mlp(x_MD, w_in_FD, b_in_F, w_out_DF, b_out_D, activation):
    h = x_MD @ w_in_FD.t()
    if b_in_F is not None:
        h = h + b_in_F
    if activation in GATED:
        gate, up = h.chunk(2, dim=-1)
        h = _act(gate, activation) * up
    else:
        h = _act(h, activation)
    y = h @ w_out_DF.t()
    return y + b_out_D if b_out_D is not None else y


def grouped_expert_mlp_ref(x_ND, sorted_tokens, expert_offsets, w_in, b_in, w_out, b_out, activation, sorted_weights=None, config=None):
    """Plain-torch `grouped_expert_mlp`: one eager expert MLP per segment."""
    E, _, D = _check_mlp_args(x_ND, w_in, b_in, w_out, b_out, activation)
    y_AD = torch.zeros(sorted_tokens.shape[0], D, device=x_ND.device, dtype=x_ND.dtype)
    bounds = expert_offsets.tolist()
    for e in range(E):
        lo, hi = bounds[e], bounds[e + 1]
        if hi > lo:
            y = _expert_mlp(x_ND[sorted_tokens[lo:hi]], w_in[e], None if b_in is None else b_in[e],
                            w_out[e], None if b_out is None else b_out[e], activation)
            if sorted_weights is not None:
                y = y * sorted_weights[lo:hi, None].to(y.dtype)
            y_AD[lo:hi] = y
    return y_AD


# --------------------------------------------------------------------------------------------
# The whole layer
# --------------------------------------------------------------------------------------------


def moe_forward(x_BTD, router_weight_ED, w_in, b_in, w_out, b_out, top_k, capacity_factor, router_kind, activation, training, config=None,
                inference_capacity_factor=None):
    """prelude's MoE.forward with the expert MLPs as Triton grouped GEMMs.

    Returns (y_BTD, aux_loss); aux_loss = E * sum_e share_e * mean prob_e, share_e the
    fraction of tokens whose first choice is e.
    """
    B, T, D = x_BTD.shape
    x_ND = x_BTD.reshape(-1, D).contiguous()
    N, E = x_ND.shape[0], w_in.shape[0]
    probs_NE, weight_NK, expert_NK = _choose(F.linear(x_ND, router_weight_ED), top_k, router_kind)
    aux = _aux_loss(probs_NE, expert_NK[:, 0], E)
    capacity = _capacity(capacity_factor, N, top_k, E, training, inference_capacity_factor)
    _, token_A, weight_A, offsets_E1, slot_A = _dispatch(weight_NK, expert_NK, E, capacity)
    y_AD = grouped_expert_mlp(x_ND, token_A, offsets_E1, w_in, b_in, w_out, b_out, activation, sorted_weights=weight_A, config=config)
    # combine: gather each token's K weighted rows and sum them (deterministic, no atomics);
    # a dropped assignment reads an extra zero row
    A = token_A.shape[0]
    if A < N * top_k:
        y_AD = torch.cat([y_AD, y_AD.new_zeros(1, D)])
    row_NK = torch.full((N * top_k,), A, dtype=torch.int64, device=x_ND.device)
    row_NK[slot_A] = torch.arange(A, device=x_ND.device)
    out_ND = y_AD[row_NK].view(N, top_k, D).sum(1)
    return out_ND.reshape(B, T, D), aux


def moe_forward_ref(x_BTD, router_weight_ED, w_in, b_in, w_out, b_out, top_k, capacity_factor, router_kind, activation, training, config=None,
                    inference_capacity_factor=None):
    """Plain torch: route each expert's tokens in a loop and run its MLP eagerly."""
    B, T, D = x_BTD.shape
    x_ND = x_BTD.reshape(-1, D)
    N, E = x_ND.shape[0], w_in.shape[0]
    _check_mlp_args(x_ND, w_in, b_in, w_out, b_out, activation)
    probs_NE, weight_NK, expert_NK = _choose(F.linear(x_ND, router_weight_ED), top_k, router_kind)
    aux = _aux_loss(probs_NE, expert_NK[:, 0], E)
    capacity = _capacity(capacity_factor, N, top_k, E, training, inference_capacity_factor) or N * top_k
    out_ND = torch.zeros_like(x_ND)
    for e in range(E):
        # first choices in arrival order, then second choices, ...; the first `capacity` stay
        hits = [(expert_NK[:, r] == e).nonzero().squeeze(1) for r in range(top_k)]
        tokens = torch.cat(hits)[:capacity]
        weights = torch.cat([weight_NK[h, r] for r, h in enumerate(hits)])[:capacity]
        if tokens.numel() == 0:
            continue
        y = _expert_mlp(x_ND[tokens], w_in[e], None if b_in is None else b_in[e], w_out[e],
                        None if b_out is None else b_out[e], activation)
        out_ND.index_add_(0, tokens, y * weights[:, None].to(y.dtype))
    return out_ND.reshape(B, T, D), aux
