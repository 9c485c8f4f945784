#!/usr/bin/env python
"""CPU training-step benchmark: taxonc's training step against transformers' on the same model.

    python benchmarks/train_cpu.py [--quick] [--threads N] [--batch B] [--seq T]

Protocol:
1. A LLaMA-like model (default 4 layers, d_model 256, 4 heads, vocabulary 512) is built twice
   with identical fp32 weights: transformers' LlamaForCausalLM and taxonc's emitted model
   (taxonc.compiler.interop.hf). Their logits must agree (max abs diff <= 1e-4) before anything
   is timed.
2. One training step = forward, cross-entropy over every position, backward, gradient-norm
   clip at 1.0, AdamW step (lr 1e-3, betas 0.9/0.95, weight decay 0.1 on matrices, foreach=False
   for both, as taxonc's loop runs it). taxonc's step is the loop's own pieces
   (runtime.train.losses, runtime.train.optim); transformers' computes the same loss from its
   logits. Same batch (B sequences of T tokens), same data.
3. The providers alternate (one step each per round, rotating the order) after 3 warm-up steps
   each, until each has >= 10 steps and >= 2 s (--quick: >= 3 steps). Median and p20-p80.
4. MFU: training FLOPs per step = 3 x forward FLOPs (forward = 2 x matmul parameters x tokens
   + causal attention 2 x T^2 x d_model per layer), divided by the step time and by the
   machine's fp32 GEMM rate measured at the model's own MLP shape (F.linear, same threads).

Output: one JSON line per provider, then a line with the ratio tokens/s taxonc / transformers
(> 1 means taxonc is faster). Printed, never asserted.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))


def gemm_gflops(m: int, k: int, n: int, seconds: float = 0.5) -> float:
    x, w = torch.randn(m, k), torch.randn(n, k)
    F.linear(x, w)
    calls, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        F.linear(x, w)
        calls += 1
    return 2 * m * k * n * calls / (time.perf_counter() - start) / 1e9


def forward_flops(model: torch.nn.Module, d_model: int, n_layers: int, batch: int, seq: int) -> float:
    matmul = sum(p.numel() for n, p in model.named_parameters() if p.dim() >= 2 and "embed" not in n)
    return 2 * matmul * batch * seq + n_layers * 2 * seq * seq * d_model * batch


def make_step(model: torch.nn.Module, logits_of, ids: torch.Tensor):
    from taxonc.runtime.train.losses import token_losses
    from taxonc.runtime.train.optim import build_optimizer, clip_gradients
    from taxonc.runtime.train.recipe import OptimizerConfig, OptimizerKind

    optimizer = build_optimizer(model, OptimizerConfig(OptimizerKind.ADAMW, weight_decay=0.1), lr=1e-3)

    def step() -> float:
        optimizer.zero_grad(set_to_none=True)
        loss = token_losses(logits_of(ids[:, :-1]), ids[:, 1:]).mean()
        loss.backward()
        clip_gradients(model, 1.0)
        optimizer.step()
        return loss.detach().item()

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description="taxonc vs transformers: CPU training step")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--width", type=int, default=256)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from taxonc.compiler.interop.hf_pairs import Dims, build_pair, hf_logits

    dims = Dims(n_layers=args.layers, d_model=args.width, n_heads=max(1, args.width // 64), vocab_size=512,
                context=max(args.seq, 64))
    hf, ours, _ = build_pair("llama", dims)
    ids = torch.randint(0, dims.vocab_size, (args.batch, args.seq + 1), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        diff = float((hf_logits(hf, ids[:, :-1]) - ours(ids[:, :-1])).abs().max())
    if diff > 1e-4:
        raise SystemExit(f"logits disagree (max abs diff {diff:.2e}); nothing timed")
    hf.train(), ours.train()
    steps = {"taxonc": make_step(ours, ours, ids), "transformers": make_step(hf, lambda x: hf_logits(hf, x), ids)}
    for step in steps.values():
        for _ in range(3):
            step()
    times: dict[str, list[float]] = {name: [] for name in steps}
    need_calls, need_s = (3, 0.0) if args.quick else (10, 2.0)
    order = list(steps)
    while min(len(t) for t in times.values()) < need_calls or min(sum(t) for t in times.values()) < need_s:
        for name in order:
            start = time.perf_counter()
            steps[name]()
            times[name].append(time.perf_counter() - start)
        order = order[1:] + order[:1]
    d_ff = dims.ff("llama")
    ceiling = gemm_gflops(args.batch * args.seq, args.width, d_ff, 0.2 if args.quick else 1.0)
    flops = 3 * forward_flops(ours, args.width, args.layers, args.batch, args.seq)
    tokens = args.batch * args.seq
    rates = {}
    for name, t in times.items():
        median = statistics.median(t)
        q = statistics.quantiles(t, n=5) if len(t) >= 2 else [median] * 4
        rates[name] = tokens / median
        print(json.dumps({"provider": name, "step_ms": median * 1e3, "p20_ms": q[0] * 1e3, "p80_ms": q[3] * 1e3,
                          "steps": len(t), "tokens_per_s": tokens / median, "gflops": flops / median / 1e9,
                          "mfu_vs_gemm": flops / median / 1e9 / ceiling, "gemm_ceiling_gflops": ceiling,
                          "batch": args.batch, "seq": args.seq, "threads": args.threads,
                          "params": sum(p.numel() for p in ours.parameters()), "logit_diff": diff}))
    print(f"tokens/s taxonc / transformers: {rates['taxonc'] / rates['transformers']:.2f}x "
          f"(taxonc {rates['taxonc']:,.0f}, transformers {rates['transformers']:,.0f}; GEMM ceiling {ceiling:.1f} GFLOP/s)")


if __name__ == "__main__":
    main()
