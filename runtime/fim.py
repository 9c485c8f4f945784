"""Fill-in-the-middle data transform and prompts (Bavarian et al. 2022).

A document is cut at two uniformly random points into prefix, middle and suffix, and moved
so that the middle comes last, after sentinel tokens that mark each part. A causal model
trained on that learns to write the middle when shown both sides. Arrangements:

    PSM  <PRE> prefix <SUF> suffix <MID> middle
    SPM  <PRE> <SUF> suffix <MID> prefix middle

SPM here is the variant given in the paper's appendix, not the naive
<SUF> suffix <PRE> prefix <MID> middle: the prefix moves behind <MID>, so prefix and middle
form one contiguous run, as in an ordinary document, and the model continues the prefix
straight into the middle. "psm+spm" trains on both arrangements, each transformed document
picking one with probability 0.5; the sentinels are shared.

End of text: append the end-of-document token after the transformed document as after any
other. In a FIM document it then follows the middle, which is how the model learns to stop
infilling. The sentinel ids must not occur in the document itself; text that spells a
sentinel encodes to its id, so strip such strings from raw text before tokenizing.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Literal

from .errors import TokenizerError
from .tokenizer import FIM_MIDDLE, FIM_PREFIX, FIM_SUFFIX

FimMode = Literal["psm", "spm", "psm+spm"]
FIM_MODES: tuple[str, ...] = ("psm", "spm", "psm+spm")


def _check(rate: float, mode: str) -> None:
    if not 0.0 <= rate <= 1.0:  # also rejects NaN
        raise ValueError(f"FIM rate must be in [0, 1], not {rate!r}")
    if mode not in FIM_MODES:
        raise ValueError(f"FIM mode must be one of {', '.join(FIM_MODES)}, not {mode!r}")


def _pick(mode: str, rng: random.Random) -> str:
    if mode == "psm+spm":
        return "spm" if rng.random() < 0.5 else "psm"
    return mode


def _arrange(prefix, middle, suffix, mode: str, prefix_id: int, middle_id: int, suffix_id: int) -> list[int]:
    if mode == "psm":
        return [prefix_id, *prefix, suffix_id, *suffix, middle_id, *middle]
    return [prefix_id, suffix_id, *suffix, middle_id, *prefix, *middle]


def _cuts(n: int, rng: random.Random) -> tuple[int, int]:
    # Two independent uniform cut points in [0, n], sorted: any part may be empty.
    a, b = rng.randint(0, n), rng.randint(0, n)
    return (a, b) if a <= b else (b, a)


def fim_transform(
    tokens: Sequence[int],
    rng: random.Random,
    rate: float,
    mode: FimMode,
    prefix_id: int,
    middle_id: int,
    suffix_id: int,
) -> list[int]:
    """With probability `rate`, return the document in FIM order (token-level cuts).

    Otherwise return it unchanged. One rng.random() call decides, whatever the rate, so the
    stream of random numbers does not depend on which documents were transformed before.
    """
    _check(rate, mode)
    tokens = list(tokens)
    if not rng.random() < rate:
        return tokens
    sentinels = {prefix_id, middle_id, suffix_id}
    if len(sentinels) != 3:
        raise ValueError("the three FIM sentinel ids must differ")
    if any(t in sentinels for t in tokens):
        raise ValueError("document already contains a FIM sentinel id; strip sentinel text before tokenizing")
    lo, hi = _cuts(len(tokens), rng)
    return _arrange(tokens[:lo], tokens[lo:hi], tokens[hi:], _pick(mode, rng), prefix_id, middle_id, suffix_id)


def fim_transform_text(
    text: str,
    rng: random.Random,
    rate: float,
    mode: FimMode,
    encode: Callable[[str], list[int]],
    prefix_id: int,
    middle_id: int,
    suffix_id: int,
) -> list[int]:
    """Like fim_transform, but cut at character positions and encode each part on its own.

    This is the paper's default: the model sees middles that begin and end inside a word,
    as a cursor in an editor does. `encode` should be concatenation-safe, as models from
    train_tokenizer are (no dummy prefix). With a dummy-prefix SentencePiece model each part
    starts with a "▁" marker; fim_prompt's parts then carry it too, so training and
    inference still agree, and decoding the generated middle on its own drops it again.
    """
    _check(rate, mode)
    if not rng.random() < rate:
        return list(encode(text))
    if len({prefix_id, middle_id, suffix_id}) != 3:
        raise ValueError("the three FIM sentinel ids must differ")
    lo, hi = _cuts(len(text), rng)
    parts = [list(encode(part)) for part in (text[:lo], text[lo:hi], text[hi:])]
    if any(t in (prefix_id, middle_id, suffix_id) for part in parts for t in part):
        raise ValueError("document already contains a FIM sentinel; strip sentinel text before tokenizing")
    return _arrange(*parts, _pick(mode, rng), prefix_id, middle_id, suffix_id)


def fim_undo(sequence: Sequence[int], prefix_id: int, middle_id: int, suffix_id: int) -> list[int]:
    """Recover the document's tokens from a token-level FIM sequence (either arrangement).

    A sequence that does not start with the prefix sentinel is returned as it is. Meant for
    tests and data inspection.
    """
    seq = list(sequence)
    if not seq or seq[0] != prefix_id:
        return seq
    try:
        s = seq.index(suffix_id, 1)
        m = seq.index(middle_id, s + 1)
    except ValueError:
        raise ValueError("malformed FIM sequence: missing suffix or middle sentinel") from None
    if s == 1:
        # SPM: suffix sits between <SUF> and <MID>; prefix + middle follow <MID>. A PSM
        # sequence with an empty prefix looks the same and undoes the same way.
        return seq[m + 1 :] + seq[s + 1 : m]
    return seq[1:s] + seq[m + 1 :] + seq[s + 1 : m]


def fim_prompt(
    prefix_ids: Sequence[int],
    suffix_ids: Sequence[int],
    mode: Literal["psm", "spm"],
    prefix_id: int,
    middle_id: int,
    suffix_id: int,
) -> list[int]:
    """The inference prompt after which the model writes the middle (then end of text).

    PSM: <PRE> prefix <SUF> suffix <MID>; SPM: <PRE> <SUF> suffix <MID> prefix. A model
    trained with "psm+spm" accepts either, so the prompt must name one.
    """
    if mode not in ("psm", "spm"):
        raise ValueError(f"a FIM prompt is arranged as psm or spm, not {mode!r}")
    if mode == "psm":
        return [prefix_id, *prefix_ids, suffix_id, *suffix_ids, middle_id]
    return [prefix_id, suffix_id, *suffix_ids, middle_id, *prefix_ids]


def fim_sentinel_ids(tokenizer) -> tuple[int, int, int]:
    """(prefix, middle, suffix) sentinel ids of a Tokenizer; TokenizerError if it lacks one."""
    ids = []
    for piece in (FIM_PREFIX, FIM_MIDDLE, FIM_SUFFIX):
        i = tokenizer.token_id(piece)
        if i is None:
            raise TokenizerError(f"tokenizer has no {piece} token; train it with the FIM sentinels as special tokens")
        ids.append(i)
    return ids[0], ids[1], ids[2]
