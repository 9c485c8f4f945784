"""Every package folder is installed: a non-editable `pip install .` ships what the code imports."""

from __future__ import annotations

import tomllib

from .conftest import ROOT


def test_every_package_folder_is_listed_in_pyproject() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    folders = {package: ROOT / folder for package, folder in config["package-dir"].items()}
    found = set()
    for package, folder in folders.items():
        for init in folder.rglob("__init__.py"):
            rel = init.parent.relative_to(folder)
            name = ".".join([package, *rel.parts]) if rel.parts else package
            # a folder mapped to a package of its own (compiler/testing -> taxonc.testing) is that package
            if not any(init.parent == other and pkg != package for pkg, other in folders.items()):
                found.add(name)
    assert found == listed, f"unlisted: {sorted(found - listed)}; listed but absent: {sorted(listed - found)}"
