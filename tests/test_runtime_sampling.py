"""Samplers and beam search: filter properties, determinism, and beam search against greedy and brute force."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from hypothesis import assume, given
from hypothesis import strategies as st

from taxonc.runtime.sampling import GREEDY_TEMPERATURE, SamplerConfig, beam_search, filter_logits, next_token

# ---------------------------------------------------------------------------------------------------------------
# Strategies. Logits come from a seeded torch generator (cheap to draw, easy to replay); the "ties" style uses a
# handful of integer values so that boundary ties are common rather than measure-zero.


@st.composite
def logits_bv(draw: st.DrawFn, min_v: int = 2, max_v: int = 40) -> torch.Tensor:
    b = draw(st.integers(1, 4))
    v = draw(st.integers(min_v, max_v))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    style = draw(st.sampled_from(["normal", "peaked", "ties"]))
    if style == "ties":
        return torch.randint(-3, 3, (b, v), generator=g).float()
    return torch.randn(b, v, generator=g) * (2.0 if style == "normal" else 8.0)


temperatures = st.sampled_from([1.0, 0.5, 0.9, 2.0])
unit = st.floats(0.01, 1.0)
seeds = st.integers(0, 2**31 - 1)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def kept(filtered: torch.Tensor) -> torch.Tensor:
    return torch.isfinite(filtered)


def assert_prefix(probs: torch.Tensor, keep: torch.Tensor) -> None:
    """Every kept token is at least as likely as every removed one, i.e. the kept set is a prefix of some
    probability-sorted order (ties may fall either side)."""
    for p, k in zip(probs, keep):
        assert k.any()
        if (~k).any():
            assert p[k].min() >= p[~k].max()


def sample_many(logits: torch.Tensor, cfg: SamplerConfig, seed: int, reps: int = 16) -> torch.Tensor:
    """reps draws per row in one batched call, shape [reps, B]."""
    b = logits.shape[0]
    return next_token(logits.repeat(reps, 1), cfg, gen(seed)).view(reps, b)


# ---------------------------------------------------------------------------------------------------------------
# Top-k.


@given(logits_bv(), st.integers(1, 45), temperatures, seeds)
def test_top_k_never_samples_outside_the_k_most_likely(logits, k, temp, seed) -> None:
    cfg = SamplerConfig("top-k", top_k=k, temperature=temp)
    keep = kept(filter_logits(logits, cfg))
    # Exactly k survive even when ties straddle the boundary.
    assert (keep.sum(-1) == min(k, logits.shape[-1])).all()
    kth = logits.topk(min(k, logits.shape[-1]), dim=-1).values[:, -1]
    toks = sample_many(logits, cfg, seed)
    assert (logits.gather(-1, toks.T) >= kth[:, None]).all()
    assert keep.gather(-1, toks.T).all()


def test_top_k_boundary_ties_keep_exactly_k() -> None:
    logits = torch.tensor([[3.0, 1.0, 1.0, 1.0, 0.0]])
    keep = kept(filter_logits(logits, SamplerConfig("top-k", top_k=2)))
    assert keep.sum() == 2 and keep[0, 0]


# ---------------------------------------------------------------------------------------------------------------
# Top-p.


@given(logits_bv(), unit, temperatures)
def test_top_p_keeps_the_smallest_prefix_reaching_p(logits, p, temp) -> None:
    cfg = SamplerConfig("top-p", top_p=p, temperature=temp)
    keep = kept(filter_logits(logits, cfg))
    probs = (logits / temp).softmax(-1).double()
    assert_prefix(probs, keep)
    tol = 1e-5  # the filter sums float32 probabilities; the check sums them in float64
    for pr, k in zip(probs, keep):
        mass = pr[k].sum().item()
        assert mass >= p - tol
        # Dropping the least likely kept token must fall short of p, or the set was not the smallest.
        assert mass - pr[k].min().item() < p + tol


def test_top_p_worked_examples() -> None:
    logits = torch.tensor([[0.5, 0.3, 0.2]]).log()
    counts = {p: kept(filter_logits(logits, SamplerConfig("top-p", top_p=p))).sum().item()
              for p in (0.1, 0.4, 0.75, 0.81, 1.0)}
    assert counts == {0.1: 1, 0.4: 1, 0.75: 2, 0.81: 3, 1.0: 3}
    # Equal tokens: 0.25 + 0.25 reaches 0.5 exactly, so two are enough; a hair more needs a third.
    flat = torch.zeros(1, 4)
    assert kept(filter_logits(flat, SamplerConfig("top-p", top_p=0.5))).sum() == 2
    assert kept(filter_logits(flat, SamplerConfig("top-p", top_p=0.51))).sum() == 3


# ---------------------------------------------------------------------------------------------------------------
# Temperature -> 0.


filter_configs = st.one_of(
    st.builds(lambda t: SamplerConfig("temperature", temperature=t), st.just(1.0)),
    st.builds(lambda k: SamplerConfig("top-k", top_k=k), st.integers(1, 10)),
    st.builds(lambda p: SamplerConfig("top-p", top_p=p), unit),
    st.builds(lambda z: SamplerConfig("tail-free", tfs=z), unit),
)


@given(logits_bv(), filter_configs, st.floats(0.0, GREEDY_TEMPERATURE), seeds)
def test_temperature_to_zero_is_greedy(logits, base, temp, seed) -> None:
    cfg = SamplerConfig(base.kind, temperature=temp, top_k=base.top_k, top_p=base.top_p, tfs=base.tfs)
    greedy = next_token(logits, SamplerConfig(), None)
    assert torch.equal(next_token(logits, cfg, gen(seed)), greedy)
    keep = kept(filter_logits(logits, cfg))
    assert (keep.sum(-1) == 1).all() and keep.gather(-1, greedy[:, None]).all()


@given(logits_bv(), st.floats(GREEDY_TEMPERATURE, 1e-3), seeds)
def test_small_temperature_converges_to_greedy(logits, temp, seed) -> None:
    # Just above the greedy cut-off it is real sampling, but with a clear winner (gap 0.2, so every other token
    # has probability below exp(-200) = 0 in float32) it must pick the argmax: no discontinuity at 1e-5.
    top = logits.argmax(-1, keepdim=True)
    logits = logits.scatter(-1, top, logits.max(-1, keepdim=True).values + 0.2)
    toks = sample_many(logits, SamplerConfig("temperature", temperature=temp), seed)
    assert (toks == top.view(1, -1)).all()


# ---------------------------------------------------------------------------------------------------------------
# Tail-free.


def tail_free_count_reference(probs: list[float], z: float) -> int:
    """HF TailFreeLogitsWarper, written out per row: keep sorted tokens 0..j* where j* is the first index whose
    normalised-curvature CDF exceeds z; keep all when nothing exceeds z, V <= 2 or z = 1."""
    p = sorted(probs, reverse=True)
    v = len(p)
    if v <= 2 or z >= 1:
        return v
    d2 = [abs(p[j] - 2 * p[j + 1] + p[j + 2]) for j in range(v - 2)]
    total = sum(d2)
    if total == 0:
        return v
    cdf = list(itertools.accumulate(x / total for x in d2))
    return next((j + 1 for j, c in enumerate(cdf) if c > z), v)


@given(logits_bv(), unit, temperatures)
def test_tail_free_keeps_a_prefix_and_at_least_one(logits, z, temp) -> None:
    cfg = SamplerConfig("tail-free", tfs=z, temperature=temp)
    keep = kept(filter_logits(logits, cfg))
    probs = (logits / temp).softmax(-1)
    assert_prefix(probs, keep)
    for pr, k in zip(probs.double().tolist(), keep):
        # Compare counts only away from the decision boundary, where float32 and float64 CDFs can disagree.
        p = sorted(pr, reverse=True)
        d2 = [abs(p[j] - 2 * p[j + 1] + p[j + 2]) for j in range(len(p) - 2)]
        if sum(d2) > 0 and z < 1:
            cdf = list(itertools.accumulate(x / sum(d2) for x in d2))
            assume(all(abs(c - z) > 1e-4 for c in cdf))
        assert k.sum().item() == tail_free_count_reference(pr, z)


def test_tail_free_worked_example() -> None:
    # p = .5 .3 .1 .05 .05 -> |d2| = 0 .15 .05 -> CDF = 0 .75 1: the cut is at the second difference centred on
    # token 2, so z < .75 keeps two tokens and .75 <= z < 1 keeps three (the paper's code would keep one more).
    logits = torch.tensor([[0.5, 0.3, 0.1, 0.05, 0.05]]).log()
    counts = {z: kept(filter_logits(logits, SamplerConfig("tail-free", tfs=z))).sum().item()
              for z in (0.1, 0.5, 0.8, 0.99, 1.0)}
    assert counts == {0.1: 2, 0.5: 2, 0.8: 3, 0.99: 3, 1.0: 5}
    # A flat distribution has no tail to cut; two tokens have no second difference.
    assert kept(filter_logits(torch.zeros(1, 6), SamplerConfig("tail-free", tfs=0.3))).all()
    assert kept(filter_logits(torch.tensor([[2.0, 0.0]]), SamplerConfig("tail-free", tfs=0.01))).all()


# ---------------------------------------------------------------------------------------------------------------
# Composition order.


def single(**kw) -> SamplerConfig:
    return SamplerConfig("temperature", **kw)


@given(logits_bv(), temperatures, st.none() | st.integers(1, 12), st.none() | unit, st.none() | unit)
def test_filter_logits_is_temperature_then_top_k_then_top_p_then_tail_free(logits, temp, k, p, z) -> None:
    manual = filter_logits(logits, single(temperature=temp))
    if k is not None:
        manual = filter_logits(manual, single(top_k=k))
    if p is not None:
        manual = filter_logits(manual, single(top_p=p))
    if z is not None:
        manual = filter_logits(manual, single(tfs=z))
    assert torch.equal(filter_logits(logits, single(temperature=temp, top_k=k, top_p=p, tfs=z)), manual)


def test_composition_order_is_observable() -> None:
    """Hand-checked cases where another order would give another answer, so the property above is not vacuous."""
    logits = torch.tensor([[0.4, 0.3, 0.2, 0.1]]).log()
    # top-k first: survivors renormalise to 4/7, 3/7 and 4/7 alone reaches 0.5 -> 1 token.
    # (top-p first would keep .4 + .3 -> 2 tokens, which top-k=2 leaves alone.)
    assert kept(filter_logits(logits, single(top_k=2, top_p=0.5))).sum() == 1
    # temperature first: T=2 flattens to ~.325 .282 .230 .163, so reaching .65 takes 3 tokens.
    # (top-p on the raw probabilities would stop at .4 + .3 -> 2 tokens.)
    assert kept(filter_logits(logits, single(temperature=2.0, top_p=0.65))).sum() == 3


# ---------------------------------------------------------------------------------------------------------------
# Seeds and batches.


@given(logits_bv(), filter_configs, temperatures, seeds)
def test_seeded_sampling_is_deterministic(logits, base, temp, seed) -> None:
    cfg = SamplerConfig(base.kind, temperature=temp, top_k=base.top_k, top_p=base.top_p, tfs=base.tfs)
    a, b = gen(seed), gen(seed)
    for _ in range(3):  # and stays in step as the generator advances
        assert torch.equal(next_token(logits, cfg, a), next_token(logits, cfg, b))


@given(logits_bv(), seeds)
def test_a_rows_draw_does_not_depend_on_the_other_rows(logits, seed) -> None:
    # One shared generator: row i's randomness is tied to its index, not to what the other rows contain.
    others = torch.randn(logits.shape, generator=gen(seed + 1)) * 5
    cfg = SamplerConfig("temperature")
    for i in range(logits.shape[0]):
        mixed = others.clone()
        mixed[i] = logits[i]
        assert next_token(mixed, cfg, gen(seed))[i] == next_token(logits, cfg, gen(seed))[i]


@given(logits_bv(), st.lists(seeds, min_size=4, max_size=4), st.permutations(range(4)))
def test_per_row_generators_make_rows_independent_of_the_batch(logits, row_seeds, perm) -> None:
    # One generator per row: a row's token is the same alone, in the batch, and in a shuffled batch.
    b = logits.shape[0]
    cfg = SamplerConfig("top-p", top_p=0.9)
    batched = next_token(logits, cfg, [gen(s) for s in row_seeds[:b]])
    for i in range(b):
        assert next_token(logits[i:i + 1], cfg, [gen(row_seeds[i])]).item() == batched[i]
    order = [j for j in perm if j < b]
    shuffled = next_token(logits[order], cfg, [gen(row_seeds[j]) for j in order])
    assert torch.equal(shuffled, batched[order])


def test_different_seeds_give_different_samples() -> None:
    logits = torch.zeros(64, 32)
    cfg = SamplerConfig("temperature")
    assert not torch.equal(next_token(logits, cfg, gen(1)), next_token(logits, cfg, gen(2)))


def test_greedy_ignores_temperature_and_generator() -> None:
    logits = torch.randn(3, 10, generator=gen(0))
    assert torch.equal(next_token(logits, SamplerConfig(temperature=5.0), gen(1)), logits.argmax(-1))
    with pytest.raises(ValueError, match="beam_search"):
        next_token(logits, SamplerConfig("beam", num_beams=2), None)


# ---------------------------------------------------------------------------------------------------------------
# Beam search on a toy model: a bigram table plus a skip-bigram term on the token before. The skip term makes the
# logits depend on cached history, so a wrong cache.reorder shows up as wrong scores.


class FakeCache:
    def __init__(self) -> None:
        self.history: torch.Tensor | None = None   # [N, L] every token each sequence has seen
        self.fed: list[torch.Tensor] = []
        self.reorders = 0

    def reorder(self, index: torch.Tensor) -> None:
        assert index.dtype == torch.int64
        self.history = self.history.index_select(0, index)
        self.reorders += 1


class ToyLM:
    def __init__(self, v: int, seed: int, scale: float = 2.0, skip: float = 0.5) -> None:
        g = gen(seed)
        self.v = v
        self.bigram = torch.randn(v, v, generator=g, dtype=torch.float64) * scale
        self.skip = torch.randn(v, v, generator=g, dtype=torch.float64) * scale * skip

    def logits(self, seq: list[int]) -> torch.Tensor:
        """Next-token logits for a whole sequence, without any cache: the ground truth."""
        prev = seq[-2] if len(seq) > 1 else 0
        return self.bigram[seq[-1]] + self.skip[prev]

    def step(self, tokens_nt: torch.Tensor, cache: FakeCache) -> torch.Tensor:
        if cache.history is None:
            assert tokens_nt.shape[0] == 1, "the prompt goes in once, unexpanded"
            cache.history = tokens_nt.clone()
        else:
            assert tokens_nt.shape == (cache.history.shape[0], 1), "one token per live sequence"
            cache.history = torch.cat([cache.history, tokens_nt], dim=1)
        cache.fed.append(tokens_nt.clone())
        return torch.stack([self.logits(row.tolist()) for row in cache.history])

    def logprob(self, prompt: list[int], generated: list[int]) -> float:
        seq, total = list(prompt), 0.0
        for t in generated:
            total += torch.log_softmax(self.logits(seq), -1)[t].item()
            seq.append(t)
        return total


def run_beam(model: ToyLM, prompt: list[int], n: int, beams: int, lp: float = 1.0, eos: int | None = None):
    cache = FakeCache()
    out = beam_search(model.step, torch.tensor([prompt]), cache, n, beams, lp, eos)
    assert out.shape[0] == 1 and out[0, :len(prompt)].tolist() == prompt
    return out[0, len(prompt):].tolist(), cache


def greedy_reference(model: ToyLM, prompt: list[int], n: int, eos: int | None) -> list[int]:
    """Greedy decoding with next_token, recomputing from the whole sequence each step."""
    seq: list[int] = []
    for _ in range(n):
        t = next_token(model.logits(prompt + seq).view(1, -1), SamplerConfig(), None).item()
        seq.append(t)
        if t == eos:
            break
    return seq


def brute_force_best(model: ToyLM, prompt: list[int], n: int, lp: float, eos: int | None) -> float:
    """Best normalised score over every complete hypothesis: ended by eos, or running to n tokens."""
    best = -math.inf
    frontier: list[list[int]] = [[]]
    for length in range(1, n + 1):
        nxt = []
        for seq in frontier:
            for t in range(model.v):
                s = seq + [t]
                if t == eos or length == n:
                    best = max(best, model.logprob(prompt, s) / length ** lp)
                else:
                    nxt.append(s)
        frontier = nxt
    return best


prompts = st.lists(st.integers(0, 5), min_size=1, max_size=3)


@given(seeds, prompts, st.integers(1, 8), st.none() | st.integers(0, 5))
def test_beam_width_one_is_greedy(seed, prompt, n, eos) -> None:
    model = ToyLM(6, seed)
    out, cache = run_beam(model, prompt, n, 1, eos=eos)
    assert out == greedy_reference(model, prompt, n, eos)
    assert cache.reorders == 0
    # The prompt once, then one token per step, never a step past the last token.
    assert [f.shape for f in cache.fed] == [(1, len(prompt))] + [(1, 1)] * (len(out) - 1)


@given(seeds, prompts, st.integers(2, 6), st.none() | st.integers(0, 5))
def test_beam_at_least_as_likely_as_greedy_over_two_steps(seed, prompt, beams, eos) -> None:
    # Over two steps this is a theorem: greedy's first token is in every beam, and its completion is among the
    # extensions ranked. (Over more steps it is not; see the counterexample below.)
    model = ToyLM(6, seed)
    out, _ = run_beam(model, prompt, 2, beams, lp=0.0, eos=eos)
    greedy = greedy_reference(model, prompt, 2, eos)
    assert model.logprob(prompt, out) >= model.logprob(prompt, greedy) - 1e-9


@given(seeds, prompts, st.sampled_from([(3, 4), (4, 3)]), st.sampled_from([0.0, 0.5, 1.0, 2.0, -0.5]),
       st.none() | st.integers(0, 2))
def test_wide_enough_beam_is_exact(seed, prompt, vn, lp, eos) -> None:
    # With V^n beams nothing is ever pruned, so beam search must match exhaustive search under
    # any length penalty (this also checks that the exact early stop never changes the answer), and so with
    # length_penalty 0 it is at least as likely as greedy.
    v, n = vn
    model = ToyLM(v, seed, scale=1.0)
    beams = v ** n
    out, _ = run_beam(model, [t % v for t in prompt], n, beams, lp, eos)
    score = model.logprob([t % v for t in prompt], out) / len(out) ** lp
    assert score == pytest.approx(brute_force_best(model, [t % v for t in prompt], n, lp, eos), abs=1e-9)
    if lp == 0.0:
        greedy = greedy_reference(model, [t % v for t in prompt], n, eos)
        assert score >= model.logprob([t % v for t in prompt], greedy) - 1e-9


def test_beam_is_not_monotone_in_width_counterexample() -> None:
    """Why the property above is limited: greedy's 0->a->c->z (.4 * .3 * .9 = .108) loses its prefix to two
    b-continuations (.35 * .45 = .1575 each) that then lead nowhere (/7), so width 2 ends at .0225."""
    v = 7
    a, b, c, d, e, z = 1, 2, 3, 4, 5, 6
    rows = torch.full((v, v), 1.0 / v, dtype=torch.float64)

    def row(probs: dict[int, float]) -> torch.Tensor:
        rest = (1 - sum(probs.values())) / (v - len(probs))
        return torch.tensor([probs.get(t, rest) for t in range(v)], dtype=torch.float64)

    rows[0] = row({a: 0.40, b: 0.35})
    rows[a] = row({c: 0.30})
    rows[b] = row({d: 0.45, e: 0.45})
    rows[c] = row({z: 0.90})
    model = ToyLM(v, 0, skip=0.0)
    model.bigram = rows.log()
    greedy = greedy_reference(model, [0], 3, None)
    beam, _ = run_beam(model, [0], 3, 2, lp=0.0)
    assert greedy == [a, c, z]
    assert beam[:2] in ([b, d], [b, e])
    assert model.logprob([0], beam) < model.logprob([0], greedy)


@given(seeds, prompts, st.integers(2, 5), st.integers(1, 6), st.sampled_from([0.0, 1.0]), st.integers(0, 5))
def test_finished_hypotheses_stop_growing(seed, prompt, beams, n, lp, eos) -> None:
    model = ToyLM(6, seed)
    model.bigram[:, eos] += 1.5  # make eos common enough to matter
    out, cache = run_beam(model, prompt, n, beams, lp, eos)
    assert 0 < len(out) <= n
    assert eos not in out[:-1]
    assert len(out) == n or out[-1] == eos
    # A hypothesis ending in eos is never extended: eos is never fed back to the model after the prompt.
    assert all(eos not in f.view(-1).tolist() for f in cache.fed[1:])
    # Each step feeds one token per live beam, and the cache follows along.
    assert all(f.shape[1] == 1 and f.shape[0] <= beams for f in cache.fed[1:])


def test_eos_stops_early_and_length_penalty_shifts_the_choice() -> None:
    # From the prompt, eos has .6; the best 3-token continuation has .4 * .9 * .9 = .324 and never hits eos.
    # Raw log-probs (lp = 0) prefer stopping; a strong length penalty (lp = 3) prefers the longer hypothesis.
    v, eos, x = 3, 2, 1
    rows = torch.tensor([[0.0, 0.4, 0.6], [0.05, 0.9, 0.05], [1 / 3, 1 / 3, 1 / 3]], dtype=torch.float64)
    model = ToyLM(v, 0, skip=0.0)
    model.bigram = rows.clamp_min(1e-12).log()
    short, cache = run_beam(model, [0], 3, 2, lp=0.0, eos=eos)
    assert short == [eos]
    assert len(cache.fed) == 1  # the search stopped as soon as no running beam could beat the finished one
    long_, _ = run_beam(model, [0], 3, 2, lp=3.0, eos=eos)
    assert long_ == [x, x, x]


def test_beam_search_edge_cases() -> None:
    model = ToyLM(5, 0)
    assert run_beam(model, [1, 2], 0, 3)[0] == []
    with pytest.raises(ValueError, match="--num-beams"):
        beam_search(model.step, torch.tensor([[1]]), FakeCache(), 3, 0)
    with pytest.raises(ValueError, match=r"\[1, T\]"):
        beam_search(model.step, torch.tensor([[1], [2]]), FakeCache(), 3, 2)


# ---------------------------------------------------------------------------------------------------------------
# Validation.


@pytest.mark.parametrize(("kwargs", "flag"), [
    ({"kind": "nucleus"}, "--sampler"),
    ({"kind": "temperature", "temperature": -0.1}, "--temperature"),
    ({"kind": "temperature", "temperature": math.inf}, "--temperature"),
    ({"kind": "temperature", "temperature": math.nan}, "--temperature"),
    ({"kind": "top-k", "top_k": 0}, "--top-k"),
    ({"kind": "top-k", "top_k": 2.5}, "--top-k"),
    ({"kind": "top-k", "top_k": True}, "--top-k"),
    ({"kind": "top-k"}, "--top-k"),
    ({"kind": "top-p", "top_p": 1.5}, "--top-p"),
    ({"kind": "top-p", "top_p": 0.0}, "--top-p"),
    ({"kind": "top-p", "top_p": math.nan}, "--top-p"),
    ({"kind": "top-p"}, "--top-p"),
    ({"kind": "tail-free", "tfs": -0.2}, "--tfs"),
    ({"kind": "tail-free"}, "--tfs"),
    ({"kind": "beam", "num_beams": 0}, "--num-beams"),
    ({"kind": "top-p", "top_p": 0.9, "num_beams": 4}, "--num-beams"),
    ({"kind": "beam", "num_beams": 4, "length_penalty": math.nan}, "--length-penalty"),
])
def test_invalid_options_name_the_option(kwargs, flag) -> None:
    with pytest.raises(ValueError, match=flag) as info:
        SamplerConfig(**kwargs)
    assert "\n" not in str(info.value)


def test_valid_edges_are_accepted() -> None:
    SamplerConfig()
    SamplerConfig("temperature", temperature=0.0)
    SamplerConfig("top-p", top_p=1.0, top_k=3, tfs=1.0)
    SamplerConfig("beam", num_beams=4, length_penalty=-1.0)
    with pytest.raises(ValueError) as info:
        SamplerConfig("top-p", top_p=1.5)
    assert str(info.value) == "--top-p must be in (0, 1], got 1.5"
