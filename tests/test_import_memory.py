"""Import streams: the memory a conversion adds stays under 1.3x the size of the weights.

Measured in a fresh subprocess: it imports a tiny checkpoint first (so that every module is
loaded and the compiler has run once), resets its peak resident size (/proc/self/clear_refs),
imports the checkpoint under test and reports the new peak. The peak counts memory-mapped pages
as well as copies, so a converter that held every tensor, or kept every shard mapped, would
exceed the bound.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers")

from transformers import AutoModelForCausalLM  # noqa: E402

from taxonc.compiler.interop.hf_pairs import Dims, hf_config  # noqa: E402

BOUND = 1.3
PROBE = """
import json, sys
from pathlib import Path
from taxonc.compiler.interop.hf_import import import_checkpoint

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
warm, src, out = map(Path, sys.argv[1:4])
import_checkpoint(warm, out.with_name(out.name + "-warm"))
open("/proc/self/clear_refs", "w").write("5")  # the peak restarts from the current size
before = status("VmRSS")
import_checkpoint(src, out)
print(json.dumps({"before": before, "peak": status("VmHWM")}))
"""


def _can_reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def _checkpoint(directory: Path, dims: Dims) -> Path:
    """transformers' own init (the values do not matter here), saved in 20 MB shards."""
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(hf_config("llama", dims), dtype=torch.float32)
    model.save_pretrained(directory, max_shard_size="20MB")
    return directory


def _peak_over_baseline(tmp_path: Path, dims: Dims) -> tuple[int, int]:
    warm = _checkpoint(tmp_path / "warm", Dims())
    src = _checkpoint(tmp_path / "src", dims)
    size = sum(p.stat().st_size for p in src.glob("*.safetensors"))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", PROBE, str(warm), str(src), str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert (tmp_path / "out" / "weights.safetensors").stat().st_size >= size * 0.99
    return report["peak"] - report["before"], size


@pytest.mark.skipif(not _can_reset_peak(), reason="needs Linux /proc/self/clear_refs to measure a peak")
def test_import_memory_stays_under_the_weights_size(tmp_path):
    # about 58 MB in three shards: vocab 16000 x 256 twice, 8 layers
    added, size = _peak_over_baseline(tmp_path, Dims(n_layers=8, d_model=256, n_heads=4, vocab_size=16000, d_ff=688))
    assert size > 40e6
    assert added < BOUND * size, f"import added {added / 1e6:.0f} MB for {size / 1e6:.0f} MB of weights"


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("TAXONC_SLOW"), reason="a few hundred MB; set TAXONC_SLOW=1")
@pytest.mark.skipif(not _can_reset_peak(), reason="needs Linux /proc/self/clear_refs to measure a peak")
def test_import_memory_at_a_few_hundred_megabytes(tmp_path):
    added, size = _peak_over_baseline(tmp_path, Dims(n_layers=12, d_model=768, n_heads=12, vocab_size=32000,
                                                     d_ff=2048, context=256))
    assert size > 300e6
    assert added < BOUND * size, f"import added {added / 1e6:.0f} MB for {size / 1e6:.0f} MB of weights"
