"""Compile a spec at tiny scale, load it with the runtime, and generate a few tokens.

    python examples/compile_and_run.py                      # examples/llama2-70b.toml
    python examples/compile_and_run.py specs/palm.toml      # any decoder spec

compile_spec is the driver behind `taxonc compile`: it returns the emitted files in memory,
and write_artifact puts them in a directory. taxonc.runtime.load imports that model.py and
builds the model with seeded random weights (there are no trained weights here, so the text
is noise; what the example shows is that the architecture runs and decodes through its KV
cache).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import torch

from taxonc.compiler.compile import compile_spec, write_artifact
from taxonc.runtime import SamplerConfig, Tokenizer, load
from taxonc.runtime.generate import generate

HERE = Path(__file__).resolve().parent


def main(spec: Path) -> None:
    compiled = compile_spec(spec, backend="torch", scale="tiny")
    s = compiled.summary()
    print(f"{s['name']} at tiny scale: {s['n_layers']} layers, d_model {s['d_model']}, "
          f"{s['n_heads']} heads / {s['n_kv_heads']} kv heads, {s['params']:,} parameters")

    with tempfile.TemporaryDirectory() as out:
        write_artifact(compiled, Path(out))  # model.py, spec.lock.json, graph.txt, manifest.json
        artifact = load(out, seed=0)

        tokenizer = Tokenizer.default()  # the small tokenizer shipped with taxonc (512 pieces)
        prompt = tokenizer.encode("A spec compiles to")
        with torch.no_grad():
            logits = artifact.model(torch.tensor([prompt]))
        print(f"forward: {len(prompt)} tokens -> logits {tuple(logits.shape)}")

        result = generate(artifact.model, artifact.new_cache, artifact.spec, prompt,
                          SamplerConfig(kind="greedy"), max_new_tokens=8)
        print(f"generated {len(result.new_ids)} tokens with the KV cache: {result.new_ids}")
        print(f"text: {tokenizer.decode(result.new_ids)!r}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE / "llama2-70b.toml")
