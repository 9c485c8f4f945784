"""Generated documentation stays current."""

from __future__ import annotations

from taxonc.compiler.docs import update_readme

from .conftest import ROOT


def test_readme_generated_sections_are_current() -> None:
    assert update_readme(ROOT, check=True), "run: python -m taxonc.compiler.docs"
