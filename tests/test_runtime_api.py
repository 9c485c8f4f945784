"""The documented runtime entry points import from the package itself: `from taxonc.runtime import load`."""

from __future__ import annotations

import types

import torch

import taxonc.runtime as rt
from taxonc.compiler.compile import compile_spec, write_artifact

from .conftest import SPECS


def test_package_exports_what_it_lists() -> None:
    for name in rt.__all__:
        assert getattr(rt, name) is not None, name
    # the submodule keeps its name; the generation function stays reachable inside it
    assert isinstance(rt.generate, types.ModuleType) and callable(rt.generate.generate)


def test_load_from_the_package_runs_a_compiled_artifact(tmp_path) -> None:
    from taxonc.runtime import Artifact, SamplerConfig, Tokenizer, load

    write_artifact(compile_spec(SPECS / "llama.toml", backend="torch", scale="tiny"), tmp_path)
    artifact = load(tmp_path, seed=0)
    assert isinstance(artifact, Artifact)
    ids = torch.tensor([Tokenizer.default().encode("a spec")])
    with torch.no_grad():
        logits = artifact.model(ids)
    assert logits.shape == (1, ids.shape[1], artifact.spec["dims"]["vocab_size"])
    assert SamplerConfig().kind == "greedy"
