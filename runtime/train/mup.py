"""muP learning rates (Yang et al. 2022): per-parameter multipliers from the width multiplier.

A dimension is "infinite" when it grows with the model's width: it differs between the model
and the same spec compiled at training.mup.base_d_model. As in the `mup` package's MuAdam,
parameters with two infinite dimensions (hidden matrices, stacked experts) train at
lr * base_width / width; everything else (embeddings, the readout, biases, norm gains) at lr.
The rest of muP is in the emitted model: hidden init std scaled by sqrt(base / width), a zero
readout, logits divided by the width multiplier and 1/d_head attention scores.
"""

from __future__ import annotations

import torch

from .errors import TrainingError


def infinite_dims(shape: tuple[int, ...], base: tuple[int, ...]) -> int:
    return sum(1 for a, b in zip(shape, base) if a != b)


def lr_multipliers(model: torch.nn.Module, base_shapes: dict[str, tuple[int, ...]], width_mult: float) -> dict[str, float]:
    out = {}
    for name, p in model.named_parameters():
        base = base_shapes.get(name)
        if base is None or len(base) != p.dim():
            raise TrainingError(f"muP: parameter {name} has no counterpart of the same rank in the base-width model")
        out[name] = 1.0 / width_mult if infinite_dims(tuple(p.shape), base) >= 2 else 1.0
    return out
