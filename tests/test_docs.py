"""Generated documentation stays current, the README stays short, and links between docs resolve."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from taxonc.compiler.docs import GENERATED, GENERATED_FILES, replace_section, section_body, update_docs

from .conftest import ROOT

README_LIMIT = 25_000  # bytes; reference material belongs in docs/
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def test_generated_docs_are_current() -> None:
    stale = update_docs(ROOT, check=True)
    assert not stale, f"stale: {[str(p.relative_to(ROOT)) for p in stale]}; run: python -m taxonc.compiler.docs"


def test_check_notices_a_stale_section(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "specs").symlink_to(ROOT / "specs")
    for name in GENERATED:
        text = (ROOT / name).read_text()
        for section in GENERATED[name]:
            text = replace_section(text, section, "out of date")
        (tmp_path / name).write_text(text)
    for name in GENERATED_FILES:
        (tmp_path / name).write_text("out of date\n")
    every = len(GENERATED) + len(GENERATED_FILES)
    assert len(update_docs(tmp_path, check=True)) == every
    assert len(update_docs(tmp_path)) == every  # rewrites them ...
    assert update_docs(tmp_path, check=True) == []  # ... and then they are current
    for name in [*GENERATED, *GENERATED_FILES]:
        assert (tmp_path / name).read_text() == (ROOT / name).read_text()


def test_sections_round_trip() -> None:
    text = "intro\n<!-- generated:x -->\nold\n<!-- /generated:x -->\noutro\n"
    new = replace_section(text, "x", "a\nb\n")
    assert new == "intro\n<!-- generated:x -->\na\nb\n<!-- /generated:x -->\noutro\n"
    assert section_body(new, "x") == "a\nb\n"
    with pytest.raises(SystemExit, match="generated:y"):
        replace_section(text, "y", "z")


def test_readme_is_short_and_keeps_the_ci_blocks() -> None:
    readme = (ROOT / "README.md").read_text()
    assert len(readme.encode()) <= README_LIMIT, "move reference material from README.md into docs/"
    assert "<!-- generated:" not in readme, "generated tables live in docs/"
    for block in ("install", "test"):  # .ci/run executes the fenced block after each marker
        assert re.search(rf"^<!-- ci:{block} -->\n```bash\n.+\n```$", readme, re.MULTILINE), block


def _anchors(markdown: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    out = set()
    for heading in re.findall(r"^#+ (.+)$", re.sub(r"```.*?```", "", markdown, flags=re.DOTALL), re.MULTILINE):
        out.add(re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-"))
    return out


@pytest.mark.parametrize("doc", DOCS, ids=[p.name for p in DOCS])
def test_relative_links_resolve(doc: Path) -> None:
    text = doc.read_text()
    for target in re.findall(r"\]\(([^)\s]+)\)", re.sub(r"```.*?```", "", text, flags=re.DOTALL)):
        if re.match(r"[a-z]+:", target):
            continue  # http(s), mailto
        path, _, anchor = target.partition("#")
        linked = (doc.parent / path).resolve() if path else doc
        assert linked.exists(), f"{doc.name}: broken link {target}"
        if anchor and linked.suffix == ".md":
            assert anchor in _anchors(linked.read_text()), f"{doc.name}: no heading for #{anchor} in {linked.name}"
