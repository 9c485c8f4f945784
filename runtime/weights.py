"""Weights as safetensors, never pickle. Writes are atomic; reads check names and shapes."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .errors import WeightsError

SPEC_KEY = "taxonc.spec_sha256"
NAME_KEY = "taxonc.spec_name"


def save_weights(model: torch.nn.Module, path: str | Path, spec_sha256: str, spec_name: str) -> None:
    """Write the state dict; a crash mid-write leaves any previous file untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; weights get the usual permissions
    try:
        save_file(tensors, tmp, metadata={SPEC_KEY: spec_sha256, NAME_KEY: spec_name})
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_weights(model: torch.nn.Module, path: str | Path, spec_sha256: str | None = None) -> dict[str, str]:
    """Load into `model` after checking the file is whole and fits the model; returns the metadata."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: no such weights file")
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    try:
        with safe_open(str(path), framework="pt") as handle:
            meta = handle.metadata() or {}
            names = set(handle.keys())
            shapes = {name: tuple(handle.get_slice(name).get_shape()) for name in names}
            where = f"{path}"
            origin = f" (saved for spec {meta.get(NAME_KEY, '?')}, sha256 {meta.get(SPEC_KEY, '?')[:12]})"
            missing, unexpected = sorted(set(expected) - names), sorted(names - set(expected))
            if missing or unexpected:
                detail = f"missing {missing[:3]}" if missing else f"unexpected {unexpected[:3]}"
                raise WeightsError(f"{where}: tensors do not match this model{origin}: {detail}")
            wrong = [n for n in sorted(names) if shapes[n] != expected[n]]
            if wrong:
                n = wrong[0]
                raise WeightsError(f"{where}: {n} has shape {list(shapes[n])}, the model wants {list(expected[n])}{origin}")
            state = {name: handle.get_tensor(name) for name in names}
    except WeightsError:
        raise
    except Exception as exc:  # safetensors raises several types for damaged files
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise WeightsError(f"{path}: not a readable safetensors file ({reason})") from None
    model.load_state_dict(state)
    return meta
