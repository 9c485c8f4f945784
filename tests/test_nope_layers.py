"""Layers without positions (position.nope_layers): rotary models whose chosen layers skip RoPE.

Checked against transformers' SmolLM3, whose no_rope_layers marks such layers and whose weights
are named as LLaMA's: a tiny random LLaMA (logits of order 5) gets the same weights in SmolLM3
with layer 1 unrotated, and taxonc's llama spec with nope_layers = [1] must agree to a relative
1e-5; rotating every layer, or skipping the wrong one, must not.
"""

from __future__ import annotations

import pytest
import torch

from taxonc.compiler.spec.derive import derive

from .test_spec_errors import edit, problems_for

REL_TOL = 1e-5
ROTARY = ('[position]\nkind = "learned"', '[position]\nkind = "rotary"\nnope_layers = {}')


def _nope(selector: str) -> str:
    return edit(ROTARY[0], ROTARY[1].format(selector))


@pytest.mark.parametrize("selector,key", [
    ("{ indices = [4] }", "position.nope_layers.indices"),
    ("{ every = 1 }", "position.nope_layers"),
    ("{ every = 2, first = 1 }", "position.nope_layers"),
    ("{ evry = 2 }", "position.nope_layers.evry"),
])
def test_bad_selectors_are_named(selector: str, key: str, tmp_path) -> None:
    assert key in {p.key for p in problems_for(tmp_path, _nope(selector))}


def test_nope_layers_need_rotary_positions(tmp_path) -> None:
    text = edit(ROTARY[0], '[position]\nkind = "alibi"\nnope_layers = { every = 2 }')
    assert "position.nope_layers" in {p.key for p in problems_for(tmp_path, text)}


def test_the_selector_resolves_per_layer(tmp_path) -> None:
    from taxonc.compiler.spec import load_spec

    path = tmp_path / "spec.toml"
    path.write_text(_nope("{ every = 2, start = 1 }"))
    assert [layer.rotary for layer in derive(load_spec(path).spec).layers] == [True, False, True, False]


@pytest.fixture(autouse=True)
def _fp32_default():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float32)
    yield
    torch.set_default_dtype(old)


def _smollm3(tmp_path, sets: list[str], backend: str = "torch"):
    """(SmolLM3 with layer 1 unrotated, taxonc's llama model compiled with `sets`), same weights."""
    transformers = pytest.importorskip("transformers")
    from taxonc.compiler.interop.hf_pairs import TINY, compile_taxonc, hf_model, taxonc_state

    llama = hf_model("llama", TINY, attn_implementation="eager")
    config = llama.config.to_dict()
    keys = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
            "num_key_value_heads", "max_position_embeddings", "rms_norm_eps", "tie_word_embeddings", "rope_parameters")
    # no_rope_layers: 1 rotates, 0 does not (transformers' SmolLM3 convention)
    cfg = transformers.SmolLM3Config(**{k: config[k] for k in keys}, no_rope_layers=[1, 0], use_sliding_window=False,
                                     pad_token_id=0, bos_token_id=None, eos_token_id=None)
    cfg._attn_implementation = "eager"
    ref = transformers.SmolLM3ForCausalLM(cfg).eval()
    ref.load_state_dict(llama.state_dict(), strict=True)
    compiled, module = compile_taxonc("llama", config, tmp_path, backend=backend, sets=sets)
    ours = module.build(dtype=torch.float32)
    ours.load_state_dict(taxonc_state("llama", compiled, llama.state_dict()), strict=True)
    return ref, ours.eval(), module


def _error(ref, ours, length: int = 64) -> tuple[float, float]:
    ids = torch.randint(0, 128, (2, length), generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        theirs = ref(input_ids=ids, use_cache=False).logits
        return ((ours(ids) - theirs).abs().max() / theirs.abs().max()).item(), theirs.abs().max().item()


def test_logits_match_smollm3(tmp_path) -> None:
    ref, ours, _ = _smollm3(tmp_path, ["position.nope_layers.indices=[1]"])
    error, largest = _error(ref, ours)
    assert largest > 5 and error <= REL_TOL, f"relative error {error:.3g}"


@pytest.mark.parametrize("sets", [[], ["position.nope_layers.indices=[0]"]], ids=["every-layer-rotates", "wrong-layer"])
def test_a_wrong_selection_fails_the_comparison(sets: list[str], tmp_path) -> None:
    ref, ours, _ = _smollm3(tmp_path, sets)
    error, _ = _error(ref, ours)
    assert error > 3 * REL_TOL, f"relative error only {error:.3g}"


def test_cached_decoding_equals_full_forward(tmp_path) -> None:
    _, ours, module = _smollm3(tmp_path, ["position.nope_layers.indices=[1]"])
    ids = torch.randint(0, 128, (1, 30), generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        full = ours(ids)
        cache = module.KVCache()
        steps = [ours(ids[:, :5], cache=cache)] + [ours(ids[:, t:t + 1], cache=cache) for t in range(5, 30)]
    assert (torch.cat(steps, dim=1) - full).abs().max() <= REL_TOL * full.abs().max()


def test_triton_backend_skips_rotary_on_nope_layers(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    ref, ours, _ = _smollm3(tmp_path, ["position.nope_layers.indices=[1]"], backend="triton")
    error, _ = _error(ref, ours, length=24)
    assert error <= REL_TOL
