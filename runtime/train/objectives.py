"""Objectives beyond plain next-token prediction that change what the loss counts.

Prefix LM (Raffel et al. 2019, section 3.2.3; the structure GLM-130B trains): each micro-batch
gets a prefix length P drawn uniformly from [1, T-1]; positions before P attend to each other
in both directions (the emitted model's prefix mask), so only targets that the prefix cannot
see are counted: the token at P and after, predicted from positions P-1 onwards.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def prefix_lengths(seed: int, step: int, count: int, seq_len: int) -> list[int]:
    """`count` prefix lengths for one optimizer step, the same on every rank."""
    g = torch.Generator().manual_seed(seed * 1_000_033 + step)
    return torch.randint(1, seq_len, (count,), generator=g).tolist()


def prefix_target_mask(prefix_len: int, rows: int, seq_len: int) -> torch.Tensor:
    """[rows, T] bool: target j (the token at j+1) counts when j >= prefix_len - 1."""
    return (torch.arange(seq_len) >= prefix_len - 1).expand(rows, seq_len)


# Span corruption (Raffel et al. 2019, section 3.1.4 and the "i.i.d. spans" variant of 3.3.4):
# 15% of a window's tokens, in spans of mean length 3, are replaced in the encoder input by one
# sentinel each; the decoder target lists each sentinel followed by the tokens it replaced. The
# counts are fixed by the window length, so every input and target has the same length.
NOISE_DENSITY = 0.15
MEAN_SPAN = 3.0
SENTINEL = "<extra_id_{}>"  # T5's spelling
SENTINELS = 32  # sentinel pieces a tokenizer trained by taxonc train carries: spans of windows up to ~640 tokens


def span_counts(raw: int) -> tuple[int, int]:
    """(noise tokens, spans) of a window of `raw` tokens."""
    noise = min(raw - 1, max(1, round(raw * NOISE_DENSITY)))
    return noise, max(1, min(raw - noise, round(noise / MEAN_SPAN)))


def span_lengths(raw: int) -> tuple[int, int]:
    """(encoder input length, decoder target length) for a window of `raw` tokens."""
    noise, spans = span_counts(raw)
    return raw - noise + spans + 1, noise + spans + 1


def _partition(total: int, parts: int, rng) -> list[int]:
    """`total` split into `parts` positive lengths, uniformly over the ways to do so."""
    cuts = sorted(rng.sample(range(1, total), parts - 1)) if parts > 1 else []
    edges = [0, *cuts, total]
    return [b - a for a, b in zip(edges, edges[1:])]


def span_corruption(tokens: list[int], rng, sentinels: list[int], eos_id: int) -> tuple[list[int], list[int]]:
    """(encoder input, decoder target) of one window; kept and noise spans alternate, kept first."""
    noise, spans = span_counts(len(tokens))
    if spans > len(sentinels):
        raise ValueError(f"{spans} spans need {spans} sentinel ids, the tokenizer has {len(sentinels)}")
    noise_lengths, keep_lengths = _partition(noise, spans, rng), _partition(len(tokens) - noise, spans, rng)
    inputs, targets, pos = [], [], 0
    for i in range(spans):
        inputs += tokens[pos : pos + keep_lengths[i]]
        pos += keep_lengths[i]
        inputs.append(sentinels[i])
        targets += [sentinels[i], *tokens[pos : pos + noise_lengths[i]]]
        pos += noise_lengths[i]
    return inputs + [eos_id], targets + [eos_id]


def span_batch(ids: torch.Tensor, seed: int, step: int, first_row: int, sentinels: list[int], eos_id: int):
    """(encoder ids, decoder inputs, decoder targets) of rows of raw windows [n, R]; row r of the
    step is corrupted by a generator seeded with (seed, step, first_row + r), whatever rank holds it."""
    import random

    encoder, targets = [], []
    for r, row in enumerate(ids.tolist()):
        rng = random.Random((seed * 1_000_003 + step) * 1_000_033 + first_row + r)
        enc, tgt = span_corruption(row, rng, sentinels, eos_id)
        encoder.append(enc)
        targets.append(tgt)
    target = torch.tensor(targets)
    decoder_in = torch.cat([torch.full_like(target[:, :1], eos_id), target[:, :-1]], dim=1)  # start from EOS
    return torch.tensor(encoder), decoder_in, target


# Seq2seq (AlphaCode, Li et al. 2022, section 4.2): a file is split at a pivot, the encoder reads
# what comes before it and the decoder predicts what follows. Windows are packed from the whole
# corpus, so a fixed split inside a window falls at an arbitrary place of a document; the split
# keeps the model's own ratio of encoder to decoder context (AlphaCode: 1536 to 768 tokens), so
# shapes are fixed and nothing is padded. AlphaCode's encoder also has a masked-LM loss; that
# one is not computed here (the emitted model has no encoder output head).
def seq2seq_encoder_len(seq_len: int, encoder_context: int, decoder_context: int) -> int:
    """Tokens of a window of `seq_len` that the encoder reads; the decoder predicts the rest."""
    share = round(seq_len * encoder_context / (encoder_context + decoder_context))
    return max(1, min(seq_len - 1, share))


def seq2seq_batch(ids: torch.Tensor, encoder_len: int, start_id: int):
    """(encoder ids, decoder inputs, decoder targets) of windows [n, T+1]: the first `encoder_len`
    of the T tokens go to the encoder, the decoder reads `start_id` then the targets shifted by one."""
    raw = ids[:, :-1]
    encoder, target = raw[:, :encoder_len], raw[:, encoder_len:]
    decoder_in = torch.cat([torch.full_like(target[:, :1], start_id), target[:, :-1]], dim=1)
    return encoder, decoder_in, target


# Blank infilling (GLM: Du et al. 2022, section 2.1) as GLM-130B trains it (Zeng et al. 2022,
# section 2.2, recalled, not re-read this session): [MASK] replaces short spans (15% of the text, mean length 3) in 30% of
# sequences, [gMASK] replaces everything after a kept prefix of uniform length in the rest.
# Part A, the text with its masks, attends both ways (the model's prefix mask); part B lists
# the spans in order, each read after a start token and predicted up to an end token, causally.
# What differs from the papers: GLM-130B's model takes 1-D rotary positions (its spec), so part
# B continues part A's positions instead of GLM's 2-D (mask position, offset in span) pairs, and
# the spans keep their order (GLM shuffles them; without 2-D positions the order is how a span
# finds its mask). Span lengths are a uniform split of the noise (not Poisson(3)), and the
# choice of mask, and the [gMASK] prefix length, is drawn per micro-batch, not per sequence,
# because the emitted model takes one prefix length per call.
SHORT_MASK_SHARE = 0.3
BLANK_PIECES = ("[MASK]", "[gMASK]", "<sop>", "<eop>")  # GLM-130B's icetk spells them so
BLANK_MIN_LEN = 4  # a kept token, [gMASK], <sop> and one blanked token


@dataclass(frozen=True)
class BlankIds:
    mask: int
    gmask: int
    start: int
    end: int


def blank_counts(seq_len: int) -> tuple[int, int, int]:
    """(text tokens, noise tokens, spans) of a [MASK] sequence of `seq_len`: the text plus one
    [MASK] and one start token per span fill it exactly (each span's end token replaces nothing:
    part B's inputs are start + span, its labels span + end)."""
    for raw in range(seq_len, 0, -1):
        noise, spans = span_counts(raw)
        if raw + 2 * spans <= seq_len:
            return seq_len - 2 * spans, noise, spans
    raise ValueError(f"a sequence of {seq_len} tokens is too short for blank infilling")


def _short_spans(tokens: list[int], rng, ids: BlankIds) -> tuple[list[int], list[int]]:
    """(part A, part B) of one [MASK] sequence; kept and masked stretches alternate, kept first."""
    raw, noise, spans = blank_counts(len(tokens))
    noise_lengths, keep_lengths = _partition(noise, spans, rng), _partition(raw - noise, spans, rng)
    part_a, part_b, pos = [], [], 0
    for keep, blank in zip(keep_lengths, noise_lengths):
        part_a += [*tokens[pos : pos + keep], ids.mask]
        pos += keep
        part_b += [ids.start, *tokens[pos : pos + blank]]
        pos += blank
    return part_a, part_b


def _labels(part_b: list[int], ids: BlankIds) -> list[int]:
    """Part B's targets: each position predicts the next token of its span, the last one the end."""
    out = []
    for i, t in enumerate(part_b):
        following = part_b[i + 1] if i + 1 < len(part_b) else ids.start
        out.append(ids.end if following == ids.start else following)
    return out


def blank_batch(windows: torch.Tensor, seed: int, step: int, micro_batch: int, ids: BlankIds):
    """(inputs, labels, counted, part A length per micro-batch) of windows [n, T+1]: each row is
    T tokens, part A then part B. A micro-batch's mask kind and [gMASK] prefix come from (seed,
    step, micro-batch), a row's spans from (seed, step, row), whatever rank computes them."""
    import random

    rows, seq_len = windows.shape[0], windows.shape[1] - 1
    g = torch.Generator().manual_seed(seed * 1_000_037 + step)
    inputs, labels, prefixes = [], [], []
    for part in range(0, rows, micro_batch):
        short = float(torch.rand((), generator=g)) < SHORT_MASK_SHARE
        kept = int(torch.randint(1, seq_len - 2, (), generator=g))  # [gMASK]: text before the blank
        for r in range(part, min(part + micro_batch, rows)):
            text = windows[r, :seq_len].tolist()
            if short:
                part_a, part_b = _short_spans(text, random.Random((seed * 1_000_003 + step) * 1_000_033 + r), ids)
            else:
                part_a, part_b = [*text[:kept], ids.gmask], [ids.start, *text[kept : seq_len - 2]]
            inputs.append(part_a + part_b)
            labels.append([0] * len(part_a) + _labels(part_b, ids))
        prefixes.append(len(part_a))
    x, y = torch.tensor(inputs), torch.tensor(labels)
    a_len = torch.tensor([prefixes[r // micro_batch] for r in range(rows)])
    counted = torch.arange(seq_len).expand(rows, seq_len) >= a_len[:, None]
    return x, y, counted, prefixes
