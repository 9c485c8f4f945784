"""Recipe math: learning rate and batch size as pure functions of the tokens consumed.

Both run on a token clock. Recipes written in steps (warmup_steps) are converted to tokens by
the compiler with the spec's own batch schedule, so a constant-batch recipe is exact; PaLM's
1/sqrt(step) decay under its batch stages becomes 1/sqrt(tokens), which differs after the
first stage change (the README says so).
"""

from __future__ import annotations

import math

from .recipe import BatchSchedule, LrSchedule, ScheduleKind


def lr_at(schedule: LrSchedule, tokens: float) -> float:
    """The learning rate for a step that ends with `tokens` consumed (so the first step is > 0)."""
    peak, warm = schedule.peak, schedule.warmup_tokens
    if schedule.kind is ScheduleKind.INVERSE_SQRT:
        # Raffel et al. 2019, sec 3.1.2: 1/sqrt(max(n, k)), i.e. held at the peak for k, then decaying
        return peak * math.sqrt(warm / max(tokens, warm)) if warm > 0 else peak
    if tokens < warm:
        return peak * tokens / warm
    if schedule.kind is ScheduleKind.CONSTANT:
        return peak
    span = schedule.decay_tokens - warm
    progress = 1.0 if span <= 0 else min(1.0, (tokens - warm) / span)
    floor = schedule.final_fraction
    if schedule.kind is ScheduleKind.COSINE:
        return peak * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress)))
    return peak * (1 - (1 - floor) * progress)  # linear


def batch_tokens_at(schedule: BatchSchedule, tokens: float) -> float:
    """The batch size (tokens) the recipe asks for once `tokens` have been consumed."""
    if schedule.stages:
        for stage in schedule.stages:
            if tokens < stage.until_tokens:
                return stage.batch_tokens
        return schedule.stages[-1].batch_tokens
    if schedule.ramp_tokens and schedule.ramp_start_tokens is not None:
        share = min(1.0, tokens / schedule.ramp_tokens)
        return schedule.ramp_start_tokens + (schedule.batch_tokens - schedule.ramp_start_tokens) * share
    return schedule.batch_tokens


def accumulation_steps(batch_tokens: float, micro_tokens: int) -> int:
    """Micro-batches of `micro_tokens` (all ranks together) that realise a batch: the nearest
    whole number, at least one. The realised batch is this times micro_tokens."""
    return max(1, round(batch_tokens / micro_tokens))


def step_accumulation(schedule: BatchSchedule, done: float, budget: float, micro_tokens: int) -> int:
    """Micro-batches of the step that starts after `done` tokens: the recipe's batch, cut short at
    the end so a run stops within one micro-batch past its budget (runs compared by `ablate`
    see the same tokens whatever their batch schedule)."""
    accum = accumulation_steps(batch_tokens_at(schedule, done), micro_tokens)
    return min(accum, max(1, math.ceil((budget - done) / micro_tokens)))


def plan_steps(schedule: BatchSchedule, budget: float, micro_tokens: int) -> list[int]:
    """Accumulation steps of every optimizer step until `budget` tokens are consumed."""
    steps, done = [], 0
    while done < budget:
        accum = step_accumulation(schedule, done, budget, micro_tokens)
        steps.append(accum)
        done += accum * micro_tokens
    return steps


def tokens_after_steps(schedule: BatchSchedule, steps: int) -> float:
    """Tokens consumed by `steps` optimizer steps at the recipe's own (unrounded) batch sizes:
    how a recipe given in steps is put on the token clock."""
    done = 0.0
    for _ in range(steps):
        done += batch_tokens_at(schedule, done)
    return done
