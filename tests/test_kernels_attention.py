"""Flash attention kernel == its torch reference == prelude.attend, for every mask kind.

On CPU the kernel runs under the Triton interpreter (tests/conftest.py sets TRITON_INTERPRET),
in fp32 with 16 x 16 blocks. Low-precision checks need CUDA and use the FlashAttention rule:
the kernel's max error against an fp32 reference is at most twice eager torch's in the same
dtype, plus 1e-6.
"""

from __future__ import annotations

import math

import pytest
import torch

from taxonc.kernels.reference.attention import attend
from taxonc.kernels.reference.positions import alibi_slopes
from taxonc.kernels.attention import flash_attention, flash_attention_ref
from taxonc.kernels.reference.masks import Mask, MaskKind, allowed_keys

CUDA = torch.cuda.is_available()
DEV = "cuda" if CUDA else "cpu"
SMALL = {"BLOCK_M": 16, "BLOCK_N": 16, "num_warps": 4, "num_stages": 1}  # pinned: interpreter-sized

MASKS = [
    Mask(MaskKind.FULL),
    Mask(MaskKind.CAUSAL),
    Mask(MaskKind.PREFIX, prefix=7),
    Mask(MaskKind.LOCALLY_BANDED, window=8),
    Mask(MaskKind.STRIDED, stride=5),
    Mask(MaskKind.FIXED, block=8, summary=2),
]
MASK_IDS = [m.kind.value for m in MASKS]


def _qkv(B, H, G, T, S, K, dtype=torch.float32, device=DEV, seed=0):
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(B, H, T, K, generator=gen)
    k = torch.randn(B, G, S, K, generator=gen)
    v = torch.randn(B, G, S, K, generator=gen)
    return q.to(device, dtype), k.to(device, dtype), v.to(device, dtype)


def _check(B, H, G, T, S, K, mask, q_offset=0, kv_offset=0, alibi=False, config=SMALL):
    q, k, v = _qkv(B, H, G, T, S, K)
    slopes = alibi_slopes(H) if alibi else None
    out = flash_attention(q, k, v, mask, q_offset, kv_offset, slopes, config=config)
    ref = flash_attention_ref(q, k, v, mask, q_offset, kv_offset, slopes)
    assert out.shape == (B, H, T, K) and out.dtype == q.dtype
    torch.testing.assert_close(out, ref, atol=2e-5, rtol=1e-4)


# --- the reference is attend ---------------------------------------------------------------

@pytest.mark.parametrize("mask", MASKS, ids=MASK_IDS)
@pytest.mark.parametrize("offsets", [(0, 0), (20, 0), (30, 23)])
def test_reference_matches_attend(mask, offsets):
    q_offset, kv_offset = offsets
    T = 37 if q_offset == 0 else 3
    S = T + q_offset - kv_offset
    q, k, v = _qkv(2, 4, 2, T, S, 16, device="cpu")
    slopes = alibi_slopes(4)
    for alibi in (None, slopes):
        want = attend(q, k, v, mask, q_offset, kv_offset, alibi_H=alibi)
        got = flash_attention_ref(q, k, v, mask, q_offset, kv_offset, alibi)
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


# --- kernel vs reference, fp32 ----------------------------------------------------------------

@pytest.mark.parametrize("mask", MASKS, ids=MASK_IDS)
def test_masks_odd_length_gqa_alibi(mask):
    _check(2, 4, 2, 37, 37, 16, mask, alibi=True)  # T, S not multiples of the block


@pytest.mark.parametrize("mask", MASKS, ids=MASK_IDS)
def test_masks_power_of_two(mask):
    _check(1, 2, 2, 64, 64, 32, mask)


@pytest.mark.parametrize("G", [1, 2, 4], ids=["mqa", "gqa", "mha"])
def test_head_sharing(G):
    _check(1, 4, G, 37, 37, 16, Mask(MaskKind.CAUSAL), alibi=True)


def test_odd_head_width_and_explicit_scale():
    q, k, v = _qkv(1, 2, 1, 20, 20, 24)  # K padded to 32 inside the kernel
    out = flash_attention(q, k, v, Mask(MaskKind.CAUSAL), scale=0.3, config=SMALL)
    torch.testing.assert_close(out, flash_attention_ref(q, k, v, Mask(MaskKind.CAUSAL), scale=0.3), atol=2e-5, rtol=1e-4)


def test_strided_views():
    # the KV cache's layout: (B, S, G, K) storage seen as (B, G, S, K)
    q, k, v = _qkv(1, 4, 2, 19, 19, 16)
    k_view, v_view = k.transpose(1, 2).contiguous().transpose(1, 2), v.transpose(1, 2).contiguous().transpose(1, 2)
    q_view = q.transpose(1, 2).contiguous().transpose(1, 2)
    assert not k_view.is_contiguous()
    out = flash_attention(q_view, k_view, v_view, Mask(MaskKind.PREFIX, prefix=4), config=SMALL)
    torch.testing.assert_close(out, flash_attention_ref(q, k, v, Mask(MaskKind.PREFIX, prefix=4)), atol=2e-5, rtol=1e-4)


# --- decoding with a KV cache -----------------------------------------------------------------

@pytest.mark.parametrize("mask", MASKS, ids=MASK_IDS)
@pytest.mark.parametrize("G", [2, 4], ids=["packed-gqa", "mha"])
def test_decode_one_token(mask, G):
    _check(2, 4, G, 1, 21, 32, mask, q_offset=20, alibi=True)


@pytest.mark.parametrize("T", [1, 3])
def test_decode_trimmed_banded_cache(T):
    # window 8: the cache kept only the last keys, so key 0 of the cache sits at position 23
    window, q_offset = 8, 30
    kv_offset = q_offset + T - window - 2  # two keys more than the window needs
    _check(1, 4, 2, T, q_offset + T - kv_offset, 16, Mask(MaskKind.LOCALLY_BANDED, window=window),
           q_offset=q_offset, kv_offset=kv_offset, alibi=True)


def test_decode_first_token_and_chunked_prefill():
    _check(1, 4, 1, 1, 1, 16, Mask(MaskKind.CAUSAL))  # S == 1
    _check(1, 2, 1, 21, 40, 16, Mask(MaskKind.CAUSAL), q_offset=19)  # a chunk after 19 cached keys
    _check(1, 2, 2, 21, 40, 16, Mask(MaskKind.LOCALLY_BANDED, window=6), q_offset=19, alibi=True)


@pytest.mark.parametrize("mask", MASKS, ids=MASK_IDS)
def test_split_kv(mask):
    # 3 splits of 2 key blocks: one split gets nothing; T=37 also crosses masked and unmasked runs
    _check(1, 4, 2, 1, 21, 16, mask, q_offset=20, alibi=True, config={**SMALL, "num_splits": 3})
    _check(1, 2, 1, 37, 37, 16, mask, alibi=True, config={**SMALL, "num_splits": 2})


def test_packing_matches_per_head_programs():
    q, k, v = _qkv(1, 4, 1, 5, 25, 16)
    mask = Mask(MaskKind.FIXED, block=4, summary=1)
    packed = flash_attention(q, k, v, mask, 20, 0, config={**SMALL, "pack_gqa": True})
    per_head = flash_attention(q, k, v, mask, 20, 0, config={**SMALL, "pack_gqa": False})
    torch.testing.assert_close(packed, per_head, atol=2e-6, rtol=1e-5)


# --- block skipping: NaN values in keys the kernel must never visit ------------------------------

def _poisoned(mask, T, poison, keep_rows, config=SMALL):
    q, k, v = _qkv(1, 1, 1, T, T, 16)
    ref = flash_attention_ref(q, k, v, mask)
    v_bad = v.clone()
    v_bad[:, :, poison] = float("nan")
    out = flash_attention(q, k, v_bad, mask, config=config)
    torch.testing.assert_close(out[:, :, keep_rows], ref[:, :, keep_rows], atol=2e-5, rtol=1e-4)
    assert out.isnan().any(), "the poison never reached a visited block: the test checks nothing"


def test_causal_skips_blocks_above_the_diagonal():
    _poisoned(Mask(MaskKind.CAUSAL), 64, slice(32, 64), slice(0, 32))


def test_banded_skips_blocks_outside_the_window():
    # window 8, 16 x 16 blocks: query block 3 (rows 48-63) starts at key 32, block 0 stops at 16
    mask = Mask(MaskKind.LOCALLY_BANDED, window=8)
    _poisoned(mask, 64, slice(16, 32), slice(48, 64))
    _poisoned(mask, 64, slice(16, 32), slice(0, 16))


def test_prefix_skips_blocks_past_prefix_and_diagonal():
    _poisoned(Mask(MaskKind.PREFIX, prefix=20), 64, slice(32, 64), slice(0, 32))


def test_no_allowed_key_gives_zeros_not_nan():
    # keys that all lie after the query: a cache misuse, but the kernel must stay finite
    q, k, v = _qkv(1, 2, 2, 2, 8, 16)
    out = flash_attention(q, k, v, Mask(MaskKind.CAUSAL), q_offset=0, kv_offset=5, config=SMALL)
    assert torch.equal(out, torch.zeros_like(out))


def test_bad_inputs():
    q, k, v = _qkv(1, 3, 2, 4, 4, 16)
    with pytest.raises(ValueError):
        flash_attention(q, k, v, Mask(MaskKind.CAUSAL))
    q, k, v = _qkv(1, 2, 1, 4, 4, 16)
    with pytest.raises(ValueError):
        flash_attention(q, k, v, Mask(MaskKind.LOCALLY_BANDED))  # a band needs a width


# --- benchmark smoke ------------------------------------------------------------------------

@pytest.mark.skipif(CUDA, reason="the CPU smoke run needs the interpreter, which a CUDA machine does not use")
def test_benchmark_cpu_smoke():
    from .helpers import run_script

    rows = run_script("benchmarks/gpu_attention.py", "--device", "cpu")
    assert {r["kernel"] for r in rows} == {"causal", "alibi", "locally-banded"}
    for r in rows:
        assert {"kernel", "provider", "shape", "dtype", "ms", "tflops", "ratio"} <= set(r)
        assert r["ms"] > 0 and math.isfinite(r["tflops"])


# --- low precision on a GPU ----------------------------------------------------------------------

def _eager_low_precision(q, k, v, mask, q_offset, kv_offset, slopes):
    # what plain torch does in the same dtype: scores, softmax and PV all rounded to it
    H, G = q.shape[1], k.shape[1]
    k, v = k.repeat_interleave(H // G, 1), v.repeat_interleave(H // G, 1)
    T, S = q.shape[2], k.shape[2]
    s = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    q_idx = torch.arange(T, device=q.device)[:, None] + q_offset
    kv_idx = torch.arange(S, device=q.device)[None, :] + kv_offset
    if slopes is not None:
        s = s - (slopes.to(q.device)[:, None, None] * (q_idx - kv_idx)).to(q.dtype)
    s = s.masked_fill(~allowed_keys(q_idx, kv_idx, mask), float("-inf"))
    return torch.softmax(s, dim=-1) @ v


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs CUDA")
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("mask", MASKS, ids=MASK_IDS)
@pytest.mark.parametrize("shape", [(2, 8, 2, 300, 300, 64, 0, 0), (2, 8, 8, 1024, 1024, 128, 0, 0),
                                   (4, 8, 2, 1, 2049, 128, 2048, 0), (2, 8, 1, 5, 700, 64, 1000, 305)],
                         ids=["gqa-odd", "mha-1024", "decode", "trimmed-cache"])
def test_low_precision_flash_rule(dtype, mask, shape):
    B, H, G, T, S, K, q_offset, kv_offset = shape
    q, k, v = _qkv(B, H, G, T, S, K, dtype=dtype)
    slopes = alibi_slopes(H)
    configs = [None, {"num_splits": 4}] if T == 1 else [None]  # decoding: split-KV too
    for alibi in (None, slopes):
        ref = flash_attention_ref(q.float(), k.float(), v.float(), mask, q_offset, kv_offset, alibi)
        eager = _eager_low_precision(q, k, v, mask, q_offset, kv_offset, alibi)
        eager_err = (eager.float() - ref).abs().max().item()
        for config in configs:
            out = flash_attention(q, k, v, mask, q_offset, kv_offset, alibi, config=config)
            err = (out.float() - ref).abs().max().item()
            assert err <= 2 * eager_err + 1e-6, (config, err, eager_err)


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs CUDA")
@pytest.mark.parametrize("mask", MASKS, ids=MASK_IDS)
def test_fp32_on_gpu_default_config(mask):
    _check(2, 8, 2, 333, 333, 64, mask, alibi=True, config=None)
    _check(2, 8, 2, 1, 1333, 64, mask, q_offset=1332, alibi=True, config=None)
    _check(2, 8, 2, 1, 1333, 64, mask, q_offset=1332, alibi=True, config={"num_splits": 4})
