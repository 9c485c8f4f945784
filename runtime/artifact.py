"""Load a compiled directory: model.py, spec.lock.json, optional weights and tokenizer."""

from __future__ import annotations

import atexit
import importlib.util
import itertools
import os
import re
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

from .manifest import check_file, read_manifest
from .errors import ArtifactError
from .files import present
from .spec_lock import read_lock
from .weights import load_weights

WEIGHTS = "weights.safetensors"

_counter = itertools.count()
_WEIGHTS_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16, "float64": torch.float64}
_TMP: Path | None = None  # where load_source writes, made on first use


@dataclass
class Artifact:
    path: Path
    module: ModuleType
    model: torch.nn.Module
    lock: dict[str, Any]
    weights: Path | None = None
    meta: dict[str, str] = field(default_factory=dict)

    @property
    def spec(self) -> dict[str, Any]:
        return self.lock["spec"]

    @property
    def digest(self) -> str:
        return self.lock["spec_sha256"]

    def new_cache(self) -> Any:
        return self.model.new_cache()


def _module_dir() -> Path:
    global _TMP
    if _TMP is None:
        _TMP = Path(tempfile.mkdtemp(prefix="taxonc-modules-"))
        atexit.register(shutil.rmtree, _TMP, True)
    return _TMP


def import_file(path: str | Path, name: str = "module") -> ModuleType:
    """Import the Python file at `path` as a fresh module, never cached under a shared name.

    The module is entered in sys.modules (dataclasses and torch.compile look it up by name)
    under `taxonc_<name>_<n>`. An exception from its top level propagates unchanged, and the
    half-made module is removed from sys.modules.
    """
    module_name = f"taxonc_{re.sub(r'[^0-9A-Za-z_]', '_', name)}_{next(_counter)}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"{path}: cannot be imported")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(module_name, None)
        raise
    return module


def load_source(source: str, name: str = "emitted") -> ModuleType:
    """Import emitted source text (e.g. Compiled.files["model.py"]) as a fresh module.

    The text is written to a real file in a per-process temporary folder (removed at exit), so
    tracebacks, inspect and torch.export's source locations point into it.
    """
    path = _module_dir() / f"{re.sub(r'[^0-9A-Za-z_]', '_', name)}_{next(_counter)}.py"
    path.write_text(source, encoding="utf-8")
    return import_file(path, name)


def _first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0][:200] if str(exc).strip() else ""


def import_model(path: str | Path) -> ModuleType:
    """Import an emitted model.py under a fresh module name; failures become one-line ArtifactErrors."""
    try:
        module = import_file(path, "artifact")
    except Exception as exc:
        raise ArtifactError(f"{path}: does not import ({type(exc).__name__}: {_first_line(exc)})") from None
    if not callable(getattr(module, "build", None)):
        raise ArtifactError(f"{path}: has no build() entry point")
    return module


def load(directory: str | Path, weights: str | Path | None = None, device: str | torch.device | None = None,
         dtype: torch.dtype | None = None, seed: int | None = None) -> Artifact:
    """Load an artifact. Weights come from `weights`, else DIR/weights.safetensors, else a seeded init.

    Weights must have been saved for this artifact's spec (the lock's spec_sha256) and match the
    built model's names, shapes and dtypes; anything at DIR/weights.safetensors that is not such
    a file (a folder, a dangling symlink, a device) is an error, never a silent random init.
    """
    directory = Path(directory)
    model_py = directory / "model.py"
    if not directory.is_dir():
        raise ArtifactError(f"{directory}: not a directory (compile the spec with taxonc compile)")
    manifest = read_manifest(directory)
    for name in sorted(manifest.files):
        if name != WEIGHTS:  # checked below, where a mismatch can be explained
            check_file(directory, manifest, name)
    lock = read_lock(directory)
    header = re.search(r"^# spec sha256: ([0-9a-f]{64})$", model_py.read_text(errors="replace"), re.MULTILINE)
    if not header or header.group(1) != lock["spec_sha256"]:
        raise ArtifactError(f"{directory}: model.py and spec.lock.json come from different specs")
    if lock.get("backend") == "triton" and not torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET", "0") in ("", "0"):
        raise ArtifactError(f"{directory}: compiled for the Triton backend, which needs a CUDA GPU; "
                            "on a CPU set TRITON_INTERPRET=1 (about 1000x slower) or compile with --backend torch")
    module = import_model(model_py)
    if dtype is None:  # an imported checkpoint keeps its dtype (bf16 stays bf16); the lock says which
        dtype = _WEIGHTS_DTYPES.get(lock.get("weights_dtype"))  # type: ignore[arg-type]
    if seed is not None:
        torch.manual_seed(seed)
    try:
        model = module.build(device=device, dtype=dtype).eval()
    except Exception as exc:
        raise ArtifactError(f"{model_py}: build() failed ({type(exc).__name__}: {_first_line(exc)})") from None
    weights_path = Path(weights) if weights is not None else directory / WEIGHTS
    meta: dict[str, str] = {}
    if weights is None and WEIGHTS in manifest.files:
        try:
            check_file(directory, manifest, WEIGHTS)
        except ArtifactError:
            # another spec's weights copied in are named as such by the weights check; anything else is "changed"
            load_weights(model, weights_path, lock["spec_sha256"], lock["spec"]["model"]["name"])
            raise
    if weights is not None or present(weights_path):  # a dangling link or a folder there is an error, not random weights
        meta = load_weights(model, weights_path, lock["spec_sha256"], lock["spec"]["model"]["name"])
    else:
        weights_path = None
    return Artifact(directory, module, model, lock, weights_path, meta)
