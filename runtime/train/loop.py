"""The training loop: one optimizer step per recipe batch, gradient accumulation of fixed
micro-batches, evaluation, checkpoints, and the artifact at the end.

Every rank reads the whole global batch of a step from the memory-mapped shards (cheap: token
ids) and computes on its own rows, so the loss is normalised by the global count of counted
tokens without a collective, and a step's rows do not depend on the number of ranks: 2
processes of micro-batch m train on exactly the rows that 1 process of micro-batch 2m does.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
import contextlib
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from . import checkpoint
from .data import Prepared, Sampler, SamplerState, Windows
from .distributed import World, blocks, on_main, shard, sharded_compute, start, stop, sum_across
from .errors import TrainingError
from .export import write_artifact
from .init import materialize
from .losses import micro_batch_loss, token_losses
from .metrics import MetricsLog, ProgressBar, plot, read_metrics
from .optim import build_optimizer, clip_gradients, set_lr
from .objectives import BlankIds, blank_batch, prefix_lengths, prefix_target_mask, seq2seq_batch, span_batch
from .recipe import Objective, Recipe
from .schedule import accumulation_steps, batch_tokens_at, lr_at, step_accumulation


@dataclass(frozen=True)
class RunOptions:
    """How this run executes, apart from the recipe (which says what to train)."""

    run_dir: Path
    seed: int = 0
    micro_batch: int = 8  # sequences per rank per forward pass
    seq_len: int = 64
    eval_every: int = 50  # steps; and always at the end
    eval_windows: int = 32
    checkpoint_every: int = 0  # steps; 0: only at the end
    resume: bool = False
    progress: bool = True
    bf16: bool = False  # autocast matmuls to bfloat16
    activation_checkpointing: bool = False
    compile: bool = False
    max_steps: int | None = None  # stop early (tests); the schedule still follows the full budget
    tp: int = 1  # tensor-parallel ranks per model replica (the model must be compiled without fusions)


@dataclass(frozen=True)
class Job:
    recipe: Recipe
    options: RunOptions
    build: Callable[..., torch.nn.Module]  # the emitted model.py's build(device=, dtype=)
    data: Prepared
    artifact_files: dict[str, str] = field(default_factory=dict)  # model.py, spec.lock.json, graph.txt
    spec_sha256: str = ""
    spec_name: str = ""
    tokenizer: bytes | None = None
    init_from: Path | None = None  # a safetensors file to start from (a lineage stage's base model)
    sentinels: tuple[int, ...] = ()  # span corruption: the tokenizer's sentinel ids, in order
    eos_id: int = 2
    encoder_len: int = 0  # seq2seq: tokens of each window the encoder reads
    decoder_start_id: int = 0  # seq2seq: the id the decoder reads first (as taxonc run's generate starts it)
    blank_ids: BlankIds | None = None  # blank infilling: [MASK], [gMASK], start and end of a span


@dataclass
class Result:
    steps: int
    tokens: int
    final_loss: float
    val_loss: float
    artifact: Path | None


def _autocast(o: RunOptions):
    """bf16 autocast for forward passes (backward runs outside it, as torch.autocast asks)."""
    if not o.bf16:
        return contextlib.nullcontext
    return lambda: torch.autocast("cuda" if torch.cuda.is_available() else "cpu", dtype=torch.bfloat16)


def _check_data(job: Job, windows: Windows, micro_tokens: int, world: World) -> None:
    o = job.options
    first = accumulation_steps(batch_tokens_at(job.recipe.batch, 0), micro_tokens) * o.micro_batch * (world.size // o.tp)
    if windows.count < first:
        raise TrainingError(
            f"the training data ({job.data.train_tokens} tokens, {windows.count} windows of {o.seq_len}+1) is shorter "
            f"than one batch ({first} sequences = {first * o.seq_len} tokens); give more data or a smaller "
            "batch (--batch-tokens, --micro-batch)")


def _evaluate(job: Job, model: torch.nn.Module, windows: Windows, autocast) -> float:
    """Mean loss per counted token on the first eval_windows windows of the validation split
    (prefix LMs and blank infilling: plain next-token loss with no prefix; span corruption with a fixed seed)."""
    o = job.options
    model.eval()
    total, n = 0.0, 0
    indices = list(range(min(o.eval_windows, windows.count)))
    with torch.no_grad():
        for start_ in range(0, len(indices), o.micro_batch):
            ids, mask = windows.batch(indices[start_ : start_ + o.micro_batch])
            x, y, extra = _model_inputs(job, ids, step=-1, first_row=start_)
            with autocast():
                logits = model(x, **extra)
            loss = token_losses(logits, y, 0.0)
            if mask is not None:
                loss = loss[mask]
            total += float(loss.sum())
            n += loss.numel()
    model.train()
    return total / max(n, 1)


def train(job: Job) -> Result:
    world = start()
    try:
        return _train(job, world)
    finally:
        stop(world)


def _train(job: Job, world: World) -> Result:
    recipe, o = job.recipe, job.options
    torch.manual_seed(o.seed)
    model = job.build(device="meta")
    if world.distributed:
        shard(model, world, o.tp)
    elif o.tp > 1:
        raise TrainingError(f"--tp {o.tp} needs {o.tp} processes per model replica; launch with torchrun")
    materialize(model, job.build, o.seed)
    if job.init_from is not None and not o.resume:
        _load_base(model, job)
    model.train()
    if o.activation_checkpointing:
        from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import apply_activation_checkpointing

        stack = set(map(id, blocks(model)))
        apply_activation_checkpointing(model, check_fn=lambda m: id(m) in stack)
    forward = torch.compile(model) if o.compile else model
    autocast = _autocast(o)
    lr_mult = None
    if recipe.mup is not None:
        from .mup import lr_multipliers

        lr_mult = lr_multipliers(model, dict(recipe.mup.base_shapes), recipe.mup.width_mult)
    optimizer = build_optimizer(model, recipe.optimizer, lr=0.0, lr_mult=lr_mult)

    train_windows = Windows(job.data.tokens("train"), job.data.mask("train"), o.seq_len)
    val_windows = Windows(job.data.tokens("val"), job.data.mask("val"), o.seq_len)
    micro_tokens = o.micro_batch * o.seq_len * world.size // o.tp
    _check_data(job, train_windows, micro_tokens, world)
    if val_windows.count == 0:
        raise TrainingError(f"the validation split ({job.data.val_tokens} tokens) is shorter than one window of "
                            f"{o.seq_len}+1 tokens; give more data")

    ckpt_root = o.run_dir / "checkpoints"
    progress = checkpoint.Progress()
    resumed_from = None
    if o.resume:
        found = checkpoint.latest(ckpt_root)
        if found is not None:
            progress = checkpoint.load(found, model, optimizer, world, _run_signature(job))
            resumed_from = progress.step
    sampler = Sampler(train_windows.count, o.seed, SamplerState(progress.epoch, progress.position))
    # a fresh run (or a resume that found no checkpoint) starts metrics.jsonl empty
    log = MetricsLog(o.run_dir, resumed_from if resumed_from is not None else 0, enabled=world.main)
    bar = ProgressBar(recipe.tokens, progress.tokens, enabled=o.progress and world.main)
    loss_value, val_loss = math.nan, math.nan
    started = time.perf_counter()
    tokens_at_start = progress.tokens
    try:
        while progress.tokens < recipe.tokens and (o.max_steps is None or progress.step < o.max_steps):
            step = _step(job, world, forward, model, optimizer, train_windows, sampler, progress, autocast)
            grad_norm, step_tokens, lr, loss_sum, counted = step
            progress.step += 1
            progress.tokens += step_tokens
            progress.epoch, progress.position = sampler.state.epoch, sampler.state.position
            loss_value = float(sum_across(world, loss_sum)) / o.tp / max(counted, 1)  # each replica's ranks agree
            if not math.isfinite(loss_value):
                raise TrainingError(f"the loss is {loss_value} at step {progress.step} (lr {lr:.3g}); "
                                    "lower training.lr or enable training.grad_clip")
            elapsed = time.perf_counter() - started
            rate = (progress.tokens - tokens_at_start) / max(elapsed, 1e-9)
            log.write({"step": progress.step, "tokens": progress.tokens, "loss": loss_value, "lr": lr,
                       "batch_tokens": step_tokens, "grad_norm": grad_norm, "tokens_per_s": rate})
            bar.update(progress.tokens, loss_value, lr, rate)
            last = progress.tokens >= recipe.tokens or (o.max_steps is not None and progress.step >= o.max_steps)
            if last or (o.eval_every and progress.step % o.eval_every == 0):
                with sharded_compute(o.tp):
                    val_loss = _evaluate(job, forward, val_windows, autocast)
                log.write({"step": progress.step, "tokens": progress.tokens, "val_loss": val_loss})
            if last or (o.checkpoint_every and progress.step % o.checkpoint_every == 0):
                checkpoint.save(ckpt_root, progress, model, optimizer, world, _run_signature(job))
    finally:
        bar.close()
        log.close()
    if math.isnan(val_loss):  # nothing left to train (a resume of a finished run): still report where it stands
        with sharded_compute(o.tp):
            val_loss = _evaluate(job, forward, val_windows, autocast)
    artifact = _export(job, model, world)
    if world.main:
        plot(read_metrics(o.run_dir / "metrics.jsonl"), o.run_dir / "training.png", f"{job.spec_name}: training")
    return Result(progress.step, progress.tokens, loss_value, val_loss, artifact)


def _step(job: Job, world: World, forward, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
          windows: Windows, sampler: Sampler, progress: checkpoint.Progress, autocast):
    """One optimizer step: the recipe's batch as micro-batches, this rank's rows of each.

    Returns (gradient norm, tokens of the step, learning rate, this rank's summed
    cross-entropy, counted tokens of the whole step)."""
    recipe, o = job.recipe, job.options
    replicas, replica = world.size // o.tp, world.rank // o.tp  # data-parallel size and index (mesh (dp, tp))
    accum = step_accumulation(recipe.batch, progress.tokens, recipe.tokens, o.micro_batch * o.seq_len * replicas)
    ids, mask = windows.batch(sampler.take(accum * o.micro_batch * replicas))
    prefixes = None
    if recipe.objective is Objective.PREFIX_LM:
        prefixes = prefix_lengths(o.seed, progress.step, accum * replicas, o.seq_len)
        mask = torch.cat([prefix_target_mask(p, o.micro_batch, o.seq_len) for p in prefixes])
    if recipe.objective is Objective.BLANK_INFILLING:
        x, y, mask, prefixes = blank_batch(ids, o.seed, progress.step, o.micro_batch, job.blank_ids)
        extra = {}
    else:
        x, y, extra = _model_inputs(job, ids, progress.step, 0)
    counted = int(mask.sum()) if mask is not None else y.numel()
    step_tokens = ids.shape[0] * o.seq_len
    lr = lr_at(recipe.lr, progress.tokens + step_tokens)
    set_lr(optimizer, lr)
    optimizer.zero_grad(set_to_none=True)
    loss_sum = torch.zeros((), dtype=torch.float64)
    with sharded_compute(o.tp):
        grad_norm = _accumulate(job, forward, model, (x, y, extra), mask, prefixes, counted, accum, replicas, replica,
                                loss_sum, autocast)
        optimizer.step()
    return grad_norm, step_tokens, lr, loss_sum, counted


def _model_inputs(job: Job, ids: torch.Tensor, step: int, first_row: int):
    """(model input, targets, keyword inputs with a row dimension) of windows [n, T+1]."""
    if job.recipe.objective is Objective.SPAN_CORRUPTION:
        encoder, decoder_in, target = span_batch(ids[:, :-1], job.options.seed, step, first_row, list(job.sentinels),
                                                 job.eos_id)
        return decoder_in, target, {"encoder_ids": encoder}
    if job.recipe.objective is Objective.SEQ2SEQ:
        encoder, decoder_in, target = seq2seq_batch(ids, job.encoder_len, job.decoder_start_id)
        return decoder_in, target, {"encoder_ids": encoder}
    return ids[:, :-1], ids[:, 1:], {}


def _accumulate(job: Job, forward, model, batch, mask, prefixes, counted: int, accum: int, replicas: int, replica: int,
                loss_sum: torch.Tensor, autocast) -> float:
    """Forward and backward of this rank's micro-batches; returns the clipped gradients' norm."""
    recipe, o = job.recipe, job.options
    x, y, extra = batch
    for a in range(accum):
        part = a * replicas + replica  # micro-batch `part` of the step's accum * replicas
        rows = slice(part * o.micro_batch, (part + 1) * o.micro_batch)
        kwargs = {name: value[rows] for name, value in extra.items()}
        if prefixes is not None:
            kwargs["prefix_len"] = prefixes[part]
        with autocast():
            logits = forward(x[rows], **kwargs)
        loss, summed = micro_batch_loss(model, logits, y[rows], None if mask is None else mask[rows], counted,
                                        recipe.z_loss, recipe.load_balance_weight, accum * replicas)
        # FSDP averages gradients over replicas; the loss is already a share of the global
        # batch, so undo the average
        (loss * replicas).backward()
        loss_sum += summed.double()
    return clip_gradients(model, recipe.optimizer.grad_clip)


def _run_signature(job: Job) -> dict:
    """What a resumed run must repeat for its data position and schedule to mean the same."""
    o = job.options
    return {"--seq-len": o.seq_len, "--micro-batch": o.micro_batch, "--seed": o.seed, "--tokens": job.recipe.tokens,
            "--tp": o.tp, "training tokens in the data": job.data.train_tokens, "objective": job.recipe.objective.value}


def _load_base(model: torch.nn.Module, job: Job) -> None:
    """Start from saved weights: names, shapes and dtypes are checked (runtime.weights), not the
    spec hash, since a post-training stage is another spec with the same architecture."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    from ..weights import load_weights

    reference = job.build()
    load_weights(reference, job.init_from)
    set_model_state_dict(model, reference.state_dict(), options=StateDictOptions(full_state_dict=True))


def _export(job: Job, model: torch.nn.Module, world: World) -> Path | None:
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    if not job.artifact_files:
        return None
    state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=world.distributed))
    return on_main(world, lambda: write_artifact(job.options.run_dir / "model", job.artifact_files, state, job.build,
                                                  job.spec_sha256, job.spec_name, job.tokenizer))
