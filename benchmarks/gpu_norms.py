#!/usr/bin/env python
"""GPU benchmark of the norm kernels in taxonc.kernels.norms (forward only).

    python benchmarks/gpu_norms.py            # CUDA, bf16, tokens 4096 x d 4096 (LLaMA-7B)
    python benchmarks/gpu_norms.py --cpu      # smoke run: tiny fp32 shape on CPU

`bench(emit, device)` times, for rms_norm, rms_norm with the fused residual add, and
layer_norm (with bias), four providers:

- ``triton``: taxonc.kernels.norms (one fused kernel)
- ``eager``: the plain-torch reference (``*_ref``, fp32 math, several kernels)
- ``torch_F``: ``F.rms_norm`` / ``F.layer_norm`` (plus an eager ``x + residual``)
- ``compile``: ``torch.compile`` of the reference (dynamic=False; CUDA only; its compile time
  is reported as ``compile_s``)

Protocol: correctness first (the kernel's max error against the reference run in fp64 on the
same inputs, next to eager's, reported as ``max_err``/``eager_err``/``ok`` in the triton row);
warm-up calls; then ``reps`` (>= 20 on CUDA) rounds in which the providers are interleaved,
each call timed with its own pair of ``torch.cuda.Event`` after a 256 MiB L2 flush; median.
Achieved GB/s counts the bytes an ideal kernel moves: x (and residual) read, y (and the sum)
written, weight (and bias) read once. On CPU (``device="cpu"``, a smoke test) times come
from ``time.perf_counter``, the dtype is fp32, torch.compile is skipped and the Triton
provider runs only under ``TRITON_INTERPRET=1``.

One ``emit({...})`` per measurement with keys kernel, provider, shape, dtype, ms, gbps,
speedup_vs_eager, speedup_vs_compile (None where compile was not run), device, and the
extras named above.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repo root, when run as a script

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from _timing import JsonLines, sync  # noqa: E402

from taxonc.kernels import norms  # noqa: E402

EPS = 1e-5


def _cases(x, r, w, b):
    """(kernel name, bytes moved per call, {provider: fn}, reference, its args) per op."""
    t, d = x.shape
    elt = x.element_size()
    cases = [
        ("rms_norm", (2 * t * d + d) * elt, {
            "triton": lambda: norms.rms_norm(x, w, EPS),
            "eager": lambda: norms.rms_norm_ref(x, w, EPS),
            "torch_F": lambda: F.rms_norm(x, (d,), w, EPS),
        }, norms.rms_norm_ref, (x, w, EPS)),
        ("rms_norm_residual", (4 * t * d + d) * elt, {
            "triton": lambda: norms.rms_norm(x, w, EPS, r),
            "eager": lambda: norms.rms_norm_ref(x, w, EPS, r),
            "torch_F": lambda: (lambda s: (F.rms_norm(s, (d,), w, EPS), s))(x + r),
        }, norms.rms_norm_ref, (x, w, EPS, r)),
        ("layer_norm", (2 * t * d + 2 * d) * elt, {
            "triton": lambda: norms.layer_norm(x, w, b, EPS),
            "eager": lambda: norms.layer_norm_ref(x, w, b, EPS),
            "torch_F": lambda: F.layer_norm(x, (d,), w, b, EPS),
        }, norms.layer_norm_ref, (x, w, b, EPS)),
    ]
    return cases


def _check(kernel_fn, eager_fn, ref_fn, args):
    """Max error of the kernel and of eager against the reference on fp64 copies of the inputs."""
    up = [a.double() if isinstance(a, torch.Tensor) else a for a in args]
    want = ref_fn(*up)[0]
    got = kernel_fn()[0].double()
    eager = eager_fn()[0].double()
    k_err = (got - want).abs().max().item()
    e_err = (eager - want).abs().max().item()
    return k_err, e_err, k_err <= 2 * e_err + 1e-6


def bench(emit, device="cuda", *, tokens=None, d=None, reps=None, warmup=None):
    """Time the norm kernels against eager and torch.compile; `emit` one dict per measurement."""
    dev = torch.device(device)
    cuda = dev.type == "cuda"
    tokens = tokens or (4096 if cuda else 8)
    d = d or (4096 if cuda else 64)
    reps = reps or (50 if cuda else 3)
    warmup = warmup or (5 if cuda else 1)
    if cuda and reps < 20:
        raise ValueError("use >= 20 reps on CUDA")
    dtype = torch.bfloat16 if cuda else torch.float32
    dname = {torch.bfloat16: "bf16", torch.float32: "fp32"}[dtype]
    device_name = torch.cuda.get_device_name(dev) if cuda else "cpu"

    g = torch.Generator(device="cpu").manual_seed(0)
    x = torch.randn(tokens, d, generator=g).to(device=dev, dtype=dtype)
    r = torch.randn(tokens, d, generator=g).to(device=dev, dtype=dtype)
    w = (1 + 0.1 * torch.randn(d, generator=g)).to(device=dev, dtype=dtype)
    b = (0.1 * torch.randn(d, generator=g)).to(device=dev, dtype=dtype)
    flush = torch.empty(256 * 2**20, dtype=torch.int8, device=dev) if cuda else None

    for kernel, nbytes, providers, ref_fn, args in _cases(x, r, w, b):
        providers = dict(providers)
        if not norms._use_kernel(x):
            providers.pop("triton")
        extra = {p: {} for p in providers}
        if "triton" in providers:
            k_err, e_err, ok = _check(providers["triton"], providers["eager"], ref_fn, args)
            extra["triton"] = {"max_err": k_err, "eager_err": e_err, "ok": ok}
        if cuda:
            compiled = torch.compile(ref_fn, dynamic=False)
            t0 = time.perf_counter()
            compiled(*args)
            sync(dev)
            extra["compile"] = {"compile_s": time.perf_counter() - t0}
            providers["compile"] = lambda c=compiled, a=args: c(*a)

        for fn in providers.values():
            for _ in range(warmup):
                fn()
        sync(dev)

        times = {p: [] for p in providers}
        names = list(providers)
        for i in range(reps):
            order = names[i % len(names):] + names[:i % len(names)]  # rotate the order
            for p in order:
                fn = providers[p]
                if cuda:
                    flush.zero_()
                    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                    start.record()
                    fn()
                    end.record()
                    times[p].append((start, end))
                else:
                    t0 = time.perf_counter()
                    fn()
                    times[p].append(time.perf_counter() - t0)
        sync(dev)

        ms = {}
        for p, ts in times.items():
            vals = [s.elapsed_time(e) for s, e in ts] if cuda else [t * 1e3 for t in ts]
            ms[p] = statistics.median(vals)
        for p in names:
            emit({
                "kernel": kernel,
                "provider": p,
                "shape": f"{tokens}x{d}",
                "dtype": dname,
                "ms": ms[p],
                "gbps": nbytes / (ms[p] * 1e-3) / 1e9,
                "speedup_vs_eager": ms["eager"] / ms[p],
                "speedup_vs_compile": ms["compile"] / ms[p] if "compile" in ms else None,
                "device": device_name,
                **extra.get(p, {}),
            })


def main() -> None:
    device = "cpu" if "--cpu" in sys.argv or not torch.cuda.is_available() else "cuda"
    emit = JsonLines()
    bench(emit, device)
    print(f"\n{'kernel':20s} {'provider':10s} {'ms':>9s} {'GB/s':>8s} {'vs eager':>9s} {'vs compile':>10s}")
    for rec in emit.records:
        vc = rec["speedup_vs_compile"]
        print(f"{rec['kernel']:20s} {rec['provider']:10s} {rec['ms']:9.4f} {rec['gbps']:8.1f} "
              f"{rec['speedup_vs_eager']:9.2f} {'-' if vc is None else f'{vc:.2f}':>10s}")


if __name__ == "__main__":
    main()
