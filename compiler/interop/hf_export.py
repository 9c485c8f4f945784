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

import torch

from taxonc.runtime.artifact import read_lock
from taxonc.runtime.files import why_not_regular
from taxonc.runtime.weights import SPEC_KEY

from ..spec.model import ModelSpec
from .hf_config_file import HF_CLASSES, config_from_spec
from .hf_schema import Family
from .hf_keys import ImportRefused
from .hf_stream import export_tensors
from .safetensors_stream import DTYPES, Entry, StreamWriter, read_header, read_metadata, read_tensor
from .tokenizer_files import TOKENIZER_FILES

WEIGHTS = "weights.safetensors"


class ExportFormat(StrEnum):
    HF = "hf"


@dataclass
class Exported:
    out: Path
    family: Family
    hf_class: str
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
    from ..ir import build_graph
    from ..passes import run_pipeline

    artifact, out = Path(artifact), Path(out)
    spec, lock = _artifact_spec(artifact)
    family, config = config_from_spec(spec, str(artifact / "spec.lock.json"))
    entries = _weights(artifact, lock)
    codes = {e.code for e in entries.values()}
    if len(codes) != 1 or next(iter(codes)) not in DTYPES:
        raise ImportRefused(f"{artifact / WEIGHTS}: tensors of dtypes {sorted(codes)}; export writes one floating dtype")
    dtype = DTYPES[next(iter(codes))]
    config["dtype"] = str(dtype).removeprefix("torch.")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ImportRefused(f"{out}: exists and is not an empty directory; choose another -o or remove it")
    fused, _ = run_pipeline(build_graph(spec), None, None, None)  # the default pipeline, as taxonc compile runs it
    missing = sorted(set(fused.param_shapes()) - set(entries))
    if missing:
        raise ImportRefused(f"{artifact / WEIGHTS}: lacks {missing[0]} (and {len(missing) - 1} more); not this spec's weights")

    def meta(name: str) -> torch.Tensor:
        return torch.empty(entries[name].shape, dtype=dtype, device="meta")

    layout = [(name, dtype, tuple(t.shape)) for name, t in export_tensors(family, spec, fused, meta)]

    def write(handle: BinaryIO) -> None:
        last: list = [None, None]

        def get(name: str) -> torch.Tensor:  # q, k and v come from one fused tensor: read it once
            if last[0] != name:
                last[:] = [name, read_tensor(entries[name])]
            return last[1]

        writer = StreamWriter(handle, layout, {"format": "pt"})
        for name, tensor in export_tensors(family, spec, fused, get):
            writer.write(name, tensor)
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
    return Exported(out, family, HF_CLASSES[family.model_type], len(layout))
