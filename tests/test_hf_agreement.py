"""taxonc's emitted models against Hugging Face transformers, weight for weight, for every family
of the import table (compiler/interop/hf.py).

For each family a small transformers config (2 layers, d_model 64, 4 heads, vocab 128, context
64) is built with random weights drawn so that logits are of order 5 (asserted), and the taxonc
spec is read from that config through the family table; the weights move over by the same
table. Agreement is relative: max |taxonc - HF| / max |HF| <= 1e-5 in fp32. Mutation tests flip
one convention in the spec (rotary pairing, GELU flavour, attention scale, eps, logit scale) and
require the same comparison to fail, so the tolerance can catch every one of them.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

transformers = pytest.importorskip("transformers")

from taxonc.compiler.analysis import count_params  # noqa: E402
from taxonc.compiler.interop.hf_pairs import FAMILY_NAMES, TINY, Dims, build_pair, hf_logits, spec_toml  # noqa: E402
from taxonc.compiler.interop.hf_config import (architecture, config_values, mismatched_requirements,  # noqa: E402
                                               round_trip_differences)
from taxonc.compiler.interop.hf import FAMILIES  # noqa: E402
from taxonc.compiler.interop.hf_schema import Packing, Take  # noqa: E402
from taxonc.compiler.interop.hf_weights import qkv_part  # noqa: E402
from taxonc.compiler.spec import load_spec  # noqa: E402

from .conftest import ROOT  # noqa: E402

# fp32 rounding of the same function in two libraries stays near 1e-7 relative; each convention
# a wrong spec gets wrong moves the logits by far more (the mutation tests below)
REL_TOL = 1e-5


def relative_error(ours: torch.Tensor, ref: torch.Tensor) -> float:
    """max |ours - ref| / max |ref|: one number for the whole logits tensor."""
    return ((ours - ref).abs().max() / ref.abs().max()).item()


def _inputs(family: str, batch: int, length: int, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor | None]:
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, TINY.vocab_size, (batch, length), generator=gen)
    encoder_ids = torch.randint(0, TINY.vocab_size, (batch, 29), generator=gen) if FAMILIES[family].seq2seq else None
    return ids, encoder_ids


def _ours(model: torch.nn.Module, ids: torch.Tensor, encoder_ids: torch.Tensor | None, **kw) -> torch.Tensor:
    return model(ids, encoder_ids=encoder_ids, **kw) if encoder_ids is not None else model(ids, **kw)


# BLOOM and SwitchTransformers have only their own (eager) attention in transformers 5
NO_SDPA = {"bloom", "switch_transformers"}


def _pair(family: str, attn: str, tmp_path, **kw):
    return build_pair(family, TINY, attn_implementation=attn, workdir=tmp_path, **kw)


@pytest.fixture(autouse=True)
def _fp32_default():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float32)
    yield
    torch.set_default_dtype(old)


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_logits_match_transformers(family: str, attn: str, tmp_path) -> None:
    if attn == "sdpa" and family in NO_SDPA:
        pytest.skip(f"transformers has no sdpa attention for {family}")
    hf, ours, compiled = _pair(family, attn, tmp_path)
    assert compiled.spec.dims.n_layers == 2 and compiled.spec.dims.d_model == 64
    with torch.inference_mode():
        for batch, length in ((2, TINY.context), (1, 37)):
            ids, encoder_ids = _inputs(family, batch, length)
            ref = hf_logits(hf, ids, encoder_ids)
            got = _ours(ours, ids, encoder_ids)
            assert got.shape == ref.shape == (batch, length, TINY.vocab_size)
            assert got.dtype == ref.dtype == torch.float32
            # logits of order 5, so that a wrong convention is far above fp32 rounding
            assert 1.5 < ref.std() < 6 and 5 < ref.abs().max() < 60
            error = relative_error(got, ref)
            assert error <= REL_TOL, f"{family}/{attn} B={batch} T={length}: relative error {error:.3g}"


def _greedy_ours(model, module, ids: torch.Tensor, encoder_ids: torch.Tensor | None, new: int):
    """Greedy decoding through taxonc's KV cache: the prompt once, then one token per step.
    Returns the tokens and each step's logits."""
    cache = module.KVCache()
    tokens, logits = [], []
    step = ids
    with torch.inference_mode():
        for _ in range(new):
            last = _ours(model, step, encoder_ids, cache=cache)[0, -1]
            tokens.append(last.argmax().item())
            logits.append(last)
            step = torch.tensor([[tokens[-1]]])
    return tokens, torch.stack(logits)


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_32_greedy_tokens_equal_transformers_generate(family: str, tmp_path) -> None:
    hf, ours, compiled = _pair(family, "eager" if family in NO_SDPA else "sdpa", tmp_path)
    from taxonc.runtime.artifact import load_source

    module = load_source(compiled.files["model.py"], f"greedy_{family}")
    ids, encoder_ids = _inputs(family, 1, 8, seed=3)
    hf.generation_config.eos_token_id = None  # never stop early: 32 tokens on both sides
    settings = dict(max_new_tokens=32, min_new_tokens=32, do_sample=False, return_dict_in_generate=True,
                    output_logits=True)
    with torch.inference_mode():
        if encoder_ids is not None:
            out = hf.generate(input_ids=encoder_ids, **settings)
            theirs, prompt = out.sequences[0, 1:], torch.tensor([[hf.config.decoder_start_token_id]])
        else:
            out = hf.generate(input_ids=ids, attention_mask=torch.ones_like(ids), pad_token_id=0, **settings)
            theirs, prompt = out.sequences[0, ids.shape[1]:], ids
    # through the cache, with 8 + 32 tokens: past Mistral's 16-token sliding window
    tokens, logits = _greedy_ours(ours, module, prompt, encoder_ids, 32)
    assert theirs.tolist() == tokens
    # every step's logits, not only their argmax: random tied models soon repeat one token
    error = relative_error(logits, torch.cat(out.logits))
    assert error <= REL_TOL, f"{family}: cached decode differs from generate's logits by {error:.3g} (relative)"


# The Triton backend on the same checkpoints: smaller still, since the interpreter runs every
# kernel program in Python.
TRITON_DIMS = Dims(n_layers=2, d_model=32, n_heads=2, vocab_size=64, context=16)
needs_triton = pytest.mark.skipif(not torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1",
                                  reason="needs a GPU or TRITON_INTERPRET=1")


@needs_triton
@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_triton_backend_matches_transformers(family: str, tmp_path) -> None:
    pytest.importorskip("triton")
    hf, ours, compiled = build_pair(family, TRITON_DIMS, attn_implementation="eager", workdir=tmp_path,
                                    backend="triton")
    assert any(n.kernel is not None for n in compiled.graph.nodes())
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(0, TRITON_DIMS.vocab_size, (1, 12), generator=gen)
    encoder_ids = torch.randint(0, TRITON_DIMS.vocab_size, (1, 10), generator=gen) if FAMILIES[family].seq2seq else None
    with torch.inference_mode():
        ref = hf_logits(hf, ids, encoder_ids)
        error = relative_error(_ours(ours, ids, encoder_ids), ref)
    assert ref.abs().max() > 5 and error <= REL_TOL, f"{family} (triton): relative error {error:.3g}"


# (family, --set override, what a wrong import would have done)
MUTATIONS = [
    ("gptj", "position.pairing=half", "rotate GPT-J's adjacent pairs as halves"),
    ("gpt_neox", "mlp.activation=gelu-tanh", "take exact GELU for the tanh approximation"),
    ("gpt2", "mlp.activation=gelu", "take GPT-2's gelu_new for the exact GELU"),
    ("llama", "attention.score_scale=1.0", "leave out 1/sqrt(d_head)"),
    ("t5", "attention.score_scale=0.125", "add 1/sqrt(d_kv) to T5's unscaled scores"),
    ("t5", "block.logit_scale=none", "leave out T5's d_model^-0.5 on the tied output"),
    ("llama", "norm.eps=1e-5", "use 1e-5 where the checkpoint's RMSNorm uses 1e-6"),
    ("t5", "norm.eps=1e-5", "use 1e-5 where T5's norm uses 1e-6"),
    ("qwen3", "attention.qk_norm=none", "drop Qwen3's per-head QK-norm"),
    ("olmo2", "attention.qk_norm=none", "drop OLMo-2's full-width QK-norm"),
    ("olmo2", "norm.placement=pre", "norm OLMo-2's sublayer inputs instead of their outputs"),
    ("olmo2", "norm.placement=post", "norm OLMo-2's residual sums instead of the sublayer outputs"),
]


@pytest.mark.parametrize("family,override,what", MUTATIONS, ids=[f"{f}-{o}" for f, o, _ in MUTATIONS])
def test_a_wrong_convention_fails_the_comparison(family: str, override: str, what: str, tmp_path) -> None:
    hf, ours, _ = build_pair(family, TINY, attn_implementation="eager", workdir=tmp_path, sets=[override])
    ids, encoder_ids = _inputs(family, 2, TINY.context)
    with torch.inference_mode():
        error = relative_error(_ours(ours, ids, encoder_ids), hf_logits(hf, ids, encoder_ids))
    assert error > 3 * REL_TOL, f"{what}: relative error only {error:.3g}"


def test_mapping_has_teeth(tmp_path) -> None:
    """Loading NeoX's per-head query_key_value rows as if stacked must visibly disagree."""
    hf, ours, compiled = build_pair("gpt_neox", TINY, attn_implementation="eager", workdir=tmp_path)
    state = ours.state_dict()
    for i in range(TINY.n_layers):
        for wb in ("weight", "bias"):
            state[f"layers.{i}.qkv.{wb}"] = hf.state_dict()[f"gpt_neox.layers.{i}.attention.query_key_value.{wb}"]
    ours.load_state_dict(state)
    ids, _ = _inputs("gpt_neox", 1, TINY.context)
    with torch.inference_mode():
        assert relative_error(ours(ids), hf_logits(hf, ids)) > 100 * REL_TOL


def test_packed_qkv_parts() -> None:
    n_heads, d_head, d_in = 3, 2, 5
    rows = torch.arange(3 * n_heads * d_head, dtype=torch.float32)
    weight = rows[:, None].expand(-1, d_in)
    # per head: row r is head r // (3 d_head), role (r // d_head) % 3, dim r % d_head
    for index, role in enumerate("qkv"):
        take = Take("qkv", part=role, packing=Packing.PER_HEAD)
        expect = [h * 3 * d_head + index * d_head + k for h in range(n_heads) for k in range(d_head)]
        assert qkv_part(weight, take, n_heads, n_heads, d_head)[:, 0].tolist() == expect
        assert qkv_part(rows, take, n_heads, n_heads, d_head).tolist() == expect
    # stacked with one key/value head (Falcon's multi-query): q rows, then k, then v
    stacked = torch.arange((n_heads + 2) * d_head)
    parts = [qkv_part(stacked, Take("qkv", part=r, packing=Packing.STACKED), n_heads, 1, d_head).tolist() for r in "qkv"]
    assert parts == [list(range(6)), [6, 7], [8, 9]]


def test_requirements_name_the_config_keys_that_would_change_the_function() -> None:
    assert mismatched_requirements("falcon", {"new_decoder_architecture": True, "alibi": False}) == {
        "new_decoder_architecture": (True, False)}
    assert mismatched_requirements("gpt2", {"scale_attn_weights": True}) == {}


def _hf_count(family: str) -> int:
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM

    cfg = AutoConfig.for_model(family)
    auto = AutoModelForSeq2SeqLM if FAMILIES[family].seq2seq else AutoModelForCausalLM
    with torch.device("meta"):
        model = auto.from_config(cfg)
    return sum(p.numel() for p in model.parameters()), cfg  # parameters() yields tied tensors once


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_full_size_default_config_counts_what_transformers_counts(family: str, tmp_path) -> None:
    theirs, cfg = _hf_count(family)
    path = tmp_path / f"{family}.toml"
    path.write_text(spec_toml(family, cfg.to_dict()))
    assert count_params(load_spec(path).spec).total == theirs


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_spec_to_config_and_back_keeps_the_function(family: str, tmp_path) -> None:
    """The default config's spec, written back as config keys by the table and read again, is the same
    architecture; transformers builds the written config with the same parameter count."""
    from transformers import AutoConfig

    theirs, cfg = _hf_count(family)
    first = tmp_path / "a.toml"
    first.write_text(spec_toml(family, cfg.to_dict()))
    spec = load_spec(first).spec
    written = config_values(family, architecture(spec))
    again = tmp_path / "b.toml"
    again.write_text(spec_toml(family, AutoConfig.for_model(**written).to_dict()))
    assert round_trip_differences(family, spec, load_spec(again).spec) == {}
    assert count_params(load_spec(again).spec).total == theirs


CONVENTIONS = ("position.pairing", "mlp.activation", "norm.eps", "attention.score_scale", "block.logit_scale")
# (family, spec in specs/, config values of the released checkpoint where the HF class default differs,
#  the conventions compared)
AUDITED = [
    ("gptj", "gpt-j", {}, CONVENTIONS),                          # GPTJConfig's defaults are GPT-J-6B's
    ("t5", "t5", {}, CONVENTIONS),                               # t5-small's conventions are t5-11b's
    ("switch_transformers", "switch", {}, CONVENTIONS[1:4]),     # Switch-C unties its output (switch_c.gin)
    ("llama", "llama-7b", {}, CONVENTIONS),
    ("gpt_neox", "gpt-neox", {"hidden_act": "gelu_fast"}, CONVENTIONS),  # the released 20B config
    ("bloom", "bloom-560m", {}, CONVENTIONS),
    ("opt", "opt-125m", {}, CONVENTIONS),
    ("qwen3", "qwen3-8b", {}, (*CONVENTIONS, "attention.qk_norm", "norm.placement")),
    ("olmo2", "olmo2-7b", {"rms_norm_eps": 1e-6}, (*CONVENTIONS, "attention.qk_norm", "norm.placement")),  # released config
]


@pytest.mark.parametrize("family,name,released,keys", AUDITED, ids=[a[1] for a in AUDITED])
def test_audited_specs_have_the_conventions_transformers_reads(family, name, released, keys, tmp_path) -> None:
    """The convention fields of specs/ agree with what the table reads from the family's HF config."""
    from transformers import AutoConfig

    path = tmp_path / f"{family}.toml"
    path.write_text(spec_toml(family, AutoConfig.for_model(family, **released).to_dict()))
    theirs = architecture(load_spec(path).spec)
    ours = architecture(load_spec(ROOT / "specs" / f"{name}.toml").spec)
    assert {k: ours.get(k) for k in keys} == {k: theirs.get(k) for k in keys}


def test_round_trip_names_what_a_family_cannot_carry(tmp_path) -> None:
    """LLaMA's config has no interleaved rotary and no exact-GELU T5 gate: the round trip says so by key."""
    from transformers import AutoConfig

    path = tmp_path / "llama.toml"
    path.write_text(spec_toml("llama", AutoConfig.for_model("llama").to_dict()))
    spec = load_spec(path, {"position": {"pairing": "interleaved"}, "norm": {"final": False}}).spec
    back = tmp_path / "back.toml"
    back.write_text(spec_toml("llama", config_values("llama", architecture(spec))))
    differences = round_trip_differences("llama", spec, load_spec(back).spec)
    assert differences == {"position.pairing": ("interleaved", "half"), "norm.final": (False, True)}


def test_the_table_imports_without_transformers() -> None:
    code = ("import sys; sys.modules['transformers'] = None\n"
            "from taxonc.compiler.interop import hf, hf_config, hf_weights\n"
            "assert len(hf.FAMILIES) == 13\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr
