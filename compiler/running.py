"""`taxonc run`: compile when given a spec, load, tokenize, generate, stream."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from rich.console import Console

from .errors import TaxoncError, UsageError

# A model whose fp32 weights would take more than this share of memory is refused up front.
MEMORY_SHARE = 0.5


def _available_memory() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 8 << 30


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


def _check_utf8(flag: str, text: str | None) -> None:
    """Bytes in argv that are not UTF-8 reach Python as surrogate escapes; refuse them by name."""
    if text is None:
        return
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise UsageError(f"{flag} is not valid UTF-8 (an undecodable byte at character {exc.start})") from None


def _tokenizer(path: Path | None, artifact_dir: Path | None, spec: dict[str, Any]):
    from taxonc.runtime.tokenizer import Tokenizer

    if path is not None:
        return Tokenizer.load(path)
    from taxonc.runtime.files import present

    # anything at DIR/tokenizer.model (a folder, a dangling link) is read and refused, not skipped
    if artifact_dir is not None and present(artifact_dir / "tokenizer.model"):
        return Tokenizer.load(artifact_dir / "tokenizer.model")
    return Tokenizer.default()


def run_generation(*, target: Path, prompt: str, scale: str | None, sets: list[str], weights: Path | None, tokenizer: Path | None,
                   sampler: dict[str, Any], max_new_tokens: int, seed: int, fim_suffix: str | None, condition: str | None,
                   as_json: bool, out: Console, err: Console) -> dict[str, Any]:
    from taxonc.runtime.conditioning import generation_prefix
    from taxonc.runtime.errors import RuntimeFailure
    from taxonc.runtime.fim import fim_prompt, fim_sentinel_ids
    from taxonc.runtime.generate import generate
    from taxonc.runtime.sampling import SamplerConfig
    from taxonc.runtime.tokenizer import PHF_BAD, PHF_GOOD

    try:
        config = SamplerConfig(**sampler)
    except ValueError as exc:  # an option out of range: a usage error, named by its flag
        raise UsageError(str(exc)) from None
    if max_new_tokens < 0:
        raise UsageError(f"--max-new-tokens must be >= 0, got {max_new_tokens}")
    for flag, text in (("--prompt", prompt), ("--fim-suffix", fim_suffix)):
        _check_utf8(flag, text)
    if condition not in (None, "good", "bad"):
        raise UsageError(f"--condition is good or bad, not {condition!r}")
    with tempfile.TemporaryDirectory(prefix="taxonc-run-") as tmp:
        artifact = _artifact(target, scale, sets, weights, seed, Path(tmp))
        # after the artifact: its manifest says whether DIR/tokenizer.model is part of it
        tok = _tokenizer(tokenizer, target if target.is_dir() else None, {})
        spec = artifact.spec
        vocab = spec["dims"]["vocab_size"]
        if tok.vocab_size > vocab:
            raise RuntimeFailure(f"the tokenizer has {tok.vocab_size} pieces but the model embeds only {vocab} tokens")
        ids = tok.encode(prompt)
        if fim_suffix is not None:
            pre, mid, suf = fim_sentinel_ids(tok)
            mode = (spec["training"].get("fim") or {}).get("mode", "psm")
            ids = fim_prompt(ids, tok.encode(fim_suffix), "spm" if mode == "spm" else "psm", pre, mid, suf)
        if condition is not None:
            control = tok.token_id(PHF_GOOD if condition == "good" else PHF_BAD)
            if control is None:
                raise RuntimeFailure("the tokenizer has no feedback control tokens (<|good|>, <|bad|>)")
            ids = generation_prefix(control) + ids
        if not ids:
            raise RuntimeFailure("the prompt encodes to no tokens")
        stream = tok.decode_stream()

        def on_token(token: int) -> None:
            if not as_json:
                out.file.write(stream.push(token))
                out.file.flush()

        result = generate(artifact.model, artifact.new_cache, spec, ids, config, max_new_tokens, seed,
                          tok.eos_id, on_token)
        text = tok.decode(result.new_ids)
        report = {
            "spec": spec["model"]["name"], "scale": artifact.lock.get("scale"), "prompt": prompt, "text": text,
            "prompt_ids": result.prompt_ids, "ids": result.new_ids, "stopped": result.stopped,
            "sampler": sampler, "seed": seed, "prefill_s": result.prefill_s, "decode_s": result.decode_s,
            "tokens_per_s": result.tokens_per_s,
        }
        if as_json:
            print(json.dumps(report))
        else:
            out.file.write(stream.flush() + "\n")
            err.print(f"[dim]{len(result.new_ids)} tokens ({result.stopped}), {result.tokens_per_s:.1f} tokens/s, "
                      f"prefill {result.prefill_s * 1000:.1f} ms[/]")
        return report
