"""`taxonc run`: compile when given a spec, load, tokenize, generate, stream."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from rich.console import Console

from taxonc.runtime.files import present

from .errors import TaxoncError, UsageError

# A model whose fp32 weights would take more than this share of memory is refused up front.
MEMORY_SHARE = 0.5

# Below this many parameters, decoding runs on one thread unless --threads says otherwise. A decode step of a small
# model is a few small matmuls, so synchronising threads costs more than it saves, and on a busy machine a second
# thread waits for a core. Measured on a shared 2-core machine (docs/usage.md#threads): LLaMA-shaped models from
# 1.2M to 86M parameters decoded 4x to 60x faster on one thread than on two; larger models were not measured.
SMALL_MODEL_PARAMS = 100_000_000
MAX_THREADS = 1024


def choose_threads(params: int, requested: int | None) -> int | None:
    """The thread count for decoding: --threads when given, 1 for a small model, else None (torch's default)."""
    if requested is not None:
        if type(requested) is not int or not 1 <= requested <= MAX_THREADS:
            raise UsageError(f"--threads must be a whole number from 1 to {MAX_THREADS}, got {requested!r}")
        return requested
    return 1 if params < SMALL_MODEL_PARAMS else None


def _available_memory() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 8 << 30


def model_source(target: Path | None, weights: Path | None) -> tuple[Path, Path | None]:
    """(what to run, a weights file or None). `--weights DIR` holding a model names the model itself:
    an imported artifact (spec.lock.json), or a Hugging Face directory (config.json) imported on
    the fly into the cache, keyed by content. Any other path stays a weights file and is checked as one."""
    is_model = weights is not None and weights.is_dir() and any(
        present(weights / name) for name in ("spec.lock.json", "config.json"))
    if weights is not None and is_model:
        if target is not None:
            raise UsageError(f"--weights {weights} is a directory holding a whole model; give no spec or artifact as well")
        if present(weights / "spec.lock.json"):
            return weights, None
        from .interop.hf_import import import_cached

        return import_cached(weights), None
    if target is None:
        raise UsageError("give a spec file or an artifact directory, or --weights DIR (an artifact or a Hugging Face directory)")
    return target, weights


def _artifact(target: Path, scale: str | None, sets: list[str], weights: Path | None, seed: int, workdir: Path):
    from taxonc.runtime.artifact import load

    from .compile import compile_spec, write_artifact

    if target.is_dir():
        if scale is not None or sets:
            raise UsageError(f"{'--set' if sets else '--scale'} applies to spec files, not to a compiled directory "
                             f"({target}); compile the spec with it instead")
        check_artifact_fits(target)
        return load(target, weights=weights, seed=seed)
    compiled = compile_spec(target, backend="torch", scale=scale or "full", sets=sets)
    check_fits(compiled)
    write_artifact(compiled, workdir / "artifact")
    return load(workdir / "artifact", weights=weights, seed=seed)


def _refuse_if_too_big(name: str, params: int) -> None:
    need = params * 4
    if need > MEMORY_SHARE * _available_memory():  # too big is bad input (exit 1), not a usage error
        raise TaxoncError(f"{name} needs {need / 2**30:.1f} GiB of fp32 weights, more than half of this machine's "
                          "free memory; try --scale tiny")


def check_fits(compiled) -> None:
    _refuse_if_too_big(compiled.spec.model.name, compiled.summary()["params"])


def check_artifact_fits(directory: Path) -> None:
    """The size guard of `run SPEC` for a compiled directory, from its lock, before anything is built."""
    from taxonc.runtime.manifest import check_file, read_manifest
    from taxonc.runtime.spec_lock import LOCK, read_lock

    check_file(directory, read_manifest(directory), LOCK)  # the lock is the artifact's own before it is believed
    lock = read_lock(directory)
    _refuse_if_too_big(f"{directory} ({lock['spec']['model']['name']})", lock["summary"]["params"])


def init_weights_file(compiled, out_dir: Path, seed: int) -> Path:
    """Write DIR/weights.safetensors with the emitted model's own (seeded) initialisation."""
    import torch

    from taxonc.runtime.artifact import import_model
    from taxonc.runtime.weights import save_weights

    check_fits(compiled)
    module = import_model(out_dir / "model.py")  # not load(): weights already there may be another spec's
    torch.manual_seed(seed)
    model = module.build().eval()
    path = out_dir / "weights.safetensors"
    save_weights(model, path, compiled.digest, compiled.spec.model.name)
    return path


# Names other tools use for our samplers, for the did-you-mean of --sampler.
SAMPLER_SYNONYMS = {"nucleus": "top-p", "tfs": "tail-free", "beam-search": "beam", "argmax": "greedy",
                    "sample": "temperature", "sampling": "temperature", "multinomial": "temperature"}


def _check_sampler(kind: str) -> None:
    """An unknown --sampler is a usage error naming the samplers and the one most likely meant."""
    from taxonc.runtime.sampling import KINDS

    from .spec.kinds import suggest_choice

    if kind in KINDS:
        return
    close = suggest_choice(kind, KINDS, SAMPLER_SYNONYMS)
    hint = f"; did you mean {close!r}?" if close else ""
    raise UsageError(f"--sampler {kind!r} is not a sampler; samplers are: {', '.join(KINDS)}{hint}")


def torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def _check_utf8(flag: str, text: str | None) -> None:
    """Bytes in argv that are not UTF-8 reach Python as surrogate escapes; refuse them by name."""
    if text is None:
        return
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise UsageError(f"{flag} is not valid UTF-8 (an undecodable byte at character {exc.start})") from None


def _imported_without_tokenizer(artifact) -> bool:
    """An artifact from taxonc import (its lock, already checked by the load, says so) whose
    checkpoint came without tokenizer files."""
    return artifact.lock.get("imported_from") is not None and not any(
        present(artifact.path / name) for name in ("tokenizer.json", "tokenizer.model"))


def _tokenizer(path: Path | None, *folders: Path | None):
    """--tokenizer (a file or folder), else the first of `folders` that holds a tokenizer
    (tokenizer.json, or tokenizer.model with or without HF's tokenizer_config.json), else the
    shipped SentencePiece model."""
    from taxonc.runtime.text_tokenizer import load_tokenizer, tokenizer_in
    from taxonc.runtime.tokenizer import Tokenizer

    if path is not None:
        return load_tokenizer(path)
    for folder in folders:
        # anything at DIR/tokenizer.json or DIR/tokenizer.model (a folder, a dangling link) is read and refused, not skipped
        found = tokenizer_in(folder) if folder is not None and folder.is_dir() else None
        if found is not None:
            return found
    return Tokenizer.default()


def run_generation(*, target: Path | None, prompt: str, scale: str | None, sets: list[str], weights: Path | None, tokenizer: Path | None,
                   sampler: dict[str, Any], max_new_tokens: int, seed: int, fim_suffix: str | None, condition: str | None,
                   as_json: bool, out: Console, err: Console, threads: int | None = None) -> dict[str, Any]:
    from taxonc.runtime.conditioning import generation_prefix
    from taxonc.runtime.errors import RuntimeFailure
    from taxonc.runtime.fim import fim_prompt, fim_sentinel_ids
    from taxonc.runtime.generate import generate
    from taxonc.runtime.sampling import SamplerConfig
    from taxonc.runtime.text_tokenizer import decoder_start_fallback
    from taxonc.runtime.tokenizer import PHF_BAD, PHF_GOOD

    _check_sampler(sampler["kind"])
    try:
        config = SamplerConfig(**sampler)
    except ValueError as exc:  # an option out of range: a usage error, named by its flag
        raise UsageError(str(exc)) from None
    choose_threads(0, threads)  # a bad --threads fails before any work
    if max_new_tokens < 0:
        raise UsageError(f"--max-new-tokens must be >= 0, got {max_new_tokens}")
    for flag, text in (("--prompt", prompt), ("--fim-suffix", fim_suffix)):
        _check_utf8(flag, text)
    if condition not in (None, "good", "bad"):
        raise UsageError(f"--condition is good or bad, not {condition!r}")
    given_weights = weights
    target, weights = model_source(target, weights)
    # weights given as a folder (an HF directory or an artifact) bring their own vocabulary, so their
    # tokenizer comes before the target artifact's
    with tempfile.TemporaryDirectory(prefix="taxonc-run-") as tmp:
        artifact = _artifact(target, scale, sets, weights, seed, Path(tmp))
        if tokenizer is None and _imported_without_tokenizer(artifact):
            raise UsageError(f"{target}: imported from a checkpoint without tokenizer files; the shipped tokenizer would "
                             "give other text for its ids: pass --tokenizer (a tokenizer.json, .model or folder)")
        # after the artifact, whose manifest says which tokenizer files are part of it
        tok = _tokenizer(tokenizer, given_weights, target)
        spec = artifact.spec
        vocab = spec["dims"]["vocab_size"]
        if tok.vocab_size > vocab:
            raise RuntimeFailure(f"tokenizer {tok.source} has {tok.vocab_size} ids but the model embeds only {vocab} tokens; "
                                 f"give a tokenizer of at most {vocab} ids (--tokenizer)")
        ids = tok.encode(prompt)
        if fim_suffix is not None:
            pre, mid, suf = fim_sentinel_ids(tok)
            mode = (spec["training"].get("fim") or {}).get("mode", "psm")
            ids = fim_prompt(ids, tok.encode(fim_suffix, add_special_tokens=False), "spm" if mode == "spm" else "psm", pre, mid, suf)
        if condition is not None:
            control = tok.token_id(PHF_GOOD if condition == "good" else PHF_BAD)
            if control is None:
                raise RuntimeFailure("the tokenizer has no feedback control tokens (<|good|>, <|bad|>)")
            ids = generation_prefix(control) + ids
        if not ids:
            raise RuntimeFailure("the prompt encodes to no tokens")
        stream = tok.decode_stream()
        n_params = int(sum(p.numel() for p in artifact.model.parameters()))
        n_threads = choose_threads(n_params, threads)
        if n_threads is not None:
            import torch

            torch.set_num_threads(n_threads)

        # An embedding padded past the tokenizer (GPT-NeoX: 50432 rows, 50277 ids) can emit ids with no
        # text; they print nothing, as transformers' decode drops them.
        def on_token(token: int) -> None:
            if not as_json and token < tok.vocab_size:
                out.file.write(stream.push(token))
                out.file.flush()

        result = generate(artifact.model, artifact.new_cache, spec, ids, config, max_new_tokens, seed,
                          tok.stop_ids, on_token, fallback_start_id=decoder_start_fallback(tok))
        text = tok.decode([i for i in result.new_ids if i < tok.vocab_size])
        report = {
            "spec": spec["model"]["name"], "scale": artifact.lock.get("scale"), "tokenizer": tok.source,
            "prompt": prompt, "text": text,
            "prompt_ids": result.prompt_ids, "ids": result.new_ids, "stopped": result.stopped,
            "sampler": sampler, "seed": seed, "prefill_s": result.prefill_s, "decode_s": result.decode_s,
            "tokens_per_s": result.tokens_per_s, "params": n_params, "threads": n_threads or torch_threads(),
        }
        if as_json:
            print(json.dumps(report))
        else:
            out.file.write(stream.flush() + "\n")
            err.print(f"[dim]{len(result.new_ids)} tokens ({result.stopped}), {result.tokens_per_s:.1f} tokens/s, "
                      f"prefill {result.prefill_s * 1000:.1f} ms, {report['threads']} thread(s)[/]")
        return report
