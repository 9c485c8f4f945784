"""Recipe math: the learning rate and the batch size equal their papers' formulas at every step."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from taxonc.runtime.train.optim import build_optimizer, clip_gradients, decays, param_groups
from taxonc.runtime.train.recipe import (BatchSchedule, BatchStage, LrSchedule, OptimizerConfig, OptimizerKind,
                                          ScheduleKind)
from taxonc.runtime.train.schedule import (accumulation_steps, batch_tokens_at, lr_at, plan_steps,
                                           tokens_after_steps)

peaks = st.floats(1e-6, 1.0)
fractions = st.floats(0.0, 1.0)
durations = st.integers(1, 10_000)


def run_clock(batch: int, steps: int) -> list[int]:
    """Tokens consumed at the end of each step of a constant-batch run."""
    return [batch * (i + 1) for i in range(steps)]


@given(peak=peaks, warm=durations, extra=durations, floor=fractions, batch=st.integers(1, 512))
def test_cosine_is_warmup_then_half_cosine_to_the_floor(peak, warm, extra, floor, batch) -> None:
    decay = warm + extra
    s = LrSchedule(ScheduleKind.COSINE, peak, warm, decay, floor)
    for t in run_clock(batch, (decay + 2 * batch) // batch + 2):
        if t < warm:  # GPT-3 appendix B: linear warmup
            want = peak * t / warm
        else:  # cosine from the peak down to floor * peak at `decay`, then flat
            p = min(1.0, (t - warm) / (decay - warm))
            want = floor * peak + (peak - floor * peak) * (1 + math.cos(math.pi * p)) / 2
        assert lr_at(s, t) == pytest.approx(want, rel=1e-12, abs=1e-15)


@given(peak=peaks, warm=durations, extra=durations, floor=fractions, batch=st.integers(1, 512))
def test_linear_decays_in_a_straight_line(peak, warm, extra, floor, batch) -> None:
    decay = warm + extra
    s = LrSchedule(ScheduleKind.LINEAR, peak, warm, decay, floor)
    for t in run_clock(batch, (decay + 2 * batch) // batch + 2):
        want = peak * t / warm if t < warm else peak - (peak - floor * peak) * min(1.0, (t - warm) / (decay - warm))
        assert lr_at(s, t) == pytest.approx(want, rel=1e-12, abs=1e-15)


@given(peak=peaks, warm=durations, batch=st.integers(1, 512), steps=st.integers(1, 300))
def test_inverse_sqrt_is_t5s_formula(peak, warm, batch, steps) -> None:
    s = LrSchedule(ScheduleKind.INVERSE_SQRT, peak, warm)
    for t in run_clock(batch, steps):
        # Raffel et al. 2019: lr = 1/sqrt(max(n, k)); with peak = 1/sqrt(k) that is peak*sqrt(k/max(n,k))
        assert lr_at(s, t) == pytest.approx(peak / math.sqrt(max(t, warm) / warm), rel=1e-12)


@given(peak=peaks, warm=durations, batch=st.integers(1, 512), steps=st.integers(1, 300))
def test_constant_holds_after_warmup(peak, warm, batch, steps) -> None:
    s = LrSchedule(ScheduleKind.CONSTANT, peak, warm)
    for t in run_clock(batch, steps):
        assert lr_at(s, t) == pytest.approx(min(1.0, t / warm) * peak, rel=1e-12)


def test_the_first_step_learns_and_the_floor_is_reached() -> None:
    s = LrSchedule(ScheduleKind.COSINE, 1.0, 100, 1000, 0.1)
    assert lr_at(s, 10) == pytest.approx(0.1)  # > 0 on the first step
    assert lr_at(s, 100) == pytest.approx(1.0)
    assert lr_at(s, 550) == pytest.approx(0.55)  # half way: the mean of peak and floor
    assert lr_at(s, 10_000) == pytest.approx(0.1)


@given(start=st.integers(1, 10_000), full=st.integers(1, 100_000), ramp=durations, micro=st.integers(1, 4096),
       budget=st.integers(1, 200_000))
def test_gpt3_ramp_is_linear_in_tokens_and_realised_by_accumulation(start, full, ramp, micro, budget) -> None:
    s = BatchSchedule(full, ramp_start_tokens=start, ramp_tokens=ramp)
    done = 0
    for accum in plan_steps(s, budget, micro):
        # Brown et al. 2020 appendix B: linear from a small batch to the full one over ramp tokens
        want = start + (full - start) * min(1.0, done / ramp)
        assert batch_tokens_at(s, done) == pytest.approx(want, rel=1e-12)
        if done + max(1, round(want / micro)) * micro <= budget:  # every step but a last one cut short
            assert accum == max(1, round(want / micro))
            assert abs(accum * micro - want) <= micro / 2 or accum == 1
        done += accum * micro
    assert budget <= done < budget + micro


@given(sizes=st.lists(st.integers(1, 5000), min_size=1, max_size=4), lengths=st.lists(durations, min_size=4, max_size=4),
       micro=st.integers(1, 512))
def test_palm_stages_hold_each_size_until_its_boundary(sizes, lengths, micro) -> None:
    ends = [sum(lengths[: i + 1]) for i in range(len(sizes))]
    s = BatchSchedule(sizes[-1], stages=tuple(BatchStage(b, u) for b, u in zip(sizes, ends)))
    done = 0
    budget = ends[-1] * 1.5
    for accum in plan_steps(s, budget, micro):
        stage = next((i for i, end in enumerate(ends) if done < end), len(sizes) - 1)
        assert batch_tokens_at(s, done) == sizes[stage]
        full = accumulation_steps(sizes[stage], micro)
        assert accum == full or (accum < full and done + accum * micro >= budget)
        done += accum * micro


def test_steps_convert_to_tokens_through_the_batch_schedule() -> None:
    assert tokens_after_steps(BatchSchedule(1000), 7) == 7000
    staged = BatchSchedule(4, stages=(BatchStage(1, 3), BatchStage(4, 1e9)))
    assert tokens_after_steps(staged, 5) == 1 + 1 + 1 + 4 + 4


class Tiny(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(10, 4)
        self.norm = torch.nn.LayerNorm(4)
        self.proj = torch.nn.Linear(4, 4)
        self.experts = torch.nn.Parameter(torch.zeros(2, 4, 4))
        self.gate = torch.nn.Parameter(torch.zeros(1))


def test_weight_decay_skips_norms_biases_and_gates() -> None:
    model = Tiny()
    by_id = {id(p): n for n, p in model.named_parameters()}
    groups = param_groups(model, 0.1)
    assert len(groups) == 2
    assert {by_id[id(p)] for p in groups[0]["params"]} == {"embed.weight", "proj.weight", "experts"}
    assert {by_id[id(p)] for p in groups[1]["params"]} == {"norm.weight", "norm.bias", "proj.bias", "gate"}
    assert groups[0]["weight_decay"] == 0.1 and groups[1]["weight_decay"] == 0.0


def test_adamw_shrinks_matrices_only() -> None:
    """With zero gradients AdamW changes only decayed parameters, by lr * wd * value."""
    model = Tiny()
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(1.0)
    opt = build_optimizer(model, OptimizerConfig(OptimizerKind.ADAMW, weight_decay=0.5), lr=0.1)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    for name, p in model.named_parameters():
        want = 1.0 - 0.1 * 0.5 if decays(p) else 1.0
        assert torch.allclose(p, torch.full_like(p, want)), name


def test_adafactor_is_torchs() -> None:
    opt = build_optimizer(Tiny(), OptimizerConfig(OptimizerKind.ADAFACTOR), lr=0.01)
    assert isinstance(opt, torch.optim.Adafactor)


def test_clipping_bounds_the_global_norm() -> None:
    model = Tiny()
    for p in model.parameters():
        p.grad = torch.full_like(p, 3.0)
    before = clip_gradients(model, 1.0)
    after = torch.linalg.vector_norm(torch.cat([p.grad.flatten() for p in model.parameters()]))
    assert before > 1.0 and after == pytest.approx(1.0, rel=1e-5)
