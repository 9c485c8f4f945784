"""Validation that teaches: each mistake yields file, dotted key, line and allowed values."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from taxonc.compiler.errors import Problem, SpecError
from taxonc.compiler.spec import load_spec

VALID = """\
[model]
name = "toy"
structure = "decoder"

[dims]
n_layers = 4
d_model = 64
n_heads = 4
vocab_size = 256
context = 128

[attention]
kind = "multi-head"

[position]
kind = "learned"

[norm]
kind = "layernorm"

[mlp]
activation = "gelu"
"""


def problems_for(tmp_path: Path, text: str, name: str = "spec.toml", extra: dict[str, str] | None = None) -> list[Problem]:
    for other, body in (extra or {}).items():
        (tmp_path / other).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / other).write_text(textwrap.dedent(body))
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    with pytest.raises(SpecError) as info:
        load_spec(path)
    return info.value.problems


def edit(old: str, new: str) -> str:
    assert old in VALID, old
    return VALID.replace(old, new)


def only(problems: list[Problem]) -> Problem:
    assert len(problems) == 1, [p.render() for p in problems]
    return problems[0]


def test_valid_base_loads(tmp_path: Path) -> None:
    path = tmp_path / "ok.toml"
    path.write_text(VALID)
    assert load_spec(path).spec.dims.n_layers == 4


def test_malformed_toml_names_line_and_column(tmp_path: Path) -> None:
    p = only(problems_for(tmp_path, VALID + "\n[dims\n"))
    assert "malformed TOML" in p.message and p.line == VALID.count("\n") + 2 and p.column is not None


def test_unknown_key_suggests_the_right_one(tmp_path: Path) -> None:
    p = only(problems_for(tmp_path, edit("n_layers = 4", "n_layer = 4")))
    assert p.key == "dims.n_layer" and p.message == "unknown key"
    assert "did you mean 'n_layers'" in p.hint and "n_layers" in p.allowed and p.line == 6


def test_unknown_table(tmp_path: Path) -> None:
    p = only(problems_for(tmp_path, VALID + "\n[atention]\nkind = 'multi-head'\n"))
    assert p.key == "atention" and "did you mean 'attention'" in p.hint


def test_wrong_type_string_for_int(tmp_path: Path) -> None:
    p = only(problems_for(tmp_path, edit("d_model = 64", 'd_model = "64"')))
    assert p.key == "dims.d_model" and "integer" in p.message and "'64'" in p.message and p.line == 7


def test_float_where_int_required(tmp_path: Path) -> None:
    p = only(problems_for(tmp_path, edit("n_heads = 4", "n_heads = 4.5")))
    assert p.key == "dims.n_heads" and "integer" in p.message


def test_negative_dimension(tmp_path: Path) -> None:
    p = only(problems_for(tmp_path, edit("n_layers = 4", "n_layers = -2")))
    assert p.key == "dims.n_layers" and "greater than 0" in p.message


def test_bad_choice_lists_allowed_values(tmp_path: Path) -> None:
    p = only(problems_for(tmp_path, edit('activation = "gelu"', 'activation = "swiglue"')))
    assert p.key == "mlp.activation" and set(p.allowed) == {"relu", "gelu", "geglu", "swiglu", "solu"}
    assert "did you mean 'swiglu'" in p.hint


def test_bad_kind_of_union(tmp_path: Path) -> None:
    p = only(problems_for(tmp_path, edit('kind = "learned"', 'kind = "rope"')))
    assert p.key == "position.kind" and "rotary" in p.allowed and "alibi" in p.allowed


def test_missing_required_key(tmp_path: Path) -> None:
    p = only(problems_for(tmp_path, edit("vocab_size = 256\n", "")))
    assert p.key == "dims.vocab_size" and "missing" in p.message


def test_missing_kind_in_union(tmp_path: Path) -> None:
    p = only(problems_for(tmp_path, edit('[position]\nkind = "learned"', "[position]\noffset = 2")))
    assert p.key == "position.kind"


def test_key_of_another_variant(tmp_path: Path) -> None:
    p = only(problems_for(tmp_path, edit('kind = "learned"', 'kind = "alibi"\noffset = 2')))
    assert p.key == "position.offset" and p.message == "unknown key"


def test_heads_must_divide_width(tmp_path: Path) -> None:
    p = only(problems_for(tmp_path, edit("n_heads = 4", "n_heads = 5")))
    assert p.key == "dims.n_heads" and "must divide d_model (64)" in p.message and "4" in p.allowed


def test_explicit_d_head_lifts_the_divisibility_rule(tmp_path: Path) -> None:
    path = tmp_path / "ok.toml"
    path.write_text(edit("n_heads = 4", "n_heads = 5\nd_head = 16"))
    assert load_spec(path).spec.dims.d_head == 16


def test_kv_heads_must_divide_heads(tmp_path: Path) -> None:
    p = only(problems_for(tmp_path, edit('kind = "multi-head"', 'kind = "grouped-query"\nn_kv_heads = 3')))
    assert p.key == "attention.n_kv_heads" and "must divide n_heads (4)" in p.message and p.allowed == ("1", "2", "4")


def test_grouped_query_needs_kv_heads(tmp_path: Path) -> None:
    p = only(problems_for(tmp_path, edit('kind = "multi-head"', 'kind = "grouped-query"')))
    assert p.key == "attention" and "needs n_kv_heads" in p.message


def test_kv_heads_rejected_for_multi_head(tmp_path: Path) -> None:
    p = only(problems_for(tmp_path, edit('kind = "multi-head"', 'kind = "multi-head"\nn_kv_heads = 2')))
    assert "only applies to grouped-query" in p.message


def test_top_k_at_most_experts(tmp_path: Path) -> None:
    p = only(problems_for(tmp_path, VALID + "\n[moe]\nn_experts = 2\ntop_k = 3\n"))
    assert p.key == "moe.top_k" and "exceeds the number of experts (2)" in p.message and p.allowed == ("1", "2")


def test_switch_router_is_top_one(tmp_path: Path) -> None:
    p = only(problems_for(tmp_path, VALID + '\n[moe]\nn_experts = 4\ntop_k = 2\nrouter = "switch"\n'))
    assert p.key == "moe" and "one expert" in p.message


def test_rotary_dims_must_be_even(tmp_path: Path) -> None:
    p = only(problems_for(tmp_path, edit('kind = "learned"', 'kind = "rotary"\nfraction = 0.3')))
    assert p.key == "position.fraction" and "even whole number" in p.message


def test_rotary_fraction_at_most_one(tmp_path: Path) -> None:
    p = only(problems_for(tmp_path, edit('kind = "learned"', 'kind = "rotary"\nfraction = 1.5')))
    assert p.key == "position.fraction" and "less than or equal to 1" in p.message


def test_window_shorter_than_context(tmp_path: Path) -> None:
    text = edit('kind = "multi-head"', 'kind = "multi-head"\nsparse = { kind = "locally-banded", window = 128 }')
    p = only(problems_for(tmp_path, text))
    assert p.key == "attention.sparse.window" and "shorter than the context (128)" in p.message and p.line == 14


def test_sparse_layers_past_the_last_layer(tmp_path: Path) -> None:
    text = edit(
        'kind = "multi-head"',
        'kind = "multi-head"\nsparse = { kind = "strided", stride = 8 }\nsparse_layers = { indices = [1, 9] }',
    )
    p = only(problems_for(tmp_path, text))
    assert p.key == "attention.sparse_layers.indices" and "[9]" in p.message


def test_layer_selector_needs_one_form(tmp_path: Path) -> None:
    p = only(problems_for(tmp_path, VALID + "\n[moe]\nn_experts = 4\ntop_k = 1\nlayers = { every = 2, first = 1 }\n"))
    assert p.key == "moe.layers" and "exactly one of" in p.message


def test_deepnorm_needs_post_norm(tmp_path: Path) -> None:
    p = only(problems_for(tmp_path, edit('[norm]\nkind = "layernorm"', '[norm]\nkind = "deepnorm"')))
    assert p.key == "norm.placement" and p.allowed == ("post",)


def test_parallel_block_needs_pre_norm(tmp_path: Path) -> None:
    text = edit('[norm]\nkind = "layernorm"', '[norm]\nkind = "layernorm"\nplacement = "post"') + '\n[block]\nwiring = "parallel"\n'
    p = only(problems_for(tmp_path, text))
    assert p.key == "block.wiring" and "pre-norm" in p.message


def test_encoder_decoder_needs_encoder(tmp_path: Path) -> None:
    p = only(problems_for(tmp_path, edit('structure = "decoder"', 'structure = "encoder-decoder"')))
    assert p.key == "encoder" and "needs an [encoder] table" in p.message


def test_parallel_encoder_decoder_is_rejected(tmp_path: Path) -> None:
    text = edit('structure = "decoder"', 'structure = "encoder-decoder"') + '\n[encoder]\nn_layers = 2\ncontext = 64\n[block]\nwiring = "parallel"\n'
    p = only(problems_for(tmp_path, text))
    assert p.key == "block.wiring" and "cross-attention" in p.message and p.allowed == ("sequential",)


def test_parallel_block_with_chunked_cross_attention_is_rejected(tmp_path: Path) -> None:
    """A parallel block has no point between attention and MLP where RETRO's cross-attention could sit."""
    text = VALID + (
        '\n[block]\nwiring = "parallel"\n[cross_attention]\nkind = "chunked"\nlayers = { indices = [1] }\n'
        "chunk_size = 16\nn_neighbours = 2\nneighbour_len = 24\nencoder_layers = 1\nencoder_d_model = 16\nencoder_n_heads = 2\n")
    p = only(problems_for(tmp_path, text))
    assert p.key == "block.wiring" and "chunked cross-attention" in p.message and p.allowed == ("sequential",)


def test_encoder_only_for_encoder_decoder(tmp_path: Path) -> None:
    p = only(problems_for(tmp_path, VALID + "\n[encoder]\nn_layers = 2\ncontext = 64\n"))
    assert p.key == "encoder" and "'decoder'" in p.message


def test_tokenizer_larger_than_embedding(tmp_path: Path) -> None:
    p = only(problems_for(tmp_path, VALID + "\n[tokenizer]\nvocab_size = 300\n"))
    assert p.key == "tokenizer.vocab_size" and "256 rows" in p.message


def test_name_must_be_a_slug(tmp_path: Path) -> None:
    p = only(problems_for(tmp_path, edit('name = "toy"', 'name = "Toy Model\\n"')))
    assert p.key == "model.name" and "slug" in p.message


def test_release_date_format(tmp_path: Path) -> None:
    p = only(problems_for(tmp_path, edit('name = "toy"', 'name = "toy"\nreleased = "May 2020"')))
    assert p.key == "model.released" and "YYYY-MM" in p.message


def test_infinite_token_count(tmp_path: Path) -> None:
    p = only(problems_for(tmp_path, VALID + "\n[training]\ntokens = inf\n"))
    assert p.key == "training.tokens" and "finite" in p.message


def test_chunk_size_divides_context(tmp_path: Path) -> None:
    text = VALID + (
        '\n[cross_attention]\nkind = "chunked"\nlayers = { every = 2 }\nchunk_size = 48\n'
        "encoder_d_model = 32\nencoder_n_heads = 4\n"
    )
    p = only(problems_for(tmp_path, text))
    assert p.key == "cross_attention.chunk_size" and "must divide the context (128)" in p.message


def test_extends_missing_target_suggests_near_name(tmp_path: Path) -> None:
    problems = problems_for(tmp_path, 'extends = "bsae"\n[model]\nname = "child"\n', extra={"base.toml": VALID})
    p = only(problems)
    assert p.key == "extends" and "no spec 'bsae'" in p.message and "did you mean 'base'" in p.hint and p.line == 1


def test_extends_cycle(tmp_path: Path) -> None:
    extra = {"b.toml": 'extends = "a"\n'}
    p = only(problems_for(tmp_path, 'extends = "b"\n', name="a.toml", extra=extra))
    assert p.key == "extends" and "cycle" in p.message and "a.toml -> " in p.message


def test_extends_bases_that_disagree(tmp_path: Path) -> None:
    extra = {"x.toml": VALID, "y.toml": edit("n_layers = 4", "n_layers = 8")}
    p = only(problems_for(tmp_path, 'extends = ["x", "y"]\n', extra=extra))
    assert p.key == "extends" and "dims.n_layers" in p.message and "write dims.n_layers" in p.hint


def test_child_resolves_disagreement_by_writing_the_key(tmp_path: Path) -> None:
    (tmp_path / "x.toml").write_text(VALID)
    (tmp_path / "y.toml").write_text(edit("n_layers = 4", "n_layers = 8"))
    (tmp_path / "c.toml").write_text('extends = ["x", "y"]\n[dims]\nn_layers = 6\n')
    assert load_spec(tmp_path / "c.toml").spec.dims.n_layers == 6


def test_inherited_mistake_points_at_the_base_file(tmp_path: Path) -> None:
    base = edit("n_heads = 4", "n_heads = 5")
    problems = problems_for(tmp_path, 'extends = "base"\n[model]\nname = "child"\n', extra={"base.toml": base})
    p = only(problems)
    assert p.file.endswith("base.toml") and p.key == "dims.n_heads" and p.line == 8


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "bin.toml"
    path.write_bytes(b"\xff\xfe\x00name")
    with pytest.raises(SpecError) as info:
        load_spec(path)
    assert "not UTF-8" in info.value.problems[0].message


def test_all_problems_reported_together(tmp_path: Path) -> None:
    text = VALID.replace("n_layers = 4", "n_layer = 4").replace('"gelu"', '"gelux"').replace("d_model = 64", 'd_model = "x"')
    keys = {p.key for p in problems_for(tmp_path, text)}
    # the misspelt n_layers is reported once, as an unknown key, not again as missing
    assert keys == {"dims.n_layer", "mlp.activation", "dims.d_model"}


def test_render_has_file_line_key_and_allowed(tmp_path: Path) -> None:
    p = only(problems_for(tmp_path, edit('activation = "gelu"', 'activation = "tanh"')))
    text = p.render()
    assert text.startswith(f"{p.file}:{p.line}:") and "mlp.activation" in text and "allowed: relu, gelu" in text
