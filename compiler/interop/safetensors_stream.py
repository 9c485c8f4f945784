"""Safetensors read tensor by tensor and written incrementally, so conversion memory stays near one tensor.

Reading goes through `safe_open` (memory-mapped) one tensor at a time; the map is closed after
each, so pages of tensors already converted do not stay resident. Writing lays out the header
from names, dtypes and shapes known in advance, then appends each tensor's bytes as it is made:
`safetensors.torch.save_file` would need every tensor in memory at once.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import torch
from safetensors import safe_open

from .hf_keys import ImportRefused

# safetensors' dtype codes
CODES: dict[torch.dtype, str] = {
    torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
    torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
    torch.bool: "BOOL",
}
DTYPES = {code: dtype for dtype, code in CODES.items()}
ALIGN = 8  # the header is padded so that tensor data starts 8-byte aligned


@dataclass(frozen=True)
class Entry:
    """One tensor as a header describes it."""

    name: str
    file: Path
    code: str  # safetensors dtype code
    shape: tuple[int, ...]

    @property
    def dtype(self) -> torch.dtype | None:
        return DTYPES.get(self.code)

    @property
    def nbytes(self) -> int:
        size = 1
        for dim in self.shape:
            size *= dim
        dtype = self.dtype
        return size * (dtype.itemsize if dtype is not None else 0)


def read_header(path: Path) -> dict[str, Entry]:
    """Every tensor's dtype and shape, without reading tensor data."""
    try:
        with safe_open(str(path), framework="pt") as handle:
            entries = {}
            for name in handle.keys():
                part = handle.get_slice(name)
                entries[name] = Entry(name, path, part.get_dtype(), tuple(part.get_shape()))
            return entries
    except Exception as exc:  # safetensors raises several types for damaged files
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ImportRefused(f"{path}: not a readable safetensors file ({reason})") from None


def read_tensor(entry: Entry) -> torch.Tensor:
    """One tensor, copied out of a map that is closed again before returning."""
    with safe_open(str(entry.file), framework="pt") as handle:
        return handle.get_tensor(entry.name)


def read_metadata(path: Path) -> dict[str, str]:
    with safe_open(str(path), framework="pt") as handle:
        return handle.metadata() or {}


class StreamWriter:
    """Write a safetensors file whose tensors are given one by one, in the order declared."""

    def __init__(self, handle: BinaryIO, layout: list[tuple[str, torch.dtype, tuple[int, ...]]],
                 metadata: dict[str, str] | None = None) -> None:
        header: dict[str, object] = {}
        if metadata:
            header["__metadata__"] = dict(metadata)
        offset = 0
        self._order: list[tuple[str, torch.dtype, tuple[int, ...], int]] = []
        for name, dtype, shape in layout:
            size = dtype.itemsize
            for dim in shape:
                size *= dim
            header[name] = {"dtype": CODES[dtype], "shape": list(shape), "data_offsets": [offset, offset + size]}
            self._order.append((name, dtype, tuple(shape), size))
            offset += size
        text = json.dumps(header, separators=(",", ":")).encode("utf-8")
        text += b" " * (-len(text) % ALIGN)
        self._handle = handle
        self._next = 0
        handle.write(struct.pack("<Q", len(text)))
        handle.write(text)

    def write(self, name: str, tensor: torch.Tensor) -> None:
        if self._next >= len(self._order):
            raise ValueError(f"{name}: more tensors than declared")
        want, dtype, shape, size = self._order[self._next]
        if name != want or tensor.dtype != dtype or tuple(tensor.shape) != shape:
            raise ValueError(f"wrote {name} {tensor.dtype} {tuple(tensor.shape)}, declared {want} {dtype} {shape}")
        data = tensor.detach().contiguous().cpu().reshape(-1).view(torch.uint8).numpy()
        assert data.nbytes == size
        self._handle.write(memoryview(data))
        self._next += 1

    def close(self) -> None:
        if self._next != len(self._order):
            raise ValueError(f"{len(self._order) - self._next} declared tensors were never written")
