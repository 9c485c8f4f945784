"""`taxonc train`: compile a spec, map its [training] recipe onto this run, prepare the data,
and hand the runtime's training loop a typed Job (taxonc.runtime.train.loop).

A run is usually far shorter than the paper's. The recipe's durations are kept as shares of
the spec's training.tokens and applied to the run's budget (--tokens): GPT-3's 375M-token
warmup in 300B tokens becomes 0.125% of the run. Batch sizes are scaled by one factor, the
run's --batch-tokens over the spec's training.batch_tokens, so a ramp or PaLM's stages keep
their shape. Recipes in steps (warmup_steps) are converted to tokens with the spec's own batch
schedule first.
"""

from __future__ import annotations

import hashlib
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

from .errors import TaxoncError, UsageError
from .spec.model import ModelSpec

SFT_METHODS = ("sft", "feedme", "instruction-tuning")  # loss on response tokens of prompt/response pairs
CONTINUED_METHODS = ("code-finetune", "math-finetune", "science-finetune", "cot-finetune", "dialog-finetune")
TOKENIZER_TEXT_LIMIT = 16 << 20  # characters of the corpus a trained tokenizer sees


@dataclass(frozen=True)
class TrainRequest:
    spec: Path
    data: list[Path]
    out: Path
    scale: str = "full"
    sets: tuple[str, ...] = ()
    tokens: int | None = None
    batch_tokens: int | None = None
    micro_batch: int = 8
    seq_len: int | None = None
    seed: int = 0
    tokenizer: Path | None = None
    eval_every: int = 50
    checkpoint_every: int = 0
    resume: bool = False
    progress: bool = True
    bf16: bool = False
    activation_checkpointing: bool = False
    compile: bool = False
    max_steps: int | None = None
    stage: str | None = None
    init_from: Path | None = None
    scorer: str | None = None  # MODULE:FUNCTION, text -> reward, for feedback conditioning
    tp: int = 1
    fusion: bool = True  # tensor parallelism compiles without fusion passes, whatever this says


def _need(spec: ModelSpec, source: str, missing: list[str]) -> None:
    if missing:
        raise TaxoncError(f"{source}: the spec's recipe lacks {', '.join(missing)}, which taxonc train needs "
                          "(write them in [training], or give --set training.KEY=VALUE / the flag named)")


def lineage_stage(spec: ModelSpec, source: str, stage: str | None):
    """The post-training stage a lineage spec trains (`stage`, else its first), or None for pretraining."""
    stages = spec.lineage.stages if spec.lineage else []
    if not stages:
        if stage is not None:
            raise UsageError(f"--stage {stage}: {source} has no lineage stages; it is trained from scratch")
        return None
    chosen = next((s for s in stages if s.method == stage), None) if stage else stages[0]
    if chosen is None:
        raise UsageError(f"--stage {stage}: {source} has stages {', '.join(s.method for s in stages)}")
    if chosen.method not in SFT_METHODS + CONTINUED_METHODS:
        raise TaxoncError(f"{source}: lineage stage {chosen.method!r} is not implemented by taxonc train "
                          f"(implemented: {', '.join(SFT_METHODS + CONTINUED_METHODS)})")
    return chosen


def build_recipe(spec: ModelSpec, source: str, budget_flag: int | None, batch_flag: int | None, stage: str | None = None):
    """The runtime Recipe for this run, with notes saying how the spec's recipe was mapped.

    A lineage spec trains its first post-training stage (or `stage`): supervised fine-tuning
    for sft/feedme/instruction-tuning, continued language-model training for the *-finetune
    stages, on the spec's [training] recipe, for --tokens or the stage's own tokens."""
    from taxonc.runtime.train.recipe import (BatchSchedule, BatchStage, FimConfig, FimMode, LrSchedule, Objective,
                                              OptimizerConfig, OptimizerKind, Recipe, ScheduleKind)
    from taxonc.runtime.train.schedule import tokens_after_steps

    t = spec.training
    chosen = lineage_stage(spec, source, stage)
    missing = []
    if t.lr is None:
        missing.append("training.lr")
    if t.batch_tokens is None and batch_flag is None:
        missing.append("training.batch_tokens (or --batch-tokens)")
    if chosen is not None and chosen.tokens is None and budget_flag is None:
        missing.append(f"lineage.stages {chosen.method!r} tokens (or --tokens)")
    if chosen is None and t.tokens is None and budget_flag is None:
        missing.append("training.tokens (or --tokens)")
    _need(spec, source, missing)
    objective = Objective.CAUSAL_LM
    if chosen is not None and chosen.method in SFT_METHODS:
        objective = Objective.SFT
    elif chosen is None:
        objective = Objective(t.objective)  # every objective the schema allows is one the loop trains
    wanted = {Objective.PREFIX_LM: "prefix-lm", Objective.BLANK_INFILLING: "prefix-lm",
              Objective.SPAN_CORRUPTION: "encoder-decoder", Objective.SEQ2SEQ: "encoder-decoder"}.get(objective, "decoder")
    if spec.model.structure != wanted:
        raise TaxoncError(f"{source}: model.structure = {spec.model.structure.value!r}; the {objective.value} objective "
                          f"trains {wanted} models")
    budget = int(budget_flag or (chosen.tokens if chosen is not None else t.tokens))
    spec_tokens = float(t.tokens or budget)
    ratio = budget / spec_tokens
    spec_batch = float(t.batch_tokens or batch_flag)
    run_batch = float(batch_flag or t.batch_tokens)
    scale_b = run_batch / spec_batch
    spec_schedule = BatchSchedule(
        spec_batch, t.batch_ramp.start_tokens if t.batch_ramp else None, t.batch_ramp.ramp_tokens if t.batch_ramp else None,
        tuple(BatchStage(s.batch_tokens, s.until_tokens) for s in t.batch_steps))
    batch = BatchSchedule(
        run_batch,
        spec_schedule.ramp_start_tokens * scale_b if spec_schedule.ramp_start_tokens else None,
        spec_schedule.ramp_tokens * ratio if spec_schedule.ramp_tokens else None,
        tuple(BatchStage(s.batch_tokens * scale_b, s.until_tokens * ratio) for s in spec_schedule.stages))
    warmup = t.warmup_tokens if t.warmup_tokens is not None else (
        tokens_after_steps(spec_schedule, t.warmup_steps) if t.warmup_steps else 0.0)
    kind = ScheduleKind(t.schedule)
    if kind is ScheduleKind.INVERSE_SQRT and not warmup:
        _need(spec, source, ["training.warmup_steps or training.warmup_tokens (inverse-sqrt holds the peak that long)"])
    lr = LrSchedule(kind, t.lr, warmup * ratio, (t.decay_tokens or spec_tokens) * ratio, t.final_lr_fraction)
    optimizer = OptimizerConfig(
        OptimizerKind.ADAMW if t.optimizer in ("adam", "adamw") else OptimizerKind(t.optimizer),
        (t.beta1, t.beta2), t.adam_eps, t.weight_decay, t.grad_clip)
    fim = FimConfig(t.fim.rate, FimMode(t.fim.mode)) if t.fim and t.fim.rate > 0 else None
    notes = [f"budget {budget:,} tokens = {ratio:.3g} x the spec's {spec_tokens:,.0f}: warmup {lr.warmup_tokens:,.0f}, "
             f"decay to {lr.decay_tokens:,.0f} tokens",
             f"batch {run_batch:,.0f} tokens" + (f" (the spec's {spec_batch:,.0f} x {scale_b:.3g})" if scale_b != 1 else "")]
    if t.optimizer == "adam":
        notes.append("optimizer adam with weight decay runs as AdamW (decoupled decay, Loshchilov & Hutter, as GPT-3 cites)")
    if t.optimizer == "adafactor":
        notes.append(f"Adafactor is torch.optim.Adafactor: no first moment, so training.beta1 ({t.beta1}) is unused")
    moe_weight = spec.moe.load_balance_weight if spec.moe else 0.0
    recipe = Recipe(lr, batch, optimizer, budget, objective, z_loss=t.z_loss, load_balance_weight=moe_weight, fim=fim,
                    notes=tuple(notes))
    return recipe


def _tokenizer(request: TrainRequest, spec: ModelSpec, documents, world, extra_pieces: tuple[str, ...] = ()
               ) -> tuple[object, bytes]:
    """--tokenizer, else RUN_DIR/tokenizer.model from an earlier start, else one trained on the data
    (with `extra_pieces`, the pieces the objective needs, among its special tokens)."""
    from taxonc.runtime.tokenizer import DEFAULT_SPECIAL_TOKENS, Tokenizer, train_tokenizer
    from taxonc.runtime.train.distributed import on_main
    from taxonc.runtime.train.objectives import SENTINEL, SENTINELS

    base_tokenizer = request.init_from / "tokenizer.model" if request.init_from and request.init_from.is_dir() else None
    if request.tokenizer is None and base_tokenizer is not None and base_tokenizer.is_file():
        request = replace(request, tokenizer=base_tokenizer)  # a stage keeps its base model's tokenizer
    path = request.tokenizer or request.out / "tokenizer.model"
    def train_one() -> None:
        if request.tokenizer is not None or path.exists():
            return
        vocab = min(spec.tokenizer.vocab_size or spec.dims.vocab_size, spec.dims.vocab_size)
        with tempfile.TemporaryDirectory(prefix="taxonc-tok-") as tmp:
            text, size = [], 0
            for doc in documents():
                text.append(doc.text)
                size += len(doc.text)
                if size > TOKENIZER_TEXT_LIMIT:
                    break
            corpus = Path(tmp) / "corpus.txt"
            corpus.write_text("\n".join(text), encoding="utf-8")
            specials = (*DEFAULT_SPECIAL_TOKENS, *(SENTINEL.format(i) for i in range(SENTINELS)), *extra_pieces)
            train_tokenizer(corpus, vocab, spec.tokenizer.algorithm, path, special_tokens=specials, num_threads=1)

    on_main(world, train_one)  # rank 0 decides and trains; the others wait for it, or fail with it
    tok = Tokenizer.load(path)
    if tok.vocab_size > spec.dims.vocab_size:
        raise TaxoncError(f"{path}: the tokenizer has {tok.vocab_size} pieces but the model embeds "
                          f"dims.vocab_size = {spec.dims.vocab_size}; use a tokenizer of at most that many pieces")
    if tok.eos_id is None:
        raise TaxoncError(f"{path}: the tokenizer has no end-of-sequence piece, which packing needs")
    return tok, path.read_bytes()


def _feedback(request: TrainRequest, spec: ModelSpec, tok):
    """The spec's feedback conditioning with the --scorer hook, or None."""
    import importlib

    from taxonc.runtime.conditioning import control_token_ids
    from taxonc.runtime.train.data import Feedback

    fc = spec.training.feedback_conditioning
    if fc is None:
        if request.scorer is not None:
            raise UsageError(f"--scorer: {request.spec} has no training.feedback_conditioning to score for")
        return None
    if request.scorer is None:
        raise UsageError(f"{request.spec}: training.feedback_conditioning needs a reward: give --scorer MODULE:FUNCTION "
                         "(a function from document text to a number)")
    if fc.threshold is None:
        raise TaxoncError(f"{request.spec}: training.feedback_conditioning.threshold is not set; it splits good from bad")
    module_name, _, attr = request.scorer.partition(":")
    try:
        score = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError, ValueError) as exc:
        raise UsageError(f"--scorer {request.scorer}: cannot be imported ({exc}); "
                         "give MODULE:FUNCTION importable from the working directory") from None
    if not callable(score):
        raise UsageError(f"--scorer {request.scorer}: not a function")
    good, bad = control_token_ids(tok, fc.good_token, fc.bad_token)
    return Feedback(score, fc.threshold, good, bad, request.scorer)


def _base_width_sets(spec: ModelSpec, base: int) -> list[str]:
    """--set overrides that compile the same spec at muP's base width: every width scaled by
    base / d_model, head counts kept (so d_head scales too)."""
    d = spec.dims
    factor = base / d.d_model

    def scaled(value: int) -> int:
        return max(1, round(value * factor))

    sets = [f"dims.d_model={base}", f"dims.d_ff={scaled(spec_d_ff(spec))}", "dims.ff_multiple_of=1"]
    if d.d_head is not None:
        sets.append(f"dims.d_head={scaled(d.d_head)}")
    if d.d_embed is not None:
        sets.append(f"dims.d_embed={scaled(d.d_embed)}")
    if spec.moe is not None and spec.moe.d_ff is not None:
        sets.append(f"moe.d_ff={scaled(spec.moe.d_ff)}")
    return sets


def spec_d_ff(spec: ModelSpec) -> int:
    from .spec import derive

    return derive(spec).d_ff


def _mup(request: TrainRequest, spec: ModelSpec):
    """muP's width multiplier and base-width shapes, when the spec enables it."""
    from taxonc.runtime.artifact import load_source
    from taxonc.runtime.train.recipe import MupConfig

    from .compile import compile_spec

    mup = spec.training.mup
    if not mup.enabled:
        return None
    if mup.base_d_model is None:
        raise TaxoncError(f"{request.spec}: training.mup.enabled needs training.mup.base_d_model (the width the "
                          "hyperparameters were tuned at)")
    if request.scale != "full":
        raise UsageError("muP training runs at --scale full: set the widths with --set dims.d_model=... "
                         "(tiny scaling picks its own widths)")
    base = compile_spec(request.spec, backend="torch", scale="full",
                        sets=[*request.sets, *_base_width_sets(spec, mup.base_d_model)])
    model = load_source(base.files["model.py"], "mup_base").build(device="meta")
    shapes = tuple((name, tuple(p.shape)) for name, p in model.named_parameters())
    return MupConfig(spec.dims.d_model / mup.base_d_model, shapes)


def _seq_len(request: TrainRequest, spec: ModelSpec, recipe) -> int:
    """--seq-len, else the context; span corruption's windows must fit the encoder (inputs) and
    the decoder (targets) after corruption."""
    from taxonc.runtime.train.objectives import BLANK_MIN_LEN, seq2seq_encoder_len, span_lengths
    from taxonc.runtime.train.recipe import Objective

    encoder = spec.encoder.context if spec.encoder else spec.dims.context
    if recipe.objective is Objective.SEQ2SEQ:
        seq_len = request.seq_len or encoder + spec.dims.context
        enc = seq2seq_encoder_len(seq_len, encoder, spec.dims.context)
        if enc > encoder or seq_len - enc > spec.dims.context:
            raise UsageError(f"--seq-len {seq_len}: seq2seq gives the encoder {enc} and the decoder {seq_len - enc} tokens; "
                             f"the encoder takes {encoder} (encoder.context) and the decoder {spec.dims.context} "
                             f"(dims.context), so --seq-len is at most {encoder + spec.dims.context}")
        return seq_len
    if recipe.objective is Objective.BLANK_INFILLING and request.seq_len is not None and request.seq_len < BLANK_MIN_LEN:
        raise UsageError(f"--seq-len {request.seq_len}: blank infilling needs at least {BLANK_MIN_LEN} tokens "
                         "(a kept token, a mask, a start token and a blanked token)")
    if recipe.objective is not Objective.SPAN_CORRUPTION:
        seq_len = request.seq_len or spec.dims.context
        if seq_len > spec.dims.context:
            raise UsageError(f"--seq-len {seq_len} is longer than the model's context (dims.context = {spec.dims.context})")
        return seq_len
    seq_len = request.seq_len or encoder
    inputs, targets = span_lengths(seq_len)
    if inputs > encoder or targets > spec.dims.context:
        raise UsageError(f"--seq-len {seq_len}: span corruption makes inputs of {inputs} and targets of {targets} tokens; "
                         f"the encoder takes {encoder} (encoder.context) and the decoder {spec.dims.context} (dims.context)")
    return seq_len


def _sentinels(tok, seq_len: int) -> tuple[int, ...]:
    """The tokenizer's <extra_id_N> ids, enough for the spans of one window."""
    from taxonc.runtime.train.objectives import SENTINEL, span_counts

    needed = span_counts(seq_len)[1]
    ids = [tok.token_id(SENTINEL.format(i)) for i in range(needed)]
    if None in ids:
        raise TaxoncError(f"{tok.source}: span corruption needs sentinel pieces {SENTINEL.format(0)} to "
                          f"{SENTINEL.format(needed - 1)}; use a tokenizer trained by taxonc train (no --tokenizer)")
    return tuple(ids)


def _blank_ids(tok):
    """The tokenizer's [MASK], [gMASK], <sop> and <eop> ids (GLM-130B's pieces)."""
    from taxonc.runtime.train.objectives import BLANK_PIECES, BlankIds

    ids = [tok.token_id(piece) for piece in BLANK_PIECES]
    if None in ids:
        missing = [piece for piece, i in zip(BLANK_PIECES, ids) if i is None]
        raise TaxoncError(f"{tok.source}: blank infilling needs the pieces {', '.join(BLANK_PIECES)}; the tokenizer lacks "
                          f"{', '.join(missing)} (use a tokenizer trained by taxonc train: no --tokenizer)")
    return BlankIds(*ids)


def _seq2seq_split(request: TrainRequest, spec: ModelSpec, tok, seq_len: int) -> tuple[int, int]:
    """(encoder tokens per window, decoder start id): the split keeps the encoder-to-decoder
    context ratio; the decoder starts where taxonc run's generate starts it."""
    from taxonc.runtime.train.objectives import seq2seq_encoder_len

    encoder = spec.encoder.context if spec.encoder else spec.dims.context
    start = spec.tokenizer.decoder_start_id
    if start is None:
        start = tok.pad_id if tok.pad_id is not None else tok.bos_id
    if start is None:
        raise TaxoncError(f"{request.spec}: seq2seq needs the id the decoder starts from; the spec sets no "
                          "tokenizer.decoder_start_id and the tokenizer has no pad or BOS piece")
    return seq2seq_encoder_len(seq_len, encoder, spec.dims.context), start


def _check_tp(request: TrainRequest, spec: ModelSpec) -> None:
    """Tensor parallelism splits whole heads and whole MLP columns across --tp ranks."""
    from .spec import derive

    if request.tp == 1:
        return
    arch = derive(spec)
    for key, value in (("dims.n_heads", spec.dims.n_heads), ("n_kv_heads", arch.n_kv_heads), ("the MLP width", arch.d_ff)):
        if value % request.tp:
            raise UsageError(f"--tp {request.tp} does not divide {key} ({value}); tensor parallelism splits it evenly")


def _base_weights(request: TrainRequest, spec: ModelSpec) -> Path | None:
    """--init-from as a weights file; a lineage stage must start from its base model."""
    if request.init_from is None:
        if spec.lineage and spec.lineage.stages:
            raise UsageError(f"{request.spec}: a lineage stage starts from its base model (lineage.base = "
                             f"{spec.lineage.base!r}); give --init-from with that model's artifact, e.g. "
                             "RUN_DIR/model of a taxonc train run of the base spec")
        return None
    path = request.init_from / "weights.safetensors" if request.init_from.is_dir() else request.init_from
    return path


def run_training(request: TrainRequest):
    from taxonc.runtime.artifact import load_source
    from taxonc.runtime.fim import fim_sentinel_ids
    from taxonc.runtime.train.corpus import corpus_files, read_documents
    from taxonc.runtime.train.data import Tokenizing, files_key, load_prepared, prepare
    from taxonc.runtime.train.distributed import on_main, start
    from taxonc.runtime.train.loop import Job, RunOptions, train
    from taxonc.runtime.train.objectives import BLANK_PIECES
    from taxonc.runtime.train.recipe import Objective

    from .compile import compile_spec

    for flag, value, low in (("--micro-batch", request.micro_batch, 1), ("--tokens", request.tokens, 1),
                             ("--batch-tokens", request.batch_tokens, 1), ("--seq-len", request.seq_len, 2),
                             ("--eval-every", request.eval_every, 0), ("--checkpoint-every", request.checkpoint_every, 0),
                             ("--max-steps", request.max_steps, 1)):
        if value is not None and value < low:
            raise UsageError(f"{flag} must be >= {low}, got {value}")
    if request.tp < 1:
        raise UsageError(f"--tp must be >= 1, got {request.tp}")
    fused = request.fusion and request.tp == 1  # fused projections cannot be split by tensor parallelism
    compiled = compile_spec(request.spec, backend="torch", scale=request.scale, sets=list(request.sets),
                            passes=None if fused else [])
    spec = compiled.spec
    _check_tp(request, spec)
    recipe = build_recipe(spec, str(request.spec), request.tokens, request.batch_tokens, request.stage)
    mup = _mup(request, spec)
    if mup is not None:
        recipe = replace(recipe, mup=mup, notes=(*recipe.notes, f"muP: width multiplier {mup.width_mult:g}; "
                                                  "hidden matrices train at lr / multiplier"))
    init_from = _base_weights(request, spec)
    seq_len = _seq_len(request, spec, recipe)
    world = start()
    sft = recipe.objective is Objective.SFT
    files = corpus_files(request.data)
    skipped: list[Path] = []
    documents = lambda: read_documents(request.data, sft=sft, skipped=skipped)  # noqa: E731 - read twice
    blank = recipe.objective is Objective.BLANK_INFILLING
    tok, tok_bytes = _tokenizer(request, spec, documents, world, BLANK_PIECES if blank else ())
    how = Tokenizing(tok.encode, tok.eos_id, spec.dims.vocab_size, hashlib.sha256(tok_bytes).hexdigest(), recipe.fim,
                     fim_sentinel_ids(tok) if recipe.fim else None, request.seed, _feedback(request, spec, tok))
    data_dir = request.out / "data"
    prepared = on_main(world, lambda: prepare(documents(), how, data_dir, files_key(files)))
    if not world.main:
        prepared = load_prepared(data_dir)
    if skipped:
        notes = (*recipe.notes, f"left out {len(set(skipped))} file(s) found in directories that are not UTF-8, "
                                f"e.g. {sorted(set(skipped))[0]}")
        recipe = replace(recipe, notes=notes)
    build = load_source(compiled.files["model.py"], f"train_{spec.model.name}").build
    options = RunOptions(request.out, request.seed, request.micro_batch, seq_len, request.eval_every,
                         checkpoint_every=request.checkpoint_every, resume=request.resume, progress=request.progress,
                         bf16=request.bf16, activation_checkpointing=request.activation_checkpointing,
                         compile=request.compile, max_steps=request.max_steps, tp=request.tp)
    sentinels = _sentinels(tok, seq_len) if recipe.objective is Objective.SPAN_CORRUPTION else ()
    encoder_len, start_id = 0, 0
    if recipe.objective is Objective.SEQ2SEQ:
        encoder_len, start_id = _seq2seq_split(request, spec, tok, seq_len)
        recipe = replace(recipe, notes=(*recipe.notes, f"seq2seq: the encoder reads {encoder_len} of each window's "
                                        f"{seq_len} tokens, the decoder predicts {seq_len - encoder_len}"))
    blank_ids = _blank_ids(tok) if blank else None
    job = Job(recipe, options, build, prepared, dict(compiled.files), compiled.digest, spec.model.name, tok_bytes, init_from,
              sentinels, tok.eos_id, encoder_len, start_id, blank_ids)
    return world, recipe, prepared, train(job)
