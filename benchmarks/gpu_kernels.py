"""GPU benchmark of taxonc's Triton kernels and one end-to-end prefill, in one run.

    python benchmarks/gpu_kernels.py [--only norms,glu_rotary,attention,moe,e2e] [--budget-s 280]
                                     [--out results.jsonl] [--e2e-dir out/gpu]

Each part reports bf16 figures against PyTorch eager and torch.compile (the per-family
scripts benchmarks/gpu_<family>.py hold the cases). Parts run in order until the time budget
is spent; a skipped part says so. The end-to-end part loads two emitted models of the same
1B-class spec (prepare them with --prepare on a machine with taxonc installed): the torch
backend and the Triton backend, with the same weights, and reports prefill tokens/s and MFU.
On a CPU it runs every part at tiny shapes as a smoke test.
"""

from __future__ import annotations

import argparse
import importlib
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch

from _timing import JsonLines, samples_ms

PARTS = ("norms", "glu_rotary", "attention", "moe", "e2e")
# bf16 dense peak of an H100 SXM (NVIDIA datasheet); MFU below is relative to it.
PEAK_BF16_FLOPS = {"H100": 989e12, "H200": 989e12}
E2E_SETS = ["dims.n_layers=22", "dims.d_model=2048", "dims.n_heads=32", "attention.kind=\"grouped-query\"",
            "attention.n_kv_heads=4", "dims.d_ff=5632", "dims.d_head=64", "dims.context=2048"]


def _bench_module(name: str):
    here = Path(__file__).resolve().parent
    sys.path.insert(0, str(here))
    return importlib.import_module(f"gpu_{name}")


def prepare(out_dir: Path) -> None:
    """Emit the two model.py files of the end-to-end spec (needs taxonc installed)."""
    from taxonc.compiler.compile import compile_spec

    root = Path(__file__).resolve().parent.parent
    out_dir.mkdir(parents=True, exist_ok=True)
    for backend in ("torch", "triton"):
        compiled = compile_spec(root / "specs" / "llama-7b.toml", backend=backend, sets=E2E_SETS)
        (out_dir / f"llama-1b-{backend}.py").write_text(compiled.files["model.py"])
        (out_dir / "summary.json").write_text(json.dumps(compiled.summary()))
    print(f"wrote {out_dir}")


def _load(path: Path):
    from taxonc.runtime.artifact import import_model

    return import_model(path)


def _time(fn: Callable[[], Any], device: str, reps: int = 10) -> float:
    """Seconds per call: the upper median of `reps` calls on CUDA (max(2, reps // 5) on a CPU)
    after 3 warm-up calls, each timed alone."""
    times = samples_ms(fn, device, warmup=3, reps=reps if device == "cuda" else max(2, reps // 5))
    return sorted(times)[len(times) // 2] / 1e3


def bench_e2e(emit: Callable[[dict], None], device: str, e2e_dir: Path) -> None:
    summary = json.loads((e2e_dir / "summary.json").read_text())
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    torch_mod, triton_mod = _load(e2e_dir / "llama-1b-torch.py"), _load(e2e_dir / "llama-1b-triton.py")
    torch.manual_seed(0)
    reference = torch_mod.build(device=device, dtype=dtype).eval()
    kernels = triton_mod.build(device=device, dtype=dtype).eval()
    kernels.load_state_dict(reference.state_dict())
    seq = 2048 if device == "cuda" else 16
    ids = torch.randint(0, summary["vocab_size"], (1, seq), device=device)
    with torch.inference_mode():
        a, b = reference(ids).float(), kernels(ids).float()
    agree = float((a - b).abs().max())
    params = sum(p.numel() for p in reference.parameters())
    flops = 2 * params * seq  # forward matmuls; attention adds ~4 * layers * seq^2 * d / 2 more, counted below
    flops += 4 * summary["n_layers"] * (seq * (seq + 1) / 2) * summary["n_heads"] * summary["d_head"]
    peak = next((v for k, v in PEAK_BF16_FLOPS.items() if device == "cuda" and k in torch.cuda.get_device_name()), None)
    providers = {"torch-backend eager": reference, "triton-backend": kernels}
    if device == "cuda":
        start = time.perf_counter()
        compiled = torch.compile(reference)
        with torch.inference_mode():
            compiled(ids)
        emit({"part": "e2e", "provider": "torch-backend compiled", "compile_s": time.perf_counter() - start})
        providers["torch-backend compiled"] = compiled
    base = None
    for name, model in providers.items():
        with torch.inference_mode():
            seconds = _time(lambda: model(ids), device)
        base = base or seconds
        emit({"part": "e2e", "provider": name, "spec": "llama-7b --set (1.1B, GQA 32/4)", "tokens": seq,
              "ms": seconds * 1e3, "tokens_per_s": seq / seconds, "mfu": (flops / seconds / peak) if peak else None,
              "speedup_vs_torch_eager": base / seconds, "max_abs_logit_diff_vs_torch": agree if name == "triton-backend" else 0.0})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=",".join(PARTS))
    parser.add_argument("--budget-s", type=float, default=280)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--e2e-dir", type=Path, default=Path("out/gpu"))
    parser.add_argument("--prepare", action="store_true", help="emit the end-to-end models and exit")
    args = parser.parse_args()
    if args.prepare:
        prepare(args.e2e_dir)
        return
    device = "cuda" if torch.cuda.is_available() else "cpu"
    card = torch.cuda.get_device_name() if device == "cuda" else platform.processor() or "cpu"
    emit = JsonLines(args.out, extra={"card": card, "torch": torch.__version__})
    start = time.perf_counter()
    for part in args.only.split(","):
        elapsed = time.perf_counter() - start
        if elapsed > args.budget_s:
            emit({"part": part, "skipped": f"time budget spent ({elapsed:.0f} s)"})
            continue
        try:
            if part == "e2e":
                bench_e2e(emit, device, args.e2e_dir)
            else:
                _bench_module(part).bench(lambda r, part=part: emit({"part": part, **r}), device=device)
        except Exception as exc:  # one part failing must not lose the others' figures
            emit({"part": part, "error": f"{type(exc).__name__}: {exc}"[:500]})
    emit({"part": "done", "wall_s": time.perf_counter() - start})


if __name__ == "__main__":
    main()
