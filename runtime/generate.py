"""Token generation with the KV cache: prefill once, then one token per step."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from collections.abc import Collection
from typing import Any, Callable

import torch

from .errors import RuntimeFailure
from .inputs import extra_inputs
from .sampling import SamplerConfig, beam_search, next_token, why_not_finite


@dataclass
class Generation:
    prompt_ids: list[int]
    new_ids: list[int]
    prefill_s: float
    decode_s: float
    stopped: str  # "length", "eos" or "context"
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def tokens_per_s(self) -> float:
        steps = max(len(self.new_ids) - 1, 0)
        return steps / self.decode_s if self.decode_s > 0 and steps else 0.0


def decoder_start(spec: dict[str, Any], fallback: int | None) -> int:
    """The id an encoder-decoder's decoder reads first: the spec's tokenizer.decoder_start_id, else
    `fallback` (the tokenizer's pad, else BOS id: see text_tokenizer.decoder_start_fallback).

    The prompt's own first token is never used: the decoder was trained to start from one fixed id
    (T5 and Switch: the pad id, 0), and any other id gives other text than transformers' generate.
    """
    start = (spec.get("tokenizer") or {}).get("decoder_start_id")
    key = "tokenizer.decoder_start_id" if start is not None else "the tokenizer's pad/BOS id"
    start = start if start is not None else fallback
    if start is None:
        raise RuntimeFailure(f"{spec['model']['name']}: an encoder-decoder model needs the id its decoder starts from; "
                             "the spec sets no tokenizer.decoder_start_id and the tokenizer has no pad or BOS token "
                             "(set tokenizer.decoder_start_id in the spec)")
    vocab = spec["dims"]["vocab_size"]
    if not 0 <= start < vocab:
        raise RuntimeFailure(f"{spec['model']['name']}: {key} {start} is not a row of the embedding's {vocab} rows "
                             f"(allowed: 0..{vocab - 1})")
    return start


def generation_inputs(spec: dict[str, Any], prompt_ids: torch.Tensor, total_len: int,
                      fallback_start_id: int | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The decoder's own prompt and the keyword inputs beyond it, for text generation.

    Encoder-decoder models read the prompt with the encoder and decode from `decoder_start`
    (`fallback_start_id` where the spec names no start id).
    Flamingo-style models get no image (zero media features). RETRO-style models get no
    retrieval (neighbours are padding ids), which exercises the path without a database.
    """
    kw = extra_inputs(spec, prompt_ids.shape[0], total_len, dtype=torch.get_default_dtype(),
                      encoder_len=prompt_ids.shape[1], media_len=1)
    if "encoder_ids" not in kw:
        return prompt_ids, kw
    kw["encoder_ids"] = prompt_ids
    start = decoder_start(spec, fallback_start_id)
    return torch.full((prompt_ids.shape[0], 1), start, dtype=torch.long), kw


def _checked(logits: torch.Tensor, step: int, budget: int) -> torch.Tensor:
    """The logits for new token `step` (1-based), or a one-line error when they cannot be decoded."""
    why = why_not_finite(logits)
    if why is not None:
        raise RuntimeFailure(f"the model's logits at decoding step {step} of {budget} {why}: "
                             "the weights or the computation are broken, so no token is chosen")
    return logits


def generate(model: torch.nn.Module, new_cache: Callable[[], Any], spec: dict[str, Any], prompt: list[int],
             sampler: SamplerConfig, max_new_tokens: int, seed: int = 0, eos_id: int | Collection[int] | None = None,
             on_token: Callable[[int], None] | None = None, prefix_len: int | None = None,
             fallback_start_id: int | None = None) -> Generation:
    """Generate up to max_new_tokens after `prompt`; on_token is called as each token arrives.

    `eos_id` is one stop id or several (generation_config.json may list more than one, as
    transformers' generate accepts); beam search stops on the first of them only.
    `fallback_start_id` is where an encoder-decoder's decoder starts when the spec sets no
    tokenizer.decoder_start_id (the tokenizer's pad, else BOS id).
    """
    stops = frozenset([eos_id] if isinstance(eos_id, int) else eos_id or ())
    eos_id = eos_id if isinstance(eos_id, int) or eos_id is None else next(iter(eos_id), None)
    if not prompt:
        raise RuntimeFailure("the prompt is empty")
    context = spec["dims"]["context"]
    gen = torch.Generator().manual_seed(seed)
    ids = torch.tensor([prompt], dtype=torch.long)
    decoder_prompt, kw = generation_inputs(spec, ids, len(prompt) + max_new_tokens, fallback_start_id)
    if decoder_prompt.shape[1] >= context:
        raise RuntimeFailure(f"the prompt has {decoder_prompt.shape[1]} tokens; the model's context is {context}")
    budget = min(max_new_tokens, context - decoder_prompt.shape[1])
    if prefix_len is None:  # a prefix LM reads the whole prompt bidirectionally
        prefix_len = decoder_prompt.shape[1] if spec["model"]["structure"] == "prefix-lm" else 0
    cache = new_cache()
    new: list[int] = []
    stopped = "length" if budget == max_new_tokens else "context"
    with torch.inference_mode():
        if sampler.kind == "beam":
            calls = [0]

            def step(tokens: torch.Tensor, beam_cache: Any) -> torch.Tensor:
                extra = kw if not calls[0] else {k: v.expand(tokens.shape[0], *v.shape[1:]) for k, v in kw.items()}
                calls[0] += 1
                logits = model(tokens, cache=beam_cache, prefix_len=prefix_len, **extra)[:, -1].float()
                return _checked(logits, calls[0], budget)

            start = time.perf_counter()
            out = beam_search(step, decoder_prompt, cache, budget, sampler.num_beams, sampler.length_penalty, eos_id)
            new = out[0, decoder_prompt.shape[1]:].tolist()
            elapsed = time.perf_counter() - start
            for token in new:
                if on_token:
                    on_token(token)
            if eos_id is not None and new and new[-1] == eos_id:
                stopped = "eos"
            return Generation(prompt, new, 0.0, elapsed, stopped)
        start = time.perf_counter()
        logits = model(decoder_prompt, cache=cache, prefix_len=prefix_len, **kw)[:, -1].float()
        prefill = time.perf_counter() - start
        start = time.perf_counter()
        for i in range(budget):
            token = int(next_token(_checked(logits, i + 1, budget), sampler, gen)[0])
            new.append(token)
            if on_token:
                on_token(token)
            if token in stops:
                stopped = "eos"
                break
            if i + 1 < budget:
                logits = model(torch.tensor([[token]]), cache=cache, **kw)[:, -1].float()
        decode = time.perf_counter() - start
    return Generation(prompt, new, prefill, decode, stopped)
