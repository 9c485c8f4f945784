"""`taxonc export ARTIFACT --format hf`: an artifact -> a directory transformers loads as the same model.

The config comes from interop/hf_config.config_from_spec (refused when no transformers class
reads back as the same architecture); the weights are the import's moves run backwards, one
tensor at a time, from the artifact's weights.safetensors into model.safetensors.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import BinaryIO

from taxonc.runtime.artifact import read_lock
from taxonc.runtime.files import why_not_regular
from taxonc.runtime.weights import SPEC_KEY

from ..spec.model import ModelSpec
from .hf_config import config_from_spec
from .hf_families import Family
from .hf_keys import ImportRefused
from .hf_weights import plan
from .safetensors_stream import DTYPES, Entry, StreamWriter, read_header, read_metadata, read_tensor
from .tokenizer_files import TOKENIZER_FILES

WEIGHTS = "weights.safetensors"


class ExportFormat(StrEnum):
    HF = "hf"


@dataclass
class Exported:
    out: Path
    family: Family
    n_tensors: int


def _artifact_spec(artifact: Path) -> tuple[ModelSpec, dict]:
    from taxonc.runtime.errors import ArtifactError

    if not artifact.is_dir():
        raise ImportRefused(f"{artifact}: not a directory; export reads an artifact from taxonc compile or taxonc import")
    try:
        lock = read_lock(artifact)
        spec = ModelSpec.model_validate(lock["spec"])
    except ArtifactError as exc:
        raise ImportRefused(str(exc)) from None
    except ValueError as exc:
        raise ImportRefused(f"{artifact / 'spec.lock.json'}: its spec does not validate "
                            f"({str(exc).splitlines()[0]})") from None
    return spec, lock


def _weights(artifact: Path, lock: dict) -> dict[str, Entry]:
    path = artifact / WEIGHTS
    reason = why_not_regular(path)
    if reason is not None:
        raise ImportRefused(f"{path}: {reason}; export needs the artifact's weights "
                            "(taxonc import, or taxonc compile --init-weights)")
    entries = read_header(path)
    saved = read_metadata(path).get(SPEC_KEY)
    if saved != lock["spec_sha256"]:
        raise ImportRefused(f"{path}: saved for another spec (sha256 {str(saved)[:12]}), not this artifact's "
                            f"{lock['spec_sha256'][:12]}")
    return entries


def export_hf(artifact: Path, out: Path) -> Exported:
    from ..fsutil import write_directory

    artifact, out = Path(artifact), Path(out)
    spec, lock = _artifact_spec(artifact)
    family, config = config_from_spec(spec, str(artifact / "spec.lock.json"))
    entries = _weights(artifact, lock)
    moves = plan(family.arch, spec, {name: e.shape for name, e in entries.items()})
    codes = {e.code for e in entries.values()}
    if len(codes) != 1 or next(iter(codes)) not in DTYPES:
        raise ImportRefused(f"{artifact / WEIGHTS}: tensors of dtypes {sorted(codes)}; export writes one floating dtype")
    dtype = DTYPES[next(iter(codes))]
    config["dtype"] = str(dtype).removeprefix("torch.")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ImportRefused(f"{out}: exists and is not an empty directory; choose another -o or remove it")

    layout = []
    for move in moves:
        shape = entries[move.ours].shape
        for name, rows in zip(move.theirs, move.rows):
            layout.append((name, dtype, (rows, *shape[1:]) if len(move.theirs) > 1 else shape))

    def write(handle: BinaryIO) -> None:
        writer = StreamWriter(handle, layout, {"format": "pt"})
        for move in moves:
            for name, part in zip(move.theirs, move.split(read_tensor(entries[move.ours]))):
                writer.write(name, part)
        writer.close()

    files: dict[str, object] = {"config.json": json.dumps(config, indent=2, sort_keys=True) + "\n",
                                "model.safetensors": write}
    for name in TOKENIZER_FILES:
        if (artifact / name).is_file():
            files[name] = artifact / name
    try:
        write_directory(out, files)  # type: ignore[arg-type]
    except FileExistsError as exc:
        raise ImportRefused(str(exc)) from None
    return Exported(out, family, len(layout))
