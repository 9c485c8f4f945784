"""Import benchmark: `taxonc import` vs transformers' `from_pretrained` on one random LLaMA checkpoint
(wall time and peak resident memory, each in a fresh process), then greedy decode tokens/s of the
imported taxonc model vs transformers' `generate` on the same weights.

    python benchmarks/import.py [--size 1b|300m|tiny] [--dtype bf16|fp32] [--new-tokens 32] [--out FILE]

The checkpoint is written tensor by tensor (random, std 0.02) without building a model, so making
a 1B checkpoint needs no more memory than its largest tensor. Greedy tokens are checked equal
before any decode speed is printed. One JSON line per measurement, then a summary table.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from _timing import JsonLines  # noqa: E402

# LLaMA-shaped sizes; "1b" is TinyLlama-1.1B's shape (22 layers, d_model 2048, GQA 32/4, d_ff 5632)
SIZES = {
    "1b": dict(num_hidden_layers=22, hidden_size=2048, num_attention_heads=32, num_key_value_heads=4,
               intermediate_size=5632, vocab_size=32000),
    "300m": dict(num_hidden_layers=12, hidden_size=1024, num_attention_heads=16, num_key_value_heads=16,
                 intermediate_size=2816, vocab_size=32000),
    "tiny": dict(num_hidden_layers=2, hidden_size=128, num_attention_heads=4, num_key_value_heads=2,
                 intermediate_size=352, vocab_size=1000),
}
DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}

# Each measured step runs in its own process, so each peak RSS is that step's alone.
CHILD = r"""
import json, sys, time
from pathlib import Path
import torch
from transformers import AutoModelForCausalLM
from taxonc.compiler.interop.hf_import import import_checkpoint

def status(key):
    return next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith(key + ":"))
mode, src, out = sys.argv[1:4]
baseline = status("VmRSS")  # after imports, before any weight is read
t0 = time.perf_counter()
if mode == "taxonc":
    import_checkpoint(Path(src), Path(out))
else:
    AutoModelForCausalLM.from_pretrained(src, dtype="auto")
seconds = time.perf_counter() - t0
print(json.dumps({"seconds": seconds, "peak_rss_bytes": status("VmHWM"), "baseline_rss_bytes": baseline}))
"""


def write_checkpoint(directory: Path, size: str, dtype: torch.dtype) -> int:
    """config.json and model.safetensors for a random LLaMA; returns the parameter count."""
    from transformers import AutoModelForCausalLM, LlamaConfig

    from taxonc.compiler.interop.safetensors_stream import StreamWriter

    config = LlamaConfig(**SIZES[size], max_position_embeddings=2048, tie_word_embeddings=False,
                         rms_norm_eps=1e-5, dtype=str(dtype).removeprefix("torch."))
    directory.mkdir(parents=True, exist_ok=True)
    config.save_pretrained(directory)
    with torch.device("meta"):
        shapes = {k: tuple(v.shape) for k, v in AutoModelForCausalLM.from_config(config).state_dict().items()}
    gen = torch.Generator().manual_seed(0)
    with open(directory / "model.safetensors", "wb") as handle:
        writer = StreamWriter(handle, [(k, dtype, s) for k, s in shapes.items()], {"format": "pt"})
        for name, shape in shapes.items():
            t = torch.ones(shape) if len(shape) == 1 else torch.randn(shape, generator=gen) * 0.02
            writer.write(name, t.to(dtype))
        writer.close()
    return sum(torch.Size(s).numel() for s in shapes.values())


def measure(mode: str, src: Path, out: Path) -> dict:
    done = subprocess.run([sys.executable, "-c", CHILD, mode, str(src), str(out)], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{mode} failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def decode(artifact: Path, src: Path, new_tokens: int, emit: JsonLines) -> dict:
    from transformers import AutoModelForCausalLM

    from taxonc.runtime.artifact import load
    from taxonc.runtime.generate import generate
    from taxonc.runtime.sampling import SamplerConfig

    prompt = torch.randint(0, 1000, (16,), generator=torch.Generator().manual_seed(1)).tolist()
    ours = load(artifact)
    generate(ours.model, ours.new_cache, ours.spec, prompt, SamplerConfig(), 2)  # warm-up
    t0 = time.perf_counter()
    got = generate(ours.model, ours.new_cache, ours.spec, prompt, SamplerConfig(), new_tokens).new_ids
    taxonc_s = time.perf_counter() - t0
    del ours
    hf = AutoModelForCausalLM.from_pretrained(src, dtype="auto").eval()
    with torch.inference_mode():
        hf.generate(torch.tensor([prompt]), max_new_tokens=2, do_sample=False, pad_token_id=0)  # warm-up
        t0 = time.perf_counter()
        want = hf.generate(torch.tensor([prompt]), max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                           do_sample=False, pad_token_id=0, eos_token_id=None)[0, len(prompt):].tolist()
        hf_s = time.perf_counter() - t0
    same = got == want
    emit({"op": "greedy_tokens_equal", "ok": same, "n": new_tokens})
    if not same:
        raise SystemExit(f"greedy tokens differ: taxonc {got} vs transformers {want}")
    rates = {"taxonc": new_tokens / taxonc_s, "transformers": new_tokens / hf_s}
    for provider, rate in rates.items():
        emit({"provider": provider, "op": "decode", "tokens_per_s": round(rate, 2), "new_tokens": new_tokens,
              "prompt_tokens": len(prompt)})
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="1b")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="bf16")
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--out", type=Path, default=None, help="Also append the JSON lines to this file.")
    args = parser.parse_args()
    import transformers

    emit = JsonLines(args.out, {"size": args.size, "dtype": args.dtype, "torch": torch.__version__,
                                "transformers": transformers.__version__, "threads": torch.get_num_threads()})
    with tempfile.TemporaryDirectory(prefix="taxonc-import-bench-") as tmp:
        src = Path(tmp) / "hf"
        params = write_checkpoint(src, args.size, DTYPES[args.dtype])
        size = (src / "model.safetensors").stat().st_size
        emit({"op": "checkpoint", "params": params, "weights_bytes": size})
        results = {}
        for mode in ("taxonc", "transformers"):  # from_pretrained second: the file is in the page cache for both
            results[mode] = r = measure(mode, src, Path(tmp) / "artifact")
            added = r["peak_rss_bytes"] - r["baseline_rss_bytes"]
            emit({"provider": mode, "op": "import" if mode == "taxonc" else "from_pretrained", **r,
                  "added_rss_over_weights": round(added / size, 3)})
        rates = decode(Path(tmp) / "artifact", src, args.new_tokens, emit)
    print(f"\n{params / 1e9:.2f}B params, {size / 2**30:.2f} GiB of {args.dtype} weights")
    print(f"{'':>24}{'taxonc':>12}{'transformers':>14}")
    print(f"{'load/convert (s)':>24}{results['taxonc']['seconds']:>12.2f}{results['transformers']['seconds']:>14.2f}")
    print(f"{'peak RSS (GiB)':>24}{results['taxonc']['peak_rss_bytes'] / 2**30:>12.2f}"
          f"{results['transformers']['peak_rss_bytes'] / 2**30:>14.2f}")
    added = {m: (r["peak_rss_bytes"] - r["baseline_rss_bytes"]) / size for m, r in results.items()}
    print(f"{'peak - baseline / weights':>24}{added['taxonc']:>12.2f}{added['transformers']:>14.2f}")
    print(f"{'decode tokens/s':>24}{rates['taxonc']:>12.2f}{rates['transformers']:>14.2f}")


if __name__ == "__main__":
    main()
