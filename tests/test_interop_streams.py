"""Properties of the streaming pieces behind taxonc import/export: the incremental safetensors
writer reads back exactly, and export's q/k/v packing inverts the family table's unpacking."""

from __future__ import annotations

import io

import torch
from hypothesis import given
from hypothesis import strategies as st
from safetensors.torch import load

from taxonc.compiler.interop.hf_schema import Packing, Take
from taxonc.compiler.interop.hf_stream import _assemble
from taxonc.compiler.interop.hf_weights import qkv_part
from taxonc.compiler.interop.safetensors_stream import StreamWriter

DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.int64, torch.uint8)
shapes = st.lists(st.integers(0, 5), min_size=0, max_size=3).map(tuple)


@given(st.lists(st.tuples(st.sampled_from(DTYPES), shapes), min_size=1, max_size=6),
       st.dictionaries(st.text("abc", min_size=1, max_size=3), st.text(max_size=5), max_size=2))
def test_stream_writer_reads_back_exactly(layout, metadata):
    gen = torch.Generator().manual_seed(0)
    tensors = {f"t{i}": (torch.randn(shape, generator=gen) * 50).to(dtype) for i, (dtype, shape) in enumerate(layout)}
    buffer = io.BytesIO()
    writer = StreamWriter(buffer, [(n, t.dtype, tuple(t.shape)) for n, t in tensors.items()], metadata)
    for name, t in tensors.items():
        writer.write(name, t)
    writer.close()
    data = buffer.getvalue()
    assert int.from_bytes(data[:8], "little") % 8 == 0  # tensor data starts 8-byte aligned
    back = load(data)
    assert set(back) == set(tensors)
    for name, t in tensors.items():
        assert back[name].dtype == t.dtype and torch.equal(back[name], t)


@given(st.sampled_from(list(Packing)), st.integers(1, 4), st.integers(1, 4), st.integers(1, 3), st.booleans())
def test_assemble_inverts_qkv_part(packing, n_heads, d_head, d_in, bias):
    n_kv = n_heads  # per-head packing needs as many key/value heads as query heads
    rows = 3 * n_heads * d_head
    fused = torch.arange(rows * (1 if bias else d_in), dtype=torch.float32).reshape(rows, *(() if bias else (d_in,)))
    parts = {r: qkv_part(fused, Take("x", part=r, packing=packing), n_heads, n_kv, d_head) for r in "qkv"}
    assert torch.equal(_assemble(Take("x", part="q", packing=packing), parts, n_heads), fused)
