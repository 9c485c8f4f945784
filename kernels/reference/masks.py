"""Which keys a query may attend to: one type for the IR, the emitted models and the kernels."""

from dataclasses import dataclass, replace
from enum import StrEnum


class MaskKind(StrEnum):
    FULL = "full"                      # every key (encoders, cross-attention)
    CAUSAL = "causal"                  # keys at or before the query
    PREFIX = "prefix"                  # causal, plus the whole prefix for everyone (prefix LMs)
    LOCALLY_BANDED = "locally-banded"  # causal, within the last `window` positions
    STRIDED = "strided"                # causal, the last `stride` keys and every stride-th one
    FIXED = "fixed"                    # causal, own block plus the last `summary` keys of each block


@dataclass(frozen=True)
class Mask:
    kind: MaskKind
    window: int = 0    # locally-banded
    stride: int = 0    # strided
    block: int = 0     # fixed
    summary: int = 0   # fixed
    bidirectional_prefix: bool = False  # a sparse layer of a prefix LM: the prefix also sees itself whole
    prefix: int = 0    # prefix length; known only at call time

    @property
    def reads_prefix(self):
        return self.kind is MaskKind.PREFIX or self.bidirectional_prefix

    def with_prefix(self, prefix):
        return replace(self, prefix=prefix)


def allowed_keys(q_idx, kv_idx, mask):
    """Which keys each query may see, on broadcast index tensors (also inside FlexAttention)."""
    kind = mask.kind
    if kind is MaskKind.FULL:
        return kv_idx >= 0
    if kind is MaskKind.PREFIX:
        return (kv_idx <= q_idx) | (kv_idx < mask.prefix)
    allowed = kv_idx <= q_idx
    if kind is MaskKind.LOCALLY_BANDED:
        allowed = allowed & (q_idx - kv_idx < mask.window)
    elif kind is MaskKind.STRIDED:
        allowed = allowed & ((q_idx - kv_idx < mask.stride) | ((q_idx - kv_idx) % mask.stride == 0))
    elif kind is MaskKind.FIXED:
        same_block = (q_idx // mask.block) == (kv_idx // mask.block)
        is_summary = (kv_idx % mask.block) >= mask.block - mask.summary
        allowed = allowed & (same_block | is_summary)
    if mask.bidirectional_prefix:
        allowed = allowed | ((q_idx < mask.prefix) & (kv_idx < mask.prefix))
    return allowed
