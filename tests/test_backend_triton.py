"""The Triton backend: for every spec at tiny scale, kernel-backed logits equal the torch backend's."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from taxonc.compiler.compile import compile_spec
from taxonc.compiler.ir.attrs import Kernel
from taxonc.runtime.artifact import load_source
from taxonc.runtime.inputs import extra_inputs

from .spec_sets import MODEL_FILES, spec_params

pytest.importorskip("triton")
pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1", reason="needs a GPU or TRITON_INTERPRET=1"
)


@pytest.mark.parametrize("path", spec_params(MODEL_FILES))
def test_triton_backend_matches_torch_backend(path: Path) -> None:
    torch_side = compile_spec(path, scale="tiny")
    triton_side = compile_spec(path, scale="tiny", backend="triton")
    assert triton_side.digest == torch_side.digest
    ref_module = load_source(torch_side.files["model.py"], path.stem + "_torch")
    kernel_module = load_source(triton_side.files["model.py"], path.stem + "_triton")
    torch.manual_seed(0)
    reference = ref_module.build().eval()
    model = kernel_module.build().eval()
    model.load_state_dict(reference.state_dict())
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, torch_side.spec.dims.vocab_size, (1, 12), generator=gen)
    kw = extra_inputs(torch_side.spec, 1, 12, generator=gen, dtype=torch.float32)
    with torch.no_grad():
        a, b = reference(ids, **kw), model(ids, **kw)
    assert (a - b).abs().max() <= 1e-4


def test_kernel_selection_is_reported_and_cached_decoding_works() -> None:
    from .conftest import SPECS

    compiled = compile_spec(SPECS / "llama.toml", scale="tiny", backend="triton")
    kernels = {n.kernel for n in compiled.graph.nodes() if n.kernel is not None}
    assert {Kernel.FLASH_ATTENTION_ROTARY, Kernel.GLU, Kernel.RMS_NORM_RESIDUAL, Kernel.RMS_NORM} <= kernels
    module = load_source(compiled.files["model.py"], "llama_triton_cache")
    model = module.build().eval()
    ids = torch.randint(0, 512, (1, 10))
    with torch.no_grad():
        full = model(ids)
        cache = module.KVCache()
        steps = [model(ids[:, :6], cache=cache)] + [model(ids[:, t : t + 1], cache=cache) for t in range(6, 10)]
    assert (torch.cat(steps, 1) - full).abs().max() <= 1e-4


def test_compile_and_run_palm_with_the_triton_backend(tmp_path: Path) -> None:
    import json

    from typer.testing import CliRunner

    from taxonc.compiler.cli import app

    from .conftest import SPECS

    out = tmp_path / "palm-triton"
    runner = CliRunner()
    compiled = runner.invoke(app, ["compile", str(SPECS / "palm.toml"), "--scale", "tiny", "--backend", "triton", "-o", str(out)])
    assert compiled.exit_code == 0 and "kernels: layer_norm x5, flash_attention+rotary x4" in compiled.output
    assert "taxonc.kernels" in (out / "model.py").read_text()
    ran = runner.invoke(app, ["run", str(out), "--prompt", "hello", "--max-new-tokens", "4", "--seed", "0", "--json"])
    assert ran.exit_code == 0, ran.output
    torch_run = runner.invoke(app, ["run", str(SPECS / "palm.toml"), "--scale", "tiny", "--prompt", "hello",
                                    "--max-new-tokens", "4", "--seed", "0", "--json"])
    # same seed, same initialisation, same greedy tokens through kernels and through torch
    assert json.loads(ran.output.strip().splitlines()[-1])["ids"] == json.loads(torch_run.output.strip().splitlines()[-1])["ids"]
