"""The training recipe as typed plain data: what `taxonc train` hands the runtime.

The compiler reads a spec's [training] table and builds these objects; the runtime never
sees the spec. Quantities that are durations are already in the run's units (tokens of this
run's budget), so every function downstream is a pure function of a token count.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class ScheduleKind(StrEnum):
    COSINE = "cosine"
    LINEAR = "linear"
    INVERSE_SQRT = "inverse-sqrt"
    CONSTANT = "constant"


class OptimizerKind(StrEnum):
    ADAMW = "adamw"
    ADAFACTOR = "adafactor"
    SGD = "sgd"


class Objective(StrEnum):
    CAUSAL_LM = "causal-lm"
    SFT = "sft"  # causal LM whose loss counts response tokens only
    PREFIX_LM = "prefix-lm"  # a bidirectional prefix of random length; the loss counts the rest
    SPAN_CORRUPTION = "span-corruption"  # encoder-decoder: sentinel-masked spans in, the spans out (T5)
    BLANK_INFILLING = "blank-infilling"  # prefix LM: masked text both ways, its spans causally after it (GLM)
    SEQ2SEQ = "seq2seq"  # encoder-decoder: the encoder reads a window's first part, the decoder the rest (AlphaCode)


class FimMode(StrEnum):
    PSM = "psm"
    SPM = "spm"
    BOTH = "psm+spm"


@dataclass(frozen=True)
class LrSchedule:
    """Learning rate as a function of tokens consumed (schedule.lr_at).

    warmup_tokens: linear warmup from 0 (inverse-sqrt: the rate is held at `peak` instead, as in
    T5's 1/sqrt(max(step, k))). decay_tokens: where cosine and linear decay reach
    final_fraction * peak; after it the rate stays there.
    """

    kind: ScheduleKind
    peak: float
    warmup_tokens: float = 0.0
    decay_tokens: float = 0.0
    final_fraction: float = 0.1


@dataclass(frozen=True)
class BatchStage:
    batch_tokens: float
    until_tokens: float


@dataclass(frozen=True)
class BatchSchedule:
    """Batch size in tokens as a function of tokens consumed (schedule.batch_tokens_at).

    One of: constant `batch_tokens`; a linear ramp from `ramp_start_tokens` over `ramp_tokens`
    (GPT-3); or stages (PaLM), the last running to the end.
    """

    batch_tokens: float
    ramp_start_tokens: float | None = None
    ramp_tokens: float | None = None
    stages: tuple[BatchStage, ...] = ()


@dataclass(frozen=True)
class OptimizerConfig:
    kind: OptimizerKind
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8
    weight_decay: float = 0.0
    grad_clip: float | None = 1.0


@dataclass(frozen=True)
class FimConfig:
    rate: float
    mode: FimMode


@dataclass(frozen=True)
class MupConfig:
    """muP: the width multiplier and every parameter's shape at the base width."""

    width_mult: float
    base_shapes: tuple[tuple[str, tuple[int, ...]], ...]


@dataclass(frozen=True)
class Recipe:
    """Everything the loop needs to know about how to train, and nothing about the model's shape."""

    lr: LrSchedule
    batch: BatchSchedule
    optimizer: OptimizerConfig
    tokens: int  # this run's budget
    objective: Objective = Objective.CAUSAL_LM
    z_loss: float = 0.0
    load_balance_weight: float = 0.0
    fim: FimConfig | None = None
    mup: MupConfig | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)  # how the spec's recipe was mapped onto this run
