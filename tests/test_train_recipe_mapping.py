"""How a spec's [training] table becomes this run's Recipe (compiler/training.build_recipe)."""

from __future__ import annotations

import pytest

from taxonc.compiler.errors import TaxoncError
from taxonc.compiler.spec import load_spec
from taxonc.compiler.training import build_recipe
from taxonc.runtime.train.recipe import FimMode, Objective, OptimizerKind, ScheduleKind
from taxonc.runtime.train.schedule import batch_tokens_at, lr_at

from .conftest import SPECS


def recipe(name: str, tokens: int | None, batch: int | None, **overrides):
    spec = load_spec(SPECS / f"{name}.toml", overrides or None).spec
    return build_recipe(spec, name, tokens, batch)


def test_gpt3_keeps_its_shares_of_the_run() -> None:
    r = recipe("gpt3", 3_000_000, 32_000)  # 1e-5 of 300B tokens; a 100x smaller batch
    assert r.tokens == 3_000_000
    assert r.lr.kind is ScheduleKind.COSINE and r.lr.peak == 0.6e-4 and r.lr.final_fraction == 0.1
    assert r.lr.warmup_tokens == pytest.approx(375e6 * 1e-5) and r.lr.decay_tokens == pytest.approx(260e9 * 1e-5)
    assert r.batch.batch_tokens == 32_000
    assert r.batch.ramp_start_tokens == pytest.approx(320) and r.batch.ramp_tokens == pytest.approx(12e9 * 1e-5)
    assert batch_tokens_at(r.batch, 0) == pytest.approx(320) and batch_tokens_at(r.batch, 1e9) == 32_000
    assert r.optimizer.kind is OptimizerKind.ADAMW and r.optimizer.betas == (0.9, 0.95)
    assert r.optimizer.weight_decay == 0.1 and r.optimizer.grad_clip == 1.0
    assert any("AdamW" in note for note in r.notes) and r.mup is None and r.fim is None


def test_llama_warmup_steps_become_tokens_through_its_batch() -> None:
    r = recipe("llama", 1_400_000, None)  # 1e-6 of 1.4T tokens, the spec's own 4M batch
    assert r.lr.warmup_tokens == pytest.approx(2000 * 4e6 * 1e-6)
    assert r.lr.decay_tokens == pytest.approx(1_400_000)


def test_palm_stages_inverse_sqrt_adafactor_and_z_loss() -> None:
    r = recipe("palm", 780_000, 4096)  # 1e-6 of the run; batch / 1024
    assert r.lr.kind is ScheduleKind.INVERSE_SQRT and r.optimizer.kind is OptimizerKind.ADAFACTOR
    assert r.z_loss == 1e-4
    assert [s.batch_tokens for s in r.batch.stages] == [1024, 2048, 4096]
    assert [s.until_tokens for s in r.batch.stages] == pytest.approx([52428.8, 188743.68, 780000])
    # 10,000 steps held at the peak: the first stage's batch for 10k steps, scaled like the run
    assert r.lr.warmup_tokens == pytest.approx(10_000 * 1048576 * 1e-6)
    assert lr_at(r.lr, r.lr.warmup_tokens * 4) == pytest.approx(r.lr.peak / 2)


def test_fim_and_sft_come_from_the_spec() -> None:
    r = recipe("llama", 1000, 100, training={"fim": {"rate": 0.5, "mode": "psm+spm"}})
    assert r.fim is not None and r.fim.rate == 0.5 and r.fim.mode is FimMode.BOTH
    assert recipe("instructgpt", 1000, 100).objective is Objective.SFT


@pytest.mark.parametrize(("name", "missing"), [
    ("gato", ["training.lr", "training.batch_tokens (or --batch-tokens)", "training.tokens (or --tokens)"]),
    ("glam", ["training.lr", "training.batch_tokens (or --batch-tokens)"]),
])
def test_missing_fields_are_named(name: str, missing: list[str]) -> None:
    with pytest.raises(TaxoncError) as err:
        recipe(name, None, None)
    assert f"lacks {', '.join(missing)}," in str(err.value)


def test_every_objective_of_the_schema_maps_to_one_the_loop_trains() -> None:
    assert recipe("glm-130b", 1000, 100, training={"lr": 1e-3}).objective is Objective.BLANK_INFILLING
    assert recipe("t5", 1000, 100).objective is Objective.SPAN_CORRUPTION
    assert recipe("alphacode", 1000, 100).objective is Objective.SEQ2SEQ
    with pytest.raises(TaxoncError, match="the blank-infilling objective trains prefix-lm models"):
        recipe("llama", 1000, 100, training={"objective": "blank-infilling"})


def test_adam_eps_comes_from_the_spec_and_reaches_the_optimizer() -> None:
    import torch

    from taxonc.runtime.train.optim import build_optimizer

    assert recipe("gpt3", 1000, 100).optimizer.eps == 1e-8  # Brown et al. 2020, appendix B
    chosen = recipe("gpt3", 1000, 100, training={"adam_eps": 1e-5}).optimizer
    assert chosen.eps == 1e-5
    optimizer = build_optimizer(torch.nn.Linear(3, 3), chosen, lr=1e-3)
    assert {g["eps"] for g in optimizer.param_groups} == {1e-5}
