"""RoPE scaling (position.scaling): the spec's rules, the reference tables, and agreement with
transformers' rope_parameters for linear, YaRN and Llama 3 scaling.

The tiny transformers model has a 64-token context whose pre-training context
(original_max_position_embeddings) is 16, so every test sequence runs past it and the scaled
frequencies matter. Agreement is relative, max |taxonc - HF| / max |HF| <= 1e-5 on logits of
order 5; a wrong factor or a wrong kind must break it.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from taxonc.compiler.interop.hf_keys import account
from taxonc.kernels.reference import positions

from .test_spec_errors import edit, only, problems_for

ROTARY = ('[position]\nkind = "learned"', '[position]\nkind = "rotary"\nscaling = {{ {} }}')


def _scaled(body: str) -> str:
    return edit(ROTARY[0], ROTARY[1].format(body))


# ---------------------------------------------------------------------------------------------
# the spec's rules
# ---------------------------------------------------------------------------------------------

def test_a_misspelt_kind_is_named_with_a_suggestion(tmp_path) -> None:
    problem = only(problems_for(tmp_path, _scaled('kind = "yarm", factor = 4.0')))
    assert problem.key == "position.scaling.kind" and "did you mean 'yarn'" in problem.render()


def test_dynamic_ntk_is_refused_with_its_reason(tmp_path) -> None:
    problem = only(problems_for(tmp_path, _scaled('kind = "dynamic", factor = 2.0')))
    assert problem.key == "position.scaling.kind" and "KV cache" in problem.message
    assert "dynamic" not in problem.allowed and "llama3" in problem.allowed


def test_llama3_needs_its_band_and_original_context(tmp_path) -> None:
    problems = problems_for(tmp_path, _scaled('kind = "llama3", factor = 8.0'))
    assert {p.key for p in problems} == {f"position.scaling.{k}" for k in
                                         ("original_context", "low_freq_factor", "high_freq_factor")}


@pytest.mark.parametrize("body,key", [
    ('kind = "linear", factor = 2.0, beta_fast = 32.0', "position.scaling.beta_fast"),
    ('kind = "yarn", factor = 2.0, original_context = 64, low_freq_factor = 1.0', "position.scaling.low_freq_factor"),
    ('kind = "yarn", factor = 2.0, original_context = 256', "position.scaling.original_context"),
    ('kind = "llama3", factor = 8.0, original_context = 64, low_freq_factor = 4.0, high_freq_factor = 1.0',
     "position.scaling.high_freq_factor"),
    ('kind = "linear", factor = 0.5', "position.scaling.factor"),
    ('kind = "linear", factr = 2.0', "position.scaling.factr"),
])
def test_cross_field_rules(body: str, key: str, tmp_path) -> None:
    assert key in {p.key for p in problems_for(tmp_path, _scaled(body))}


def test_scaling_needs_rotary_positions(tmp_path) -> None:
    text = edit(ROTARY[0], '[position]\nkind = "learned"\nscaling = { kind = "linear", factor = 2.0 }')
    assert only(problems_for(tmp_path, text)).key == "position.scaling"


# ---------------------------------------------------------------------------------------------
# reference tables
# ---------------------------------------------------------------------------------------------

@settings(max_examples=25, deadline=None)
@given(factor=st.integers(1, 8), dims=st.sampled_from([2, 8, 16]), base=st.sampled_from([100.0, 10000.0]))
def test_linear_scaling_is_position_interpolation(factor: int, dims: int, base: float) -> None:
    """Position p * factor under linear scaling turns exactly as position p does unscaled."""
    at = torch.arange(0, 40, dtype=torch.float64)
    plain = positions.rotary_tables(at, dims, base, torch.float64)
    scaled = positions.scaled_rotary_tables(at * factor, dims, base, torch.float64, {"kind": "linear", "factor": factor})
    torch.testing.assert_close(scaled, plain, rtol=0, atol=1e-9)


def test_llama3_keeps_short_wavelengths_and_divides_long_ones() -> None:
    inv = 1.0 / (500000.0 ** (torch.arange(0, 128, 2, dtype=torch.float64) / 128))
    new, gain = positions.llama3_frequencies(inv, 128, 500000.0, {"kind": "llama3", "factor": 8.0, "original_context": 8192,
                                                                  "low_freq_factor": 1.0, "high_freq_factor": 4.0})
    wavelength = 2 * math.pi / inv
    assert gain == 1.0
    assert torch.equal(new[wavelength < 8192 / 4], inv[wavelength < 8192 / 4])
    torch.testing.assert_close(new[wavelength > 8192], inv[wavelength > 8192] / 8)
    middle = (wavelength >= 2048) & (wavelength <= 8192)
    assert middle.any() and bool(((new[middle] < inv[middle]) & (new[middle] > inv[middle] / 8)).all())


def test_yarn_scales_cos_and_sin_by_its_attention_factor() -> None:
    at = torch.arange(5)
    cos, sin = positions.scaled_rotary_tables(at, 8, 10000.0, torch.float64,
                                              {"kind": "yarn", "factor": 4.0, "original_context": 16})
    # cos^2 + sin^2 is the squared factor 0.1 ln(4) + 1 at every position and dim
    torch.testing.assert_close(cos**2 + sin**2, torch.full_like(cos, (0.1 * math.log(4.0) + 1) ** 2))


# ---------------------------------------------------------------------------------------------
# transformers agreement, cached decoding, mutations
# ---------------------------------------------------------------------------------------------

ORIGINAL = 16  # a quarter of the tiny context (64)
ROPE_PARAMETERS = {
    "linear": {"rope_type": "linear", "rope_theta": 10000.0, "factor": 4.0},
    "yarn": {"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0, "original_max_position_embeddings": ORIGINAL},
    "llama3": {"rope_type": "llama3", "rope_theta": 10000.0, "factor": 8.0, "low_freq_factor": 1.0,
               "high_freq_factor": 4.0, "original_max_position_embeddings": ORIGINAL},
}
REL_TOL = 1e-5


@pytest.fixture(autouse=True)
def _fp32_default():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float32)
    yield
    torch.set_default_dtype(old)


def _pair(kind: str, tmp_path, sets: list[str] | None = None, backend: str = "torch"):
    pytest.importorskip("transformers")
    from taxonc.compiler.interop.hf_pairs import TINY, build_pair

    return build_pair("llama", TINY, attn_implementation="eager", workdir=tmp_path, sets=sets, backend=backend,
                      extra={"rope_parameters": ROPE_PARAMETERS[kind]})


def _error(hf, ours, length: int = 64) -> tuple[float, float]:
    from taxonc.compiler.interop.hf_pairs import hf_logits

    ids = torch.randint(0, 128, (2, length), generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        ref = hf_logits(hf, ids)
        return ((ours(ids) - ref).abs().max() / ref.abs().max()).item(), ref.abs().max().item()


@pytest.mark.parametrize("kind", list(ROPE_PARAMETERS))
def test_logits_match_transformers(kind: str, tmp_path) -> None:
    hf, ours, compiled = _pair(kind, tmp_path)
    assert compiled.spec.position.scaling.kind == kind
    error, largest = _error(hf, ours)
    assert largest > 5 and error <= REL_TOL, f"{kind}: relative error {error:.3g}"


@pytest.mark.parametrize("kind", list(ROPE_PARAMETERS))
def test_cached_decoding_equals_full_forward(kind: str, tmp_path) -> None:
    _, ours, compiled = _pair(kind, tmp_path)
    module = __import__(type(ours).__module__, fromlist=["KVCache"])
    ids = torch.randint(0, 128, (1, 40), generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        full = ours(ids)
        cache = module.KVCache()
        steps = [ours(ids[:, :5], cache=cache)] + [ours(ids[:, t:t + 1], cache=cache) for t in range(5, 40)]
    assert (torch.cat(steps, dim=1) - full).abs().max() <= REL_TOL * full.abs().max()


# each would be a plausible import bug: the factor dropped or halved, the wrong scheme, the wrong band
MUTATIONS = [
    ("linear", "position.scaling.factor=2.0"),
    ("yarn", "position.scaling.factor=2.0"),
    ("yarn", "position.scaling.attention_factor=1.0"),
    ("yarn", "position.scaling.original_context=32"),
    ("llama3", "position.scaling.factor=4.0"),
    ("llama3", "position.scaling.high_freq_factor=2.0"),
]


@pytest.mark.parametrize("kind,override", MUTATIONS)
def test_a_wrong_scaling_fails_the_comparison(kind: str, override: str, tmp_path) -> None:
    hf, ours, _ = _pair(kind, tmp_path, sets=[override])
    error, _ = _error(hf, ours)
    assert error > 3 * REL_TOL, f"{override}: relative error only {error:.3g}"


def test_the_wrong_kind_fails_the_comparison(tmp_path) -> None:
    """llama3's factor read as linear scaling (its band ignored) must disagree. Both pairs draw the
    same weights (same seed, same shapes), so only the scaling differs."""
    hf, _, _ = _pair("llama3", tmp_path / "llama3")
    pytest.importorskip("transformers")
    from taxonc.compiler.interop.hf_pairs import TINY, build_pair

    hf_linear, wrong, _ = build_pair("llama", TINY, attn_implementation="eager", workdir=tmp_path / "linear",
                                     extra={"rope_parameters": {"rope_type": "linear", "rope_theta": 10000.0, "factor": 8.0}})
    assert all(torch.equal(a, b) for a, b in zip(hf.state_dict().values(), hf_linear.state_dict().values()))
    error, _ = _error(hf, wrong)
    assert error > 3 * REL_TOL, f"relative error only {error:.3g}"


def test_triton_backend_honours_scaling(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    hf, ours, _ = _pair("llama3", tmp_path, backend="triton")
    error, _ = _error(hf, ours, length=24)
    assert error <= REL_TOL


# ---------------------------------------------------------------------------------------------
# config.json keys
# ---------------------------------------------------------------------------------------------

def test_llama_configs_with_scaling_are_accepted_and_dynamic_refused() -> None:
    base = {"model_type": "llama", "rope_theta": 500000.0}
    llama31 = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 8192}
    assert not [r for r in account("llama", {**base, "rope_scaling": llama31}) if "rope" in r]
    assert not [r for r in account("llama", {"rope_parameters": {**llama31, "rope_theta": 5e5}}) if "rope" in r]
    refused = account("llama", {"rope_parameters": {"rope_type": "dynamic", "factor": 2.0, "rope_theta": 1e4}})
    assert any(r.startswith("rope_parameters.rope_type") and "KV cache" in r for r in refused)
    assert any(r.startswith("rope_parameters.rope_type") for r in
               account("gpt_neox", {"rope_parameters": {"rope_type": "linear", "factor": 2.0}}))


def test_spec_to_config_and_back_keeps_the_scaling(tmp_path) -> None:
    pytest.importorskip("transformers")
    from taxonc.compiler.interop.hf_config import architecture, config_values
    from taxonc.compiler.interop.hf_pairs import spec_toml
    from taxonc.compiler.spec import load_spec

    path = tmp_path / "scaled.toml"
    path.write_text(spec_toml("llama", {**_config_dict(), "rope_parameters": ROPE_PARAMETERS["llama3"]}))
    spec = load_spec(path).spec
    config = config_values("llama", architecture(spec))
    assert {k: config["rope_parameters"][k] for k in ROPE_PARAMETERS["llama3"]} == ROPE_PARAMETERS["llama3"]


def _config_dict() -> dict:
    from taxonc.compiler.interop.hf_pairs import hf_config

    return hf_config("llama").to_dict()


def test_import_of_a_llama31_style_checkpoint_keeps_the_scaling(tmp_path) -> None:
    """`taxonc import` of a save_pretrained directory with llama3 rope_parameters: the written spec
    carries position.scaling and the artifact's logits equal transformers'."""
    pytest.importorskip("transformers")
    from taxonc.compiler.interop.hf_import import import_checkpoint
    from taxonc.compiler.interop.hf_pairs import TINY, hf_model
    from taxonc.runtime import load

    hf = hf_model("llama", TINY, attn_implementation="eager", extra={"rope_parameters": ROPE_PARAMETERS["llama3"]})
    hf.save_pretrained(tmp_path / "ckpt")
    import_checkpoint(tmp_path / "ckpt", tmp_path / "art")
    assert 'scaling = { kind = "llama3", factor = 8.0' in (tmp_path / "art" / "spec.toml").read_text()
    error, largest = _error(hf, load(tmp_path / "art").model.float().eval())
    assert largest > 5 and error <= REL_TOL
