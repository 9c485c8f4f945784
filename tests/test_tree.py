"""`taxonc tree`: the family tree of a spec folder, its edge labels, its DOT text and its errors."""

from __future__ import annotations

import os
import shutil
import stat
import tomllib
from pathlib import Path

import networkx as nx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from taxonc.compiler import tree as tree_module
from taxonc.compiler.cli import app
from taxonc.compiler.diff import AXES, SpecDiff, diff_specs
from taxonc.compiler.spec import is_abstract, load_spec
from taxonc.compiler.tree import family_tree, to_dot

from .conftest import ROOT, SPECS

runner = CliRunner()
AXIS_NAMES = {axis for axis, _ in AXES}


@pytest.fixture(scope="module")
def specs_tree() -> nx.DiGraph:
    return family_tree(SPECS)


def _small_folder(tmp_path: Path) -> Path:
    """recipes/gpt, gpt3, gpt3-13b (extends gpt3), codex (extends and derives from gpt3-13b), and
    gpt3-tuned: a copy of gpt3 that extends only the recipe but names gpt3 as its lineage base."""
    folder = tmp_path / "specs"
    (folder / "recipes").mkdir(parents=True)
    for name in ("recipes/gpt", "gpt3", "gpt3-13b", "codex"):
        shutil.copy(SPECS / f"{name}.toml", folder / f"{name}.toml")
    tuned = (SPECS / "gpt3.toml").read_text().replace('name = "gpt3"', 'name = "gpt3-tuned"', 1)
    tuned += '\n[lineage]\nbase = "gpt3"\nstages = [{ method = "sft" }]\n'
    (folder / "gpt3-tuned.toml").write_text(tuned)
    return folder


def test_every_model_spec_is_a_node_and_recipes_are_not(specs_tree: nx.DiGraph) -> None:
    models = {p.relative_to(SPECS).with_suffix("").as_posix() for p in SPECS.rglob("*.toml") if not is_abstract(p)}
    assert set(specs_tree.nodes) == models
    assert "recipes/gpt" not in specs_tree


def test_every_extends_of_a_model_spec_is_an_edge(specs_tree: nx.DiGraph) -> None:
    expected = set()
    for path in SPECS.glob("*.toml"):
        targets = tomllib.loads(path.read_text()).get("extends", [])
        for target in [targets] if isinstance(targets, str) else targets:
            if not is_abstract(SPECS / f"{target}.toml"):
                expected.add((target, path.stem))
    assert expected, "the specs folder has model specs that extend model specs"
    extends = {(a, b) for a, b, e in specs_tree.edges(data=True) if "extends" in e["relations"]}
    assert extends == expected


def test_lineage_base_is_an_edge(specs_tree: nx.DiGraph) -> None:
    assert specs_tree.edges["gpt3", "instructgpt"]["relations"] == ("extends", "lineage")
    assert specs_tree.edges["gpt3", "instructgpt"]["style"] == "bold"
    assert not any(n == "gpt4" for _, n in specs_tree.in_edges("gpt4")), "gpt4's base is no spec: no edge"


def test_node_label_is_name_and_release(specs_tree: nx.DiGraph) -> None:
    assert specs_tree.nodes["gpt3"]["label"] == "gpt3\n2020-05"


def test_labels_are_the_diffs_headline_axes(specs_tree: nx.DiGraph) -> None:
    for a, b, e in specs_tree.edges(data=True):
        summary = diff_specs(load_spec(SPECS / f"{a}.toml"), load_spec(SPECS / f"{b}.toml"), graph=False).summary
        for line in e["label"].split("\n"):
            if line.startswith(("post-training: ", "same architecture", "+")):
                continue
            axis, phrase = line.split(": ", 1)
            assert axis in AXIS_NAMES, (a, b, line)
            joined = "; ".join(p for ax, p in summary if ax == axis)
            assert joined.startswith(phrase.removesuffix("…")), (a, b, line)
    size = specs_tree.edges["gpt3", "gpt3-350m"]["label"].split("\n")
    assert size[0].startswith("dims: n_layers 96 → 24; d_model 12288 → 1024"), "the written change leads"
    assert len(size) <= tree_module.MAX_AXES + 1


def test_labels_change_when_the_diff_does(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The label is the diff's words, not a second reading of the specs: a different diff, a different label."""
    folder = _small_folder(tmp_path)
    monkeypatch.setattr(tree_module, "diff_specs",
                        lambda a, b, graph: SpecDiff(a.path, b.path, summary=[("moe", "dense → 8 experts")]))
    graph = family_tree(folder)
    assert graph.edges["gpt3", "gpt3-13b"]["label"] == "moe: dense → 8 experts"


def test_small_folder_structure(tmp_path: Path) -> None:
    graph = family_tree(_small_folder(tmp_path))
    assert sorted(graph.nodes) == ["codex", "gpt3", "gpt3-13b", "gpt3-tuned"]
    relations = {(a, b): e["relations"] for a, b, e in graph.edges(data=True)}
    assert relations == {("gpt3", "gpt3-13b"): ("extends",), ("gpt3-13b", "codex"): ("extends", "lineage"),
                         ("gpt3", "gpt3-tuned"): ("lineage",)}
    tuned = graph.edges["gpt3", "gpt3-tuned"]
    assert tuned["style"] == "dashed"
    assert tuned["label"].split("\n")[0] == "post-training: sft"
    assert "same architecture" not in graph.edges["gpt3", "gpt3-13b"]["label"]


def test_dot_is_deterministic_and_the_committed_tree_is_current(specs_tree: nx.DiGraph) -> None:
    dot = to_dot(specs_tree)
    assert dot == to_dot(family_tree(SPECS))
    assert (ROOT / "docs" / "tree.dot").read_text() == dot, "stale: run taxonc docs"
    assert dot.count(" -> ") == specs_tree.number_of_edges()


@settings(max_examples=25, deadline=None, derandomize=True, database=None)
@given(st.lists(st.tuples(st.sampled_from("abcdef"), st.sampled_from("abcdef")), min_size=1, max_size=12), st.randoms())
def test_dot_does_not_depend_on_insertion_order(edges: list[tuple[str, str]], rnd) -> None:
    def build(order: list[tuple[str, str]]) -> nx.DiGraph:
        g = nx.DiGraph()
        for a, b in order:
            g.add_node(a, label=f'{a} "quoted"\n2020')
            g.add_node(b, label=f'{b} "quoted"\n2020')
            g.add_edge(a, b, label=f"{a}→{b}", style="solid")
        return g

    shuffled = list(edges)
    rnd.shuffle(shuffled)
    assert to_dot(build(edges)) == to_dot(build(shuffled))
    assert '\\"quoted\\"\\n2020' in to_dot(build(edges))


def test_cli_writes_dot_and_prints_it(tmp_path: Path) -> None:
    folder = _small_folder(tmp_path)
    out = tmp_path / "tree.dot"
    result = runner.invoke(app, ["tree", str(folder), "-o", str(out)])
    assert result.exit_code == 0, result.output
    printed = runner.invoke(app, ["tree", str(folder)])
    assert printed.exit_code == 0
    assert printed.stdout == out.read_text() == to_dot(family_tree(folder))


def _one_line_error(result, code: int, *words: str) -> None:
    assert result.exit_code == code, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    for word in words:
        assert word in result.stderr


def test_cli_errors(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    _one_line_error(runner.invoke(app, ["tree", str(empty)]), 1, str(empty), "no spec files")
    recipes = tmp_path / "recipes"
    recipes.mkdir()
    shutil.copy(SPECS / "recipes" / "gpt.toml", recipes / "gpt.toml")
    _one_line_error(runner.invoke(app, ["tree", str(recipes)]), 1, "only recipes")
    _one_line_error(runner.invoke(app, ["tree", str(tmp_path / "nowhere")]), 1, "not a folder")
    folder = _small_folder(tmp_path)
    _one_line_error(runner.invoke(app, ["tree", str(folder), "-o", str(tmp_path / "t.jpg")]), 2, "'.jpg'", ".dot, .svg, .png")
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    _one_line_error(runner.invoke(app, ["tree", str(folder), "-o", str(blocker / "t.dot")]), 1, "cannot write here")
    (folder / "gpt3-13b.toml").write_text((folder / "gpt3-13b.toml").read_text() + "\n[dims]\nn_layrs = 3\n")
    result = runner.invoke(app, ["tree", str(folder)])
    assert result.exit_code == 1 and "gpt3-13b.toml" in result.stderr and "Traceback" not in result.output


def test_svg_without_graphviz_writes_the_dot_and_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tree_module.shutil, "which", lambda name: None)
    folder = _small_folder(tmp_path)
    result = runner.invoke(app, ["tree", str(folder), "-o", str(tmp_path / "tree.svg")])
    _one_line_error(result, 1, "rendering needs Graphviz", "tree.dot")
    assert not (tmp_path / "tree.svg").exists()
    assert (tmp_path / "tree.dot").read_text() == to_dot(family_tree(folder))


def _put_fake_dot_on_path(tmp_path: Path, body: str, monkeypatch: pytest.MonkeyPatch) -> None:
    program = tmp_path / "bin" / "dot"
    program.parent.mkdir()
    program.write_text(f"#!/bin/sh\n{body}\n")
    program.chmod(program.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{program.parent}{os.pathsep}{os.environ['PATH']}")


def test_svg_is_rendered_by_dot(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # a stand-in for Graphviz's dot: it echoes its format and the DOT text it was given
    _put_fake_dot_on_path(tmp_path, 'echo "<svg $1>"; cat', monkeypatch)
    folder = _small_folder(tmp_path)
    result = runner.invoke(app, ["tree", str(folder), "-o", str(tmp_path / "tree.svg")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "tree.svg").read_text() == "<svg -Tsvg>\n" + to_dot(family_tree(folder))


def test_a_failing_dot_is_one_line_and_writes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _put_fake_dot_on_path(tmp_path, "echo syntax error in line 3 >&2; exit 1", monkeypatch)
    result = runner.invoke(app, ["tree", str(_small_folder(tmp_path)), "-o", str(tmp_path / "tree.png")])
    _one_line_error(result, 1, "dot failed: syntax error in line 3")
    assert not (tmp_path / "tree.png").exists()
