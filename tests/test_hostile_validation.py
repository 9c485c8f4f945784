"""Validation a new user can work with: every problem in one run (schema and cross-field rules together),
suggestions across case and synonyms, identity that `extends` never copies silently, the 2% published-count
rule, and symlink loops as one-line errors."""

from __future__ import annotations

import textwrap
from enum import StrEnum
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

from taxonc.compiler.cli import app
from taxonc.compiler.errors import Problem, SpecError
from taxonc.compiler.spec import kinds, load_spec
from taxonc.compiler.spec.kinds import CHOICE_SYNONYMS, suggest_choice

from .conftest import SPECS
from .test_spec_errors import VALID, edit, problems_for

runner = CliRunner()


def _cli(args: list[str], code: int = 1) -> list[str]:
    """Run the CLI; its exit code must be `code`, with no traceback. Returns the non-empty output lines."""
    result = runner.invoke(app, args)
    assert result.exit_code == code, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    return [line for line in result.output.splitlines() if line.strip()]


def _by_key(problems: list[Problem]) -> dict[str, Problem]:
    return {p.key: p for p in problems}


# ----------------------------------------------------------------------------- all at once

def test_a_schema_error_does_not_hide_a_rule_error_in_another_section(tmp_path: Path) -> None:
    text = edit('activation = "gelu"', 'activation = "gelux"').replace("n_heads = 4", "n_heads = 5")
    found = _by_key(problems_for(tmp_path, text))
    assert set(found) == {"mlp.activation", "dims.n_heads"}
    assert found["dims.n_heads"].line == 8 and "must divide d_model (64)" in found["dims.n_heads"].message
    assert found["mlp.activation"].line == 22


def test_an_unknown_key_does_not_stop_its_sections_rules(tmp_path: Path) -> None:
    text = edit("n_heads = 4", "n_heads = 5\nheads_per_group = 2")
    found = _by_key(problems_for(tmp_path, text))
    assert set(found) == {"dims.heads_per_group", "dims.n_heads"}


def test_a_missing_required_key_still_lets_other_sections_rules_run(tmp_path: Path) -> None:
    text = edit("vocab_size = 256\n", "").replace('[norm]\nkind = "layernorm"', '[norm]\nkind = "deepnorm"')
    found = _by_key(problems_for(tmp_path, text))
    assert set(found) == {"dims.vocab_size", "norm.placement"}


def test_rules_that_read_a_rejected_section_wait_for_the_fix(tmp_path: Path) -> None:
    """A bad attention.kind: the kv-heads rule (which reads attention) is skipped, not run on a default."""
    text = edit('kind = "multi-head"', 'kind = "gqa"\nn_kv_heads = 3')
    found = _by_key(problems_for(tmp_path, text))
    assert set(found) == {"attention.kind"}, [p.render() for p in found.values()]


def test_validate_prints_every_problem_in_one_run(tmp_path: Path) -> None:
    spec = tmp_path / "many.toml"
    spec.write_text(edit('activation = "gelu"', 'activation = "SwiGLU"').replace("n_heads = 4", "n_heads = 5")
                    .replace('kind = "learned"', 'kind = "rope"'))
    lines = _cli(["validate", str(spec)])
    problems = [line.strip() for line in lines if line.startswith("  ")]
    assert len(problems) == 3, lines
    assert all(line.startswith("many.toml:") or "/many.toml:" in line.split(": ")[0] for line in problems)
    text = "\n".join(problems)
    assert "did you mean 'swiglu'" in text and "did you mean 'rotary'" in text and "must divide d_model" in text


# ----------------------------------------------------------------------------- suggestions

SUGGESTIONS = [
    ('[norm]\nkind = "layernorm"', '[norm]\nkind = "RMSNorm"', "norm.kind", "rmsnorm"),
    ('[norm]\nkind = "layernorm"', '[norm]\nkind = "layer_norm"', "norm.kind", "layernorm"),
    ('[norm]\nkind = "layernorm"', '[norm]\nkind = "layernorm"\nplacement = "post-ln"', "norm.placement", "post"),
    ('kind = "learned"', 'kind = "rope"', "position.kind", "rotary"),
    ('kind = "learned"', 'kind = "RoPE"', "position.kind", "rotary"),
    ('kind = "multi-head"', 'kind = "gqa"', "attention.kind", "grouped-query"),
    ('kind = "multi-head"', 'kind = "mqa"', "attention.kind", "multi-query"),
    ('kind = "multi-head"', 'kind = "MHA"', "attention.kind", "multi-head"),
    ('kind = "multi-head"', 'kind = "grouped_query"', "attention.kind", "grouped-query"),
    ('activation = "gelu"', 'activation = "swish-glu"', "mlp.activation", "swiglu"),
    ('activation = "gelu"', 'activation = "SwiGLU"', "mlp.activation", "swiglu"),
    ('structure = "decoder"', 'structure = "decoder-only"', "model.structure", "decoder"),
]


@pytest.mark.parametrize(("old", "new", "key", "meant"), SUGGESTIONS, ids=[s[1].split("= ")[-1] for s in SUGGESTIONS])
def test_a_choice_is_suggested_across_case_and_synonyms(tmp_path: Path, old: str, new: str, key: str, meant: str) -> None:
    problem = _by_key(problems_for(tmp_path, edit(old, new)))[key]
    assert problem.hint == f"did you mean {meant!r}?", problem.render()


@pytest.mark.parametrize(("old", "new", "meant"), [
    ("n_layers = 4", "num_hidden_layers = 4", "dims.n_layers"),
    ("d_model = 64", "hidden_size = 64", "dims.d_model"),
    ("n_heads = 4", "N_Heads = 4", "dims.n_heads"),
    ("context = 128", "block_size = 128", "dims.context"),
    ('[norm]\nkind = "layernorm"', '[norm]\nkind = "layernorm"\nrms_norm_eps = 1e-6', "norm.eps"),
])
def test_a_key_from_another_codebase_is_suggested(tmp_path: Path, old: str, new: str, meant: str) -> None:
    """HF config.json and nanoGPT names: one problem, the unknown key with our name, not also 'missing'."""
    (problem,) = problems_for(tmp_path, edit(old, new))
    assert problem.message == "unknown key" and problem.hint == f"did you mean {meant.rsplit('.', 1)[1]!r}?"


def test_every_key_synonym_names_a_real_key() -> None:
    from pydantic import BaseModel

    from taxonc.compiler.spec import model
    from taxonc.compiler.spec.schema_walk import KEY_SYNONYMS

    keys = {name for cls in vars(model).values() if isinstance(cls, type) and issubclass(cls, BaseModel)
            for name in cls.model_fields}
    assert set(KEY_SYNONYMS.values()) <= keys
    assert not set(KEY_SYNONYMS) & keys, "a synonym that is itself a key would shadow it"


def test_every_synonym_names_a_real_choice() -> None:
    values = {m.value for enum in vars(kinds).values() if isinstance(enum, type) and issubclass(enum, StrEnum) and enum is not StrEnum
              for m in enum}
    assert {str(v) for v in CHOICE_SYNONYMS.values()} <= values
    assert not set(CHOICE_SYNONYMS) & values, "a synonym that is itself a valid choice would shadow it"


CHOICES = [(tuple(m.value for m in enum), m.value) for enum in (kinds.AttentionKind, kinds.PositionKind, kinds.NormKind,
                                                                 kinds.Activation, kinds.Structure, kinds.Router)
           for m in enum]


@given(st.sampled_from(CHOICES), st.randoms(use_true_random=False))
def test_case_and_separators_never_change_the_suggestion(choice: tuple[tuple[str, ...], str], rnd) -> None:
    allowed, value = choice
    mangled = "".join(c.upper() if rnd.random() < 0.5 else c for c in value).replace("-", rnd.choice(["-", "_", " ", ""]))
    assert suggest_choice(mangled, allowed) == value


# ----------------------------------------------------------------------------- identity and extends

BASE = VALID.replace('name = "toy"', 'name = "toy"\ntitle = "Toy 1B"\norganization = "Toy Lab"\nreleased = "2021-01"\n'
                     'paper = "https://example.org/toy"') + (
    '\n[published]\nparams = 1e9\nsource = "Toy paper, Table 1"\ndeviation = "the toy rounds"\n'
    "\n[training]\ntokens = 300e9\n")


def _child(tmp_path: Path, body: str, base: str = BASE) -> Path:
    (tmp_path / "base.toml").write_text(base)
    child = tmp_path / "child.toml"
    child.write_text('extends = "base"\n' + textwrap.dedent(body))
    return child


def _problems(path: Path) -> list[Problem]:
    with pytest.raises(SpecError) as info:
        load_spec(path)
    return info.value.problems


def test_a_spec_extending_another_model_must_not_inherit_its_identity_silently(tmp_path: Path) -> None:
    child = _child(tmp_path, '[model]\nname = "child"\ntitle = "Child"\n')
    found = _by_key(_problems(child))
    assert set(found) == {"model.paper", "model.organization", "model.released", "published", "training.tokens"}
    paper = found["model.paper"]
    assert paper.file.endswith("child.toml") and paper.line == 2 and "base.toml is another model" in paper.message
    assert "inherits" in paper.hint


def test_inherits_says_so_explicitly(tmp_path: Path) -> None:
    child = _child(tmp_path, 'inherits = ["model.paper", "model.organization", "model.released", "training.tokens"]\n'
                             '[model]\nname = "child"\ntitle = "Child"\n[published]\nparams = 2e9\nsource = "Child card"\n')
    resolved = load_spec(child)
    assert resolved.spec.model.paper == "https://example.org/toy" and resolved.spec.training.tokens == 300e9
    assert resolved.origins["model.paper"].how == "inherited"


def test_a_written_published_table_replaces_the_bases_whole(tmp_path: Path) -> None:
    """A new count never keeps the base's source or deviation note."""
    child = _child(tmp_path, 'inherits = ["model.paper", "model.organization", "model.released", "training.tokens"]\n'
                             '[model]\nname = "child"\ntitle = "Child"\n[published]\nparams = 2e9\n')
    published = load_spec(child).spec.published
    assert published.params == 2e9 and published.source == "" and published.deviation == ""


def test_inherits_names_identity_fields_only(tmp_path: Path) -> None:
    child = _child(tmp_path, 'inherits = ["model.papr", "published", "model.title", "model.organization", '
                             '"model.released", "training.tokens"]\n[model]\nname = "child"\n')
    found = _problems(child)
    assert [p.key for p in found] == ["inherits", "model.paper"]
    assert "'model.papr' is not an identity field" in found[0].message and found[0].hint == "did you mean 'model.paper'?"
    assert found[0].line == 2 and "published" in found[0].allowed


def test_a_field_both_written_and_inherited_is_refused(tmp_path: Path) -> None:
    child = _child(tmp_path, 'inherits = ["model.title", "model.paper", "model.organization", "model.released", '
                             '"published", "training.tokens"]\n[model]\nname = "child"\ntitle = "Child"\n')
    (problem,) = _problems(child)
    assert problem.key == "inherits" and "'model.title' is both written here and listed as inherited" in problem.message


def test_recipes_carry_no_identity(tmp_path: Path) -> None:
    recipe = "abstract = true\n" + BASE.replace('name = "toy"\n', "")
    child = _child(tmp_path, '[model]\nname = "child"\n', base=recipe)
    assert load_spec(child).spec.model.paper == "https://example.org/toy"
    child.write_text('extends = "base"\ninherits = ["model.paper"]\n[model]\nname = "child"\n')
    (problem,) = _problems(child)
    assert problem.key == "inherits" and "only a spec that extends a model spec" in problem.message


def test_identity_problems_come_with_schema_and_rule_problems(tmp_path: Path) -> None:
    child = _child(tmp_path, 'inherits = ["model.paper", "model.organization", "model.released", "training.tokens", '
                             '"published"]\n[model]\nname = "child"\n[dims]\nn_heads = 5\n[mlp]\nactivation = "gelux"\n')
    assert {p.key for p in _problems(child)} == {"model.title", "dims.n_heads", "mlp.activation"}


def test_identity_problems_come_with_loader_problems(tmp_path: Path) -> None:
    child = _child(tmp_path, '[model]\nname = "child"\ntitle = "Child"\n')
    child.write_text(child.read_text().replace('extends = "base"', 'extends = ["base", "bsae2"]'))
    keys = [p.key for p in _problems(child)]
    assert keys[0] == "extends" and {"model.paper", "published", "training.tokens"} <= set(keys)


def test_validate_names_the_identity_problem_with_its_line(tmp_path: Path) -> None:
    child = _child(tmp_path, 'inherits = ["model.paper", "model.organization", "model.released", "published"]\n'
                             '[model]\nname = "child"\ntitle = "Child"\n\n[training]\nlr = 1e-4\n')
    lines = _cli(["validate", str(child)])
    assert any("child.toml:7:1: training.tokens: not written" in line for line in lines), lines


# ----------------------------------------------------------------------------- the 2% rule

@pytest.mark.parametrize(("published", "deviation", "code"), [
    ("1e9", "", 1),                      # the toy has about 0.2M parameters: far more than 2% off
    ("1e9", "a stated reason", 0),
    (None, "", 0),                       # no published count, nothing to compare
])
def test_a_count_more_than_two_percent_off_needs_a_deviation(tmp_path: Path, published: str | None, deviation: str,
                                                            code: int) -> None:
    spec = tmp_path / "counted.toml"
    table = "" if published is None else f"\n[published]\nparams = {published}\nsource = \"x\"\n"
    if deviation:
        table += f'deviation = "{deviation}"\n'
    spec.write_text(VALID + table)
    lines = _cli(["validate", str(spec)], code=code)
    if code:
        problem = next(line for line in lines if "published.params" in line)
        assert f"counted.toml:{VALID.count(chr(10)) + 3}:1: published.params:" in problem
        assert "published.deviation" in problem and "more than 2%" in problem


def test_a_count_within_two_percent_needs_no_deviation(tmp_path: Path) -> None:
    from taxonc.compiler.analysis import count_params

    spec = tmp_path / "counted.toml"
    spec.write_text(VALID)
    total = count_params(load_spec(spec).spec).total
    spec.write_text(VALID + f'\n[published]\nparams = {total * 1.019:.0f}\nsource = "x"\n')
    _cli(["validate", str(spec)], code=0)
    spec.write_text(VALID + f'\n[published]\nparams = {total * 1.03:.0f}\nsource = "x"\n')
    _cli(["validate", str(spec)], code=1)


def test_every_shipped_spec_passes_validate() -> None:
    lines = _cli(["validate", str(SPECS), str(SPECS.parent / "examples" / "llama2-70b.toml")], code=0)
    assert all(line.startswith("ok") for line in lines)


# ----------------------------------------------------------------------------- symlink loops

def _loop(folder: Path, name: str = "loop.toml") -> Path:
    a, b = folder / name, folder / ("other-" + name)
    a.symlink_to(b.name)
    b.symlink_to(a.name)
    return a


def test_a_symlink_loop_as_the_spec_path_is_a_one_line_error(tmp_path: Path) -> None:
    loop = _loop(tmp_path)
    for command in (["validate"], ["params"], ["show"], ["compile", "--scale", "tiny", "-o", str(tmp_path / "out")]):
        lines = _cli([*command, str(loop)])
        problems = [line for line in lines if "symlink loop" in line]
        assert len(problems) == 1 and "loop.toml" in problems[0], lines
    assert not (tmp_path / "out").exists()


def test_a_symlink_loop_in_extends_names_the_key_and_line(tmp_path: Path) -> None:
    _loop(tmp_path, "base.toml")
    child = tmp_path / "child.toml"
    child.write_text('extends = "base"\n[model]\nname = "child"\n')
    (problem,) = _problems(child)
    assert problem.key == "extends" and problem.line == 1 and "'base' is a symlink loop" in problem.message


def test_a_symlink_loop_in_a_searched_folder_is_reported_with_the_rest(tmp_path: Path) -> None:
    (tmp_path / "good.toml").write_text(VALID)
    _loop(tmp_path)
    lines = _cli(["validate", str(tmp_path)])
    assert any(line.startswith("ok") for line in lines)
    assert sum("symlink loop" in line for line in lines) == 2  # both names of the loop end in .toml
