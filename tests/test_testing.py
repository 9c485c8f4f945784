"""taxonc.testing: the public property checks, the plugin, and `taxonc check` catching broken models."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from typer.testing import CliRunner

import taxonc.testing as tt
from taxonc.compiler.cli import app
from taxonc.compiler.errors import SpecError
from taxonc.compiler.spec import load_spec

from .conftest import SPECS
from .spec_sets import MODEL_FILES, spec_params

runner = CliRunner()


@pytest.mark.parametrize("path", spec_params(MODEL_FILES))
def test_taxonc_check_passes_for_every_spec(path: Path) -> None:
    result = runner.invoke(app, ["check", str(path), "--examples", "5", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)[path.stem]
    assert all(r["ok"] in (True, None) for r in report)


@settings(max_examples=int(os.environ.get("TAXONC_RANDOM_SPEC_EXAMPLES", "8")), deadline=None)
@given(spec=tt.specs())
def test_random_specs_compile_and_pass_every_property(spec, tmp_path_factory) -> None:
    from taxonc.compiler.spec.dump import dump_spec

    path = tmp_path_factory.mktemp("spec") / "random.toml"
    path.write_text(dump_spec(spec))
    subject = tt.load_subject(path)
    failures = [r for r in tt.check_subject(subject, examples=2) if r.ok is False]
    assert not failures, [(r.name, r.detail, r.counterexample) for r in failures]


@settings(max_examples=20, deadline=None)
@given(case=tt.invalid_specs())
def test_invalid_specs_raise_the_promised_error(case, tmp_path_factory) -> None:
    from taxonc.compiler.spec.dump import toml_value

    raw, key, message = case
    path = tmp_path_factory.mktemp("bad") / "bad.toml"
    lines = []
    for table, body in raw.items():
        lines.append(f"[{table}]")
        lines += [f"{k} = {toml_value(v)}" for k, v in body.items()]
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(SpecError) as info:
        load_spec(path)
    assert any(p.key == key and message in p.message for p in info.value.problems), [p.render() for p in info.value.problems]


def _mutated_check(spec: str, mutation, only: str) -> tt.PropertyResult:
    subject = tt.load_subject(SPECS / f"{spec}.toml", mutate=mutation)
    return tt.check_subject(subject, examples=5, only=[only])[0]


def test_check_catches_a_dropped_causal_mask() -> None:
    result = _mutated_check("llama", lambda src: src.replace("is_causal=1 < T == S", "is_causal=False"), "causality")
    assert result.ok is False and result.counterexample["first_differing_output"] < result.counterexample["changed_position"]


def test_check_catches_a_cache_read_at_the_wrong_offset() -> None:
    wrong = lambda src: src.replace("offset = cache.length if cache is not None else 0", "offset = 0")  # noqa: E731
    assert _mutated_check("bloom", wrong, "kv_cache").ok is False  # ALiBi reads positions from the offset
    assert _mutated_check("llama", wrong, "kv_cache").ok is False  # rotary reads positions from the offset


def test_check_cli_reports_the_failing_property(monkeypatch: pytest.MonkeyPatch) -> None:
    real = tt.load_subject

    def broken(path, *args, **kwargs):
        return real(path, mutate=lambda src: src.replace("is_causal=1 < T == S", "is_causal=False"))

    monkeypatch.setattr("taxonc.testing.load_subject", broken)
    result = runner.invoke(app, ["check", str(SPECS / "gpt3.toml"), "--only", "causality,kv_cache"])
    assert result.exit_code == 1
    assert "causality failed" in result.output and "token_ids" in result.output and "max_abs_diff" in result.output


@tt.given_spec(SPECS / "palm.toml")
def test_given_spec_decorator(subject: tt.Subject) -> None:
    assert subject.spec.model.name == "palm" and tt.check_causality(subject, examples=2).ok


@pytest.mark.taxonc_spec(str(SPECS / "gpt-j.toml"))
def test_plugin_fixture(taxonc_subject: tt.Subject) -> None:
    assert tt.check_param_count(taxonc_subject).ok


def test_token_batches_fit_the_spec() -> None:
    spec = load_spec(SPECS / "llama.toml").spec

    @settings(max_examples=10, deadline=None)
    @given(tt.token_batches(spec))
    def inner(batch) -> None:
        assert batch.max() < spec.dims.vocab_size and batch.dim() == 2

    inner()
