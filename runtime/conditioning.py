"""Conditional training from pretraining with human feedback (Korbak et al. 2023).

Instead of dropping low-reward text, keep it and label it: each scored piece of training
text gets a control token in front, <|good|> when its reward reaches the threshold and
<|bad|> otherwise. The model still learns from all the data, and learns what each label
predicts. At inference, generation starts after <|good|>, which asks for text like the
well-scored part of the corpus. The paper scores and labels segments (sentences, or lines
of code) rather than whole documents; call condition_tokens once per segment for that.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from .errors import TokenizerError
from .tokenizer import PHF_BAD, PHF_GOOD


def condition_tokens(tokens: Sequence[int], score: float, threshold: float, good_id: int, bad_id: int) -> list[int]:
    """Prepend good_id if score >= threshold, else bad_id."""
    if math.isnan(score) or math.isnan(threshold):
        # NaN compares false with everything, which would silently label the text bad.
        raise ValueError(f"score and threshold must be numbers, got score={score!r}, threshold={threshold!r}")
    return [good_id if score >= threshold else bad_id, *tokens]


def generation_prefix(good_id: int) -> list[int]:
    """Ids to put before a prompt (or alone, for unconditional sampling) at inference."""
    return [good_id]


def control_token_ids(tokenizer, good_token: str = PHF_GOOD, bad_token: str = PHF_BAD) -> tuple[int, int]:
    """(good, bad) ids of a Tokenizer; TokenizerError if it lacks either token."""
    ids = []
    for piece in (good_token, bad_token):
        i = tokenizer.token_id(piece)
        if i is None:
            raise TokenizerError(f"tokenizer has no {piece} token; train it with the control tokens as special tokens")
        ids.append(i)
    return ids[0], ids[1]
