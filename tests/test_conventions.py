"""Conventions a checkpoint's function depends on, as spec fields, carried through every stage.

Rotary pairing, the attention score scale, the output-logit scale, the GELU flavour, the norm eps
and the inference-time MoE capacity: each parses with allowed values and a did-you-mean, follows
its cross-field rules, lowers to IR attributes, and gives the same logits through the graph
interpreter, the emitted torch module (full forward and KV-cached decode) and the Triton backend.
Each one changes the logits when flipped, so none of these agreements can pass by ignoring it.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from taxonc.compiler.compile import compile_spec
from taxonc.compiler.errors import SpecError
from taxonc.compiler.ir import build_graph
from taxonc.compiler.ir.interpret import run_graph
from taxonc.compiler.passes.weights import fuse_state, random_state
from taxonc.compiler.spec import load_spec
from taxonc.compiler.spec.kinds import Activation, LogitScale, RotaryPairing
from taxonc.kernels.reference.positions import apply_rotary, halves_to_pairs, pairs_to_halves, rotary_tables
from taxonc.runtime.artifact import load_source

# A small decoder with every convention away from its default.
BASE = """\
[model]
name = "conventions"

[dims]
n_layers = 2
d_model = 64
n_heads = 4
d_ff = 96
vocab_size = 96
context = 32

[position]
kind = "rotary"
fraction = 0.5
pairing = "interleaved"

[attention]
score_scale = 0.3

[norm]
kind = "layernorm"
eps = 0.01

[mlp]
activation = "gelu"

[block]
tied_embeddings = true
logit_scale = "inverse-sqrt-d-model"
"""

# One flip per convention; each must move the logits.
FLIPS = {
    "pairing": ["position.pairing=half"],
    "score_scale": ["attention.score_scale=0.125"],
    "logit_scale": ["block.logit_scale=none"],
    "gelu_flavour": ["mlp.activation=gelu-tanh"],
    "eps": ["norm.eps=1e-5"],
}


def _spec(tmp_path: Path, text: str = BASE) -> Path:
    path = tmp_path / "conventions.toml"
    path.write_text(text)
    return path


def _problems(tmp_path: Path, text: str) -> list:
    with pytest.raises(SpecError) as info:
        load_spec(_spec(tmp_path, text))
    return info.value.problems


def _logits(path: Path, sets: list[str] | None = None, seed: int = 0):
    """(logits of the emitted float64 module, logits of the graph interpreter, compiled, module, model)."""
    compiled = compile_spec(path, sets=sets)
    module = load_source(compiled.files["model.py"], "conventions_" + str(abs(hash(tuple(sets or ())))))
    raw = build_graph(compiled.spec)
    state = random_state(raw, seed)
    model = module.build(dtype=torch.float64).eval()
    model.load_state_dict(fuse_state(compiled.graph, state))
    ids = torch.randint(0, compiled.spec.dims.vocab_size, (2, 20), generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        emitted = model(ids)
    interpreted = run_graph(raw, state, {"input_ids": ids})["head.logits"]
    return emitted, interpreted, compiled, module, model, ids


# --- the spec language -------------------------------------------------------------------------

def test_defaults_are_the_common_conventions(tmp_path: Path) -> None:
    spec = load_spec(_spec(tmp_path, BASE.replace('pairing = "interleaved"\n', "").replace("score_scale = 0.3\n", "")
                           .replace('logit_scale = "inverse-sqrt-d-model"\n', "").replace("eps = 0.01\n", ""))).spec
    assert spec.position.pairing is RotaryPairing.HALF
    assert spec.attention.score_scale is None
    assert spec.block.logit_scale is LogitScale.NONE
    assert spec.norm.eps == 1e-5
    assert spec.mlp.activation is Activation.GELU  # exact


def test_gelu_flavours_are_two_activations_and_gating_is_kept() -> None:
    assert {a.value for a in Activation} >= {"gelu", "gelu-tanh", "geglu", "geglu-tanh"}
    assert Activation.GEGLU.gated and Activation.GEGLU_TANH.gated and Activation.SWIGLU.gated
    assert not Activation.GELU.gated and not Activation.GELU_TANH.gated


@pytest.mark.parametrize("old,new,key,hint", [
    ('pairing = "interleaved"', 'pairing = "interleave"', "position.pairing", "interleaved"),
    ('logit_scale = "inverse-sqrt-d-model"', 'logit_scale = "inverse-sqrt-dmodel"', "block.logit_scale", "inverse-sqrt-d-model"),
    ('activation = "gelu"', 'activation = "gelu_tanh"', "mlp.activation", "gelu-tanh"),
])
def test_misspelt_conventions_name_the_key_and_the_allowed_values(tmp_path, old, new, key, hint) -> None:
    (problem,) = _problems(tmp_path, BASE.replace(old, new))
    assert problem.key == key and problem.line is not None
    assert hint in problem.allowed and hint in problem.hint


def test_pairing_belongs_to_rotary_positions(tmp_path: Path) -> None:
    text = BASE.replace('kind = "rotary"\nfraction = 0.5\n', 'kind = "learned"\n')
    (problem,) = _problems(tmp_path, text)
    assert problem.key == "position.pairing" and "offset" in problem.allowed


def test_score_scale_and_mup_are_one_number_given_twice(tmp_path: Path) -> None:
    (problem,) = _problems(tmp_path, BASE + "\n[training.mup]\nenabled = true\n")
    assert problem.key == "attention.score_scale" and "muP" in problem.message


def test_logit_scale_needs_a_tied_output(tmp_path: Path) -> None:
    (problem,) = _problems(tmp_path, BASE.replace("tied_embeddings = true", "tied_embeddings = false"))
    assert problem.key == "block.logit_scale" and problem.allowed == ("none",)


@pytest.mark.parametrize("text", ["score_scale = 0.0", "score_scale = -1.0", 'score_scale = "1"'])
def test_score_scale_is_a_positive_number(tmp_path: Path, text: str) -> None:
    (problem,) = _problems(tmp_path, BASE.replace("score_scale = 0.3", text))
    assert problem.key == "attention.score_scale"


# --- the reference ops ---------------------------------------------------------------------------

def _rotate_pairs(x_BHTK: torch.Tensor, positions: torch.Tensor, rot: int, base: float) -> torch.Tensor:
    """Interleaved rotary written from its definition (GPT-J): dims (2i, 2i+1) are a complex number
    turned by position * base^(-2i/rot). Independent of apply_rotary and of pairs_to_halves."""
    inv = base ** (-torch.arange(0, rot, 2, dtype=torch.float64) / rot)
    turn = torch.polar(torch.ones(len(positions), rot // 2, dtype=torch.float64), positions[:, None].double() * inv)
    pairs = torch.view_as_complex(x_BHTK[..., :rot].double().unflatten(-1, (rot // 2, 2)).contiguous())
    rotated = torch.view_as_real(pairs * turn).flatten(-2).to(x_BHTK.dtype)
    return torch.cat([rotated, x_BHTK[..., rot:]], dim=-1)


@settings(max_examples=25, deadline=None)
@given(heads=st.integers(1, 3), half_rot=st.integers(1, 4), extra=st.integers(0, 4), seed=st.integers(0, 2**16))
def test_interleaved_rotary_by_reordering_equals_the_definition(heads, half_rot, extra, seed) -> None:
    rot, T = 2 * half_rot, 5
    k_dim = rot + extra
    gen = torch.Generator().manual_seed(seed)
    q, k = (torch.randn(1, T, heads * k_dim, generator=gen, dtype=torch.float64) for _ in range(2))
    positions = torch.arange(T)
    cos, sin = rotary_tables(positions, rot, 10000.0, torch.float64)

    def by_reordering(x):
        return apply_rotary(pairs_to_halves(x, heads, rot).unflatten(-1, (heads, k_dim)).transpose(1, 2), cos, sin)

    def by_definition(x):
        return _rotate_pairs(x.unflatten(-1, (heads, k_dim)).transpose(1, 2), positions, rot, 10000.0)

    # the reordering is a permutation of head dims, undone exactly by halves_to_pairs
    assert torch.equal(halves_to_pairs(pairs_to_halves(q, heads, rot), heads, rot), q)
    # rotated values agree once put back in place, and so do the scores attention reads
    back = halves_to_pairs(by_reordering(q).transpose(1, 2).flatten(2), heads, rot)
    torch.testing.assert_close(back, by_definition(q).transpose(1, 2).flatten(2), rtol=1e-12, atol=1e-12)
    scores = by_reordering(q) @ by_reordering(k).transpose(-1, -2)
    torch.testing.assert_close(scores, by_definition(q) @ by_definition(k).transpose(-1, -2), rtol=1e-12, atol=1e-12)
    if rot > 2:  # the half convention is a different function (with one pair the two coincide)
        plain = apply_rotary(q.unflatten(-1, (heads, k_dim)).transpose(1, 2), cos, sin)
        assert not torch.allclose(plain, by_definition(q), atol=1e-6)


# --- graph, emitted module, cached decode --------------------------------------------------------

def test_emitted_module_equals_the_graph_with_every_convention_set(tmp_path: Path) -> None:
    emitted, interpreted, compiled, _, _, _ = _logits(_spec(tmp_path))
    assert (emitted - interpreted).abs().max() < 1e-10
    source = compiled.files["model.py"]
    assert "pairs_to_halves(q, CONFIG.n_heads, CONFIG.rot_dims)" in source
    assert "scale=0.3" in source and f"* {64 ** -0.5!r}" in source
    assert "F.gelu(" in source and 'approximate="tanh"' not in source
    assert "eps=0.01" in source


@pytest.mark.parametrize("flip", sorted(FLIPS))
def test_each_convention_changes_the_logits(tmp_path: Path, flip: str) -> None:
    path = _spec(tmp_path)
    base, _, _, _, _, _ = _logits(path)
    flipped, interpreted, _, _, _, _ = _logits(path, FLIPS[flip])
    assert (flipped - interpreted).abs().max() < 1e-10  # the flipped spec is itself computed right
    relative = ((flipped - base).abs().max() / base.abs().max()).item()
    assert relative > 1e-5, f"flipping {flip} moved the logits by only {relative:.2g} (relative)"


def test_cached_decode_equals_the_full_forward(tmp_path: Path) -> None:
    full, _, _, module, model, ids = _logits(_spec(tmp_path))
    with torch.no_grad():
        cache = module.KVCache()
        steps = [model(ids[:, :7], cache=cache)] + [model(ids[:, t:t + 1], cache=cache) for t in range(7, ids.shape[1])]
    assert (torch.cat(steps, 1) - full).abs().max() < 1e-10


def test_t5_conventions_reach_the_emitted_encoder_decoder() -> None:
    from .conftest import SPECS

    compiled = compile_spec(SPECS / "t5.toml", scale="tiny")
    source = compiled.files["model.py"]
    d_model = compiled.spec.dims.d_model
    assert source.count("scale=1.0") == 3  # encoder self-, decoder self- and cross-attention
    assert f"F.linear(x_final, embedding) * {d_model ** -0.5!r}" in source
    assert "RMSNorm(CONFIG.d_model, eps=1e-06" in source


MOE = BASE.replace('[block]', '[moe]\nn_experts = 4\ntop_k = 2\nlayers = { every = 1 }\ncapacity_factor = 1.0\n'
                   'inference_capacity_factor = 0.5\n\n[block]')


def test_inference_capacity_factor_drops_tokens_in_eval_mode_only_when_given(tmp_path: Path) -> None:
    capped, interpreted, compiled, _, _, _ = _logits(_spec(tmp_path, MOE))
    assert "inference_capacity_factor=0.5" in compiled.files["model.py"]
    assert (capped - interpreted).abs().max() < 1e-10
    uncapped, _, _, _, _, _ = _logits(_spec(tmp_path, MOE), ["moe.inference_capacity_factor=4.0"])
    free = _spec(tmp_path, MOE.replace("inference_capacity_factor = 0.5\n", ""))
    nothing_dropped, _, _, _, _, _ = _logits(free)
    # a factor that leaves room for every token is no cap at all; 0.5 drops some and changes the logits
    assert (uncapped - nothing_dropped).abs().max() < 1e-10
    assert (capped - nothing_dropped).abs().max() > 1e-3


def test_property_checks_say_an_inference_cap_breaks_per_position_outputs(tmp_path: Path) -> None:
    from taxonc.testing.properties import check_subject, load_subject

    capped = {r.name: r for r in check_subject(load_subject(_spec(tmp_path, MOE)), only=["causality", "kv_cache"])}
    assert capped["causality"].ok is None and capped["kv_cache"].ok is None
    assert "inference_capacity_factor" in capped["kv_cache"].detail
    free = load_subject(_spec(tmp_path, MOE.replace("inference_capacity_factor = 0.5\n", "")))
    assert all(r.ok for r in check_subject(free, only=["causality", "kv_cache"]))


# --- the Triton backend --------------------------------------------------------------------------

triton_available = pytest.mark.skipif(
    not torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1", reason="needs a GPU or TRITON_INTERPRET=1")


@triton_available
@pytest.mark.parametrize("text", [BASE, BASE.replace('activation = "gelu"', 'activation = "geglu"')], ids=["gelu", "geglu"])
def test_triton_backend_honours_every_convention(tmp_path: Path, text: str) -> None:
    pytest.importorskip("triton")
    from taxonc.compiler.ir.attrs import Kernel

    path = _spec(tmp_path, text)
    torch_side = compile_spec(path)
    triton_side = compile_spec(path, backend="triton")
    kernels = {n.kernel for n in triton_side.graph.nodes()}
    assert Kernel.FLASH_ATTENTION_ROTARY in kernels  # interleaved pairs and the score scale go through the kernel
    assert (Kernel.GLU if "geglu" in text else Kernel.BIAS_ACT) in kernels  # so does the exact GELU
    reference = load_source(torch_side.files["model.py"], "conv_torch").build().eval()
    torch.manual_seed(0)
    for p in reference.parameters():
        torch.nn.init.normal_(p, std=0.3) if p.dim() > 1 else torch.nn.init.normal_(p, mean=1.0, std=0.1)
    model = load_source(triton_side.files["model.py"], "conv_triton").build().eval()
    model.load_state_dict(reference.state_dict())
    ids = torch.randint(0, 96, (1, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a, b = reference(ids), model(ids)
    assert a.abs().max() > 1.0
    assert ((a - b).abs().max() / a.abs().max()).item() <= 1e-5
    assert not math.isnan(b.sum().item())
