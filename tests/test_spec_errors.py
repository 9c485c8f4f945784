"""Validation that teaches: each mistake yields file, dotted key, line and allowed values."""

from __future__ import annotations

import textwrap
from dataclasses import dataclass, field
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


@dataclass(frozen=True)
class Case:
    """A spec with one mistake and what its one Problem must say; unset fields are not checked."""

    text: str
    key: str | None = None
    says: tuple[str, ...] = ()  # fragments of the message
    message: str | None = None  # the whole message
    hint: tuple[str, ...] = ()  # fragments of the hint
    allowed: tuple[str, ...] | None = None  # the allowed values, in order
    allowed_set: frozenset[str] | None = None  # the allowed values, in any order
    allowed_has: tuple[str, ...] = ()  # some of the allowed values
    line: int | None = None
    file_suffix: str | None = None
    name: str = "spec.toml"
    extra: dict[str, str] = field(default_factory=dict)  # other spec files next to it


def _chunked(head: str, *tail: str) -> str:
    return VALID + '\n' + head + '[cross_attention]\nkind = "chunked"\n' + "".join(tail)


_ENCODER_DECODER = edit('structure = "decoder"', 'structure = "encoder-decoder"') + "\n[encoder]\nn_layers = 2\ncontext = 64\n"

CASES = {
    "unknown_key_suggests_the_right_one": Case(
        edit("n_layers = 4", "n_layer = 4"), "dims.n_layer", message="unknown key",
        hint=("did you mean 'n_layers'",), allowed_has=("n_layers",), line=6),
    "unknown_table": Case(
        VALID + "\n[atention]\nkind = 'multi-head'\n", "atention", hint=("did you mean 'attention'",)),
    "wrong_type_string_for_int": Case(
        edit("d_model = 64", 'd_model = "64"'), "dims.d_model", says=("integer", "'64'"), line=7),
    "float_where_int_required": Case(edit("n_heads = 4", "n_heads = 4.5"), "dims.n_heads", says=("integer",)),
    "negative_dimension": Case(edit("n_layers = 4", "n_layers = -2"), "dims.n_layers", says=("greater than 0",)),
    "bad_choice_lists_allowed_values": Case(
        edit('activation = "gelu"', 'activation = "swiglue"'), "mlp.activation",
        allowed_set=frozenset({"relu", "gelu", "gelu-tanh", "geglu", "geglu-tanh", "swiglu", "solu"}),
        hint=("did you mean 'swiglu'",)),
    "bad_kind_of_union": Case(
        edit('kind = "learned"', 'kind = "rope"'), "position.kind", allowed_has=("rotary", "alibi")),
    "missing_required_key": Case(edit("vocab_size = 256\n", ""), "dims.vocab_size", says=("missing",)),
    "missing_kind_in_union": Case(edit('[position]\nkind = "learned"', "[position]\noffset = 2"), "position.kind"),
    "key_of_another_variant": Case(
        edit('kind = "learned"', 'kind = "alibi"\noffset = 2'), "position.offset", message="unknown key"),
    "heads_must_divide_width": Case(
        edit("n_heads = 4", "n_heads = 5"), "dims.n_heads", says=("must divide d_model (64)",), allowed_has=("4",)),
    "kv_heads_must_divide_heads": Case(
        edit('kind = "multi-head"', 'kind = "grouped-query"\nn_kv_heads = 3'), "attention.n_kv_heads",
        says=("must divide n_heads (4)",), allowed=("1", "2", "4")),
    "grouped_query_needs_kv_heads": Case(
        edit('kind = "multi-head"', 'kind = "grouped-query"'), "attention", says=("needs n_kv_heads",)),
    "kv_heads_rejected_for_multi_head": Case(
        edit('kind = "multi-head"', 'kind = "multi-head"\nn_kv_heads = 2'), says=("only applies to grouped-query",)),
    "top_k_at_most_experts": Case(
        VALID + "\n[moe]\nn_experts = 2\ntop_k = 3\n", "moe.top_k", says=("exceeds the number of experts (2)",),
        allowed=("1", "2")),
    "switch_router_is_top_one": Case(
        VALID + '\n[moe]\nn_experts = 4\ntop_k = 2\nrouter = "switch"\n', "moe", says=("one expert",)),
    "rotary_dims_must_be_even": Case(
        edit('kind = "learned"', 'kind = "rotary"\nfraction = 0.3'), "position.fraction", says=("even whole number",)),
    "rotary_fraction_at_most_one": Case(
        edit('kind = "learned"', 'kind = "rotary"\nfraction = 1.5'), "position.fraction",
        says=("less than or equal to 1",)),
    "window_shorter_than_context": Case(
        edit('kind = "multi-head"', 'kind = "multi-head"\nsparse = { kind = "locally-banded", window = 128 }'),
        "attention.sparse.window", says=("shorter than the context (128)",), line=14),
    "sparse_layers_past_the_last_layer": Case(
        edit('kind = "multi-head"',
             'kind = "multi-head"\nsparse = { kind = "strided", stride = 8 }\nsparse_layers = { indices = [1, 9] }'),
        "attention.sparse_layers.indices", says=("[9]",)),
    "layer_selector_needs_one_form": Case(
        VALID + "\n[moe]\nn_experts = 4\ntop_k = 1\nlayers = { every = 2, first = 1 }\n", "moe.layers",
        says=("exactly one of",)),
    "deepnorm_needs_post_norm": Case(
        edit('[norm]\nkind = "layernorm"', '[norm]\nkind = "deepnorm"'), "norm.placement", allowed=("post",)),
    "parallel_block_needs_pre_norm": Case(
        edit('[norm]\nkind = "layernorm"', '[norm]\nkind = "layernorm"\nplacement = "post"')
        + '\n[block]\nwiring = "parallel"\n', "block.wiring", says=("pre-norm",)),
    "sublayer_output_norm_is_not_for_parallel_blocks": Case(
        edit('[norm]\nkind = "layernorm"', '[norm]\nkind = "layernorm"\nplacement = "sublayer-output"')
        + '\n[block]\nwiring = "parallel"\n', "block.wiring", says=("pre-norm",), allowed=("sequential",)),
    "norm_placement_synonym_suggests_sublayer_output": Case(
        edit('[norm]\nkind = "layernorm"', '[norm]\nkind = "layernorm"\nplacement = "reordered"'), "norm.placement",
        hint=("did you mean 'sublayer-output'",), allowed_set=frozenset({"pre", "post", "sublayer-output"})),
    "qk_norm_misspelt": Case(
        edit('kind = "multi-head"', 'kind = "multi-head"\nqk_norm = "per_head"'), "attention.qk_norm",
        hint=("did you mean 'per-head'",), allowed_set=frozenset({"none", "per-head", "full-width"})),
    "qk_norm_is_not_for_deepnorm": Case(
        edit('kind = "multi-head"', 'kind = "multi-head"\nqk_norm = "per-head"').replace(
            '[norm]\nkind = "layernorm"', '[norm]\nkind = "deepnorm"\nplacement = "post"'),
        "attention.qk_norm", says=("DeepNorm",), allowed=("none",)),
    "qk_norm_is_for_self_attention_only": Case(
        _ENCODER_DECODER.replace('kind = "multi-head"', 'kind = "multi-head"\nqk_norm = "full-width"'),
        "attention.qk_norm", says=("encoder-decoder", "cross-attends"), allowed=("none",)),
    "encoder_decoder_needs_encoder": Case(
        edit('structure = "decoder"', 'structure = "encoder-decoder"'), "encoder", says=("needs an [encoder] table",)),
    "parallel_encoder_decoder_is_rejected": Case(
        edit('structure = "decoder"', 'structure = "encoder-decoder"')
        + '\n[encoder]\nn_layers = 2\ncontext = 64\n[block]\nwiring = "parallel"\n',
        "block.wiring", says=("cross-attention",), allowed=("sequential",)),
    # a parallel block has no point between attention and MLP where RETRO's cross-attention could sit
    "parallel_block_with_chunked_cross_attention_is_rejected": Case(
        _chunked('[block]\nwiring = "parallel"\n', "layers = { indices = [1] }\nchunk_size = 16\nn_neighbours = 2\n",
                 "neighbour_len = 24\nencoder_layers = 1\nencoder_d_model = 16\nencoder_n_heads = 2\n"),
        "block.wiring", says=("chunked cross-attention",), allowed=("sequential",)),
    "encoder_only_for_encoder_decoder": Case(
        VALID + "\n[encoder]\nn_layers = 2\ncontext = 64\n", "encoder", says=("'decoder'",)),
    "decoder_start_only_for_encoder_decoder": Case(
        VALID + "\n[tokenizer]\ndecoder_start_id = 0\n", "tokenizer.decoder_start_id",
        says=("only an encoder-decoder", "'decoder'"), allowed=("encoder-decoder",)),
    "decoder_start_inside_the_embedding": Case(
        _ENCODER_DECODER + "\n[tokenizer]\ndecoder_start_id = 256\n", "tokenizer.decoder_start_id",
        says=("256", "embedding's 256 rows"), allowed=("0..255",)),
    "decoder_start_not_negative": Case(
        _ENCODER_DECODER + "\n[tokenizer]\ndecoder_start_id = -1\n", "tokenizer.decoder_start_id",
        says=("greater than or equal to 0",)),
    "tokenizer_larger_than_embedding": Case(
        VALID + "\n[tokenizer]\nvocab_size = 300\n", "tokenizer.vocab_size", says=("256 rows",)),
    "name_must_be_a_slug": Case(edit('name = "toy"', 'name = "Toy Model\\n"'), "model.name", says=("slug",)),
    "release_date_format": Case(
        edit('name = "toy"', 'name = "toy"\nreleased = "May 2020"'), "model.released", says=("YYYY-MM",)),
    "infinite_token_count": Case(VALID + "\n[training]\ntokens = inf\n", "training.tokens", says=("finite",)),
    "chunk_size_divides_context": Case(
        _chunked("", "layers = { every = 2 }\nchunk_size = 48\nencoder_d_model = 32\nencoder_n_heads = 4\n"),
        "cross_attention.chunk_size", says=("must divide the context (128)",)),
    "extends_missing_target_suggests_near_name": Case(
        'extends = "bsae"\n[model]\nname = "child"\n', "extends", says=("no spec 'bsae'",),
        hint=("did you mean 'base'",), line=1, extra={"base.toml": VALID}),
    "extends_cycle": Case(
        'extends = "b"\n', "extends", says=("cycle", "a.toml -> "), name="a.toml", extra={"b.toml": 'extends = "a"\n'}),
    "extends_bases_that_disagree": Case(
        'extends = ["x", "y"]\n', "extends", says=("dims.n_layers",), hint=("write dims.n_layers",),
        extra={"x.toml": VALID, "y.toml": edit("n_layers = 4", "n_layers = 8")}),
    "inherited_mistake_points_at_the_base_file": Case(
        'extends = "base"\n[model]\nname = "child"\n', "dims.n_heads", line=8, file_suffix="base.toml",
        extra={"base.toml": edit("n_heads = 4", "n_heads = 5")}),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_one_mistake_one_problem(case: Case, tmp_path: Path) -> None:
    p = only(problems_for(tmp_path, case.text, name=case.name, extra=case.extra))
    assert case.key is None or p.key == case.key
    assert all(s in p.message for s in case.says), p.message
    assert case.message is None or p.message == case.message
    assert all(s in p.hint for s in case.hint), p.hint
    assert case.allowed is None or p.allowed == case.allowed
    assert case.allowed_set is None or set(p.allowed) == case.allowed_set
    assert all(a in p.allowed for a in case.allowed_has), p.allowed
    assert case.line is None or p.line == case.line
    assert case.file_suffix is None or p.file.endswith(case.file_suffix)


@pytest.mark.parametrize("start", [0, 1, 255])
def test_decoder_start_inside_the_embedding_loads(start: int, tmp_path: Path) -> None:
    path = tmp_path / "ok.toml"
    path.write_text(_ENCODER_DECODER + f"\n[tokenizer]\ndecoder_start_id = {start}\n")
    assert load_spec(path).spec.tokenizer.decoder_start_id == start


def test_explicit_d_head_lifts_the_divisibility_rule(tmp_path: Path) -> None:
    path = tmp_path / "ok.toml"
    path.write_text(edit("n_heads = 4", "n_heads = 5\nd_head = 16"))
    assert load_spec(path).spec.dims.d_head == 16


def test_child_resolves_disagreement_by_writing_the_key(tmp_path: Path) -> None:
    (tmp_path / "x.toml").write_text(VALID)
    (tmp_path / "y.toml").write_text(edit("n_layers = 4", "n_layers = 8"))
    (tmp_path / "c.toml").write_text('extends = ["x", "y"]\n[dims]\nn_layers = 6\n')
    assert load_spec(tmp_path / "c.toml").spec.dims.n_layers == 6


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
