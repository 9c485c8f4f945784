"""The trained model as an artifact `taxonc run` loads: model.py, spec.lock.json, graph.txt,
tokenizer.model and weights.safetensors, written into a temporary folder that is renamed
into place whole, so a crash leaves the previous artifact or none, never a mixture."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch

from ..weights import save_weights
from .errors import disk_errors


def write_artifact(out_dir: Path, files: dict[str, str], state: dict[str, torch.Tensor],
                   build: Callable[..., torch.nn.Module], spec_sha256: str, spec_name: str,
                   tokenizer: bytes | None) -> Path:
    """Write the one artifact of a run; `state` is the full (unsharded) state dict."""
    out_dir = Path(out_dir)
    with disk_errors(out_dir, "artifact"):
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
        try:
            for name, text in files.items():
                (tmp / name).write_text(text, encoding="utf-8")
            if tokenizer is not None:
                (tmp / "tokenizer.model").write_bytes(tokenizer)
            model = build(device="meta")
            model.load_state_dict(state, assign=True)
            save_weights(model, tmp / "weights.safetensors", spec_sha256, spec_name)
            os.chmod(tmp, 0o755)
            old = out_dir.with_name(f".{out_dir.name}.old")
            if out_dir.exists():
                shutil.rmtree(old, ignore_errors=True)
                os.replace(out_dir, old)
            os.replace(tmp, out_dir)
            shutil.rmtree(old, ignore_errors=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return out_dir
