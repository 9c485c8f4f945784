#!/usr/bin/env python
"""MoE layer benchmark: Triton grouped GEMMs (kernels/moe.py) against the per-expert loop.

    python benchmarks/gpu_moe.py [--device cuda|cpu]

Providers: "triton" (`moe_forward`), "eager" (`moe_forward_ref`, one eager expert MLP per
expert) and "compile" (`moe_forward_ref` under torch.compile(dynamic=True); CUDA only, its
first call is reported as compile_s). Inference routing (nothing dropped), bf16 on CUDA.
Shapes on CUDA: Mixtral-like (4096 tokens, D 4096, F 14336, E 8, top-2, swiglu) and a
fine-grained E=64 top-2 layer (D 2048, F 1408). On the CPU: one tiny shape, fp32, with the
kernels under the Triton interpreter (a smoke test of this script, not a measurement).

Protocol: the outputs of every provider are checked against eager first (relative L2 error
<= 2e-2 in bf16); a mismatch raises and prints no timings. Then 3 warm-up calls each and
interleaved rounds (one call per provider per round) until each has >= 10 calls and
>= 0.5 s. Each call is timed with CUDA events (perf_counter on the CPU); the median is
reported. TFLOP/s counts the expert GEMMs only: 2 * N * top_k * D * (F_in + F), F_in = 2F for
a GLU (the router GEMM is left out).
One dict per provider and shape goes to emit(): kernel, provider, shape, dtype, ms, tflops,
speedup_vs_eager, speedup_vs_compile (None without compile), and compile_s on compile rows.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repo root, when run as a script

import torch  # noqa: E402
from _timing import JsonLines, timer  # noqa: E402

SHAPES_CUDA = (
    dict(N=4096, D=4096, F=14336, E=8, k=2, activation="swiglu"),  # Mixtral 8x7B layer
    dict(N=4096, D=2048, F=1408, E=64, k=2, activation="swiglu"),  # fine-grained experts
)
SHAPES_CPU = (dict(N=16, D=16, F=16, E=4, k=2, activation="swiglu"),)
MIN_REPS, MIN_SECONDS, MAX_REPS, WARMUP = 10, 0.5, 200, 3
REL_TOL = 2e-2


def _inputs(s, device, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    gated = 2 if s["activation"] in ("swiglu", "geglu") else 1

    def rnd(*shape, fan_in):
        return (torch.randn(*shape, generator=g) / fan_in**0.5).to(device=device, dtype=dtype)

    N, D, F, E = s["N"], s["D"], s["F"], s["E"]
    return dict(
        x_BTD=rnd(1, N, D, fan_in=1), router_weight_ED=rnd(E, D, fan_in=D),
        w_in=rnd(E, gated * F, D, fan_in=D), b_in=None, w_out=rnd(E, D, F, fan_in=F), b_out=None,
        top_k=s["k"], capacity_factor=1.0, router_kind="softmax-top-k", activation=s["activation"], training=False,
    )


def _sig(x, digits=4):
    return float(f"{x:.{digits}g}")


def _rel_err(y, ref):
    return ((y.float() - ref.float()).norm() / ref.float().norm().clamp_min(1e-30)).item()


def bench(emit, device="cuda"):
    if device == "cpu":
        os.environ.setdefault("TRITON_INTERPRET", "1")  # read when the kernels are first built
    from taxonc.kernels import moe

    if device == "cpu" and not moe._interpreting():
        raise RuntimeError("device='cpu' needs TRITON_INTERPRET=1")
    on_cuda = device == "cuda"
    dtype = torch.bfloat16 if on_cuda else torch.float32
    timed = timer(device)
    providers = {"triton": moe.moe_forward, "eager": moe.moe_forward_ref}
    compile_s = None
    if on_cuda:
        providers["compile"] = torch.compile(moe.moe_forward_ref, dynamic=True)
    for s in SHAPES_CUDA if on_cuda else SHAPES_CPU:
        shape = f"N{s['N']} D{s['D']} F{s['F']} E{s['E']} top{s['k']} {s['activation']}"
        args = _inputs(s, device, dtype)
        with torch.no_grad():
            ref, _ = moe.moe_forward_ref(**args)
            for name, fn in list(providers.items()):
                t = time.perf_counter()
                try:
                    y, _ = fn(**args)
                except Exception as exc:  # a baseline that cannot compile is reported, not fatal
                    if name != "compile":
                        raise
                    print(f"torch.compile failed at {shape}: {exc!r}", file=sys.stderr)
                    del providers[name]
                    continue
                if on_cuda:
                    torch.cuda.synchronize()
                if name == "compile":
                    compile_s = time.perf_counter() - t
                err = _rel_err(y, ref)
                if not err <= REL_TOL:
                    raise AssertionError(f"{name} disagrees with eager at {shape}: relative L2 error {err:.3g}")
            for fn in providers.values():
                for _ in range(WARMUP):
                    fn(**args)
            times = {name: [] for name in providers}
            t_start = time.perf_counter()
            while True:
                for name, fn in providers.items():
                    times[name].append(timed(lambda: fn(**args)))
                n = len(times["eager"])
                if n >= MAX_REPS or n >= MIN_REPS and time.perf_counter() - t_start >= MIN_SECONDS * len(providers):
                    break
        del args, ref
        ms = {name: statistics.median(v) for name, v in times.items()}
        gated = 2 if s["activation"] in ("swiglu", "geglu") else 1
        flops = 2 * s["N"] * s["k"] * s["D"] * (gated + 1) * s["F"]
        for name in providers:
            row = dict(
                kernel="moe_forward", provider=name, shape=shape, dtype="bf16" if on_cuda else "fp32",
                ms=_sig(ms[name]), tflops=_sig(flops / (ms[name] * 1e-3) / 1e12),
                speedup_vs_eager=_sig(ms["eager"] / ms[name]),
                speedup_vs_compile=_sig(ms["compile"] / ms[name]) if "compile" in ms else None,
            )
            if name == "compile":
                row["compile_s"] = round(compile_s, 1)
            emit(row)
        if on_cuda:
            torch.cuda.empty_cache()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    if args.device == "cuda":
        import triton

        print(json.dumps({"gpu": torch.cuda.get_device_name(), "torch": torch.__version__, "triton": triton.__version__}), flush=True)
    bench(JsonLines(), device=args.device)


if __name__ == "__main__":
    main()
