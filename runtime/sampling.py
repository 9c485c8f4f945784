"""Next-token samplers and beam search for generation.

Everything here works on plain logits and a caller-supplied ``step`` function, so it does not depend on the
compiler: an emitted model (or a fake one in tests) only has to return next-token logits and own a cache.

Filtering pipeline (``filter_logits``), applied in this fixed order, each stage only when its option is set:

1. temperature: ``logits / T`` (``T <= GREEDY_TEMPERATURE`` collapses to the argmax, its T -> 0 limit);
2. top-k: keep exactly ``k`` tokens, the indices ``torch.topk`` returns (so ties at the boundary keep k, not more);
3. top-p (nucleus, Holtzman et al. 2019): keep the smallest probability-sorted prefix whose mass reaches ``p``;
4. tail-free (Bricken 2019), HF-style ``TailFreeLogitsWarper`` convention, see ``_tail_free``.

Each later stage sees the distribution the earlier ones left (renormalised over the survivors), which is what makes
the order matter: top-p after top-k measures mass among the k survivors, not the whole vocabulary.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = [
    "GREEDY_TEMPERATURE",
    "KINDS",
    "MAX_BEAMS",
    "MAX_LENGTH_PENALTY",
    "SamplerConfig",
    "beam_search",
    "filter_logits",
    "next_token",
    "why_not_finite",
]

KINDS = ("greedy", "temperature", "top-k", "top-p", "tail-free", "beam")

# Below this, 1/T overflows the useful range of float32 logits and sampling is argmax in all but name; treating
# it as greedy makes T -> 0 exactly greedy instead of "greedy unless the top logits are within ~1e-5 of each other".
GREEDY_TEMPERATURE = 1e-5

# Bounds that keep beam search within memory and float range. Each beam holds a KV cache and ranks
# 2 * num_beams candidates; length ** length_penalty overflows or collapses to 0 long before |lp| = 2000.
MAX_BEAMS = 64
MAX_LENGTH_PENALTY = 10.0

# The option each field is set by on the command line, so validation errors point at what the user typed.
_FLAG = {"kind": "--sampler", "temperature": "--temperature", "top_k": "--top-k", "top_p": "--top-p",
         "tfs": "--tfs", "num_beams": "--num-beams", "length_penalty": "--length-penalty"}

# A kind that names a filter needs that filter's option; otherwise the chosen sampler would silently be plain
# temperature sampling.
_REQUIRED = {"top-k": "top_k", "top-p": "top_p", "tail-free": "tfs"}


def _is_number(x: object) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


@dataclass(frozen=True)
class SamplerConfig:
    """How to pick the next token. ``kind`` names the decoding mode; the filters compose whenever they are set."""

    kind: str = "greedy"
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    tfs: float | None = None
    num_beams: int = 1
    length_penalty: float = 1.0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"{_FLAG['kind']} must be one of {', '.join(KINDS)}; got {self.kind!r}")
        t = self.temperature
        if not _is_number(t) or not math.isfinite(t) or t < 0:
            raise ValueError(f"{_FLAG['temperature']} must be a finite number >= 0, got {t!r}")
        k = self.top_k
        if k is not None and (not isinstance(k, int) or isinstance(k, bool) or k < 1):
            raise ValueError(f"{_FLAG['top_k']} must be an integer >= 1, got {k!r}")
        for name in ("top_p", "tfs"):
            v = getattr(self, name)
            # NaN fails both comparisons, so it lands here too.
            if v is not None and (not _is_number(v) or not 0 < v <= 1):
                raise ValueError(f"{_FLAG[name]} must be in (0, 1], got {v!r}")
        n = self.num_beams
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise ValueError(f"{_FLAG['num_beams']} must be an integer >= 1, got {n!r}")
        if n > MAX_BEAMS:
            raise ValueError(f"{_FLAG['num_beams']} must be at most {MAX_BEAMS}, got {n}")
        if n > 1 and self.kind != "beam":
            raise ValueError(f"{_FLAG['num_beams']} {n} needs {_FLAG['kind']} beam, got {_FLAG['kind']} {self.kind}")
        lp = self.length_penalty
        if not _is_number(lp) or not math.isfinite(lp) or abs(lp) > MAX_LENGTH_PENALTY:
            raise ValueError(f"{_FLAG['length_penalty']} must be a number between -{MAX_LENGTH_PENALTY:g} and "
                             f"{MAX_LENGTH_PENALTY:g}, got {lp!r}")
        needed = _REQUIRED.get(self.kind)
        if needed is not None and getattr(self, needed) is None:
            raise ValueError(f"{_FLAG[needed]} is required with {_FLAG['kind']} {self.kind}")


# ---------------------------------------------------------------------------------------------------------------
# Filters. Each keeps a set of tokens and sets the rest to -inf; none ever revives a token already at -inf.


def _keep_sorted_prefix(x: Tensor, order: Tensor, n_keep: Tensor) -> Tensor:
    """Keep the first ``n_keep`` tokens of ``order`` (descending) per row. Building the mask from a count, rather
    than from per-token thresholds, is what guarantees the kept set is a prefix even when float ties reorder."""
    pos = torch.arange(x.shape[-1], device=x.device)
    remove_sorted = pos >= n_keep.unsqueeze(-1)
    remove = torch.empty_like(remove_sorted).scatter_(-1, order, remove_sorted)
    return x.masked_fill(remove, -math.inf)


def _top_k(x: Tensor, k: int) -> Tensor:
    if k >= x.shape[-1]:
        return x
    idx = x.topk(k, dim=-1).indices
    return torch.full_like(x, -math.inf).scatter(-1, idx, x.gather(-1, idx))


def _top_p(x: Tensor, p: float) -> Tensor:
    if p >= 1.0:
        # Skipping avoids float32 cumsum stopping just short of 1.0 and dropping the far tail.
        return x
    sorted_x, order = x.sort(dim=-1, descending=True)
    cum = sorted_x.softmax(dim=-1).cumsum(dim=-1)
    # cum is non-decreasing, so the tokens *before* the one that reaches p are exactly those with cum < p;
    # that token itself is also kept (+1). The clamp covers cum never reaching p through rounding.
    n_keep = ((cum < p).sum(dim=-1) + 1).clamp(max=x.shape[-1])
    return _keep_sorted_prefix(x, order, n_keep)


def _tail_free(x: Tensor, z: float) -> Tensor:
    """Tail-free sampling (Bricken 2019), following the HF-style ``TailFreeLogitsWarper`` (a transformers
    LogitsWarper shipped by text-generation-webui and KoboldAI, not by transformers itself) rather than llama.cpp's
    or the paper's code:

    * sort probabilities descending: p_0 >= p_1 >= ... >= p_{V-1};
    * d2_j = |p_j - 2 p_{j+1} + p_{j+2}| for j = 0..V-3 (d2_j is centred on token j+1);
    * w = d2 / sum(d2), C = cumsum(w);
    * token 0 is always kept; token i >= 1 is kept while C_{i-1} <= z. With j* the first index where C_j > z,
      the kept set is tokens 0..j* (j* + 1 tokens): HF's "+1" offset, which cuts at the centre of the second
      difference that crosses z. (The paper's TF code keeps one more token, j* + 2; llama.cpp keeps j*, min 1.)

    Deviations from HF, all at degenerate points: V <= 2 (no second difference) and z = 1 keep everything, and when
    no C_j exceeds z (sum(d2) == 0, i.e. a flat or linear distribution, or rounding) everything is kept, where HF
    would still drop the last token and divide 0 by 0.
    """
    v = x.shape[-1]
    if v <= 2 or z >= 1.0:
        return x
    sorted_x, order = x.sort(dim=-1, descending=True)
    probs = sorted_x.softmax(dim=-1)
    d2 = probs.diff(dim=-1).diff(dim=-1).abs()
    total = d2.sum(dim=-1, keepdim=True)
    cdf = (d2 / total.clamp_min(torch.finfo(d2.dtype).tiny)).cumsum(dim=-1)
    below = (cdf <= z).sum(dim=-1)               # = j*, since cdf is non-decreasing
    crossed = below < cdf.shape[-1]
    n_keep = torch.where(crossed, below + 1, torch.full_like(below, v))
    return _keep_sorted_prefix(x, order, n_keep)


def why_not_finite(logits_BV: Tensor) -> str | None:
    """Why these next-token logits cannot be decoded ("contain NaN", ...), or None when they can.

    -inf marks a token as impossible and is fine, as long as some token in each row is finite; NaN and +inf come
    only from broken weights or an overflowing computation, and argmax or softmax over them picks garbage.
    """
    if torch.isnan(logits_BV).any():
        return "contain NaN"
    if torch.isposinf(logits_BV).any():
        return "contain +inf"
    if torch.isneginf(logits_BV).all(dim=-1).any():
        return "are -inf for every token"
    return None


def filter_logits(logits_BV: Tensor, cfg: SamplerConfig) -> Tensor:
    """Temperature, then top-k, then top-p, then tail-free; removed tokens are -inf.

    Works on any ``[..., V]``. Returns float32 (float64 stays float64): the filters compare cumulative masses,
    which half precision would blur.
    """
    x = logits_BV if logits_BV.dtype == torch.float64 else logits_BV.float()
    if cfg.temperature <= GREEDY_TEMPERATURE:
        idx = x.argmax(dim=-1, keepdim=True)
        return torch.full_like(x, -math.inf).scatter(-1, idx, x.gather(-1, idx))
    if cfg.temperature != 1.0:
        x = x / cfg.temperature
    if cfg.top_k is not None:
        x = _top_k(x, cfg.top_k)
    if cfg.top_p is not None:
        x = _top_p(x, cfg.top_p)
    if cfg.tfs is not None:
        x = _tail_free(x, cfg.tfs)
    return x


def next_token(logits_BV: Tensor, cfg: SamplerConfig,
               generator: torch.Generator | Sequence[torch.Generator] | None = None) -> Tensor:
    """One token per row, ``[B]`` int64.

    ``generator`` may be one generator for the batch (one ``torch.multinomial`` call: the random numbers a row
    gets depend on its row index, never on the other rows' logits), or a sequence of B generators, one per row,
    which makes each row's draw independent of which other rows share the batch (per-request seeds).
    """
    if logits_BV.dim() != 2:
        raise ValueError(f"next_token expects logits [B, V], got shape {tuple(logits_BV.shape)}")
    if cfg.kind == "beam":
        raise ValueError(f"{_FLAG['kind']} beam is not a per-token sampler; use beam_search")
    why = why_not_finite(logits_BV)
    if why is not None:
        raise ValueError(f"the logits {why}; no token can be chosen")
    if cfg.kind == "greedy" or cfg.temperature <= GREEDY_TEMPERATURE:
        return logits_BV.argmax(dim=-1)
    probs_BV = filter_logits(logits_BV, cfg).softmax(dim=-1)
    if generator is None or isinstance(generator, torch.Generator):
        return torch.multinomial(probs_BV, 1, generator=generator).view(-1)
    gens = list(generator)
    if len(gens) != probs_BV.shape[0]:
        raise ValueError(f"got {len(gens)} generators for a batch of {probs_BV.shape[0]}")
    return torch.cat([torch.multinomial(probs_BV[i:i + 1], 1, generator=g).view(-1) for i, g in enumerate(gens)])


# ---------------------------------------------------------------------------------------------------------------
# Beam search.


def _normalised(score: float, length: int, length_penalty: float) -> float:
    return score / (length ** length_penalty)


def _bound(score: float, length: int, max_new_tokens: int, length_penalty: float) -> float:
    """The best normalised score any continuation of a running beam (``length`` tokens, summed log-prob ``score``)
    could still reach. Extensions only add log-probs <= 0, so the raw score can only fall; the length divisor is
    most favourable at the longest length when length_penalty > 0 and at the shortest when it is < 0."""
    if length_penalty > 0:
        return _normalised(score, max_new_tokens, length_penalty)
    return _normalised(score, min(length + 1, max_new_tokens), length_penalty)


def _greedy(step: Callable[[Tensor, object], Tensor], prompt_1T: Tensor, cache: object, logits_1V: Tensor,
            max_new_tokens: int, eos_id: int | None) -> Tensor:
    out: list[Tensor] = []
    for i in range(max_new_tokens):
        tok = logits_1V[-1].argmax().view(1, 1).to(prompt_1T)
        out.append(tok)
        if (eos_id is not None and tok.item() == eos_id) or i == max_new_tokens - 1:
            break
        logits_1V = step(tok, cache)
    return torch.cat([prompt_1T, *out], dim=1)


def beam_search(step: Callable[[Tensor, object], Tensor], prompt_1T: Tensor, cache: object, max_new_tokens: int,
                num_beams: int, length_penalty: float = 1.0, eos_id: int | None = None) -> Tensor:
    """Beam search over ``step``; returns the best hypothesis as ``[1, T + n]`` (n <= max_new_tokens).

    ``step(tokens_NT, cache)`` runs the model on new tokens for N sequences, advances ``cache`` and returns the
    next-token logits ``[N, V]``. The prompt goes in once; then ``cache.reorder(index)`` (index-select along the
    batch dim) expands it to the beams and, every step, re-aligns it with the surviving beams' parents.

    Conventions (Hugging Face's):

    * a hypothesis' score is its summed log-probability; its normalised score is ``score / length**length_penalty``
      with ``length`` the number of generated tokens, eos included (the prompt does not count);
    * each step ranks the top ``2 * num_beams`` (beam, token) extensions; an eos extension ranked within the top
      ``num_beams`` becomes a finished hypothesis and is never extended; the best ``num_beams`` non-eos extensions
      run on;
    * the answer is the best normalised score among finished hypotheses and the beams still running at
      ``max_new_tokens``, earlier-found winning ties.

    Unlike HF's default early-stopping heuristic, the search stops early only when no running beam can still beat
    the best finished hypothesis (see ``_bound``), so stopping never changes the answer.

    ``num_beams == 1`` is plain greedy decoding (argmax of the raw logits, stopping at eos), with no reorder calls.
    Beam search is not monotone in width: a wider beam can end below greedy when greedy's prefix falls out of it.
    """
    if prompt_1T.dim() != 2 or prompt_1T.shape[0] != 1:
        raise ValueError(f"beam_search expects a prompt [1, T], got shape {tuple(prompt_1T.shape)}")
    if not isinstance(num_beams, int) or num_beams < 1:
        raise ValueError(f"{_FLAG['num_beams']} must be an integer >= 1, got {num_beams!r}")
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    if max_new_tokens == 0:
        return prompt_1T.clone()
    logits_NV = step(prompt_1T, cache)
    if num_beams == 1:
        return _greedy(step, prompt_1T, cache, logits_NV, max_new_tokens, eos_id)

    k = num_beams
    scores_N = torch.zeros(1, dtype=torch.float64)
    seqs_NL = prompt_1T.new_empty(1, 0)
    hyps: list[tuple[float, Tensor]] = []      # (normalised score, generated tokens), in order found
    best = -math.inf
    for length in range(1, max_new_tokens + 1):
        # float64 on the host: scores are summed over many steps and compared across hypotheses, and the
        # per-candidate bookkeeping below is Python anyway.
        logp_NV = torch.log_softmax(logits_NV.detach().to("cpu", torch.float64), dim=-1)
        n, v = logp_NV.shape
        total = (scores_N[:, None] + logp_NV).view(-1)
        cand_scores, cand_idx = total.topk(min(2 * k, total.numel()))
        parents, tokens, kept = [], [], []
        for rank, (s, i) in enumerate(zip(cand_scores.tolist(), cand_idx.tolist())):
            b, t = divmod(i, v)
            if eos_id is not None and t == eos_id:
                if rank < k:
                    norm = _normalised(s, length, length_penalty)
                    hyps.append((norm, torch.cat([seqs_NL[b], seqs_NL.new_tensor([t])])))
                    best = max(best, norm)
                continue
            parents.append(b)
            tokens.append(t)
            kept.append(s)
            if len(kept) == k:
                break
        if not kept:
            break
        parent_N = torch.tensor(parents)
        tok_N1 = prompt_1T.new_tensor(tokens).view(-1, 1)
        seqs_NL = torch.cat([seqs_NL[parent_N.to(seqs_NL.device)], tok_N1], dim=1)
        scores_N = torch.tensor(kept, dtype=torch.float64)
        if length == max_new_tokens:
            hyps.extend((_normalised(s, length, length_penalty), seq) for s, seq in zip(kept, seqs_NL))
            break
        # kept is sorted, so kept[0] is the most promising running beam.
        if hyps and _bound(kept[0], length, max_new_tokens, length_penalty) <= best:
            break
        if parents != list(range(n)):
            cache.reorder(parent_N.to(logits_NV.device))
        logits_NV = step(tok_N1, cache)

    winner = max(hyps, key=lambda h: h[0])[1]     # max() keeps the first of equal keys
    return torch.cat([prompt_1T, winner.view(1, -1)], dim=1)
