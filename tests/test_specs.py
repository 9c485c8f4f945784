"""Every spec in specs/: valid, counted within 2% of its published figure, schema-conformant."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import jsonschema
import pytest

from taxonc.compiler.analysis import params_report, within_tolerance
from taxonc.compiler.spec import is_abstract, load_spec
from taxonc.compiler.spec.jsonschema import spec_json_schema

from .conftest import SPECS

ALL_FILES = sorted(SPECS.rglob("*.toml"))
MODEL_FILES = [p for p in ALL_FILES if not is_abstract(p)]
IDS = [str(p.relative_to(SPECS).with_suffix("")) for p in MODEL_FILES]

# The 22 models of the review (shared/seed/transformer-taxonomy.md, section 1) and the spec
# that stands for each.
REVIEW_MODELS = {
    "GPT-3": "gpt3", "GPT-4": "gpt4", "Gopher": "gopher", "AlphaCode": "alphacode", "RETRO": "retro",
    "GPT-3.5": "code-davinci-002", "Chinchilla": "chinchilla", "Flamingo": "flamingo", "Gato": "gato",
    "Anthropic LM": "anthropic-lm", "PaLM": "palm", "GPT-NeoX": "gpt-neox", "GPT-J": "gpt-j", "GLaM": "glam",
    "LaMDA": "lamda", "Switch": "switch", "BLOOM": "bloom", "Galactica": "galactica", "LLaMA": "llama",
    "Jurassic J1-Grande v2": "j1-grande-v2", "OPT": "opt", "GLM-130B": "glm-130b",
}
# Every size the papers' own tables list, and the post-training derivatives.
SIZES = (
    [f"gpt3-{s}" for s in ("125m", "350m", "760m", "1.3b", "2.7b", "6.7b", "13b")]
    + [f"gopher-{s}" for s in ("44m", "117m", "417m", "1.4b", "7.1b")]
    + ["palm-8b", "palm-62b"]
    + [f"llama-{s}" for s in ("7b", "13b", "33b")]
    + [f"opt-{s}" for s in ("125m", "350m", "1.3b", "2.7b", "6.7b", "13b", "30b", "66b")]
    + [f"bloom-{s}" for s in ("560m", "1.1b", "1.7b", "3b", "7.1b")]
)
DERIVATIVES = ["codex", "minerva", "text-davinci-002", "text-davinci-003", "sparrow", "flan"]


def test_every_review_model_has_a_spec() -> None:
    names = {p.stem for p in MODEL_FILES}
    missing = {model: stem for model, stem in REVIEW_MODELS.items() if stem not in names}
    assert not missing
    assert len(REVIEW_MODELS) == 22


@pytest.mark.parametrize("stem", SIZES + DERIVATIVES)
def test_sizes_and_derivatives_present(stem: str) -> None:
    assert (SPECS / f"{stem}.toml").is_file()


@pytest.mark.parametrize("path", MODEL_FILES, ids=IDS)
def test_spec_is_valid_and_named_after_its_file(path: Path) -> None:
    resolved = load_spec(path)
    assert resolved.spec.model.name == path.stem


@pytest.mark.parametrize("path", MODEL_FILES, ids=IDS)
def test_count_matches_published_within_two_percent(path: Path) -> None:
    resolved = load_spec(path)
    report = params_report(resolved)
    spec = resolved.spec
    if spec.published.params is not None:
        assert spec.published.source, "a published count needs its source"
        assert within_tolerance(report) or spec.published.deviation, (
            f"computed {report['params']:,} vs published {spec.published.params:,.0f} "
            f"({report['params_deviation']:+.2%}) and no published.deviation reason"
        )
    if report["params_active_deviation"] is not None:
        assert abs(report["params_active_deviation"]) <= 0.02 or spec.published.deviation


@pytest.mark.parametrize("path", MODEL_FILES, ids=IDS)
def test_dims_carry_a_source(path: Path) -> None:
    spec = load_spec(path).spec
    assert spec.dims.source or not spec.disclosed, "dimensions need their source"


@pytest.mark.parametrize("path", MODEL_FILES, ids=IDS)
def test_undisclosed_models_say_their_figures_are_assumed(path: Path) -> None:
    spec = load_spec(path).spec
    if not spec.disclosed:
        assert "assum" in spec.model.notes.lower()


@pytest.mark.parametrize("path", ALL_FILES, ids=[str(p.relative_to(SPECS)) for p in ALL_FILES])
def test_file_conforms_to_json_schema(path: Path) -> None:
    jsonschema.validate(tomllib.loads(path.read_text()), spec_json_schema())


def test_json_schema_rejects_unknown_keys_and_bad_choices() -> None:
    schema = spec_json_schema()
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"dims": {"n_layer": 3}}, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"mlp": {"activation": "tanh"}}, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"position": {"kind": "rope"}}, schema)


def test_resolved_digest_is_stable() -> None:
    a, b = load_spec(SPECS / "gpt3.toml"), load_spec(SPECS / "gpt3.toml")
    assert a.digest == b.digest and len(a.digest) == 64
    json.dumps(params_report(a))  # JSON-serialisable
