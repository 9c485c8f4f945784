#!/usr/bin/env python
"""GPU benchmark: the GLU, bias + activation and rotary kernels against eager and torch.compile.

    python benchmarks/gpu_glu_rotary.py [--device cuda|cpu] [--reps N] [--out FILE]

At LLaMA-7B sizes (4096 tokens, d_ff 11008, 32 heads x 128, full rotary) in bf16:
glu (swiglu, geglu) on the fused (tokens, 2 d_ff) gate+up projection, bias_act (gelu) on
(tokens, d_ff), and rotary on q (1, 4096, 32, 128). Each op is timed forward only ("_fwd")
and forward + backward ("_fwdbwd", torch.autograd.grad with a fixed upstream grad) for three
providers: "triton" (taxonc.kernels), "eager" (the plain-torch reference) and "compile"
(torch.compile(reference, dynamic=False); its first call, compile included, is reported as
compile_s). Before timing, the forward output of the kernel is checked against an fp64
reference under the FlashAttention rule (error <= 2x eager's error + 1e-6); an op that fails
gets an error record and no timings.

Timing: >= 3 warm-up calls per provider, then rounds that time each provider once, in a
rotating order, with CUDA events (perf_counter on CPU); on GPU one timed sample is a batch
of back-to-back calls lasting >= ~0.5 ms (calls_per_rep), reported per call. Median of
`reps` rounds (>= 20 on GPU) with p20/p80. gbps is the op's minimal traffic (every input
read once, every output written once; fwdbwd adds the backward's) over the median time, the
same byte count for every provider, so it is an effective bandwidth: compare it with the
~3 TB/s H100 copy ceiling. speedup_vs_X = X's median / this provider's median.

With device="cpu" it runs at tiny shapes in fp32 (the Triton interpreter cannot do bf16) and
skips torch.compile: a smoke test of the harness, not a measurement.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repo root, when run as a script

import torch  # noqa: E402
from _timing import JsonLines, sync, timer  # noqa: E402

try:  # installed package, or the repo root's kernels/ when taxonc is not installed (GPU machine)
    from taxonc.kernels.glu import bias_act, bias_act_ref, glu, glu_ref
    from taxonc.kernels.rotary import rotary, rotary_ref
except ImportError:  # pragma: no cover
    from kernels.glu import bias_act, bias_act_ref, glu, glu_ref
    from kernels.rotary import rotary, rotary_ref

# LLaMA-7B: 4096 tokens (B=1, T=4096), d_ff 11008, 32 heads of 128, rotary on all 128 dims
SIZES = {
    "cuda": dict(B=1, T=4096, F=11008, H=32, K=128, R=128),
    "cpu": dict(B=1, T=8, F=40, H=2, K=24, R=16),
}
WARMUP = 3


def _rotary_tables(T, R, device, dtype, base=10000.0):
    # the same tables as prelude.rotary_tables (half-duplicated angles)
    inv = 1.0 / (base ** (torch.arange(0, R, 2, device=device, dtype=torch.float64) / R))
    ang = torch.arange(T, device=device, dtype=torch.float64)[:, None] * inv[None, :]
    ang = torch.cat([ang, ang], dim=-1)
    return ang.cos().to(dtype), ang.sin().to(dtype)


def _ops(s, device, dtype):
    """(name, shape string, kernel fn, reference fn, inputs, bytes forward, bytes backward)."""
    g = torch.Generator(device="cpu").manual_seed(0)
    es = torch.empty((), dtype=dtype).element_size()
    M, F, D = s["B"] * s["T"], s["F"], s["F"]

    def randn(*shape, std=1.0):
        return (torch.randn(*shape, generator=g) * std).to(device=device, dtype=dtype)

    ops = []
    gate_up = randn(M, 2 * F, std=2.0)
    for kind in ("swiglu", "geglu"):
        ops.append((f"glu_{kind}", f"({M}, 2x{F})",
                    lambda x, kind=kind: glu(x, kind), lambda x, kind=kind: glu_ref(x, kind),
                    [gate_up], 3 * M * F * es, 5 * M * F * es))
    x, bias = randn(M, D, std=2.0), randn(D, std=0.5)
    ops.append(("bias_gelu", f"({M}, {D}) + ({D},)",
                lambda a, b: bias_act(a, b, "gelu"), lambda a, b: bias_act_ref(a, b, "gelu"),
                [x, bias], (2 * M * D + D) * es, (3 * M * D + 2 * D) * es))
    B, T, H, K, R = s["B"], s["T"], s["H"], s["K"], s["R"]
    q = randn(B, T, H, K)
    cos, sin = _rotary_tables(T, R, device, dtype)
    rot_bytes = (2 * B * T * H * K + 2 * T * R) * es
    ops.append(("rotary", f"({B}, {T}, {H}, {K}) R={R}",
                lambda a: rotary(a, cos, sin), lambda a: rotary_ref(a, cos, sin),
                [q], rot_bytes, rot_bytes))
    return ops


def _check(kernel, ref, inputs):
    """FlashAttention rule on the forward output: (ok, kernel error, eager error) vs fp64."""
    with torch.no_grad():
        exact = ref(*[t.double() for t in inputs])
        k_err = (kernel(*inputs).double() - exact).abs().max().item()
        e_err = (ref(*inputs).double() - exact).abs().max().item()
    return k_err <= 2 * e_err + 1e-6, k_err, e_err


def _fwd(fn, inputs):
    def call():
        with torch.no_grad():
            return fn(*inputs)
    return call


def _fwdbwd(fn, inputs, grad_out):
    leaves = [t.detach().clone().requires_grad_() for t in inputs]

    def call():
        out = fn(*leaves)
        return torch.autograd.grad(out, leaves, grad_out)
    return call


def _quantile(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def bench(emit, device="cuda", reps=20):
    """Time every op and provider; emit one dict per measurement (see the module docstring).

    Records: kernel ("<op>_fwd" / "<op>_fwdbwd"), provider ("triton", "eager", "compile"),
    shape, dtype, ms (median), p20_ms, p80_ms, gbps, speedup_vs_eager, speedup_vs_compile
    (None without a compile provider), reps, bytes, device, torch, triton; the triton record
    adds max_err / eager_max_err (forward, vs fp64), the compile record compile_s. A provider
    that fails, or a kernel that fails the check, gets a record with "error" and no timing.
    """
    on_gpu = device.startswith("cuda")
    if on_gpu:
        reps = max(reps, 20)  # fewer only for the CPU smoke test, which measures nothing
    dtype = torch.bfloat16 if on_gpu else torch.float32
    dtype_name = {torch.bfloat16: "bf16", torch.float32: "fp32"}[dtype]
    sizes = SIZES["cuda" if on_gpu else "cpu"]
    time_ms = timer(device)
    meta = dict(device=torch.cuda.get_device_name() if on_gpu else platform.processor() or "cpu",
                torch=torch.__version__)
    try:
        import triton
        meta["triton"] = triton.__version__
    except ImportError:  # pragma: no cover
        pass

    for name, shape, kernel, ref, inputs, bytes_fwd, bytes_bwd in _ops(sizes, device, dtype):
        ok, k_err, e_err = _check(kernel, ref, inputs)
        if not ok:
            emit(dict(kernel=name, provider="triton", shape=shape, dtype=dtype_name, error="forward check failed",
                      max_err=k_err, eager_max_err=e_err, **meta))
            continue
        providers = {"triton": kernel, "eager": ref}
        if on_gpu:
            providers["compile"] = torch.compile(ref, dynamic=False)
        with torch.no_grad():
            grad_out = torch.randn_like(ref(*inputs))
        for direction, nbytes in (("fwd", bytes_fwd), ("fwdbwd", bytes_fwd + bytes_bwd)):
            kname = f"{name}_{direction}"
            calls, compile_s = {}, {}
            for p, fn in providers.items():
                call = _fwd(fn, inputs) if direction == "fwd" else _fwdbwd(fn, inputs, grad_out)
                try:
                    sync(device)
                    t0 = time.perf_counter()
                    call()
                    sync(device)
                    compile_s[p] = time.perf_counter() - t0
                    for _ in range(WARMUP):
                        call()
                    sync(device)
                except Exception as exc:  # noqa: BLE001 - a failed provider is reported, not fatal
                    emit(dict(kernel=kname, provider=p, shape=shape, dtype=dtype_name,
                              error=f"{type(exc).__name__}: {exc}"[:500], **meta))
                    continue
                calls[p] = call
            # on GPU each timed sample is a batch of calls lasting >= ~0.5 ms, so that host
            # launch gaps and event resolution do not dominate sub-millisecond ops
            inner = {p: max(1, min(50, math.ceil(0.5 / max(time_ms(c), 1e-3)))) if on_gpu else 1
                     for p, c in calls.items()}
            times = {p: [] for p in calls}
            order = list(calls)
            for r in range(reps):
                for p in order[r % len(order):] + order[: r % len(order)]:
                    times[p].append(time_ms(calls[p], inner[p]))
            med = {p: statistics.median(ts) for p, ts in times.items()}
            for p, ts in times.items():
                rec = dict(kernel=kname, provider=p, shape=shape, dtype=dtype_name, ms=med[p],
                           p20_ms=_quantile(ts, 0.2), p80_ms=_quantile(ts, 0.8),
                           gbps=nbytes / (med[p] * 1e-3) / 1e9,
                           speedup_vs_eager=med["eager"] / med[p] if "eager" in med else None,
                           speedup_vs_compile=med["compile"] / med[p] if "compile" in med else None,
                           reps=reps, calls_per_rep=inner[p], bytes=nbytes, **meta)
                if p == "compile":
                    rec["compile_s"] = compile_s[p]
                if p == "triton":
                    rec["max_err"], rec["eager_max_err"] = k_err, e_err
                emit(rec)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--reps", type=int, default=30)
    ap.add_argument("--out", type=Path, default=None, help="also append the JSON lines here")
    args = ap.parse_args()
    if not args.device.startswith("cuda"):
        os.environ.setdefault("TRITON_INTERPRET", "1")  # read when the kernels are first built
    emit = JsonLines(args.out)
    bench(emit, device=args.device, reps=args.reps)
    print(f"\n{'kernel':<22} {'provider':<8} {'ms':>9} {'GB/s':>8} {'vs eager':>9} {'vs compile':>10}")
    for r in emit.records:
        if "ms" not in r:
            print(f"{r['kernel']:<22} {r['provider']:<8} ERROR {r['error']}")
            continue
        vc = r["speedup_vs_compile"]
        print(f"{r['kernel']:<22} {r['provider']:<8} {r['ms']:9.4f} {r['gbps']:8.1f} "
              f"{r['speedup_vs_eager']:9.2f} {'' if vc is None else f'{vc:10.2f}'}")


if __name__ == "__main__":
    main()
