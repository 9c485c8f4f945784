"""The torch backend: every spec compiles, counts match, tiny models run and equal the graph."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from taxonc.compiler.analysis import count_params
from taxonc.compiler.compile import compile_spec
from taxonc.compiler.ir import build_graph
from taxonc.compiler.ir.interpret import run_graph
from taxonc.compiler.passes.weights import fuse_state, random_state
from taxonc.compiler.spec import load_spec
from taxonc.compiler.spec.dump import toml_string
from taxonc.runtime.artifact import load_source
from taxonc.runtime.inputs import extra_inputs

from .conftest import SPECS
from .helpers import INHERIT_IDENTITY
from .spec_sets import MODEL_FILES, selected, spec_params

IDS = [p.stem for p in MODEL_FILES]
# Per-spec loops run one spec per tiny-scale structure unless --all-specs (tests/spec_sets.py).
_TINY: dict[str, tuple] = {}


def tiny(path: Path):
    """(compiled, module) for a spec at tiny scale, compiled once per session."""
    if path.stem not in _TINY:
        compiled = compile_spec(path, scale="tiny")
        _TINY[path.stem] = (compiled, load_source(compiled.files["model.py"], path.stem))
    return _TINY[path.stem]


def tiny_model(path: Path, seed: int = 0):
    """A float64 tiny model loaded with test weights, plus the raw graph and its weights."""
    compiled, module = tiny(path)
    raw = build_graph(compiled.spec)
    state = random_state(raw, seed)
    model = module.build(dtype=torch.float64)
    model.load_state_dict(fuse_state(compiled.graph, state))
    return compiled, model.eval(), raw, state


# Module vs analytic count is an emitter/analysis agreement that follows the structure (both read
# d_ff, d_head and the rest from spec.derive), and building 96-layer modules costs about a second
# a spec; published counts for every spec are tests/test_specs.py's job.
@pytest.mark.parametrize("path", spec_params(MODEL_FILES))
def test_full_size_module_has_the_analytic_parameter_count(path: Path) -> None:
    compiled = compile_spec(path)
    module = load_source(compiled.files["model.py"], path.stem)
    model = module.build(device="meta")
    assert sum(p.numel() for p in model.parameters()) == count_params(compiled.spec).total


@pytest.mark.parametrize("path", spec_params(MODEL_FILES))
def test_tiny_forward_is_finite_and_matches_the_graph(path: Path) -> None:
    compiled, model, raw, state = tiny_model(path)
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(0, compiled.spec.dims.vocab_size, (2, 24), generator=gen)
    kw = extra_inputs(compiled.spec, 2, 24, generator=gen, dtype=torch.float64)
    with torch.no_grad():
        logits = model(ids, **kw)
        reference = run_graph(raw, state, {"input_ids": ids, **kw})["head.logits"]
    assert logits.shape == (2, 24, compiled.spec.dims.vocab_size)
    assert torch.isfinite(logits).all()
    assert (logits - reference).abs().max() < 1e-10


def test_tiny_float32_default_build_runs() -> None:
    _, module = tiny(SPECS / "llama.toml")
    model = module.build()
    logits = model(torch.randint(0, 256, (1, 8)))
    assert logits.dtype == torch.float32 and torch.isfinite(logits).all()


DECODERS = [p for p in MODEL_FILES if load_spec(p).spec.model.structure != "prefix-lm"]


@settings(max_examples=int(os.environ.get("TAXONC_CAUSAL_EXAMPLES", "40")), deadline=None)
@given(path=st.sampled_from(selected(DECODERS)), t=st.integers(0, 15), seed=st.integers(0, 2**16))
def test_changing_token_t_never_changes_earlier_outputs(path: Path, t: int, seed: int) -> None:
    compiled, model, _, _ = tiny_model(path)
    gen = torch.Generator().manual_seed(seed)
    vocab = compiled.spec.dims.vocab_size
    ids = torch.randint(0, vocab, (1, 16), generator=gen)
    kw = extra_inputs(compiled.spec, 1, 16, generator=gen, dtype=torch.float64)
    changed = ids.clone()
    changed[0, t] = (ids[0, t] + 1 + torch.randint(0, vocab - 1, (1,), generator=gen)) % vocab
    with torch.no_grad():
        a, b = model(ids, **kw), model(changed, **kw)
    # not bit-equal: a mixture-of-experts layer batches rows per expert, and BLAS may round a
    # row differently when its batch changes; 1e-12 in float64 is far below any real leak
    assert torch.allclose(a[:, :t], b[:, :t], rtol=0, atol=1e-12)
    assert not torch.allclose(a[:, t:], b[:, t:], rtol=0, atol=1e-6)  # and the change is visible from t on


PREFIX_LM = [p for p in MODEL_FILES if load_spec(p).spec.model.structure == "prefix-lm"]


@pytest.mark.parametrize("path", spec_params(PREFIX_LM))
def test_prefix_lm_is_bidirectional_inside_the_prefix_only(path: Path) -> None:
    compiled, model, _, _ = tiny_model(path)
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, compiled.spec.dims.vocab_size, (1, 16), generator=gen)
    prefix = 8

    def run(changed_at: int) -> tuple[torch.Tensor, torch.Tensor]:
        other = ids.clone()
        other[0, changed_at] = (ids[0, changed_at] + 1) % compiled.spec.dims.vocab_size
        with torch.no_grad():
            return model(ids, prefix_len=prefix), model(other, prefix_len=prefix)

    a, b = run(5)  # inside the prefix: earlier prefix positions see it
    assert not torch.allclose(a[:, :5], b[:, :5])
    a, b = run(11)  # after the prefix: strictly causal
    assert torch.allclose(a[:, :11], b[:, :11], rtol=0, atol=1e-12)
    with torch.no_grad():  # prefix_len 0 is a plain causal LM
        causal_a = model(ids)
        other = ids.clone()
        other[0, 5] = (ids[0, 5] + 1) % compiled.spec.dims.vocab_size
        assert torch.allclose(causal_a[:, :5], model(other)[:, :5], rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", ["gpt3", "palm", "glam", "retro"])
def test_compiling_twice_gives_identical_bytes(name: str) -> None:
    a = compile_spec(SPECS / f"{name}.toml", scale="tiny").files
    b = compile_spec(SPECS / f"{name}.toml", scale="tiny").files
    assert a == b


def test_spec_strings_cannot_inject_code(tmp_path: Path) -> None:
    marker = tmp_path / "PWNED"
    code = f"import pathlib; pathlib.Path({str(marker)!r}).touch()"
    base = str((SPECS / "gpt3").resolve())
    spec = tmp_path / "evil.toml"
    spec.write_text(
        f"extends = {toml_string(base)}\n{INHERIT_IDENTITY.replace(chr(34) + 'model.title' + chr(34) + ', ', '')}"
        "[model]\nname = \"evil\"\n"
        f"title = {toml_string(chr(39) * 3 + code + chr(10) + '#')}\n"
        f"notes = {toml_string(chr(34) * 3 + chr(10) + code + chr(10) + chr(34) * 3)}\n"
        f"[lineage]\nbase = {toml_string(chr(34) + '); ' + code + '; (' + chr(34))}\n"
    )
    compiled = compile_spec(spec, scale="tiny")
    module = load_source(compiled.files["model.py"], "evil")
    assert not marker.exists()
    assert code in module.CONFIG.notes and code in module.CONFIG.title
    assert module.build(dtype=torch.float64)(torch.zeros(1, 4, dtype=torch.long)).shape == (1, 4, 512)
    assert not marker.exists()


def test_mup_scales_attention_logits_and_init(tmp_path: Path) -> None:
    spec = tmp_path / "mup.toml"
    spec.write_text(f'extends = {toml_string(str((SPECS / "llama-7b").resolve()))}\n{INHERIT_IDENTITY}[model]\nname = "mup"\n'
                    "[training.mup]\nenabled = true\nbase_d_model = 1024\n")
    compiled = compile_spec(spec, scale="tiny")
    source = compiled.files["model.py"]
    assert "scale=0.0625" in source  # 1/d_head with d_head 16
    assert "* 0.25" in source  # width multiplier 4096/1024 kept at tiny scale: logits / 4
    module = load_source(source, "mup")
    model = module.build()
    assert torch.count_nonzero(model.head.lm_head.weight) == 0  # zero readout
    raw = build_graph(compiled.spec)
    state = random_state(raw, 0)
    model = module.build(dtype=torch.float64)
    model.load_state_dict(fuse_state(compiled.graph, state))
    ids = torch.randint(0, 512, (1, 8))
    with torch.no_grad():
        assert (model(ids) - run_graph(raw, state, {"input_ids": ids})["head.logits"]).abs().max() < 1e-10
