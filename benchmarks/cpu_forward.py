#!/usr/bin/env python
"""CPU prefill benchmark: taxonc's emitted models against Hugging Face transformers.

    python benchmarks/cpu_forward.py [--quick] [--archs llama,neox] [--threads N] [--out FILE]
    python benchmarks/cpu_forward.py --profile llama      # where the eager time goes

Protocol:
1. Machine ceilings: fp32 GEMM GFLOP/s at the models' own linear shapes (F.linear, as
   nn.Linear runs them) and copy GB/s on a 256 MiB buffer (larger than any cache here).
2. For each architecture (LLaMA-, GPT-NeoX-, BLOOM-, OPT-like; 12 layers, d_model 512,
   50-90M parameters) build the transformers model and the taxonc model with the same weights
   (taxonc.compiler.interop.hf_pairs) and check the fp32 logits agree (max abs diff <= 1e-4). An
   architecture that fails the check gets no timings.
3. Time prefill (B=1, T=256 and T=1024; --quick: T=256 only) for four providers: HF eager
   (sdpa attention; BLOOM has only its own baddbmm attention), taxonc eager, HF under
   torch.compile and taxonc under torch.compile (dynamic=False, one graph per shape). The
   first call of each provider is reported separately (compile time), then >= 3 warm-up
   calls, then providers are interleaved (one call each per round, rotating the order) until
   each has >= 10 calls and >= 1 s (--quick: >= 5 calls and >= 0.5 s). Median with p20-p80.
4. The baselines (per-shape GEMM rates, copy bandwidth, HF eager at every shape, the last with
   >= 5 calls and the same minimum time) are measured again at the end; a change of more than
   5% is flagged as drift. The table also prints the Linux CPU pressure (PSI avg60) at the
   start and end: on a shared machine other tenants' load shows up there.

Output: one JSON line per measurement on stdout, then a table of time ratios taxonc/HF
(eager and compiled; < 1 means taxonc is faster) and of each provider's achieved FLOP/s as a
share of the GEMM ceiling. FLOPs of a forward = 2 x matmul parameters x tokens + causal
attention (2 x T^2 x d_attn per layer: QK^T and PV over the lower triangle). Matmul
parameters are the non-embedding parameters plus the output projection (vocab x d_model),
which is a real GEMM even when it is tied to the embedding. The GEMM ceiling for a model and
shape is the rate of exactly its linear layers (taxonc's fused layout: one qkv GEMM, one
gate_up GEMM, and the logits GEMM) run back to back with F.linear on the model's own weights.
It is timed as a fifth provider inside the interleaved rounds, so it sees the same machine
load as the four it is compared with; the start-of-run per-shape GEMM rates are reported too
and serve, with the end-of-run rerun, as the drift check.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repo root, when run as a script

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from taxonc.compiler.interop.hf_pairs import ARCHS, Dims, build_pair, hf_logits  # noqa: E402

TOL = 1e-4
DRIFT = 0.05
NOISY = 1.25
PROVIDERS = ("hf_eager", "taxonc_eager", "hf_compiled", "taxonc_compiled")

# 12 layers, d_model 512, 8 heads of 64, context 1024. Vocabulary as the families use
# (LLaMA 32000; GPT-NeoX/Pythia 50304; OPT 50272); BLOOM's 250880 would make the embedding
# the whole model, so it gets 32000.
BENCH_DIMS = {
    "llama": Dims(n_layers=12, d_model=512, n_heads=8, vocab_size=32000, context=1024),
    "neox": Dims(n_layers=12, d_model=512, n_heads=8, vocab_size=50304, context=1024),
    "bloom": Dims(n_layers=12, d_model=512, n_heads=8, vocab_size=32000, context=1024),
    "opt": Dims(n_layers=12, d_model=512, n_heads=8, vocab_size=50272, context=1024),
}


# --------------------------------------------------------------------------------------------
# environment
# --------------------------------------------------------------------------------------------

def cpu_info() -> dict:
    flags, model = [], platform.processor() or platform.machine()
    try:
        text = Path("/proc/cpuinfo").read_text()
        for line in text.splitlines():
            if line.startswith("model name") and model in ("", platform.machine()):
                model = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                flags = sorted(f for f in line.split(":", 1)[1].split() if f.startswith(("avx", "fma", "amx", "f16c")))
                break
    except OSError:
        pass
    return {"cpu": model, "cpu_flags": " ".join(flags), "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "threads": torch.get_num_threads(), "cores": os.cpu_count()}


def cpu_pressure() -> float | None:
    """Share of the last minute in which some runnable task waited for a CPU (Linux PSI).
    On an otherwise idle machine this stays near 0; other tenants' load shows up here."""
    try:
        fields = Path("/proc/pressure/cpu").read_text().split("\n")[0].split()
        return float(dict(f.split("=") for f in fields[1:])["avg60"]) / 100
    except (OSError, KeyError, ValueError):
        return None


def versions() -> dict:
    import transformers

    return {"torch": torch.__version__, "transformers": transformers.__version__}


ENV: dict = {}


def emit(record: dict) -> None:
    line = json.dumps({**record, **ENV}, sort_keys=False)
    print(line, flush=True)
    if ARGS.out:
        with open(ARGS.out, "a") as f:
            f.write(line + "\n")


# --------------------------------------------------------------------------------------------
# statistics and timing
# --------------------------------------------------------------------------------------------

def summarize(samples: list[float]) -> dict:
    q = statistics.quantiles(samples, n=5, method="inclusive")
    return {"median": statistics.median(samples), "p20": q[0], "p80": q[3], "reps": len(samples)}


def time_until(fn, min_reps: int, min_time: float, warmup: int = 3, max_reps: int = 10_000) -> list[float]:
    for _ in range(warmup):
        fn()
    samples: list[float] = []
    while len(samples) < max_reps and (len(samples) < min_reps or sum(samples) < min_time):
        t = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t)
    return samples


def time_interleaved(fns: dict, min_reps: int, min_time: float, max_reps: int = 200) -> dict[str, list[float]]:
    """One call per provider per round, the order rotated each round, until every provider has
    min_reps calls and min_time seconds."""
    names = list(fns)
    samples = {n: [] for n in names}
    rnd = 0
    while True:
        pending = [n for n in names if len(samples[n]) < max_reps and (len(samples[n]) < min_reps or sum(samples[n]) < min_time)]
        if not pending:
            return samples
        k = rnd % len(pending)
        for name in pending[k:] + pending[:k]:
            t = time.perf_counter()
            fns[name]()
            samples[name].append(time.perf_counter() - t)
        rnd += 1


# --------------------------------------------------------------------------------------------
# ceilings
# --------------------------------------------------------------------------------------------

def linear_shapes(arch: str, d: Dims, T: int) -> list[tuple[int, int, int, int]]:
    """(M, K, N, count) for every linear layer of the taxonc model, plus the logits GEMM."""
    ff, dm, L = d.ff(arch), d.d_model, d.n_layers
    shapes = [(T, dm, 3 * dm, L), (T, dm, dm, L)]
    if arch == "llama":
        shapes += [(T, dm, 2 * ff, L), (T, ff, dm, L)]
    else:
        shapes += [(T, dm, ff, L), (T, ff, dm, L)]
    shapes.append((T, dm, d.vocab_size, 1))
    return shapes


def measure_gemm(shape: tuple[int, int, int], min_reps: int, min_time: float) -> dict:
    M, K, N = shape
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(M, K, generator=gen)
    w = torch.randn(N, K, generator=gen)
    s = summarize(time_until(lambda: F.linear(x, w), min_reps, min_time))
    s["gflops"] = 2 * M * K * N / s["median"] / 1e9
    return s


def measure_gemms(shapes: set, min_reps: int, min_time: float, tag: str) -> dict:
    out = {}
    for shape in sorted(shapes):
        s = measure_gemm(shape, min_reps, min_time)
        out[shape] = s
        emit({"provider": "torch", "op": "gemm_f.linear", "phase": tag, "shape": "M=%d,K=%d,N=%d" % shape, "dtype": "float32",
              "median_s": s["median"], "p20_s": s["p20"], "p80_s": s["p80"], "reps": s["reps"],
              "gflops": round(s["gflops"], 2)})
    return out


def measure_copy(min_reps: int, min_time: float, tag: str, mib: int = 256) -> dict:
    n = mib * 2**20 // 4
    src = torch.randn(n)
    dst = torch.empty_like(src)
    s = summarize(time_until(lambda: dst.copy_(src), min_reps, min_time))
    s["gbps"] = 2 * src.nbytes / s["median"] / 1e9  # read + write
    emit({"provider": "torch", "op": "copy", "phase": tag, "shape": f"{mib}MiB", "dtype": "float32",
          "median_s": s["median"], "p20_s": s["p20"], "p80_s": s["p80"], "reps": s["reps"], "gbps": round(s["gbps"], 2)})
    return s


def ceiling_gflops(arch: str, d: Dims, T: int, gemms: dict) -> float:
    flops = secs = 0.0
    for M, K, N, count in linear_shapes(arch, d, T):
        flops += count * 2 * M * K * N
        secs += count * gemms[(M, K, N)]["median"]
    return flops / secs / 1e9


# --------------------------------------------------------------------------------------------
# models
# --------------------------------------------------------------------------------------------

def matmul_params(ours: torch.nn.Module, d: Dims) -> int:
    n = sum(p.numel() for name, p in ours.named_parameters() if not name.startswith("embed."))
    if not any(name.startswith("head.lm_head") for name, _ in ours.named_parameters()):
        n += d.vocab_size * d.d_model  # tied: the logits GEMM still runs
    return n


def forward_flops(ours: torch.nn.Module, d: Dims, T: int) -> float:
    return 2 * matmul_params(ours, d) * T + 2 * d.n_layers * T * T * d.d_model


def gemm_sequence(ours: torch.nn.Module, d: Dims, T: int):
    """A callable running every GEMM of the taxonc model once at T tokens, and its FLOPs."""
    weights = [m.weight for m in ours.modules() if isinstance(m, torch.nn.Linear)]
    if not any(name.startswith("head.lm_head") for name, _ in ours.named_parameters()):
        weights.append(ours.embed.tok.weight)  # tied logits GEMM
    gen = torch.Generator().manual_seed(T)
    xs = {K: torch.randn(T, K, generator=gen) for K in {w.shape[1] for w in weights}}
    flops = sum(2 * T * w.shape[0] * w.shape[1] for w in weights)

    def run():
        for w in weights:
            F.linear(xs[w.shape[1]], w)

    return run, flops


def check_agreement(hf, ours, d: Dims, T: int) -> float:
    ids = torch.randint(0, d.vocab_size, (1, T), generator=torch.Generator().manual_seed(T))
    return (hf_logits(hf, ids) - ours(ids)).abs().max().item()


def run_arch(arch: str, lengths: list[int], gemms: dict, results: dict, keep_hf: dict) -> None:
    d = BENCH_DIMS[arch]
    t0 = time.perf_counter()
    hf, ours, _ = build_pair(arch, d, attn_implementation="sdpa", seed=0)
    n_params = sum(p.numel() for p in ours.parameters())
    build_s = time.perf_counter() - t0
    print(f"# {arch}: {n_params / 1e6:.1f}M params (taxonc), built in {build_s:.1f}s", file=sys.stderr, flush=True)
    for T in lengths:
        diff = check_agreement(hf, ours, d, T)
        ok = diff <= TOL
        emit({"provider": "check", "op": "logits_max_abs_diff", "arch": arch, "shape": f"B=1,T={T}", "dtype": "float32",
              "max_abs_diff": diff, "tol": TOL, "ok": ok})
        if not ok:
            print(f"# {arch} T={T}: logits disagree (max abs diff {diff:.3g} > {TOL}); no timings", file=sys.stderr)
            return
    keep_hf[arch] = hf
    torch._dynamo.reset()
    hf_c = torch.compile(hf, dynamic=False)
    ours_c = torch.compile(ours, dynamic=False)
    models = {"hf_eager": (hf, True), "taxonc_eager": (ours, False), "hf_compiled": (hf_c, True), "taxonc_compiled": (ours_c, False)}
    for T in lengths:
        ids = torch.randint(0, d.vocab_size, (1, T), generator=torch.Generator().manual_seed(1000 + T))
        fns = {}
        for name, (m, is_hf) in models.items():
            fns[name] = (lambda m=m: m(input_ids=ids, use_cache=False).logits) if is_hf else (lambda m=m: m(ids))
        ref = fns["hf_eager"]()
        for name, fn in fns.items():  # first call (compile for the compiled providers), then warm-up
            t = time.perf_counter()
            out = fn()
            first = time.perf_counter() - t
            diff = (out - ref).abs().max().item()
            for _ in range(ARGS.warmup):
                fn()
            emit({"provider": name, "op": "first_call" if "eager" in name else "compile", "arch": arch, "shape": f"B=1,T={T}",
                  "dtype": "float32", "seconds": first, "max_abs_diff_vs_hf_eager": diff})
        gemm_fn, gemm_flops = gemm_sequence(ours, d, T)
        for _ in range(ARGS.warmup):
            gemm_fn()
        samples = time_interleaved({**fns, "gemm_ceiling": gemm_fn}, ARGS.min_reps, ARGS.min_time)
        flops = forward_flops(ours, d, T)
        g = summarize(samples.pop("gemm_ceiling"))
        ceiling = gemm_flops / g["median"] / 1e9
        emit({"provider": "torch", "op": "gemm_ceiling_interleaved", "arch": arch, "shape": f"B=1,T={T}", "dtype": "float32",
              "median_s": g["median"], "p20_s": g["p20"], "p80_s": g["p80"], "reps": g["reps"],
              "gflop": round(gemm_flops / 1e9, 3), "gflops": round(ceiling, 2),
              "gflops_from_start_measurement": round(ceiling_gflops(arch, d, T, gemms), 2)})
        stats = {name: summarize(s) for name, s in samples.items()}
        for name, s in stats.items():
            base = stats["hf_compiled" if "compiled" in name else "hf_eager"]["median"]
            achieved = flops / s["median"] / 1e9
            results[(arch, T, name)] = {**s, "gflops": achieved, "ceiling": ceiling, "ratio": s["median"] / base}
            emit({"provider": name, "op": "prefill", "arch": arch, "shape": f"B=1,T={T}", "dtype": "float32",
                  "median_s": s["median"], "p20_s": s["p20"], "p80_s": s["p80"], "reps": s["reps"],
                  "ratio": round(s["median"] / base, 4), "ratio_of": "hf_compiled" if "compiled" in name else "hf_eager",
                  "gflop_per_forward": round(flops / 1e9, 3), "achieved_gflops": round(achieved, 2),
                  "gemm_ceiling_gflops": round(ceiling, 2), "ceiling_share": round(achieved / ceiling, 4),
                  "params": n_params})
    del hf_c, ours_c, models, fns
    torch._dynamo.reset()


def rerun_baselines(lengths: list[int], gemms_before: dict, copy_before: dict, results: dict, keep_hf: dict) -> list[str]:
    flags = []
    gemms_after = measure_gemms(set(gemms_before), ARGS.gemm_reps, ARGS.gemm_time, "end")
    for shape, s in gemms_after.items():
        change = s["median"] / gemms_before[shape]["median"] - 1
        if abs(change) > DRIFT:
            flags.append(f"GEMM M={shape[0]},K={shape[1]},N={shape[2]}: {change:+.1%}")
    copy_after = measure_copy(ARGS.gemm_reps, ARGS.gemm_time, "end")
    change = copy_after["median"] / copy_before["median"] - 1
    if abs(change) > DRIFT:
        flags.append(f"copy 256MiB: {change:+.1%}")
    for arch, hf in keep_hf.items():
        d = BENCH_DIMS[arch]
        for T in lengths:
            ids = torch.randint(0, d.vocab_size, (1, T), generator=torch.Generator().manual_seed(1000 + T))
            s = summarize(time_until(lambda: hf(input_ids=ids, use_cache=False).logits, 5, ARGS.min_time, ARGS.warmup))
            before = results[(arch, T, "hf_eager")]["median"]
            change = s["median"] / before - 1
            emit({"provider": "hf_eager", "op": "prefill", "phase": "end", "arch": arch, "shape": f"B=1,T={T}", "dtype": "float32",
                  "median_s": s["median"], "p20_s": s["p20"], "p80_s": s["p80"], "reps": s["reps"],
                  "change_vs_start": round(change, 4), "drift": abs(change) > DRIFT})
            if abs(change) > DRIFT:
                flags.append(f"hf_eager {arch} T={T}: {change:+.1%}")
    return flags


def print_table(results: dict, lengths: list[int], flags: list[str], env: dict) -> None:
    print()
    print(f"CPU prefill, fp32, B=1 -- torch {env['torch']}, transformers {env['transformers']}, {env['cpu']}, "
          f"{env['threads']} threads, {env['torch_cpu_capability']}")
    print("ratio = taxonc median / HF median (< 1: taxonc faster); share = achieved FLOP/s / GEMM ceiling (the model's own GEMMs alone, timed in the same rounds)")
    head = (f"{'arch':6} {'T':>5} {'HF eager':>10} {'tx eager':>10} {'ratio':>6} {'HF comp':>10} {'tx comp':>10} {'ratio':>6}"
            f" {'ceiling':>8}  {'share: HFe':>10} {'txe':>5} {'HFc':>5} {'txc':>5}")
    print(head)
    print("-" * len(head))
    for arch in ARCHS:
        for T in lengths:
            if arch not in ARGS.archs:
                continue
            if (arch, T, "hf_eager") not in results:
                print(f"{arch:6} {T:>5}  (no timings: the logits check failed)")
                continue
            r = {p: results[(arch, T, p)] for p in PROVIDERS}

            def ms(p):
                return f"{r[p]['median'] * 1e3:7.1f} ms"

            share = [f"{r[p]['gflops'] / r[p]['ceiling']:.0%}" for p in PROVIDERS]
            noisy = any(r[p]["p80"] / r[p]["p20"] > NOISY for p in PROVIDERS)
            print(f"{arch:6} {T:>5} {ms('hf_eager'):>10} {ms('taxonc_eager'):>10} {r['taxonc_eager']['ratio']:6.2f}"
                  f" {ms('hf_compiled'):>10} {ms('taxonc_compiled'):>10} {r['taxonc_compiled']['ratio']:6.2f}"
                  f" {r['hf_eager']['ceiling']:5.0f} GF  {share[0]:>10} {share[1]:>5} {share[2]:>5} {share[3]:>5}"
                  + ("  noisy" if noisy else ""))
    print(f"p20-p80 of each median is in the JSON lines; 'noisy': some provider's p80/p20 > {NOISY}.")
    pressure = [env.get("cpu_pressure_start"), env.get("cpu_pressure_end")]
    if None not in pressure:
        print(f"CPU pressure (share of the last minute a runnable task waited for a CPU) at start {pressure[0]:.0%}, "
              f"at end {pressure[1]:.0%}" + ("  -- other load on this machine; timings are suspect" if max(pressure) > 0.10 else ""))
    if flags:
        print("DRIFT > 5% between the start and the end of the run (timings above are suspect):")
        for f in flags:
            print("  " + f)
    else:
        print("No baseline drifted more than 5% between the start and the end of the run.")


# --------------------------------------------------------------------------------------------
# profile
# --------------------------------------------------------------------------------------------

def profile(arch: str, T: int) -> None:
    from torch.profiler import ProfilerActivity, profile as torch_profile

    d = BENCH_DIMS[arch]
    hf, ours, _ = build_pair(arch, d, attn_implementation="sdpa", seed=0)
    ids = torch.randint(0, d.vocab_size, (1, T), generator=torch.Generator().manual_seed(1))
    for name, fn in (("hf_eager", lambda: hf(input_ids=ids, use_cache=False).logits), ("taxonc_eager", lambda: ours(ids))):
        for _ in range(3):
            fn()
        with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(3):
                fn()
        print(f"== {name} {arch} B=1 T={T}, 3 calls")
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))


# --------------------------------------------------------------------------------------------

def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="T=256 only, fewer repetitions (about 3 minutes on 2 cores)")
    p.add_argument("--archs", default=",".join(ARCHS), help=f"comma-separated subset of {','.join(ARCHS)}")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    p.add_argument("--out", default=None, help="also append the JSON lines to this file")
    p.add_argument("--profile", metavar="ARCH", default=None, help="profile HF eager and taxonc eager for ARCH at T=256 and exit")
    a = p.parse_args(argv)
    a.lengths = [256] if a.quick else [256, 1024]
    a.min_reps, a.min_time = (5, 0.5) if a.quick else (10, 1.0)
    a.warmup = 3
    a.gemm_reps, a.gemm_time = (5, 0.1) if a.quick else (10, 0.3)
    a.archs = [x.strip() for x in a.archs.split(",") if x.strip()]
    bad = [x for x in a.archs if x not in ARCHS]
    if bad:
        p.error(f"unknown arch {bad}; known: {ARCHS}")
    return a


def main(argv=None) -> int:
    global ARGS
    ARGS = parse_args(argv)
    if ARGS.threads:
        torch.set_num_threads(ARGS.threads)
    torch.manual_seed(0)
    with torch.inference_mode():
        if ARGS.profile:
            profile(ARGS.profile, 256)
            return 0
        env = {**versions(), **cpu_info()}
        ENV.update({"torch": env["torch"], "transformers": env["transformers"], "cpu_flags": env["cpu_flags"],
                    "threads": env["threads"]})
        env["cpu_pressure_start"] = cpu_pressure()
        start = time.perf_counter()
        shapes = {s[:3] for arch in ARGS.archs for T in ARGS.lengths for s in linear_shapes(arch, BENCH_DIMS[arch], T)}
        gemms = measure_gemms(shapes, ARGS.gemm_reps, ARGS.gemm_time, "start")
        copy = measure_copy(ARGS.gemm_reps, ARGS.gemm_time, "start")
        results, keep_hf = {}, {}
        for arch in ARGS.archs:
            run_arch(arch, ARGS.lengths, gemms, results, keep_hf)
        flags = rerun_baselines(ARGS.lengths, gemms, copy, results, keep_hf)
        env["cpu_pressure_end"] = cpu_pressure()
        emit({"provider": "machine", "op": "cpu_pressure_avg60", "start": env["cpu_pressure_start"], "end": env["cpu_pressure_end"],
              "cpu": env["cpu"], "torch_cpu_capability": env["torch_cpu_capability"], "cores": env["cores"]})
        print_table(results, ARGS.lengths, flags, env)
        print(f"GEMM peak at these shapes {max(s['gflops'] for s in gemms.values()):.0f} GFLOP/s; "
              f"copy {copy['gbps']:.1f} GB/s; total run {time.perf_counter() - start:.0f} s")
    return 0


ARGS = None

if __name__ == "__main__":
    raise SystemExit(main())
