"""Property-test a new spec with taxonc.testing, inside pytest.

    python -m pytest examples/test_llama2_70b.py

taxonc installs a pytest plugin, so this file needs nothing else. Two ways to get the compiled
spec (tiny scale, float64, seeded test weights), compiled once per test module:
`@tt.given_spec(path)` passes it as `subject`; `@pytest.mark.taxonc_spec(path)` hands it to
the `taxonc_subject` fixture. Every check returns a result whose `detail` and, on failure,
`counterexample` (token ids, first differing position, largest difference) say what went wrong.
`taxonc check examples/llama2-70b.toml` runs all of the checks from the command line.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hypothesis import given, settings

import taxonc.testing as tt

SPEC = Path(__file__).resolve().parent / "llama2-70b.toml"


@tt.given_spec(SPEC)
def test_no_token_sees_the_future(subject):
    result = tt.check_causality(subject, examples=3)
    assert result.ok, result.counterexample


@tt.given_spec(SPEC)
def test_grouped_query_attention_equals_multi_head_with_copied_kv_heads(subject):
    result = tt.check_gqa_equals_mha(subject)
    assert result.ok, result.counterexample


@pytest.mark.taxonc_spec(SPEC)
def test_cached_decoding_equals_the_full_forward_pass(taxonc_subject):
    result = tt.check_kv_cache(taxonc_subject, examples=1, prompt=4, total=12)
    assert result.ok, result.counterexample


@pytest.mark.taxonc_spec(SPEC)
def test_module_has_the_analytic_parameter_count(taxonc_subject):
    result = tt.check_param_count(taxonc_subject)
    assert result.ok, result.detail


SUBJECT = tt.load_subject(SPEC)  # for a hypothesis strategy, which needs the spec up front


@settings(max_examples=10, deadline=None)
@given(ids=tt.token_batches(SUBJECT.spec, max_batch=2, max_len=12))
def test_any_batch_gives_finite_logits_of_the_right_shape(ids):
    with torch.no_grad():
        logits = SUBJECT.model(ids)
    assert logits.shape == (*ids.shape, SUBJECT.spec.dims.vocab_size)
    assert torch.isfinite(logits).all()
