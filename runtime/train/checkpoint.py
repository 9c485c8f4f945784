"""Checkpoints with torch.distributed.checkpoint: complete or ignored.

A checkpoint is written into checkpoints/.tmp-step-NNNNNNNN/ (DCP shards of model and
optimizer, plus one JSON per rank with the step, tokens, sampler position and RNG states);
rank 0 then writes COMPLETE and renames the folder to step-NNNNNNNN. A run killed at any
moment leaves either a renamed folder with its marker or a .tmp- folder that is never read.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import random
import shutil
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from .distributed import World, on_main, together
from .errors import TrainingError, disk_errors

MARKER = "COMPLETE"
KEEP = 2  # complete checkpoints kept; older ones are removed after a new one is complete


@dataclass
class Progress:
    """Where a run stands, besides model and optimizer: what a resumed run needs to continue."""

    step: int = 0
    tokens: int = 0
    epoch: int = 0
    position: int = 0


def _rng_state() -> dict:
    return {"torch": base64.b64encode(torch.random.get_rng_state().numpy().tobytes()).decode(),
            "python": repr(random.getstate())}


def _set_rng_state(saved: dict) -> None:
    import ast

    raw = base64.b64decode(saved["torch"])
    torch.random.set_rng_state(torch.frombuffer(bytearray(raw), dtype=torch.uint8))
    random.setstate(ast.literal_eval(saved["python"]))


def _dir(root: Path, step: int, tmp: bool = False) -> Path:
    return root / f"{'.tmp-' if tmp else ''}step-{step:08d}"


def latest(root: Path) -> Path | None:
    """The newest complete checkpoint under `root`, if any."""
    if not root.is_dir():
        return None
    done = [p for p in root.glob("step-*") if (p / MARKER).is_file()]
    return max(done, key=lambda p: p.name) if done else None


def save(root: Path, progress: Progress, model: torch.nn.Module, optimizer: torch.optim.Optimizer, world: World,
         run: dict | None = None) -> Path:
    """Write a checkpoint; `run` holds the settings a resume must repeat (checked by load)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    tmp, final = _dir(root, progress.step, tmp=True), _dir(root, progress.step)

    def start() -> None:
        with disk_errors(tmp, "checkpoint"):
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)

    def own_part() -> None:
        with disk_errors(tmp, "checkpoint"):
            extra = {"progress": progress.__dict__, "rng": _rng_state()}
            (tmp / f"rank-{world.rank}.json").write_text(json.dumps(extra))

    def finish() -> None:
        with disk_errors(tmp, "checkpoint"):
            (tmp / MARKER).write_text(json.dumps({"step": progress.step, "world": world.size, "run": run or {}}) + "\n")
            _fsync_tree(tmp)
            shutil.rmtree(final, ignore_errors=True)
            os.replace(tmp, final)
            _fsync(root)
        for old in sorted(p for p in root.glob("step-*") if (p / MARKER).is_file())[:-KEEP]:
            shutil.rmtree(old, ignore_errors=True)

    on_main(world, start)
    model_state, optim_state = get_state_dict(model, optimizer)
    with disk_errors(tmp, "checkpoint"), _single_process_quietly(world):
        dcp.save({"model": model_state, "optim": optim_state}, checkpoint_id=str(tmp))  # DCP gathers errors itself
    together(world, own_part)
    on_main(world, finish)
    return final


def load(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, world: World,
         run: dict | None = None) -> Progress:
    """Restore a checkpoint into model and optimizer; the run settings must equal the saved ones,
    since the data position only means the same windows under the same settings."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    marker = json.loads((path / MARKER).read_text())
    if marker.get("world") != world.size:
        raise TrainingError(f"{path}: saved by {marker.get('world')} processes, resumed with {world.size}; "
                            "resume with the same number of processes")
    for key, value in (run or {}).items():
        saved = marker.get("run", {}).get(key)
        if saved != value:
            raise TrainingError(f"{path}: written with {key} = {saved!r}, resumed with {value!r}; "
                                f"resume with the same {key}, or start a new run directory")
    model_state, optim_state = get_state_dict(model, optimizer)
    state = {"model": model_state, "optim": optim_state}
    try:
        with _single_process_quietly(world):
            dcp.load(state, checkpoint_id=str(path))
    except Exception as exc:  # DCP raises several types for damaged or mismatched folders
        raise TrainingError(f"{path}: checkpoint cannot be loaded ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from None
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"])
    extra = json.loads((path / f"rank-{world.rank}.json").read_text())
    _set_rng_state(extra["rng"])
    return Progress(**extra["progress"])


@contextlib.contextmanager
def _single_process_quietly(world: World) -> Iterator[None]:
    """DCP warns that it assumes one process when there is no process group: here that is the intent."""
    with warnings.catch_warnings():
        if not world.distributed:
            warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        yield


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(path: Path) -> None:
    for p in path.rglob("*"):
        if p.is_file():
            with open(p, "rb") as f:
                os.fsync(f.fileno())
    _fsync(path)
