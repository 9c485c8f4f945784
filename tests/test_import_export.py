"""`taxonc import` and `taxonc export --format hf` against transformers, for every family in the table.

A random transformers model (weights std 0.2, logits of order 5) is saved with save_pretrained,
whole and in small shards, and imported; the artifact's fp32 logits must agree to a relative
1e-5 and its 32 greedy tokens must equal transformers' `generate`. The export of the artifact
must load in transformers with every weight and give the same logits again.
"""

from __future__ import annotations

import json
import os
import re

import pytest
import torch

transformers = pytest.importorskip("transformers")

from typer.testing import CliRunner  # noqa: E402

from taxonc.compiler.cli import app  # noqa: E402
from taxonc.compiler.interop.hf_export import export_hf  # noqa: E402
from taxonc.compiler.interop.hf_import import import_checkpoint  # noqa: E402
from taxonc.runtime.artifact import load  # noqa: E402
from taxonc.runtime.generate import generate  # noqa: E402
from taxonc.runtime.sampling import SamplerConfig  # noqa: E402

from .hf_checkpoints import MODEL_TYPES, REL_TOL, SEQ2SEQ, ids, random_hf, relative_error, save  # noqa: E402

runner = CliRunner()
N_NEW = 32


@pytest.fixture(autouse=True)
def _fp32_default():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float32)
    yield
    torch.set_default_dtype(old)


@pytest.fixture(scope="module", params=MODEL_TYPES)
def imported(request, tmp_path_factory):
    """(model_type, transformers model, {"single": artifact, "sharded": artifact})."""
    model_type = request.param
    root = tmp_path_factory.mktemp(f"import-{model_type}")
    hf = random_hf(model_type)
    artifacts = {}
    for layout in ("single", "sharded"):
        src = save(hf, root / f"hf-{layout}", shard=layout == "sharded")
        if layout == "sharded":
            assert (src / "model.safetensors.index.json").is_file() and len(list(src.glob("model-*.safetensors"))) > 1
        result = runner.invoke(app, ["import", str(src), "-o", str(root / f"art-{layout}")])
        assert result.exit_code == 0, result.output
        artifacts[layout] = root / f"art-{layout}"
    return model_type, hf, artifacts


ENCODER_IDS = ids(2, 29, seed=7)  # what encoder-decoder families (T5, Switch) read


def _encoder(model_type: str, batch: int) -> torch.Tensor | None:
    return ENCODER_IDS[:batch] if model_type in SEQ2SEQ else None


def _logits(model: torch.nn.Module, tokens: torch.Tensor, encoder_ids: torch.Tensor | None = None) -> torch.Tensor:
    with torch.inference_mode():
        return model(tokens, encoder_ids=encoder_ids) if encoder_ids is not None else model(tokens)


def _hf_logits(hf, tokens: torch.Tensor, encoder_ids: torch.Tensor | None = None) -> torch.Tensor:
    with torch.inference_mode():
        if encoder_ids is not None:
            return hf(input_ids=encoder_ids, decoder_input_ids=tokens, use_cache=False).logits
        return hf(input_ids=tokens, use_cache=False).logits


def _auto(model_type: str):
    return transformers.AutoModelForSeq2SeqLM if model_type in SEQ2SEQ else transformers.AutoModelForCausalLM


@pytest.mark.parametrize("layout", ["single", "sharded"])
def test_imported_logits_match_transformers(imported, layout):
    model_type, hf, artifacts = imported
    model = load(artifacts[layout]).model
    tokens, enc = ids(2, 48), _encoder(model_type, 2)
    ref = _hf_logits(hf, tokens, enc)
    assert 3.0 < ref.abs().max().item() < 60.0, "weights must give logits of order 5"
    err = relative_error(_logits(model, tokens, enc), ref)
    assert err <= REL_TOL, f"{model_type}/{layout}: relative error {err:.3g}"


def _hf_greedy(hf, model_type: str, prompt: list[int]) -> list[int]:
    """transformers' own greedy generate: an encoder-decoder reads the prompt with its encoder and
    its decoder starts wherever the checkpoint's generation config says."""
    tokens = torch.tensor([prompt])
    with torch.inference_mode():
        out = hf.generate(tokens, attention_mask=torch.ones_like(tokens), max_new_tokens=N_NEW, do_sample=False,
                          pad_token_id=0, eos_token_id=None)
    return out[0, 1:].tolist() if model_type in SEQ2SEQ else out[0, len(prompt):].tolist()


PROMPT = ids(1, 5, seed=3)[0].tolist()  # an ordinary prompt: not prefixed with any start token


def test_greedy_tokens_match_transformers_generate(imported):
    model_type, hf, artifacts = imported
    artifact = load(artifacts["single"])
    assert PROMPT[0] != 0, "a prompt starting with T5's start id (0) would hide a decoder that starts from the prompt"
    ours = generate(artifact.model, artifact.new_cache, artifact.spec, PROMPT, SamplerConfig(kind="greedy"), N_NEW)
    assert ours.new_ids == _hf_greedy(hf, model_type, PROMPT), model_type
    assert len(ours.new_ids) == N_NEW


@pytest.mark.parametrize("model_type", sorted(SEQ2SEQ))
def test_a_wrong_decoder_start_breaks_greedy_agreement(model_type, tmp_path):
    """The checkpoint's own start id is read (3 here, not T5's usual 0), and any other start id
    gives other tokens, so the agreement above depends on the start id being right."""
    hf = random_hf(model_type)
    hf.config.decoder_start_token_id = hf.generation_config.decoder_start_token_id = 3
    artifact = load(import_checkpoint(save(hf, tmp_path / "hf"), tmp_path / "art").out)
    assert artifact.spec["tokenizer"]["decoder_start_id"] == 3 and PROMPT[0] not in (0, 3)
    theirs = _hf_greedy(hf, model_type, PROMPT)
    sampler = SamplerConfig(kind="greedy")
    assert generate(artifact.model, artifact.new_cache, artifact.spec, PROMPT, sampler, N_NEW).new_ids == theirs
    for wrong in (0, PROMPT[0]):  # T5's usual start id, and what taxonc used to do (the prompt's first token)
        spec = {**artifact.spec, "tokenizer": {**artifact.spec["tokenizer"], "decoder_start_id": wrong}}
        assert generate(artifact.model, artifact.new_cache, spec, PROMPT, sampler, N_NEW).new_ids != theirs, wrong


def test_export_round_trip_loads_in_transformers(imported, tmp_path):
    model_type, hf, artifacts = imported
    out = export_hf(artifacts["sharded"], tmp_path / "exported").out
    back, info = _auto(model_type).from_pretrained(out, dtype=torch.float32, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    config = json.loads((out / "config.json").read_text())
    assert type(back).__name__ == config["architectures"][0]
    if model_type in SEQ2SEQ:  # where the decoder starts comes back too
        assert config["decoder_start_token_id"] == back.config.decoder_start_token_id == hf.config.decoder_start_token_id
    tokens, enc = ids(2, 40, seed=5), _encoder(model_type, 2)
    err = relative_error(_hf_logits(back.eval(), tokens, enc), _hf_logits(hf, tokens, enc))
    assert err <= REL_TOL, f"{model_type}: exported model differs by {err:.3g}"


def test_spec_values_name_their_origin(imported):
    model_type, _, artifacts = imported
    text = (artifacts["single"] / "spec.toml").read_text()
    values = [line for line in text.splitlines() if re.match(r"^\w+ = ", line)]
    assert values and all("  # " in line for line in values), text
    assert re.search(r"^vocab_size = 128  # config.json: vocab_size$", text, re.MULTILINE), text
    start = re.search(r"^decoder_start_id = (\d+)  # config.json: decoder_start_token_id$", text, re.MULTILINE)
    assert (start is not None) == (model_type in SEQ2SEQ), text
    lock = json.loads((artifacts["single"] / "spec.lock.json").read_text())
    assert lock["source"] == "spec.toml" and lock["imported_from"]["model_type"] == model_type


# --- mutation: the tolerance catches a wrong convention ------------------------------------------

MUTATIONS = {  # model_type -> spec overrides that each change the function slightly
    "llama": ["norm.eps=1e-5", "position.base=10500.0"],  # LlamaConfig's eps is 1e-6
    "mistral": ["attention.sparse.window=17"],
    "gpt_neox": ["norm.eps=1e-6", "position.fraction=0.5", 'mlp.activation="gelu-tanh"'],
    "gptj": ['position.pairing="half"'],
    "bloom": ["norm.eps=1e-6"],
    "opt": ["norm.eps=1e-6"],
    "t5": ["norm.eps=1e-5", "attention.score_scale=0.125"],
    # the same parameters under another placement: norms on the sublayer inputs, or on the residual sums
    "olmo2": ['norm.placement="pre"', 'norm.placement="post"'],
    "qwen3": ["norm.eps=1e-5"],  # Qwen3Config's eps is 1e-6, in the QK-norms too
}


@pytest.mark.parametrize("model_type,override", [(m, o) for m, os_ in MUTATIONS.items() for o in os_])
def test_wrong_convention_breaks_agreement(model_type, override, tmp_path):
    """The same weights under a spec differing in one convention must miss the tolerance,
    so the agreement above means the conventions were read right."""
    from safetensors.torch import load_file

    from taxonc.compiler.compile import compile_spec
    from taxonc.runtime.artifact import load_source

    hf = random_hf(model_type)
    artifact = import_checkpoint(save(hf, tmp_path / "hf"), tmp_path / "art").out
    compiled = compile_spec(artifact / "spec.toml", sets=[override])
    model = load_source(compiled.files["model.py"], "mutated").build(dtype=torch.float32).eval()
    model.load_state_dict(load_file(artifact / "weights.safetensors"))
    tokens, enc = ids(2, 48), _encoder(model_type, 2)
    ref = _hf_logits(hf, tokens, enc)
    assert relative_error(_logits(load(artifact).model, tokens, enc), ref) <= REL_TOL
    assert relative_error(_logits(model, tokens, enc), ref) > 5 * REL_TOL, override


# --- counts at full size -------------------------------------------------------------------------

def _default_config(model_type: str) -> dict:
    config = transformers.AutoConfig.for_model(model_type).to_dict()
    if model_type == "switch_transformers":  # released Switch configs cap experts below the context
        config["expert_capacity"] = config.get("n_positions", 512)  # SwitchTransformersConfig's context default
    return config


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_default_config_counts_what_transformers_counts(model_type):
    from taxonc.compiler.analysis import count_params
    from taxonc.compiler.interop.hf_config_file import read_spec_fields, spec_tables
    from taxonc.compiler.spec.model import ModelSpec

    config = _default_config(model_type)
    family, reading = read_spec_fields(config, "config.json")
    spec = ModelSpec.model_validate(spec_tables(family, reading, "counted"))
    hf_config = transformers.AutoConfig.for_model(model_type, **{k: v for k, v in config.items() if k != "model_type"})
    with torch.device("meta"):
        hf = _auto(model_type).from_config(hf_config)
    theirs = sum(p.numel() for p in hf.parameters())  # parameters() yields a tied matrix once
    assert count_params(spec).total == theirs, model_type


@pytest.mark.skipif(not torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1",
                    reason="the Triton backend needs a GPU or TRITON_INTERPRET=1")
def test_triton_backend_import_matches_transformers(imported, tmp_path):
    """The same checkpoint compiled for the Triton backend (interpreted on a CPU: 5-10 s a family,
    so by default only LLaMA; TAXONC_SLOW=1 runs every family)."""
    model_type, hf, artifacts = imported
    if model_type != "llama" and not os.environ.get("TAXONC_SLOW"):
        pytest.skip("interpreted Triton takes 5-10 s per family; set TAXONC_SLOW=1")
    src = tmp_path / "hf"
    save(hf, src)
    result = runner.invoke(app, ["import", str(src), "-o", str(tmp_path / "art"), "--backend", "triton"])
    assert result.exit_code == 0, result.output
    artifact = load(tmp_path / "art")
    assert artifact.lock["backend"] == "triton"
    tokens, enc = ids(1, 24), _encoder(model_type, 1)
    err = relative_error(_logits(artifact.model, tokens, enc), _hf_logits(hf, tokens, enc))
    assert err <= REL_TOL, f"{model_type} (triton): relative error {err:.3g}"
