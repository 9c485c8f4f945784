"""The keyword inputs a model takes beyond input_ids: the one place that knows them.

    encoder_ids [B, encoder_len]                      encoder-decoder models ([encoder] table)
    media       [B, media_len, media_dim]             Flamingo-style gated cross-attention
    neighbours  [B, ceil(seq / chunk_size), N, R]     RETRO-style chunked cross-attention

The spec is the plain dict that spec.lock.json stores (`spec.model_dump(mode="json")`); an
object with `model_dump` (the compiler's ModelSpec) is accepted and dumped.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch

__all__ = ["extra_inputs"]


def _as_dict(spec: Any) -> Mapping[str, Any]:
    return spec.model_dump(mode="json") if hasattr(spec, "model_dump") else spec


def extra_inputs(spec: Any, batch: int, seq: int, *, generator: torch.Generator | None = None,
                 dtype: torch.dtype = torch.float32, encoder_len: int = 12, media_len: int = 5) -> dict[str, torch.Tensor]:
    """The keyword inputs beyond input_ids that `spec`'s model needs for `batch` rows of `seq` tokens.

    With a generator the values are random (token ids below vocab_size, normal media
    features), for tests. Without one they are neutral: id 0 for encoder tokens and
    neighbours (no retrieval), zero media features (no image). Media are `dtype`; ids are long.
    """
    s = _as_dict(spec)
    vocab = s["dims"]["vocab_size"]

    def ids(*shape: int) -> torch.Tensor:
        if generator is None:
            return torch.zeros(shape, dtype=torch.long)
        return torch.randint(0, vocab, shape, generator=generator)

    kw: dict[str, torch.Tensor] = {}
    if s.get("encoder") is not None:
        kw["encoder_ids"] = ids(batch, encoder_len)
    x = s.get("cross_attention")
    if x is not None and x["kind"] == "gated":
        shape = (batch, media_len, x["media_dim"])
        kw["media"] = torch.zeros(shape, dtype=dtype) if generator is None else torch.randn(shape, generator=generator, dtype=dtype)
    if x is not None and x["kind"] == "chunked":
        kw["neighbours"] = ids(batch, -(-seq // x["chunk_size"]), x["n_neighbours"], x["neighbour_len"])
    return kw
