"""CPU decode benchmark: taxonc generation with the KV cache vs recomputing the sequence, vs
HF `generate`, on one LLaMA-like config with the same weights; and KV-cache bytes MHA vs MQA.

    python benchmarks/cpu_decode.py [--quick] [--json-only]

Protocol (shared/perf.md): greedy decoding, token-for-token equality with HF checked before
any timing is printed; providers interleaved; median with p20-p80 over repeats; one JSON
line per measurement, then a table of ratios measured in this one run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from taxonc.compiler.interop.hf_pairs import Dims, build_pair  # noqa: E402

from taxonc.runtime.generate import generate  # noqa: E402
from taxonc.runtime.sampling import SamplerConfig  # noqa: E402


def _versions() -> dict:
    import transformers

    return {"torch": torch.__version__, "transformers": transformers.__version__, "threads": torch.get_num_threads()}


def _stats(samples: list[float]) -> dict:
    s = sorted(samples)
    return {"median": statistics.median(s), "p20": s[int(0.2 * (len(s) - 1))], "p80": s[int(0.8 * (len(s) - 1))], "n": len(s)}


def taxonc_generate(model, module, spec: dict, prompt: list[int], new: int) -> list[int]:
    return generate(model, model.new_cache, spec, prompt, SamplerConfig(), new).new_ids


def recompute_generate(model, prompt: list[int], new: int) -> list[int]:
    """No cache: every step runs the whole sequence again."""
    ids = torch.tensor([prompt])
    out = []
    for _ in range(new):
        token = int(model(ids)[0, -1].argmax())
        out.append(token)
        ids = torch.cat([ids, torch.tensor([[token]])], dim=1)
    return out


def hf_generate(hf, prompt: list[int], new: int) -> list[int]:
    ids = torch.tensor([prompt])
    out = hf.generate(ids, max_new_tokens=new, do_sample=False, min_new_tokens=new, pad_token_id=0, eos_token_id=None)
    return out[0, len(prompt):].tolist()


def kv_bytes(arch_dims: Dims, kv_heads: int) -> int:
    d_head = arch_dims.d_model // arch_dims.n_heads
    return 2 * kv_heads * d_head * arch_dims.n_layers * 4  # fp32 bytes per token


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats (about a minute)")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    dims = Dims(n_layers=8, d_model=512, n_heads=8, vocab_size=32000, context=1024)
    with torch.inference_mode():
        hf, ours, compiled = build_pair("llama", dims, attn_implementation="sdpa")
        module = sys.modules[type(ours).__module__]
        spec = compiled.spec.model_dump(mode="json")
        gen = torch.Generator().manual_seed(1)
        prompt = torch.randint(0, dims.vocab_size, (32,), generator=gen).tolist()
        new = 64
        a = taxonc_generate(ours, module, spec, prompt, new)
        b = hf_generate(hf, prompt, new)
        if a != b:
            print(json.dumps({"error": "taxonc and HF greedy tokens differ; no timings", "taxonc": a[:10], "hf": b[:10]}))
            return 1
        long_prompt = torch.randint(0, dims.vocab_size, (512 - 16,), generator=gen).tolist()
        reps = 3 if args.quick else 7
        providers = {
            "taxonc cached": lambda: taxonc_generate(ours, module, spec, prompt, new),
            "hf generate": lambda: hf_generate(hf, prompt, new),
        }
        long_providers = {
            "taxonc cached @512": lambda: taxonc_generate(ours, module, spec, long_prompt, 16),
            "taxonc recompute @512": lambda: recompute_generate(ours, long_prompt, 16),
        }
        times: dict[str, list[float]] = {k: [] for k in list(providers) + list(long_providers)}
        for group in (providers, long_providers):
            for fn in group.values():
                fn()  # warm-up
            for _ in range(reps):
                for name, fn in group.items():
                    start = time.perf_counter()
                    fn()
                    times[name].append(time.perf_counter() - start)
    results = {}
    for name, samples in times.items():
        tokens = 16 if "@512" in name else new
        stats = _stats(samples)
        results[name] = tokens / stats["median"]
        print(json.dumps({"provider": name, "op": "decode", "tokens": tokens, "prompt": 496 if "@512" in name else 32,
                          "dtype": "fp32", "median_s": stats["median"], "p20_s": stats["p20"], "p80_s": stats["p80"],
                          "tokens_per_s": results[name], **_versions()}))
    mha, mqa = kv_bytes(dims, dims.n_heads), kv_bytes(dims, 1)
    print(json.dumps({"kv_cache_bytes_per_token_fp32": {"mha": mha, "mqa": mqa}, "ratio": mha / mqa}))
    print()
    print(f"{'measure':45s} {'value':>10s}")
    print(f"{'greedy tokens equal to HF generate (64)':45s} {'yes':>10s}")
    print(f"{'taxonc cached / HF generate (tokens/s)':45s} {results['taxonc cached'] / results['hf generate']:>9.2f}x")
    print(f"{'cached / recompute at context 512':45s} {results['taxonc cached @512'] / results['taxonc recompute @512']:>9.2f}x")
    print(f"{'KV bytes per token, MHA / MQA (8 heads)':45s} {mha / mqa:>9.0f}x")
    for name, value in results.items():
        print(f"{name + ' tokens/s':45s} {value:>10.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
