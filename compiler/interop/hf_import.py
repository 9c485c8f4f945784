"""`taxonc import`: a Hugging Face model directory -> a spec and a compiled artifact with its weights.

Every check that can fail runs before anything is written: the config (interop/hf_config.py),
the weight files and every tensor's name, shape and dtype (from safetensors headers, no data
read), and the tokenizer's size. Then the artifact is written through one call to
fsutil.write_artifact_files (staged, sealed by a manifest, renamed into place), the weights streamed tensor by tensor.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import torch

from taxonc.runtime.files import why_not_regular
from taxonc.runtime.weights import NAME_KEY, SPEC_KEY

from .. import __version__
from ..compile import Compiled
from ..errors import SpecError
from ..spec.model import MAX_NAME, NAME_RE, ModelSpec
from .hf_config_file import read_config_json, read_spec_fields, spec_toml
from .hf_schema import Family
from .hf_keys import ImportRefused
from .hf_stream import ImportPlan, check_tied, plan_import
from .safetensors_stream import Entry, StreamWriter, read_header
from .tokenizer_files import check_fits, tokenizer_files

SINGLE = "model.safetensors"
INDEX = "model.safetensors.index.json"
PICKLES = re.compile(r"(pytorch_model.*\.bin|.*\.(pt|pth|ckpt))(\.index\.json)?$")
SPEC_FILE = "spec.toml"
MAX_INDEX_BYTES = 64 << 20  # an index names each tensor once: a few MB for the largest models
WEIGHTS = "weights.safetensors"
CONVERT_HINT = ("convert it to safetensors first, e.g. in Python: transformers.AutoModelForCausalLM"
                ".from_pretrained(DIR).save_pretrained(OUT, safe_serialization=True), on a machine where you trust the file")


@dataclass
class Imported:
    out: Path
    spec: ModelSpec
    family: Family
    n_tensors: int
    weight_bytes: int
    tokenizer: str | None


def _check_directory(src: Path) -> None:
    if not src.exists():
        raise ImportRefused(f"{src}: does not exist")
    if not src.is_dir():
        raise ImportRefused(f"{src}: not a directory; taxonc import reads a Hugging Face model directory "
                            "(config.json, *.safetensors, tokenizer files)")


def weight_entries(src: Path) -> dict[str, Entry]:
    """Every tensor of the checkpoint by name, from the single file or the index and its shards."""
    index, single = src / INDEX, src / SINGLE
    if index.exists():
        reason = why_not_regular(index)
        if reason is not None:
            raise ImportRefused(f"{index}: {reason}")
        if index.stat().st_size > MAX_INDEX_BYTES:
            raise ImportRefused(f"{index}: larger than {MAX_INDEX_BYTES >> 20} MiB; not a safetensors index")
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8")).get("weight_map")
        except (UnicodeDecodeError, json.JSONDecodeError, AttributeError) as exc:
            raise ImportRefused(f"{index}: not a safetensors index ({str(exc).splitlines()[0]})") from None
        if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
            raise ImportRefused(f"{index}: weight_map must map tensor names to shard file names")
        shards = sorted(set(weight_map.values()))
        for shard in shards:
            path = src / shard
            if Path(shard).name != shard:
                raise ImportRefused(f"{index}: shard {shard!r} is not a file name in this directory")
            reason = why_not_regular(path)
            if reason is not None:
                raise ImportRefused(f"{index}: names shard {shard}, which {reason}")
        entries: dict[str, Entry] = {}
        for shard in shards:
            header = read_header(src / shard)
            for name, shard_of in weight_map.items():
                if shard_of == shard and name not in header:
                    raise ImportRefused(f"{index}: maps {name} to {shard}, which does not hold it")
            entries.update(header)
        return entries
    if single.exists():
        reason = why_not_regular(single)
        if reason is not None:
            raise ImportRefused(f"{single}: {reason}")
        return read_header(single)
    pickled = sorted(p.name for p in src.iterdir() if PICKLES.fullmatch(p.name))
    if pickled:
        raise ImportRefused(f"{src / pickled[0]}: a pickled PyTorch checkpoint; taxonc reads safetensors only and "
                            f"never unpickles (unpickling can run code); {CONVERT_HINT}")
    raise ImportRefused(f"{src}: no weights ({SINGLE}, or {INDEX} with its shards)")


def model_name(src: Path) -> str:
    """A spec name from the directory's name (a slug), or `imported`."""
    slug = re.sub(r"[^a-z0-9._-]+", "-", src.resolve().name.lower()).strip("-._")[:MAX_NAME]
    return slug if slug and NAME_RE.fullmatch(slug) else "imported"


def _meta_state(model_py: str) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    from taxonc.runtime.artifact import load_source

    module = load_source(model_py, "import_meta")
    model = module.build(device="meta")
    return {name: (tuple(t.shape), t.dtype) for name, t in model.state_dict().items()}


def _weights_writer(plan: ImportPlan, entries: dict[str, Entry], metadata: dict[str, str]):
    """A function that streams the converted tensors into an open file, one at a time."""
    def write(handle: BinaryIO) -> None:
        writer = StreamWriter(handle, [(name, plan.dtype, shape) for name, shape in plan.shapes.items()], metadata)
        for name, tensor in plan.tensors(entries):
            writer.write(name, tensor)
        writer.close()
    return write


@dataclass
class Prepared:
    """Everything an import checked before writing: the spec's text and compilation, the tensor plan."""

    family: Family
    spec_text: str
    compiled: Compiled
    plan: ImportPlan
    entries: dict[str, Entry]
    tokenizers: dict[str, Path]


def _compile(src: Path, text: str, backend: str) -> Compiled:
    """Compile the spec text; a config the spec rules refuse (a window past the context, ...) is one line."""
    from ..compile import compile_spec

    with tempfile.TemporaryDirectory(prefix="taxonc-import-") as tmp:
        spec_path = Path(tmp) / SPEC_FILE
        spec_path.write_text(text, encoding="utf-8")
        try:
            return compile_spec(spec_path, backend=backend, scale="full", source_label=SPEC_FILE)
        except SpecError as exc:
            said = "; ".join(f"{p.key}: {p.message}" for p in exc.problems[:4])
            raise ImportRefused(f"{src / 'config.json'}: describes a model the spec language refuses ({said})") from None


def prepare(src: Path, name: str | None = None, backend: str = "torch") -> Prepared:
    """Every check an import makes, before anything is written."""
    src = Path(src)
    _check_directory(src)
    config = read_config_json(src)
    family, reading = read_spec_fields(config, str(src / "config.json"))
    entries = weight_entries(src)
    tokenizers = tokenizer_files(src)
    counted = check_fits(tokenizers, int(reading.fields["dims.vocab_size"]), src)
    extra = {}
    if counted is not None:
        kind = "sentencepiece" if counted[1] == "tokenizer.model" else "bpe"
        extra = {"tokenizer.kind": (kind, counted[1]), "tokenizer.vocab_size": (counted[0], f"{counted[1]}: token ids")}
    text = spec_toml(family, reading, name or model_name(src), extra)
    compiled = _compile(src, text, backend)
    state = _meta_state(compiled.files["model.py"])
    plan = plan_import(str(src), family, compiled.spec, compiled.graph, {k: v[0] for k, v in state.items()}, entries)
    check_tied(family, compiled.spec, entries)
    return Prepared(family, text, compiled, plan, entries, tokenizers)


def import_checkpoint(src: Path, out: Path, name: str | None = None, backend: str = "torch") -> Imported:
    from ..fsutil import write_artifact_files

    src, out = Path(src), Path(out)
    done = prepare(src, name, backend)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ImportRefused(f"{out}: exists and is not an empty directory; choose another -o or remove it")
    compiled, plan = done.compiled, done.plan
    lock = json.loads(compiled.files["spec.lock.json"])
    lock["weights_dtype"] = str(plan.dtype).removeprefix("torch.")
    lock["imported_from"] = {"format": "huggingface", "model_type": done.family.model_type}
    files: dict[str, object] = {**{k: v for k, v in compiled.files.items() if k != "spec.lock.json"},
                                "spec.lock.json": json.dumps(lock, indent=2, sort_keys=True) + "\n",
                                SPEC_FILE: done.spec_text, **done.tokenizers}
    metadata = {SPEC_KEY: compiled.digest, NAME_KEY: compiled.spec.model.name, "format": "pt"}
    files[WEIGHTS] = _weights_writer(plan, done.entries, metadata)
    write_artifact_files(out, files)  # type: ignore[arg-type]
    n_bytes = sum(plan.dtype.itemsize * torch.Size(shape).numel() for shape in plan.shapes.values())
    tokenizer = next((n for n in ("tokenizer.json", "tokenizer.model", "vocab.json") if n in done.tokenizers), None)
    return Imported(out, compiled.spec, done.family, len(plan.shapes), n_bytes, tokenizer)


# --------------------------------------------------------------------------------------------
# a cache of on-the-fly imports (taxonc run --weights HF_DIR)
# --------------------------------------------------------------------------------------------

def cache_root() -> Path:
    """$XDG_CACHE_HOME/taxonc/imports, or ~/.cache/taxonc/imports."""
    base = os.environ.get("XDG_CACHE_HOME") or ""
    root = Path(base) if base and Path(base).is_absolute() else Path.home() / ".cache"
    return root / "taxonc" / "imports"


def content_key(src: Path) -> str:
    """sha256 over taxonc's version and every file import reads, so a changed byte is a new import."""
    digest = hashlib.sha256(f"taxonc {__version__}\n".encode())
    names = ["config.json", INDEX, SINGLE, *sorted(p.name for p in src.glob("*.safetensors")), *tokenizer_files(src)]
    for name in dict.fromkeys(names):
        path = src / name
        if not path.is_file():
            continue
        digest.update(f"{name}\n{path.stat().st_size}\n".encode())
        with open(path, "rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
    return digest.hexdigest()


def import_cached(src: Path) -> Path:
    """The artifact for HF directory `src`, imported into the cache on first use."""
    src = Path(src)
    _check_directory(src)
    read_config_json(src)  # a directory without config.json fails here, before hashing
    out = cache_root() / content_key(src)[:32]
    if (out / "spec.lock.json").is_file():
        return out
    try:
        import_checkpoint(src, out)
    except (ImportRefused, OSError):
        if (out / "spec.lock.json").is_file():  # another process finished the same import first
            return out
        raise
    return out
