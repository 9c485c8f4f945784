"""The trained model as an artifact `taxonc run` loads: model.py, spec.lock.json, graph.txt,
tokenizer.model and weights.safetensors, written through the ArtifactWriter (staged, sealed by
manifest.json, swapped in under a lock), so a crash leaves the previous artifact or none, never
a mixture."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from ..artifact_store import ArtifactWriter
from ..weights import save_weights
from .errors import disk_errors

# a run's end must not fail because a reader or a concurrent export briefly holds the lock
LOCK_WAIT_S = 60.0


def write_artifact(out_dir: Path, files: dict[str, str], state: dict[str, torch.Tensor],
                   build: Callable[..., torch.nn.Module], spec_sha256: str, spec_name: str,
                   tokenizer: bytes | None) -> Path:
    """Write the one artifact of a run; `state` is the full (unsharded) state dict."""
    out_dir = Path(out_dir)
    with disk_errors(out_dir, "artifact"), ArtifactWriter(out_dir, wait_s=LOCK_WAIT_S) as staging:
        for name, text in files.items():
            staging.write_text(name, text)
        if tokenizer is not None:
            staging.write_bytes("tokenizer.model", tokenizer)
        model = build(device="meta")
        model.load_state_dict(state, assign=True)
        save_weights(model, staging.file("weights.safetensors"), spec_sha256, spec_name)
    return out_dir
