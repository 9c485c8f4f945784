"""Golden files for emitted code: review diffs, regenerate with `pytest --update-golden`."""

from __future__ import annotations

from pathlib import Path

import pytest

from taxonc.compiler.compile import compile_spec

from .conftest import SPECS

GOLDEN = Path(__file__).parent / "golden"
CASES = ["gpt3", "palm", "llama", "t5"]


@pytest.mark.parametrize("name", CASES)
@pytest.mark.parametrize("artifact", ["model.py", "graph.txt"])
def test_emitted_files_match_golden(name: str, artifact: str, request: pytest.FixtureRequest) -> None:
    compiled = compile_spec(SPECS / f"{name}.toml", scale="tiny")
    path = GOLDEN / f"{name}-tiny" / artifact
    text = compiled.files[artifact]
    if request.config.getoption("--update-golden"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    assert path.is_file(), f"no golden file {path}; run pytest --update-golden"
    assert text == path.read_text(), f"{path} differs; review and run pytest --update-golden"
