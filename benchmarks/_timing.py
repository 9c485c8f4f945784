"""Timing and JSON-lines reporting shared by the GPU benchmark scripts (benchmarks/gpu_*.py).

The scripts import it as a sibling (`from _timing import ...`): run as a script, a file's own
folder is first on sys.path, and gpu_kernels.py puts this folder there before it imports the
per-family scripts.
"""

from __future__ import annotations

import json
from pathlib import Path
from time import perf_counter
from typing import Any, Callable

import torch


def _on_cuda(device: str | torch.device) -> bool:
    return torch.device(device).type == "cuda"


def sync(device: str | torch.device) -> None:
    """Wait for the device's queued work (nothing to wait for on the CPU)."""
    if _on_cuda(device):
        torch.cuda.synchronize(device)


def timer(device: str | torch.device) -> Callable[..., float]:
    """time_ms(call, inner=1): milliseconds per call, the mean over `inner` back-to-back calls.

    On CUDA a pair of CUDA events around the calls, waiting for the end event; elsewhere
    time.perf_counter."""
    if _on_cuda(device):
        def time_ms(call: Callable[[], Any], inner: int = 1) -> float:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(inner):
                call()
            end.record()
            end.synchronize()
            return start.elapsed_time(end) / inner
    else:
        def time_ms(call: Callable[[], Any], inner: int = 1) -> float:
            t0 = perf_counter()
            for _ in range(inner):
                call()
            return (perf_counter() - t0) * 1e3 / inner
    return time_ms


def samples_ms(fn: Callable[[], Any], device: str | torch.device, warmup: int, reps: int) -> list[float]:
    """`warmup` untimed calls, a sync, then `reps` calls each timed alone (ms, in call order)."""
    for _ in range(warmup):
        fn()
    sync(device)
    time_ms = timer(device)
    return [time_ms(fn) for _ in range(reps)]


class JsonLines:
    """emit(record): print the record as one JSON line (flushed), keep it in .records and, with
    `out`, append the line to that file. `extra` fields go first in every record."""

    def __init__(self, out: str | Path | None = None, extra: dict[str, Any] | None = None) -> None:
        self.out = Path(out) if out else None
        self.extra = dict(extra or {})
        self.records: list[dict[str, Any]] = []

    def __call__(self, record: dict[str, Any]) -> None:
        record = {**self.extra, **record}
        self.records.append(record)
        line = json.dumps(record, default=str)
        print(line, flush=True)
        if self.out:
            with self.out.open("a") as f:
                f.write(line + "\n")
