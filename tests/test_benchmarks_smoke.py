"""The GPU benchmark driver runs end to end on a CPU at tiny shapes (GPU figures: docs/benchmarks.md)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from .conftest import ROOT
from .helpers import run_script


@pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") != "1", reason="needs the Triton interpreter on CPU")
def test_gpu_driver_end_to_end_part_on_cpu(tmp_path: Path) -> None:
    from taxonc.compiler.compile import compile_spec

    for backend in ("torch", "triton"):
        compiled = compile_spec(ROOT / "specs" / "llama-7b.toml", backend=backend, scale="tiny")
        (tmp_path / f"llama-1b-{backend}.py").write_text(compiled.files["model.py"])
        (tmp_path / "summary.json").write_text(json.dumps(compiled.summary()))
    records = run_script("benchmarks/gpu_kernels.py", "--only", "e2e", "--e2e-dir", str(tmp_path))
    records = [r for r in records if r["part"] == "e2e"]
    assert not [r for r in records if "error" in r], records
    by_provider = {r["provider"]: r for r in records}
    assert set(by_provider) == {"torch-backend eager", "triton-backend"}
    assert by_provider["triton-backend"]["max_abs_logit_diff_vs_torch"] < 1e-4
    assert all(r["tokens_per_s"] > 0 for r in records)


@pytest.mark.slow  # imports transformers in a subprocess: ~10-25 s
def test_train_cpu_benchmark_runs_both_training_steps() -> None:
    records = run_script("benchmarks/train_cpu.py", "--quick", "--layers", "1", "--width", "64", "--batch", "2", "--seq", "32")
    assert {r["provider"] for r in records} == {"taxonc", "transformers"}
    assert all(r["tokens_per_s"] > 0 and r["logit_diff"] <= 1e-4 and 0 < r["mfu_vs_gemm"] for r in records)
