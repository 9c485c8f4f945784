"""Objectives beyond plain next-token prediction that change what the loss counts.

Prefix LM (Raffel et al. 2019, section 3.2.3; the structure GLM-130B trains): each micro-batch
gets a prefix length P drawn uniformly from [1, T-1]; positions before P attend to each other
in both directions (the emitted model's prefix mask), so only targets that the prefix cannot
see are counted: the token at P and after, predicted from positions P-1 onwards.
"""

from __future__ import annotations

import torch


def prefix_lengths(seed: int, step: int, count: int, seq_len: int) -> list[int]:
    """`count` prefix lengths for one optimizer step, the same on every rank."""
    g = torch.Generator().manual_seed(seed * 1_000_033 + step)
    return torch.randint(1, seq_len, (count,), generator=g).tolist()


def prefix_target_mask(prefix_len: int, rows: int, seq_len: int) -> torch.Tensor:
    """[rows, T] bool: target j (the token at j+1) counts when j >= prefix_len - 1."""
    return (torch.arange(seq_len) >= prefix_len - 1).expand(rows, seq_len)
