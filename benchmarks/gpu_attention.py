#!/usr/bin/env python
"""Attention variants: taxonc's Triton flash kernel against SDPA's flash backend and FlexAttention.

    python benchmarks/gpu_attention.py [--device cuda|cpu]

On CUDA, bf16 at B=4, H=32, T=S=2048, K=128:
- causal: flash_attention vs F.scaled_dot_product_attention(is_causal=True) with the flash
  backend forced (torch.nn.attention.sdpa_kernel(SDPBackend.FLASH_ATTENTION));
- alibi (causal + ALiBi) and locally-banded (window 256): flash_attention vs FlexAttention
  (flex_attention under torch.compile, with a score_mod / a block_mask).
FLOPs = 4 * B * H * T * S_eff * K, where T * S_eff is the exact number of (query, key) pairs
the mask allows: S_eff = (T + 1) / 2 for causal (the halving), and sum_i min(i + 1, 256) / T
for the window (about 256). Outputs are compared with the baseline's before any timing; a
mismatch gets an error record and no timings. Timing: CUDA events, 5 warm-up calls, then the
median of 25 timed calls (each timed alone). `ratio` is this provider's time over the
baseline's time for the same kernel (the baseline row is 1.0; < 1 means faster than it).

On CPU (device="cpu") the same three kernels run at a tiny fp32 shape under the Triton
interpreter, against SDPA (math) and flash_attention_ref, with wall-clock timing: a smoke test
of this script, not a measurement. FlexAttention and torch.compile are skipped there.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repo root, when run as a script

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from _timing import JsonLines, samples_ms  # noqa: E402

WINDOW = 256


def _pairs(T, S, kind, window=WINDOW):
    """Allowed (query, key) pairs for T == S with queries and keys at the same positions."""
    if kind == "causal":
        return T * (T + 1) // 2
    if kind == "locally-banded":
        return sum(min(i + 1, window) for i in range(T))
    return T * S


def bench(emit, device="cuda", warmup=None, reps=None):
    """Time the three attention variants and call emit(record) once per measurement."""
    cuda = device != "cpu"
    if not cuda:
        os.environ.setdefault("TRITON_INTERPRET", "1")  # before the kernel is first built
    from taxonc.kernels.reference.positions import alibi_slopes
    from taxonc.kernels.attention import flash_attention, flash_attention_ref
    from taxonc.kernels.reference.masks import Mask, MaskKind

    if cuda:
        B, H, T, K, dtype, dname = 4, 32, 2048, 128, torch.bfloat16, "bf16"
        warmup, reps = warmup or 5, reps or 25
    else:
        B, H, T, K, dtype, dname = 1, 2, 32, 16, torch.float32, "fp32"
        warmup, reps = warmup or 1, reps or 3
    S = T
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(B, H, n, K, generator=gen).to(device, dtype) for n in (T, S, S))
    slopes = alibi_slopes(H)
    slopes_dev = slopes.to(device, torch.float32)
    window = WINDOW if cuda else 8
    shape = f"B={B} H={H} T={T} S={S} K={K}"

    causal = Mask(MaskKind.CAUSAL)
    banded = Mask(MaskKind.LOCALLY_BANDED, window=window)
    ours = {
        "causal": lambda: flash_attention(q, k, v, causal),
        "alibi": lambda: flash_attention(q, k, v, causal, alibi_slopes_H=slopes),
        "locally-banded": lambda: flash_attention(q, k, v, banded),
    }
    if cuda:
        from torch.nn.attention import SDPBackend, sdpa_kernel
        from torch.nn.attention.flex_attention import create_block_mask, flex_attention

        flex = torch.compile(flex_attention, dynamic=False)

        def sdpa_flash():
            with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
                return F.scaled_dot_product_attention(q, k, v, is_causal=True)

        def causal_mod(b, h, q_idx, kv_idx):
            return kv_idx <= q_idx

        def band_mod(b, h, q_idx, kv_idx):
            return (kv_idx <= q_idx) & (q_idx - kv_idx < window)

        def alibi_score(score, b, h, q_idx, kv_idx):
            return score - slopes_dev[h] * (q_idx - kv_idx)

        causal_bm = create_block_mask(causal_mod, None, None, T, S, device=device)
        band_bm = create_block_mask(band_mod, None, None, T, S, device=device)
        baselines = {
            "causal": ("sdpa-flash", sdpa_flash),
            "alibi": ("flex-compiled", lambda: flex(q, k, v, score_mod=alibi_score, block_mask=causal_bm)),
            "locally-banded": ("flex-compiled", lambda: flex(q, k, v, block_mask=band_bm)),
        }
    else:
        baselines = {
            "causal": ("sdpa-math", lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True)),
            "alibi": ("torch-ref", lambda: flash_attention_ref(q, k, v, causal, alibi_slopes_H=slopes)),
            "locally-banded": ("torch-ref", lambda: flash_attention_ref(q, k, v, banded)),
        }

    card = torch.cuda.get_device_name() if cuda else "cpu (triton interpreter)"
    for name in ("causal", "alibi", "locally-banded"):
        base_name, base_fn = baselines[name]
        pairs = _pairs(T, S, "causal" if name == "alibi" else name, window)
        flops = 4 * B * H * pairs * K
        s_eff = pairs / T
        tag = f"{shape} S_eff={s_eff:.1f}" + (f" window={window}" if name == "locally-banded" else "")
        t0 = time.perf_counter()
        want, got = base_fn(), ours[name]()  # also the first (compiling) call of each
        compile_s = time.perf_counter() - t0
        err = (got.float() - want.float()).abs().max().item()
        tol = 2e-2 if dtype == torch.bfloat16 else 1e-4
        if not err <= tol:
            emit({"kernel": name, "provider": "check", "shape": tag, "dtype": dname, "error": f"max diff {err:.3g} > {tol}"})
            continue
        base_ms = statistics.median(samples_ms(base_fn, device, warmup, reps))
        ours_ms = statistics.median(samples_ms(ours[name], device, warmup, reps))
        for provider, ms in ((base_name, base_ms), ("taxonc-triton", ours_ms)):
            emit({"kernel": name, "provider": provider, "shape": tag, "dtype": dname, "ms": round(ms, 4),
                  "tflops": round(flops / (ms * 1e-3) / 1e12, 2), "ratio": round(ms / base_ms, 3),
                  "baseline": base_name, "max_diff": err, "first_calls_s": round(compile_s, 2), "device": card})


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    emit = JsonLines()
    bench(emit, device=args.device)
    print(f"\n{'kernel':16} {'provider':14} {'ms':>9} {'TFLOP/s':>8} {'ratio':>6}")
    for r in emit.records:
        if "ms" in r:
            print(f"{r['kernel']:16} {r['provider']:14} {r['ms']:9.3f} {r['tflops']:8.1f} {r['ratio']:6.2f}")


if __name__ == "__main__":
    main()
