"""Weights as safetensors, never pickle. Writes are atomic; reads check the spec hash and every name, shape and dtype."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .errors import WeightsError
from .files import default_file_mode, why_not_regular

SPEC_KEY = "taxonc.spec_sha256"
NAME_KEY = "taxonc.spec_name"


def save_weights(model: torch.nn.Module, path: str | Path, spec_sha256: str, spec_name: str) -> None:
    """Write the state dict; a crash mid-write leaves any previous file untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata={SPEC_KEY: spec_sha256, NAME_KEY: spec_name})
        # after the save: safetensors replaces the file with its own, made 0600 like mkstemp's
        os.chmod(tmp, default_file_mode())
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def saved_for(path: str | Path) -> tuple[str | None, str | None]:
    """(spec sha256, spec name) from a weights file's metadata, read from its header alone; Nones if unreadable."""
    try:
        with safe_open(str(path), framework="pt") as handle:
            meta = handle.metadata() or {}
    except Exception:  # safetensors raises several types for damaged files
        return None, None
    return meta.get(SPEC_KEY), meta.get(NAME_KEY)


# codes as safetensors writes them in the header
_DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool,
}


def _dtype_name(code: str) -> str:
    dtype = _DTYPES.get(code)
    return str(dtype).removeprefix("torch.") if dtype is not None else code


def _printable(text: str, limit: int = 80) -> str:
    """A file's own strings (metadata, tensor names) fit on one line of an error message."""
    clean = "".join(c if c.isprintable() else "?" for c in text)
    return clean if len(clean) <= limit else clean[:limit] + "..."


def _describe(name: str | None, digest: str | None) -> str:
    return f"spec {_printable(name or '?')} (sha256 {_printable(digest[:12]) if digest else '?'})"


def load_weights(model: torch.nn.Module, path: str | Path, spec_sha256: str | None = None,
                 spec_name: str | None = None) -> dict[str, str]:
    """Load into `model` after checking the file is whole and fits the model; returns the metadata.

    The file must be a regular safetensors file whose tensors have exactly the model's names,
    shapes and dtypes (nothing is cast). Given `spec_sha256` (an artifact's lock), the file must
    also carry that hash in its metadata, as save_weights writes it: weights of another spec, even
    one with the same shapes, are refused.
    """
    path = Path(path)
    reason = why_not_regular(path)
    if reason is not None:
        raise WeightsError(f"{path}: {reason}; weights are a safetensors file")
    expected = model.state_dict()
    try:
        with safe_open(str(path), framework="pt") as handle:
            meta = handle.metadata() or {}
            saved_digest, saved_name = meta.get(SPEC_KEY), meta.get(NAME_KEY)
            origin = _describe(saved_name, saved_digest)
            if spec_sha256 is not None and saved_digest is not None and saved_digest != spec_sha256:
                raise WeightsError(f"{path}: weights do not match this model: saved for {origin}, "
                                   f"the model is {_describe(spec_name, spec_sha256)}")
            names = set(handle.keys())
            missing, unexpected = sorted(set(expected) - names), sorted(names - set(expected))
            if missing or unexpected:
                detail = f"missing {missing[:3]}" if missing else f"unexpected {[_printable(n) for n in unexpected[:3]]}"
                raise WeightsError(f"{path}: tensors do not match this model (saved for {origin}): {detail}")
            for name in sorted(names):
                part = handle.get_slice(name)
                shape, want = list(part.get_shape()), list(expected[name].shape)
                if shape != want:
                    raise WeightsError(f"{path}: {name} has shape {shape}, the model wants {want} (saved for {origin})")
                code = part.get_dtype()
                if _DTYPES.get(code) != expected[name].dtype:
                    raise WeightsError(f"{path}: {name} is {_dtype_name(code)}, the model wants "
                                       f"{str(expected[name].dtype).removeprefix('torch.')}; weights are never cast")
            if spec_sha256 is not None and saved_digest is None:
                raise WeightsError(f"{path}: carries no spec hash ({SPEC_KEY}), so it cannot be matched to "
                                   f"{_describe(spec_name, spec_sha256)}; save weights with taxonc.runtime.save_weights")
            state = {name: handle.get_tensor(name) for name in names}
    except WeightsError:
        raise
    except Exception as exc:  # safetensors raises several types for damaged files
        reason = _printable(str(exc), limit=200) if str(exc) else type(exc).__name__  # it may quote the file's tensor names
        raise WeightsError(f"{path}: not a readable safetensors file ({reason})") from None
    model.load_state_dict(state)
    return meta
